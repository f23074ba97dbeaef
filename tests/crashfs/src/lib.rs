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
//! what is not yet durable (the private module `tracker` has the model):
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
//! It models the harshest disk POSIX allows: nothing unsynced survives but the torn prefix.
//! A real disk may keep more (ext4 commits a new file's name with its first `fsync`), so a
//! program correct on crashfs is correct there, not the other way round.
//!
//! # Limitations
//!
//! Not undone by a crash: mode, owner and time changes. Refused: hard links (`EPERM`),
//! `RENAME_EXCHANGE`/`RENAME_WHITEOUT`, the `fallocate` modes that shift data, extended
//! attributes, and shared writable `mmap` (files are opened for direct I/O). `O_SYNC` and
//! `O_DSYNC` writes act as an `fdatasync` of the whole file after each write. One thread
//! serves all requests, under one lock. The backing folder must have no other writer, and
//! the cut part of a file shrunk without a sync is held in memory until the next sync or
//! crash (runs of zeros only counted).
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
