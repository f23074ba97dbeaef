//! `qmgr bench flooding`: how fast link-state flooding converges on a random mesh, and what its
//! steps cost in CPU.
//!
//! **A simulation, not a network.** One `LinkStateDb` per manager of a generated mesh
//! ([`qmgr::generate::mesh`]), no sockets, no daemons. Every advertisement takes exactly
//! `--hop-delay-us` of simulated time per hop (an event queue ordered by arrival time, so each
//! link is FIFO); the CPU time of processing is not added to the simulated clock. Both ends of
//! a link detect its failure or repair at the same instant, and what was in flight on a failed
//! link is lost. Flooding follows the rules the daemon applies: a changed own advertisement
//! goes to every live neighbour, a new one received goes on to every live neighbour but the
//! sender, and a link that comes up carries everything both ends know.
//!
//! For each of `--failures` random links: fail it, run until quiet, then repair it and run until
//! quiet. Convergence time is the simulated time from detection until every manager's routes,
//! computed from its own database, equal the routes over the true down-links for the last
//! time. The CPU figures are real: wall-clock time of each `receive`, each `down_links` and each
//! `routes_from` the simulation performs on this mesh.

use qmgr::outln;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hopmq_routing::{
    DownLinks, LinkKey, LinkStateDb, Lsa, ManagerName, Network, Received, RouteTable, Topology,
};

use qmgr::generate::{MeshSpec, SplitMix, mesh};

/// The most failures one run simulates: each costs a full flood twice over, and the samples
/// are kept in memory.
const FAILURES_MAX: usize = 100_000;
/// Link costs in the mesh, as in `qmgr bench routes`.
const COST_MAX: u32 = 10;

#[derive(Debug, clap::Args)]
pub(crate) struct FloodingBench {
    /// Managers in the mesh.
    #[arg(long, default_value_t = 50)]
    managers: usize,
    /// Average links per manager: the mesh gets managers × degree / 2 links (at least a
    /// spanning tree, at most every pair).
    #[arg(long, default_value_t = 4)]
    degree: usize,
    /// Mesh seed; also picks the links that fail.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Links failed (and then repaired), one at a time.
    #[arg(long, default_value_t = 20)]
    failures: usize,
    /// Simulated time an advertisement takes over one link, in microseconds.
    #[arg(long, default_value_t = 500)]
    hop_delay_us: u64,
}

impl FloodingBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        ensure!(
            self.managers >= 2,
            "--managers must be at least 2 to have a link"
        );
        ensure!(
            (1..=FAILURES_MAX).contains(&self.failures),
            "--failures must be from 1 to {FAILURES_MAX}"
        );
        let spec = MeshSpec {
            managers: self.managers,
            links: self.managers.saturating_mul(self.degree) / 2,
            seed: self.seed,
            base_port: 10_000,
            cost_max: COST_MAX,
        };
        let topology = hopmq_routing::parse(&mesh(spec)?, "generated")?.topology;
        let mut sim = Simulation::new(topology, self.hop_delay_us)?;
        let mut rng = SplitMix(self.seed ^ 0xF100_D1E5);
        let mut failed = Outcomes::default();
        let mut repaired = Outcomes::default();
        for _ in 0..self.failures {
            let link = rng.below(sim.ends.len());
            failed.push(sim.change(link, false)?);
            repaired.push(sim.change(link, true)?);
        }

        outln!(
            "flooding (simulated, {} µs per hop): {} managers / {} links, seed {}, {} failures then repairs",
            self.hop_delay_us,
            sim.names.len(),
            sim.ends.len(),
            self.seed,
            self.failures
        )?;
        outln!("  failure: {}", failed.report())?;
        outln!("  repair:  {}", repaired.report())?;
        outln!(
            "  cpu: receive {} ({} calls); down_links {}; routes_from {} ({} recomputations)",
            micros(&mut sim.receive_times),
            sim.receive_times.len(),
            micros(&mut sim.down_links_times),
            micros(&mut sim.routes_times),
            sim.routes_times.len()
        )?;
        Ok(ExitCode::SUCCESS)
    }
}

/// What one change cost until the network was quiet again.
struct Outcome {
    converged_us: u64,
    sent: u64,
}

#[derive(Default)]
struct Outcomes {
    converged_us: Vec<u64>,
    sent: Vec<u64>,
}

impl Outcomes {
    fn push(&mut self, outcome: Outcome) {
        self.converged_us.push(outcome.converged_us);
        self.sent.push(outcome.sent);
    }

    fn report(&mut self) -> String {
        self.converged_us.sort_unstable();
        self.sent.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "converged p50 {:.2} ms, max {:.2} ms; LSAs per change p50 {}, max {}",
            ms(median(&self.converged_us)),
            ms(self.converged_us.last().copied().unwrap_or(0)),
            median(&self.sent),
            self.sent.last().copied().unwrap_or(0)
        )
    }
}

