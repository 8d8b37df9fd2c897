//! What a PostgreSQL session hands the recorder: copies of the frames that
//! matter, taken as they go out (server frames after masking), through the
//! session's link (`record::link`).

use super::relay::{Edits, FrameRef};
use crate::config::ResultsMode;
use crate::core::enforce::Refusal;
use crate::record::events::Ev;
use crate::record::link::SessionRec;
use crate::record::{now_us, StatementRef};

fn client_tag(t: u8) -> bool {
    matches!(t, b'Q' | b'P' | b'B' | b'E' | b'F' | b'C' | b'S')
}

fn server_tag(t: u8) -> bool {
    matches!(
        t,
        b'T' | b'C' | b'E' | b'N' | b'A' | b'I' | b's' | b'Z' | b'G' | b'H' | b'W' | b'c'
    )
}

/// The PostgreSQL capture of a session's frames.
pub trait PgCapture {
    /// The client frames of a batch (up to a hold), which of them were
    /// refused (`refused`: frame index in `frames`, and why), and
    /// what their statements were (`statements`: frame index in `frames`).
    fn client(&self, buf: &[u8], frames: &[FrameRef], refused: &[(usize, Refusal)], statements: &[StatementRef]);
    /// The server frames of a batch as the client gets them: frames an
    /// edit replaced are taken from the edit's output.
    fn server(&self, buf: &[u8], frames: &[FrameRef], edits: &Edits, rule_id: impl Fn(u32) -> String);
    /// A large DataRow streamed through is not recorded: counted as a gap.
    fn large_row(&self, len: usize);
}

impl PgCapture for SessionRec {
    /// The client frames of a batch (up to a hold), which of them were
    /// refused (`refused`: frame index in `frames`, and why), and
    /// what their statements were (`statements`: frame index in `frames`).
    fn client(&self, buf: &[u8], frames: &[FrameRef], refused: &[(usize, Refusal)], statements: &[StatementRef]) {
        let size: usize = frames
            .iter()
            .filter(|f| client_tag(f.tag))
            .map(|f| f.end - f.start)
            .sum();
        if size == 0 {
            return;
        }
        let mut out = Vec::with_capacity(size);
        let mut marks = Vec::new();
        let mut refs = Vec::with_capacity(statements.len());
        let mut idx: u32 = 0;
        for (i, f) in frames.iter().enumerate() {
            if !client_tag(f.tag) {
                continue;
            }
            out.extend_from_slice(&buf[f.start..f.end]);
            if let Some((_, refusal)) = refused.iter().find(|r| r.0 == i) {
                marks.push((idx, refusal.code().code(), refusal.message()));
            }
            if let Some(s) = statements.iter().find(|s| s.frame as usize == i) {
                refs.push(StatementRef {
                    frame: idx,
                    ..s.clone()
                });
            }
            idx += 1;
        }
        if out.is_empty() {
            return;
        }
        self.push(Ev::Client {
            session: self.key,
            t: now_us(),
            frames: out,
            refused: marks,
            statements: refs,
        });
    }

    /// The server frames of a batch as the client gets them: frames an
    /// edit replaced are taken from the edit's output.
    fn server(&self, buf: &[u8], frames: &[FrameRef], edits: &Edits, rule_id: impl Fn(u32) -> String) {
        let full = self.mode == ResultsMode::Full;
        let size: usize = frames
            .iter()
            .filter(|f| full || f.tag != b'D')
            .map(|f| f.end - f.start)
            .sum::<usize>()
            + edits.out.len();
        let mut out = Vec::with_capacity(size);
        let mut e = 0;
        for f in frames {
            while e < edits.list.len() && edits.list[e].frame_start < f.start {
                e += 1;
            }
            let (bytes, replaced) = match edits.list.get(e) {
                Some(x) if x.frame_start == f.start => (&edits.out[x.from..x.to], true),
                _ => (&buf[f.start..f.end], false),
            };
            let Some(&tag) = bytes.first() else { continue };
            if tag == b'D' {
                if !full {
                    continue;
                }
                let (r, b) = (self.rows.get(), self.bytes.get());
                if r >= self.max_rows || b + bytes.len() as u64 > self.max_bytes {
                    self.gap_rows.set(self.gap_rows.get() + 1);
                    self.gap_bytes.set(self.gap_bytes.get() + bytes.len() as u64);
                    continue;
                }
                self.rows.set(r + 1);
                self.bytes.set(b + bytes.len() as u64);
                out.extend_from_slice(bytes);
                continue;
            }
            // A replacement may hold several frames (an error in place of a
            // row): kept whole.
            if replaced || server_tag(tag) {
                out.extend_from_slice(bytes);
            }
            if matches!(tag, b'C' | b'E' | b'I' | b's' | b'Z') {
                self.rows.set(0);
                self.bytes.set(0);
            }
        }
        let masked: Vec<(String, u64)> = std::mem::take(&mut *self.masked.borrow_mut())
            .into_iter()
            .map(|(r, n)| (rule_id(r), n))
            .collect();
        if out.is_empty() && masked.is_empty() {
            return;
        }
        let ev = Ev::Server {
            session: self.key,
            t: now_us(),
            frames: out,
            masked,
            gap_rows: self.gap_rows.replace(0),
            gap_bytes: self.gap_bytes.replace(0),
        };
        self.push(ev);
    }

