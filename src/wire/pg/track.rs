//! The server's prepared statements and portals, as the server confirms
//! them.
//!
//! A policy must decide on what the server will run, and what an Execute
//! runs is whatever the server's portal holds, which is whatever the
//! server's statement held when the portal was bound. The client's messages
//! say what it *asked* for; the server's answers say what happened. So this
//! tracker keeps two things:
//!
//! - the **confirmed** state: a statement or portal name maps to what it
//!   holds only once the server's ParseComplete or BindComplete says so
//!   (CloseComplete to forget it). Messages the server skips after an error
//!   change nothing; a failed message whose effect PostgreSQL leaves
//!   undetermined (a failed Parse of the unnamed statement, a failed Bind)
//!   leaves its name *doubtful*.
//! - the **pending** messages: sent upstream, not yet answered, in order,
//!   with what each will do if it runs.
//!
//! A message being sent now (a Bind, an Execute) is resolved against both.
//! Messages of the current group (since the last Sync) are certain *on the
//! condition that the message being resolved runs at all*: after an error
//! the server skips everything up to Sync, so if an Execute runs, every
//! extended-protocol message before it in its group succeeded. Messages of
//! earlier groups that are still unanswered may have failed or been skipped:
//! a name they touch is [`Lookup::Unsettled`] until their answers arrive,
//! and the caller waits for them ([`Tracker::earlier_groups_pending`]).
//!
//! Names are keyed the way PostgreSQL keys them: truncated to 63 bytes
//! (`NAMEDATALEN - 1`), so `"a"×63 + "X"` and `"a"×63 + "Y"` are one name.
//!
//! The tracker also matches every answer to the message it answers, so the
//! caller knows which answers belong to messages gatehouse sent itself
//! ([`Answers`]) and when the connection is idle. An answer that matches no
//! pending message means gatehouse no longer knows the server's state: the
//! tracker is then [`Tracker::lost`] and names nothing any more.

use super::messages::Target;
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;

/// Bytes of a statement or portal name the server compares
/// (`NAMEDATALEN - 1`).
pub const NAME_BYTES: usize = 63;

/// Unanswered messages at most; past it the sender waits
/// ([`Tracker::over_pending`]) until half of them are answered. The server
/// answers (and flushes) as it goes, so the queue drains while it waits.
pub const MAX_PENDING: usize = 8192;

/// Statements and portals the tracker keeps, each. A session that needs
/// more makes the tracker lose track (the caller refuses first under a
/// policy).
pub const MAX_NAMES: usize = 10_000;

/// A name as the server keys it.
#[inline]
pub fn name_key(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_BYTES)]
}

type Key = Box<[u8]>;

/// Statements or portals by name, the unnamed one (the empty name) in a
/// slot of its own. Drivers run nearly every extended-protocol statement
/// through the unnamed portal, so it is looked up several times a
/// statement. In a hash map an empty key is compared with `memcmp` on two
/// dangling pointers (an empty `Box<[u8]>` allocates nothing), and glibc's
/// AVX-512 `memcmp` reads short inputs with a masked load that, from an
/// unmapped address, takes a fault-suppression assist: about 130 ns a
/// comparison on the AMD EPYC hosts this is measured on, against about
/// 1 ns from a mapped one (a C loop over `memcmp(p, p, 0)`).
#[derive(Debug)]
struct Names<V> {
    unnamed: Option<V>,
    named: HashMap<Key, V>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names {
            unnamed: None,
            named: HashMap::default(),
        }
    }
}

impl<V> Names<V> {
    fn get(&self, name: &[u8]) -> Option<&V> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    fn insert(&mut self, name: Key, value: V) {
        if name.is_empty() {
            self.unnamed = Some(value);
        } else {
            self.named.insert(name, value);
        }
    }

    fn remove(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.named.remove(name);
        }
    }

    fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }

    fn len(&self) -> usize {
        self.named.len() + usize::from(self.unnamed.is_some())
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.unnamed.iter().chain(self.named.values())
    }
}

/// What a statement or portal name holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// What the server holds under the name (certain, or certain if the
    /// message being resolved runs at all).
    Known(T),
    /// Something gatehouse cannot name: created by SQL (`PREPARE`,
    /// `DECLARE`), or left undetermined by a failed message.
    Doubtful,
    /// Nothing.
    Absent,
    /// Depends on answers to earlier groups that have not arrived yet.
    Unsettled,
}

/// Who an operation's answers are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// The client: it sent the message.
    Client,
    /// Nobody: gatehouse sent the message for its own ends.
    Dropped,
    /// Nobody, but an ErrorResponse among them is passed to the client as a
    /// notice (a step gatehouse took for the client that did not work).
    ErrorAsNotice,
}

/// What to do with one server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Forward,
    Drop,
    /// An ErrorResponse to be passed on as a NoticeResponse.
    AsNotice,
}

/// A name that a statement run by SQL makes doubtful (`PREPARE name`,
/// `DECLARE name CURSOR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameEffect {
    Statement(Box<[u8]>),
    Portal(Box<[u8]>),
}

/// An operation that finished: its mark (given when it was pushed), whether
/// it failed, and for Sync/Query/FunctionCall the transaction status of the
/// ReadyForQuery that ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub mark: u8,
    pub failed: bool,
    pub status: Option<u8>,
}

/// How an answer ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub delivery: Delivery,
    /// An operation with a non-zero mark finished with this message.
    pub done: Option<Done>,
}

#[derive(Debug)]
enum Kind<S, P> {
    Parse { key: Key, stmt: S },
    Bind { key: Key, portal: Option<P> },
    Describe,
    Close { target: Target, key: Key },
    Execute { names: Vec<NameEffect> },
    Sync,
    Query { names: Vec<NameEffect> },
    Call,
}

