//! Where the index keeps finished sessions' entries: an unnamed file in
//! the recordings' directory instead of the process's memory.
//!
//! A finished session's entry no longer changes, and the admin API reads
//! it only when it lists, finds or deletes recordings. Held in memory,
//! every session a gateway ever recorded (up to `MAX_INDEX`) stayed in its
//! resident set: about 9–11 MiB over the standard run's storms (some
//! 80,000 sessions). Here an entry costs the index a slot (where it is in
//! the file) and its key in the map, and the file's bytes, which the
//! kernel's page cache holds or drops.
//!
//! The file is made with `O_TMPFILE`: it has no name, nothing that walks
//! the directory (verification, retention, uploads) sees it, and it goes
//! with the process. The index is built again from the recordings at
//! every start, so nothing here needs to survive a crash.
//!
//! Entries are appended through a small buffer (a write per 64 KiB, not
//! per session). When a write fails, what the buffer holds is kept and
//! read from memory, and the spill takes no more entries: the index keeps
//! the next ones in memory as before, so a full or failing disk costs
//! memory, never an entry.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes gathered before they are written.
const FLUSH_AT: usize = 64 << 10;
/// Dead bytes (of entries replaced or removed) that make the file worth
/// writing again without them, at least (and at least half the file);
/// after a try that failed, as many more again before the next.
const COMPACT_AT: u64 = 1 << 20;
/// What a reader going through every entry reads at once (under glibc's
/// threshold for a mapping of its own, so the buffer is reused and gives
/// nothing back to the kernel to take again).
pub(super) const WINDOW: usize = 64 << 10;

/// An entry's place in the spill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub at: u32,
    pub len: u32,
}

pub(super) struct Spill {
    file: File,
    /// Bytes written to the file; entries past it are in `pending`.
    written: u64,
    pending: Vec<u8>,
    /// Bytes of entries the index no longer holds.
    pub(super) dead: u64,
    /// A write failed: no more entries are taken.
    failed: bool,
    /// Dead bytes at which compaction is tried (raised past a failure, so
    /// that a directory that cannot take a new file does not cost every
    /// upsert a read of the whole file).
    compact_from: u64,
}

impl Spill {
    /// An unnamed file in `dir`, readable by this process only.
    pub fn create(dir: &Path) -> std::io::Result<Spill> {
        use std::os::unix::fs::OpenOptionsExt;
        // `O_EXCL`: the file can never be given a name (`linkat` from
        // /proc/PID/fd).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
            .open(dir)?;
        Ok(Spill {
            file,
            written: 0,
            pending: Vec::new(),
            dead: 0,
            failed: false,
            compact_from: COMPACT_AT,
        })
    }

    /// Bytes held, dead ones included.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Appends an entry's bytes and says where they are, or `None` when
    /// the spill takes no more (a write failed, or the file would pass
    /// what a place can say): the caller keeps the entry itself.
    pub fn append(&mut self, bytes: &[u8]) -> Option<Place> {
        let at = self.len();
        let end = at + bytes.len() as u64;
        if self.failed || end > u32::MAX as u64 {
            return None;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
        Some(Place {
            at: at as u32,
            len: bytes.len() as u32,
        })
    }

    /// Writes what is pending. On failure it stays pending (and is read
    /// from memory) and the spill takes no more entries.
    fn flush(&mut self) {
        if self.pending.is_empty() || self.failed {
            return;
        }
        match self.file.write_all_at(&self.pending, self.written) {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                if self.pending.capacity() > 2 * FLUSH_AT {
                    self.pending = Vec::new();
                }
            }
            Err(e) => {
                tracing::warn!(target: "gatehouse::recorder", error = %e,
                    "the index's file of finished sessions cannot be written: the next ones are kept in memory");
                self.failed = true;
            }
        }
    }

    /// The bytes at `place`, into `out` (cleared first).
    pub fn read(&self, place: Place, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        out.resize(place.len as usize, 0);
        self.read_into(place.at as u64, out)
    }

    /// Up to `len` bytes from `at` (fewer at the end), into `out`.
    pub fn read_window(&self, at: u64, len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let len = len.min(self.len().saturating_sub(at) as usize);
        out.clear();
        out.resize(len, 0);
        self.read_into(at, out)
    }

