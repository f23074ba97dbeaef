//! Property tests of route computation over random connected networks with random down-sets:
//! next hops reach every reachable destination without loops at the true shortest distance
//! (checked against Floyd–Warshall), and results do not depend on declaration order.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

use hopmq_routing::{DownLinks, LinkKey, ManagerName, Network, RouteTable, parse};
use proptest::prelude::*;

mod common;

#[derive(Debug, Clone)]
struct Case {
    names: Vec<String>,
    /// (a, b, cost), a != b, no duplicate pairs.
    links: Vec<(usize, usize, u32)>,
    down: Vec<bool>,
    /// A permutation used to redeclare managers and links in another order.
    shuffle_seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=60)
        .prop_flat_map(|n| {
            let parents = (1..n).map(|i| 0..i).collect::<Vec<_>>();
            let extra = proptest::collection::vec((0..n, 0..n), 0..=2 * n);
            let costs = proptest::collection::vec(1u32..=4, 3 * n);
            let downs = proptest::collection::vec(proptest::bool::weighted(0.15), 3 * n);
            let name_keys = proptest::collection::vec(0u32..1000, n);
            (parents, extra, costs, downs, name_keys, any::<u64>())
        })
        .prop_map(|(parents, extra, costs, downs, name_keys, shuffle_seed)| {
            let names = common::names(&name_keys);
            let links = common::links(parents, extra, &costs);
            let down = (0..links.len()).map(|i| downs[i % downs.len()]).collect();
            Case {
                names,
                links,
                down,
                shuffle_seed,
            }
        })
}

/// A deterministic permutation of `0..n` (splitmix64 keys, sorted).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut keyed: Vec<(u64, usize)> = (0..n)
        .map(|i| {
            let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31), i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

fn text(case: &Case, shuffled: bool) -> String {
    let order = |n| {
        if shuffled {
            permutation(n, case.shuffle_seed)
        } else {
            (0..n).collect()
        }
    };
    let mut out = String::new();
    for i in order(case.names.len()) {
        out += &format!(
            "[managers.{}]\naddress = \"127.0.0.1:{}\"\n",
            case.names[i],
            1000 + i
        );
    }
    for i in order(case.links.len()) {
        let (a, b, cost) = case.links[i];
        let (a, b) = if shuffled && case.shuffle_seed % 2 == 0 {
            (b, a)
        } else {
            (a, b)
        };
        out += &format!(
            "[[links]]\nbetween = [\"{}\", \"{}\"]\ncost = {cost}\n",
            case.names[a], case.names[b]
        );
    }
    out
}

fn down_links(case: &Case) -> DownLinks {
    case.links
        .iter()
        .zip(&case.down)
        .filter(|(_, down)| **down)
        .map(|(&(a, b, _), _)| {
            LinkKey::new(
                case.names[a].parse().unwrap(),
                case.names[b].parse().unwrap(),
            )
            .unwrap()
        })
        .collect()
}

/// Shortest distances over the live links, by brute force.
fn floyd_warshall(case: &Case) -> Vec<Vec<Option<u64>>> {
    let n = case.names.len();
    let mut d = vec![vec![None; n]; n];
    for (i, row) in d.iter_mut().enumerate() {
        row[i] = Some(0);
    }
    for (&(a, b, cost), &down) in case.links.iter().zip(&case.down) {
        if !down {
            d[a][b] = Some(u64::from(cost));
            d[b][a] = Some(u64::from(cost));
        }
    }
    for k in 0..n {
        for i in 0..n {
            for j in 0..n {
                if let (Some(ik), Some(kj)) = (d[i][k], d[k][j]) {
                    if d[i][j].is_none_or(|ij| ik + kj < ij) {
                        d[i][j] = Some(ik + kj);
                    }
                }
            }
        }
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn next_hops_follow_shortest_paths_without_loops(case in case()) {
        let topology = parse(&text(&case, false), "random.toml").unwrap().topology;
        let network = Network::new(&topology);
        let down = down_links(&case);
        let tables = network.all_routes(&down);
        let table_of = |name: &ManagerName| -> &RouteTable {
            tables.iter().find(|t| t.source == *name).unwrap()
        };
        let distance = floyd_warshall(&case);
        let index_of = |name: &str| case.names.iter().position(|n| n == name).unwrap();
        let n = case.names.len();

        for table in &tables {
            prop_assert_eq!(table, &network.routes_from(table.source.as_str(), &down).unwrap());
            prop_assert_eq!(table.routes.len(), n - 1);
            let s = index_of(table.source.as_str());
            for route in &table.routes {
                let d = index_of(route.destination.as_str());
                let Some(true_distance) = distance[s][d] else {
                    prop_assert!(route.next_hop.is_none() && route.cost.is_none());
                    prop_assert!(network.path(table.source.as_str(), route.destination.as_str(), &down).is_none());
                    continue;
                };
                prop_assert_eq!(route.cost, Some(true_distance));
                // Walk the next hops as messages would, each manager using its own table.
                let mut at = table.source.clone();
                let mut walked = vec![at.clone()];
                let mut cost = 0;
                while at != route.destination {
                    prop_assert!(walked.len() <= n, "loop: {:?}", walked);
                    let hop = table_of(&at).route(route.destination.as_str()).unwrap();
                    let next = hop.next_hop.clone().unwrap();
                    let link = topology.link(&at, &next).unwrap();
                    prop_assert!(!down.contains(&link.key), "used a down link {}", link.key);
                    cost += u64::from(link.cost);
                    walked.push(next.clone());
                    at = next;
                }
                prop_assert_eq!(cost, true_distance);
                let path = network.path(table.source.as_str(), route.destination.as_str(), &down).unwrap();
                prop_assert_eq!(path.hops, walked);
                prop_assert_eq!(path.cost, true_distance);
            }
        }
    }

    #[test]
    fn routes_do_not_depend_on_declaration_order(case in case()) {
        let down = down_links(&case);
        let first = Network::new(&parse(&text(&case, false), "a.toml").unwrap().topology);
        let second = Network::new(&parse(&text(&case, true), "b.toml").unwrap().topology);
        prop_assert_eq!(first.all_routes(&down), second.all_routes(&down));
        // And again from the same input: no hidden state, no hash-order effects.
        prop_assert_eq!(first.all_routes(&down), Network::new(&parse(&text(&case, false), "a.toml").unwrap().topology).all_routes(&down));
    }
}
