//! Disk use follows the live data: a journal segment kept alive by a few old messages is
//! compacted (its live messages rewritten at the head) and then deleted, and the old messages
//! survive it, in order, across a restart.

mod support;

use std::time::Duration;

use hopmq::{GetOptions, Message};
use support::{Manager, drain, wait_until};

const SEGMENT_BYTES: u64 = 1024 * 1024;

#[test]
fn a_segment_pinned_by_a_few_old_messages_is_compacted_away() {
    let mut manager = Manager::builder()
        .env("QMGR_SEGMENT_BYTES", SEGMENT_BYTES)
        .env("QMGR_SYNC", "never")
        .plain_disk() // no kill, and gigabytes without a sync for a crashfs to hold
        .start();
    let client = manager.client();
    for n in 0..3 {
        client
            .put("pinned", Message::new(format!("old-{n}")))
            .expect("put");
    }
    // 24 MiB through another queue: the pinned messages' segment is soon mostly dead.
    let body = vec![7u8; 64 * 1024];
    for _ in 0..48 {
        let batch = (0..8)
            .map(|_| ("traffic".to_owned(), Message::new(body.clone())))
            .collect();
        client.put_batch(batch).expect("put batch");
        let got = client
            .get_with(
                "traffic",
                GetOptions {
                    max: 8,
                    timeout: Duration::from_secs(10),
                    ..Default::default()
                },
            )
            .expect("get");
        assert_eq!(got.len(), 8);
    }
    wait_until(
        "the journal shrinks to a few segments",
        Duration::from_secs(60),
        || manager.journal_bytes() <= 4 * SEGMENT_BYTES,
    );
    drop(client);
    manager.terminate();
    manager.restart();
    let texts: Vec<String> = drain(&manager.client(), "pinned")
        .iter()
        .map(|m| m.text().expect("text").to_owned())
        .collect();
    assert_eq!(texts, ["old-0", "old-1", "old-2"]);
}
