//! `qmgr topology ...`: check a file, print routes, draw it, compare two versions, generate
//! random meshes — offline, from files alone — and, against a running manager, draw the
//! network with its live link states (`dot --live`) or show what an edit would change before
//! it is made (`plan`).

use crate::{out, outln};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hopmq_routing::{Checked, DownLinks, LinkKey, Network, Topology, TopologyDiff, TopologyError};

use hopmq::protocol::{Status, TopologyPlan};

use super::client::Connection;
use crate::generate::{MeshSpec, mesh};

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Validate a topology file: errors (exit code 1) and warnings, with file, line and column.
    Check {
        /// The topology file.
        file: PathBuf,
    },
    /// Print one manager's routes: destination, next hop, cost and path.
    Routes {
        /// The topology file.
        file: PathBuf,
        /// The manager whose routes to compute.
        #[arg(long)]
        from: String,
        /// A link to treat as down, as `A-B`; repeatable.
        #[arg(long, value_name = "A-B")]
        down: Vec<String>,
        /// One JSON array of {destination, next_hop, cost, path} objects.
        #[arg(long)]
        json: bool,
    },
    /// Draw the network in Graphviz's dot language, with link costs.
    Dot {
        /// The topology file (not with --live).
        #[arg(required_unless_present = "live", conflicts_with = "live")]
        file: Option<PathBuf>,
        /// Draw the running manager's network instead: links as it sees them (down ones
        /// dashed red, drained ones dotted orange) and its next hops in blue.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        connection: Connection,
        /// Highlight the route tree from this manager.
        #[arg(long)]
        from: Option<String>,
        /// A link to draw as down (and route around), as `A-B`; repeatable.
        #[arg(long, value_name = "A-B")]
        down: Vec<String>,
    },
    /// Show what applying FILE would change at the running manager: routes that change,
    /// waiting messages that would move, queues that would become unreachable. Applies nothing.
    Plan {
        /// The edited topology file.
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show what changed between two topology files.
    Diff {
        /// The file before.
        old: PathBuf,
        /// The file after.
        new: PathBuf,
    },
    /// Print a random connected mesh (a spanning tree plus random links) for experiments.
    Generate {
        /// How many managers.
        #[arg(long, default_value_t = 50)]
        managers: usize,
        /// How many links (at least managers - 1).
        #[arg(long, default_value_t = 150)]
        links: usize,
        /// The random seed: the same seed gives the same mesh.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The first manager's UDP port on 127.0.0.1; the others follow.
        #[arg(long, default_value_t = 7400)]
        base_port: u16,
        /// Link costs are drawn from 1 to this.
        #[arg(long, default_value_t = 10)]
        cost_max: u32,
    },
}

