//! What one client can cost a manager, bounded: nothing larger than a hello is read before the
//! handshake, a watcher that stops reading is cut off by bytes (not let grow the manager by
//! gigabytes) and the spike's memory is given back, and past `max_connections` a client is
//! refused with the reason.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hopmq::protocol::{ClientFrame, Operation, Request, encode};
use hopmq::{ApiError, ClientError, Message};
use support::{Manager, SOON, wait_until};

fn hello() -> Vec<u8> {
    support::hello_frame("client-limits-test")
}

/// The manager's resident memory, in MiB.
fn resident_mib(manager: &Manager) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", manager.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
fn a_frame_larger_than_a_hello_before_the_handshake_is_refused_unread() {
    let mut manager = Manager::start();
    const ANNOUNCED_BYTES: usize = 60 * 1024 * 1024;
    for client in 0..8 {
        let mut stream = UnixStream::connect(manager.socket()).unwrap();
        stream.set_write_timeout(Some(SOON)).unwrap();
        stream
            .write_all(&(ANNOUNCED_BYTES as u32).to_le_bytes())
            .unwrap();
        // Were the frame read, these bytes would all be taken (and held by the manager); it is
        // refused on its length, so the manager closes the connection and the writes fail.
        let chunk = vec![0u8; 1024 * 1024];
        let mut sent = 0;
        let refused = loop {
            match stream.write_all(&chunk) {
                Ok(()) => sent += chunk.len(),
                Err(e) => break e,
            }
            assert!(
                sent < ANNOUNCED_BYTES,
                "client {client}: the manager read a 60 MiB hello"
            );
        };
        assert!(
            matches!(
                refused.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
            ),
            "client {client}: {refused}"
        );
    }
    assert!(manager.is_running());
    let client = manager.client();
    client.put("q", Message::new("still serving")).unwrap();
    assert!(
        manager.log().contains("bad handshake frame"),
        "{}",
        manager.log()
    );
}

#[test]
fn past_max_connections_a_client_is_refused_with_the_reason_until_one_leaves() {
    let manager = Manager::builder().env("QMGR_MAX_CONNECTIONS", 2).start();
    // The start's readiness probe holds a slot until the manager has seen it leave.
    let mut clients = Vec::new();
    wait_until("two clients are let in", SOON, || {
        if let Ok(client) = hopmq::blocking::Client::connect_to(manager.socket()) {
            clients.push(client);
        }
        clients.len() == 2
    });
    let (first, second) = (clients.remove(0), clients.remove(0));
    let third = hopmq::blocking::Client::connect_to(manager.socket());
    match third {
        Err(ClientError::Handshake(ApiError::TooManyConnections { limit: 2 })) => {}
        other => panic!("a third connection was not refused for the limit: {other:?}"),
    }
    second
        .put("q", Message::new("the others keep working"))
        .unwrap();
    drop(first);
    let mut fourth = None;
    wait_until("a connection is let in once one left", SOON, || {
        fourth = hopmq::blocking::Client::connect_to(manager.socket()).ok();
        fourth.is_some()
    });
    assert!(fourth.unwrap().get("q", Duration::ZERO).unwrap().is_some());
}

#[test]
fn a_watcher_that_stops_reading_is_cut_off_by_bytes_and_its_memory_given_back() {
    let manager = Manager::start();
    // A watcher stopped with SIGSTOP: subscribed, then reading nothing.
    let mut watcher = UnixStream::connect(manager.socket()).unwrap();
    watcher.write_all(&hello()).unwrap();
    let subscribe = encode(&ClientFrame::Request(Request {
        id: 1,
        operation: Operation::Subscribe {
            queue: "feed".into(),
        },
    }))
    .unwrap();
    watcher.write_all(&subscribe).unwrap();
    // 4,000 messages of 64 KiB (250 MiB) are put and taken by another client meanwhile.
    let client = manager.client();
    const BODY_BYTES: usize = 64 * 1024;
    const MESSAGES: usize = 4_000;
    let body = vec![b'x'; BODY_BYTES];
    for _ in 0..MESSAGES / 16 {
        let batch: Vec<(String, Message)> = (0..16)
            .map(|_| ("feed".to_owned(), Message::new(body.clone())))
            .collect();
        client.put_batch(batch).unwrap();
        while client.poll("feed").unwrap().is_some() {}
    }
    wait_until("the manager cut the watcher off", SOON, || {
        manager
            .log()
            .contains("closing a connection that stopped reading")
    });
    let resident = resident_mib(&manager);
    assert!(
        resident < 200,
        "the manager holds {resident} MiB for a watcher that stopped reading"
    );
    // The watcher wakes up: it finds what was queued for it up to its limit, then the end.
    watcher.set_read_timeout(Some(SOON)).unwrap();
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        match watcher.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the watcher's connection: {e}"),
        }
    }
    // Once it is gone, the spike's memory goes back to the system.
    drop(watcher);
    wait_until("the manager gave the spike's memory back", SOON, || {
        resident_mib(&manager) < 48
    });
    assert!(
        received < MESSAGES * BODY_BYTES / 2,
        "the watcher was sent {received} bytes: not cut off"
    );
}
