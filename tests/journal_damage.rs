//! A damaged journal, seen from outside: a torn tail (a write cut short by a crash) is
//! truncated on start and every acknowledged message survives; damage before the tail makes
//! the manager refuse to start, naming the segment and offset, and `--salvage` starts it
//! without exactly the damaged records.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::path::PathBuf;

use hopmq::{Message, MessageId};
use support::Manager;

const QUEUE: &str = "kept";
const MESSAGES: u32 = 20;
const MIB: u64 = 1024 * 1024;
/// 20 messages fill about two segments of 1 MiB.
const BODY_BYTES: usize = 100 * 1024;

fn body(n: u32) -> Vec<u8> {
    let mut body = format!("journal-message-{n:04}-").into_bytes();
    body.resize(BODY_BYTES, b'z');
    body
}

/// A manager with journal segments of `segment_bytes`.
fn manager(segment_bytes: u64) -> Manager {
    Manager::builder()
        .env("QMGR_SEGMENT_BYTES", segment_bytes)
        .env("QMGR_MAX_MESSAGE_BYTES", 256 * 1024)
        .start()
}

/// Puts `MESSAGES` messages one by one (each its own commit), then kills the manager.
fn put_then_kill(manager: &mut Manager) -> Vec<MessageId> {
    let client = manager.client();
    let ids = (0..MESSAGES)
        .map(|n| client.put(QUEUE, Message::new(body(n))).unwrap())
        .collect();
    drop(client);
    manager.kill9();
    ids
}

/// The journal's segment files, oldest first.
fn segments(manager: &Manager) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(manager.data_dir().join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

fn bodies(messages: &[hopmq::Message]) -> Vec<Vec<u8>> {
    messages.iter().map(|m| m.body.clone()).collect()
}

#[test]
fn a_torn_tail_is_truncated_and_every_acknowledged_message_survives() {
    let mut manager = manager(64 * MIB);
    let ids = put_then_kill(&mut manager);
    // A write the crash cut short: noise right after the last record, over the end marker
    // that the last complete write left there (a bare record header of kind 2, 8-aligned).
    let last = segments(&manager).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    let marker = [16u8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    let end = (0..bytes.len() - marker.len())
        .step_by(8)
        .rev()
        .find(|&at| bytes[at..at + marker.len()] == marker)
        .expect("an end marker");
    assert!(end + 64 <= bytes.len(), "no room after the last record");
    for (i, byte) in bytes[end..end + 64].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(37).wrapping_add(11) | 1;
    }
    fs::write(&last, &bytes).unwrap();

    manager.restart();
    assert!(
        manager.log().contains("truncating the journal's torn tail"),
        "{}",
        manager.log()
    );
    let client = manager.client();
    let id = client.put(QUEUE, Message::new("after the repair")).unwrap();
    let all = support::drain(&client, QUEUE);
    let mut expected = ids;
    expected.push(id);
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), expected);
}

/// Flips one bit inside the body of message `victim` in `segment`, puts the manager back on
/// the journal expecting a refusal that names the segment, then salvages: exactly the victim
/// is lost.
fn refused_then_salvaged(mut manager: Manager, ids: Vec<MessageId>, segment: PathBuf, victim: u32) {
    let mut bytes = fs::read(&segment).unwrap();
    let needle = format!("journal-message-{victim:04}-").into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle.as_slice())
        .unwrap_or_else(|| panic!("message {victim} is not in {}", segment.display()));
    bytes[at + needle.len() + 10] ^= 0x55;
    fs::write(&segment, &bytes).unwrap();

    let refused = manager.start_refused();
    refused.expect_code(1);
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(refused.stderr.contains(name), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is corrupt at offset"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("salvage"), "{}", refused.stderr);

    manager.restart_with(&["--salvage"]);
    assert!(
        manager
            .log()
            .contains("salvage: skipping a corrupt journal range"),
        "{}",
        manager.log()
    );
    let client = manager.client();
    let left = support::drain(&client, QUEUE);
    let mut expected: Vec<Vec<u8>> = (0..MESSAGES).map(body).collect();
    expected.remove(victim as usize);
    assert_eq!(bodies(&left), expected, "only message {victim} is lost");
    let mut expected_ids = ids;
    expected_ids.remove(victim as usize);
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), expected_ids);

    // Salvaged for good: a plain restart is clean now.
    manager.kill9();
    manager.restart();
    assert!(manager.client().poll(QUEUE).unwrap().is_none());
}

#[test]
fn damage_in_an_older_segment_is_refused_and_salvage_skips_exactly_it() {
    let mut manager = manager(MIB);
    let ids = put_then_kill(&mut manager);
    let segments = segments(&manager);
    assert!(segments.len() >= 2, "{segments:?}");
    refused_then_salvaged(manager, ids, segments[0].clone(), 3);
}

#[test]
fn damage_before_the_tail_of_the_last_segment_is_refused_and_salvage_skips_exactly_it() {
    let mut manager = manager(64 * MIB);
    let ids = put_then_kill(&mut manager);
    let segments = segments(&manager);
    assert_eq!(segments.len(), 1, "{segments:?}");
    refused_then_salvaged(manager, ids, segments[0].clone(), 7);
}
