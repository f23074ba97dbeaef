//! Helpers shared by the black-box tests: run the real `qmgr` binary as a user would.
//!
//! [`Manager`] runs one `qmgr run` daemon in its own temporary folder (data directory, API
//! socket and a log of its stderr), so tests run in parallel. Everything that waits polls a
//! condition against a generous deadline: the tests must hold on a loaded 2-core machine.
//!
//! A manager's data directory lives on a [`disk::Disk`] (a crashfs) unless the test gives it
//! one, so that [`Manager::kill9`] is a power cut: what the manager had not synced is gone.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

pub mod browser;
pub mod disk;
pub mod http;
pub mod network;

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use disk::Disk;

/// How long a manager may take to start listening, or to stop after SIGTERM.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a condition that should hold "soon" may take on a loaded machine.
pub const SOON: Duration = Duration::from_secs(30);

/// The `qmgr` binary cargo built for this test run.
pub fn qmgr_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qmgr"))
}

/// The top of the repository, where `topology.toml` lives.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The stdout lines parsed as JSON objects (`--json` output).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", self.stderr))
            })
            .collect()
    }
}

/// Runs `qmgr ARGS...` from the repository's top folder and waits for it.
pub fn qmgr(args: &[&str]) -> Run {
    Command::new(qmgr_path())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the qmgr binary runs")
        .into()
}

/// A loopback TCP port nothing listens on right now.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// One scrape of a manager's metrics endpoint on `port`, the whole HTTP response.
pub fn scrape(port: u16) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Polls `condition` until it holds; panics naming `what` after `deadline`.
#[track_caller]
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "gave up after {deadline:?} waiting until {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Waits for `child` to exit; panics naming `what` after `deadline`.
#[track_caller]
pub fn wait_exit(child: &mut Child, what: &str, deadline: Duration) -> ExitStatus {
    let mut status = None;
    wait_until(&format!("{what} exits"), deadline, || {
        status = child.try_wait().expect("waiting for a child works");
        status.is_some()
    });
    status.expect("set when the wait ended")
}

/// Sends SIGTERM to a process (no libc: the `kill` command).
pub fn send_sigterm(pid: u32) {
    send_signal(pid, "TERM");
}

/// Sends `SIG{signal}` to a process with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Milliseconds since the Unix epoch, as the managers stamp a message's trace.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis() as u64
}

/// How to start a [`Manager`]: environment variables and flags on top of the defaults.
#[derive(Debug, Default)]
pub struct ManagerBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    plain_disk: bool,
}

impl ManagerBuilder {
    /// Sets an environment variable of the daemon (`QMGR_*` settings).
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Adds a flag of `qmgr run`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Keeps the data in `dir` instead of the manager's temporary folder (a plain disk:
    /// `kill9` is then only a kill).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Keeps the data on the machine's disk rather than a crashfs, for a test that never
    /// kills and moves much data without syncs (a crashfs holds what it would undo).
    pub fn plain_disk(mut self) -> Self {
        self.plain_disk = true;
        self
    }

    /// Starts the daemon and waits until its socket accepts connections.
    #[track_caller]
    pub fn start(self) -> Manager {
        let home = tempfile::tempdir().expect("a temporary folder");
        let (disk, plain_disk_why) = match (self.data_dir.is_some(), self.plain_disk) {
            (true, _) => (None, "the test chose the data directory".to_owned()),
            (false, true) => (None, "the test asked for a plain disk".to_owned()),
            (false, false) => match Disk::mount(&home.path().join("disk")) {
                Ok(disk) => (Some(disk), String::new()),
                Err(why) => (None, format!("crashfs cannot be mounted here: {why}")),
            },
        };
        let data_dir = match (self.data_dir, &disk) {
            (Some(dir), _) => dir,
            (None, Some(disk)) => disk.path("data"),
            (None, None) => home.path().join("data"),
        };
        let mut manager = Manager {
            disk,
            plain_disk_why,
            socket: home.path().join("qmgr.sock"),
            log: home.path().join("qmgr.log"),
            data_dir,
            home,
            env: self.env,
            args: self.args,
            child: None,
            starts: 0,
        };
        manager.spawn(&[]);
        manager
    }
}

/// One running `qmgr run` daemon, killed when dropped; its log is printed if the test failed.
#[derive(Debug)]
pub struct Manager {
    // Dropped before `home`, which holds its mount point.
    disk: Option<Disk>,
    /// Why `disk` is `None`.
    plain_disk_why: String,
    home: tempfile::TempDir,
    data_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Manager {
    /// A manager with default settings.
    #[track_caller]
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A manager with settings of the test's choosing.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Its API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A folder the test may use for its own files; removed with the manager.
    pub fn scratch(&self) -> &Path {
        self.home.path()
    }

    /// The process id of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the manager is running").id()
    }

