//! The receiver's unit tests.
use super::*;

const SENDER_EPOCH: u64 = 5;

fn state(stored_up_to: u64) -> ReceiverState {
    ReceiverState {
        epoch: 1,
        sender_epoch: Some(SENDER_EPOCH),
        stored_up_to,
        reconcile_until: 0,
    }
}

fn hello(epoch: u64, next_seq: u64) -> Hello {
    Hello {
        protocol_version: CHANNEL_PROTOCOL_VERSION,
        from: "alpha".into(),
        to: "bravo".into(),
        epoch,
        next_seq,
    }
}

fn messages(ids: std::ops::Range<u128>) -> Vec<WireMessage> {
    ids.map(|id| WireMessage {
        id,
        payload: id.to_le_bytes().to_vec().into(),
    })
    .collect()
}

fn greeted(stored_up_to: u64, recent: impl IntoIterator<Item = u128>) -> Receiver {
    let mut receiver = Receiver::new(state(stored_up_to), recent);
    receiver.handle_hello(hello(SENDER_EPOCH, 100)).unwrap();
    receiver
}

fn seqs(store: &Store) -> Vec<u64> {
    store.messages_to_store.iter().map(|m| m.seq).collect()
}

#[test]
fn a_failed_store_rolls_back_to_the_durable_point_and_takes_the_resends() {
    let mut receiver = greeted(5, 1..=5);
    let durable = receiver.state();
    let store = receiver.handle_batch(6, messages(6..9)).unwrap();
    assert_eq!(seqs(&store), vec![6, 7, 8]);
    receiver.handle_store_failed(durable, &[6, 7, 8]);
    assert_eq!(receiver.durable_up_to(), 5);
    assert_eq!(
        receiver.recent_ids().collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "the window keeps what was stored and forgets what failed"
    );
    receiver.handle_hello(hello(SENDER_EPOCH, 100)).unwrap();
    let retry = receiver.handle_batch(6, messages(6..9)).unwrap();
    assert_eq!(
        seqs(&retry),
        vec![6, 7, 8],
        "resends of what failed are taken"
    );
}

#[test]
fn the_welcome_reports_the_durable_point_and_epoch() {
    let mut receiver = Receiver::new(state(7), []);
    let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 9)).unwrap();
    assert_eq!(
        welcome,
        Welcome {
            protocol_version: CHANNEL_PROTOCOL_VERSION,
            epoch: 1,
            stored_up_to: 7
        }
    );
    let mut other = hello(SENDER_EPOCH, 9);
    other.protocol_version += 1;
    assert!(matches!(
        receiver.handle_hello(other),
        Err(ReceiverError::Version { .. })
    ));
}

#[test]
fn nothing_is_accepted_before_the_hello() {
    let mut receiver = Receiver::new(state(0), []);
    assert!(matches!(
        receiver.handle_batch(1, messages(1..2)),
        Err(ReceiverError::Unexpected { .. })
    ));
    receiver.handle_hello(hello(SENDER_EPOCH, 2)).unwrap();
    receiver.handle_disconnected();
    assert!(receiver.handle_batch(1, messages(1..2)).is_err());
}

#[test]
fn resends_at_or_below_the_stored_point_are_discarded() {
    let mut receiver = greeted(3, []);
    // Seqs 2..=6: 2 and 3 are resends.
    let store = receiver.handle_batch(2, messages(2..7)).unwrap();
    assert_eq!(seqs(&store), vec![4, 5, 6]);
    assert_eq!(store.stored_up_to(), 6);
    let again = receiver.handle_batch(4, messages(4..7)).unwrap();
    assert!(again.messages_to_store.is_empty());
    assert_eq!(again.stored_up_to(), 6);
}

#[test]
fn a_gap_is_a_protocol_error() {
    let mut receiver = greeted(3, []);
    assert_eq!(
        receiver.handle_batch(5, messages(5..6)),
        Err(ReceiverError::Gap {
            first_seq: 5,
            expected: 4
        })
    );
}

#[test]
fn invalid_batches_are_refused() {
    let mut receiver = greeted(0, []);
    assert!(receiver.handle_batch(1, Vec::new()).is_err());
    assert!(receiver.handle_batch(0, messages(0..1)).is_err());
    assert!(
        receiver
            .handle_batch(1, messages(0..BATCH_MESSAGES_MAX as u128 + 1))
            .is_err()
    );
    let mut receiver = greeted(u64::MAX - 1, []);
    assert!(receiver.handle_batch(u64::MAX, messages(0..2)).is_err());
}

