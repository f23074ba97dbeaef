//! The commands that look at and steer a running manager's routing: `qmgr routes`,
//! `qmgr link up|down NAME` and `qmgr reload`. Thin uses of the `hopmq` client.

use crate::{out, outln};
use std::process::ExitCode;

use clap::Subcommand;
use hopmq::protocol::Status;

use super::client::Connection;

/// Print the live route table and the state of every link as this manager sees it.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// One JSON object: {manager, routes, links, network}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl RoutesArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let status = self.connection.client().await?.status().await?;
            if self.json {
                let value = serde_json::json!({
                    "manager": status.manager,
                    "topology_version": status.topology.version,
                    "routes": status.routes,
                    "links": status.links.iter().map(|l| serde_json::json!({
                        "neighbour": l.neighbour,
                        "routing": l.routing,
                        "channel": l.state,
                        "heard_ms_ago": l.heard_ms_ago,
                    })).collect::<Vec<_>>(),
                    "network": status.network,
                });
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                out!("{}", routes_text(&status))?;
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

fn routes_text(status: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "routes at {} (topology version {})",
        status.manager, status.topology.version
    );
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:>6}",
        "destination", "next hop", "cost"
    );
    for route in &status.routes {
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:>6}",
            route.destination,
            route.next_hop.as_deref().unwrap_or("(unreachable)"),
            route.cost.map_or("-".to_owned(), |c| c.to_string()),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<30} {:>6} {:<8} reported by",
        "link", "cost", "state"
    );
    for link in &status.network {
        let line = format!(
            "{:<30} {:>6} {:<8} {}",
            format!("{}-{}", link.between.0, link.between.1),
            link.cost,
            link.state,
            link.reported_by.join(", "),
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if !status.links.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:<8} {:<12} {:>10}",
            "neighbour", "routing", "channel", "heard"
        );
    }
    for link in &status.links {
        let heard = link.heard_ms_ago.map_or("never".to_owned(), |ms| {
            format!("{:.1}s ago", ms as f64 / 1000.0)
        });
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<12} {:>10}",
            link.neighbour, link.routing, link.state, heard
        );
    }
    out
}

/// Take a link out of service or return it.
#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Drain the link to NAME: routes avoid it and what waits for it is re-routed; messages
    /// already in flight on it finish. It stays drained across restarts.
    Down {
        /// The neighbour.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Return the link to NAME to service.
    Up {
        /// The neighbour.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

impl LinkCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (name, connection, drained) = match self {
            Self::Down { name, connection } => (name, connection, true),
            Self::Up { name, connection } => (name, connection, false),
        };
        Connection::runtime()?.block_on(async {
            connection.client().await?.set_link(&name, drained).await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Make the manager read its topology file again now (as on SIGHUP or a file change).
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    connection: Connection,
}

impl ReloadArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let outcome = self.connection.client().await?.reload().await?;
            if outcome.changes.is_empty() {
                outln!("topology version {}: no changes", outcome.version)?;
            } else {
                outln!(
                    "topology version {} applied; {} waiting messages moved",
                    outcome.version,
                    outcome.moved
                )?;
                for change in &outcome.changes {
                    outln!("{change}")?;
                }
                for s in &outcome.stranded {
                    outln!(
                        "{} messages in flight to {} sent again along the new routes \
                         (copies it returns with are dropped at their destination)",
                        s.messages,
                        s.neighbour
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}
