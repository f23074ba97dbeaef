//! The link-state database: what one manager knows of the state of every link, from its own
//! observations and from the advertisements ([`Lsa`]) its neighbours flood to it.
//!
//! Owns this manager's own advertisement (its sequence number and whether each of its links is
//! usable) and the newest advertisement heard from every other manager of the topology. From
//! them it derives the links routes must leave out ([`LinkStateDb::down_links`]).
//!
//! Must not do I/O, read a clock or decide when a neighbour is dead: the caller observes links,
//! moves advertisements between managers and passes sequence numbers in. Every collection is a
//! `BTreeMap`, so two databases fed the same inputs give the same answers.
//!
//! Invariants:
//! - every stored advertisement passed [`Lsa::validate`] and comes from a manager of the last
//!   topology given to [`LinkStateDb::set_topology`], never from this manager itself;
//! - the own sequence number only grows, and grows whenever the own advertisement changes;
//! - per origin, the stored advertisement only ever gets newer in the order of
//!   [`Lsa::is_newer_than`], a total order, so managers that exchange what they hold settle on
//!   the same advertisement of each origin whatever order messages arrive in.
//!
//! Why this is enough for every manager to route as if it knew the truth: once flooding is
//! quiet, two managers joined by a usable link hold the same advertisement of every origin (each
//! sends the other whatever it learns while the link is up, and everything it holds when the
//! link comes up), so everyone in a connected part of the network holds each member's current
//! advertisement. A link inside that part is up in both ends' current views; a link leaving it
//! is down in the view of its end inside. Advertisements from beyond the part may be stale, but
//! they only speak of links that no route from inside can reach.

use std::collections::{BTreeMap, BTreeSet};

use crate::names::ManagerName;
use crate::network::DownLinks;
use crate::topic::Filter;
use crate::topology::{LinkKey, MANAGERS_MAX, Topology};

/// The highest sequence number an advertisement may carry. Wall-clock milliseconds (what the
/// daemon starts from) reach 2^63 in about 292 million years; the headroom above lets a manager
/// jump past any valid advertisement of its own without overflowing.
pub const SEQ_MAX: u64 = u64::MAX / 2;

/// The most filters one advertisement may carry (a manager's subscriptions' distinct filters).
pub const INTEREST_FILTERS_MAX: usize = 1024;

/// The most bytes of filters one advertisement may carry, so the whole database of a large
/// network still floods in frames of bounded size.
pub const INTEREST_BYTES_MAX: usize = 64 * 1024;

/// What a manager holds, advertised with its links for the operators' views (the web
/// console's map): a summary, renewed every few seconds at most, never used for routing.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Load {
    /// Its local queues (system queues included).
    pub queues: u64,
    /// The messages in them.
    pub depth: u64,
}

/// One manager's advertisement of the state of its own links.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lsa {
    /// The manager whose links these are.
    pub origin: ManagerName,
    /// Higher is newer; the origin increments it per change.
    pub seq: u64,
    /// Per neighbour of the origin (sorted by name, unique): whether the origin considers the
    /// link usable (alive and not drained).
    pub links: Vec<(ManagerName, bool)>,
    /// The topic filters of the origin's subscriptions (sorted, unique): publications matching
    /// one of them go to it. Flooded with the links, a whole set at a time.
    pub interest: Vec<Filter>,
    /// What the origin held when it advertised (since channel protocol 7).
    pub load: Load,
}

