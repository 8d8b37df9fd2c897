//! The server's side of the relay: every message the server sends, in
//! order, through the protocol tracker (which answers are the client's, and
//! which belong to messages gatehouse sent itself), then secret masking of
//! everything that leaves the database, the policy's `max_rows` cut, and the
//! watch on the parameters gatehouse pins.

use super::capture::PgCapture;
use super::ctx::SessionCtx;
use super::read_write::{MARK_CATALOG, MARK_RESTORE};
use super::relay::{Action, Edits, FrameHandler, FrameRef, Large, Refused};
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::scan::{engine::resolve_overlaps, Engine, Finding, Hit, ScanError};
use crate::wire::pg::track::{Delivery, Done};
use crate::wire::pg::{self, Replace, HEADER_LEN};

/// Held back at the end of a COPY stream so a secret split across two
/// CopyData messages is still seen whole.
pub const COPY_HOLD: usize = crate::scan::engine::WINDOW;

/// The backend side: counts, masks, fails closed.
pub struct ServerSide<'a> {
    pub ctx: &'a SessionCtx<'a>,
    pub bytes: u64,
    pub rows: u64,
    /// Rows and bytes already added to the budget meter.
    metered: (u64, u64),
    /// After a withheld value: drop everything up to ReadyForQuery.
    withholding: bool,
    /// The error still to send in place of the first withheld frame.
    pending_error: Option<String>,
    /// Rows of the current result (for `max_rows`), and whether the rest of
    /// a result past the limit is being dropped.
    result_rows: u64,
    cutting: bool,
    /// The last CopyData payloads of a COPY OUT stream, not yet sent (each
    /// stays a message of its own: the protocol sends one per row).
    copy_held: Vec<Vec<u8>>,
    /// The COPY OUT in progress is in binary format: masks keep lengths.
    copy_binary: bool,
    /// Messages of the batch being read that the client does not get as
    /// they are (answers to gatehouse's own messages): (index, delivery).
    deliveries: Vec<(usize, Delivery)>,
    /// Messages of the batch read so far.
    batch_len: usize,
    /// Where the values are in a large frame being streamed.
    large: LargeScan,
    hits: Vec<Hit>,
    spans: Vec<(usize, usize)>,
    values: Vec<(usize, usize, usize)>,
    ends: Vec<usize>,
    found: Vec<(usize, Finding)>,
    seg: Vec<u8>,
}

/// A large frame streamed in pieces: its tag, the frame offset of the next
/// piece, and (DataRow) the columns still to come, the offset of the next
/// column's length and the current column's value.
#[derive(Clone, Copy, Debug, Default)]
struct LargeScan {
    tag: u8,
    off: usize,
    /// Columns not yet located; -1 until the column count is read.
    cols_left: i32,
    next: usize,
    value: (usize, usize),
}

impl<'a> ServerSide<'a> {
    /// Adds the rows and bytes since the last ReadyForQuery to the
    /// identity's budget meter.
    #[inline]
    fn meter(&mut self) {
        if let Some(m) = &self.ctx.meter {
            let (rows, bytes) = (self.rows - self.metered.0, self.bytes - self.metered.1);
            m.add_result(self.ctx.shared.now(), rows, bytes);
            self.metered = (self.rows, self.bytes);
        }
    }

    pub fn new(ctx: &'a SessionCtx<'a>) -> Self {
        ServerSide {
            ctx,
            bytes: 0,
            rows: 0,
            metered: (0, 0),
            withholding: false,
            pending_error: None,
            result_rows: 0,
            cutting: false,
            copy_held: Vec::new(),
            copy_binary: false,
            deliveries: Vec::new(),
            batch_len: 0,
            large: LargeScan::default(),
            hits: Vec::new(),
            spans: Vec::new(),
            values: Vec::new(),
            ends: Vec::new(),
            found: Vec::new(),
            seg: Vec::new(),
        }
    }
}

