//! The core's view of what it keeps on disk (its journal, and the links an operator drained),
//! as raft-rs's `Storage` is its core's: the one seam between the core's decisions and the
//! disk.
//!
//! An append only asks for a write: it returns at once, and its outcome reaches the core later
//! as an event ([`super::Core::on_commit`]), in the order the appends were made. Reads give
//! back what an earlier append wrote. Production wraps the [`Journal`] ([`JournalStorage`]);
//! a simulation gives the core a simulated disk instead, which decides when a write becomes
//! durable and what a crash keeps.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hopmq::ManagerName;
use tokio::sync::mpsc;
use tracing::{error, warn};

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
    /// Asks for every segment before `segment` to be deleted (or kept as a spare), once the
    /// event is handled. A failure is the storage's to report; a later request covers the
    /// same segments again.
    fn retire_segments_before(&mut self, segment: u64);
    /// Shape and counters, for status.
    fn stats(&self) -> JournalStats;
    /// Asks for the links an operator drained to be saved durably. The outcome comes back like
    /// an append's, in order with them (with no locations).
    fn save_drained(&mut self, drained: BTreeSet<ManagerName>);
}

/// The file in the data directory that keeps the drained links.
pub(crate) const DRAINED_FILE: &str = "drained-links";

/// What the core asked of its journal that the run loop carries out: commits to await, and
/// dead segments to retire.
enum Work {
    Commit(Commit),
    RetireBefore(u64),
    SaveDrained {
        /// `None`: drains are not kept (tests without a data directory).
        path: Option<PathBuf>,
        drained: BTreeSet<ManagerName>,
    },
}

/// The run loop's side of [`JournalStorage`]: the commits to await, in append order, with the
/// retirements asked between them carried out on the way.
pub struct JournalWork {
    work: mpsc::UnboundedReceiver<Work>,
    journal: Journal,
}

impl JournalWork {
    /// Carries out the retirements asked for so far, up to the next commit, and returns that
    /// commit; `None` once nothing more is queued.
    pub fn next_commit(&mut self) -> Option<Commit> {
        while let Ok(work) = self.work.try_recv() {
            match work {
                Work::Commit(commit) => return Some(commit),
                Work::RetireBefore(segment) => {
                    if let Err(error) = self.journal.delete_segments_before(segment) {
                        warn!(%error, "deleting dead journal segments failed");
                    }
                }
                Work::SaveDrained { path, drained } => {
                    let result = match path {
                        Some(path) => write_drained(&path, &drained)
                            .map_err(|source| StoreError::io(path, source)),
                        None => Ok(()),
                    };
                    return Some(Commit::ready(result.map(|()| Vec::new())));
                }
            }
        }
        None
    }
}

/// The production storage: the journal, whose commits and retirements go to the run loop in
/// the order the core asked for them, and the drained-links file.
pub struct JournalStorage {
    journal: Journal,
    work: mpsc::UnboundedSender<Work>,
    /// `None`: drains are not kept (tests without a data directory).
    drained_file: Option<PathBuf>,
}

impl JournalStorage {
    /// The storage over `journal`, and the work the run loop carries out.
    pub fn new(journal: Journal) -> (Self, JournalWork) {
        let (sender, work) = mpsc::unbounded_channel();
        let storage = Self {
            journal: journal.clone(),
            work: sender,
            drained_file: None,
        };
        (storage, JournalWork { work, journal })
    }

    /// Keeps drains in [`DRAINED_FILE`] of `data_dir`.
    pub fn with_drained_file(mut self, data_dir: &Path) -> Self {
        self.drained_file = Some(data_dir.join(DRAINED_FILE));
        self
    }
}

impl Storage for JournalStorage {
    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>) {
        let commit = match durability {
            Durability::Synced => self.journal.append(payloads),
            Durability::Freeing => self.journal.append_freeing(payloads),
            Durability::Deferred => self.journal.append_deferred(payloads),
        };
        if self.work.send(Work::Commit(commit)).is_err() {
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

    fn retire_segments_before(&mut self, segment: u64) {
        // Nothing to lose if the run loop is gone: the next start deletes what is dead.
        let _ = self.work.send(Work::RetireBefore(segment));
    }

    fn stats(&self) -> JournalStats {
        self.journal.stats()
    }

    fn save_drained(&mut self, drained: BTreeSet<ManagerName>) {
        let path = self.drained_file.clone();
        if self.work.send(Work::SaveDrained { path, drained }).is_err() {
            error!("the core's run loop stopped; a drain was not saved");
        }
    }
}

/// Writes the drained links, one name per line, durably (write, sync, rename, sync folder).
fn write_drained(path: &Path, drained: &BTreeSet<ManagerName>) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    for name in drained {
        writeln!(file, "{name}")?;
    }
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(folder) = path.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// The links drained in `data_dir` (read at start: a drain survives restarts); names that
/// are not valid are skipped with a warning.
pub(crate) fn read_drained(data_dir: &Path) -> std::io::Result<BTreeSet<ManagerName>> {
    let path = data_dir.join(DRAINED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    let mut drained = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match ManagerName::new(line) {
            Ok(name) => {
                drained.insert(name);
            }
            Err(e) => {
                warn!(file = %path.display(), %line, error = %e, "skipping a bad drained link")
            }
        }
    }
    Ok(drained)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).expect("a valid name")
    }

    #[test]
    fn drained_links_are_written_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(DRAINED_FILE);
        assert!(read_drained(dir.path()).expect("read").is_empty());
        let drained: BTreeSet<ManagerName> = [name("bravo"), name("delta")].into();
        write_drained(&path, &drained).expect("write");
        assert_eq!(read_drained(dir.path()).expect("read"), drained);
        std::fs::write(&path, "bravo\nnot a name!\n\n").expect("write");
        assert_eq!(
            read_drained(dir.path()).expect("read"),
            [name("bravo")].into()
        );
    }
}
