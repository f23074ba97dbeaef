//! The custodian's side in the core (see `crate::custody::Kept`): its own stamped messages
//! acknowledged by a neighbour are kept (a `Kept` record instead of a removal) until their
//! destination confirms them; confirmations and questions travel hop by hop as
//! [`CustodyFrame`]s; what the way lost is sent again.
//!
//! Invariant: a kept message's record stays live in the journal (its segment is not retired
//! and compaction copies it with its `Kept` record) until a `Remove` follows its confirmation.

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::channel::frame::{ChannelFrame, CustodyFrame};
use crate::custody::{CONFIRM_RANGES_MAX, Confirmation, Stamp};
use crate::record::KeptRecord;
use hopmq::protocol::CustodyStatus;
use std::collections::BTreeMap;

impl Core {
    /// `neighbour` acknowledged `entries`: this manager's own stamped ones are kept for their
    /// destinations' confirmation (a publication's share for each manager it carries a stamp
    /// for). Returns the entries to remove (the others, and copies a later one supersedes)
    /// and the `Kept` records to write in the same group as their removal.
    pub(in crate::manager::core) fn keep_acknowledged(
        &mut self,
        neighbour: &ManagerName,
        entries: Vec<Entry>,
        now: Now,
    ) -> (Vec<Entry>, Vec<Bytes>) {
        let mut removable = Vec::with_capacity(entries.len());
        // By (destination, epoch): the `Kept` records to write.
        let mut records: BTreeMap<(String, u64), Vec<(u64, u64)>> = BTreeMap::new();
        for entry in entries {
            let mut kept_now = false;
            for (destination, epoch, number) in self.own_stamps(&entry) {
                let (held, superseded) = self.custody.kept.keep(
                    &destination,
                    (epoch, number),
                    entry,
                    Some(neighbour.as_str()),
                    now.mono_ms,
                );
                // Copies kept before this one, unless some other destination keeps them.
                removable.extend(superseded);
                if held {
                    kept_now = true;
                    records
                        .entry((destination, epoch))
                        .or_default()
                        .push((entry.seq, number));
                }
            }
            if kept_now {
                // Its bytes are on disk; memory is for what is still to be sent.
                self.payloads.forget(&entry);
            } else {
                // Not this manager's, or confirmed already (a copy went around and got there
                // first).
                removable.push(entry);
            }
        }
        let records = records
            .into_iter()
            .map(|((destination, epoch), pairs)| kept_record(&destination, epoch, pairs))
            .collect();
        (removable, records)
    }

