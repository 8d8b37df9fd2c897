//! One scanning pass over all the rows waiting in a read buffer.
//!
//! A Hyperscan call costs a fixed ~0.3 µs before its first byte (more when
//! the network stack has pushed its tables out of cache between calls), so
//! a 100-row result scanned row by row pays that a hundred times. Before
//! the relay reads the first of several whole rows in the buffer, their
//! values go through `find_in_values` together; a row the pass finds clean
//! is relayed as it came, and a row with a confirmed finding is masked by
//! its own pass as before. The pass lays values out exactly as the per-row
//! pass does (each value alone on its line, every hit confirmed on its own
//! value by the rule's regex), so it finds in a row what a pass over that
//! row alone finds; anything it cannot read or that overflows leaves its
//! rows to the per-row pass, which fails closed on them as it always did.

use std::collections::VecDeque;

use crate::scan::{values::find_in_values, Engine, Finding, Hit};
use crate::wire::mysql::response::{EOF_HEADER, ERR_HEADER};
use crate::wire::mysql::rows::{binary_row_values, text_row_values};
use crate::wire::mysql::{frame, Message};

/// Rows covered by one pass at most, and their bytes: enough to amortise
/// the call, small enough that the copy stays in cache.
const MAX_ROWS: usize = 1024;
const MAX_BYTES: usize = 256 * 1024;

/// The verdicts of the last pass, for rows the relay has not read yet.
#[derive(Default)]
pub struct RowPrescan {
    /// (offset of the row's message in the read buffer, whether the pass
    /// confirmed a secret in it), in buffer order.
    ahead: VecDeque<(usize, bool)>,
    /// A pass that failed (too many candidates) covered the buffer up to
    /// here: the rows before it get passes of their own, not the same
    /// failing pass again for each.
    no_pass_before: usize,
    rows: Vec<(usize, usize)>,
    values: Vec<(usize, usize, usize)>,
    /// Row (index into `rows`) of each value.
    row_of: Vec<usize>,
    flagged: Vec<bool>,
    seg: Vec<u8>,
    ends: Vec<usize>,
    hits: Vec<Hit>,
    found: Vec<(usize, Finding)>,
}

impl RowPrescan {
    /// Forgets every verdict: the buffer is about to move.
    pub fn clear(&mut self) {
        self.ahead.clear();
        self.no_pass_before = 0;
    }

    /// The verdict for the row whose message starts at `at`: `Some(false)`
    /// when the pass found it clean, `Some(true)` when it found a secret,
    /// `None` when no pass covered it (the row gets a pass of its own).
    /// A row out of the expected order drops every verdict.
    pub fn take(&mut self, at: usize) -> Option<bool> {
        match self.ahead.front() {
            Some(&(offset, flagged)) if offset == at => {
                self.ahead.pop_front();
                Some(flagged)
            }
            Some(_) => {
                self.ahead.clear();
                None
            }
            None => None,
        }
    }

    /// Scans the whole row messages of a result set in `buf[from..]`, up to
    /// the first message that is not a row (its end or an error), is not
    /// whole yet, or spans several packets. Rows of a binary result are
    /// read with `binary_types`, text rows as `columns` values. Fewer than
    /// two rows, or anything that fails, leaves no verdicts.
    #[allow(clippy::too_many_arguments)] // the row layout and the masking choice, passed apart
    pub fn scan(
        &mut self,
        engine: &Engine,
        applies: Option<&[bool]>,
        buf: &[u8],
        from: usize,
        max_msg: usize,
        binary_types: Option<&[u8]>,
        columns: usize,
    ) {
        self.ahead.clear();
        self.rows.clear();
        if from < self.no_pass_before {
            return;
        }
        let mut at = from;
        let mut bytes = 0;
        while self.rows.len() < MAX_ROWS && bytes < MAX_BYTES {
            let Ok(Some(m)) = frame(&buf[at..], max_msg) else { break };
            if !is_single_row(&buf[at..], &m) {
                break;
            }
            self.rows.push((at, at + m.wire_len));
            bytes += m.payload_len;
            at += m.wire_len;
        }
        if self.rows.len() < 2 {
            return;
        }
        self.values.clear();
        self.row_of.clear();
        for (k, &(start, end)) in self.rows.iter().enumerate() {
            let payload = &buf[start + 4..end];
            let spans = match binary_types {
                Some(types) => binary_row_values(payload, types),
                None => text_row_values(payload, columns),
            };
            let Ok(spans) = spans else {
                // The relay reports the malformed row when it gets there.
                self.rows.truncate(k);
                break;
            };
            for s in spans {
                if let (Some(r), true) = (s.range, s.textual) {
                    if !r.is_empty() {
                        self.values
                            .push((start + 4 + r.start, start + 4 + r.end, self.values.len()));
                        self.row_of.push(k);
                    }
                }
            }
        }
        if self.rows.len() < 2 {
            return;
        }
        self.found.clear();
        let scanned = find_in_values(
            engine,
            buf,
            &self.values,
            &mut self.seg,
            &mut self.ends,
            &mut self.hits,
            &mut self.found,
            applies,
        );
        if scanned.is_err() {
            self.no_pass_before = self.rows.last().map_or(from, |r| r.1);
            return;
        }
        self.flagged.clear();
        self.flagged.resize(self.rows.len(), false);
        for (value, _) in &self.found {
            if let Some(&row) = self.row_of.get(*value) {
                self.flagged[row] = true;
            }
        }
        self.ahead
            .extend(self.rows.iter().zip(&self.flagged).map(|(&(start, _), &f)| (start, f)));
    }
}

