//! Mounting: the FUSE session options, the check of whether this machine lets us mount at
//! all, and [`Mount`], a crashfs served by threads of the calling process (what a test
//! links), unmounted when dropped.
//!
//! fuser is used without libfuse: as root it opens `/dev/fuse` and calls mount(2) itself,
//! so neither libfuse nor `fusermount` is needed. Without root it falls back to the setuid
//! `fusermount3` (Debian's `fuse3` package), if installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, Session};
use tracing::{info, warn};

use crate::error::Error;
use crate::fs::{CrashFs, Shared};
use crate::report::{CrashOptions, CrashReport, Pending};

/// The session options: the kernel checks permissions against the attributes we report
/// (as a real filesystem would), and the mount is named crashfs in the mount table.
pub(crate) fn config() -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("crashfs".to_owned()),
        MountOption::Subtype("crashfs".to_owned()),
        MountOption::DefaultPermissions,
    ];
    config
}

/// Why FUSE cannot be used here, if it cannot: no `/dev/fuse`, or no way to mount with it
/// (root who cannot open it; not root and no `fusermount3`/`fusermount`). A mount may
/// still be refused (a container without `CAP_SYS_ADMIN`); [`Mount::new`] reports that as
/// [`Error::Unavailable`] too.
pub fn unavailable() -> Option<String> {
    if let Err(e) = std::fs::metadata("/dev/fuse") {
        return Some(format!(
            "no /dev/fuse ({e}): the kernel has no FUSE or it is not passed in"
        ));
    }
    if rustix::process::geteuid().is_root() {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse");
        return opened.err().map(|e| format!("cannot open /dev/fuse: {e}"));
    }
    if find_in_path("fusermount3").is_none() && find_in_path("fusermount").is_none() {
        return Some(
            "not root, and no fusermount3 (Debian package fuse3) or fusermount to mount with"
                .to_owned(),
        );
    }
    None
}

/// The first `name` in `$PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(name))
        .find(|candidate| candidate.is_file())
}

/// Mounts a crashfs over `backing` at `mountpoint`; the session is not served yet.
pub(crate) fn session(
    backing: &Path,
    mountpoint: &Path,
) -> Result<(Session<CrashFs>, Arc<Shared>), Error> {
    // First: where FUSE is unavailable, that is the answer, whatever the arguments.
    if let Some(reason) = unavailable() {
        return Err(Error::Unavailable(reason));
    }
    if !mountpoint.is_dir() {
        return Err(Error::Mountpoint {
            path: mountpoint.to_owned(),
        });
    }
    let backing = backing.canonicalize().map_err(|e| Error::io(backing, e))?;
    let canonical = mountpoint
        .canonicalize()
        .map_err(|e| Error::io(mountpoint, e))?;
    if canonical.starts_with(&backing) {
        // Listing the backing folder would then ask this very filesystem, which waits on
        // itself.
        return Err(Error::Nested {
            backing,
            mountpoint: canonical,
        });
    }
    let shared = Shared::new(&backing)?;
    let filesystem = CrashFs::new(Arc::clone(&shared));
    let session = Session::new(filesystem, mountpoint, &config()).map_err(|error| {
        // Refused by the kernel (EPERM without CAP_SYS_ADMIN), then no fusermount to fall
        // back to (NotFound): this machine does not let us mount.
        match error.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => {
                Error::Unavailable(format!("mounting is not permitted: {error}"))
            }
            _ => Error::Mount {
                mountpoint: mountpoint.to_owned(),
                error,
            },
        }
    })?;
    info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "mounted");
    Ok((session, shared))
}

/// A crashfs served by a thread of this process. Dropping it unmounts it (lazily if
/// something still uses it).
#[derive(Debug)]
pub struct Mount {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    mountpoint: PathBuf,
}

impl Mount {
    /// Mounts a crashfs over the folder `backing` at the folder `mountpoint` and serves it
    /// from a background thread; it is ready when this returns.
    pub fn new(backing: &Path, mountpoint: &Path) -> Result<Self, Error> {
        let (session, shared) = session(backing, mountpoint)?;
        let session = session.spawn().map_err(|error| Error::Mount {
            mountpoint: mountpoint.to_owned(),
            error,
        })?;
        Ok(Self {
            session: Some(session),
            shared,
            mountpoint: mountpoint.to_owned(),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut: discards every unsynced change, then goes on serving the durable
    /// state. Files opened before it fail with `EIO` from now on.
    pub fn crash(&self, options: CrashOptions) -> Result<CrashReport, Error> {
        self.shared.lock().crash(&options)
    }

    /// Makes every later `fsync` take `latency`, as a real disk's flush does (a crashfs
    /// otherwise syncs as fast as memory, which can close a window a test means to hit).
    pub fn set_sync_latency(&self, latency: std::time::Duration) {
        self.shared.set_sync_latency(latency);
    }

    /// What a crash now would discard.
    pub fn pending(&self) -> Pending {
        self.shared.lock().pending()
    }

    /// Unmounts (a clean shutdown: every change stands) and waits for the serving thread.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(error) => {
                // Busy (a file still open): detach it; the kernel ends the session when the
                // last user lets go, and the serving thread with it.
                warn!(mountpoint = %self.mountpoint.display(), error = %error, "unmount failed; detaching");
                detach(&self.mountpoint).map_err(|_| Error::Unmount {
                    mountpoint: self.mountpoint.clone(),
                    error,
                })
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!(error = %e, "crashfs left mounted");
        }
    }
}

/// Lazy unmount: the mount point is free at once, the session ends when unused.
pub(crate) fn detach(mountpoint: &Path) -> std::io::Result<()> {
    rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH)?;
    Ok(())
}

/// Unmounts the crashfs at `mountpoint` from outside its daemon (which then exits):
/// umount(2) as root, `fusermount3 -u` (or `fusermount -u`) otherwise. `lazy` detaches a
/// busy mount instead of failing.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), Error> {
    let flags = if lazy {
        rustix::mount::UnmountFlags::DETACH
    } else {
        rustix::mount::UnmountFlags::empty()
    };
    let failed = |error: std::io::Error| Error::Unmount {
        mountpoint: mountpoint.to_owned(),
        error,
    };
    match rustix::mount::unmount(mountpoint, flags) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let helper = find_in_path("fusermount3")
                .or_else(|| find_in_path("fusermount"))
                .ok_or_else(|| {
                    failed(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
                })?;
            let mut command = std::process::Command::new(helper);
            command.arg("-u");
            if lazy {
                command.arg("-z");
            }
            let status = command.arg(mountpoint).status().map_err(failed)?;
            if status.success() {
                Ok(())
            } else {
                Err(failed(std::io::Error::other(format!(
                    "fusermount: {status}"
                ))))
            }
        }
        Err(e) => Err(failed(e.into())),
    }
}
