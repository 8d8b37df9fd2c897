//! The client's side of the relay. Every message the client sends goes,
//! in order, through the protocol tracker (what the server will hold) and,
//! under a policy, through the enforcer (what the server may run); a
//! refused message is replaced by a statement that makes the server raise
//! the refusal in its place, so errors arrive in order with the pipeline.
//! Statements that carry secrets are flagged (or refused), and the
//! recorder is told what each statement was.
//!
//! Under a policy nothing is decided on part of a message: statement text
//! must be valid UTF-8 and whole messages must decode the way the server
//! reads them; a message too large for the buffer is refused unless it is a
//! Bind whose names are in its first buffer (its parameters then stream) or
//! COPY data; a message type the enforcer cannot inspect ends the session.

use super::capture::PgCapture;
use super::ctx::SessionCtx;
use super::read_write::{self, MARK_CATALOG};
use super::relay::{Action, Edits, FrameHandler, FrameRef, Large, Writer};
use super::statements::{created_names, Portal, Stmt, MAX_KEPT_PARAMS, UNKNOWN_PORTAL};
use crate::core::enforce::{self, Enforcer, HoldIo, Refusal, Stage, Statement, Step, TxStatus, WaitFor};
use crate::core::sqlstate::SqlState;
use crate::record::StatementRef;
use crate::scan::{Finding, Hit};
use crate::sql::{Classification, StatementClass};
use crate::wire::pg::messages::{self, Target};
use crate::wire::pg::track::{Answers, Checkpoint, Lookup, MAX_NAMES};
use crate::wire::pg::{self, WireError, HEADER_LEN};
use futures_util::lock::Mutex;
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::Arc;

thread_local! {
    /// This worker's classifier, for the policy generation it was built for.
    static CLASSIFIER: RefCell<Option<(usize, crate::sql::Classifier)>> = const { RefCell::new(None) };
}

fn classify(policy: &Arc<crate::policy::Policy>, sql: &str) -> Arc<Classification> {
    let key = Arc::as_ptr(policy) as usize;
    CLASSIFIER.with(|c| {
        let mut c = c.borrow_mut();
        if !matches!(&*c, Some((k, _)) if *k == key) {
            *c = Some((key, crate::sql::Classifier::new(&policy.side_effect_functions)));
        }
        match &*c {
            Some((_, cl)) => cl.classify(sql),
            None => Arc::new(crate::sql::Classifier::new(&[]).classify_uncached(sql)),
        }
    })
}

/// Room kept below the tracker's bound on names, so a refusal (which
/// names the unnamed statement) still fits.
const NAMES_MARGIN: usize = 16;

/// Messages that reach the server as requests (and start a group when
/// none is open).
fn request(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'Q' | b'F')
}

/// Whether the statement held at frame `held` is alone in its group, which
/// starts at frame `start` and must end (Sync) in this batch: a Query or a
/// FunctionCall on its own, or extended-protocol messages with one Bind and
/// one Execute, of the same portal, and otherwise only Parse, Describe,
/// Close and Flush. Nothing else can then run inside a read-write context
/// opened for it.
fn alone_in_group(buf: &[u8], frames: &[FrameRef], start: usize, held: usize) -> bool {
    let body = |f: &FrameRef| &buf[f.start + HEADER_LEN..f.end];
    let held_frame = frames[held];
    if matches!(held_frame.tag, b'Q' | b'F') {
        return start == held;
    }
    let Some(end) = frames[held..].iter().position(|f| f.tag == b'S').map(|n| held + n) else {
        return false;
    };
    let portal_of = |f: &FrameRef| -> Option<Vec<u8>> {
        match f.tag {
            b'B' => messages::bind_names(body(f))
                .ok()
                .map(|m| crate::wire::pg::track::name_key(m.portal).to_vec()),
            b'E' => messages::execute_msg(body(f))
                .ok()
                .map(|(p, _)| crate::wire::pg::track::name_key(p).to_vec()),
            _ => None,
        }
    };
    let Some(portal) = portal_of(&held_frame) else {
        return false;
    };
    let (mut binds, mut executes) = (0, 0);
    for f in &frames[start..end] {
        match f.tag {
            b'P' | b'D' | b'C' | b'H' => {}
            b'B' | b'E' if portal_of(f).as_deref() == Some(&portal[..]) => {
                if f.tag == b'B' {
                    binds += 1;
                } else {
                    executes += 1;
                }
            }
            _ => return false,
        }
    }
    binds <= 1 && executes == 1
}

/// Bytes sent around one frame of a batch, or in its place.
struct FrameEdit {
    frame: usize,
    before: Vec<u8>,
    replace: Option<Vec<u8>>,
    after: Vec<u8>,
}

/// Where the group being read started in this batch, to hold it whole.
struct GroupStart {
    frame: usize,
    tracker: Checkpoint,
    binds: u64,
}

