//! Journal tests through the public API, on temporary directories. Damage is simulated by
//! editing segment files between a `close` and the next `open`; nothing sleeps.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{BATCH_BYTES_MAX, FORMAT_VERSION, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::segment::segment_path;
use super::*;

type Replayed = Vec<(Location, Vec<u8>)>;

fn config(dir: &Path, segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        // Syncing is exercised by the tests that need durability ordering; the damage tests
        // edit files after a clean close, where it changes nothing.
        sync: SyncPolicy::Never,
        segment_bytes,
        ..JournalConfig::new(dir)
    }
}

fn open_collect(config: JournalConfig) -> Result<(Journal, RecoveryReport, Replayed), StoreError> {
    let mut replayed = Vec::new();
    let (journal, report) = open(config, |location, payload| {
        replayed.push((location, payload.to_vec()));
        Ok::<(), std::convert::Infallible>(())
    })?;
    Ok((journal, report, replayed))
}

/// Deterministic payload bytes, never zero (so a zeroed byte is always a change).
fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((seed as usize * 31 + i * 7) % 255 + 1) as u8)
        .collect()
}

fn append_one(journal: &Journal, bytes: Vec<u8>) -> Location {
    journal.append(vec![bytes]).wait().expect("append")[0]
}

fn flip_bit(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).expect("write");
}

fn zero_from(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    let len = file.metadata().expect("metadata").len();
    file.write_all_at(&vec![0u8; (len - offset) as usize], offset)
        .expect("zero");
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn round_trip_groups_and_reopen_replays_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, report, replayed) =
        open_collect(config(dir.path(), 64 * 1024)).expect("open fresh");
    assert!(replayed.is_empty());
    assert_eq!((report.segments, report.truncated_tail), (0, None));
    assert_eq!(journal.stats().active_segment, 1);

    let mut expected = Vec::new();
    for i in 0..20u64 {
        let group: Vec<Vec<u8>> = (0..i % 4 + 1)
            .map(|j| payload(i * 10 + j, (i * 13 % 300) as usize))
            .collect();
        let locations = journal.append(group.clone()).wait().expect("append");
        assert_eq!(locations.len(), group.len());
        for (location, bytes) in locations.into_iter().zip(group) {
            assert_eq!(journal.read(location).expect("read"), bytes);
            expected.push((location, bytes));
        }
    }
    // An empty payload is a record too.
    expected.push((append_one(&journal, Vec::new()), Vec::new()));
    assert!(matches!(
        journal.append(Vec::<Vec<u8>>::new()).wait(),
        Err(StoreError::EmptyGroup)
    ));
    assert!(matches!(
        journal.append(vec![vec![1; 64 * 1024]]).wait(),
        Err(StoreError::GroupTooLarge { .. })
    ));
    journal.close();
    assert!(matches!(
        journal.append(vec![vec![1]]).wait(),
        Err(StoreError::Closed)
    ));
    // Reads keep working after close.
    assert_eq!(journal.read(expected[3].0).expect("read"), expected[3].1);
    drop(journal);

    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(replayed, expected);
    assert_eq!(report.records, expected.len() as u64);
    assert_eq!(report.truncated_tail, None);
    // Appends continue after the recovered data.
    let next = append_one(&journal, payload(99, 10));
    assert!(next > expected.last().expect("records").0);
}

#[test]
fn concurrent_appenders_on_threads_all_commit_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 64 * 1024);
    config.sync = SyncPolicy::Always;
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                (0..60u64)
                    .map(|i| {
                        let bytes = payload(thread * 1000 + i, 200 + i as usize);
                        (append_one(&journal, bytes.clone()), bytes)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written: Vec<(Location, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("appender"))
        .collect();
    let stats = journal.stats();
    assert_eq!(stats.records, 480);
    assert!(stats.commits <= 480 && stats.fsyncs == stats.commits);
    assert!(stats.segments.len() > 1, "rolled over segments");
    journal.close();
    drop(journal);

    written.sort();
    let unique: HashSet<Location> = written.iter().map(|(location, _)| *location).collect();
    assert_eq!(unique.len(), written.len());
    let (_, report, replayed) = open_collect(config).expect("reopen");
    assert_eq!(report.records, 480);
    assert_eq!(replayed, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_on_tokio_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let mut locations = Vec::new();
                for i in 0..25 {
                    let group = vec![payload(task, 50), payload(i, 70)];
                    locations.extend(journal.append(group).await.expect("append"));
                }
                locations
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    assert_eq!(all.len(), 16 * 25 * 2);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    // Each group's two records are adjacent.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].segment, pair[1].segment);
        assert_eq!(pair[1].offset, pair[0].offset + RECORD_HEADER_BYTES + 56);
    }
}

#[test]
fn a_group_cut_short_is_dropped_entirely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let lone = append_one(&journal, payload(1, 100));
    let group = journal
        .append(vec![payload(2, 100), payload(3, 100), payload(4, 100)])
        .wait()
        .expect("append group");
    journal.close();
    drop(journal);
    // Cut into the payload of the group's last record.
    zero_from(&segment_path(dir.path(), 1), group[2].offset + 20);

    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(replayed, vec![(lone, payload(1, 100))]);
    let tail = report.truncated_tail.expect("tail reported");
    assert_eq!((tail.segment, tail.offset), (1, group[0].offset));
    // The torn group's space is reused, and a later open is clean.
    let again = append_one(&journal, payload(5, 10));
    assert_eq!(again.offset, group[0].offset);
    journal.close();
    drop(journal);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(report.truncated_tail, None);
    assert_eq!(replayed.len(), 2);
}