/// Whether the message at the start of `wire` is one packet holding a row:
/// not an ERR, not the EOF that ends the rows (0xFE and shorter than 9
/// bytes, as the reader tells them apart).
fn is_single_row(wire: &[u8], m: &Message) -> bool {
    if m.packets != 1 || m.payload_len == 0 {
        return false;
    }
    let first = wire[4];
    first != ERR_HEADER && !(first == EOF_HEADER && m.payload_len < 9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{MaskKind, Rule};
    use crate::wire::mysql::bytes::put_lenenc_bytes;
    use crate::wire::mysql::write_message;
    use proptest::prelude::*;

    const KEY: &str = "AKIAABCDEFGHIJKLMNOP";

    fn engine() -> Engine {
        let rule = Rule {
            id: "aws".into(),
            name: "aws".into(),
            pattern: r"\b(AKIA[A-Z0-9]{16})\b".into(),
            keywords: vec![],
            entropy: None,
            validator: None,
            mask: MaskKind::Redact,
            group: None,
            prefilter: None,
        };
        Engine::new(&[rule], [0; 32]).unwrap()
    }

    /// Text rows (`None` a NULL), then an EOF; each row's offset.
    fn text_rows(rows: &[Vec<Option<String>>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let mut p = Vec::new();
            for v in row {
                match v {
                    Some(v) => put_lenenc_bytes(&mut p, v.as_bytes()),
                    None => p.push(0xfb),
                }
            }
            offsets.push(out.len());
            write_message(&mut out, i as u8, &p);
        }
        write_message(&mut out, rows.len() as u8, &[0xfe, 0, 0, 2, 0]);
        (out, offsets)
    }

    /// What a pass over the row alone finds (the per-row masking pass).
    fn alone(e: &Engine, wire: &[u8], at: usize, columns: usize) -> bool {
        let m = frame(&wire[at..], 1 << 20).unwrap().unwrap();
        let p = &wire[at + 4..at + m.wire_len];
        let values: Vec<_> = text_row_values(p, columns)
            .unwrap()
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| s.range.filter(|r| !r.is_empty()).map(|r| (r.start, r.end, i)))
            .collect();
        let (mut seg, mut ends, mut hits, mut found) = Default::default();
        find_in_values(e, p, &values, &mut seg, &mut ends, &mut hits, &mut found, None).unwrap();
        !found.is_empty()
    }

    #[test]
    fn verdicts_for_each_row_up_to_the_end_of_the_rows() {
        let e = engine();
        let rows = vec![
            vec![Some("1".into()), Some("plain".into())],
            vec![Some("2".into()), Some(format!("key {KEY} here"))],
            vec![None, Some("AKIA but not a key".into())],
            vec![Some(KEY.into()), None],
        ];
        let (wire, offsets) = text_rows(&rows);
        let mut p = RowPrescan::default();
        p.scan(&e, None, &wire, 0, 1 << 20, None, 2);
        let got: Vec<_> = offsets.iter().map(|&o| p.take(o)).collect();
        assert_eq!(got, [Some(false), Some(true), Some(false), Some(true)]);
        // Nothing past the rows: the EOF has no verdict.
        let eof = wire.len() - 9;
        assert_eq!(p.take(eof), None);
    }

    #[test]
    fn a_rule_that_does_not_apply_leaves_the_row_clean() {
        let e = engine();
        let (wire, offsets) = text_rows(&[vec![Some(KEY.into())], vec![Some("x".into())]]);
        let mut p = RowPrescan::default();
        p.scan(&e, Some(&[false]), &wire, 0, 1 << 20, None, 1);
        assert_eq!(p.take(offsets[0]), Some(false));
    }

    #[test]
    fn no_verdicts_for_a_lone_row_a_malformed_one_or_a_row_out_of_order() {
        let e = engine();
        let mut p = RowPrescan::default();
        // One row: its own pass costs the same.
        let (wire, offsets) = text_rows(&[vec![Some(KEY.into())]]);
        p.scan(&e, None, &wire, 0, 1 << 20, None, 1);
        assert_eq!(p.take(offsets[0]), None);
        // A row that says it has more bytes than it holds: the rows before
        // it are judged, it and the rest are left to the relay.
        let mut wire = Vec::new();
        let mut good = Vec::new();
        put_lenenc_bytes(&mut good, b"a");
        write_message(&mut wire, 0, &good);
        write_message(&mut wire, 1, &good);
        let bad_at = wire.len();
        write_message(&mut wire, 2, &[50, b'x']);
        write_message(&mut wire, 3, &good);
        p.scan(&e, None, &wire, 0, 1 << 20, None, 1);
        assert_eq!(p.take(0), Some(false));
        assert_eq!(p.take(6), Some(false));
        assert_eq!(p.take(bad_at), None);
        // Asked about another row than the next: everything is dropped.
        let (wire, offsets) = text_rows(&[vec![Some("a".into())], vec![Some("b".into())], vec![Some("c".into())]]);
        p.scan(&e, None, &wire, 0, 1 << 20, None, 1);
        assert_eq!(p.take(offsets[1]), None);
        assert_eq!(p.take(offsets[2]), None);
    }

    #[test]
    fn binary_rows_are_read_with_their_column_types() {
        let e = engine();
        // Columns: a LONG (4 bytes, not text) and a VAR_STRING.
        let types = [0x03u8, 0xfd];
        let mut wire = Vec::new();
        let mut offsets = Vec::new();
        for (i, text) in ["nothing", KEY].iter().enumerate() {
            let mut p = vec![0x00, 0x00];
            p.extend_from_slice(&7u32.to_le_bytes());
            put_lenenc_bytes(&mut p, text.as_bytes());
            offsets.push(wire.len());
            write_message(&mut wire, i as u8, &p);
        }
        let mut p = RowPrescan::default();
        p.scan(&e, None, &wire, 0, 1 << 20, Some(&types), 2);
        assert_eq!(p.take(offsets[0]), Some(false));
        assert_eq!(p.take(offsets[1]), Some(true));
    }

    proptest! {
        /// Whatever the rows, a row's verdict is what a pass over it alone
        /// finds: a key split over two values, glued to the next value's
        /// bytes, or cut by a value's end is judged as it is alone.
        #[test]
        fn the_batch_finds_what_each_row_alone_finds(
            rows in prop::collection::vec(
                prop::collection::vec(
                    prop::option::of(prop::sample::select(vec![
                        "", "AKIA", "ABCDEFGHIJKLMNOP", KEY, "x AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOPQ",
                        "-AKIAABCDEFGHIJKLMNOP-", "plain text", "AKIAABCDEFGHIJKLMNO",
                    ]).prop_map(String::from)),
                    3,
                ),
                2..40,
            )
        ) {
            let e = engine();
            let (wire, offsets) = text_rows(&rows);
            let mut p = RowPrescan::default();
            p.scan(&e, None, &wire, 0, 1 << 20, None, 3);
            for &o in &offsets {
                prop_assert_eq!(p.take(o), Some(alone(&e, &wire, o, 3)));
            }
        }
    }

    #[test]
    fn a_failed_pass_is_not_redone_for_each_row_it_covered() {
        let e = engine();
        // (Overflowing a pass takes 100,000 candidate regions 8 KiB apart;
        // the bookkeeping is what is tested here.)
        let rows = vec![
            vec![Some("a".to_string())],
            vec![Some("b".to_string())],
            vec![Some("c".to_string())],
        ];
        let (wire, offsets) = text_rows(&rows);
        // As after a pass over all three rows failed.
        let mut p = RowPrescan {
            no_pass_before: offsets[2] + 6,
            ..Default::default()
        };
        p.scan(&e, None, &wire, offsets[1], 1 << 20, None, 1);
        assert_eq!(p.take(offsets[1]), None, "no new pass inside the failed one");
        p.scan(&e, None, &wire, offsets[2], 1 << 20, None, 1);
        assert_eq!(p.take(offsets[2]), None);
        // A new buffer (after a fill) starts afresh.
        p.clear();
        p.scan(&e, None, &wire, 0, 1 << 20, None, 1);
        assert_eq!(p.take(offsets[0]), Some(false));
    }
}
