//! [`StoreError`]: the expected operating errors of the journal, one enum for the whole store
//! boundary. Bugs are assertions and a failed `fdatasync` stops the process (see
//! `writer::fatal`); neither is ever a variant here.

use std::path::PathBuf;

/// An expected operating error of the journal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("journal I/O on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A new segment could not be created: no space left (or the configured `disk_bytes_max`
    /// reached). Everything already stored is intact; appends work again once space returns.
    #[error(
        "disk full: cannot create journal segment {segment} of {segment_bytes} bytes in {dir} \
         (journal holds {journal_bytes} bytes); nothing already stored is affected"
    )]
    DiskFull {
        dir: PathBuf,
        segment: u64,
        segment_bytes: u64,
        journal_bytes: u64,
    },
    /// Damage before the journal's tail: never dropped silently.
    #[error(
        "journal segment {path} is corrupt at offset {offset} ({reason}): bytes \
         {offset}..{range_end} are unreadable ({records_lost} records), {records_following} \
         valid records follow in that segment; start with salvage to skip exactly that range"
    )]
    Corrupt {
        path: PathBuf,
        segment: u64,
        offset: u64,
        reason: &'static str,
        /// End of the damaged range: the next valid group in the segment, or the end of its
        /// written data.
        range_end: u64,
        /// Records in the damaged range, when their headers still say ("unknown" otherwise).
        records_lost: RecordCount,
        /// Valid records right after the damaged range, in the same segment.
        records_following: u64,
    },
    /// A segment between two others is missing.
    #[error(
        "journal segment {segment} is missing from {dir} (segments {before} and {after} exist); \
         start with salvage to go on without it"
    )]
    MissingSegment {
        dir: PathBuf,
        segment: u64,
        before: u64,
        after: u64,
    },
    /// A segment written by another format version.
    #[error(
        "journal segment {path} has on-disk format version {version}; this build reads \
         versions {oldest} to {supported}"
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        oldest: u32,
        supported: u32,
    },
    /// A `.seg` file that is not a journal segment, or whose header is damaged.
    #[error("{path} is not a valid journal segment: {reason}")]
    BadSegmentHeader { path: PathBuf, reason: String },
    /// The configuration cannot work.
    #[error("invalid journal configuration: {reason}")]
    Config { reason: String },
    /// A group larger than one write or one segment can hold.
    #[error("an atomic group of {bytes} bytes exceeds the journal's limit of {bytes_max} bytes")]
    GroupTooLarge { bytes: u64, bytes_max: u64 },
    /// An empty group has nothing to make atomic.
    #[error("an atomic group must hold at least one record")]
    EmptyGroup,
    /// A location that does not address a record of this journal.
    #[error("no record at segment {segment} offset {offset}: {reason}")]
    NotFound {
        segment: u64,
        offset: u64,
        reason: &'static str,
    },
    /// The journal was closed (or its writer stopped); nothing more is appended.
    #[error("the journal is closed")]
    Closed,
    /// The caller's replay function refused a record during recovery.
    #[error("replaying the record at segment {segment} offset {offset}: {error}")]
    Replay {
        segment: u64,
        offset: u64,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A count that damaged data may have made unknowable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCount {
    Known(u64),
    Unknown,
}

impl std::fmt::Display for RecordCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(count) => write!(f, "{count}"),
            Self::Unknown => f.write_str("an unknown number of"),
        }
    }
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }

    /// A copy for the next waiter of the same failed batch (io::Error is not Clone).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Io { path, error } => Self::Io {
                path: path.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            Self::DiskFull {
                dir,
                segment,
                segment_bytes,
                journal_bytes,
            } => Self::DiskFull {
                dir: dir.clone(),
                segment: *segment,
                segment_bytes: *segment_bytes,
                journal_bytes: *journal_bytes,
            },
            // Only creating a segment fails a batch, with one of the two above.
            _ => Self::Closed,
        }
    }
}
