//! An open session file and its write buffer.
//!
//! `std::io::BufWriter` allocates its whole buffer when the file is
//! opened. A writer holds every live session's file open, so 10,000 idle
//! sessions (or 10,000 leaving at once, each recorded at its end) held
//! 10,000 buffers of 8 KiB that each carried a few hundred bytes. Here the
//! buffer grows with what is written to it, up to the point where it is
//! written out, and a session that has gone quiet gives it back.

use std::fs::File;
use std::io::{self, Write};

/// Bytes buffered before they are written to the file; a record this
/// large or larger is written straight through.
const FLUSH_AT: usize = 8 << 10;

pub(super) struct SessionFile {
    /// Taken only by `into_file`, which consumes the value: always present
    /// to every other method.
    file: Option<File>,
    buf: Vec<u8>,
}

impl SessionFile {
    pub(super) fn new(file: File) -> SessionFile {
        SessionFile {
            file: Some(file),
            buf: Vec::new(),
        }
    }

    /// Appends `bytes`, writing out what was buffered first when they would
    /// not fit. On an error writing out the buffer, nothing of `bytes` was
    /// taken and what was not written stays buffered (bounded by
    /// `FLUSH_AT`); a record of `FLUSH_AT` bytes or more is written straight
    /// through, and an error may leave part of it written, as with
    /// `BufWriter`.
    pub(super) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
        }
        if bytes.len() >= FLUSH_AT {
            return self.file_mut()?.write_all(bytes);
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            // Doubling could take up to twice `FLUSH_AT`: never more than it.
            self.buf
                .reserve_exact(need.next_power_of_two().min(FLUSH_AT) - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes out what is buffered. On an error, what was not written
    /// stays buffered, to be written by the next flush.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        let Some(file) = self.file.as_mut() else {
            return Err(gone());
        };
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            match file.write(&self.buf[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..written);
        result
    }

    /// Gives back the buffer's memory when nothing is buffered: for a
    /// session with nothing written since the last sync.
    pub(super) fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    pub(super) fn file(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(gone)
    }

    fn file_mut(&mut self) -> io::Result<&mut File> {
        self.file.as_mut().ok_or_else(gone)
    }

    /// Writes out what is buffered and hands over the file.
    pub(super) fn into_file(mut self) -> io::Result<File> {
        self.flush()?;
        self.file.take().ok_or_else(gone)
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Records still buffered when a session's file is dropped without
/// `into_file` (a writer unwinding) are written out, as `BufWriter` does.
impl Drop for SessionFile {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn gone() -> io::Error {
    io::Error::other("the session file was handed over")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp_file() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ghrec");
        let file = File::create(&path).unwrap();
        (dir, path, file)
    }

    fn read(path: &std::path::Path) -> Vec<u8> {
        let mut v = Vec::new();
        File::open(path).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn records_reach_the_file_in_order_whatever_their_sizes() {
        let (_dir, path, file) = temp_file();
        let mut f = SessionFile::new(file);
        let mut expected = Vec::new();
        // Small records, one that fills the buffer past the threshold, one
        // larger than the buffer, and small ones again.
        let sizes = [10, 300, 7000, 2000, FLUSH_AT, 3 * FLUSH_AT + 5, 1, 0, 500];
        for (k, n) in sizes.into_iter().enumerate() {
            let record: Vec<u8> = (0..n).map(|i| (i + k) as u8).collect();
            f.write_all(&record).unwrap();
            expected.extend_from_slice(&record);
        }
        // Not all of it is out before the flush.
        assert!(read(&path).len() < expected.len());
        let file = f.into_file().unwrap();
        drop(file);
        assert_eq!(read(&path), expected);
    }

    #[test]
    fn what_is_buffered_is_written_when_the_file_is_dropped() {
        let (_dir, path, file) = temp_file();
        let mut f = SessionFile::new(file);
        f.write_all(b"one record\n").unwrap();
        assert!(read(&path).is_empty());
        drop(f);
        assert_eq!(read(&path), b"one record\n");
    }

    #[test]
    fn the_buffer_is_as_large_as_what_it_holds_and_given_back_when_quiet() {
        let (_dir, _path, file) = temp_file();
        let mut f = SessionFile::new(file);
        assert_eq!(f.capacity(), 0, "nothing is allocated at open");
        f.write_all(&[b'x'; 400]).unwrap();
        assert!(
            f.capacity() < 1024,
            "an open record takes what it needs: {}",
            f.capacity()
        );
        // Released only when empty: buffered bytes are never dropped.
        f.release();
        assert_eq!(f.buf.len(), 400);
        f.flush().unwrap();
        f.release();
        assert_eq!(f.capacity(), 0);
        // Busy sessions never hold more than the threshold.
        for n in [700, 1300, 6000, 2100, 5, 8000] {
            for _ in 0..20 {
                f.write_all(&vec![b'y'; n]).unwrap();
                assert!(f.buf.len() <= FLUSH_AT);
                assert!(f.capacity() <= FLUSH_AT, "{}", f.capacity());
            }
        }
    }

    #[test]
    fn a_failing_file_keeps_the_buffer_bounded_and_reports_every_loss() {
        // /dev/full refuses every write with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            panic!("/dev/full is missing");
        };
        let mut f = SessionFile::new(full);
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..1000 {
            match f.write_all(&[b'z'; 100]) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
                    refused += 1;
                }
            }
            assert!(f.buf.len() <= FLUSH_AT);
        }
        assert_eq!(
            accepted,
            FLUSH_AT / 100,
            "the buffer takes what fits, then every write fails"
        );
        assert_eq!(refused, 1000 - FLUSH_AT / 100);
        assert!(f.flush().is_err());
        assert_eq!(
            f.buf.len(),
            accepted * 100,
            "what was not written is kept for the next flush"
        );
        assert!(f.into_file().is_err());
    }
}
