//! Live reloads of the topology file: the task that reads it again when it changes, on SIGHUP,
//! or when a client asks (`qmgr reload`), checks what this running manager can take, and hands
//! the result to the QUIC driver and then to the core.
//!
//! Owns the watch of the file and the decision to refuse an edit. It does not apply anything
//! to queues or routes (the core does, on [`Command::Topology`]) and holds no topology of its
//! own beyond the version it last sent.
//!
//! Invariants:
//! - the file is watched through its folder (editors replace files by rename, which
//!   a watch on the file itself would lose), and only events naming the file count; a burst
//!   of events is read once, [`QUIET`] after its last event (or [`BURST_MAX`] after its
//!   first, so a file rewritten without pause is still read);
//! - a read is bounded by [`TOPOLOGY_BYTES_MAX`]; its version is the CRC32C of the bytes;
//!   a watch or SIGHUP trigger whose version is the one last sent sends nothing, while a
//!   client's request is always answered;
//! - an edit is refused (with file, line where known, and reason; the topology in force
//!   stays) when it does not parse, drops this manager, moves this manager's own address
//!   (its endpoint is bound there: that needs a restart), or gives links to a manager started
//!   without TLS for them;
//! - an accepted topology goes to the driver first and to the core second, so a new
//!   neighbour's connection is admitted by the time the core routes to it, and the
//!   connections of removed links have been reported closed before the core hears of the new
//!   topology.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hopmq_routing::topology::TOPOLOGY_BYTES_MAX;
use hopmq_routing::{Checked, ManagerName, PeerAddress, Topology, TopologyError};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::channel::quic::{Driver, QuicError};
use crate::manager::{Command, ReloadRequest, TopologyUpdate};

/// `qmgr reload` requests waiting for this task; the core is given the sending end. Each read
/// takes milliseconds, so more waiting than this means a client is hammering, and the core
/// can tell it to retry.
pub(crate) const REQUESTS_MAX: usize = 16;
/// How long the folder must stay quiet after an event concerning the file before it is read:
/// an editor's save (write a temporary file, rename it over, touch attributes) lands within
/// a few milliseconds, and a person does not notice 200 ms.
pub(crate) const QUIET: Duration = Duration::from_millis(200);
/// The longest a burst of events can put a read off, counted from its first event.
pub(crate) const BURST_MAX: Duration = Duration::from_secs(2);
/// Watch events queued between the watcher's thread and this task. One queued event is
/// enough to cause a read, so events beyond this are dropped without loss.
const WATCH_EVENTS_MAX: usize = 64;
/// Neighbours named in a refusal for missing TLS; the rest are counted.
const NAMED_NEIGHBOURS_MAX: usize = 3;

/// Where in the file a refusal points: the file, and the line when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The file, as configured.
    pub file: String,
    /// 1-based line, when one line is to blame.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Why a topology file read again is not put in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// The file could not be read.
    #[error("cannot read topology file {}: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    /// The file is larger than [`TOPOLOGY_BYTES_MAX`].
    #[error("topology file {} is {bytes} bytes or more; the limit is {limit}", file.display())]
    TooLarge {
        file: PathBuf,
        bytes: u64,
        limit: u64,
    },
    /// The bytes are not UTF-8, so they cannot be TOML.
    #[error("{file}:{line}:{column}: error: the file is not valid UTF-8")]
    NotUtf8 {
        file: String,
        line: usize,
        column: usize,
    },
    /// The text is not a valid topology (every error, with file, line and column).
    #[error(transparent)]
    Invalid(#[from] TopologyError),
    /// This manager is not declared in the new file.
    #[error(
        "{at}: error: manager `{me}` is not declared; a running manager cannot be removed from its topology (stop it first)"
    )]
    NotDeclared { at: Location, me: ManagerName },
    /// The new file moves this manager.
    #[error(
        "{at}: error: the address of manager `{me}` changed {moved}; changing this manager's own address needs a restart"
    )]
    AddressChanged {
        at: Location,
        me: ManagerName,
        /// Boxed: a rare error should not make every `Result` of this module large.
        moved: Box<Moved>,
    },
    /// The new file gives links to a manager that was started without TLS for them.
    #[error(
        "{at}: error: manager `{me}` now has links (to {neighbours}), but it was started without TLS for links; set tls.ca, tls.cert and tls.key and restart it"
    )]
    NoTls {
        at: Location,
        me: ManagerName,
        /// A few of the neighbours, for the message.
        neighbours: String,
    },
    /// The QUIC driver refused the topology.
    #[error("{file}: error: the channel driver cannot apply it: {error}")]
    Driver { file: String, error: Box<QuicError> },
}

