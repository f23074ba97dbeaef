//! The queue of appends between the journal's handles and its writer thread, which wakes the
//! writer only when that is worth a context switch.
//!
//! A channel wakes its receiver for every message. Here the writer says, as it goes to sleep,
//! whether a deferred group (a removal that may wait for a later sync) should wake it: not
//! while it lingers after a write, since a group that needs a sync is likely to come and take
//! the deferred ones along, and the writer comes back by itself within
//! [`super::writer::DEFERRED_SYNC_DELAY`] anyway. At 1,000 messages a second that saves a
//! context switch per message on every manager, which on a VM costs tens of microseconds.
//!
//! A producer may also *hold* the wake-ups ([`Requests::hold`]) while it makes a few appends
//! and then [`release`](Requests::release) them: at that point, if the writer sits idle and an
//! append that needs a sync is queued, the producer may commit on its own thread instead
//! ([`super::Journal::release`]), so a lone commit costs no hand-over to the writer and
//! back (on the reference VM each is a wake-up of an idle vCPU, ~90 µs).
//!
//! Invariants: requests leave in the order they came (so journal order is append order); a
//! push is refused once the writer has stopped; at most [`Requests::capacity`] requests wait,
//! pushes block past that (backpressure when the disk is the bottleneck), and a full queue
//! wakes the writer even while held; a waiting writer is notified by every push that meets its
//! condition, except one of the first [`HELD_APPENDS_MAX`] made while held, whose wake-up
//! [`Requests::release`] gives (or hands to the producer, only while a sync-needing append is
//! still queued for it to commit); otherwise only a full queue and
//! [`Requests::wake_if_queued`] notify it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::Location;
use super::error::StoreError;

/// Where the writer tells a producer how its group ended.
pub(crate) type Completion = oneshot::Sender<Result<Vec<Location>, StoreError>>;

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Request {
    Append {
        /// Shared, not copied: the caller may keep them (a cache of recent bodies).
        payloads: Vec<Bytes>,
        done: Completion,
        /// May use the segment's reserve (see `RESERVE_BYTES`).
        frees_space: bool,
        /// May wait for a later write (see [`super::writer::DEFERRED_SYNC_DELAY`]).
        deferred: bool,
    },
    /// Finish what was queued before, fail what comes after, and stop.
    Close,
}

impl Request {
    /// Whether it may wait for a later write (see [`super::writer::DEFERRED_SYNC_DELAY`]).
    pub(crate) fn is_deferred(&self) -> bool {
        matches!(self, Self::Append { deferred: true, .. })
    }
}

/// The queue; shared by every handle and the writer.
pub(crate) struct Requests {
    state: Mutex<State>,
    /// The writer waits here.
    arrived: Condvar,
    /// Pushers wait here while the queue is full.
    room: Condvar,
    capacity: usize,
}

struct State {
    queue: VecDeque<Request>,
    /// `Some` while the writer waits: whether a deferred group should wake it.
    writer_waiting: Option<bool>,
    /// Pushers blocked on a full queue.
    pushers_waiting: usize,
    /// The writer is gone: pushes fail.
    stopped: bool,
    /// Pushes do not wake the writer until [`Requests::release`].
    holding: bool,
    /// While held, a push would have woken the writer.
    held_wake: bool,
    /// Appends pushed during this hold.
    held_appends: usize,
}

impl State {
    /// Whether the queue holds what a writer waiting with `wake_on_deferred` wakes for.
    fn ready(&self, wake_on_deferred: bool) -> bool {
        if wake_on_deferred {
            !self.queue.is_empty()
        } else {
            self.queue.iter().any(|request| !request.is_deferred())
        }
    }
}

/// Appends held from the writer at most, per hold: past them a push wakes it as usual, so a
/// producer making many appends in one go still has the writer work alongside.
pub(crate) const HELD_APPENDS_MAX: usize = 16;

/// Why [`Requests::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Something to take is queued.
    Ready,
    /// The deadline passed first; deferred groups may be queued.
    Deadline,
}