impl<S, P> Kind<S, P> {
    /// A message of the extended protocol: after its error the server skips
    /// to Sync.
    fn extended(&self) -> bool {
        matches!(
            self,
            Kind::Parse { .. } | Kind::Bind { .. } | Kind::Describe | Kind::Close { .. } | Kind::Execute { .. }
        )
    }

    /// Ends with a ReadyForQuery.
    fn ends_group(&self) -> bool {
        matches!(self, Kind::Sync | Kind::Query { .. } | Kind::Call)
    }
}

#[derive(Debug)]
struct Op<S, P> {
    seq: u64,
    kind: Kind<S, P>,
    answers: Answers,
    mark: u8,
    /// An ErrorResponse came for this Sync/Query/FunctionCall.
    failed: bool,
}

/// Where a batch of pushes started, to take them back ([`Tracker::rollback`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pending: usize,
    next_seq: u64,
    group_start: u64,
    open_group: bool,
    server_skipping: bool,
}

/// The tracker. `S` is what a statement holds, `P` what a portal holds
/// (both cheap to clone: `Arc`s).
#[derive(Debug)]
pub struct Tracker<S, P> {
    statements: Names<Option<S>>,
    portals: Names<Option<P>>,
    pending: VecDeque<Op<S, P>>,
    /// Per name, the last pending message that changes it and what it
    /// changes it to (never `Unsettled`).
    spec_statements: Names<(u64, Lookup<S>)>,
    spec_portals: Names<(u64, Lookup<P>)>,
    next_seq: u64,
    /// The sequence number of the first message after the last Sync pushed.
    group_start: u64,
    /// Extended-protocol messages were pushed since the last Sync, Query or
    /// FunctionCall (an implicit transaction may be open).
    open_group: bool,
    /// The server reported an error in an extended-protocol message and
    /// skips everything up to the next Sync.
    server_skipping: bool,
    status: u8,
    lost: Option<&'static str>,
}

impl<S: Clone, P: Clone> Default for Tracker<S, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone, P: Clone> Tracker<S, P> {
    pub fn new() -> Self {
        Tracker {
            statements: Names::default(),
            portals: Names::default(),
            pending: VecDeque::new(),
            spec_statements: Names::default(),
            spec_portals: Names::default(),
            next_seq: 0,
            group_start: 0,
            open_group: false,
            server_skipping: false,
            status: b'I',
            lost: None,
        }
    }

    /// Why the tracker no longer knows the server's state, if it does not.
    pub fn lost(&self) -> Option<&'static str> {
        self.lost
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Nothing is pending, no group is open and no transaction either: the
    /// connection may be reset and kept.
    pub fn idle(&self) -> bool {
        self.lost.is_none() && self.pending.is_empty() && !self.open_group && self.status == b'I'
    }

    /// Messages sent and not answered.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Too many messages are unanswered: the sender should wait.
    pub fn over_pending(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// The sender may go on after waiting for [`Self::over_pending`].
    pub fn drained(&self) -> bool {
        self.pending.len() <= MAX_PENDING / 2
    }

    /// Messages of earlier groups (before the last Sync sent) are still
    /// unanswered.
    pub fn earlier_groups_pending(&self) -> bool {
        self.pending.front().is_some_and(|op| op.seq < self.group_start)
    }

    /// No extended-protocol message was sent since the last Sync, Query or
    /// FunctionCall: the next message starts a group (and a transaction,
    /// outside a transaction block).
    pub fn at_group_start(&self) -> bool {
        !self.open_group
    }

    /// What the statements held and pending take, by `size` (their text).
    pub fn statement_bytes(&self, size: impl Fn(&S) -> usize) -> usize {
        let held: usize = self.statements.values().flatten().map(&size).sum();
        let pending: usize = self
            .spec_statements
            .values()
            .map(|(_, l)| match l {
                Lookup::Known(s) => size(s),
                _ => 0,
            })
            .sum();
        held + pending
    }

    /// Statements and portals tracked, with pending creations.
    pub fn names(&self) -> usize {
        self.statements.len().max(self.spec_statements.len()) + self.portals.len().max(self.spec_portals.len())
    }

    /// What statement `name` will hold when a message sent now runs.
    pub fn statement(&self, name: &[u8]) -> Lookup<S> {
        if self.lost.is_some() {
            return Lookup::Doubtful;
        }
        let key = name_key(name);
        resolve(&self.statements, &self.spec_statements, key, self.group_start)
    }

    /// What statement `name` most likely holds when a message sent now
    /// runs, assuming every pending message succeeds: for records of a
    /// session without a policy, never for a decision.
    pub fn statement_guess(&self, name: &[u8]) -> Lookup<S> {
        match self.statement(name) {
            Lookup::Unsettled => match self.spec_statements.get(name_key(name)) {
                Some((_, pred)) => pred.clone(),
                None => Lookup::Doubtful,
            },
            other => other,
        }
    }

    /// What portal `name` most likely holds (see [`Self::statement_guess`]).
    pub fn portal_guess(&self, name: &[u8]) -> Lookup<P> {
        match self.portal(name) {
            Lookup::Unsettled => match self.spec_portals.get(name_key(name)) {
                Some((_, pred)) => pred.clone(),
                None => Lookup::Doubtful,
            },
            other => other,
        }
    }

    /// What portal `name` will hold when a message sent now runs.
    pub fn portal(&self, name: &[u8]) -> Lookup<P> {
        if self.lost.is_some() {
            return Lookup::Doubtful;
        }
        let key = name_key(name);
        resolve(&self.portals, &self.spec_portals, key, self.group_start)
    }

    fn push(&mut self, kind: Kind<S, P>, answers: Answers, mark: u8) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.predict(seq, &kind);
        match &kind {
            Kind::Sync => {
                self.group_start = seq + 1;
                self.open_group = false;
            }
            Kind::Query { .. } | Kind::Call => self.open_group = false,
            _ => self.open_group = true,
        }
        if self.names() > MAX_NAMES {
            self.lose("too many statements and portals to track");
        }
        self.pending.push_back(Op {
            seq,
            kind,
            answers,
            mark,
            failed: false,
        });
        seq
    }

