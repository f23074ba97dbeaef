//! What a crash is asked to do and what it did: the values the library API, the control
//! file and the `crashfs crash` command exchange (as JSON over the control file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashOptions {
    /// Keep a random proper prefix (possibly empty) of each file's last unsynced write,
    /// instead of discarding it whole, as a power cut in the middle of a write may.
    pub tear: bool,
    /// Seeds the tears; a crash without one draws a seed and reports it, so a run can be
    /// replayed.
    pub seed: Option<u64>,
}

/// What a crash discarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// The seed the tears were drawn with.
    pub seed: u64,
    /// Files whose unsynced data was discarded.
    pub files_reverted: usize,
    /// Undo records applied to them (a run of contiguous writes, or a size change, is one).
    pub writes_discarded: usize,
    /// Directory changes (creations, removals, renames) undone.
    pub entries_undone: usize,
    /// The writes kept in part.
    pub torn: Vec<Torn>,
    /// Directory changes that could not be undone because a durable change took their
    /// object away (e.g. a file created in one unsynced directory, then renamed into a
    /// synced one). The state is still one a real disk could leave.
    pub problems: Vec<String>,
}

/// One write kept in part by `crash --tear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Torn {
    /// The file, relative to the mount point, where it was when first written since its
    /// last sync.
    pub path: PathBuf,
    /// Where the write began.
    pub offset: u64,
    /// Bytes of it kept, from its start: less than `len`.
    pub kept: u64,
    /// Its length.
    pub len: u64,
}

/// What a crash now would discard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Files with unsynced data.
    pub files: usize,
    /// Their undo records.
    pub records: usize,
    /// Directory changes not yet durable.
    pub entries: usize,
    /// Bytes held in memory to undo them.
    pub memory_bytes: u64,
}
