//! Disk space: a full disk (the `disk_bytes_max` cap, and a real small tmpfs) makes puts fail
//! with a clear error while everything stored stays intact and the manager recovers once
//! space returns; and the journal shrinks back after a large volume has passed through.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hopmq::blocking::Client;
use hopmq::{ApiError, ClientError, GetOptions, Message, MessageId};
use support::{Manager, SOON, wait_until};

const QUEUE: &str = "bulk";
const MIB: u64 = 1024 * 1024;
const BODY_BYTES: usize = 100 * 1024;
/// More 100 KiB messages than any disk of these tests holds.
const PUTS_MAX: u32 = 10_000;

fn body(n: u32) -> Vec<u8> {
    let mut body = format!("message-{n:06}-").into_bytes();
    body.resize(BODY_BYTES, b'x');
    body
}

/// Puts 100 KiB messages until one fails; it must fail because the disk is full. Returns the
/// ids of the acknowledged puts, in order.
fn fill_until_disk_full(client: &Client) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for n in 0..PUTS_MAX {
        match client.put(QUEUE, Message::new(body(n))) {
            Ok(id) => ids.push(id),
            Err(error) => {
                assert!(
                    matches!(error, ClientError::Api(ApiError::DiskFull { .. })),
                    "{error:?}"
                );
                assert!(error.to_string().contains("disk full"), "{error}");
                return ids;
            }
        }
    }
    panic!("{PUTS_MAX} puts of {BODY_BYTES} bytes and the disk is not full");
}

/// The manager is up, says why a put fails, and everything it acknowledged is intact, in
/// order, also after a crash.
fn check_full_and_intact(manager: &mut Manager, ids: &[MessageId]) {
    assert!(ids.len() >= 2, "the disk took only {} messages", ids.len());
    assert!(manager.is_running());
    let file = manager.scratch().join("body.bin");
    std::fs::write(&file, body(PUTS_MAX)).unwrap();
    let cli = manager.cli(&["put", QUEUE, "--file", file.to_str().unwrap()]);
    cli.expect_code(1);
    assert!(cli.stderr.contains("disk full"), "{}", cli.stderr);
    assert_eq!(manager.depth(QUEUE), Some(ids.len() as u64));
    check_stored(&manager.client(), ids);
    manager.kill9();
    manager.restart();
    check_stored(&manager.client(), ids);
}

