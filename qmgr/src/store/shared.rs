//! The journal's state shared by its handles and its writer: the segment table, the spares
//! kept for recycling, the active segment's write offset, and the counters `stats` reports.
//!
//! Invariants: every table is changed by single inserts, removals or swaps under its lock, so a
//! panic never leaves one half-changed; a segment retired as a spare moves from one table to
//! the other under both locks at once, so a reader holding both counts it once; a spare leaves
//! its table under its lock in the same step as its file is renamed to the temporary name of
//! the segment being prepared (counted again once installed), so a `.seg.spare` file is never
//! left out of the count (save one that can be neither renamed nor removed). Locked together,
//! `segments` is always taken first.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::format::SEGMENT_HEADER_BYTES;

/// Buckets of the fdatasync latency histogram: bucket `i` counts syncs that took less than
/// `2^i` µs (the last one everything slower), i.e. 1 µs to ~32 ms and beyond.
pub const FSYNC_BUCKETS: usize = 16;

/// Dead segments kept for recycling, at most this many: a new segment is then a rename and a
/// header instead of a whole file of zeros (which cost a tenth of a 3-hop forward's CPU).
pub(super) const SPARES_MAX: usize = 2;

/// A dead segment's file, kept to become a later segment.
pub(super) struct Spare {
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
}

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(super) segments: Mutex<BTreeMap<u64, SegmentEntry>>,
    /// Counted in [`Shared::bytes_on_disk`], so `disk_bytes_max` holds with them.
    pub(super) spares: Mutex<Vec<Spare>>,
    pub(super) active_segment: AtomicU64,
    /// Written bytes of the active segment (its write offset).
    pub(crate) active_written: AtomicU64,
    pub(super) commits: AtomicU64,
    /// Batches committed by a producer on its own thread ([`Journal::release`]).
    pub(super) commits_inline: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) batch_records_last: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) fsync_nanos_total: AtomicU64,
    pub(super) fsync_nanos_max: AtomicU64,
    pub(super) fsync_buckets: [AtomicU64; FSYNC_BUCKETS],
}

pub(super) struct SegmentEntry {
    pub(super) file: Arc<File>,
    pub(super) bytes_on_disk: u64,
    /// Offset where the segment's written data ends (for the active one, see `active_written`).
    pub(super) bytes_written: u64,
}

/// What `spares` hold of the disk.
pub(super) fn spare_bytes(spares: &[Spare]) -> u64 {
    spares.iter().map(|spare| spare.bytes).sum()
}

impl Shared {
    pub(super) fn segments(&self) -> MutexGuard<'_, BTreeMap<u64, SegmentEntry>> {
        // The table stays consistent under every panic point (single inserts and removals).
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn spares(&self) -> MutexGuard<'_, Vec<Spare>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Both tables, for a reader that needs them consistent with each other (a segment retired
    /// as a spare is in exactly one of them), in the one order they are ever locked together.
    pub(super) fn tables(
        &self,
    ) -> (
        MutexGuard<'_, BTreeMap<u64, SegmentEntry>>,
        MutexGuard<'_, Vec<Spare>>,
    ) {
        let segments = self.segments();
        (segments, self.spares())
    }

    /// Recycles a kept spare as the segment being prepared: renames its file to `to` (that
    /// segment's temporary file, `segment::temporary_path`), true if there was one to rename.
    ///
    /// The rename is made under the spares' lock: popping the spare first and renaming it after
    /// the lock was let go left a moment (longer on a loaded machine, the helper thread being
    /// preempted in between) when its file was still a `.seg.spare` on disk but no longer
    /// counted, so `stats` reported a spare fewer than the directory held. A spare that cannot
    /// be renamed is removed (best effort; `open` removes leftover spares anyway), so it does
    /// not stay on disk uncounted, and the next one is tried. A rename is a change of the
    /// directory, not a sync, so those waiting for the lock (`stats`) wait little.
    pub(crate) fn claim_spare(&self, to: &Path) -> bool {
        let mut spares = self.spares();
        while let Some(spare) = spares.pop() {
            match std::fs::rename(&spare.path, to) {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(spare = %spare.path.display(), %error, "cannot recycle a journal segment");
                    let _ = std::fs::remove_file(&spare.path);
                }
            }
        }
        false
    }

    /// The segments' files and the spares: what the journal holds of the disk. The segment
    /// being prepared ahead (a spare recycled for it included) counts only once installed: the
    /// writer checks `disk_bytes_max` only while no prepared file is on disk, before preparing
    /// one or once the last one is installed or removed.
    pub(crate) fn bytes_on_disk(&self) -> u64 {
        let (segments, spares) = self.tables();
        let segment_bytes: u64 = segments.values().map(|entry| entry.bytes_on_disk).sum();
        segment_bytes + spare_bytes(&spares)
    }

    pub(crate) fn seal_and_add_segment(
        &self,
        sealed: u64,
        sealed_bytes_written: u64,
        segment: u64,
        file: Arc<File>,
        bytes_on_disk: u64,
    ) {
        let mut segments = self.segments();
        if let Some(entry) = segments.get_mut(&sealed) {
            entry.bytes_written = sealed_bytes_written;
        }
        segments.insert(
            segment,
            SegmentEntry {
                file,
                bytes_on_disk,
                bytes_written: SEGMENT_HEADER_BYTES,
            },
        );
        self.active_written
            .store(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        self.active_segment.store(segment, Ordering::Release);
    }

    pub(crate) fn record_fsync(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        let micros = nanos / 1000;
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.fsync_buckets[bucket.min(FSYNC_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, records: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.batch_records_last.store(records, Ordering::Relaxed);
    }
}
