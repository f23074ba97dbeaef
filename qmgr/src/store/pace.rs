//! How fast a segment prepared ahead is zero-filled: no faster than the active segment fills.
//!
//! Zero-filling a whole segment the moment the previous one is installed writes it all in a
//! burst, and the disk's cache flushes that every journal on the disk shares then wait for
//! those zeros: every manager of a host that starts at once, or rolls at once, adds a burst.
//! Paced, the zeros go down in step with the writer's own records, a lead ahead of them, so
//! the segment is complete well before the writer needs it. The writer rolls once the next
//! group does not fit, which may be a whole largest group before the active segment's end; the
//! pace is set by the fill at which the segment must be ready (`ready_at`), whatever the two
//! segments' sizes, which the writer puts at that earliest roll or three quarters of the
//! segment, whichever is later (a roll before it hurries the helper).
//!
//! Invariants: the helper thread writes a chunk starting at `offset` only once
//! `offset < allowed` (or once cancelled, it writes nothing more); `allowed` only grows; a
//! writer that raises `allowed` to or past what the parked helper waits for unparks it, and
//! the helper re-checks `allowed` after saying what it waits for and before parking, so no
//! wake-up is lost. A helper that parks anyway wakes within `PARK_TIMEOUT`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The helper, once ahead, waits until it may write this much more at once, so that it wakes
/// once per this many bytes the writer writes, not once per chunk.
const RESUME_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// A safety net only: every raise that matters unparks the helper.
const PARK_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared by the writer and the helper thread preparing the next segment.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Offset in the segment being prepared below which zeros may be written.
    allowed: AtomicU64,
    /// What `allowed` must reach for the parked helper to go on; `u64::MAX` when not parked.
    waiting_for: AtomicU64,
    cancelled: AtomicBool,
    segment_bytes: u64,
    /// The active segment's fill by which the prepared segment is to be complete.
    ready_at: u64,
}

/// The helper was told to stop: the segment it was writing will not be used.
#[derive(Debug)]
pub(crate) struct Cancelled;

impl Pace {
    /// A pace for a segment of `segment_bytes` succeeding an active segment already filled to
    /// `active_written`, to be complete once that one is filled to `ready_at`
    /// (0: at any time, so no pacing).
    pub(crate) fn new(segment_bytes: u64, ready_at: u64, active_written: u64) -> Pace {
        let pace = Pace {
            allowed: AtomicU64::new(0),
            waiting_for: AtomicU64::new(u64::MAX),
            cancelled: AtomicBool::new(false),
            segment_bytes,
            ready_at,
        };
        pace.allowed
            .store(pace.allowance(active_written), Ordering::SeqCst);
        pace
    }

    /// The active segment's fill a quarter of `ready_at` ahead, scaled to this segment: the
    /// prepared segment is complete once the active one is three quarters of the way to
    /// `ready_at`, and a writer outrunning the disk waits at most for the rest.
    fn allowance(&self, active_written: u64) -> u64 {
        if self.ready_at == 0 {
            return u64::MAX;
        }
        let ahead = u128::from(active_written) + u128::from(self.ready_at / 4);
        let allowed = ahead * u128::from(self.segment_bytes) / u128::from(self.ready_at);
        u64::try_from(allowed).unwrap_or(u64::MAX)
    }

    /// The writer has filled the active segment to `active_written`. True if the helper is
    /// parked waiting for no more than what is now allowed: the caller unparks it.
    #[must_use]
    pub(crate) fn filled_to(&self, active_written: u64) -> bool {
        self.raise(self.allowance(active_written))
    }

    /// No more pacing: the writer needs the segment now. True if the caller must unpark.
    #[must_use]
    pub(crate) fn hurry(&self) -> bool {
        self.raise(u64::MAX)
    }

    /// The segment will not be used: the helper stops at its next chunk. True if the caller
    /// must unpark.
    #[must_use]
    pub(crate) fn cancel(&self) -> bool {
        self.cancelled.store(true, Ordering::SeqCst);
        self.raise(u64::MAX)
    }

    fn raise(&self, allowed: u64) -> bool {
        self.allowed.fetch_max(allowed, Ordering::SeqCst);
        allowed >= self.waiting_for.load(Ordering::SeqCst)
    }

