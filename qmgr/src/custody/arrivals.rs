//! Puts waiting for arrival receipts (`put --wait arrived`): answered once every message of
//! the put is durable here and each stamped one is confirmed by its destination, or told at
//! their deadline that some are not confirmed yet.
//!
//! A pure state machine, time passed in. A waiter is registered when the put is made, before
//! its write is durable, so that a confirmation can never slip by unseen; it is answered only
//! once both the write is durable and nothing is pending.
//!
//! Invariant: each waiter is answered at most once (done, expired, failed or its connection
//! gone), and its stamps leave the index with it.

use std::collections::BTreeMap;

use hopmq::MessageId;

use super::kept::Confirmation;

/// A stream number a waiter waits for: destination, epoch, number.
type Key = (Box<str>, u64, u64);

#[derive(Debug)]
struct Waiter {
    connection: u64,
    request: u64,
    /// Set once the put is durable: what the answer carries.
    ids: Option<Vec<MessageId>>,
    /// Stamps not confirmed yet.
    pending: Vec<Key>,
    deadline_ms: u64,
    timeout_ms: u64,
}

/// A waiter's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Everything arrived: the put's ids.
    Arrived {
        connection: u64,
        request: u64,
        ids: Vec<MessageId>,
    },
    /// The deadline (`timeout_ms` after the put) passed with `pending` messages not
    /// confirmed.
    NotYet {
        connection: u64,
        request: u64,
        pending: u64,
        timeout_ms: u64,
    },
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    waiters: BTreeMap<u64, Waiter>,
    /// Which waiter waits for each stamp.
    by_stamp: BTreeMap<Key, u64>,
    next: u64,
}

impl Arrivals {
    /// A put that waits for arrival, with the stamps of its messages that leave this manager
    /// (`(destination, epoch, number)`); returns its token.
    pub(crate) fn wait(
        &mut self,
        (connection, request): (u64, u64),
        stamps: Vec<(String, u64, u64)>,
        (now_ms, timeout_ms): (u64, u64),
    ) -> u64 {
        self.next += 1;
        let token = self.next;
        let pending: Vec<Key> = stamps
            .into_iter()
            .map(|(destination, epoch, number)| (destination.into_boxed_str(), epoch, number))
            .collect();
        for key in &pending {
            self.by_stamp.insert(key.clone(), token);
        }
        self.waiters.insert(
            token,
            Waiter {
                connection,
                request,
                ids: None,
                pending,
                deadline_ms: now_ms.saturating_add(timeout_ms),
                timeout_ms,
            },
        );
        token
    }

    /// The put of `token` is durable.
    pub(crate) fn durable(&mut self, token: u64, ids: Vec<MessageId>) -> Option<Answer> {
        let waiter = self.waiters.get_mut(&token)?;
        waiter.ids = Some(ids);
        self.answer_if_done(token)
    }

    /// The put of `token` failed: it is answered with its error elsewhere.
    pub(crate) fn failed(&mut self, token: u64) {
        self.remove(token);
    }

    /// A confirmation for this manager's streams: the waiters it completes.
    pub(crate) fn confirm(&mut self, confirmation: &Confirmation) -> Vec<Answer> {
        let destination: Box<str> = confirmation.destination.as_str().into();
        let epoch = confirmation.epoch;
        let covered: Vec<(Key, u64)> = self
            .by_stamp
            .range((destination.clone(), epoch, 0)..=(destination, epoch, u64::MAX))
            .filter(|((_, _, number), _)| confirmation.covers(*number))
            .map(|(key, token)| (key.clone(), *token))
            .collect();
        let mut answers = Vec::new();
        for (key, token) in covered {
            self.by_stamp.remove(&key);
            if let Some(waiter) = self.waiters.get_mut(&token) {
                waiter.pending.retain(|k| *k != key);
                answers.extend(self.answer_if_done(token));
            }
        }
        answers
    }

