//! Recovery's decisions about one segment's bytes: which groups are intact and delivered, where
//! the written data ends, and whether damage is a torn tail (truncated with a warning) or
//! corruption (refused, or skipped and reported under salvage).
//!
//! No I/O here: the caller reads a segment into memory, calls [`scan_segment`], and applies
//! the outcome (zeroing a torn tail) to the file.
//!
//! The torn-tail rule: only the last segment can have one, and only within the last write
//! (everything before it was fdatasync'd before the write was issued, and the pages of one
//! write may reach the disk in any order). The first record of every write is flagged
//! ([`WRITE_START_FLAG`](super::format::WRITE_START_FLAG)). So damage in the last segment followed by no valid write start is a
//! torn tail; a later write start proves that the damaged bytes had been synced once, i.e.
//! corruption. This relies on `SyncPolicy::Always`.

use std::ops::Range;
use std::path::Path;

use super::Location;
use super::error::{RecordCount, StoreError};
use super::format::{
    BATCH_BYTES_MAX, Decoded, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, SEAL_BYTES,
    SEGMENT_HEADER_BYTES, align_up, decode_record,
};

/// What recovery found and did, for the caller to log and show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: u64,
    /// Records delivered to the replay function.
    pub records: u64,
    /// Payload bytes delivered to the replay function.
    pub payload_bytes: u64,
    /// The torn tail cut off the last segment, if there was one.
    pub truncated_tail: Option<TruncatedTail>,
    /// Damaged ranges skipped under salvage, in journal order.
    pub salvaged: Vec<SalvagedRange>,
    /// Ranges of segment ids found missing and skipped under salvage.
    pub missing_segments: Vec<Range<u64>>,
}

/// A torn tail removed from the last segment (the remains of a write never acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    pub segment: u64,
    /// Where the written data now ends.
    pub offset: u64,
    /// Bytes from `offset` on that the torn write may have left, zeroed at open (in a
    /// recycled segment, also what its earlier life left there, as far as a write reaches).
    pub bytes_dropped: u64,
}

/// A damaged range skipped under salvage: everything in it is lost. Salvage overwrites it with
/// padding records (when it is at least a record header long), so later opens skip it without
/// complaint: the loss is reported once, by the open that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvagedRange {
    pub segment: u64,
    /// Segment offsets of the range, from the start of the damaged group to the next valid
    /// group (or the end of the segment's written data).
    pub offsets: Range<u64>,
    pub reason: &'static str,
    /// Records lost in the range, when their headers still say.
    pub records_lost: RecordCount,
}

/// The outcome of scanning one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScannedSegment {
    pub records: u64,
    pub payload_bytes: u64,
    /// Where the valid written data ends: where appends resume in the last segment.
    pub end: u64,
    /// For the last segment: a torn tail to zero, from `end` on.
    pub torn_tail: Option<TruncatedTail>,
    pub salvaged: Vec<SalvagedRange>,
    /// Where the segment's seal is, if its data ends with one.
    pub seal: Option<u64>,
    /// Salvage changed what the segment holds: its seal must be (re)written, at `seal` or at
    /// `end`, with `records`.
    pub reseal: bool,
}

