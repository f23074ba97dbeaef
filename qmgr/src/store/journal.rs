//! [`Journal`]: the handle producers and readers share, and [`open`], which recovers a
//! journal directory and starts its writer thread.
//!
//! Invariants: only the holder of the writer's mutex writes records (the writer thread, or a
//! producer committing in [`Journal::release`]), in request-queue order; the segment table
//! (`Shared::segments`) holds every segment file on disk, and the active one is never removed
//! from it; a [`Commit`] resolves `Ok` only once its whole group is durable.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::{RecordCount, StoreError};
use super::format::{
    BATCH_BYTES_MAX, Decoded, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX,
    SEAL_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES, decode_record,
    record_bytes_padded, reserve_bytes,
};
use super::recovery::RecoveryReport;
use super::requests::Request;
use super::requests::Requests;
use super::segment::segment_path;
use super::shared::{SPARES_MAX, SegmentEntry, Shared, Spare, spare_bytes};
use super::writer::{ActiveSegment, SharedWriter, Writer};
use super::{JournalConfig, Location};
use reopen::Recovered;

mod reopen;

/// Appends queued for the writer before `append` blocks its caller: backpressure when the disk
/// is the bottleneck. Each holds one group, so this bounds queued memory to what callers
/// themselves bound (the daemon limits message sizes and in-flight puts).
pub(crate) const REQUEST_QUEUE_MAX: usize = 4096;
pub use super::shared::FSYNC_BUCKETS;

/// A durable, segmented, append-only journal of opaque payloads. Cheap to clone; all clones
/// share one writer thread, which stops when the last clone is dropped or on [`Journal::close`].
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    requests: Arc<Requests>,
    /// The writer's state, for commits on a producer's thread.
    state: SharedWriter,
    writer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Largest encoded group: one write, and what a fresh segment holds.
    group_bytes_max: u64,
    /// The size of new segments: only a dead segment of this size becomes a spare, so
    /// recycling one never takes more of the disk than it frees.
    segment_bytes: u64,
}

/// One segment as [`Journal::stats`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStats {
    pub segment: u64,
    pub bytes_on_disk: u64,
    /// Where its written data ends (header included).
    pub bytes_written: u64,
}

/// A snapshot of the journal's shape and counters since `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalStats {
    /// The segment new appends go to.
    pub active_segment: u64,
    /// Every segment on disk, oldest first.
    pub segments: Vec<SegmentStats>,
    pub bytes_on_disk: u64,
    /// Batches made durable.
    pub commits: u64,
    /// Of those, the batches a producer committed on its own thread.
    pub commits_inline: u64,
    /// Records made durable.
    pub records: u64,
    /// Records in the most recent batch.
    pub batch_records_last: u64,
    pub fsyncs: u64,
    pub fsync_nanos_total: u64,
    pub fsync_nanos_max: u64,
    /// See [`FSYNC_BUCKETS`].
    pub fsync_micros_log2_buckets: [u64; FSYNC_BUCKETS],
}

/// The outcome of one [`Journal::append`]: resolves to the records' locations once the group
/// is durable. Await it from async code, or call [`Commit::wait`] from a plain thread.
#[must_use = "an append is only durable once its Commit resolves Ok"]
pub struct Commit {
    state: CommitState,
}

enum CommitState {
    Ready(Option<Result<Vec<Location>, StoreError>>),
    Waiting(oneshot::Receiver<Result<Vec<Location>, StoreError>>),
}

impl Commit {
    pub(crate) fn ready(result: Result<Vec<Location>, StoreError>) -> Self {
        Self {
            state: CommitState::Ready(Some(result)),
        }
    }

    /// Blocks the calling thread until the group is durable. Must not be called from inside
    /// an async runtime (tokio panics then); await the `Commit` there instead.
    pub fn wait(self) -> Result<Vec<Location>, StoreError> {
        match self.state {
            CommitState::Ready(result) => result.unwrap_or(Err(StoreError::Closed)),
            CommitState::Waiting(receiver) => {
                receiver.blocking_recv().unwrap_or(Err(StoreError::Closed))
            }
        }
    }
}

