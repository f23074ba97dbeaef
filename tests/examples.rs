//! The `hopmq` crate's examples (`api/examples/`) run against a real manager and do what they
//! say: a README's examples that stop working fail here, not in a user's hands.
//!
//! The examples are the ones cargo built for this test run (`cargo test` and `cargo nextest`
//! of the workspace build every example) when they are newer than the crate's sources. A run
//! that did not build them (`-p qmgr`, or `cargo test --tests`) builds them with
//! `cargo build -p hopmq --examples` into a target folder of their own: the run's own may be
//! locked by the cargo that runs this test.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use support::{Manager, Run, repo_root};

const EXAMPLES: [&str; 5] = [
    "put_get",
    "worker_pool",
    "notify",
    "blocking",
    "request_reply",
];

/// This run's target profile folder (`target/debug`): the test runs from its `deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// When `path` or anything under it last changed.
fn newest(path: &Path) -> SystemTime {
    let metadata = fs::metadata(path).unwrap();
    if !metadata.is_dir() {
        return metadata.modified().unwrap();
    }
    fs::read_dir(path)
        .unwrap()
        .map(|entry| newest(&entry.unwrap().path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whether every example in `dir` is newer than the crate's sources.
fn fresh(dir: &Path) -> bool {
    let api = repo_root().join("api");
    let sources = newest(&api.join("src"))
        .max(newest(&api.join("examples")))
        .max(newest(&api.join("Cargo.toml")));
    EXAMPLES.iter().all(|name| {
        fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|built| built > sources)
    })
}

/// The folder of the examples to run, built first if this run did not build them.
fn examples_dir() -> PathBuf {
    let built = profile_dir().join("examples");
    if fresh(&built) {
        return built;
    }
    let target = profile_dir().parent().unwrap().join("hopmq-examples");
    eprintln!(
        "building the hopmq examples into {} (this run did not build them)",
        target.display()
    );
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "hopmq", "--examples", "--target-dir"])
        .arg(&target)
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p hopmq --examples failed");
    target.join("debug").join("examples")
}

fn run_example(examples: &Path, manager: &Manager, name: &str, args: &[&str]) -> Run {
    let run: Run = Command::new(examples.join(name))
        .args(args)
        .env("HOPMQ_SOCKET", manager.socket())
        .output()
        .unwrap()
        .into();
    run.expect_code(0);
    run
}

#[test]
fn every_example_runs_against_a_real_manager() {
    let examples = examples_dir();
    let manager = Manager::builder().plain_disk().start();

    let run = run_example(&examples, &manager, "put_get", &[]);
    assert!(run.stdout.contains("put "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(": hello, hopmq (headers {\"greeting\": \"yes\"})"),
        "{}",
        run.stdout
    );

    let run = run_example(&examples, &manager, "worker_pool", &["12", "3"]);
    assert!(run.stdout.contains("12 of 12 jobs done"), "{}", run.stdout);
    // Jobs 0, 5 and 10 were nacked once, then done on their second delivery.
    for job in [0, 5, 10] {
        assert!(
            run.stdout.contains(&format!("job {job}, delivery 1: nack")),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!("job {job}, delivery 2: done")),
            "{}",
            run.stdout
        );
    }

    let run = run_example(&examples, &manager, "request_reply", &["4"]);
    let replies: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        replies,
        [
            "reply: item 0 costs 106",
            "reply: item 1 costs 106",
            "reply: item 2 costs 106",
            "reply: item 3 costs 106"
        ],
        "{}",
        run.stdout
    );

    let run = run_example(&examples, &manager, "notify", &["3"]);
    for n in 0..3 {
        assert!(
            run.stdout.contains(&format!("notified: event {n}")),
            "{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("3 messages were still in"),
        "{}",
        run.stdout
    );

    let run = run_example(
        &examples,
        &manager,
        "blocking",
        &["put", "script", "one", "two"],
    );
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let run = run_example(&examples, &manager, "blocking", &["get", "script", "1"]);
    assert_eq!(run.stdout, "one\ntwo\n");
    let bad: Run = Command::new(examples.join("blocking"))
        .env("HOPMQ_SOCKET", manager.socket())
        .output()
        .unwrap()
        .into();
    bad.expect_code(1);
    assert!(bad.stderr.starts_with("error: usage:"), "{}", bad.stderr);
}