enum GroupRead {
    Complete { next: usize },
    Padding { next: usize },
    Seal { records: u64, next: usize },
    End,
    EndMarker,
    Bad { at: usize, reason: &'static str },
}

/// The most bytes past the end of a segment's data that the last write can have left: one
/// write and its end marker (under `SyncPolicy::Always` one write at a time is unsynced). Open
/// zeroes this far past the end of the last segment, torn or not, not to the file's last
/// non-zero byte, which in a recycled file is its earlier life's data.
pub(crate) const TORN_WRITE_BYTES_MAX: u64 = BATCH_BYTES_MAX + SEAL_BYTES;

/// Scans segment `segment` (its whole file in `bytes`, of format `version`), delivering every
/// record of every intact group in order to `deliver`.
///
/// A format-2 segment's data ends at its end marker or its seal; what follows may be the
/// stale bytes of a recycled file, never read as records (their CRCs name another segment).
/// A format-1 segment's data ends where only zeros follow.
pub(crate) fn scan_segment<F>(
    bytes: &[u8],
    segment: u64,
    version: u32,
    path: &Path,
    is_last: bool,
    salvage: bool,
    deliver: &mut F,
) -> Result<ScannedSegment, StoreError>
where
    F: FnMut(Location, &[u8]) -> Result<(), StoreError>,
{
    let scan = Scan {
        bytes,
        segment,
        version,
        path,
        is_last,
        salvage,
        written_end: written_end(bytes),
    };
    let mut scanned = ScannedSegment::default();
    let mut group = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    // The last seal seen and the records it counts, while nothing has followed it.
    let mut seal: Option<(usize, u64)> = None;
    loop {
        let (bad_at, reason) = match read_group(bytes, segment, pos, &mut group) {
            GroupRead::Complete { next } => {
                scan.deliver(&mut group, &mut scanned, deliver)?;
                pos = next;
                seal = None;
                continue;
            }
            GroupRead::Padding { next } => {
                pos = next;
                continue;
            }
            GroupRead::Seal { records, next } => {
                seal = Some((pos, records));
                pos = next;
                if version < 2 {
                    continue;
                }
                return scan.finish(scanned, seal, pos);
            }
            GroupRead::EndMarker => return scan.finish(scanned, seal, pos),
            GroupRead::End if pos >= scan.written_end => return scan.finish(scanned, seal, pos),
            GroupRead::End => (pos, "zeros where a record should start"),
            GroupRead::Bad { at, reason } => (at, reason),
        };
        // The whole group starting at `pos` is lost, whatever record of it is damaged.
        if let Some(tail) = scan.torn_tail(pos, bad_at, reason) {
            scanned.end = pos as u64;
            scanned.torn_tail = Some(tail);
            return Ok(scanned);
        }
        match scan.skip_damage(&mut scanned, pos, bad_at, reason)? {
            Some(at) => pos = at,
            None => return Ok(scanned),
        }
    }
}

/// One segment under [`scan_segment`], and what its decisions depend on.
struct Scan<'a> {
    bytes: &'a [u8],
    segment: u64,
    version: u32,
    path: &'a Path,
    is_last: bool,
    salvage: bool,
    /// Past this everything is zero, so no record can start there: bounds every scan. (A
    /// recycled file's earlier life may reach to its end: its bytes never validate.)
    written_end: usize,
}

