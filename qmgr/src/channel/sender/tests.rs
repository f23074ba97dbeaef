//! Tests of the sender state machine on its own: frames are fed to it and taken from it by
//! hand, and time is an argument, so each case says exactly when a timer fires.

use super::*;

const RECEIVER_EPOCH: u64 = 77;

fn fresh(now: Instant) -> Sender {
    let state = SenderState {
        epoch: 1,
        receiver_epoch: Some(RECEIVER_EPOCH),
        next_seq: 1,
    };
    Sender::new("alpha", "bravo", state, [], now).unwrap()
}

fn push_durable(sender: &mut Sender, count: usize, bytes: usize) {
    for i in 0..count {
        sender
            .push(1000 + i as u128, vec![7; bytes].into())
            .unwrap();
    }
    sender.handle_seq_durable(sender.state().next_seq - 1);
}

fn welcome(epoch: u64, stored_up_to: u64) -> Welcome {
    Welcome {
        protocol_version: CHANNEL_PROTOCOL_VERSION,
        epoch,
        stored_up_to,
    }
}

fn connect(sender: &mut Sender, now: Instant, stored_up_to: u64) -> Vec<u64> {
    sender.handle_connecting(now);
    assert!(matches!(
        sender.poll_transmit(now),
        Some(ChannelFrame::Hello(_))
    ));
    sender
        .handle_connected(now, welcome(RECEIVER_EPOCH, stored_up_to))
        .unwrap()
}

fn batch(frame: Option<ChannelFrame>) -> Batch {
    match frame {
        Some(ChannelFrame::Batch(batch)) => batch,
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn drain_batches(sender: &mut Sender, now: Instant) -> Vec<Batch> {
    std::iter::from_fn(|| sender.poll_transmit(now).map(|f| batch(Some(f)))).collect()
}

#[test]
fn push_assigns_consecutive_seqs_from_the_restored_counter() {
    let now = Instant::now();
    let state = SenderState {
        epoch: 1,
        receiver_epoch: None,
        next_seq: 41,
    };
    let mut sender = Sender::new("alpha", "bravo", state, [], now).unwrap();
    assert_eq!(sender.push(1, b"a".to_vec().into()), Ok(41));
    assert_eq!(sender.push(2, b"b".to_vec().into()), Ok(42));
    assert_eq!(sender.state().next_seq, 43);
}

#[test]
fn assignments_that_could_not_be_made_durable_are_handed_back_and_renumbered() {
    let now = Instant::now();
    let mut sender = fresh(now);
    connect(&mut sender, now, 0);
    push_durable(&mut sender, 2, 1);
    sender.push(7, vec![1].into()).unwrap();
    sender.push(8, vec![2].into()).unwrap();
    assert_eq!(sender.handle_seq_lost(), vec![7, 8]);
    assert_eq!(sender.state().next_seq, 3);
    assert_eq!(sender.held_len(), 2);
    assert_eq!(
        sender.push(9, vec![3].into()),
        Ok(3),
        "the lost numbers are reused"
    );
    sender.handle_seq_durable(3);
    let sent = drain_batches(&mut sender, now);
    let ids: Vec<u128> = sent
        .iter()
        .flat_map(|b| b.messages.iter().map(|m| m.id))
        .collect();
    assert_eq!(ids, vec![1000, 1001, 9]);
}

#[test]
fn hello_first_and_nothing_before_the_welcome() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 3, 1);
    assert_eq!(sender.poll_transmit(now), None, "not connected");
    sender.handle_connecting(now);
    let Some(ChannelFrame::Hello(hello)) = sender.poll_transmit(now) else {
        panic!("no hello");
    };
    assert_eq!((hello.epoch, hello.next_seq), (1, 4));
    assert_eq!((hello.from.as_str(), hello.to.as_str()), ("alpha", "bravo"));
    assert_eq!(
        sender.poll_transmit(now),
        None,
        "batches wait for the welcome"
    );
}

#[test]
fn only_durable_assignments_are_transmitted() {
    let now = Instant::now();
    let mut sender = fresh(now);
    connect(&mut sender, now, 0);
    sender.push(1, vec![1].into()).unwrap();
    sender.push(2, vec![2].into()).unwrap();
    assert_eq!(sender.poll_transmit(now), None);
    sender.handle_seq_durable(1);
    let first = batch(sender.poll_transmit(now));
    assert_eq!((first.first_seq, first.messages.len()), (1, 1));
    assert_eq!(sender.poll_transmit(now), None);
    sender.handle_seq_durable(2);
    assert_eq!(batch(sender.poll_transmit(now)).first_seq, 2);
}

#[test]
fn welcome_deletes_what_the_receiver_holds_and_resumes_after_it() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 5, 1);
    assert_eq!(connect(&mut sender, now, 3), vec![1, 2, 3]);
    assert!(!sender.is_reconciling());
    let resumed = batch(sender.poll_transmit(now));
    assert_eq!(resumed.first_seq, 4);
    assert_eq!(resumed.messages.len(), 2);
}

