//! `scripts/cluster up|down|status` as a developer uses it: every manager of a topology started
//! and serving, `up` again changing nothing, a killed manager (and only it) started again,
//! `status`, `down` stopping them all but keeping their data, and an invalid topology refused;
//! every manager's web console on a port of its own, kept across ups.
//!
//! Each test has its own run folder and topology, with free UDP ports, so tests run in
//! parallel with anything. A guard runs `down` when a test ends, failed or not.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use support::{Run, SOON, qmgr_path, repo_root, wait_until};

const MANAGERS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// A line alpha – bravo – charlie on free loopback ports, with queue `q` homed at bravo.
fn line_topology() -> String {
    let mut text = String::new();
    for name in MANAGERS {
        let port = support::network::free_udp_port();
        text += &format!("[managers.{name}]\naddress = \"127.0.0.1:{port}\"\n\n");
    }
    text += "[[links]]\nbetween = [\"alpha\", \"bravo\"]\n\n";
    text += "[[links]]\nbetween = [\"bravo\", \"charlie\"]\n\n";
    text += "[queues.q]\nhome = \"bravo\"\n";
    text
}

/// One run folder and topology driven by `scripts/cluster`; `down` runs when it is dropped.
struct Cluster {
    home: tempfile::TempDir,
    run: PathBuf,
    topology: PathBuf,
}

impl Cluster {
    fn new(topology_text: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        // The script names the run folder by its canonical path; so does the test.
        let root = home.path().canonicalize().unwrap();
        let topology = root.join("topology.toml");
        fs::write(&topology, topology_text).unwrap();
        Self {
            run: root.join("run"),
            topology,
            home,
        }
    }

    /// `scripts/cluster ARGS...` with this cluster's run folder, the test's `qmgr` binary (so
    /// that the script builds nothing) and small journal segments (passed through to the
    /// managers).
    fn script(&self, args: &[&str]) -> Run {
        Command::new(repo_root().join("scripts").join("cluster"))
            .args(args)
            .env("QMGR_BIN", qmgr_path())
            .env("HOPMQ_RUN_DIR", &self.run)
            .env("QMGR_SEGMENT_BYTES", "1048576")
            .current_dir(self.home.path())
            .output()
            .expect("scripts/cluster runs")
            .into()
    }

    fn up(&self) -> Run {
        let run = self.script(&["up", self.topology.to_str().unwrap()]);
        run.expect_code(0);
        run
    }

    fn status(&self) -> Run {
        let run = self.script(&["status", self.topology.to_str().unwrap()]);
        run.expect_code(0);
        run
    }

    fn dir(&self, manager: &str) -> PathBuf {
        self.run.join(manager)
    }

    fn socket(&self, manager: &str) -> PathBuf {
        self.dir(manager).join("qmgr.sock")
    }

    /// The pid in the manager's pid file, which must exist.
    #[track_caller]
    fn pid(&self, manager: &str) -> u32 {
        let file = self.dir(manager).join("qmgr.pid");
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no pid file {}: {e}", file.display()));
        text.trim().parse().unwrap()
    }

    /// Whether `pid` is a live `qmgr run` of this manager (a killed daemon is nobody's child
    /// here, so it may linger as a zombie, whose command line is empty: that counts as gone).
    fn runs(&self, pid: u32, manager: &str) -> bool {
        let config = self.dir(manager).join("qmgr.toml");
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("qmgr") && cmdline.contains(&format!("--config {}", config.display()))
        })
    }

    /// A client command against one manager's socket.
    fn cli(&self, manager: &str, args: &[&str]) -> Run {
        Command::new(qmgr_path())
            .args(args)
            .arg("--socket")
            .arg(self.socket(manager))
            .current_dir(self.home.path())
            .output()
            .expect("the qmgr binary runs")
            .into()
    }

    fn log(&self, manager: &str) -> String {
        fs::read_to_string(self.dir(manager).join("qmgr.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = self.script(&["down"]);
        if std::thread::panicking() || down.code != 0 {
            eprintln!("----- scripts/cluster down -----\n{down:?}");
            for manager in MANAGERS {
                eprintln!("----- {manager}'s log -----\n{}", self.log(manager));
            }
        }
    }
}

/// The line of `output` that starts with `manager:`.
#[track_caller]
fn line_of<'a>(output: &'a str, manager: &str) -> &'a str {
    let prefix = format!("{manager}: ");
    output
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {manager} in:\n{output}"))
}

