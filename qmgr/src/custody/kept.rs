//! The custodian's side of custody: its own stamped messages that a neighbour acknowledged
//! and that their destination has not yet confirmed, kept (their records stay in the journal)
//! until a [`Confirmation`] covers them, and sent again when the way they went broke.
//!
//! A pure state machine, time passed in as milliseconds. The core tells it what a neighbour
//! acknowledged ([`Kept::keep`]), what arrived from destinations ([`Kept::confirm`]), when a
//! link went out of use ([`Kept::off_link`]) and when the path to a destination changed
//! ([`Kept::path_changed`]); at each tick [`Kept::due`] says what to send again and which
//! destinations to ask for a confirmation.
//!
//! Invariants:
//! - a message is kept until a confirmation covers its number (or it expires): confirmations
//!   are cumulative (the destination's whole durable view of a stream), so a lost one is made
//!   good by any later one, and one that arrives before the neighbour's acknowledgement (a
//!   copy sent around a failure got there first) is remembered, so the message is let go at
//!   once when it comes;
//! - a kept message is sent again only while no copy made here is still on its way (waiting
//!   or in flight here: the routes take care of it), and once a neighbour acknowledges a copy,
//!   that copy alone is kept; copies share the stamp, so a destination drops all but the
//!   first;
//! - one record may be kept for several destinations (a publication's share for more than
//!   one manager): it is handed back for removal only when the last of them lets it go.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::queue::local::Entry;

/// Ranges a confirmation carries at most: the lowest ones, where the custodian's oldest
/// messages are; the next confirmation carries the rest once those have closed up.
pub(crate) const CONFIRM_RANGES_MAX: usize = 64;

/// A destination's durable view of one stream, sent back to its custodian hop by hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The stream's custodian, where the confirmation goes.
    pub custodian: String,
    /// The destination manager that confirms.
    pub destination: String,
    /// The stream's epoch.
    pub epoch: u64,
    /// Every number below this is settled: accepted, or dead-lettered at the destination as
    /// older than what it remembers.
    pub settled_below: u64,
    /// Accepted numbers above `settled_below`, as sorted half-open ranges.
    pub ranges: Vec<(u64, u64)>,
    /// Numbers the destination holds later messages for (see `super::resequence`): its
    /// custodian sends them again without waiting for a question.
    pub waiting_for: Vec<u64>,
}

impl Confirmation {
    pub(crate) fn covers(&self, number: u64) -> bool {
        number < self.settled_below
            || self
                .ranges
                .iter()
                .any(|&(start, end)| start <= number && number < end)
    }

    /// Whether it is well formed (sorted, disjoint, non-empty ranges, at most
    /// [`CONFIRM_RANGES_MAX`]): a malformed one from a peer is ignored.
    pub(crate) fn is_valid(&self) -> bool {
        self.ranges.len() <= CONFIRM_RANGES_MAX
            && self.waiting_for.len() <= CONFIRM_RANGES_MAX
            && self.ranges.iter().all(|&(start, end)| start < end)
            && self.ranges.windows(2).all(|w| w[0].1 <= w[1].0)
    }
}

/// One kept copy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    entry: Entry,
    /// The neighbour that acknowledged it; `None` after a restart.
    via: Option<Box<str>>,
    /// When it was acknowledged, or last sent again.
    since_ms: u64,
    /// When it was first kept.
    kept_ms: u64,
    /// The destination's path generation when it left.
    generation: u64,
    /// A copy was made here and no neighbour has acknowledged it yet: the copy is on its way
    /// (re-routed like any waiting message), so this one is not sent again meanwhile.
    copy_out: bool,
}

/// What is kept for one destination.
#[derive(Debug, Default)]
struct Destination {
    /// By `(epoch, number, seq)`: a message and its copies sit side by side.
    held: BTreeMap<(u64, u64, u64), Held>,
    /// The last confirmation of each epoch, for acknowledgements that come after it.
    confirmed: BTreeMap<u64, Confirmation>,
    /// Bumped whenever the path to the destination changes.
    generation: u64,
    /// When this destination was last asked for a confirmation.
    queried_ms: Option<u64>,
    /// When a confirmation last came from it.
    answered_ms: Option<u64>,
    /// Copies sent again since start.
    resent: u64,
}

