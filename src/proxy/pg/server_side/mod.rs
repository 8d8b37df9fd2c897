//! The server's side of the relay: every message the server sends, in
//! order, through the protocol tracker (which answers are the client's, and
//! which belong to messages gatehouse sent itself), then secret masking of
//! everything that leaves the database, the policy's `max_rows` cut, and the
//! watch on the parameters gatehouse pins.
//!
//! Here: the tracker's verdict on each message and the pinned parameters;
//! `masking` (values of a batch), `copy_out` (COPY OUT rows), `large`
//! (messages streamed through in pieces), `max_rows` (the cut).

use super::capture::PgCapture;
use super::ctx::SessionCtx;
use super::read_write::{MARK_CATALOG, MARK_RESTORE};
use super::relay::{Action, Edits, FrameHandler, FrameRef, Large, Refused};
use crate::core::end::EndReason;
use crate::core::sqlstate::SqlState;
use crate::scan::{Finding, Hit};
use crate::wire::pg::track::{Delivery, Done};
use crate::wire::pg::{self, HEADER_LEN};

mod copy_out;
mod large;
pub(crate) mod masking;
mod max_rows;

use copy_out::COPY_HOLD;
use large::LargeScan;

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
    /// The batch holds a NotificationResponse.
    notifications: bool,
}

impl<'a> ServerSide<'a> {
    /// Adds the rows and bytes since the last ReadyForQuery to the
    /// identity's budget meter.
    #[inline]
    fn meter(&mut self) {
        if let Some(m) = &self.ctx.meter {
            let (rows, bytes) = (self.rows - self.metered.0, self.bytes - self.metered.1);
            m.add_result(self.ctx.shared.unix_now(), rows, bytes);
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
            notifications: false,
        }
    }
}

/// Server messages that carry values: DataRow, ErrorResponse,
/// NoticeResponse, NotificationResponse, FunctionCallResponse and
/// ParameterStatus.
fn scannable(tag: u8) -> bool {
    matches!(tag, b'D' | b'E' | b'N' | b'A' | b'V' | b'S')
}

impl ServerSide<'_> {
    /// Notifications the session's own backend sent carry the process id
    /// the client was given (rewritten in place: same length).
    fn own_notifications(&self, buf: &mut [u8], frames: &[FrameRef]) {
        let (server, client) = self.ctx.pids;
        if server == client {
            return;
        }
        for f in frames.iter().filter(|f| f.tag == b'A') {
            let at = f.start + HEADER_LEN;
            if f.end >= at + 4 && buf[at..at + 4] == server.to_be_bytes() {
                buf[at..at + 4].copy_from_slice(&client.to_be_bytes());
            }
        }
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
            b'A' => self.notifications = true,
            b'H' => self.copy_binary = body.first() == Some(&1),
            b'Z' => {
                self.meter();
                // Published once a round, for the live sessions list.
                self.ctx
                    .handle
                    .rows
                    .store(self.rows, std::sync::atomic::Ordering::Relaxed);
                if self.ctx.track.resetting.get() != 0 {
                    return Action::ForwardAndStop;
                }
            }
            b'E' if self.ctx.track.resetting.get() != 0 => self.ctx.track.resetting.set(2),
            // Only what reaches the client as an error: it was told why.
            b'E' if answer.delivery == Delivery::Forward && is_fatal(body) => self.ctx.track.server_fatal.set(true),
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
        if std::mem::take(&mut self.notifications) {
            self.own_notifications(buf, frames);
        }
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
            let found = engine
                .find_masked(v, self.ctx.applies.as_deref())
                .map_err(|e| Refused {
                    code: SqlState::INTERNAL_ERROR,
                    message: format!("gatehouse could not scan a large value for secrets: {e}"),
                    end: EndReason::ScanFailed,
                })?;
            for f in found {
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

fn scannable_or_copy(tag: u8) -> bool {
    scannable(tag) || tag == b'd'
}

/// Whether an ErrorResponse body ends the connection (severity FATAL or
/// PANIC, by the untranslated `V` field, or `S` from older servers).
fn is_fatal(body: &[u8]) -> bool {
    let mut severity: Option<&[u8]> = None;
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some(end) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        let value = &tail[..end];
        match code {
            b'V' => severity = Some(value),
            b'S' if severity.is_none() => severity = Some(value),
            _ => {}
        }
        rest = &tail[end + 1..];
    }
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

#[cfg(test)]
mod fatal_tests {
    use super::is_fatal;

    #[test]
    fn severity_decides_not_the_text() {
        assert!(is_fatal(b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0"));
        assert!(is_fatal(b"SPANIC\0C XX000\0\0"));
        // A translated S with the untranslated V.
        assert!(is_fatal(b"SSCHWERWIEGEND\0VFATAL\0C57P01\0\0"));
        assert!(!is_fatal(b"SERROR\0VERROR\0C42P01\0MFATAL in the message\0\0"));
        assert!(!is_fatal(b"VERROR\0SFATAL\0\0"));
        assert!(!is_fatal(b""));
        assert!(!is_fatal(b"SFATAL"));
    }
}
