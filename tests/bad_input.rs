//! Garbage on the API socket: the manager closes that one connection and nothing else is
//! affected. Each bad connection is raw bytes on a `UnixStream`; a well-behaved client on its
//! own connection keeps putting and getting throughout, and the daemon stays up.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use hopmq::Message;
use hopmq::protocol::{ClientFrame, Operation, Request, encode};
use support::{Manager, SOON};

fn hello() -> Vec<u8> {
    support::hello_frame("bad-input-test")
}

fn status_request() -> Vec<u8> {
    encode(&ClientFrame::Request(Request {
        id: 1,
        operation: Operation::Status,
    }))
    .unwrap()
}

/// Deterministic noise (xorshift64), so a failure replays exactly.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A length prefix and a payload that is no frame: 0xfe bytes make an endless varint.
fn garbage_frame() -> Vec<u8> {
    let mut frame = 16u32.to_le_bytes().to_vec();
    frame.extend([0xfe; 16]);
    frame
}

/// Opens a raw connection and writes `parts` in order (a write may fail once the manager has
/// closed its end; that is fine), then half-closes the writing side if `then_close`.
fn send_raw(manager: &Manager, parts: &[&[u8]], then_close: bool) -> UnixStream {
    let mut stream = UnixStream::connect(manager.socket()).unwrap();
    for part in parts {
        if stream.write_all(part).is_err() {
            break;
        }
    }
    if then_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    stream
}

/// Reads (and drops: a welcome may come first) until the manager closes the connection.
#[track_caller]
fn assert_closed_by_manager(mut stream: UnixStream, what: &str) {
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the manager kept the connection open for {SOON:?}")
            }
            Err(e) => panic!("{what}: reading failed: {e}"),
        }
    }
}

/// The well-behaved client still puts and gets, and the daemon is alive.
#[track_caller]
fn assert_unaffected(manager: &mut Manager, client: &hopmq::blocking::Client, after: &str) {
    assert!(manager.is_running(), "the manager died after {after}");
    let body = format!("still fine after {after}");
    let id = client.put("healthy", Message::new(body.clone())).unwrap();
    let message = client
        .get("healthy", SOON)
        .unwrap()
        .unwrap_or_else(|| panic!("no message after {after}"));
    assert_eq!(message.id, id);
    assert_eq!(message.body, body.as_bytes());
}

#[test]
fn each_bad_connection_is_closed_and_nothing_else_is_affected() {
    let mut manager = Manager::start();
    let client = manager.client();
    assert_unaffected(&mut manager, &client, "nothing");

    let huge_prefix: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let hello = hello();
    let request = status_request();
    let garbage = garbage_frame();
    let cases: Vec<(&str, Vec<&[u8]>, bool)> = vec![
        (
            "a huge length prefix before hello",
            vec![huge_prefix],
            false,
        ),
        (
            "a huge length prefix after hello",
            vec![&hello, huge_prefix],
            false,
        ),
        ("a request before hello", vec![&request], false),
        ("a garbage frame before hello", vec![&garbage], false),
        ("a garbage frame after hello", vec![&hello, &garbage], false),
        ("a second hello", vec![&hello, &hello], false),
        (
            "a truncated hello, then close",
            vec![&hello[..hello.len() - 1]],
            true,
        ),
        (
            "a truncated request after hello, then close",
            vec![&hello, &request[..request.len() - 1]],
            true,
        ),
        (
            "a length prefix cut short, then close",
            vec![&hello, &[5, 0][..]],
            true,
        ),
    ];
    for (what, parts, then_close) in cases {
        let stream = send_raw(&manager, &parts, then_close);
        assert_closed_by_manager(stream, what);
        assert_unaffected(&mut manager, &client, what);
    }
    let log = manager.log();
    assert!(log.contains("closing a client"), "{log}");
}

#[test]
fn random_bytes_are_refused_while_other_clients_work() {
    let mut manager = Manager::start();
    let client = manager.client();
    for seed in 1..=6 {
        let bytes = noise(seed, 64 * 1024);
        let stream = send_raw(&manager, &[&bytes], false);
        assert_closed_by_manager(stream, &format!("random bytes (seed {seed})"));
        let hello = self::hello();
        let stream = send_raw(&manager, &[&hello, &bytes], true);
        assert_closed_by_manager(stream, &format!("hello, then random bytes (seed {seed})"));
        assert_unaffected(
            &mut manager,
            &client,
            &format!("random bytes (seed {seed})"),
        );
    }
}

#[test]
fn a_stalled_half_frame_does_not_hold_up_other_clients() {
    let mut manager = Manager::start();
    let client = manager.client();
    // A client that announces a 1000-byte frame and sends 3 bytes of it, then goes quiet.
    let hello = hello();
    let mut announce = 1000u32.to_le_bytes().to_vec();
    announce.extend([1, 2, 3]);
    let stalled = send_raw(&manager, &[&hello, &announce], false);
    for _ in 0..10 {
        assert_unaffected(&mut manager, &client, "a stalled half frame");
    }
    drop(stalled);
    assert_unaffected(&mut manager, &client, "the stalled client left");
}
