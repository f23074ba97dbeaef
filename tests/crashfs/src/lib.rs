//! crashfs: a test-support FUSE filesystem that forgets unsynced writes on command, as a
//! power cut would.
//!
//! `kill -9` leaves the page cache intact, so a test that kills a program and restarts it
//! never notices a missing `fdatasync`. Run the program on a crashfs instead and crash the
//! filesystem between the kill and the restart: whatever was not synced is gone.
//!
//! # Design
//!
//! A crashfs is a passthrough over a backing folder, which always holds the current state:
//! reads and writes go straight to the backing files. Beside it crashfs keeps undo logs of
//! what is not yet durable ([`tracker`](crate::tracker) has the model):
//!
//! - per file, what each write and size change since the file's last `fsync`/`fdatasync`
//!   overwrote (old bytes and old size; runs of zeros only counted), cleared by either
//!   call, which both make data **and** size durable (ext4 does so for appends with
//!   `fdatasync` too);
//! - per directory, the entries created, removed and renamed since the directory's last
//!   `fsync` (a removed object waits in a hidden trash on the backing filesystem, so a
//!   crash can put it back).
//!
//! File data and directory entries are independent, as POSIX lets a disk make them: a file
//! created, written and `fdatasync`ed in a directory that was never synced is gone after a
//! crash. A crash applies the undo logs newest first, optionally keeping a random proper
//! prefix of each file's last unsynced write (`--tear`), and the mount then serves the
//! durable state. Files opened before the crash answer `EIO`.
//!
//! A crash is asked for through a control file in the mount's root ([`control`]), by
//! [`Mount::crash`] in-process, or with `crashfs crash MOUNTPOINT`.
//!
//! # Use from tests
//!
//! [`Mount`] serves a crashfs from a thread of the test process; [`Daemon`] runs the
//! `crashfs` binary as a child. Both fail with [`Error::Unavailable`] where FUSE cannot be
//! used (no `/dev/fuse`, no permission to mount): skip the test then, loudly.

pub mod control;
mod daemon;
mod data;
mod entries;
mod error;
mod fs;
mod mount;
mod nodes;
mod report;
mod rng;
mod serve;
mod tracker;

pub use daemon::{Daemon, EXIT_UNAVAILABLE};
pub use error::Error;
pub use fs::HIDDEN;
pub use mount::{Mount, unavailable, unmount};
pub use report::{CrashOptions, CrashReport, Pending, Torn};
pub use serve::{ServeOptions, serve};
