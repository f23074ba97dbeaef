//! End to end with the binary: `crashfs mount` as a daemon, another process writing through
//! it, `crashfs pending`, `crashfs crash` and `crashfs umount` from the command line.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crashfs::{CrashReport, Daemon, Error, Pending};

const PROGRAM: &str = env!("CARGO_BIN_EXE_crashfs");
const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `crashfs ARGS`; returns its standard output, failing the test unless it succeeded.
fn crashfs(args: &[&str], mountpoint: &Path) -> String {
    let output = Command::new(PROGRAM)
        .args(args)
        .arg(mountpoint)
        .output()
        .expect("run crashfs");
    assert!(
        output.status.success(),
        "crashfs {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs a shell command in `folder`: a process that is not the test's.
fn shell(folder: &Path, script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(folder)
        .status()
        .expect("run sh");
    assert!(status.success(), "sh -c {script:?}: {status}");
}

#[test]
fn the_daemon_crashes_on_command_and_unmounts() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let backing = folder.path().join("backing");
    let mountpoint = folder.path().join("mnt");
    std::fs::create_dir(&backing).expect("backing");
    std::fs::create_dir(&mountpoint).expect("mount point");
    let daemon = match Daemon::start(Path::new(PROGRAM), &backing, &mountpoint, DEADLINE) {
        Ok(daemon) => daemon,
        Err(Error::Unavailable(reason)) => {
            support::skip("the_daemon_crashes_on_command_and_unmounts", &reason);
            return;
        }
        Err(e) => panic!("cannot start the daemon: {e}"),
    };
    support::assert_mounted(&mountpoint);

    // Another process: a durable file (data, then its directory), then unsynced changes.
    shell(&mountpoint, "printf durable > kept && sync kept && sync .");
    shell(
        &mountpoint,
        "printf ' and more' >> kept && printf x > created && rm -f nothing",
    );
    let pending: Pending = serde_json::from_str(&crashfs(&["pending"], &mountpoint)).expect("json");
    assert_eq!((pending.files, pending.entries), (2, 1), "{pending:?}");
    assert_eq!(daemon.pending().expect("pending"), pending);

    let report: CrashReport =
        serde_json::from_str(&crashfs(&["crash", "--seed", "9"], &mountpoint)).expect("json");
    assert_eq!((report.seed, report.entries_undone), (9, 1), "{report:?}");
    assert_eq!(
        std::fs::read(mountpoint.join("kept")).expect("read"),
        b"durable"
    );
    assert!(!mountpoint.join("created").exists());

    // Served on after the crash; a second crash through the library.
    shell(&mountpoint, "printf lost >> kept");
    daemon
        .crash(crashfs::CrashOptions::default())
        .expect("crash");
    assert_eq!(
        std::fs::read(mountpoint.join("kept")).expect("read"),
        b"durable"
    );

    crashfs(&["umount"], &mountpoint);
    daemon
        .stop(DEADLINE)
        .expect("the daemon exits once unmounted");
    assert!(!mountpoint.join(crashfs::control::CONTROL).exists());
    assert_eq!(
        std::fs::read(backing.join("kept")).expect("read"),
        b"durable"
    );
}

#[test]
fn mount_refuses_a_mount_point_inside_the_backing_folder() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let inside = folder.path().join("mnt");
    std::fs::create_dir(&inside).expect("mount point");
    let output = Command::new(PROGRAM)
        .arg("mount")
        .arg(folder.path())
        .arg(&inside)
        .output()
        .expect("run crashfs");
    let said = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(crashfs::EXIT_UNAVAILABLE) {
        support::skip(
            "mount_refuses_a_mount_point_inside_the_backing_folder",
            &said,
        );
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("inside the backing folder"), "{said}");
}

#[test]
fn mount_refuses_a_missing_mount_point() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let output = Command::new(PROGRAM)
        .arg("mount")
        .arg(folder.path())
        .arg(folder.path().join("missing"))
        .output()
        .expect("run crashfs");
    let said = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(crashfs::EXIT_UNAVAILABLE) {
        support::skip("mount_refuses_a_missing_mount_point", &said);
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("is not a directory"), "{said}");
}

/// Waits, at most [`DEADLINE`], until a child's mount serves; `false` (having said why) if
/// it exited saying FUSE is unavailable.
fn wait_mounted(child: &mut std::process::Child, mountpoint: &Path, test: &str) -> bool {
    let started = std::time::Instant::now();
    while !mountpoint.join(crashfs::control::CONTROL).is_file() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            if status.code() == Some(crashfs::EXIT_UNAVAILABLE) {
                support::skip(test, "crashfs mount exited with EXIT_UNAVAILABLE");
                return false;
            }
            panic!("crashfs mount exited with {status}");
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not mounted within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn the_daemon_unmounts_on_sigterm() {
    let folder = tempfile::tempdir().expect("temporary folder");
    let backing = folder.path().join("backing");
    let mountpoint = folder.path().join("mnt");
    std::fs::create_dir(&backing).expect("backing");
    std::fs::create_dir(&mountpoint).expect("mount point");
    let mut child = Command::new(PROGRAM)
        .arg("mount")
        .arg(&backing)
        .arg(&mountpoint)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn crashfs mount");
    if !wait_mounted(&mut child, &mountpoint, "the_daemon_unmounts_on_sigterm") {
        return;
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = crashfs::unmount(&mountpoint, true);
            panic!("crashfs mount still running {DEADLINE:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!mountpoint.join(crashfs::control::CONTROL).exists());
}

#[test]
fn mount_says_when_fuse_is_unavailable() {
    // As an unprivileged user (nobody) on this machine, which has no fusermount: the
    // situation in which the FUSE tests skip, and the exit code they skip on.
    let test = "mount_says_when_fuse_is_unavailable";
    let root = rustix::process::geteuid().is_root();
    let helper = ["fusermount3", "fusermount"]
        .iter()
        .any(|name| Command::new(name).arg("-V").output().is_ok());
    if !root || helper || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED {test}: needs root, setpriv, and no fusermount (so nobody cannot mount)"
        );
        return;
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", PROGRAM])
        .args(["mount", "/", "/"])
        .output()
        .expect("run setpriv");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(crashfs::EXIT_UNAVAILABLE),
        "{said}"
    );
    assert!(said.contains("FUSE is unavailable"), "{said}");
}
