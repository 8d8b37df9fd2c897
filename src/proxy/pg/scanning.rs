//! Secret scanning on the data path: the per-session state both pumps share,
//! the backend-side masking of everything that leaves the database, and the
//! frontend-side flagging (or refusal) of statements that carry secrets.

use super::enforce::{Enforcer, Step};
use super::registry::SessionHandle;
use super::relay::{Action, Edits, FrameHandler, FrameRef, Large, Refused};
use super::state::Shared;
use crate::scan::{engine::resolve_overlaps, Engine, Finding, Hit, ScanError};
use crate::wire::pg::{self, Replace, HEADER_LEN};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;

/// Held back at the end of a COPY stream so a secret split across two
/// CopyData messages is still seen whole.
pub const COPY_HOLD: usize = crate::scan::engine::WINDOW;

/// What both pumps of a session share.
pub struct SessionCtx<'a> {
    pub shared: &'a Shared,
    pub handle: &'a SessionHandle,
    pub engine: Option<&'a Engine>,
    pub refuse_client_secrets: bool,
    pub max_value: usize,
    /// Rows per result the policy allows this identity (`None`: no limit).
    pub max_rows: Option<u64>,
    /// The session's recorder link, when sessions are recorded.
    pub rec: Option<super::capture::SessionRec>,
    /// Which secret rules mask for this identity (`None`: all of them).
    pub applies: Option<Arc<[bool]>>,
    /// The identity's budget meter, when its policy sets a budget.
    pub meter: Option<Arc<crate::policy::Meter>>,
    /// Refusals gatehouse put in place of a client's Parse or Bind whose
    /// ParseComplete/BindComplete (to be dropped) have not come back yet:
    /// each by its group, the number of Sync/Query/FunctionCall messages the
    /// client sent before it. A group's refusal is over at the group's
    /// ReadyForQuery (if the server skipped it after an earlier error, its
    /// answers never come).
    pub suppress: RefCell<VecDeque<u64>>,
    /// Masked values per rule in this session.
    pub masked: RefCell<Vec<(u32, u64)>>,
    /// Statements from the client that carried a secret.
    pub client_secrets: Cell<u64>,
    /// Whether the upstream connection is idle (for the pool).
    pub track: PoolTrack,
}

/// What the relay knows of the upstream connection's state, so that a
/// session that ends can leave it to the pool only when it is idle: every
/// request answered, no transaction open, no half-sent batch.
#[derive(Default)]
pub struct PoolTrack {
    /// The session may give its connection to the pool.
    pub on: bool,
    /// Sync, Query and FunctionCall messages sent upstream.
    pub syncs: Cell<u64>,
    /// ReadyForQuery messages from upstream, and the last one's status.
    pub readys: Cell<u64>,
    pub status: Cell<u8>,
    /// The client sent something after its last Sync or Query (or a
    /// message too large to follow).
    pub loose: Cell<bool>,
    /// 0 while relaying; 1 once the reset query is out (its answers are
    /// dropped, its ReadyForQuery stops the server pump); 2 if it failed.
    pub resetting: Cell<u8>,
}

impl PoolTrack {
    /// Whether the connection is idle: nothing pending, no transaction.
    pub fn idle(&self) -> bool {
        self.on && self.syncs.get() == self.readys.get() && !self.loose.get() && self.status.get() == b'I'
    }
}

