//! Segment files on disk: names, listing, creation and removal.
//!
//! Invariants: a file is named `<id>.seg` only once it is complete (header and end marker
//! written, either zero-filled to its full size or recycled from a dead segment of that size,
//! synced) and that rename is made durable by syncing the directory; a crash during creation
//! leaves at most a `<id>.seg.tmp`, and a dead segment kept for recycling is a
//! `<id>.seg.spare`: `open` removes both. Every creation or removal of a segment is followed
//! by an fsync of the directory.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::format::{SEGMENT_HEADER_BYTES, encode_end_marker, encode_segment_header};
use super::pace::Pace;

const SEGMENT_SUFFIX: &str = ".seg";
const TEMPORARY_SUFFIX: &str = ".seg.tmp";
const SPARE_SUFFIX: &str = ".seg.spare";
/// Zeros are written, and synced, in pieces of this size (bounded memory, and a bounded
/// wait for the commits that share the disk's cache flushes).
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// The path of segment `segment` in `dir`.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

/// Where segment `segment` is prepared before [`install_segment`] names it: also where a spare
/// being recycled as that segment is renamed to.
pub(crate) fn temporary_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{TEMPORARY_SUFFIX}"))
}

/// Keeps dead segment `segment` as a spare for [`prepare_segment`] to recycle, instead of
/// removing it: the caller syncs the directory, and a crash before the spare is used only
/// means `open` removes it.
pub(crate) fn retire_segment(dir: &Path, segment: u64) -> Result<PathBuf, StoreError> {
    let spare = dir.join(format!("{segment:020}{SPARE_SUFFIX}"));
    std::fs::rename(segment_path(dir, segment), &spare)
        .map_err(|source| StoreError::io(&spare, source))?;
    Ok(spare)
}

