//! Undo of directory entries: creations, removals and renames since each directory's last
//! `fsync`.
//!
//! The backing folder always holds the current names. A removed (or renamed-over) object
//! is not deleted but moved into the trash, a hidden folder on the backing filesystem, so
//! undoing the removal is one rename back; it is deleted for real once the removal is
//! durable. Every entry keeps open descriptors of the directories it names and works with
//! `*at` calls on them, so undoing never resolves a path that later renames made stale.
//!
//! **Invariant:** the entries are kept in the order the changes were made, and a crash
//! undoes them newest first: each undo then runs in the namespace its change left (apart
//! from changes that were made durable in between, which are kept, as on a real disk).
//!
//! **Durability:** an entry becomes durable when a directory it names is synced: the
//! parent for a creation or removal, either parent for a rename (one journal transaction on
//! ext4 and its kin; a real filesystem gives no finer grain to model).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags};
use tracing::{debug, warn};

/// A directory of the backing folder as the log knows it: its inode number (what a sync
/// names) and a path to open it by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirRef<'a> {
    pub(crate) ino: u64,
    pub(crate) path: &'a Path,
}

/// Where removed objects wait until their removal is durable.
#[derive(Debug)]
pub(crate) struct Trash {
    path: PathBuf,
    dir: File,
    next: u64,
}

impl Trash {
    /// The trash at `path`, emptied (what it held was removed before a clean unmount, or
    /// before a crash finished).
    pub(crate) fn open(path: PathBuf) -> io::Result<Self> {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&path)?;
        let dir = File::open(&path)?;
        Ok(Self { path, dir, next: 0 })
    }

    /// Moves `dir/name` into the trash; returns its name there.
    fn take(&mut self, dir: &File, name: &OsStr) -> io::Result<OsString> {
        self.next += 1;
        let trashed = OsString::from(self.next.to_string());
        rustix::fs::renameat(dir, name, &self.dir, &trashed)?;
        Ok(trashed)
    }

    /// Deletes a trashed object for good.
    fn delete(&self, trashed: &OsStr) -> io::Result<()> {
        let stat = rustix::fs::statat(&self.dir, trashed, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            std::fs::remove_dir_all(self.path.join(trashed))
        } else {
            Ok(rustix::fs::unlinkat(&self.dir, trashed, AtFlags::empty())?)
        }
    }

    /// Empties the trash.
    fn empty(&mut self) -> io::Result<()> {
        *self = Self::open(std::mem::take(&mut self.path))?;
        Ok(())
    }
}

#[derive(Debug)]
enum Change {
    Created {
        dir: Arc<File>,
        name: OsString,
    },
    Removed {
        dir: Arc<File>,
        name: OsString,
        trashed: OsString,
    },
    Renamed {
        from_dir: Arc<File>,
        from: OsString,
        to_dir: Arc<File>,
        to: OsString,
        /// What the rename replaced, in the trash.
        replaced: Option<OsString>,
    },
}

#[derive(Debug)]
struct Entry {
    /// The directories whose sync makes the change durable (the same one twice if one).
    dirs: [u64; 2],
    /// Where the change happened, for messages.
    label: PathBuf,
    change: Change,
}

/// The directory changes not yet durable, oldest first.
#[derive(Debug)]
pub(crate) struct DirLog {
    entries: Vec<Entry>,
    /// Open descriptors of the directories that pending entries name, by inode number.
    dirs: HashMap<u64, Arc<File>>,
    trash: Trash,
}

impl DirLog {
    pub(crate) fn new(trash: Trash) -> Self {
        Self {
            entries: Vec::new(),
            dirs: HashMap::new(),
            trash,
        }
    }

    /// Changes not yet durable.
    pub(crate) fn pending(&self) -> usize {
        self.entries.len()
    }

    fn dir(&mut self, dir: DirRef<'_>) -> io::Result<Arc<File>> {
        if let Some(open) = self.dirs.get(&dir.ino) {
            return Ok(Arc::clone(open));
        }
        let open = Arc::new(File::open(dir.path)?);
        self.dirs.insert(dir.ino, Arc::clone(&open));
        Ok(open)
    }

    /// Records that `name` was just created in `dir` (a file, directory, node or link).
    pub(crate) fn created(&mut self, dir: DirRef<'_>, name: &OsStr) -> io::Result<()> {
        let open = self.dir(dir)?;
        self.entries.push(Entry {
            dirs: [dir.ino, dir.ino],
            label: dir.path.join(name),
            change: Change::Created {
                dir: open,
                name: name.to_owned(),
            },
        });
        Ok(())
    }