    /// `(destination, epoch, number)` of each stamp this manager put on a message: one for a
    /// queue message, one per manager for a publication's share.
    fn own_stamps(&mut self, entry: &Entry) -> Vec<(String, u64, u64)> {
        if let Some(noted) = self.custody.take_sent(entry.seq) {
            return noted.into_iter().collect();
        }
        let payload = match self.payloads.get(entry, &*self.storage) {
            Ok(payload) => payload,
            Err(error) => {
                warn!(seq = entry.seq, %error, "cannot read an acknowledged message; it is not kept for its destination's confirmation");
                return Vec::new();
            }
        };
        let Ok(passing) = record::Passing::read(&payload) else {
            return Vec::new();
        };
        let Some(value) = passing.stamp else {
            return Vec::new();
        };
        let me = self.name.as_str();
        let own = |stamp: Stamp<'_>| {
            (stamp.custodian == me)
                .then(|| (stamp.destination.to_owned(), stamp.epoch, stamp.number))
        };
        if crate::pubsub::Destinations::is_publication(passing.destination) {
            crate::custody::stamps(value).filter_map(own).collect()
        } else {
            Stamp::of_custodian(value, me)
                .and_then(own)
                .into_iter()
                .collect()
        }
    }

    /// A custody frame from a neighbour: this manager's to act on, or passed on towards the
    /// manager it names.
    pub(in crate::manager::core) fn on_custody_frame(&mut self, frame: CustodyFrame, now: Now) {
        match frame {
            CustodyFrame::Confirm(confirmations) => {
                let (mine, others): (Vec<_>, Vec<_>) = confirmations
                    .into_iter()
                    .filter(Confirmation::is_valid)
                    .partition(|c| c.custodian == self.name.as_str());
                for confirmation in mine {
                    self.on_confirmation(confirmation, now);
                }
                self.send_confirmations(others);
            }
            CustodyFrame::Query {
                custodian,
                destination,
                epochs,
            } => {
                if destination == self.name.as_str() {
                    self.custody.accepted.ask(&custodian, &destination, &epochs);
                    self.flush_confirmations();
                } else {
                    let query = CustodyFrame::Query {
                        custodian,
                        destination: destination.clone(),
                        epochs,
                    };
                    self.send_towards(&destination, query);
                }
            }
        }
    }

    fn on_confirmation(&mut self, mut confirmation: Confirmation, now: Now) {
        self.custody.stamper.settled(&confirmation);
        let answers = self.custody.arrivals.confirm(&confirmation);
        self.answer_arrivals(answers);
        let waiting_for = std::mem::take(&mut confirmation.waiting_for);
        let (destination, epoch) = (confirmation.destination.clone(), confirmation.epoch);
        let (entries, messages) = self.custody.kept.confirm(confirmation, now.mono_ms);
        self.totals.confirmed += messages;
        self.remove_kept(entries);
        if !waiting_for.is_empty() {
            // Later messages got there without these: their way lost them, or is slower. A
            // copy goes at once, unless one went lately.
            let quiet_ms = self.custody.timeout.as_millis() as u64 / 2;
            let due = self.custody.kept.waited_for(
                &destination,
                (epoch, &waiting_for),
                now.mono_ms,
                quiet_ms,
            );
            self.resend_kept(due, now);
        }
    }

    /// Removes kept messages for good (confirmed, or expired).
    fn remove_kept(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let seqs = entries.iter().map(|entry| entry.seq).collect();
        self.commit_deferred_removal(seqs, Continuation::Removed { entries });
    }

    /// Sends the confirmations due from this manager as a destination.
    pub(in crate::manager::core) fn flush_confirmations(&mut self) {
        let mut confirmations = self.custody.accepted.confirmations(self.name.as_str());
        if self.custody.resequencer.len() > 0 {
            for confirmation in &mut confirmations {
                confirmation.waiting_for = self.custody.resequencer.waiting_for(
                    &confirmation.custodian,
                    confirmation.epoch,
                    CONFIRM_RANGES_MAX,
                );
            }
        }
        if !mutation::active(Mutation::SkipConfirmations) {
            self.send_confirmations(confirmations);
        }
    }

    /// Sends `confirmations` on towards their custodians, one frame per custodian. One that
    /// finds no way is dropped: the custodian asks again, or sends the message again, whose
    /// copy is confirmed.
    fn send_confirmations(&mut self, mut confirmations: Vec<Confirmation>) {
        confirmations.sort_by(|a, b| a.custodian.cmp(&b.custodian));
        let mut rest = confirmations.as_slice();
        while let Some(first) = rest.first() {
            let n = rest.partition_point(|c| c.custodian == first.custodian);
            let (group, after) = rest.split_at(n);
            let custodian = first.custodian.clone();
            self.send_towards(&custodian, CustodyFrame::Confirm(group.to_vec()));
            rest = after;
        }
    }

    /// Sends `frame` to the next hop towards `manager`; false if there is none with a
    /// connection.
    fn send_towards(&mut self, manager: &str, frame: CustodyFrame) -> bool {
        let Some(hop) = self
            .routing
            .routes()
            .route(manager)
            .and_then(|route| route.next_hop.clone())
        else {
            return false;
        };
        match self.link_state_channel(&hop) {
            Some(channel) => {
                channel.send(ChannelFrame::Custody(frame));
                true
            }
            None => false,
        }
    }

    /// Kept messages whose neighbour's link went out of use are sent again at once; called
    /// after every change of the route table.
    pub(in crate::manager::core) fn resend_kept_off_links(&mut self, now: Now) {
        let neighbours: Vec<ManagerName> = self.links.keys().cloned().collect();
        for neighbour in neighbours {
            if self.link_usable(&neighbour) {
                continue;
            }
            // Destinations the routes now reach through another neighbour in use.
            let around: BTreeSet<String> = self
                .custody
                .kept
                .destinations()
                .filter(|destination| {
                    self.routing
                        .routes()
                        .route(destination)
                        .and_then(|route| route.next_hop.as_ref())
                        .is_some_and(|hop| *hop != neighbour && self.link_usable(hop))
                })
                .map(str::to_owned)
                .collect();
            let resend = self.custody.kept.off_link(
                neighbour.as_str(),
                |destination| around.contains(destination),
                now.mono_ms,
            );
            self.resend_kept(resend, now);
        }
    }

    /// The custody tick: paths checked, what is due sent again, destinations asked.
    pub(in crate::manager::core) fn on_kept_maintenance(&mut self, now: Now) {
        if self.custody.kept.len() == 0 {
            return;
        }
        let destinations: Vec<String> = self
            .custody
            .kept
            .destinations()
            .map(str::to_owned)
            .collect();
        for destination in destinations {
            let path = self.routing.path(self.name.as_str(), &destination);
            let known = self.custody.paths.get(&destination);
            if known != Some(&path) {
                if known.is_some() {
                    self.custody.kept.path_changed(&destination);
                }
                self.custody.paths.insert(destination, path);
            }
        }
        let timeout_ms = self.custody.timeout.as_millis() as u64;
        let usable: BTreeSet<String> = self
            .links
            .keys()
            .filter(|neighbour| self.link_usable(neighbour))
            .map(ManagerName::to_string)
            .collect();
        let due = self
            .custody
            .kept
            .due((now.mono_ms, now.wall_ms), timeout_ms, |neighbour| {
                usable.contains(neighbour)
            });
        self.remove_kept(due.expired);
        self.resend_kept(due.resend, now);
        for destination in due.query {
            let query = CustodyFrame::Query {
                custodian: self.name.to_string(),
                epochs: self.custody.kept.epochs(&destination),
                destination: destination.clone(),
            };
            self.send_towards(&destination, query);
        }
    }

    /// What is kept per destination, for status.
    pub(in crate::manager::core) fn custody_status(&self, now: Now) -> Vec<CustodyStatus> {
        self.custody
            .kept
            .status(now.mono_ms)
            .into_iter()
            .map(|kept| CustodyStatus {
                destination: kept.destination,
                messages: kept.messages,
                oldest_ms: kept.oldest_ms,
                resent: kept.resent,
            })
            .collect()
    }

    /// Writes a copy of each kept message towards its destination along the route in force.
    fn resend_kept(&mut self, resend: Vec<(String, Entry)>, now: Now) {
        for (destination, entry) in resend {
            let payload = match self.payloads.get(&entry, &*self.storage) {
                Ok(payload) => payload,
                Err(error) => {
                    warn!(seq = entry.seq, %error, "cannot read a kept message to send it again; the next tick tries again");
                    self.custody.kept.copy_not_made(&destination, entry.seq);
                    continue;
                }
            };
            let Ok(passing) = record::Passing::read(&payload) else {
                warn!(
                    seq = entry.seq,
                    "a kept message's record does not decode; it is not sent again"
                );
                continue;
            };
            if crate::pubsub::Destinations::is_publication(passing.destination) {
                self.resend_share(&payload, entry, &destination, now);
                continue;
            }
            let stamp = passing.stamp.and_then(Stamp::parse);
            let target = self
                .stamped_place(passing.destination, stamp)
                .unwrap_or_else(|_| forward::held_queue());
            debug!(seq = entry.seq, %destination, %target, "a message its destination has not confirmed is sent again");
            self.totals.resent += 1;
            self.copy_message(&payload, entry, &target, now);
        }
    }
}

