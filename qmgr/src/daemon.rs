//! `qmgr run`: wires settings, topology, journal, core, channel driver, topology reloads and
//! local API together, and stops them in order on SIGTERM or SIGINT (in-flight commits finish,
//! waiting clients get a clear error).
//!
//! A manager with a topology file and an address in it starts the channel driver when it has
//! links, or when TLS files are named even without links (so an edit adding links can take
//! effect without a restart); one with links and no usable TLS does not start.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use hopmq_routing::{ManagerName, Topology};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::channel::quic::{Driver, DriverConfig};
use crate::config::{Settings, SyncMode};
use crate::manager::{self, COMMANDS_MAX, Core, CoreLimits};
use crate::reload::{self, Reloader, Running};
use crate::store::{JournalConfig, StoreError, SyncPolicy};

/// The journal's folder under the data directory.
const JOURNAL_DIR: &str = "journal";
/// The file under the data directory whose lock a running manager holds.
const LOCK_FILE: &str = "qmgr.lock";

/// How long a stopping manager waits for its last replies to reach the clients.
const WRITERS_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a manager until it is told to stop.
pub fn run(settings: Settings, salvage: bool) -> anyhow::Result<()> {
    let name = settings.manager_name();
    let (topology, version) = load_topology(&settings, &name)?;
    check_listen(&settings, &topology, &name)?;
    let link_tls = load_link_tls(&settings, &topology, &name)?;
    let made = Made::note(&settings);
    let lock = prepare_data_dir(&settings)?;
    let ready = AtomicBool::new(false);
    let outcome = recover_and_serve(settings, salvage, topology, version, link_tls, &ready);
    // A start that failed leaves nothing of its own behind; the lock is still held, so no
    // other manager is using what is removed.
    if outcome.is_err() && !ready.load(Ordering::Relaxed) {
        made.undo();
    }
    drop(lock);
    outcome
}

/// Everything after the data directory is locked. By the time it returns, its runtime, the
/// journal and their threads are gone.
fn recover_and_serve(
    settings: Settings,
    salvage: bool,
    topology: Topology,
    version: String,
    link_tls: Option<crate::tls::LinkTls>,
    ready: &AtomicBool,
) -> anyhow::Result<()> {
    let journal_config = journal_config(&settings, salvage);
    let runtime = build_runtime(&settings)?;
    let started = std::time::Instant::now();
    let (journal, recovered) = manager::recover(journal_config)?;
    crate::allocator::release_free_memory();
    info!(report = ?recovered.report, elapsed_ms = started.elapsed().as_millis() as u64, "journal recovered");

    runtime.block_on(serve(
        settings, topology, version, journal, recovered, link_tls, ready,
    ))
}

/// What a start creates on disk that was not there before, so that a start that fails can
/// remove exactly that: never anything that existed already.
#[derive(Debug)]
struct Made {
    /// The outermost folder of the data directory's path that did not exist (the data
    /// directory itself, or one of its parents).
    data_root: Option<PathBuf>,
    /// In a data directory that existed: the journal folder, if it did not.
    journal: Option<PathBuf>,
    /// In a data directory that existed: the lock file, if it did not.
    lock: Option<PathBuf>,
}

impl Made {
    fn note(settings: &Settings) -> Self {
        let missing = |path: PathBuf| (!path.exists()).then_some(path);
        let data_root = settings
            .data_dir
            .ancestors()
            .take_while(|path| !path.as_os_str().is_empty() && !path.exists())
            .last()
            .map(Path::to_path_buf);
        let fresh = data_root.is_some();
        Self {
            journal: missing(settings.data_dir.join(JOURNAL_DIR)).filter(|_| !fresh),
            lock: missing(settings.data_dir.join(LOCK_FILE)).filter(|_| !fresh),
            data_root,
        }
    }

    fn undo(self) {
        let removed = |what: &Path, result: std::io::Result<()>| match result {
            Ok(()) => info!(path = %what.display(), "removed what the failed start created"),
            Err(error) => {
                warn!(path = %what.display(), %error, "cannot remove what the failed start created")
            }
        };
        if let Some(root) = &self.data_root {
            removed(root, fs::remove_dir_all(root));
        }
        if let Some(journal) = &self.journal {
            removed(journal, fs::remove_dir_all(journal));
        }
        if let Some(lock) = &self.lock {
            removed(lock, fs::remove_file(lock));
        }
    }
}

