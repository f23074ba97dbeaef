//! `qmgr bench ...`: benchmarks that print figures for BENCHMARKS.md. Timing lives here and
//! never in tests.
//!
//! Every bench that moves messages checks them before its figures count ([`verify`]): each
//! message carries its producer and sequence number, and a run that lost, duplicated or
//! reordered any says so and exits with 1.

mod cluster;
pub(crate) mod failover;
pub(crate) mod flooding;
pub(crate) mod forward;
mod impair;
pub(crate) mod local;
pub(crate) mod pubsub;
pub(crate) mod request;
pub(crate) mod routes;
mod traffic;
pub(crate) mod transport;
mod verify;
mod viewer;
pub(crate) mod wan;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Route computation: one manager's table on a large mesh, and all-pairs tables.
    Routes(routes::RoutesBench),
    /// Put→get throughput and latency through one manager's local API.
    Local(local::LocalBench),
    /// Put→get throughput and latency of persistent messages across a line of managers.
    Forward(forward::ForwardBench),
    /// Link-state flooding on a random mesh, simulated: convergence time after link failures
    /// and repairs, advertisements sent, and the CPU cost of receiving and rerouting.
    Flooding(flooding::FloodingBench),
    /// The QUIC transport alone along a line of endpoints configured as managers' are: the
    /// floor under `forward` (no journal, no channel protocol, no API).
    Transport(transport::TransportBench),
    /// Failover around a relay killed with SIGKILL on a diamond of managers: time to reroute,
    /// the gap in arrivals, messages stranded until the relay returns, lost and duplicated.
    Failover(failover::FailoverBench),
    /// Publish→deliver throughput and latency on a diamond: one publisher, four durable (or
    /// transient) subscriptions on three managers, one copy per link.
    Pubsub(pubsub::PubsubBench),
    /// Request/reply round trips along a line of managers: throughput with requests
    /// outstanding, and latency paced.
    Request(request::RequestBench),
    /// Put→get throughput and paced latency across one link through an impairment proxy
    /// (delay, jitter, loss, reordering, a bandwidth cap), for a grid of round trips and losses.
    Wan(wan::WanBench),
}

impl BenchCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Routes(bench) => bench.run(),
            Self::Local(bench) => bench.run(),
            Self::Forward(bench) => bench.run(),
            Self::Flooding(bench) => bench.run(),
            Self::Failover(bench) => bench.run(),
            Self::Transport(bench) => bench.run(),
            Self::Pubsub(bench) => bench.run(),
            Self::Request(bench) => bench.run(),
            Self::Wan(bench) => bench.run(),
        }
    }
}

/// Median, 99th percentile and maximum of `samples` (sorted in place), in microseconds.
pub(crate) fn summary(samples: &mut [std::time::Duration]) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    format!(
        "median {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
