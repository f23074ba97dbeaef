//! `hopmq-sim`: runs simulations (see the library) and prints one line per seed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use hopmq_sim::{Options, run};

/// Deterministic simulations of whole hopmq networks.
#[derive(Debug, Parser)]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from `--first`.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Managers per network.
    #[arg(long, default_value_t = 4)]
    managers: usize,
    /// Steps of workload and faults per run.
    #[arg(long, default_value_t = 3_000)]
    steps: u64,
    /// Break the core on purpose (ack-before-durable, skip-dedup, unrecorded-lease,
    /// skip-custody-dedup, skip-confirmations, skip-resequencing, reports-ahead,
    /// reports-behind, skip-publication-custody, skip-publication-resequencing): the checker
    /// must catch it (except skip-dedup, which custody masks; the reports ones with
    /// `--reports` only, the publication ones with `--pubsub` only).
    #[arg(long)]
    mutation: Option<String>,
    /// Print each run's event trace.
    #[arg(long)]
    trace: bool,
    /// Durable subscriptions and publications in the workload, and their promises checked.
    #[arg(long)]
    pubsub: bool,
    /// Requesters and servers of a service queue in the workload, and request/reply's
    /// promises checked.
    #[arg(long)]
    requests: bool,
    /// Puts asking for delivery reports in the workload, clients draining the report queues,
    /// and reports' promises checked.
    #[arg(long)]
    reports: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.trace {
        // The cores' own logs, interleaved with the trace, each under its manager's span.
        tracing_subscriber::fmt()
            .without_time()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug")),
            )
            .init();
    }
    if let Some(name) = &args.mutation {
        if let Err(error) = choose_mutation(name) {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first..args.first + args.seeds).collect(),
    };
    let started = Instant::now();
    let (mut failed, mut manager_steps) = (0u64, 0u64);
    for &seed in &seeds {
        let options = Options {
            seed,
            managers: args.managers,
            steps: args.steps,
            trace: args.trace,
            pubsub: args.pubsub,
            requests: args.requests,
            reports: args.reports,
        };
        let outcome = run(&options);
        manager_steps += outcome.manager_steps;
        let verdict = match outcome.violations.first() {
            None => "ok".to_owned(),
            Some(first) => {
                failed += 1;
                format!("FAIL {first}")
            }
        };
        println!(
            "seed {seed}: {verdict} (puts {}, delivered {}, published {}, publications delivered {}, requests {}, replies {}, reports {}, dead letters {}, crashes {}, {} manager steps, {:.1} simulated s) digest {:016x}",
            outcome.puts,
            outcome.delivered,
            outcome.published,
            outcome.publications_delivered,
            outcome.requests,
            outcome.replies,
            outcome.reports,
            outcome.dead_lettered,
            outcome.crashes,
            outcome.manager_steps,
            outcome.simulated_ms as f64 / 1000.0,
            outcome.digest,
        );
        if !outcome.violations.is_empty() {
            for violation in outcome.violations.iter().skip(1).take(4) {
                println!("    also: {violation}");
            }
            println!("    replay: {}", replay(&args, seed));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} seed(s), {failed} failed, in {elapsed:.1} s: {:.0} manager steps/s, {:.1} seeds/min",
        seeds.len(),
        manager_steps as f64 / elapsed.max(1e-9),
        seeds.len() as f64 * 60.0 / elapsed.max(1e-9),
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The command that runs `seed` again as `args` ran it.
fn replay(args: &Args, seed: u64) -> String {
    let mutation = args
        .mutation
        .as_ref()
        .map_or(String::new(), |m| format!(" --mutation {m}"));
    let pubsub = if args.pubsub { " --pubsub" } else { "" };
    let requests = if args.requests { " --requests" } else { "" };
    let reports = if args.reports { " --reports" } else { "" };
    format!(
        "scripts/sim --seed {seed} --managers {} --steps {}{pubsub}{requests}{reports}{mutation}",
        args.managers, args.steps
    )
}

#[cfg(feature = "mutations")]
fn choose_mutation(name: &str) -> Result<(), String> {
    let mutation = qmgr::mutation::Mutation::named(name).ok_or_else(|| {
        let names: Vec<&str> = qmgr::mutation::Mutation::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect();
        format!("no mutation `{name}`; there are {}", names.join(", "))
    })?;
    qmgr::mutation::set(Some(mutation));
    Ok(())
}

#[cfg(not(feature = "mutations"))]
fn choose_mutation(_: &str) -> Result<(), String> {
    Err("mutations are compiled in only with `--features mutations` (scripts/sim does that)".into())
}
