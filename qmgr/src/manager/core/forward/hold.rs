//! Holding arrivals for order (see `crate::custody::resequence`): an arrival that came before
//! the message of its origin and queue it must not overtake is acknowledged but not stored;
//! what an admission releases is placed in the same write, right after it, and what reaches
//! its deadline is written on its own at the tick.

// The forwarding types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::custody::{After, Holding, Release, Waiting};
use hopmq::protocol::HeldStatus;

/// Held arrivals released at their deadline, written together.
#[derive(Debug)]
pub(crate) struct Released {
    items: Vec<PutItem>,
    handoffs: Vec<Handoff>,
    direct: Vec<DirectLink>,
    admitted: Vec<Admitted>,
}

impl Core {
    /// Holds an arrival stamped `stamp` until `after` is here.
    pub(in crate::manager::core) fn hold_arrival(
        &mut self,
        stamp: Stamp<'_>,
        after: After,
        waiting: Waiting,
    ) {
        match self.custody.resequencer.hold(stamp, after, waiting) {
            Holding::Held => {
                // Its custodian hears at once what is missing.
                let accepted = &mut self.custody.accepted;
                accepted.waiting(stamp.custodian, stamp.destination, stamp.epoch);
                debug!(
                    stamp = stamp.value(),
                    waits_for = after.number,
                    "arrived before an earlier message of its origin and queue; held"
                );
            }
            Holding::Duplicate => debug!(
                stamp = stamp.value(),
                "a second copy of a held message; dropped"
            ),
            Holding::Full => warn!(
                stamp = stamp.value(),
                "too many arrivals held for order; this one is dropped and its custodian sends it again"
            ),
        }
    }

    /// The held arrival that `stamp`'s admission here releases, if any, joins `arrivals`.
    pub(super) fn release_after(&mut self, stamp: Stamp<'_>, arrivals: &mut Arrivals) {
        let resequencer = &mut self.custody.resequencer;
        if let Some(waiting) = resequencer.waiter(stamp.custodian, stamp.epoch, stamp.number) {
            arrivals.released.push(waiting);
        }
    }

    /// Places the held arrivals released so far among `items` (each may release another).
    pub(super) fn place_released(
        &mut self,
        arrivals: &mut Arrivals,
        items: &mut Vec<PutItem>,
        now: Now,
    ) {
        while let Some(waiting) = arrivals.released.pop() {
            arrivals.held_since_ms = Some(waiting.since_ms);
            self.place_waiting(&waiting, arrivals, items, now);
            arrivals.held_since_ms = None;
        }
    }

    /// A held arrival leaving its hold, into `items`: a queue message, or a publication's
    /// copies for this manager.
    fn place_waiting(
        &mut self,
        waiting: &Waiting,
        arrivals: &mut Arrivals,
        items: &mut Vec<PutItem>,
        now: Now,
    ) {
        let placing = arrivals.placing(&waiting.from, None);
        if !self.publication_arrival(&waiting.from, &waiting.payload, (items, placing), now) {
            if let Some(item) = self.arrival(&waiting.from, &waiting.payload, now, arrivals) {
                items.push(item);
            }
        }
    }

    /// Releases the held arrivals whose deadline passed, in one write.
    pub(in crate::manager::core) fn release_due(&mut self, now: Now) {
        if self.custody.resequencer.len() == 0 && self.custody.released.is_empty() {
            return;
        }
        // The earlier message's custodian sends it again within about its custody timeout
        // of its own wait, which began before this one's (it was sent earlier), plus a
        // question and its answer when its way looked whole: twice the timeout covers that.
        let timeout_ms = 2 * self.custody.timeout.as_millis() as u64;
        let due = self
            .custody
            .resequencer
            .due((now.mono_ms, now.wall_ms), timeout_ms);
        let mut items = Vec::new();
        let mut arrivals = Arrivals::default();
        // In the order they were released: each goes before what its own admission releases.
        for waiting in std::mem::take(&mut self.custody.released) {
            arrivals.released.push(waiting);
            self.place_released(&mut arrivals, &mut items, now);
        }
        for (custodian, epoch, number, why) in due {
            let resequencer = &mut self.custody.resequencer;
            let Some(waiting) = resequencer.take(&custodian, epoch, number) else {
                continue; // released meanwhile by an earlier one
            };
            if let Release::TimedOut(why) = why {
                warn!(from = %custodian, %why, "a held message goes on without the earlier one");
                self.custody.resequencer.went_unordered();
                arrivals.unordered = Some(why);
            }
            arrivals.held_since_ms = Some(waiting.since_ms);
            self.place_waiting(&waiting, &mut arrivals, &mut items, now);
            arrivals.unordered = None;
            arrivals.held_since_ms = None;
            self.place_released(&mut arrivals, &mut items, now);
        }
        if items.is_empty() && arrivals.admitted.is_empty() {
            return;
        }
        let mut payloads = arrival_group(&items, &mut arrivals, None);
        if payloads.is_empty() {
            // A publication admitted without a copy here (its subscriptions went meanwhile):
            // its admission settles with a write all the same, or it is never confirmed.
            payloads.push(Bytes::from(record::encode(&Record::Remove(Vec::new()))));
        }
        let released = Released {
            items,
            handoffs: arrivals.handoffs,
            direct: arrivals.direct,
            admitted: arrivals.admitted,
        };
        self.commit(
            payloads,
            crate::manager::core::Continuation::Link(LinkWrite::Released(released)),
        );
    }

    /// What is held per origin, for status.
    pub(in crate::manager::core) fn held_status(&self, now: Now) -> Vec<HeldStatus> {
        self.custody
            .resequencer
            .status()
            .into_iter()
            .map(|held| HeldStatus {
                origin: held.custodian,
                messages: held.messages,
                oldest_ms: now.mono_ms.saturating_sub(held.oldest_since_ms),
            })
            .collect()
    }

    /// Held arrivals released at their deadline were written (or not).
    pub(super) fn on_released_written(
        &mut self,
        released: Released,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        self.admitted_written(&released.admitted, &result);
        let Released {
            items,
            handoffs,
            direct,
            ..
        } = released;
        match result {
            Ok(locations) => {
                let placed = self.place(items, &mut locations.into_iter(), handoffs, direct, now);
                self.finish_placing(placed, now);
            }
            Err(error) => {
                error!(%error, "storing held arrivals failed; their custodians send them again");
                self.place_failed(items, handoffs, direct);
            }
        }
    }
}

/// The journal group of arrivals: their records, their direct assignments, `state` (a
/// channel's receive record, if any), then the removal of those handed off.
pub(super) fn arrival_group(
    items: &[PutItem],
    arrivals: &mut Arrivals,
    state: Option<Bytes>,
) -> Vec<Bytes> {
    let mut payloads: Vec<Bytes> = items.iter().map(|item| item.payload.clone()).collect();
    payloads.extend(direct_records(&arrivals.direct));
    payloads.extend(state);
    if !arrivals.handed_off.is_empty() {
        let handed_off = std::mem::take(&mut arrivals.handed_off);
        payloads.push(Bytes::from(record::encode(&Record::Remove(handed_off))));
    }
    payloads
}
