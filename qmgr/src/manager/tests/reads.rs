//! Reads (get, poll, browse, watch) never create a queue, and say where to read when the
//! queue lives on another manager.

use super::*;

const ALPHA_TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml");

/// The names of the queues the core holds, per its status.
fn queues(h: &mut Harness) -> Vec<String> {
    h.request(0, 900, Operation::Status);
    match h.replies(0).into_iter().find(|(id, _)| *id == 900) {
        Some((_, Ok(Reply::Status(status)))) => {
            status.queues.iter().map(|q| q.name.clone()).collect()
        }
        other => panic!("no status: {other:?}"),
    }
}

fn browse(h: &mut Harness, id: u64, queue: &str) {
    let operation = Operation::Browse {
        queue: queue.into(),
        max: 10,
    };
    h.request(0, id, operation);
}

fn error_of(h: &mut Harness, id: u64) -> ApiError {
    match h.replies(0).into_iter().find(|(reply, _)| *reply == id) {
        Some((_, Err(error))) => error,
        other => panic!("request {id} did not fail: {other:?}"),
    }
}

#[tokio::test]
async fn reads_of_a_queue_that_does_not_exist_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    let before = queues(&mut h);
    h.get(0, 1, "nothing", 0, None);
    assert!(h.messages(0, 1).is_empty());
    browse(&mut h, 2, "nothing");
    assert!(h.messages(0, 2).is_empty());
    h.request(
        0,
        3,
        Operation::Subscribe {
            queue: "nothing".into(),
        },
    );
    h.request(
        0,
        4,
        Operation::Delete {
            queue: "nothing".into(),
        },
    );
    h.settle().await;
    let replies = h.replies(0);
    assert!(
        matches!(replies[0], (3, Ok(Reply::Subscribed(_)))),
        "{replies:?}"
    );
    assert!(matches!(replies[1], (4, Ok(Reply::Done))), "{replies:?}");
    assert_eq!(queues(&mut h), before, "no read made `nothing`");
    // A get may wait: the first put makes the queue and serves it.
    h.get(1, 5, "later", 60_000, None);
    assert_eq!(queues(&mut h), before, "a waiting get made nothing");
    h.put(0, 6, "later", &["made by a put"]);
    h.settle().await;
    let got = h.messages(1, 5);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"made by a put");
    assert!(queues(&mut h).contains(&"later".to_owned()));
}

#[tokio::test]
async fn reads_of_queues_homed_elsewhere_say_where_they_live() {
    let text = std::fs::read_to_string(ALPHA_TOPOLOGY).expect("topology.toml");
    let topology = hopmq_routing::parse(&text, "topology.toml")
        .expect("valid")
        .topology;
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = ManagerName::new("alpha").expect("name");
    let mut h = Harness::open_in(dir.path(), 1, alpha, topology);
    let before = queues(&mut h);
    // `orders` is homed on delta.
    h.get(0, 1, "orders", 60_000, None);
    assert_eq!(
        error_of(&mut h, 1),
        ApiError::QueueElsewhere {
            queue: "orders".into(),
            home: "delta".into()
        }
    );
    browse(&mut h, 2, "orders");
    assert!(matches!(
        error_of(&mut h, 2),
        ApiError::QueueElsewhere { .. }
    ));
    h.request(
        0,
        3,
        Operation::Subscribe {
            queue: "orders".into(),
        },
    );
    assert!(matches!(
        error_of(&mut h, 3),
        ApiError::QueueElsewhere { .. }
    ));
    // Another manager's queue by name: reads are local.
    h.get(0, 4, "orders@delta", 0, None);
    assert_eq!(
        error_of(&mut h, 4),
        ApiError::NotLocal {
            queue: "orders".into(),
            manager: "delta".into()
        }
    );
    // This manager's own name is this manager's queue, whatever the topology homes.
    h.get(0, 5, "orders@alpha", 0, None);
    assert!(h.messages(0, 5).is_empty());
    assert_eq!(queues(&mut h), before, "no read made a queue");
    // A put to `orders@alpha` stays here, and is got here.
    h.put(0, 6, "orders@alpha", &["kept at alpha"]);
    h.settle().await;
    h.get(0, 7, "orders", 0, None);
    h.settle().await;
    let got = h.messages(0, 7);
    assert_eq!(got.len(), 1, "a local queue by that name is read here");
}
