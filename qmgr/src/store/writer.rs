//! The journal's writer, doing group commit: its state is the sole owner of the active
//! segment's writes, driven by the writer thread or, when that sleeps, by a producer.
//!
//! It blocks for the first request, drains whatever else is queued (up to
//! [`BATCH_RECORDS_TARGET`] records or [`BATCH_BYTES_TARGET`] bytes), writes the batch with one
//! positioned write, `fdatasync`s once, and only then completes the batch's waiters. There is
//! no waiting window: a 1 ms window was measured to cut throughput by 3x.
//!
//! A deferred group (a removal whose loss in a crash is harmless, see
//! [`super::Journal::append_deferred`]) is not written on its own: it waits in the buffer for the
//! next group that needs a sync, or for [`DEFERRED_SYNC_DELAY`], and goes out in that write.
//!
//! The writer's state sits behind a mutex ([`SharedWriter`]): its thread takes it for each
//! batch, and so may a producer that finds the thread idle ([`super::Journal::release`]), which
//! then commits one batch on its own thread, syncing it, leaving a `Close` and any group that
//! needs a new segment to the thread. Whoever holds the mutex takes the next requests in
//! queue order and writes them before letting go, so journal order is still queue order.
//!
//! Invariants: a waiter is completed with `Ok` only after its records are written and (under
//! `SyncPolicy::Always`) synced; a write never exceeds [`BATCH_BYTES_MAX`] and is synced before
//! the next one is issued, which is what recovery's torn-tail rule relies on; groups never
//! cross segments. A failed write or `fdatasync` stops the process ([`fatal`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use super::error::StoreError;
use super::format::{
    BATCH_BYTES_MAX, BATCH_BYTES_TARGET, BATCH_RECORDS_TARGET, END_MARKER_BYTES, RESERVE_BYTES_MAX,
    SEAL_BYTES, SEGMENT_HEADER_BYTES, encode_end_marker, encode_record, encode_seal,
    record_bytes_padded, reserve_bytes,
};
use super::pace::Pace;
use super::requests::{Completion, Request, Requests, Woken};
use super::segment::{
    discard_prepared, install_segment, prepare_segment, segment_path, temporary_path,
};
use super::shared::Shared;
use super::{Location, SyncPolicy};

/// The longest a deferred group waits in the buffer for a write that needs a sync anyway. Long
/// enough to share a sync among a few milliseconds of removals; short enough that the
/// segments they free are deleted soon after.
pub(crate) const DEFERRED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// How long the disk must have been quiet (no write ended) before a producer commits on its own
/// thread ([`super::Journal::release`]). Such a commit blocks the producer for a write and a
/// sync that the thread would have overlapped with its work: worth the two hand-overs it saves
/// only at a light load. Past a thousand or so commits a second the thread commits, so the
/// producer and the disk work side by side (measured: committing inline under a saturating
/// 1-hop load cost a quarter of its throughput).
pub(crate) const QUIET_BEFORE_INLINE: std::time::Duration = std::time::Duration::from_micros(500);

/// The segment appends go to.
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) file: Arc<File>,
    /// Where the next record lands.
    pub(crate) write_offset: u64,
    /// The segment's size: no record is written past it.
    pub(crate) capacity: u64,
    /// Records in the segment, for its seal.
    pub(crate) records: u64,
    /// Whether the seal is written: nothing more goes into this segment.
    pub(crate) sealed: bool,
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sync: SyncPolicy,
    pub(crate) segment_bytes: u64,
    pub(crate) disk_bytes_max: Option<u64>,
    pub(crate) active: ActiveSegment,
    /// Records encoded and not yet written; they start at `active.write_offset`.
    pub(crate) buffer: Vec<u8>,
    /// Waiters whose records are in `buffer`, completed once it is durable.
    pub(crate) waiters: Vec<(Completion, Vec<Location>)>,
    /// The next segment, being written ahead of time on a helper thread.
    pub(crate) prepared: Option<Prepared>,
    /// Groups taken from the queue for the commit under way (kept for its allocation).
    pub(crate) batch: Vec<(Vec<Bytes>, Completion, bool)>,
    /// When the buffer started holding deferred groups only.
    pub(crate) deferred_since: Option<Instant>,
    /// When the last write was made: for `DEFERRED_SYNC_DELAY` after it, a deferred group
    /// does not wake the writer (one that needs a sync soon takes it along), and for
    /// [`QUIET_BEFORE_INLINE`] no producer commits on its own thread.
    pub(crate) lingering_since: Option<Instant>,
}