/// The required one: cut the last segment at every byte of its last record, by zeroing and by
/// truncating the file, and check that exactly the complete records come back.
#[test]
fn a_cut_at_every_byte_of_the_last_record_is_a_reported_torn_tail() {
    let original = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(original.path(), 64 * 1024)).expect("open");
    let complete: Vec<(Location, Vec<u8>)> = (0..5u64)
        .map(|i| {
            let bytes = payload(i, 30 + i as usize * 11);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    let last = append_one(&journal, payload(7, 43));
    journal.close();
    drop(journal);
    let record_bytes = RECORD_HEADER_BYTES + u64::from(last.len);

    for cut in 0..record_bytes {
        for truncate in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(original.path(), dir.path());
            let path = segment_path(dir.path(), 1);
            if truncate {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                file.set_len(last.offset + cut).expect("truncate");
            } else {
                zero_from(&path, last.offset + cut);
            }
            let context = format!("cut at byte {cut} of the last record, truncate={truncate}");
            let (journal, report, replayed) =
                open_collect(config(dir.path(), 64 * 1024)).expect(&context);
            assert_eq!(replayed, complete, "{context}");
            match report.truncated_tail {
                // Nothing of the record was left: nothing to report.
                None => assert_eq!(cut, 0, "{context}"),
                Some(tail) => {
                    assert_eq!((tail.segment, tail.offset), (1, last.offset), "{context}");
                    assert!(tail.bytes_dropped > 0, "{context}");
                }
            }
            // The journal is usable again, and the next open finds no damage.
            let again = append_one(&journal, payload(8, 20));
            assert_eq!(journal.read(again).expect("read"), payload(8, 20));
            journal.close();
            drop(journal);
            let (_, report, replayed) =
                open_collect(config(dir.path(), 64 * 1024)).expect(&context);
            assert_eq!(report.truncated_tail, None, "{context}");
            assert_eq!(replayed.len(), complete.len() + 1, "{context}");
        }
    }
}