impl Core {
    /// Writes a copy of the publication share `entry` (whose record is `payload`, kept or in
    /// flight) for `destination` alone, with its stamp only, towards it along the route in
    /// force.
    pub(in crate::manager::core) fn resend_share(
        &mut self,
        payload: &[u8],
        entry: Entry,
        destination: &str,
        now: Now,
    ) {
        let Ok(stored) = delivery::stored(payload) else {
            warn!(
                seq = entry.seq,
                "a kept publication does not decode; it is not sent again"
            );
            return;
        };
        let stamps = stored.header(crate::custody::STAMP_HEADER);
        let Some((text, stamp)) =
            stamps.and_then(|list| crate::custody::stamp_in(list, destination))
        else {
            warn!(seq = entry.seq, %destination, "a kept publication has no stamp for a destination it is kept for");
            return;
        };
        let Ok(manager) = ManagerName::new(destination) else {
            warn!(seq = entry.seq, %destination, "a kept publication's destination is no manager's name; it is not sent again");
            return;
        };
        let target = self
            .stamped_place(destination, Some(stamp))
            .unwrap_or_else(|_| forward::held_queue());
        debug!(seq = entry.seq, %destination, %target, "a publication is sent again for one destination");
        self.totals.resent += 1;
        let share = crate::pubsub::Destinations::new([manager]).encode();
        let copies = forward::copies_made(payload);
        let seq = self.next_seq;
        self.next_seq += 1;
        let restamped = self.custody.stamper.restamped(&stamp);
        let alone =
            super::super::publish::with_stamps(&stored, Some(restamped.as_deref().unwrap_or(text)));
        let headers = [(crate::custody::RESENT_HEADER, copies.as_str())];
        let record = super::super::publish::copy_record(
            &alone,
            (target.as_str(), seq, &share),
            None,
            &headers,
        );
        self.write_copy(Bytes::from(record), (seq, entry), &target, now);
    }
}

/// A `Kept` record's payload.
fn kept_record(destination: &str, epoch: u64, pairs: Vec<(u64, u64)>) -> Bytes {
    Bytes::from(record::encode(&Record::Kept(KeptRecord {
        destination,
        epoch,
        pairs,
    })))
}

/// The `Kept` record of one message, written with its copy when compaction moves it.
pub(in crate::manager::core) fn kept_record_of(
    destination: &str,
    epoch: u64,
    number: u64,
    seq: u64,
) -> Bytes {
    kept_record(destination, epoch, vec![(seq, number)])
}
