//! Random connected networks for the property tests: a random spanning tree plus extra links.

use std::collections::BTreeSet;

/// Manager names that sort in an order unrelated to their indices, so tie-breaking by name is
/// exercised.
pub(crate) fn names(keys: &[u32]) -> Vec<String> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| format!("m{key:03}-{i}"))
        .collect()
}

/// `(a, b, cost)` links: node `i + 1` linked to `parents[i]` (a spanning tree, so the network
/// is connected), then `extra`; no self-links, no pair twice; costs taken in turn.
pub(crate) fn links(
    parents: Vec<usize>,
    extra: Vec<(usize, usize)>,
    costs: &[u32],
) -> Vec<(usize, usize, u32)> {
    let mut pairs = BTreeSet::new();
    let mut links = Vec::new();
    let tree = parents.into_iter().enumerate().map(|(i, p)| (i + 1, p));
    for (a, b) in tree.chain(extra) {
        if a != b && pairs.insert((a.min(b), a.max(b))) {
            links.push((a, b, costs[links.len() % costs.len()]));
        }
    }
    links
}