impl Scan<'_> {
    /// Hands every record of a complete `group` to `deliver`, in order.
    fn deliver<F>(
        &self,
        group: &mut Vec<(usize, Range<usize>)>,
        scanned: &mut ScannedSegment,
        deliver: &mut F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Location, &[u8]) -> Result<(), StoreError>,
    {
        for (offset, payload) in group.drain(..) {
            let location = Location {
                segment: self.segment,
                offset: offset as u64,
                len: payload.len() as u32,
            };
            deliver(location, &self.bytes[payload.clone()])?;
            scanned.records += 1;
            scanned.payload_bytes += payload.len() as u64;
        }
        Ok(())
    }

    /// The group at `pos`, damaged at `bad_at`, as a torn tail: only in the last segment, and
    /// only if no later write starts after the damage (see the module documentation).
    fn torn_tail(&self, pos: usize, bad_at: usize, reason: &'static str) -> Option<TruncatedTail> {
        if !self.is_last {
            return None;
        }
        let later_write = find(
            self.bytes,
            self.segment,
            bad_at + 1,
            self.written_end,
            Landmark::WriteStart,
        );
        if later_write.is_some() {
            return None;
        }
        let tail_end = if self.version < 2 {
            self.written_end
        } else {
            self.written_end
                .min(pos.saturating_add(TORN_WRITE_BYTES_MAX as usize))
        };
        let tail = TruncatedTail {
            segment: self.segment,
            offset: pos as u64,
            bytes_dropped: (tail_end.max(pos) - pos) as u64,
        };
        tracing::warn!(
            segment = %self.path.display(),
            offset = pos,
            bytes_dropped = tail.bytes_dropped,
            reason,
            "truncating the journal's torn tail (a write that was never acknowledged)"
        );
        Some(tail)
    }

    /// Loses the group at `pos`, damaged at `bad_at`, as corruption (see [`lose`]). Returns
    /// where the scan resumes, or `None` if nothing intact follows: then the segment's data
    /// ends there.
    fn skip_damage(
        &self,
        scanned: &mut ScannedSegment,
        pos: usize,
        bad_at: usize,
        reason: &'static str,
    ) -> Result<Option<usize>, StoreError> {
        let resume = find(
            self.bytes,
            self.segment,
            bad_at + 1,
            self.written_end,
            Landmark::GroupStart,
        );
        let range_end = resume.unwrap_or(self.written_end);
        lose(
            scanned,
            SalvagedRange {
                segment: self.segment,
                offsets: pos as u64..range_end as u64,
                reason,
                records_lost: count_records(self.bytes, pos, range_end),
            },
            resume.map_or(0, |at| count_chain(self.bytes, self.segment, at)),
            self.salvage,
            self.path,
            "salvage: skipping a corrupt journal range; its records are lost",
        )?;
        if resume.is_none() {
            // A cut file can end unaligned; appends must not.
            scanned.end = align_up(range_end as u64);
            scanned.reseal = !self.is_last;
        }
        Ok(resume)
    }

    /// The data of the segment ends at `pos`: checks a non-last segment's seal.
    fn finish(
        &self,
        mut scanned: ScannedSegment,
        seal: Option<(usize, u64)>,
        pos: usize,
    ) -> Result<ScannedSegment, StoreError> {
        scanned.end = pos as u64;
        scanned.seal = seal.map(|(at, _)| at as u64);
        if self.is_last {
            return Ok(scanned);
        }
        // Damage elsewhere in the segment already called for a new seal.
        let reason = match seal {
            _ if !scanned.salvaged.is_empty() => None,
            None => Some("the segment has a successor but no seal: its last records are lost"),
            Some((_, records)) if records != scanned.records => {
                Some("the segment's seal counts other records than it holds")
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            let records_lost = match seal {
                Some((_, records)) => RecordCount::Known(records.saturating_sub(scanned.records)),
                None => RecordCount::Unknown,
            };
            lose(
                &mut scanned,
                SalvagedRange {
                    segment: self.segment,
                    offsets: pos as u64..pos as u64,
                    reason,
                    records_lost,
                },
                0,
                self.salvage,
                self.path,
                "salvage: accepting a journal segment's lost tail",
            )?;
        }
        scanned.reseal = !scanned.salvaged.is_empty();
        Ok(scanned)
    }
}

/// Records of `lost` are gone: without `salvage` that is corruption (naming the
/// `records_following` it would cost to skip them), with it the range is logged with `message`
/// and kept in the report.
fn lose(
    scanned: &mut ScannedSegment,
    lost: SalvagedRange,
    records_following: u64,
    salvage: bool,
    path: &Path,
    message: &'static str,
) -> Result<(), StoreError> {
    if !salvage {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            segment: lost.segment,
            offset: lost.offsets.start,
            reason: lost.reason,
            range_end: lost.offsets.end,
            records_lost: lost.records_lost,
            records_following,
        });
    }
    tracing::warn!(
        segment = %path.display(),
        offset = lost.offsets.start,
        range_end = lost.offsets.end,
        records_lost = %lost.records_lost,
        reason = lost.reason,
        "{message}"
    );
    scanned.salvaged.push(lost);
    Ok(())
}

