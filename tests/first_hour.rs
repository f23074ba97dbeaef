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
}
