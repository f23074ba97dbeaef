//! The on-disk format of journal segments: an API boundary, versioned by [`FORMAT_VERSION`].
//!
//! Owns the byte layout and its limits, and nothing else: no I/O happens here, so every
//! encoder and decoder can be tested (and fuzzed) on plain byte slices.
//!
//! A segment file `<20-digit id>.seg` is:
//!
//! ```text
//! segment header, 32 bytes (all integers little-endian):
//!   0..8    magic "hopmqJNL"
//!   8..12   format version (u32)
//!   12..16  flags (u32, 0)
//!   16..24  segment id (u64), equal to the id in the file name
//!   24..28  reserved (u32, 0)
//!   28..32  crc32c of bytes 0..28
//! records, each starting at an 8-byte aligned offset:
//!   0..4    record_bytes (u32): header + payload, unpadded; 0 means "end of written data"
//!   4..8    group_len (u32): records in this record's atomic group (1 for a lone record)
//!   8..12   group_index (u32): position in the group, 0-based; bit 31 set on the first record
//!           of each write (one write, then one fdatasync), see [`WRITE_START_FLAG`]
//!   12..16  crc32c of (segment id u64, record offset u64, bytes 0..12, payload)
//!   16..    payload, then zero padding up to the next multiple of 8
//! an end marker (format 2) just past the last write's records, then up to the pre-allocated
//! size: zeros in a new file, a dead segment's bytes in a recycled one
//! ```
//!
//! Three record kinds are never delivered (`group_len` 0):
//! - `group_index` 0, padding: a range that salvage gave up on, overwritten (payload zeroed) so
//!   that later opens skip it silently;
//! - `group_index` 1, the seal: the last record of every segment but the active one, written
//!   and synced before the next segment is installed; its 8-byte payload is the number of
//!   records in the segment. A segment that has a successor but no seal lost its tail;
//! - `group_index` 2, the end marker (format 2): a bare header, written by every write just
//!   past its records (and by segment creation right after the header), overwritten by the
//!   next write. It is how recovery knows where the written data ends without the rest of the
//!   segment being zeros, which lets a dead segment's file be recycled as a new one instead of
//!   zero-filling a fresh one. The bytes a recycled file still holds from its earlier life never
//!   validate: the record CRC covers the segment id.
//!
//! Format 1 segments (zeros up to the pre-allocated size, no end markers) are still read.
//!
//! Invariants: a record never crosses a segment boundary, nor does a group; the records of a
//! group are contiguous with indexes 0, 1, .., group_len - 1. The record CRC covers the
//! record's own position, so a stale or misdirected copy of a record never validates elsewhere.

use std::ops::Range;

/// `group_index` of an end marker (with `group_len` 0).
const END_MARKER_KIND: u32 = 2;

/// Set in `group_index` on the first record of every write. Recovery relies on it: a write
/// is issued only after the previous one was synced, so damage followed by the start of a
/// later write was synced once (corruption), while damage with no later write start can only
/// be the torn remains of the last write (a torn tail).
pub(crate) const WRITE_START_FLAG: u32 = 1 << 31;

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"hopmqJNL";
/// The format this build writes; bump it on any layout change.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest format this build reads: format 1 lacks end markers, so its segments are read as
/// zero-filled past their data (which they are). Once dead, their files are recycled as
/// format-2 segments like any other.
pub(crate) const FORMAT_VERSION_MIN: u32 = 1;
/// Size of the segment header; records start right after it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
/// Size of a record header.
pub(crate) const RECORD_HEADER_BYTES: u64 = 16;
/// Records start at multiples of this, which lets recovery scan for them.
pub(crate) const RECORD_ALIGN_BYTES: u64 = 8;

