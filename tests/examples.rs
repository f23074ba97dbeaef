//! The `hopmq` crate's examples (`api/examples/`) run against a real manager and do what they
//! say: a README's examples that stop working fail here, not in a user's hands.
//!
//! The examples are the ones cargo built for this test run (`cargo test` and `cargo nextest`
//! of the workspace build every example); a run that selected only this package builds them
//! first with `cargo build -p hopmq --examples`.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use support::{Manager, Run, repo_root};

const EXAMPLES: [&str; 4] = ["put_get", "worker_pool", "notify", "blocking"];

/// The folder cargo puts examples in: beside this test's `deps` folder.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// Whether the built example `name` is missing or older than its source.
fn stale(name: &str) -> bool {
    let modified = |path: PathBuf| fs::metadata(path).and_then(|m| m.modified()).ok();
    let built = modified(examples_dir().join(name));
    let source = modified(repo_root().join("api/examples").join(format!("{name}.rs")));
    match (built, source) {
        (Some(built), Some(source)) => built < source,
        _ => true,
    }
}

/// The path of an example, built first if this run did not build it from its current source.
fn example(name: &str) -> PathBuf {
    let path = examples_dir().join(name);
    if EXAMPLES.iter().any(|name| stale(name)) {
        eprintln!("building the hopmq examples (this run did not)");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "hopmq", "--examples"])
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p hopmq --examples failed");
    }
    path
}

fn run_example(manager: &Manager, name: &str, args: &[&str]) -> Run {
    let run: Run = Command::new(example(name))
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
    let manager = Manager::builder().plain_disk().start();

    let run = run_example(&manager, "put_get", &[]);
    assert!(run.stdout.contains("put "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(": hello, hopmq (headers {\"greeting\": \"yes\"})"),
        "{}",
        run.stdout
    );

    let run = run_example(&manager, "worker_pool", &["12", "3"]);
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

    let run = run_example(&manager, "notify", &["3"]);
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

    let run = run_example(&manager, "blocking", &["put", "script", "one", "two"]);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let run = run_example(&manager, "blocking", &["get", "script", "1"]);
    assert_eq!(run.stdout, "one\ntwo\n");
    let bad: Run = Command::new(example("blocking"))
        .env("HOPMQ_SOCKET", manager.socket())
        .output()
        .unwrap()
        .into();
    bad.expect_code(1);
    assert!(bad.stderr.starts_with("error: usage:"), "{}", bad.stderr);
}
