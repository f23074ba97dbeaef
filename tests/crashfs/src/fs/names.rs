//! Requests on names: lookup, creation (files, directories, nodes, symbolic links),
//! removal, rename and listing. Every change to a directory goes through the tracker's
//! directory log, which makes it (or records how to undo it).

use std::ffi::OsStr;
use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use fuser::{Errno, FileAttr, FileType};
use rustix::fs::{FileType as RawType, Mode};

use super::{CONTROL, HIDDEN, Handle, Listed, OpenFile, State, control_attr, dir_ref, raw};
use crate::nodes;

/// What `mknod` may make.
#[derive(Debug, Clone, Copy)]
pub(super) enum Make<'a> {
    Directory { mode: u32 },
    Node { mode: u32, rdev: u32 },
    Symlink { target: &'a Path },
}

impl State {
    pub(super) fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if parent == nodes::ROOT && name == CONTROL {
            return Ok(control_attr());
        }
        if parent == nodes::ROOT && name == HIDDEN {
            return Err(Errno::ENOENT);
        }
        let relative = self.path_of(parent)?.join(name);
        self.attr_at(&relative, true)
    }

    pub(super) fn forget(&mut self, id: u64, count: u64) {
        self.nodes.forget(id, count);
    }

    /// Makes `name` in `parent` and records the creation.
    pub(super) fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        what: Make<'_>,
    ) -> Result<FileAttr, Errno> {
        let relative = self.child(parent, name)?;
        let dir = self.dir_ref(parent)?;
        let full = self.full(&relative);
        match what {
            Make::Directory { mode } => std::fs::DirBuilder::new().mode(mode).create(&full)?,
            Make::Symlink { target } => std::os::unix::fs::symlink(target, &full)?,
            Make::Node { mode, rdev } => {
                let kind = RawType::from_raw_mode(mode);
                let permissions = Mode::from_raw_mode(mode & 0o7777);
                if kind == RawType::RegularFile {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(permissions.bits())
                        .open(&full)?;
                } else {
                    rustix::fs::mknodat(rustix::fs::CWD, &full, kind, permissions, u64::from(rdev))
                        .map_err(raw)?;
                }
            }
        }
        if let Make::Directory { mode } | Make::Node { mode, .. } = what {
            // The kernel applied the caller's umask already; ours must not apply again.
            std::fs::set_permissions(&full, Permissions::from_mode(mode & 0o7777))?;
        }
        self.tracker.dirs().created(dir_ref(&dir), name)?;
        self.attr_at(&relative, true)
    }

    /// `create`: a new regular file, opened. Returns its attributes and handle.
    pub(super) fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let relative = self.child(parent, name)?;
        let dir = self.dir_ref(parent)?;
        // The kernel asks only after a lookup found nothing, and nothing else changes the
        // backing folder meanwhile: always exclusive.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(self.full(&relative))?;
        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
        self.tracker.dirs().created(dir_ref(&dir), name)?;
        let attr = self.attr_at(&relative, true)?;
        let (append, sync) = super::files::open_modes(flags);
        let fh = self.add_handle(Handle::File(OpenFile {
            node: attr.ino.0,
            file,
            append,
            sync,
        }));
        Ok((attr, fh))
    }

    /// `unlink` and `rmdir`: the object goes to the trash until the removal is durable.
    pub(super) fn remove(
        &mut self,
        parent: u64,
        name: &OsStr,
        directory: bool,
    ) -> Result<(), Errno> {
        let relative = self.child(parent, name)?;
        let dir = self.dir_ref(parent)?;
        self.tracker.dirs().remove(dir_ref(&dir), name, directory)?;
        self.nodes.unnamed(&relative);
        Ok(())
    }

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        let no_replace = crate::entries::no_replace(flags);
        if flags & !rustix::fs::RenameFlags::NOREPLACE.bits() != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT: nothing hopmq needs.
            return Err(Errno::EINVAL);
        }
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        if from == to {
            return Ok(());
        }
        let from_dir = self.dir_ref(parent)?;
        let to_dir = self.dir_ref(new_parent)?;
        self.tracker.dirs().rename(
            dir_ref(&from_dir),
            name,
            dir_ref(&to_dir),
            new_name,
            no_replace,
        )?;
        self.nodes.unnamed(&to);
        self.nodes.moved(&from, &to);
        Ok(())
    }

    /// `opendir`: the listing is taken now, so offsets stay valid while the directory
    /// changes.
    pub(super) fn open_dir(&mut self, id: u64) -> Result<u64, Errno> {
        let relative = self.path_of(id)?;
        let mut listing = vec![
            Listed {
                name: ".".into(),
                kind: FileType::Directory,
                id,
            },
            Listed {
                name: "..".into(),
                kind: FileType::Directory,
                id: nodes::ROOT,
            },
        ];
        for entry in std::fs::read_dir(self.full(&relative))? {
            let entry = entry?;
            let name = entry.file_name();
            if id == nodes::ROOT && name == HIDDEN {
                continue;
            }
            let meta = entry.metadata()?;
            let node = self.nodes.at(&relative.join(&name), meta.ino(), false);
            listing.push(Listed {
                name,
                kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
                id: node,
            });
        }
        Ok(self.add_handle(Handle::Dir(listing)))
    }

    /// `readdir` from `offset` (the index of the next entry) into `add`, which returns
    /// true when the kernel's buffer is full.
    pub(super) fn read_dir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let listing = match self.handles.get(&fh) {
            Some(Handle::Dir(listing)) => listing,
            Some(Handle::Stale) => return Err(Errno::EIO),
            _ => return Err(Errno::EBADF),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, entry) in listing.iter().enumerate().skip(start) {
            if add(entry.id, index as u64 + 1, entry.kind, &entry.name) {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn release(&mut self, fh: u64) {
        self.handles.remove(&fh);
    }

    /// `fsync` of a directory: its entries are durable.
    pub(super) fn sync_dir(&mut self, id: u64) -> Result<(), Errno> {
        let ino = self.ino_of(id)?;
        let durable = self.tracker.sync_dir(ino);
        tracing::debug!(node = id, durable, "directory synced");
        Ok(())
    }
}