/// Largest payload of one record: the daemon's largest message body (16 MiB,
/// `max_message_bytes`) plus room for the caller's own record fields.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: u64 = 17 * 1024 * 1024;
/// Largest encoded record, header and padding included.
pub(crate) const RECORD_BYTES_MAX: u64 = align_up(RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX);
/// Space every segment keeps for its seal, which also holds the end marker of the last write
/// before it.
pub(crate) const SEAL_BYTES: u64 = record_bytes_padded(8);
/// Size of an end marker: a record header with no payload.
pub(crate) const END_MARKER_BYTES: u64 = RECORD_HEADER_BYTES;
/// Largest single write (and so largest atomic group): everything not yet fdatasync'd when the
/// process dies lies within this many bytes, which is what recovery's torn-tail rule relies on.
pub(crate) const BATCH_BYTES_MAX: u64 = 24 * 1024 * 1024;
/// The writer stops gathering a batch once it holds this much (~1 MiB).
pub(crate) const BATCH_BYTES_TARGET: u64 = 1024 * 1024;
/// The writer stops gathering a batch once it holds this many records (~256).
pub(crate) const BATCH_RECORDS_TARGET: usize = 256;
/// The tail of every segment kept for appends that free space (removals, acks): when the disk
/// is full, consumers can still record what they took, so that segments die and space
/// returns. 64 KiB holds over a thousand removal records.
pub(crate) const RESERVE_BYTES_MAX: u64 = 64 * 1024;

/// The reserve of a segment of `segment_bytes`: a sixteenth, at most [`RESERVE_BYTES_MAX`], so
/// the small segments of tests keep most of their room.
pub(crate) const fn reserve_bytes(segment_bytes: u64) -> u64 {
    let sixteenth = align_up(segment_bytes / 16);
    if sixteenth < RESERVE_BYTES_MAX {
        sixteenth
    } else {
        RESERVE_BYTES_MAX
    }
}
/// Default pre-allocated size of a segment: the smallest that keeps the default 16 MiB message
/// limit (a message may take at most half a segment, see `Settings::message_bytes_limit`), and
/// it holds a largest group. Smaller than the 64 MiB it
/// was, a fresh journal zero-fills half as much before it has spares to recycle, and less of
/// the disk and the page cache is held by segments kept for a few live records (3-hop bench:
/// 71k / 81k msg/s against 66k / 71k, BENCHMARKS.md, session 15).
pub(crate) const SEGMENT_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;
/// Smallest accepted segment size: small segments are for tests; below this the header and
/// one small record would barely fit.
pub(crate) const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest accepted segment size: recovery reads a whole segment into one buffer, so this
/// bounds recovery's memory.
pub(crate) const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