/// Why an advertisement is malformed: a peer sending one is broken or hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsaError {
    /// The sequence number is above [`SEQ_MAX`].
    #[error("advertisement of {origin} has sequence number {seq}, above the limit {SEQ_MAX}")]
    SeqTooHigh {
        /// The advertisement's origin.
        origin: ManagerName,
        /// Its sequence number.
        seq: u64,
    },
    /// More links than a manager of any topology can have.
    #[error("advertisement of {origin} lists {count} links; a manager has at most {} neighbours", MANAGERS_MAX - 1)]
    TooManyLinks {
        /// The advertisement's origin.
        origin: ManagerName,
        /// How many links it lists.
        count: usize,
    },
    /// The links are not sorted by name, or a neighbour appears twice.
    #[error("advertisement of {origin} lists {neighbour} out of order or twice")]
    Unsorted {
        /// The advertisement's origin.
        origin: ManagerName,
        /// The first neighbour out of place.
        neighbour: ManagerName,
    },
    /// The origin lists a link to itself.
    #[error("advertisement of {origin} lists a link to itself")]
    SelfLink {
        /// The advertisement's origin.
        origin: ManagerName,
    },
    /// More filters, or more bytes of them, than an advertisement may carry.
    #[error(
        "advertisement of {origin} carries {count} filters of {bytes} bytes; the limits are {INTEREST_FILTERS_MAX} and {INTEREST_BYTES_MAX}"
    )]
    TooMuchInterest {
        /// The advertisement's origin.
        origin: ManagerName,
        /// How many filters it carries.
        count: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// The filters are not sorted, or one appears twice.
    #[error("advertisement of {origin} lists filter `{filter}` out of order or twice")]
    UnsortedInterest {
        /// The advertisement's origin.
        origin: ManagerName,
        /// The first filter out of place.
        filter: Filter,
    },
}

impl Lsa {
    /// Checks what [`LinkStateDb::receive`] relies on: a sequence number at most [`SEQ_MAX`],
    /// at most `MANAGERS_MAX - 1` links, sorted by name, unique, none to the origin itself.
    pub fn validate(&self) -> Result<(), LsaError> {
        if self.seq > SEQ_MAX {
            return Err(LsaError::SeqTooHigh {
                origin: self.origin.clone(),
                seq: self.seq,
            });
        }
        if self.links.len() >= MANAGERS_MAX {
            return Err(LsaError::TooManyLinks {
                origin: self.origin.clone(),
                count: self.links.len(),
            });
        }
        for pair in self.links.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(LsaError::Unsorted {
                    origin: self.origin.clone(),
                    neighbour: pair[1].0.clone(),
                });
            }
        }
        if self.link(self.origin.as_str()).is_some() {
            return Err(LsaError::SelfLink {
                origin: self.origin.clone(),
            });
        }
        let bytes = interest_bytes(&self.interest);
        if self.interest.len() > INTEREST_FILTERS_MAX || bytes > INTEREST_BYTES_MAX {
            return Err(LsaError::TooMuchInterest {
                origin: self.origin.clone(),
                count: self.interest.len(),
                bytes,
            });
        }
        if let Some(pair) = self.interest.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(LsaError::UnsortedInterest {
                origin: self.origin.clone(),
                filter: pair[1].clone(),
            });
        }
        Ok(())
    }

    /// Whether the origin considers its link to `neighbour` usable; `None` if it does not
    /// mention that link. Assumes the links are sorted (see [`Lsa::validate`]).
    pub fn link(&self, neighbour: &str) -> Option<bool> {
        self.links
            .binary_search_by(|(name, _)| name.as_str().cmp(neighbour))
            .ok()
            .map(|i| self.links[i].1)
    }

    /// Whether `self` supersedes `other`, an advertisement of the same origin: a higher
    /// sequence number, or the same one with links that sort greater. Equal sequence numbers
    /// with different links come only from an origin that restarted below its previous run's
    /// numbers; breaking the tie by content, instead of keeping whichever arrived first, is
    /// what lets every manager settle on the same one (and the origin then renews past both).
    pub fn is_newer_than(&self, other: &Lsa) -> bool {
        debug_assert_eq!(self.origin, other.origin);
        (self.seq, &self.links, &self.interest, self.load)
            > (other.seq, &other.links, &other.interest, other.load)
    }
}

/// The bytes `filters` take (their text), as [`INTEREST_BYTES_MAX`] counts them.
pub fn interest_bytes(filters: &[Filter]) -> usize {
    filters.iter().map(|f| f.as_str().len()).sum()
}

