//! Resequencing at a destination: a stamped arrival that came before the message it must not
//! overtake (see `super::stamp`) is held here until that one is admitted, so that messages
//! of one origin reach a queue in put order (per priority), and its publications their
//! subscriptions in publish order, whatever routes their copies took. A held publication is
//! its copies for this manager alone (what it carried for others went on at arrival).
//!
//! A held message was acknowledged to the neighbour that brought it but is neither stored nor
//! admitted: its custodian keeps it until this manager confirms it stored it, so a crash here
//! loses nothing (the custodian sends it again after its custody timeout).
//!
//! Invariants:
//! - at most one message is held per stamp (a second copy is dropped), and each held message
//!   leaves exactly once: released when the one it waits for is admitted, or at its deadline
//!   (the custody timeout after it was held, its earlier message's expiry, or its own);
//! - a held message never goes on past an earlier one held here: when its wait times out
//!   while what it waits for is held too (that one came later, say again after a crash
//!   here), the first held message of that chain goes on without the one missing before it,
//!   and releases the rest in order;
//! - only messages of the custodian that made the gap wait: other custodians' streams never
//!   wait behind it;
//! - memory is bounded by [`HELD_MESSAGES_MAX`] and [`HELD_BYTES_MAX`]; past them an arrival
//!   is dropped rather than held (its custodian sends it again).

use std::collections::BTreeMap;

use bytes::Bytes;
use hopmq::ManagerName;

#[cfg(test)]
use super::Afters;
use super::{After, Stamp};

/// Messages held at most, over all custodians.
pub(crate) const HELD_MESSAGES_MAX: usize = 65_536;
/// Bytes of held messages at most.
pub(crate) const HELD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A held arrival, as it came.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The neighbour it came from.
    pub from: ManagerName,
    /// The message as the channel carried it.
    pub payload: Bytes,
    /// When it expires itself (wall-clock milliseconds).
    pub expires_ms: Option<u64>,
    /// When it was first held (monotonic milliseconds): its deadline runs from then, however
    /// many earlier messages it waits for in turn.
    pub since_ms: u64,
}

#[derive(Debug)]
struct Held {
    waiting: Waiting,
    /// The earlier message it waits for now.
    after: After,
}

/// Why a held message leaves at its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Release {
    /// What it waited for expired (or it did): order holds.
    Expired,
    /// Its wait reached the custody timeout: it goes on without the earlier message, which
    /// may arrive after it. The text says which.
    TimedOut(String),
}

/// What a custodian's held messages amount to, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldFor {
    pub custodian: String,
    pub messages: u64,
    /// When the oldest was held (monotonic milliseconds).
    pub oldest_since_ms: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Resequencer {
    /// By custodian, then by (epoch, number).
    held: BTreeMap<Box<str>, BTreeMap<(u64, u64), Held>>,
    /// By custodian, then by (epoch, the number waited for): the number waiting.
    waiters: BTreeMap<Box<str>, BTreeMap<(u64, u64), u64>>,
    messages: usize,
    bytes: usize,
    /// Second copies of held messages dropped since start.
    duplicates: u64,
    /// Released at their deadline without what they waited for, since start.
    timed_out: u64,
}

/// What became of an arrival offered to [`Resequencer::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    Held,
    /// A copy of one already held.
    Duplicate,
    /// No room: dropped, for its custodian to send again.
    Full,
}

impl Resequencer {
    /// Holds `waiting`, stamped `stamp`, until `after` (named by its stamp) is here.
    pub(crate) fn hold(&mut self, stamp: Stamp<'_>, after: After, waiting: Waiting) -> Holding {
        let key = (stamp.epoch, stamp.number);
        if self
            .held
            .get(stamp.custodian)
            .is_some_and(|held| held.contains_key(&key))
        {
            self.duplicates += 1;
            return Holding::Duplicate;
        }
        let bytes = waiting.payload.len();
        if self.messages >= HELD_MESSAGES_MAX || self.bytes + bytes > HELD_BYTES_MAX {
            return Holding::Full;
        }
        self.messages += 1;
        self.bytes += bytes;
        let held = Held { waiting, after };
        entry(&mut self.held, stamp.custodian).insert(key, held);
        // A second message naming the same one would be a custodian's bug; the first stays
        // reachable by its deadline.
        entry(&mut self.waiters, stamp.custodian).insert((stamp.epoch, after.number), stamp.number);
        Holding::Held
    }

    /// The message waiting for `custodian`'s `(epoch, number)`, just admitted: released.
    pub(crate) fn waiter(&mut self, custodian: &str, epoch: u64, number: u64) -> Option<Waiting> {
        if self.messages == 0 {
            return None;
        }
        let waiter = self.waiters.get_mut(custodian)?.remove(&(epoch, number))?;
        self.take(custodian, epoch, waiter)
    }

