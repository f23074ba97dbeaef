//! A publication's destination set, as its record carries it, and its split at a hop.
//!
//! The set is written in the record's `destination` field as `#` and the managers' names,
//! sorted, comma-separated: neither character can appear in an address, so a publication is
//! never taken for a queue message, and a manager that predates publish/subscribe dead-letters
//! it ("bad destination") rather than deliver it anywhere.

use std::collections::BTreeMap;

use hopmq::ManagerName;

/// The first character of a publication's destination.
pub const PUBLICATION_MARK: char = '#';

/// The managers a publication still has to reach, sorted and unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations(Vec<ManagerName>);

/// Why a publication's destination does not read as a set of managers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publication destination `{destination}`: {reason}")]
pub struct BadDestinations {
    destination: String,
    reason: String,
}

impl Destinations {
    /// The set of `managers` (sorted and deduplicated here).
    pub fn new(managers: impl IntoIterator<Item = ManagerName>) -> Self {
        let mut managers: Vec<ManagerName> = managers.into_iter().collect();
        managers.sort_unstable();
        managers.dedup();
        Self(managers)
    }

    /// Whether `destination` is a publication's (whatever its set).
    pub fn is_publication(destination: &str) -> bool {
        destination.starts_with(PUBLICATION_MARK)
    }

    /// Reads a publication's destination; `None` if it is a queue message's.
    pub fn parse(destination: &str) -> Option<Result<Self, BadDestinations>> {
        let list = destination.strip_prefix(PUBLICATION_MARK)?;
        let bad = |reason: String| BadDestinations {
            destination: destination.chars().take(256).collect(),
            reason,
        };
        if list.is_empty() {
            return Some(Err(bad("it names no manager".into())));
        }
        let managers: Result<Vec<ManagerName>, _> = list.split(',').map(ManagerName::new).collect();
        Some(match managers {
            Ok(managers) if managers.windows(2).all(|w| w[0] < w[1]) => Ok(Self(managers)),
            Ok(_) => Err(bad("managers not sorted or repeated".into())),
            Err(e) => Err(bad(e.to_string())),
        })
    }

    /// The record's `destination` for this set.
    pub fn encode(&self) -> String {
        let mut out =
            String::with_capacity(1 + self.0.iter().map(|m| m.as_str().len() + 1).sum::<usize>());
        out.push(PUBLICATION_MARK);
        for (i, manager) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(manager.as_str());
        }
        out
    }

    /// The managers, sorted.
    pub fn managers(&self) -> &[ManagerName] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, manager: &str) -> bool {
        self.0.binary_search_by(|m| m.as_str().cmp(manager)).is_ok()
    }

    /// Splits the set at manager `me`: whether `me` is in it, and the others grouped by where
    /// `next` sends them (`None`: no route now).
    pub fn split<K: Ord>(
        &self,
        me: &str,
        mut next: impl FnMut(&ManagerName) -> K,
    ) -> (bool, BTreeMap<K, Destinations>) {
        let mut here = false;
        let mut groups: BTreeMap<K, Destinations> = BTreeMap::new();
        for manager in &self.0 {
            if manager.as_str() == me {
                here = true;
                continue;
            }
            // Pushed in sorted order, so every group stays sorted.
            groups
                .entry(next(manager))
                .or_default()
                .0
                .push(manager.clone());
        }
        (here, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Destinations {
        Destinations::new(names.iter().map(|n| ManagerName::new(*n).unwrap()))
    }

    #[test]
    fn a_set_round_trips_through_its_destination() {
        let d = set(&["delta", "bravo", "delta"]);
        assert_eq!(d.encode(), "#bravo,delta");
        assert_eq!(Destinations::parse("#bravo,delta"), Some(Ok(d)));
        assert_eq!(Destinations::parse("orders@bravo"), None);
        assert!(Destinations::is_publication("#x"));
    }

    #[test]
    fn malformed_sets_are_refused_with_a_reason() {
        for bad in ["#", "#b,a", "#a,a", "#a,,b", "#a b"] {
            let error = Destinations::parse(bad).unwrap().unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("publication destination `{bad}`")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_split_groups_by_next_hop_and_finds_this_manager() {
        let d = set(&["alpha", "bravo", "charlie", "delta"]);
        let (here, groups) = d.split("bravo", |m| match m.as_str() {
            "alpha" => Some("alpha"),
            "charlie" | "delta" => Some("charlie"),
            _ => None,
        });
        assert!(here);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&Some("charlie")], set(&["charlie", "delta"]));
        assert_eq!(groups[&Some("alpha")], set(&["alpha"]));
    }
}
