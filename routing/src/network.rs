//! Route computation over the graph of a topology.
//!
//! The rule every manager applies, so that all of them agree: a message for `D` at `X` goes to
//! the neighbour `N` that starts a cheapest path from `X` to `D`; among several such neighbours,
//! the one whose name sorts first. With costs of at least 1, each hop strictly lowers the
//! remaining distance, so following next hops never loops.
//!
//! One Dijkstra from the source finds that neighbour for every destination at once: it orders
//! candidate paths by `(cost, rank of the first hop)`, and extending two paths by the same link
//! keeps their order, so the search stays exact. Nodes are inserted in name order, so a node's
//! index is its rank by name and the result cannot depend on declaration order.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use petgraph::graph::{EdgeIndex, NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;

use crate::names::ManagerName;
use crate::topology::{LinkKey, Topology};

/// Links taken out of the graph (down, or drained by an operator).
pub type DownLinks = BTreeSet<LinkKey>;

/// The graph of a topology, ready for route computations.
#[derive(Debug, Clone)]
pub struct Network {
    graph: UnGraph<ManagerName, u32>,
    index: HashMap<ManagerName, NodeIndex>,
}

/// How one manager reaches one destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// The destination manager.
    pub destination: ManagerName,
    /// The neighbour to hand messages to; `None` when the destination is unreachable.
    pub next_hop: Option<ManagerName>,
    /// The total cost of the path; `None` when unreachable.
    pub cost: Option<u64>,
}

/// One manager's next hop and cost to every other manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    /// The manager whose table this is.
    pub source: ManagerName,
    /// One route per other manager, by destination name.
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// The route to `destination`, if it is a manager of the topology other than the source.
    pub fn route(&self, destination: &str) -> Option<&Route> {
        self.routes
            .binary_search_by(|r| r.destination.as_str().cmp(destination))
            .ok()
            .map(|i| &self.routes[i])
    }
}

/// A path between two managers, as messages travel it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Path {
    /// Every manager on the way, both ends included.
    pub hops: Vec<ManagerName>,
    /// The sum of the links' costs.
    pub cost: u64,
}

/// Used as "no first hop yet"; never a node index since graphs hold far fewer nodes.
const NO_HOP: u32 = u32::MAX;

impl Network {
    /// The graph of `topology`, all links up.
    pub fn new(topology: &Topology) -> Self {
        let mut graph = UnGraph::with_capacity(topology.managers.len(), topology.links.len());
        let mut index = HashMap::with_capacity(topology.managers.len());
        // `managers` is a BTreeMap, so insertion order is name order: index = rank by name.
        for name in topology.managers.keys() {
            index.insert(name.clone(), graph.add_node(name.clone()));
        }
        for (key, link) in &topology.links {
            let (a, b) = key.ends();
            if let (Some(&a), Some(&b)) = (index.get(a), index.get(b)) {
                graph.add_edge(a, b, link.cost);
            }
        }
        Self { graph, index }
    }

    /// The underlying petgraph graph: node weights are names, edge weights costs.
    pub fn graph(&self) -> &UnGraph<ManagerName, u32> {
        &self.graph
    }

    /// The node of manager `name`.
    pub fn node(&self, name: &str) -> Option<NodeIndex> {
        self.index.get(name).copied()
    }

    /// The edges of `down` that exist in this graph, as a mask indexed by edge.
    fn down_mask(&self, down: &DownLinks) -> Vec<bool> {
        let mut mask = vec![false; self.graph.edge_count()];
        for key in down {
            let (a, b) = key.ends();
            if let (Some(a), Some(b)) = (self.node(a.as_str()), self.node(b.as_str())) {
                if let Some(edge) = self.graph.find_edge(a, b) {
                    mask[edge.index()] = true;
                }
            }
        }
        mask
    }