pub struct ClientSide<'a> {
    pub ctx: &'a SessionCtx<'a>,
    /// Statement policy, when the configuration has one.
    pub enforcer: Option<Enforcer<'a>>,
    /// The client's writer (for the hold notice), its mid-frame flag and socket.
    pub client: (&'a Mutex<Writer>, &'a Cell<bool>, RawFd),
    pub bytes: u64,
    pub statements: u64,
    /// A statement too large for the buffer is streaming through: it is
    /// scanned piece by piece (flagged, as it cannot be refused any more).
    large_stmt: bool,
    large_flagged: bool,
    /// Bind messages handed to the recorder (the next one's ordinal).
    binds: u64,
    /// A Query, Bind, Execute or FunctionCall was sent in the current group.
    statement_in_group: bool,
    /// A refusal went upstream in place of an extended-protocol message:
    /// it always fails, so the server skips everything up to the next Sync,
    /// and nothing until then needs a decision.
    skipping: bool,
    waiting: Option<WaitFor>,
    frame_edits: Vec<FrameEdit>,
    recorded: Vec<StatementRef>,
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
        client: (&'a Mutex<Writer>, &'a Cell<bool>, RawFd),
    ) -> Self {
        ClientSide {
            ctx,
            enforcer,
            client,
            bytes: 0,
            statements: 0,
            large_stmt: false,
            large_flagged: false,
            binds: 0,
            statement_in_group: false,
            skipping: false,
            waiting: None,
            frame_edits: Vec::new(),
            recorded: Vec::new(),
            hits: Vec::new(),
            values: Vec::new(),
            ends: Vec::new(),
            found: Vec::new(),
            seg: Vec::new(),
        }
    }

    fn edit(&mut self, frame: usize) -> &mut FrameEdit {
        if self.frame_edits.last().is_none_or(|e| e.frame != frame) {
            self.frame_edits.push(FrameEdit {
                frame,
                before: Vec::new(),
                replace: None,
                after: Vec::new(),
            });
        }
        let last = self.frame_edits.len() - 1;
        &mut self.frame_edits[last]
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
    let parsed = messages::bind_names(body).and_then(|b| {
        let params = messages::bind_params(b.rest)?;
        for p in params {
            if let Some(v) = p.value {
                let at = v.as_ptr() as usize - frame.as_ptr() as usize;
                out.push((at, at + v.len()));
            }
        }
        Ok(())
    });
    if parsed.is_err() {
        // Not a Bind the server will take; scan it whole all the same.
        out.clear();
        out.push(whole);
    }
}

/// Parse + Bind + Execute of `sql` on the unnamed statement and portal:
/// the server answers ParseComplete and BindComplete (dropped on the way
/// back) and the error, then skips to Sync.
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
/// the error arrives in order with the rest of the pipeline.
fn refusal_sql(refusal: &Refusal) -> String {
    let clean = |s: &str| s.replace('\'', "''").replace('$', "");
    match refusal {
        Refusal::Secret { rule } => format!(
            "DO $gatehouse$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = 'statement refused by gatehouse: it carries a secret (rule {})', HINT = 'Remove the secret from the statement; secrets must not be sent through the gateway.'; END$gatehouse$",
            refusal.code(),
            clean(rule)
        ),
        Refusal::Policy { code, message } => format!(
            "DO $gatehouse$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = 'statement refused by gatehouse: {}'; END$gatehouse$",
            code,
            clean(message)
        ),
    }
}

/// Writes the refusal of a client message with tag `tag` into `out` and
/// tells the tracker what the server will get instead.
fn refuse_into(out: &mut Vec<u8>, tag: u8, sql: &str, tracker: &mut super::statements::StatementTracker) {
    if matches!(tag, b'Q' | b'F') {
        pg::cstring_message(out, b'Q', sql.as_bytes());
        tracker.query(Vec::new(), Answers::Client, 0);
        return;
    }
    refusal_pbe(out, sql);
    let stmt = Arc::new(Stmt {
        sql: Arc::from(sql),
        class: None,
    });
    tracker.parse(b"", stmt.clone(), Answers::Dropped);
    tracker.bind(
        b"",
        Some(Portal {
            stmt,
            params: None,
            bind: u64::MAX,
            cleared: false,
        }),
        Answers::Dropped,
    );
    tracker.execute(Vec::new(), Answers::Client, 0);
}

/// A malformed message, as the client is told under a policy.
fn malformed(e: WireError) -> Step {
    Step::Refuse(Refusal::Policy {
        code: SqlState::PROTOCOL_VIOLATION,
        message: format!("{e}: gatehouse does not pass on a message it cannot read whole"),
    })
}

fn reserved_name() -> Step {
    Step::Refuse(Refusal::policy(
        "statement and portal names starting with \"gatehouse:\" are kept for the gateway",
    ))
}

/// A Query's text as the policy reads it: one string, valid UTF-8.
fn policy_text(body: &[u8]) -> Result<&str, Step> {
    let Some(end) = memchr::memchr(0, body) else {
        return Err(malformed(WireError::Malformed("Query")));
    };
    if end + 1 != body.len() {
        return Err(malformed(WireError::Malformed("Query")));
    }
    utf8_text(&body[..end])
}

/// Statement text as the policy reads it: valid UTF-8, never decoded lossily.
fn utf8_text(text: &[u8]) -> Result<&str, Step> {
    std::str::from_utf8(text).map_err(|_| {
        Step::Refuse(Refusal::Policy {
            code: SqlState::CHARACTER_NOT_IN_REPERTOIRE,
            message: "statement text is not valid UTF-8 (client_encoding is UTF8 through gatehouse)".into(),
        })
    })
}

/// What the recorder and reviewers see of statement text without a policy
/// (no decision is taken on it).
fn lossy(b: &[u8]) -> Arc<str> {
    Arc::from(&*String::from_utf8_lossy(b))
}

