//! Secret masking of the values a batch carries: every value of the
//! scannable messages found in one pass (`scan::values`), masks put in
//! place (binary values keep their length), and a batch that cannot be
//! scanned withheld up to its ReadyForQuery, an error in its place.

use super::super::relay::{Edits, FrameRef};
use super::{scannable, ServerSide};
use crate::core::sqlstate::SqlState;
use crate::scan::{engine::resolve_overlaps, values::find_in_values, Engine, Finding};
use crate::wire::pg::{self, Replace, HEADER_LEN};

/// The error a client gets in place of a value that could not be scanned.
pub(super) fn withheld_error(out: &mut Vec<u8>, why: &str) {
    pg::error_message(
        out,
        false,
        "ERROR",
        SqlState::INTERNAL_ERROR.code(),
        &format!("gatehouse withheld a result it could not scan for secrets: {why}"),
        None,
        Some("The rest of this result was not sent. Ask the gateway's operator; the session log names the cause."),
    );
}

/// A value holding a NUL byte is in binary format (text output never holds
/// one): an array, a record, … whose inner lengths a mask must not change.
fn is_binary(value: &[u8]) -> bool {
    memchr::memchr(0, value).is_some()
}

impl ServerSide<'_> {
    pub(super) fn rewrite_batch(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
        let Some(engine) = self.ctx.engine else { return };
        if let Err(why) = self.find_in_frames(engine, buf, frames) {
            // Fail closed: withhold up to the next ReadyForQuery, then scan
            // the rest of the batch afresh.
            tracing::warn!(target: "gatehouse::scan", error = %why, "result withheld: scanning failed");
            self.found.clear();
            self.withholding = true;
            self.pending_error = Some(why);
            match frames.iter().position(|f| f.tag == b'Z') {
                Some(z) => {
                    self.apply(engine, buf, &frames[..=z], edits);
                    self.rewrite_batch(buf, &frames[z + 1..], edits);
                }
                None => self.apply(engine, buf, frames, edits),
            }
            return;
        }
        if self.found.is_empty()
            && self.copy_held.is_empty()
            && !self.withholding
            && !frames.iter().any(|f| f.tag == b'd')
        {
            return; // the common case: nothing to change, zero copies
        }
        self.apply(engine, buf, frames, edits);
    }

    /// Finds secrets in the values of the scannable, non-COPY frames of a
    /// batch, each value as the string it is (see `find_in_values`).
    fn find_in_frames(&mut self, engine: &Engine, buf: &[u8], frames: &[FrameRef]) -> Result<(), String> {
        self.found.clear();
        self.values.clear();
        for (i, f) in frames.iter().enumerate() {
            if !scannable(f.tag) {
                continue;
            }
            self.spans.clear();
            if pg::value_spans(&buf[f.start..f.end], &mut self.spans).is_err() {
                return Err("malformed message from the server".into());
            }
            for &(s, e) in &self.spans {
                if e - s >= engine.min_len {
                    self.values.push((f.start + s, f.start + e, i));
                }
            }
        }
        find_in_values(
            engine,
            buf,
            &self.values,
            &mut self.seg,
            &mut self.ends,
            &mut self.hits,
            &mut self.found,
            self.ctx.applies.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

impl ServerSide<'_> {
    /// Applies findings, COPY masking and withholding to
    /// `frames` (whose findings are in `self.found`, by index).
    fn apply(&mut self, engine: &Engine, buf: &[u8], frames: &[FrameRef], edits: &mut Edits) {
        self.found.sort_by_key(|(i, f)| (*i, f.start));
        let mut fi = 0;
        let mut i = 0;
        while i < frames.len() {
            let f = frames[i];
            while fi < self.found.len() && self.found[fi].0 < i {
                fi += 1;
            }
            if self.withholding {
                self.copy_held.clear();
                if f.tag == b'Z' {
                    self.withholding = false;
                    if let Some(why) = self.pending_error.take() {
                        edits.replace(&f, |out| {
                            withheld_error(out, &why);
                            out.extend_from_slice(&buf[f.start..f.end]);
                        });
                    }
                } else if let Some(why) = self.pending_error.take() {
                    edits.replace(&f, |out| withheld_error(out, &why));
                } else {
                    edits.drop_frame(&f);
                }
                i += 1;
                continue;
            }
            if f.tag == b'd' {
                let mut j = i;
                let mut msgs = std::mem::take(&mut self.copy_held);
                while j < frames.len() && frames[j].tag == b'd' {
                    msgs.push(buf[frames[j].start + HEADER_LEN..frames[j].end].to_vec());
                    j += 1;
                }
                match self.mask_copy(engine, msgs, false) {
                    Ok(send) => {
                        if send.is_empty() {
                            edits.drop_frame(&f);
                        } else {
                            edits.replace(&f, |out| out.extend_from_slice(&send));
                        }
                        for g in &frames[i + 1..j] {
                            edits.drop_frame(g);
                        }
                        i = j;
                    }
                    Err(why) => {
                        tracing::warn!(target: "gatehouse::scan", error = %why, "COPY data withheld: scanning failed");
                        self.withholding = true;
                        self.pending_error = Some(why);
                        // Frame i is dropped (with the error) by the withholding branch.
                    }
                }
                continue;
            }
            // What is owed before this frame: the rest of a COPY stream.
            let mut pre = Vec::new();
            if !self.copy_held.is_empty() {
                let msgs = std::mem::take(&mut self.copy_held);
                match self.mask_copy(engine, msgs, true) {
                    Ok(send) => pre = send,
                    Err(why) => {
                        tracing::warn!(target: "gatehouse::scan", error = %why, "COPY data withheld: scanning failed");
                        self.withholding = true;
                        self.pending_error = Some(why);
                        continue;
                    }
                }
            }
            let start = fi;
            while fi < self.found.len() && self.found[fi].0 == i {
                fi += 1;
            }
            if start == fi {
                if !pre.is_empty() {
                    edits.replace(&f, |out| {
                        out.extend_from_slice(&pre);
                        out.extend_from_slice(&buf[f.start..f.end]);
                    });
                }
                i += 1;
                continue;
            }
            let mut fs: Vec<Finding> = self.found[start..fi].iter().map(|(_, x)| *x).collect();
            let frame = &buf[f.start..f.end];
            let ctx = self.ctx;
            edits.replace(&f, |out| {
                out.extend_from_slice(&pre);
                mask_frame(engine, frame, f.start, &mut fs, &mut self.spans, out, |rule| {
                    ctx.count_masked(rule)
                });
            });
            i += 1;
        }
    }
}

/// Appends `frame` (which starts at `frame_start` of the buffer the
/// findings' offsets are into) with each finding replaced by its rule's
/// mask: one re-frame however many values change. A value in binary format
/// keeps its length (its inner lengths must stay true). `counted` is told
/// each rule that masked a value. `spans` is scratch.
pub fn mask_frame(
    engine: &Engine,
    frame: &[u8],
    frame_start: usize,
    findings: &mut Vec<Finding>,
    spans: &mut Vec<(usize, usize)>,
    out: &mut Vec<u8>,
    mut counted: impl FnMut(u32),
) {
    resolve_overlaps(findings);
    spans.clear();
    let _ = pg::value_spans(frame, spans);
    // All masks in one buffer, cut into the replacements afterwards.
    let mut masks = Vec::with_capacity(findings.len() * 24);
    let mut cuts = Vec::with_capacity(findings.len());
    for x in findings.iter() {
        let (start, end) = (x.start - frame_start, x.end - frame_start);
        let binary = frame[0] == b'D'
            && spans
                .iter()
                .find(|&&(s, e)| s <= start && start < e)
                .is_some_and(|&(s, e)| is_binary(&frame[s..e]));
        let at = masks.len();
        if binary {
            masks.extend_from_slice(&frame[start..end]);
            engine.mask_same_len(x.rule, &mut masks[at..]);
        } else {
            engine.mask(x.rule, &frame[start..end], &mut masks);
        }
        cuts.push((start, end, at, masks.len()));
        counted(x.rule);
    }
    let reps: Vec<Replace<'_>> = cuts
        .iter()
        .map(|&(start, end, a, b)| Replace {
            start,
            end,
            with: &masks[a..b],
        })
        .collect();
    pg::rebuild(frame, spans, &reps, out);
}
