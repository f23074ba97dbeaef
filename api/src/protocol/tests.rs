//! Unit tests of the frame codec: round trips, borrowed-reply encoding, limits and garbage.

use super::*;

/// Owned deliveries and their borrowed forms, with varint lengths of one and two bytes.
fn deliveries(count: usize) -> Vec<Delivery> {
    (0..count)
        .map(|i| Delivery {
            id: MessageId(u128::MAX / (i as u128 + 1)),
            body: vec![i as u8; i * 37 % 300],
            headers: (0..i % 3)
                .map(|h| (format!("key{h}"), "v".repeat(h * 90)))
                .collect(),
            priority: (i % 10) as u8,
            expires_at_ms: (i % 2 == 0).then_some(i as u64 * 1_000_000),
            correlation_id: (i % 3 == 0).then(|| format!("corr-{i}")),
            reply_to: (i % 4 == 0).then(|| "replies@alpha".to_owned()),
            persistent: i % 2 == 1,
            origin: "o".repeat(1 + i % 140),
            delivery_count: i as u32 * 1000,
            trace: (0..i % 5)
                .map(|t| Trace {
                    manager: format!("m{t}"),
                    at_ms: 1 << (t * 9),
                })
                .collect(),
            lease: (i % 2 == 0).then_some(i as u64 + 300),
        })
        .collect()
}

#[test]
fn a_borrowed_messages_reply_is_the_owned_one_byte_for_byte() {
    for count in [0, 1, 7, 200] {
        let owned = deliveries(count);
        let headers: Vec<Vec<(&str, &str)>> = owned
            .iter()
            .map(|d| {
                d.headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .collect();
        let traces: Vec<Vec<(&str, u64)>> = owned
            .iter()
            .map(|d| {
                d.trace
                    .iter()
                    .map(|t| (t.manager.as_str(), t.at_ms))
                    .collect()
            })
            .collect();
        let borrowed: Vec<DeliveryRef<'_>> = owned
            .iter()
            .zip(&headers)
            .zip(&traces)
            .map(|((d, headers), trace)| DeliveryRef {
                id: d.id,
                body: &d.body,
                headers,
                priority: d.priority,
                expires_at_ms: d.expires_at_ms,
                correlation_id: d.correlation_id.as_deref(),
                reply_to: d.reply_to.as_deref(),
                persistent: d.persistent,
                origin: &d.origin,
                delivery_count: d.delivery_count,
                trace,
                lease: d.lease,
            })
            .collect();
        let encoded = encode_messages_reply(300 + count as u64, &borrowed).unwrap();
        let frame = ServerFrame::Reply {
            id: 300 + count as u64,
            result: Ok(Reply::Messages(owned.clone())),
        };
        assert_eq!(encoded, encode(&frame).unwrap(), "{count} deliveries");
        assert_eq!(decode::<ServerFrame>(&encoded[4..]).unwrap(), frame);
    }
}

fn request(operation: Operation) -> ClientFrame {
    ClientFrame::Request(Request { id: 7, operation })
}

/// Reads `frames` from `reader`, in order, and then the end of the stream.
async fn reads_back(reader: &mut (impl AsyncRead + Unpin), frames: &[ClientFrame]) {
    for frame in frames {
        assert_eq!(&read_frame::<ClientFrame, _>(reader).await.unwrap(), frame);
    }
    assert!(matches!(
        read_frame::<ClientFrame, _>(reader).await,
        Err(FrameError::Closed)
    ));
}

#[test]
fn an_event_from_encoded_message_bytes_is_the_event_frame() {
    for (i, delivery) in deliveries(40).into_iter().enumerate() {
        let subscription = (i as u64) << (i % 60);
        let message = postcard::to_allocvec(&delivery).unwrap();
        let mut out = vec![7, 7];
        encode_event_into(subscription, &message, &mut out).unwrap();
        let frame = ServerFrame::Event {
            subscription,
            message: delivery,
        };
        assert_eq!(out[2..], encode(&frame).unwrap()[..], "delivery {i}");
    }
}

#[tokio::test]
async fn a_frame_over_the_callers_limit_is_refused_before_its_bytes_come() {
    let mut wire: &[u8] = &(HELLO_BYTES_MAX as u32 + 1).to_le_bytes();
    let read = read_frame_within::<ClientFrame, _>(&mut wire, HELLO_BYTES_MAX).await;
    assert!(
        matches!(read, Err(FrameError::TooLarge { limit, .. }) if limit == HELLO_BYTES_MAX),
        "{read:?}"
    );
    // A frame announced large and cut short is an error, not an allocation of its length.
    let mut wire: &[u8] = &(FRAME_BYTES_MAX as u32).to_le_bytes();
    let read = read_frame::<ClientFrame, _>(&mut wire).await;
    assert!(matches!(read, Err(FrameError::Io(_))), "{read:?}");
}

#[tokio::test]
async fn frames_round_trip() {
    let frames = vec![
        ClientFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "t".into(),
        }),
        request(Operation::Put {
            address: "orders@charlie".into(),
            message: OutgoingMessage {
                body: b"hi".to_vec(),
                priority: 9,
                ..Default::default()
            },
        }),
        request(Operation::Get {
            queue: "q".into(),
            timeout_ms: 5,
            max: 3,
            selector: Selector {
                correlation_id: Some("c".into()),
            },
            lease_ms: Some(100),
        }),
        request(Operation::Status),
    ];
    let mut wire = Vec::new();
    for frame in &frames {
        write_frame(&mut wire, frame).await.unwrap();
    }
    reads_back(&mut wire.as_slice(), &frames).await;
}

/// A frame that reaches the reader a few bytes at a time is assembled whole, and the
/// frame after it is left to the next read.
#[tokio::test]
async fn frames_arriving_in_pieces_are_read_whole_and_apart() {
    let frames: Vec<ClientFrame> = (0..3)
        .map(|i| {
            request(Operation::Put {
                address: "q".into(),
                message: OutgoingMessage {
                    body: vec![i; 100 + usize::from(i)],
                    ..Default::default()
                },
            })
        })
        .collect();
    // At most seven bytes go across at a time.
    let (mut near, mut far) = tokio::io::duplex(7);
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        for frame in &sent {
            write_frame(&mut far, frame).await.unwrap();
        }
        far.shutdown().await.unwrap();
    });
    reads_back(&mut near, &frames).await;
    writer.await.unwrap();
}

#[tokio::test]
async fn a_huge_length_prefix_is_refused_before_allocating() {
    let mut wire: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let error = read_frame::<ClientFrame, _>(&mut wire).await.unwrap_err();
    assert!(matches!(
        error,
        FrameError::TooLarge {
            bytes: 0xffff_ffff,
            ..
        }
    ));
}

#[tokio::test]
async fn truncated_and_garbage_frames_are_errors() {
    let full = encode(&request(Operation::Status)).unwrap();
    let mut truncated = &full[..full.len() - 1];
    assert!(matches!(
        read_frame::<ClientFrame, _>(&mut truncated).await,
        Err(FrameError::Io(_))
    ));
    let mut garbage: &[u8] = &[3, 0, 0, 0, 0xfe, 0xfe, 0xfe];
    assert!(matches!(
        read_frame::<ClientFrame, _>(&mut garbage).await,
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn decoding_random_bytes_never_panics() {
    let mut state = 0x1234_5678_9abc_def0_u64;
    for length in 0..2000 {
        let bytes: Vec<u8> = (0..length % 97)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = decode::<ClientFrame>(&bytes);
        let _ = decode::<ServerFrame>(&bytes);
    }
}