/// What [`LinkStateDb::receive`] made of an advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Newer than what was known: stored; the caller floods it to every other neighbour.
    New,
    /// Not newer than what is known (or from an origin not in the topology, or malformed):
    /// dropped.
    Ignored,
    /// An advertisement of this manager's own with a sequence number at or above its own (it
    /// was issued before a restart): this manager's sequence jumped past it; the caller floods
    /// [`LinkStateDb::own`].
    OwnRenewed,
}

/// One manager's link-state database. See the module documentation.
#[derive(Debug, Clone)]
pub struct LinkStateDb {
    me: ManagerName,
    /// The sequence number of the current own advertisement.
    seq: u64,
    /// Per neighbour, whether this manager's link to it is usable.
    links: BTreeMap<ManagerName, bool>,
    /// This manager's subscriptions' filters, sorted and unique.
    interest: Vec<Filter>,
    /// What this manager last advertised it holds.
    load: Load,
    /// The newest advertisement of every other manager heard from.
    others: BTreeMap<ManagerName, Lsa>,
    /// The managers of the last topology given; advertisements from anyone else are dropped.
    /// Empty until the first `set_topology`.
    managers: BTreeSet<ManagerName>,
}

impl LinkStateDb {
    /// A database with no links and no topology yet: until [`LinkStateDb::set_topology`] it
    /// accepts no advertisement but its own (to renew past it).
    ///
    /// `first_seq`: the sequence number of the first own advertisement (the daemon passes
    /// wall-clock milliseconds so a restart usually starts above its previous run;
    /// [`Received::OwnRenewed`] covers the rest). Values above [`SEQ_MAX`] are lowered to it.
    pub fn new(me: ManagerName, first_seq: u64) -> Self {
        Self {
            me,
            seq: first_seq.min(SEQ_MAX),
            links: BTreeMap::new(),
            interest: Vec::new(),
            load: Load::default(),
            others: BTreeMap::new(),
            managers: BTreeSet::new(),
        }
    }

    /// This manager's name.
    pub fn me(&self) -> &ManagerName {
        &self.me
    }

    /// Sets whether this manager's link to `neighbour` is usable. Returns true if the own
    /// advertisement changed (its seq then incremented). A `neighbour` that is not one of the
    /// own links (see [`LinkStateDb::set_topology`]) changes nothing: a late report about a
    /// link a topology edit just removed.
    pub fn set_local(&mut self, neighbour: &ManagerName, usable: bool) -> bool {
        match self.links.get_mut(neighbour) {
            Some(state) if *state != usable => {
                *state = usable;
                self.bump();
                true
            }
            _ => false,
        }
    }

    /// Sets the filters this manager advertises (sorted and deduplicated here). Returns true if
    /// the own advertisement changed (its seq then incremented). The caller keeps them within
    /// [`INTEREST_FILTERS_MAX`] and [`INTEREST_BYTES_MAX`]; past them, the set is cut to fit,
    /// so this manager never floods an advertisement its neighbours refuse.
    pub fn set_interest(&mut self, mut filters: Vec<Filter>) -> bool {
        filters.sort_unstable();
        filters.dedup();
        filters.truncate(INTEREST_FILTERS_MAX);
        while interest_bytes(&filters) > INTEREST_BYTES_MAX {
            filters.pop();
        }
        if filters == self.interest {
            return false;
        }
        self.interest = filters;
        self.bump();
        true
    }

    /// Sets what this manager advertises it holds. Returns true if the own advertisement
    /// changed (its seq then incremented). Every change floods, so the caller renews it
    /// seldom (every few seconds at most).
    pub fn set_load(&mut self, load: Load) -> bool {
        if load == self.load {
            return false;
        }
        self.load = load;
        self.bump();
        true
    }

