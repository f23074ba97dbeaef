//! End-to-end custody: the stamp a message carries from its origin, and what a manager that
//! stores messages for good remembers of them so that a second copy is never delivered.
//!
//! A message leaving its origin for another manager is stamped (`hopmq.custody` header) with
//! a *stream* and its number in it. A stream is one incarnation of an origin (its `epoch`, the
//! wall-clock millisecond it started, so streams of one origin are ordered) sending to one
//! destination manager; numbers start at 1 and are dense, so what a destination accepted of a
//! stream compacts to a few ranges. Copies of one message (a channel's resend after a rollback,
//! a copy sent around a dead relay) carry the same stamp.
//!
//! [`Accepted`] is a pure state machine: the manager asks it about each stamped arrival before
//! storing it ([`Accepted::admit`]), tells it when the store is durable or failed, and writes
//! its summary ([`Accepted::summary`]) to the journal so that it outlives the records of the
//! messages themselves.
//!
//! Invariants:
//! - a number is in a stream's ranges exactly when a copy was admitted and its store did not
//!   fail; the summary leaves out stores still in flight, so a summary never claims a message
//!   its journal may lack;
//! - memory is bounded: at most [`RANGES_MAX`] ranges per stream and [`EPOCHS_MAX`] streams
//!   per origin and destination. What is let go is remembered as a floor (numbers below it, or
//!   epochs at or below it, are *forgotten*), and a copy that falls there is dead-lettered,
//!   never delivered: at the limit a message may wait in the dead-letter queue for an
//!   operator, but it is never delivered twice.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

mod arrivals;
mod kept;
mod resequence;
mod stamp;

pub(crate) use arrivals::{Answer, Arrivals};
pub use kept::Confirmation;
pub(crate) use kept::{CONFIRM_RANGES_MAX, Kept};
pub(crate) use resequence::{Holding, Release, Resequencer, Waiting};
#[cfg(test)]
use stamp::Afters;
pub(crate) use stamp::{After, Chain, PUBLICATIONS_CHAIN, Stamp, Stamper};

/// The header that carries a message's stamp.
pub const STAMP_HEADER: &str = "hopmq.custody";

/// The header a destination adds when it passes a message on to the queue's new home under a
/// stamp of its own: the stamp it accepted the message under, so that its journal still
/// shows the acceptance.
pub(crate) const ACCEPTED_HEADER: &str = "hopmq.custody.accepted";

/// The header a copy sent again around a failure carries: how many copies were made of the
/// message, this one included.
pub(crate) const RESENT_HEADER: &str = "hopmq.resent";

/// The header a message carries when its destination stopped holding it for an earlier one
/// (see `resequence`): the earlier one's stamp, and why. Order may be broken just there.
pub(crate) const UNORDERED_HEADER: &str = "hopmq.unordered";

/// Every header custody sets: an operator's move replaces them all.
pub(crate) const HEADERS: [&str; 4] = [
    STAMP_HEADER,
    ACCEPTED_HEADER,
    RESENT_HEADER,
    UNORDERED_HEADER,
];

/// Ranges of accepted numbers kept per stream; each is a gap some copy may still fill.
pub(crate) const RANGES_MAX: usize = 1024;

/// Streams (incarnations of an origin) kept per origin and destination.
pub(crate) const EPOCHS_MAX: usize = 64;

/// The stamp in the header `key` (`STAMP_HEADER`, or `ACCEPTED_HEADER`) among `headers`.
pub(crate) fn stamp_among<'a>(headers: &[(&'a str, &'a str)], key: &str) -> Option<Stamp<'a>> {
    headers
        .iter()
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| Stamp::parse(value))
}

/// Separates the stamps of a publication's destinations in its stamp header: a persistent
/// publication carries one stamp per manager of its destination set (besides its publisher),
/// each in its publisher's stream to that manager, and a share split off for some of them
/// carries theirs only. A list never reads as one stamp.
pub(crate) const STAMPS_SEPARATOR: char = ',';

/// The stamps a publication's stamp header lists (one that does not parse is left out).
pub(crate) fn stamps(value: &str) -> impl Iterator<Item = Stamp<'_>> {
    value.split(STAMPS_SEPARATOR).filter_map(Stamp::parse)
}

/// Whether the stamps a publication's stamp header `value` lists are `custodian`'s: all of a
/// list are its publisher's, so the first tells, told apart without parsing at a relay.
pub(crate) fn stamped_by(value: &str, custodian: &str) -> bool {
    value
        .split(STAMPS_SEPARATOR)
        .next()
        .and_then(|first| Stamp::of_custodian(first, custodian))
        .is_some()
}