#[test]
fn a_flipped_bit_in_an_older_segment_refuses_to_open_and_salvage_skips_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let written: Vec<(Location, Vec<u8>)> = (0..200u64)
        .map(|i| {
            let bytes = payload(i, 1000);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    journal.close();
    drop(journal);
    assert!(written.last().expect("records").0.segment >= 3);
    let (victim, _) = written[10];
    let (after, _) = written[11];
    assert_eq!((victim.segment, after.segment), (1, 1));
    flip_bit(&segment_path(dir.path(), 1), victim.offset + 500);

    let error = open_collect(config(dir.path(), 64 * 1024))
        .err()
        .expect("corruption refuses to open");
    let message = error.to_string();
    let StoreError::Corrupt {
        path,
        segment,
        offset,
        range_end,
        records_lost,
        records_following,
        ..
    } = error
    else {
        panic!("expected Corrupt, got {message}");
    };
    assert_eq!(path, segment_path(dir.path(), 1));
    assert_eq!(
        (segment, offset, range_end),
        (1, victim.offset, after.offset)
    );
    assert_eq!(records_lost, RecordCount::Known(1));
    let in_segment_one = written.iter().filter(|(l, _)| l.segment == 1).count();
    assert_eq!(records_following, in_segment_one as u64 - 11);
    assert!(message.contains("00000000000000000001.seg") && message.contains("salvage"));

    let mut salvage = config(dir.path(), 64 * 1024);
    salvage.salvage = true;
    let (journal, report, replayed) = open_collect(salvage).expect("salvage opens");
    let mut expected = written.clone();
    expected.remove(10);
    assert_eq!(replayed, expected);
    assert_eq!(report.salvaged.len(), 1);
    assert_eq!(report.salvaged[0].segment, 1);
    assert_eq!(report.salvaged[0].offsets, victim.offset..after.offset);
    assert_eq!(report.salvaged[0].records_lost, RecordCount::Known(1));
    assert_eq!(report.truncated_tail, None);
    drop(journal);

    // Salvage's decision is durable: the next plain open skips the lost range silently.
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(replayed, expected);
    assert!(report.salvaged.is_empty());
}

#[test]
fn damage_in_the_last_segment_is_corruption_when_a_later_write_follows_it() {
    let segment_bytes = 32 * 1024 * 1024;
    let original = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(original.path(), segment_bytes)).expect("open");
    let first = append_one(&journal, payload(1, 100));
    let big: Vec<(Location, Vec<u8>)> = (0..26u64)
        .map(|i| {
            let bytes = payload(i, 1024 * 1024);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    journal.close();
    drop(journal);
    let last_big = big.last().expect("records").0;
    assert_eq!(last_big.segment, 1);
    assert!(last_big.offset - first.offset > BATCH_BYTES_MAX);

    // Damage early in the last segment, with more than a batch of valid records after it.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(original.path(), dir.path());
    flip_bit(&segment_path(dir.path(), 1), first.offset + 40);
    let error = open_collect(config(dir.path(), segment_bytes))
        .err()
        .expect("refused");
    assert!(
        matches!(
            error,
            StoreError::Corrupt { segment: 1, offset, records_following: 26, .. }
                if offset == first.offset
        ),
        "{error}"
    );
    let mut salvage = config(dir.path(), segment_bytes);
    salvage.salvage = true;
    let (journal, report, replayed) = open_collect(salvage).expect("salvage");
    assert_eq!(replayed, big);
    assert_eq!(report.salvaged[0].offsets, first.offset..big[0].0.offset);
    // Appends after a salvaged last segment, and a plain open afterwards, both work.
    let later = append_one(&journal, payload(3, 10));
    assert!(matches!(
        journal.read(first),
        Err(StoreError::NotFound { .. })
    ));
    journal.close();
    drop(journal);
    let (_, report, replayed) = open_collect(config(dir.path(), segment_bytes)).expect("reopen");
    assert!(report.salvaged.is_empty() && report.truncated_tail.is_none());
    assert_eq!(replayed.len(), big.len() + 1);
    assert_eq!(replayed.last().map(|(location, _)| *location), Some(later));

    // Damage close to the end, but with later (acknowledged) writes after it: corruption too.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(original.path(), dir.path());
    flip_bit(&segment_path(dir.path(), 1), big[20].0.offset + 40);
    let error = open_collect(config(dir.path(), segment_bytes))
        .err()
        .expect("refused");
    assert!(
        matches!(error, StoreError::Corrupt { offset, records_following: 5, .. } if offset == big[20].0.offset),
        "{error}"
    );

    // Damage in the last write is its torn remains: truncated.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(original.path(), dir.path());
    flip_bit(&segment_path(dir.path(), 1), big[25].0.offset + 40);
    let (_, report, replayed) = open_collect(config(dir.path(), segment_bytes)).expect("open");
    assert_eq!(replayed.len(), 1 + 25);
    assert_eq!(
        report.truncated_tail.map(|tail| tail.offset),
        Some(big[25].0.offset)
    );
}

#[test]
fn a_last_write_torn_in_its_first_record_is_a_torn_tail_even_if_later_pages_landed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let kept = append_one(&journal, payload(1, 100));
    // One group is one write: its pages may reach the disk in any order.
    let group = journal
        .append((0..3).map(|i| payload(10 + i, 2000)).collect())
        .wait()
        .expect("append");
    journal.close();
    drop(journal);
    flip_bit(&segment_path(dir.path(), 1), group[0].offset + 40);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    assert_eq!(
        replayed
            .iter()
            .map(|(location, _)| *location)
            .collect::<Vec<_>>(),
        [kept]
    );
    assert_eq!(
        report.truncated_tail.map(|tail| tail.offset),
        Some(group[0].offset)
    );
}

#[test]
fn segments_roll_and_a_deleted_prefix_stays_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let written: Vec<(Location, Vec<u8>)> = (0..300u64)
        .map(|i| {
            let bytes = payload(i, 900 + i as usize % 200);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    let stats = journal.stats();
    assert!(stats.active_segment >= 4, "{stats:?}");
    assert_eq!(stats.segments.len() as u64, stats.active_segment);
    assert_eq!(stats.bytes_on_disk, stats.active_segment * 64 * 1024);
    for segment in &stats.segments {
        assert!(segment.bytes_written > SEGMENT_HEADER_BYTES);
        assert!(segment.bytes_written <= segment.bytes_on_disk);
    }

    journal.delete_segments_before(3).expect("delete");
    assert!(!segment_path(dir.path(), 1).exists());
    assert!(!segment_path(dir.path(), 2).exists());
    assert!(segment_path(dir.path(), 3).exists());
    assert!(matches!(
        journal.read(written[0].0),
        Err(StoreError::NotFound { .. })
    ));
    // The active segment is never deleted.
    let active = stats.active_segment;
    journal.delete_segments_before(u64::MAX).expect("delete");
    assert_eq!(journal.stats().segments.len(), 1);
    assert!(segment_path(dir.path(), active).exists());
    let kept: Vec<_> = written
        .iter()
        .filter(|(location, _)| location.segment >= active)
        .cloned()
        .collect();
    journal.close();
    drop(journal);
    // The segment the writer prepared ahead was discarded on close; dead segments kept to be
    // recycled are spares, never segments.
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    };
    let active_name = format!("{active:020}.seg");
    let left = names();
    assert!(left.contains(&active_name), "{left:?}");
    assert!(
        left.iter()
            .all(|name| *name == active_name || name.ends_with(".seg.spare")),
        "{left:?}"
    );

    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(replayed, kept);
    assert_eq!(report.segments, 1);
    assert_eq!(journal.stats().active_segment, active);
    // Spares do not outlive a restart.
    assert_eq!(names(), vec![active_name]);
}

#[test]
fn segments_zero_filled_at_the_writers_pace_are_ready_when_it_rolls() {
    // Large enough for pacing: the writer may first roll at 8 MiB (a largest group of 24 MiB
    // not fitting), so the helper thread starts a quarter segment (8 MiB) ahead and keeps
    // pace from there, in 1 MiB pieces.
    const SEGMENT: u64 = 32 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), SEGMENT)).expect("open");
    let prepared = dir.path().join(format!("{:020}.seg.tmp", 2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::metadata(&prepared).map_or(0, |m| m.len()) < SEGMENT / 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lead was never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let written: Vec<(Location, Vec<u8>)> = (0..1100u64)
        .map(|i| {
            let bytes = payload(i, 64 * 1024 + i as usize);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    let stats = journal.stats();
    assert_eq!(stats.active_segment, 3, "{stats:?}");
    for (location, bytes) in &written {
        assert_eq!(&journal.read(*location).expect("read")[..], &bytes[..]);
    }
    // Closing cancels the half-written successor instead of finishing it.
    journal.close();
    drop(journal);
    assert!(!dir.path().join(format!("{:020}.seg.tmp", 4)).exists());
    let (_, report, replayed) = open_collect(config(dir.path(), SEGMENT)).expect("reopen");
    assert_eq!(report.segments, 3);
    assert_eq!(replayed, written);
}

#[test]
fn only_dead_segments_of_the_current_size_are_kept_as_spares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spares = || {
        std::fs::read_dir(dir.path())
            .expect("read_dir")
            .filter(|entry| {
                let name = entry.as_ref().expect("entry").file_name();
                name.to_string_lossy().ends_with(".seg.spare")
            })
            .count()
    };
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    for i in 0..200u64 {
        append_one(&journal, payload(i, 1000));
    }
    journal.close();
    drop(journal);
    // Larger segments from now on: recycling a small one would grow the journal past what
    // disk_bytes_max allowed for, so the small ones are deleted instead.
    let (journal, _, _) = open_collect(config(dir.path(), 128 * 1024)).expect("reopen");
    journal
        .delete_segments_before(journal.active_segment())
        .expect("delete");
    assert_eq!(spares(), 0);
    for i in 0..400u64 {
        append_one(&journal, payload(i, 1000));
    }
    journal
        .delete_segments_before(journal.active_segment())
        .expect("delete");
    assert!(spares() > 0, "dead segments of the new size are kept");
    // The helper thread preparing the next segment may still recycle a spare (it asks for one
    // before each piece of zeros), renaming it away and uncounting it in one step: so the stats
    // are compared with a directory that held as many spares before they were read as after,
    // i.e. the one they were read from. The helper recycles one spare at a time, and only while
    // it prepares its one segment, so a try or two suffice.
    let mut tries = 0;
    let (stats, files) = loop {
        let before = spares();
        let stats = journal.stats();
        let after = spares();
        if before == after {
            break (stats, after);
        }
        tries += 1;
        assert!(tries < 10, "the spares keep changing");
    };
    let on_disk: u64 = stats.segments.iter().map(|s| s.bytes_on_disk).sum();
    assert_eq!(stats.bytes_on_disk, on_disk + files as u64 * 128 * 1024);
}

#[test]
fn removals_use_the_reserve_when_the_disk_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 64 * 1024);
    config.disk_bytes_max = Some(2 * 64 * 1024);
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let mut appended = 0u64;
    while journal.append(vec![payload(appended, 1000)]).wait().is_ok() {
        appended += 1;
        assert!(appended < 1000, "the limit never hit");
    }
    // Full for ordinary appends, but the segment's reserve still takes removals, and nothing
    // else: a big one that does not fit the reserve fails like any other.
    let mut removals = Vec::new();
    for n in 0..20 {
        let bytes = payload(10_000 + n, 40);
        let location = journal
            .append_freeing(vec![bytes.clone()])
            .wait()
            .expect("a removal fits")[0];
        removals.push((location, bytes));
    }
    assert!(matches!(
        journal.append(vec![vec![1; 40]]).wait(),
        Err(StoreError::DiskFull { .. })
    ));
    assert!(matches!(
        journal.append_freeing(vec![vec![1; 8 * 1024]]).wait(),
        Err(StoreError::DiskFull { .. })
    ));
    journal.close();
    drop(journal);
    let (_, _, replayed) = open_collect(config).expect("reopen");
    assert_eq!(replayed.len() as u64, appended + 20);
    assert_eq!(replayed[appended as usize..], removals[..]);
}

