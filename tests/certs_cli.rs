//! `qmgr certs init` as an operator uses it: the files it writes and their permissions, what
//! a second run keeps and adds, and a refused topology.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::qmgr;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn init(topology: &Path, out: &Path, extra: &[&str]) -> support::Run {
    let mut args = vec![
        "certs",
        "init",
        "--topology",
        topology.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    qmgr(&args)
}

const DIAMOND: &str = "topology.toml";
const MANAGERS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

#[test]
fn init_makes_a_ca_and_a_pair_per_manager_with_owner_only_keys() {
    let temporary = tempfile::tempdir().unwrap();
    let out = temporary.path().join("run").join("certs");
    let run = init(Path::new(DIAMOND), &out, &[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("created: ca.pem, ca.key"),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("ca.key")), 0o600);
    assert!(
        fs::read_to_string(out.join("ca.pem"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    for manager in MANAGERS {
        assert!(
            run.stdout
                .contains(&format!("created: {manager}.pem, {manager}.key")),
            "{}",
            run.stdout
        );
        assert_eq!(mode(&out.join(format!("{manager}.key"))), 0o600);
        let cert = fs::read_to_string(out.join(format!("{manager}.pem"))).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    }
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        2 + 2 * MANAGERS.len(),
        "no stray files: {names:?}"
    );
}

#[test]
fn init_again_keeps_everything_and_issues_only_new_managers() {
    let temporary = tempfile::tempdir().unwrap();
    let out = temporary.path().join("certs");
    init(Path::new(DIAMOND), &out, &[]).expect_code(0);
    let read = |file: &str| fs::read(out.join(file)).unwrap();
    let ca_before = (read("ca.pem"), read("ca.key"));
    let alpha_before = (read("alpha.pem"), read("alpha.key"));

    let again = init(Path::new(DIAMOND), &out, &[]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("kept: ca.pem, ca.key"),
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("created"), "{}", again.stdout);
    assert_eq!((read("ca.pem"), read("ca.key")), ca_before);
    assert_eq!((read("alpha.pem"), read("alpha.key")), alpha_before);

    // A fifth manager joins the network: only it gets new files, from the same CA.
    let bigger = temporary.path().join("bigger.toml");
    let text = fs::read_to_string(support::repo_root().join(DIAMOND)).unwrap()
        + "\n[managers.echo]\naddress = \"127.0.0.1:7405\"\n\n[[links]]\nbetween = [\"delta\", \"echo\"]\ncost = 1\n";
    fs::write(&bigger, text).unwrap();
    let grown = init(&bigger, &out, &[]);
    grown.expect_code(0);
    assert!(
        grown.stdout.contains("created: echo.pem, echo.key"),
        "{}",
        grown.stdout
    );
    for manager in MANAGERS {
        assert!(
            grown.stdout.contains(&format!("kept: {manager}.pem")),
            "{}",
            grown.stdout
        );
    }
    assert_eq!((read("ca.pem"), read("ca.key")), ca_before);
    assert_eq!(mode(&out.join("echo.key")), 0o600);

    // --force makes every manager's pair again, still with the same CA.
    let forced = init(&bigger, &out, &["--force"]);
    forced.expect_code(0);
    assert!(
        forced.stdout.contains("replaced: alpha.pem, alpha.key"),
        "{}",
        forced.stdout
    );
    assert_ne!((read("alpha.pem"), read("alpha.key")), alpha_before);
    assert_eq!((read("ca.pem"), read("ca.key")), ca_before);
}

#[test]
fn a_bad_topology_is_refused_and_nothing_is_written() {
    let temporary = tempfile::tempdir().unwrap();
    let topology = temporary.path().join("bad.toml");
    fs::write(
        &topology,
        "[managers.alpha]\naddress = \"127.0.0.1:7401\"\n\n[[links]]\nbetween = [\"alpha\", \"nobody\"]\ncost = 1\n",
    )
    .unwrap();
    let out = temporary.path().join("certs");
    let run = init(&topology, &out, &[]);
    run.expect_code(1);
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    assert!(!out.exists(), "no folder for a refused topology");

    let missing = init(&temporary.path().join("missing.toml"), &out, &[]);
    missing.expect_code(1);
    assert!(
        missing.stderr.contains("missing.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_half_pair_is_reported_not_overwritten() {
    let temporary = tempfile::tempdir().unwrap();
    let out = temporary.path().join("certs");
    init(Path::new(DIAMOND), &out, &[]).expect_code(0);
    fs::remove_file(out.join("bravo.pem")).unwrap();
    let key_before = fs::read(out.join("bravo.key")).unwrap();
    let run = init(Path::new(DIAMOND), &out, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("bravo.key exists but") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(out.join("bravo.key")).unwrap(), key_before);
    init(Path::new(DIAMOND), &out, &["--force"]).expect_code(0);
    assert!(out.join("bravo.pem").exists());
}

#[test]
fn a_certificate_from_another_ca_is_not_kept_silently() {
    let temporary = tempfile::tempdir().unwrap();
    let first = temporary.path().join("first");
    let second = temporary.path().join("second");
    init(Path::new(DIAMOND), &first, &[]).expect_code(0);
    init(Path::new(DIAMOND), &second, &[]).expect_code(0);
    fs::copy(first.join("alpha.pem"), second.join("alpha.pem")).unwrap();
    fs::copy(first.join("alpha.key"), second.join("alpha.key")).unwrap();
    let run = init(Path::new(DIAMOND), &second, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("alpha.pem is not signed by"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_reported() {
    let temporary = tempfile::tempdir().unwrap();
    let out = temporary.path().join("certs");
    init(Path::new(DIAMOND), &out, &[]).expect_code(0);
    fs::copy(out.join("alpha.key"), out.join("bravo.key")).unwrap();
    let run = init(Path::new(DIAMOND), &out, &[]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("bravo.key: not the key of"),
        "{}",
        run.stderr
    );
}

/// `qmgr run` as alpha of the diamond, with `env` on top, expected to refuse to start.
fn run_refused(temporary: &Path, env: &[(&str, std::path::PathBuf)]) -> support::Run {
    let output = std::process::Command::new(support::qmgr_path())
        .args(["run", "--name", "alpha", "--topology"])
        .arg(support::repo_root().join(DIAMOND))
        .arg("--data-dir")
        .arg(temporary.join("data"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    output.into()
}

#[test]
fn a_manager_with_links_starts_only_with_its_own_tls_files() {
    let temporary = tempfile::tempdir().unwrap();
    let certs = temporary.path().join("certs");
    init(Path::new(DIAMOND), &certs, &[]).expect_code(0);

    let plaintext = run_refused(temporary.path(), &[]);
    plaintext.expect_code(1);
    assert!(
        plaintext.stderr.contains("manager `alpha` has links")
            && plaintext.stderr.contains("tls.ca is not set"),
        "{}",
        plaintext.stderr
    );
    assert!(
        !temporary.path().join("data").exists(),
        "refused before touching the data directory"
    );

    let borrowed = run_refused(
        temporary.path(),
        &[
            ("QMGR_TLS__CA", certs.join("ca.pem")),
            ("QMGR_TLS__CERT", certs.join("bravo.pem")),
            ("QMGR_TLS__KEY", certs.join("bravo.key")),
        ],
    );
    borrowed.expect_code(1);
    assert!(
        borrowed
            .stderr
            .contains("names manager `bravo`, but this manager is `alpha`"),
        "{}",
        borrowed.stderr
    );

    let mismatched = run_refused(
        temporary.path(),
        &[
            ("QMGR_TLS__CA", certs.join("ca.pem")),
            ("QMGR_TLS__CERT", certs.join("alpha.pem")),
            ("QMGR_TLS__KEY", certs.join("bravo.key")),
        ],
    );
    mismatched.expect_code(1);
    assert!(
        mismatched.stderr.contains("bravo.key: not the key of"),
        "{}",
        mismatched.stderr
    );

    // The diamond with alpha on a free port: a running `scripts/cluster up` (or a parallel
    // test run) holds the file's own ports.
    let port = support::network::free_udp_port();
    let diamond = std::fs::read_to_string(support::repo_root().join(DIAMOND))
        .unwrap()
        .replace("127.0.0.1:7401", &format!("127.0.0.1:{port}"));
    let topology = temporary.path().join("topology.toml");
    std::fs::write(&topology, diamond).unwrap();
    let mut alpha = support::Manager::builder()
        .arg("--name")
        .arg("alpha")
        .arg("--topology")
        .arg(topology.to_str().unwrap())
        .env("QMGR_TLS__CA", certs.join("ca.pem").display())
        .env("QMGR_TLS__CERT", certs.join("alpha.pem").display())
        .env("QMGR_TLS__KEY", certs.join("alpha.key").display())
        .start();
    assert!(alpha.terminate().success(), "{}", alpha.log());
}