/// The topology this manager starts with and the version edits are compared with; a manager
/// without a file stands alone.
fn load_topology(settings: &Settings, name: &ManagerName) -> anyhow::Result<(Topology, String)> {
    // Read as the reload task reads it, so its version is the one edits are compared with.
    match &settings.topology {
        Some(path) => {
            let bytes = reload::read(path)?;
            let checked = reload::parse(&bytes, &path.display().to_string())?;
            for warning in &checked.warnings {
                warn!("{warning}");
            }
            if checked.topology.manager(name.as_str()).is_none() {
                bail!(
                    "manager `{name}` is not declared in topology {}",
                    path.display()
                );
            }
            Ok((checked.topology, reload::version(&bytes)))
        }
        None => Ok((Topology::standalone(name.clone()), String::new())),
    }
}

/// Refuses `listen` for a manager the topology gives no address: neighbours would have
/// nowhere to dial, and the endpoint bound at `listen` would never be reached.
fn check_listen(
    settings: &Settings,
    topology: &Topology,
    name: &ManagerName,
) -> anyhow::Result<()> {
    let has_address = topology
        .manager(name.as_str())
        .is_some_and(|m| m.address.is_some());
    if let Some(listen) = settings.listen {
        if !has_address {
            bail!(
                "`listen` ({listen}) is set, but manager `{name}` has no address in its topology \
                 for neighbours to dial"
            );
        }
    }
    Ok(())
}

/// The TLS material for links, if this manager has or may get links.
fn load_link_tls(
    settings: &Settings,
    topology: &Topology,
    name: &ManagerName,
) -> anyhow::Result<Option<crate::tls::LinkTls>> {
    // No plaintext mode: links need TLS, checked before anything is touched on disk.
    let has_address = topology
        .manager(name.as_str())
        .is_some_and(|m| m.address.is_some());
    let link_tls = if topology.neighbours(name).next().is_some() {
        Some(crate::tls::load_for(&settings.tls, name).with_context(|| {
            format!("manager `{name}` has links in its topology, so it needs TLS")
        })?)
    } else if has_address && settings.topology.is_some() && crate::tls::configured(&settings.tls) {
        // Named files that do not work would only fail later, at the edit adding links.
        Some(crate::tls::load_for(&settings.tls, name).with_context(|| {
            format!("manager `{name}` has no links yet, but the TLS files it names are not usable")
        })?)
    } else {
        None
    };
    if link_tls.is_some() {
        info!("TLS for links ready (TLS 1.3, mutual authentication)");
    }
    Ok(link_tls)
}

/// Creates and locks the data directory; the returned file holds the lock.
fn prepare_data_dir(settings: &Settings) -> anyhow::Result<fs::File> {
    let data_dir = &settings.data_dir;
    crate::store::create_dir_durably(data_dir).map_err(|error| match error {
        // Not "journal I/O on ...": the store's words for its own files, and the path again.
        StoreError::Io { path, error } if path == *data_dir => {
            anyhow::anyhow!("cannot create data directory {}: {error}", path.display())
        }
        StoreError::Io { path, error } => anyhow::anyhow!(
            "cannot create data directory {}: {}: {error}",
            data_dir.display(),
            path.display()
        ),
        other => anyhow::anyhow!(
            "cannot create data directory {}: {other}",
            data_dir.display()
        ),
    })?;
    let lock = lock_data_dir(&settings.data_dir)?;
    if settings.sync == SyncMode::Never {
        warn!(
            "sync = never: acknowledged messages are NOT on stable storage; a machine crash loses them"
        );
    }
    Ok(lock)
}

fn journal_config(settings: &Settings, salvage: bool) -> JournalConfig {
    JournalConfig {
        dir: settings.data_dir.join(JOURNAL_DIR),
        sync: match settings.sync {
            SyncMode::Always => SyncPolicy::Always,
            SyncMode::Never => SyncPolicy::Never,
        },
        segment_bytes: settings.segment_bytes,
        salvage,
        disk_bytes_max: settings.disk_bytes_max,
    }
}

/// The async runtime, with SIGHUP already caught.
fn build_runtime(settings: &Settings) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = settings.runtime_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder
        .enable_all()
        .thread_name("qmgr")
        .build()
        .context("cannot start the async runtime")?;
    // SIGHUP means "read the topology again", never "stop": its handler is installed before
    // the journal is replayed (which can take a while), and stays for the process's life.
    {
        let _context = runtime.enter();
        drop(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot handle SIGHUP")?,
        );
    }
    Ok(runtime)
}