    /// What a pending message will do to the names, if it runs.
    fn predict(&mut self, seq: u64, kind: &Kind<S, P>) {
        let doubt = |names: &[NameEffect], st: &mut Names<(u64, Lookup<S>)>, po: &mut Names<(u64, Lookup<P>)>| {
            for n in names {
                match n {
                    NameEffect::Statement(k) => {
                        st.insert(k.clone(), (seq, Lookup::Doubtful));
                    }
                    NameEffect::Portal(k) => {
                        po.insert(k.clone(), (seq, Lookup::Doubtful));
                    }
                }
            }
        };
        match kind {
            Kind::Parse { key, stmt } => {
                self.spec_statements
                    .insert(key.clone(), (seq, Lookup::Known(stmt.clone())));
            }
            Kind::Bind { key, portal } => {
                let p = match portal {
                    Some(p) => Lookup::Known(p.clone()),
                    None => Lookup::Doubtful,
                };
                self.spec_portals.insert(key.clone(), (seq, p));
            }
            Kind::Close { target, key } => match target {
                Target::Statement => {
                    self.spec_statements.insert(key.clone(), (seq, Lookup::Absent));
                }
                Target::Portal => {
                    self.spec_portals.insert(key.clone(), (seq, Lookup::Absent));
                }
            },
            Kind::Query { names } => {
                // A simple Query drops the unnamed statement first, and runs
                // each of its statements in the unnamed portal.
                self.spec_statements.insert(Box::default(), (seq, Lookup::Absent));
                self.spec_portals.insert(Box::default(), (seq, Lookup::Absent));
                doubt(names, &mut self.spec_statements, &mut self.spec_portals);
            }
            Kind::Execute { names } => doubt(names, &mut self.spec_statements, &mut self.spec_portals),
            Kind::Describe | Kind::Sync | Kind::Call => {}
        }
    }

    /// Parse of `name` holding `stmt`.
    pub fn parse(&mut self, name: &[u8], stmt: S, answers: Answers) {
        let key = name_key(name).into();
        self.push(Kind::Parse { key, stmt }, answers, 0);
    }

    /// Bind of portal `name`, holding `portal` (`None`: a statement that
    /// is doubtful or absent).
    pub fn bind(&mut self, name: &[u8], portal: Option<P>, answers: Answers) {
        let key = name_key(name).into();
        self.push(Kind::Bind { key, portal }, answers, 0);
    }

    pub fn describe(&mut self, answers: Answers) {
        self.push(Kind::Describe, answers, 0);
    }

    pub fn close(&mut self, target: Target, name: &[u8], answers: Answers) {
        let key = name_key(name).into();
        self.push(Kind::Close { target, key }, answers, 0);
    }

    /// Execute of a portal whose statement makes `names` doubtful.
    pub fn execute(&mut self, names: Vec<NameEffect>, answers: Answers, mark: u8) {
        self.push(Kind::Execute { names }, answers, mark);
    }

    pub fn sync(&mut self, answers: Answers) {
        self.push(Kind::Sync, answers, 0);
    }

    /// A simple Query whose statements make `names` doubtful.
    pub fn query(&mut self, names: Vec<NameEffect>, answers: Answers, mark: u8) {
        self.push(Kind::Query { names }, answers, mark);
    }

    pub fn function_call(&mut self, answers: Answers) {
        self.push(Kind::Call, answers, 0);
    }