/// Longest parameter a reviewer sees (longer ones are cut).
const MAX_PARAM_SHOWN: usize = 1024;

/// A Bind's parameters as text, for a reviewer (masked by the enforcer).
fn shown_params(rest: &[u8]) -> Vec<String> {
    match messages::bind_params(rest) {
        Ok(ps) => ps.iter().map(|p| messages::param_text(p, MAX_PARAM_SHOWN)).collect(),
        Err(_) => vec!["<parameters gatehouse could not read>".into()],
    }
}

/// The session's side of a hold: the client (for the notice), the
/// session's handle (cancel, kill) and the tracker (the transaction status
/// a read-write context opens in).
struct PgHold<'h> {
    client: &'h Mutex<Writer>,
    client_mid: &'h Cell<bool>,
    client_fd: RawFd,
    ctx: &'h SessionCtx<'h>,
}

impl HoldIo for PgHold<'_> {
    async fn notice(&self, message: &str, hint: &str) {
        let mut notice = Vec::with_capacity(256);
        pg::error_message(
            &mut notice,
            true,
            "NOTICE",
            SqlState::WARNING.code(),
            message,
            None,
            Some(hint),
        );
        let mut w = self.client.lock().await;
        // Never inside a message the relay is still writing.
        if !self.client_mid.get() {
            let (_, _) = monoio::io::AsyncWriteRentExt::write_all(&mut *w, notice).await;
            let _ = monoio::io::AsyncWriteRent::flush(&mut *w).await;
        }
    }

    fn take_cancel(&self) -> bool {
        self.ctx.handle.take_cancel()
    }

    fn gone(&self) -> bool {
        self.ctx.handle.killed().is_some() || client_gone(self.client_fd)
    }

    async fn settled(&self) -> TxStatus {
        let ctx = self.ctx;
        while ctx.tracker.borrow().pending_len() > 0
            && ctx.tracker.borrow().lost().is_none()
            && !ctx.progress.ended.get()
            && ctx.handle.killed().is_none()
        {
            ctx.progress.changed().await;
        }
        match ctx.tracker.borrow().status() {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InBlock,
            _ => TxStatus::Failed,
        }
    }
}

/// Whether the client closed its end (a peek sees EOF).
fn client_gone(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte peek into a local buffer on the session's own socket.
    let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0
}

/// What to push to the tracker for a message that passes.
enum Op {
    Parse { name: Vec<u8>, stmt: Arc<Stmt> },
    Bind { name: Vec<u8>, portal: Option<Portal> },
    Describe,
    Close { target: Target, name: Vec<u8> },
    Execute { class: Option<Arc<Classification>> },
    Sync,
    Query { class: Option<Arc<Classification>> },
    Call,
    None,
}

fn mark_for(class: &Option<Arc<Classification>>) -> u8 {
    match class {
        Some(c) if c.class >= StatementClass::Ddl => MARK_CATALOG,
        _ => 0,
    }
}

