//! The route tree the console highlights on its map: the links that the routes in force from
//! this manager use, hop by hop. Pure: from a status's network (links, costs, states) and
//! route table.
//!
//! Each hop chooses as `hopmq_routing` does: the neighbour starting a cheapest path to the
//! destination, ties broken by the neighbour's name, over the links that are up. The first hop
//! is the route table's own; the hops after it are recomputed from the link-state this
//! manager holds, which is what every manager routes over once the network has converged.
//! Invariant: bounded work. Past [`ROUTE_TREE_MANAGERS_MAX`] managers only first hops are
//! marked (one Dijkstra per destination would cost too much per request).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use hopmq::protocol::{NetworkLinkStatus, RouteStatus};

/// The most managers for which the whole tree is computed; a mesh of this size costs a few
/// milliseconds per request.
pub(crate) const ROUTE_TREE_MANAGERS_MAX: usize = 256;

/// A link, its ends in name order.
pub(crate) type Ends = (String, String);

fn ends(a: &str, b: &str) -> Ends {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The links usable by routes (state `up`), per manager: neighbour and cost, by name.
type Adjacency<'a> = BTreeMap<&'a str, Vec<(&'a str, u64)>>;

fn adjacency(network: &[NetworkLinkStatus]) -> Adjacency<'_> {
    let mut adjacency: Adjacency<'_> = BTreeMap::new();
    for link in network.iter().filter(|l| l.state == "up") {
        let (a, b) = (link.between.0.as_str(), link.between.1.as_str());
        let cost = u64::from(link.cost);
        adjacency.entry(a).or_default().push((b, cost));
        adjacency.entry(b).or_default().push((a, cost));
    }
    adjacency
}

/// The cost of a cheapest path from every manager to `destination`.
fn distances_to<'a>(adjacency: &Adjacency<'a>, destination: &'a str) -> BTreeMap<&'a str, u64> {
    let mut distances = BTreeMap::from([(destination, 0u64)]);
    let mut heap = BinaryHeap::from([Reverse((0u64, destination))]);
    while let Some(Reverse((distance, node))) = heap.pop() {
        if distances.get(node).is_some_and(|&d| d < distance) {
            continue;
        }
        for &(neighbour, cost) in adjacency.get(node).into_iter().flatten() {
            let through = distance.saturating_add(cost);
            if distances.get(neighbour).is_none_or(|&d| through < d) {
                distances.insert(neighbour, through);
                heap.push(Reverse((through, neighbour)));
            }
        }
    }
    distances
}

/// The links the routes from `me` use.
pub(crate) fn route_tree(
    me: &str,
    network: &[NetworkLinkStatus],
    routes: &[RouteStatus],
) -> BTreeSet<Ends> {
    let adjacency = adjacency(network);
    let whole_tree = adjacency.len() <= ROUTE_TREE_MANAGERS_MAX;
    let mut tree = BTreeSet::new();
    for route in routes {
        let Some(first) = route.next_hop.as_deref() else {
            continue;
        };
        tree.insert(ends(me, first));
        if !whole_tree {
            continue;
        }
        let destination = route.destination.as_str();
        let distances = distances_to(&adjacency, destination);
        let mut at = first;
        // A path visits each manager once; the bound only guards against a state that
        // changed between two reads.
        for _ in 0..adjacency.len() {
            if at == destination {
                break;
            }
            let next = adjacency
                .get(at)
                .into_iter()
                .flatten()
                .filter_map(|&(n, cost)| distances.get(n).map(|d| (d.saturating_add(cost), n)))
                .min();
            let Some((_, next)) = next else { break };
            tree.insert(ends(at, next));
            at = next;
        }
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(a: &str, b: &str, cost: u32, state: &str) -> NetworkLinkStatus {
        NetworkLinkStatus {
            between: ends(a, b),
            cost,
            state: state.to_owned(),
            reported_by: Vec::new(),
        }
    }

    fn route(destination: &str, next_hop: Option<&str>) -> RouteStatus {
        RouteStatus {
            destination: destination.to_owned(),
            next_hop: next_hop.map(str::to_owned),
            cost: None,
        }
    }

    #[test]
    fn the_tree_follows_the_cheapest_paths_hop_by_hop() {
        // alpha–bravo–delta costs 2, alpha–charlie–delta 4; echo hangs off delta.
        let network = [
            link("alpha", "bravo", 1, "up"),
            link("bravo", "delta", 1, "up"),
            link("alpha", "charlie", 2, "up"),
            link("charlie", "delta", 2, "up"),
            link("delta", "echo", 1, "up"),
        ];
        let routes = [
            route("bravo", Some("bravo")),
            route("charlie", Some("charlie")),
            route("delta", Some("bravo")),
            route("echo", Some("bravo")),
        ];
        let tree = route_tree("alpha", &network, &routes);
        let expected: BTreeSet<Ends> = [
            ends("alpha", "bravo"),
            ends("alpha", "charlie"),
            ends("bravo", "delta"),
            ends("delta", "echo"),
        ]
        .into();
        assert_eq!(tree, expected);
    }

    #[test]
    fn down_links_and_unreachable_destinations_are_left_out() {
        let network = [
            link("alpha", "bravo", 1, "down"),
            link("alpha", "charlie", 1, "up"),
            link("bravo", "charlie", 1, "up"),
        ];
        let routes = [
            route("bravo", Some("charlie")),
            route("charlie", Some("charlie")),
            route("delta", None),
        ];
        let tree = route_tree("alpha", &network, &routes);
        let expected: BTreeSet<Ends> = [ends("alpha", "charlie"), ends("bravo", "charlie")].into();
        assert_eq!(tree, expected);
    }
}