impl Destination {
    /// Whether a confirmation already came for message `number` of stream `epoch`.
    fn confirms(&self, epoch: u64, number: u64) -> bool {
        self.confirmed
            .get(&epoch)
            .is_some_and(|confirmation| confirmation.covers(number))
    }

    /// Takes out the copies of message `number` of stream `epoch` kept so far.
    fn supersede(&mut self, epoch: u64, number: u64) -> Vec<Entry> {
        // Acknowledgements mostly come in stream order: then nothing can be superseded.
        let in_order = self
            .held
            .last_key_value()
            .is_none_or(|(&last, _)| last < (epoch, number, 0));
        if in_order {
            return Vec::new();
        }
        let earlier: Vec<(u64, u64, u64)> = self
            .held
            .range((epoch, number, 0)..=(epoch, number, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        earlier
            .iter()
            .filter_map(|key| self.held.remove(key))
            .map(|held| held.entry)
            .collect()
    }
}

/// Marks `held` sent again and adds it to `due`, unless a copy is on its way or went lately.
fn resend_quiet(
    held: &mut Held,
    (now_ms, quiet_ms): (u64, u64),
    destination: &str,
    due: &mut Vec<(String, Entry)>,
) {
    if !held.copy_out && now_ms.saturating_sub(held.since_ms) >= quiet_ms {
        held.copy_out = true;
        held.since_ms = now_ms;
        due.push((destination.to_owned(), held.entry));
    }
}

/// What a tick asks of the core.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// `(destination, entry)`: send a copy along the current route.
    pub resend: Vec<(String, Entry)>,
    /// Expired while kept: remove.
    pub expired: Vec<Entry>,
    /// Ask these destinations for a confirmation (the way looks whole, yet nothing came).
    pub query: Vec<String>,
}

/// What one destination's kept messages look like, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeptStatus {
    pub destination: String,
    pub messages: u64,
    pub oldest_ms: Option<u64>,
    pub resent: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    destinations: BTreeMap<Box<str>, Destination>,
    len: usize,
    /// By seq: how many destinations keep that record.
    holders: FxHashMap<u64, u32>,
}

impl Kept {
    /// Messages kept.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A neighbour (`via`, or `None` for one found at recovery) acknowledged `entry`, the
    /// message `number` of stream `epoch` to `destination`. Returns whether it is kept (not if
    /// a confirmation already covers it), and the records that can go now: the copies of the
    /// same message kept before it (the latest acknowledged copy carries custody on) that no
    /// other destination keeps.
    pub(crate) fn keep(
        &mut self,
        destination: &str,
        (epoch, number): (u64, u64),
        entry: Entry,
        via: Option<&str>,
        now_ms: u64,
    ) -> (bool, Vec<Entry>) {
        let superseded = match self.destinations.get_mut(destination) {
            Some(slot) if slot.confirms(epoch, number) => return (false, Vec::new()),
            Some(slot) => slot.supersede(epoch, number),
            None => Vec::new(),
        };
        self.len -= superseded.len();
        self.hold(destination, (epoch, number), entry, via, now_ms);
        (true, self.released(superseded))
    }

