//! What one MySQL answer leaves in the session's recording. The recorder
//! reads every protocol's answers in one format, PostgreSQL's messages, so
//! the answer is written as such: a RowDescription ('T') with the column
//! names when a result set's rows begin, a DataRow ('D') per row with each
//! value as text (`results = "full"`, within the per-result caps; past
//! them the rows count as a gap), a CommandComplete ('C') or ErrorResponse
//! ('E') per result, and a ReadyForQuery ('Z') at the end of the answer.
//! Rows are taken as the client got them: masked.

use crate::config::ResultsMode;
use crate::core::sqlstate::SqlState;
use crate::record::events::Ev;
use crate::record::link::SessionRec;
use crate::wire::mysql::rows::{binary_row_values, binary_value_text, text_row_values};

/// The column flag of unsigned integers.
const UNSIGNED_FLAG: u16 = 32;

/// Frames gathered beyond this many bytes go to the recorder before the
/// answer ends.
const SEND_AT: usize = 256 * 1024;

pub struct Capture<'r> {
    rec: &'r SessionRec,
    full: bool,
    frames: Vec<u8>,
    /// Rows of the current result set.
    set_rows: u64,
}

impl<'r> Capture<'r> {
    pub fn new(rec: &'r SessionRec) -> Capture<'r> {
        Capture {
            rec,
            full: rec.mode == ResultsMode::Full,
            frames: Vec::new(),
            set_rows: 0,
        }
    }

    /// Whether column names are wanted (every mode but `none` lists them).
    pub fn wants_names(rec: &SessionRec) -> bool {
        rec.mode != ResultsMode::None
    }

    /// A result set's rows begin: its columns by name.
    pub fn columns(&mut self, names: &[Vec<u8>]) {
        let mut body = Vec::with_capacity(2 + names.iter().map(|n| n.len() + 19).sum::<usize>());
        body.extend_from_slice(&(names.len().min(i16::MAX as usize) as i16).to_be_bytes());
        for n in names.iter().take(i16::MAX as usize) {
            body.extend(n.iter().copied().filter(|&b| b != 0));
            body.push(0);
            // table oid, column number, type oid (text), size, modifier, format (text)
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
            body.extend_from_slice(&25i32.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        frame(&mut self.frames, b'T', &body);
        self.set_rows = 0;
        self.send_some();
    }

    /// One row as the client got it. `binary`: COM_STMT_EXECUTE's encoding
    /// of `column_types` (with their `flags`); text rows otherwise.
    pub fn row(&mut self, payload: &[u8], binary: bool, column_types: &[u8], flags: &[u16]) {
        self.set_rows += 1;
        if !self.full {
            return;
        }
        let (r, b) = (self.rec.rows.get(), self.rec.bytes.get());
        if r >= self.rec.max_rows || b + payload.len() as u64 > self.rec.max_bytes {
            self.rec.gap_rows.set(self.rec.gap_rows.get() + 1);
            self.rec.gap_bytes.set(self.rec.gap_bytes.get() + payload.len() as u64);
            return;
        }
        let spans = if binary {
            binary_row_values(payload, column_types)
        } else {
            text_row_values(payload, column_types.len())
        };
        let Ok(spans) = spans else {
            // The relay already checked the row; nothing half-read is recorded.
            return;
        };
        let mut body = Vec::with_capacity(2 + payload.len() + 4 * spans.len());
        body.extend_from_slice(&(spans.len().min(i16::MAX as usize) as i16).to_be_bytes());
        for (i, s) in spans.iter().enumerate().take(i16::MAX as usize) {
            let Some(range) = &s.range else {
                body.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            };
            let raw = &payload[range.clone()];
            let text;
            let value: &[u8] = if binary && !s.textual {
                let unsigned = flags.get(i).is_some_and(|f| f & UNSIGNED_FLAG != 0);
                text = binary_value_text(column_types[i], unsigned, raw);
                text.as_bytes()
            } else {
                raw
            };
            body.extend_from_slice(&(value.len().min(i32::MAX as usize) as i32).to_be_bytes());
            body.extend_from_slice(value);
        }
        // What is recorded counts against the caps, not what the server
        // sent (a NULL bit becomes four bytes, a double its digits).
        if b + body.len() as u64 + 5 > self.rec.max_bytes {
            self.rec.gap_rows.set(self.rec.gap_rows.get() + 1);
            self.rec.gap_bytes.set(self.rec.gap_bytes.get() + body.len() as u64);
            return;
        }
        self.rec.rows.set(r + 1);
        self.rec.bytes.set(b + body.len() as u64 + 5);
        frame(&mut self.frames, b'D', &body);
        self.send_some();
    }

    /// Sends what is gathered when it grows, so that an answer of many
    /// result sets is never held whole.
    fn send_some(&mut self) {
        if self.frames.len() >= SEND_AT {
            let frames = std::mem::take(&mut self.frames);
            self.push(frames, Vec::new());
        }
    }

    fn push(&self, frames: Vec<u8>, masked: Vec<(String, u64)>) {
        self.rec.push(Ev::Server {
            session: self.rec.key,
            t: crate::record::now_us(),
            frames,
            masked,
            gap_rows: self.rec.gap_rows.replace(0),
            gap_bytes: self.rec.gap_bytes.replace(0),
        });
    }

    /// A result set's rows ended.
    pub fn rows_end(&mut self) {
        let tag = format!("SELECT {}", self.set_rows);
        self.complete(tag.as_bytes());
    }

    /// An OK that is a result of its own (a statement that returns no rows).
    pub fn ok(&mut self, affected: u64) {
        let tag = format!("OK {affected}");
        self.complete(tag.as_bytes());
    }

    /// The server's error (its message masked by the caller).
    pub fn error(&mut self, code: u16, message: &str) {
        let mut body = Vec::new();
        crate::wire::pg::error_message(
            &mut body,
            false,
            "ERROR",
            SqlState::INTERNAL_ERROR.code(),
            &format!("MySQL error {code}: {message}"),
            None,
            None,
        );
        self.frames.extend_from_slice(&body);
        self.reset_caps();
    }

    fn complete(&mut self, tag: &[u8]) {
        let mut body = tag.to_vec();
        body.push(0);
        frame(&mut self.frames, b'C', &body);
        self.set_rows = 0;
        self.reset_caps();
        self.send_some();
    }

    fn reset_caps(&self) {
        self.rec.rows.set(0);
        self.rec.bytes.set(0);
    }

    /// The answer is over: everything goes to the recorder, with the
    /// values masked on the way (`masked`: rule id and count).
    pub fn finish(mut self, masked: Vec<(String, u64)>) {
        frame(&mut self.frames, b'Z', b"I");
        let frames = std::mem::take(&mut self.frames);
        self.push(frames, masked);
    }
}

impl Capture<'_> {
    /// The answer to a statement gatehouse refused: its error, and the end.
    pub fn refused(rec: &SessionRec, message: &str) {
        let mut frames = Vec::new();
        crate::wire::pg::error_message(
            &mut frames,
            false,
            "ERROR",
            SqlState::INSUFFICIENT_PRIVILEGE.code(),
            message,
            None,
            None,
        );
        frame(&mut frames, b'Z', b"I");
        rec.push(Ev::Server {
            session: rec.key,
            t: crate::record::now_us(),
            frames,
            masked: Vec::new(),
            gap_rows: 0,
            gap_bytes: 0,
        });
    }
}

fn frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}
