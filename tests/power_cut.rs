//! Power cuts: managers whose data lives on a crashfs, killed with `kill -9` and then the
//! filesystem crashed, so that whatever was written but not synced is gone, as after a power
//! cut. `kill -9` alone leaves the page cache intact and cannot tell a missing `fdatasync`
//! from a present one; these tests can. Where FUSE cannot be used they are skipped, loudly.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::path::{Path, PathBuf};

use crashfs::{CrashOptions, Mount};
use hopmq::Message;
use support::network::{Network, Spec, link_of, receive};
use support::{Manager, SOON, drain, wait_until};

/// A crashfs mounted in a temporary folder, unmounted when dropped.
struct Disk {
    mount: Option<Mount>,
    _dir: tempfile::TempDir,
}

impl Disk {
    /// A fresh crashfs, or `None` (the test then returns) where FUSE is unavailable.
    fn mount(test: &str) -> Option<Disk> {
        if let Some(why) = crashfs::unavailable() {
            eprintln!("SKIPPED {test}: FUSE is unavailable ({why})");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mountpoint).unwrap();
        let mount = Mount::new(&backing, &mountpoint).unwrap();
        Some(Disk {
            mount: Some(mount),
            _dir: dir,
        })
    }

    /// A data directory on it, not yet created: the manager makes it.
    fn data_dir(&self, name: &str) -> PathBuf {
        self.mountpoint().join(name)
    }

    fn mountpoint(&self) -> &Path {
        self.mount.as_ref().unwrap().mountpoint()
    }

    /// Forgets every unsynced write, tearing the last one of each file at a random byte.
    fn power_cut(&self) {
        let options = CrashOptions {
            tear: true,
            seed: None,
        };
        let report = self.mount.as_ref().unwrap().crash(options).unwrap();
        eprintln!("power cut: {report:?}");
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            let _ = mount.unmount();
        }
    }
}

fn numbered(n: usize) -> Message {
    Message::new(format!("m{n}"))
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("m{n}")).collect()
}

#[test]
fn acknowledged_puts_and_gets_survive_a_power_cut() {
    let Some(disk) = Disk::mount("acknowledged_puts_and_gets_survive_a_power_cut") else {
        return;
    };
    // A data directory the manager creates itself: its own name must be made durable too.
    let mut manager = Manager::builder()
        .data_dir(disk.data_dir("data"))
        .arg("--sync")
        .arg("always")
        .start();
    let client = manager.client();
    for n in 0..300 {
        client.put("orders", numbered(n)).unwrap();
    }
    let taken = client
        .get_with(
            "orders",
            hopmq::GetOptions {
                max: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(bodies(&taken), expected(0..100));
    drop(client);
    manager.kill9();
    disk.power_cut();
    manager.restart();
    let left = drain(&manager.client(), "orders");
    assert_eq!(
        bodies(&left),
        expected(100..300),
        "every acknowledged put survives, and no acknowledged get comes back"
    );
}

#[test]
fn without_syncs_a_power_cut_loses_acknowledged_puts() {
    // The proof that the test above can fail: the same run with `sync = never` loses what it
    // acknowledged, which `kill -9` alone would never show.
    let Some(disk) = Disk::mount("without_syncs_a_power_cut_loses_acknowledged_puts") else {
        return;
    };
    let data_dir = disk.data_dir("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::File::open(disk.mountpoint())
        .unwrap()
        .sync_all()
        .unwrap();
    let mut manager = Manager::builder()
        .data_dir(&data_dir)
        .arg("--sync")
        .arg("never")
        .start();
    let client = manager.client();
    for n in 0..300 {
        client.put("orders", numbered(n)).unwrap();
    }
    drop(client);
    manager.kill9();
    disk.power_cut();
    manager.restart_with(&["--salvage"]);
    let left = drain(&manager.client(), "orders");
    assert!(
        left.len() < 300,
        "crashfs forgot nothing: all 300 unsynced puts survived"
    );
}

#[test]
fn messages_a_neighbour_acknowledged_survive_its_power_cut() {
    let Some(disk) = Disk::mount("messages_a_neighbour_acknowledged_survive_its_power_cut") else {
        return;
    };
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    let (topology, certs) = (network.topology(), network.certs());
    let bravo_data = disk.data_dir("bravo").display().to_string();
    let env = [
        ("QMGR_DATA_DIR", bravo_data.as_str()),
        ("QMGR_SYNC", "always"),
    ];
    network.start_manager_with("bravo", &topology, &certs, &env);
    network.wait_link_up("alpha", "bravo");
    let client = network.manager("alpha").client();
    for n in 0..500 {
        client.put("orders", numbered(n)).unwrap();
    }
    // Once bravo acknowledged everything, alpha has let go of it: only bravo's disk holds it.
    wait_until("bravo acknowledged all 500", SOON, || {
        let link = link_of(&network.manager("alpha").status(), "bravo");
        link["messages_acked"] == 500 && link["transmission_depth"] == 0
    });
    let bravo = network.manager("bravo");
    bravo.kill9();
    disk.power_cut();
    bravo.restart();
    let got = receive(&bravo.client(), "orders", 500);
    assert_eq!(bodies(&got), expected(0..500));
    assert!(drain(&bravo.client(), "orders").is_empty(), "no duplicate");
}