impl Future for Commit {
    type Output = Result<Vec<Location>, StoreError>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            CommitState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(StoreError::Closed)))
            }
            // A dropped sender means the writer stopped before reaching this group: it was
            // never written, let alone acknowledged.
            CommitState::Waiting(receiver) => Pin::new(receiver)
                .poll(context)
                .map(|result| result.unwrap_or(Err(StoreError::Closed))),
        }
    }
}

/// Opens the journal in `config.dir` (creating it if needed), replays every intact record in
/// journal order through `replay`, then starts the writer thread.
///
/// `replay` gets borrowed payloads: recovery holds one segment in memory at a time. Records of
/// an atomic group are delivered only if the whole group is intact. A torn tail is truncated
/// (and reported); corruption anywhere else refuses to open with [`StoreError::Corrupt`],
/// unless `config.salvage` is set, in which case it is skipped and reported.
pub fn open<F, E>(config: JournalConfig, replay: F) -> Result<(Journal, RecoveryReport), StoreError>
where
    F: FnMut(Location, &[u8]) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    validate(&config)?;
    create_dir(&config.dir)?;
    let Recovered {
        segments,
        active,
        report,
    } = reopen::recover(&config, replay)?;
    tracing::info!(
        dir = %config.dir.display(),
        segments = report.segments,
        records = report.records,
        active_segment = active.id,
        "journal recovered"
    );
    let journal = start(&config, segments, active)?;
    Ok((journal, report))
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    // The new directory's own name must be durable too, or segment 1 could vanish with it.
    super::segment::create_dir_durably(dir)
}

/// The journal over the recovered `segments`, appending to `active`, with its writer thread
/// started.
fn start(
    config: &JournalConfig,
    segments: BTreeMap<u64, SegmentEntry>,
    active: ActiveSegment,
) -> Result<Journal, StoreError> {
    let shared = Arc::new(new_shared(config.dir.clone(), segments, &active));
    let writer = Writer {
        shared: Arc::clone(&shared),
        sync: config.sync,
        segment_bytes: config.segment_bytes,
        disk_bytes_max: config.disk_bytes_max,
        active,
        buffer: Vec::new(),
        waiters: Vec::new(),
        prepared: None,
        batch: Vec::new(),
        deferred_since: None,
        lingering_since: None,
    };
    let state: SharedWriter = Arc::new(Mutex::new(Some(writer)));
    let requests = Arc::new(Requests::new(REQUEST_QUEUE_MAX));
    let handle = std::thread::Builder::new()
        .name("journal-writer".to_owned())
        .spawn({
            let requests = Arc::clone(&requests);
            let state = Arc::clone(&state);
            move || super::writer::run(state, requests)
        })
        .map_err(|source| StoreError::io(&config.dir, source))?;
    Ok(Journal {
        inner: Arc::new(Inner {
            shared,
            requests,
            state,
            writer: Mutex::new(Some(handle)),
            closed: AtomicBool::new(false),
            group_bytes_max: BATCH_BYTES_MAX.min(
                config.segment_bytes
                    - SEGMENT_HEADER_BYTES
                    - SEAL_BYTES
                    - reserve_bytes(config.segment_bytes),
            ),
            segment_bytes: config.segment_bytes,
        }),
    })
}

/// What producers, readers and the writer share, with every counter at zero.
fn new_shared(
    dir: PathBuf,
    segments: BTreeMap<u64, SegmentEntry>,
    active: &ActiveSegment,
) -> Shared {
    Shared {
        dir,
        segments: Mutex::new(segments),
        spares: Mutex::new(Vec::new()),
        active_segment: AtomicU64::new(active.id),
        active_written: AtomicU64::new(active.write_offset),
        commits: AtomicU64::new(0),
        commits_inline: AtomicU64::new(0),
        records: AtomicU64::new(0),
        batch_records_last: AtomicU64::new(0),
        fsyncs: AtomicU64::new(0),
        fsync_nanos_total: AtomicU64::new(0),
        fsync_nanos_max: AtomicU64::new(0),
        fsync_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
    }
}