    /// Dijkstra from `source`, ordering paths by `(cost, first hop)`. Returns per node the
    /// distance (`u64::MAX` when unreachable) and the first hop (`NO_HOP` for the source and
    /// unreachable nodes).
    fn search(&self, source: NodeIndex, down: &[bool]) -> (Vec<u64>, Vec<u32>) {
        let n = self.graph.node_count();
        let mut distance = vec![u64::MAX; n];
        let mut first_hop = vec![NO_HOP; n];
        let mut heap = BinaryHeap::new();
        distance[source.index()] = 0;
        heap.push(Reverse((0u64, NO_HOP, source.index() as u32)));
        while let Some(Reverse((d, hop, u))) = heap.pop() {
            let u = u as usize;
            if (d, hop) != (distance[u], first_hop[u]) {
                continue; // a stale entry: u was settled through a better path
            }
            for edge in self.graph.edges(NodeIndex::new(u)) {
                if down[edge.id().index()] {
                    continue;
                }
                let v = if edge.source().index() == u {
                    edge.target()
                } else {
                    edge.source()
                };
                let v = v.index();
                let candidate = (
                    d + u64::from(*edge.weight()),
                    if hop == NO_HOP { v as u32 } else { hop },
                );
                if candidate < (distance[v], first_hop[v]) {
                    (distance[v], first_hop[v]) = candidate;
                    heap.push(Reverse((candidate.0, candidate.1, v as u32)));
                }
            }
        }
        (distance, first_hop)
    }

    /// `source`'s next hop and cost to every other manager, without the links in `down`.
    /// `None` if `source` is not a manager of this network.
    pub fn routes_from(&self, source: &str, down: &DownLinks) -> Option<RouteTable> {
        let source_node = self.node(source)?;
        Some(self.table(source_node, &self.down_mask(down)))
    }

    fn table(&self, source: NodeIndex, down: &[bool]) -> RouteTable {
        let (distance, first_hop) = self.search(source, down);
        let routes = self
            .graph
            .node_indices()
            .filter(|&node| node != source)
            .map(|node| {
                let i = node.index();
                let reachable = distance[i] != u64::MAX;
                Route {
                    destination: self.graph[node].clone(),
                    next_hop: reachable
                        .then(|| self.graph[NodeIndex::new(first_hop[i] as usize)].clone()),
                    cost: reachable.then_some(distance[i]),
                }
            })
            .collect();
        RouteTable {
            source: self.graph[source].clone(),
            routes,
        }
    }

    /// Every manager's table, in name order.
    pub fn all_routes(&self, down: &DownLinks) -> Vec<RouteTable> {
        let mask = self.down_mask(down);
        self.graph
            .node_indices()
            .map(|node| self.table(node, &mask))
            .collect()
    }

    /// The path messages from `from` to `to` take, each manager applying the next-hop rule.
    /// `None` when either is unknown or `to` is unreachable.
    pub fn path(&self, from: &str, to: &str, down: &DownLinks) -> Option<Path> {
        let (from, to) = (self.node(from)?, self.node(to)?);
        let mask = self.down_mask(down);
        // Links are symmetric, so distances from `to` are distances to `to`.
        let (to_target, _) = self.search(to, &mask);
        if to_target[from.index()] == u64::MAX {
            return None;
        }
        let mut hops = vec![self.graph[from].clone()];
        let mut at = from;
        while at != to {
            // The lowest-ranked neighbour on a cheapest path: the same choice `search` makes
            // from `at`, found here without a search per hop.
            let next = self
                .usable_edges(at, &mask)
                .filter(|&(v, cost)| {
                    to_target[v.index()] != u64::MAX
                        && to_target[v.index()] + u64::from(cost) == to_target[at.index()]
                })
                .map(|(v, _)| v)
                .min()?;
            hops.push(self.graph[next].clone());
            at = next;
        }
        Some(Path {
            hops,
            cost: to_target[from.index()],
        })
    }

