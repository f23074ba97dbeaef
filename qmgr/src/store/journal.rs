//! [`Journal`]: the handle producers and readers share, and [`open`], which recovers a
//! journal directory and starts its writer thread.
//!
//! Invariants: only the holder of the writer's mutex writes records (the writer thread, or a
//! producer committing in [`Journal::release`]), in request-queue order; the segment table
//! (`Shared::segments`) holds every segment file on disk, and the active one is never removed
//! from it; a [`Commit`] resolves `Ok` only once its whole group is durable.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::{RecordCount, StoreError};
use super::format::{
    BATCH_BYTES_MAX, Decoded, END_MARKER_BYTES, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX, SEAL_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    SEGMENT_HEADER_BYTES, SegmentHeaderError, decode_record, decode_segment_header,
    encode_end_marker, encode_padding, encode_seal, record_bytes_padded, reserve_bytes,
};
use super::recovery::{
    RecoveryReport, SalvagedRange, TORN_WRITE_BYTES_MAX, TruncatedTail, scan_segment,
};
use super::requests::Request;
use super::requests::Requests;
use super::segment::{create_segment, list_segments, segment_path};
use super::shared::{SPARES_MAX, SegmentEntry, Shared, Spare};
use super::writer::{ActiveSegment, SharedWriter, Writer};
use super::{JournalConfig, Location};

/// Appends queued for the writer before `append` blocks its caller: backpressure when the disk
/// is the bottleneck. Each holds one group, so this bounds queued memory to what callers
/// themselves bound (the daemon limits message sizes and in-flight puts).
pub const REQUEST_QUEUE_MAX: usize = 4096;
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
pub fn open<F, E>(
    config: JournalConfig,
    mut replay: F,
) -> Result<(Journal, RecoveryReport), StoreError>
where
    F: FnMut(Location, &[u8]) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    validate(&config)?;
    let dir = config.dir.clone();
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::io(&dir, source))?;
        // The new directory's own name must be durable too, or segment 1 could vanish with it.
        if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            super::segment::sync_dir(parent)?;
        }
    }
    let ids = list_segments(&dir)?;
    let mut report = RecoveryReport::default();
    let mut segments = BTreeMap::new();
    let active = match ids.last() {
        None => {
            if let Some(limit) = config.disk_bytes_max {
                if config.segment_bytes > limit {
                    return Err(StoreError::DiskFull {
                        dir,
                        segment: 1,
                        segment_bytes: config.segment_bytes,
                        journal_bytes: 0,
                    });
                }
            }
            let file = Arc::new(create_segment(&dir, 1, config.segment_bytes, 0)?);
            segments.insert(
                1,
                SegmentEntry {
                    file: Arc::clone(&file),
                    bytes_on_disk: config.segment_bytes,
                    bytes_written: SEGMENT_HEADER_BYTES,
                },
            );
            ActiveSegment {
                id: 1,
                file,
                write_offset: SEGMENT_HEADER_BYTES,
                capacity: config.segment_bytes,
                records: 0,
                sealed: false,
            }
        }
        Some(&last) => {
            check_contiguous(&config, &ids, &mut report)?;
            let mut deliver = |location: Location, payload: &[u8]| {
                replay(location, payload).map_err(|source| StoreError::Replay {
                    segment: location.segment,
                    offset: location.offset,
                    source: source.into(),
                })
            };
            let mut buffer = Vec::new();
            let mut active = None;
            for &id in &ids {
                let path = segment_path(&dir, id);
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|source| StoreError::io(&path, source))?;
                let bytes_on_disk = file
                    .metadata()
                    .map_err(|source| StoreError::io(&path, source))?
                    .len();
                if bytes_on_disk > SEGMENT_BYTES_MAX {
                    return Err(StoreError::BadSegmentHeader {
                        path,
                        reason: format!("larger than the segment limit of {SEGMENT_BYTES_MAX}"),
                    });
                }
                buffer.clear();
                file.read_to_end(&mut buffer)
                    .map_err(|source| StoreError::io(&path, source))?;
                let version = check_header(&buffer, id, &path)?;
                let is_last = id == last;
                let scanned = scan_segment(
                    &buffer,
                    id,
                    version,
                    &path,
                    is_last,
                    config.salvage,
                    &mut deliver,
                )?;
                report.segments += 1;
                report.records += scanned.records;
                report.payload_bytes += scanned.payload_bytes;
                if !scanned.salvaged.is_empty() || scanned.reseal {
                    pad_salvaged(&file, id, &scanned.salvaged)
                        .and_then(|()| {
                            if scanned.reseal {
                                let at = scanned.seal.unwrap_or(scanned.end);
                                reseal(&file, id, at, scanned.records, bytes_on_disk)?;
                            }
                            file.sync_data()
                        })
                        .map_err(|source| StoreError::io(&path, source))?;
                }
                report.salvaged.extend(scanned.salvaged);
                // Appends resume at the end of the last segment's data, unless it is sealed.
                let resumes = is_last
                    && !scanned.reseal
                    && (scanned.torn_tail.is_some() || scanned.seal.is_none());
                if resumes {
                    clear_past_end(&file, id, &buffer, scanned.end, scanned.torn_tail.as_ref())
                        .map_err(|source| StoreError::io(&path, source))?;
                }
                report.truncated_tail = scanned.torn_tail;
                let file = Arc::new(file);
                segments.insert(
                    id,
                    SegmentEntry {
                        file: Arc::clone(&file),
                        bytes_on_disk,
                        bytes_written: scanned.end,
                    },
                );
                if is_last {
                    active = Some(ActiveSegment {
                        id,
                        file,
                        write_offset: scanned.end,
                        // A sealed segment takes no more records: the first append rolls.
                        capacity: if scanned.seal.is_some() {
                            scanned.end
                        } else {
                            bytes_on_disk - bytes_on_disk % RECORD_ALIGN_BYTES
                        },
                        records: scanned.records,
                        sealed: scanned.seal.is_some(),
                    });
                }
            }
            let Some(active) = active else {
                return Err(StoreError::Config {
                    reason: "no active segment after recovery".to_owned(),
                });
            };
            active
        }
    };
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        records = report.records,
        active_segment = active.id,
        "journal recovered"
    );
    let shared = Arc::new(Shared {
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
    });
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
    let journal = Journal {
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
    };
    Ok((journal, report))
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

