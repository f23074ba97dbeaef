//! Running hopmq for real, as far as this machine allows: `qmgr run` reports readiness to a
//! service manager (systemd's `NOTIFY_SOCKET`), the systemd unit starts a manager as systemd
//! would (its `ExecStart`, `Environment` and directories, with readiness), the unit passes
//! `systemd-analyze verify` and its hardening check, `scripts/deb` lays out a package with the
//! unit, the settings file, manual pages and completions, and the container image definition
//! runs what the unit runs. The operations guide's certificate example, run with OpenSSL
//! against an operator's CA, makes certificates two managers accept.
//!
//! No test here needs systemd running or a container runtime: where a tool is missing
//! (`systemd-analyze`, `dpkg-deb`), the test says so and passes. The package is built from the
//! test's own (debug) `qmgr`, so no second, release build is compiled; `scripts/deb` without
//! `QMGR_BIN` builds the release binary and is not run here.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Manager, START_DEADLINE, qmgr_path, repo_root, send_sigterm, wait_exit};

fn packaging() -> PathBuf {
    repo_root().join("qmgr").join("packaging")
}

/// Waits for one datagram on `socket` until `deadline`; `None` if none came.
fn receive(socket: &UnixDatagram, deadline: Duration) -> Option<String> {
    let start = Instant::now();
    let mut buffer = [0u8; 4096];
    while start.elapsed() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match socket.recv(&mut buffer) {
            Ok(n) => return Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => panic!("cannot read the notify socket: {error}"),
        }
    }
    None
}

/// Whether `tool` runs here (`tool --version` succeeds).
fn available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn qmgr_run_tells_the_service_manager_it_is_ready_then_stopping() {
    let home = tempfile::tempdir().unwrap();
    let notify_path = home.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut manager = Manager::builder()
        .plain_disk()
        .env("NOTIFY_SOCKET", notify_path.display())
        .start();
    let ready = receive(&notify, START_DEADLINE);
    assert_eq!(ready.as_deref(), Some("READY=1"), "{}", manager.log());
    // Ready means serving: a client is answered.
    let status = Command::new(qmgr_path())
        .args(["status", "--socket"])
        .arg(manager.socket())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    // Nothing more until a stop begins.
    assert_eq!(receive(&notify, Duration::from_millis(300)), None);
    assert!(manager.terminate().success(), "{}", manager.log());
    assert_eq!(
        receive(&notify, Duration::from_secs(5)).as_deref(),
        Some("STOPPING=1"),
        "{}",
        manager.log()
    );
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_a_bad_one_is_only_a_warning() {
    // A relative NOTIFY_SOCKET is no service manager's: the manager serves and logs why it
    // could not report.
    let mut manager = Manager::builder()
        .plain_disk()
        .env("NOTIFY_SOCKET", "not/absolute.sock")
        .start();
    support::wait_until("the warning is logged", support::SOON, || {
        manager.log().contains("cannot report readiness")
    });
    assert!(manager.is_running());
    assert!(manager.terminate().success(), "{}", manager.log());
}

/// The value of every `KEY=` line of the unit's sections, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_starts_a_manager_as_systemd_would() {
    let unit = fs::read_to_string(packaging().join("hopmq.service")).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=hopmq",
        "RuntimeDirectory=hopmq",
        "User=hopmq",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in the unit");
    }
    // systemd's specifiers: %S the state root (/var/lib), %t the runtime root (/run).
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let runtime = home.path().join("run");
    fs::create_dir_all(state.join("hopmq")).unwrap();
    fs::create_dir_all(runtime.join("hopmq")).unwrap();
    let expand = |value: &str| {
        value
            .replace("%S", state.to_str().unwrap())
            .replace("%t", runtime.to_str().unwrap())
    };
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let mut words = exec[0].split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/qmgr"));
    // The shipped settings file where the unit names /etc/hopmq/qmgr.toml.
    let args: Vec<String> = words
        .map(|word| match word {
            "/etc/hopmq/qmgr.toml" => packaging().join("qmgr.toml").display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    let notify_path = home.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = Command::new(qmgr_path());
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &notify_path)
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(home.path().join("qmgr.log")).unwrap());
    for assignment in unit_values(&unit, "Environment") {
        let (key, value) = assignment.split_once('=').unwrap();
        command.env(key, expand(value));
    }
    let mut child = command.spawn().unwrap();
    let log = || fs::read_to_string(home.path().join("qmgr.log")).unwrap_or_default();
    let ready = receive(&notify, START_DEADLINE);
    assert_eq!(ready.as_deref(), Some("READY=1"), "{}", log());
    // The journal in the state directory, the socket in the runtime directory.
    assert!(state.join("hopmq").join("journal").is_dir(), "{}", log());
    let socket = runtime.join("hopmq").join("qmgr.sock");
    let put = Command::new(qmgr_path())
        .args(["put", "q", "hello", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}\n{}", log());
    // ExecReload's signal reads the topology again; it never stops the manager.
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        ["/bin/kill -HUP $MAINPID"]
    );
    support::send_signal(child.id(), "HUP");
    send_sigterm(child.id());
    let status = wait_exit(&mut child, "qmgr run after SIGTERM", START_DEADLINE);
    assert!(status.success(), "{status}\n{}", log());
    assert!(!log().contains("ERROR"), "{}", log());
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_its_hardening_check() {
    if !available("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed here (Debian: package systemd)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists, and the Documentation= manual page with
    // `man`: point them at this build's binary and manual pages.
    let unit = fs::read_to_string(packaging().join("hopmq.service")).unwrap();
    let unit = unit.replace(
        "ExecStart=/usr/bin/qmgr ",
        &format!("ExecStart={} ", qmgr_path().display()),
    );
    let path = home.path().join("hopmq.service");
    fs::write(&path, unit).unwrap();
    let man = home.path().join("man");
    let man1 = man.join("man1");
    fs::create_dir_all(&man1).unwrap();
    let pages = Command::new(qmgr_path())
        .args(["man", "--dir"])
        .arg(&man1)
        .output()
        .unwrap();
    assert!(pages.status.success(), "{pages:?}");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // systemd's own score of what the service may do, 0 (locked down) to 10 (anything): the
    // hardening keeps it at 2.0 or below (the threshold is in tenths).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "systemd-analyze security:\n{}{}",
        String::from_utf8_lossy(&security.stdout),
        String::from_utf8_lossy(&security.stderr)
    );
}

