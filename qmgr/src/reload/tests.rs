//! Unit tests of the reload checks, the watch filter, bursts, and the task end to end.

#![allow(clippy::unwrap_used)]

use std::fs;

use super::*;

const ALPHA_BRAVO: &str = r#"
[managers.alpha]
address = "127.0.0.1:7401"

[managers.bravo]
address = "127.0.0.1:7402"

[[links]]
between = ["alpha", "bravo"]
"#;

fn name(s: &str) -> ManagerName {
    ManagerName::new(s).unwrap()
}

fn running(me: &str, address: &str, links_possible: bool) -> Running {
    Running {
        me: name(me),
        address: Some(address.parse().unwrap()),
        links_possible,
    }
}

fn check(text: &str, running: &Running) -> Result<Topology, ReloadError> {
    let checked = parse(text.as_bytes(), "topology.toml")?;
    validate(&checked.topology, text, "topology.toml", running)?;
    Ok(checked.topology)
}

#[test]
fn the_version_is_the_crc32c_in_hex() {
    // The check value of CRC-32C (iSCSI).
    assert_eq!(version(b"123456789"), "e3069283");
    assert_eq!(version(b""), "00000000");
    assert_eq!(version(b"\x01").len(), 8);
}

#[test]
fn a_valid_edit_is_accepted() {
    let topology = check(ALPHA_BRAVO, &running("alpha", "127.0.0.1:7401", true)).unwrap();
    assert_eq!(topology.neighbours(&name("alpha")).count(), 1);
}

#[test]
fn a_manager_dropped_from_the_file_is_refused() {
    let text = "[managers.bravo]\naddress = \"127.0.0.1:7402\"\n";
    let error = check(text, &running("alpha", "127.0.0.1:7401", true)).unwrap_err();
    assert!(
        matches!(error, ReloadError::NotDeclared { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("topology.toml: error: manager `alpha` is not declared"),
        "{message}"
    );
}

#[test]
fn moving_this_manager_is_refused_at_its_declaration() {
    let error = check(ALPHA_BRAVO, &running("alpha", "127.0.0.1:9999", true)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("topology.toml:2: error: the address of manager `alpha` changed from `127.0.0.1:9999` to `127.0.0.1:7401`"),
        "{message}"
    );
    assert!(message.contains("needs a restart"), "{message}");
    // A neighbour may move.
    check(ALPHA_BRAVO, &running("bravo", "127.0.0.1:7402", true)).unwrap();
}

#[test]
fn links_without_tls_are_refused() {
    let error = check(ALPHA_BRAVO, &running("alpha", "127.0.0.1:7401", false)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("topology.toml:2: error: manager `alpha` now has links (to `bravo`)"),
        "{message}"
    );
    assert!(
        message.contains("tls.ca, tls.cert and tls.key"),
        "{message}"
    );
    // Without links, no TLS is needed.
    let alone = "[managers.alpha]\naddress = \"127.0.0.1:7401\"\n";
    check(alone, &running("alpha", "127.0.0.1:7401", false)).unwrap();
}

#[test]
fn many_neighbours_are_counted_not_listed() {
    let mut text = String::from("[managers.hub]\naddress = \"127.0.0.1:7400\"\n");
    for i in 0..5 {
        text.push_str(&format!(
            "[managers.m{i}]\naddress = \"127.0.0.1:{}\"\n[[links]]\nbetween = [\"hub\", \"m{i}\"]\n",
            7401 + i
        ));
    }
    let message = check(&text, &running("hub", "127.0.0.1:7400", false))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("(to `m0`, `m1`, `m2` and 2 more)"),
        "{message}"
    );
}

#[test]
fn syntax_errors_name_file_and_line() {
    let text = format!("{ALPHA_BRAVO}\n[[links]\n");
    let message = check(&text, &running("alpha", "127.0.0.1:7401", true))
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("topology.toml:11:"), "{message}");
}

#[test]
fn bytes_that_are_not_utf8_are_refused_with_their_position() {
    let bytes = b"[managers.alpha]\naddress = \"\xff\"\n";
    let error = parse(bytes, "t.toml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "t.toml:2:12: error: the file is not valid UTF-8"
    );
}