#[test]
fn a_receiver_behind_what_was_deleted_is_resynced_not_waited_for() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 10, 1);
    connect(&mut sender, now, 0);
    drain_batches(&mut sender, now);
    assert_eq!(sender.handle_ack(now, 6).unwrap(), vec![1, 2, 3, 4, 5, 6]);
    sender.handle_disconnected();
    // The receiver comes back holding only up to 2: 3..=6 were deleted here.
    assert_eq!(connect(&mut sender, now, 2), Vec::<u64>::new());
    assert!(sender.is_reconciling());
    assert_eq!(
        sender.poll_transmit(now),
        Some(ChannelFrame::Resync(Resync {
            next_seq: 7,
            reconcile_until: 11,
        }))
    );
    assert_eq!(batch(sender.poll_transmit(now)).first_seq, 7);
    sender.handle_ack(now, 10).unwrap();
    assert!(
        !sender.is_reconciling(),
        "every message it could duplicate is acked"
    );
}

#[test]
fn a_new_receiver_epoch_is_resynced_and_its_stored_point_not_trusted() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 4, 1);
    sender.handle_connecting(now);
    sender.poll_transmit(now);
    let deleted = sender
        .handle_connected(now, welcome(RECEIVER_EPOCH + 1, 3))
        .unwrap();
    assert!(
        deleted.is_empty(),
        "a stored point under another epoch deletes nothing"
    );
    assert_eq!(sender.state().receiver_epoch, Some(RECEIVER_EPOCH + 1));
    assert!(matches!(
        sender.poll_transmit(now),
        Some(ChannelFrame::Resync(Resync { next_seq: 1, .. }))
    ));
    assert_eq!(batch(sender.poll_transmit(now)).first_seq, 1);
}

#[test]
fn a_receiver_ahead_of_every_assignment_is_refused() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 2, 1);
    sender.handle_connecting(now);
    sender.poll_transmit(now);
    assert_eq!(
        sender.handle_connected(now, welcome(RECEIVER_EPOCH, 3)),
        Err(SenderError::ReceiverAhead {
            stored_up_to: 3,
            next_seq: 3
        })
    );
}

#[test]
fn the_welcome_checks_the_protocol_version_and_comes_once() {
    let now = Instant::now();
    let mut sender = fresh(now);
    sender.handle_connecting(now);
    let mut old = welcome(RECEIVER_EPOCH, 0);
    old.protocol_version = CHANNEL_PROTOCOL_VERSION + 1;
    assert!(matches!(
        sender.handle_connected(now, old),
        Err(SenderError::Version { .. })
    ));
    connect(&mut sender, now, 0);
    assert!(matches!(
        sender.handle_connected(now, welcome(RECEIVER_EPOCH, 0)),
        Err(SenderError::Unexpected { .. })
    ));
}

#[test]
fn the_window_bounds_what_is_in_flight_and_acks_open_it() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, WINDOW_MESSAGES_MAX + 10, 1);
    connect(&mut sender, now, 0);
    let batches = drain_batches(&mut sender, now);
    let sent: usize = batches.iter().map(|b| b.messages.len()).sum();
    assert_eq!(sent, WINDOW_MESSAGES_MAX);
    assert!(
        batches
            .iter()
            .all(|b| b.messages.len() <= BATCH_MESSAGES_MAX)
    );
    let deleted = sender.handle_ack(now, 4).unwrap();
    assert_eq!(deleted, vec![1, 2, 3, 4]);
    let more = batch(sender.poll_transmit(now));
    assert_eq!(more.first_seq, WINDOW_MESSAGES_MAX as u64 + 1);
    assert_eq!(more.messages.len(), 4);
}

#[test]
fn batches_stop_at_the_byte_limit_but_a_large_message_goes_alone() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 4, BATCH_BYTES_MAX / 3);
    sender.push(9, vec![0; BATCH_BYTES_MAX + 1].into()).unwrap();
    sender.handle_seq_durable(5);
    connect(&mut sender, now, 0);
    let sizes: Vec<usize> = drain_batches(&mut sender, now)
        .iter()
        .map(|b| b.messages.len())
        .collect();
    assert_eq!(sizes, vec![3, 1, 1]);
}

#[test]
fn acks_delete_a_prefix_ignore_stale_values_and_refuse_unsent_seqs() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 3, 1);
    sender.push(4, vec![].into()).unwrap(); // assigned, not durable: never sent
    connect(&mut sender, now, 0);
    drain_batches(&mut sender, now);
    assert_eq!(sender.handle_ack(now, 2).unwrap(), vec![1, 2]);
    assert_eq!(sender.handle_ack(now, 1).unwrap(), Vec::<u64>::new());
    assert_eq!(
        sender.handle_ack(now, 4),
        Err(SenderError::AckBeyondSent {
            up_to: 4,
            sent_max: 3
        })
    );
    assert_eq!(sender.held_len(), 2);
}

