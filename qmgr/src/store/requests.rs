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
//! Invariants: requests leave in the order they came (so journal order is append order); a
//! push is refused once the writer has stopped; at most [`Requests::capacity`] requests wait,
//! pushes block past that (backpressure when the disk is the bottleneck); a waiting writer is
//! notified by every push that meets its condition, and by nothing else.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::writer::Request;

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
}

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
        state.queue.push_back(request);
        if wakes {
            // Once is enough: the writer takes everything queued when it wakes.
            state.writer_waiting = None;
            drop(state);
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// The writer waits until something worth waking for is queued (any request if
    /// `wake_on_deferred`, else one that is not deferred) or `deadline` passes.
    pub(crate) fn wait(&self, deadline: Option<Instant>, wake_on_deferred: bool) -> Woken {
        let mut state = self.lock();
        loop {
            let ready = if wake_on_deferred {
                !state.queue.is_empty()
            } else {
                state.queue.iter().any(|request| !request.is_deferred())
            };
            if ready {
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

    /// Takes the oldest request, if any.
    pub(crate) fn take(&self) -> Option<Request> {
        let mut state = self.lock();
        let request = state.queue.pop_front();
        if request.is_some() && state.pushers_waiting > 0 {
            drop(state);
            self.room.notify_one();
        }
        request
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
        assert!(requests.take().unwrap().is_deferred());
        // Idle: a deferred group pushed while it waits wakes it.
        let pusher = push_when_waiting(&requests, append(true));
        assert_eq!(
            requests.wait(Some(Instant::now() + LONG), true),
            Woken::Ready
        );
        pusher.join().unwrap();
        assert!(requests.take().is_some());
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
        assert!(requests.take().unwrap().is_deferred());
        assert!(!requests.take().unwrap().is_deferred());
        assert!(requests.take().is_none());
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
        assert!(requests.take().is_some());
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
}