/// The stamp for `destination` in a publication's stamp header `value`: its text, and read.
pub(crate) fn stamp_in<'a>(value: &'a str, destination: &str) -> Option<(&'a str, Stamp<'a>)> {
    value
        .split(STAMPS_SEPARATOR)
        .filter_map(|text| Stamp::parse(text).map(|stamp| (text, stamp)))
        .find(|(_, stamp)| stamp.destination == destination)
}

/// The stamp header's value for a share of a publication stamped `value`: the stamps whose
/// destination `keep` says the share goes to; `None` if there are none.
pub(crate) fn stamps_for(value: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let mut out = String::new();
    for stamp in value.split(STAMPS_SEPARATOR) {
        if Stamp::parse(stamp).is_some_and(|s| keep(s.destination)) {
            if !out.is_empty() {
                out.push(STAMPS_SEPARATOR);
            }
            out.push_str(stamp);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Inserts `stamp` as the stamp header among `headers`, which are sorted by key.
pub(crate) fn insert_stamp<'a>(headers: &mut Vec<(&'a str, &'a str)>, stamp: &'a str) {
    let at = headers.partition_point(|(key, _)| *key < STAMP_HEADER);
    headers.insert(at, (STAMP_HEADER, stamp));
}

/// What to do with a stamped arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The first copy: store it.
    New,
    /// A copy of a message already accepted: drop it (and count it).
    Duplicate,
    /// Older than what is remembered: it may or may not have been accepted, so it goes to the
    /// dead-letter queue rather than risk a second delivery.
    Forgotten,
    /// New, but this earlier message it must not overtake is not here yet: hold it.
    Wait(After),
}

/// One stream's accepted numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Sorted, disjoint, non-adjacent half-open ranges.
    ranges: Vec<(u64, u64)>,
    /// Numbers below this that are not in `ranges` are forgotten.
    forgotten_below: u64,
}

impl Stream {
    fn contains(&self, number: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end <= number);
        self.ranges
            .get(i)
            .is_some_and(|&(start, _)| start <= number)
    }

    fn verdict(&self, number: u64) -> Verdict {
        if self.contains(number) {
            Verdict::Duplicate
        } else if number < self.forgotten_below {
            Verdict::Forgotten
        } else {
            Verdict::New
        }
    }

    /// Adds `number`; lets the lowest range go past [`RANGES_MAX`].
    fn insert(&mut self, number: u64) {
        let i = self.ranges.partition_point(|&(_, end)| end < number);
        let next = number + 1;
        match self.ranges.get_mut(i) {
            Some(range) if range.0 <= number && number < range.1 => return,
            Some(range) if range.1 == number => {
                range.1 = next;
                if self.ranges.get(i + 1).is_some_and(|r| r.0 == next) {
                    let merged = self.ranges.remove(i + 1);
                    self.ranges[i].1 = merged.1;
                }
            }
            Some(range) if range.0 == next => range.0 = number,
            _ => self.ranges.insert(i, (number, next)),
        }
        if self.ranges.len() > RANGES_MAX {
            let (_, end) = self.ranges.remove(0);
            self.forgotten_below = self.forgotten_below.max(end);
        }
    }

    /// Takes `number` out again (its store failed).
    fn remove(&mut self, number: u64) {
        let i = self.ranges.partition_point(|&(_, end)| end <= number);
        let Some(&(start, end)) = self.ranges.get(i) else {
            return;
        };
        if number < start {
            return;
        }
        match (start == number, end == number + 1) {
            (true, true) => {
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i].0 = number + 1,
            (false, true) => self.ranges[i].1 = number,
            (false, false) => {
                self.ranges[i].1 = number;
                self.ranges.insert(i + 1, (number + 1, end));
            }
        }
    }

    fn merge(&mut self, other: &Stream) {
        for &(start, end) in &other.ranges {
            let mut merged = (start, end);
            self.ranges.retain(|&(s, e)| {
                // Overlapping or adjacent ranges become one.
                let touches = s <= merged.1 && merged.0 <= e;
                if touches {
                    merged = (merged.0.min(s), merged.1.max(e));
                }
                !touches
            });
            let i = self.ranges.partition_point(|&(s, _)| s < merged.0);
            self.ranges.insert(i, merged);
        }
        while self.ranges.len() > RANGES_MAX {
            let (_, end) = self.ranges.remove(0);
            self.forgotten_below = self.forgotten_below.max(end);
        }
        self.forgotten_below = self.forgotten_below.max(other.forgotten_below);
    }
}

