//! The frames that cross a channel between two managers, and their codec.
//!
//! A frame is a little-endian `u32` length followed by that many bytes of postcard encoding one
//! [`ChannelFrame`]. postcard is not self-describing, so variants are only ever appended and the
//! handshake ([`Hello`] → [`Welcome`]) fixes [`CHANNEL_PROTOCOL_VERSION`] before anything else.
//!
//! **API boundary:** this wire format. Appending a variant or bumping the version is the only
//! compatible way to change it.
//!
//! Invariant: [`decode`] checks a length prefix against [`CHANNEL_FRAME_BYTES_MAX`] before it
//! allocates anything, and never panics, whatever the bytes.

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::store::format::RECORD_PAYLOAD_BYTES_MAX;

/// The channel protocol version this build speaks.
pub const CHANNEL_PROTOCOL_VERSION: u32 = 7;

/// Largest payload of one message on the wire: a message travels as the payload of one journal
/// record at both ends, so the journal's record limit is the message limit.
pub const WIRE_MESSAGE_BYTES_MAX: usize = RECORD_PAYLOAD_BYTES_MAX as usize;

/// The most messages one [`Batch`] carries. 256 matches the journal writer's batch target
/// (~256 records per group commit), so one batch is about one fsync at the receiver.
pub const BATCH_MESSAGES_MAX: usize = 256;

/// The sender stops filling a batch at this many payload bytes (a lone message larger than this
/// still travels, alone). Small enough that a receiver with the smallest segments
/// (`config::SEGMENT_BYTES_MIN`, 1 MiB) stores two merged batches in one journal group; 256
/// messages of 1 KiB still fill one.
pub const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Worst-case postcard overhead of one message: a 16-byte id as a varint (19 bytes) and a
/// payload length as a varint (5 bytes), rounded up.
pub const MESSAGE_OVERHEAD_BYTES_MAX: usize = 32;

/// Room for everything in a frame that is not message payload: the tag, sequence numbers,
/// manager names (64 bytes each in `routing`), a goodbye reason.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 64 * 1024;

/// The largest frame either side sends or accepts: the larger of a full batch and one
/// largest message, plus per-message and per-frame overhead.
pub const CHANNEL_FRAME_BYTES_MAX: usize = WIRE_MESSAGE_BYTES_MAX
    + BATCH_BYTES_MAX
    + BATCH_MESSAGES_MAX * MESSAGE_OVERHEAD_BYTES_MAX
    + FRAME_OVERHEAD_BYTES_MAX;

/// The longest [`ChannelFrame::Goodbye`] reason sent; longer ones are cut (at a char boundary).
pub const GOODBYE_REASON_BYTES_MAX: usize = 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

const _: () = assert!(CHANNEL_FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(GOODBYE_REASON_BYTES_MAX <= FRAME_OVERHEAD_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= WIRE_MESSAGE_BYTES_MAX);

/// Everything that crosses a channel, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelFrame {
    /// Sender → receiver, first frame of every connection.
    Hello(Hello),
    /// Receiver → sender, the answer to [`ChannelFrame::Hello`].
    Welcome(Welcome),
    /// Sender → receiver: consecutive messages starting at `first_seq`.
    Batch(Batch),
    /// Receiver → sender: every sequence number up to `up_to` is durable at the receiver.
    Ack {
        /// Highest sequence number stored durably, inclusive.
        up_to: u64,
    },
    /// Either way: are you there? Answered by [`ChannelFrame::Pong`] with the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Either way: the answer to [`ChannelFrame::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Either way: the connection is about to close, and why.
    Goodbye {
        /// Human-readable, at most [`GOODBYE_REASON_BYTES_MAX`] bytes.
        reason: String,
    },
    /// Sender → receiver, right after the handshake: the receiver's channel state does not match
    /// what the sender holds (it was restored or wiped), so move to `next_seq` and deduplicate by
    /// message id.
    Resync(Resync),
    /// Either way, on every connection: link-state advertisements to store and flood, or,
    /// empty, a heartbeat (see [`crate::channel::adjacency`]).
    LinkState(Vec<hopmq_routing::Lsa>),
    /// Either way, passed on hop by hop towards the manager it names: custody's
    /// confirmations and questions (see `crate::custody`). Since protocol version 3.
    Custody(CustodyFrame),
    /// Either way, on whichever connection carries link state: non-persistent publications,
    /// each a publication's record carrying the receiver's share of its destinations. Outside
    /// the sequence: never stored, acknowledged or sent again, so lost with the connection
    /// (what non-persistent means). At most [`BATCH_MESSAGES_MAX`] and about
    /// [`BATCH_BYTES_MAX`] bytes, as a batch. Since protocol version 6.
    Publications(Vec<WireMessage>),
}

