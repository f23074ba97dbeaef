//! `qmgr status`: the manager's queues, depths, store, links and routes, for people (a
//! summary, then a table each) or as one JSON object.

use std::process::ExitCode;
use std::time::Duration;

use hopmq::protocol::{QueueStatus, RouteStatus, Status};

use super::client::Connection;
use super::output::OutputError;
use super::units;
use crate::outln;

/// Show the manager's queues, depths, store, links and routes.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The status as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl StatusArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let status = self.connection.client().await?.status().await?;
            if self.json {
                outln!("{}", serde_json::to_string_pretty(&status)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_status(&status)?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// The human-readable status: a summary, then a table each of queues, links and routes.
fn print_status(status: &Status) -> Result<(), OutputError> {
    print_summary(status)?;
    print_queues(&status.queues)?;
    print_links(status)?;
    print_routes(&status.routes)
}

/// The manager, its counters, its topology and its store.
fn print_summary(status: &Status) -> Result<(), OutputError> {
    outln!(
        "manager {} (hopmq {}), up {}",
        status.manager,
        status.version,
        units::duration(Duration::from_secs(status.uptime_secs))
    )?;
    outln!(
        "messages put {}, delivered {}; gets waiting {}",
        status.messages_put,
        status.messages_delivered,
        status.gets_waiting
    )?;
    if status.messages_resent > 0 || status.duplicates_dropped > 0 {
        outln!(
            "custody: resent {} around failures, second copies dropped {}",
            status.messages_resent,
            status.duplicates_dropped
        )?;
    }
    for kept in status.custody.iter().filter(|kept| kept.messages > 0) {
        outln!(
            "custody: {} kept until {} confirms (oldest {}), {} sent again",
            units::count(kept.messages, "message", "messages"),
            kept.destination,
            units::duration(Duration::from_millis(kept.oldest_ms.unwrap_or(0))),
            kept.resent
        )?;
    }
    for held in &status.held_for_order {
        outln!(
            "order: {} from {} held for an earlier one (oldest {})",
            units::count(held.messages, "message", "messages"),
            held.origin,
            units::duration(Duration::from_millis(held.oldest_ms)),
        )?;
    }
    if status.publications_dropped > 0 {
        outln!(
            "non-persistent publications dropped: {}",
            status.publications_dropped
        )?;
    }
    if status.messages_unordered > 0 {
        outln!(
            "order: {} went on without an earlier one at the custody timeout",
            units::count(status.messages_unordered, "message", "messages"),
        )?;
    }
    let topology = &status.topology;
    if let Some(file) = &topology.file {
        outln!(
            "topology {file}, version {} ({} managers)",
            topology.version,
            topology.managers.len()
        )?;
    }
    if let Some(refused) = &topology.refused {
        outln!(
            "refused edit, version {}: {}",
            refused.version,
            refused.error
        )?;
    }
    let store = &status.store;
    outln!(
        "store: {}, {}, {} commits of {} records, last batch {} records, sync {}",
        units::count(store.segments, "segment", "segments"),
        units::bytes(store.bytes),
        store.commits,
        store.records,
        store.last_batch_records,
        store.sync
    )?;
    Ok(())
}

fn print_queues(queues: &[QueueStatus]) -> Result<(), OutputError> {
    outln!(
        "{:<32} {:>10} {:>8} {:>12} {:>12}",
        "queue",
        "depth",
        "leased",
        "bytes",
        "oldest"
    )?;
    for q in queues {
        let oldest = q.oldest_age_ms.map_or("-".to_owned(), units::duration_cell);
        outln!(
            "{:<32} {:>10} {:>8} {:>12} {:>12}",
            q.name,
            q.depth,
            q.leased,
            units::bytes_cell(q.bytes),
            oldest
        )?;
    }
    Ok(())
}

/// The links table (under the forwarding counters), with a link's last error under it while
/// it is not up; nothing for a manager without links.
fn print_links(status: &Status) -> Result<(), OutputError> {
    if !status.links.is_empty() {
        outln!(
            "forwarded {}, expired in transit {}",
            status.messages_forwarded,
            status.messages_expired
        )?;
        outln!(
            "{:<20} {:<12} {:<8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            "link",
            "state",
            "routing",
            "inbound",
            "rtt",
            "waiting",
            "oldest",
            "sent",
            "acked",
            "received"
        )?;
    }
    for link in &status.links {
        let rtt = link
            .rtt_us
            .map_or("-".to_owned(), |us| format!("{:.2}ms", us as f64 / 1000.0));
        let oldest = link
            .transmission_oldest_age_ms
            .map_or("-".to_owned(), units::duration_cell);
        outln!(
            "{:<20} {:<12} {:<8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            link.neighbour,
            link.state,
            link.routing,
            if link.inbound { "up" } else { "down" },
            rtt,
            link.transmission_depth,
            oldest,
            link.messages_sent,
            link.messages_acked,
            link.messages_received,
        )?;
        if link.state != "up" {
            if let Some(error) = &link.last_error {
                outln!("{:<20} last error: {error}", "")?;
            }
        }
    }
    Ok(())
}

fn print_routes(routes: &[RouteStatus]) -> Result<(), OutputError> {
    if !routes.is_empty() {
        outln!("{:<20} {:<20} {:>6}", "route to", "next hop", "cost")?;
    }
    for route in routes {
        outln!(
            "{:<20} {:<20} {:>6}",
            route.destination,
            route.next_hop.as_deref().unwrap_or("(unreachable)"),
            route.cost.map_or("-".to_owned(), |c| c.to_string()),
        )?;
    }
    Ok(())
}