/// The streams of one origin to one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// By epoch.
    streams: BTreeMap<u64, Stream>,
    /// Epochs at or below this without a stream are forgotten.
    forgotten_epochs_up_to: Option<u64>,
}

impl Pair {
    fn verdict(&self, epoch: u64, number: u64) -> Verdict {
        match self.streams.get(&epoch) {
            Some(stream) => stream.verdict(number),
            None if self
                .forgotten_epochs_up_to
                .is_some_and(|up_to| epoch <= up_to) =>
            {
                Verdict::Forgotten
            }
            None => Verdict::New,
        }
    }

    fn stream(&mut self, epoch: u64) -> &mut Stream {
        if !self.streams.contains_key(&epoch) && self.streams.len() >= EPOCHS_MAX {
            if let Some((oldest, _)) = self.streams.pop_first() {
                self.forgotten_epochs_up_to = self.forgotten_epochs_up_to.max(Some(oldest));
            }
        }
        self.streams.entry(epoch).or_default()
    }
}

/// The durable form of [`Accepted`]: `(origin, destination, pair)`.
pub type Summary = Vec<(String, String, Pair)>;

/// The journal's custody record: this manager's epoch (so the next incarnation's is higher,
/// whatever its clock says) and what it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyRecord {
    /// The epoch of the incarnation that wrote it.
    pub epoch: u64,
    /// What was durably accepted when it was written.
    pub accepted: Summary,
}

/// A copy admitted and not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Its pair's index in `Accepted::pairs`.
    pair: u32,
    epoch: u64,
    number: u64,
}

/// One custodian and destination, and their streams.
#[derive(Debug)]
struct PairSlot {
    custodian: Box<str>,
    destination: Box<str>,
    pair: Pair,
}

/// What this manager accepted of every stream that reached it; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// Never shrinks: `Admitted` tokens name pairs by index.
    pairs: Vec<PairSlot>,
    /// By custodian, then destination: the index in `pairs` (looked up per message without
    /// allocating).
    index: FxHashMap<Box<str>, FxHashMap<Box<str>, u32>>,
    /// Admitted, their stores still in flight, in admission order (stores complete in that
    /// order, so the front is what completes); left out of summaries.
    pending: std::collections::VecDeque<Admitted>,
    /// Copies dropped since start.
    duplicates: u64,
    /// Streams whose confirmation is due (something of theirs arrived, or their custodian
    /// asked), by pair index and epoch.
    dirty: BTreeSet<(u32, u64)>,
}

impl Accepted {
    /// The index of the pair of `custodian` and `destination`, made if new.
    fn pair_index(&mut self, custodian: &str, destination: &str) -> u32 {
        if let Some(&i) = self
            .index
            .get(custodian)
            .and_then(|destinations| destinations.get(destination))
        {
            return i;
        }
        let i = self.pairs.len() as u32;
        self.pairs.push(PairSlot {
            custodian: custodian.into(),
            destination: destination.into(),
            pair: Pair::default(),
        });
        self.index
            .entry(custodian.into())
            .or_default()
            .insert(destination.into(), i);
        i
    }

    /// Decides on a stamped arrival; a new one is admitted at once (a second copy in the same
    /// batch is a duplicate) and must later be [`Self::stored`] or [`Self::failed`]. With
    /// `ordered_at` (the wall clock now), a new one whose earlier message is neither here
    /// (admitted, or forgotten) nor expired must wait: it is not admitted.
    pub(crate) fn admit(
        &mut self,
        stamp: Stamp<'_>,
        ordered_at: Option<u64>,
    ) -> (Verdict, Option<Admitted>) {
        let index = self.pair_index(stamp.custodian, stamp.destination);
        let pair = &mut self.pairs[index as usize].pair;
        let mut verdict = pair.verdict(stamp.epoch, stamp.number);
        if let (Verdict::New, Some(now_ms)) = (verdict, ordered_at) {
            let missing = stamp.after.iter().find(|after| {
                let expired = after.expires_ms.is_some_and(|at| at <= now_ms);
                !expired && pair.verdict(stamp.epoch, after.number) == Verdict::New
            });
            if let Some(after) = missing {
                verdict = Verdict::Wait(after);
            }
        }
        match verdict {
            Verdict::Wait(_) => (verdict, None),
            Verdict::New => {
                pair.stream(stamp.epoch).insert(stamp.number);
                let admitted = Admitted {
                    pair: index,
                    epoch: stamp.epoch,
                    number: stamp.number,
                };
                self.pending.push_back(admitted);
                (verdict, Some(admitted))
            }
            Verdict::Duplicate => {
                self.duplicates += 1;
                // The custodian sent it again: it may have missed the confirmation.
                self.dirty.insert((index, stamp.epoch));
                (verdict, None)
            }
            Verdict::Forgotten => {
                self.dirty.insert((index, stamp.epoch));
                (verdict, None)
            }
        }
    }

