//! The store: one durable journal per manager, shared by all its queues.
//!
//! A content-agnostic, segmented, append-only journal of opaque payloads with group commit.
//! It owns durability and recovery only: it does not know about queues or messages (the queue
//! manager core encodes its own records inside payloads), and it never decides which records
//! are dead (callers delete a prefix of segments with [`Journal::delete_segments_before`]).
//!
//! Invariants:
//! - an append is acknowledged only once its whole atomic group is durable, and a group is
//!   replayed whole or not at all;
//! - a torn tail of the last segment is truncated with a warning; corruption anywhere else is
//!   never dropped silently: `open` refuses with [`StoreError::Corrupt`], or skips and reports
//!   it under `salvage`;
//! - a failed `fdatasync` stops the process (`writer::fatal`).
//!
//! Modules: [`format`] (the versioned on-disk layout, an API boundary), [`segment`] (files),
//! `pace` (zero-filling a segment ahead no faster than the active one fills), [`recovery`]
//! (torn tail versus corruption), `requests` (the queue to the writer, which wakes it only
//! when worth it), [`writer`] (the group-commit thread), [`journal`] (the shared handle and
//! `open`).

pub(crate) mod error;
pub(crate) mod format;
pub(crate) mod journal;
mod pace;
pub(crate) mod recovery;
mod requests;
pub(crate) mod segment;
mod shared;
pub(crate) mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use error::{RecordCount, StoreError};
pub use journal::{Commit, FSYNC_BUCKETS, Journal, JournalStats, SegmentStats, open};
pub use recovery::{RecoveryReport, SalvagedRange, TruncatedTail};
pub use segment::create_dir_durably;

/// Whether the writer makes each batch durable before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` once per batch before acknowledging: the only safe choice.
    Always,
    /// Never sync: acknowledged records may be lost on a crash, and recovery's torn-tail rule
    /// no longer holds. For tests and for measuring only.
    Never,
}

/// Where a journal lives and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub sync: SyncPolicy,
    /// Pre-allocated size of each new segment.
    pub segment_bytes: u64,
    /// Skip corrupt ranges on open (reporting each) instead of refusing to open.
    pub salvage: bool,
    /// Refuse to create a segment that would take the journal's files past this size, as if
    /// the disk were full: a quota, and the way tests inject a full disk.
    pub disk_bytes_max: Option<u64>,
}

impl JournalConfig {
    /// The safe defaults: sync always, 32 MiB segments, no salvage, no size limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncPolicy::Always,
            segment_bytes: format::SEGMENT_BYTES_DEFAULT,
            salvage: false,
            disk_bytes_max: None,
        }
    }
}

/// Where one record lives: `offset` is the segment offset of the record (its header), `len`
/// the length of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}