/// Custody's control messages, which travel towards a manager rather than over one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustodyFrame {
    /// Destination → custodian: what the destination durably has of these streams.
    Confirm(Vec<crate::custody::Confirmation>),
    /// Custodian → destination: please confirm what you have of my streams.
    Query {
        /// The custodian asking.
        custodian: String,
        /// The destination asked.
        destination: String,
        /// The custodian's streams it asks about (a destination that lost its disk knows of
        /// none, and answers for these that it has nothing of them).
        epochs: Vec<u64>,
    },
}

impl CustodyFrame {
    /// The manager it goes to.
    pub fn towards(&self) -> Option<&str> {
        match self {
            Self::Confirm(confirmations) => confirmations.first().map(|c| c.custodian.as_str()),
            Self::Query { destination, .. } => Some(destination),
        }
    }
}

/// The sender's handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`CHANNEL_PROTOCOL_VERSION`] of the sender.
    pub protocol_version: u32,
    /// The sending manager.
    pub from: String,
    /// The manager the sender means to reach.
    pub to: String,
    /// The sender's channel epoch: chosen at random when its channel state was created, so a
    /// wiped sender is told apart from one that merely restarted.
    pub epoch: u64,
    /// The next sequence number the sender will assign: every sequence number below it may
    /// already have been sent, which bounds the receiver's reconciliation if `epoch` changed.
    pub next_seq: u64,
}

/// The receiver's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// [`CHANNEL_PROTOCOL_VERSION`] of the receiver.
    pub protocol_version: u32,
    /// The receiver's channel epoch (new after a wipe or a restore).
    pub epoch: u64,
    /// Highest sequence number from this sender the receiver holds durably.
    pub stored_up_to: u64,
}

/// Consecutive messages: the `i`th has sequence number `first_seq + i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Sequence number of the first message; sequence numbers start at 1.
    pub first_seq: u64,
    /// At most [`BATCH_MESSAGES_MAX`].
    pub messages: Vec<WireMessage>,
}

/// One message on the wire. Its envelope (headers, destination) is encoded by the caller inside
/// `payload`: the channel only moves opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    /// The message's id, unique across the network; the key of dedup after a rollback.
    pub id: u128,
    /// The encoded message, at most [`WIRE_MESSAGE_BYTES_MAX`] bytes. Shared, not copied, from
    /// the sender's held messages into a batch (serialised as postcard bytes, like a `Vec`).
    pub payload: bytes::Bytes,
}

/// The sender's instruction after a rollback of the receiver's channel state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// The next batch starts here: everything below was acked (by an earlier incarnation of the
    /// receiver) and deleted by the sender.
    pub next_seq: u64,
    /// Messages with a sequence number below this may already be at the receiver under an
    /// older numbering: the receiver skips those whose id it has recently stored.
    pub reconcile_until: u64,
}

/// Why bytes could not become a frame, or a frame bytes.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length (claimed by a prefix, or of an encoded frame) over the limit; nothing was
    /// allocated for it.
    #[error("channel frame of {bytes} bytes exceeds the limit of {bytes_max} bytes")]
    TooLarge {
        /// The length.
        bytes: usize,
        /// [`CHANNEL_FRAME_BYTES_MAX`].
        bytes_max: usize,
    },
    /// The bytes are not a valid frame.
    #[error("malformed channel frame: {0}")]
    Malformed(postcard::Error),
    /// The frame decoded but left bytes unread inside its length.
    #[error("channel frame has {bytes} trailing bytes")]
    Trailing {
        /// How many.
        bytes: usize,
    },
}