fn validate(config: &JournalConfig) -> Result<(), StoreError> {
    let bytes = config.segment_bytes;
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) || bytes % RECORD_ALIGN_BYTES != 0
    {
        return Err(StoreError::Config {
            reason: format!(
                "segment_bytes is {bytes}; it must be a multiple of {RECORD_ALIGN_BYTES} between \
                 {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"
            ),
        });
    }
    Ok(())
}

impl Journal {
    /// Appends `payloads` as one atomic group: after a crash all of them are there or none,
    /// contiguous in journal order. The [`Commit`] resolves once the group is durable
    /// (fdatasync'd under `SyncPolicy::Always`). Blocks only when [`REQUEST_QUEUE_MAX`]
    /// appends are already queued.
    pub fn append<P: Into<Bytes>>(&self, payloads: Vec<P>) -> Commit {
        self.append_group(payloads.into_iter().map(Into::into).collect(), false, false)
    }

    /// Like [`append`](Self::append), for a group that frees space (a removal): it may use
    /// the reserve at the end of the active segment when no new segment can be created, so a
    /// full journal can always be drained.
    pub fn append_freeing<P: Into<Bytes>>(&self, payloads: Vec<P>) -> Commit {
        self.append_group(payloads.into_iter().map(Into::into).collect(), true, false)
    }

    /// Like [`append_freeing`](Self::append_freeing), for a removal that a crash may safely
    /// undo (the message comes back and is settled again, e.g. one a neighbour has
    /// acknowledged): it takes no sync of its own but rides in the next write that needs one,
    /// or is synced within [`DEFERRED_SYNC_DELAY`](super::writer::DEFERRED_SYNC_DELAY). The
    /// [`Commit`] resolves once it is durable, in journal order like every other.
    pub fn append_deferred<P: Into<Bytes>>(&self, payloads: Vec<P>) -> Commit {
        self.append_group(payloads.into_iter().map(Into::into).collect(), true, true)
    }

    fn append_group(&self, payloads: Vec<Bytes>, frees_space: bool, deferred: bool) -> Commit {
        if self.inner.closed.load(Ordering::Acquire) {
            return Commit::ready(Err(StoreError::Closed));
        }
        if payloads.is_empty() {
            return Commit::ready(Err(StoreError::EmptyGroup));
        }
        let mut group_bytes = 0u64;
        for payload in &payloads {
            if payload.len() as u64 > RECORD_PAYLOAD_BYTES_MAX {
                return Commit::ready(Err(StoreError::GroupTooLarge {
                    bytes: payload.len() as u64,
                    bytes_max: RECORD_PAYLOAD_BYTES_MAX,
                }));
            }
            group_bytes += record_bytes_padded(payload.len() as u64);
        }
        if group_bytes > self.inner.group_bytes_max {
            return Commit::ready(Err(StoreError::GroupTooLarge {
                bytes: group_bytes,
                bytes_max: self.inner.group_bytes_max,
            }));
        }
        let (done, receiver) = oneshot::channel();
        match self.inner.requests.push(Request::Append {
            payloads,
            done,
            frees_space,
            deferred,
        }) {
            Ok(()) => Commit {
                state: CommitState::Waiting(receiver),
            },
            Err(_) => Commit::ready(Err(StoreError::Closed)),
        }
    }

    /// From now until [`release`](Self::release), the first few appends made through any handle
    /// ([`HELD_APPENDS_MAX`](super::requests::HELD_APPENDS_MAX)) do not wake the writer thread:
    /// the caller, about to make some, decides afterwards who commits them.
    pub fn hold(&self) {
        self.inner.requests.hold();
    }

