//! The core's side of custody (see `crate::custody`): stamping what leaves for another
//! manager, deciding on stamped arrivals, and keeping the custody record at the journal's head.
//!
//! Invariants: a record with this incarnation's epoch is appended before the first message
//! stamped with it (commits are durable in append order), so a crash can never leave a stamped
//! message durable and its epoch not, and the next incarnation's epoch is higher;
//! a segment holding the record of a stamped arrival stays (it is pinned in [`Retention`]) until
//! a custody record written after the arrival was durable, so the arrival is never forgotten
//! with its segment.

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::custody::{
    ACCEPTED_HEADER, Accepted, Admitted, Answer, Arrivals, Chain, CustodyRecord, Kept, Resequencer,
    STAMP_HEADER, Stamp, Stamper, Verdict, Waiting,
};

use std::collections::BTreeMap;
use std::time::Duration;

mod origin;

use crate::manager::recovery::RecoveredCustody;
pub(super) use origin::kept_record_of;

/// See the module documentation.
pub(super) struct CustodyState {
    pub(super) stamper: Stamper,
    pub(super) accepted: Accepted,
    /// The last custody record written.
    record: Option<Location>,
    writing: bool,
    /// Whether a record with this incarnation's epoch was appended (stamps wait for it).
    epoch_appended: bool,
    /// Segments holding stamped arrivals no durable custody record covers yet, each pinned
    /// once in retention.
    pins: Vec<u64>,
    /// A message that went round a loop was held: the held messages are examined again at
    /// the next tick, whether or not the routes changed meanwhile.
    looped: bool,
    /// This manager's own messages a neighbour acknowledged, kept for their confirmation.
    pub(super) kept: Kept,
    /// Puts waiting for their messages' arrival.
    pub(super) arrivals: Arrivals,
    /// Arrivals held for an earlier message of their origin and queue.
    pub(super) resequencer: Resequencer,
    /// Held publications released by an admission whose write could not take them (a
    /// publication split again when routes changed): placed at the next tick.
    pub(super) released: Vec<Waiting>,
    /// The path to each destination with kept messages, as last seen (`None`: unreachable).
    paths: BTreeMap<String, Option<Vec<ManagerName>>>,
    /// How long a kept message waits for its confirmation before it is sent again (if its
    /// way broke) or its destination is asked.
    pub(super) timeout: Duration,
    /// This incarnation's own stamped messages given to a channel, by seq: `(destination's
    /// index in `names`, epoch, number)`, noted when the message is put or sent (its record
    /// is read then anyway), so an acknowledgement needs no second read of the record.
    sent: FxHashMap<u64, (u32, u64, u64)>,
    names: Vec<Box<str>>,
    name_index: FxHashMap<Box<str>, u32>,
    /// This incarnation's publication shares carrying its own stamps, by seq: one may carry
    /// several, so an acknowledgement reads them from its record.
    shares: rustc_hash::FxHashSet<u64>,
    /// Messages with a lower seq were made by an earlier incarnation: not in `sent`.
    first_seq: u64,
}

impl CustodyState {
    pub(super) fn new(
        name: &ManagerName,
        recovered: RecoveredCustody,
        first_seq: u64,
        now: Now,
    ) -> Self {
        // Above every earlier incarnation's, even if the clock went back.
        let epoch = now.wall_ms.max(recovered.epoch + 1);
        let mut kept = Kept::default();
        for (destination, epoch, number, entry) in recovered.kept {
            // Which neighbour has it is not recorded: it goes again after the timeout unless
            // confirmed meanwhile.
            kept.recovered(&destination, (epoch, number), entry, now.mono_ms);
        }
        Self {
            kept,
            sent: FxHashMap::default(),
            shares: rustc_hash::FxHashSet::default(),
            names: Vec::new(),
            name_index: FxHashMap::default(),
            first_seq,
            arrivals: Arrivals::default(),
            resequencer: Resequencer::default(),
            released: Vec::new(),
            paths: BTreeMap::new(),
            timeout: 2 * Duration::from_millis(crate::config::defaults::LINK_DEAD_INTERVAL_MS),
            stamper: Stamper::new(name.as_str(), epoch),
            accepted: recovered.accepted,
            record: recovered.location,
            writing: false,
            epoch_appended: false,
            looped: false,
            pins: recovered.pins.into_iter().collect(),
        }
    }

    /// Notes message `seq`, stamped by this manager `number` in its stream `epoch` to
    /// `destination`.
    pub(super) fn note_own(&mut self, seq: u64, destination: &str, (epoch, number): (u64, u64)) {
        let index = match self.name_index.get(destination) {
            Some(&index) => index,
            None => {
                let index = self.names.len() as u32;
                self.names.push(destination.into());
                self.name_index.insert(destination.into(), index);
                index
            }
        };
        self.sent.insert(seq, (index, epoch, number));
    }

