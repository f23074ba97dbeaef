//! Reopening a journal directory: the I/O half of recovery. Reads each segment file, hands
//! its bytes to [`scan_segment`] (which decides), and makes those decisions durable (padding
//! over salvaged ranges, new seals, a cleared tail) before the writer appends again. A
//! directory without segments gets its first one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::store::error::StoreError;
use crate::store::format::{
    Decoded, END_MARKER_BYTES, FORMAT_VERSION, FORMAT_VERSION_MIN, RECORD_ALIGN_BYTES, SEAL_BYTES,
    SEGMENT_BYTES_MAX, SEGMENT_HEADER_BYTES, SegmentHeaderError, decode_record,
    decode_segment_header, encode_end_marker, encode_padding, encode_seal,
};
use crate::store::recovery::{
    RecoveryReport, SalvagedRange, ScannedSegment, TORN_WRITE_BYTES_MAX, TruncatedTail,
    scan_segment,
};
use crate::store::segment::{create_segment, list_segments, segment_path};
use crate::store::shared::SegmentEntry;
use crate::store::writer::ActiveSegment;
use crate::store::{JournalConfig, Location};

/// What [`recover`] leaves for the writer to go on from.
pub(super) struct Recovered {
    /// Every segment on disk.
    pub(super) segments: BTreeMap<u64, SegmentEntry>,
    /// The last of them, where appends go.
    pub(super) active: ActiveSegment,
    pub(super) report: RecoveryReport,
}

/// Replays every intact record of the journal in `config.dir` through `replay`, in journal
/// order (see [`super::open`]), or creates its first segment if it has none.
pub(super) fn recover<F, E>(config: &JournalConfig, mut replay: F) -> Result<Recovered, StoreError>
where
    F: FnMut(Location, &[u8]) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ids = list_segments(&config.dir)?;
    if ids.is_empty() {
        return first_segment(config);
    }
    let mut report = RecoveryReport::default();
    check_contiguous(config, &ids, &mut report)?;
    let mut deliver = |location: Location, payload: &[u8]| {
        replay(location, payload).map_err(|error| StoreError::Replay {
            segment: location.segment,
            offset: location.offset,
            error: error.into(),
        })
    };
    let mut segments = BTreeMap::new();
    let mut buffer = Vec::new();
    let mut active = None;
    let last = ids.last().copied();
    for &id in &ids {
        let is_last = Some(id) == last;
        let (entry, resumes) =
            recover_segment(config, id, is_last, &mut buffer, &mut report, &mut deliver)?;
        segments.insert(id, entry);
        if resumes.is_some() {
            active = resumes;
        }
    }
    let Some(active) = active else {
        return Err(StoreError::Config {
            reason: "no active segment after recovery".to_owned(),
        });
    };
    Ok(Recovered {
        segments,
        active,
        report,
    })
}

/// A new journal's segment 1, if the disk limit leaves room for it.
fn first_segment(config: &JournalConfig) -> Result<Recovered, StoreError> {
    if let Some(limit) = config.disk_bytes_max {
        if config.segment_bytes > limit {
            return Err(StoreError::DiskFull {
                dir: config.dir.clone(),
                segment: 1,
                segment_bytes: config.segment_bytes,
                journal_bytes: 0,
            });
        }
    }
    let file = Arc::new(create_segment(&config.dir, 1, config.segment_bytes, 0)?);
    let entry = SegmentEntry {
        file: Arc::clone(&file),
        bytes_on_disk: config.segment_bytes,
        bytes_written: SEGMENT_HEADER_BYTES,
    };
    Ok(Recovered {
        segments: BTreeMap::from([(1, entry)]),
        active: ActiveSegment {
            id: 1,
            file,
            write_offset: SEGMENT_HEADER_BYTES,
            capacity: config.segment_bytes,
            records: 0,
            sealed: false,
        },
        report: RecoveryReport::default(),
    })
}