    /// Takes a held message out (released or let go).
    pub(crate) fn take(&mut self, custodian: &str, epoch: u64, number: u64) -> Option<Waiting> {
        let held = self.held.get_mut(custodian)?;
        let taken = held.remove(&(epoch, number))?;
        if held.is_empty() {
            self.held.remove(custodian);
        }
        if let Some(waiters) = self.waiters.get_mut(custodian) {
            if waiters.get(&(epoch, taken.after.number)) == Some(&number) {
                waiters.remove(&(epoch, taken.after.number));
            }
            if waiters.is_empty() {
                self.waiters.remove(custodian);
            }
        }
        self.messages -= 1;
        self.bytes -= taken.waiting.payload.len();
        Some(taken.waiting)
    }

    /// Held messages whose deadline passed, in stream order, with why: `(custodian, epoch,
    /// number, why)`. They stay held until [`Self::take`]n (an earlier one's release may
    /// release a later one first). A message whose wait timed out while what it waits for is
    /// held here too is not due itself: the first held message of its chain is, without the
    /// one missing before that (its release releases the chain in order).
    pub(crate) fn due(
        &self,
        (now_mono_ms, now_wall_ms): (u64, u64),
        timeout_ms: u64,
    ) -> Vec<(String, u64, u64, Release)> {
        let mut due = Vec::new();
        for (custodian, held) in &self.held {
            let mut mine: Vec<(u64, u64, Release)> = Vec::new();
            for (&(epoch, number), h) in held {
                let expired = |at: Option<u64>| at.is_some_and(|at| at <= now_wall_ms);
                if expired(h.after.expires_ms) || expired(h.waiting.expires_ms) {
                    mine.push((epoch, number, Release::Expired));
                } else if now_mono_ms.saturating_sub(h.waiting.since_ms) >= timeout_ms {
                    // Numbers waited for are lower: the walk ends.
                    let (mut first, mut missing) = (number, h.after.number);
                    while let Some(earlier) = held.get(&(epoch, missing)) {
                        (first, missing) = (missing, earlier.after.number);
                    }
                    let why = Release::TimedOut(format!(
                        "held {} ms for {custodian}/{epoch}.{missing}, which had not arrived",
                        now_mono_ms - h.waiting.since_ms,
                    ));
                    mine.push((epoch, first, why));
                }
            }
            mine.sort_by_key(|&(epoch, number, _)| (epoch, number));
            mine.dedup_by_key(|&mut (epoch, number, _)| (epoch, number));
            due.extend(
                mine.into_iter()
                    .map(|(epoch, number, why)| (custodian.to_string(), epoch, number, why)),
            );
        }
        due
    }

    /// The earlier numbers of `custodian`'s stream `epoch` that held messages wait for and
    /// that are not held here themselves (missing), at most `max`.
    pub(crate) fn waiting_for(&self, custodian: &str, epoch: u64, max: usize) -> Vec<u64> {
        let (Some(waiters), Some(held)) = (self.waiters.get(custodian), self.held.get(custodian))
        else {
            return Vec::new();
        };
        waiters
            .range((epoch, 0)..=(epoch, u64::MAX))
            .map(|(&(_, number), _)| number)
            .filter(|&number| !held.contains_key(&(epoch, number)))
            .take(max)
            .collect()
    }

    /// The streams with messages held: `(custodian, epoch)`.
    pub(crate) fn streams(&self) -> Vec<(String, u64)> {
        let mut streams: Vec<(String, u64)> = Vec::new();
        for (custodian, held) in &self.held {
            for &(epoch, _) in held.keys() {
                if streams
                    .last()
                    .is_none_or(|last| last.0 != **custodian || last.1 != epoch)
                {
                    streams.push((custodian.to_string(), epoch));
                }
            }
        }
        streams
    }

    /// Messages held now.
    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    /// Second copies of held messages dropped since start.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// A held message was released without what it waited for.
    pub(crate) fn went_unordered(&mut self) {
        self.timed_out += 1;
    }

    /// Held messages released without what they waited for, since start.
    pub(crate) fn timed_out(&self) -> u64 {
        self.timed_out
    }

    /// Per custodian: held messages and the oldest's time.
    pub(crate) fn status(&self) -> Vec<HeldFor> {
        self.held
            .iter()
            .map(|(custodian, held)| HeldFor {
                custodian: custodian.to_string(),
                messages: held.len() as u64,
                oldest_since_ms: held.values().map(|h| h.waiting.since_ms).min().unwrap_or(0),
            })
            .collect()
    }
}