#[test]
fn acks_wait_for_durability_and_the_welcome_reports_only_what_is_durable() {
    let mut receiver = greeted(0, []);
    let store = receiver.handle_batch(1, messages(1..4)).unwrap();
    assert_eq!(receiver.durable_up_to(), 0);
    // Reconnect before the write is durable: the welcome must not claim it.
    receiver.handle_disconnected();
    let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 4)).unwrap();
    assert_eq!(welcome.stored_up_to, 0);
    // The resend is discarded: the write in flight already carries it.
    assert!(
        receiver
            .handle_batch(1, messages(1..4))
            .unwrap()
            .messages_to_store
            .is_empty()
    );
    assert_eq!(
        receiver.handle_stored(&store.state),
        Some(ChannelFrame::Ack { up_to: 3 })
    );
    assert_eq!(receiver.durable_up_to(), 3);
}

#[test]
fn no_ack_goes_out_before_the_connection_is_greeted() {
    let mut receiver = greeted(0, []);
    let store = receiver.handle_batch(1, messages(1..2)).unwrap();
    receiver.handle_disconnected();
    assert_eq!(receiver.handle_stored(&store.state), None);
    assert_eq!(
        receiver
            .handle_hello(hello(SENDER_EPOCH, 2))
            .unwrap()
            .stored_up_to,
        1
    );
}

#[test]
fn a_resync_moves_the_stored_point_and_dedups_by_id_below_the_bound() {
    // Ids 1..=20 are stored; the channel state says only 10.
    let mut receiver = greeted(10, 1..=20);
    let store = receiver
        .handle_resync(Resync {
            next_seq: 16,
            reconcile_until: 25,
        })
        .unwrap();
    assert!(store.messages_to_store.is_empty());
    assert_eq!(store.stored_up_to(), 15);
    assert!(receiver.is_reconciling());
    // Seqs 16..=26 carry ids 16..=26: 16..=20 were stored already.
    let store = receiver.handle_batch(16, messages(16..27)).unwrap();
    let ids: Vec<u128> = store.messages_to_store.iter().map(|m| m.id).collect();
    assert_eq!(ids, (21..27).collect::<Vec<u128>>());
    assert_eq!(receiver.duplicates_skipped_by_id(), 5);
    assert_eq!(store.stored_up_to(), 26);
    assert!(!receiver.is_reconciling());
    assert_eq!(
        store.state.reconcile_until, 0,
        "done, and persisted as done"
    );
}

#[test]
fn outside_reconciliation_ids_are_not_checked() {
    let mut receiver = greeted(0, [1]);
    let store = receiver.handle_batch(1, messages(1..2)).unwrap();
    assert_eq!(seqs(&store), vec![1]);
}

#[test]
fn a_restored_state_reconciles_below_the_senders_next_seq() {
    let restored = state(10).restored(2);
    let mut receiver = Receiver::new(restored, 1..=15);
    let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 16)).unwrap();
    assert_eq!((welcome.epoch, welcome.stored_up_to), (2, 10));
    assert_eq!(receiver.state().reconcile_until, 16);
    let store = receiver.handle_batch(11, messages(11..18)).unwrap();
    assert_eq!(seqs(&store), vec![16, 17]);
}

#[test]
fn a_new_sender_epoch_restarts_the_numbering() {
    let mut receiver = greeted(50, 1..=50);
    let in_flight = receiver.handle_batch(51, messages(51..52)).unwrap();
    receiver.handle_disconnected();
    let welcome = receiver.handle_hello(hello(SENDER_EPOCH + 1, 3)).unwrap();
    assert_eq!(welcome.stored_up_to, 0);
    assert_eq!(receiver.state().sender_epoch, Some(SENDER_EPOCH + 1));
    // A write of the old numbering completing now acks nothing.
    assert_eq!(receiver.handle_stored(&in_flight.state), None);
    // The wiped sender resends ids 50 and 51 as seqs 1 and 2, then a new one.
    let resent = vec![
        WireMessage {
            id: 50,
            payload: Vec::new().into(),
        },
        WireMessage {
            id: 51,
            payload: Vec::new().into(),
        },
        WireMessage {
            id: 99,
            payload: Vec::new().into(),
        },
    ];
    let store = receiver.handle_batch(1, resent).unwrap();
    let ids: Vec<u128> = store.messages_to_store.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![99]);
}