/// A manager's address before and after an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moved {
    /// In the topology in force.
    pub old: Option<PeerAddress>,
    /// In the edited file.
    pub new: Option<PeerAddress>,
}

impl fmt::Display for Moved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |address: &Option<PeerAddress>| {
            address
                .as_ref()
                .map_or_else(|| "none".to_owned(), |a| format!("`{a}`"))
        };
        write!(f, "from {} to {}", show(&self.old), show(&self.new))
    }
}

/// What a running manager cannot change without a restart, checked against each new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    /// This manager.
    pub me: ManagerName,
    /// Its address in the topology it started with (where its endpoint is bound).
    pub address: Option<PeerAddress>,
    /// Whether it has TLS for links (a QUIC driver), so that links can be added.
    pub links_possible: bool,
}

/// The version of a topology file's contents: its CRC32C as 8 lowercase hex digits. The
/// version of a file that could not be read is the empty string.
pub(crate) fn version(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

/// The bytes of the topology file, at most [`TOPOLOGY_BYTES_MAX`].
pub(crate) fn read(file: &Path) -> Result<Vec<u8>, ReloadError> {
    let failed = |error| ReloadError::Read {
        file: file.to_owned(),
        error,
    };
    let opened = std::fs::File::open(file).map_err(failed)?;
    let mut bytes = Vec::new();
    // One byte over the limit tells a file that is too large from one exactly at it, and the
    // size is never trusted from metadata: the file may grow while it is read.
    opened
        .take(TOPOLOGY_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > TOPOLOGY_BYTES_MAX {
        return Err(ReloadError::TooLarge {
            file: file.to_owned(),
            bytes: bytes.len() as u64,
            limit: TOPOLOGY_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// The bytes of a topology file as a checked topology; `file` names it in diagnostics.
pub(crate) fn parse(bytes: &[u8], file: &str) -> Result<Checked, ReloadError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
        ReloadError::NotUtf8 {
            file: file.to_owned(),
            line,
            column,
        }
    })?;
    Ok(hopmq_routing::parse(text, file)?)
}

/// 1-based line and column (in characters) of byte `offset` of `bytes`, valid UTF-8 up to it.
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count();
    (line, column)
}

/// The line of `text` declaring `[managers.NAME]`, when declared in that (the usual) form.
/// The topology keeps no positions, so this is how a refusal about a manager points at it.
fn declaration_line(text: &str, manager: &ManagerName) -> Option<usize> {
    let plain = format!("[managers.{manager}]");
    let quoted = format!("[managers.\"{manager}\"]");
    text.lines()
        .position(|line| {
            let line = line.split('#').next().unwrap_or_default().trim();
            let line: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            line == plain || line == quoted
        })
        .map(|index| index + 1)
}

/// Checks a valid `topology` (read from `text`, named `file`) against what the running
/// manager cannot change.
pub(crate) fn validate(
    topology: &Topology,
    text: &str,
    file: &str,
    running: &Running,
) -> Result<(), ReloadError> {
    let me = &running.me;
    let at = || Location {
        file: file.to_owned(),
        line: declaration_line(text, me),
    };
    let Some(manager) = topology.manager(me.as_str()) else {
        return Err(ReloadError::NotDeclared {
            at: Location {
                file: file.to_owned(),
                line: None,
            },
            me: me.clone(),
        });
    };
    if manager.address != running.address {
        return Err(ReloadError::AddressChanged {
            at: at(),
            me: me.clone(),
            moved: Box::new(Moved {
                old: running.address.clone(),
                new: manager.address.clone(),
            }),
        });
    }
    if !running.links_possible {
        let neighbours: Vec<&ManagerName> = topology.neighbours(me).collect();
        if !neighbours.is_empty() {
            let mut named = neighbours
                .iter()
                .take(NAMED_NEIGHBOURS_MAX)
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if neighbours.len() > NAMED_NEIGHBOURS_MAX {
                named.push_str(&format!(
                    " and {} more",
                    neighbours.len() - NAMED_NEIGHBOURS_MAX
                ));
            }
            return Err(ReloadError::NoTls {
                at: at(),
                me: me.clone(),
                neighbours: named,
            });
        }
    }
    Ok(())
}

/// Reads, parses and validates the file: its version (empty when it could not be read) and
/// the topology or why it is refused. Blocking: reads a file and parses up to 16 MiB.
pub(crate) fn reread(file: &Path, running: &Running) -> (String, Result<Checked, ReloadError>) {
    let bytes = match read(file) {
        Ok(bytes) => bytes,
        Err(error) => return (String::new(), Err(error)),
    };
    let version = version(&bytes);
    let name = file.display().to_string();
    let result = parse(&bytes, &name).and_then(|checked| {
        // `parse` succeeded, so the bytes are UTF-8.
        let text = String::from_utf8_lossy(&bytes);
        validate(&checked.topology, &text, &name, running)?;
        Ok(checked)
    });
    (version, result)
}

/// True if a watch event on the file's folder concerns the file called `name`. Reads (our
/// own included) do not count; a write finished, a rename onto it, a removal, or a lost
/// event queue (which may have hidden any of those) does.
fn concerns(event: &notify::Event, name: &OsStr) -> bool {
    if event.need_rescan() {
        return true;
    }
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    event
        .paths
        .iter()
        .any(|path| path.file_name() == Some(name))
}

/// Watches the folder of `file`, sending `()` for each event that concerns it. The watcher
/// stops when dropped.
fn watch_folder(file: &Path, events: mpsc::Sender<()>) -> Result<RecommendedWatcher, String> {
    let name: OsString = file
        .file_name()
        .ok_or_else(|| format!("{} names no file", file.display()))?
        .to_owned();
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // A full queue already holds an event that will cause a read.
            Ok(event) if concerns(&event, &name) => {
                let _ = events.try_send(());
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "watching the topology file's folder failed"),
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&folder, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    Ok(watcher)
}

/// What started a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The watch saw the file change.
    Changed,
    /// SIGHUP.
    Hangup,
    /// A client's `qmgr reload`.
    Request(ReloadRequest),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Changed => "file changed",
            Trigger::Hangup => "SIGHUP",
            Trigger::Request(_) => "qmgr reload",
        })
    }
}

