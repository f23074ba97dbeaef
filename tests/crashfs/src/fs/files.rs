//! Requests on file contents and attributes: open, read, write, size changes, `fsync`,
//! `fallocate`, `statfs`, and the control file's reads and writes. A change to a file's
//! data or size is recorded in its undo log before it is made.

use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, TimeOrNow};
use rustix::fs::{FallocateFlags, OFlags};

use super::{Handle, OpenFile, State, attr, control_attr, raw};
use crate::control::Command;
use crate::data::read_full_at;
use crate::nodes;
use crate::tracker::Tracker;

/// `setattr`'s changes.
#[derive(Debug, Default)]
pub(super) struct AttrChange {
    pub(super) mode: Option<u32>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) size: Option<u64>,
    pub(super) atime: Option<TimeOrNow>,
    pub(super) mtime: Option<TimeOrNow>,
}

/// `statfs`'s answer, passed through from the backing filesystem.
#[derive(Debug)]
pub(super) struct Statfs {
    pub(super) blocks: u64,
    pub(super) bfree: u64,
    pub(super) bavail: u64,
    pub(super) files: u64,
    pub(super) ffree: u64,
    pub(super) bsize: u32,
    pub(super) namelen: u32,
    pub(super) frsize: u32,
}

/// `(append, sync)`: whether open flags ask for `O_APPEND` and for `O_SYNC`/`O_DSYNC`.
pub(super) fn open_modes(flags: i32) -> (bool, bool) {
    let flags = OFlags::from_bits_retain(flags as u32);
    let sync = flags.intersects(OFlags::DSYNC | OFlags::SYNC);
    (flags.contains(OFlags::APPEND), sync)
}

/// Opens a backing file read-write whatever the caller asked, so its undo log can read
/// what a write overwrites (the kernel holds the caller to its own access mode); falls back
/// to the caller's mode where read-write is refused.
fn open_backing(path: &Path, flags: i32) -> std::io::Result<File> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => Ok(file),
        Err(_) => {
            let access = OFlags::from_bits_retain(flags as u32) & OFlags::RWMODE;
            OpenOptions::new()
                .read(access != OFlags::WRONLY)
                .write(access != OFlags::RDONLY)
                .open(path)
        }
    }
}

/// Sets `file`'s size to `size`, recording what that changes first.
fn resize(
    tracker: &mut Tracker,
    ino: u64,
    label: &Path,
    file: &File,
    size: u64,
) -> Result<(), Errno> {
    tracker
        .file(ino, label, || file.try_clone())?
        .before_resize(size)?;
    file.set_len(size)?;
    Ok(())
}