/// Reads segment `id` into `buffer`, replays its intact groups through `deliver`, and makes
/// what the scan decided durable. Returns its table entry, and for the last segment the
/// active one appends go to.
fn recover_segment<F>(
    config: &JournalConfig,
    id: u64,
    is_last: bool,
    buffer: &mut Vec<u8>,
    report: &mut RecoveryReport,
    deliver: &mut F,
) -> Result<(SegmentEntry, Option<ActiveSegment>), StoreError>
where
    F: FnMut(Location, &[u8]) -> Result<(), StoreError>,
{
    let path = segment_path(&config.dir, id);
    let (file, bytes_on_disk) = read_segment(&path, buffer)?;
    let version = check_header(buffer, id, &path)?;
    let scanned = scan_segment(buffer, id, version, &path, is_last, config.salvage, deliver)?;
    report.segments += 1;
    report.records += scanned.records;
    report.payload_bytes += scanned.payload_bytes;
    apply_salvage(&file, id, &scanned, bytes_on_disk)
        .map_err(|source| StoreError::io(&path, source))?;
    report.salvaged.extend(scanned.salvaged);
    // Appends resume at the end of the last segment's data, unless it is sealed.
    let resumes =
        is_last && !scanned.reseal && (scanned.torn_tail.is_some() || scanned.seal.is_none());
    if resumes {
        clear_past_end(&file, id, buffer, scanned.end, scanned.torn_tail.as_ref())
            .map_err(|source| StoreError::io(&path, source))?;
    }
    report.truncated_tail = scanned.torn_tail;
    let file = Arc::new(file);
    let entry = SegmentEntry {
        file: Arc::clone(&file),
        bytes_on_disk,
        bytes_written: scanned.end,
    };
    let active = is_last.then(|| ActiveSegment {
        id,
        file,
        write_offset: scanned.end,
        // A sealed segment takes no more records: the first append rolls.
        capacity: if scanned.seal.is_some() {
            scanned.end
        } else {
            bytes_on_disk - bytes_on_disk % RECORD_ALIGN_BYTES
        },
        records: scanned.records,
        sealed: scanned.seal.is_some(),
    });
    Ok((entry, active))
}

/// Opens the segment at `path` for recovery and reads it whole into `buffer`; returns the
/// file and its size.
fn read_segment(path: &Path, buffer: &mut Vec<u8>) -> Result<(File, u64), StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::io(path, source))?;
    let bytes_on_disk = file
        .metadata()
        .map_err(|source| StoreError::io(path, source))?
        .len();
    if bytes_on_disk > SEGMENT_BYTES_MAX {
        return Err(StoreError::BadSegmentHeader {
            path: path.to_owned(),
            reason: format!("larger than the segment limit of {SEGMENT_BYTES_MAX}"),
        });
    }
    buffer.clear();
    file.read_to_end(buffer)
        .map_err(|source| StoreError::io(path, source))?;
    Ok((file, bytes_on_disk))
}

/// Makes salvage's decisions about a segment durable, if it made any.
fn apply_salvage(
    file: &File,
    segment: u64,
    scanned: &ScannedSegment,
    bytes_on_disk: u64,
) -> std::io::Result<()> {
    if scanned.salvaged.is_empty() && !scanned.reseal {
        return Ok(());
    }
    pad_salvaged(file, segment, &scanned.salvaged)?;
    if scanned.reseal {
        let at = scanned.seal.unwrap_or(scanned.end);
        reseal(file, segment, at, scanned.records, bytes_on_disk)?;
    }
    file.sync_data()
}

fn check_contiguous(
    config: &JournalConfig,
    ids: &[u64],
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    for pair in ids.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after == before + 1 {
            continue;
        }
        if !config.salvage {
            return Err(StoreError::MissingSegment {
                dir: config.dir.clone(),
                segment: before + 1,
                before,
                after,
            });
        }
        tracing::warn!(
            before,
            after,
            "salvage: journal segments between these are missing"
        );
        report.missing_segments.push(before + 1..after);
    }
    Ok(())
}