    fn usable_edges<'a>(
        &'a self,
        node: NodeIndex,
        down: &'a [bool],
    ) -> impl Iterator<Item = (NodeIndex, u32)> + 'a {
        self.graph
            .edges(node)
            .filter(move |e| !down[e.id().index()])
            .map(move |e| {
                let other = if e.source() == node {
                    e.target()
                } else {
                    e.source()
                };
                (other, *e.weight())
            })
    }

    /// The edge of link `key`, if both ends and the link exist.
    pub fn edge(&self, key: &LinkKey) -> Option<EdgeIndex> {
        let (a, b) = key.ends();
        self.graph
            .find_edge(self.node(a.as_str())?, self.node(b.as_str())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn network(text: &str) -> Network {
        Network::new(&parse(text, "t.toml").unwrap().topology)
    }

    const DIAMOND: &str = r#"
        [managers.alpha]
        address = "127.0.0.1:7401"
        [managers.bravo]
        address = "127.0.0.1:7402"
        [managers.charlie]
        address = "127.0.0.1:7403"
        [managers.delta]
        address = "127.0.0.1:7404"
        [[links]]
        between = ["alpha", "charlie"]
        [[links]]
        between = ["charlie", "delta"]
        [[links]]
        between = ["alpha", "bravo"]
        [[links]]
        between = ["bravo", "delta"]
    "#;

    fn down(pairs: &[(&str, &str)]) -> DownLinks {
        pairs
            .iter()
            .map(|(a, b)| LinkKey::new(a.parse().unwrap(), b.parse().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn equal_costs_break_ties_by_name() {
        let net = network(DIAMOND);
        let table = net.routes_from("alpha", &DownLinks::new()).unwrap();
        let delta = table.route("delta").unwrap();
        assert_eq!(delta.next_hop.as_ref().unwrap().as_str(), "bravo");
        assert_eq!(delta.cost, Some(2));
        let path = net.path("alpha", "delta", &DownLinks::new()).unwrap();
        assert_eq!(
            path.hops.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
            ["alpha", "bravo", "delta"]
        );
        // Seen from delta, the tie is broken the same way.
        let back = net.path("delta", "alpha", &DownLinks::new()).unwrap();
        assert_eq!(back.hops[1].as_str(), "bravo");
    }

    #[test]
    fn down_links_are_routed_around() {
        let net = network(DIAMOND);
        let table = net
            .routes_from("alpha", &down(&[("bravo", "delta")]))
            .unwrap();
        let delta = table.route("delta").unwrap();
        assert_eq!(delta.next_hop.as_ref().unwrap().as_str(), "charlie");
        let cut = down(&[("bravo", "delta"), ("charlie", "delta")]);
        let table = net.routes_from("alpha", &cut).unwrap();
        assert_eq!(table.route("delta").unwrap().next_hop, None);
        assert_eq!(table.route("delta").unwrap().cost, None);
        assert!(net.path("alpha", "delta", &cut).is_none());
    }

    #[test]
    fn cost_decides_before_name() {
        let net = network(&DIAMOND.replacen(
            "between = [\"alpha\", \"bravo\"]",
            "between = [\"alpha\", \"bravo\"]\ncost = 5",
            1,
        ));
        let table = net.routes_from("alpha", &DownLinks::new()).unwrap();
        assert_eq!(
            table
                .route("delta")
                .unwrap()
                .next_hop
                .as_ref()
                .unwrap()
                .as_str(),
            "charlie"
        );
        assert_eq!(
            table
                .route("bravo")
                .unwrap()
                .next_hop
                .as_ref()
                .unwrap()
                .as_str(),
            "charlie"
        );
        assert_eq!(table.route("bravo").unwrap().cost, Some(3));
    }

    #[test]
    fn unknown_source_has_no_table() {
        assert!(
            network(DIAMOND)
                .routes_from("zulu", &DownLinks::new())
                .is_none()
        );
    }
}