const _: () = assert!(RECORD_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_TARGET <= BATCH_BYTES_MAX);
const _: () = assert!(
    SEGMENT_HEADER_BYTES + BATCH_BYTES_MAX + SEAL_BYTES + RESERVE_BYTES_MAX
        <= SEGMENT_BYTES_DEFAULT
);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
// record_bytes is a u32 and segment offsets are indexed as usize.
const _: () = assert!(RECORD_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(END_MARKER_BYTES <= SEAL_BYTES);

/// Rounds `value` up to the record alignment.
pub(crate) const fn align_up(value: u64) -> u64 {
    value.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

/// Bytes one record with a payload of `payload_bytes` takes in a segment, padding included.
pub(crate) const fn record_bytes_padded(payload_bytes: u64) -> u64 {
    align_up(RECORD_HEADER_BYTES + payload_bytes)
}

/// Encodes the header of segment `segment`.
pub(crate) fn encode_segment_header(segment: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentHeaderError {
    /// Shorter than a header, or not starting with [`SEGMENT_MAGIC`].
    NotASegment,
    /// Written by another format version.
    UnsupportedVersion(u32),
    /// The header's CRC does not match.
    BadCrc,
    /// The header names another segment id than the file name.
    WrongSegment(u64),
}

/// Checks a segment header against the id its file name gives; returns its format version.
pub(crate) fn decode_segment_header(bytes: &[u8], segment: u64) -> Result<u32, SegmentHeaderError> {
    let Some(header) = bytes.get(0..SEGMENT_HEADER_BYTES as usize) else {
        return Err(SegmentHeaderError::NotASegment);
    };
    if header[0..8] != SEGMENT_MAGIC {
        return Err(SegmentHeaderError::NotASegment);
    }
    // The version is checked before the CRC: a future version may lay its header out
    // differently, and "unknown version" is the useful message then.
    let version = read_u32(header, 8);
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(SegmentHeaderError::UnsupportedVersion(version));
    }
    if crc32c::crc32c(&header[0..28]) != read_u32(header, 28) {
        return Err(SegmentHeaderError::BadCrc);
    }
    let named = read_u64(header, 16);
    if named != segment {
        return Err(SegmentHeaderError::WrongSegment(named));
    }
    Ok(version)
}

/// Appends one record (header, payload, padding) to `buffer`; the record will be written at
/// segment offset `offset` of segment `segment`, which its CRC covers.
pub(crate) fn encode_record(
    buffer: &mut Vec<u8>,
    segment: u64,
    offset: u64,
    group_len: u32,
    group_index: u32,
    write_start: bool,
    payload: &[u8],
) {
    debug_assert!(offset % RECORD_ALIGN_BYTES == 0);
    debug_assert!(group_index < group_len);
    let flagged = group_index | if write_start { WRITE_START_FLAG } else { 0 };
    debug_assert!(payload.len() as u64 <= RECORD_PAYLOAD_BYTES_MAX);
    let start = buffer.len();
    let record_bytes = (RECORD_HEADER_BYTES + payload.len() as u64) as u32;
    let mut fields = [0u8; 12];
    fields[0..4].copy_from_slice(&record_bytes.to_le_bytes());
    fields[4..8].copy_from_slice(&group_len.to_le_bytes());
    fields[8..12].copy_from_slice(&flagged.to_le_bytes());
    let crc = record_crc(segment, offset, &fields, payload);
    buffer.extend_from_slice(&fields);
    buffer.extend_from_slice(&crc.to_le_bytes());
    buffer.extend_from_slice(payload);
    let padded = record_bytes_padded(payload.len() as u64) as usize;
    buffer.resize(start + padded, 0);
    // Check the record right after encoding it (STYLE.md): a bug here would be durable.
    debug_assert!(matches!(
        decode_record(&buffer[start..], segment, offset, 0),
        Decoded::Record(_)
    ));
}

fn record_crc(segment: u64, offset: u64, fields: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&segment.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &offset.to_le_bytes());
    crc = crc32c::crc32c_append(crc, fields);
    crc32c::crc32c_append(crc, payload)
}

/// One valid record found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordView {
    /// Records in the record's group.
    pub group_len: u32,
    /// Position in the group.
    pub group_index: u32,
    /// The first record of a write.
    pub write_start: bool,
    /// Where the payload lies, relative to the slice given to [`decode_record`].
    pub payload: Range<usize>,
    /// Offset, relative to that slice, where the next record may start.
    pub next: usize,
}

/// What lies at a record position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A record whose CRC matches.
    Record(RecordView),
    /// A padding record, to be skipped.
    Padding { next: usize },
    /// A segment's seal, saying how many records the segment holds.
    Seal { records: u64, next: usize },
    /// The end of written data: an all-zero header, or no room left for a header.
    End,
    /// The end of written data, marked by the last write (format 2).
    EndMarker,
    /// Anything else: a torn write or corruption.
    Invalid(&'static str),
}