fn system_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl State {
    /// A file's path for messages and reports (it may have none left).
    fn label(&self, id: u64) -> &Path {
        self.nodes.path(id).unwrap_or(Path::new("(unnamed)"))
    }

    pub(super) fn open(&mut self, id: u64, flags: i32) -> Result<u64, Errno> {
        if id == nodes::CONTROL {
            return Ok(self.add_handle(Handle::Control { answer: Vec::new() }));
        }
        let full = self.full(&self.path_of(id)?);
        let file = open_backing(&full, flags)?;
        let ino = file.metadata()?.ino();
        if OFlags::from_bits_retain(flags as u32).contains(OFlags::TRUNC) {
            // Only if the kernel passes O_TRUNC on (it sends a setattr otherwise).
            let label = self.label(id).to_owned();
            resize(&mut self.tracker, ino, &label, &file, 0)?;
        }
        let (append, sync) = open_modes(flags);
        Ok(self.add_handle(Handle::File(OpenFile {
            node: id,
            file,
            append,
            sync,
        })))
    }

    pub(super) fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if let Some(Handle::Control { answer }) = self.handles.get(&fh) {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(answer.len());
            let end = start.saturating_add(size as usize).min(answer.len());
            return Ok(answer[start..end].to_vec());
        }
        let open = self.open_file(fh)?;
        let mut buffer = vec![0u8; size as usize];
        let got = read_full_at(&open.file, &mut buffer, offset)?;
        buffer.truncate(got);
        Ok(buffer)
    }

    pub(super) fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        if let Some(Handle::Control { .. }) = self.handles.get(&fh) {
            return self.control(fh, data);
        }
        let open = match self.handles.get(&fh) {
            Some(Handle::File(open)) => open,
            Some(Handle::Stale) => return Err(Errno::EIO),
            _ => return Err(Errno::EBADF),
        };
        let meta = open.file.metadata()?;
        // Where the backing file ends, not where the kernel last thought it did.
        let offset = if open.append { meta.len() } else { offset };
        let label = self.nodes.path(open.node).unwrap_or(Path::new("(unnamed)"));
        self.tracker
            .file(meta.ino(), label, || open.file.try_clone())?
            .before_write(offset, data.len() as u64)?;
        open.file.write_all_at(data, offset)?;
        if open.sync {
            self.tracker.sync_file(meta.ino());
        }
        Ok(data.len() as u32)
    }

    /// `fsync` and `fdatasync` alike: the file's data and size are durable (ext4 makes an
    /// append's new size durable with `fdatasync` too; its name is another matter).
    pub(super) fn sync_file(&mut self, id: u64, fh: u64) -> Result<(), Errno> {
        let ino = match self.handles.get(&fh) {
            Some(Handle::File(open)) => open.file.metadata()?.ino(),
            Some(Handle::Control { .. }) => return Ok(()),
            Some(Handle::Stale) => return Err(Errno::EIO),
            _ => self.ino_of(id)?,
        };
        let durable = self.tracker.sync_file(ino);
        tracing::trace!(node = id, durable, "file synced");
        Ok(())
    }

    pub(super) fn get_attr(&self, id: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        if id == nodes::CONTROL {
            return Ok(control_attr());
        }
        if let Some(Handle::File(open)) = fh.and_then(|fh| self.handles.get(&fh)) {
            return Ok(attr(id, &open.file.metadata()?));
        }
        if let Some(relative) = self.nodes.path(id) {
            return Ok(attr(id, &std::fs::symlink_metadata(self.full(relative))?));
        }
        // No name left, but maybe still open (fstat(2) of an unlinked file comes without
        // its handle).
        let open = self.handles.values().find_map(|handle| match handle {
            Handle::File(open) if open.node == id => Some(open),
            _ => None,
        });
        match open {
            Some(open) => Ok(attr(id, &open.file.metadata()?)),
            None => Err(Errno::ENOENT),
        }
    }

    pub(super) fn set_attr(
        &mut self,
        id: u64,
        fh: Option<u64>,
        change: &AttrChange,
    ) -> Result<FileAttr, Errno> {
        if id == nodes::CONTROL {
            return Ok(control_attr());
        }
        let path = self.nodes.path(id).map(|relative| self.full(relative));
        let label = self.label(id).to_owned();
        let handle = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some(Handle::File(open)) => Some(&open.file),
            Some(Handle::Stale) => return Err(Errno::EIO),
            _ => None,
        };
        let owned;
        let file = match (handle, &path) {
            (Some(file), _) => Some(file),
            (None, Some(path)) if change.size.is_some() => {
                owned = OpenOptions::new().read(true).write(true).open(path)?;
                Some(&owned)
            }
            (None, Some(path)) if change.atime.is_some() || change.mtime.is_some() => {
                owned = File::open(path)?;
                Some(&owned)
            }
            (None, _) => None,
        };
        if let Some(size) = change.size {
            let file = file.ok_or(Errno::ENOENT)?;
            resize(
                &mut self.tracker,
                file.metadata()?.ino(),
                &label,
                file,
                size,
            )?;
        }
        apply_metadata(file, path.as_deref(), change)?;
        let meta = match (file, &path) {
            (Some(file), _) => file.metadata()?,
            (None, Some(path)) => std::fs::symlink_metadata(path)?,
            (None, None) => return Err(Errno::ENOENT),
        };
        Ok(attr(id, &meta))
    }

    pub(super) fn fallocate(
        &mut self,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let open = match self.handles.get(&fh) {
            Some(Handle::File(open)) => open,
            Some(Handle::Stale) => return Err(Errno::EIO),
            _ => return Err(Errno::EBADF),
        };
        let flags = FallocateFlags::from_bits_retain(mode as u32);
        if flags.intersects(FallocateFlags::COLLAPSE_RANGE | FallocateFlags::INSERT_RANGE) {
            // They shift the rest of the file: nothing hopmq does, and costly to undo.
            return Err(raw(rustix::io::Errno::OPNOTSUPP));
        }
        let meta = open.file.metadata()?;
        let label = self.nodes.path(open.node).unwrap_or(Path::new("(unnamed)"));
        let log = self
            .tracker
            .file(meta.ino(), label, || open.file.try_clone())?;
        if flags.intersects(FallocateFlags::PUNCH_HOLE | FallocateFlags::ZERO_RANGE) {
            // Zeros over the range, as a write of zeros would leave.
            log.before_write(offset, len)?;
        } else if !flags.contains(FallocateFlags::KEEP_SIZE) && offset + len > meta.len() {
            log.before_resize(offset + len)?;
        }
        rustix::fs::fallocate(&open.file, flags, offset, len).map_err(raw)?;
        Ok(())
    }

    pub(super) fn statfs(&self) -> Result<Statfs, Errno> {
        let stat = rustix::fs::statvfs(&self.backing).map_err(raw)?;
        Ok(Statfs {
            blocks: stat.f_blocks,
            bfree: stat.f_bfree,
            bavail: stat.f_bavail,
            files: stat.f_files,
            ffree: stat.f_ffree,
            bsize: stat.f_bsize as u32,
            namelen: stat.f_namemax as u32,
            frsize: stat.f_frsize as u32,
        })
    }

    pub(super) fn read_link(&self, id: u64) -> Result<Vec<u8>, Errno> {
        let target = std::fs::read_link(self.full(&self.path_of(id)?))?;
        Ok(target.into_os_string().into_encoded_bytes())
    }

    /// A command written to the control file: runs it, and keeps the answer for reads.
    fn control(&mut self, fh: u64, data: &[u8]) -> Result<u32, Errno> {
        let text = String::from_utf8_lossy(data);
        let (answer, result) = match Command::parse(&text) {
            Ok(command) => match self.run(&command) {
                Ok(answer) => (answer, Ok(data.len() as u32)),
                Err(e) => (format!("error: {e}"), Err(Errno::EIO)),
            },
            Err(e) => (format!("error: {e}"), Err(Errno::EINVAL)),
        };
        if let Some(Handle::Control { answer: kept }) = self.handles.get_mut(&fh) {
            *kept = answer.into_bytes();
        }
        result
    }

    fn run(&mut self, command: &Command) -> Result<String, crate::Error> {
        let answer = match command {
            Command::Crash(options) => serde_json::to_string(&self.crash(options)?),
            Command::Pending => serde_json::to_string(&self.pending()),
        };
        answer.map_err(|e| crate::Error::BadAnswer(e.to_string()))
    }
}

/// Mode, owner and times, through the open file where there is one.
fn apply_metadata(
    file: Option<&File>,
    path: Option<&Path>,
    change: &AttrChange,
) -> std::io::Result<()> {
    if let Some(mode) = change.mode {
        let permissions = Permissions::from_mode(mode & 0o7777);
        match (file, path) {
            (Some(file), _) => file.set_permissions(permissions)?,
            (None, Some(path)) => std::fs::set_permissions(path, permissions)?,
            (None, None) => {}
        }
    }
    if change.uid.is_some() || change.gid.is_some() {
        match (file, path) {
            (Some(file), _) => std::os::unix::fs::fchown(file, change.uid, change.gid)?,
            (None, Some(path)) => std::os::unix::fs::lchown(path, change.uid, change.gid)?,
            (None, None) => {}
        }
    }
    if change.atime.is_some() || change.mtime.is_some() {
        let mut times = FileTimes::new();
        if let Some(atime) = change.atime {
            times = times.set_accessed(system_time(atime));
        }
        if let Some(mtime) = change.mtime {
            times = times.set_modified(system_time(mtime));
        }
        if let Some(file) = file {
            file.set_times(times)?;
        }
    }
    Ok(())
}