impl TopologyCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Check { file } => check(&file),
            Self::Routes {
                file,
                from,
                down,
                json,
            } => print_routes(&file, &from, &down, json),
            Self::Dot {
                file,
                live,
                connection,
                from,
                down,
            } => {
                if live {
                    print_live_dot(&connection)
                } else {
                    let file = file.context("a topology file is needed without --live")?;
                    print_dot(&file, from.as_deref(), &down)
                }
            }
            Self::Plan { file, connection } => print_plan(&file, &connection),
            Self::Diff { old, new } => print_diff(&old, &new),
            Self::Generate {
                managers,
                links,
                seed,
                base_port,
                cost_max,
            } => {
                out!(
                    "{}",
                    mesh(MeshSpec {
                        managers,
                        links,
                        seed,
                        base_port,
                        cost_max
                    })?
                )?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// `routes`: one manager's routes from the file, around the links named down.
fn print_routes(file: &Path, from: &str, down: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let topology = load(file)?;
    let down = down_links(&topology, down)?;
    out!("{}", routes(&topology, from, &down, json)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `dot --live`: the running manager's network as it sees it.
fn print_live_dot(connection: &Connection) -> anyhow::Result<ExitCode> {
    let status = Connection::runtime()?.block_on(async {
        connection
            .client()
            .await?
            .status()
            .await
            .map_err(anyhow::Error::from)
    })?;
    out!("{}", live_dot(&status)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `dot FILE`: the file's network, with the route tree from `from` if given.
fn print_dot(file: &Path, from: Option<&str>, down: &[String]) -> anyhow::Result<ExitCode> {
    let topology = load(file)?;
    let down = down_links(&topology, down)?;
    out!("{}", dot(&topology, from, &down)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `plan`: asks the running manager what applying the file would change.
fn print_plan(file: &Path, connection: &Connection) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let plan = Connection::runtime()?.block_on(async {
        connection
            .client()
            .await?
            .plan_topology(&name, &text)
            .await
            .map_err(anyhow::Error::from)
    })?;
    out!("{}", plan_text(&plan))?;
    Ok(ExitCode::SUCCESS)
}

fn print_diff(old: &Path, new: &Path) -> anyhow::Result<ExitCode> {
    let diff = TopologyDiff::between(&load(old)?, &load(new)?);
    if diff.is_empty() {
        outln!("no changes")?;
    } else {
        out!("{diff}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every finding with its source line; exit code 1 when the file is refused.
fn check(file: &Path) -> anyhow::Result<ExitCode> {
    match hopmq_routing::load(file) {
        Ok(Checked { topology, warnings }) => {
            for warning in &warnings {
                eprint!("{}", warning.render());
            }
            outln!(
                "{}: ok: {} managers, {} links, {} queues, {} warnings",
                file.display(),
                topology.managers().len(),
                topology.links().len(),
                topology.queues().len(),
                warnings.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(TopologyError::Invalid { errors }) => {
            for error in &errors {
                eprint!("{}", error.render());
            }
            eprintln!("{}: refused: {} error(s)", file.display(), errors.len());
            Ok(ExitCode::FAILURE)
        }
        Err(other) => Err(other.into()),
    }
}

/// A valid topology, or an error holding every diagnostic.
fn load(file: &Path) -> anyhow::Result<Topology> {
    Ok(hopmq_routing::load(file)?.topology)
}

/// Resolves `A-B` arguments against the topology. Names may contain `-`, so every split is
/// tried and exactly one must name a declared link.
fn down_links(topology: &Topology, args: &[String]) -> anyhow::Result<DownLinks> {
    args.iter().map(|arg| link_named(topology, arg)).collect()
}

fn link_named(topology: &Topology, arg: &str) -> anyhow::Result<LinkKey> {
    let candidates: BTreeSet<LinkKey> = arg
        .match_indices('-')
        .filter_map(|(i, _)| {
            let a = topology.manager(&arg[..i])?;
            let b = topology.manager(&arg[i + 1..])?;
            topology.link(&a.name, &b.name).map(|link| link.key.clone())
        })
        .collect();
    let mut candidates = candidates.into_iter();
    match (candidates.next(), candidates.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => bail!("`{arg}` names no declared link; expected A-B with A and B linked"),
        (Some(a), Some(b)) => bail!("`{arg}` is ambiguous: it could be link {a} or link {b}"),
    }
}

fn routes(topology: &Topology, from: &str, down: &DownLinks, json: bool) -> anyhow::Result<String> {
    let network = Network::new(topology);
    let table = network
        .routes_from(from, down)
        .with_context(|| format!("no manager `{from}` in the topology"))?;
    let rows: Vec<(hopmq_routing::Route, Option<Vec<String>>)> = table
        .routes
        .into_iter()
        .map(|route| {
            let path = network
                .path(from, route.destination.as_str(), down)
                .map(|p| {
                    p.hops
                        .into_iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                });
            (route, path)
        })
        .collect();
    if json {
        let array: Vec<serde_json::Value> = rows
            .iter()
            .map(|(route, path)| {
                serde_json::json!({
                    "destination": route.destination,
                    "next_hop": route.next_hop,
                    "cost": route.cost,
                    "path": path,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&array)? + "\n");
    }
    let mut lines = vec![[
        "destination".to_owned(),
        "next hop".into(),
        "cost".into(),
        "path".into(),
    ]];
    for (route, path) in rows {
        lines.push(match (route.next_hop, route.cost, path) {
            (Some(next_hop), Some(cost), Some(path)) => [
                route.destination.to_string(),
                next_hop.to_string(),
                cost.to_string(),
                path.join(" -> "),
            ],
            _ => [
                route.destination.to_string(),
                "-".into(),
                "-".into(),
                "unreachable".into(),
            ],
        });
    }
    Ok(table_text(&lines))
}

/// Left-aligned columns, two spaces apart.
fn table_text(rows: &[[String; 4]]) -> String {
    let mut widths = [0; 4];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// A plan, for people: each section only when it has something to say.
fn plan_text(plan: &TopologyPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan for topology version {}", plan.version);
    if plan.changes.is_empty() {
        out.push_str("no changes\n");
        return out;
    }
    for change in &plan.changes {
        let _ = writeln!(out, "{change}");
    }
    let hop = |h: &Option<String>| h.clone().unwrap_or_else(|| "(unreachable)".into());
    let cost = |c: &Option<u64>| c.map_or("-".to_owned(), |c| c.to_string());
    if plan.routes.is_empty() {
        out.push_str("routes: unchanged\n");
    } else {
        out.push_str("routes that change:\n");
        for r in &plan.routes {
            let _ = writeln!(
                out,
                "  {}: via {} (cost {}) -> via {} (cost {})",
                r.destination,
                hop(&r.old_next_hop),
                cost(&r.old_cost),
                hop(&r.new_next_hop),
                cost(&r.new_cost)
            );
        }
    }
    if plan.moves.is_empty() {
        out.push_str("waiting messages: none would move\n");
    } else {
        out.push_str("waiting messages that would move:\n");
        for m in &plan.moves {
            let _ = writeln!(out, "  {} {} -> {}", m.messages, m.from, m.to);
        }
    }
    if plan.not_examined > 0 {
        let _ = writeln!(
            out,
            "  ({} more waiting messages not examined)",
            plan.not_examined
        );
    }
    for s in &plan.stranded {
        let _ = writeln!(
            out,
            "{} messages in flight to {} would be sent again along the new routes \
             (copies it returns with are dropped at their destination)",
            s.messages, s.neighbour
        );
    }
    if !plan.unreachable.is_empty() {
        out.push_str("queues that would become unreachable:\n");
        for q in &plan.unreachable {
            let _ = writeln!(out, "  {} (home {}): {}", q.queue, q.home, q.reason);
        }
    }
    out
}

/// The running manager's view of the network in dot: its links' live states and its next
/// hops.
fn live_dot(status: &Status) -> anyhow::Result<String> {
    let next_hops: BTreeSet<&str> = status
        .routes
        .iter()
        .filter_map(|r| r.next_hop.as_deref())
        .collect();
    let mut out = String::from("graph live {\n  node [shape=box, fontname=\"sans-serif\"];\n");
    for manager in &status.topology.managers {
        let style = if *manager == status.manager {
            ", style=filled, fillcolor=lightblue"
        } else {
            ""
        };
        writeln!(out, "  \"{manager}\" [label=\"{manager}\"{style}];")?;
    }
    for link in &status.network {
        let (a, b) = (&link.between.0, &link.between.1);
        let used = (*a == status.manager && next_hops.contains(b.as_str()))
            || (*b == status.manager && next_hops.contains(a.as_str()));
        let style = match link.state.as_str() {
            "down" => ", style=dashed, color=red".to_owned(),
            "drained" => ", style=dotted, color=orange".to_owned(),
            _ if used => ", color=blue, penwidth=2.5".to_owned(),
            _ => String::new(),
        };
        let note = if link.reported_by.is_empty() {
            String::new()
        } else {
            format!(" {} by {}", link.state, link.reported_by.join(","))
        };
        writeln!(
            out,
            "  \"{a}\" -- \"{b}\" [label=\"{}{note}\"{style}];",
            link.cost
        )?;
    }
    out.push_str("}\n");
    Ok(out)
}

fn dot(topology: &Topology, from: Option<&str>, down: &DownLinks) -> anyhow::Result<String> {
    let network = Network::new(topology);
    // Edges of the route tree: each reachable destination's last hop from `from`.
    let mut tree: BTreeSet<LinkKey> = BTreeSet::new();
    if let Some(from) = from {
        let table = network
            .routes_from(from, down)
            .with_context(|| format!("no manager `{from}` in the topology"))?;
        for route in &table.routes {
            if let Some(path) = network.path(from, route.destination.as_str(), down) {
                tree.extend(
                    path.hops
                        .windows(2)
                        .filter_map(|w| LinkKey::new(w[0].clone(), w[1].clone())),
                );
            }
        }
    }
    let mut out = String::from("graph topology {\n  node [shape=box, fontname=\"sans-serif\"];\n");
    for manager in topology.managers() {
        let address = manager
            .address
            .as_ref()
            .map_or(String::new(), ToString::to_string);
        let style = if Some(manager.name.as_str()) == from {
            ", style=filled, fillcolor=lightblue"
        } else {
            ""
        };
        writeln!(
            out,
            "  \"{0}\" [label=\"{0}\\n{address}\"{style}];",
            manager.name
        )?;
    }
    for link in topology.links() {
        let (a, b) = link.key.ends();
        let style = if down.contains(&link.key) {
            ", style=dashed, color=red"
        } else if tree.contains(&link.key) {
            ", color=blue, penwidth=2.5"
        } else {
            ""
        };
        writeln!(
            out,
            "  \"{a}\" -- \"{b}\" [label=\"{}\"{style}];",
            link.cost
        )?;
    }
    out.push_str("}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(text: &str) -> Topology {
        hopmq_routing::parse(text, "t.toml").unwrap().topology
    }

    const HYPHENS: &str = r#"
        [managers.a]
        address = "127.0.0.1:1"
        [managers.a-b]
        address = "127.0.0.1:2"
        [managers.b]
        address = "127.0.0.1:3"
        [managers.b-c]
        address = "127.0.0.1:4"
        [managers.c]
        address = "127.0.0.1:5"
        [[links]]
        between = ["a", "b-c"]
        [[links]]
        between = ["a-b", "c"]
        [[links]]
        between = ["a", "b"]
    "#;

    #[test]
    fn link_names_with_hyphens_resolve_or_say_they_are_ambiguous() {
        let t = topology(HYPHENS);
        assert_eq!(link_named(&t, "a-b").unwrap().to_string(), "a-b");
        assert_eq!(link_named(&t, "b-a").unwrap().to_string(), "a-b");
        let err = link_named(&t, "a-b-c").unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
        assert!(
            link_named(&t, "b-c")
                .unwrap_err()
                .to_string()
                .contains("no declared link")
        );
    }
}