    /// Where the pushes from now on start.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            pending: self.pending.len(),
            next_seq: self.next_seq,
            group_start: self.group_start,
            open_group: self.open_group,
            server_skipping: self.server_skipping,
        }
    }

    /// Takes back the pushes since `cp` (messages that were not sent after
    /// all). No answer may have been taken in between.
    pub fn rollback(&mut self, cp: Checkpoint) {
        self.pending.truncate(cp.pending);
        self.next_seq = cp.next_seq;
        self.group_start = cp.group_start;
        self.open_group = cp.open_group;
        self.server_skipping = cp.server_skipping;
        self.spec_statements.clear();
        self.spec_portals.clear();
        let ops = std::mem::take(&mut self.pending);
        for op in &ops {
            self.predict(op.seq, &op.kind);
        }
        self.pending = ops;
    }

    fn lose(&mut self, why: &'static str) {
        if self.lost.is_none() {
            self.lost = Some(why);
        }
        self.statements.clear();
        self.portals.clear();
        self.spec_statements.clear();
        self.spec_portals.clear();
    }

    /// Removes the front operation, forgetting its predictions (the
    /// confirmed state now says what happened).
    fn pop(&mut self) -> Option<Op<S, P>> {
        let op = self.pending.pop_front()?;
        let seq = op.seq;
        let mut forget_s = |k: &[u8]| {
            if self.spec_statements.get(k).is_some_and(|(s, _)| *s == seq) {
                self.spec_statements.remove(k);
            }
        };
        match &op.kind {
            Kind::Parse { key, .. } => forget_s(key),
            Kind::Close {
                target: Target::Statement,
                key,
            } => forget_s(key),
            Kind::Query { names } | Kind::Execute { names } => {
                forget_s(&[]);
                for n in names {
                    if let NameEffect::Statement(k) = n {
                        forget_s(k);
                    }
                }
            }
            _ => {}
        }
        let mut forget_p = |k: &[u8]| {
            if self.spec_portals.get(k).is_some_and(|(s, _)| *s == seq) {
                self.spec_portals.remove(k);
            }
        };
        match &op.kind {
            Kind::Bind { key, .. } => forget_p(key),
            Kind::Close {
                target: Target::Portal,
                key,
            } => forget_p(key),
            Kind::Query { names } | Kind::Execute { names } => {
                forget_p(&[]);
                for n in names {
                    if let NameEffect::Portal(k) = n {
                        forget_p(k);
                    }
                }
            }
            _ => {}
        }
        Some(op)
    }

    /// Names a statement run by SQL made doubtful.
    fn apply_names(&mut self, names: &[NameEffect]) {
        for n in names {
            match n {
                NameEffect::Statement(k) => {
                    self.statements.insert(k.clone(), None);
                }
                NameEffect::Portal(k) => {
                    self.portals.insert(k.clone(), None);
                }
            }
        }
    }

    /// The front operation succeeded (its completing answer arrived).
    fn succeed(&mut self) -> Option<Done> {
        let op = self.pop()?;
        match op.kind {
            Kind::Parse { key, stmt } => {
                self.statements.insert(key, Some(stmt));
            }
            Kind::Bind { key, portal } => {
                self.portals.insert(key, portal);
            }
            Kind::Close {
                target: Target::Statement,
                key,
            } => {
                self.statements.remove(&key);
            }
            Kind::Close {
                target: Target::Portal,
                key,
            } => {
                self.portals.remove(&key);
            }
            Kind::Execute { names } => self.apply_names(&names),
            _ => {}
        }
        (op.mark != 0).then_some(Done {
            mark: op.mark,
            failed: false,
            status: None,
        })
    }

    /// The front extended-protocol operation failed: what PostgreSQL leaves
    /// behind is applied, and everything up to the next Sync is skipped.
    fn fail_extended(&mut self) -> Option<Done> {
        let op = self.pop()?;
        match &op.kind {
            // The unnamed statement is dropped before the new one is
            // parsed, unless the message failed before that: doubtful.
            Kind::Parse { key, .. } if key.is_empty() => {
                self.statements.insert(key.clone(), None);
            }
            // A named Parse fails before touching its name (or on it:
            // 42P05, already exists): unchanged.
            Kind::Parse { .. } => {}
            // A failed Bind may have replaced the unnamed portal, or created
            // a named one the abort then drops: doubtful either way.
            Kind::Bind { key, .. } => {
                self.portals.insert(key.clone(), None);
            }
            Kind::Close { target, key } => match target {
                Target::Statement => {
                    self.statements.insert(key.clone(), None);
                }
                Target::Portal => {
                    self.portals.insert(key.clone(), None);
                }
            },
            // A statement run by SQL may have created its names before
            // failing.
            Kind::Execute { names } => {
                let names = names.clone();
                self.apply_names(&names);
            }
            _ => {}
        }
        self.skip_to_sync();
        (op.mark != 0).then_some(Done {
            mark: op.mark,
            failed: true,
            status: None,
        })
    }

    /// The server skips every message up to the next Sync: they change
    /// nothing and get no answer.
    fn skip_to_sync(&mut self) {
        self.server_skipping = true;
        while self.pending.front().is_some_and(|op| !matches!(op.kind, Kind::Sync)) {
            self.pop();
        }
    }

    /// One message from the server, in order. Says whether the client gets
    /// it and which marked operation (if any) it finished.
    pub fn on_server(&mut self, tag: u8, body: &[u8]) -> Answer {
        // Whose answer it is: the oldest unanswered message, except while
        // the server skips to a Sync. Then the ReadyForQuery is the Sync's
        // (messages sent after the error, still pending, get no answer),
        // and anything else is asynchronous or the server's FATAL.
        let owner = if self.server_skipping && self.lost.is_none() {
            match tag {
                b'Z' => self.pending.iter().find(|op| matches!(op.kind, Kind::Sync)),
                _ => None,
            }
        } else {
            self.pending.front()
        };
        let owner_answers = owner.map_or(Answers::Client, |op| op.answers);
        let delivery = match (owner_answers, tag) {
            // Notifications are other sessions' news: always the client's.
            (_, b'A') | (Answers::Client, _) => Delivery::Forward,
            (Answers::ErrorAsNotice, b'E') => Delivery::AsNotice,
            _ => Delivery::Drop,
        };
        let done = self.take(tag, body);
        Answer { delivery, done }
    }

    fn take(&mut self, tag: u8, body: &[u8]) -> Option<Done> {
        if self.lost.is_some() {
            return None;
        }
        if self.server_skipping {
            // Everything up to the Sync is skipped: only its ReadyForQuery
            // (or asynchronous messages, or a FATAL) can come now.
            return match tag {
                b'Z' => self.ready(body.first().copied().unwrap_or(0)),
                b'N' | b'S' | b'A' | b'E' => None,
                _ => {
                    self.lose("the server answered a message it should have skipped");
                    None
                }
            };
        }
        let Some(front) = self.pending.front_mut() else {
            return match tag {
                // Asynchronous, or the server's own FATAL before it closes.
                b'N' | b'S' | b'A' | b'E' => None,
                _ => {
                    self.lose("the server answered a message that was not sent");
                    None
                }
            };
        };
        match (tag, &front.kind) {
            (b'N' | b'S' | b'A', _) => None,
            (b'1', Kind::Parse { .. }) | (b'2', Kind::Bind { .. }) | (b'3', Kind::Close { .. }) => self.succeed(),
            (b't', Kind::Describe) => None,
            (b'T' | b'n', Kind::Describe) => self.succeed(),
            (b'C' | b'I' | b's', Kind::Execute { .. }) => self.succeed(),
            (b'T' | b'D' | b'C' | b'I' | b'G' | b'H' | b'W' | b'd' | b'c', Kind::Query { .. }) => None,
            (b'D' | b'G' | b'H' | b'W' | b'd' | b'c', Kind::Execute { .. }) => None,
            (b'V', Kind::Call) => None,
            (b'E', k) if k.extended() => self.fail_extended(),
            (b'E', _) => {
                // A Query, FunctionCall or Sync (its implicit COMMIT) failed;
                // it still ends with ReadyForQuery.
                front.failed = true;
                None
            }
            (b'Z', _) => self.ready(body.first().copied().unwrap_or(0)),
            _ => {
                self.lose("a server message did not match the messages sent");
                None
            }
        }
    }

    fn ready(&mut self, status: u8) -> Option<Done> {
        if self.server_skipping {
            // Skipped messages before the Sync get no answers.
            while self.pending.front().is_some_and(|op| !matches!(op.kind, Kind::Sync)) {
                self.pop();
            }
            self.server_skipping = false;
        }
        if !self.pending.front().is_some_and(|op| op.kind.ends_group()) {
            self.lose("a ReadyForQuery did not match the messages sent");
            return None;
        }
        let op = self.pop()?;
        if let Kind::Query { names } = &op.kind {
            self.statements.remove(&[]);
            self.portals.remove(&[]);
            let names = names.clone();
            self.apply_names(&names);
        }
        self.status = status;
        if status == b'I' {
            // Outside a transaction block no portal survives.
            self.portals.clear();
        }
        (op.mark != 0).then_some(Done {
            mark: op.mark,
            failed: op.failed,
            status: Some(status),
        })
    }
}

