//! A newcomer's first hour with `qmgr`: what the commands say when things are not as expected
//! (no manager running, a start that fails), and that they say it once, clearly, with a hint.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::process::Command;

use support::{Run, qmgr_path};

/// Runs `qmgr ARGS` in `dir` with `env` set, `HOPMQ_SOCKET` cleared unless given.
fn qmgr_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    Command::new(qmgr_path())
        .args(args)
        .current_dir(dir)
        .env_remove("HOPMQ_SOCKET")
        .envs(env.iter().copied())
        .output()
        .unwrap()
        .into()
}

#[test]
fn no_manager_running_says_so_once_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cause = "No such file or directory";
    for (args, env, chosen_by) in [
        (&["status"][..], &[][..], "the default socket"),
        (&["put", "q", "x"], &[][..], "the default socket"),
        (
            &["get", "q", "--socket", "elsewhere.sock"],
            &[][..],
            "--socket",
        ),
        (
            &["browse", "q"],
            &[("HOPMQ_SOCKET", "env.sock")][..],
            "HOPMQ_SOCKET",
        ),
    ] {
        let run = qmgr_in(dir.path(), args, env);
        run.expect_code(1);
        let stderr = &run.stderr;
        assert!(
            stderr.starts_with("error: no manager is running at "),
            "{stderr}"
        );
        assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
        assert!(stderr.contains(chosen_by), "{stderr}");
        for hint in [
            "qmgr run",
            "--socket",
            "HOPMQ_SOCKET",
            "./qmgr-data/qmgr.sock",
        ] {
            assert!(stderr.contains(hint), "no `{hint}` in: {stderr}");
        }
    }
}

