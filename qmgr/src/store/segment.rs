//! Segment files on disk: names, listing, creation and removal.
//!
//! Invariants: a file is named `<id>.seg` only once it is complete (header written, zero-filled
//! to its full size, synced) and that rename is made durable by syncing the directory; a
//! crash during creation leaves at most a `<id>.seg.tmp`, which `open` removes. Every creation
//! or removal of a segment is followed by an fsync of the directory.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::format::encode_segment_header;

const SEGMENT_SUFFIX: &str = ".seg";
const TEMPORARY_SUFFIX: &str = ".seg.tmp";
/// Zeros are written in pieces of this size (bounded memory, few syscalls).
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// The path of segment `segment` in `dir`.
pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{SEGMENT_SUFFIX}"))
}

fn temporary_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}{TEMPORARY_SUFFIX}"))
}

/// The segment ids present in `dir`, ascending. Leftover temporary files of an interrupted
/// creation are removed on the way.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StoreError::io(dir, source))?;
    let mut segments = Vec::new();
    let mut removed_any = false;
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::io(dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMPORARY_SUFFIX) {
            tracing::warn!(file = %entry.path().display(), "removing an unfinished journal segment");
            std::fs::remove_file(entry.path())
                .map_err(|source| StoreError::io(entry.path(), source))?;
            removed_any = true;
            continue;
        }
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(segment) if stem.len() == 20 && segment > 0 => segments.push(segment),
            _ => {
                return Err(StoreError::BadSegmentHeader {
                    path: entry.path(),
                    reason: "the file name is not a 20-digit segment id".to_owned(),
                });
            }
        }
    }
    if removed_any {
        sync_dir(dir)?;
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Creates segment `segment` of `segment_bytes` bytes, zero-filled and synced, and makes its
/// name durable: [`prepare_segment`] then [`install_segment`].
pub fn create_segment(
    dir: &Path,
    segment: u64,
    segment_bytes: u64,
    journal_bytes: u64,
) -> Result<File, StoreError> {
    let file = prepare_segment(dir, segment, segment_bytes, journal_bytes)?;
    install_segment(dir, segment)?;
    Ok(file)
}

/// Writes segment `segment` under its temporary name, zero-filled and synced, ready for
/// [`install_segment`]. Slow (it writes the whole segment), so the writer runs it ahead of
/// time on a helper thread. On failure nothing is left behind; running out of space is
/// reported as [`StoreError::DiskFull`].
pub fn prepare_segment(
    dir: &Path,
    segment: u64,
    segment_bytes: u64,
    journal_bytes: u64,
) -> Result<File, StoreError> {
    let temporary = temporary_path(dir, segment);
    write_segment(&temporary, segment, segment_bytes).map_err(|source| {
        // Best effort: the file may not exist, and a failed removal changes nothing for the
        // caller, whose error is the one that matters (open removes leftovers anyway).
        let _ = std::fs::remove_file(&temporary);
        if is_disk_full(&source) {
            StoreError::DiskFull {
                dir: dir.to_owned(),
                segment,
                segment_bytes,
                journal_bytes,
            }
        } else {
            StoreError::io(&temporary, source)
        }
    })
}

/// Gives a prepared segment its real name and makes that durable; on failure the prepared
/// file is removed.
pub fn install_segment(dir: &Path, segment: u64) -> Result<(), StoreError> {
    let temporary = temporary_path(dir, segment);
    let path = segment_path(dir, segment);
    if let Err(source) = std::fs::rename(&temporary, &path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(StoreError::io(&path, source));
    }
    if let Err(error) = sync_dir(dir) {
        let _ = std::fs::remove_file(&path);
        return Err(error);
    }
    Ok(())
}

/// Removes a prepared segment that will not be used.
pub fn discard_prepared(dir: &Path, segment: u64) {
    // Best effort: open removes leftovers anyway.
    let _ = std::fs::remove_file(temporary_path(dir, segment));
}

fn write_segment(path: &Path, segment: u64, segment_bytes: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // Zero-filled rather than sparse or fallocated: DESIGN.md measured pre-written segments to
    // sync about twice as fast, and writing every block is what surfaces ENOSPC here, at
    // creation, instead of in the middle of a batch.
    file.write_all(&encode_segment_header(segment))?;
    write_zeros(
        &mut file,
        segment_bytes - super::format::SEGMENT_HEADER_BYTES,
    )?;
    file.sync_all()?;
    Ok(file)
}

/// Writes `bytes` zeros at the file's current position.
pub fn write_zeros(file: &mut File, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(bytes as usize)];
    let mut left = bytes;
    while left > 0 {
        let piece = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..piece])?;
        left -= piece as u64;
    }
    Ok(())
}

/// Whether `error` means the filesystem is out of space (or quota).
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ) || error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
}

/// Makes creations, renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| StoreError::io(dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_segments_are_listed_and_temporaries_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_segment(dir.path(), 2, 8192, 0).expect("create");
        create_segment(dir.path(), 1, 8192, 0).expect("create");
        std::fs::write(temporary_path(dir.path(), 3), b"partial").expect("write");
        assert_eq!(list_segments(dir.path()).expect("list"), vec![1, 2]);
        assert!(!temporary_path(dir.path(), 3).exists());
        let len = std::fs::metadata(segment_path(dir.path(), 2))
            .expect("metadata")
            .len();
        assert_eq!(len, 8192);
    }
}
