//! Retained publications at their publishing manager: the last one retained per topic, kept
//! as a message of the system queue `hopmq.retained`, and the replaced ones to remove once the
//! write that replaced them is durable.
//!
//! Invariants: at most one retained seq per topic; a replaced seq is retired only after the
//! commit that wrote its replacement and its removal has completed (commits complete in order).

use std::collections::BTreeMap;

use hopmq_routing::topic::{Filter, Topic};

/// Topics one manager retains a publication for.
pub const RETAINED_TOPICS_MAX: usize = 10_000;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Retained {
    by_topic: BTreeMap<Topic, u64>,
    /// `(commits made when the replacement was written, replaced seq)`, oldest first.
    retiring: Vec<(u64, u64)>,
}

impl Retained {
    /// Whether `topic` may be retained (it is already, or there is room for one more).
    pub fn has_room_for(&self, topic: &Topic) -> bool {
        self.by_topic.contains_key(topic) || self.by_topic.len() < RETAINED_TOPICS_MAX
    }

    /// `seq` is now `topic`'s retained publication; the one it replaces, if any.
    pub fn retain(&mut self, topic: Topic, seq: u64) -> Option<u64> {
        self.by_topic.insert(topic, seq).filter(|&old| old != seq)
    }

    /// `old` is to go once `commits` commits have completed.
    pub fn retire_after(&mut self, commits: u64, old: u64) {
        self.retiring.push((commits, old));
    }

    /// The replaced seqs whose replacement is durable, with `done` commits completed.
    pub fn due(&mut self, done: u64) -> Vec<u64> {
        let split = self.retiring.partition_point(|&(after, _)| after <= done);
        self.retiring.drain(..split).map(|(_, seq)| seq).collect()
    }

    /// The retained seqs of every topic `filter` matches, in topic order.
    pub fn matching(&self, filter: &Filter) -> Vec<u64> {
        self.by_topic
            .iter()
            .filter(|(topic, _)| filter.matches(topic))
            .map(|(_, &seq)| seq)
            .collect()
    }

    /// How many topics have a retained publication.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    #[test]
    fn the_last_retained_wins_and_the_replaced_one_goes_once_durable() {
        let mut retained = Retained::default();
        assert_eq!(retained.retain(topic("a.b"), 10), None);
        assert_eq!(retained.retain(topic("a.c"), 11), None);
        assert_eq!(retained.retain(topic("a.b"), 12), Some(10));
        retained.retire_after(5, 10);
        assert!(
            retained.due(4).is_empty(),
            "its replacement is not durable yet"
        );
        assert_eq!(retained.due(5), vec![10]);
        assert!(retained.due(9).is_empty());
        assert_eq!(
            retained.matching(&Filter::new("a.*").unwrap()),
            vec![12, 11]
        );
        assert_eq!(retained.matching(&Filter::new("a.c").unwrap()), vec![11]);
        assert_eq!(retained.len(), 2);
    }
}
