//! Property test of link-state flooding: one `LinkStateDb` per manager of a random connected
//! network, advertisements carried over per-link FIFO queues and delivered in an interleaving
//! proptest picks, under random link failures, repairs and restarts (a restarted manager starts
//! below its previous sequence numbers). Once everything is delivered, every manager's routes,
//! computed from its own database, are the routes over the true down-links, partitions
//! included; and the flood stopped within a bound derived from what was issued.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hopmq_routing::{
    DownLinks, LinkKey, LinkStateDb, Lsa, ManagerName, Network, Received, Topology, parse,
};
use proptest::prelude::*;

mod common;

#[derive(Debug, Clone)]
enum Step {
    /// Fail the up link at this index (modulo the number of up links), if any.
    Fail(u16),
    /// Repair the down link at this index (modulo the number of down links), if any.
    Repair(u16),
    /// Restart a manager, its database starting this far below its last sequence number.
    Restart { manager: u16, lower_by: u64 },
    /// Deliver one message per pick, each from the non-empty queue at that index.
    Deliver(Vec<u16>),
}

#[derive(Debug, Clone)]
struct Case {
    names: Vec<String>,
    /// (a, b, cost), a != b, no duplicate pairs; the first n - 1 form a spanning tree.
    links: Vec<(usize, usize, u32)>,
    initially_down: Vec<bool>,
    first_seqs: Vec<u64>,
    steps: Vec<Step>,
    /// Picks for the final delivery until quiet, used round and round.
    drain: Vec<u16>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<u16>().prop_map(Step::Fail),
        2 => any::<u16>().prop_map(Step::Repair),
        1 => (any::<u16>(), prop_oneof![1u64..=3, 1u64..=2000])
            .prop_map(|(manager, lower_by)| Step::Restart { manager, lower_by }),
        3 => proptest::collection::vec(any::<u16>(), 0..=30).prop_map(Step::Deliver),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (3usize..=12)
        .prop_flat_map(|n| {
            let parents = (1..n).map(|i| 0..i).collect::<Vec<_>>();
            // Few extra links, so failures often split the network.
            let extra = proptest::collection::vec((0..n, 0..n), 0..=n);
            let costs = proptest::collection::vec(1u32..=5, 2 * n);
            let downs = proptest::collection::vec(proptest::bool::weighted(0.15), 2 * n);
            let name_keys = proptest::collection::vec(0u32..1000, n);
            let first_seqs = proptest::collection::vec(1000u64..3000, n);
            let steps = proptest::collection::vec(step(), 0..=24);
            let drain = proptest::collection::vec(any::<u16>(), 1..=16);
            (
                parents, extra, costs, downs, name_keys, first_seqs, steps, drain,
            )
        })
        .prop_map(
            |(parents, extra, costs, downs, name_keys, first_seqs, steps, drain)| {
                let names = common::names(&name_keys);
                let links = common::links(parents, extra, &costs);
                let initially_down = (0..links.len()).map(|i| downs[i % downs.len()]).collect();
                Case {
                    names,
                    links,
                    initially_down,
                    first_seqs,
                    steps,
                    drain,
                }
            },
        )
}

fn text(case: &Case) -> String {
    let mut out = String::new();
    for (i, name) in case.names.iter().enumerate() {
        out += &format!("[managers.{name}]\naddress = \"127.0.0.1:{}\"\n", 1000 + i);
    }
    for &(a, b, cost) in &case.links {
        out += &format!(
            "[[links]]\nbetween = [\"{}\", \"{}\"]\ncost = {cost}\n",
            case.names[a], case.names[b]
        );
    }
    out
}

/// The network and every manager's database, with the messages in flight.
struct Sim {
    topology: Topology,
    names: Vec<ManagerName>,
    /// Link ends, by link index.
    ends: Vec<(usize, usize)>,
    up: Vec<bool>,
    dbs: Vec<LinkStateDb>,
    /// Per direction of every link, (from, to): the advertisements in flight, oldest first.
    queues: BTreeMap<(usize, usize), VecDeque<Lsa>>,
    sent: u64,
    /// Own advertisements issued: first ones, changes and renewals, over all runs.
    versions: u64,
    /// Exchanges of everything known, on a link coming up or a restart.
    exchanges: u64,
    restarts: u64,
}