#[test]
fn a_full_disk_fails_appends_harmlessly_until_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 64 * 1024);
    config.disk_bytes_max = Some(2 * 64 * 1024);
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let mut written = Vec::new();
    let error = loop {
        let bytes = payload(written.len() as u64, 1000);
        match journal.append(vec![bytes.clone()]).wait() {
            Ok(locations) => written.push((locations[0], bytes)),
            Err(error) => break error,
        }
        assert!(written.len() < 1000, "the limit never hit");
    };
    assert!(
        matches!(error, StoreError::DiskFull { segment: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("disk full"));
    // Failing again does not harm anything either, and leaves no partial segment behind.
    assert!(matches!(
        journal.append(vec![vec![7; 1000]]).wait(),
        Err(StoreError::DiskFull { .. })
    ));
    let files = std::fs::read_dir(dir.path()).expect("read_dir").count();
    assert_eq!(files, 2);
    for (location, bytes) in &written {
        assert_eq!(&journal.read(*location).expect("read"), bytes);
    }

    // Space returns: appends work again.
    journal.delete_segments_before(2).expect("delete");
    let kept: Vec<_> = written
        .iter()
        .filter(|(location, _)| location.segment == 2)
        .cloned()
        .collect();
    let after = append_one(&journal, payload(5000, 1000));
    assert_eq!(after.segment, 3);
    journal.close();
    drop(journal);
    let (_, _, replayed) = open_collect(config).expect("reopen");
    assert_eq!(replayed.len(), kept.len() + 1);
    assert_eq!(replayed[..kept.len()], kept[..]);
}

#[test]
fn an_unknown_format_version_and_a_missing_segment_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    for i in 0..200 {
        append_one(&journal, payload(i, 1000));
    }
    journal.close();
    drop(journal);

    // A future version in segment 2's header.
    let path = segment_path(dir.path(), 2);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    let future = FORMAT_VERSION + 1;
    file.write_all_at(&future.to_le_bytes(), 8).expect("write");
    let error = open_collect(config(dir.path(), 64 * 1024))
        .err()
        .expect("refused");
    assert!(
        matches!(&error, StoreError::UnsupportedVersion { version, oldest: 1, supported: FORMAT_VERSION, path: p } if *version == future && *p == path),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("format version {future}"))
    );

    std::fs::remove_file(&path).expect("remove");
    let error = open_collect(config(dir.path(), 64 * 1024))
        .err()
        .expect("refused");
    assert!(
        matches!(error, StoreError::MissingSegment { segment: 2, .. }),
        "{error}"
    );
    let mut salvage = config(dir.path(), 64 * 1024);
    salvage.salvage = true;
    let (_, report, replayed) = open_collect(salvage).expect("salvage");
    assert_eq!(report.missing_segments, vec![2..3]);
    assert!(replayed.iter().all(|(location, _)| location.segment != 2));
}