/// The error a client gets in place of a value that could not be scanned.
fn withheld_error(out: &mut Vec<u8>, why: &str) {
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

/// The error in place of the first row past the policy's `max_rows`.
fn cut_error(out: &mut Vec<u8>, max: u64) {
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

fn copy_data(out: &mut Vec<u8>, payload: &[u8]) {
    let at = pg::begin(out, b'd');
    out.extend_from_slice(payload);
    pg::finish(out, at);
}

/// A value holding a NUL byte is in binary format (text output never holds
/// one): an array, a record, … whose inner lengths a mask must not change.
fn is_binary(value: &[u8]) -> bool {
    memchr::memchr(0, value).is_some()
}

/// Finds secrets in many values (`buf[s..e]`, each with an index) with one
/// Hyperscan pass: the values are copied into `seg`, each followed by a
/// newline. To the patterns (compiled multi-line) a newline is what the
/// edge of a value is to a value scanned alone: a non-word byte, the end and
/// the start of a line. So the bytes around a value in its message (a
/// length, a field code, the next message's tag) never decide whether a
/// pattern matches, and every hit is confirmed by the rule's regex on its
/// value alone. Appends (index, finding) to `found`.
#[allow(clippy::too_many_arguments)] // scratch buffers of the caller, passed apart to borrow them apart
pub(super) fn find_in_values(
    engine: &Engine,
    buf: &[u8],
    values: &[(usize, usize, usize)],
    seg: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    hits: &mut Vec<Hit>,
    found: &mut Vec<(usize, Finding)>,
    applies: Option<&[bool]>,
) -> Result<(), ScanError> {
    if values.is_empty() {
        return Ok(());
    }
    seg.clear();
    ends.clear();
    for &(s, e, _) in values {
        seg.extend_from_slice(&buf[s..e]);
        ends.push(seg.len());
        seg.push(b'\n');
    }
    hits.clear();
    engine.scan(seg, hits)?;
    let mut tmp = Vec::new();
    for h in hits.iter() {
        if applies.is_some_and(|m| !m.get(h.rule as usize).copied().unwrap_or(true)) {
            continue;
        }
        let (a, b) = (h.first_end, h.last_end);
        // The values the hit's range touches (an end may be a value's end).
        let mut k = ends.partition_point(|&en| en < a);
        while k < values.len() {
            let st = if k == 0 { 0 } else { ends[k - 1] + 1 };
            if st > b {
                break;
            }
            let (vs, ve, idx) = values[k];
            let hit = Hit {
                rule: h.rule,
                first_end: vs + a.max(st) - st,
                last_end: vs + b.min(ends[k]) - st,
            };
            tmp.clear();
            engine.confirm(buf, vs, ve, &hit, &mut tmp);
            found.extend(tmp.iter().map(|x| (idx, *x)));
            k += 1;
        }
    }
    Ok(())
}

/// Server messages that carry values: DataRow, ErrorResponse,
/// NoticeResponse, NotificationResponse, FunctionCallResponse and
/// ParameterStatus.
fn scannable(tag: u8) -> bool {
    matches!(tag, b'D' | b'E' | b'N' | b'A' | b'V' | b'S')
}

impl ServerSide<'_> {
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

    /// Masks COPY OUT payloads (those held back before, then `msgs`) and
    /// returns the CopyData messages to send now, one per payload: clients
    /// rely on the protocol's one message per row. Unless `all`, the last
    /// payloads (at least `COPY_HOLD` bytes of them) are held back, so a
    /// secret split across messages is still seen whole; secrets that start
    /// in them wait for the data after them.
    fn mask_copy(&mut self, engine: &Engine, msgs: Vec<Vec<u8>>, all: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if msgs.is_empty() {
            return Ok(out);
        }
        let mut keep = msgs.len();
        if !all {
            let mut held = 0;
            while keep > 0 && held < COPY_HOLD {
                keep -= 1;
                held += msgs[keep].len();
            }
        }
        self.seg.clear();
        for m in &msgs {
            self.seg.extend_from_slice(m);
        }
        let cut: usize = msgs[..keep].iter().map(Vec::len).sum();
        let mut found = engine.find(&self.seg).map_err(|e| e.to_string())?;
        found.retain(|f| f.start < cut && self.ctx.applies(f.rule));
        let mut masks = Vec::with_capacity(found.len());
        for f in &found {
            let secret = &self.seg[f.start..f.end];
            let mut m = Vec::new();
            if self.copy_binary {
                m.extend_from_slice(secret);
                engine.mask_same_len(f.rule, &mut m);
            } else {
                engine.mask(f.rule, secret, &mut m);
            }
            masks.push(m);
            self.ctx.count_masked(f.rule);
        }
        let mut held = Vec::new();
        let (mut at, mut k) = (0, 0);
        for (n, m) in msgs.into_iter().enumerate() {
            let (ms, me) = (at, at + m.len());
            at = me;
            while k < found.len() && found[k].end <= ms {
                k += 1;
            }
            let content = if k < found.len() && found[k].start < me {
                // A secret split across messages: its mask goes where it
                // starts (binary: each piece keeps its length).
                let mut c = Vec::with_capacity(m.len());
                let mut p = ms;
                let mut x = k;
                while x < found.len() && found[x].start < me {
                    let fd = found[x];
                    let (s, e) = (fd.start.max(ms), fd.end.min(me));
                    c.extend_from_slice(&self.seg[p..s]);
                    if self.copy_binary {
                        c.extend_from_slice(&masks[x][s - fd.start..e - fd.start]);
                    } else if fd.start >= ms {
                        c.extend_from_slice(&masks[x]);
                    }
                    p = e;
                    x += 1;
                }
                c.extend_from_slice(&self.seg[p..me]);
                c
            } else {
                m
            };
            if n < keep {
                copy_data(&mut out, &content);
            } else {
                held.push(content);
            }
        }
        self.copy_held = held;
        Ok(out)
    }

    /// Value ranges (frame offsets) of a streamed large frame within the
    /// piece `[base, end)`, advancing the DataRow parse over the lengths
    /// found in `chunk`. Returns the frame offset from which the piece must
    /// be seen again (a length not yet complete in it).
    fn large_values(&mut self, chunk: &[u8], out: &mut Vec<(usize, usize)>) -> usize {
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
}

impl ServerSide<'_> {
    fn rewrite_batch(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
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

    /// A marked operation of the tracker ended.
    fn done(&self, d: Done) {
        match d.mark {
            MARK_RESTORE if !d.failed && d.status == Some(b'I') => self.ctx.restore_read_only.set(false),
            MARK_CATALOG => {
                self.ctx
                    .shared
                    .catalog_epoch
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// An ErrorResponse passed to the client as a notice: gatehouse's step
    /// for an approved statement (making its transaction read-write) failed.
    fn as_notice(frame: &[u8], out: &mut Vec<u8>) {
        let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
        let field = |code: u8| {
            pg::error_fields(body)
                .find(|(c, _)| *c == code)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        pg::error_message(
            out,
            true,
            "WARNING",
            &field(b'C'),
            &format!(
                "gatehouse could not make this transaction read-write for the approved statement: {}",
                field(b'M')
            ),
            None,
            Some("This role's transactions are read-only at the server; an approved write in a transaction block runs read-write only as the block's first statement. Roll back and send it first (or outside a block)."),
        );
    }
}

impl FrameHandler for ServerSide<'_> {
    #[inline]
    fn on_frame(&mut self, tag: u8, body: &[u8]) -> Action {
        let (answer, lost) = {
            let mut t = self.ctx.tracker.borrow_mut();
            let was_lost = t.lost().is_some();
            let a = t.on_server(tag, body);
            (a, t.lost().filter(|_| !was_lost))
        };
        if let Some(why) = lost {
            tracing::warn!(target: "gatehouse::session", reason = why, tag = %(tag as char), "lost track of the server's statements");
            if self.ctx.pinned.lexical {
                // Under a policy nothing could be decided any more.
                return Action::End(Refused {
                    code: SqlState::PROTOCOL_VIOLATION,
                    message: format!(
                        "gatehouse lost track of the server's protocol state ({why}); the session is ended"
                    ),
                    end: EndReason::UpstreamProtocolError,
                });
            }
        }
        let index = self.batch_len;
        self.batch_len += 1;
        if answer.delivery != Delivery::Forward {
            self.deliveries.push((index, answer.delivery));
        }
        if let Some(d) = answer.done {
            self.done(d);
        }
        match tag {
            b'D' | b'd' => self.rows += 1,
            b'H' => self.copy_binary = body.first() == Some(&1),
            b'Z' => {
                self.meter();
                if self.ctx.track.resetting.get() != 0 {
                    return Action::ForwardAndStop;
                }
            }
            b'E' if self.ctx.track.resetting.get() != 0 => self.ctx.track.resetting.set(2),
            // A parameter the client's own statement changed (gatehouse's
            // own steps are not the client's answers).
            b'S' if answer.delivery == Delivery::Forward => {
                let mut c = pg::Cursor::new(body, "ParameterStatus");
                if let (Ok(name), Ok(value)) = (c.cstr(), c.cstr()) {
                    if let Some(why) = self.ctx.pinned.violation(name, value) {
                        tracing::warn!(target: "gatehouse::policy", reason = %why, "ending the session: a pinned parameter changed");
                        return Action::End(Refused {
                            code: SqlState::INSUFFICIENT_PRIVILEGE,
                            message: format!("{why}; the session is ended (a statement changed it past the policy)"),
                            end: EndReason::PolicyViolation,
                        });
                    }
                }
            }
            _ => {}
        }
        Action::Forward
    }

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) -> Option<usize> {
        self.batch_len = 0;
        self.ctx.progress.notify();
        if self.ctx.track.resetting.get() != 0 {
            // The answers to the pool's reset: the client is gone.
            self.deliveries.clear();
            for f in frames {
                edits.drop_frame(f);
            }
            return None;
        }
        if self.deliveries.is_empty() {
            self.rewrite_rows(buf, frames, edits);
        } else {
            // Answers to gatehouse's own messages: dropped (or an error
            // turned into a notice); the rest as usual.
            let deliveries = std::mem::take(&mut self.deliveries);
            let mut kept = Vec::with_capacity(frames.len());
            let mut d = deliveries.iter().peekable();
            for (i, f) in frames.iter().enumerate() {
                match d.peek() {
                    Some((j, delivery)) if *j == i => {
                        match delivery {
                            Delivery::AsNotice if f.tag == b'E' => {
                                edits.replace(f, |out| Self::as_notice(&buf[f.start..f.end], out))
                            }
                            _ => edits.drop_frame(f),
                        }
                        d.next();
                    }
                    _ => kept.push(*f),
                }
            }
            self.rewrite_rows(buf, &kept, edits);
            edits.list.sort_by_key(|e| e.frame_start);
        }
        if let Some(rec) = &self.ctx.rec {
            let engine = self.ctx.engine;
            rec.server(buf, frames, edits, |r| {
                engine.map(|e| e.rule_id(r).to_string()).unwrap_or_default()
            });
        }
        None
    }

    fn pending(&self) -> bool {
        self.ctx.rec.as_ref().is_some_and(|r| r.pending())
    }

    async fn flush(&mut self) {
        if let Some(r) = &self.ctx.rec {
            r.flush().await;
        }
    }

    fn on_large_frame(&mut self, tag: u8, total_len: usize, head: &[u8], out: &mut Vec<u8>) -> Large {
        let answer = self
            .ctx
            .tracker
            .borrow_mut()
            .on_server(tag, head.get(HEADER_LEN..).unwrap_or(&[]));
        if let Some(d) = answer.done {
            self.done(d);
        }
        self.ctx.progress.notify();
        if answer.delivery != Delivery::Forward || self.ctx.track.resetting.get() != 0 {
            return Large::Discard;
        }
        if tag == b'D' {
            if let Some(r) = &self.ctx.rec {
                r.large_row(total_len);
            }
        }
        self.large_frame(tag, total_len, head, out)
    }

    fn large_chunk(&mut self, chunk: &mut [u8], last: bool) -> Result<usize, Refused> {
        let Some(engine) = self.ctx.engine else { return Ok(0) };
        // Each value (or the part of it in this piece) on its own, as in
        // `find_in_frames`. Streamed frames keep their length: masks are
        // fitted to the secret.
        let mut ranges = std::mem::take(&mut self.spans);
        ranges.clear();
        let need = self.large_values(chunk, &mut ranges);
        let (base, end) = (self.large.off, self.large.off + chunk.len());
        for &(s, e) in &ranges {
            let v = &mut chunk[s - base..e - base];
            if v.len() < engine.min_len {
                continue;
            }
            let found = engine.find(v).map_err(|e| Refused {
                code: SqlState::INTERNAL_ERROR,
                message: format!("gatehouse could not scan a large value for secrets: {e}"),
                end: EndReason::ScanFailed,
            })?;
            for f in found.into_iter().filter(|f| self.ctx.applies(f.rule)) {
                engine.mask_same_len(f.rule, &mut v[f.start..f.end]);
                self.ctx.count_masked(f.rule);
            }
        }
        self.spans = ranges;
        if last {
            return Ok(0);
        }
        // Context for matches across pieces, and a length not yet whole. At
        // most a quarter of the piece, so the relay keeps exactly this much
        // (it keeps no more than a quarter of its buffer).
        let hold = COPY_HOLD.min(chunk.len() / 4).max(end - need.min(end));
        self.large.off = end - hold;
        Ok(hold)
    }

    #[inline]
    fn on_read(&mut self, n: usize) {
        self.bytes += n as u64;
        self.ctx.handle.touch(self.ctx.shared.now());
    }
}

impl ServerSide<'_> {
    /// Masking, and the policy's `max_rows` cut.
    fn rewrite_rows(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
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

    /// COPY data held back, masked, to send now (when scanning fails, the
    /// held data is dropped: the cut's error follows anyway).
    fn flush_copy(&mut self) -> Vec<u8> {
        let msgs = std::mem::take(&mut self.copy_held);
        match self.ctx.engine {
            Some(engine) if !msgs.is_empty() => self.mask_copy(engine, msgs, true).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn large_frame(&mut self, tag: u8, total_len: usize, _head: &[u8], out: &mut Vec<u8>) -> Large {
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

fn scannable_or_copy(tag: u8) -> bool {
    scannable(tag) || tag == b'd'
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
            resolve_overlaps(&mut fs);
            let frame = &buf[f.start..f.end];
            self.spans.clear();
            let _ = pg::value_spans(frame, &mut self.spans);
            let mut masks: Vec<Vec<u8>> = Vec::with_capacity(fs.len());
            for x in &fs {
                let rel = x.start - f.start;
                let binary = f.tag == b'D'
                    && self
                        .spans
                        .iter()
                        .find(|&&(s, e)| s <= rel && rel < e)
                        .is_some_and(|&(s, e)| is_binary(&frame[s..e]));
                let mut m = Vec::new();
                if binary {
                    m.extend_from_slice(&buf[x.start..x.end]);
                    engine.mask_same_len(x.rule, &mut m);
                } else {
                    engine.mask(x.rule, &buf[x.start..x.end], &mut m);
                }
                masks.push(m);
                self.ctx.count_masked(x.rule);
            }
            let reps: Vec<Replace<'_>> = fs
                .iter()
                .zip(&masks)
                .map(|(x, m)| Replace {
                    start: x.start - f.start,
                    end: x.end - f.start,
                    with: m,
                })
                .collect();
            let spans = &self.spans;
            edits.replace(&f, |out| {
                out.extend_from_slice(&pre);
                pg::rebuild(frame, spans, &reps, out);
            });
            i += 1;
        }
    }
}