impl ClientSide<'_> {
    /// Decides one message and, unless it waits or is held, tells the
    /// tracker what goes upstream for it and queues the bytes around it.
    fn step(&mut self, i: usize, tag: u8, frame: &[u8], group_start: bool, secret: Option<u32>) -> Step {
        let body = &frame[HEADER_LEN..];
        let policy = self.enforcer.is_some();
        if request(tag) && self.ctx.tracker.borrow().over_pending() {
            return Step::Wait(WaitFor::Backpressure);
        }
        let recording_down = runs_something(tag) && self.ctx.rec.as_ref().is_some_and(|r| r.refusing());
        let (step, op) = match secret {
            // Nothing runs unrecorded (`recording.on_failure = "refuse"`).
            _ if recording_down && !self.skipping => (Step::Refuse(recording_refusal()), Op::None),
            Some(rule) if self.ctx.refuse_client_secrets && matches!(tag, b'Q' | b'P' | b'B') => {
                let rule = self.ctx.engine.map(|e| e.rule_id(rule).to_string()).unwrap_or_default();
                (Step::Refuse(Refusal::Secret { rule }), Op::None)
            }
            // Skipped by the server after a refusal: followed, not decided.
            _ if self.skipping && tag != b'S' => match self.plan(i, tag, body, false) {
                Ok((_, op)) => (Step::Pass, op),
                Err(_) => (Step::Pass, Op::None),
            },
            _ => match self.plan(i, tag, body, policy) {
                Ok(x) => x,
                Err(step) => (step, Op::None),
            },
        };
        if tag == b'S' {
            self.skipping = false;
        }
        if matches!(step, Step::Wait(_) | Step::Hold { .. }) {
            return step;
        }
        let ctx = self.ctx;
        let mut tracker = ctx.tracker.borrow_mut();
        // Before a group: what gatehouse owes the session first. Before the
        // end of an approved group whose statement did not run (it was
        // refused after all): read-only again.
        let mut before = Vec::new();
        if group_start {
            self.before_group(&mut before, &mut tracker);
        }
        let unfinished = match self.enforcer.as_ref().and_then(|e| e.rw.as_ref()) {
            Some(plan) if tag == b'S' && plan.stage == Stage::Open => Some(plan.clone()),
            _ => None,
        };
        if let Some(plan) = unfinished {
            read_write::close(b'E', &plan, &mut before, &mut tracker);
            if let Some(p) = self.enforcer.as_mut().and_then(|e| e.rw.as_mut()) {
                p.stage = Stage::Closed;
            }
        }
        if !before.is_empty() {
            drop(tracker);
            self.edit(i).before = before;
            tracker = ctx.tracker.borrow_mut();
        }
        if let Step::Refuse(refusal) = &step {
            let sql = refusal_sql(refusal);
            let mut out = Vec::new();
            refuse_into(&mut out, tag, &sql, &mut tracker);
            drop(tracker);
            self.edit(i).replace = Some(out);
            // An extended-protocol refusal errors: the server skips to Sync.
            self.skipping |= !matches!(tag, b'Q' | b'F');
            return step;
        }
        match op {
            Op::Parse { name, stmt } => tracker.parse(&name, stmt, Answers::Client),
            Op::Bind { name, portal } => tracker.bind(&name, portal, Answers::Client),
            Op::Describe => tracker.describe(Answers::Client),
            Op::Close { target, name } => tracker.close(target, &name, Answers::Client),
            Op::Execute { class } => {
                let names = class.as_deref().map(created_names).unwrap_or_default();
                tracker.execute(names, Answers::Client, mark_for(&class));
            }
            Op::Query { class } => {
                let names = class.as_deref().map(created_names).unwrap_or_default();
                tracker.query(names, Answers::Client, mark_for(&class));
            }
            Op::Sync => tracker.sync(Answers::Client),
            Op::Call => tracker.function_call(Answers::Client),
            Op::None => {}
        }
        // After the approved statement (the only one in its group):
        // read-only again at once; after its group: the default back on.
        let mut after = Vec::new();
        if let Some(enf) = self.enforcer.as_mut() {
            if let Some(plan) = enf.rw.as_mut() {
                let group_end = match tag {
                    b'E' if plan.stage == Stage::Open => {
                        read_write::close(tag, plan, &mut after, &mut tracker);
                        plan.stage = Stage::Closed;
                        false
                    }
                    b'Q' | b'F' if plan.stage == Stage::Open => {
                        read_write::close(tag, plan, &mut after, &mut tracker);
                        true
                    }
                    b'S' => plan.stage == Stage::Closed,
                    _ => false,
                };
                if group_end {
                    if plan.turned_default_off() {
                        read_write::restore(&mut after, &mut tracker);
                    }
                    enf.rw = None;
                }
            }
        }
        if !after.is_empty() {
            drop(tracker);
            self.edit(i).after = after;
        }
        Step::Pass
    }

    /// What gatehouse owes the session before a group starts: setting
    /// read-only back on (until the server confirms it), and the read-write
    /// context of an approved statement.
    fn before_group(&mut self, out: &mut Vec<u8>, tracker: &mut super::statements::StatementTracker) {
        let ctx = self.ctx;
        let Some(enf) = self.enforcer.as_mut() else { return };
        if ctx.restore_read_only.get() {
            read_write::restore(out, tracker);
        }
        if let Some(plan) = enf.rw.as_mut().filter(|p| p.stage == Stage::Approved) {
            plan.stage = Stage::Open;
            if read_write::open(plan, out, tracker) {
                ctx.restore_read_only.set(true);
            }
        }
    }

    /// What a message is and what the policy says of it (`policy`: read
    /// it strictly and decide), before anything is pushed. `Err` is a
    /// refusal (or a wait) found while reading it.
    fn plan(&mut self, i: usize, tag: u8, body: &[u8], policy: bool) -> Result<(Step, Op), Step> {
        let ctx = self.ctx;
        let pass = |op| Ok((Step::Pass, op));
        match tag {
            b'P' => {
                let m = match messages::parse_msg(body) {
                    Ok(m) => m,
                    Err(e) if policy => return Err(malformed(e)),
                    // Without a policy the server judges it; a name that can
                    // never be real keeps the tracker in step.
                    Err(_) => messages::ParseMsg { name: b"\0", sql: body },
                };
                let (sql, class) = if let Some(enf) = self.enforcer.as_ref().filter(|_| policy) {
                    if read_write::reserved(m.name) {
                        return Err(reserved_name());
                    }
                    if ctx.tracker.borrow().names() + NAMES_MARGIN >= MAX_NAMES {
                        return Err(Step::Refuse(Refusal::Policy {
                            code: SqlState::PROGRAM_LIMIT_EXCEEDED,
                            message: format!("too many prepared statements and portals for gatehouse to track (at most {MAX_NAMES}); close some"),
                        }));
                    }
                    let sql = utf8_text(m.sql)?;
                    (Arc::from(sql), Some(classify(&enf.policy, sql)))
                } else {
                    (lossy(m.sql), None)
                };
                // Named statements stay until closed: their texts, which
                // gatehouse keeps, are bounded over the session.
                if !m.name.is_empty() && m.name != b"\0" {
                    let held = ctx.tracker.borrow().statement_bytes(|s| s.sql.len());
                    if held + sql.len() > ctx.max_statement_bytes {
                        return Err(Step::Refuse(Refusal::Policy {
                            code: SqlState::PROGRAM_LIMIT_EXCEEDED,
                            message: format!(
                                "this session's prepared statements would hold more than {} bytes of text (max_prepared_statement_bytes); close some",
                                ctx.max_statement_bytes
                            ),
                        }));
                    }
                }
                pass(Op::Parse {
                    name: m.name.to_vec(),
                    stmt: Arc::new(Stmt { sql, class }),
                })
            }
            b'B' => {
                let m = match messages::bind_names(body) {
                    Ok(m) if !policy || messages::check_bind(m.rest).is_ok() => m,
                    Ok(_) if policy => return Err(malformed(WireError::Malformed("Bind"))),
                    Err(e) if policy => return Err(malformed(e)),
                    _ => messages::BindMsg {
                        portal: b"\0",
                        statement: b"\0",
                        rest: &[],
                    },
                };
                if policy && (read_write::reserved(m.portal) || read_write::reserved(m.statement)) {
                    return Err(reserved_name());
                }
                let lookup = {
                    let t = ctx.tracker.borrow();
                    if policy {
                        t.statement(m.statement)
                    } else {
                        t.statement_guess(m.statement)
                    }
                };
                let portal = match lookup {
                    Lookup::Unsettled => return Err(Step::Wait(WaitFor::EarlierGroups)),
                    Lookup::Known(stmt) => {
                        // A change is decided now: no portal on the server
                        // holds a change that was not allowed.
                        let mut cleared = false;
                        if let (Some(enf), Some(c)) = (self.enforcer.as_mut().filter(|_| policy), &stmt.class) {
                            let params = || shown_params(m.rest);
                            let decided = enf.at_bind(
                                &Statement {
                                    class: c,
                                    sql: &stmt.sql,
                                    params: Some(&params),
                                    call: None,
                                },
                                m.portal,
                            );
                            match decided {
                                None => {}
                                Some(Step::Pass) => cleared = true,
                                Some(other) => return Ok((other, Op::None)),
                            }
                        }
                        let keep = match (self.enforcer.as_ref().filter(|_| policy), &stmt.class) {
                            (Some(enf), Some(c)) => {
                                !cleared && !enf.known_allowed(c) && m.rest.len() <= MAX_KEPT_PARAMS
                            }
                            _ => false,
                        };
                        Some(Portal {
                            stmt,
                            params: keep.then(|| Arc::from(m.rest)),
                            bind: self.binds,
                            cleared,
                        })
                    }
                    Lookup::Doubtful | Lookup::Absent => None,
                };
                pass(Op::Bind {
                    name: m.portal.to_vec(),
                    portal,
                })
            }
            b'E' => {
                let name = match messages::execute_msg(body) {
                    Ok((name, _)) if !policy || body.len() == name.len() + 5 => name,
                    Ok(_) if policy => return Err(malformed(WireError::Malformed("Execute"))),
                    Err(e) if policy => return Err(malformed(e)),
                    _ => b"\0",
                };
                if policy && read_write::reserved(name) {
                    return Err(reserved_name());
                }
                let lookup = {
                    let t = ctx.tracker.borrow();
                    if policy {
                        t.portal(name)
                    } else {
                        t.portal_guess(name)
                    }
                };
                let portal = match lookup {
                    Lookup::Unsettled => return Err(Step::Wait(WaitFor::EarlierGroups)),
                    Lookup::Known(p) => Some(p),
                    Lookup::Doubtful | Lookup::Absent => None,
                };
                let (sql, class, bind) = match &portal {
                    Some(p) => (p.stmt.sql.clone(), p.stmt.class.clone(), Some(p.bind)),
                    None => (Arc::from(UNKNOWN_PORTAL), None, None),
                };
                let step = match self.enforcer.as_mut().filter(|_| policy) {
                    // Decided (and allowed) at its Bind.
                    Some(_) if portal.as_ref().is_some_and(|p| p.cleared) => Step::Pass,
                    Some(enf) => {
                        let c = class.clone().unwrap_or_else(enforce::unknown);
                        let kept = portal.as_ref().and_then(|p| p.params.as_deref());
                        let params = || kept.map(shown_params).unwrap_or_default();
                        enf.decide_execute(
                            &Statement {
                                class: &c,
                                sql: &sql,
                                params: kept.map(|_| &params as &dyn Fn() -> Vec<String>),
                                call: None,
                            },
                            name,
                        )
                    }
                    None => Step::Pass,
                };
                if self.ctx.rec.is_some() && !matches!(step, Step::Wait(_) | Step::Hold { .. }) {
                    self.recorded.push(StatementRef {
                        frame: i as u32,
                        sql,
                        class: class.as_ref().map(|c| c.class.as_str()),
                        bind,
                    });
                }
                Ok((step, Op::Execute { class }))
            }
            b'Q' => {
                let (sql, class): (Arc<str>, _) = match self.enforcer.as_ref().filter(|_| policy) {
                    Some(enf) => {
                        let text = policy_text(body)?;
                        (Arc::from(text), Some(classify(&enf.policy, text)))
                    }
                    None => (lossy(body.split(|&b| b == 0).next().unwrap_or(&[])), None),
                };
                let step = match (self.enforcer.as_mut().filter(|_| policy), &class) {
                    (Some(enf), Some(c)) => enf.decide(&Statement {
                        class: c,
                        sql: &sql,
                        params: None,
                        call: None,
                    }),
                    _ => Step::Pass,
                };
                if self.ctx.rec.is_some() && !matches!(step, Step::Wait(_) | Step::Hold { .. }) {
                    self.recorded.push(StatementRef {
                        frame: i as u32,
                        sql,
                        class: class.as_ref().map(|c| c.class.as_str()),
                        bind: None,
                    });
                }
                Ok((step, Op::Query { class }))
            }
            b'F' => {
                let call = messages::function_call_msg(body);
                let step = match (self.enforcer.as_mut().filter(|_| policy), &call) {
                    (Some(_), Err(e)) => return Err(malformed(e.clone())),
                    (Some(enf), Ok(f)) => {
                        let args = f
                            .args
                            .iter()
                            .map(|a| messages::param_text(a, MAX_PARAM_SHOWN))
                            .collect();
                        let unknown = enforce::unknown();
                        enf.decide(&Statement {
                            class: &unknown,
                            sql: "<FunctionCall>",
                            params: None,
                            call: Some((f.oid, args)),
                        })
                    }
                    (None, _) => Step::Pass,
                };
                if !matches!(step, Step::Wait(_) | Step::Hold { .. }) {
                    let oid = call.as_ref().map(|f| f.oid).unwrap_or(0);
                    self.recorded.push(StatementRef {
                        frame: i as u32,
                        sql: Arc::from(format!("<FunctionCall of OID {oid}>")),
                        class: Some(StatementClass::Unknown.as_str()),
                        bind: None,
                    });
                }
                Ok((step, Op::Call))
            }
            b'D' | b'C' => {
                let what = if tag == b'D' { "Describe" } else { "Close" };
                let (target, name) = match messages::target_msg(body, what) {
                    Ok((t, n)) if !policy || body.len() == n.len() + 2 => (t, n),
                    Ok(_) if policy => return Err(malformed(WireError::Malformed(what))),
                    Err(e) if policy => return Err(malformed(e)),
                    _ => (Target::Statement, &b"\0"[..]),
                };
                if policy && read_write::reserved(name) {
                    return Err(reserved_name());
                }
                if tag == b'D' {
                    pass(Op::Describe)
                } else {
                    pass(Op::Close {
                        target,
                        name: name.to_vec(),
                    })
                }
            }
            b'S' => pass(Op::Sync),
            _ => pass(Op::None),
        }
    }

    /// Finds the first secret in each statement message of the batch (the
    /// text of a Query or Parse, each Bind parameter), in one scan.
    fn statement_secrets(&mut self, buf: &[u8], frames: &[FrameRef]) -> Vec<(usize, u32)> {
        let Some(engine) = self.ctx.engine else {
            return Vec::new();
        };
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
        if self.values.is_empty() {
            return Vec::new();
        }
        if let Err(e) = crate::scan::values::find_in_values(
            engine,
            buf,
            &self.values,
            &mut self.seg,
            &mut self.ends,
            &mut self.hits,
            &mut self.found,
            None,
        ) {
            tracing::warn!(target: "gatehouse::scan", error = %e, "could not scan statements");
            return Vec::new();
        }
        self.found.sort_unstable_by_key(|(i, f)| (*i, f.start));
        self.found.dedup_by_key(|(i, _)| *i);
        self.found.iter().map(|&(i, f)| (i, f.rule)).collect()
    }

    async fn wait(&mut self, w: WaitFor) {
        let ctx = self.ctx;
        let settled = |ctx: &SessionCtx<'_>| {
            let t = ctx.tracker.borrow();
            let done = match w {
                WaitFor::EarlierGroups => !t.earlier_groups_pending(),
                WaitFor::Backpressure => t.drained(),
                WaitFor::Catalog => true,
            };
            done || t.lost().is_some() || ctx.progress.ended.get() || ctx.handle.killed().is_some()
        };
        if w == WaitFor::Catalog {
            if let Some(enf) = &self.enforcer {
                enf.load_catalog().await;
            }
            return;
        }
        while !settled(ctx) {
            ctx.progress.changed().await;
        }
    }
}