#[test]
fn reads_are_bounded() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("topology.toml");
    let error = read(&path).unwrap_err();
    assert!(error.to_string().contains("topology.toml"), "{error}");
    let file = fs::File::create(&path).unwrap();
    file.set_len(TOPOLOGY_BYTES_MAX + 1).unwrap();
    assert!(
        matches!(read(&path), Err(ReloadError::TooLarge { .. })),
        "a file over the limit is refused"
    );
    file.set_len(3).unwrap();
    assert_eq!(read(&path).unwrap(), vec![0, 0, 0]);
}

#[test]
fn only_events_naming_the_file_count() {
    use notify::event::{CreateKind, ModifyKind, RenameMode};
    let name = OsStr::new("topology.toml");
    let event = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
    let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    assert!(concerns(&event(renamed, "/etc/hopmq/topology.toml"), name));
    assert!(concerns(
        &event(EventKind::Create(CreateKind::File), "./topology.toml"),
        name
    ));
    assert!(concerns(
        &event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "topology.toml"
        ),
        name
    ));
    assert!(!concerns(&event(renamed, "/etc/hopmq/qmgr.toml"), name));
    assert!(!concerns(
        &event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "topology.toml"
        ),
        name
    ));
    assert!(!concerns(
        &event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "topology.toml"
        ),
        name
    ));
    // A rename from a temporary name carries both paths.
    let both = notify::Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
        .add_path(PathBuf::from("/x/.topology.toml.swp"))
        .add_path(PathBuf::from("/x/topology.toml"));
    assert!(concerns(&both, name));
    let lost = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    assert!(concerns(&lost, name));
}

#[test]
fn a_burst_is_read_when_quiet_or_when_too_long() {
    let start = Instant::now();
    let burst = Burst {
        first: start,
        last: start,
    };
    assert_eq!(burst.due(), start + QUIET);
    let late = Burst {
        first: start,
        last: start + BURST_MAX,
    };
    assert_eq!(late.due(), start + BURST_MAX);
}

async fn next(updates: &mut mpsc::Receiver<Command>) -> TopologyUpdate {
    match tokio::time::timeout(Duration::from_secs(20), updates.recv()).await {
        Ok(Some(Command::Topology(update))) => update,
        Ok(Some(_)) => panic!("expected a topology update, got another command"),
        Ok(None) => panic!("the reload task ended"),
        Err(_) => panic!("no topology update within 20 s"),
    }
}

/// The task end to end, without a driver: an explicit request is always answered, an edit
/// by rename is noticed, an unchanged file sends nothing, and a refused edit says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_reads_edits_and_answers_requests() {
    const DEADLINE: Duration = Duration::from_secs(20);
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("topology.toml");
    let alone = "[managers.alpha]\naddress = \"127.0.0.1:7401\"\n";
    fs::write(&path, alone).unwrap();
    let (commands, mut updates) = mpsc::channel(8);
    let (requests_tx, requests) = mpsc::channel(REQUESTS_MAX);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let task = tokio::spawn(run(
        Reloader {
            file: path.clone(),
            version: version(alone.as_bytes()),
            running: running("alpha", "127.0.0.1:7401", false),
            commands,
            driver: None,
        },
        requests,
        shutdown,
    ));

    let request = ReloadRequest {
        connection: 7,
        id: 9,
    };
    requests_tx.send(request).await.unwrap();
    let update = next(&mut updates).await;
    assert_eq!(update.requested_by, Some(request));
    assert_eq!(update.version, version(alone.as_bytes()));
    assert!(update.result.is_ok());

    // Rewritten with the same bytes (by rename, as editors do), then edited to add a
    // manager: the next update is the edit (an unchanged read sends nothing).
    let temporary = folder.path().join(".topology.toml.tmp");
    fs::write(&temporary, alone).unwrap();
    fs::rename(&temporary, &path).unwrap();
    let two = format!("{alone}[managers.bravo]\naddress = \"127.0.0.1:7402\"\n");
    fs::write(&temporary, &two).unwrap();
    fs::rename(&temporary, &path).unwrap();
    let update = next(&mut updates).await;
    assert_eq!(update.requested_by, None);
    assert_eq!(update.version, version(two.as_bytes()));
    let topology = update.result.unwrap();
    assert!(topology.manager("bravo").is_some());

    // Links without TLS: refused, with the reason.
    let linked = format!("{two}[[links]]\nbetween = [\"alpha\", \"bravo\"]\n");
    fs::write(&path, &linked).unwrap();
    let update = next(&mut updates).await;
    let reason = update.result.unwrap_err();
    assert!(reason.contains("without TLS for links"), "{reason}");

    shutdown_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}