/// The console URL of an `up` line (`..., console http://127.0.0.1:PORT/`).
fn console_url(line: &str) -> String {
    line.split_once(", console ")
        .map(|(_, url)| url.to_owned())
        .unwrap_or_else(|| panic!("no console URL in: {line}"))
}

#[test]
fn up_starts_every_manager_and_up_again_starts_none() {
    let cluster = Cluster::new(&line_topology());
    let up = cluster.up();
    let mut pids = Vec::new();
    for manager in MANAGERS {
        let pid = cluster.pid(manager);
        assert!(cluster.runs(pid, manager), "{manager} runs as pid {pid}");
        let line = line_of(&up.stdout, manager);
        assert!(line.contains("started"), "{line}");
        assert!(line.contains(&format!("pid {pid}")), "{line}");
        assert!(
            line.contains(&cluster.socket(manager).display().to_string()),
            "{line}"
        );
        let status = cluster.cli(manager, &["status"]);
        status.expect_code(0);
        assert!(
            status.stdout.contains(&format!("manager {manager} ")),
            "{}",
            status.stdout
        );
        // The layout the design names.
        let dir = cluster.dir(manager);
        let settings = fs::read_to_string(dir.join("qmgr.toml")).unwrap();
        assert!(
            settings.contains(&format!("name = \"{manager}\"")),
            "{settings}"
        );
        assert!(dir.join("data").is_dir());
        assert!(dir.join("qmgr.log").is_file());
        assert!(
            cluster
                .run
                .join("certs")
                .join(format!("{manager}.pem"))
                .is_file()
        );
        pids.push(pid);
    }
    assert!(cluster.run.join("certs").join("ca.pem").is_file());
    assert!(
        up.stdout.contains(&format!(
            "HOPMQ_SOCKET={}",
            cluster.socket("alpha").display()
        )),
        "up says how to use the network:\n{}",
        up.stdout
    );

    // A started manager serves: a put and a get on bravo, where q lives.
    cluster
        .cli("bravo", &["put", "q@bravo", "hello"])
        .expect_code(0);
    let get = cluster.cli("bravo", &["get", "q", "--timeout", "10s"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "hello\n");

    // Each manager serves its web console on a port of its own, printed by up.
    let mut consoles = Vec::new();
    for manager in MANAGERS {
        let url = console_url(line_of(&up.stdout, manager));
        let port: u16 = url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let status = support::http::get(port, "/api/status", None).expect("the console answers");
        assert_eq!(status.json()["manager"], manager);
        assert!(!consoles.contains(&url), "{url} twice");
        consoles.push(url);
    }

    let again = cluster.up();
    for ((manager, pid), url) in MANAGERS.into_iter().zip(pids).zip(consoles) {
        let line = line_of(&again.stdout, manager);
        assert_eq!(console_url(line), url, "{manager}'s console kept its port");
        assert!(line.contains("already running"), "{line}");
        assert!(line.contains(&format!("pid {pid}")), "{line}");
        assert_eq!(cluster.pid(manager), pid, "{manager} was not started again");
        assert!(cluster.runs(pid, manager));
    }
}

#[test]
fn up_starts_again_only_the_manager_that_was_killed() {
    let cluster = Cluster::new(&line_topology());
    cluster.up();
    let before: Vec<u32> = MANAGERS.iter().map(|m| cluster.pid(m)).collect();

    let killed = cluster.pid("alpha");
    let status = Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("alpha is gone", SOON, || !cluster.runs(killed, "alpha"));

    let status = cluster.status();
    assert_eq!(line_of(&status.stdout, "alpha"), "alpha: stopped");
    for (manager, pid) in MANAGERS.into_iter().zip(&before).skip(1) {
        let line = line_of(&status.stdout, manager);
        assert!(line.contains(&format!("running (pid {pid})")), "{line}");
    }
    assert!(
        status.stdout.contains("manager bravo "),
        "status shows a running manager's own status:\n{}",
        status.stdout
    );

    let up = cluster.up();
    assert!(
        line_of(&up.stdout, "alpha").contains("started"),
        "{}",
        up.stdout
    );
    let restarted = cluster.pid("alpha");
    assert_ne!(restarted, killed);
    assert!(cluster.runs(restarted, "alpha"));
    cluster.cli("alpha", &["status"]).expect_code(0);
    for (manager, pid) in MANAGERS.into_iter().zip(before).skip(1) {
        assert!(
            line_of(&up.stdout, manager).contains("already running"),
            "{}",
            up.stdout
        );
        assert_eq!(cluster.pid(manager), pid, "{manager} was left alone");
        assert!(cluster.runs(pid, manager));
    }
}

#[test]
fn down_stops_every_manager_and_keeps_their_data() {
    let cluster = Cluster::new(&line_topology());
    cluster.up();
    cluster
        .cli("bravo", &["put", "q@bravo", "kept"])
        .expect_code(0);
    let pids: Vec<u32> = MANAGERS.iter().map(|m| cluster.pid(m)).collect();

    let down = cluster.script(&["down"]);
    down.expect_code(0);
    for (manager, pid) in MANAGERS.into_iter().zip(pids) {
        assert!(
            line_of(&down.stdout, manager).contains("stopped"),
            "{}",
            down.stdout
        );
        assert!(!cluster.runs(pid, manager), "{manager} (pid {pid}) stopped");
        assert!(!cluster.dir(manager).join("qmgr.pid").exists());
        assert!(cluster.dir(manager).join("data").is_dir());
    }
    let status = cluster.status();
    for manager in MANAGERS {
        assert_eq!(
            line_of(&status.stdout, manager),
            format!("{manager}: stopped")
        );
    }
    // Nothing left to stop.
    cluster.script(&["down"]).expect_code(0);

    // The data survived: started again, bravo still holds the message.
    cluster.up();
    let get = cluster.cli("bravo", &["get", "q", "--timeout", "10s"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "kept\n");
}

#[test]
fn an_invalid_topology_is_refused_and_nothing_starts() {
    let text = line_topology().replace("[\"bravo\", \"charlie\"]", "[\"bravo\", \"ghost\"]");
    let cluster = Cluster::new(&text);
    let up = cluster.script(&["up", cluster.topology.to_str().unwrap()]);
    up.expect_code(1);
    assert!(
        up.stderr.contains("undeclared manager `ghost`"),
        "the check's own error is shown:\n{}",
        up.stderr
    );
    assert!(
        !cluster.run.exists() || fs::read_dir(&cluster.run).unwrap().next().is_none(),
        "nothing was made under {}",
        cluster.run.display()
    );
    cluster
        .script(&["status", cluster.topology.to_str().unwrap()])
        .expect_code(1);
}

#[test]
fn bad_usage_exits_2_with_a_usage_line() {
    let cluster = Cluster::new(&line_topology());
    for args in [&[][..], &["start"], &["up", "a.toml", "b.toml"]] {
        let run = cluster.script(args);
        run.expect_code(2);
        assert!(
            run.stderr.starts_with("usage: "),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!cluster.run.exists());
}

/// On a fresh machine `up` compiles for minutes: it says so and lets cargo's progress through
/// (here a stand-in `cargo` on PATH that prints a progress line unless `--quiet`, as cargo does,
/// and "builds" by linking this run's binary where the release build would be).
#[test]
fn a_build_says_so_and_shows_cargos_progress() {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let target = home.path().join("target");
    let fake_cargo = bin.join("cargo");
    fs::write(
        &fake_cargo,
        format!(
            "#!/bin/sh\ncase \" $* \" in *' --quiet '*) ;; *) echo '   Compiling qmgr v0.1.0 (stand-in)' >&2 ;; esac\nmkdir -p {release}\nln -sf {qmgr} {release}/qmgr\n",
            release = target.join("release").display(),
            qmgr = qmgr_path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake_cargo, fs::Permissions::from_mode(0o755)).unwrap();
    let topology = home.path().join("topology.toml");
    fs::write(&topology, line_topology()).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run: Run = Command::new(repo_root().join("scripts").join("cluster"))
        .args(["status", topology.to_str().unwrap()])
        .env_remove("QMGR_BIN")
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &target)
        .env("HOPMQ_RUN_DIR", home.path().join("run"))
        .current_dir(home.path())
        .output()
        .unwrap()
        .into();
    run.expect_code(0);
    assert!(
        run.stderr.contains("building qmgr (release)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Compiling qmgr v0.1.0 (stand-in)"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("alpha: stopped"), "{}", run.stdout);
}