    /// Notes publication share `seq`, which carries stamps of this manager's.
    pub(super) fn note_share(&mut self, seq: u64) {
        self.shares.insert(seq);
    }

    /// Message `seq` is gone for good (it may have been noted and never acknowledged).
    pub(super) fn forget_sent(&mut self, seq: u64) {
        if !self.sent.is_empty() {
            self.sent.remove(&seq);
        }
        if !self.shares.is_empty() {
            self.shares.remove(&seq);
        }
    }

    /// Message `seq` (whose record is `payload`) is given to a channel: its dedup key, and,
    /// if this manager stamped it and has not noted it yet, it is noted (one read of the
    /// record for both).
    pub(super) fn note_sent(&mut self, me: &str, seq: u64, payload: &[u8]) -> u128 {
        let Ok(passing) = record::Passing::read(payload) else {
            return 0; // the receiver then skips it by sequence number only
        };
        if !self.sent.contains_key(&seq) {
            // A copy of an earlier incarnation's message has a new seq and the old epoch.
            let own = passing
                .stamp
                .and_then(|value| Stamp::of_custodian(value, me));
            if let Some(stamp) = own {
                self.note_own(seq, stamp.destination, (stamp.epoch, stamp.number));
            }
        }
        passing.key(0)
    }

    /// What was noted of message `seq`, now acknowledged: `Some(Some(..))` for one of this
    /// manager's own, `Some(None)` for one known not to be, `None` if unknown (made by an
    /// earlier incarnation: its record must be read).
    pub(super) fn take_sent(&mut self, seq: u64) -> Option<Option<(String, u64, u64)>> {
        let share = !self.shares.is_empty() && self.shares.remove(&seq);
        match self.sent.remove(&seq) {
            // A share may carry several of this manager's stamps: read from its record.
            _ if share => None,
            Some((index, epoch, number)) => {
                let destination = self.names.get(index as usize)?.to_string();
                Some(Some((destination, epoch, number)))
            }
            None if seq >= self.first_seq => Some(None),
            None => None,
        }
    }

    /// Message `seq` was just put and stamped for `destination`: noted, and its stream place
    /// added to `leaving` for a put that waits for arrival.
    pub(super) fn stamped_put(
        &mut self,
        seq: u64,
        destination: &str,
        leaving: Option<&mut Vec<(String, u64, u64)>>,
    ) {
        let Some(number) = self.stamper.last(destination) else {
            return;
        };
        let epoch = self.stamper.epoch();
        self.note_own(seq, destination, (epoch, number));
        if let Some(leaving) = leaving {
            leaving.push((destination.to_owned(), epoch, number));
        }
    }

    /// Copies of stamped messages dropped since start.
    pub(super) fn duplicates(&self) -> u64 {
        self.accepted.duplicates() + self.resequencer.duplicates()
    }
}

