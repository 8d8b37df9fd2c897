//! Secret scanning on the data path: the per-session state both pumps share,
//! the backend-side masking of everything that leaves the database, and the
//! frontend-side flagging (or refusal) of statements that carry secrets.

use super::registry::SessionHandle;
use super::relay::{Action, Edits, FrameHandler, FrameRef, Large, Refused};
use super::state::Shared;
use crate::scan::{engine::resolve_overlaps, Engine, Finding, Hit};
use crate::wire::pg::{self, Replace, HEADER_LEN};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

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
    /// Backend messages to drop: the ParseComplete/BindComplete answering a
    /// refusal gatehouse put in place of a client's message. Cleared at
    /// ReadyForQuery (if the server skipped them, they never come).
    pub suppress: RefCell<VecDeque<u8>>,
    /// Masked values per rule in this session.
    pub masked: RefCell<Vec<(u32, u64)>>,
    /// Statements from the client that carried a secret.
    pub client_secrets: Cell<u64>,
}

impl SessionCtx<'_> {
    fn count_masked(&self, rule: u32) {
        if let Some(e) = self.engine {
            e.count(rule);
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
    /// After a withheld value: drop everything up to ReadyForQuery.
    withholding: bool,
    /// The error still to send in place of the first withheld frame.
    pending_error: Option<String>,
    /// The held end of a COPY OUT stream, not yet sent.
    copy_tail: Vec<u8>,
    hits: Vec<Hit>,
    spans: Vec<(usize, usize)>,
    found: Vec<(usize, Finding)>,
    seg: Vec<u8>,
}

impl<'a> ServerSide<'a> {
    pub fn new(ctx: &'a SessionCtx<'a>) -> Self {
        ServerSide {
            ctx,
            bytes: 0,
            rows: 0,
            withholding: false,
            pending_error: None,
            copy_tail: Vec::new(),
            hits: Vec::new(),
            spans: Vec::new(),
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

fn copy_data(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    let at = pg::begin(out, b'd');
    out.extend_from_slice(payload);
    pg::finish(out, at);
}

fn scannable(tag: u8) -> bool {
    matches!(tag, b'D' | b'E' | b'N' | b'A')
}

impl ServerSide<'_> {
    /// Finds secrets in the scannable, non-COPY frames of a batch: one
    /// Hyperscan pass over the whole region, hits mapped back to values.
    fn find_in_frames(&mut self, engine: &Engine, buf: &[u8], frames: &[FrameRef]) -> Result<(), String> {
        self.found.clear();
        let Some(first) = frames.iter().position(|f| scannable(f.tag)) else {
            return Ok(());
        };
        let Some(last) = frames.iter().rposition(|f| scannable(f.tag)) else {
            return Ok(());
        };
        let (lo, hi) = (frames[first].start, frames[last].end);
        self.hits.clear();
        engine.scan(&buf[lo..hi], &mut self.hits).map_err(|e| e.to_string())?;
        if self.hits.is_empty() {
            return Ok(());
        }
        for h in self.hits.iter() {
            let (a, b) = (lo + h.first_end, lo + h.last_end);
            let hit = Hit {
                rule: h.rule,
                first_end: a,
                last_end: b,
            };
            // Frames whose bytes contain a reported end.
            let mut i = frames[first..=last].partition_point(|f| f.end < a) + first;
            while i <= last && frames[i].start < b.max(a + 1) {
                let f = frames[i];
                if scannable(f.tag) {
                    self.spans.clear();
                    if pg::value_spans(&buf[f.start..f.end], &mut self.spans).is_err() {
                        return Err("malformed message from the server".into());
                    }
                    let mut tmp = Vec::new();
                    for &(s, e) in &self.spans {
                        let (s, e) = (f.start + s, f.start + e);
                        if e < a || s > b {
                            continue;
                        }
                        engine.confirm(buf, s, e, &hit, &mut tmp);
                    }
                    self.found.extend(tmp.into_iter().map(|x| (i, x)));
                }
                i += 1;
            }
        }
        Ok(())
    }

    /// Scans and masks one COPY OUT segment (held tail + payloads), leaving
    /// the new held tail; returns the bytes to send now.
    fn mask_segment(&mut self, engine: &Engine) -> Result<Vec<u8>, String> {
        let mut found = engine.find(&self.seg).map_err(|e| e.to_string())?;
        resolve_overlaps(&mut found);
        let masked = if found.is_empty() {
            std::mem::take(&mut self.seg)
        } else {
            let mut m = Vec::with_capacity(self.seg.len());
            let mut p = 0;
            for f in &found {
                m.extend_from_slice(&self.seg[p..f.start]);
                engine.mask(f.rule, &self.seg[f.start..f.end], &mut m);
                self.ctx.count_masked(f.rule);
                p = f.end;
            }
            m.extend_from_slice(&self.seg[p..]);
            self.seg.clear();
            m
        };
        let hold = COPY_HOLD.min(masked.len());
        let mut masked = masked;
        self.copy_tail = masked.split_off(masked.len() - hold);
        Ok(masked)
    }
}

impl FrameHandler for ServerSide<'_> {
    #[inline]
    fn on_frame(&mut self, tag: u8, _body: &[u8]) -> Action {
        if tag == b'D' {
            self.rows += 1;
        }
        Action::Forward
    }

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
        let Some(engine) = self.ctx.engine else {
            if !self.ctx.suppress.borrow().is_empty() {
                self.suppress_only(frames, edits);
            }
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
                    self.rewrite(buf, &frames[z + 1..], edits);
                }
                None => self.apply(engine, buf, frames, edits),
            }
            return;
        }
        let quiet = self.found.is_empty()
            && self.copy_tail.is_empty()
            && !self.withholding
            && self.ctx.suppress.borrow().is_empty()
            && !frames.iter().any(|f| f.tag == b'd');
        if quiet {
            return; // the common case: nothing to change, zero copies
        }
        self.apply(engine, buf, frames, edits);
    }

    fn on_large_frame(&mut self, tag: u8, total_len: usize, out: &mut Vec<u8>) -> Large {
        if tag == b'D' {
            self.rows += 1;
        }
        if self.withholding {
            return Large::Discard;
        }
        if self.ctx.engine.is_some() {
            let tail = std::mem::take(&mut self.copy_tail);
            copy_data(out, &tail);
            if total_len > self.ctx.max_value && scannable_or_copy(tag) {
                withheld_error(
                    out,
                    &format!(
                        "a value of {total_len} bytes is over the scanning limit of {} bytes",
                        self.ctx.max_value
                    ),
                );
                tracing::warn!(target: "gatehouse::scan", bytes = total_len, "value over the scanning limit withheld");
                self.withholding = true;
                return Large::Discard;
            }
        }
        Large::Stream
    }

    fn large_chunk(&mut self, chunk: &mut [u8], last: bool) -> Result<usize, Refused> {
        let Some(engine) = self.ctx.engine else { return Ok(0) };
        // Streamed frames keep their length: masks are fitted to the secret.
        let found = engine
            .find(chunk)
            .map_err(|e| Refused(format!("scanning a large value failed: {e}")))?;
        for f in found {
            engine.mask_same_len(f.rule, &mut chunk[f.start..f.end]);
            self.ctx.count_masked(f.rule);
        }
        Ok(if last { 0 } else { COPY_HOLD.min(chunk.len() / 2) })
    }

    #[inline]
    fn on_read(&mut self, n: usize) {
        self.bytes += n as u64;
        self.ctx.handle.touch(self.ctx.shared.now());
    }
}