impl Sim {
    fn new(case: &Case) -> Self {
        let topology = parse(&text(case), "random.toml").unwrap().topology;
        let names: Vec<ManagerName> = case.names.iter().map(|n| n.parse().unwrap()).collect();
        let ends: Vec<_> = case.links.iter().map(|&(a, b, _)| (a, b)).collect();
        let queues = ends
            .iter()
            .flat_map(|&(a, b)| [((a, b), VecDeque::new()), ((b, a), VecDeque::new())])
            .collect();
        let mut sim = Self {
            topology,
            names,
            ends,
            up: case.initially_down.iter().map(|down| !down).collect(),
            dbs: Vec::new(),
            queues,
            sent: 0,
            versions: 0,
            exchanges: 0,
            restarts: 0,
        };
        sim.dbs = (0..sim.names.len())
            .map(|v| sim.fresh_db(v, case.first_seqs[v]))
            .collect();
        // Everyone starts together: each live link comes up.
        for link in 0..sim.ends.len() {
            if sim.up[link] {
                let (a, b) = sim.ends[link];
                sim.exchange(a, b);
            }
        }
        sim
    }

    /// A database for manager `v` that knows its links' true state and nothing else.
    fn fresh_db(&mut self, v: usize, first_seq: u64) -> LinkStateDb {
        let mut db = LinkStateDb::new(self.names[v].clone(), first_seq);
        let neighbours: Vec<_> = (0..self.ends.len())
            .filter_map(|link| {
                self.other_end(link, v)
                    .map(|u| (self.names[u].clone(), self.up[link]))
            })
            .collect();
        db.set_topology(&self.topology, neighbours);
        self.versions += 2; // the first advertisement and the topology's
        db
    }

    fn other_end(&self, link: usize, v: usize) -> Option<usize> {
        match self.ends[link] {
            (a, b) if a == v => Some(b),
            (a, b) if b == v => Some(a),
            _ => None,
        }
    }

    /// The managers `v` shares an up link with.
    fn adjacent(&self, v: usize) -> Vec<usize> {
        (0..self.ends.len())
            .filter(|&link| self.up[link])
            .filter_map(|link| self.other_end(link, v))
            .collect()
    }

    fn send(&mut self, from: usize, to: usize, lsa: Lsa) {
        self.queues.get_mut(&(from, to)).unwrap().push_back(lsa);
        self.sent += 1;
    }

    fn flood_own(&mut self, v: usize) {
        let own = self.dbs[v].own();
        for u in self.adjacent(v) {
            self.send(v, u, own.clone());
        }
    }

    fn exchange(&mut self, a: usize, b: usize) {
        self.exchanges += 1;
        for (from, to) in [(a, b), (b, a)] {
            for lsa in self.dbs[from].advertisements() {
                self.send(from, to, lsa);
            }
        }
    }

    /// Both ends of `link` notice its new state at once.
    fn set_link(&mut self, link: usize, up: bool) {
        self.up[link] = up;
        let (a, b) = self.ends[link];
        if !up {
            // The connection is gone, and what was in flight on it with it.
            self.queues.get_mut(&(a, b)).unwrap().clear();
            self.queues.get_mut(&(b, a)).unwrap().clear();
        }
        for (end, other) in [(a, b), (b, a)] {
            let other = self.names[other].clone();
            if self.dbs[end].set_local(&other, up) {
                self.versions += 1;
                self.flood_own(end);
            }
        }
        if up {
            self.exchange(a, b);
        }
    }

    fn restart(&mut self, v: usize, lower_by: u64) {
        self.restarts += 1;
        let first_seq = self.dbs[v].own().seq.saturating_sub(lower_by);
        self.dbs[v] = self.fresh_db(v, first_seq);
        for (&(from, to), queue) in &mut self.queues {
            if from == v || to == v {
                queue.clear();
            }
        }
        for u in self.adjacent(v) {
            self.exchange(v, u);
        }
    }

