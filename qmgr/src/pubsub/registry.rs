//! This manager's subscriptions: durable ones (a local queue fed by a filter, kept in the
//! journal) and transient ones (a client connection's, memory only).
//!
//! Invariants: each filter tree holds exactly the subscriptions of its map; `filters` counts,
//! per filter, the subscriptions that use it, so the advertised interest is its keys; the
//! limits ([`DURABLE_SUBSCRIPTIONS_MAX`], [`TRANSIENT_PER_CONNECTION_MAX`], [`FILTERS_MAX`])
//! hold after every call.

use std::collections::{BTreeMap, BTreeSet};

use hopmq::QueueName;
use hopmq_routing::topic::{Filter, FilterTree, Topic};

use hopmq_routing::linkstate::INTEREST_BYTES_MAX;

use super::{DURABLE_SUBSCRIPTIONS_MAX, FILTERS_MAX, TRANSIENT_PER_CONNECTION_MAX};

/// A durable subscription as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionDef {
    /// Its name, also its queue's.
    pub name: QueueName,
    /// What it matches.
    pub filter: Filter,
    /// Its queue's depth limit, if not the manager's default.
    pub max_depth: Option<u64>,
}

/// A transient subscription's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient {
    /// What it matches.
    pub filter: Filter,
    /// Publications handed to its client.
    pub delivered: u64,
    /// Publications lost because its client fell behind, since it started.
    pub missed: u64,
    /// Of those, the ones its client has not been told of yet.
    pub unreported: u64,
}

/// Why a subscription cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A durable subscription of that name exists with another filter.
    #[error(
        "subscription `{name}` exists with filter `{existing}`, not `{requested}`; delete it first"
    )]
    OtherFilter {
        /// Its name.
        name: String,
        /// Its filter.
        existing: String,
        /// The filter asked for.
        requested: String,
    },
    /// The manager holds its limit of durable subscriptions.
    #[error("this manager holds {DURABLE_SUBSCRIPTIONS_MAX} durable subscriptions, its limit")]
    TooManyDurable,
    /// The connection holds its limit of transient subscriptions.
    #[error("this connection holds {TRANSIENT_PER_CONNECTION_MAX} subscriptions, its limit")]
    TooManyTransient,
    /// One more filter would pass the manager's limit.
    #[error(
        "this manager's subscriptions use {FILTERS_MAX} distinct filters, its limit; reuse one or widen one"
    )]
    TooManyFilters,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Registry {
    durable: BTreeMap<QueueName, SubscriptionDef>,
    durable_tree: FilterTree<QueueName>,
    transient: BTreeMap<(u64, u64), Transient>,
    transient_tree: FilterTree<(u64, u64)>,
    filters: BTreeMap<Filter, usize>,
}

impl Registry {
    /// Makes a durable subscription. `Ok(false)`: it exists with this filter already (its
    /// depth limit is updated).
    pub fn create(&mut self, def: SubscriptionDef) -> Result<bool, RegistryError> {
        if let Some(existing) = self.durable.get_mut(&def.name) {
            if existing.filter != def.filter {
                return Err(RegistryError::OtherFilter {
                    name: def.name.to_string(),
                    existing: existing.filter.to_string(),
                    requested: def.filter.to_string(),
                });
            }
            existing.max_depth = def.max_depth.or(existing.max_depth);
            return Ok(false);
        }
        if self.durable.len() >= DURABLE_SUBSCRIPTIONS_MAX {
            return Err(RegistryError::TooManyDurable);
        }
        self.check_filter_room(&def.filter)?;
        self.durable_tree.insert(&def.filter, def.name.clone());
        *self.filters.entry(def.filter.clone()).or_default() += 1;
        self.durable.insert(def.name.clone(), def);
        Ok(true)
    }

    /// Ends a durable subscription.
    pub fn delete(&mut self, name: &QueueName) -> Option<SubscriptionDef> {
        let def = self.durable.remove(name)?;
        self.durable_tree.remove(&def.filter, name);
        self.release_filter(&def.filter);
        Some(def)
    }

    /// Makes a transient subscription `id` of `connection`.
    pub fn subscribe(
        &mut self,
        (connection, id): (u64, u64),
        filter: Filter,
    ) -> Result<(), RegistryError> {
        let held = self
            .transient
            .range((connection, 0)..=(connection, u64::MAX))
            .count();
        if held >= TRANSIENT_PER_CONNECTION_MAX {
            return Err(RegistryError::TooManyTransient);
        }
        self.check_filter_room(&filter)?;
        self.transient_tree.insert(&filter, (connection, id));
        *self.filters.entry(filter.clone()).or_default() += 1;
        self.transient.insert(
            (connection, id),
            Transient {
                filter,
                delivered: 0,
                missed: 0,
                unreported: 0,
            },
        );
        Ok(())
    }

    /// Ends a transient subscription; false if there is none.
    pub fn unsubscribe(&mut self, key: (u64, u64)) -> bool {
        let Some(transient) = self.transient.remove(&key) else {
            return false;
        };
        self.transient_tree.remove(&transient.filter, &key);
        self.release_filter(&transient.filter);
        true
    }

