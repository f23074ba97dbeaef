//! A disk that can lose power: a crashfs mounted in a test's temporary folder.
//!
//! `kill -9` leaves the page cache intact, so a crash test that only kills cannot tell a
//! missing `fdatasync` from a present one. A manager whose data directory lives on a [`Disk`]
//! is power-cut by [`Manager::kill9`](super::Manager::kill9): after the kill every write it
//! had not synced is forgotten (the last one of each file torn at a random byte), as after a
//! real power cut.

use std::path::{Path, PathBuf};

use crashfs::{CrashOptions, Mount};

/// A crashfs mounted in a folder of the test's; unmounted when dropped.
#[derive(Debug)]
pub struct Disk {
    mount: Option<Mount>,
}

impl Disk {
    /// Mounts a fresh crashfs in folders under `dir`, or says why this machine cannot.
    pub fn mount(dir: &Path) -> Result<Disk, String> {
        if let Some(why) = crashfs::unavailable() {
            return Err(why);
        }
        let backing = dir.join("backing");
        let mountpoint = dir.join("mnt");
        for folder in [&backing, &mountpoint] {
            std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
        let mount = Mount::new(&backing, &mountpoint).map_err(|e| e.to_string())?;
        Ok(Disk { mount: Some(mount) })
    }

    /// The root of the mounted filesystem.
    pub fn mountpoint(&self) -> &Path {
        self.served().mountpoint()
    }

    /// A path on this disk.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint().join(name)
    }

    /// The power cut: forgets every unsynced write, tearing the last one of each file at a
    /// random byte (the seed is in the printed report, to replay a failure).
    pub fn power_cut(&self) {
        let options = CrashOptions {
            tear: true,
            seed: None,
        };
        let report = self.served().crash(options).expect("crashfs crashes");
        eprintln!("power cut on {}: {report:?}", self.mountpoint().display());
    }

    /// Makes each sync take `latency`, as a real disk's flush does: a crashfs syncs as fast
    /// as memory, which can close the window a kill means to hit.
    pub fn slow_syncs(&self, latency: std::time::Duration) {
        self.served().set_sync_latency(latency);
    }

    fn served(&self) -> &Mount {
        self.mount.as_ref().expect("mounted until dropped")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            if let Err(e) = mount.unmount() {
                eprintln!("crashfs left mounted: {e}");
            }
        }
    }
}