/// The segment ids present in `dir`, ascending. Leftover temporary files of an interrupted
/// creation, and spares, are removed on the way.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::io(dir, source))?;
    let mut segments = Vec::new();
    let mut removed_any = false;
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::io(dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let unfinished = name.ends_with(TEMPORARY_SUFFIX);
        if unfinished || name.ends_with(SPARE_SUFFIX) {
            if unfinished {
                tracing::warn!(file = %entry.path().display(), "removing an unfinished journal segment");
            }
            std::fs::remove_file(entry.path())
                .map_err(|source| StoreError::io(entry.path(), source))?;
            removed_any = true;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(segment) if stem.len() == 20 && segment > 0 => segments.push(segment),
            _ => {
                return Err(StoreError::BadSegmentHeader {
                    path: entry.path(),
                    reason: "the file name is not a 20-digit segment id".to_owned(),
                });
            }
        }
    }
    if removed_any {
        sync_dir(dir)?;
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Creates segment `segment` of `segment_bytes` bytes, zero-filled and synced, and makes its
/// name durable: [`prepare_segment`] then [`install_segment`].
pub(crate) fn create_segment(
    dir: &Path,
    segment: u64,
    segment_bytes: u64,
    journal_bytes: u64,
) -> Result<File, StoreError> {
    let file = prepare_segment(
        dir,
        segment,
        segment_bytes,
        journal_bytes,
        false,
        None,
        &mut |_| false,
    )?;
    install_segment(dir, segment)?;
    Ok(file)
}

/// Writes segment `segment` under its temporary name ([`temporary_path`]), synced, ready for
/// [`install_segment`]: from a spare (a dead segment of the same size, see [`retire_segment`])
/// if one was already renamed there (`spare_claimed`), by rewriting its header and end marker,
/// else zero-filled. Zero-filling is slow (it writes the whole segment), so the writer runs
/// this ahead of time on a helper thread, at the `pace` it sets; before each piece of zeros it
/// asks `claim_spare` to rename a spare that has come since over the temporary file, and
/// recycles that one instead (the segments of a journal in steady state die soon after the
/// next is begun, so a miss at the start rarely costs a whole segment of zeros). The claim is
/// the caller's so that it can move the spare out of its accounting in the same step as the
/// rename (`Shared::claim_spare`). On failure nothing is left behind (the spares claimed
/// included); running out of space is reported as [`StoreError::DiskFull`].
pub(crate) fn prepare_segment(
    dir: &Path,
    segment: u64,
    segment_bytes: u64,
    journal_bytes: u64,
    spare_claimed: bool,
    pace: Option<&Pace>,
    claim_spare: &mut dyn FnMut(&Path) -> bool,
) -> Result<File, StoreError> {
    let temporary = temporary_path(dir, segment);
    let mut claimed = spare_claimed;
    loop {
        if std::mem::take(&mut claimed) {
            match recycle(&temporary, segment, segment_bytes) {
                Ok(file) => return Ok(file),
                Err(error) => {
                    tracing::warn!(segment = %temporary.display(), %error, "cannot recycle a journal segment; writing a new one");
                    let _ = std::fs::remove_file(&temporary);
                }
            }
        }
        match write_segment(&temporary, segment, segment_bytes, pace, claim_spare) {
            Ok(Written::Zeros(file)) => return Ok(file),
            // Renamed over the zeros written so far. Each claim uses up a spare, so this ends.
            Ok(Written::SpareClaimed) => claimed = true,
            Err(source) => {
                // Best effort: the file may not exist, and a failed removal changes nothing for
                // the caller, whose error is the one that matters (open removes leftovers
                // anyway).
                let _ = std::fs::remove_file(&temporary);
                return Err(if is_disk_full(&source) {
                    StoreError::DiskFull {
                        dir: dir.to_owned(),
                        segment,
                        segment_bytes,
                        journal_bytes,
                    }
                } else {
                    StoreError::io(&temporary, source)
                });
            }
        }
    }
}

/// Gives a prepared segment its real name and makes that durable; on failure the prepared
/// file is removed.
pub(crate) fn install_segment(dir: &Path, segment: u64) -> Result<(), StoreError> {
    let temporary = temporary_path(dir, segment);
    let path = segment_path(dir, segment);
    if let Err(source) = std::fs::rename(&temporary, &path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(StoreError::io(&path, source));
    }
    if let Err(error) = sync_dir(dir) {
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok(())
}

/// Removes a prepared segment that will not be used.
pub(crate) fn discard_prepared(dir: &Path, segment: u64) {
    // Best effort: open removes leftovers anyway.
    let _ = std::fs::remove_file(temporary_path(dir, segment));
}

/// The start of every segment: its header, then the end marker of no data at all.
fn segment_head(segment: u64) -> Vec<u8> {
    let mut head = encode_segment_header(segment).to_vec();
    head.extend_from_slice(&encode_end_marker(segment, SEGMENT_HEADER_BYTES));
    head
}

/// Makes the spare already renamed to `temporary` segment `segment`. Its old records stay where
/// they are: their CRCs name the old segment, so they never validate as this one's.
fn recycle(temporary: &Path, segment: u64, segment_bytes: u64) -> std::io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open(temporary)?;
    let bytes = file.metadata()?.len();
    if bytes != segment_bytes {
        return Err(std::io::Error::other(format!(
            "a spare of {bytes} bytes, not {segment_bytes}"
        )));
    }
    file.write_all_at(&segment_head(segment), 0)?;
    file.sync_data()?;
    Ok(file)
}

/// How [`write_segment`] ended.
enum Written {
    /// Zero-filled to its full size and synced.
    Zeros(File),
    /// A spare came before the zeros were done and was renamed over them: recycle it instead.
    SpareClaimed,
}

fn write_segment(
    path: &Path,
    segment: u64,
    segment_bytes: u64,
    pace: Option<&Pace>,
    claim_spare: &mut dyn FnMut(&Path) -> bool,
) -> std::io::Result<Written> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // Zero-filled rather than sparse or fallocated: pre-written segments were measured to
    // sync about twice as fast, and writing every block is what surfaces ENOSPC here, at
    // creation, instead of in the middle of a batch.
    let head = segment_head(segment);
    file.write_all(&head)?;
    let claimed = write_zeros(
        &mut file,
        path,
        head.len() as u64,
        segment_bytes,
        pace,
        claim_spare,
    )?;
    if claimed {
        return Ok(Written::SpareClaimed);
    }
    file.sync_all()?;
    Ok(Written::Zeros(file))
}