fn resolve<T: Clone>(
    confirmed: &Names<Option<T>>,
    spec: &Names<(u64, Lookup<T>)>,
    key: &[u8],
    group_start: u64,
) -> Lookup<T> {
    if let Some((seq, pred)) = spec.get(key) {
        return if *seq >= group_start {
            pred.clone()
        } else {
            Lookup::Unsettled
        };
    }
    match confirmed.get(key) {
        Some(Some(t)) => Lookup::Known(t.clone()),
        Some(None) => Lookup::Doubtful,
        None => Lookup::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type T = Tracker<&'static str, &'static str>;
    const C: Answers = Answers::Client;

    fn answer(t: &mut T, tags: &[u8]) {
        for &tag in tags {
            let body: &[u8] = if tag == b'Z' { b"I" } else { b"" };
            t.on_server(tag, body);
        }
    }

    #[test]
    fn a_rejected_parse_does_not_redefine_a_statement() {
        let mut t = T::new();
        t.parse(b"s", "DELETE", C);
        t.sync(C);
        answer(&mut t, b"1Z");
        t.parse(b"s", "SELECT", C);
        t.sync(C);
        // Pipelined: what `s` holds depends on the answer still to come.
        assert_eq!(t.statement(b"s"), Lookup::Unsettled);
        assert!(t.earlier_groups_pending());
        answer(&mut t, b"EZ"); // 42P05
        assert_eq!(t.statement(b"s"), Lookup::Known("DELETE"));
        assert!(!t.earlier_groups_pending());
    }

    #[test]
    fn a_skipped_parse_keeps_the_unnamed_statement() {
        let mut t = T::new();
        t.parse(b"", "DELETE", C);
        t.sync(C);
        answer(&mut t, b"1Z");
        // An error, then a Parse the server skips, then a later group.
        t.bind(b"", None, C);
        t.parse(b"", "SELECT", C);
        t.sync(C);
        assert_eq!(t.statement(b""), Lookup::Unsettled);
        answer(&mut t, b"EZ");
        assert_eq!(t.statement(b""), Lookup::Known("DELETE"));
        // In the same group the Parse is certain: if a later message runs,
        // the Parse ran.
        t.parse(b"", "SELECT", C);
        assert_eq!(t.statement(b""), Lookup::Known("SELECT"));
    }

    #[test]
    fn names_are_truncated_like_the_server_does() {
        let mut t = T::new();
        let a = [b"a".repeat(63), b"X".to_vec()].concat();
        let b = [b"a".repeat(63), b"Y".to_vec()].concat();
        t.parse(&a, "DELETE", C);
        t.sync(C);
        answer(&mut t, b"1Z");
        assert_eq!(t.statement(&b), Lookup::Known("DELETE"));
    }

    #[test]
    fn failed_messages_leave_doubt_where_postgres_does() {
        let mut t = T::new();
        t.parse(b"", "SELECT 1", C);
        t.sync(C);
        answer(&mut t, b"1Z");
        t.parse(b"", "selec t", C);
        t.sync(C);
        answer(&mut t, b"EZ");
        assert_eq!(t.statement(b""), Lookup::Doubtful);
        t.bind(b"p", Some("x"), C);
        t.sync(C);
        answer(&mut t, b"EZ");
        assert_eq!(t.portal(b"p"), Lookup::Absent, "portals end with the transaction");
    }

    #[test]
    fn a_query_drops_the_unnamed_statement_and_sql_names_are_doubtful() {
        let mut t = T::new();
        t.parse(b"", "SELECT 1", C);
        t.sync(C);
        answer(&mut t, b"1Z");
        t.query(vec![NameEffect::Statement(b"p1".to_vec().into())], C, 0);
        assert_eq!(t.statement(b""), Lookup::Absent);
        assert_eq!(t.statement(b"p1"), Lookup::Doubtful);
        answer(&mut t, b"CZ");
        assert_eq!(t.statement(b""), Lookup::Absent);
        assert_eq!(t.statement(b"p1"), Lookup::Doubtful);
    }

    proptest::proptest! {
        /// The unnamed slot and the named map answer as one map would.
        #[test]
        fn names_are_one_map_with_the_unnamed_apart(
            ops in proptest::collection::vec((0u8..4, proptest::sample::select(vec!["", "a", "b", "P0_1"]), 0u32..100), 0..40)
        ) {
            let mut names: Names<u32> = Names::default();
            let mut model: std::collections::HashMap<Vec<u8>, u32> = Default::default();
            for (op, name, value) in ops {
                let key = name.as_bytes();
                match op {
                    0 | 1 => {
                        names.insert(key.into(), value);
                        model.insert(key.to_vec(), value);
                    }
                    2 => {
                        names.remove(key);
                        model.remove(key);
                    }
                    _ => {
                        names.clear();
                        model.clear();
                    }
                }
                for probe in ["", "a", "b", "P0_1"] {
                    proptest::prop_assert_eq!(names.get(probe.as_bytes()), model.get(probe.as_bytes()));
                }
                proptest::prop_assert_eq!(names.len(), model.len());
                let mut held: Vec<u32> = names.values().copied().collect();
                let mut want: Vec<u32> = model.values().copied().collect();
                held.sort_unstable();
                want.sort_unstable();
                proptest::prop_assert_eq!(held, want);
            }
            proptest::prop_assert!(names.named.keys().all(|k| !k.is_empty()), "the empty name is never in the map");
        }
    }

    #[test]
    fn skipped_queries_get_no_answer() {
        let mut t = T::new();
        t.bind(b"", None, C);
        t.query(vec![], C, 7);
        t.sync(C);
        // Bind fails, the Query is skipped, one ReadyForQuery for the Sync.
        answer(&mut t, b"EZ");
        assert_eq!(t.pending_len(), 0);
        assert!(t.lost().is_none());
        assert!(t.idle());
    }

    #[test]
    fn portals_survive_in_a_transaction_block_only() {
        let mut t = T::new();
        t.bind(b"p", Some("x"), C);
        t.sync(C);
        t.on_server(b'2', b"");
        t.on_server(b'Z', b"T");
        assert_eq!(t.portal(b"p"), Lookup::Known("x"));
        t.sync(C);
        t.on_server(b'Z', b"I");
        assert_eq!(t.portal(b"p"), Lookup::Absent);
    }

    #[test]
    fn answers_of_gatehouse_messages_are_dropped_and_marks_reported() {
        let mut t = T::new();
        t.query(vec![], Answers::Dropped, 3);
        t.query(vec![], C, 0);
        assert_eq!(t.on_server(b'C', b"").delivery, Delivery::Drop);
        assert_eq!(t.on_server(b'N', b"").delivery, Delivery::Drop);
        assert_eq!(t.on_server(b'A', b"").delivery, Delivery::Forward);
        let a = t.on_server(b'Z', b"I");
        assert_eq!(a.delivery, Delivery::Drop);
        assert_eq!(
            a.done,
            Some(Done {
                mark: 3,
                failed: false,
                status: Some(b'I')
            })
        );
        assert_eq!(t.on_server(b'C', b"").delivery, Delivery::Forward);
        t.query(vec![], Answers::ErrorAsNotice, 0);
        t.on_server(b'Z', b"I");
        assert_eq!(t.on_server(b'E', b"").delivery, Delivery::AsNotice);
    }

    #[test]
    fn after_an_error_the_ready_for_query_is_the_syncs() {
        // gatehouse's messages (answers dropped) fail before the client's
        // next messages are even sent; those are skipped, and the
        // ReadyForQuery belongs to the client's Sync, not to the gatehouse
        // message that happens to be the oldest one pending.
        let mut t = T::new();
        t.parse(b"", "refusal", Answers::Dropped);
        t.bind(b"", None, Answers::Dropped);
        t.execute(vec![], C, 0);
        assert_eq!(t.on_server(b'1', b"").delivery, Delivery::Drop);
        assert_eq!(t.on_server(b'2', b"").delivery, Delivery::Drop);
        assert_eq!(t.on_server(b'E', b"").delivery, Delivery::Forward);
        t.parse(b"", "another refusal", Answers::Dropped);
        t.bind(b"", None, Answers::Dropped);
        t.execute(vec![], Answers::Dropped, 0);
        t.sync(C);
        assert_eq!(t.on_server(b'N', b"").delivery, Delivery::Forward);
        assert_eq!(t.on_server(b'Z', b"I").delivery, Delivery::Forward);
        assert!(t.lost().is_none());
        assert_eq!(t.pending_len(), 0);
        // And a Sync of gatehouse's own keeps its ReadyForQuery.
        t.execute(vec![], C, 0);
        t.on_server(b'E', b"");
        t.execute(vec![], C, 0);
        t.sync(Answers::Dropped);
        assert_eq!(t.on_server(b'Z', b"I").delivery, Delivery::Drop);
        assert!(t.lost().is_none());
    }

    #[test]
    fn an_answer_for_nothing_loses_track() {
        let mut t = T::new();
        t.parse(b"s", "x", C);
        t.on_server(b'2', b"");
        assert!(t.lost().is_some());
        assert_eq!(t.statement(b"s"), Lookup::Doubtful);
        assert!(!t.idle());
    }

    #[test]
    fn rollback_takes_pushes_back() {
        let mut t = T::new();
        t.parse(b"s", "one", C);
        let cp = t.checkpoint();
        t.parse(b"s", "two", C);
        t.bind(b"p", Some("two"), C);
        t.sync(C);
        t.rollback(cp);
        assert_eq!(t.statement(b"s"), Lookup::Known("one"));
        assert_eq!(t.portal(b"p"), Lookup::Absent);
        assert_eq!(t.pending_len(), 1);
        assert!(!t.at_group_start());
    }
}

/// The tracker against a model of PostgreSQL's statement and portal
/// semantics: whatever the pipeline, the failures and the timing of the
/// answers, an Execute the tracker resolves to `Known(v)` runs `v` on the
/// model server (or does not run at all).
#[cfg(test)]
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap as Map;

    /// Statement contents are numbers; the model server hands out new ones
    /// for statements made by SQL.
    type T = Tracker<u32, u32>;

    #[derive(Debug, Clone)]
    enum Sql {
        Select,
        Begin,
        Commit,
        Prepare(usize),
        Declare(usize),
        Fails,
    }

    #[derive(Debug, Clone)]
    enum Msg {
        Parse {
            name: usize,
            fails: bool,
        },
        Bind {
            portal: usize,
            stmt: usize,
            fails: bool,
        },
        Execute {
            portal: usize,
            fails: bool,
        },
        Describe,
        Close {
            portal: bool,
            name: usize,
        },
        Sync,
        Query(Sql),
        /// Let the server answer this many messages before the next send.
        Deliver(usize),
    }

    /// Names: the unnamed one, short ones, and two that differ only after
    /// 63 bytes.
    fn name(i: usize) -> Vec<u8> {
        match i {
            0 => Vec::new(),
            1 => b"s1".to_vec(),
            2 => b"s2".to_vec(),
            3 => [b"n".repeat(63), b"A".to_vec()].concat(),
            _ => [b"n".repeat(63), b"B".to_vec()].concat(),
        }
    }

    fn msg() -> impl Strategy<Value = Msg> {
        let n = 0usize..5;
        let sql = prop_oneof![
            3 => Just(Sql::Select),
            1 => Just(Sql::Begin),
            1 => Just(Sql::Commit),
            1 => (0usize..5).prop_map(Sql::Prepare),
            1 => (0usize..5).prop_map(Sql::Declare),
            1 => Just(Sql::Fails),
        ];
        prop_oneof![
            4 => (n.clone(), prop::bool::weighted(0.15)).prop_map(|(name, fails)| Msg::Parse { name, fails }),
            4 => (n.clone(), n.clone(), prop::bool::weighted(0.15))
                .prop_map(|(portal, stmt, fails)| Msg::Bind { portal, stmt, fails }),
            4 => (n.clone(), prop::bool::weighted(0.1)).prop_map(|(portal, fails)| Msg::Execute { portal, fails }),
            1 => Just(Msg::Describe),
            1 => (any::<bool>(), n).prop_map(|(portal, name)| Msg::Close { portal, name }),
            3 => Just(Msg::Sync),
            2 => sql.prop_map(Msg::Query),
            3 => (0usize..6).prop_map(Msg::Deliver),
        ]
    }

    /// A message on its way to the model server, with what the tracker
    /// said an Execute would run.
    struct Sent {
        msg: Msg,
        /// For Parse: the content; for Execute: the tracker's resolution.
        content: u32,
        expect: Option<Lookup<u32>>,
        /// Who gets its answers.
        answers: Answers,
    }

    #[derive(Default)]
    struct Server {
        stmts: Map<Vec<u8>, u32>,
        portals: Map<Vec<u8>, u32>,
        ignoring: bool,
        in_block: bool,
        next_sql_id: u32,
        /// Answers not yet read by the tracker: (tag, body).
        out: VecDeque<(u8, Vec<u8>)>,
    }

    fn key(i: usize) -> Vec<u8> {
        name_key(&name(i)).to_vec()
    }

    impl Server {
        fn err(&mut self) {
            self.out.push_back((b'E', Vec::new()));
        }

        fn end_of_statement(&mut self) {
            if !self.in_block {
                self.portals.clear();
            }
        }

        fn ready(&mut self) {
            let status = if self.in_block { b'T' } else { b'I' };
            self.out.push_back((b'Z', vec![status]));
        }

        /// Runs one message the way PostgreSQL does.
        fn run(&mut self, s: &Sent) {
            let extended = !matches!(s.msg, Msg::Sync | Msg::Query(_));
            if self.ignoring && !matches!(s.msg, Msg::Sync) {
                return;
            }
            let fail = |srv: &mut Server| {
                srv.err();
                if extended {
                    srv.ignoring = true;
                }
            };
            match &s.msg {
                Msg::Parse { name: n, fails } => {
                    let k = key(*n);
                    if k.is_empty() {
                        self.stmts.remove(&k);
                    }
                    if *fails || (!k.is_empty() && self.stmts.contains_key(&k)) {
                        return fail(self);
                    }
                    self.stmts.insert(k, s.content);
                    self.out.push_back((b'1', Vec::new()));
                }
                Msg::Bind { portal, stmt, fails } => {
                    let (pk, sk) = (key(*portal), key(*stmt));
                    let Some(&content) = self.stmts.get(&sk) else {
                        return fail(self);
                    };
                    if !pk.is_empty() && self.portals.contains_key(&pk) {
                        return fail(self);
                    }
                    if pk.is_empty() {
                        self.portals.remove(&pk);
                    }
                    if *fails {
                        return fail(self);
                    }
                    self.portals.insert(pk, content);
                    self.out.push_back((b'2', Vec::new()));
                }
                Msg::Execute { portal, fails } => {
                    let Some(&ran) = self.portals.get(&key(*portal)) else {
                        return fail(self);
                    };
                    // The check: what the tracker named is what runs.
                    if let Some(Lookup::Known(v)) = &s.expect {
                        assert_eq!(*v, ran, "the tracker named {v}, the server ran {ran}");
                    }
                    if *fails {
                        return fail(self);
                    }
                    self.out.push_back((b'C', Vec::new()));
                }
                Msg::Describe => self.out.push_back((b'n', Vec::new())),
                Msg::Close { portal, name: n } => {
                    let k = key(*n);
                    if *portal {
                        self.portals.remove(&k);
                    } else {
                        self.stmts.remove(&k);
                    }
                    self.out.push_back((b'3', Vec::new()));
                }
                Msg::Sync => {
                    self.ignoring = false;
                    self.end_of_statement();
                    self.ready();
                }
                Msg::Query(sql) => {
                    self.stmts.remove(&Vec::new());
                    self.portals.remove(&Vec::new());
                    match sql {
                        Sql::Select => self.out.push_back((b'C', Vec::new())),
                        Sql::Begin => {
                            self.in_block = true;
                            self.out.push_back((b'C', Vec::new()));
                        }
                        Sql::Commit => {
                            self.in_block = false;
                            self.out.push_back((b'C', Vec::new()));
                        }
                        Sql::Prepare(n) => {
                            let k = key(*n);
                            if k.is_empty() || self.stmts.contains_key(&k) {
                                self.err();
                            } else {
                                self.next_sql_id += 1;
                                self.stmts.insert(k, 1_000_000 + self.next_sql_id);
                                self.out.push_back((b'C', Vec::new()));
                            }
                        }
                        Sql::Declare(n) => {
                            let k = key(*n);
                            if !self.in_block || k.is_empty() || self.portals.contains_key(&k) {
                                self.err();
                            } else {
                                self.next_sql_id += 1;
                                self.portals.insert(k, 1_000_000 + self.next_sql_id);
                                self.out.push_back((b'C', Vec::new()));
                            }
                        }
                        Sql::Fails => self.err(),
                    }
                    self.end_of_statement();
                    self.ready();
                }
                Msg::Deliver(_) => {}
            }
        }
    }

    struct World {
        t: T,
        srv: Server,
        /// Sent to the server, not yet run by it.
        wire: VecDeque<Sent>,
    }

    impl World {
        /// The server runs one message; the tracker reads what it answered.
        fn step_server(&mut self) -> bool {
            let Some(s) = self.wire.pop_front() else { return false };
            self.srv.run(&s);
            // Everything the server said now answers `s`: the client gets
            // it exactly when `s` was the client's.
            while let Some((tag, body)) = self.srv.out.pop_front() {
                let a = self.t.on_server(tag, &body);
                let want = match s.answers {
                    Answers::Dropped => Delivery::Drop,
                    _ => Delivery::Forward,
                };
                assert_eq!(a.delivery, want, "{} answering {:?}", tag as char, s.msg);
            }
            true
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn an_execute_runs_what_the_tracker_named(
            msgs in prop::collection::vec((msg(), prop::bool::weighted(0.2)), 1..60),
        ) {
            let mut w = World { t: T::new(), srv: Server::default(), wire: VecDeque::new() };
            let mut next_content = 1u32;
            for (m, ours) in msgs {
                // Some messages are gatehouse's own: their answers are dropped.
                let answers = if ours { Answers::Dropped } else { Answers::Client };
                if let Msg::Deliver(n) = m {
                    for _ in 0..n {
                        w.step_server();
                    }
                    continue;
                }
                // A Bind or Execute that depends on earlier groups waits
                // for their answers, as the enforcer does.
                let unsettled = |w: &World| match &m {
                    Msg::Bind { stmt, .. } => w.t.statement(&name(*stmt)) == Lookup::Unsettled,
                    Msg::Execute { portal, .. } => w.t.portal(&name(*portal)) == Lookup::Unsettled,
                    _ => false,
                };
                while unsettled(&w) {
                    prop_assert!(w.t.earlier_groups_pending());
                    prop_assert!(w.step_server(), "waiting on nothing");
                }
                let mut sent = Sent { msg: m.clone(), content: 0, expect: None, answers };
                match &m {
                    Msg::Parse { name: n, .. } => {
                        sent.content = next_content;
                        w.t.parse(&name(*n), next_content, answers);
                        next_content += 1;
                    }
                    Msg::Bind { portal, stmt, .. } => {
                        let p = match w.t.statement(&name(*stmt)) {
                            Lookup::Known(v) => Some(v),
                            _ => None,
                        };
                        w.t.bind(&name(*portal), p, answers);
                    }
                    Msg::Execute { portal, .. } => {
                        sent.expect = Some(w.t.portal(&name(*portal)));
                        w.t.execute(Vec::new(), answers, 0);
                    }
                    Msg::Describe => w.t.describe(answers),
                    Msg::Close { portal, name: n } => {
                        let target = if *portal { Target::Portal } else { Target::Statement };
                        w.t.close(target, &name(*n), answers);
                    }
                    Msg::Sync => w.t.sync(answers),
                    Msg::Query(sql) => {
                        let names = match sql {
                            Sql::Prepare(n) => vec![NameEffect::Statement(key(*n).into())],
                            Sql::Declare(n) => vec![NameEffect::Portal(key(*n).into())],
                            _ => Vec::new(),
                        };
                        w.t.query(names, answers, 0);
                    }
                    Msg::Deliver(_) => {}
                }
                w.wire.push_back(sent);
            }
            w.wire.push_back(Sent { msg: Msg::Sync, content: 0, expect: None, answers: Answers::Client });
            w.t.sync(Answers::Client);
            while w.step_server() {}
            prop_assert!(w.t.lost().is_none(), "lost track: {:?}", w.t.lost());
            prop_assert_eq!(w.t.pending_len(), 0);
        }
    }
}
