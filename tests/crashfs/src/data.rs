//! Undo of file data: per file, what each write and size change since the file's last
//! `fsync`/`fdatasync` overwrote.
//!
//! The backing file always holds the current contents; a [`FileLog`] holds only what is
//! needed to go back: for a run of writes the bytes they overwrote (never the bytes they
//! wrote) and the size before the run, for a size change the size before it and the bytes
//! it cut. Runs of zeros are kept as a count, so overwriting a pre-zeroed segment costs
//! nothing to remember, and appending past the end costs nothing at all: the undo log never
//! copies a whole file, only what unsynced writes overwrote.
//!
//! **Invariant:** applying a file's records newest first to its current contents yields
//! exactly its contents and size at its last sync.
//!
//! A log holds its own read-write descriptor of the backing file, so it follows the inode
//! through renames and unlinks; undoing never needs a path.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Saved pieces are read at most this much at a time; also the granularity at which runs
/// of zeros are recognised.
const CHUNK_BYTES: u64 = 64 * 1024;

/// Bytes taken from a file before they were overwritten or cut.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    pieces: Vec<Piece>,
    len: u64,
}

#[derive(Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Zeros(u64),
}

impl Saved {
    /// Reads `len` bytes of `file` at `offset` (fewer if the file ends first).
    pub(crate) fn read(file: &File, offset: u64, len: u64) -> io::Result<Self> {
        let mut saved = Saved::default();
        saved.append_from(file, offset, len)?;
        Ok(saved)
    }

