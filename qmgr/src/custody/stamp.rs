//! Stamps: a message's place in its stream, and the earlier messages it must not overtake.
//!
//! A stamp reads `CUSTODIAN/EPOCH.NUMBER@DESTINATION`, then up to [`AFTER_MAX`] times
//! `<NUMBER` of an earlier message of the same stream, queue (or, for a publication, the
//! stream's publications: [`PUBLICATIONS_CHAIN`]) and priority that was not yet confirmed
//! when this one was stamped (a copy sent again names only those still unconfirmed then), each followed by `~EXPIRES` (wall-clock
//! milliseconds) if that message expires. The destination holds a message until each one it
//! names is there or expired (see `super::resequence`), which keeps put order per origin,
//! queue and priority whatever routes the copies took.
//!
//! The earlier messages named are the chain's *outliving* ones: the last message, then each
//! earlier one that expires later than every message after it (one that never expires
//! outlives all). Once one named expired, every message between it and the next named one
//! expired too (they expire no later), so waiting for the named ones is waiting for every
//! earlier message still deliverable. Past [`AFTER_MAX`] the middle ones are left out, and
//! a message may then overtake an earlier one whose time-to-live is longer than its
//! successors' (never with one time-to-live per queue, or none).
//!
//! Invariants: numbers of a stream are dense from 1, in stamping order; a stamp only names
//! earlier numbers of its own stream, most recent first.

use rustc_hash::FxHashMap;

use hopmq::PRIORITY_MAX;

use super::Confirmation;

/// Earlier messages a stamp names at most.
pub(crate) const AFTER_MAX: usize = 3;

/// An earlier message a stamped message waits for at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct After {
    /// Its number in the same stream.
    pub number: u64,
    /// When it expires (wall-clock milliseconds): from then on it is not waited for.
    pub expires_ms: Option<u64>,
}

impl After {
    fn outlives(&self, expires_ms: Option<u64>) -> bool {
        match (self.expires_ms, expires_ms) {
            (None, _) => expires_ms.is_some(),
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine > theirs,
        }
    }
}

/// The earlier messages a stamp names, most recent first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Afters([Option<After>; AFTER_MAX]);

impl Afters {
    /// The messages named.
    pub(crate) fn iter(&self) -> impl Iterator<Item = After> + '_ {
        self.0.iter().map_while(|after| *after)
    }

    fn len(&self) -> usize {
        self.iter().count()
    }

    /// Names `after` after those named; false if full.
    fn push(&mut self, after: After) -> bool {
        match self.0.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(after);
                true
            }
            None => false,
        }
    }

    /// The chain's outliving messages once `last` is stamped after these.
    fn then(&self, last: After) -> Self {
        let mut next = Afters::default();
        next.push(last);
        let outliving: Vec<After> = self
            .iter()
            .filter(|after| after.outlives(last.expires_ms))
            .collect();
        // The oldest outlives all the others: it stays, the middle ones go.
        let room = AFTER_MAX - 1;
        for (i, after) in outliving.iter().enumerate() {
            if i + 1 < room || i + 1 == outliving.len() {
                next.push(*after);
            }
        }
        next
    }

    /// Without those numbered below `floor` (confirmed).
    fn above(&self, floor: u64) -> Self {
        let mut kept = Afters::default();
        for after in self.iter().filter(|after| after.number >= floor) {
            kept.push(after);
        }
        kept
    }
}

/// A message's place in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp<'a> {
    /// The manager that keeps custody of the message until its destination has it: its
    /// origin, or the destination of an earlier leg that passed it on (its queue had moved).
    pub custodian: &'a str,
    /// The custodian's incarnation.
    pub epoch: u64,
    /// The message's number in the stream, from 1.
    pub number: u64,
    /// The destination manager the stream goes to.
    pub destination: &'a str,
    /// The earlier messages it must not overtake.
    pub after: Afters,
}

