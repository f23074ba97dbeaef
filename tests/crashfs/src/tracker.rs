//! The crash model: which changes are not yet durable, and the crash that discards them.
//!
//! It owns a [`FileLog`] per file with unsynced data (by backing inode number) and the
//! [`DirLog`] of unsynced directory entries. The two are independent, as on a real disk:
//! syncing a file's data says nothing of its name, and syncing a directory says nothing of
//! its files' data.
//!
//! **Invariant:** after [`Tracker::crash`] the backing folder holds the durable state (with
//! the kept prefixes of torn writes) and both logs are empty.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::data::{FileLog, read_full_at};
use crate::entries::{DirLog, Trash};
use crate::error::Error;
use crate::report::{CrashOptions, CrashReport, Pending, Torn};
use crate::rng::{SplitMix, fresh_seed};

#[derive(Debug)]
struct Tracked {
    /// The file's path (relative to the mount point) when first changed since its sync.
    label: PathBuf,
    log: FileLog,
}

/// Unsynced changes of one mounted crashfs.
#[derive(Debug)]
pub(crate) struct Tracker {
    files: HashMap<u64, Tracked>,
    dirs: DirLog,
}

/// A tear decided before the undo: `prefix` is what the file held at `offset` then.
struct Tear {
    index: usize,
    offset: u64,
    prefix: Vec<u8>,
    len: u64,
}

impl Tracker {
    pub(crate) fn new(trash: Trash) -> Self {
        Self {
            files: HashMap::new(),
            dirs: DirLog::new(trash),
        }
    }

    /// The log of file `ino`, started with a descriptor from `open` (read-write on the
    /// backing file) if the file has none.
    pub(crate) fn file(
        &mut self,
        ino: u64,
        label: &Path,
        open: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<&mut FileLog> {
        let tracked = match self.files.entry(ino) {
            Entry::Occupied(tracked) => tracked.into_mut(),
            Entry::Vacant(vacant) => vacant.insert(Tracked {
                label: label.to_owned(),
                log: FileLog::new(open()?),
            }),
        };
        Ok(&mut tracked.log)
    }

    /// `fsync`/`fdatasync` of file `ino`: its data and size are durable. Returns the undo
    /// records dropped.
    pub(crate) fn sync_file(&mut self, ino: u64) -> usize {
        self.files
            .remove(&ino)
            .map_or(0, |tracked| tracked.log.records())
    }

    /// `fsync` of directory `ino`: its entries are durable. Returns how many.
    pub(crate) fn sync_dir(&mut self, ino: u64) -> usize {
        self.dirs.sync(ino)
    }

    pub(crate) fn dirs(&mut self) -> &mut DirLog {
        &mut self.dirs
    }

    pub(crate) fn pending(&self) -> Pending {
        Pending {
            files: self.files.values().filter(|t| t.log.records() > 0).count(),
            records: self.files.values().map(|t| t.log.records()).sum(),
            entries: self.dirs.pending(),
            memory_bytes: self.files.values().map(|t| t.log.memory()).sum(),
        }
    }

    /// A clean unmount: every change stands, nothing is left to undo.
    pub(crate) fn forget_all(&mut self) -> io::Result<()> {
        self.files.clear();
        self.dirs.forget_all()
    }

    /// Discards every change not yet durable: file data first (undo goes through each
    /// file's own descriptor, so the namespace does not matter), then directory entries,
    /// newest first; then writes the kept prefixes of torn writes into the files that
    /// still have a name.
    pub(crate) fn crash(&mut self, options: &CrashOptions) -> Result<CrashReport, Error> {
        let seed = options.seed.unwrap_or_else(fresh_seed);
        let mut files: Vec<(u64, Tracked)> = self.files.drain().collect();
        // In path order, so that a seed draws the same cuts for the same files.
        files.sort_by(|a, b| a.1.label.cmp(&b.1.label).then(a.0.cmp(&b.0)));
        let tears = if options.tear {
            draw_tears(&files, seed)?
        } else {
            Vec::new()
        };
        let mut report = CrashReport {
            seed,
            ..CrashReport::default()
        };
        let mut failures = Vec::new();
        for (_, tracked) in &mut files {
            match tracked.log.undo() {
                Ok(records) => {
                    report.files_reverted += usize::from(records > 0);
                    report.writes_discarded += records;
                }
                Err(e) => failures.push(format!("{}: {e}", tracked.label.display())),
            }
        }
        let (undone, problems) = self
            .dirs
            .undo()
            .map_err(|e| Error::CrashIncomplete(format!("cannot empty the trash: {e}")))?;
        report.entries_undone = undone;
        report.problems = problems;
        for tear in tears {
            let tracked = &files[tear.index].1;
            match keep_prefix(tracked.log.file(), &tear) {
                Ok(true) => report.torn.push(Torn {
                    path: tracked.label.clone(),
                    offset: tear.offset,
                    kept: tear.prefix.len() as u64,
                    len: tear.len,
                }),
                Ok(false) => {}
                Err(e) => failures.push(format!("{}: {e}", tracked.label.display())),
            }
        }
        if !failures.is_empty() {
            return Err(Error::CrashIncomplete(failures.join("; ")));
        }
        info!(?report, "crashed");
        Ok(report)
    }
}

/// For each file whose newest change is a write, the prefix of it a crash keeps.
fn draw_tears(files: &[(u64, Tracked)], seed: u64) -> Result<Vec<Tear>, Error> {
    let mut rng = SplitMix::new(seed);
    let mut tears = Vec::new();
    for (index, (_, tracked)) in files.iter().enumerate() {
        let Some(last) = tracked.log.last_write() else {
            continue;
        };
        let kept = rng.below(last.len);
        let mut prefix = vec![0u8; kept as usize];
        let got = read_full_at(tracked.log.file(), &mut prefix, last.offset)
            .map_err(|e| Error::io(&tracked.label, e))?;
        // A later shrink cannot have cut it (the write is the newest change), but be exact.
        prefix.truncate(got);
        tears.push(Tear {
            index,
            offset: last.offset,
            prefix,
            len: last.len,
        });
    }
    Ok(tears)
}

/// Writes a torn write's kept prefix back, if its file survived the crash; returns whether
/// it did.
fn keep_prefix(file: &File, tear: &Tear) -> io::Result<bool> {
    if file.metadata()?.nlink() == 0 {
        return Ok(false);
    }
    if !tear.prefix.is_empty() {
        file.write_all_at(&tear.prefix, tear.offset)
            .inspect_err(|e| {
                warn!(error = %e, "cannot write a torn write's prefix");
            })?;
    }
    Ok(true)
}
