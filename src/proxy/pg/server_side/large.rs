//! A server message larger than the relay buffer, streamed through in
//! pieces: counted against `max_rows`, each value (or the part of it in a
//! piece) masked in place with masks fitted to the secret, and a value over
//! the scanning limit withheld.

use super::super::relay::Large;
use super::masking::withheld_error;
use super::max_rows::cut_error;
use super::{scannable_or_copy, ServerSide};
use crate::wire::pg::HEADER_LEN;

/// A large frame streamed in pieces: its tag, the frame offset of the next
/// piece, and (DataRow) the columns still to come, the offset of the next
/// column's length and the current column's value.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LargeScan {
    pub tag: u8,
    pub off: usize,
    /// Columns not yet located; -1 until the column count is read.
    pub cols_left: i32,
    pub next: usize,
    pub value: (usize, usize),
}

impl ServerSide<'_> {
    /// Value ranges (frame offsets) of a streamed large frame within the
    /// piece `[base, end)`, advancing the DataRow parse over the lengths
    /// found in `chunk`. Returns the frame offset from which the piece must
    /// be seen again (a length not yet complete in it).
    pub(super) fn large_values(&mut self, chunk: &[u8], out: &mut Vec<(usize, usize)>) -> usize {
        let lg = &mut self.large;
        let (base, end) = (lg.off, lg.off + chunk.len());
        let clip = |out: &mut Vec<(usize, usize)>, (s, e): (usize, usize)| {
            let (s, e) = (s.max(base), e.min(end));
            if s < e {
                out.push((s, e));
            }
        };
        match lg.tag {
            b'D' => {
                if lg.cols_left < 0 {
                    if base > HEADER_LEN {
                        // Lost track (cannot happen): scan whole pieces.
                        lg.tag = 0;
                        clip(out, (0, usize::MAX));
                        return end;
                    }
                    if end < HEADER_LEN + 2 {
                        return HEADER_LEN;
                    }
                    let at = HEADER_LEN - base;
                    lg.cols_left = i16::from_be_bytes([chunk[at], chunk[at + 1]]).max(0) as i32;
                    lg.next = HEADER_LEN + 2;
                    lg.value = (lg.next, lg.next);
                }
                clip(out, lg.value);
                while lg.cols_left > 0 && lg.next >= base && lg.next + 4 <= end {
                    let at = lg.next - base;
                    let len = i32::from_be_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]]);
                    let s = lg.next + 4;
                    lg.value = (s, s + len.max(0) as usize);
                    lg.next = lg.value.1;
                    lg.cols_left -= 1;
                    clip(out, lg.value);
                }
                if lg.cols_left > 0 && lg.next < base {
                    // Lost track (cannot happen): scan whole pieces.
                    lg.tag = 0;
                    out.clear();
                    clip(out, (0, usize::MAX));
                } else if lg.cols_left > 0 && lg.next < end {
                    return lg.next;
                }
                end
            }
            b'd' => {
                clip(out, (HEADER_LEN, usize::MAX));
                end
            }
            _ => {
                clip(out, (0, usize::MAX));
                end
            }
        }
    }

    pub(super) fn large_frame(&mut self, tag: u8, total_len: usize, _head: &[u8], out: &mut Vec<u8>) -> Large {
        if matches!(tag, b'D' | b'd') {
            self.rows += 1;
            if let Some(max) = self.ctx.max_rows {
                if self.cutting {
                    return Large::Discard;
                }
                self.result_rows += 1;
                if self.result_rows > max {
                    let owed = self.flush_copy();
                    out.extend_from_slice(&owed);
                    cut_error(out, max);
                    self.cutting = true;
                    return Large::Discard;
                }
            }
        }
        if self.withholding {
            return Large::Discard;
        }
        if let Some(engine) = self.ctx.engine {
            // What is owed before it goes first.
            let msgs = std::mem::take(&mut self.copy_held);
            let why = match self.mask_copy(engine, msgs, true) {
                Ok(send) => {
                    out.extend_from_slice(&send);
                    None
                }
                Err(e) => Some(e),
            };
            let why = why.or_else(|| {
                (total_len > self.ctx.max_value && scannable_or_copy(tag)).then(|| {
                    tracing::warn!(target: "gatehouse::scan", bytes = total_len, "value over the scanning limit withheld");
                    format!(
                        "a value of {total_len} bytes is over the scanning limit of {} bytes",
                        self.ctx.max_value
                    )
                })
            });
            if let Some(why) = why {
                withheld_error(out, &why);
                self.withholding = true;
                return Large::Discard;
            }
            self.large = LargeScan {
                tag,
                cols_left: -1,
                ..LargeScan::default()
            };
        }
        Large::Stream
    }
}