impl<'a> Stamp<'a> {
    /// Reads a stamp header's value.
    pub(crate) fn parse(value: &'a str) -> Option<Self> {
        let (custodian, rest) = value.split_once('/')?;
        let (numbers, rest) = rest.split_once('@')?;
        let (epoch, number) = numbers.split_once('.')?;
        let number: u64 = number.parse().ok()?;
        let mut parts = rest.split('<');
        let destination = parts.next()?;
        let mut after = Afters::default();
        let mut below = number;
        for part in parts {
            let (earlier, expires_ms) = match part.split_once('~') {
                None => (part, None),
                Some((earlier, expires)) => (earlier, Some(expires.parse().ok()?)),
            };
            let earlier: u64 = earlier.parse().ok()?;
            if earlier >= below
                || !after.push(After {
                    number: earlier,
                    expires_ms,
                })
            {
                return None;
            }
            below = earlier;
        }
        // A list of stamps (a publication's, see `super::stamps`) is not one stamp.
        if destination.contains(['~', super::STAMPS_SEPARATOR]) {
            return None;
        }
        Some(Self {
            custodian,
            epoch: epoch.parse().ok()?,
            number,
            destination,
            after,
        })
    }

    /// The stamp in a header's `value` if `custodian` made it; others are told apart by their
    /// first bytes, without parsing (a relay passes thousands of other custodians' stamps).
    pub(crate) fn of_custodian(value: &'a str, custodian: &str) -> Option<Self> {
        let mine =
            value.starts_with(custodian) && value.as_bytes().get(custodian.len()) == Some(&b'/');
        mine.then(|| Self::parse(value))
            .flatten()
            .filter(|stamp| stamp.custodian == custodian)
    }

    /// The header's value.
    pub(crate) fn value(&self) -> String {
        use std::fmt::Write;
        let mut value = format!(
            "{}/{}.{}@{}",
            self.custodian, self.epoch, self.number, self.destination
        );
        for after in self.after.iter() {
            let _infallible = write!(value, "<{}", after.number);
            if let Some(expires) = after.expires_ms {
                let _infallible = write!(value, "~{expires}");
            }
        }
        value
    }
}

/// The chain of a stream's publications: a publication reaches many subscriptions, so it is
/// ordered after the earlier publications of its stream, whatever their topics. No queue name
/// starts with `#`.
pub(crate) const PUBLICATIONS_CHAIN: &str = "#publications";

/// What orders a message among the others of its stream: its queue and priority, and when it
/// expires.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain<'a> {
    /// The queue's name (without its manager), or [`PUBLICATIONS_CHAIN`].
    pub queue: &'a str,
    pub priority: u8,
    pub expires_ms: Option<u64>,
}

/// Per queue, by priority: the chain's outliving messages (see the module documentation).
type Lasts = FxHashMap<Box<str>, [Afters; PRIORITY_MAX as usize + 1]>;

/// Stamps what this manager sends to other managers: one stream per destination.
#[derive(Debug)]
pub(crate) struct Stamper {
    custodian: Box<str>,
    epoch: u64,
    next: FxHashMap<Box<str>, u64>,
    /// Per destination: the outliving messages per queue and priority, and the number below
    /// which the destination confirmed everything (what is there needs no waiting for).
    chains: FxHashMap<Box<str>, (Lasts, u64)>,
}

impl Stamper {
    /// Streams of the incarnation `epoch`, which must be above every earlier incarnation's.
    pub(crate) fn new(custodian: &str, epoch: u64) -> Self {
        Self {
            custodian: custodian.into(),
            epoch,
            next: FxHashMap::default(),
            chains: FxHashMap::default(),
        }
    }

    /// This incarnation's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The number of the last message stamped for `destination`.
    pub(crate) fn last(&self, destination: &str) -> Option<u64> {
        self.next.get(destination).map(|next| next - 1)
    }