/// Browses the queue: exactly the messages `ids`, in order, with their bodies.
fn check_stored(client: &Client, ids: &[MessageId]) {
    let stored = client.browse(QUEUE, PUTS_MAX).unwrap();
    assert_eq!(stored.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    for (n, message) in stored.iter().enumerate() {
        assert_eq!(message.body, body(n as u32), "message {n}");
    }
}

/// Waits until a put succeeds again; returns its id.
fn put_once_space_returns(client: &Client) -> MessageId {
    let mut after = None;
    wait_until("puts succeed again", SOON, || {
        match client.put(QUEUE, Message::new("space is back")) {
            Ok(id) => {
                after = Some(id);
                true
            }
            Err(ClientError::Api(ApiError::DiskFull { .. })) => false,
            Err(error) => panic!("{error:?}"),
        }
    });
    after.expect("set when the wait ended")
}

/// A manager whose journal may not grow past 3 segments of 1 MiB.
fn capped_manager() -> Manager {
    Manager::builder()
        .env("QMGR_SEGMENT_BYTES", MIB)
        .env("QMGR_DISK_BYTES_MAX", 3 * MIB)
        .env("QMGR_MAX_MESSAGE_BYTES", 256 * 1024)
        .start()
}

#[test]
fn a_capped_journal_refuses_puts_as_disk_full_and_keeps_what_it_stored() {
    let mut manager = capped_manager();
    let ids = fill_until_disk_full(&manager.client());
    check_full_and_intact(&mut manager, &ids);
}

#[test]
fn a_capped_journal_takes_puts_again_after_a_drain() {
    let mut manager = capped_manager();
    let client = manager.client();
    let ids = fill_until_disk_full(&client);
    let got = support::drain(&client, QUEUE);
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    // The manager's maintenance deletes the segments nothing lives in any more.
    let after = put_once_space_returns(&client);
    manager.kill9();
    manager.restart();
    let message = manager.client().get(QUEUE, SOON).unwrap().unwrap();
    assert_eq!(message.id, after);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

/// Why a tmpfs could not be mounted.
#[derive(Debug)]
enum MountRefused {
    /// This machine does not let the test mount one: no `mount` command, no permission (not
    /// root, or a container without the capability), or no tmpfs in the kernel.
    Unavailable(String),
    /// Anything else: a mistake of the test's, or a broken machine.
    Failed(String),
}

/// What `mount` says when the machine, not the request, is the reason (util-linux and
/// busybox wordings, lowercased).
const UNAVAILABLE: [&str; 6] = [
    "must be superuser",
    "only root",
    "permission denied",
    "operation not permitted",
    "unknown filesystem type",
    "not supported",
];

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or says why not.
    fn mount(dir: &Path, size: &str) -> Result<Self, MountRefused> {
        std::fs::create_dir_all(dir).map_err(|e| MountRefused::Failed(e.to_string()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    MountRefused::Unavailable(format!("cannot run mount: {e}"))
                }
                _ => MountRefused::Failed(format!("cannot run mount: {e}")),
            })?;
        if !output.status.success() {
            let why = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let lower = why.to_lowercase();
            return Err(if UNAVAILABLE.iter().any(|u| lower.contains(u)) {
                MountRefused::Unavailable(why)
            } else {
                MountRefused::Failed(format!("{why} ({})", output.status))
            });
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_tmpfs_refuses_puts_as_disk_full_and_recovers_when_space_returns() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("small-disk");
    // Declared before the manager, so it is unmounted after the manager is killed.
    let _tmpfs = match Tmpfs::mount(&data, "8m") {
        Ok(tmpfs) => tmpfs,
        Err(MountRefused::Unavailable(why)) => {
            eprintln!(
                "SKIPPED: this machine lets no test mount a tmpfs (at {}): {why}",
                data.display()
            );
            return;
        }
        Err(MountRefused::Failed(why)) => {
            panic!("mounting a tmpfs at {} failed: {why}", data.display())
        }
    };
    // Ballast that the test deletes to give the space back, as an operator would.
    let ballast = data.join("ballast");
    std::fs::write(&ballast, vec![1u8; 2 * MIB as usize]).unwrap();
    let mut manager = Manager::builder()
        .data_dir(&data)
        .env("QMGR_SEGMENT_BYTES", MIB)
        .env("QMGR_MAX_MESSAGE_BYTES", 256 * 1024)
        .start();
    let ids = fill_until_disk_full(&manager.client());
    check_full_and_intact(&mut manager, &ids);

    std::fs::remove_file(&ballast).unwrap();
    let client = manager.client();
    let after = put_once_space_returns(&client);
    let mut all = ids.clone();
    all.push(after);
    let got = support::drain(&client, QUEUE);
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), all);
}

#[test]
fn a_gibibyte_through_a_queue_leaves_the_journal_near_empty() {
    const SEGMENT_BYTES: u64 = 8 * MIB;
    const MESSAGE_BYTES: usize = 64 * 1024;
    const BATCH: u32 = 64;
    const TOTAL_BYTES: u64 = 1024 * MIB;
    let manager = Manager::builder()
        .env("QMGR_SYNC", "never")
        .env("QMGR_SEGMENT_BYTES", SEGMENT_BYTES)
        .env("QMGR_MAX_MESSAGE_BYTES", MIB)
        .plain_disk() // no kill, and gigabytes without a sync for a crashfs to hold
        .start();
    let client = manager.client();
    let empty = manager.journal_bytes();
    let batches = TOTAL_BYTES / (u64::from(BATCH) * MESSAGE_BYTES as u64);
    for batch in 0..batches {
        let messages = (0..BATCH)
            .map(|n| {
                let mut body = format!("{batch}-{n}-").into_bytes();
                body.resize(MESSAGE_BYTES, b'.');
                (QUEUE.to_owned(), Message::new(body))
            })
            .collect();
        assert_eq!(client.put_batch(messages).unwrap().len(), BATCH as usize);
        let got = client
            .get_with(
                QUEUE,
                GetOptions {
                    timeout: SOON,
                    max: BATCH,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(got.len(), BATCH as usize, "batch {batch}");
        assert!(got[0].body.starts_with(format!("{batch}-0-").as_bytes()));
    }
    assert_eq!(manager.depth(QUEUE), Some(0));
    let limit = (4 * SEGMENT_BYTES).max(empty);
    wait_until(
        &format!("the journal shrinks to {limit} bytes or less"),
        Duration::from_secs(60),
        || manager.journal_bytes() <= limit,
    );
}