    /// Delivers the oldest message of the `pick`-th non-empty queue; false if all are empty.
    fn deliver(&mut self, pick: u16) -> bool {
        let busy: Vec<(usize, usize)> = self
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(&key, _)| key)
            .collect();
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[usize::from(pick) % busy.len()];
        let lsa = self
            .queues
            .get_mut(&(from, to))
            .unwrap()
            .pop_front()
            .unwrap();
        match self.dbs[to].receive(lsa.clone()) {
            Received::New => {
                for u in self.adjacent(to) {
                    if u != from {
                        self.send(to, u, lsa.clone());
                    }
                }
            }
            Received::OwnRenewed => {
                self.versions += 1;
                self.flood_own(to);
            }
            Received::Ignored => {}
        }
        true
    }

    fn truly_down(&self) -> DownLinks {
        (0..self.ends.len())
            .filter(|&link| !self.up[link])
            .map(|link| {
                let (a, b) = self.ends[link];
                LinkKey::new(self.names[a].clone(), self.names[b].clone()).unwrap()
            })
            .collect()
    }

    /// The managers `v` reaches over up links, itself included.
    fn component(&self, v: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([v]);
        let mut todo = vec![v];
        while let Some(u) = todo.pop() {
            for w in self.adjacent(u) {
                if seen.insert(w) {
                    todo.push(w);
                }
            }
        }
        seen
    }

    /// An upper bound on the messages a terminating flood sends. Each own advertisement
    /// issued is flooded once; each manager's database (one per run) takes each issued
    /// advertisement as new at most once and forwards it to at most every neighbour; each
    /// exchange sends at most everything both ends know.
    fn message_bound(&self) -> u64 {
        let n = self.names.len() as u64;
        let degree_max = (0..self.names.len())
            .map(|v| {
                (0..self.ends.len())
                    .filter(|&l| self.other_end(l, v).is_some())
                    .count()
            })
            .max()
            .unwrap_or(0) as u64;
        degree_max * self.versions * (n + self.restarts + 1) + self.exchanges * 2 * n
    }
}

fn pick(items: usize, index: u16) -> Option<usize> {
    (items > 0).then(|| usize::from(index) % items)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn flooded_databases_route_as_the_truth(case in case()) {
        let mut sim = Sim::new(&case);
        for step in &case.steps {
            match step {
                Step::Fail(index) => {
                    let up: Vec<usize> = (0..sim.ends.len()).filter(|&l| sim.up[l]).collect();
                    if let Some(i) = pick(up.len(), *index) {
                        sim.set_link(up[i], false);
                    }
                }
                Step::Repair(index) => {
                    let down: Vec<usize> = (0..sim.ends.len()).filter(|&l| !sim.up[l]).collect();
                    if let Some(i) = pick(down.len(), *index) {
                        sim.set_link(down[i], true);
                    }
                }
                Step::Restart { manager, lower_by } => {
                    let v = usize::from(*manager) % sim.names.len();
                    sim.restart(v, *lower_by);
                }
                Step::Deliver(picks) => {
                    for &p in picks {
                        sim.deliver(p);
                    }
                }
            }
        }
        // Deliver until quiet. The cap only keeps a non-terminating flood from hanging the
        // test; the bound below is the real check.
        let cap = sim.message_bound() + 1;
        let mut delivered = 0u64;
        while sim.deliver(case.drain[delivered as usize % case.drain.len()]) {
            delivered += 1;
            prop_assert!(delivered <= cap, "the flood does not stop: {} messages", delivered);
        }
        prop_assert!(sim.sent <= sim.message_bound(),
            "{} messages sent, bound {}", sim.sent, sim.message_bound());

        let network = Network::new(&sim.topology);
        let truly_down = sim.truly_down();
        for v in 0..sim.names.len() {
            let name = &sim.names[v];
            // Everyone reachable holds the current advertisement of everyone else reachable.
            for u in sim.component(v) {
                prop_assert_eq!(
                    sim.dbs[v].get(sim.names[u].as_str()), Some(sim.dbs[u].own()),
                    "{} about {}", name, sim.names[u]
                );
            }
            let believed = sim.dbs[v].down_links(&sim.topology);
            prop_assert_eq!(
                network.routes_from(name.as_str(), &believed).unwrap(),
                network.routes_from(name.as_str(), &truly_down).unwrap(),
                "routes of {}: believed down {:?}, truly down {:?}", name, believed, truly_down
            );
        }
    }
}
