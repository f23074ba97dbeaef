//! Which other managers want which topics: their advertised filters, as link state flooding
//! delivered them, indexed for matching.
//!
//! Invariant: the tree holds exactly the filters of `by_manager`.

use std::collections::{BTreeMap, BTreeSet};

use hopmq::ManagerName;
use hopmq_routing::topic::{Filter, FilterTree, Topic};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Interest {
    by_manager: BTreeMap<ManagerName, Vec<Filter>>,
    tree: FilterTree<ManagerName>,
}

impl Interest {
    /// `manager`'s filters are now `filters` (sorted). Returns whether they changed.
    pub fn set(&mut self, manager: &ManagerName, filters: &[Filter]) -> bool {
        let old = self.by_manager.get(manager).map_or(&[][..], Vec::as_slice);
        if old == filters {
            return false;
        }
        if let Some(old) = self.by_manager.remove(manager) {
            for filter in &old {
                self.tree.remove(filter, manager);
            }
        }
        for filter in filters {
            self.tree.insert(filter, manager.clone());
        }
        if filters.is_empty() {
            self.by_manager.remove(manager);
        } else {
            self.by_manager.insert(manager.clone(), filters.to_vec());
        }
        true
    }

    /// Forgets every manager `keep` says no to (gone from the topology).
    pub fn retain(&mut self, mut keep: impl FnMut(&ManagerName) -> bool) {
        let gone: Vec<ManagerName> = self
            .by_manager
            .keys()
            .filter(|m| !keep(m))
            .cloned()
            .collect();
        for manager in gone {
            self.set(&manager, &[]);
        }
    }

    /// The managers with a filter matching `topic`, into `out`.
    pub fn matching(&self, topic: &Topic, out: &mut BTreeSet<ManagerName>) {
        self.tree.matching_into(topic, out);
    }

    /// Every manager's filters, by manager.
    pub fn by_manager(&self) -> &BTreeMap<ManagerName, Vec<Filter>> {
        &self.by_manager
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    fn filters(list: &[&str]) -> Vec<Filter> {
        list.iter().map(|f| Filter::new(*f).unwrap()).collect()
    }

    #[test]
    fn a_new_set_replaces_the_old_and_an_empty_one_withdraws() {
        let mut interest = Interest::default();
        assert!(interest.set(&name("bravo"), &filters(&["a.*", "b.>"])));
        assert!(!interest.set(&name("bravo"), &filters(&["a.*", "b.>"])));
        assert!(interest.set(&name("delta"), &filters(&["a.x"])));
        let mut out = BTreeSet::new();
        interest.matching(&Topic::new("a.x").unwrap(), &mut out);
        assert_eq!(out, BTreeSet::from([name("bravo"), name("delta")]));
        interest.set(&name("bravo"), &filters(&["b.>"]));
        out.clear();
        interest.matching(&Topic::new("a.x").unwrap(), &mut out);
        assert_eq!(out, BTreeSet::from([name("delta")]));
        interest.retain(|m| m.as_str() != "delta");
        out.clear();
        interest.matching(&Topic::new("a.x").unwrap(), &mut out);
        assert!(out.is_empty());
        assert_eq!(interest.by_manager().len(), 1);
    }
}