    /// Called by the helper before writing the chunk that starts at `offset`: returns once it
    /// may, parking meanwhile.
    pub(crate) fn wait_to_write(&self, offset: u64) -> Result<(), Cancelled> {
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(Cancelled);
            }
            if offset < self.allowed.load(Ordering::SeqCst) {
                self.waiting_for.store(u64::MAX, Ordering::SeqCst);
                return Ok(());
            }
            let resume = offset
                .saturating_add(RESUME_STEP_BYTES)
                .min(self.segment_bytes.saturating_sub(1))
                .max(offset + 1);
            self.waiting_for.store(resume, Ordering::SeqCst);
            // Re-checked after publishing `waiting_for`: a raise between the first check and
            // the store saw `u64::MAX` and did not unpark.
            if offset < self.allowed.load(Ordering::SeqCst) || self.cancelled.load(Ordering::SeqCst)
            {
                continue;
            }
            std::thread::park_timeout(PARK_TIMEOUT);
        }
    }

    /// Whether the helper is parked (or about to park) waiting for more allowance.
    #[cfg(test)]
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting_for.load(Ordering::SeqCst) != u64::MAX
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A helper writing 1 MiB chunks of a 64 MiB segment as `Pace` allows, and how far it got.
    fn helper(
        pace: &Arc<Pace>,
    ) -> (
        std::thread::JoinHandle<Result<(), Cancelled>>,
        Arc<AtomicU64>,
    ) {
        let (pace, written) = (Arc::clone(pace), Arc::new(AtomicU64::new(0)));
        let progress = Arc::clone(&written);
        let thread = std::thread::spawn(move || {
            let mut offset = 0;
            while offset < 64 * MIB {
                pace.wait_to_write(offset)?;
                offset += MIB;
                progress.store(offset, Ordering::SeqCst);
            }
            Ok(())
        });
        (thread, written)
    }

    #[test]
    fn the_helper_stays_a_quarter_segment_ahead_of_the_writer_and_no_further() {
        let pace = Arc::new(Pace::new(64 * MIB, 64 * MIB, 0));
        let (thread, written) = helper(&pace);
        eventually("the helper waits", || pace.is_waiting());
        assert_eq!(
            written.load(Ordering::SeqCst),
            16 * MIB,
            "a quarter segment ahead at once"
        );

        // Less than the resume step: the helper is not woken for it.
        assert!(!pace.filled_to(MIB));
        // A resume step later it is (unless a spurious wake-up already moved it on a chunk).
        let _ = pace.filled_to(4 * MIB);
        thread.thread().unpark();
        eventually("the helper catches up", || {
            written.load(Ordering::SeqCst) == 20 * MIB && pace.is_waiting()
        });

        assert!(pace.hurry());
        thread.thread().unpark();
        thread.join().unwrap().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 64 * MIB);
    }

    #[test]
    fn a_writer_near_the_end_lets_the_helper_finish() {
        let pace = Arc::new(Pace::new(64 * MIB, 64 * MIB, 48 * MIB));
        let (thread, written) = helper(&pace);
        thread.join().unwrap().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 64 * MIB);
    }

    #[test]
    fn the_segment_is_complete_well_before_the_first_possible_roll() {
        // A writer that may roll at 32 MiB (its next group not fitting): the new segment is
        // done once the active one is filled to 24 MiB, and a quarter of it is allowed at once.
        let early = Pace::new(64 * MIB, 32 * MIB, 0);
        assert!(early.wait_to_write(16 * MIB - 1).is_ok());
        let pace = Arc::new(Pace::new(64 * MIB, 32 * MIB, 24 * MIB));
        helper(&pace).0.join().unwrap().unwrap();
        // Segments of different sizes: progress is measured against the active one.
        let larger = Arc::new(Pace::new(64 * MIB, 8 * MIB, 6 * MIB));
        helper(&larger).0.join().unwrap().unwrap();
    }

    #[test]
    fn a_writer_that_may_roll_at_once_gets_no_pacing() {
        let pace = Pace::new(64 * MIB, 0, 0);
        assert!(pace.wait_to_write(63 * MIB).is_ok());
    }

    #[test]
    fn a_cancelled_helper_stops_writing() {
        let pace = Arc::new(Pace::new(64 * MIB, 64 * MIB, 0));
        let (thread, written) = helper(&pace);
        eventually("the helper waits", || pace.is_waiting());
        assert!(pace.cancel());
        thread.thread().unpark();
        assert!(thread.join().unwrap().is_err());
        assert_eq!(written.load(Ordering::SeqCst), 16 * MIB);
    }

    #[test]
    fn the_first_chunk_after_the_header_is_always_allowed() {
        // A segment of one chunk (as tests use) is never held back.
        let pace = Pace::new(MIB, MIB, 0);
        assert!(pace.wait_to_write(64).is_ok());
    }
}