#[test]
fn an_id_in_the_window_twice_stays_known_until_both_leave() {
    let mut recent = RecentIds::default();
    recent.insert(7);
    assert!(recent.contains(7));
    recent.insert(7);
    for id in 0..RECENT_IDS_MAX as u128 - 1 {
        recent.insert(1000 + id);
    }
    // The first 7 has left the window, the second not yet.
    assert!(recent.contains(7));
    recent.insert(1);
    assert!(!recent.contains(7));
    recent.drop_index();
    assert!(recent.contains(1) && !recent.contains(7));
}

#[test]
fn the_recent_window_is_bounded() {
    let mut receiver = Receiver::new(state(0), 0..(RECENT_IDS_MAX as u128 + 10));
    assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
    assert!(!receiver.recent.contains(9));
    assert!(receiver.recent.contains(10));
    receiver.handle_hello(hello(SENDER_EPOCH, 1)).unwrap();
    receiver
        .handle_batch(1, messages(1_000_000..1_000_100))
        .unwrap();
    assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
    assert!(!receiver.recent.contains(109));
    assert!(receiver.recent.contains(1_000_099));
    // The index built for those lookups follows the window as it moves.
    receiver
        .handle_batch(101, messages(2_000_000..2_000_100))
        .unwrap();
    assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
    assert_eq!(
        receiver.recent.index.as_ref().unwrap().len(),
        RECENT_IDS_MAX
    );
    assert!(!receiver.recent.contains(209));
    assert!(receiver.recent.contains(2_000_000));
}

#[test]
fn pings_are_answered_and_sender_only_frames_refused() {
    let mut receiver = greeted(0, []);
    assert_eq!(
        receiver.handle_frame(ChannelFrame::Ping { nonce: 3 }),
        Ok(ReceiverOutput::Send(ChannelFrame::Pong { nonce: 3 }))
    );
    assert!(
        receiver
            .handle_frame(ChannelFrame::Ack { up_to: 1 })
            .is_err()
    );
    assert!(matches!(
        receiver.handle_frame(crate::channel::frame::goodbye("bye")),
        Err(ReceiverError::Goodbye { .. })
    ));
}

#[test]
fn an_early_copy_is_taken_only_where_the_stream_would_go_on() {
    let mut receiver = Receiver::new(state(5), []);
    assert!(
        !receiver.takes_early(6, 2, 0),
        "before the handshake nothing is taken"
    );
    receiver.handle_hello(hello(SENDER_EPOCH, 100)).unwrap();
    assert!(receiver.takes_early(6, 2, 0), "the next batch");
    assert!(receiver.takes_early(4, 3, 0), "one reaching past the point");
    assert!(
        !receiver.takes_early(7, 2, 0),
        "a gap: the stream fills it first"
    );
    assert!(!receiver.takes_early(3, 3, 0), "all taken already");
    assert!(!receiver.takes_early(6, 0, 0), "an empty batch");
    assert!(
        !receiver.takes_early(0, 9, 0),
        "sequence numbers start at 1"
    );
    assert!(receiver.takes_early(1, usize::MAX, 0), "no overflow");
    let store = receiver.handle_batch(6, messages(6..8)).unwrap();
    assert_eq!(seqs(&store), vec![6, 7]);
    assert!(
        !receiver.takes_early(6, 2, 0),
        "taken, not yet durable: the accepted point counts"
    );
    assert!(
        receiver.takes_early(10, 1, 9),
        "follows on from batches waiting to be handled before it"
    );
    assert!(
        !receiver.takes_early(11, 1, 9),
        "a gap after those waiting too"
    );
    receiver.handle_disconnected();
    assert!(
        !receiver.takes_early(8, 1, 0),
        "not on a connection not greeted"
    );
}

#[test]
fn the_stream_copy_of_a_batch_taken_early_asks_for_no_write() {
    let mut receiver = greeted(5, []);
    let batch = |first_seq: u64, ids: std::ops::Range<u128>| {
        ChannelFrame::Batch(Batch {
            first_seq,
            messages: messages(ids),
        })
    };
    assert!(matches!(
        receiver.handle_frame(batch(6, 6..9)),
        Ok(ReceiverOutput::Store(_))
    ));
    assert_eq!(
        receiver.handle_frame(batch(6, 6..9)),
        Ok(ReceiverOutput::Nothing)
    );
    let Ok(ReceiverOutput::Store(store)) = receiver.handle_frame(batch(7, 7..10)) else {
        panic!("a batch reaching past the point is stored");
    };
    assert_eq!(seqs(&store), vec![9], "only what is new");
}