    /// Removes `dir/name` (a file, or an empty directory when `directory`), keeping it in
    /// the trash until the removal is durable.
    pub(crate) fn remove(
        &mut self,
        dir: DirRef<'_>,
        name: &OsStr,
        directory: bool,
    ) -> io::Result<()> {
        let open = self.dir(dir)?;
        let stat = rustix::fs::statat(&*open, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        match (directory, is_dir) {
            (true, false) => return Err(errno(rustix::io::Errno::NOTDIR)),
            (false, true) => return Err(errno(rustix::io::Errno::ISDIR)),
            (true, true) if !is_empty(&open, name)? => {
                return Err(errno(rustix::io::Errno::NOTEMPTY));
            }
            _ => {}
        }
        let trashed = self.trash.take(&open, name)?;
        self.entries.push(Entry {
            dirs: [dir.ino, dir.ino],
            label: dir.path.join(name),
            change: Change::Removed {
                dir: open,
                name: name.to_owned(),
                trashed,
            },
        });
        Ok(())
    }

    /// Renames `from/from_name` to `to/to_name` as rename(2) would, keeping a replaced
    /// target in the trash until the rename is durable. `no_replace` is `RENAME_NOREPLACE`.
    pub(crate) fn rename(
        &mut self,
        from: DirRef<'_>,
        from_name: &OsStr,
        to: DirRef<'_>,
        to_name: &OsStr,
        no_replace: bool,
    ) -> io::Result<()> {
        let from_dir = self.dir(from)?;
        let to_dir = self.dir(to)?;
        let source = rustix::fs::statat(&*from_dir, from_name, AtFlags::SYMLINK_NOFOLLOW)?;
        let target = match rustix::fs::statat(&*to_dir, to_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(target) => Some(target),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(e.into()),
        };
        let replaced = match target {
            None => None,
            Some(_) if no_replace => return Err(errno(rustix::io::Errno::EXIST)),
            // Two names of one file: rename(2) does nothing.
            Some(target) if target.st_ino == source.st_ino && target.st_dev == source.st_dev => {
                return Ok(());
            }
            Some(target) => {
                check_replaceable(&source, &target, &to_dir, to_name)?;
                Some(self.trash.take(&to_dir, to_name)?)
            }
        };
        if let Err(e) = rustix::fs::renameat(&*from_dir, from_name, &*to_dir, to_name) {
            if let Some(replaced) = &replaced {
                // Put the target back: the rename never happened.
                rustix::fs::renameat(&self.trash.dir, replaced, &*to_dir, to_name)?;
            }
            return Err(e.into());
        }
        self.entries.push(Entry {
            dirs: [from.ino, to.ino],
            label: to.path.join(to_name),
            change: Change::Renamed {
                from_dir,
                from: from_name.to_owned(),
                to_dir,
                to: to_name.to_owned(),
                replaced,
            },
        });
        Ok(())
    }

    /// Makes every change in directory `ino` durable; returns how many there were. Objects
    /// whose removal became durable are deleted from the trash.
    pub(crate) fn sync(&mut self, ino: u64) -> usize {
        let (durable, pending): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|entry| entry.dirs.contains(&ino));
        self.entries = pending;
        for entry in &durable {
            let trashed = match &entry.change {
                Change::Removed { trashed, .. } => Some(trashed),
                Change::Renamed { replaced, .. } => replaced.as_ref(),
                Change::Created { .. } => None,
            };
            let Some(trashed) = trashed else { continue };
            if let Err(e) = self.trash.delete(trashed) {
                // Only disk space is lost: the object is already gone from the namespace.
                warn!(path = %entry.label.display(), error = %e, "cannot delete a removed object");
            }
        }
        self.forget_unused_dirs();
        durable.len()
    }

    fn forget_unused_dirs(&mut self) {
        self.dirs.retain(|_, open| Arc::strong_count(open) > 1);
    }

    /// Undoes every pending change, newest first, then empties the trash. Returns how many
    /// changes were undone and a message for each that could not be (which a real disk
    /// could not have lost either, e.g. a creation whose file a durable rename moved away).
    pub(crate) fn undo(&mut self) -> io::Result<(usize, Vec<String>)> {
        let entries = std::mem::take(&mut self.entries);
        let count = entries.len();
        let mut problems = Vec::new();
        for entry in entries.into_iter().rev() {
            if let Err(e) = self.undo_one(&entry.change) {
                let problem = format!("cannot undo a change at {}: {e}", entry.label.display());
                warn!("{problem}");
                problems.push(problem);
            } else {
                debug!(path = %entry.label.display(), "directory change undone");
            }
        }
        self.forget_unused_dirs();
        self.trash.empty()?;
        Ok((count, problems))
    }

