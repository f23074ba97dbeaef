//! A network of real managers on loopback, for the benchmarks that measure forwarding.
//!
//! Given managers, links and queues, [`Cluster::start`] writes a topology on free UDP ports of
//! 127.0.0.1 into one temporary folder, makes a development CA and one certificate per
//! manager, and starts every manager (this same binary, `qmgr run`) with its own data folder,
//! API socket and log (`<folder>/<name>.log`), configured only through `QMGR_*` variables;
//! it returns once every manager answers on its socket. [`Cluster::wait_links_up`] then waits
//! for every declared link's channel. A manager can be killed with SIGKILL and started again
//! on the same data folder, socket and environment, as a crashed host would be. Every process
//! still running is killed when the cluster is dropped, and the folder removed unless kept.
//!
//! Timing is the caller's: nothing here measures.

use qmgr::outln;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopmq::Client;
use hopmq::protocol::Status;

use super::verify::Origin;
use qmgr::config::SyncMode;

/// How long managers get to answer on their sockets, and then to bring their channels up.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(30);
/// Lines of each manager's log shown when something goes wrong.
const LOG_TAIL_LINES: usize = 20;

/// What to run.
pub(super) struct Spec {
    /// The start of the temporary folder's name.
    pub(super) folder_prefix: &'static str,
    /// The managers, started in this order (and listed in this order in the topology).
    pub(super) managers: Vec<String>,
    /// The links: both ends and the cost.
    pub(super) links: Vec<(String, String, u32)>,
    /// The queues: name and home manager.
    pub(super) queues: Vec<(String, String)>,
    /// Every manager's sync policy.
    pub(super) sync: SyncMode,
    /// More `QMGR_*` settings, the same for every manager.
    pub(super) env: Vec<(&'static str, String)>,
    /// Managers whose topology address is given, because something else listens there (a
    /// relay in front of them): each binds a free port of its own instead (`QMGR_LISTEN`).
    pub(super) advertised: BTreeMap<String, SocketAddr>,
    /// Whether every manager serves the web console, each on a free port of its own.
    pub(super) console: bool,
}

/// One manager of the cluster.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) socket: PathBuf,
    pub(super) log: PathBuf,
    /// Where its channel endpoint binds, when not at its topology address.
    pub(super) listen: Option<SocketAddr>,
    /// The port of 127.0.0.1 its web console is served on, if it serves one.
    pub(super) http: Option<u16>,
    /// `None` while killed.
    child: Option<Child>,
    /// The links of the topology it is an end of.
    links: usize,
}

/// The started managers and their folder.
pub(super) struct Cluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// `None` once kept.
    temp: Option<tempfile::TempDir>,
    exe: PathBuf,
    topology: PathBuf,
    certs: PathBuf,
    sync: SyncMode,
    env: Vec<(&'static str, String)>,
}

/// Runtime threads for each of `managers` managers sharing this machine's cores (as
/// `scripts/cluster` gives them): its share, and at least one.
fn runtime_threads(managers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (cores / managers.max(1)).max(1)
}

/// How long the managers get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

impl Drop for Cluster {
    /// Stops every manager as an operator would (SIGTERM: commits in flight finish, a profiler
    /// wrapping it writes its results), and kills those still running after [`STOP_GRACE`].
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                // The `kill` command, not a libc binding; failing, the SIGKILL below still comes.
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `temp`, if still held, removes the folder after this.
    }
}

impl Cluster {
    /// Writes the topology and certificates and starts every manager, waiting until each
    /// answers on its socket.
    pub(super) fn start(spec: Spec) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix(spec.folder_prefix)
            .tempdir()
            .context("cannot make the run folder")?;
        let dir = temp.path().to_path_buf();

        let topology = dir.join("topology.toml");
        let (text, listens) = topology_text(&spec)?;
        std::fs::write(&topology, text)
            .with_context(|| format!("cannot write {}", topology.display()))?;
        let checked = hopmq_routing::load(&topology)
            .with_context(|| format!("the generated {} is refused", topology.display()))?;
        let certs = certificates(&dir, &checked.topology)?;