#[test]
fn a_replay_error_stops_open_and_names_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let location = append_one(&journal, payload(1, 10));
    journal.close();
    drop(journal);
    let result = open(config(dir.path(), 64 * 1024), |_, _| Err("no thanks"));
    let Err(StoreError::Replay {
        segment, offset, ..
    }) = result
    else {
        panic!("expected a replay error");
    };
    assert_eq!((segment, offset), (location.segment, location.offset));
}

/// Not a test: prints throughput figures. Run in release with
/// `cargo test --release -p qmgr --lib store::tests::measure -- --ignored --nocapture`
/// (`HOPMQ_MEASURE_DIR` picks the filesystem, default the system temporary folder).
#[test]
#[ignore = "a measurement, not a test"]
fn measure() {
    let base = std::env::var_os("HOPMQ_MEASURE_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    // One after the other, not as two tests: run in parallel they would slow each other.
    measure_group_commit(dir.path());
    measure_replay(dir.path());
}

/// Group commit: 8 appenders, one 1 KiB record per append, fdatasync per batch.
fn measure_group_commit(dir: &Path) {
    let mut synced = JournalConfig::new(dir.join("synced"));
    synced.sync = SyncPolicy::Always;
    let (journal, _) = open(synced, |_, _| Ok::<(), std::convert::Infallible>(())).expect("open");
    let appends_per_thread = 4000;
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(appends_per_thread);
                for _ in 0..appends_per_thread {
                    let one = std::time::Instant::now();
                    journal
                        .append(vec![vec![7u8; 1024]])
                        .wait()
                        .expect("append");
                    latencies.push(one.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<_> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("appender"))
        .collect();
    let elapsed = started.elapsed();
    let stats = journal.stats();
    latencies.sort();
    println!(
        "sync=always, 8 appenders x {appends_per_thread} x 1 KiB: {:.0} appends/s, {} fsyncs \
         (mean {:.0} us, max {:.0} us), {:.1} records/batch, append latency p50 {:?} p99 {:?}",
        (8 * appends_per_thread) as f64 / elapsed.as_secs_f64(),
        stats.fsyncs,
        stats.fsync_nanos_total as f64 / stats.fsyncs as f64 / 1e3,
        stats.fsync_nanos_max as f64 / 1e3,
        stats.records as f64 / stats.commits as f64,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
    journal.close();
    drop(journal);
}

/// Replay: 1M records of 1 KiB (about 1 GiB over 16 segments), written unsynced.
fn measure_replay(dir: &Path) {
    let mut unsynced = JournalConfig::new(dir.join("replay"));
    unsynced.sync = SyncPolicy::Never;
    let (journal, _) = open(unsynced.clone(), |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .expect("open");
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for _ in 0..(1 << 20) / 4 / 16 {
                    journal
                        .append(vec![vec![9u8; 1024]; 16])
                        .wait()
                        .expect("append");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    let write_elapsed = started.elapsed();
    journal.close();
    drop(journal);
    let started = std::time::Instant::now();
    let mut payload_bytes = 0u64;
    let (_, report) = open(unsynced, |_, payload| {
        payload_bytes += payload.len() as u64;
        Ok::<(), std::convert::Infallible>(())
    })
    .expect("reopen");
    let replay_elapsed = started.elapsed();
    println!(
        "sync=never, 1 Mi records x 1 KiB in groups of 16: written in {write_elapsed:?}; \
         replayed {} records ({} MiB) from {} segments in {replay_elapsed:?} (warm page cache)",
        report.records,
        payload_bytes >> 20,
        report.segments,
    );
}

#[test]
fn an_older_segment_that_lost_its_tail_is_caught_by_its_missing_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let written: Vec<(Location, Vec<u8>)> = (0..150u64)
        .map(|i| {
            let bytes = payload(i, 1000);
            (append_one(&journal, bytes.clone()), bytes)
        })
        .collect();
    journal.close();
    drop(journal);
    let in_first = written.iter().filter(|(l, _)| l.segment == 1).count();
    let cut = written[in_first - 3].0;
    // Zeros from there on: no record damaged, just gone, seal included.
    zero_from(&segment_path(dir.path(), 1), cut.offset);

    let error = open_collect(config(dir.path(), 64 * 1024))
        .err()
        .expect("refused");
    assert!(
        matches!(
            &error,
            StoreError::Corrupt { segment: 1, offset, records_lost: RecordCount::Unknown, reason, .. }
                if *offset == cut.offset && reason.contains("seal")
        ),
        "{error}"
    );

    let mut salvage = config(dir.path(), 64 * 1024);
    salvage.salvage = true;
    let (journal, report, replayed) = open_collect(salvage).expect("salvage");
    let mut expected = written.clone();
    expected.drain(in_first - 3..in_first);
    assert_eq!(replayed, expected);
    assert_eq!(report.salvaged.len(), 1);
    assert_eq!(report.salvaged[0].offsets, cut.offset..cut.offset);
    drop(journal);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert!(report.salvaged.is_empty());
    assert_eq!(replayed, expected);
}

#[test]
fn a_sealed_last_segment_takes_no_more_records() {
    // What a crash between sealing a segment and installing the next one leaves behind.
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _, _) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let first = append_one(&journal, payload(1, 100));
    journal.close();
    drop(journal);
    let seal_at = first.offset + super::format::record_bytes_padded(100);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 1))
        .expect("open");
    file.write_all_at(&super::format::encode_seal(1, seal_at, 1), seal_at)
        .expect("seal");

    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    assert_eq!((report.records, replayed.len()), (1, 1));
    let next = append_one(&journal, payload(2, 100));
    assert_eq!(next.segment, 2);
    journal.close();
    drop(journal);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(report.records, 2);
    assert_eq!(replayed[1].0, next);
}

#[test]
fn handles_are_shareable_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    fn sendable<T: Send>() {}
    shareable::<Journal>();
    sendable::<Commit>();
}