/// Events seen since the last read: when the first and the last arrived.
#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
}

impl Burst {
    /// A burst of one event, now.
    fn now() -> Self {
        let now = Instant::now();
        Self {
            first: now,
            last: now,
        }
    }

    /// `burst` with one more event, now; a new burst if there was none.
    fn extend(burst: Option<Self>) -> Self {
        match burst {
            Some(b) => Self {
                first: b.first,
                last: Instant::now(),
            },
            None => Self::now(),
        }
    }

    /// When the file is read: [`QUIET`] after the last event, at most [`BURST_MAX`] after the
    /// first.
    fn due(&self) -> Instant {
        (self.last + QUIET).min(self.first + BURST_MAX)
    }
}

/// What the reload task needs.
pub(crate) struct Reloader {
    /// The topology file, as configured.
    pub file: PathBuf,
    /// The version of the topology the manager started with.
    pub version: String,
    /// What the manager cannot change without a restart.
    pub running: Running,
    /// Where updates go.
    pub commands: mpsc::Sender<Command>,
    /// The QUIC driver, given each accepted topology before the core; `None` for a manager
    /// without TLS for links.
    pub driver: Option<Arc<Driver<crate::manager::Command>>>,
}

/// Reads the topology file again on each trigger until `shutdown` fires or the core is gone.
pub(crate) async fn run(
    reloader: Reloader,
    requests: mpsc::Receiver<ReloadRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut triggers = Triggers::start(&reloader.file, requests);
    let mut task = Task::new(reloader);
    while let Some(trigger) = triggers.next(&mut shutdown).await {
        // Whatever the trigger, this read covers the events seen so far.
        triggers.burst = None;
        match task.reload(trigger).await {
            Reloaded::Sent | Reloaded::Unchanged => {}
            Reloaded::StillChanging => triggers.burst = Some(Burst::now()),
            Reloaded::CoreStopped => return,
        }
    }
}