    /// Everything the daemon wrote to stderr, over all its starts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `qmgr run` with this manager's settings plus `extra` flags, logging to its log file.
    fn run_command(&mut self, extra: &[&str]) -> Command {
        self.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file opens");
        writeln!(log, "===== qmgr run {extra:?}, start {} =====", self.starts)
            .expect("the log is writable");
        let mut command = Command::new(qmgr_path());
        command
            .arg("run")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    #[track_caller]
    fn spawn(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "the manager is already running");
        let child = self.run_command(extra).spawn().expect("qmgr run starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "qmgr run exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "qmgr run did not listen on {} within {START_DEADLINE:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("waiting works").is_none())
    }

    /// SIGKILL, then a power cut: the daemon stops at once, mid-write if it was writing,
    /// and every write it had not synced is forgotten (on a plain disk, only the kill: says so
    /// loudly).
    pub fn kill9(&mut self) {
        self.stop_now();
        match &self.disk {
            Some(disk) => disk.power_cut(),
            None => eprintln!(
                "kill -9 without a power cut ({}): missing syncs go unnoticed",
                self.plain_disk_why
            ),
        }
    }

    /// Makes each sync of its disk take `latency` (a crashfs syncs as fast as memory); no
    /// effect on a plain disk.
    pub fn slow_syncs(&self, latency: Duration) {
        if let Some(disk) = &self.disk {
            disk.slow_syncs(latency);
        }
    }

    /// Whether `kill9` is a power cut.
    pub fn power_cuts(&self) -> bool {
        self.disk.is_some()
    }

    fn stop_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the daemon freezes where it is (it answers nothing, reads nothing off its
    /// sockets) until [`thaw`](Self::thaw); a `kill9` still ends it.
    pub fn freeze(&mut self) {
        send_signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&mut self) {
        send_signal(self.pid(), "CONT");
    }

    /// How many times the daemon was started (by `start`, `restart` and the like).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// SIGTERM, then waits for the daemon to exit; returns how it exited.
    #[track_caller]
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the manager is running");
        send_sigterm(child.id());
        wait_exit(&mut child, "qmgr run after SIGTERM", START_DEADLINE)
    }

    /// Starts the daemon again on the same data directory and socket (after `kill9` or
    /// `terminate`).
    #[track_caller]
    pub fn restart(&mut self) {
        self.spawn(&[]);
    }

    /// Like [`restart`](Self::restart), with extra flags of `qmgr run` (e.g. `--salvage`).
    #[track_caller]
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.spawn(extra);
    }

    /// Starts the daemon (stopped) on its data directory expecting it to refuse: waits for it
    /// to exit and returns its exit code, with the stderr of this start only.
    #[track_caller]
    pub fn start_refused(&mut self) -> Run {
        assert!(self.child.is_none(), "the manager is already running");
        let before = self.log().len();
        let child = self.run_command(&[]).spawn().expect("qmgr run starts");
        // Held by `self` while waiting, so that it is killed if it never exits.
        let child = self.child.insert(child);
        let status = wait_exit(child, "qmgr run (expected to refuse to start)", SOON);
        self.child = None;
        let log = self.log();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: log.get(before..).unwrap_or_default().to_owned(),
        }
    }

    /// A client of the library, connected.
    #[track_caller]
    pub fn client(&self) -> hopmq::blocking::Client {
        hopmq::blocking::Client::connect_to(&self.socket).expect("a client connects")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(qmgr_path());
        command
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .current_dir(self.home.path());
        command
    }

    /// Runs a client command (`put`, `get`, ...) against this manager and waits for it.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("the qmgr binary runs")
            .into()
    }

    /// Like [`cli`](Self::cli), with `input` on the command's stdin.
    pub fn cli_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the qmgr binary runs");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input)
            .expect("stdin takes the input");
        child.wait_with_output().expect("the command ends").into()
    }

    /// Starts a client command without waiting; stdout and stderr are piped.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        self.spawn_cli_then(args, &[])
    }

    /// [`spawn_cli`](Self::spawn_cli) with `last` after a `--`, after every option (the
    /// command that `qmgr reply` runs).
    pub fn spawn_cli_then(&self, args: &[&str], last: &[&str]) -> Child {
        let mut command = self.command(args);
        if !last.is_empty() {
            command.arg("--").args(last);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the qmgr binary runs")
    }

    /// `qmgr status --json`, parsed.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let run = self.cli(&["status", "--json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).expect("status --json prints JSON")
    }

    /// The depth of `queue` per `status --json`; `None` if the manager has no such queue.
    #[track_caller]
    pub fn depth(&self, queue: &str) -> Option<u64> {
        self.status()["queues"]
            .as_array()
            .expect("status lists queues")
            .iter()
            .find(|q| q["name"] == queue)
            .map(|q| q["depth"].as_u64().expect("a depth is a number"))
    }

    /// The total size of the files under the data directory's `journal` folder.
    pub fn journal_bytes(&self) -> u64 {
        fs::read_dir(self.data_dir.join("journal"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .filter(fs::Metadata::is_file)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop_now();
        if std::thread::panicking() {
            eprintln!(
                "----- qmgr log ({}) -----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Takes every message of `queue` until it stays empty, in delivery order.
#[track_caller]
pub fn drain(client: &hopmq::blocking::Client, queue: &str) -> Vec<hopmq::Message> {
    let mut all = Vec::new();
    loop {
        let batch = client
            .get_with(
                queue,
                hopmq::GetOptions {
                    max: 1024,
                    ..Default::default()
                },
            )
            .expect("a poll succeeds");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// A client's `Hello` frame, bytes ready for a raw connection to the API socket.
pub fn hello_frame(client_name: &str) -> Vec<u8> {
    use hopmq::protocol::{ClientFrame, Hello, PROTOCOL_VERSION, encode};
    encode(&ClientFrame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: client_name.into(),
    }))
    .expect("a hello encodes")
}