    /// Ends a [`hold`](Self::hold). If `commit_here`, the writer thread sits idle, an append
    /// that needs a sync is queued, and the disk has been quiet for
    /// [`QUIET_BEFORE_INLINE`](super::writer::QUIET_BEFORE_INLINE), then one batch of the
    /// queue (as the thread would take, but stopping before a group that needs a new segment)
    /// is written and synced on this thread before this returns, its [`Commit`]s resolved: a
    /// lone commit then costs no wake-up of the writer and no wake-up back. Whatever is left,
    /// or all of it otherwise, goes to the writer thread, woken as those appends would have
    /// woken it. A caller that has other work ready should pass false: the thread syncs while
    /// the caller goes on.
    pub fn release(&self, commit_here: bool) {
        let requests = &self.inner.requests;
        if !requests.release(commit_here) {
            return;
        }
        // Busy means the thread took the lock since: it finds the queue before it sleeps.
        if let Ok(mut guard) = self.inner.state.try_lock() {
            if let Some(writer) = guard.as_mut().filter(|writer| writer.quiet()) {
                writer.step(requests, false, true);
                self.inner
                    .shared
                    .commits_inline
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        requests.wake_if_queued();
    }

    /// Whether the writer thread sleeps waiting for appends.
    #[cfg(test)]
    pub(crate) fn writer_waits(&self) -> bool {
        self.inner.requests.writer_waits()
    }

    /// Whether the disk has been quiet long enough for a commit in [`Self::release`].
    #[cfg(test)]
    pub(crate) fn writer_quiet(&self) -> bool {
        self.inner
            .state
            .lock()
            .is_ok_and(|guard| guard.as_ref().is_some_and(Writer::quiet))
    }

    /// Reads one record's payload back, verifying its CRC. Callable from any thread.
    pub fn read(&self, location: Location) -> Result<Vec<u8>, StoreError> {
        let not_found = |reason| StoreError::NotFound {
            segment: location.segment,
            offset: location.offset,
            reason,
        };
        if u64::from(location.len) > RECORD_PAYLOAD_BYTES_MAX
            || location.offset % RECORD_ALIGN_BYTES != 0
            || location.offset < SEGMENT_HEADER_BYTES
        {
            return Err(not_found("not a record location"));
        }
        let file = self
            .inner
            .shared
            .segments()
            .get(&location.segment)
            .map(|entry| Arc::clone(&entry.file))
            .ok_or_else(|| not_found("no such segment (deleted?)"))?;
        let mut bytes = vec![0u8; (RECORD_HEADER_BYTES + u64::from(location.len)) as usize];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::UnexpectedEof => not_found("past the end of the segment"),
                _ => StoreError::io(
                    segment_path(&self.inner.shared.dir, location.segment),
                    error,
                ),
            })?;
        match decode_record(&bytes, location.segment, location.offset, 0) {
            Decoded::Record(view) if view.payload.len() == location.len as usize => {
                bytes.copy_within(view.payload, 0);
                bytes.truncate(location.len as usize);
                Ok(bytes)
            }
            Decoded::Record(_) => Err(not_found("the record there has another length")),
            Decoded::End | Decoded::EndMarker => Err(not_found("nothing written there")),
            Decoded::Padding { .. } => Err(not_found("a range lost to salvage")),
            Decoded::Seal { .. } => Err(not_found("a segment's seal")),
            // Padding usually spans more than the record read here, so it reads as cut short.
            Decoded::Invalid(_) if bytes[4..12].iter().all(|&byte| byte == 0) => {
                Err(not_found("a range lost to salvage"))
            }
            Decoded::Invalid(reason) => Err(StoreError::Corrupt {
                path: segment_path(&self.inner.shared.dir, location.segment),
                segment: location.segment,
                offset: location.offset,
                reason,
                range_end: location.offset + record_bytes_padded(u64::from(location.len)),
                records_lost: RecordCount::Known(1),
                records_following: 0,
            }),
        }
    }

