//! The library's typed errors. The binary wraps them in `anyhow` at its edge; the FUSE
//! handlers never see these (they answer the kernel with an errno).

use std::path::PathBuf;

/// What can go wrong when mounting, crashing or controlling a crashfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FUSE cannot be used on this machine or by this user: `/dev/fuse` is missing or
    /// unopenable, or mounting is not permitted. Tests skip (loudly) on this one only.
    #[error("FUSE is unavailable: {0}")]
    Unavailable(String),
    /// The mount point is missing or not a directory.
    #[error("mount point {path} is not a directory")]
    Mountpoint { path: PathBuf },
    /// The mount point is inside the backing folder: the filesystem would serve itself.
    #[error("mount point {mountpoint} is inside the backing folder {backing}")]
    Nested {
        backing: PathBuf,
        mountpoint: PathBuf,
    },
    /// The backing folder is missing or not a directory.
    #[error("backing folder {path} is not a directory")]
    Backing { path: PathBuf },
    /// An I/O error on a named file.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The mount syscall (or the session set-up after it) failed.
    #[error("cannot mount {mountpoint}: {error}")]
    Mount {
        mountpoint: PathBuf,
        error: std::io::Error,
    },
    /// Unmounting failed.
    #[error("cannot unmount {mountpoint}: {error}")]
    Unmount {
        mountpoint: PathBuf,
        error: std::io::Error,
    },
    /// A control command was not understood.
    #[error("bad control command {command:?}: {reason}")]
    BadCommand { command: String, reason: String },
    /// The daemon answered something that is not a report.
    #[error("bad answer from the crashfs daemon: {0}")]
    BadAnswer(String),
    /// The crash could not be applied completely: the backing folder may hold a state
    /// that no real crash would leave. The test should fail.
    #[error("crash incomplete: {0}")]
    CrashIncomplete(String),
    /// The daemon refused a control command or could not carry it out; its message.
    #[error("the crashfs daemon answered: {0}")]
    Refused(String),
    /// A `crashfs mount` child process did not come up, or did not go away, in time.
    #[error("crashfs daemon: {0}")]
    Daemon(String),
}

impl Error {
    /// An [`Error::Io`] on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}
