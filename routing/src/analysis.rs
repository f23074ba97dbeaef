//! Structural findings about a valid topology: parts of the network that cannot reach each
//! other, and single points of failure (a manager or a link whose loss splits the network).
//!
//! These are warnings, never errors: a network may be split on purpose, and a line of managers
//! is a legitimate design.

use petgraph::algo::articulation_points::articulation_points;
use petgraph::algo::bridges::bridges;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::NodeIndex;
use petgraph::visit::{EdgeRef, NodeFiltered};

use crate::names::ManagerName;
use crate::network::Network;
use crate::topology::{LinkKey, Topology};

/// One structural finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `component` (sorted by name) cannot reach the `others` managers outside it. Reported for
    /// every part of a split network but its largest.
    Split {
        /// The managers of the part.
        component: Vec<ManagerName>,
        /// How many managers lie outside it.
        others: usize,
    },
    /// Losing `manager` would cut `cut_off` off from the rest of its part of the network.
    CutManager {
        /// The manager.
        manager: ManagerName,
        /// The managers that would be cut off: all but the largest remaining piece.
        cut_off: Vec<ManagerName>,
    },
    /// Losing `link` would split its part of the network.
    CutLink {
        /// The link.
        link: LinkKey,
    },
}

/// Every finding about `topology`, whose graph is `network`, in a deterministic order.
pub fn findings(topology: &Topology, network: &Network) -> Vec<Finding> {
    let graph = network.graph();
    let total = graph.node_count();
    let mut findings = Vec::new();

    let parts = pieces(kosaraju_scc(graph), network);
    for part in parts.iter().skip(1) {
        findings.push(Finding::Split {
            component: part.clone(),
            others: total - part.len(),
        });
    }

    let mut cut_managers: Vec<NodeIndex> = articulation_points(graph).into_iter().collect();
    cut_managers.sort();
    for (i, node) in cut_managers.into_iter().enumerate() {
        // Naming what a loss cuts off costs a search per manager; past a bound the warning
        // only says that the network splits.
        let cut_off = if i < CUT_DETAIL_MAX {
            cut_off_without(node, &parts, network)
        } else {
            Vec::new()
        };
        findings.push(Finding::CutManager {
            manager: graph[node].clone(),
            cut_off,
        });
    }

    let mut cut_links: Vec<LinkKey> = bridges(graph)
        .filter_map(|e| LinkKey::new(graph[e.source()].clone(), graph[e.target()].clone()))
        .collect();
    cut_links.sort();
    findings.extend(cut_links.into_iter().map(|link| Finding::CutLink { link }));

    debug_assert!(topology.managers.len() == total);
    findings
}

/// How many single-point-of-failure managers get the list of what they would cut off.
const CUT_DETAIL_MAX: usize = 64;

/// The managers of `node`'s part of the network that lose contact with its largest remaining
/// piece when `node` is gone.
fn cut_off_without(
    node: NodeIndex,
    parts: &[Vec<ManagerName>],
    network: &Network,
) -> Vec<ManagerName> {
    let graph = network.graph();
    let Some(part) = parts.iter().find(|p| p.binary_search(&graph[node]).is_ok()) else {
        return Vec::new();
    };
    let without = NodeFiltered::from_fn(graph, |n| n != node);
    let mut rest = pieces(kosaraju_scc(&without), network);
    rest.retain(|piece| part.binary_search(&piece[0]).is_ok());
    let mut cut_off: Vec<ManagerName> = rest.into_iter().skip(1).flatten().collect();
    cut_off.sort();
    cut_off
}

/// Components as sorted name lists, largest first, ties by smallest name.
fn pieces(components: Vec<Vec<NodeIndex>>, network: &Network) -> Vec<Vec<ManagerName>> {
    let graph = network.graph();
    let mut pieces: Vec<Vec<ManagerName>> = components
        .into_iter()
        .map(|c| {
            let mut names: Vec<_> = c.into_iter().map(|n| graph[n].clone()).collect();
            names.sort();
            names
        })
        .collect();
    pieces.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a[0].cmp(&b[0])));
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn findings_of(text: &str) -> Vec<Finding> {
        let topology = parse(text, "t.toml").unwrap().topology;
        findings(&topology, &Network::new(&topology))
    }

    fn names(list: &[&str]) -> Vec<ManagerName> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn managers(names: &[&str]) -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[managers.{n}]\naddress = \"127.0.0.1:{}\"\n", 7000 + i))
            .collect()
    }

    #[test]
    fn a_line_has_cut_managers_and_cut_links() {
        let text = managers(&["a", "b", "c"])
            + "[[links]]\nbetween = [\"a\", \"b\"]\n[[links]]\nbetween = [\"b\", \"c\"]\n";
        let found = findings_of(&text);
        assert_eq!(
            found,
            vec![
                Finding::CutManager {
                    manager: "b".parse().unwrap(),
                    cut_off: names(&["c"])
                },
                Finding::CutLink {
                    link: LinkKey::new("a".parse().unwrap(), "b".parse().unwrap()).unwrap()
                },
                Finding::CutLink {
                    link: LinkKey::new("b".parse().unwrap(), "c".parse().unwrap()).unwrap()
                },
            ]
        );
    }

    #[test]
    fn a_ring_has_no_single_point_of_failure() {
        let text = managers(&["a", "b", "c"])
            + "[[links]]\nbetween = [\"a\", \"b\"]\n[[links]]\nbetween = [\"b\", \"c\"]\n\
               [[links]]\nbetween = [\"c\", \"a\"]\n";
        assert!(findings_of(&text).is_empty());
    }

    #[test]
    fn a_split_network_names_the_smaller_parts() {
        let text = managers(&["a", "b", "c", "d"])
            + "[[links]]\nbetween = [\"a\", \"b\"]\n\
                [[links]]\nbetween = [\"b\", \"c\"]\n[[links]]\nbetween = [\"c\", \"a\"]\n";
        assert_eq!(
            findings_of(&text),
            vec![Finding::Split {
                component: names(&["d"]),
                others: 3
            }]
        );
    }
}