/// The writer, shared by its thread and producers committing on theirs; `None` once the
/// thread has stopped (the writer is dropped then, discarding a half-prepared segment).
pub(crate) type SharedWriter = Arc<Mutex<Option<Writer>>>;

/// A segment prepared ahead of time, so that rolling costs a rename instead of writing and
/// syncing a whole segment while producers wait.
pub(crate) struct Prepared {
    segment: u64,
    result: Receiver<Result<File, StoreError>>,
    thread: std::thread::JoinHandle<()>,
    pace: Arc<Pace>,
}

impl Prepared {
    /// The active segment is filled to `active_written`: the helper may write further ahead.
    fn filled_to(&self, active_written: u64) {
        if self.pace.filled_to(active_written) {
            self.thread.thread().unpark();
        }
    }

    /// Waits for the segment, now needed, at the disk's full speed.
    fn finish(self) -> Option<File> {
        if self.pace.hurry() {
            self.thread.thread().unpark();
        }
        let result = self.result.recv();
        let _ = self.thread.join();
        match result {
            Ok(Ok(file)) => Some(file),
            Ok(Err(error)) => {
                tracing::warn!(%error, "preparing a journal segment ahead failed; retrying");
                None
            }
            Err(_) => None,
        }
    }
}

/// The writer thread: waits for requests and commits them, batch by batch, until a `Close`.
pub(crate) fn run(writer: SharedWriter, requests: Arc<Requests>) {
    /// However the thread stops (a panic included, here or in a producer's inline commit):
    /// later appends fail instead of waiting forever, and the writer is dropped, so the
    /// completions it and the queue hold resolve as closed and no half-prepared segment stays.
    struct StopOnExit<'a>(&'a Requests, &'a SharedWriter);
    impl Drop for StopOnExit<'_> {
        fn drop(&mut self) {
            drop(self.0.stop());
            let writer = self.1.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(writer);
        }
    }
    let _stop = StopOnExit(&requests, &writer);
    // A poisoned lock means a commit panicked half-way: the writer's state is not to be
    // trusted, so stop (what is queued fails as closed).
    let Ok(mut guard) = writer.lock() else { return };
    let Some(state) = guard.as_mut() else { return };
    state.prepare_ahead();
    loop {
        let Some(deadline) = guard.as_ref().map(Writer::deadline) else {
            return;
        };
        drop(guard);
        let woken = requests.wait(deadline, deadline.is_none());
        guard = match writer.lock() {
            Ok(guard) => guard,
            Err(_) => return,
        };
        let Some(state) = guard.as_mut() else { return };
        if state.step(&requests, woken == Woken::Deadline, false) {
            return;
        }
    }
}

/// The fill of an active segment of `capacity` bytes by which the next is to be zero-filled.
///
/// The writer rolls once the next group does not fit: as early as a largest group, the seal
/// and the reserve before the active segment's end. Pacing for that (a largest group is
/// 24 MiB, three quarters of a 32 MiB segment) wrote zeros at four times the rate of the
/// records, each piece's sync a stall for every journal on the disk: the paced 3-hop bench's
/// p99 was 6.9–8.8 ms, against 2.7–3.0 ms paced for three quarters (BENCHMARKS.md, session
/// 15). So the later of the two; a rare huge group that rolls earlier waits for the rest of
/// the zeros (the roll hurries the helper).
pub(crate) fn prepared_ready_at(capacity: u64) -> u64 {
    let early_roll = BATCH_BYTES_MAX + SEAL_BYTES + RESERVE_BYTES_MAX;
    capacity.saturating_sub(early_roll).max(capacity / 4 * 3)
}

/// What a group takes in a segment: its records, padded.
fn group_bytes(payloads: &[Bytes]) -> u64 {
    payloads
        .iter()
        .map(|payload| record_bytes_padded(payload.len() as u64))
        .sum()
}

impl Writer {
    /// When the thread must wake by itself: deferred groups to sync, or the end of lingering.
    fn deadline(&self) -> Option<Instant> {
        self.deferred_since
            .or(self.lingering_since)
            .map(|since| since + DEFERRED_SYNC_DELAY)
    }

    /// Whether the disk has been quiet long enough for a commit on a producer's thread.
    pub(crate) fn quiet(&self) -> bool {
        self.lingering_since
            .is_none_or(|at| at.elapsed() >= QUIET_BEFORE_INLINE)
    }