/// Encodes `frame` with its length prefix, in a buffer of about its size.
pub fn encode(frame: &ChannelFrame) -> Result<Vec<u8>, FrameError> {
    if let ChannelFrame::Batch(batch) = frame {
        return with_length(encode_batch(batch));
    }
    let mut out = Vec::with_capacity(LENGTH_PREFIX_BYTES + 256);
    out.extend_from_slice(&[0u8; LENGTH_PREFIX_BYTES]);
    // `to_io`, not `to_extend`: a Vec's `Write` copies byte strings with one memcpy, where
    // `Extend` copies them a byte at a time.
    let out = postcard::to_io(frame, out).map_err(FrameError::Malformed)?;
    with_length(out)
}

/// Postcard's encoding of `ChannelFrame::Batch(batch)` behind room for the length prefix,
/// written by hand (the tests hold it to postcard's): through serde every varint was a `Write`
/// call, a `memcpy` of a byte or two, and the batch encoder 2% of a relay's CPU.
fn encode_batch(batch: &Batch) -> Vec<u8> {
    // Sized up front, so payloads are copied once.
    let capacity = batch
        .messages
        .iter()
        .map(|m| m.payload.len() + MESSAGE_OVERHEAD_BYTES_MAX)
        .sum::<usize>()
        .saturating_add(LENGTH_PREFIX_BYTES + 32);
    let mut out = Vec::with_capacity(capacity.min(LENGTH_PREFIX_BYTES + CHANNEL_FRAME_BYTES_MAX));
    out.extend_from_slice(&[0u8; LENGTH_PREFIX_BYTES]);
    out.push(BATCH_TAG);
    push_varint(&mut out, u128::from(batch.first_seq));
    push_varint(&mut out, batch.messages.len() as u128);
    for message in &batch.messages {
        push_varint(&mut out, message.id);
        push_varint(&mut out, message.payload.len() as u128);
        out.extend_from_slice(&message.payload);
    }
    out
}

/// Postcard's unsigned varint: seven bits a byte, least significant first, the high bit set on
/// every byte but the last.
fn push_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Fills in the length prefix of `out`, an encoded frame behind room for it.
fn with_length(mut out: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let length = out.len() - LENGTH_PREFIX_BYTES;
    if length > CHANNEL_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            bytes: length,
            bytes_max: CHANNEL_FRAME_BYTES_MAX,
        });
    }
    // Cannot truncate: checked against CHANNEL_FRAME_BYTES_MAX, itself asserted to fit a u32.
    out[..LENGTH_PREFIX_BYTES].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(out)
}

/// Decodes the first frame in `bytes`: `Ok(None)` while `bytes` holds less than a whole frame,
/// else the frame and how many bytes it took (prefix included).
pub fn decode(bytes: &[u8]) -> Result<Option<(ChannelFrame, usize)>, FrameError> {
    let Some(length) = whole_frame(bytes)? else {
        return Ok(None);
    };
    let frame = decode_body(&bytes[LENGTH_PREFIX_BYTES..length])?;
    Ok(Some((frame, length)))
}

/// Takes the first whole frame off the front of `buffer`, as [`decode`] reads it, but the
/// payloads of a batch are slices of the frame's bytes rather than copies: this is how a
/// connection reads, and a batch is most of what it reads.
pub fn take_frame(buffer: &mut BytesMut) -> Result<Option<ChannelFrame>, FrameError> {
    let Some(length) = whole_frame(buffer)? else {
        return Ok(None);
    };
    let frame = buffer.split_to(length).freeze();
    let body = frame.slice(LENGTH_PREFIX_BYTES..);
    let Some((&BATCH_TAG, fields)) = body.split_first() else {
        return decode_body(&body).map(Some);
    };
    let (batch, rest) =
        postcard::take_from_bytes::<SharedBatch<'_>>(fields).map_err(FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing { bytes: rest.len() });
    }
    let messages = batch
        .messages
        .into_iter()
        .map(|message| WireMessage {
            id: message.id,
            payload: body.slice_ref(message.payload),
        })
        .collect();
    Ok(Some(ChannelFrame::Batch(Batch {
        first_seq: batch.first_seq,
        messages,
    })))
}

/// [`ChannelFrame::Batch`]'s variant index, which postcard writes as a one-byte varint.
const BATCH_TAG: u8 = 2;

/// A [`Batch`] whose payloads borrow from the frame being read.
#[derive(Deserialize)]
struct SharedBatch<'a> {
    first_seq: u64,
    #[serde(borrow)]
    messages: Vec<SharedMessage<'a>>,
}