/// A journal that syncs: what deferred groups are about.
fn synced_config(dir: &Path) -> JournalConfig {
    JournalConfig {
        sync: SyncPolicy::Always,
        ..config(dir, 1024 * 1024)
    }
}

#[test]
fn a_deferred_group_rides_in_the_next_synced_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = synced_config(dir.path());
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let before = journal.stats().fsyncs;
    let deferred = journal.append_deferred(vec![payload(1, 100)]);
    let synced = journal.append(vec![payload(2, 100)]);
    let synced = synced.wait().expect("append");
    let deferred = deferred.wait().expect("deferred append");
    assert!(
        deferred[0].offset < synced[0].offset,
        "journal order is kept"
    );
    // One sync for both, unless the deferred one's delay ran out before the other came (a
    // stalled test thread): never one each plus an extra.
    assert!(journal.stats().fsyncs - before <= 2);
    journal.close();
    let (_, _, replayed) = open_collect(config).expect("reopen");
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, vec![payload(1, 100), payload(2, 100)]);
}

#[test]
fn a_deferred_group_alone_is_synced_within_its_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = synced_config(dir.path());
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let before = journal.stats().fsyncs;
    let started = std::time::Instant::now();
    let location = journal
        .append_deferred(vec![payload(3, 10)])
        .wait()
        .expect("deferred append");
    assert_eq!(journal.stats().fsyncs - before, 1);
    // Not a timing assertion on speed: the group must not wait for traffic that never comes.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Several deferred groups in a row share a sync.
    let commits: Vec<Commit> = (0..200)
        .map(|n| journal.append_deferred(vec![payload(10 + n, 10)]))
        .collect();
    for commit in commits {
        commit.wait().expect("deferred append");
    }
    assert!(
        journal.stats().fsyncs - before < 100,
        "deferred groups share syncs"
    );
    journal.close();
    let (_, _, replayed) = open_collect(config).expect("reopen");
    assert_eq!(replayed.len(), 201);
    assert_eq!(replayed[0].0, location[0]);
}

#[test]
fn the_next_segment_is_zero_filled_by_three_quarters_of_the_fill_or_the_earliest_roll() {
    use super::format::{RESERVE_BYTES_MAX, SEAL_BYTES};
    use super::writer::prepared_ready_at;
    const MIB: u64 = 1024 * 1024;
    // The earliest roll of a 32 MiB segment comes at ~8 MiB: too steep a pace for the zeros.
    assert_eq!(prepared_ready_at(32 * MIB), 24 * MIB);
    assert_eq!(prepared_ready_at(64 * MIB), 48 * MIB);
    // Past four largest groups, the earliest roll is the later point.
    let big = 1024 * MIB;
    let earliest = big - BATCH_BYTES_MAX - SEAL_BYTES - RESERVE_BYTES_MAX;
    assert_eq!(prepared_ready_at(big), earliest);
}

/// Spins until a release could commit on the caller's thread: the writer thread asleep, the
/// disk quiet.
fn until_inline_is_possible(journal: &Journal) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(journal.writer_waits() && journal.writer_quiet()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never idled"
        );
        std::thread::yield_now();
    }
}

#[test]
fn appends_released_while_the_writer_idles_are_committed_on_the_callers_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = synced_config(dir.path());
    let (journal, _, _) = open_collect(config.clone()).expect("open");
    let mut expected = Vec::new();
    let mut seed = 0;
    let mut next_payload = |expected: &mut Vec<Vec<u8>>| {
        seed += 1;
        expected.push(payload(seed, 100));
        vec![payload(seed, 100)]
    };
    // A spurious wake-up of the writer between the check and the release hands it the
    // commit: tried again then; only a bug fails every time.
    let mut inline = false;
    for _ in 0..5 {
        until_inline_is_possible(&journal);
        let before = journal.stats();
        journal.hold();
        let deferred = journal.append_deferred(next_payload(&mut expected));
        let synced = journal.append(next_payload(&mut expected));
        let held = journal.stats();
        journal.release(true);
        // Only `release` counts a commit as inline, and only one it made before returning.
        let after = journal.stats();
        let deferred = deferred.wait().expect("deferred append");
        let synced = synced.wait().expect("append");
        assert!(
            deferred[0].offset < synced[0].offset,
            "journal order is kept"
        );
        if after.commits_inline == before.commits_inline + 1 {
            assert_eq!(held.fsyncs, before.fsyncs, "held: nothing written");
            assert_eq!(
                after.fsyncs,
                before.fsyncs + 1,
                "one sync for both, made by release"
            );
            inline = true;
            break;
        }
    }
    assert!(inline, "release never committed on the caller's thread");

    // Deferred appends alone are left to the writer, which syncs them after its delay.
    let before = journal.stats().commits_inline;
    journal.hold();
    let lone = journal.append_deferred(next_payload(&mut expected));
    journal.release(true);
    lone.wait().expect("deferred append");
    // A caller with other work passes false: the writer commits while it goes on.
    journal.hold();
    let handed = journal.append(next_payload(&mut expected));
    journal.release(false);
    handed.wait().expect("append");
    assert_eq!(
        journal.stats().commits_inline,
        before,
        "both left to the writer"
    );

    // Commits on either thread interleave in append order.
    let mut commits = Vec::new();
    for n in 0..20 {
        if n % 2 == 0 {
            until_inline_is_possible(&journal);
        }
        journal.hold();
        commits.push(journal.append(next_payload(&mut expected)));
        journal.release(n % 2 == 0);
    }
    for commit in commits {
        commit.wait().expect("append");
    }
    assert!(journal.stats().commits_inline > before, "some were inline");
    journal.close();
    let (_, _, replayed) = open_collect(config).expect("reopen");
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, expected);
}