/// Decodes the record at `at` in `bytes`, which holds segment `segment` from segment offset
/// `base` onwards (so the record's segment offset is `base + at`).
pub(crate) fn decode_record(bytes: &[u8], segment: u64, base: u64, at: usize) -> Decoded {
    let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES as usize) else {
        return Decoded::End;
    };
    let record_bytes = read_u32(header, 0) as usize;
    let group_len = read_u32(header, 4);
    let flagged = read_u32(header, 8);
    let write_start = flagged & WRITE_START_FLAG != 0;
    let group_index = flagged & !WRITE_START_FLAG;
    if record_bytes == 0 {
        return if header.iter().all(|&byte| byte == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("a record header with zero length")
        };
    }
    if record_bytes < RECORD_HEADER_BYTES as usize || record_bytes as u64 > RECORD_BYTES_MAX {
        return Decoded::Invalid("an impossible record length");
    }
    let padding = group_len == 0 && flagged == 0;
    let seal = group_len == 0 && flagged == 1;
    let marker = group_len == 0 && flagged == END_MARKER_KIND;
    if !padding && !seal && !marker && group_index >= group_len {
        return Decoded::Invalid("impossible group fields");
    }
    let payload = at + RECORD_HEADER_BYTES as usize..at + record_bytes;
    let Some(payload_bytes) = bytes.get(payload.clone()) else {
        return Decoded::Invalid("a record cut short");
    };
    let offset = base + at as u64;
    if record_crc(segment, offset, &header[0..12], payload_bytes) != read_u32(header, 12) {
        return Decoded::Invalid("a record CRC mismatch");
    }
    let next = at + align_up(record_bytes as u64) as usize;
    if padding {
        return Decoded::Padding { next };
    }
    if marker {
        return if payload_bytes.is_empty() {
            Decoded::EndMarker
        } else {
            Decoded::Invalid("an end marker with a payload")
        };
    }
    if seal {
        let Ok(count) = <[u8; 8]>::try_from(payload_bytes) else {
            return Decoded::Invalid("a seal of the wrong size");
        };
        return Decoded::Seal {
            records: u64::from_le_bytes(count),
            next,
        };
    }
    Decoded::Record(RecordView {
        group_len,
        group_index,
        write_start,
        next,
        payload,
    })
}

/// The end marker at `offset` of segment `segment` (see the module documentation).
pub(crate) fn encode_end_marker(segment: u64, offset: u64) -> [u8; END_MARKER_BYTES as usize] {
    let mut fields = [0u8; 12];
    fields[0..4].copy_from_slice(&(END_MARKER_BYTES as u32).to_le_bytes());
    fields[8..12].copy_from_slice(&END_MARKER_KIND.to_le_bytes());
    let crc = record_crc(segment, offset, &fields, &[]);
    let mut image = [0u8; END_MARKER_BYTES as usize];
    image[0..12].copy_from_slice(&fields);
    image[12..16].copy_from_slice(&crc.to_le_bytes());
    image
}

/// The seal of segment `segment` holding `records` records, to be written at `offset`.
pub(crate) fn encode_seal(segment: u64, offset: u64, records: u64) -> Vec<u8> {
    let mut fields = [0u8; 12];
    fields[0..4].copy_from_slice(&((RECORD_HEADER_BYTES + 8) as u32).to_le_bytes());
    fields[8..12].copy_from_slice(&1u32.to_le_bytes());
    let payload = records.to_le_bytes();
    let crc = record_crc(segment, offset, &fields, &payload);
    let mut image = Vec::with_capacity(SEAL_BYTES as usize);
    image.extend_from_slice(&fields);
    image.extend_from_slice(&crc.to_le_bytes());
    image.extend_from_slice(&payload);
    image.resize(SEAL_BYTES as usize, 0);
    image
}

/// Largest single padding record.
const PADDING_BYTES_MAX: u64 = RECORD_BYTES_MAX / RECORD_ALIGN_BYTES * RECORD_ALIGN_BYTES;

