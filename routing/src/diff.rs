//! What changed between two topologies: the input to a live reload and to `qmgr topology diff`.
//!
//! Each list is sorted by name, so two diffs of the same pair of files are equal.

use std::collections::BTreeMap;
use std::fmt;

use crate::names::{ManagerName, QueueName};
use crate::topology::{LinkKey, Manager, PeerAddress, Queue, Topology};

/// A change of one value from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<K, V> {
    /// What changed.
    pub key: K,
    /// The value before.
    pub old: V,
    /// The value after.
    pub new: V,
}

/// The differences between two topologies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopologyDiff {
    /// Managers only in the new topology.
    pub managers_added: Vec<ManagerName>,
    /// Managers only in the old topology.
    pub managers_removed: Vec<ManagerName>,
    /// Managers whose address changed.
    pub addresses_changed: Vec<Change<ManagerName, Option<PeerAddress>>>,
    /// Links only in the new topology, with their cost.
    pub links_added: Vec<(LinkKey, u32)>,
    /// Links only in the old topology.
    pub links_removed: Vec<LinkKey>,
    /// Links whose cost changed.
    pub costs_changed: Vec<Change<LinkKey, u32>>,
    /// Queues declared only in the new topology, with their home.
    pub queues_added: Vec<(QueueName, ManagerName)>,
    /// Queues declared only in the old topology.
    pub queues_removed: Vec<QueueName>,
    /// Queues whose home moved.
    pub homes_changed: Vec<Change<QueueName, ManagerName>>,
    /// Queues whose declared limits changed (home unchanged).
    pub limits_changed: Vec<QueueName>,
}

impl TopologyDiff {
    /// The changes that turn `old` into `new`.
    pub fn between(old: &Topology, new: &Topology) -> Self {
        let mut diff = Self::default();
        for_each_pair(&old.managers, &new.managers, |name, old, new| {
            match (old, new) {
                (None, Some(_)) => diff.managers_added.push(name.clone()),
                (Some(_), None) => diff.managers_removed.push(name.clone()),
                (Some(Manager { address: old, .. }), Some(Manager { address: new, .. })) => {
                    if old != new {
                        diff.addresses_changed.push(Change {
                            key: name.clone(),
                            old: old.clone(),
                            new: new.clone(),
                        });
                    }
                }
                (None, None) => {}
            }
        });
        for_each_pair(&old.links, &new.links, |key, old, new| match (old, new) {
            (None, Some(link)) => diff.links_added.push((key.clone(), link.cost)),
            (Some(_), None) => diff.links_removed.push(key.clone()),
            (Some(old), Some(new)) if old.cost != new.cost => diff.costs_changed.push(Change {
                key: key.clone(),
                old: old.cost,
                new: new.cost,
            }),
            _ => {}
        });
        for_each_pair(&old.queues, &new.queues, |name, old, new| {
            match (old, new) {
                (None, Some(queue)) => diff.queues_added.push((name.clone(), queue.home.clone())),
                (Some(_), None) => diff.queues_removed.push(name.clone()),
                (Some(old), Some(new)) if old.home != new.home => diff.homes_changed.push(Change {
                    key: name.clone(),
                    old: old.home.clone(),
                    new: new.home.clone(),
                }),
                (Some(old), Some(new)) if limits(old) != limits(new) => {
                    diff.limits_changed.push(name.clone())
                }
                _ => {}
            }
        });
        diff
    }

    /// True when the two topologies are the same network.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn limits(queue: &Queue) -> (Option<u64>, Option<u64>) {
    (queue.max_depth, queue.max_message_bytes)
}

/// Calls `f` once per key of either map, in key order, with the value on each side.
fn for_each_pair<K: Ord, V>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    mut f: impl FnMut(&K, Option<&V>, Option<&V>),
) {
    for (key, value) in old {
        f(key, Some(value), new.get(key));
    }
    for (key, value) in new {
        if !old.contains_key(key) {
            f(key, None, Some(value));
        }
    }
}

impl fmt::Display for TopologyDiff {
    /// One line per change: `+` added, `-` removed, `~` changed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address =
            |a: &Option<PeerAddress>| a.as_ref().map_or("none".to_owned(), ToString::to_string);
        for name in &self.managers_added {
            writeln!(f, "+ manager {name}")?;
        }
        for name in &self.managers_removed {
            writeln!(f, "- manager {name}")?;
        }
        for c in &self.addresses_changed {
            writeln!(
                f,
                "~ manager {} address {} -> {}",
                c.key,
                address(&c.old),
                address(&c.new)
            )?;
        }
        for (key, cost) in &self.links_added {
            writeln!(f, "+ link {key} cost {cost}")?;
        }
        for key in &self.links_removed {
            writeln!(f, "- link {key}")?;
        }
        for c in &self.costs_changed {
            writeln!(f, "~ link {} cost {} -> {}", c.key, c.old, c.new)?;
        }
        for (name, home) in &self.queues_added {
            writeln!(f, "+ queue {name} home {home}")?;
        }
        for name in &self.queues_removed {
            writeln!(f, "- queue {name}")?;
        }
        for c in &self.homes_changed {
            writeln!(f, "~ queue {} home {} -> {}", c.key, c.old, c.new)?;
        }
        for name in &self.limits_changed {
            writeln!(f, "~ queue {name} limits")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn topology(text: &str) -> Topology {
        parse(text, "t.toml").unwrap().topology
    }

    const OLD: &str = r#"
        [managers.a]
        address = "127.0.0.1:1"
        [managers.b]
        address = "127.0.0.1:2"
        [managers.c]
        address = "127.0.0.1:3"
        [[links]]
        between = ["a", "b"]
        [[links]]
        between = ["b", "c"]
        [queues.orders]
        home = "c"
        [queues.audit]
        home = "a"
    "#;

    const NEW: &str = r#"
        [managers.a]
        address = "127.0.0.1:1"
        [managers.b]
        address = "127.0.0.1:20"
        [managers.d]
        address = "127.0.0.1:4"
        [[links]]
        between = ["b", "a"]
        cost = 3
        [[links]]
        between = ["b", "d"]
        [queues.orders]
        home = "d"
        [queues.audit]
        home = "a"
        max_depth = 10
        [queues.billing]
        home = "b"
    "#;

    #[test]
    fn lists_every_kind_of_change() {
        let diff = TopologyDiff::between(&topology(OLD), &topology(NEW));
        assert_eq!(
            diff.to_string(),
            "+ manager d\n\
             - manager c\n\
             ~ manager b address 127.0.0.1:2 -> 127.0.0.1:20\n\
             + link b-d cost 1\n\
             - link b-c\n\
             ~ link a-b cost 1 -> 3\n\
             + queue billing home b\n\
             ~ queue orders home c -> d\n\
             ~ queue audit limits\n"
        );
    }

    #[test]
    fn the_same_network_declared_differently_has_no_diff() {
        let reordered = r#"
            [queues.audit]
            home = "a"
            [managers.c]
            address = "127.0.0.1:3"
            [[links]]
            between = ["c", "b"]
            cost = 1
            [[links]]
            between = ["b", "a"]
            [managers.b]
            address = "127.0.0.1:2"
            [managers.a]
            address = "127.0.0.1:1"
            [queues.orders]
            home = "c"
        "#;
        assert!(TopologyDiff::between(&topology(OLD), &topology(reordered)).is_empty());
    }
}