fn scannable_or_copy(tag: u8) -> bool {
    scannable(tag) || tag == b'd'
}

impl ServerSide<'_> {
    fn suppress_only(&mut self, frames: &[FrameRef], edits: &mut Edits) {
        for f in frames {
            if matches!(f.tag, b'1' | b'2') && self.ctx.suppress.borrow().front() == Some(&f.tag) {
                self.ctx.suppress.borrow_mut().pop_front();
                edits.drop_frame(f);
            } else if f.tag == b'Z' {
                self.ctx.suppress.borrow_mut().clear();
            }
        }
    }

    /// Applies findings, COPY re-chunking, suppressions and withholding to
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
                if f.tag == b'Z' {
                    self.withholding = false;
                    self.ctx.suppress.borrow_mut().clear();
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
            if matches!(f.tag, b'1' | b'2') && self.ctx.suppress.borrow().front() == Some(&f.tag) {
                self.ctx.suppress.borrow_mut().pop_front();
                edits.drop_frame(&f);
                i += 1;
                continue;
            }
            if f.tag == b'Z' {
                self.ctx.suppress.borrow_mut().clear();
            }
            if f.tag == b'd' {
                let mut j = i;
                self.seg.clear();
                self.seg.extend_from_slice(&self.copy_tail);
                self.copy_tail.clear();
                while j < frames.len() && frames[j].tag == b'd' {
                    self.seg
                        .extend_from_slice(&buf[frames[j].start + HEADER_LEN..frames[j].end]);
                    j += 1;
                }
                match self.mask_segment(engine) {
                    Ok(send) => {
                        edits.replace(&f, |out| copy_data(out, &send));
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
            let start = fi;
            while fi < self.found.len() && self.found[fi].0 == i {
                fi += 1;
            }
            let tail = std::mem::take(&mut self.copy_tail);
            if start == fi {
                if !tail.is_empty() {
                    edits.replace(&f, |out| {
                        copy_data(out, &tail);
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
                let mut m = Vec::new();
                engine.mask(x.rule, &buf[x.start..x.end], &mut m);
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
                copy_data(out, &tail);
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
    pub bytes: u64,
    pub statements: u64,
    hits: Vec<Hit>,
}

impl<'a> ClientSide<'a> {
    pub fn new(ctx: &'a SessionCtx<'a>) -> Self {
        ClientSide {
            ctx,
            bytes: 0,
            statements: 0,
            hits: Vec::new(),
        }
    }
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

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) {
        let Some(engine) = self.ctx.engine else { return };
        let is_stmt = |f: &FrameRef| matches!(f.tag, b'Q' | b'P' | b'B');
        let (Some(first), Some(last)) = (frames.iter().position(is_stmt), frames.iter().rposition(is_stmt)) else {
            return;
        };
        // One pass over all statements of the batch.
        let (lo, hi) = (frames[first].start, frames[last].end);
        self.hits.clear();
        if let Err(e) = engine.scan(&buf[lo..hi], &mut self.hits) {
            tracing::warn!(target: "gatehouse::scan", error = %e, "could not scan statements");
            return;
        }
        if self.hits.is_empty() {
            return;
        }
        // Confirmed findings per statement frame, in frame order.
        let mut flagged: Vec<(usize, u32)> = Vec::new();
        let mut tmp = Vec::new();
        for h in &self.hits {
            let (a, b) = (lo + h.first_end, lo + h.last_end);
            let hit = Hit {
                rule: h.rule,
                first_end: a,
                last_end: b,
            };
            let mut i = frames[first..=last].partition_point(|f| f.end < a) + first;
            while i <= last && frames[i].start < b.max(a + 1) {
                let f = frames[i];
                if is_stmt(&f) && !flagged.iter().any(|(j, _)| *j == i) {
                    tmp.clear();
                    engine.confirm(buf, f.start + HEADER_LEN, f.end, &hit, &mut tmp);
                    if let Some(x) = tmp.first() {
                        flagged.push((i, x.rule));
                    }
                }
                i += 1;
            }
        }
        flagged.sort_unstable();
        for (i, rule) in flagged {
            let f = frames[i];
            self.ctx.client_secrets.set(self.ctx.client_secrets.get() + 1);
            let rule = engine.rule_id(rule).to_string();
            tracing::info!(target: "gatehouse::scan", rule = %rule, refused = self.ctx.refuse_client_secrets, "statement from the client carries a secret");
            if !self.ctx.refuse_client_secrets {
                continue;
            }
            let sql = refusal_sql(&rule);
            if f.tag == b'Q' {
                edits.replace(&f, |out| pg::cstring_message(out, b'Q', sql.as_bytes()));
            } else {
                // Parse + Bind + Execute of the refusal on the unnamed
                // statement; the server answers ParseComplete, BindComplete
                // (dropped on the way back) and the error, then skips to Sync.
                edits.replace(&f, |out| {
                    let at = pg::begin(out, b'P');
                    out.push(0);
                    out.extend_from_slice(sql.as_bytes());
                    out.push(0);
                    out.extend_from_slice(&0i16.to_be_bytes());
                    pg::finish(out, at);
                    out.extend_from_slice(&[b'B', 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0]);
                    out.extend_from_slice(&[b'E', 0, 0, 0, 9, 0, 0, 0, 0, 0]);
                });
                let mut s = self.ctx.suppress.borrow_mut();
                s.push_back(b'1');
                s.push_back(b'2');
            }
        }
    }

    #[inline]
    fn on_read(&mut self, n: usize) {
        self.bytes += n as u64;
        self.ctx.handle.touch(self.ctx.shared.now());
    }
}