/// Validates the group starting at `pos`, leaving its records' (offset, payload range) in
/// `group` when it is complete.
fn read_group(
    bytes: &[u8],
    segment: u64,
    pos: usize,
    group: &mut Vec<(usize, Range<usize>)>,
) -> GroupRead {
    group.clear();
    let first = match decode_record(bytes, segment, 0, pos) {
        Decoded::Record(view) => view,
        Decoded::Padding { next } => return GroupRead::Padding { next },
        Decoded::Seal { records, next } => return GroupRead::Seal { records, next },
        Decoded::End => return GroupRead::End,
        Decoded::EndMarker => return GroupRead::EndMarker,
        Decoded::Invalid(reason) => return GroupRead::Bad { at: pos, reason },
    };
    if first.group_index != 0 {
        return GroupRead::Bad {
            at: pos,
            reason: "a group without its first record",
        };
    }
    let group_len = first.group_len;
    let mut next = first.next;
    group.push((pos, first.payload));
    for index in 1..group_len {
        match decode_record(bytes, segment, 0, next) {
            Decoded::Record(view) if view.group_len == group_len && view.group_index == index => {
                group.push((next, view.payload));
                next = view.next;
            }
            Decoded::Record(_) | Decoded::Padding { .. } | Decoded::Seal { .. } => {
                return GroupRead::Bad {
                    at: next,
                    reason: "a record out of its group's sequence",
                };
            }
            Decoded::End | Decoded::EndMarker => {
                return GroupRead::Bad {
                    at: next,
                    reason: "a group cut short",
                };
            }
            Decoded::Invalid(reason) => return GroupRead::Bad { at: next, reason },
        }
    }
    GroupRead::Complete { next }
}

/// The aligned offset just past the last non-zero byte (at least the segment header's end).
fn written_end(bytes: &[u8]) -> usize {
    // A zero tail can be most of a 64 MiB segment: test it a page at a time with an OR that
    // the compiler vectorizes, then find the exact byte within the last non-zero page.
    const PAGE_BYTES: usize = 4096;
    let nonzero = |piece: &[u8]| piece.iter().fold(0u8, |all, &byte| all | byte) != 0;
    let last = match bytes.chunks(PAGE_BYTES).rposition(nonzero) {
        None => 0,
        Some(page) => {
            let start = page * PAGE_BYTES;
            let end = (start + PAGE_BYTES).min(bytes.len());
            bytes[start..end]
                .iter()
                .rposition(|&byte| byte != 0)
                .map_or(start, |at| start + at + 1)
        }
    };
    (align_up(last as u64) as usize)
        .max(SEGMENT_HEADER_BYTES as usize)
        .min(bytes.len())
}

/// What a forward scan past damage looks for.
#[derive(Clone, Copy)]
enum Landmark {
    /// The start of an intact group: where salvage resumes.
    GroupStart,
    /// The start of a later write: proof that the damage had been synced once.
    WriteStart,
}

/// The first aligned offset in `from..end` holding `landmark`. Seals and padding count as
/// both: each was written and synced on its own (padding by an earlier salvage).
fn find(bytes: &[u8], segment: u64, from: usize, end: usize, landmark: Landmark) -> Option<usize> {
    let mut at = align_up(from as u64) as usize;
    while at < end {
        match (decode_record(bytes, segment, 0, at), landmark) {
            (Decoded::Record(view), Landmark::GroupStart) if view.group_index == 0 => {
                return Some(at);
            }
            (Decoded::Record(view), Landmark::WriteStart) if view.write_start => return Some(at),
            (Decoded::Padding { .. } | Decoded::Seal { .. }, _) => return Some(at),
            _ => {}
        }
        at += RECORD_ALIGN_BYTES as usize;
    }
    None
}

/// Records in `from..to` by following the length fields, if they lead exactly to `to`.
fn count_records(bytes: &[u8], from: usize, to: usize) -> RecordCount {
    let mut at = from;
    let mut count = 0;
    while at < to {
        let Some(field) = bytes.get(at..at + 4) else {
            return RecordCount::Unknown;
        };
        let mut word = [0u8; 4];
        word.copy_from_slice(field);
        let record_bytes = u32::from_le_bytes(word) as u64;
        if record_bytes < RECORD_HEADER_BYTES {
            return RecordCount::Unknown;
        }
        at += align_up(record_bytes) as usize;
        count += 1;
    }
    if at == to {
        RecordCount::Known(count)
    } else {
        RecordCount::Unknown
    }
}

/// Valid records in a row from `at` (padding skipped, not counted).
fn count_chain(bytes: &[u8], segment: u64, mut at: usize) -> u64 {
    let mut count = 0;
    loop {
        match decode_record(bytes, segment, 0, at) {
            Decoded::Record(view) => {
                count += 1;
                at = view.next;
            }
            Decoded::Padding { next } | Decoded::Seal { next, .. } => at = next,
            Decoded::End | Decoded::EndMarker | Decoded::Invalid(_) => return count,
        }
    }
}
