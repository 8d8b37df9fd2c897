//! The policy's `max_rows`: past it a result is cut, an error in place of
//! the next row and the rest of that result dropped.

use super::super::relay::{Edits, FrameRef};
use super::ServerSide;
use crate::core::sqlstate::SqlState;
use crate::wire::pg;

/// The error in place of the first row past the policy's `max_rows`.
pub(super) fn cut_error(out: &mut Vec<u8>, max: u64) {
    pg::error_message(
        out,
        false,
        "ERROR",
        SqlState::PROGRAM_LIMIT_EXCEEDED.code(),
        &format!("result cut by gatehouse after {max} rows: the policy's max_rows for this identity"),
        None,
        Some("Narrow the query (WHERE, LIMIT) or ask for a role with a higher max_rows."),
    );
}

impl ServerSide<'_> {
    /// Masking, and the policy's `max_rows` cut.
    pub(super) fn rewrite_rows(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
        let Some(max) = self.ctx.max_rows else {
            self.rewrite_batch(buf, frames, edits);
            return;
        };
        // Past `max` rows a result is cut: an error in place of the next
        // row, and the rest of that result (up to its end) dropped.
        let mut start = 0;
        for (i, f) in frames.iter().enumerate() {
            let ends_result = matches!(f.tag, b'C' | b's' | b'E' | b'I');
            if self.cutting {
                edits.drop_frame(f);
                if ends_result {
                    self.cutting = false;
                    self.result_rows = 0;
                }
                start = i + 1;
                continue;
            }
            // Result rows: DataRows, and the CopyData of a COPY TO STDOUT
            // (one message per row).
            if matches!(f.tag, b'D' | b'd') {
                self.result_rows += 1;
                if self.result_rows > max {
                    if start < i {
                        self.rewrite_batch(buf, &frames[start..i], edits);
                    }
                    // COPY data held back goes out before the cut.
                    let owed = self.flush_copy();
                    edits.replace(f, |out| {
                        out.extend_from_slice(&owed);
                        cut_error(out, max)
                    });
                    tracing::info!(target: "gatehouse::policy", max_rows = max, "result cut by policy");
                    self.cutting = true;
                    start = i + 1;
                }
            } else if ends_result || f.tag == b'Z' {
                self.result_rows = 0;
            }
        }
        if start < frames.len() {
            self.rewrite_batch(buf, &frames[start..], edits);
        }
    }
}