#[test]
fn a_disconnect_makes_everything_unacked_unsent_again() {
    let now = Instant::now();
    let mut sender = fresh(now);
    push_durable(&mut sender, 5, 1);
    connect(&mut sender, now, 0);
    drain_batches(&mut sender, now);
    sender.handle_ack(now, 2).unwrap();
    sender.handle_disconnected();
    assert!(!sender.is_connected());
    assert_eq!(sender.poll_transmit(now), None);
    connect(&mut sender, now, 2);
    let resent = batch(sender.poll_transmit(now));
    assert_eq!((resent.first_seq, resent.messages.len()), (3, 3));
}

#[test]
fn keep_alive_pings_an_idle_link_and_declares_a_silent_one_dead() {
    let start = Instant::now();
    let mut sender = fresh(start);
    connect(&mut sender, start, 0);
    assert_eq!(sender.poll_timeout(), Some(start + KEEP_ALIVE_IDLE));
    sender.handle_timeout(start + KEEP_ALIVE_IDLE - Duration::from_millis(1));
    assert_eq!(sender.poll_transmit(start), None, "not idle yet");

    let idle = start + KEEP_ALIVE_IDLE;
    sender.handle_timeout(idle);
    let Some(ChannelFrame::Ping { nonce }) = sender.poll_transmit(idle) else {
        panic!("no ping");
    };
    // An answer keeps the link alive.
    let answered = idle + Duration::from_secs(1);
    sender
        .handle_frame(answered, ChannelFrame::Pong { nonce })
        .unwrap();
    assert_eq!(sender.poll_timeout(), Some(answered + KEEP_ALIVE_IDLE));

    // Silence: pings, then death after KEEP_ALIVE_DEAD without any frame.
    let mut now = answered;
    while !sender.is_dead() {
        now = sender.poll_timeout().unwrap();
        sender.handle_timeout(now);
        sender.poll_transmit(now);
    }
    assert_eq!(now, answered + KEEP_ALIVE_DEAD);
    assert_eq!(sender.poll_timeout(), None);
    sender.handle_disconnected();
    assert!(!sender.is_dead());
}

#[test]
fn a_ping_from_the_receiver_is_answered() {
    let now = Instant::now();
    let mut sender = fresh(now);
    connect(&mut sender, now, 0);
    sender
        .handle_frame(now, ChannelFrame::Ping { nonce: 9 })
        .unwrap();
    assert_eq!(
        sender.poll_transmit(now),
        Some(ChannelFrame::Pong { nonce: 9 })
    );
}

#[test]
fn push_refuses_past_the_held_limits() {
    let now = Instant::now();
    let mut sender = fresh(now);
    assert!(matches!(
        sender.push(1, vec![0; WIRE_MESSAGE_BYTES_MAX + 1].into()),
        Err(PushError::TooLarge { .. })
    ));
    for i in 0..HELD_MESSAGES_MAX {
        sender.push(i as u128, Vec::new().into()).unwrap();
    }
    assert_eq!(sender.push(0, Vec::new().into()), Err(PushError::Full));

    let mut sender = fresh(now);
    let mut room = HELD_BYTES_MAX;
    while room >= WIRE_MESSAGE_BYTES_MAX {
        sender
            .push(1, vec![0; WIRE_MESSAGE_BYTES_MAX].into())
            .unwrap();
        room -= WIRE_MESSAGE_BYTES_MAX;
    }
    assert_eq!(
        sender.push(2, vec![0; room + 1].into()),
        Err(PushError::Full)
    );
    sender.push(3, vec![0; room].into()).unwrap();
}

#[test]
fn restore_checks_the_held_messages_against_the_counter() {
    let now = Instant::now();
    let state = SenderState {
        epoch: 1,
        receiver_epoch: None,
        next_seq: 4,
    };
    let held = |seqs: &[u64]| -> Vec<HeldMessage> {
        seqs.iter()
            .map(|&seq| HeldMessage {
                seq,
                id: u128::from(seq),
                payload: Vec::new().into(),
            })
            .collect()
    };
    assert!(Sender::new("a", "b", state, held(&[2, 3]), now).is_ok());
    assert!(Sender::new("a", "b", state, held(&[1, 3]), now).is_err());
    assert!(Sender::new("a", "b", state, held(&[1, 2]), now).is_err());
    let zero = SenderState {
        next_seq: 0,
        ..state
    };
    assert!(Sender::new("a", "b", zero, [], now).is_err());
    // Restored messages are transmitted without another durability round.
    let mut sender = Sender::new("a", "b", state, held(&[2, 3]), now).unwrap();
    sender.handle_connecting(now);
    sender.poll_transmit(now);
    sender
        .handle_connected(now, welcome(RECEIVER_EPOCH, 1))
        .unwrap();
    assert_eq!(batch(sender.poll_transmit(now)).messages.len(), 2);
}
