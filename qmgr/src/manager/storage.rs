//! The core's view of its journal, as raft-rs's `Storage` is its core's: the one seam between
//! the core's decisions and the disk.
//!
//! An append only asks for a write: it returns at once, and its outcome reaches the core later
//! as an event ([`super::Core::on_commit`]), in the order the appends were made. Reads give
//! back what an earlier append wrote. Production wraps the [`Journal`] ([`JournalStorage`]);
//! a simulation gives the core a simulated disk instead, which decides when a write becomes
//! durable and what a crash keeps.

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::error;

use crate::store::{Commit, Journal, JournalStats, Location, StoreError};

/// How an appended group is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before its outcome is reported.
    Synced,
    /// Synced, and may use the journal's reserve: removals, and writes that free more than
    /// they take, so a full disk can always be drained.
    Freeing,
    /// A removal a crash may undo without harm: no sync of its own, it rides in the next
    /// synced write (or a short timer's).
    Deferred,
}

/// What the core needs of a journal.
pub trait Storage: Send {
    /// Asks for `payloads` to be written as one atomic group. The outcome (each record's
    /// location, or why nothing was written) is reported later, in append order.
    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>);
    /// The payload of a record an earlier append wrote.
    fn read(&self, location: Location) -> Result<Vec<u8>, StoreError>;
    /// The segment appends go to now: what is appended from now on lands there or later.
    fn active_segment(&self) -> u64;
    /// The largest group an append may hold, in bytes.
    fn group_bytes_max(&self) -> u64;
    /// Deletes (or keeps as spares) every segment before `segment`.
    fn delete_segments_before(&mut self, segment: u64) -> Result<(), StoreError>;
    /// Shape and counters, for status.
    fn stats(&self) -> JournalStats;
}

/// The production storage: the journal, whose commits go to the run loop in append order.
pub struct JournalStorage {
    journal: Journal,
    commits: mpsc::UnboundedSender<Commit>,
}

impl JournalStorage {
    /// The storage over `journal`, and the commits the run loop awaits, oldest first.
    pub fn new(journal: Journal) -> (Self, mpsc::UnboundedReceiver<Commit>) {
        let (commits, receiver) = mpsc::unbounded_channel();
        (Self { journal, commits }, receiver)
    }
}

impl Storage for JournalStorage {
    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>) {
        let commit = match durability {
            Durability::Synced => self.journal.append(payloads),
            Durability::Freeing => self.journal.append_freeing(payloads),
            Durability::Deferred => self.journal.append_deferred(payloads),
        };
        if self.commits.send(commit).is_err() {
            // Only when the run loop is gone, i.e. the process is stopping.
            error!("the core's run loop stopped; a write was dropped unacknowledged");
        }
    }

    fn read(&self, location: Location) -> Result<Vec<u8>, StoreError> {
        self.journal.read(location)
    }

    fn active_segment(&self) -> u64 {
        self.journal.active_segment()
    }

    fn group_bytes_max(&self) -> u64 {
        self.journal.group_bytes_max()
    }

    fn delete_segments_before(&mut self, segment: u64) -> Result<(), StoreError> {
        self.journal.delete_segments_before(segment)
    }

    fn stats(&self) -> JournalStats {
        self.journal.stats()
    }
}
