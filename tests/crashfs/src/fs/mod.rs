//! The filesystem: a passthrough over the backing folder that tells the [`Tracker`] about
//! every change before making it, so a crash can take back what was never synced.
//!
//! [`State`] holds everything behind one mutex ([`Shared`]): the inode table, the open
//! handles and the tracker. Every FUSE request takes the lock for its whole length, so
//! requests are atomic with respect to each other and to a crash. Nothing here syncs the
//! backing folder: its own durability is irrelevant, a crash is only ever simulated.
//!
//! The kernel is told to cache nothing: entries and attributes expire at once and every
//! file is opened with `FOPEN_DIRECT_IO`, so after a crash no page cache, dentry or
//! attribute can serve the discarded state. Handles opened before a crash answer `EIO`
//! afterwards, as no process survives a power cut.
//!
//! Reserved names in the root: [`HIDDEN`] (crashfs's own folder on the backing filesystem,
//! holding the trash) is invisible, and [`CONTROL`] is the control file (see
//! [`crate::control`]), found by lookup but not listed.

mod files;
mod kernel;
mod names;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use tracing::{info, warn};

pub(crate) use kernel::CrashFs;

use crate::entries::{DirRef, Trash};
use crate::error::Error;
use crate::nodes::{self, Nodes};
use crate::report::{CrashOptions, CrashReport, Pending};
use crate::tracker::Tracker;

/// crashfs's own folder in the backing root: never shown through the mount.
pub const HIDDEN: &str = ".crashfs";
/// The control file in the mount's root.
pub const CONTROL: &str = ".crashfs-control";

/// How long the kernel may trust an entry or attribute: not at all.
const TTL: Duration = Duration::ZERO;

/// One open file or directory.
#[derive(Debug)]
enum Handle {
    File(OpenFile),
    Dir(Vec<Listed>),
    Control {
        answer: Vec<u8>,
    },
    /// Opened before a crash: every use fails.
    Stale,
}

#[derive(Debug)]
struct OpenFile {
    node: u64,
    file: File,
    /// `O_APPEND`: every write goes to the end, wherever the kernel says.
    append: bool,
    /// `O_SYNC`/`O_DSYNC`: every write is durable when it returns.
    sync: bool,
}

/// A directory entry as `opendir` saw it.
#[derive(Debug)]
struct Listed {
    name: OsString,
    kind: FileType,
    id: u64,
}

/// Everything a mounted crashfs knows.
#[derive(Debug)]
pub(crate) struct State {
    backing: PathBuf,
    nodes: Nodes,
    handles: HashMap<u64, Handle>,
    next_handle: u64,
    tracker: Tracker,
    crashes: u64,
}

/// The state, shared by the FUSE session and the [`crate::Mount`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// How long each `fsync` takes, in microseconds, as a real disk's flush would: a test
    /// that must act while a program waits on its syncs gets the window a disk gives.
    sync_latency_us: AtomicU64,
}