#[derive(Deserialize)]
struct SharedMessage<'a> {
    id: u128,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

/// The length (prefix included) of the frame at the front of `bytes` once all of it is there.
fn whole_frame(bytes: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = bytes.first_chunk::<LENGTH_PREFIX_BYTES>() else {
        return Ok(None);
    };
    let length = u32::from_le_bytes(*prefix) as usize;
    // Checked before waiting for (or allocating) the body: a hostile prefix costs nothing.
    if length > CHANNEL_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            bytes: length,
            bytes_max: CHANNEL_FRAME_BYTES_MAX,
        });
    }
    if bytes.len() - LENGTH_PREFIX_BYTES < length {
        return Ok(None);
    }
    Ok(Some(LENGTH_PREFIX_BYTES + length))
}

fn decode_body(body: &[u8]) -> Result<ChannelFrame, FrameError> {
    let (frame, rest) =
        postcard::take_from_bytes::<ChannelFrame>(body).map_err(FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing { bytes: rest.len() });
    }
    Ok(frame)
}

/// A goodbye frame with `reason` cut to [`GOODBYE_REASON_BYTES_MAX`].
pub fn goodbye(reason: &str) -> ChannelFrame {
    let mut end = reason.len().min(GOODBYE_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    ChannelFrame::Goodbye {
        reason: reason[..end].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn samples() -> Vec<ChannelFrame> {
        vec![
            ChannelFrame::Hello(Hello {
                protocol_version: CHANNEL_PROTOCOL_VERSION,
                from: "alpha".into(),
                to: "bravo".into(),
                epoch: u64::MAX,
                next_seq: 17,
            }),
            ChannelFrame::Welcome(Welcome {
                protocol_version: CHANNEL_PROTOCOL_VERSION,
                epoch: 3,
                stored_up_to: 1 << 40,
            }),
            ChannelFrame::Batch(Batch {
                first_seq: 9,
                messages: vec![
                    WireMessage {
                        id: u128::MAX,
                        payload: b"hello".to_vec().into(),
                    },
                    WireMessage {
                        id: 0,
                        payload: Vec::new().into(),
                    },
                ],
            }),
            ChannelFrame::Ack { up_to: 10 },
            ChannelFrame::Ping { nonce: 1 },
            ChannelFrame::Pong { nonce: 1 },
            goodbye("shutting down"),
            ChannelFrame::Resync(Resync {
                next_seq: 5,
                reconcile_until: 9,
            }),
            ChannelFrame::Custody(CustodyFrame::Confirm(vec![crate::custody::Confirmation {
                waiting_for: Vec::new(),
                custodian: "alpha".into(),
                destination: "delta".into(),
                epoch: 1_765_000_000_000,
                settled_below: 0,
                ranges: vec![(1, 4000), (4001, 4002)],
            }])),
            ChannelFrame::Custody(CustodyFrame::Query {
                custodian: "alpha".into(),
                destination: "delta".into(),
                epochs: vec![1_765_000_000_000],
            }),
            ChannelFrame::Publications(vec![WireMessage {
                id: 7,
                payload: vec![1, 2, 3].into(),
            }]),
        ]
    }

    /// What `take_frame` makes of `bytes`, checked against `decode`: the same frame (or an
    /// error for both), and the frame's bytes taken off the buffer.
    fn take_agrees(bytes: &[u8]) -> Option<ChannelFrame> {
        let mut buffer = BytesMut::from(bytes);
        let taken = take_frame(&mut buffer);
        match decode(bytes) {
            Ok(Some((frame, used))) => {
                assert_eq!(taken.unwrap().as_ref(), Some(&frame));
                assert_eq!(buffer.len(), bytes.len() - used);
                Some(frame)
            }
            Ok(None) => {
                assert!(taken.unwrap().is_none());
                assert_eq!(buffer.len(), bytes.len());
                None
            }
            Err(_) => {
                assert!(taken.is_err(), "decode refused what take_frame read");
                None
            }
        }
    }

    #[test]
    fn every_frame_round_trips_and_reports_its_length() {
        for frame in samples() {
            let bytes = encode(&frame).unwrap();
            let mut stream = bytes.clone();
            stream.extend_from_slice(&[0xff; 7]);
            let (decoded, used) = decode(&stream).unwrap().unwrap();
            assert_eq!(decoded, frame);
            assert_eq!(used, bytes.len());
            assert_eq!(take_agrees(&stream), Some(frame));
        }
    }

    #[test]
    fn a_batch_starts_with_the_tag_take_frame_looks_for() {
        let batch = &samples()[2];
        assert!(matches!(batch, ChannelFrame::Batch(_)));
        assert_eq!(encode(batch).unwrap()[LENGTH_PREFIX_BYTES], BATCH_TAG);
    }

    #[test]
    fn frames_encoded_into_one_buffer_decode_one_after_another() {
        let mut buffer = Vec::new();
        for frame in samples() {
            buffer.extend(encode(&frame).unwrap());
        }
        let mut at = 0;
        for frame in samples() {
            let (decoded, used) = decode(&buffer[at..]).unwrap().unwrap();
            assert_eq!(decoded, frame);
            at += used;
        }
        assert_eq!(at, buffer.len());
    }

    #[test]
    fn every_truncation_asks_for_more_bytes() {
        for frame in samples() {
            let bytes = encode(&frame).unwrap();
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
                assert!(take_agrees(&bytes[..cut]).is_none(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_the_body_arrives() {
        let claimed = u32::try_from(CHANNEL_FRAME_BYTES_MAX + 1).unwrap();
        let err = decode(&claimed.to_le_bytes()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
        let err = decode(&u32::MAX.to_le_bytes()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_inside_the_length_are_refused() {
        let mut bytes = encode(&ChannelFrame::Ack { up_to: 1 }).unwrap();
        bytes.push(0);
        let length = u32::try_from(bytes.len() - LENGTH_PREFIX_BYTES).unwrap();
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(FrameError::Trailing { bytes: 1 })
        ));
    }

    #[test]
    fn a_lying_element_count_does_not_allocate_or_panic() {
        // Batch tag, first_seq 1, then a message count of u32::MAX-ish in a tiny frame.
        let body = [2u8, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
        let mut bytes = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        assert!(matches!(decode(&bytes), Err(FrameError::Malformed(_))));
        assert!(matches!(
            take_frame(&mut BytesMut::from(&bytes[..])),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn goodbye_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(GOODBYE_REASON_BYTES_MAX);
        let ChannelFrame::Goodbye { reason } = goodbye(&long) else {
            panic!("not a goodbye");
        };
        assert!(reason.len() <= GOODBYE_REASON_BYTES_MAX);
        assert!(long.starts_with(&reason));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            take_agrees(&bytes);
            // Also as a body behind a correct prefix, so postcard itself sees garbage.
            let mut framed = u32::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            take_agrees(&framed);
            // And behind the batch tag, which `take_frame` decodes its own way.
            let mut batch = u32::try_from(bytes.len() + 1).unwrap().to_le_bytes().to_vec();
            batch.push(BATCH_TAG);
            batch.extend_from_slice(&bytes);
            take_agrees(&batch);
        }

        #[test]
        fn a_batch_is_encoded_exactly_as_postcard_encodes_it(
            first_seq in any::<u64>(),
            messages in proptest::collection::vec(
                (any::<u128>(), proptest::collection::vec(any::<u8>(), 0..300)),
                0..20,
            ),
        ) {
            let frame = ChannelFrame::Batch(Batch {
                first_seq,
                messages: messages
                    .into_iter()
                    .map(|(id, payload)| WireMessage { id, payload: payload.into() })
                    .collect(),
            });
            let mut expected = vec![0u8; LENGTH_PREFIX_BYTES];
            expected.extend(postcard::to_stdvec(&frame).unwrap());
            let length = u32::try_from(expected.len() - LENGTH_PREFIX_BYTES).unwrap();
            expected[..LENGTH_PREFIX_BYTES].copy_from_slice(&length.to_le_bytes());
            prop_assert_eq!(encode(&frame).unwrap(), expected);
        }

        #[test]
        fn corrupted_frames_never_panic(
            index in 0usize..8,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = encode(&samples()[index]).unwrap();
            for (at, value) in flips {
                let at = LENGTH_PREFIX_BYTES + at % (bytes.len() - LENGTH_PREFIX_BYTES);
                bytes[at] = value;
            }
            take_agrees(&bytes);
        }
    }
}