    /// Whether some destination keeps the record of `seq`.
    #[cfg(test)]
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.holders.contains_key(&seq)
    }

    /// Of `entries`, just let go by one destination each, those no other destination keeps.
    fn released(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        entries
            .into_iter()
            .filter(|entry| match self.holders.get_mut(&entry.seq) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    self.holders.remove(&entry.seq);
                    true
                }
            })
            .collect()
    }

    /// Adds `entry` to what is kept for `destination`.
    fn hold(
        &mut self,
        destination: &str,
        (epoch, number): (u64, u64),
        entry: Entry,
        via: Option<&str>,
        now_ms: u64,
    ) {
        let slot = match self.destinations.get_mut(destination) {
            Some(slot) => slot,
            None => self.destinations.entry(destination.into()).or_default(),
        };
        let held = Held {
            entry,
            via: via.map(Into::into),
            since_ms: now_ms,
            kept_ms: now_ms,
            generation: slot.generation,
            copy_out: false,
        };
        if slot.held.insert((epoch, number, entry.seq), held).is_none() {
            self.len += 1;
            *self.holders.entry(entry.seq).or_default() += 1;
        }
    }

    /// A kept message found at recovery (copies of one message may both be there: each is
    /// kept until confirmed).
    pub(crate) fn recovered(
        &mut self,
        destination: &str,
        (epoch, number): (u64, u64),
        entry: Entry,
        now_ms: u64,
    ) {
        self.hold(destination, (epoch, number), entry, None, now_ms);
    }

    /// The copy of `seq` that was due could not be made: it is due again at the next tick.
    pub(crate) fn copy_not_made(&mut self, destination: &str, seq: u64) {
        if let Some(held) = self
            .destinations
            .get_mut(destination)
            .and_then(|slot| slot.held.values_mut().find(|held| held.entry.seq == seq))
        {
            held.copy_out = false;
        }
    }

    /// A confirmation for this custodian: the kept copies it covers that no other destination
    /// keeps, to remove, and how many messages it covers (a message and its copies count
    /// once).
    pub(crate) fn confirm(&mut self, confirmation: Confirmation, now_ms: u64) -> (Vec<Entry>, u64) {
        let Some(slot) = self.destinations.get_mut(confirmation.destination.as_str()) else {
            return (Vec::new(), 0);
        };
        slot.answered_ms = Some(now_ms);
        let epoch = confirmation.epoch;
        // Only what the confirmation covers is visited: most of what is kept is usually
        // above it, still on its way.
        let mut covered: Vec<(u64, u64, u64)> = slot
            .held
            .range((epoch, 0, 0)..(epoch, confirmation.settled_below, 0))
            .map(|(key, _)| *key)
            .collect();
        for &(start, end) in &confirmation.ranges {
            let start = start.max(confirmation.settled_below);
            if start < end {
                covered.extend(
                    slot.held
                        .range((epoch, start, 0)..(epoch, end, 0))
                        .map(|(key, _)| *key),
                );
            }
        }
        let mut messages = 0;
        let mut last = None;
        for &(_, number, _) in &covered {
            if last != Some(number) {
                last = Some(number);
                messages += 1;
            }
        }
        let entries: Vec<Entry> = covered
            .iter()
            .filter_map(|key| slot.held.remove(key))
            .map(|held| held.entry)
            .collect();
        self.len -= entries.len();
        // Cumulative: the later view of a stream includes the earlier one, but two may cross
        // on different paths, so the one that settles more is kept.
        match slot.confirmed.get(&epoch) {
            Some(known) if known.settled_below > confirmation.settled_below => {}
            _ => {
                slot.confirmed.insert(epoch, confirmation);
            }
        }
        // Epochs with nothing kept need no memory once nothing of theirs can still come.
        if slot.held.is_empty() && slot.confirmed.len() > 1 {
            let newest = slot.confirmed.keys().next_back().copied();
            slot.confirmed.retain(|e, _| Some(*e) == newest);
        }
        (self.released(entries), messages)
    }

    /// `neighbour`'s link went out of use: the messages it acknowledged for the destinations
    /// `around` says another way leads to are sent again at once (it may never pass them
    /// on). Where no other way leads, a copy would only queue behind the originals: the path
    /// change sends them again after the timeout if they are still not confirmed.
    pub(crate) fn off_link(
        &mut self,
        neighbour: &str,
        around: impl Fn(&str) -> bool,
        now_ms: u64,
    ) -> Vec<(String, Entry)> {
        let mut resend = Vec::new();
        for (destination, slot) in &mut self.destinations {
            if !around(destination) {
                continue;
            }
            for held in slot.held.values_mut() {
                if !held.copy_out && held.via.as_deref() == Some(neighbour) {
                    held.copy_out = true;
                    held.since_ms = now_ms;
                    slot.resent += 1;
                    resend.push((destination.to_string(), held.entry));
                }
            }
        }
        resend
    }

    /// The path to `destination` changed: what left before may be stranded on the old one.
    pub(crate) fn path_changed(&mut self, destination: &str) {
        if let Some(slot) = self.destinations.get_mut(destination) {
            slot.generation += 1;
        }
    }

    /// The streams (epochs) of the messages kept for `destination`.
    pub(crate) fn epochs(&self, destination: &str) -> Vec<u64> {
        let Some(slot) = self.destinations.get(destination) else {
            return Vec::new();
        };
        let mut epochs: Vec<u64> = slot.held.keys().map(|&(epoch, _, _)| epoch).collect();
        epochs.dedup();
        epochs
    }

    /// Destinations with kept messages.
    pub(crate) fn destinations(&self) -> impl Iterator<Item = &str> {
        self.destinations
            .iter()
            .filter(|(_, slot)| !slot.held.is_empty())
            .map(|(destination, _)| &**destination)
    }

    /// What is due at `now_ms` (monotonic; `wall_ms` for expiry). Kept past `timeout_ms`:
    /// a copy along the current route if it left before the path changed, before a restart,
    /// through a link now out of use, or if its destination answered a later question without
    /// it; otherwise (the way looks whole) a question to the destination, at most one per
    /// timeout. `usable` says whether a neighbour's link is in use.
    pub(crate) fn due(
        &mut self,
        (now_ms, wall_ms): (u64, u64),
        timeout_ms: u64,
        usable: impl Fn(&str) -> bool,
    ) -> Due {
        let mut due = Due::default();
        for (destination, slot) in &mut self.destinations {
            let mut stale = false;
            let mut gone = Vec::new();
            for (key, held) in &mut slot.held {
                if held.entry.expired(wall_ms) {
                    gone.push(*key);
                    continue;
                }
                if held.copy_out || now_ms.saturating_sub(held.since_ms) < timeout_ms {
                    continue;
                }
                let whole =
                    held.generation == slot.generation && held.via.as_deref().is_some_and(&usable);
                // The destination answered a question asked after this one was due, and
                // still lacks it: the way lost it (a relay that came back without its disk
                // before anyone noticed it gone).
                let missed = slot.queried_ms.is_some_and(|asked| {
                    asked >= held.since_ms + timeout_ms
                        && slot.answered_ms.is_some_and(|answered| answered >= asked)
                });
                if whole && !missed {
                    stale = true;
                } else {
                    held.copy_out = true;
                    held.since_ms = now_ms;
                    slot.resent += 1;
                    due.resend.push((destination.to_string(), held.entry));
                }
            }
            for key in gone {
                if let Some(held) = slot.held.remove(&key) {
                    self.len -= 1;
                    due.expired.push(held.entry);
                }
            }
            if stale
                && slot
                    .queried_ms
                    .is_none_or(|at| now_ms.saturating_sub(at) >= timeout_ms)
            {
                slot.queried_ms = Some(now_ms);
                due.query.push(destination.to_string());
            }
        }
        let expired = std::mem::take(&mut due.expired);
        due.expired = self.released(expired);
        due
    }

    /// The destination holds later messages for `numbers` of stream `epoch`: those and
    /// every earlier one still kept (the confirmation this came with lacked them), not sent
    /// again within `quiet_ms` and with no copy on its way, are due at once.
    pub(crate) fn waited_for(
        &mut self,
        destination: &str,
        (epoch, numbers): (u64, &[u64]),
        now_ms: u64,
        quiet_ms: u64,
    ) -> Vec<(String, Entry)> {
        let (Some(slot), Some(&up_to)) =
            (self.destinations.get_mut(destination), numbers.iter().max())
        else {
            return Vec::new();
        };
        let mut due: Vec<(String, Entry)> = Vec::new();
        let mut last: Option<(u64, &mut Held)> = None;
        // The newest copy of each number stands for the message.
        for (&(_, number, _), held) in slot
            .held
            .range_mut((epoch, 0, 0)..=(epoch, up_to, u64::MAX))
        {
            match last.take() {
                Some((previous, newest)) if previous != number => {
                    resend_quiet(newest, (now_ms, quiet_ms), destination, &mut due);
                }
                _ => {} // none yet, or an older copy of this message
            }
            last = Some((number, held));
        }
        if let Some((_, newest)) = last {
            resend_quiet(newest, (now_ms, quiet_ms), destination, &mut due);
        }
        slot.resent += due.len() as u64;
        due
    }

    /// A kept message's record moved (compaction), for every destination that keeps it; false
    /// if none does.
    pub(crate) fn relocate(&mut self, seq: u64, body: crate::queue::local::BodyRef) -> bool {
        let Some(&holders) = self.holders.get(&seq) else {
            return false;
        };
        let mut found = 0;
        for slot in self.destinations.values_mut() {
            if let Some(held) = slot.held.values_mut().find(|held| held.entry.seq == seq) {
                held.entry.body = body;
                found += 1;
                if found == holders {
                    break;
                }
            }
        }
        true
    }

    /// Every kept entry with its destination and stream place, for compaction.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, u64, u64, &Entry)> {
        self.destinations.iter().flat_map(|(destination, slot)| {
            slot.held.iter().map(move |(&(epoch, number, _), held)| {
                (&**destination, epoch, number, &held.entry)
            })
        })
    }

    /// Per destination with kept messages: how many, the oldest's age, copies sent again.
    pub(crate) fn status(&self, now_ms: u64) -> Vec<KeptStatus> {
        self.destinations
            .iter()
            .filter(|(_, slot)| !slot.held.is_empty() || slot.resent > 0)
            .map(|(destination, slot)| KeptStatus {
                destination: destination.to_string(),
                messages: slot.held.len() as u64,
                oldest_ms: slot
                    .held
                    .values()
                    .map(|held| now_ms.saturating_sub(held.kept_ms))
                    .max(),
                resent: slot.resent,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::local::BodyRef;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            body: BodyRef::Memory,
            bytes: 1,
            priority: 4,
            reports: hopmq::Reports::NONE,
            expires_at_ms: u64::MAX,
            put_at_ms: 0,
            correlation: 0,
            delivery_count: 0,
        }
    }

    fn confirmation(epoch: u64, settled_below: u64, ranges: &[(u64, u64)]) -> Confirmation {
        Confirmation {
            waiting_for: Vec::new(),
            custodian: "north".into(),
            destination: "south".into(),
            epoch,
            settled_below,
            ranges: ranges.to_vec(),
        }
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn resent(due: &Due) -> Vec<u64> {
        due.resend.iter().map(|(_, e)| e.seq).collect()
    }

    #[test]
    fn a_confirmation_lets_go_what_it_covers_and_one_that_came_first_is_remembered() {
        let mut kept = Kept::default();
        for n in 1..=5 {
            assert_eq!(
                kept.keep("south", (7, n), entry(100 + n), Some("east"), 0),
                (true, Vec::new())
            );
        }
        let (gone, messages) = kept.confirm(confirmation(7, 0, &[(1, 3), (4, 5)]), 0);
        assert_eq!(messages, 3);
        assert_eq!(seqs(&gone), [101, 102, 104]);
        assert_eq!(kept.len(), 2);
        // Another epoch's confirmation covers nothing of this one.
        assert!(kept.confirm(confirmation(8, 10, &[]), 0).0.is_empty());
        // A copy acknowledged after its confirmation came is let go at once.
        assert_eq!(
            kept.keep("south", (7, 1), entry(200), Some("west"), 0),
            (false, Vec::new())
        );
        let (gone, _) = kept.confirm(confirmation(7, 6, &[]), 0);
        assert_eq!(seqs(&gone), [103, 105]);
        assert_eq!(kept.len(), 0);
    }

    #[test]
    fn what_a_destination_waits_for_goes_again_at_once_with_everything_kept_before_it() {
        let mut kept = Kept::default();
        for n in 1..=4 {
            kept.keep("south", (7, n), entry(100 + n), Some("east"), 0);
        }
        // A copy of 2 on its way and acknowledged: it stands for 2.
        kept.keep("south", (7, 2), entry(202), Some("west"), 0);
        kept.keep("south", (8, 1), entry(300), Some("east"), 0);
        assert_eq!(kept.epochs("south"), [7, 8]);
        // Sent or acknowledged too lately: not yet.
        assert!(kept.waited_for("south", (7, &[3]), 500, 1_000).is_empty());
        let due = kept.waited_for("south", (7, &[3]), 1_000, 1_000);
        let seqs: Vec<u64> = due.iter().map(|(_, e)| e.seq).collect();
        assert_eq!(seqs, [101, 202, 103], "up to 3, the newest copy of each");
        // Once a copy is out, it is not sent again until acknowledged.
        assert!(kept.waited_for("south", (7, &[3]), 5_000, 1_000).is_empty());
        assert_eq!(kept.status(5_000)[0].resent, 3);
    }

    #[test]
    fn an_older_view_crossing_a_newer_one_does_not_undo_it() {
        let mut kept = Kept::default();
        kept.keep("south", (7, 1), entry(1), Some("east"), 0);
        kept.confirm(confirmation(7, 5, &[]), 0);
        kept.confirm(confirmation(7, 0, &[(1, 2)]), 0);
        assert_eq!(
            kept.keep("south", (7, 4), entry(4), Some("east"), 0),
            (false, Vec::new())
        );
    }

    #[test]
    fn a_dead_link_sends_its_messages_again_at_once_and_only_once() {
        let mut kept = Kept::default();
        kept.keep("south", (7, 1), entry(1), Some("east"), 0);
        kept.keep("south", (7, 2), entry(2), Some("west"), 0);
        assert!(
            kept.off_link("east", |_| false, 10).is_empty(),
            "no other way"
        );
        let resend = kept.off_link("east", |_| true, 10);
        assert_eq!(resend, vec![("south".to_owned(), entry(1))]);
        assert!(kept.off_link("east", |_| true, 20).is_empty());
        let status = kept.status(30);
        assert_eq!(status[0].messages, 2);
        assert_eq!(status[0].resent, 1);
        assert_eq!(status[0].oldest_ms, Some(30));
    }

    #[test]
    fn past_the_timeout_a_whole_path_is_asked_and_a_changed_one_sent_again() {
        let mut kept = Kept::default();
        kept.keep("south", (7, 1), entry(1), Some("east"), 0);
        let usable = |_: &str| true;
        assert_eq!(kept.due((999, 0), 1000, usable), Due::default());
        let due = kept.due((1000, 0), 1000, usable);
        assert_eq!(due.query, ["south"]);
        assert!(due.resend.is_empty());
        // One query per timeout.
        assert!(kept.due((1500, 0), 1000, usable).query.is_empty());
        kept.path_changed("south");
        let due = kept.due((1600, 0), 1000, usable);
        assert_eq!(resent(&due), [1]);
        // Its copy is on its way: nothing more until a neighbour acknowledges it, which
        // leaves the copy alone kept, with a timeout of its own.
        assert!(kept.due((5000, 0), 1000, usable).resend.is_empty());
        assert_eq!(
            kept.keep("south", (7, 1), entry(9), Some("west"), 5000),
            (true, vec![entry(1)])
        );
        assert_eq!(kept.len(), 1);
        assert!(kept.due((5999, 0), 1000, usable).resend.is_empty());
        assert_eq!(kept.due((6000, 0), 1000, usable).query, ["south"]);
    }

    #[test]
    fn a_destination_that_answers_without_it_gets_it_again() {
        let mut kept = Kept::default();
        kept.keep("south", (7, 1), entry(1), Some("east"), 0);
        kept.keep("south", (7, 2), entry(2), Some("east"), 0);
        let usable = |_: &str| true;
        assert_eq!(kept.due((1000, 0), 1000, usable).query, ["south"]);
        // The answer has 2 but not 1 (a relay lost it); 1 goes again at the next tick.
        kept.confirm(confirmation(7, 0, &[(2, 3)]), 1100);
        assert_eq!(resent(&kept.due((1200, 0), 1000, usable)), [1]);
    }

    #[test]
    fn a_message_kept_through_a_restart_or_a_dead_link_goes_again_after_the_timeout() {
        let mut kept = Kept::default();
        kept.keep("south", (7, 1), entry(1), None, 0);
        kept.keep("south", (7, 2), entry(2), Some("east"), 0);
        let due = kept.due((1000, 0), 1000, |neighbour| neighbour != "east");
        assert_eq!(resent(&due), [1, 2]);
        assert!(due.query.is_empty());
    }

    #[test]
    fn expired_messages_are_let_go_not_sent_again() {
        let mut kept = Kept::default();
        let mut short = entry(1);
        short.expires_at_ms = 50;
        kept.keep("south", (7, 1), short, None, 0);
        let due = kept.due((1000, 60), 1000, |_| true);
        assert_eq!(seqs(&due.expired), [1]);
        assert!(due.resend.is_empty());
        assert_eq!(kept.len(), 0);
    }

    #[test]
    fn a_record_kept_for_two_destinations_goes_when_both_let_it_go() {
        let mut kept = Kept::default();
        let confirm = |destination: &str, settled_below| Confirmation {
            destination: destination.into(),
            ..confirmation(7, settled_below, &[])
        };
        // One share for south and west: numbers 1 of south's stream and 4 of west's.
        assert_eq!(
            kept.keep("south", (7, 1), entry(1), Some("east"), 0),
            (true, Vec::new())
        );
        assert_eq!(
            kept.keep("west", (7, 4), entry(1), Some("east"), 0),
            (true, Vec::new())
        );
        assert_eq!(kept.len(), 2);
        let (gone, messages) = kept.confirm(confirm("south", 2), 0);
        assert_eq!((gone, messages), (Vec::new(), 1));
        assert!(kept.holds(1));
        // Compaction moves it for west, which still keeps it.
        let moved = BodyRef::journal(crate::store::Location {
            segment: 3,
            offset: 0,
            len: 1,
        });
        assert!(kept.relocate(1, moved));
        // A copy made for west alone supersedes it: now nobody keeps it.
        let (held, superseded) = kept.keep("west", (7, 4), entry(2), Some("north"), 0);
        assert!(held);
        assert_eq!(
            superseded,
            [Entry {
                body: moved,
                ..entry(1)
            }]
        );
        assert!(!kept.holds(1));
        let (gone, _) = kept.confirm(confirm("west", 5), 0);
        assert_eq!(seqs(&gone), [2]);
        assert_eq!(kept.len(), 0);
        assert!(!kept.relocate(2, moved));
    }

    #[test]
    fn malformed_confirmations_are_told_apart() {
        assert!(confirmation(1, 0, &[(1, 3), (3, 4)]).is_valid());
        assert!(!confirmation(1, 0, &[(3, 3)]).is_valid());
        assert!(!confirmation(1, 0, &[(3, 5), (1, 2)]).is_valid());
        let many: Vec<(u64, u64)> = (0..=CONFIRM_RANGES_MAX as u64)
            .map(|i| (2 * i + 1, 2 * i + 2))
            .collect();
        assert!(!confirmation(1, 0, &many).is_valid());
    }
}