fn check_contiguous(
    config: &JournalConfig,
    ids: &[u64],
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    for pair in ids.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after == before + 1 {
            continue;
        }
        if !config.salvage {
            return Err(StoreError::MissingSegment {
                dir: config.dir.clone(),
                segment: before + 1,
                before,
                after,
            });
        }
        tracing::warn!(
            before,
            after,
            "salvage: journal segments between these are missing"
        );
        report.missing_segments.push(before + 1..after);
    }
    Ok(())
}

/// The segment's format version, once its header checks out.
fn check_header(bytes: &[u8], segment: u64, path: &std::path::Path) -> Result<u32, StoreError> {
    let bad = |reason: String| StoreError::BadSegmentHeader {
        path: path.to_owned(),
        reason,
    };
    decode_segment_header(bytes, segment).map_err(|error| match error {
        SegmentHeaderError::UnsupportedVersion(version) => StoreError::UnsupportedVersion {
            path: path.to_owned(),
            version,
            oldest: super::format::FORMAT_VERSION_MIN,
            supported: super::format::FORMAT_VERSION,
        },
        SegmentHeaderError::NotASegment => bad("no journal segment magic".to_owned()),
        SegmentHeaderError::BadCrc => bad("segment header CRC mismatch".to_owned()),
        SegmentHeaderError::WrongSegment(named) => bad(format!("the header names segment {named}")),
    })
}

/// Makes salvage's decisions durable: each skipped range becomes padding.
fn pad_salvaged(file: &File, segment: u64, ranges: &[SalvagedRange]) -> std::io::Result<()> {
    for range in ranges {
        let bytes = range.offsets.end - range.offsets.start;
        match encode_padding(segment, range.offsets.start, bytes) {
            Some(image) => file.write_all_at(&image, range.offsets.start)?,
            // Too short for a header: it stays, and the next open reports it again.
            None => tracing::warn!(segment, ?range.offsets, "cannot pad a salvaged range"),
        }
    }
    Ok(())
}

/// Writes the seal salvage decided on, so that later opens accept the segment as it now is.
fn reseal(file: &File, segment: u64, at: u64, records: u64, bytes: u64) -> std::io::Result<()> {
    if at + SEAL_BYTES > bytes {
        // No room: the next open reports the same loss again.
        tracing::warn!(segment, at, "no room to reseal a salvaged journal segment");
        return Ok(());
    }
    file.write_all_at(&encode_seal(segment, at, records), at)
}

/// Makes sure nothing past `end`, where appends to the last segment resume, is ever read as a
/// record. The last write, never acknowledged, may have left records there that validate: its
/// later pages reached the disk, the one holding the previous end marker did not, so the scan
/// ended cleanly before them. Appends over them would bring them back once a later write lost
/// its own end marker. So whatever is there is zeroed as far as one write reaches (a torn tail
/// as far as it was found), made durable, and only then is the end marker written, if it is
/// not already there. Zeroed, not cut: the segment stays pre-allocated.
fn clear_past_end(
    file: &File,
    segment: u64,
    bytes: &[u8],
    end: u64,
    torn: Option<&TruncatedTail>,
) -> std::io::Result<()> {
    let len = bytes.len() as u64;
    let marked = torn.is_none()
        && usize::try_from(end)
            .is_ok_and(|at| decode_record(bytes, segment, 0, at) == Decoded::EndMarker);
    let from = if marked { end + END_MARKER_BYTES } else { end };
    let reach = (end + TORN_WRITE_BYTES_MAX)
        .max(torn.map_or(0, |tail| tail.offset + tail.bytes_dropped))
        .min(len);
    if from < reach
        && bytes[from as usize..reach as usize]
            .iter()
            .any(|&byte| byte != 0)
    {
        zero_range(file, from, reach - from)?;
        file.sync_data()?;
    }
    if !marked && end + END_MARKER_BYTES <= len {
        file.write_all_at(&encode_end_marker(segment, end), end)?;
        file.sync_data()?;
    }
    Ok(())
}

fn zero_range(file: &File, offset: u64, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; bytes.min(1024 * 1024) as usize];
    let mut done = 0;
    while done < bytes {
        let piece = (bytes - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..piece], offset + done)?;
        done += piece as u64;
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
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::UnexpectedEof => not_found("past the end of the segment"),
                _ => StoreError::io(
                    segment_path(&self.inner.shared.dir, location.segment),
                    source,
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
        // a crash could bring back the old name over the new segment's header.
        for (id, spare) in retired {
            shared.spares().push(spare);
            shared.segments().remove(&id);
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
        let segments: Vec<SegmentStats> = shared
            .segments()
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
        JournalStats {
            active_segment,
            bytes_on_disk: segments
                .iter()
                .map(|segment| segment.bytes_on_disk)
                .sum::<u64>()
                + shared.spare_bytes(),
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