/// The bytes that cover `offset..offset + bytes` of segment `segment` with padding records,
/// or `None` if the range is too short to hold one (or not aligned).
pub(crate) fn encode_padding(segment: u64, offset: u64, bytes: u64) -> Option<Vec<u8>> {
    if bytes < RECORD_HEADER_BYTES || bytes % RECORD_ALIGN_BYTES != 0 {
        return None;
    }
    let mut image = Vec::with_capacity(bytes as usize);
    let mut left = bytes;
    while left > 0 {
        let mut piece = left.min(PADDING_BYTES_MAX);
        if left - piece > 0 && left - piece < RECORD_HEADER_BYTES {
            // Leave the last piece room for its header.
            piece -= RECORD_HEADER_BYTES;
        }
        let at = offset + image.len() as u64;
        let mut fields = [0u8; 12];
        fields[0..4].copy_from_slice(&(piece as u32).to_le_bytes());
        let payload = vec![0u8; (piece - RECORD_HEADER_BYTES) as usize];
        let crc = record_crc(segment, at, &fields, &payload);
        image.extend_from_slice(&fields);
        image.extend_from_slice(&crc.to_le_bytes());
        image.extend_from_slice(&payload);
        left -= piece;
    }
    Some(image)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_marker_is_valid_only_where_it_was_written() {
        let mut bytes = vec![0u8; 64];
        bytes[8..24].copy_from_slice(&encode_end_marker(7, 40));
        assert_eq!(decode_record(&bytes, 7, 32, 8), Decoded::EndMarker);
        // Another segment (a recycled file's earlier life) or another offset: not a marker.
        assert!(matches!(
            decode_record(&bytes, 6, 32, 8),
            Decoded::Invalid(_)
        ));
        assert!(matches!(
            decode_record(&bytes, 7, 40, 8),
            Decoded::Invalid(_)
        ));
        for bit in 0..16 * 8 {
            let mut flipped = bytes.clone();
            flipped[8 + bit / 8] ^= 1 << (bit % 8);
            assert_ne!(
                decode_record(&flipped, 7, 32, 8),
                Decoded::EndMarker,
                "bit {bit}"
            );
        }
    }

    #[test]
    fn record_round_trip_and_every_bit_flip_is_caught() {
        let mut buffer = vec![0u8; 8];
        encode_record(&mut buffer, 7, 40, 2, 1, false, b"hello journal");
        assert_eq!(buffer.len(), 8 + 32);
        let Decoded::Record(view) = decode_record(&buffer, 7, 32, 8) else {
            panic!("record must decode");
        };
        assert_eq!(&buffer[view.payload.clone()], b"hello journal");
        assert_eq!((view.group_len, view.group_index, view.next), (2, 1, 40));
        // Same bytes at another position or in another segment do not validate.
        assert!(matches!(
            decode_record(&buffer, 8, 32, 8),
            Decoded::Invalid(_)
        ));
        assert!(matches!(
            decode_record(&buffer, 7, 40, 8),
            Decoded::Invalid(_)
        ));
        for bit in 0..(16 + 13) * 8 {
            let mut flipped = buffer.clone();
            flipped[8 + bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&flipped, 7, 32, 8), Decoded::Record(_)),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn padding_covers_a_range_exactly() {
        for bytes in [
            16,
            24,
            4096,
            PADDING_BYTES_MAX + 8,
            2 * PADDING_BYTES_MAX + 16,
        ] {
            let image = encode_padding(4, 64, bytes).expect("padding");
            assert_eq!(image.len() as u64, bytes);
            let mut at = 0;
            while at < image.len() {
                let Decoded::Padding { next } = decode_record(&image, 4, 64, at) else {
                    panic!("padding at {at} of {bytes}");
                };
                at = next;
            }
            assert_eq!(at, image.len());
        }
        assert_eq!(encode_padding(4, 64, 8), None);
        let seal = encode_seal(4, 64, 1234);
        assert_eq!(
            decode_record(&seal, 4, 64, 0),
            Decoded::Seal {
                records: 1234,
                next: SEAL_BYTES as usize
            }
        );
    }

    #[test]
    fn zeros_are_the_end_and_headers_check_their_version() {
        assert_eq!(decode_record(&[0u8; 64], 1, 32, 0), Decoded::End);
        assert_eq!(decode_record(&[0u8; 8], 1, 32, 0), Decoded::End);
        let header = encode_segment_header(3);
        assert_eq!(decode_segment_header(&header, 3), Ok(FORMAT_VERSION));
        assert_eq!(
            decode_segment_header(&header, 4),
            Err(SegmentHeaderError::WrongSegment(3))
        );
        let mut future = header;
        future[8] = 9;
        assert_eq!(
            decode_segment_header(&future, 3),
            Err(SegmentHeaderError::UnsupportedVersion(9))
        );
        assert_eq!(
            decode_segment_header(b"garbage", 3),
            Err(SegmentHeaderError::NotASegment)
        );
    }
}