    fn read_into(&self, at: u64, out: &mut [u8]) -> std::io::Result<()> {
        let end = at + out.len() as u64;
        if end > self.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "past the end of the index's file",
            ));
        }
        // The part already written, then the part still pending.
        let on_disk = (self.written.min(end).saturating_sub(at)) as usize;
        self.file.read_exact_at(&mut out[..on_disk], at)?;
        if on_disk < out.len() {
            // `at + on_disk` is where the written part ends, or `at`.
            let from = (at + on_disk as u64 - self.written) as usize;
            let rest = out.len() - on_disk;
            out[on_disk..].copy_from_slice(&self.pending[from..from + rest]);
        }
        Ok(())
    }

    /// Writes `bytes` over an entry's, the same length (a count updated
    /// in place).
    pub fn overwrite(&mut self, place: Place, bytes: &[u8]) -> std::io::Result<()> {
        let (at, end) = (place.at as u64, place.at as u64 + bytes.len() as u64);
        if end > self.len() || bytes.len() != place.len as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an entry's place",
            ));
        }
        let on_disk = (self.written.min(end).saturating_sub(at)) as usize;
        self.file.write_all_at(&bytes[..on_disk], at)?;
        if on_disk < bytes.len() {
            let from = (at + on_disk as u64 - self.written) as usize;
            self.pending[from..from + bytes.len() - on_disk].copy_from_slice(&bytes[on_disk..]);
        }
        Ok(())
    }

    /// Notes that the index no longer holds the entry at `place`.
    pub fn forget(&mut self, place: Place) {
        self.dead += place.len as u64;
    }

    /// Whether enough of the file is dead to write it again without.
    pub fn wants_compaction(&self) -> bool {
        self.dead >= self.compact_from && self.dead * 2 >= self.len()
    }

    /// A new spill in `dir` holding the entries at `places` (all of them
    /// this spill's), moving each place to its new one; `None`, the
    /// places untouched and the next try put off, if it cannot be made.
    pub fn compacted<'a>(&mut self, dir: &Path, places: impl Iterator<Item = &'a mut Place>) -> Option<Spill> {
        let fresh = self.copy_into(dir, places);
        if let Err(e) = &fresh {
            tracing::warn!(target: "gatehouse::recorder", error = %e,
                "the index's file of finished sessions cannot be written again without its dead entries");
            self.compact_from = self.dead + COMPACT_AT;
        }
        fresh.ok()
    }

    fn copy_into<'a>(&self, dir: &Path, places: impl Iterator<Item = &'a mut Place>) -> std::io::Result<Spill> {
        let full = || std::io::Error::other("the new file took no more");
        let mut fresh = Spill::create(dir)?;
        let mut places: Vec<&mut Place> = places.collect();
        // In the file's order, a window at a time.
        places.sort_unstable_by_key(|p| p.at);
        let mut window = Vec::new();
        let mut window_at = 0u64;
        let mut moved = Vec::with_capacity(places.len());
        for p in places {
            let (at, end) = (p.at as u64, p.at as u64 + p.len as u64);
            if at < window_at || end > window_at + window.len() as u64 {
                self.read_window(at, WINDOW.max(p.len as usize), &mut window)?;
                window_at = at;
            }
            let from = (at - window_at) as usize;
            let to = fresh.append(&window[from..from + p.len as usize]).ok_or_else(full)?;
            moved.push((p, to));
        }
        fresh.flush();
        if fresh.failed {
            return Err(full());
        }
        for (p, to) in moved {
            *p = to;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
impl Spill {
    /// The same file, read-only from now on (as a disk that fails
    /// writes): reads work, writes fail.
    pub(super) fn refuse_writes(&mut self) {
        use std::os::unix::io::AsRawFd;
        self.file = File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd())).unwrap();
    }

    /// The same file, write-only from now on (as a disk that fails
    /// reads): what is written can no longer be read.
    pub(super) fn refuse_reads(&mut self) {
        use std::os::unix::io::AsRawFd;
        let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        self.file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_from_the_file_and_from_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(dir.path()).unwrap();
        // Nothing shows in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let entry = |i: usize| format!("entry {i} ").repeat(1 + i % 7).into_bytes();
        // Enough for several writes, the last entries still pending.
        let places: Vec<Place> = (0..10_000).map(|i| spill.append(&entry(i)).unwrap()).collect();
        assert!(spill.written > 0 && !spill.pending.is_empty());
        let mut out = Vec::new();
        for (i, p) in places.iter().enumerate() {
            spill.read(*p, &mut out).unwrap();
            assert_eq!(out, entry(i), "entry {i}");
        }
        // One read across what is written and what is pending.
        let mut all = Vec::new();
        spill.read_window(0, usize::MAX, &mut all).unwrap();
        assert_eq!(all.len() as u64, spill.len());
        for (i, p) in places.iter().enumerate() {
            assert_eq!(all[p.at as usize..][..p.len as usize], entry(i)[..]);
        }
        // A window past the end is cut short.
        let last = *places.last().unwrap();
        spill.read_window(last.at as u64, 1 << 20, &mut out).unwrap();
        assert_eq!(out, entry(places.len() - 1));
        // An entry is overwritten where it is: on disk or still pending.
        let on_disk = places[0];
        let pending = *places.last().unwrap();
        assert!(((on_disk.at + on_disk.len) as u64) <= spill.written && pending.at as u64 >= spill.written);
        for p in [on_disk, pending] {
            let new = vec![b'x'; p.len as usize];
            spill.overwrite(p, &new).unwrap();
            spill.read(p, &mut out).unwrap();
            assert_eq!(out, new);
        }
        spill.read(places[1], &mut out).unwrap();
        assert_eq!(out, entry(1), "a neighbour untouched");
        assert!(spill
            .read(
                Place {
                    at: spill.len() as u32,
                    len: 1
                },
                &mut out
            )
            .is_err());
        assert!(spill.overwrite(Place { at: 0, len: 2 }, b"abc").is_err());
    }

    #[test]
    fn compaction_keeps_the_live_entries_at_their_new_places() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(dir.path()).unwrap();
        let entry = |i: usize| format!("{i:0>200}").into_bytes();
        let mut places: Vec<(usize, Place)> = (0..20_000).map(|i| (i, spill.append(&entry(i)).unwrap())).collect();
        assert!(!spill.wants_compaction());
        // Two thirds go.
        for (_, p) in places.iter().filter(|(i, _)| i % 3 != 0) {
            spill.forget(*p);
        }
        places.retain(|(i, _)| i % 3 == 0);
        assert!(spill.wants_compaction());
        let mut fresh = spill.compacted(dir.path(), places.iter_mut().map(|(_, p)| p)).unwrap();
        assert_eq!(fresh.len(), places.len() as u64 * 200);
        assert!(!fresh.wants_compaction());
        let mut out = Vec::new();
        for (i, p) in &places {
            fresh.read(*p, &mut out).unwrap();
            assert_eq!(out, entry(*i));
        }
        fresh.flush();
        assert_eq!(fresh.written, places.len() as u64 * 200);
    }

    #[test]
    fn a_compaction_that_fails_is_not_tried_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(dir.path()).unwrap();
        let places: Vec<Place> = (0..60_000).map(|_| spill.append(&[1; 100]).unwrap()).collect();
        places[..40_000].iter().for_each(|p| spill.forget(*p));
        assert!(spill.wants_compaction());
        // The directory goes: no new file can be made there.
        let gone = dir.path().to_path_buf();
        dir.close().unwrap();
        let mut kept = places[40_000..].to_vec();
        assert!(spill.compacted(&gone, kept.iter_mut()).is_none());
        assert_eq!(kept, places[40_000..], "places untouched");
        assert!(!spill.wants_compaction(), "tried again at the next upsert");
        // Once as many bytes again are dead, it is tried again.
        let more = COMPACT_AT as usize / 100;
        places[40_000..][..more - 1].iter().for_each(|p| spill.forget(*p));
        assert!(!spill.wants_compaction());
        places[40_000..][more..][..2].iter().for_each(|p| spill.forget(*p));
        assert!(spill.wants_compaction());
    }

    /// The file is this process's alone: mode 0600 and no name, ever (a
    /// file made with `O_TMPFILE` but without `O_EXCL` can be linked into
    /// a directory through /proc/self/fd, as the control shows).
    #[test]
    fn the_spill_cannot_be_read_by_others_nor_given_a_name() {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        assert_eq!(spill.file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let link = |fd: i32, name: &str| {
            let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
            let to = std::ffi::CString::new(dir.path().join(name).into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: two valid C strings; linkat reads them only.
            unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            }
        };
        assert_eq!(link(spill.file.as_raw_fd(), "named"), -1);
        assert!(!dir.path().join("named").exists());
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir.path())
            .unwrap();
        if link(control.as_raw_fd(), "control") == 0 {
            assert!(dir.path().join("control").exists());
        }
    }

    #[test]
    fn a_spill_that_cannot_write_takes_no_more_entries_and_keeps_what_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(dir.path()).unwrap();
        // A file that refuses writes, as a full or failing disk would.
        spill.file = File::open(dir.path()).unwrap();
        let mut places = Vec::new();
        let entry = vec![7u8; 1000];
        while let Some(p) = spill.append(&entry) {
            places.push(p);
            assert!(places.len() < 1000, "the spill kept taking entries");
        }
        assert!(spill.failed);
        let mut out = Vec::new();
        for p in places {
            spill.read(p, &mut out).unwrap();
            assert_eq!(out, entry);
        }
    }
}