/// The segment's format version, once its header checks out.
fn check_header(bytes: &[u8], segment: u64, path: &std::path::Path) -> Result<u32, StoreError> {
    let bad = |reason: String| StoreError::BadSegmentHeader {
        path: path.to_owned(),
        reason,
    };
    decode_segment_header(bytes, segment).map_err(|error| match error {
        SegmentHeaderError::UnsupportedVersion(version) => StoreError::UnsupportedVersion {
            path: path.to_owned(),
            version,
            oldest: FORMAT_VERSION_MIN,
            supported: FORMAT_VERSION,
        },
        SegmentHeaderError::NotASegment => bad("no journal segment magic".to_owned()),
        SegmentHeaderError::BadCrc => bad("segment header CRC mismatch".to_owned()),
        SegmentHeaderError::WrongSegment(named) => bad(format!("the header names segment {named}")),
    })
}

/// Makes salvage's decisions durable: each skipped range becomes padding.
fn pad_salvaged(file: &File, segment: u64, ranges: &[SalvagedRange]) -> std::io::Result<()> {
    for range in ranges {
        let bytes = range.offsets.end - range.offsets.start;
        match encode_padding(segment, range.offsets.start, bytes) {
            Some(image) => file.write_all_at(&image, range.offsets.start)?,
            // Too short for a header: it stays, and the next open reports it again.
            None => tracing::warn!(segment, ?range.offsets, "cannot pad a salvaged range"),
        }
    }
    Ok(())
}

/// Writes the seal salvage decided on, so that later opens accept the segment as it now is.
fn reseal(file: &File, segment: u64, at: u64, records: u64, bytes: u64) -> std::io::Result<()> {
    if at + SEAL_BYTES > bytes {
        // No room: the next open reports the same loss again.
        tracing::warn!(segment, at, "no room to reseal a salvaged journal segment");
        return Ok(());
    }
    file.write_all_at(&encode_seal(segment, at, records), at)
}

/// Makes sure nothing past `end`, where appends to the last segment resume, is ever read as a
/// record. The last write, never acknowledged, may have left records there that validate: its
/// later pages reached the disk, the one holding the previous end marker did not, so the scan
/// ended cleanly before them. Appends over them would bring them back once a later write lost
/// its own end marker. So whatever is there is zeroed as far as one write reaches (a torn tail
/// as far as it was found), made durable, and only then is the end marker written, if it is
/// not already there. Zeroed, not cut: the segment stays pre-allocated.
fn clear_past_end(
    file: &File,
    segment: u64,
    bytes: &[u8],
    end: u64,
    torn: Option<&TruncatedTail>,
) -> std::io::Result<()> {
    let len = bytes.len() as u64;
    let marked = torn.is_none()
        && usize::try_from(end)
            .is_ok_and(|at| decode_record(bytes, segment, 0, at) == Decoded::EndMarker);
    let from = if marked { end + END_MARKER_BYTES } else { end };
    let reach = (end + TORN_WRITE_BYTES_MAX)
        .max(torn.map_or(0, |tail| tail.offset + tail.bytes_dropped))
        .min(len);
    if from < reach
        && bytes[from as usize..reach as usize]
            .iter()
            .any(|&byte| byte != 0)
    {
        zero_range(file, from, reach - from)?;
        file.sync_data()?;
    }
    if !marked && end + END_MARKER_BYTES <= len {
        file.write_all_at(&encode_end_marker(segment, end), end)?;
        file.sync_data()?;
    }
    Ok(())
}

fn zero_range(file: &File, offset: u64, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; bytes.min(1024 * 1024) as usize];
    let mut done = 0;
    while done < bytes {
        let piece = (bytes - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..piece], offset + done)?;
        done += piece as u64;
    }
    Ok(())
}