    /// Ends every transient subscription of `connection`.
    pub fn disconnect(&mut self, connection: u64) {
        let keys: Vec<(u64, u64)> = self
            .transient
            .range((connection, 0)..=(connection, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.unsubscribe(key);
        }
    }

    fn check_filter_room(&self, filter: &Filter) -> Result<(), RegistryError> {
        if self.filters.contains_key(filter) {
            return Ok(());
        }
        // Within what an advertisement carries: a filter accepted here is always advertised.
        let bytes: usize = self.filters.keys().map(|f| f.as_str().len()).sum();
        if self.filters.len() >= FILTERS_MAX || bytes + filter.as_str().len() > INTEREST_BYTES_MAX {
            return Err(RegistryError::TooManyFilters);
        }
        Ok(())
    }

    fn release_filter(&mut self, filter: &Filter) {
        if let Some(count) = self.filters.get_mut(filter) {
            *count -= 1;
            if *count == 0 {
                self.filters.remove(filter);
            }
        }
    }

    /// The durable subscriptions `topic` goes to, into `out`.
    pub fn durable_matching(&self, topic: &Topic, out: &mut BTreeSet<QueueName>) {
        self.durable_tree.matching_into(topic, out);
    }

    /// The transient subscriptions `topic` goes to, into `out`.
    pub fn transient_matching(&self, topic: &Topic, out: &mut BTreeSet<(u64, u64)>) {
        self.transient_tree.matching_into(topic, out);
    }

    /// Whether any subscription here matches `topic`.
    pub fn wants(&self, topic: &Topic) -> bool {
        !self.durable_tree.matching(topic).is_empty()
            || !self.transient_tree.matching(topic).is_empty()
    }

    pub fn durable(&self, name: &QueueName) -> Option<&SubscriptionDef> {
        self.durable.get(name)
    }

    pub fn durables(&self) -> impl Iterator<Item = &SubscriptionDef> {
        self.durable.values()
    }

    pub fn transient_mut(&mut self, key: (u64, u64)) -> Option<&mut Transient> {
        self.transient.get_mut(&key)
    }

    pub fn transients(&self) -> impl Iterator<Item = (&(u64, u64), &Transient)> {
        self.transient.iter()
    }

    /// The filters this manager advertises, sorted.
    pub fn interest(&self) -> Vec<Filter> {
        self.filters.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> Filter {
        Filter::new(s).unwrap()
    }

    fn topic(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn def(name: &str, f: &str) -> SubscriptionDef {
        SubscriptionDef {
            name: QueueName::new(name).unwrap(),
            filter: filter(f),
            max_depth: None,
        }
    }

    #[test]
    fn interest_is_the_filters_in_use_and_goes_with_the_last_user() {
        let mut registry = Registry::default();
        assert_eq!(registry.create(def("eu", "prices.eu.*")), Ok(true));
        assert_eq!(registry.create(def("eu", "prices.eu.*")), Ok(false));
        registry.subscribe((1, 1), filter("prices.eu.*")).unwrap();
        registry.subscribe((1, 2), filter("prices.>")).unwrap();
        assert_eq!(
            registry.interest(),
            vec![filter("prices.>"), filter("prices.eu.*")]
        );
        registry.delete(&QueueName::new("eu").unwrap());
        assert_eq!(
            registry.interest().len(),
            2,
            "a transient still uses prices.eu.*"
        );
        registry.disconnect(1);
        assert!(registry.interest().is_empty());
        assert!(!registry.wants(&topic("prices.eu.btc")));
    }

    #[test]
    fn overlapping_subscriptions_each_match_once() {
        let mut registry = Registry::default();
        registry.create(def("a", "a.*")).unwrap();
        registry.create(def("b", "a.>")).unwrap();
        registry.create(def("c", "a.b")).unwrap();
        let mut out = BTreeSet::new();
        registry.durable_matching(&topic("a.b"), &mut out);
        assert_eq!(out.len(), 3);
        out.clear();
        registry.durable_matching(&topic("a.b.c"), &mut out);
        assert_eq!(
            out.into_iter().map(|q| q.to_string()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn a_name_keeps_its_filter_and_limits_hold() {
        let mut registry = Registry::default();
        registry.create(def("a", "x.*")).unwrap();
        let error = registry.create(def("a", "y.*")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "subscription `a` exists with filter `x.*`, not `y.*`; delete it first"
        );
        for id in 0..TRANSIENT_PER_CONNECTION_MAX as u64 {
            registry.subscribe((9, id), filter("x.*")).unwrap();
        }
        assert_eq!(
            registry.subscribe((9, 999), filter("x.*")),
            Err(RegistryError::TooManyTransient)
        );
        registry.subscribe((10, 1), filter("x.*")).unwrap();
        for i in 0..FILTERS_MAX - 1 {
            registry
                .subscribe((100 + i as u64, 1), filter(&format!("f{i}")))
                .unwrap();
        }
        assert_eq!(
            registry.subscribe((5000, 1), filter("one.more")),
            Err(RegistryError::TooManyFilters)
        );
        registry
            .subscribe((5000, 1), filter("x.*"))
            .expect("a filter in use costs nothing");
    }
}