async fn serve(
    settings: Settings,
    topology: Topology,
    version: String,
    journal: crate::store::Journal,
    recovered: manager::Recovered,
    link_tls: Option<crate::tls::LinkTls>,
    ready: &AtomicBool,
) -> anyhow::Result<()> {
    let socket = settings.socket_path();
    let name = settings.manager_name().to_string();
    // Before the socket is bound: a client or a test that sees the manager listening may stop
    // it at once, and a SIGTERM before these exist would kill it without a clean stop.
    let stop = StopSignals::install()?;
    let listener = bind(&socket)?;
    // Removed when serving ends, however it ends (a failed start included).
    let socket_file = SocketFile(socket.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (commands_tx, commands_rx) = mpsc::channel(COMMANDS_MAX);
    let me = settings.manager_name();
    let address = topology
        .manager(me.as_str())
        .and_then(|m| m.address.clone());
    let started = start_core(
        &settings,
        topology.clone(),
        &version,
        &journal,
        recovered,
        commands_rx,
        &shutdown,
    )?;
    serve_http(&settings, &commands_tx, &journal, &shutdown).await?;
    let driver = match link_tls {
        Some(tls) => {
            let config = DriverConfig {
                me: me.clone(),
                topology,
                listen: settings.listen,
                tls,
                congestion: settings.link_congestion,
                early_copies: settings.link_early_copies,
                events: commands_tx.clone(),
            };
            Some(Arc::new(Driver::start(config, shutdown.clone()).await?))
        }
        None => None,
    };
    if let (Some(file), Some(requests)) = (&settings.topology, started.reload_requests) {
        let reloader = Reloader {
            file: file.clone(),
            version,
            running: Running {
                me,
                address,
                links_possible: driver.is_some(),
            },
            commands: commands_tx.clone(),
            driver: driver.clone(),
        };
        tokio::spawn(reload::run(reloader, requests, shutdown.clone()));
    }
    let (writers, writers_done) = mpsc::channel::<()>(1);
    tokio::spawn(crate::api_server::serve(
        listener,
        commands_tx,
        crate::api_server::Limits {
            manager: name.clone(),
            connections_max: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
        },
        writers,
        shutdown.clone(),
    ));
    info!(manager = %name, socket = %socket.display(), "ready");
    ready.store(true, Ordering::Relaxed);
    // A service manager waiting for readiness (systemd's Type=notify) learns it only now. A
    // failed notification does not stop a manager that serves: systemd then times the start
    // out and says why, and the warning names the socket.
    match crate::readiness::notify(crate::readiness::READY) {
        Ok(true) => info!("told the service manager it is ready"),
        Ok(false) => {}
        Err(error) => warn!(%error, "cannot report readiness"),
    }

    stop.wait().await;
    let stopping = Stopping {
        shutdown: shutdown_tx,
        driver,
        core_task: started.task,
        journal,
        writers_done,
        socket_file,
    };
    stopping.stop().await
}

/// The core's task, and where it sends reload requests when the manager has a file to read.
struct StartedCore {
    task: tokio::task::JoinHandle<Core>,
    reload_requests: Option<mpsc::Receiver<manager::ReloadRequest>>,
}

/// Builds the core from what the journal recovered and starts its task.
fn start_core(
    settings: &Settings,
    topology: Topology,
    version: &str,
    journal: &crate::store::Journal,
    recovered: manager::Recovered,
    commands_rx: mpsc::Receiver<manager::Command>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<StartedCore> {
    let (storage, commits_rx) = manager::JournalStorage::new(journal.clone());
    let storage = storage.with_drained_file(&settings.data_dir);
    let clock = manager::Clock::start();
    let mut core = Core::new(
        settings.manager_name(),
        topology,
        core_limits(settings),
        recovered,
        Box::new(storage),
        clock.now(),
        manager::clock::entropy(),
    );
    let drained = manager::storage::read_drained(&settings.data_dir).with_context(|| {
        format!(
            "cannot read the drained links in {}",
            settings.data_dir.display()
        )
    })?;
    core.set_routing(
        settings.topology.as_ref().map(|f| f.display().to_string()),
        version.to_owned(),
        std::time::Duration::from_millis(settings.link_dead_interval_ms),
        drained,
        clock.now(),
    );
    core.set_custody_timeout(settings.custody_timeout());
    // Standalone managers (no file) have nothing to read again.
    let reload_requests = settings.topology.as_ref().map(|_| {
        let (requests_tx, requests) = mpsc::channel(reload::REQUESTS_MAX);
        core.set_reloader(requests_tx);
        requests
    });
    let task = tokio::spawn(manager::run(
        core,
        commands_rx,
        commits_rx,
        shutdown.clone(),
        clock,
        journal.clone(),
    ));
    Ok(StartedCore {
        task,
        reload_requests,
    })
}

fn core_limits(settings: &Settings) -> CoreLimits {
    CoreLimits {
        max_message_bytes: settings.message_bytes_limit(),
        max_depth: settings.max_depth,
        max_deliveries: settings.max_deliveries,
        auto_create_queues: settings.auto_create_queues,
        cache_bytes: settings.cache_bytes,
        sync: settings.sync,
        segment_bytes: settings.segment_bytes,
        max_hops: settings.max_hops,
    }
}

/// Starts the metrics endpoint and the web console, those that are configured.
async fn serve_http(
    settings: &Settings,
    commands_tx: &mpsc::Sender<manager::Command>,
    journal: &crate::store::Journal,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    serve_metrics(settings, commands_tx, journal, shutdown).await?;
    serve_console(settings, commands_tx, journal, shutdown).await
}

/// Starts the metrics endpoint, if one is configured.
async fn serve_metrics(
    settings: &Settings,
    commands_tx: &mpsc::Sender<manager::Command>,
    journal: &crate::store::Journal,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Some(address) = settings.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        info!(%address, "serving metrics");
        tokio::spawn(crate::metrics::serve(
            listener,
            commands_tx.clone(),
            journal.clone(),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Starts the web console, if an address is configured.
async fn serve_console(
    settings: &Settings,
    commands_tx: &mpsc::Sender<manager::Command>,
    journal: &crate::store::Journal,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(address) = settings.http_listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for the web console on {address}"))?;
    if settings.http_token.is_none() && !address.ip().is_loopback() {
        warn!(%address, "the web console is open to the network without a token (http_token)");
    }
    info!(%address, token = settings.http_token.is_some(), "serving the web console");
    let console = crate::console::Console {
        commands: commands_tx.clone(),
        journal: journal.clone(),
        token: settings.http_token.clone(),
        settings: serde_json::to_value(settings).unwrap_or_default(),
    };
    tokio::spawn(crate::console::serve(listener, console, shutdown.clone()));
    Ok(())
}

/// What a stopping manager winds down, in order: channels, then the core and its in-flight
/// commits, then the clients' last replies.
struct Stopping {
    shutdown: watch::Sender<bool>,
    driver: Option<Arc<Driver<manager::Command>>>,
    core_task: tokio::task::JoinHandle<Core>,
    journal: crate::store::Journal,
    writers_done: mpsc::Receiver<()>,
    socket_file: SocketFile,
}

impl Stopping {
    async fn stop(mut self) -> anyhow::Result<()> {
        info!("stopping: finishing in-flight writes");
        if let Err(error) = crate::readiness::notify(crate::readiness::STOPPING) {
            warn!(%error, "cannot report the stop");
        }
        let _ = self.shutdown.send(true);
        if let Some(driver) = &self.driver {
            driver.close().await;
        }
        let core = self.core_task.await.context("the manager core failed")?;
        self.journal.close();
        // Dropping the core closes every connection's frame channel; each writer then sends what
        // is left (the last replies, the `ShuttingDown` errors) and ends.
        drop(core);
        if tokio::time::timeout(WRITERS_DRAIN_TIMEOUT, self.writers_done.recv())
            .await
            .is_err()
        {
            warn!("some clients did not take their last replies within {WRITERS_DRAIN_TIMEOUT:?}");
        }
        drop(self.socket_file);
        info!("stopped");
        Ok(())
    }
}

/// The API socket this manager bound: its file goes when the manager stops, or fails to
/// start, so no client finds a socket nobody answers on.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// SIGTERM and SIGINT, the two ways to stop a manager, caught from when they are installed.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Binds the API socket, owner-only. A socket file left by a dead manager is replaced; one a
/// live manager answers on is not.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!("another manager is listening on {}", socket.display());
        }
        fs::remove_file(socket)
            .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
    }
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", socket.display()))?;
    Ok(listener)
}

/// Holds an exclusive lock on the data directory for the manager's life, so two managers never
/// share a journal.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<fs::File> {
    let path: PathBuf = data_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A manager killed moments ago holds its lock until the kernel has torn it down, a little
    // after it stopped running (its command line is gone before its files are closed): a
    // restart right after `kill -9` waits that long rather than fail. A live manager keeps
    // the lock, and this one is refused once the wait is over.
    let deadline = std::time::Instant::now() + DATA_DIR_LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "data directory {} is in use by another manager",
                        data_dir.display()
                    )
                });
            }
        }
    }
}

/// How long a manager waits for the lock of its data directory before it refuses to start.
const DATA_DIR_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