impl FrameHandler for ClientSide<'_> {
    #[inline]
    fn on_frame(&mut self, tag: u8, _body: &[u8]) -> Action {
        match tag {
            b'Q' | b'E' => {
                self.statements += 1;
                self.ctx
                    .handle
                    .statements
                    .store(self.statements, std::sync::atomic::Ordering::Relaxed);
                Action::Forward
            }
            b'X' => Action::ForwardAndStop,
            // A password message after the login, or anything the enforcer
            // cannot inspect: not under a policy.
            b'p' if self.enforcer.is_some() => Action::Reject(WireError::UnknownType { side: "frontend", tag }),
            _ => Action::Forward,
        }
    }

    fn large_chunk(&mut self, chunk: &mut [u8], last: bool) -> Result<usize, super::relay::Refused> {
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
        let large = self.large_frame(tag, total_len, head, out);
        if matches!(large, Large::Discard) && !matches!(tag, b'Q' | b'F') {
            // Refused: the server skips the rest of the group, which is then
            // followed, not decided (as for any refusal).
            self.skipping = true;
        }
        large
    }

    fn rewrite(&mut self, buf: &mut [u8], frames: &[FrameRef], edits: &mut Edits) -> Option<usize> {
        self.frame_edits.clear();
        self.recorded.clear();
        let secrets = self.statement_secrets(buf, frames);
        let mut refusals: Vec<(usize, Refusal)> = Vec::new();
        let mut hold = None;
        let mut group: Option<GroupStart> = None;
        let mut next_secret = secrets.iter().peekable();
        for (i, f) in frames.iter().enumerate() {
            let group_start = request(f.tag) && self.ctx.tracker.borrow().at_group_start();
            if group_start {
                group = Some(GroupStart {
                    frame: i,
                    tracker: self.ctx.tracker.borrow().checkpoint(),
                    binds: self.binds,
                });
                self.statement_in_group = false;
            }
            while next_secret.peek().is_some_and(|(j, _)| *j < i) {
                next_secret.next();
            }
            let secret = next_secret.peek().filter(|(j, _)| *j == i).map(|(_, r)| *r);
            match self.step(i, f.tag, &buf[f.start..f.end], group_start, secret) {
                Step::Pass => {}
                Step::Refuse(refusal) => {
                    if let Refusal::Policy { code, message } = &refusal {
                        tracing::info!(target: "gatehouse::policy", code = code.code(), reason = %message, "statement refused by policy");
                    }
                    refusals.push((i, refusal));
                }
                Step::Wait(w) => {
                    self.waiting = Some(w);
                    hold = Some(i);
                    break;
                }
                Step::Hold { read_write } => {
                    let in_group = self.statement_in_group;
                    let enf = self.enforcer.as_mut();
                    match (group.as_ref(), enf) {
                        (Some(g), Some(enf)) if read_write && !in_group => {
                            // Held whole: if the statement is alone in its
                            // group, a read-write context can open before it
                            // once it is approved.
                            enf.rw_eligible = alone_in_group(buf, frames, g.frame, i);
                            self.ctx.tracker.borrow_mut().rollback(g.tracker);
                            self.binds = g.binds;
                            hold = Some(g.frame);
                        }
                        (_, Some(enf)) => {
                            enf.rw_eligible = false;
                            hold = Some(i);
                        }
                        (_, None) => hold = Some(i),
                    }
                    break;
                }
            }
            if matches!(f.tag, b'Q' | b'E' | b'F' | b'B') {
                // A decision may have been taken (a Bind decides a change):
                // a later hold in this group cannot take the group back.
                self.statement_in_group = true;
            }
            if f.tag == b'B' {
                // Every Bind the recorder receives has the next ordinal.
                self.binds += 1;
            }
            if matches!(f.tag, b'S' | b'Q' | b'F') {
                self.ctx.track.loose.set(false);
            }
        }
        let upto = hold.unwrap_or(frames.len());
        refusals.retain(|r| r.0 < upto);
        self.frame_edits.retain(|e| e.frame < upto);
        self.recorded.retain(|s| (s.frame as usize) < upto);
        if hold.is_some() {
            // These come round again after the hold: count them then.
            let again = frames[upto..].iter().filter(|f| matches!(f.tag, b'Q' | b'E')).count() as u64;
            self.statements -= again;
        }
        let frames = &frames[..upto];
        // Secrets in statements: flagged always (refused when configured).
        if let Some(engine) = self.ctx.engine {
            for &(i, rule) in secrets.iter().filter(|(i, _)| *i < upto) {
                self.ctx.client_secrets.set(self.ctx.client_secrets.get() + 1);
                let refused = refusals
                    .iter()
                    .any(|(j, r)| *j == i && matches!(r, Refusal::Secret { .. }));
                tracing::info!(target: "gatehouse::scan", rule = %engine.rule_id(rule), refused, frame = i, "statement from the client carries a secret");
            }
        }
        if let Some(rec) = &self.ctx.rec {
            rec.client(buf, frames, &refusals, &self.recorded);
        }
        for e in self.frame_edits.drain(..) {
            let f = frames[e.frame];
            edits.replace(&f, |out| {
                out.extend_from_slice(&e.before);
                match &e.replace {
                    Some(r) => out.extend_from_slice(r),
                    None => out.extend_from_slice(&buf[f.start..f.end]),
                }
                out.extend_from_slice(&e.after);
            });
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
        if let Some(w) = self.waiting.take() {
            tracing::debug!(target: "gatehouse::policy", wait = ?w, pending = self.ctx.tracker.borrow().pending_len(), "waiting before a message");
            self.wait(w).await;
            tracing::debug!(target: "gatehouse::policy", wait = ?w, pending = self.ctx.tracker.borrow().pending_len(), "waited");
            return;
        }
        let (w, mid, fd) = self.client;
        let ctx = self.ctx;
        if let Some(enf) = self.enforcer.as_mut() {
            enf.hold(&PgHold {
                client: w,
                client_mid: mid,
                client_fd: fd,
                ctx,
            })
            .await;
            if let (Some(rec), Some((review, outcome, reason, by))) = (&ctx.rec, enf.last_review.take()) {
                rec.push(crate::record::events::Ev::Review {
                    session: rec.key,
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

impl ClientSide<'_> {
    /// What to do with a message too large for the buffer (see
    /// [`FrameHandler::on_large_frame`]).
    fn large_frame(&mut self, tag: u8, total_len: usize, head: &[u8], out: &mut Vec<u8>) -> Large {
        self.large_stmt = matches!(tag, b'Q' | b'P' | b'B');
        self.large_flagged = false;
        self.ctx.track.loose.set(true);
        let body = head.get(HEADER_LEN..).unwrap_or(&[]);
        let ctx = self.ctx;
        let mut tracker = ctx.tracker.borrow_mut();
        // Nothing runs unrecorded (`recording.on_failure = "refuse"`),
        // however large.
        if runs_something(tag) && !self.skipping && ctx.rec.as_ref().is_some_and(|r| r.refusing()) {
            let sql = refusal_sql(&recording_refusal());
            refuse_into(out, tag, &sql, &mut tracker);
            self.skipping |= !matches!(tag, b'Q' | b'F');
            return Large::Discard;
        }
        if self.enforcer.is_none() {
            // Followed as far as its first piece tells.
            match tag {
                b'Q' => tracker.query(Vec::new(), Answers::Client, 0),
                b'F' => tracker.function_call(Answers::Client),
                b'P' => {
                    let name = pg::Cursor::new(body, "Parse").cstr().unwrap_or(b"\0");
                    let stmt = Arc::new(Stmt {
                        sql: Arc::from("<a statement too large to record>"),
                        class: None,
                    });
                    tracker.parse(name, stmt, Answers::Client);
                }
                b'B' => {
                    let (portal, stmt) = messages::bind_names(body)
                        .map(|m| (m.portal, m.statement))
                        .unwrap_or((b"\0", b"\0"));
                    let p = match tracker.statement_guess(stmt) {
                        Lookup::Known(s) => Some(Portal {
                            stmt: s,
                            params: None,
                            bind: u64::MAX,
                            cleared: false,
                        }),
                        _ => None,
                    };
                    tracker.bind(portal, p, Answers::Client);
                }
                b'E' => tracker.execute(Vec::new(), Answers::Client, 0),
                b'D' => tracker.describe(Answers::Client),
                b'C' => {
                    let (t, n) = messages::target_msg(body, "Close").unwrap_or((Target::Statement, b"\0"));
                    tracker.close(t, n, Answers::Client);
                }
                b'S' => tracker.sync(Answers::Client),
                _ => {}
            }
            return Large::Stream;
        }
        let refuse = |out: &mut Vec<u8>, tracker: &mut super::statements::StatementTracker, why: String| {
            let sql = refusal_sql(&Refusal::Policy {
                code: SqlState::PROGRAM_LIMIT_EXCEEDED,
                message: why.clone(),
            });
            refuse_into(out, tag, &sql, tracker);
            tracing::info!(target: "gatehouse::policy", bytes = total_len, reason = %why, "message too large to check refused");
            Large::Discard
        };
        match tag {
            // COPY data and its end stream through: the COPY was decided.
            b'd' | b'c' | b'f' => Large::Stream,
            // Statement text too large for the buffer cannot be classified.
            b'Q' | b'P' | b'F' => refuse(
                out,
                &mut tracker,
                format!("a statement of {total_len} bytes is too large for the policy to check; send large data as parameters"),
            ),
            // A Bind with large parameters: its names lead the message and
            // must be whole in its first piece; the rest streams.
            b'B' => {
                let Ok(m) = messages::bind_names(body) else {
                    return refuse(
                        out,
                        &mut tracker,
                        format!("a Bind of {total_len} bytes whose names do not fit in gatehouse's buffer"),
                    );
                };
                if read_write::reserved(m.portal) || read_write::reserved(m.statement) {
                    return refuse(out, &mut tracker, "names starting with gatehouse: are kept for the gateway".into());
                }
                let stmt = match tracker.statement(m.statement) {
                    Lookup::Known(s) => Some(s),
                    Lookup::Doubtful | Lookup::Absent => None,
                    Lookup::Unsettled => {
                        self.waiting = Some(WaitFor::EarlierGroups);
                        return Large::Hold;
                    }
                };
                let at_start = tracker.at_group_start();
                let mut cleared = false;
                if let (Some(st), Some(enf)) = (&stmt, self.enforcer.as_mut()) {
                    if let Some(c) = &st.class {
                        let decided = enf.at_bind(
                            &Statement {
                                class: c,
                                sql: &st.sql,
                                params: None,
                                call: None,
                            },
                            m.portal,
                        );
                        match decided {
                            None => {}
                            Some(Step::Pass) => cleared = true,
                            Some(Step::Refuse(refusal)) => {
                                let sql = refusal_sql(&refusal);
                                refuse_into(out, tag, &sql, &mut tracker);
                                return Large::Discard;
                            }
                            Some(Step::Wait(w)) => {
                                self.waiting = Some(w);
                                return Large::Hold;
                            }
                            Some(Step::Hold { .. }) => {
                                // Nothing of its group is out when it starts
                                // one: a read-write context can open first.
                                // The rest of its group is not read yet: it
                                // cannot be known to be alone in it.
                                let _ = at_start;
                                enf.rw_eligible = false;
                                return Large::Hold;
                            }
                        }
                    }
                }
                if at_start {
                    drop(tracker);
                    self.before_group(out, &mut ctx.tracker.borrow_mut());
                    tracker = ctx.tracker.borrow_mut();
                }
                let p = stmt.map(|s| {
                    Portal {
                        stmt: s,
                        params: None,
                        bind: u64::MAX,
                        cleared,
                    }
                });
                tracker.bind(m.portal, p, Answers::Client);
                Large::Stream
            }
            // Nothing else is ever this large: a message the enforcer
            // cannot read whole ends the session.
            _ => Large::Reject(WireError::TooLarge {
                len: total_len as u64,
                max: head.len(),
            }),
        }
    }
}

/// Messages that make the server run something: while recordings cannot be
/// written (`recording.on_failure = "refuse"`) each is refused, whatever
/// its size.
fn runs_something(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'F')
}

/// The refusal while recordings cannot be written.
fn recording_refusal() -> Refusal {
    Refusal::Policy {
        code: SqlState::IO_ERROR,
        message: crate::record::link::REFUSED_MESSAGE.into(),
    }
}