    fn undo_one(&mut self, change: &Change) -> io::Result<()> {
        match change {
            Change::Created { dir, name } => {
                // Into the trash, which is emptied at the end: a created directory may
                // hold a tree whose own entries were made durable.
                self.trash.take(dir, name)?;
            }
            Change::Removed { dir, name, trashed } => {
                rustix::fs::renameat(&self.trash.dir, trashed, &**dir, name)?;
            }
            Change::Renamed {
                from_dir,
                from,
                to_dir,
                to,
                replaced,
            } => {
                rustix::fs::renameat(&**to_dir, to, &**from_dir, from)?;
                if let Some(replaced) = replaced {
                    rustix::fs::renameat(&self.trash.dir, replaced, &**to_dir, to)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the trash's contents for good: at a clean unmount every removal stands.
    pub(crate) fn forget_all(&mut self) -> io::Result<()> {
        self.entries.clear();
        self.dirs.clear();
        self.trash.empty()
    }
}

fn errno(errno: rustix::io::Errno) -> io::Error {
    errno.into()
}

/// Whether the directory `dir/name` has no entries.
fn is_empty(dir: &File, name: &OsStr) -> io::Result<bool> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    for entry in Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The checks rename(2) makes before replacing `target` with `source`.
fn check_replaceable(
    source: &rustix::fs::Stat,
    target: &rustix::fs::Stat,
    to_dir: &File,
    to_name: &OsStr,
) -> io::Result<()> {
    let source_dir = FileType::from_raw_mode(source.st_mode) == FileType::Directory;
    let target_dir = FileType::from_raw_mode(target.st_mode) == FileType::Directory;
    match (source_dir, target_dir) {
        (true, false) => Err(errno(rustix::io::Errno::NOTDIR)),
        (false, true) => Err(errno(rustix::io::Errno::ISDIR)),
        (true, true) if !is_empty(to_dir, to_name)? => Err(errno(rustix::io::Errno::NOTEMPTY)),
        _ => Ok(()),
    }
}

/// `RENAME_NOREPLACE` in a FUSE rename's flags; any other flag is refused by the caller.
pub(crate) fn no_replace(flags: u32) -> bool {
    RenameFlags::from_bits_retain(flags).contains(RenameFlags::NOREPLACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _root: tempfile::TempDir,
        dir: PathBuf,
        ino: u64,
        log: DirLog,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
        let log = DirLog::new(Trash::open(root.path().join("trash")).unwrap());
        Fixture {
            _root: root,
            dir,
            ino,
            log,
        }
    }

    impl Fixture {
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.join(name)).unwrap()
        }
    }

    #[test]
    fn undo_restores_names_newest_first() {
        let mut f = fixture();
        std::fs::write(f.dir.join("old"), "old").unwrap();
        std::fs::write(f.dir.join("victim"), "victim").unwrap();
        std::fs::write(f.dir.join("new"), "new").unwrap();
        let dir = f.dir.clone();
        let at = DirRef {
            ino: f.ino,
            path: &dir,
        };
        f.log.created(at, OsStr::new("new")).unwrap();
        f.log
            .rename(at, OsStr::new("new"), at, OsStr::new("victim"), false)
            .unwrap();
        f.log.remove(at, OsStr::new("old"), false).unwrap();
        assert_eq!(f.names(), ["victim"]);
        assert_eq!(f.read("victim"), "new");
        let (undone, problems) = f.log.undo().unwrap();
        assert_eq!((undone, problems.len()), (3, 0));
        assert_eq!(f.names(), ["old", "victim"]);
        assert_eq!(f.read("victim"), "victim");
    }

    #[test]
    fn a_synced_directory_keeps_its_changes() {
        let mut f = fixture();
        std::fs::write(f.dir.join("gone"), "x").unwrap();
        let dir = f.dir.clone();
        let at = DirRef {
            ino: f.ino,
            path: &dir,
        };
        f.log.remove(at, OsStr::new("gone"), false).unwrap();
        assert_eq!(f.log.sync(f.ino), 1);
        assert_eq!(f.log.pending(), 0);
        f.log.undo().unwrap();
        assert!(f.names().is_empty());
    }

    #[test]
    fn rename_refuses_what_rename_refuses() {
        let mut f = fixture();
        std::fs::create_dir(f.dir.join("full")).unwrap();
        std::fs::write(f.dir.join("full/x"), "x").unwrap();
        std::fs::create_dir(f.dir.join("empty")).unwrap();
        std::fs::write(f.dir.join("file"), "x").unwrap();
        let dir = f.dir.clone();
        let at = DirRef {
            ino: f.ino,
            path: &dir,
        };
        let kind = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        let e = kind(
            f.log
                .rename(at, OsStr::new("empty"), at, OsStr::new("full"), false),
        );
        assert_eq!(e, Some(rustix::io::Errno::NOTEMPTY.raw_os_error()));
        let e = kind(
            f.log
                .rename(at, OsStr::new("file"), at, OsStr::new("empty"), false),
        );
        assert_eq!(e, Some(rustix::io::Errno::ISDIR.raw_os_error()));
        let e = kind(
            f.log
                .rename(at, OsStr::new("file"), at, OsStr::new("full"), true),
        );
        assert_eq!(e, Some(rustix::io::Errno::EXIST.raw_os_error()));
        let e = kind(
            f.log
                .rename(at, OsStr::new("full"), at, OsStr::new("full/x2"), false),
        );
        assert_eq!(e, Some(rustix::io::Errno::INVAL.raw_os_error()));
        assert_eq!(f.names(), ["empty", "file", "full"]);
        assert_eq!(f.log.pending(), 0);
    }
}