    /// The stores of `admitted` are durable.
    pub(crate) fn stored(&mut self, admitted: &[Admitted]) {
        self.settled(admitted);
        let mut last = None;
        for done in admitted {
            // A batch is mostly one stream: one insertion for a run of it.
            if last != Some((done.pair, done.epoch)) {
                last = Some((done.pair, done.epoch));
                self.dirty.insert((done.pair, done.epoch));
            }
        }
    }

    /// `admitted` are no longer in flight.
    fn settled(&mut self, admitted: &[Admitted]) {
        for done in admitted {
            if self.pending.front() == Some(done) {
                self.pending.pop_front();
            } else if let Some(i) = self.pending.iter().position(|p| p == done) {
                self.pending.remove(i);
            }
        }
    }

    /// The stores of `admitted` failed: their numbers are free for the next copy.
    pub(crate) fn failed(&mut self, admitted: &[Admitted]) {
        self.settled(admitted);
        for done in admitted {
            if let Some(stream) = self
                .pairs
                .get_mut(done.pair as usize)
                .and_then(|slot| slot.pair.streams.get_mut(&done.epoch))
            {
                stream.remove(done.number);
            }
        }
    }

    /// A stamped message found durable at recovery.
    pub(crate) fn recovered(&mut self, stamp: Stamp<'_>) {
        let index = self.pair_index(stamp.custodian, stamp.destination);
        self.pairs[index as usize]
            .pair
            .stream(stamp.epoch)
            .insert(stamp.number);
    }

    /// A summary found at recovery: merged with what is known.
    pub(crate) fn merge(&mut self, summary: Summary) {
        for (custodian, destination, pair) in summary {
            let index = self.pair_index(&custodian, &destination);
            let mine = &mut self.pairs[index as usize].pair;
            mine.forgotten_epochs_up_to =
                mine.forgotten_epochs_up_to.max(pair.forgotten_epochs_up_to);
            for (epoch, stream) in &pair.streams {
                mine.stream(*epoch).merge(stream);
            }
        }
    }