fn median(sorted: &[u64]) -> u64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Median and maximum of `samples` (sorted in place), in microseconds with two decimals: a
/// `receive` takes well under one.
fn micros(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let us = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    format!(
        "median {:.2} µs, max {:.2} µs",
        us(samples.get(samples.len() / 2)),
        us(samples.last())
    )
}

/// An advertisement on its way over one link.
struct Delivery {
    at_us: u64,
    /// Sending order: breaks ties between equal arrival times so each link stays FIFO and runs
    /// are reproducible.
    order: u64,
    from: usize,
    to: usize,
    link: usize,
    /// The link's epoch when sent: a delivery from before a failure was lost with the link.
    epoch: u64,
    lsa: Lsa,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Delivery {}

impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delivery {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_us, self.order).cmp(&(other.at_us, other.order))
    }
}

/// The mesh, every manager's database, the truth and the deliveries in flight. Managers are
/// numbered by name rank, which is also their node index in `network`.
struct Simulation {
    topology: Topology,
    network: Network,
    names: Vec<ManagerName>,
    ends: Vec<(usize, usize)>,
    /// Per manager: (neighbour, link).
    adjacent: Vec<Vec<(usize, usize)>>,
    up: Vec<bool>,
    epoch: Vec<u64>,
    dbs: Vec<LinkStateDb>,
    truth: Vec<RouteTable>,
    converged: Vec<bool>,
    unconverged: usize,
    /// When the last manager came to route as the truth does.
    converged_at_us: u64,
    queue: BinaryHeap<Reverse<Delivery>>,
    now_us: u64,
    sent: u64,
    hop_delay_us: u64,
    receive_times: Vec<Duration>,
    down_links_times: Vec<Duration>,
    routes_times: Vec<Duration>,
}

impl Simulation {
    /// Every link up, every database holding every manager's current advertisement.
    fn new(topology: Topology, hop_delay_us: u64) -> anyhow::Result<Self> {
        let network = Network::new(&topology);
        let names: Vec<ManagerName> = network.graph().node_weights().cloned().collect();
        let index = |name: &ManagerName| {
            network
                .node(name.as_str())
                .map(|node| node.index())
                .ok_or_else(|| anyhow::anyhow!("manager {name} is not in the graph"))
        };
        let mut ends = Vec::with_capacity(topology.links().len());
        let mut adjacent = vec![Vec::new(); names.len()];
        for link in topology.links() {
            let (a, b) = link.key.ends();
            let (a, b) = (index(a)?, index(b)?);
            adjacent[a].push((b, ends.len()));
            adjacent[b].push((a, ends.len()));
            ends.push((a, b));
        }
        let dbs = names
            .iter()
            .enumerate()
            .map(|(v, name)| {
                let mut db = LinkStateDb::new(name.clone(), 1);
                let neighbours = adjacent[v].iter().map(|&(u, _)| (names[u].clone(), true));
                db.set_topology(&topology, neighbours);
                db
            })
            .collect();
        let truth = network.all_routes(&DownLinks::new());
        let mut sim = Self {
            converged: vec![true; names.len()],
            unconverged: 0,
            converged_at_us: 0,
            up: vec![true; ends.len()],
            epoch: vec![0; ends.len()],
            topology,
            network,
            names,
            ends,
            adjacent,
            dbs,
            truth,
            queue: BinaryHeap::new(),
            now_us: 0,
            sent: 0,
            hop_delay_us,
            receive_times: Vec::new(),
            down_links_times: Vec::new(),
            routes_times: Vec::new(),
        };
        // The start-up exchange is not measured: only changes from a quiet network are.
        for link in 0..sim.ends.len() {
            sim.exchange(link);
        }
        sim.run_until_quiet(sim.message_bound(sim.names.len(), sim.ends.len()))?;
        sim.receive_times.clear();
        Ok(sim)
    }

    /// Fails or repairs `link`, runs until quiet, and reports convergence time and messages.
    fn change(&mut self, link: usize, up: bool) -> anyhow::Result<Outcome> {
        let start_us = self.now_us;
        let sent_before = self.sent;
        self.up[link] = up;
        if !up {
            self.epoch[link] += 1;
        }
        let down: DownLinks = (0..self.ends.len())
            .filter(|&l| !self.up[l])
            .filter_map(|l| self.key(l))
            .collect();
        self.truth = self.network.all_routes(&down);
        let (a, b) = self.ends[link];
        for (end, other) in [(a, b), (b, a)] {
            let other = self.names[other].clone();
            if self.dbs[end].set_local(&other, up) {
                self.flood_own(end);
            }
        }
        if up {
            self.exchange(link);
        }
        // The truth moved: everyone's agreement with it must be looked at again.
        self.unconverged = 0;
        for v in 0..self.names.len() {
            self.converged[v] = false;
            self.unconverged += 1;
            self.check(v);
        }
        self.run_until_quiet(self.message_bound(4, usize::from(up)))?;
        if self.unconverged > 0 {
            bail!(
                "after {} of link {}, {} managers still route differently from the truth",
                if up { "the repair" } else { "the failure" },
                link,
                self.unconverged
            );
        }
        Ok(Outcome {
            converged_us: self.converged_at_us - start_us,
            sent: self.sent - sent_before,
        })
    }