/// A journal of 64 KiB segments whose active segment is a recycled file (its bytes past the
/// written end are a dead segment's), with what it holds and where its data ends.
fn recycled_journal(dir: &Path) -> (Replayed, u64, u64) {
    let (journal, _, _) = open_collect(config(dir, 64 * 1024)).expect("open");
    for i in 0..300u64 {
        append_one(&journal, payload(i, 1000));
    }
    journal
        .delete_segments_before(journal.active_segment())
        .expect("delete");
    let first_recycled = journal.active_segment() + 1;
    // Rolling into the spares: a segment holds ~60 of these records.
    let mut kept: Replayed = Vec::new();
    let mut i = 1000;
    while kept.len() < 10 {
        let bytes = payload(i, 1000);
        let location = append_one(&journal, bytes.clone());
        if kept
            .first()
            .is_some_and(|(first, _)| first.segment != location.segment)
        {
            kept.clear();
        }
        if location.segment > first_recycled {
            kept.push((location, bytes));
        }
        i += 1;
    }
    let active = journal.active_segment();
    let end = journal
        .stats()
        .segments
        .iter()
        .find(|segment| segment.segment == active)
        .expect("active")
        .bytes_written;
    journal.close();
    drop(journal);
    let bytes = std::fs::read(segment_path(dir, active)).expect("read");
    assert!(
        bytes[end as usize + 64..].iter().any(|&byte| byte != 0),
        "segment {active} was not recycled"
    );
    (kept, active, end)
}

fn replayed_in(replayed: &Replayed, segment: u64) -> Replayed {
    replayed
        .iter()
        .filter(|(location, _)| location.segment == segment)
        .cloned()
        .collect()
}

#[test]
fn a_recycled_segment_replays_only_its_own_records_and_opens_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut kept, active, _) = recycled_journal(dir.path());
    for _ in 0..2 {
        let (journal, report, replayed) =
            open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
        assert_eq!(replayed_in(&replayed, active), kept);
        assert_eq!(report.truncated_tail, None);
        assert!(report.salvaged.is_empty());
        // Appends resume where the data ended, and survive the next open.
        let bytes = payload(7, 100);
        kept.push((append_one(&journal, bytes.clone()), bytes));
        journal.close();
    }
}

#[test]
fn a_torn_last_write_in_a_recycled_segment_is_a_bounded_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, active, end) = recycled_journal(dir.path());
    let path = segment_path(dir.path(), active);
    // The last write's record damaged, its end marker intact: torn, not corrupt.
    let (last, _) = kept.last().expect("a last record").clone();
    flip_bit(&path, last.offset + RECORD_HEADER_BYTES + 3);
    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    assert_eq!(replayed_in(&replayed, active), kept[..kept.len() - 1]);
    let tail = report.truncated_tail.expect("a torn tail");
    assert_eq!((tail.segment, tail.offset), (active, last.offset));
    assert!(tail.bytes_dropped <= BATCH_BYTES_MAX + 64, "{tail:?}");
    journal.close();
    drop(journal);
    // Zeroed and marked: the next open is clean.
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(report.truncated_tail, None);
    assert_eq!(replayed_in(&replayed, active), kept[..kept.len() - 1]);

    // A lost end marker alone: every record is there, the end is found again.
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, active, end_again) = recycled_journal(dir.path());
    assert_eq!(end_again, end);
    flip_bit(&segment_path(dir.path(), active), end + 2);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    assert_eq!(replayed_in(&replayed, active), kept);
    assert_eq!(report.truncated_tail.expect("torn").offset, end);
}

#[test]
fn damage_before_the_last_write_of_a_recycled_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, active, _) = recycled_journal(dir.path());
    let (first, _) = kept.first().expect("records").clone();
    flip_bit(
        &segment_path(dir.path(), active),
        first.offset + RECORD_HEADER_BYTES + 1,
    );
    let error = open_collect(config(dir.path(), 64 * 1024))
        .err()
        .expect("refused");
    assert!(
        matches!(error, StoreError::Corrupt { segment, offset, .. } if segment == active && offset == first.offset),
        "{error}"
    );
}

/// Writes `bytes` into `path` at `offset`.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open segment");
    file.write_all_at(bytes, offset).expect("write");
}