/// What the task waits on: `qmgr reload` requests, the folder's watch events (and the burst
/// they make), and SIGHUP.
struct Triggers {
    requests: mpsc::Receiver<ReloadRequest>,
    requests_open: bool,
    events: mpsc::Receiver<()>,
    events_open: bool,
    /// Kept for the task's life: dropping it ends the watch.
    _watcher: Option<RecommendedWatcher>,
    hangup: Option<Signal>,
    burst: Option<Burst>,
}

impl Triggers {
    /// Starts the watch and the SIGHUP handler; either may fail, leaving the other ways.
    fn start(file: &Path, requests: mpsc::Receiver<ReloadRequest>) -> Self {
        let (events_tx, events) = mpsc::channel(WATCH_EVENTS_MAX);
        let watcher = match watch_folder(file, events_tx) {
            Ok(watcher) => Some(watcher),
            Err(reason) => {
                warn!(file = %file.display(), %reason, "cannot watch the topology file; edits take effect on SIGHUP or `qmgr reload` only");
                None
            }
        };
        let hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                warn!(error = %e, "cannot handle SIGHUP; the topology is read again on edits and `qmgr reload` only");
                None
            }
        };
        Self {
            requests,
            requests_open: true,
            events,
            events_open: watcher.is_some(),
            _watcher: watcher,
            hangup,
            // One read once the watch is up: an edit made since the start-up read was not
            // seen by it.
            burst: Some(Burst::now()),
        }
    }

    /// The next trigger, or `None` once `shutdown` fires.
    async fn next(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Trigger> {
        loop {
            if *shutdown.borrow() {
                return None;
            }
            // A disabled branch's future is still built, so it needs some instant.
            let due = self
                .burst
                .map_or_else(|| Instant::now() + BURST_MAX, |b| b.due());
            let trigger = tokio::select! {
                biased;
                _ = shutdown.changed() => return None,
                request = self.requests.recv(), if self.requests_open => match request {
                    Some(request) => Trigger::Request(request),
                    None => {
                        self.requests_open = false;
                        continue;
                    }
                },
                // Before the events: a file rewritten without pause must not starve the read.
                () = tokio::time::sleep_until(due), if self.burst.is_some() => Trigger::Changed,
                event = self.events.recv(), if self.events_open => {
                    match event {
                        Some(()) => self.burst = Some(Burst::extend(self.burst)),
                        None => self.events_open = false,
                    }
                    continue;
                }
                signalled = next_signal(&mut self.hangup) => match signalled {
                    Some(()) => Trigger::Hangup,
                    None => {
                        self.hangup = None;
                        continue;
                    }
                },
            };
            return Some(trigger);
        }
    }
}

/// How one trigger's read ended.
enum Reloaded {
    /// The core was sent an update.
    Sent,
    /// A watch or SIGHUP trigger found the version last sent.
    Unchanged,
    /// The watch saw a change, but a second read disagreed: read again later.
    StillChanging,
    /// The core is gone, so the task ends.
    CoreStopped,
}

/// The reload task's own state: the reloader's settings and the version it last sent.
struct Task {
    file: PathBuf,
    file_name: String,
    running: Running,
    commands: mpsc::Sender<Command>,
    driver: Option<Arc<Driver<crate::manager::Command>>>,
    last_sent: String,
}