    /// What every other manager advertised it holds, by name, as last heard.
    pub fn loads(&self) -> impl Iterator<Item = (&ManagerName, Load)> + '_ {
        self.others.iter().map(|(name, lsa)| (name, lsa.load))
    }

    /// After a topology change: the own links become exactly `neighbours` (new ones start with
    /// the given usable value, existing ones keep theirs), and advertisements from origins not
    /// in `topology` are dropped. Returns true if the own advertisement changed.
    pub fn set_topology(
        &mut self,
        topology: &Topology,
        neighbours: impl IntoIterator<Item = (ManagerName, bool)>,
    ) -> bool {
        self.managers = topology.managers().map(|m| m.name.clone()).collect();
        self.managers.remove(&self.me);
        let managers = &self.managers;
        self.others.retain(|origin, _| managers.contains(origin));
        let links: BTreeMap<ManagerName, bool> = neighbours
            .into_iter()
            // A link to oneself would make the own advertisement malformed.
            .filter(|(name, _)| *name != self.me)
            .map(|(name, usable)| {
                let usable = self.links.get(&name).copied().unwrap_or(usable);
                (name, usable)
            })
            .collect();
        if links == self.links {
            return false;
        }
        self.links = links;
        self.bump();
        true
    }

    /// Whether this manager's own link to `neighbour` is usable, as last set (false for a
    /// manager that is not a neighbour).
    pub fn usable(&self, neighbour: &str) -> bool {
        self.links.get(neighbour).copied().unwrap_or(false)
    }

    /// The current own advertisement.
    pub fn own(&self) -> Lsa {
        let own = Lsa {
            origin: self.me.clone(),
            seq: self.seq,
            links: self.links.iter().map(|(n, u)| (n.clone(), *u)).collect(),
            interest: self.interest.clone(),
            load: self.load,
        };
        debug_assert!(own.links.len() < MANAGERS_MAX && own.link(self.me.as_str()).is_none());
        own
    }

    /// An advertisement from a neighbour. Dropped ([`Received::Ignored`]) when malformed (see
    /// [`Lsa::validate`]), from a manager not in the last topology, or not newer than the one
    /// held ([`Lsa::is_newer_than`]).
    pub fn receive(&mut self, lsa: Lsa) -> Received {
        if lsa.validate().is_err() {
            return Received::Ignored;
        }
        if lsa.origin == self.me {
            return self.receive_own(&lsa);
        }
        if !self.managers.contains(&lsa.origin) {
            return Received::Ignored;
        }
        match self.others.get_mut(&lsa.origin) {
            Some(held) if !lsa.is_newer_than(held) => Received::Ignored,
            Some(held) => {
                *held = lsa;
                Received::New
            }
            None => {
                self.others.insert(lsa.origin.clone(), lsa);
                Received::New
            }
        }
    }

    /// One of our own advertisements came back. One at or above our sequence number that is not
    /// our current one was issued by an earlier run; until we issue something newer, managers
    /// holding it would keep believing it (and ignore ours), so we jump past it.
    fn receive_own(&mut self, lsa: &Lsa) -> Received {
        let from_earlier_run = lsa.seq > self.seq
            || (lsa.seq == self.seq
                && (!lsa.links.iter().map(|(n, u)| (n, u)).eq(self.links.iter())
                    || lsa.interest != self.interest));
        if !from_earlier_run {
            return Received::Ignored;
        }
        // Validated, so `lsa.seq <= SEQ_MAX` and this cannot overflow.
        self.seq = lsa.seq + 1;
        Received::OwnRenewed
    }

    fn bump(&mut self) {
        // Starting from at most SEQ_MAX, saturating would take 2^63 changes.
        self.seq = self.seq.saturating_add(1);
    }

    /// Every advertisement known, own first: what a neighbour that just came up is sent.
    pub fn advertisements(&self) -> Vec<Lsa> {
        std::iter::once(self.own())
            .chain(self.others.values().cloned())
            .collect()
    }

    /// The stored advertisement of `origin` (own included).
    pub fn get(&self, origin: &str) -> Option<Lsa> {
        if origin == self.me.as_str() {
            Some(self.own())
        } else {
            self.others.get(origin).cloned()
        }
    }

    /// Whether `end`'s view says its link to `other` is unusable. A view that does not mention
    /// the link says nothing: a manager never heard from, or one whose topology differs.
    fn reports_unusable(&self, end: &ManagerName, other: &ManagerName) -> bool {
        if *end == self.me {
            self.links.get(other) == Some(&false)
        } else {
            self.others
                .get(end)
                .is_some_and(|lsa| lsa.link(other.as_str()) == Some(false))
        }
    }

    /// The links of `topology` to leave out of routes: a link a–b is down when a's view (own
    /// links if a is me, else a's advertisement) says b: false, or b's view says a: false. A
    /// view that does not mention the link says nothing (a manager never heard from, or one
    /// whose topology differs).
    pub fn down_links(&self, topology: &Topology) -> DownLinks {
        // Walks the views rather than the topology's links: routes are recomputed on every
        // change, and this way only the few links reported unusable cost a lookup.
        let own = self
            .links
            .iter()
            .map(|(other, &usable)| (&self.me, other, usable));
        let others = self.others.values().flat_map(|lsa| {
            lsa.links
                .iter()
                .map(move |(other, usable)| (&lsa.origin, other, *usable))
        });
        own.chain(others)
            .filter(|&(_, _, usable)| !usable)
            .filter_map(|(end, other, _)| topology.link(end, other))
            .map(|link| link.key.clone())
            .collect()
    }

    /// For status: per link of `topology`, in link order, which ends report it unusable (empty
    /// = up).
    pub fn reporters(&self, topology: &Topology) -> Vec<(LinkKey, Vec<ManagerName>)> {
        topology
            .links()
            .map(|link| {
                let (a, b) = link.key.ends();
                let reporters = [(a, b), (b, a)]
                    .into_iter()
                    .filter(|(end, other)| self.reports_unusable(end, other))
                    .map(|(end, _)| end.clone())
                    .collect();
                (link.key.clone(), reporters)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    /// alpha - bravo - charlie, and alpha - charlie.
    fn triangle() -> Topology {
        parse(
            r#"
            [managers.alpha]
            address = "127.0.0.1:7401"
            [managers.bravo]
            address = "127.0.0.1:7402"
            [managers.charlie]
            address = "127.0.0.1:7403"
            [[links]]
            between = ["alpha", "bravo"]
            [[links]]
            between = ["bravo", "charlie"]
            [[links]]
            between = ["alpha", "charlie"]
            "#,
            "t.toml",
        )
        .unwrap()
        .topology
    }

    fn db(me: &str, topology: &Topology, first_seq: u64) -> LinkStateDb {
        let mut db = LinkStateDb::new(name(me), first_seq);
        let me = name(me);
        let neighbours: Vec<_> = topology.neighbours(&me).cloned().collect();
        db.set_topology(topology, neighbours.into_iter().map(|n| (n, true)));
        db
    }

    fn lsa(origin: &str, seq: u64, links: &[(&str, bool)]) -> Lsa {
        Lsa {
            load: Load::default(),
            origin: name(origin),
            seq,
            links: links.iter().map(|&(n, u)| (name(n), u)).collect(),
            interest: Vec::new(),
        }
    }

    fn key(a: &str, b: &str) -> LinkKey {
        LinkKey::new(name(a), name(b)).unwrap()
    }

    #[test]
    fn own_changes_increment_the_sequence() {
        let topology = triangle();
        let mut db = LinkStateDb::new(name("alpha"), 10);
        assert_eq!(db.own(), lsa("alpha", 10, &[]));
        assert!(db.set_topology(&topology, [(name("bravo"), true), (name("charlie"), true)]));
        assert_eq!(
            db.own(),
            lsa("alpha", 11, &[("bravo", true), ("charlie", true)])
        );
        assert!(!db.set_local(&name("bravo"), true), "no change");
        assert!(db.set_local(&name("bravo"), false));
        assert_eq!(db.own().seq, 12);
        assert!(!db.set_local(&name("delta"), false), "not a neighbour");
        // The same neighbours again: existing links keep their state, nothing changes.
        assert!(!db.set_topology(&topology, [(name("bravo"), true), (name("charlie"), true)]));
        assert_eq!(db.own().link("bravo"), Some(false));
        // A removed neighbour is a change.
        assert!(db.set_topology(&topology, [(name("charlie"), true)]));
        assert_eq!(db.own(), lsa("alpha", 13, &[("charlie", true)]));
    }

    #[test]
    fn newer_advertisements_replace_older_ones() {
        let topology = triangle();
        let mut db = db("alpha", &topology, 1);
        let first = lsa("bravo", 5, &[("alpha", true), ("charlie", true)]);
        assert_eq!(db.receive(first.clone()), Received::New);
        assert_eq!(db.receive(first.clone()), Received::Ignored, "a duplicate");
        assert_eq!(
            db.receive(lsa("bravo", 4, &[("alpha", true), ("charlie", false)])),
            Received::Ignored,
            "stale"
        );
        assert_eq!(db.get("bravo"), Some(first));
        let second = lsa("bravo", 6, &[("alpha", true), ("charlie", false)]);
        assert_eq!(db.receive(second.clone()), Received::New);
        assert_eq!(db.get("bravo"), Some(second.clone()));
        assert_eq!(
            db.advertisements(),
            vec![db.own(), second],
            "own first, then others by name"
        );
    }

    #[test]
    fn equal_sequence_numbers_are_ordered_by_links() {
        let topology = triangle();
        let mut db = db("alpha", &topology, 1);
        let low = lsa("bravo", 5, &[("alpha", false), ("charlie", true)]);
        let high = lsa("bravo", 5, &[("alpha", true), ("charlie", true)]);
        assert_eq!(db.receive(high.clone()), Received::New);
        assert_eq!(db.receive(low.clone()), Received::Ignored);
        let mut other = self::db("charlie", &topology, 1);
        assert_eq!(other.receive(low), Received::New);
        assert_eq!(other.receive(high.clone()), Received::New);
        assert_eq!(other.get("bravo"), db.get("bravo"));
    }

    #[test]
    fn own_advertisement_from_before_a_restart_is_renewed() {
        let topology = triangle();
        // The previous run got to 100; this one starts at 50.
        let mut db = db("alpha", &topology, 50);
        let own = db.own();
        assert_eq!(db.receive(own.clone()), Received::Ignored, "our own echo");
        assert_eq!(
            db.receive(lsa("alpha", 20, &[("bravo", false)])),
            Received::Ignored,
            "older than ours"
        );
        assert_eq!(
            db.receive(lsa("alpha", 100, &[("bravo", false), ("charlie", true)])),
            Received::OwnRenewed
        );
        assert_eq!(db.own().seq, 101);
        assert_eq!(db.own().links, own.links, "only the sequence number moved");
        // Same sequence number, other links: also from the earlier run.
        let mut db = self::db("alpha", &topology, 7);
        let stale = lsa(
            "alpha",
            db.own().seq,
            &[("bravo", false), ("charlie", false)],
        );
        assert_eq!(db.receive(stale), Received::OwnRenewed);
        assert_eq!(db.own().seq, 9);
    }

    #[test]
    fn a_link_is_down_when_either_end_says_so() {
        let topology = triangle();
        let mut db = db("alpha", &topology, 1);
        assert!(db.down_links(&topology).is_empty());
        // charlie drains its link to bravo; bravo has not noticed anything.
        db.receive(lsa("bravo", 3, &[("alpha", true), ("charlie", true)]));
        db.receive(lsa("charlie", 3, &[("alpha", true), ("bravo", false)]));
        assert_eq!(
            db.down_links(&topology),
            DownLinks::from([key("bravo", "charlie")])
        );
        // Our own link to bravo fails.
        db.set_local(&name("bravo"), false);
        assert_eq!(
            db.down_links(&topology),
            DownLinks::from([key("alpha", "bravo"), key("bravo", "charlie")])
        );
        assert_eq!(
            db.reporters(&topology),
            vec![
                (key("alpha", "bravo"), vec![name("alpha")]),
                (key("alpha", "charlie"), vec![]),
                (key("bravo", "charlie"), vec![name("charlie")]),
            ]
        );
        // bravo notices too: both ends report it.
        db.receive(lsa("bravo", 4, &[("alpha", true), ("charlie", false)]));
        assert_eq!(
            db.reporters(&topology)[2],
            (
                key("bravo", "charlie"),
                vec![name("bravo"), name("charlie")]
            )
        );
    }

    #[test]
    fn a_view_that_does_not_mention_a_link_says_nothing() {
        let topology = triangle();
        let mut db = db("alpha", &topology, 1);
        // charlie runs another topology, without its link to bravo.
        db.receive(lsa("charlie", 3, &[("alpha", true)]));
        assert!(db.down_links(&topology).is_empty());
    }

    #[test]
    fn unknown_origins_are_ignored_and_forgotten() {
        let topology = triangle();
        let mut db = LinkStateDb::new(name("alpha"), 1);
        let bravo = lsa("bravo", 3, &[("alpha", true)]);
        assert_eq!(
            db.receive(bravo.clone()),
            Received::Ignored,
            "no topology yet"
        );
        db.set_topology(&topology, [(name("bravo"), true), (name("charlie"), true)]);
        assert_eq!(
            db.receive(lsa("zulu", 3, &[("alpha", true)])),
            Received::Ignored
        );
        assert_eq!(db.receive(bravo.clone()), Received::New);
        // bravo leaves the topology: its advertisement goes, and so does our link to it.
        let smaller = parse(
            "[managers.alpha]\naddress = \"127.0.0.1:7401\"\n\
             [managers.charlie]\naddress = \"127.0.0.1:7403\"\n\
             [[links]]\nbetween = [\"alpha\", \"charlie\"]\n",
            "s.toml",
        )
        .unwrap()
        .topology;
        assert!(db.set_topology(&smaller, [(name("charlie"), true)]));
        assert_eq!(db.get("bravo"), None);
        assert_eq!(db.receive(bravo), Received::Ignored);
    }

    fn filters(list: &[&str]) -> Vec<Filter> {
        list.iter().map(|f| Filter::new(*f).unwrap()).collect()
    }

    #[test]
    fn interest_travels_in_the_own_advertisement_and_a_change_is_newer() {
        let topology = triangle();
        let mut alpha = db("alpha", &topology, 1);
        let before = alpha.own();
        assert!(alpha.set_interest(filters(&["b.>", "a.*", "a.*"])));
        assert!(
            !alpha.set_interest(filters(&["a.*", "b.>"])),
            "same set, no change"
        );
        let after = alpha.own();
        assert_eq!(after.interest, filters(&["a.*", "b.>"]));
        assert!(after.is_newer_than(&before));
        let mut bravo = db("bravo", &topology, 1);
        assert_eq!(bravo.receive(after.clone()), Received::New);
        assert_eq!(bravo.get("alpha").unwrap().interest, after.interest);
        // An earlier run's advertisement at the same number but other filters is renewed past.
        let mut restarted = db("alpha", &topology, after.seq - 1);
        assert_eq!(restarted.receive(after), Received::OwnRenewed);
    }

    #[test]
    fn load_travels_in_the_own_advertisement_and_only_a_change_floods() {
        let topology = triangle();
        let mut alpha = db("alpha", &topology, 1);
        let before = alpha.own();
        let load = Load {
            queues: 3,
            depth: 42,
        };
        assert!(alpha.set_load(load));
        assert!(!alpha.set_load(load), "the same load, no change");
        let after = alpha.own();
        assert!(after.is_newer_than(&before));
        let mut bravo = db("bravo", &topology, 1);
        assert_eq!(bravo.receive(after), Received::New);
        let loads: Vec<_> = bravo
            .loads()
            .map(|(n, l)| (n.as_str().to_owned(), l))
            .collect();
        assert_eq!(loads, vec![("alpha".to_owned(), load)]);
    }

    #[test]
    fn too_much_or_unsorted_interest_is_malformed() {
        let mut lsa = lsa("bravo", 3, &[]);
        lsa.interest = filters(&["b", "a"]);
        assert!(matches!(
            lsa.validate(),
            Err(LsaError::UnsortedInterest { .. })
        ));
        lsa.interest = (0..=INTEREST_FILTERS_MAX)
            .map(|i| Filter::new(format!("f{i:05}")).unwrap())
            .collect();
        assert!(matches!(
            lsa.validate(),
            Err(LsaError::TooMuchInterest { .. })
        ));
        let mut db = LinkStateDb::new(name("alpha"), 1);
        let long: Vec<Filter> = (0..INTEREST_FILTERS_MAX)
            .map(|i| Filter::new(format!("{i:05}.{}", "x".repeat(200))).unwrap())
            .collect();
        assert!(db.set_interest(long));
        assert!(
            db.own().validate().is_ok(),
            "the own set is cut to what neighbours accept"
        );
    }

    #[test]
    fn malformed_advertisements_are_ignored() {
        let topology = triangle();
        let mut db = db("alpha", &topology, 1);
        let unsorted = lsa("bravo", 3, &[("charlie", true), ("alpha", true)]);
        assert!(matches!(
            unsorted.validate(),
            Err(LsaError::Unsorted { .. })
        ));
        assert_eq!(db.receive(unsorted), Received::Ignored);
        let repeated = lsa("bravo", 3, &[("alpha", true), ("alpha", false)]);
        assert!(matches!(
            repeated.validate(),
            Err(LsaError::Unsorted { .. })
        ));
        assert_eq!(db.receive(repeated), Received::Ignored);
        let self_link = lsa("bravo", 3, &[("alpha", true), ("bravo", false)]);
        assert!(matches!(
            self_link.validate(),
            Err(LsaError::SelfLink { .. })
        ));
        assert_eq!(db.receive(self_link), Received::Ignored);
        let too_high = lsa("bravo", SEQ_MAX + 1, &[("alpha", true)]);
        assert!(matches!(
            too_high.validate(),
            Err(LsaError::SeqTooHigh { .. })
        ));
        assert_eq!(db.receive(too_high), Received::Ignored);
        // Nor can a forged advertisement of our own push our sequence out of range.
        assert_eq!(db.receive(lsa("alpha", u64::MAX, &[])), Received::Ignored);
        let too_many = Lsa {
            load: Load::default(),
            origin: name("bravo"),
            seq: 3,
            links: (0..MANAGERS_MAX)
                .map(|i| (name(&format!("m{i:05}")), true))
                .collect(),
            interest: Vec::new(),
        };
        assert!(matches!(
            too_many.validate(),
            Err(LsaError::TooManyLinks { .. })
        ));
        assert_eq!(db.receive(too_many), Received::Ignored);
        assert_eq!(db.get("bravo"), None);
        assert!(db.down_links(&topology).is_empty());
    }

    #[test]
    fn first_sequence_numbers_are_capped() {
        let db = LinkStateDb::new(name("alpha"), u64::MAX);
        assert_eq!(db.own().seq, SEQ_MAX);
        assert!(db.own().validate().is_ok());
    }

    #[test]
    fn advertisements_survive_serde() {
        let lsa = lsa("bravo", 3, &[("alpha", true), ("charlie", false)]);
        let text = toml::to_string(&lsa).unwrap();
        assert_eq!(toml::from_str::<Lsa>(&text).unwrap(), lsa);
    }
}
