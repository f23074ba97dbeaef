//! A checker that cannot fail proves nothing: each deliberately broken core must be caught
//! within 100 seeds, except those a second mechanism masks, which must not be (the channel's
//! dedup switched off, custody's end-to-end dedup still delivers each message once). Only with
//! `--features mutations` (scripts/test runs it so); the mutation is process-wide, so this file
//! holds a single test.
#![cfg(feature = "mutations")]

use hopmq_sim::{Options, run};
use qmgr::mutation::{self, Mutation};

#[test]
fn every_mutation_is_caught_within_100_seeds() {
    for (name, broken) in Mutation::ALL {
        mutation::set(Some(broken));
        let caught = (1..=100).find_map(|seed| {
            let outcome = run(&Options {
                seed,
                managers: 4,
                steps: 2_000,
                trace: false,
                pubsub: Mutation::PUBSUB.contains(&broken),
                requests: false,
                // Reports' own mutations break only reports.
                reports: Mutation::REPORTS.contains(&broken),
            });
            outcome.violations.first().map(|v| (seed, v.clone()))
        });
        mutation::set(None);
        if Mutation::MASKED.contains(&broken) {
            assert_eq!(caught, None, "mutation {name} should be masked");
            println!("{name}: masked in 100 seeds");
            continue;
        }
        let (seed, violation) = caught.unwrap_or_else(|| panic!("mutation {name} was not caught"));
        println!("{name}: caught at seed {seed}: {violation}");
    }
}