    /// Takes one batch from the queue and commits it; `at_deadline`, deferred groups have
    /// waited long enough and are synced too. A `Close` ends the batch: it is taken (and true
    /// returned: the caller stops the writer) unless `inline`. `inline` is a producer's
    /// commit on its own thread ([`super::Journal::release`]): it leaves a `Close`, and a
    /// group that would need a new segment, to the writer thread (rolling may wait for the
    /// helper and syncs twice), and it syncs whatever it takes, so nothing it leaves in the
    /// buffer waits for a deadline the sleeping thread does not know of.
    pub(crate) fn step(&mut self, requests: &Requests, at_deadline: bool, inline: bool) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let mut closing = false;
        let mut all_deferred = true;
        let mut records = 0;
        let mut bytes = 0;
        // Padded record bytes taken so far, for `inline`'s check that no roll is needed.
        let mut taken_bytes = 0;
        while records < BATCH_RECORDS_TARGET && bytes < BATCH_BYTES_TARGET {
            let leave = |request: &Request| inline && !self.fits_active(request, taken_bytes);
            let Some(request) = requests.take(leave) else {
                break;
            };
            match request {
                Request::Append {
                    payloads,
                    done,
                    frees_space,
                    deferred,
                } => {
                    all_deferred &= deferred;
                    records += payloads.len();
                    bytes += payloads.iter().map(Bytes::len).sum::<usize>() as u64;
                    taken_bytes += group_bytes(&payloads);
                    batch.push((payloads, done, frees_space));
                }
                Request::Close => {
                    closing = true;
                    break;
                }
            }
        }
        let sync_now = closing || !all_deferred || at_deadline || inline;
        let writes = !batch.is_empty() || !self.buffer.is_empty();
        self.commit(&mut batch, sync_now);
        self.batch = batch;
        if sync_now || self.buffer.is_empty() {
            self.deferred_since = None;
        } else {
            self.deferred_since.get_or_insert_with(Instant::now);
        }
        if sync_now {
            self.lingering_since = writes.then(Instant::now);
        }
        closing
    }

    /// Whether `request`, after `taken_bytes` more in the buffer, goes into the active segment
    /// without a roll.
    fn fits_active(&self, request: &Request, taken_bytes: u64) -> bool {
        match request {
            Request::Append { payloads, .. } => self.fits(
                taken_bytes + group_bytes(payloads),
                reserve_bytes(self.segment_bytes),
            ),
            Request::Close => false,
        }
    }

    /// Whether `bytes` more records go into the active segment, leaving room for its seal and
    /// `reserve` bytes.
    fn fits(&self, bytes: u64, reserve: u64) -> bool {
        !self.active.sealed
            && self.buffer_end() + bytes + SEAL_BYTES + reserve <= self.active.capacity
    }

    fn buffer_end(&self) -> u64 {
        self.active.write_offset + self.buffer.len() as u64
    }

    /// Encodes `batch` into the buffer, writing and syncing it when full; at the end, the whole
    /// buffer too if `sync_now` (else it waits: every group in it is deferred).
    fn commit(&mut self, batch: &mut Vec<(Vec<Bytes>, Completion, bool)>, sync_now: bool) {
        // Once a new segment cannot be created, the rest of the batch fails too (it would need
        // that segment as well); the next batch tries again, so space coming back is noticed.
        let mut roll_error: Option<StoreError> = None;
        for (payloads, done, frees_space) in batch.drain(..) {
            let group_bytes = group_bytes(&payloads);
            // `Journal::append` refuses bigger groups before they get here.
            assert!(group_bytes <= BATCH_BYTES_MAX);
            let reserve = reserve_bytes(self.segment_bytes);
            assert!(
                SEGMENT_HEADER_BYTES + group_bytes + SEAL_BYTES + reserve <= self.segment_bytes
            );
            if self.buffer.len() as u64 + group_bytes > BATCH_BYTES_MAX {
                self.flush();
            }
            let fits_reserve = self.fits(group_bytes, 0);
            if let Some(error) = &roll_error {
                if !(frees_space && fits_reserve) {
                    let _ = done.send(Err(error.duplicate()));
                    continue;
                }
            } else if !self.fits(group_bytes, reserve) {
                self.flush();
                if let Err(error) = self.roll() {
                    // A removal still fits in the reserve of the unsealed active segment.
                    let use_reserve = frees_space && fits_reserve && !self.active.sealed;
                    if use_reserve {
                        roll_error = Some(error);
                    } else {
                        tracing::error!(%error, "journal append failed");
                        let _ = done.send(Err(error.duplicate()));
                        roll_error = Some(error);
                        continue;
                    }
                }
            }
            let group_len = payloads.len() as u32;
            let mut locations = Vec::with_capacity(payloads.len());
            for (index, payload) in payloads.iter().enumerate() {
                let offset = self.buffer_end();
                // `flush` writes the whole buffer at once: its first record starts a write.
                let write_start = self.buffer.is_empty();
                encode_record(
                    &mut self.buffer,
                    self.active.id,
                    offset,
                    group_len,
                    index as u32,
                    write_start,
                    payload,
                );
                locations.push(Location {
                    segment: self.active.id,
                    offset,
                    len: payload.len() as u32,
                });
            }
            self.waiters.push((done, locations));
        }
        if sync_now {
            self.flush();
        }
    }

    /// Writes the buffer, makes it durable, then completes its waiters.
    fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let path = || segment_path(&self.shared.dir, self.active.id);
        // The end marker rides in the same write, just past the records, where the next write
        // (or the seal, whose room every record leaves free) overwrites it.
        let data_bytes = self.buffer.len();
        let marker_at = self.active.write_offset + data_bytes as u64;
        debug_assert!(marker_at + END_MARKER_BYTES <= self.active.capacity);
        self.buffer
            .extend_from_slice(&encode_end_marker(self.active.id, marker_at));
        let written = self
            .active
            .file
            .write_all_at(&self.buffer, self.active.write_offset);
        self.buffer.truncate(data_bytes);
        if let Err(error) = written {
            // The segment was pre-allocated, so this is not ENOSPC but the device failing; the
            // file's state is unknown and nothing of it may be acknowledged.
            fatal("write", &path(), &error);
        }
        if self.sync == SyncPolicy::Always {
            let started = Instant::now();
            if let Err(error) = self.active.file.sync_data() {
                fatal("fdatasync", &path(), &error);
            }
            self.shared.record_fsync(started.elapsed());
        }
        self.active.write_offset += self.buffer.len() as u64;
        self.shared
            .active_written
            .store(self.active.write_offset, Ordering::Relaxed);
        if let Some(prepared) = &self.prepared {
            prepared.filled_to(self.active.write_offset);
        }
        self.buffer.clear();
        if self.buffer.capacity() as u64 > 2 * BATCH_BYTES_TARGET {
            // One huge group must not pin its memory for the journal's lifetime.
            self.buffer.shrink_to(BATCH_BYTES_TARGET as usize);
        }
        let records: usize = self
            .waiters
            .iter()
            .map(|(_, locations)| locations.len())
            .sum();
        self.active.records += records as u64;
        self.shared.record_commit(records as u64);
        for (done, locations) in self.waiters.drain(..) {
            // A dropped receiver means the caller stopped caring; its records are stored anyway.
            let _ = done.send(Ok(locations));
        }
    }

    /// Makes a new segment the active one, using the one prepared ahead if it is there.
    fn roll(&mut self) -> Result<(), StoreError> {
        let next = self.active.id + 1;
        let journal_bytes = self.shared.bytes_on_disk();
        let prepared = match self.prepared.take() {
            Some(prepared) if prepared.segment == next => prepared.finish(),
            Some(prepared) => {
                self.discard(prepared);
                None
            }
            None => None,
        };
        let file = match prepared {
            Some(file) => file,
            None => {
                let spare_claimed = self.spare_or_room(next, journal_bytes)?;
                let shared = &self.shared;
                prepare_segment(
                    &shared.dir,
                    next,
                    self.segment_bytes,
                    journal_bytes,
                    spare_claimed,
                    None,
                    &mut |to| shared.claim_spare(to),
                )?
            }
        };
        // Sealed only once its successor is ready: a failed roll leaves the active segment
        // open, with its reserve for removals.
        if !self.active.sealed {
            self.seal();
        }
        install_segment(&self.shared.dir, next)?;
        let file = Arc::new(file);
        self.shared.seal_and_add_segment(
            self.active.id,
            self.active.write_offset,
            next,
            Arc::clone(&file),
            self.segment_bytes,
        );
        self.active = ActiveSegment {
            id: next,
            file,
            write_offset: SEGMENT_HEADER_BYTES,
            capacity: self.segment_bytes,
            records: 0,
            sealed: false,
        };
        self.prepare_ahead();
        Ok(())
    }

    /// Closes the active segment with its seal, durably, before any successor exists: so a
    /// segment with a successor but no seal has lost its tail, which recovery reports.
    fn seal(&mut self) {
        let image = encode_seal(
            self.active.id,
            self.active.write_offset,
            self.active.records,
        );
        let path = || segment_path(&self.shared.dir, self.active.id);
        if let Err(error) = self
            .active
            .file
            .write_all_at(&image, self.active.write_offset)
        {
            fatal("write", &path(), &error);
        }
        if self.sync == SyncPolicy::Always {
            if let Err(error) = self.active.file.sync_data() {
                fatal("fdatasync", &path(), &error);
            }
        }
        self.active.write_offset += image.len() as u64;
        self.active.sealed = true;
        self.shared
            .active_written
            .store(self.active.write_offset, Ordering::Relaxed);
    }

    /// Starts writing the segment after the active one on a helper thread, unless that would
    /// pass `disk_bytes_max` (then rolling tries, and reports, by itself).
    fn prepare_ahead(&mut self) {
        let next = self.active.id + 1;
        let journal_bytes = self.shared.bytes_on_disk();
        let Ok(spare_claimed) = self.spare_or_room(next, journal_bytes) else {
            return;
        };
        let (sender, result) = std::sync::mpsc::channel();
        let dir = self.shared.dir.clone();
        let segment_bytes = self.segment_bytes;
        let ready_at = prepared_ready_at(self.active.capacity);
        let pace = Arc::new(Pace::new(segment_bytes, ready_at, self.active.write_offset));
        let helper_pace = Arc::clone(&pace);
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("journal-prepare".to_owned())
            .spawn(move || {
                let _ = sender.send(prepare_segment(
                    &dir,
                    next,
                    segment_bytes,
                    journal_bytes,
                    spare_claimed,
                    Some(&helper_pace),
                    &mut |to| shared.claim_spare(to),
                ));
            });
        match spawned {
            Ok(thread) => {
                self.prepared = Some(Prepared {
                    segment: next,
                    result,
                    thread,
                    pace,
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot prepare journal segments ahead");
                // A spare claimed for the thread is removed, so it does not stay on disk
                // uncounted.
                if spare_claimed {
                    discard_prepared(&self.shared.dir, next);
                }
            }
        }
    }

    /// True once a spare is renamed to segment `next`'s temporary file, to be recycled as it
    /// (false: a new file), or `DiskFull` when no spare is kept and a new file would take the
    /// journal past `disk_bytes_max`. A spare is already counted in `journal_bytes`, so
    /// recycling it takes no more of the disk.
    fn spare_or_room(&self, next: u64, journal_bytes: u64) -> Result<bool, StoreError> {
        let spare_claimed = self
            .shared
            .claim_spare(&temporary_path(&self.shared.dir, next));
        if let (false, Some(limit)) = (spare_claimed, self.disk_bytes_max) {
            if journal_bytes + self.segment_bytes > limit {
                return Err(StoreError::DiskFull {
                    dir: self.shared.dir.clone(),
                    segment: next,
                    segment_bytes: self.segment_bytes,
                    journal_bytes,
                });
            }
        }
        Ok(spare_claimed)
    }

    fn discard(&self, prepared: Prepared) {
        if prepared.pace.cancel() {
            prepared.thread.thread().unpark();
        }
        let _ = prepared.thread.join();
        discard_prepared(&self.shared.dir, prepared.segment);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A closed journal leaves no half-prepared file behind.
        if let Some(prepared) = self.prepared.take() {
            self.discard(prepared);
        }
    }
}

/// The policy for a failed write or `fdatasync` of the journal, in one place: stop the process.
/// After a failed fdatasync the kernel may have dropped the dirty pages and cleared the error,
/// so a retry could "succeed" without the data ever reaching the disk (the PostgreSQL
/// fsyncgate lesson). Nothing written since the last good sync is acknowledged; restart
/// recovers the rest.
pub(crate) fn fatal(operation: &str, path: &Path, error: &std::io::Error) -> ! {
    tracing::error!(
        operation,
        segment = %path.display(),
        %error,
        "journal {operation} failed: stopping the process so nothing unsynced is acknowledged"
    );
    eprintln!(
        "hopmq journal: {operation} of {} failed: {error}; aborting",
        path.display()
    );
    std::process::abort();
}