    /// Deletes every segment with an id below `segment`, never the active one, and makes the
    /// removal durable. Callers only ever delete a prefix of the journal.
    pub fn delete_segments_before(&self, segment: u64) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        let limit = segment.min(shared.active_segment.load(Ordering::Acquire));
        let doomed: Vec<u64> = shared
            .segments()
            .range(..limit)
            .map(|(&id, _)| id)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let mut retired = Vec::new();
        for id in doomed {
            let bytes = shared.segments().get(&id).map(|entry| entry.bytes_on_disk);
            let room = retired.len() + shared.spares().len() < SPARES_MAX;
            let recyclable = bytes.filter(|&bytes| room && bytes == self.inner.segment_bytes);
            if let Some(bytes) = recyclable {
                // A spare that cannot be made is removed below like any dead segment.
                if let Ok(path) = super::segment::retire_segment(&shared.dir, id) {
                    retired.push((id, Spare { path, bytes }));
                    continue;
                }
            }
            let path = segment_path(&shared.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Another caller got there first.
                Err(source) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::io(path, source)),
            }
            shared.segments().remove(&id);
        }
        if let Err(error) = super::segment::sync_dir(&shared.dir) {
            // Not durable, so not usable: removed like any dead segment (best effort; open
            // removes leftover spares), so nothing stays on disk uncounted.
            for (id, spare) in retired {
                let _ = std::fs::remove_file(&spare.path);
                shared.segments().remove(&id);
            }
            return Err(error);
        }
        // Only once its new name is durable may a spare be rewritten as another segment: else
        // a crash could bring back the old name over the new segment's header. Moved under both
        // locks at once: pushed and removed one lock at a time, `stats` could read the segment
        // before its removal and the spare after its push, counting its bytes twice.
        for (id, spare) in retired {
            let (mut segments, mut spares) = shared.tables();
            spares.push(spare);
            segments.remove(&id);
        }
        Ok(())
    }

    /// The largest atomic group [`Journal::append`] takes, in bytes of payloads with their
    /// record headers.
    pub fn group_bytes_max(&self) -> u64 {
        self.inner.group_bytes_max
    }

    /// The segment appends go to now; an append made after this call lands in it or a later
    /// one. Cheap (one atomic load), for callers that must not delete what is being written.
    pub fn active_segment(&self) -> u64 {
        self.inner.shared.active_segment.load(Ordering::Acquire)
    }

    /// The active segment, every segment's size, and the writer's counters.
    pub fn stats(&self) -> JournalStats {
        let shared = &self.inner.shared;
        let active_segment = shared.active_segment.load(Ordering::Acquire);
        let active_written = shared.active_written.load(Ordering::Relaxed);
        // Both tables under their locks at once, so a segment being retired as a spare is in
        // exactly one of them and its bytes are counted once.
        let (table, spares) = shared.tables();
        let segments: Vec<SegmentStats> = table
            .iter()
            .map(|(&segment, entry)| SegmentStats {
                segment,
                bytes_on_disk: entry.bytes_on_disk,
                bytes_written: if segment == active_segment {
                    active_written
                } else {
                    entry.bytes_written
                },
            })
            .collect();
        let bytes_on_disk = segments
            .iter()
            .map(|segment| segment.bytes_on_disk)
            .sum::<u64>()
            + spare_bytes(&spares);
        drop((table, spares));
        JournalStats {
            active_segment,
            bytes_on_disk,
            segments,
            commits: shared.commits.load(Ordering::Relaxed),
            commits_inline: shared.commits_inline.load(Ordering::Relaxed),
            records: shared.records.load(Ordering::Relaxed),
            batch_records_last: shared.batch_records_last.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            fsync_nanos_total: shared.fsync_nanos_total.load(Ordering::Relaxed),
            fsync_nanos_max: shared.fsync_nanos_max.load(Ordering::Relaxed),
            fsync_micros_log2_buckets: std::array::from_fn(|bucket| {
                shared.fsync_buckets[bucket].load(Ordering::Relaxed)
            }),
        }
    }

    /// Stops the writer after it has finished what was queued, and waits for it. Appends after
    /// this fail with [`StoreError::Closed`]; reads keep working.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Fails only if the writer is already gone.
        let _ = self.requests.push(Request::Close);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the journal writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}