    /// Appends `len` more bytes of `file` at `offset`.
    fn append_from(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let want = (end - at).min(CHUNK_BYTES) as usize;
            let mut chunk = vec![0u8; want];
            let got = read_full_at(file, &mut chunk, at)?;
            if got == 0 {
                break;
            }
            chunk.truncate(got);
            self.push(chunk);
            at += got as u64;
        }
        Ok(())
    }

    fn push(&mut self, chunk: Vec<u8>) {
        let n = chunk.len() as u64;
        self.len += n;
        if chunk.iter().all(|&b| b == 0) {
            if let Some(Piece::Zeros(run)) = self.pieces.last_mut() {
                *run += n;
            } else {
                self.pieces.push(Piece::Zeros(n));
            }
        } else {
            self.pieces.push(Piece::Bytes(chunk));
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes held in memory (zeros are only counted).
    pub(crate) fn memory(&self) -> u64 {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Bytes(bytes) => bytes.len() as u64,
                Piece::Zeros(_) => 0,
            })
            .sum()
    }

    /// Writes the saved bytes back at `offset`.
    fn write_back(&self, file: &File, offset: u64) -> io::Result<()> {
        let zeros = vec![0u8; CHUNK_BYTES as usize];
        let mut at = offset;
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(bytes) => {
                    file.write_all_at(bytes, at)?;
                    at += bytes.len() as u64;
                }
                Piece::Zeros(run) => {
                    let mut left = *run;
                    while left > 0 {
                        let n = left.min(CHUNK_BYTES);
                        file.write_all_at(&zeros[..n as usize], at)?;
                        at += n;
                        left -= n;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `pread` until `buffer` is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buffer.len() {
        match file.read_at(&mut buffer[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One undoable change to a file's data.
#[derive(Debug)]
enum Record {
    /// A run of contiguous writes covering `offset..offset + len`: `saved` is what they
    /// overwrote (from `offset`; shorter than `len` where they wrote past the old end), and
    /// `size_before` the file's size before the first of them.
    Write {
        offset: u64,
        len: u64,
        size_before: u64,
        saved: Saved,
    },
    /// A size change from `size_before` to `size_after`; `cut` holds the bytes a shrink
    /// removed (from `size_after`).
    Resize {
        size_before: u64,
        size_after: u64,
        cut: Saved,
    },
}

/// The last unsynced write of a file, as a crash may tear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastWrite {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// A file's changes since its last sync, and the descriptor to undo them through.
#[derive(Debug)]
pub(crate) struct FileLog {
    file: File,
    records: Vec<Record>,
}

impl FileLog {
    /// A log over `file`, which must be open for reading and writing.
    pub(crate) fn new(file: File) -> Self {
        Self {
            file,
            records: Vec::new(),
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Undo records held (a run of contiguous writes is one).
    pub(crate) fn records(&self) -> usize {
        self.records.len()
    }

    /// Bytes held in memory to undo this file.
    pub(crate) fn memory(&self) -> u64 {
        self.records
            .iter()
            .map(|record| match record {
                Record::Write { saved, .. } => saved.memory(),
                Record::Resize { cut, .. } => cut.memory(),
            })
            .sum()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Remembers what a write of `len` bytes at `offset` is about to overwrite. Called
    /// before the write, so a write that fails half-way is still undone.
    ///
    /// A write that starts where the previous record (a write) ended extends that record:
    /// the kernel splits one large `write(2)` into several requests, and a crash must tear
    /// the caller's write, not one of the kernel's pieces.
    pub(crate) fn before_write(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let size = self.size()?;
        let overwritten = size.saturating_sub(offset).min(len);
        if let Some(Record::Write {
            offset: run_offset,
            len: run_len,
            saved,
            ..
        }) = self.records.last_mut()
        {
            // Contiguous, and the run's saved bytes reach its end (they always do unless the
            // run wrote past the old end, after which nothing it overwrote is saved).
            let contiguous = *run_offset + *run_len == offset;
            let saved_reaches_end = saved.len() == *run_len || overwritten == 0;
            if contiguous && saved_reaches_end {
                saved.append_from(&self.file, offset, overwritten)?;
                *run_len += len;
                return Ok(());
            }
        }
        let saved = Saved::read(&self.file, offset, overwritten)?;
        self.records.push(Record::Write {
            offset,
            len,
            size_before: size,
            saved,
        });
        Ok(())
    }

    /// Remembers what setting the size to `size_after` is about to change.
    pub(crate) fn before_resize(&mut self, size_after: u64) -> io::Result<()> {
        let size_before = self.size()?;
        if size_before == size_after {
            return Ok(());
        }
        let cut = if size_after < size_before {
            Saved::read(&self.file, size_after, size_before - size_after)?
        } else {
            Saved::default()
        };
        self.records.push(Record::Resize {
            size_before,
            size_after,
            cut,
        });
        Ok(())
    }

    /// The newest record if it is a run of writes: what `crash --tear` may keep a prefix of.
    pub(crate) fn last_write(&self) -> Option<LastWrite> {
        match self.records.last() {
            Some(Record::Write { offset, len, .. }) if *len > 0 => Some(LastWrite {
                offset: *offset,
                len: *len,
            }),
            _ => None,
        }
    }

    /// Undoes every record, newest first; returns how many there were. The log is empty
    /// afterwards, even on error (a half-undone file cannot be undone again).
    pub(crate) fn undo(&mut self) -> io::Result<usize> {
        let records = std::mem::take(&mut self.records);
        let count = records.len();
        for record in records.into_iter().rev() {
            match record {
                Record::Write {
                    offset,
                    size_before,
                    saved,
                    ..
                } => {
                    saved.write_back(&self.file, offset)?;
                    self.file.set_len(size_before)?;
                }
                Record::Resize {
                    size_before,
                    size_after,
                    cut,
                } => {
                    self.file.set_len(size_before)?;
                    cut.write_back(&self.file, size_after)?;
                }
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_over(initial: &[u8]) -> (tempfile::NamedTempFile, FileLog) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().write_all_at(initial, 0).unwrap();
        let handle = file.reopen().unwrap();
        (file, FileLog::new(handle))
    }

    fn contents(log: &FileLog) -> Vec<u8> {
        let mut buffer = vec![0u8; log.size().unwrap() as usize];
        read_full_at(log.file(), &mut buffer, 0).unwrap();
        buffer
    }

    fn write(log: &mut FileLog, offset: u64, bytes: &[u8]) {
        log.before_write(offset, bytes.len() as u64).unwrap();
        log.file().write_all_at(bytes, offset).unwrap();
    }

    fn resize(log: &mut FileLog, size: u64) {
        log.before_resize(size).unwrap();
        log.file().set_len(size).unwrap();
    }

    #[test]
    fn undo_restores_overwrites_appends_and_resizes() {
        let (_keep, mut log) = log_over(b"hello world");
        write(&mut log, 6, b"there, and more");
        write(&mut log, 0, b"J");
        resize(&mut log, 3);
        resize(&mut log, 100);
        write(&mut log, 200, b"far");
        assert_eq!(log.undo().unwrap(), 5);
        assert_eq!(contents(&log), b"hello world");
        assert_eq!(log.records(), 0);
    }

    #[test]
    fn contiguous_writes_are_one_run_and_the_last_write() {
        let (_keep, mut log) = log_over(b"0123456789");
        write(&mut log, 2, b"ab");
        write(&mut log, 4, b"cd");
        write(&mut log, 6, b"efghijkl");
        assert_eq!(log.records(), 1);
        assert_eq!(log.last_write(), Some(LastWrite { offset: 2, len: 12 }));
        write(&mut log, 0, b"x");
        assert_eq!(log.records(), 2);
        log.undo().unwrap();
        assert_eq!(contents(&log), b"0123456789");
    }

    #[test]
    fn overwritten_zeros_cost_no_memory() {
        let (_keep, mut log) = log_over(&vec![0u8; 1 << 20]);
        write(&mut log, 4096, &[7u8; 300_000]);
        assert_eq!(log.memory(), 0);
        resize(&mut log, 0);
        assert!(
            log.memory() > 0,
            "the written bytes were cut and must be kept"
        );
        log.undo().unwrap();
        assert_eq!(contents(&log), vec![0u8; 1 << 20]);
    }

    #[test]
    fn appending_saves_nothing() {
        let (_keep, mut log) = log_over(b"");
        for i in 0..16u64 {
            write(&mut log, i * 65536, &[1u8; 65536]);
        }
        assert_eq!(log.records(), 1);
        assert_eq!(log.memory(), 0);
        log.undo().unwrap();
        assert!(contents(&log).is_empty());
    }
}