fn entry<'a, V: Default>(map: &'a mut BTreeMap<Box<str>, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.into(), V::default());
    }
    map.get_mut(key)
        .unwrap_or_else(|| unreachable!("inserted just above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(custodian: &str, number: u64) -> Stamp<'_> {
        Stamp {
            custodian,
            epoch: 7,
            number,
            destination: "south",
            after: Afters::default(),
        }
    }

    fn after(number: u64) -> After {
        After {
            number,
            expires_ms: (number == 1).then_some(500),
        }
    }

    fn waiting(body: &'static [u8], since_ms: u64) -> Waiting {
        Waiting {
            from: ManagerName::new("west").unwrap(),
            payload: Bytes::from_static(body),
            expires_ms: None,
            since_ms,
        }
    }

    #[test]
    fn a_held_message_leaves_once_when_its_earlier_one_is_admitted() {
        let mut resequencer = Resequencer::default();
        let mut hold = |custodian, number, body| {
            resequencer.hold(
                stamp(custodian, number),
                after(number - 1),
                waiting(body, 10),
            )
        };
        assert_eq!(hold("north", 3, b"3"), Holding::Held);
        assert_eq!(hold("north", 4, b"4"), Holding::Held);
        assert_eq!(hold("north", 3, b"3"), Holding::Duplicate);
        assert_eq!(hold("east", 3, b"e3"), Holding::Held);
        assert_eq!(resequencer.len(), 3);
        assert_eq!(
            resequencer.waiting_for("north", 7, 64),
            [2],
            "3 is here, held"
        );
        assert!(
            resequencer.waiter("north", 7, 1).is_none(),
            "nothing waits for 1"
        );
        let released = resequencer.waiter("north", 7, 2).unwrap();
        assert_eq!(&released.payload[..], b"3");
        assert_eq!(
            &resequencer.waiter("north", 7, 3).unwrap().payload[..],
            b"4"
        );
        assert!(resequencer.waiter("north", 7, 2).is_none());
        assert_eq!(
            resequencer.status().len(),
            1,
            "east's stream waits on its own"
        );
        assert_eq!(resequencer.duplicates(), 1);
    }

    #[test]
    fn deadlines_release_at_the_timeout_or_when_what_was_waited_for_expired() {
        let mut resequencer = Resequencer::default();
        resequencer.hold(stamp("north", 2), after(1), waiting(b"2", 0));
        resequencer.hold(stamp("north", 5), after(4), waiting(b"5", 100));
        assert!(resequencer.due((50, 400), 1000).is_empty());
        let due = resequencer.due((50, 500), 1000);
        assert_eq!(due, vec![("north".into(), 7, 2, Release::Expired)]);
        resequencer.take("north", 7, 2).unwrap();
        let due = resequencer.due((1100, 500), 1000);
        assert!(matches!(due.as_slice(), [(_, 7, 5, Release::TimedOut(_))]));
        resequencer.went_unordered();
        assert_eq!(resequencer.timed_out(), 1);
        resequencer.take("north", 7, 5).unwrap();
        assert_eq!(resequencer.len(), 0);
        assert!(resequencer.status().is_empty());
    }

    #[test]
    fn a_timed_out_chain_goes_on_from_its_first_held_message_never_past_one_held_here() {
        let mut resequencer = Resequencer::default();
        // 64 came first and waits for 58; 52..=58 came later (again, after a crash here),
        // waiting in turn for 51, which never comes.
        resequencer.hold(stamp("north", 64), after(58), waiting(b"64", 0));
        for number in 52..=58 {
            resequencer.hold(
                stamp("north", number),
                after(number - 1),
                waiting(b"m", 500),
            );
        }
        assert!(resequencer.due((999, 0), 1000).is_empty());
        let due = resequencer.due((1000, 0), 1000);
        let [(custodian, 7, 52, Release::TimedOut(why))] = due.as_slice() else {
            panic!("{due:?}");
        };
        assert_eq!(custodian, "north");
        assert!(why.contains("north/7.51,"), "{why}");
        resequencer.take("north", 7, 52).unwrap();
        for number in 52..58 {
            assert!(resequencer.waiter("north", 7, number).is_some());
        }
        let last = resequencer.waiter("north", 7, 58).unwrap();
        assert_eq!(&last.payload[..], b"64", "after 58, not before it");
        assert_eq!(resequencer.len(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut resequencer = Resequencer::default();
        for number in 2..(HELD_MESSAGES_MAX as u64 + 2) {
            let held = resequencer.hold(stamp("north", number), after(1), waiting(b"m", 0));
            assert_eq!(held, Holding::Held);
        }
        let held = resequencer.hold(stamp("north", u64::MAX), after(1), waiting(b"m", 0));
        assert_eq!(held, Holding::Full);
    }
}