impl SessionCtx<'_> {
    /// Whether findings of `rule` are masked for this identity.
    #[inline]
    fn applies(&self, rule: u32) -> bool {
        self.applies
            .as_deref()
            .is_none_or(|m| m.get(rule as usize).copied().unwrap_or(true))
    }

    fn count_masked(&self, rule: u32) {
        if let Some(e) = self.engine {
            e.count(rule);
        }
        if let Some(r) = &self.rec {
            r.count_masked(rule);
        }
        let mut m = self.masked.borrow_mut();
        match m.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, n)) => *n += 1,
            None => m.push((rule, 1)),
        }
    }

    pub fn masked_total(&self) -> u64 {
        self.masked.borrow().iter().map(|(_, n)| n).sum()
    }

    /// `rule-id:count,…` for the session log.
    pub fn masked_summary(&self) -> String {
        let Some(e) = self.engine else { return String::new() };
        self.masked
            .borrow()
            .iter()
            .map(|(r, n)| format!("{}:{n}", e.rule_id(*r)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

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
    /// ParseComplete/BindComplete held back while a refusal is pending,
    /// until the next message shows whether they answer the refusal.
    held: Vec<u8>,
    /// ReadyForQuery messages seen (see `SessionCtx::suppress`).
    ready_seen: u64,
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
            held: Vec::new(),
            ready_seen: 0,
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
        "XX000",
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
        "54000",
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

/// Whether `frame` is the ErrorResponse of gatehouse's own refusal.
fn is_refusal(frame: &[u8]) -> bool {
    let body = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let mut code = false;
    let mut ours = false;
    for (c, v) in pg::error_fields(body) {
        match c {
            b'C' => code = v.len() == 5,
            b'M' => ours = v.starts_with(b"statement refused by gatehouse: "),
            _ => {}
        }
    }
    code && ours
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
fn find_in_values(
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

fn scannable(tag: u8) -> bool {
    matches!(tag, b'D' | b'E' | b'N' | b'A')
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

    /// The refusals' ParseComplete/BindComplete: while one is pending, a
    /// ParseComplete (and the BindComplete after it) is held back until the
    /// next message shows whose it was: dropped before the refusal's error,
    /// released (into `pre`) before anything else. Returns true when the
    /// frame was taken.
    /// Without scanning: drops the answers to refusals, counts groups.
    fn suppress_only(&mut self, buf: &[u8], frames: &[FrameRef], edits: &mut Edits) {
        let quiet = self.ctx.suppress.borrow().is_empty() && self.held.is_empty();
        for f in frames {
            if f.tag == b'Z' {
                self.ready_seen += 1;
            }
            if quiet {
                continue;
            }
            let mut pre = Vec::new();
            if self.hold_step(f, buf, &mut pre) {
                if pre.is_empty() {
                    edits.drop_frame(f);
                } else {
                    edits.replace(f, |out| out.extend_from_slice(&pre));
                }
                continue;
            }
            if f.tag == b'Z' {
                self.group_done(self.ready_seen);
            }
            if !pre.is_empty() {
                edits.replace(f, |out| {
                    out.extend_from_slice(&pre);
                    out.extend_from_slice(&buf[f.start..f.end]);
                });
            }
        }
    }

    fn hold_step(&mut self, f: &FrameRef, buf: &[u8], pre: &mut Vec<u8>) -> bool {
        let continues = match (self.held.as_slice(), f.tag) {
            ([b'1'], b'2') => true,
            ([b'1', b'2'], b'E') => is_refusal(&buf[f.start..f.end]),
            _ => false,
        };
        if continues {
            if f.tag == b'2' {
                self.held.push(b'2');
                return true;
            }
            self.held.clear();
            self.ctx.suppress.borrow_mut().pop_front();
            return false;
        }
        for t in self.held.drain(..) {
            pre.extend_from_slice(&[t, 0, 0, 0, 4]);
        }
        if f.tag == b'1' && !self.ctx.suppress.borrow().is_empty() {
            self.held.push(b'1');
            return true;
        }
        false
    }

    /// A group ended (ReadyForQuery number `n`, counted from 1): its
    /// refusals are over.
    fn group_done(&self, n: u64) {
        self.ctx.suppress.borrow_mut().retain(|g| *g >= n);
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
        let Some(engine) = self.ctx.engine else {
            // Without scanning, only refusals' answers may need dropping.
            self.suppress_only(buf, frames, edits);
            return;
        };
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
            && self.held.is_empty()
            && !self.withholding
            && self.ctx.suppress.borrow().is_empty()
        {
            let mut ready = 0;
            let mut copy = false;
            for f in frames {
                ready += u64::from(f.tag == b'Z');
                copy |= f.tag == b'd';
            }
            if !copy {
                self.ready_seen += ready;
                return; // the common case: nothing to change, zero copies
            }
        }
        self.apply(engine, buf, frames, edits);
    }
}

impl FrameHandler for ServerSide<'_> {
    #[inline]
    fn on_frame(&mut self, tag: u8, body: &[u8]) -> Action {
        match tag {
            b'D' => self.rows += 1,
            b'H' => self.copy_binary = body.first() == Some(&1),
            b'Z' => {
                self.meter();
                let t = &self.ctx.track;
                t.readys.set(t.readys.get() + 1);
                t.status.set(body.first().copied().unwrap_or(0));
                if t.resetting.get() != 0 {
                    return Action::ForwardAndStop;
                }
            }
            b'E' if self.ctx.track.resetting.get() != 0 => self.ctx.track.resetting.set(2),
            _ => {}
        }
        Action::Forward
    }

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) -> Option<usize> {
        if self.ctx.track.resetting.get() != 0 {
            // The answers to the pool's reset: the client is gone.
            for f in frames {
                edits.drop_frame(f);
            }
            return None;
        }
        self.rewrite_rows(buf, frames, edits);
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
            let found = engine
                .find(v)
                .map_err(|e| Refused(format!("scanning a large value failed: {e}")))?;
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
            if f.tag == b'D' {
                self.result_rows += 1;
                if self.result_rows > max {
                    if start < i {
                        self.rewrite_batch(buf, &frames[start..i], edits);
                    }
                    edits.replace(f, |out| cut_error(out, max));
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

    fn large_frame(&mut self, tag: u8, total_len: usize, _head: &[u8], out: &mut Vec<u8>) -> Large {
        if tag == b'D' {
            self.rows += 1;
            if let Some(max) = self.ctx.max_rows {
                if self.cutting {
                    return Large::Discard;
                }
                self.result_rows += 1;
                if self.result_rows > max {
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
            for t in self.held.drain(..) {
                out.extend_from_slice(&[t, 0, 0, 0, 4]);
            }
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
    /// Applies findings, COPY masking, suppressions and withholding to
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
                self.held.clear();
                if f.tag == b'Z' {
                    self.ready_seen += 1;
                    self.group_done(self.ready_seen);
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
            // What is owed before this frame: the rest of a COPY stream,
            // ParseComplete/BindComplete held back.
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
            if self.hold_step(&f, buf, &mut pre) {
                if pre.is_empty() {
                    edits.drop_frame(&f);
                } else {
                    edits.replace(&f, |out| out.extend_from_slice(&pre));
                }
                i += 1;
                continue;
            }
            if f.tag == b'Z' {
                self.ready_seen += 1;
                self.group_done(self.ready_seen);
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

/// The frontend side: counts statements, flags (or refuses) statements that
/// carry a secret.
pub struct ClientSide<'a> {
    pub ctx: &'a SessionCtx<'a>,
    /// Statement policy, when the configuration has one.
    pub enforcer: Option<Enforcer<'a>>,
    /// A statement too large for the buffer is streaming through: it is
    /// scanned piece by piece (flagged, as it cannot be refused any more).
    large_stmt: bool,
    large_flagged: bool,
    /// The client's writer (for the hold notice), its mid-frame flag and socket.
    pub client: (
        &'a futures_util::lock::Mutex<super::relay::Writer>,
        &'a Cell<bool>,
        std::os::fd::RawFd,
    ),
    pub bytes: u64,
    pub statements: u64,
    /// Sync, Query and FunctionCall messages seen (each ends a group the
    /// server answers with one ReadyForQuery).
    groups: u64,
    hits: Vec<Hit>,
    values: Vec<(usize, usize, usize)>,
    ends: Vec<usize>,
    found: Vec<(usize, Finding)>,
    seg: Vec<u8>,
}

impl<'a> ClientSide<'a> {
    pub fn new(
        ctx: &'a SessionCtx<'a>,
        enforcer: Option<Enforcer<'a>>,
        client: (
            &'a futures_util::lock::Mutex<super::relay::Writer>,
            &'a Cell<bool>,
            std::os::fd::RawFd,
        ),
    ) -> Self {
        ClientSide {
            ctx,
            enforcer,
            large_stmt: false,
            large_flagged: false,
            client,
            bytes: 0,
            statements: 0,
            groups: 0,
            hits: Vec::new(),
            values: Vec::new(),
            ends: Vec::new(),
            found: Vec::new(),
            seg: Vec::new(),
        }
    }
}

/// The spans (frame offsets) of a client message that may carry a secret:
/// the text of a Query or Parse, each parameter of a Bind.
fn statement_values(frame: &[u8], out: &mut Vec<(usize, usize)>) {
    let whole = (HEADER_LEN.min(frame.len()), frame.len());
    if frame.first() != Some(&b'B') {
        out.push(whole);
        return;
    }
    let body = &frame[whole.0..];
    let mut c = pg::Cursor::new(body, "Bind");
    let parsed = (|| -> Result<(), pg::WireError> {
        c.cstr()?;
        c.cstr()?;
        let formats = c.i16()?;
        for _ in 0..formats.max(0) {
            c.i16()?;
        }
        let params = c.i16()?;
        for _ in 0..params.max(0) {
            let len = c.i32()?;
            if len < 0 {
                continue;
            }
            let at = HEADER_LEN + body.len() - c.remaining().len();
            c.bytes(len as usize)?;
            out.push((at, at + len as usize));
        }
        Ok(())
    })();
    if parsed.is_err() {
        // Not a Bind the server will take; scan it whole all the same.
        out.clear();
        out.push(whole);
    }
}

/// Parse + Bind + Execute of `sql` on the unnamed statement and portal.
fn refusal_pbe(out: &mut Vec<u8>, sql: &str) {
    let at = pg::begin(out, b'P');
    out.push(0);
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out.extend_from_slice(&0i16.to_be_bytes());
    pg::finish(out, at);
    out.extend_from_slice(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
}

/// A statement that makes the server itself raise gatehouse's refusal, so
/// the error arrives in order with everything else in the pipeline.
fn refusal_sql(rule: &str) -> String {
    format!(
        "DO $gatehouse$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = 'statement refused by gatehouse: it carries a secret (rule {})', HINT = 'Remove the secret from the statement; secrets must not be sent through the gateway.'; END$gatehouse$",
        rule.replace('\'', "''").replace('$', "")
    )
}

impl FrameHandler for ClientSide<'_> {
    #[inline]
    fn on_frame(&mut self, tag: u8, _body: &[u8]) -> Action {
        match tag {
            b'Q' | b'E' => {
                self.statements += 1;
                Action::Forward
            }
            b'X' => Action::ForwardAndStop,
            _ => Action::Forward,
        }
    }

    fn large_chunk(&mut self, chunk: &mut [u8], last: bool) -> Result<usize, Refused> {
        let hold = if last {
            0
        } else {
            crate::scan::engine::WINDOW.min(chunk.len() / 2)
        };
        if !self.large_stmt {
            return Ok(hold);
        }
        if let Some(engine) = self.ctx.engine {
            if !self.large_flagged {
                if let Ok(found) = engine.find(chunk) {
                    if let Some(f) = found.first() {
                        self.large_flagged = true;
                        self.ctx.client_secrets.set(self.ctx.client_secrets.get() + 1);
                        tracing::info!(target: "gatehouse::scan", rule = %engine.rule_id(f.rule), refused = false, "statement from the client carries a secret (too large to refuse)");
                    }
                }
            }
        }
        if last {
            self.large_stmt = false;
        }
        Ok(hold)
    }

    fn on_large_frame(&mut self, tag: u8, total_len: usize, head: &[u8], out: &mut Vec<u8>) -> Large {
        self.large_stmt = matches!(tag, b'Q' | b'P' | b'B');
        self.large_flagged = false;
        self.ctx.track.loose.set(true);
        let group = self.groups;
        if matches!(tag, b'S' | b'Q' | b'F') {
            self.groups += 1;
        }
        let Some(enf) = self.enforcer.as_mut() else {
            return Large::Stream;
        };
        match tag {
            // Statement text too large for the buffer cannot be classified:
            // under a policy it is refused, never passed unchecked.
            b'Q' | b'P' | b'F' => {
                let sql = super::enforce::raise_sql(
                    "54000",
                    &format!("a statement of {total_len} bytes is too large for the policy to check; send large data as parameters"),
                );
                if tag == b'P' {
                    refusal_pbe(out, &sql);
                    self.ctx.suppress.borrow_mut().push_back(group);
                } else {
                    pg::cstring_message(out, b'Q', sql.as_bytes());
                }
                tracing::info!(target: "gatehouse::policy", bytes = total_len, "statement too large to check refused");
                Large::Discard
            }
            // A Bind with large parameters: its portal still maps to its
            // statement (the names lead the message).
            b'B' => {
                enf.step(false, tag, head);
                Large::Stream
            }
            _ => Large::Stream,
        }
    }

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) -> Option<usize> {
        // Policy first: refusals, and where to hold.
        let mut refusals: Vec<(usize, &'static str, String)> = Vec::new();
        let mut hold = None;
        if let Some(enf) = self.enforcer.as_mut() {
            for (i, f) in frames.iter().enumerate() {
                match enf.step(i == 0, f.tag, &buf[f.start..f.end]) {
                    Step::Pass => {}
                    Step::Refuse { code, message } => {
                        tracing::info!(target: "gatehouse::policy", code, reason = %message, "statement refused by policy");
                        refusals.push((i, code, message));
                    }
                    Step::Hold => {
                        hold = Some(i);
                        break;
                    }
                }
            }
        }
        let frames = match hold {
            Some(i) => {
                // These come round again after the hold: count them then.
                let again = frames[i..].iter().filter(|f| matches!(f.tag, b'Q' | b'E')).count() as u64;
                self.statements -= again;
                &frames[..i]
            }
            None => frames,
        };
        // The group (Sync/Query/FunctionCall count) of the batch's first
        // frame; a refused frame's own group is counted from it (refusals
        // are rare, so no per-frame table is kept).
        let ends_group = |t: u8| matches!(t, b'S' | b'Q' | b'F');
        let first_group = self.groups;
        let mut groups = 0;
        let track = &self.ctx.track;
        for f in frames {
            if ends_group(f.tag) {
                groups += 1;
                track.loose.set(false);
            } else if f.tag != b'X' {
                track.loose.set(true);
            }
        }
        self.groups += groups;
        track.syncs.set(track.syncs.get() + groups);
        // Secrets in statements: flagged always, refused when configured.
        let mut secret_refusals: Vec<(usize, u32)> = Vec::new();
        if let Some(engine) = self.ctx.engine {
            let mut spans = Vec::new();
            self.values.clear();
            self.found.clear();
            for (i, f) in frames.iter().enumerate() {
                if !matches!(f.tag, b'Q' | b'P' | b'B') {
                    continue;
                }
                spans.clear();
                statement_values(&buf[f.start..f.end], &mut spans);
                for &(s, e) in &spans {
                    if e - s >= engine.min_len {
                        self.values.push((f.start + s, f.start + e, i));
                    }
                }
            }
            match find_in_values(
                engine,
                buf,
                &self.values,
                &mut self.seg,
                &mut self.ends,
                &mut self.hits,
                &mut self.found,
                None,
            ) {
                Err(e) => tracing::warn!(target: "gatehouse::scan", error = %e, "could not scan statements"),
                Ok(()) => {
                    // The first finding of each statement frame, in frame order.
                    self.found.sort_unstable_by_key(|(i, f)| (*i, f.start));
                    self.found.dedup_by_key(|(i, _)| *i);
                    for &(i, x) in &self.found {
                        self.ctx.client_secrets.set(self.ctx.client_secrets.get() + 1);
                        let rule = engine.rule_id(x.rule);
                        tracing::info!(target: "gatehouse::scan", rule = %rule, refused = self.ctx.refuse_client_secrets, "statement from the client carries a secret");
                        if self.ctx.refuse_client_secrets && !refusals.iter().any(|(j, _, _)| *j == i) {
                            secret_refusals.push((i, x.rule));
                        }
                    }
                }
            }
        }
        // Every refusal, in frame order: the server raises it in place.
        let mut all: Vec<(usize, &'static str, String)> = refusals;
        if let Some(engine) = self.ctx.engine {
            for (i, rule) in secret_refusals {
                all.push((i, "", engine.rule_id(rule).to_string()));
            }
        }
        all.sort_by_key(|(i, _, _)| *i);
        if let Some(rec) = &self.ctx.rec {
            let shown: Vec<(usize, &'static str, String)> = all
                .iter()
                .map(|(i, code, text)| {
                    if code.is_empty() {
                        (*i, "42501", format!("the statement carries a secret ({text})"))
                    } else {
                        (*i, *code, text.clone())
                    }
                })
                .collect();
            rec.client(buf, frames, &shown);
        }
        for (i, code, text) in all {
            let f = frames[i];
            // An empty code marks a secret refusal (`text` is the rule id).
            let sql = if code.is_empty() {
                refusal_sql(&text)
            } else {
                super::enforce::raise_sql(code, &text)
            };
            if matches!(f.tag, b'Q' | b'F') {
                edits.replace(&f, |out| pg::cstring_message(out, b'Q', sql.as_bytes()));
            } else {
                // Parse + Bind + Execute of the refusal on the unnamed
                // statement; the server answers ParseComplete, BindComplete
                // (dropped on the way back) and the error, then skips to Sync.
                edits.replace(&f, |out| refusal_pbe(out, &sql));
                let group = first_group + frames[..i].iter().filter(|f| ends_group(f.tag)).count() as u64;
                self.ctx.suppress.borrow_mut().push_back(group);
            }
        }
        if hold.is_none() && self.ctx.track.on {
            // The session says goodbye upstream itself, or keeps the
            // connection for the pool.
            if let Some(f) = frames.last().filter(|f| f.tag == b'X') {
                edits.drop_frame(f);
            }
        }
        hold
    }

    async fn hold(&mut self) {
        if let Some(enf) = self.enforcer.as_mut() {
            let (w, mid, fd) = self.client;
            enf.hold(w, mid, fd, self.ctx.handle).await;
            if let (Some(rec), Some((review, outcome, reason, by))) = (&self.ctx.rec, enf.last_review.take()) {
                rec.push(crate::control::recorder::Ev::Review {
                    session: rec.session,
                    t: crate::record::now_us(),
                    review,
                    outcome,
                    reason,
                    by,
                });
                rec.flush().await;
            }
        }
    }

    fn pending(&self) -> bool {
        self.ctx.rec.as_ref().is_some_and(|r| r.pending())
    }

    async fn flush(&mut self) {
        if let Some(r) = &self.ctx.rec {
            r.flush().await;
        }
    }

    #[inline]
    fn on_read(&mut self, n: usize) {
        self.bytes += n as u64;
        self.ctx.handle.touch(self.ctx.shared.now());
    }
}