    /// The stamp header's value for the next message to `destination`, in `chain`.
    pub(crate) fn stamp(&mut self, destination: &str, chain: Chain<'_>) -> String {
        let number = match self.next.get_mut(destination) {
            Some(next) => next,
            None => self.next.entry(destination.into()).or_insert(1),
        };
        let this = *number;
        *number += 1;
        let (lasts, settled_below) = match self.chains.get_mut(destination) {
            Some(chains) => chains,
            None => self.chains.entry(destination.into()).or_default(),
        };
        let slots = match lasts.get_mut(chain.queue) {
            Some(slots) => slots,
            None => lasts.entry(chain.queue.into()).or_default(),
        };
        let slot = &mut slots[usize::from(chain.priority.min(PRIORITY_MAX))];
        let after = slot.above(*settled_below);
        *slot = after.then(After {
            number: this,
            expires_ms: chain.expires_ms,
        });
        Stamp {
            custodian: &self.custodian,
            epoch: self.epoch,
            number: this,
            destination,
            after,
        }
        .value()
    }

    /// `stamp`, one of this custodian's, for a copy sent again: without the earlier messages
    /// its destination confirmed since it was stamped. A destination that lost its disk
    /// after confirming them would otherwise hold the copy for them, in vain, until its hold
    /// times out. `None` if it names none of those (or is not this incarnation's).
    pub(crate) fn restamped(&self, stamp: &Stamp<'_>) -> Option<String> {
        if stamp.custodian != &*self.custodian || stamp.epoch != self.epoch {
            return None;
        }
        let (_, settled_below) = self.chains.get(stamp.destination)?;
        let after = stamp.after.above(*settled_below);
        (after != stamp.after).then(|| Stamp { after, ..*stamp }.value())
    }

    /// `confirmation` came: what it covers from the stream's start needs no waiting for.
    pub(crate) fn settled(&mut self, confirmation: &Confirmation) {
        if confirmation.epoch != self.epoch {
            return;
        }
        let Some((_, below)) = self.chains.get_mut(confirmation.destination.as_str()) else {
            return;
        };
        let mut floor = confirmation.settled_below.max(1);
        for &(start, end) in &confirmation.ranges {
            if start <= floor {
                floor = floor.max(end);
            }
        }
        *below = (*below).max(floor);
    }

    /// Lets go of what no later stamp needs: chains whose last message was confirmed.
    pub(crate) fn forget_settled(&mut self) {
        for (lasts, settled_below) in self.chains.values_mut() {
            let below = *settled_below;
            lasts.retain(|_, slots| {
                for slot in slots.iter_mut() {
                    *slot = slot.above(below);
                }
                slots.iter().any(|slot| slot.len() > 0)
            });
        }
    }