#[test]
fn a_refused_start_states_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // An address in use: the cause comes from the OS, through two layers of errors.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let topology = dir.path().join("t.toml");
    std::fs::write(
        &topology,
        format!("[managers.solo]\naddress = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let certs = dir.path().join("certs");
    qmgr_in(
        dir.path(),
        &["certs", "init", "--topology", "t.toml", "--out", "certs"],
        &[],
    )
    .expect_code(0);
    let file = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let run = qmgr_in(
        dir.path(),
        &["run", "--name", "solo", "--topology", "t.toml"],
        &[
            ("QMGR_TLS__CA", &file("ca.pem")),
            ("QMGR_TLS__CERT", &file("solo.pem")),
            ("QMGR_TLS__KEY", &file("solo.key")),
        ],
    );
    run.expect_code(1);
    let error = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap();
    assert_eq!(error.matches("in use").count(), 1, "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
    // A topology file that is not there.
    let run = qmgr_in(dir.path(), &["run", "--topology", "absent.toml"], &[]);
    run.expect_code(1);
    assert_eq!(
        run.stderr.matches("No such file").count(),
        1,
        "{}",
        run.stderr
    );
    // A data directory that cannot be made (no folder can be made in /proc).
    let run = qmgr_in(dir.path(), &["run", "--data-dir", "/proc/no/data"], &[]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("error: cannot create data directory /proc/no/data: /proc/no: "),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("journal I/O"), "{}", run.stderr);
}

/// `qmgr run` with TLS files for `solo` of the topology `t.toml` in `dir`, whose address is
/// `port`, and `extra` flags; waits for it to exit (it is expected to fail).
fn run_solo(dir: &std::path::Path, port: u16, extra: &[&str]) -> Run {
    std::fs::write(
        dir.join("t.toml"),
        format!("[managers.solo]\naddress = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    if !dir.join("certs").exists() {
        qmgr_in(
            dir,
            &["certs", "init", "--topology", "t.toml", "--out", "certs"],
            &[],
        )
        .expect_code(0);
    }
    let file = |name: &str| dir.join("certs").join(name).to_str().unwrap().to_owned();
    let mut args = vec!["run", "--name", "solo", "--topology", "t.toml"];
    args.extend_from_slice(extra);
    qmgr_in(
        dir,
        &args,
        &[
            ("QMGR_TLS__CA", &file("ca.pem")),
            ("QMGR_TLS__CERT", &file("solo.pem")),
            ("QMGR_TLS__KEY", &file("solo.key")),
        ],
    )
}

/// Every file under `dir`, as paths relative to it, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                folders.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_failed_start_leaves_no_socket_and_no_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // A fresh data directory, two levels deep: all of it goes.
    run_solo(dir.path(), port, &["--data-dir", "new/data"]).expect_code(1);
    assert!(!dir.path().join("new").exists(), "{:?}", tree(dir.path()));
    // The default one, with the socket inside.
    run_solo(dir.path(), port, &[]).expect_code(1);
    assert!(
        !dir.path().join("qmgr-data").exists(),
        "{:?}",
        tree(dir.path())
    );
    // A data directory that exists with files of its own: only what the start made goes.
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::write(own.join("notes.txt"), "mine").unwrap();
    let socket = dir.path().join("elsewhere.sock");
    let run = run_solo(
        dir.path(),
        port,
        &["--data-dir", "own", "--socket", socket.to_str().unwrap()],
    );
    run.expect_code(1);
    assert_eq!(tree(&own), ["notes.txt"]);
    assert!(!socket.exists());
    // A metrics port in use fails later, after the socket is bound: the same holds.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_address = metrics.local_addr().unwrap().to_string();
    drop(taken);
    let run = run_solo(
        dir.path(),
        port,
        &["--data-dir", "own", "--metrics", &metrics_address],
    );
    run.expect_code(1);
    assert!(run.stderr.contains("metrics"), "{}", run.stderr);
    assert_eq!(tree(&own), ["notes.txt"]);
}

#[test]
fn a_failed_start_keeps_the_data_that_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A manager that ran once, holding a message.
    let mut manager = support::Manager::builder()
        .data_dir(dir.path().join("data"))
        .start();
    manager.cli(&["put", "kept", "precious"]).expect_code(0);
    manager.terminate();
    let before = tree(&dir.path().join("data"));
    assert!(
        before.iter().any(|f| f.starts_with("journal/")),
        "{before:?}"
    );
    // Its port taken, it cannot start: its data stays as it was.
    let taken = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    run_solo(dir.path(), port, &["--data-dir", "data"]).expect_code(1);
    drop(taken);
    assert_eq!(tree(&dir.path().join("data")), before);
    manager.restart();
    assert_eq!(manager.depth("kept"), Some(1));
}

#[test]
fn put_from_stdin_counts_in_words_and_names_a_bad_line() {
    let manager = support::Manager::start();
    let one = manager.cli_with_stdin(&["put", "lines"], b"only\n");
    one.expect_code(0);
    assert!(
        one.stderr.contains("put 1 message to lines"),
        "{}",
        one.stderr
    );
    let two = manager.cli_with_stdin(&["put", "lines"], b"a\r\nb");
    two.expect_code(0);
    assert!(
        two.stderr.contains("put 2 messages to lines"),
        "{}",
        two.stderr
    );
    let bad = manager.cli_with_stdin(
        &["put", "lines"],
        b"fine\nalso fine\nbad \xff here\nnever\n",
    );
    bad.expect_code(1);
    assert!(
        bad.stderr.contains("stdin line 3 is not valid UTF-8"),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("--file"), "{}", bad.stderr);
    // Lines are put in batches: the one holding the bad line is not.
    assert!(
        bad.stderr
            .contains("0 messages were put before it, none from line 1 on"),
        "{}",
        bad.stderr
    );
    let got = manager.cli(&["get", "lines", "--count", "9", "--timeout", "200ms"]);
    assert_eq!(got.stdout, "only\na\nb\n");
}

/// Runs `command` (a shell command line) with a terminal for its stdin, stdout and stderr,
/// through util-linux's `script`, typing `input`; `None` where `script` is missing.
fn at_a_terminal(command: &str, input: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut script = match Command::new("script")
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("SKIPPED: no `script` command to give a terminal ({error})");
            return None;
        }
    };
    script.stdin.take().unwrap().write_all(input).unwrap();
    let output = script.wait_with_output().unwrap();
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn put_at_a_terminal_says_how_to_end() {
    let manager = support::Manager::start();
    let command = format!(
        "{} put typed --socket {}",
        qmgr_path().display(),
        manager.socket().display()
    );
    // A line, then Ctrl-D (end of input at a terminal).
    let Some(screen) = at_a_terminal(&command, b"hello\n\x04") else {
        return;
    };
    assert!(screen.contains("one per line; end with Ctrl-D"), "{screen}");
    assert!(screen.contains("put 1 message to typed"), "{screen}");
    assert_eq!(manager.depth("typed"), Some(1));
}

#[test]
fn a_relative_data_directory_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Command::new(qmgr_path())
        .args(["run", "--data-dir", "data", "--socket", "s.sock"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("s.sock");
    support::wait_until("the manager listens", support::START_DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
            || run.try_wait().unwrap().is_some()
    });
    let started = run.try_wait().unwrap().is_none();
    let _ = run.kill();
    let output = run.wait_with_output().unwrap();
    assert!(started, "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("data/journal").is_dir());
}
