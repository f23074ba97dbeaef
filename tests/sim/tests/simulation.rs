//! The simulation in CI: a fixed budget of seeds (about five minutes of the 2-core machine's
//! CI run, split so that tests run side by side; `scripts/sim --seeds N` runs more by hand),
//! and the determinism a replay relies on.

use hopmq_sim::{Options, run};

/// Runs `seeds` with `managers` managers and fails with every failing seed's replay command.
fn pass(seeds: std::ops::Range<u64>, managers: usize, steps: u64) {
    pass_with(seeds, (managers, steps), Workload::default());
}

/// What joins queue messages in the workload.
#[derive(Debug, Clone, Copy, Default)]
struct Workload {
    /// Publications and subscriptions.
    pubsub: bool,
    /// Requests and their replies.
    requests: bool,
    /// Puts asking for delivery reports, and the report queues drained.
    reports: bool,
}

const PUBSUB: Workload = Workload {
    pubsub: true,
    requests: false,
    reports: false,
};

const REQUESTS: Workload = Workload {
    pubsub: false,
    requests: true,
    reports: false,
};

const REPORTS: Workload = Workload {
    pubsub: false,
    requests: false,
    reports: true,
};

/// Reports with the rest of the workload: their messages meet publications and requests on
/// the same managers, links and journals.
const EVERYTHING: Workload = Workload {
    pubsub: true,
    requests: true,
    reports: true,
};

/// [`pass`], with `workload` added.
fn pass_with(seeds: std::ops::Range<u64>, (managers, steps): (usize, u64), workload: Workload) {
    let mut failures = Vec::new();
    for seed in seeds {
        let outcome = run(&Options {
            seed,
            managers,
            steps,
            trace: false,
            pubsub: workload.pubsub,
            requests: workload.requests,
            reports: workload.reports,
        });
        if let Some(violation) = outcome.violations.first() {
            failures.push(format!(
                "seed {seed}: {violation}\n    replay: scripts/sim --seed {seed} --managers {managers} --steps {steps}{}{}{}",
                if workload.pubsub { " --pubsub" } else { "" },
                if workload.requests { " --requests" } else { "" },
                if workload.reports { " --reports" } else { "" },
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn three_managers_keep_every_promise() {
    pass(1..401, 3, 3_000);
}

#[test]
fn four_managers_keep_every_promise() {
    pass(1_001..1_401, 4, 3_000);
}

#[test]
fn four_managers_keep_every_promise_over_long_runs() {
    pass(2_001..2_061, 4, 12_000);
}

#[test]
fn six_managers_keep_every_promise() {
    pass(3_001..3_151, 6, 5_000);
}

#[test]
fn publications_and_queues_keep_every_promise() {
    pass_with(5_001..5_151, (3, 3_000), PUBSUB);
}

#[test]
fn publications_and_queues_keep_every_promise_with_four_managers() {
    pass_with(6_001..6_111, (4, 3_000), PUBSUB);
}

#[test]
fn publications_and_queues_keep_every_promise_over_long_runs() {
    pass_with(8_001..8_031, (4, 12_000), PUBSUB);
}

#[test]
fn requests_and_replies_keep_every_promise() {
    pass_with(9_001..9_151, (3, 3_000), REQUESTS);
}

#[test]
fn requests_and_replies_keep_every_promise_with_four_managers() {
    pass_with(9_501..9_601, (4, 3_000), REQUESTS);
}

#[test]
fn delivery_reports_keep_every_promise() {
    pass_with(10_001..10_026, (3, 3_000), REPORTS);
}

#[test]
fn delivery_reports_keep_every_promise_with_four_managers() {
    pass_with(10_501..10_521, (4, 3_000), REPORTS);
}

#[test]
fn delivery_reports_keep_every_promise_beside_publications_and_requests() {
    pass_with(11_001..11_016, (4, 3_000), EVERYTHING);
}

#[test]
fn a_seed_replays_exactly_and_seeds_differ() {
    let options = |seed| Options {
        seed,
        managers: 4,
        steps: 2_000,
        trace: false,
        pubsub: true,
        requests: true,
        reports: true,
    };
    let first = run(&options(7));
    let again = run(&options(7));
    assert_eq!(
        first.digest, again.digest,
        "the same seed must give the same run"
    );
    assert_eq!(
        (
            first.puts,
            first.delivered,
            first.crashes,
            first.manager_steps
        ),
        (
            again.puts,
            again.delivered,
            again.crashes,
            again.manager_steps
        )
    );
    assert_ne!(first.digest, run(&options(8)).digest);
    assert!(
        first.crashes > 0 && first.delivered > 0,
        "a run that tests something"
    );
}