/// Appends each of `payloads` as a group of its own; returns where the data ends.
fn append_each(journal: &Journal, payloads: &[Vec<u8>]) -> u64 {
    let mut end = 0;
    for bytes in payloads {
        let location = append_one(journal, bytes.clone());
        end = location.offset + super::format::record_bytes_padded(bytes.len() as u64);
    }
    end
}

#[test]
fn what_an_unacknowledged_write_left_past_a_clean_end_is_never_replayed_later() {
    // Power lost in a write of 20 one-record groups: its later pages reached the disk, the
    // page holding the previous end marker did not. The old marker still ends the data.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = segment_path(dir.path(), 1);
    let (journal, _, _) = open_collect(config(dir.path(), 1 << 20)).expect("open");
    let acked: Vec<Vec<u8>> = (0..3).map(|i| payload(i, 1000)).collect();
    let end = append_each(&journal, &acked);
    journal.close();
    drop(journal);
    let mut lost_write = Vec::new();
    let mut offset = end;
    for i in 0..20 {
        super::format::encode_record(
            &mut lost_write,
            1,
            offset,
            1,
            0,
            i == 0,
            &payload(100 + i, 1000),
        );
        offset = end + lost_write.len() as u64;
    }
    lost_write.extend_from_slice(&super::format::encode_end_marker(1, offset));
    let first_page_end = (end / 4096 + 1) * 4096;
    write_at(
        &path,
        first_page_end,
        &lost_write[(first_page_end - end) as usize..],
    );
    let (journal, report, replayed) = open_collect(config(dir.path(), 1 << 20)).expect("open");
    assert_eq!(report.truncated_tail, None);
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(payloads, acked);
    let opened = std::fs::read(&path).expect("read");

    // Later writes start at the same end, with records of the same size, so they lie where
    // the lost write's did. Then the last of them loses its end marker.
    let later: Vec<Vec<u8>> = (200..210).map(|i| payload(i, 1000)).collect();
    let marker_at = append_each(&journal, &later);
    journal.close();
    drop(journal);
    write_at(&path, marker_at, &opened[marker_at as usize..][..16]);

    let (_, _, replayed) = open_collect(config(dir.path(), 1 << 20)).expect("reopen");
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, bytes)| bytes).collect();
    let expected: Vec<Vec<u8>> = acked.iter().chain(&later).cloned().collect();
    assert_eq!(
        payloads.len(),
        expected.len(),
        "records of the write that was never acknowledged came back"
    );
    assert_eq!(payloads, expected);
}

/// A segment file as format 1 wrote it: header, one write per record, the seal if `sealed`,
/// zeros to `segment_bytes`.
fn format_1_segment(
    segment: u64,
    payloads: &[Vec<u8>],
    sealed: bool,
    segment_bytes: u64,
) -> Vec<u8> {
    let mut file = super::format::encode_segment_header(segment).to_vec();
    file[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&file[0..28]);
    file[28..32].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(super::format::decode_segment_header(&file, segment), Ok(1));
    for bytes in payloads {
        let offset = file.len() as u64;
        super::format::encode_record(&mut file, segment, offset, 1, 0, true, bytes);
    }
    if sealed {
        let offset = file.len() as u64;
        file.extend_from_slice(&super::format::encode_seal(
            segment,
            offset,
            payloads.len() as u64,
        ));
    }
    file.resize(segment_bytes as usize, 0);
    file
}

#[test]
fn a_format_1_journal_opens_replays_and_takes_more_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first: Vec<Vec<u8>> = (0..5).map(|i| payload(i, 700)).collect();
    let second: Vec<Vec<u8>> = (5..9).map(|i| payload(i, 700)).collect();
    std::fs::write(
        segment_path(dir.path(), 1),
        format_1_segment(1, &first, true, 64 * 1024),
    )
    .expect("write");
    std::fs::write(
        segment_path(dir.path(), 2),
        format_1_segment(2, &second, false, 64 * 1024),
    )
    .expect("write");
    let old: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    let (journal, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    assert_eq!(report.truncated_tail, None);
    assert!(report.salvaged.is_empty());
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(payloads, old);
    // New records go on in the format-1 segment, then roll into format-2 ones.
    let new: Vec<Vec<u8>> = (100..200).map(|i| payload(i, 700)).collect();
    append_each(&journal, &new);
    assert!(journal.active_segment() > 2);
    journal.close();
    drop(journal);
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(report.truncated_tail, None);
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, bytes)| bytes).collect();
    let all: Vec<Vec<u8>> = old.iter().chain(&new).cloned().collect();
    assert_eq!(payloads, all);
}

#[test]
fn a_format_1_journal_torn_in_its_last_write_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records: Vec<Vec<u8>> = (0..4).map(|i| payload(i, 700)).collect();
    let mut file = format_1_segment(1, &records, false, 64 * 1024);
    let last = SEGMENT_HEADER_BYTES + 3 * super::format::record_bytes_padded(700);
    file[(last + RECORD_HEADER_BYTES + 5) as usize] ^= 0x10;
    std::fs::write(segment_path(dir.path(), 1), file).expect("write");
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("open");
    let payloads: Vec<Vec<u8>> = replayed.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(payloads, records[..3]);
    let tail = report.truncated_tail.expect("a torn tail");
    assert_eq!((tail.segment, tail.offset), (1, last));
    // Zeroed and marked: the next open is clean.
    let (_, report, replayed) = open_collect(config(dir.path(), 64 * 1024)).expect("reopen");
    assert_eq!(report.truncated_tail, None);
    assert_eq!(replayed.len(), 3);
}