/// Runs `dpkg-deb ARGS` and returns its standard output.
fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(output.status.success(), "dpkg-deb {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn scripts_deb_lays_out_the_package() {
    if !available("dpkg-deb") {
        eprintln!("SKIPPED: dpkg-deb is not installed here (not a Debian system)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(repo_root().join("scripts").join("deb"))
        .arg(out.path())
        .env("QMGR_BIN", qmgr_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "scripts/deb: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deb = PathBuf::from(stdout.trim());
    assert_eq!(deb.parent(), Some(out.path()), "{stdout}");

    let version = String::from_utf8(
        Command::new(qmgr_path())
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fields = dpkg_deb(&["--field"], &deb);
    assert!(fields.contains("Package: hopmq\n"), "{fields}");
    assert!(
        fields.contains(&format!(
            "Version: {}\n",
            version.split_whitespace().nth(1).unwrap()
        )),
        "{fields}"
    );
    let contents = dpkg_deb(&["--contents"], &deb);
    for file in [
        "./usr/bin/qmgr",
        "./lib/systemd/system/hopmq.service",
        "./etc/hopmq/qmgr.toml",
        "./usr/share/man/man1/qmgr.1.gz",
        "./usr/share/man/man1/qmgr-run.1.gz",
        "./usr/share/doc/hopmq/copyright",
        "./usr/share/doc/hopmq/guarantees.md",
        "./usr/share/doc/hopmq/operations.md",
        "./usr/share/bash-completion/completions/qmgr",
        "./usr/share/zsh/vendor-completions/_qmgr",
        "./usr/share/fish/vendor_completions.d/qmgr.fish",
    ] {
        assert!(
            contents
                .lines()
                .any(|line| line.ends_with(&format!(" {file}"))),
            "no {file} in the package:\n{contents}"
        );
    }
    assert!(
        contents.lines().all(|line| line.contains(" root/root ")),
        "files not owned by root:\n{contents}"
    );

    check_unpacked(&deb, out.path(), &version);
}

/// The package `deb`, unpacked under `out`: the files are the repository's, the binary runs
/// and says `version`, the maintainer scripts are valid shell.
fn check_unpacked(deb: &Path, out: &Path, version: &str) {
    let root = out.join("root");
    let extract = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(extract.success());
    for (installed, source) in [
        ("lib/systemd/system/hopmq.service", "hopmq.service"),
        ("etc/hopmq/qmgr.toml", "qmgr.toml"),
    ] {
        assert_eq!(
            fs::read(root.join(installed)).unwrap(),
            fs::read(packaging().join(source)).unwrap(),
            "{installed}"
        );
    }
    let packaged = Command::new(root.join("usr/bin/qmgr"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(packaged.stdout).unwrap(), version);
    let control = out.join("control");
    let control_extract = Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(&control)
        .status()
        .unwrap();
    assert!(control_extract.success());
    assert_eq!(
        fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/hopmq/qmgr.toml\n"
    );
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    // The maintainer scripts are valid shell.
    for script in ["postinst", "prerm", "postrm"] {
        let check = Command::new("sh")
            .arg("-n")
            .arg(control.join(script))
            .status()
            .unwrap();
        assert!(check.success(), "{script} is not valid sh");
    }
}

#[test]
fn the_container_image_runs_what_the_unit_runs() {
    // No container runtime with a registry is reachable here: the definition is checked, not
    // built.
    let file = fs::read_to_string(packaging().join("Containerfile")).unwrap();
    let stages: Vec<&str> = file
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build"), "{stages:?}");
    assert!(file.contains("COPY --from=build "), "{file}");
    assert!(
        file.contains("cargo build --release --locked -p qmgr"),
        "{file}"
    );
    // Every file the image copies from the repository exists.
    for line in file.lines().filter(|line| line.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[1].starts_with("--from=") || words[1] == "." {
            continue;
        }
        assert!(repo_root().join(words[1]).exists(), "{line}");
    }
    // The image's command is the unit's, and it keeps its data where the unit does.
    let unit = fs::read_to_string(packaging().join("hopmq.service")).unwrap();
    let exec = unit_values(&unit, "ExecStart").remove(0);
    let command: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        file.contains(&format!("ENTRYPOINT [\"{}\"]", command[0])),
        "{file}"
    );
    let cmd = command[1..]
        .iter()
        .map(|word| format!("\"{word}\""))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(file.contains(&format!("CMD [{cmd}]")), "{file}");
    assert!(file.contains("QMGR_DATA_DIR=/var/lib/hopmq"), "{file}");
    assert!(file.contains("VOLUME [\"/var/lib/hopmq\"]"), "{file}");
    let ignore = fs::read_to_string(packaging().join("Containerfile.dockerignore")).unwrap();
    assert!(ignore.lines().any(|line| line == "target/"), "{ignore}");
}

/// The commands of docs/operations.md's certificate example (the ```sh block with
/// `openssl req`), for manager `alpha`.
fn certificate_recipe() -> String {
    let guide = fs::read_to_string(repo_root().join("docs").join("operations.md")).unwrap();
    let blocks: Vec<&str> = guide.split("```").collect();
    blocks
        .iter()
        .filter_map(|block| block.strip_prefix("sh\n"))
        .find(|block| block.contains("openssl req"))
        .expect("docs/operations.md has a ```sh block with the openssl commands")
        .to_owned()
}

#[test]
fn the_operations_guide_certificates_from_a_ca_are_accepted_by_managers() {
    // `openssl version`: it takes no `--version`.
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed here (Debian: package openssl)");
        return;
    }
    let spec = support::network::Spec::line(&["alpha", "bravo"], "q");
    let mut network = support::network::Network::prepare(&spec);
    // An operator's own CA, not `qmgr certs init`'s.
    let certs = tempfile::tempdir().unwrap();
    let ca = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-subj",
            "/CN=operators-ca",
            "-days",
            "30",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .current_dir(certs.path())
        .output()
        .unwrap();
    assert!(ca.status.success(), "{ca:?}");
    for name in ["alpha", "bravo"] {
        let recipe = certificate_recipe().replace("alpha", name);
        let issue = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &recipe])
            .current_dir(certs.path())
            .output()
            .unwrap();
        assert!(issue.status.success(), "{recipe}\n{issue:?}");
    }
    let topology = network.topology();
    network.start_manager_with("alpha", &topology, certs.path(), &[]);
    network.start_manager_with("bravo", &topology, certs.path(), &[]);
    network.wait_link_up("alpha", "bravo");
    network.wait_link_up("bravo", "alpha");
}