/// What happens to a stamped message arriving here.
pub(super) enum Admission {
    /// Store it where it was resolved to; the token (if custody admitted it here) goes with
    /// its write.
    Store(Option<Admitted>),
    /// This manager was its destination, and its queue has moved on: admitted here, it leaves
    /// again with these headers (a stamp of this manager's, and the one it was accepted under).
    HandOver(Admitted, Vec<(&'static str, String)>),
    /// A copy of one already here: drop it.
    Drop,
    /// This earlier message it must not overtake is not here yet: hold it.
    Hold(crate::custody::After),
    /// Dead-letter it, for this reason.
    DeadLetter(String),
}

/// A header a message takes when it leaves for its queue's new home.
pub(super) type Restamp = Option<(&'static str, String)>;

/// Whether a message in `queue` stays here (a local queue, or the dead-letter queue) rather
/// than waiting to leave.
pub(super) fn stays(queue: &QueueName) -> bool {
    !queue
        .as_str()
        .starts_with(forward::TRANSMISSION_QUEUE_PREFIX)
        && queue.as_str() != forward::HELD_QUEUE
}

impl Core {
    /// How long this manager's own message, acknowledged by a neighbour, waits for its
    /// destination's confirmation (see `crate::custody::Kept`).
    pub fn set_custody_timeout(&mut self, timeout: Duration) {
        self.custody.timeout = timeout;
    }

    /// This manager's own messages kept until their destination confirms them.
    pub fn kept_messages(&self) -> usize {
        self.custody.kept.len()
    }

    /// Arrivals held here for an earlier message of their origin (see `forward::hold`), and
    /// publications released from a hold, waiting for the tick.
    pub fn held_messages(&self) -> usize {
        self.custody.resequencer.len() + self.custody.released.len()
    }

    /// Answers puts that waited for arrival.
    pub(super) fn answer_arrivals(&mut self, answers: impl IntoIterator<Item = Answer>) {
        for answer in answers {
            let _delivered = match answer {
                Answer::Arrived {
                    connection,
                    request,
                    ids,
                } => self.reply(connection, request, Ok(Reply::Put(ids))),
                Answer::NotYet {
                    connection,
                    request,
                    pending,
                    timeout_ms,
                } => self.reply(
                    connection,
                    request,
                    Err(ApiError::NotArrived {
                        pending,
                        timeout_ms,
                    }),
                ),
            };
        }
    }

    /// The stamp header value for a message put here for `home`, in `chain`.
    pub(super) fn stamp_for(&mut self, home: &ManagerName, chain: Chain<'_>) -> String {
        self.append_epoch();
        self.custody.stamper.stamp(home.as_str(), chain)
    }

    /// Appends a custody record with this incarnation's epoch unless one was: before the
    /// first message stamped with it, since commits are durable in append order.
    fn append_epoch(&mut self) {
        if !self.custody.epoch_appended {
            self.write_custody();
        }
    }

    /// Where a message for `destination` goes from here: a stamped one towards its stamp's
    /// destination while that is another manager (every copy of a message ends at the same
    /// manager, whatever the topology says meanwhile of its queue's home, and only there may
    /// it be dead-lettered), else where the address leads.
    pub(super) fn stamped_place(
        &mut self,
        destination: &str,
        stamp: Option<Stamp<'_>>,
    ) -> Result<QueueName, String> {
        if let Some(stamp) = stamp.filter(|s| s.destination != self.name.as_str()) {
            // Remembered: per message, a relay would otherwise validate a name and make a
            // queue name.
            if let Some(queue) = self.routing.towards(stamp.destination) {
                let queue = queue.clone();
                self.ensure_slot(&queue);
                return Ok(queue);
            }
            // A destination this topology does not know (yet): held, like an address this
            // manager cannot place, never dead-lettered at a relay.
            let queue = ManagerName::new(stamp.destination)
                .ok()
                .and_then(|manager| self.route_to(&manager))
                .unwrap_or_else(forward::held_queue);
            self.routing
                .remember_towards(stamp.destination, queue.clone());
            self.ensure_slot(&queue);
            return Ok(queue);
        }
        self.resolve_arrival(destination)
    }

    /// Decides on a stamped message arriving here for `queue` (see [`Admission`]): with
    /// `ordered_at` (the wall clock now), one that came before the message it must not
    /// overtake is held.
    pub(super) fn admit(
        &mut self,
        stamp: Option<Stamp<'_>>,
        passing: &record::Passing<'_>,
        queue: &QueueName,
        ordered_at: Option<u64>,
    ) -> Admission {
        let destination = passing.destination;
        let Some(stamp) = stamp else {
            return Admission::Store(None);
        };
        let mine = stamp.destination == self.name.as_str();
        if (!mine && !stays(queue)) || mutation::active(Mutation::SkipCustodyDedup) {
            return Admission::Store(None);
        }
        let ordered_at =
            ordered_at.filter(|_| mine && !mutation::active(Mutation::SkipResequencing));
        match self.custody.accepted.admit(stamp, ordered_at) {
            (Verdict::Wait(after), _) => Admission::Hold(after),
            (Verdict::New, Some(admitted)) if mine && !stays(queue) => {
                let mut headers = vec![(ACCEPTED_HEADER, stamp.value())];
                headers.extend(self.handover_stamp(
                    destination,
                    passing.priority,
                    passing.expires_at_ms,
                ));
                Admission::HandOver(admitted, headers)
            }
            (Verdict::New, admitted) => Admission::Store(admitted),
            (Verdict::Duplicate, _) => {
                debug!(stamp = stamp.value(), "a second copy arrived; dropped");
                Admission::Drop
            }
            (Verdict::Forgotten, _) => Admission::DeadLetter(format!(
                "custody: stream {}/{}.*@{} is older than what this manager remembers, so \
                 this may be a second copy",
                stamp.custodian, stamp.epoch, stamp.destination
            )),
        }
    }

    /// A stamp of this manager's for the home `destination` now has, if it has one elsewhere.
    pub(super) fn handover_stamp(
        &mut self,
        destination: &str,
        priority: u8,
        expires_ms: Option<u64>,
    ) -> Restamp {
        let address: Address = destination.parse().ok()?;
        let home = match address.manager {
            Some(manager) => manager,
            None => self
                .routing
                .topology()
                .queue(address.queue.as_str())?
                .home
                .clone(),
        };
        let chain = Chain {
            queue: address.queue.as_str(),
            priority,
            expires_ms,
        };
        (home != self.name).then(|| (STAMP_HEADER, self.stamp_for(&home, chain)))
    }

    /// The write of `admitted` ended: durable (its last record's segment pinned), or failed.
    pub(super) fn admitted_written(
        &mut self,
        admitted: &[Admitted],
        result: &Result<Vec<Location>, StoreError>,
    ) {
        if admitted.is_empty() {
            return;
        }
        let segment = result
            .as_ref()
            .ok()
            .and_then(|l| l.last())
            .map(|l| l.segment);
        match segment {
            Some(segment) => {
                self.custody.accepted.stored(admitted);
                if !self.custody.pins.contains(&segment) {
                    self.custody.pins.push(segment);
                    self.retention.live(segment, 0);
                }
            }
            None => self.custody.accepted.failed(admitted),
        }
        self.flush_confirmations();
    }

    /// Writes the custody record at the journal's head.
    pub(super) fn write_custody(&mut self) {
        let record = CustodyRecord {
            epoch: self.custody.stamper.epoch(),
            accepted: self.custody.accepted.summary(),
        };
        self.custody.writing = true;
        self.custody.epoch_appended = true;
        let covered = std::mem::take(&mut self.custody.pins);
        self.commit_freeing(
            vec![Bytes::from(record::encode(&Record::Custody(record)))],
            Continuation::Custody { covered },
        );
    }

    /// The stamp header's value for a persistent publication published here for
    /// `destinations`: a stamp in this manager's stream to each of the others (see
    /// `crate::custody::STAMPS_SEPARATOR`), each naming the earlier publications of that
    /// stream (and `message`'s priority) it must not overtake; `None` if there are none.
    pub(super) fn stamp_publication(
        &mut self,
        destinations: &crate::pubsub::Destinations,
        message: &OutgoingMessage,
        now_ms: u64,
    ) -> Option<String> {
        let chain = Chain {
            queue: crate::custody::PUBLICATIONS_CHAIN,
            priority: message.priority,
            expires_ms: message.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
        };
        let mut list = String::new();
        for manager in destinations.managers() {
            if *manager == self.name || mutation::active(Mutation::SkipPublicationCustody) {
                continue;
            }
            self.append_epoch();
            if !list.is_empty() {
                list.push(crate::custody::STAMPS_SEPARATOR);
            }
            list.push_str(&self.custody.stamper.stamp(manager.as_str(), chain));
        }
        (!list.is_empty()).then_some(list)
    }

    /// A stamped message past twice the hop limit was held (see `forward::receive`).
    pub(super) fn held_a_looping_message(&mut self) {
        self.custody.looped = true;
    }

    /// Rewrites the custody record when it, or a stamped arrival it does not cover, sits in a
    /// sealed segment, so old segments can go; sends looping messages that were held on again.
    pub(super) fn on_custody_maintenance(&mut self, now: Now) {
        if std::mem::take(&mut self.custody.looped) {
            self.reexamine(&BTreeSet::from([forward::held_queue()]), now);
        }
        // While messages are held, their custodians hear each tick what is missing (a
        // notice may be lost, or come before the missing message could be sent again).
        for (custodian, epoch) in self.custody.resequencer.streams() {
            let me = self.name.as_str();
            self.custody.accepted.waiting(&custodian, me, epoch);
        }
        self.flush_confirmations();
        self.on_kept_maintenance(now);
        self.release_due(now);
        self.custody.stamper.forget_settled();
        let active = self.storage.active_segment();
        let custody = &self.custody;
        if !custody.writing
            && (custody.record.is_some_and(|l| l.segment < active)
                || custody.pins.iter().any(|&segment| segment < active))
        {
            self.write_custody();
        }
    }

    /// The custody record was written (or not).
    pub(super) fn on_custody_written(
        &mut self,
        covered: Vec<u64>,
        result: Result<Vec<Location>, StoreError>,
    ) {
        self.custody.writing = false;
        match result {
            Ok(locations) => {
                let location = locations.first().copied();
                let old = std::mem::replace(&mut self.custody.record, location);
                if let Some(new) = location {
                    self.retention.live(new.segment, new.len);
                }
                if let Some(old) = old {
                    self.retention.dead(old.segment, old.len);
                }
                for segment in covered {
                    self.retention.dead(segment, 0);
                }
            }
            Err(error) => {
                warn!(%error, "writing the custody record failed; the next tick tries again");
                self.custody.epoch_appended = false;
                for segment in covered {
                    if self.custody.pins.contains(&segment) {
                        self.retention.dead(segment, 0);
                    } else {
                        self.custody.pins.push(segment);
                    }
                }
            }
        }
    }
}

/// A user's header may not pass for a stamp.
pub(super) fn check_headers(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if headers.contains_key(STAMP_HEADER) {
        return Err(ApiError::BadRequest {
            reason: format!("header `{STAMP_HEADER}` is set by managers, not by applications"),
        });
    }
    Ok(())
}
