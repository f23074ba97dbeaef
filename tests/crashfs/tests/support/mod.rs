//! Shared helpers of the crashfs tests: a crashfs per test in its own temporary folder,
//! and the skip rule: only where FUSE is unavailable, and always with a message saying why.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crashfs::{CrashOptions, CrashReport, Error, Mount};

/// A crashfs over `backing`, mounted at `mountpoint`, both in a temporary folder of the
/// test's own.
pub(crate) struct Fixture {
    // Field order: the mount goes before the folder it lives in.
    pub(crate) mount: Mount,
    pub(crate) backing: PathBuf,
    pub(crate) folder: tempfile::TempDir,
}

/// Says loudly that `test` did not run and why.
pub(crate) fn skip(test: &str, reason: &str) {
    eprintln!(
        "SKIPPED {test}: FUSE is unavailable ({reason}); needs /dev/fuse and root (or fusermount3)"
    );
}

/// A fresh crashfs for `test`, or `None` (having said so) where FUSE is unavailable.
pub(crate) fn mount(test: &str) -> Option<Fixture> {
    let folder = tempfile::tempdir().expect("temporary folder");
    let backing = folder.path().join("backing");
    let mountpoint = folder.path().join("mnt");
    std::fs::create_dir(&backing).expect("backing folder");
    std::fs::create_dir(&mountpoint).expect("mount point");
    match Mount::new(&backing, &mountpoint) {
        Ok(mount) => {
            assert_mounted(&mountpoint);
            Some(Fixture {
                mount,
                backing,
                folder,
            })
        }
        Err(Error::Unavailable(reason)) => {
            skip(test, &reason);
            None
        }
        Err(e) => panic!("cannot mount a crashfs: {e}"),
    }
}

/// Fails unless a FUSE filesystem named crashfs is mounted at `mountpoint`: a test that
/// passed against the bare folder would prove nothing.
pub(crate) fn assert_mounted(mountpoint: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mountpoint = mountpoint.canonicalize().expect("canonical mount point");
    let mounted = mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        // After the separator: the filesystem type, then the source (fuser's FSName).
        let kind: Vec<&str> = line
            .split(" - ")
            .nth(1)
            .map(|rest| rest.split(' ').take(2).collect())
            .unwrap_or_default();
        fields.get(4) == mountpoint.to_str().as_ref() && kind == ["fuse", "crashfs"]
    });
    assert!(mounted, "no crashfs mounted at {}", mountpoint.display());
}

impl Fixture {
    /// `relative` under the mount point.
    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.mount.mountpoint().join(relative)
    }

    pub(crate) fn crash(&self) -> CrashReport {
        self.mount
            .crash(CrashOptions {
                tear: false,
                seed: Some(1),
            })
            .expect("crash")
    }

    /// Writes `bytes` to a new or truncated file and syncs its data (not its directory).
    pub(crate) fn write_synced(&self, relative: &str, bytes: &[u8]) {
        let mut file = File::create(self.path(relative)).expect("create");
        file.write_all(bytes).expect("write");
        file.sync_data().expect("fdatasync");
    }

    /// A file written, synced, and its directory synced: durable.
    pub(crate) fn durable(&self, relative: &str, bytes: &[u8]) {
        self.write_synced(relative, bytes);
        let parent = Path::new(relative).parent().unwrap_or(Path::new(""));
        self.sync_dir(parent.to_str().expect("utf-8"));
    }

    /// Opens a directory under the mount and syncs it, as hopmq's `sync_dir` does.
    pub(crate) fn sync_dir(&self, relative: &str) {
        File::open(self.path(relative))
            .and_then(|dir| dir.sync_all())
            .expect("fsync of a directory");
    }

    pub(crate) fn read(&self, relative: &str) -> Vec<u8> {
        std::fs::read(self.path(relative)).expect("read")
    }

    pub(crate) fn exists(&self, relative: &str) -> bool {
        self.path(relative).symlink_metadata().is_ok()
    }

    /// Opens an existing file for writing, without truncating it.
    pub(crate) fn open_rw(&self, relative: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(relative))
            .expect("open")
    }

    /// The names in a folder under the mount, sorted.
    pub(crate) fn names(&self, relative: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(relative))
            .expect("read_dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    }
}
