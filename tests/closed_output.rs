//! Every command that prints ends quietly when its reader leaves early, as in
//! `qmgr topology dot FILE | head -1`: exit code 0, nothing on stderr, no panic.
//!
//! Each command's stdout is a socket whose other end is already closed, so its first write
//! fails with a broken pipe however little it prints (a real `head -1` only closes the pipe
//! after a line, and a short output may have fitted in the pipe before that).

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use support::{Manager, SOON, qmgr_path, repo_root, wait_exit};

/// Runs `qmgr ARGS` with a stdout nobody reads; returns its exit code and stderr.
fn run_unread(args: &[&str], socket: Option<&std::path::Path>) -> (i32, String) {
    let (stdout, reader) = UnixStream::pair().unwrap();
    drop(reader);
    let mut command = Command::new(qmgr_path());
    command.args(args).current_dir(repo_root());
    if let Some(socket) = socket {
        command.arg("--socket").arg(socket);
    }
    let output = command
        .stdin(Stdio::null())
        .stdout(std::os::fd::OwnedFd::from(stdout))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_quiet(args: &[&str], socket: Option<&std::path::Path>) {
    let (code, stderr) = run_unread(args, socket);
    assert_eq!(code, 0, "qmgr {args:?} exited with {code}:\n{stderr}");
    assert!(stderr.is_empty(), "qmgr {args:?} complained:\n{stderr}");
}

#[test]
fn offline_commands_end_quietly() {
    let out = tempfile::tempdir().unwrap();
    let certs = out.path().join("certs");
    for args in [
        &["--help"][..],
        &["man"],
        &["completions", "bash"],
        &["topology", "dot", "topology.toml"],
        &["topology", "dot", "topology.toml", "--from", "alpha"],
        &["topology", "generate", "--managers", "50"],
        &["topology", "routes", "topology.toml", "--from", "alpha"],
        &[
            "topology",
            "routes",
            "topology.toml",
            "--from",
            "alpha",
            "--json",
        ],
        &["topology", "check", "topology.toml"],
        &[
            "topology",
            "diff",
            "topology.toml",
            "tests/topologies/ring.toml",
        ],
        &[
            "certs",
            "init",
            "--topology",
            "topology.toml",
            "--out",
            certs.to_str().unwrap(),
        ],
        &[
            "bench",
            "routes",
            "--managers",
            "20",
            "--links",
            "40",
            "--all-pairs-managers",
            "10",
            "--all-pairs-links",
            "20",
            "--runs",
            "1",
        ],
    ] {
        assert_quiet(args, None);
    }
}

#[test]
fn commands_against_a_manager_end_quietly() {
    let manager = Manager::start();
    manager.cli(&["put", "q", "one"]).expect_code(0);
    manager.cli(&["put", "q", "two"]).expect_code(0);
    let socket = Some(manager.socket());
    for args in [
        &["browse", "q"][..],
        &["browse", "q", "--json"],
        &["status"],
        &["status", "--json"],
        &["routes"],
        &["routes", "--json"],
        &["topology", "dot", "--live"],
        &["put", "q", "three"],
    ] {
        assert_quiet(args, socket);
    }
    // The takers print what they took: their messages are gone, as for any reader.
    assert_quiet(&["poll", "q"], socket);
    assert_quiet(&["get", "q", "--json"], socket);
}

#[test]
fn a_watch_ends_quietly_at_the_first_message_it_cannot_print() {
    let manager = Manager::start();
    let (stdout, reader) = UnixStream::pair().unwrap();
    drop(reader);
    let mut watch = Command::new(qmgr_path())
        .args(["watch", "w", "--socket"])
        .arg(manager.socket())
        .stdin(Stdio::null())
        .stdout(std::os::fd::OwnedFd::from(stdout))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("watching w"), "{line}");
    manager.cli(&["put", "w", "hello"]).expect_code(0);
    let status = wait_exit(&mut watch, "the watch", SOON);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.is_empty(), "{rest}");
}