    /// Chains remembered (queues, over all destinations).
    #[cfg(test)]
    pub(crate) fn chains(&self) -> usize {
        self.chains.values().map(|(lasts, _)| lasts.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(queue: &str, priority: u8, expires_ms: Option<u64>) -> Chain<'_> {
        Chain {
            queue,
            priority,
            expires_ms,
        }
    }

    fn afters(list: &[(u64, Option<u64>)]) -> Afters {
        let mut afters = Afters::default();
        for &(number, expires_ms) in list {
            assert!(afters.push(After { number, expires_ms }));
        }
        afters
    }

    fn named(value: &str) -> Vec<(u64, Option<u64>)> {
        let stamp = Stamp::parse(value).unwrap();
        stamp
            .after
            .iter()
            .map(|a| (a.number, a.expires_ms))
            .collect()
    }

    #[test]
    fn stamps_round_trip_and_garbage_is_none() {
        for after in [
            afters(&[]),
            afters(&[(40, Some(1_765_000_009_000))]),
            afters(&[(41, Some(5)), (40, None)]),
            afters(&[(41, None), (7, Some(9)), (2, None)]),
        ] {
            let s = Stamp {
                custodian: "no.rth",
                epoch: 1_765_000_000_123,
                number: 42,
                destination: "so.uth-1",
                after,
            };
            assert_eq!(Stamp::parse(&s.value()), Some(s));
        }
        for bad in [
            "",
            "1.2@x",
            "n/1.2",
            "n/1@x",
            "n/a.2@x",
            "n/1.b@x",
            "n/1.2.3@x",
            "n/1.2@x<",
            "n/1.2@x<2",
            "n/1.5@x<2<3",
            "n/1.2@x<1~",
            "n/1.2@x<a",
            "n/1.2@x~1",
            "n/1.9@x<4<3<2<1",
            "n/1.2@x,n/1.3@y",
            "n/1.2@x<1,n/1.3@y",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_message_names_the_earlier_ones_of_its_queue_and_priority_that_outlive_the_rest() {
        let mut stamper = Stamper::new("north", 7);
        let mut stamp =
            |queue, priority, expires| stamper.stamp("south", chain(queue, priority, expires));
        assert_eq!(named(&stamp("a", 4, None)), []);
        assert_eq!(named(&stamp("b", 4, Some(99))), []);
        assert_eq!(named(&stamp("a", 9, None)), []);
        assert_eq!(named(&stamp("a", 4, None)), [(1, None)]);
        assert_eq!(named(&stamp("b", 4, None)), [(2, Some(99))]);
        // 6 expires: 4 (never) outlives it, and must still be waited for once 6 expired.
        assert_eq!(named(&stamp("a", 4, Some(50))), [(4, None)]);
        assert_eq!(named(&stamp("a", 4, Some(40))), [(6, Some(50)), (4, None)]);
        assert_eq!(
            named(&stamp("a", 4, Some(30))),
            [(7, Some(40)), (6, Some(50)), (4, None)]
        );
        // Past three, the middle ones go; the oldest outlives all.
        assert_eq!(
            named(&stamp("a", 4, Some(60))),
            [(8, Some(30)), (7, Some(40)), (4, None)]
        );
        // A message that never expires outlives all before it.
        assert_eq!(named(&stamp("a", 4, None)), [(9, Some(60)), (4, None)]);
        assert_eq!(named(&stamp("a", 4, None)), [(10, None)]);
        // Another destination is another stream.
        assert_eq!(named(&stamper.stamp("west", chain("a", 4, None))), []);
    }

    #[test]
    fn what_the_destination_confirmed_from_the_start_is_not_waited_for_and_is_let_go() {
        let mut stamper = Stamper::new("north", 7);
        for _ in 0..3 {
            stamper.stamp("south", chain("a", 0, None));
        }
        stamper.stamp("south", chain("b", 0, None));
        let confirmation = |epoch, ranges: Vec<(u64, u64)>| Confirmation {
            waiting_for: Vec::new(),
            custodian: "north".into(),
            destination: "south".into(),
            epoch,
            settled_below: 0,
            ranges,
        };
        stamper.settled(&confirmation(6, vec![(1, 5)]));
        stamper.settled(&confirmation(7, vec![(2, 5)]));
        assert_eq!(
            named(&stamper.stamp("south", chain("a", 0, None))),
            [(3, None)]
        );
        stamper.settled(&confirmation(7, vec![(1, 4)]));
        assert_eq!(
            named(&stamper.stamp("south", chain("b", 0, None))),
            [(4, None)]
        );
        assert_eq!(stamper.chains(), 2);
        stamper.settled(&confirmation(7, vec![(1, 7)]));
        stamper.forget_settled();
        assert_eq!(stamper.chains(), 0);
        assert_eq!(named(&stamper.stamp("south", chain("a", 0, None))), []);
    }

    #[test]
    fn a_copy_sent_again_names_only_what_its_destination_has_not_confirmed() {
        let mut stamper = Stamper::new("north", 7);
        let mut stamps = Vec::new();
        for _ in 0..3 {
            stamps.push(stamper.stamp("south", chain("a", 0, None)));
        }
        let third = Stamp::parse(&stamps[2]).unwrap();
        assert_eq!(stamps[2], "north/7.3@south<2");
        assert_eq!(stamper.restamped(&third), None, "nothing confirmed yet");
        stamper.settled(&Confirmation {
            waiting_for: Vec::new(),
            custodian: "north".into(),
            destination: "south".into(),
            epoch: 7,
            settled_below: 0,
            ranges: vec![(1, 3)],
        });
        assert_eq!(
            stamper.restamped(&third).as_deref(),
            Some("north/7.3@south")
        );
        // Another incarnation's, or another custodian's, is sent as it is.
        let older = Stamp { epoch: 6, ..third };
        assert_eq!(stamper.restamped(&older), None);
        let theirs = Stamp {
            custodian: "west",
            ..third
        };
        assert_eq!(stamper.restamped(&theirs), None);
    }
}
