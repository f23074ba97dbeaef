//! What a newcomer installs and reads besides the binary: shell completions and manual pages
//! made from the command line's own definitions, the licence the manifests name, text output
//! for people (sizes and durations in units), and no colour codes where none are wanted
//! (`NO_COLOR`, or not a terminal).

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{Manager, qmgr, qmgr_path, repo_root};

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let run = qmgr(&["completions", shell]);
        run.expect_code(0);
        for word in ["qmgr", "topology", "browse", "completions", "socket"] {
            assert!(run.stdout.contains(word), "{shell} lacks {word}");
        }
    }
    qmgr(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn manual_pages_are_made_from_the_command_line() {
    let run = qmgr(&["man"]);
    run.expect_code(0);
    assert!(run.stdout.contains(".TH qmgr 1"), "{}", run.stdout);
    assert!(run.stdout.contains("qmgr\\-run(1)"), "{}", run.stdout);
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    qmgr(&["man", "--dir", pages.to_str().unwrap()]).expect_code(0);
    for page in [
        "qmgr.1",
        "qmgr-run.1",
        "qmgr-topology-check.1",
        "qmgr-completions.1",
    ] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap();
        assert!(text.contains(".SH SYNOPSIS"), "{page}");
    }
}

#[test]
fn the_licence_file_is_the_one_the_manifest_names() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    let license = manifest["workspace"]["package"]["license"]
        .as_str()
        .unwrap();
    assert_eq!(license, "Apache-2.0");
    let text = std::fs::read_to_string(repo_root().join("LICENSE")).unwrap();
    assert!(text.contains("Apache License"), "LICENSE is not Apache's");
    assert!(text.contains("Version 2.0, January 2004"));
    assert!(text.contains("END OF TERMS AND CONDITIONS"));
}

#[test]
fn status_shows_sizes_and_durations_in_units() {
    let manager = Manager::start();
    let run = manager.cli(&["status"]);
    run.expect_code(0);
    let first = run.stdout.lines().next().unwrap();
    assert!(first.contains(", up "), "{first}");
    let store = run
        .stdout
        .lines()
        .find(|l| l.starts_with("store: "))
        .unwrap();
    // One 32 MiB segment by default, not "1 segments, 33554432 bytes".
    assert!(store.starts_with("store: 1 segment, 32.0 MiB, "), "{store}");
}

/// What `command` (a shell command line) writes at a terminal, through util-linux's
/// `script`; `None` where `script` is missing.
fn at_a_terminal(command: &str) -> Option<String> {
    let child = Command::new("script")
        .args(["-q", "-e", "-c", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            eprintln!("SKIPPED: no `script` command to give a terminal ({error})");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let output = child.wait_with_output().unwrap();
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn no_color_turns_the_logs_colours_off_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A start that logs a little, then fails: its metrics port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let start = |env: &str| {
        format!(
            "cd {} && {env} {} run --data-dir data --metrics {}",
            dir.path().display(),
            qmgr_path().display(),
            taken.local_addr().unwrap()
        )
    };
    let Some(coloured) = at_a_terminal(&start("")) else {
        return;
    };
    assert!(coloured.contains("journal recovered"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal gets colours: {coloured}"
    );
    let plain = at_a_terminal(&start("NO_COLOR=1")).unwrap();
    assert!(plain.contains("journal recovered"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR, yet: {plain:?}");
    // Not a terminal: no colour whatever the environment says.
    let output = Command::new(qmgr_path())
        .args(["run", "--data-dir", "data", "--metrics"])
        .arg(taken.local_addr().unwrap().to_string())
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("journal recovered"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