    /// Waiters whose deadline passed at `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<Answer> {
        let due: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.deadline_ms <= now_ms && waiter.ids.is_some())
            .map(|(token, _)| *token)
            .collect();
        due.into_iter()
            .filter_map(|token| self.remove(token))
            .map(|waiter| Answer::NotYet {
                connection: waiter.connection,
                request: waiter.request,
                pending: waiter.pending.len() as u64,
                timeout_ms: waiter.timeout_ms,
            })
            .collect()
    }

    /// The earliest deadline of a durable put still waiting.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.waiters
            .values()
            .filter(|waiter| waiter.ids.is_some())
            .map(|waiter| waiter.deadline_ms)
            .min()
    }

    /// `connection` closed: its waiters go unanswered.
    pub(crate) fn disconnected(&mut self, connection: u64) {
        let gone: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.connection == connection)
            .map(|(token, _)| *token)
            .collect();
        for token in gone {
            self.remove(token);
        }
    }

    fn answer_if_done(&mut self, token: u64) -> Option<Answer> {
        let waiter = self.waiters.get(&token)?;
        if !waiter.pending.is_empty() || waiter.ids.is_none() {
            return None;
        }
        let waiter = self.remove(token)?;
        Some(Answer::Arrived {
            connection: waiter.connection,
            request: waiter.request,
            ids: waiter.ids.unwrap_or_default(),
        })
    }

    fn remove(&mut self, token: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&token)?;
        for key in &waiter.pending {
            self.by_stamp.remove(key);
        }
        Some(waiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmation(destination: &str, epoch: u64, ranges: &[(u64, u64)]) -> Confirmation {
        Confirmation {
            waiting_for: Vec::new(),
            custodian: "north".into(),
            destination: destination.into(),
            epoch,
            settled_below: 0,
            ranges: ranges.to_vec(),
        }
    }

    fn stamps(list: &[(&str, u64)]) -> Vec<(String, u64, u64)> {
        list.iter().map(|&(d, n)| (d.to_owned(), 7, n)).collect()
    }

    #[test]
    fn answered_once_durable_and_every_destination_confirmed_in_either_order() {
        let mut arrivals = Arrivals::default();
        let ids = vec![MessageId(1), MessageId(2)];
        let token = arrivals.wait((1, 10), stamps(&[("south", 1), ("west", 1)]), (0, 1000));
        // Confirmed before the put is durable here: remembered, not answered.
        assert!(
            arrivals
                .confirm(&confirmation("south", 7, &[(1, 2)]))
                .is_empty()
        );
        assert_eq!(arrivals.durable(token, ids.clone()), None);
        assert!(
            arrivals
                .confirm(&confirmation("south", 8, &[(1, 2)]))
                .is_empty()
        );
        assert_eq!(
            arrivals.confirm(&confirmation("west", 7, &[(1, 5)])),
            [Answer::Arrived {
                connection: 1,
                request: 10,
                ids
            }]
        );
        assert_eq!(arrivals.expire(u64::MAX), []);
    }

    #[test]
    fn a_put_with_nothing_leaving_is_answered_when_durable() {
        let mut arrivals = Arrivals::default();
        let token = arrivals.wait((1, 10), Vec::new(), (0, 1000));
        assert!(matches!(
            arrivals.durable(token, vec![MessageId(1)]),
            Some(Answer::Arrived { .. })
        ));
    }

    #[test]
    fn the_deadline_says_how_many_are_still_on_their_way() {
        let mut arrivals = Arrivals::default();
        let token = arrivals.wait((1, 10), stamps(&[("south", 1), ("south", 2)]), (0, 1000));
        // Not durable yet: no deadline runs (the put's own answer comes first).
        assert_eq!(arrivals.next_deadline_ms(), None);
        arrivals.durable(token, vec![MessageId(1), MessageId(2)]);
        arrivals.confirm(&confirmation("south", 7, &[(2, 3)]));
        assert_eq!(arrivals.next_deadline_ms(), Some(1000));
        assert_eq!(arrivals.expire(999), []);
        assert_eq!(
            arrivals.expire(1000),
            [Answer::NotYet {
                connection: 1,
                request: 10,
                pending: 1,
                timeout_ms: 1000
            }]
        );
        assert!(
            arrivals
                .confirm(&confirmation("south", 7, &[(1, 3)]))
                .is_empty()
        );
    }

    #[test]
    fn a_failed_put_or_a_closed_connection_leaves_nothing_behind() {
        let mut arrivals = Arrivals::default();
        let failed = arrivals.wait((1, 10), stamps(&[("south", 1)]), (0, 1000));
        arrivals.wait((2, 11), stamps(&[("south", 2)]), (0, 1000));
        arrivals.failed(failed);
        arrivals.disconnected(2);
        assert!(arrivals.waiters.is_empty() && arrivals.by_stamp.is_empty());
    }
}