impl Requests {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                writer_waiting: None,
                pushers_waiting: 0,
                stopped: false,
                holding: false,
                held_wake: false,
                held_appends: 0,
            }),
            arrived: Condvar::new(),
            room: Condvar::new(),
            capacity,
        }
    }

    /// A poisoned lock means a thread panicked holding it; the queue itself is still whole
    /// (every change is one push or pop), so carry on.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` (blocking while the queue is full); gives it back if the writer has
    /// stopped.
    pub(crate) fn push(&self, request: Request) -> Result<(), Request> {
        let mut state = self.lock();
        while state.queue.len() >= self.capacity && !state.stopped {
            // A held wake-up must not leave the writer asleep before a full queue.
            if state.writer_waiting.take().is_some() {
                self.arrived.notify_one();
            }
            state.pushers_waiting += 1;
            state = self
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.pushers_waiting -= 1;
        }
        if state.stopped {
            return Err(request);
        }
        let wakes = match state.writer_waiting {
            Some(wake_on_deferred) => wake_on_deferred || !request.is_deferred(),
            None => false,
        };
        let held = state.holding
            && matches!(request, Request::Append { .. })
            && state.held_appends < HELD_APPENDS_MAX;
        if held {
            state.held_appends += 1;
        }
        state.held_wake |= held && wakes;
        state.queue.push_back(request);
        if wakes && !held {
            // Once is enough: the writer takes everything queued when it wakes.
            state.writer_waiting = None;
            drop(state);
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// From now until [`release`](Self::release), the first [`HELD_APPENDS_MAX`] appends do
    /// not wake the writer.
    pub(crate) fn hold(&self) {
        let mut state = self.lock();
        state.holding = true;
        state.held_appends = 0;
    }

    /// Ends a [`hold`](Self::hold). Returns true if the writer sits idle, a held append would
    /// have woken it, an append that needs a sync is still queued, and `commit_here` asks for
    /// it: the caller is then to commit the queue itself (the writer stays asleep). Otherwise a
    /// wake-up the held appends would have given is given now.
    pub(crate) fn release(&self, commit_here: bool) -> bool {
        let mut state = self.lock();
        state.holding = false;
        if !std::mem::take(&mut state.held_wake) || state.writer_waiting.is_none() {
            return false;
        }
        // Checked on the queue, not on what was pushed: the writer, woken by its deadline or a
        // full queue, may have committed a held sync already, and deferred groups left to the
        // caller alone would wait for the next sync.
        if commit_here && state.ready(false) {
            return true;
        }
        state.writer_waiting = None;
        drop(state);
        self.arrived.notify_one();
        false
    }

    /// Wakes a waiting writer if anything it waits for is queued: what a commit on the
    /// caller's thread left behind (it takes one batch, and stops before a roll).
    pub(crate) fn wake_if_queued(&self) {
        let mut state = self.lock();
        if let Some(wake_on_deferred) = state.writer_waiting {
            if state.ready(wake_on_deferred) {
                state.writer_waiting = None;
                drop(state);
                self.arrived.notify_one();
            }
        }
    }

    /// The writer waits until something worth waking for is queued (any request if
    /// `wake_on_deferred`, else one that is not deferred) or `deadline` passes.
    pub(crate) fn wait(&self, deadline: Option<Instant>, wake_on_deferred: bool) -> Woken {
        let mut state = self.lock();
        loop {
            if state.ready(wake_on_deferred) {
                state.writer_waiting = None;
                return Woken::Ready;
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| deadline <= now) {
                state.writer_waiting = None;
                return Woken::Deadline;
            }
            state.writer_waiting = Some(wake_on_deferred);
            state = match deadline {
                None => self
                    .arrived
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    self.arrived
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Takes the oldest request, if any, unless `leave` says to leave it queued.
    pub(crate) fn take(&self, leave: impl FnOnce(&Request) -> bool) -> Option<Request> {
        let mut state = self.lock();
        if state.queue.front().is_some_and(leave) {
            return None;
        }
        let request = state.queue.pop_front();
        if request.is_some() && state.pushers_waiting > 0 {
            drop(state);
            self.room.notify_one();
        }
        request
    }

    /// Whether the writer waits for requests.
    #[cfg(test)]
    pub(crate) fn writer_waits(&self) -> bool {
        self.lock().writer_waiting.is_some()
    }

    /// The writer has stopped: later pushes fail, and what is still queued is returned.
    pub(crate) fn stop(&self) -> Vec<Request> {
        let mut state = self.lock();
        state.stopped = true;
        let left = state.queue.drain(..).collect();
        drop(state);
        self.room.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;

    fn append(deferred: bool) -> Request {
        let (done, _) = oneshot::channel();
        Request::Append {
            payloads: vec![Bytes::from_static(b"x")],
            done,
            frees_space: deferred,
            deferred,
        }
    }

    /// Generous: only a bug waits this long.
    const LONG: Duration = Duration::from_secs(20);

    /// Spins until `condition` holds of the queue's state, failing the test past [`LONG`].
    fn wait_for(requests: &Requests, what: &str, condition: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + LONG;
        while !condition(&requests.lock()) {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            std::thread::yield_now();
        }
    }

    /// Pushes `request` from another thread once the writer waits.
    fn push_when_waiting(
        requests: &Arc<Requests>,
        request: Request,
    ) -> std::thread::JoinHandle<()> {
        let requests = Arc::clone(requests);
        std::thread::spawn(move || {
            wait_for(&requests, "the writer waits", |state| {
                state.writer_waiting.is_some()
            });
            requests.push(request).unwrap();
        })
    }

    #[test]
    fn a_deferred_group_wakes_an_idle_writer_but_not_a_lingering_one() {
        let requests = Arc::new(Requests::new(8));
        // Lingering: the deferred group stays queued until the deadline.
        requests.push(append(true)).unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(requests.wait(Some(deadline), false), Woken::Deadline);
        assert!(Instant::now() >= deadline);
        assert!(requests.take(|_| false).unwrap().is_deferred());
        // Idle: a deferred group pushed while it waits wakes it.
        let pusher = push_when_waiting(&requests, append(true));
        assert_eq!(
            requests.wait(Some(Instant::now() + LONG), true),
            Woken::Ready
        );
        pusher.join().unwrap();
        assert!(requests.take(|_| false).is_some());
    }

    #[test]
    fn a_group_that_needs_a_sync_wakes_a_lingering_writer() {
        let requests = Arc::new(Requests::new(8));
        requests.push(append(true)).unwrap();
        let pusher = push_when_waiting(&requests, append(false));
        assert_eq!(
            requests.wait(Some(Instant::now() + LONG), false),
            Woken::Ready
        );
        pusher.join().unwrap();
        // In the order they came.
        assert!(requests.take(|_| false).unwrap().is_deferred());
        assert!(!requests.take(|_| false).unwrap().is_deferred());
        assert!(requests.take(|_| false).is_none());
    }

    #[test]
    fn a_full_queue_blocks_pushers_until_the_writer_takes_one() {
        let requests = Arc::new(Requests::new(2));
        requests.push(append(false)).unwrap();
        requests.push(append(false)).unwrap();
        let pusher = {
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || requests.push(append(true)).is_ok())
        };
        wait_for(&requests, "the pusher blocks", |state| {
            state.pushers_waiting > 0
        });
        assert!(requests.take(|_| false).is_some());
        assert!(pusher.join().unwrap());
        assert_eq!(requests.lock().queue.len(), 2);
    }

    #[test]
    fn pushes_fail_once_the_writer_stopped_even_blocked_ones() {
        let requests = Arc::new(Requests::new(1));
        requests.push(append(false)).unwrap();
        let pusher = {
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || requests.push(append(false)).is_err())
        };
        wait_for(&requests, "the pusher blocks", |state| {
            state.pushers_waiting > 0
        });
        assert_eq!(requests.stop().len(), 1);
        assert!(pusher.join().unwrap());
        assert!(requests.push(append(true)).is_err());
    }

    /// As if the writer had gone to sleep waiting (no thread: the test reads who woke it).
    fn idle_writer(capacity: usize, wake_on_deferred: bool) -> Arc<Requests> {
        let requests = Arc::new(Requests::new(capacity));
        requests.lock().writer_waiting = Some(wake_on_deferred);
        requests
    }

    #[test]
    fn held_appends_wake_the_writer_only_at_release() {
        let requests = idle_writer(8, true);
        requests.hold();
        requests.push(append(false)).unwrap();
        requests.push(append(true)).unwrap();
        assert!(requests.writer_waits(), "held: not woken");
        assert!(!requests.release(false));
        assert!(!requests.writer_waits(), "woken at release");
        // Not held any more: a push wakes as usual.
        requests.lock().writer_waiting = Some(true);
        requests.push(append(true)).unwrap();
        assert!(!requests.writer_waits());
    }

    #[test]
    fn release_hands_the_commit_to_the_caller_only_when_the_writer_idles_and_a_sync_is_held() {
        // Idle writer, a held append that needs a sync, the caller willing: the caller commits.
        let requests = idle_writer(8, true);
        requests.hold();
        requests.push(append(false)).unwrap();
        assert!(requests.release(true));
        assert!(requests.writer_waits(), "the writer sleeps on");
        // Deferred appends only: the writer is woken (it syncs them after its delay).
        let requests = idle_writer(8, true);
        requests.hold();
        requests.push(append(true)).unwrap();
        assert!(!requests.release(true));
        assert!(!requests.writer_waits());
        // A lingering writer does not wake for a deferred append, held or not.
        let requests = idle_writer(8, false);
        requests.hold();
        requests.push(append(true)).unwrap();
        assert!(!requests.release(true));
        assert!(requests.writer_waits());
        // A busy writer finds the queue by itself.
        let requests = Arc::new(Requests::new(8));
        requests.hold();
        requests.push(append(false)).unwrap();
        assert!(!requests.release(true));
        // Nothing appended while held: nothing to do.
        let requests = idle_writer(8, true);
        requests.hold();
        assert!(!requests.release(true));
        assert!(requests.writer_waits());
    }

    #[test]
    fn a_held_sync_the_writer_took_meanwhile_is_not_committed_by_the_caller() {
        let requests = idle_writer(8, true);
        requests.hold();
        requests.push(append(false)).unwrap();
        // The writer, woken by its deadline, commits it and goes back to sleep.
        assert!(requests.take(|_| false).is_some());
        requests.lock().writer_waiting = Some(true);
        requests.push(append(true)).unwrap();
        // Only a deferred group is left: the caller would not sync it, so the writer wakes.
        assert!(!requests.release(true));
        assert!(!requests.writer_waits());
    }

    #[test]
    fn appends_past_the_held_few_wake_the_writer() {
        let requests = idle_writer(64, true);
        requests.hold();
        for _ in 0..HELD_APPENDS_MAX {
            requests.push(append(false)).unwrap();
        }
        assert!(requests.writer_waits(), "the first ones are held");
        requests.push(append(false)).unwrap();
        assert!(!requests.writer_waits(), "the next one wakes it");
        assert!(
            !requests.release(true),
            "the writer is busy: nothing for the caller"
        );
    }

    #[test]
    fn a_full_queue_wakes_the_writer_even_while_held() {
        let requests = idle_writer(1, true);
        requests.hold();
        requests.push(append(false)).unwrap();
        let pusher = {
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || requests.push(append(false)).is_ok())
        };
        wait_for(
            &requests,
            "the pusher wakes the writer and blocks",
            |state| state.writer_waiting.is_none() && state.pushers_waiting > 0,
        );
        assert!(requests.take(|_| false).is_some());
        assert!(pusher.join().unwrap());
    }

    #[test]
    fn a_request_is_left_queued_when_asked() {
        let requests = Requests::new(8);
        requests.push(append(false)).unwrap();
        requests.push(Request::Close).unwrap();
        let close = |request: &Request| matches!(request, Request::Close);
        assert!(requests.take(close).is_some());
        assert!(requests.take(close).is_none());
        assert!(matches!(requests.take(|_| false), Some(Request::Close)));
    }
}