    /// What is durably accepted, for the journal, in a stable order.
    pub(crate) fn summary(&self) -> Summary {
        let mut summary: Summary = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let mut pair = slot.pair.clone();
                for pending in self.pending.iter().filter(|p| p.pair as usize == i) {
                    if let Some(stream) = pair.streams.get_mut(&pending.epoch) {
                        stream.remove(pending.number);
                    }
                }
                (
                    slot.custodian.to_string(),
                    slot.destination.to_string(),
                    pair,
                )
            })
            .collect();
        summary.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        summary
    }

    /// Copies dropped since start.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// `custodian` asks what `destination` has of its streams.
    pub(crate) fn ask(&mut self, custodian: &str, destination: &str, epochs: &[u64]) {
        let index = self.pair_index(custodian, destination);
        for &epoch in self.pairs[index as usize].pair.streams.keys() {
            self.dirty.insert((index, epoch));
        }
        // Bounded like a confirmation: a peer's list is not trusted to be short.
        for &epoch in epochs.iter().take(EPOCHS_MAX) {
            self.dirty.insert((index, epoch));
        }
    }

    /// A later message of `custodian`'s stream `epoch` to `destination` is held for an
    /// earlier one: a confirmation goes, saying which (see [`Confirmation::waiting_for`]).
    pub(crate) fn waiting(&mut self, custodian: &str, destination: &str, epoch: u64) {
        let index = self.pair_index(custodian, destination);
        self.dirty.insert((index, epoch));
    }

    /// The confirmations due from `me` (streams to other destinations are not this
    /// manager's to confirm), each its stream's durable view.
    pub(crate) fn confirmations(&mut self, me: &str) -> Vec<Confirmation> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut confirmations = Vec::with_capacity(dirty.len());
        for (index, epoch) in dirty {
            let slot = &self.pairs[index as usize];
            if &*slot.destination != me {
                continue;
            }
            let (settled_below, ranges) = match slot.pair.streams.get(&epoch) {
                Some(stream) => {
                    let mut durable = stream.clone();
                    for pending in self
                        .pending
                        .iter()
                        .filter(|p| p.pair == index && p.epoch == epoch)
                    {
                        durable.remove(pending.number);
                    }
                    durable.ranges.truncate(CONFIRM_RANGES_MAX);
                    (durable.forgotten_below, durable.ranges)
                }
                // Forgotten whole: everything of it is settled, one way or the other.
                None if slot.pair.verdict(epoch, 1) == Verdict::Forgotten => (u64::MAX, Vec::new()),
                // Nothing of it here (yet): what a later message is held for, if anything.
                None => (0, Vec::new()),
            };
            confirmations.push(Confirmation {
                custodian: slot.custodian.to_string(),
                destination: slot.destination.to_string(),
                epoch,
                settled_below,
                ranges,
                waiting_for: Vec::new(),
            });
        }
        confirmations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp(epoch: u64, number: u64) -> Stamp<'static> {
        Stamp {
            custodian: "north",
            epoch,
            number,
            destination: "south",
            after: Afters::default(),
        }
    }

    #[test]
    fn a_publications_stamps_split_by_share_and_each_destination_finds_its_own() {
        let mut stamper = Stamper::new("north", 9);
        let publication = Chain {
            queue: stamp::PUBLICATIONS_CHAIN,
            priority: 4,
            expires_ms: None,
        };
        let list: Vec<String> = ["east", "south", "west"]
            .iter()
            .map(|destination| stamper.stamp(destination, publication))
            .collect();
        let list = list.join(",");
        assert_eq!(list, "north/9.1@east,north/9.1@south,north/9.1@west");
        assert_eq!(Stamp::parse(&list), None, "a list is not one stamp");
        let share = stamps_for(&list, |d| d != "east").unwrap();
        assert_eq!(share, "north/9.1@south,north/9.1@west");
        assert_eq!(stamps_for(&list, |_| false), None);
        let (text, stamp) = stamp_in(&share, "west").unwrap();
        assert_eq!(text, "north/9.1@west");
        assert_eq!((stamp.custodian, stamp.number), ("north", 1));
        assert_eq!(stamp_in(&share, "east"), None);
        // Numbers go on in each destination's one stream, whatever the chain.
        let next = stamper.stamp(
            "south",
            Chain {
                queue: "orders",
                priority: 4,
                expires_ms: None,
            },
        );
        assert_eq!(
            next, "north/9.2@south",
            "a queue's chain is not the publications'"
        );
        // A later publication names the earlier one of its stream, not the queue message.
        assert_eq!(stamper.stamp("south", publication), "north/9.3@south<1");
        let destinations: Vec<&str> = stamps(&list).map(|s| s.destination).collect();
        assert_eq!(destinations, ["east", "south", "west"]);
        assert!(stamped_by(&share, "north"));
        assert!(!stamped_by(&share, "nort"));
    }

    #[test]
    fn a_second_copy_is_a_duplicate_and_a_failed_store_frees_its_number() {
        let mut accepted = Accepted::default();
        let (verdict, admitted) = accepted.admit(stamp(7, 1), None);
        assert_eq!(verdict, Verdict::New);
        assert_eq!(accepted.admit(stamp(7, 1), None).0, Verdict::Duplicate);
        // Another custodian, epoch or destination is another stream.
        let west = Stamp {
            custodian: "west",
            ..stamp(7, 1)
        };
        assert_eq!(accepted.admit(west, None).0, Verdict::New);
        assert_eq!(accepted.admit(stamp(8, 1), None).0, Verdict::New);
        accepted.failed(&[admitted.unwrap()]);
        assert_eq!(accepted.admit(stamp(7, 1), None).0, Verdict::New);
        assert_eq!(accepted.duplicates(), 1);
    }

    #[test]
    fn a_message_waits_for_the_earlier_ones_it_names_unless_they_expired() {
        let mut accepted = Accepted::default();
        let value = |number: u64, afters: &str| format!("north/7.{number}@south{afters}");
        let admit = |accepted: &mut Accepted, value: &str, now| {
            accepted.admit(Stamp::parse(value).unwrap(), now).0
        };
        let waits_for = |number| {
            Verdict::Wait(After {
                number,
                expires_ms: None,
            })
        };
        assert_eq!(
            admit(&mut accepted, &value(3, "<2"), Some(50)),
            waits_for(2)
        );
        // Waiting admits nothing; unordered, it is admitted.
        assert_eq!(admit(&mut accepted, &value(3, "<2"), None), Verdict::New);
        assert_eq!(
            admit(&mut accepted, &value(3, "<2"), Some(50)),
            Verdict::Duplicate
        );
        // An expired one is not waited for, the next one named is.
        assert_eq!(
            admit(&mut accepted, &value(5, "<4~50<1"), Some(50)),
            waits_for(1)
        );
        assert_eq!(
            admit(&mut accepted, &value(5, "<4~51<1"), Some(50)).clone(),
            Verdict::Wait(After {
                number: 4,
                expires_ms: Some(51)
            })
        );
        accepted.admit(stamp(7, 1), None);
        assert_eq!(
            admit(&mut accepted, &value(5, "<4~50<1"), Some(50)),
            Verdict::New
        );
    }

    #[test]
    fn a_destination_that_lost_everything_still_answers_a_question_and_says_what_it_waits_for() {
        let mut accepted = Accepted::default();
        accepted.ask("north", "south", &[7]);
        let answers = accepted.confirmations("south");
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!((answers[0].epoch, answers[0].settled_below), (7, 0));
        assert!(answers[0].ranges.is_empty(), "it has nothing of stream 7");
        accepted.waiting("north", "south", 8);
        assert_eq!(accepted.confirmations("south")[0].epoch, 8);
        assert!(accepted.confirmations("south").is_empty(), "said once");
    }

    #[test]
    fn summaries_leave_out_stores_in_flight() {
        let mut accepted = Accepted::default();
        let (_, first) = accepted.admit(stamp(7, 1), None);
        accepted.stored(&[first.unwrap()]);
        accepted.admit(stamp(7, 2), None);
        let mut recovered = Accepted::default();
        recovered.merge(accepted.summary());
        assert_eq!(recovered.admit(stamp(7, 1), None).0, Verdict::Duplicate);
        assert_eq!(recovered.admit(stamp(7, 2), None).0, Verdict::New);
    }

    #[test]
    fn past_the_limits_copies_are_forgotten_never_new() {
        let mut accepted = Accepted::default();
        // Every other number: each one is a range of its own.
        for number in (1..=2 * (RANGES_MAX as u64 + 10)).step_by(2) {
            accepted.admit(stamp(1, number), None);
        }
        assert_eq!(accepted.admit(stamp(1, 1), None).0, Verdict::Forgotten);
        assert_eq!(accepted.admit(stamp(1, 2), None).0, Verdict::Forgotten);
        let last = 2 * (RANGES_MAX as u64 + 10) - 1;
        assert_eq!(accepted.admit(stamp(1, last), None).0, Verdict::Duplicate);
        assert_eq!(accepted.admit(stamp(1, last + 1), None).0, Verdict::New);
        for epoch in 2..=EPOCHS_MAX as u64 + 1 {
            accepted.admit(stamp(epoch, 1), None);
        }
        assert_eq!(accepted.admit(stamp(1, 9), None).0, Verdict::Forgotten);
        assert_eq!(
            accepted.admit(stamp(EPOCHS_MAX as u64 + 2, 1), None).0,
            Verdict::New
        );
    }

    proptest! {
        /// Against a plain set: a number is a duplicate exactly when it was admitted before
        /// and not failed; a summary merged into an empty state says the same of stored ones.
        #[test]
        fn ranges_behave_as_a_set(ops in proptest::collection::vec((1u64..200, any::<bool>()), 1..400)) {
            let mut accepted = Accepted::default();
            let mut model = std::collections::BTreeSet::new();
            for (number, fail) in ops {
                let (verdict, admitted) = accepted.admit(stamp(3, number), None);
                prop_assert_eq!(verdict == Verdict::Duplicate, model.contains(&number));
                if let Some(admitted) = admitted {
                    if fail {
                        accepted.failed(&[admitted]);
                    } else {
                        accepted.stored(&[admitted]);
                        model.insert(number);
                    }
                }
            }
            let mut recovered = Accepted::default();
            recovered.merge(accepted.summary());
            for number in 1..200 {
                let (verdict, _) = recovered.admit(stamp(3, number), None);
                prop_assert_eq!(verdict == Verdict::Duplicate, model.contains(&number));
            }
        }
    }
}