/// Writes zeros from `from` (the file's current position) to `to`, syncing after each piece,
/// each piece only once `pace` allows it. Stops early, returning true, if `claim_spare` renames
/// a spare over `path` (the file being written) before a piece.
///
/// A device cache flush makes every write before it durable, whoever asked: left to one
/// `fsync` at the end, a segment's 64 MiB of zeros stalled every journal's `fdatasync` on
/// the disk for 15–50 ms at once (all four managers of a 3-hop bench together). Synced a
/// piece at a time, each commit waits for at most one piece.
fn write_zeros(
    file: &mut File,
    path: &Path,
    from: u64,
    to: u64,
    pace: Option<&Pace>,
    claim_spare: &mut dyn FnMut(&Path) -> bool,
) -> std::io::Result<bool> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        if let Some(pace) = pace {
            pace.wait_to_write(at).map_err(|_| {
                std::io::Error::new(ErrorKind::Interrupted, "the segment is no longer wanted")
            })?;
        }
        if claim_spare(path) {
            return Ok(true);
        }
        let piece = (to - at).min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..piece])?;
        file.sync_data()?;
        at += piece as u64;
    }
    Ok(false)
}

/// Whether `error` means the filesystem is out of space (or quota).
pub(crate) fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ) || error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

/// Makes creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| StoreError::io(dir, source))
}

/// Creates `dir` and any missing parents so that each new name is durable: a directory's entry
/// lives in its parent, so each parent that gained one is synced. Without it a power cut may
/// take a freshly made data directory away, with every message acknowledged in it.
pub fn create_dir_durably(dir: &Path) -> Result<(), StoreError> {
    // A relative path ends in "", which never exists and is no folder to make.
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|path| !path.as_os_str().is_empty() && !path.exists())
        .collect();
    for path in missing.iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            // Made meanwhile by someone else: its name is theirs to make durable, but syncing
            // the parent again costs little and covers them.
            Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::io(*path, source)),
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_segments_are_listed_and_temporaries_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_segment(dir.path(), 2, 8192, 0).expect("create");
        create_segment(dir.path(), 1, 8192, 0).expect("create");
        std::fs::write(temporary_path(dir.path(), 3), b"partial").expect("write");
        assert_eq!(list_segments(dir.path()).expect("list"), vec![1, 2]);
        assert!(!temporary_path(dir.path(), 3).exists());
        let len = std::fs::metadata(segment_path(dir.path(), 2))
            .expect("metadata")
            .len();
        assert_eq!(len, 8192);
    }

    #[test]
    fn a_spare_that_comes_while_zeros_are_written_is_recycled_instead() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_bytes = 4 * ZERO_CHUNK_BYTES as u64;
        create_segment(dir.path(), 1, segment_bytes, 0).expect("create");
        // A byte zero-filling would not leave, where recycling does not write.
        let marker_at = 3 * ZERO_CHUNK_BYTES as u64;
        File::options()
            .write(true)
            .open(segment_path(dir.path(), 1))
            .expect("open")
            .write_all_at(&[0xAB], marker_at)
            .expect("mark");
        let spare = retire_segment(dir.path(), 1).expect("retire");
        // No spare for the first piece of zeros; then it comes.
        let mut asked = 0;
        let mut claim_spare = |to: &Path| {
            asked += 1;
            asked == 2 && std::fs::rename(&spare, to).is_ok()
        };
        let file = prepare_segment(
            dir.path(),
            2,
            segment_bytes,
            0,
            false,
            None,
            &mut claim_spare,
        )
        .expect("prepare");
        assert_eq!(asked, 2, "asked before each piece until one came");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, marker_at).expect("read");
        assert_eq!(byte, [0xAB], "the spare's file, not the zeros");
        assert_eq!(file.metadata().expect("metadata").len(), segment_bytes);
        assert!(!spare.exists(), "the spare was used");
        // Nothing else left behind (the zeros begun were renamed over).
        let files = std::fs::read_dir(dir.path()).expect("read_dir").count();
        assert_eq!(files, 1, "only the prepared segment");
        install_segment(dir.path(), 2).expect("install");
        assert_eq!(list_segments(dir.path()).expect("list"), vec![2]);
    }
}