impl Shared {
    /// A crashfs over `backing` (canonical), its trash emptied.
    pub(crate) fn new(backing: &Path) -> Result<Arc<Self>, Error> {
        let root = std::fs::metadata(backing).map_err(|e| Error::io(backing, e))?;
        if !root.is_dir() {
            return Err(Error::Backing {
                path: backing.to_owned(),
            });
        }
        let trash_path = backing.join(HIDDEN).join("trash");
        let trash = Trash::open(trash_path.clone()).map_err(|e| Error::io(trash_path, e))?;
        let state = State {
            backing: backing.to_owned(),
            nodes: Nodes::new(root.ino()),
            handles: HashMap::new(),
            next_handle: 1,
            tracker: Tracker::new(trash),
            crashes: 0,
        };
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            sync_latency_us: AtomicU64::new(0),
        }))
    }

    /// Makes every later `fsync` and `fsyncdir` take `latency` (zero: as fast as memory).
    pub(crate) fn set_sync_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sync_latency_us.store(micros, Ordering::Relaxed);
    }

    /// Waits as long as a sync takes (outside the state's lock, though one thread serves).
    pub(crate) fn sync_delay(&self) {
        let micros = self.sync_latency_us.load(Ordering::Relaxed);
        if micros > 0 {
            std::thread::sleep(Duration::from_micros(micros));
        }
    }

    /// The state, even if a request panicked while holding it (the kernel got no answer
    /// to that one; the rest is consistent enough for a test to go on and fail clearly).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn full(&self, relative: &Path) -> PathBuf {
        self.backing.join(relative)
    }

    fn path_of(&self, id: u64) -> Result<PathBuf, Errno> {
        self.nodes.path(id).map(Path::to_owned).ok_or(Errno::ENOENT)
    }

    fn ino_of(&self, id: u64) -> Result<u64, Errno> {
        self.nodes.get(id).map(|node| node.ino).ok_or(Errno::ENOENT)
    }

    /// The relative path of `name` in directory `parent`; `EACCES` for the reserved names
    /// of the root, which nothing may create, remove or rename.
    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == nodes::ROOT && (name == HIDDEN || name == CONTROL) {
            return Err(Errno::EACCES);
        }
        Ok(self.path_of(parent)?.join(name))
    }

    /// The directory `id` as the directory log names it.
    fn dir_ref(&self, id: u64) -> Result<(u64, PathBuf), Errno> {
        Ok((self.ino_of(id)?, self.full(&self.path_of(id)?)))
    }

    /// Attributes of the object at `relative`, registering its node (`lookup`: the kernel
    /// now holds one more reference).
    fn attr_at(&mut self, relative: &Path, lookup: bool) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.full(relative))?;
        let id = self.nodes.at(relative, meta.ino(), lookup);
        Ok(attr(id, &meta))
    }

    fn add_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(fh, handle);
        fh
    }

    fn open_file(&self, fh: u64) -> Result<&OpenFile, Errno> {
        match self.handles.get(&fh) {
            Some(Handle::File(open)) => Ok(open),
            Some(Handle::Stale) => Err(Errno::EIO),
            _ => Err(Errno::EBADF),
        }
    }

    /// What a crash now would discard.
    pub(crate) fn pending(&self) -> Pending {
        self.tracker.pending()
    }

    /// The power cut: discards everything not durable, then serves the durable state.
    pub(crate) fn crash(&mut self, options: &CrashOptions) -> Result<CrashReport, Error> {
        let report = self.tracker.crash(options);
        // Whatever the outcome, nothing opened before survives, and names moved.
        for handle in self.handles.values_mut() {
            if !matches!(handle, Handle::Control { .. }) {
                *handle = Handle::Stale;
            }
        }
        self.crashes += 1;
        let names = scan(&self.backing).map_err(|e| Error::io(&self.backing, e))?;
        self.nodes.rename_all(&names);
        info!(crashes = self.crashes, "serving the durable state");
        report
    }

    /// A clean unmount: every change stands.
    pub(crate) fn unmounted(&mut self) {
        if let Err(e) = self.tracker.forget_all() {
            warn!(error = %e, "cannot empty the trash");
        }
    }
}

/// Every inode number in the backing folder and its path (relative), but crashfs's own.
fn scan(backing: &Path) -> std::io::Result<HashMap<u64, PathBuf>> {
    let mut names = HashMap::new();
    names.insert(std::fs::metadata(backing)?.ino(), PathBuf::new());
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(backing.join(&folder))? {
            let entry = entry?;
            if folder.as_os_str().is_empty() && entry.file_name() == HIDDEN {
                continue;
            }
            let relative = folder.join(entry.file_name());
            let meta = entry.metadata()?;
            if meta.is_dir() {
                folders.push(relative.clone());
            }
            names.insert(meta.ino(), relative);
        }
    }
    Ok(names)
}

/// FUSE attributes from backing metadata, under node id `id`.
fn attr(id: u64, meta: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// The control file's attributes: an empty regular file, owner-only.
fn control_attr() -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(nodes::CONTROL),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0o600,
        nlink: 1,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    let nanos = nanos.clamp(0, 999_999_999) as u32;
    if seconds >= 0 {
        UNIX_EPOCH + Duration::new(seconds as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::new(seconds.unsigned_abs(), 0) + Duration::new(0, nanos)
    }
}

/// A rustix error as the kernel's errno.
fn raw(errno: rustix::io::Errno) -> Errno {
    Errno::from_i32(errno.raw_os_error())
}

/// A [`DirRef`] over a `(ino, path)` pair from [`State::dir_ref`].
fn dir_ref(dir: &(u64, PathBuf)) -> DirRef<'_> {
    DirRef {
        ino: dir.0,
        path: &dir.1,
    }
}