impl Task {
    fn new(reloader: Reloader) -> Self {
        Self {
            file_name: reloader.file.display().to_string(),
            file: reloader.file,
            running: reloader.running,
            commands: reloader.commands,
            driver: reloader.driver,
            last_sent: reloader.version,
        }
    }

    /// Reads the file for `trigger` and, unless nothing changed, tells the core.
    async fn reload(&mut self, trigger: Trigger) -> Reloaded {
        let requested_by = match trigger {
            Trigger::Request(request) => Some(request),
            Trigger::Changed | Trigger::Hangup => None,
        };
        let (version, result) = self.reread().await;
        if requested_by.is_none() && version == self.last_sent {
            debug!(file = %self.file_name, %version, %trigger, "topology file unchanged");
            return Reloaded::Unchanged;
        }
        // A writer that pauses part way through an in-place rewrite would leave a prefix of
        // the file, often valid, which would remove links: a change seen by the watch is
        // applied only once two reads [`QUIET`] apart agree.
        if matches!(trigger, Trigger::Changed) && !self.settled(&version).await {
            debug!(file = %self.file_name, "topology file still changing; reading it again later");
            return Reloaded::StillChanging;
        }
        self.last_sent = version.clone();
        let result = self.put_in_force(result).await;
        let result = self.log_outcome(result, &version, trigger);
        let update = TopologyUpdate {
            file: self.file_name.clone(),
            version,
            result,
            requested_by,
        };
        if self.commands.send(Command::Topology(update)).await.is_err() {
            return Reloaded::CoreStopped;
        }
        Reloaded::Sent
    }

    /// [`reread`] off the runtime's threads.
    async fn reread(&self) -> (String, Result<Checked, ReloadError>) {
        let job = {
            let (file, running) = (self.file.clone(), self.running.clone());
            move || reread(&file, &running)
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(outcome) => outcome,
            // Only a panic in the parser can get here; the old topology stays.
            Err(e) => (
                String::new(),
                Err(ReloadError::Read {
                    file: self.file.clone(),
                    error: std::io::Error::other(e.to_string()),
                }),
            ),
        }
    }

    /// True if the file still has `version` [`QUIET`] later.
    async fn settled(&self, version: &str) -> bool {
        tokio::time::sleep(QUIET).await;
        let again = tokio::task::spawn_blocking({
            let file = self.file.clone();
            move || read(&file).map(|bytes| crate::reload::version(&bytes))
        })
        .await;
        matches!(&again, Ok(Ok(v)) if *v == version)
    }

    /// Gives an accepted topology to the driver, which may still refuse it.
    async fn put_in_force(
        &self,
        result: Result<Checked, ReloadError>,
    ) -> Result<Topology, ReloadError> {
        let checked = result?;
        for warning in &checked.warnings {
            warn!("{warning}");
        }
        match &self.driver {
            Some(driver) => driver
                .apply(&checked.topology)
                .await
                .map(|()| checked.topology)
                .map_err(|error| ReloadError::Driver {
                    file: self.file_name.clone(),
                    error: Box::new(error),
                }),
            None => Ok(checked.topology),
        }
    }

    /// Logs what became of the read, and turns a refusal into the text the core reports.
    fn log_outcome(
        &self,
        result: Result<Topology, ReloadError>,
        version: &str,
        trigger: Trigger,
    ) -> Result<Topology, String> {
        let file_name = &self.file_name;
        match result {
            Ok(topology) => {
                info!(
                    file = %file_name,
                    %version,
                    %trigger,
                    managers = topology.managers().len(),
                    links = topology.links().len(),
                    "topology file read again"
                );
                Ok(topology)
            }
            Err(error) => {
                warn!(file = %file_name, %version, %trigger, "topology edit refused; the topology in force stays: {error}");
                Err(error.to_string())
            }
        }
    }
}

/// The next SIGHUP; never, without a handler.
async fn next_signal(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