    /// A large DataRow streamed through is not recorded: counted as a gap.
    fn large_row(&self, len: usize) {
        if self.mode == ResultsMode::Full {
            self.gap_rows.set(self.gap_rows.get() + 1);
            self.gap_bytes.set(self.gap_bytes.get() + len as u64);
        }
    }
}

/// Rows (DataRow frames) taken out of server frames: (kept, rows, bytes).
pub fn strip_rows(frames: &[u8]) -> (Vec<u8>, u64, u64) {
    let mut kept = Vec::with_capacity(frames.len().min(4096));
    let (mut rows, mut bytes) = (0, 0);
    let mut at = 0;
    while at + 5 <= frames.len() {
        let len = i32::from_be_bytes([frames[at + 1], frames[at + 2], frames[at + 3], frames[at + 4]]) as usize;
        let end = (at + 1 + len).min(frames.len());
        if frames[at] == b'D' {
            rows += 1;
            bytes += (end - at) as u64;
        } else {
            kept.extend_from_slice(&frames[at..end]);
        }
        at = end;
    }
    (kept, rows, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) -> FrameRef {
        let start = out.len();
        out.push(tag);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        FrameRef {
            tag,
            start,
            end: out.len(),
        }
    }

    #[test]
    fn statements_queue_when_the_channel_is_full_and_rows_are_dropped_as_a_gap() {
        let (tx, mut rx) = mpsc::channel(1);
        let rec = SessionRec::new(tx, Default::default(), ResultsMode::Full, 1000, 1 << 20, strip_rows);
        let mut buf = Vec::new();
        let q = frame(&mut buf, b'Q', b"select 1\0");
        rec.client(&buf, &[q], &[], &[]);
        rec.client(&buf, &[q], &[], &[]);
        assert!(rec.pending(), "the second statement waits for room");
        // Server rows while the channel is full: the rows are dropped and
        // counted, the rest of the event waits.
        let mut sbuf = Vec::new();
        let d1 = frame(&mut sbuf, b'D', b"\0\x01\0\0\0\x011");
        let d2 = frame(&mut sbuf, b'D', b"\0\x01\0\0\0\x012");
        let c = frame(&mut sbuf, b'C', b"SELECT 2\0");
        rec.server(&sbuf, &[d1, d2, c], &Edits::default(), |_| String::new());
        assert!(matches!(rx.try_recv(), Ok(Ev::Client { .. })));
        // The writer drains on its own thread; the session polls.
        let drain = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 2 {
                got.push(rx.blocking_recv().unwrap());
            }
            got
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(rec.flush());
        let got = drain.join().unwrap();
        {
            assert!(matches!(got[0], Ev::Client { .. }), "in order");
            match &got[1] {
                Ev::Server {
                    frames,
                    gap_rows,
                    gap_bytes,
                    ..
                } => {
                    assert_eq!(*gap_rows, 2);
                    assert_eq!(*gap_bytes, 2 * 12);
                    assert_eq!(frames[0], b'C', "the command tag is kept");
                }
                _ => panic!("a server event"),
            }
        }
        assert!(!rec.pending());
    }

    #[test]
    fn summary_mode_keeps_no_rows_and_takes_masked_frames_from_edits() {
        let (tx, mut rx) = mpsc::channel(8);
        let rec = SessionRec::new(tx, Default::default(), ResultsMode::Summary, 1000, 1 << 20, strip_rows);
        let mut sbuf = Vec::new();
        let d = frame(&mut sbuf, b'D', b"\0\x01\0\0\0\x06secret");
        let e = frame(&mut sbuf, b'E', b"Mleaked secret\0\0");
        let mut edits = Edits::default();
        edits.replace(&e, |out| {
            frame(out, b'E', b"M[MASKED]\0\0");
        });
        rec.server(&sbuf, &[d, e], &edits, |_| String::new());
        let Ok(Ev::Server { frames, .. }) = rx.try_recv() else {
            panic!()
        };
        assert_eq!(frames[0], b'E');
        assert!(!frames.windows(6).any(|w| w == b"secret"), "masked as sent");
    }
}