        let nodes = spec
            .managers
            .iter()
            .map(|name| {
                Ok(Node {
                    name: name.clone(),
                    socket: dir.join(format!("{name}.sock")),
                    log: dir.join(format!("{name}.log")),
                    listen: listens.get(name).copied(),
                    http: spec.console.then(super::viewer::free_port).transpose()?,
                    child: None,
                    links: spec
                        .links
                        .iter()
                        .filter(|(a, b, _)| a == name || b == name)
                        .count(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut cluster = Self {
            nodes,
            dir,
            temp: Some(temp),
            exe: std::env::current_exe().context("cannot find this program's path")?,
            topology,
            certs,
            sync: spec.sync,
            env: spec.env,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i, false)?;
        }
        let deadline = Instant::now() + START_DEADLINE;
        for i in 0..cluster.nodes.len() {
            cluster.wait_answering(i, deadline)?;
        }
        Ok(cluster)
    }

    /// Keeps the folder after the run.
    pub(super) fn keep(&mut self) {
        if let Some(temp) = self.temp.take() {
            self.dir = temp.keep();
        }
    }

    /// The run folder.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The managers, in the order of the spec.
    pub(super) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every manager's journal commits so far, in the spec's order (`clients` one per
    /// manager, in that order).
    pub(super) async fn commits(&self, clients: &[Client]) -> anyhow::Result<Vec<u64>> {
        let mut commits = Vec::with_capacity(clients.len());
        for (node, client) in self.nodes.iter().zip(clients) {
            let status = client
                .status()
                .await
                .with_context(|| format!("status of manager {}", node.name))?;
            commits.push(status.store.commits);
        }
        Ok(commits)
    }

    /// Each manager's name and journal commits between `before` and `after` (from
    /// [`Cluster::commits`]), per one of `count`.
    pub(super) fn commits_per(
        &self,
        before: &[u64],
        after: &[u64],
        count: u64,
    ) -> Vec<(String, f64)> {
        self.nodes
            .iter()
            .zip(before.iter().zip(after))
            .map(|(node, (old, new))| {
                let per = new.saturating_sub(*old) as f64 / count.max(1) as f64;
                (node.name.clone(), per)
            })
            .collect()
    }

    /// The manager named `name`.
    pub(super) fn node(&self, name: &str) -> anyhow::Result<&Node> {
        Ok(&self.nodes[self.index(name)?])
    }

    /// Kills the manager named `name` with SIGKILL (no shutdown of any kind, as a crash or a
    /// power cut would) and reaps it.
    pub(super) fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        let Some(mut child) = self.nodes[i].child.take() else {
            bail!("manager {name} is not running");
        };
        child
            .kill()
            .with_context(|| format!("cannot kill manager {name}"))?;
        child
            .wait()
            .with_context(|| format!("cannot wait for manager {name}"))?;
        Ok(())
    }

    /// Starts the killed manager named `name` again, on the same data folder, socket and
    /// settings (its log goes on after a marker line), and waits until it answers on its
    /// socket.
    pub(super) fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if self.nodes[i].child.is_some() {
            bail!("manager {name} is still running");
        }
        self.spawn(i, true)?;
        self.wait_answering(i, Instant::now() + START_DEADLINE)
    }

    /// The first running manager found to have exited, with how.
    pub(super) fn exited(&mut self) -> Option<String> {
        self.nodes.iter_mut().find_map(|node| {
            let child = node.child.as_mut()?;
            match child.try_wait() {
                Ok(Some(status)) => Some(format!("{} exited ({status})", node.name)),
                Ok(None) => None,
                Err(error) => Some(format!("{}: cannot wait for it: {error}", node.name)),
            }
        })
    }

    /// The last lines of every manager's log, for an error message.
    pub(super) fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(out, "--- {} ({}):", node.name, node.log.display());
            match std::fs::read_to_string(&node.log) {
                Ok(text) => {
                    let lines: Vec<&str> = text.lines().collect();
                    for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                        let _ = writeln!(out, "{line}");
                    }
                }
                Err(error) => {
                    let _ = writeln!(out, "(cannot read it: {error})");
                }
            }
        }
        out
    }

    /// One client per manager, in the order of [`Cluster::nodes`], once every declared link
    /// is up and every manager runs the spec's sync policy: where every bench starts.
    pub(super) async fn ready_clients(&mut self) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(self.nodes().len());
        for node in self.nodes() {
            clients.push(
                Client::connect_to(&node.socket)
                    .await
                    .with_context(|| format!("cannot connect to manager {}", node.name))?,
            );
        }
        self.wait_links_up(&clients).await?;
        self.check_sync(&clients).await?;
        Ok(clients)
    }

    /// Waits until every manager's declared links are all there and up; `clients` are
    /// connected to the managers in the order of [`Cluster::nodes`].
    pub(super) async fn wait_links_up(&mut self, clients: &[Client]) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let mut waiting = Vec::new();
            for (client, node) in clients.iter().zip(&self.nodes) {
                let status = client
                    .status()
                    .await
                    .with_context(|| format!("status of manager {}", node.name))?;
                let expected = node.links;
                let linked: Vec<_> = status.links.iter().filter(|l| l.linked).collect();
                if linked.len() < expected {
                    waiting.push(format!(
                        "{}: {} of {expected} links known",
                        node.name,
                        linked.len()
                    ));
                }
                for link in linked.iter().filter(|l| l.state != "up") {
                    waiting.push(format!(
                        "{}->{}: {}{}",
                        node.name,
                        link.neighbour,
                        link.state,
                        link.last_error
                            .as_ref()
                            .map_or(String::new(), |e| format!(" ({e})"))
                    ));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if let Some(exited) = self.exited() {
                bail!("{exited} while the channels came up");
            }
            if Instant::now() > deadline {
                bail!(
                    "channels not up within {} s: {}",
                    START_DEADLINE.as_secs(),
                    waiting.join(", "),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails unless every manager's status reports the sync policy it was started with;
    /// `clients` as for [`Cluster::wait_links_up`].
    pub(super) async fn check_sync(&self, clients: &[Client]) -> anyhow::Result<()> {
        for (client, node) in clients.iter().zip(&self.nodes) {
            let status = client
                .status()
                .await
                .with_context(|| format!("status of manager {}", node.name))?;
            super::verify::check_sync(&node.name, &status, Origin::Started(self.sync), true)?;
        }
        Ok(())
    }

    /// Each manager's links, one line each, for a stall report; `clients` as for
    /// [`Cluster::wait_links_up`].
    pub(super) async fn link_summary(&self, clients: &[Client]) -> String {
        let mut out = String::new();
        for (client, node) in clients.iter().zip(&self.nodes) {
            if node.child.is_none() {
                let _ = writeln!(out, "{}: killed", node.name);
                continue;
            }
            let status = tokio::time::timeout(Duration::from_secs(5), client.status()).await;
            let _ = match status {
                Ok(Ok(status)) => writeln!(out, "{}: {}", node.name, describe_links(&status)),
                Ok(Err(error)) => writeln!(out, "{}: no status: {error}", node.name),
                Err(_) => writeln!(out, "{}: no status within 5 s", node.name),
            };
        }
        out
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .with_context(|| format!("no manager {name} in the cluster"))
    }

    /// Starts manager `i`; a restart appends to its log.
    fn spawn(&mut self, i: usize, restart: bool) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let name = &node.name;
        let log_file = if restart {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&node.log)
                .with_context(|| format!("cannot open {}", node.log.display()))?;
            writeln!(file, "--- restarted after SIGKILL ---")
                .with_context(|| format!("cannot write to {}", node.log.display()))?;
            file
        } else {
            std::fs::File::create(&node.log)
                .with_context(|| format!("cannot create {}", node.log.display()))?
        };
        let mut command = std::process::Command::new(&self.exe);
        command
            .arg("run")
            // No stray `qmgr.toml` of the caller's folder, and no settings file from the
            // environment: everything comes from the variables below.
            .current_dir(&self.dir)
            .env_remove("QMGR_CONFIG")
            .env("QMGR_NAME", name)
            .env("QMGR_TOPOLOGY", &self.topology)
            .env("QMGR_DATA_DIR", self.dir.join(name))
            .env("QMGR_API_SOCKET", &node.socket)
            .env("QMGR_TLS__CA", self.certs.join(qmgr::certs::CA_CERT_FILE))
            .env("QMGR_TLS__CERT", self.certs.join(format!("{name}.pem")))
            .env("QMGR_TLS__KEY", self.certs.join(format!("{name}.key")))
            .env("QMGR_SYNC", self.sync.as_str())
            .env(
                "QMGR_RUNTIME_THREADS",
                runtime_threads(self.nodes.len()).to_string(),
            )
            .env("NO_COLOR", "1");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(listen) = node.listen {
            command.env("QMGR_LISTEN", listen.to_string());
        }
        if let Some(port) = node.http {
            command.env("QMGR_HTTP_LISTEN", format!("127.0.0.1:{port}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start manager {name}"))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits until manager `i` answers on its socket (a killed manager's socket file stays
    /// behind, but refuses connections until its successor binds it again).
    fn wait_answering(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        while std::os::unix::net::UnixStream::connect(&self.nodes[i].socket).is_err() {
            if let Some(exited) = self.exited() {
                bail!("{exited} while starting\n{}", self.log_tails());
            }
            if Instant::now() > deadline {
                bail!(
                    "manager {} did not answer on its socket within {} s\n{}",
                    self.nodes[i].name,
                    START_DEADLINE.as_secs(),
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The topology of `spec`, on free UDP ports of 127.0.0.1 (but for the managers whose address
/// the spec gives), and where those managers bind instead.
fn topology_text(spec: &Spec) -> anyhow::Result<(String, BTreeMap<String, SocketAddr>)> {
    // All sockets are held until every port is read, so that the ports differ.
    let sockets = spec
        .managers
        .iter()
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find a free UDP port")?;
    let mut text = String::new();
    let mut listens = BTreeMap::new();
    for (name, socket) in spec.managers.iter().zip(&sockets) {
        let free = socket.local_addr()?;
        let address = match spec.advertised.get(name) {
            Some(advertised) => {
                listens.insert(name.clone(), free);
                *advertised
            }
            None => free,
        };
        writeln!(text, "[managers.{name}]\naddress = \"{address}\"\n")?;
    }
    for (a, b, cost) in &spec.links {
        writeln!(
            text,
            "[[links]]\nbetween = [\"{a}\", \"{b}\"]\ncost = {cost}\n"
        )?;
    }
    for (queue, home) in &spec.queues {
        writeln!(text, "[queues.{queue}]\nhome = \"{home}\"")?;
    }
    Ok((text, listens))
}

/// A development CA and a certificate for every manager of `topology`, in `dir/certs`.
pub(super) fn certificates(
    dir: &Path,
    topology: &hopmq_routing::Topology,
) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    qmgr::certs::init(topology, &certs, false, time::OffsetDateTime::now_utc())
        .with_context(|| format!("cannot make certificates in {}", certs.display()))?;
    Ok(certs)
}

/// Runs `bench` on `cluster` in a runtime of its own until it ends, or until SIGINT or
/// SIGTERM; then stops the managers, and with `keep` says where the run folder stays.
pub(super) fn run_on<T>(
    mut cluster: Cluster,
    keep: bool,
    bench: impl AsyncFnOnce(&mut Cluster) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if keep {
        cluster.keep();
    }
    // One worker, like a single-threaded application: the clients' tasks then hand work to
    // each other without waking a second thread (at 3 hops, 2.9 µs of CPU per message instead
    // of 3.4–3.5, and 3.7 context switches per paced message instead of 5.7; BENCHMARKS.md).
    // Multi-threaded all the same, so that a bench may block in place while it restarts a
    // manager.
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(until_interrupted(bench(&mut cluster))));
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    if keep {
        outln!("run folder: {}", dir.display())?;
    }
    result
}

async fn until_interrupted<T>(
    bench: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        result = bench => result,
        _ = terminate.recv() => anyhow::bail!("interrupted (SIGTERM); stopping the managers"),
        _ = interrupt.recv() => anyhow::bail!("interrupted (SIGINT); stopping the managers"),
    }
}

pub(super) fn describe_links(status: &Status) -> String {
    let queued: u64 = status.queues.iter().map(|q| q.depth).sum();
    let links: Vec<String> = status
        .links
        .iter()
        .map(|l| {
            format!(
                "->{} {} (depth {}, in flight {}, sent {}, acked {}, received {}, connects {}{})",
                l.neighbour,
                l.state,
                l.transmission_depth,
                l.in_flight,
                l.messages_sent,
                l.messages_acked,
                l.messages_received,
                l.connects,
                l.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", last error: {e}"))
            )
        })
        .collect();
    format!("local queues hold {queued}; links {}", links.join(", "))
}

/// User and system time from a `stat(5)` file (a process's or a thread's); `None` where it
/// cannot be read.
pub(super) fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after its end.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5), the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every architecture it runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU a process has used (all its threads) and its context switches, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuUse {
    pub(super) cpu: Duration,
    pub(super) switches: u64,
}

impl CpuUse {
    /// Reads `/proc/<pid>/stat` and every thread's `status`; `None` where there is no `/proc`
    /// or the process is gone.
    pub(super) fn of(pid: u32) -> Option<Self> {
        let cpu = cpu_time(&format!("/proc/{pid}/stat"))?;
        // Context switches are counted per thread.
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue; // a thread that ended meanwhile
            };
            switches += status
                .lines()
                .filter(|line| line.contains("ctxt_switches"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        Some(Self { cpu, switches })
    }

    pub(super) fn since(self, before: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(before.cpu),
            switches: self.switches.saturating_sub(before.switches),
        }
    }
}

impl Cluster {
    /// Every running manager's CPU use so far, by name.
    pub(super) fn cpu_use(&self) -> Vec<(String, Option<CpuUse>)> {
        self.nodes
            .iter()
            .map(|node| {
                (
                    node.name.clone(),
                    node.child.as_ref().and_then(|child| CpuUse::of(child.id())),
                )
            })
            .collect()
    }
}

/// One line: CPU microseconds and context switches per message of each process, and in all.
pub(super) fn describe_cpu(
    before: &[(String, Option<CpuUse>)],
    after: &[(String, Option<CpuUse>)],
    client: Option<CpuUse>,
    messages: u64,
) -> String {
    let per = |usage: CpuUse| {
        let messages = messages.max(1) as f64;
        (
            usage.cpu.as_secs_f64() * 1e6 / messages,
            usage.switches as f64 / messages,
        )
    };
    let managers = before
        .iter()
        .zip(after)
        .filter_map(|((name, before), (_, after))| {
            Some((name.as_str(), after.as_ref()?.since((*before)?)))
        });
    let mut parts = Vec::new();
    let mut total = CpuUse::default();
    for (name, usage) in managers.chain(client.map(|usage| ("bench", usage))) {
        total.cpu += usage.cpu;
        total.switches += usage.switches;
        let (micros, switches) = per(usage);
        parts.push(format!("{name} {micros:.1} µs ({switches:.2} cs)"));
    }
    let (micros, switches) = per(total);
    format!(
        "cpu per message: {}; all {micros:.1} µs ({switches:.2} context switches)",
        parts.join(", ")
    )
}