    fn key(&self, link: usize) -> Option<LinkKey> {
        let (a, b) = self.ends[link];
        LinkKey::new(self.names[a].clone(), self.names[b].clone())
    }

    /// An upper bound on the messages a terminating flood sends while `versions` advertisements
    /// circulate (a failure issues two; a repair two more, and brings the failure's two to
    /// managers it had cut off): each is flooded by its origin and taken as new at most once
    /// per manager, which passes it to at most every neighbour; each of `exchanges` links that
    /// came up carries everything both ends know.
    fn message_bound(&self, versions: usize, exchanges: usize) -> u64 {
        let n = self.names.len() as u64;
        let degree_max = self.adjacent.iter().map(Vec::len).max().unwrap_or(0) as u64;
        degree_max * versions as u64 * (n + 1) + exchanges as u64 * 2 * n
    }

    fn send(&mut self, from: usize, to: usize, link: usize, lsa: Lsa) {
        self.sent += 1;
        self.queue.push(Reverse(Delivery {
            at_us: self.now_us + self.hop_delay_us,
            order: self.sent,
            from,
            to,
            link,
            epoch: self.epoch[link],
            lsa,
        }));
    }

    /// Sends `lsa` from `v` to every live neighbour but `except`.
    fn flood(&mut self, v: usize, lsa: &Lsa, except: Option<usize>) {
        for i in 0..self.adjacent[v].len() {
            let (u, link) = self.adjacent[v][i];
            if self.up[link] && Some(u) != except {
                self.send(v, u, link, lsa.clone());
            }
        }
    }

    fn flood_own(&mut self, v: usize) {
        let own = self.dbs[v].own();
        self.flood(v, &own, None);
    }

    fn exchange(&mut self, link: usize) {
        let (a, b) = self.ends[link];
        for (from, to) in [(a, b), (b, a)] {
            for lsa in self.dbs[from].advertisements() {
                self.send(from, to, link, lsa);
            }
        }
    }

    fn run_until_quiet(&mut self, bound: u64) -> anyhow::Result<()> {
        let sent_before = self.sent;
        while let Some(Reverse(delivery)) = self.queue.pop() {
            if self.sent - sent_before > bound {
                bail!("flooding did not stop within {bound} messages");
            }
            self.now_us = delivery.at_us;
            if !self.up[delivery.link] || self.epoch[delivery.link] != delivery.epoch {
                continue; // lost with the link
            }
            let to = delivery.to;
            let start = Instant::now();
            let received = self.dbs[to].receive(delivery.lsa.clone());
            self.receive_times.push(start.elapsed());
            match received {
                Received::New => {
                    self.flood(to, &delivery.lsa, Some(delivery.from));
                    self.check(to);
                }
                Received::OwnRenewed => self.flood_own(to),
                Received::Ignored => {}
            }
        }
        Ok(())
    }

    /// Recomputes `v`'s routes from its database, as the daemon does on every change, and
    /// compares them with the truth.
    fn check(&mut self, v: usize) {
        let start = Instant::now();
        let down = self.dbs[v].down_links(&self.topology);
        self.down_links_times.push(start.elapsed());
        let start = Instant::now();
        let table = self.network.routes_from(self.names[v].as_str(), &down);
        self.routes_times.push(start.elapsed());
        let converged = table.as_ref() == Some(&self.truth[v]);
        match (self.converged[v], converged) {
            (false, true) => {
                self.unconverged -= 1;
                if self.unconverged == 0 {
                    self.converged_at_us = self.now_us;
                }
            }
            (true, false) => self.unconverged += 1,
            _ => {}
        }
        self.converged[v] = converged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_after_every_failure_and_repair() {
        let spec = MeshSpec {
            managers: 12,
            links: 18,
            seed: 3,
            base_port: 10_000,
            cost_max: COST_MAX,
        };
        let topology = hopmq_routing::parse(&mesh(spec).unwrap(), "m.toml")
            .unwrap()
            .topology;
        let mut sim = Simulation::new(topology, 500).unwrap();
        for link in 0..sim.ends.len() {
            // `change` fails unless every manager ends up routing as the truth.
            let failed = sim.change(link, false).unwrap();
            let repaired = sim.change(link, true).unwrap();
            // A delay of 500 µs per hop: convergence is a whole number of hops.
            assert_eq!(failed.converged_us % 500, 0);
            assert_eq!(repaired.converged_us % 500, 0);
        }
    }
}
