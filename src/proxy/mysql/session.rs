//! A MySQL client connection from accept to close.

use super::capture::Capture;
use super::client_login::{self, LoggedIn};
use super::conn::{MyConn, ReadError};
use super::errors::{code, err, err_state, Fatal};
use super::kill;
use super::pool;
use super::prescan::RowPrescan;
use super::results::{mask_value, Act, CursorColumns, Event, ReadFailure, Reader41, Scratch, Shape, Value};
use super::upstream::{self, Upstream};
use crate::core::end::EndReason;
use crate::core::enforce::{BudgetGuard, Enforcer, HoldIo, Refusal, Statement, Step, TxStatus, WaitFor, Who};
use crate::core::registry::{Registered, SessionHandle, SessionInfo};
use crate::core::sqlstate::SqlState;
use crate::core::state::{AccountRt, Shared, State, TargetRt};
use crate::core::summary::Summary;
use crate::identity::Identity;
use crate::proxy::stream::{peek, Peeked, Stream};
use crate::record::events::{Ev, OpenInfo};
use crate::record::link::SessionRec;
use crate::record::StatementRef;
use crate::sql::Classification;
use crate::wire::mysql::packet::write_message;
use crate::wire::mysql::response::OkPacket;
use crate::wire::mysql::rows::{bind_types, execute_params, Param};
use crate::wire::mysql::{status, Command, MyWireError};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a statement that is taking a while looks at its client and
/// its cancel flag.
const WATCH: Duration = Duration::from_millis(50);

/// Prepared statements a session may keep (the server's own default
/// `max_prepared_stmt_count` is per server; this bounds one client).
const MAX_PREPARED: usize = 10_000;

/// Flush what is gathered for the client beyond this many bytes.
const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    /// This worker's MySQL classifier, for the policy it was built for.
    static CLASSIFIER: RefCell<Option<(usize, crate::sql::mysql::MysqlClassifier)>> = const { RefCell::new(None) };
}

fn classify(policy: &Arc<crate::policy::Policy>, sql: &str) -> Arc<Classification> {
    let key = Arc::as_ptr(policy) as usize;
    CLASSIFIER.with(|c| {
        let mut c = c.borrow_mut();
        if !matches!(&*c, Some((k, _)) if *k == key) {
            *c = Some((
                key,
                crate::sql::mysql::MysqlClassifier::new(&policy.side_effect_functions),
            ));
        }
        match &*c {
            Some((_, cl)) => cl.classify(sql),
            None => crate::core::enforce::unknown(),
        }
    })
}

async fn refuse(shared: &Shared, worker: usize, client: &mut MyConn, peer: SocketAddr, f: Fatal, seq: u8) {
    if !f.end.client_gone() {
        let _ = monoio::time::timeout(Duration::from_secs(1), client.write_all(f.packet(seq))).await;
    }
    crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_refused, 1);
    tracing::info!(target: "gatehouse::session", protocol = "mysql", client = %peer, worker, end = f.end.as_str(), reason = %f.message.replace(['\r', '\n'], " "), "session refused");
}

/// Serves one accepted MySQL client connection to its end.
pub async fn handle_connection(shared: Arc<Shared>, worker: usize, tcp: TcpStream, peer: SocketAddr) {
    // No-delay and keepalive come from the listener (`runtime`).
    let client_fd = tcp.as_raw_fd();
    let started = Instant::now();
    let state = shared.state.load_full();
    let (_, _active) = shared.enter();
    let (handshakes, in_handshake) = shared.enter_handshake();
    let over_limit = handshakes > state.config.server.max_handshakes;
    let mut client = MyConn::new(Stream::Plain(tcp));
    // The greeting carries the id `KILL` names.
    let pid = shared.registry.unused_id();
    let hs_timeout = Duration::from_secs(state.config.server.handshake_timeout_secs);
    let login = monoio::time::timeout(
        hs_timeout,
        client_login::accept(&shared, &state, &mut client, peer, pid, over_limit),
    )
    .await;
    drop(in_handshake);
    let login = match login {
        Ok(Ok(l)) => l,
        Ok(Err((f, seq))) => return refuse(&shared, worker, &mut client, peer, f, seq).await,
        Err(_) => {
            let f = Fatal::new(
                SqlState::PROTOCOL_VIOLATION,
                format!("login did not complete within {}s", hs_timeout.as_secs()),
                EndReason::HandshakeTimeout,
            );
            return refuse(&shared, worker, &mut client, peer, f, 0).await;
        }
    };
    let LoggedIn {
        admitted,
        seat: _seat,
        caps,
        collation,
        tls,
        seq,
    } = login;
    let (identity, target, account) = (admitted.identity, admitted.target, admitted.account);
    let read_only = state.policy.as_ref().is_some_and(|p| p.read_only(&identity.roles));
    let local_files = state.policy.is_none();
    let pool_key = (target.cfg.pool_size > 0).then(|| pool::PoolKey {
        generation: state.generation,
        target: target.cfg.name.clone(),
        account: account.name.to_string(),
        capabilities: upstream::passed_capabilities(caps, local_files),
        collation: upstream::login_collation(collation),
    });
    // A kept connection first; one that fails its first statement (it died
    // idle) is dropped for a new login.
    let mut kept = pool_key.as_ref().and_then(pool::take);
    let up = loop {
        let fresh = kept.is_none();
        let mut up = match kept.take() {
            Some(up) => up,
            None => match upstream::connect(target, account, caps, collation, local_files).await {
                Ok(up) => up,
                Err(f) => return refuse(&shared, worker, &mut client, peer, f, seq).await,
            },
        };
        if read_only {
            // A second net under the policy: the server itself refuses writes
            // of a read-only role's session; an approved write runs in a
            // read-write transaction of its own.
            if let Err(f) = simple_statement(&mut up, "SET SESSION TRANSACTION READ ONLY", &target.cfg.name).await {
                if fresh {
                    return refuse(&shared, worker, &mut client, peer, f, seq).await;
                }
                continue;
            }
        }
        break up;
    };
    let handle = SessionHandle::new(client_fd, shared.now());
    handle.set_upstream_fd(up.conn.stream.raw_fd());
    let info = SessionInfo::new(&identity, &target.name, peer, worker, tls);
    if shared.registry.register_as(pid, handle.clone(), info, None).is_none() {
        let f = Fatal::new(
            SqlState::CANNOT_CONNECT_NOW,
            "session id taken; connect again",
            EndReason::Refused,
        );
        return refuse(&shared, worker, &mut client, peer, f, seq).await;
    }
    let registered = Registered(&shared.registry, pid);
    let mut ok = Vec::with_capacity(16);
    OkPacket {
        affected_rows: 0,
        last_insert_id: 0,
        status: up.established.status & (status::AUTOCOMMIT | status::IN_TRANS),
        warnings: 0,
        info: b"",
    }
    .write(&mut ok, caps, false);
    let mut out = Vec::with_capacity(ok.len() + 4);
    write_message(&mut out, seq, &ok);
    if client.write_all(out).await.is_err() {
        return;
    }
    crate::core::counters::WorkerCounters::add(&shared.counters.worker(worker).sessions_opened, 1);
    tracing::info!(
        target: "gatehouse::session",
        protocol = "mysql",
        session = pid,
        identity = %identity.name,
        roles = %identity.roles.join(","),
        target = %target.cfg.name,
        account = %account.name,
        client = %peer,
        worker,
        client_tls = tls,
        upstream_connection = up.established.connection_id,
        "session open"
    );
    let rec = open_recording(
        &shared, &state, &identity, pid, target, account, peer, worker, tls, up.tls,
    );
    let who = Who {
        identity: identity.name.clone(),
        roles: identity.roles.clone(),
        target: target.cfg.name.clone(),
        session: pid,
    };
    let engine = state.scan.clone();
    let enforcer = state.policy.clone().map(|p| {
        let mask_engine = engine.clone();
        let mask = Box::new(move |sql: &str| match &mask_engine {
            Some(e) => e.mask_text(sql),
            None => sql.to_string(),
        });
        let mut e = Enforcer::new(p, &who, &shared.reviews, mask, None);
        e.fingerprint = crate::sql::mysql::fingerprint;
        let scheme = if state.config.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        e.admin_url = state
            .config
            .notify
            .admin_url
            .clone()
            .or_else(|| state.config.admin.listen.as_ref().map(|a| format!("{scheme}://{a}")));
        let budget = e.policy.budget(&identity.roles);
        if let Some(limits) = budget {
            e.budget = Some(BudgetGuard {
                limits,
                meter: shared.budgets.meter(&identity.name),
                clock: &shared.unix_now,
            });
        }
        e
    });
    let mut s = Session {
        shared: &shared,
        state: &state,
        client,
        client_fd,
        up,
        caps,
        identity: &identity,
        target,
        account,
        handle: handle.clone(),
        engine: state.scan.as_deref(),
        applies: state.masking_for(&identity.roles),
        max_rows: state.policy.as_ref().and_then(|p| p.max_rows(&identity.roles)),
        max_msg: state.config.server.max_message_bytes,
        enforcer,
        rec: rec.as_ref(),
        prepared: HashMap::new(),
        prepared_bytes: 0,
        scratch: Scratch::default(),
        prescan: RowPrescan::default(),
        tx: Cell::new(TxStatus::Idle),
        out: Vec::with_capacity(FLUSH_AT),
        stats: Stats::default(),
        masked_by_rule: Vec::new(),
        stopping: false,
        rows_before: 0,
        poolable: pool_key.is_some(),
    };
    let (end, reason) = match s.run().await {
        Ok(()) => (EndReason::ClientTerminate, None),
        Err(f) => (f.end, Some(f.message)),
    };
    // Only a session that said goodbye between commands leaves a
    // connection worth keeping: anything else may have left an answer
    // half read or a statement being stopped.
    let reusable = end == EndReason::ClientTerminate && !s.stopping && handle.killed().is_none();
    let end = handle.killed().map(|k| k.end()).unwrap_or(end);
    let masked_rules = s
        .masked_by_rule
        .iter()
        .map(|(r, n)| {
            let id = s.engine.map(|e| e.rule_id(*r).to_string()).unwrap_or_default();
            format!("{id}={n}")
        })
        .collect::<Vec<_>>()
        .join(",");
    let stats = std::mem::take(&mut s.stats);
    let Session { up, poolable, .. } = s;
    // Out of the registry first: a kill of this session must not reach the
    // upstream socket once another session may hold it.
    handle.set_upstream_fd(-1);
    drop(registered);
    let reusable = reusable && poolable;
    leave_upstream(up, reusable.then_some(pool_key).flatten(), target).await;
    Summary {
        session: pid,
        identity: &identity.name,
        target: &target.cfg.name,
        client: peer,
        worker,
        client_tls: tls,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        statements: stats.statements,
        rows: stats.rows,
        masked: stats.masked,
        masked_rules,
        client_secrets: stats.client_secrets,
        started,
        end,
        reason: reason.as_deref(),
    }
    .close(&shared, rec.as_ref())
    .await;
}

/// A COM_STMT_EXECUTE's parameters as a reviewer reads them (masked by
/// the enforcer before anyone sees them).
fn shown_params(payload: &[u8], count: usize, bound: &[(u8, bool)], long_data: &[u16]) -> Vec<String> {
    let mut bound = bound.to_vec();
    match execute_params(payload, count, &mut bound, long_data) {
        Ok(params) => params
            .into_iter()
            .map(|p| match p {
                Param::Null => "NULL".to_string(),
                Param::LongData => "(sent with COM_STMT_SEND_LONG_DATA)".to_string(),
                Param::Value(v) => String::from_utf8_lossy(&v).into_owned(),
            })
            .collect(),
        Err(e) => vec![format!("(parameters unreadable: {e})")],
    }
}

/// A result's columns into its recording, names masked: a column named by
/// its expression can carry a value.
fn record_columns(c: &mut Capture<'_>, engine: Option<&crate::scan::Engine>, names: &[Vec<u8>]) {
    match engine {
        Some(e) => {
            let names: Vec<Vec<u8>> = names
                .iter()
                .map(|n| e.mask_text(&String::from_utf8_lossy(n)).into_bytes())
                .collect();
            c.columns(&names)
        }
        None => c.columns(names),
    }
}

/// Adds one to `rule`'s count.
fn count_rule(counts: &mut Vec<(u32, u64)>, rule: u32) {
    match counts.iter_mut().find(|(r, _)| *r == rule) {
        Some((_, n)) => *n += 1,
        None => counts.push((rule, 1)),
    }
}

/// The end of a session's upstream connection: back to the pool once
/// reset when `key` says it may, closed with COM_QUIT otherwise.
async fn leave_upstream(mut up: Upstream, key: Option<pool::PoolKey>, target: &TargetRt) {
    if let Some(key) = key {
        if pool::reset(&mut up, target.cfg.upstream_database()).await {
            pool::put(&key, up, &target.pool_limits());
            return;
        }
    }
    let mut out = Vec::new();
    write_message(&mut out, 0, &[Command::Quit.code()]);
    let _ = monoio::time::timeout(Duration::from_secs(1), up.conn.write_all(out)).await;
}

/// Runs one statement on a fresh upstream connection and reads its OK.
async fn simple_statement(up: &mut Upstream, sql: &str, target: &str) -> Result<(), Fatal> {
    let mut p = vec![Command::Query.code()];
    p.extend_from_slice(sql.as_bytes());
    let mut out = Vec::new();
    write_message(&mut out, 0, &p);
    let lost = |e: String| {
        Fatal::new(
            SqlState::CONNECTION_FAILURE,
            format!("target \"{target}\": {e}"),
            EndReason::UpstreamLost,
        )
    };
    up.conn.write_all(out).await.map_err(|e| lost(e.to_string()))?;
    let (_, reply) = up.conn.read_message(1 << 20).await.map_err(|e| lost(e.to_string()))?;
    if reply.first() == Some(&0) {
        Ok(())
    } else {
        Err(lost(format!("`{sql}` failed")))
    }
}

#[allow(clippy::too_many_arguments)]
fn open_recording(
    shared: &Shared,
    state: &State,
    identity: &Identity,
    pid: u32,
    target: &TargetRt,
    account: &AccountRt,
    peer: SocketAddr,
    worker: usize,
    client_tls: bool,
    upstream_tls: bool,
) -> Option<SessionRec> {
    let (r, cfg) = (shared.recorder.get()?, state.config.recording.as_ref()?);
    let mode = match &state.policy {
        Some(p) => p.record_results(&identity.roles, cfg.results),
        None => cfg.results,
    };
    let info = OpenInfo {
        session: pid,
        identity: identity.name.clone(),
        roles: identity.roles.clone(),
        client: peer.to_string(),
        target: target.cfg.name.clone(),
        account: account.name.to_string(),
        client_tls,
        upstream_tls,
        worker,
        results: mode,
        engine: state.scan.clone(),
        protocol: crate::config::Protocol::Mysql,
    };
    let rec = SessionRec::new(
        r.sender(pid),
        r.health(),
        mode,
        cfg.full_max_rows,
        cfg.full_max_bytes,
        crate::proxy::pg::capture::strip_rows,
    );
    rec.push(Ev::Open {
        session: rec.key,
        t: crate::record::now_us(),
        info: Box::new(info),
    });
    Some(rec)
}

#[derive(Default)]
struct Stats {
    bytes_in: u64,
    bytes_out: u64,
    statements: u64,
    rows: u64,
    masked: u64,
    client_secrets: u64,
}

/// A statement prepared on the server (its id as the server confirmed it).
struct Prepared {
    sql: Arc<str>,
    class: Option<Arc<Classification>>,
    /// Parameters the server said it takes.
    params: u16,
    /// Their types as the last execution that bound types set them.
    bound: Vec<(u8, bool)>,
    /// Parameters sent with COM_STMT_SEND_LONG_DATA since the last execution.
    long_data: Vec<u16>,
    /// Columns of the last execution that left a cursor open.
    cursor: Option<CursorColumns>,
    /// Rows fetched from that cursor so far.
    cursor_rows: u64,
}

struct Session<'a> {
    shared: &'a Shared,
    state: &'a State,
    client: MyConn,
    client_fd: RawFd,
    up: Upstream,
    /// Capabilities in force with the client.
    caps: u32,
    identity: &'a Identity,
    target: &'a TargetRt,
    account: &'a AccountRt,
    handle: Arc<SessionHandle>,
    engine: Option<&'a crate::scan::Engine>,
    applies: Option<Arc<[bool]>>,
    max_rows: Option<u64>,
    max_msg: usize,
    enforcer: Option<Enforcer<'a>>,
    rec: Option<&'a SessionRec>,
    prepared: HashMap<u32, Prepared>,
    prepared_bytes: usize,
    scratch: Scratch,
    /// Verdicts of one scanning pass over the rows in the read buffer.
    prescan: RowPrescan,
    /// The upstream transaction, as the last answer's status says.
    tx: Cell<TxStatus>,
    /// Bytes gathered for the client.
    out: Vec<u8>,
    stats: Stats,
    masked_by_rule: Vec<(u32, u64)>,
    /// The running statement is being stopped upstream (once is enough).
    stopping: bool,
    /// Rows the client already got of the result being relayed (an open
    /// cursor's earlier fetches), for max_rows.
    rows_before: u64,
    /// The upstream connection may go back to the pool at the end: the
    /// target pools, and the session has done nothing a reset does not
    /// undo (`pool::taints_connection`, COM_SET_OPTION).
    poolable: bool,
}

/// The client's side of a hold: MySQL has no notices, so the client just
/// waits; its leaving (or a KILL QUERY of the session) withdraws the review.
struct Hold<'s> {
    handle: &'s SessionHandle,
    client_fd: RawFd,
    tx: &'s Cell<TxStatus>,
}

impl HoldIo for Hold<'_> {
    async fn notice(&self, _message: &str, _hint: &str) {}

    fn take_cancel(&self) -> bool {
        self.handle.take_cancel()
    }

    fn gone(&self) -> bool {
        self.handle.killed().is_some() || matches!(peek(self.client_fd), Peeked::Eof | Peeked::Failed)
    }

    async fn settled(&self) -> TxStatus {
        self.tx.get()
    }
}

/// What became of a client's statement before it went upstream.
enum Decided {
    Pass,
    Refused(String),
}

fn client_read(e: ReadError) -> Fatal {
    match e {
        ReadError::Closed => Fatal::new(
            SqlState::CONNECTION_FAILURE,
            "the client closed the connection",
            EndReason::ClientDisconnect,
        ),
        ReadError::Io(e) => Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError),
        ReadError::Wire(e @ MyWireError::TooLarge { .. }) => Fatal::with_code(
            code::NET_PACKET_TOO_LARGE,
            b"08S01",
            format!("client sent a message too large: {e}"),
            EndReason::ProtocolError,
        ),
        ReadError::Wire(e) => Fatal::with_code(
            code::NET_PACKETS_OUT_OF_ORDER,
            b"08S01",
            format!("client sent an invalid message: {e}"),
            EndReason::ProtocolError,
        ),
    }
}

fn upstream_lost(e: impl std::fmt::Display) -> Fatal {
    Fatal::new(
        SqlState::CONNECTION_FAILURE,
        format!("lost the connection to the database: {e}"),
        EndReason::UpstreamLost,
    )
}

fn upstream_protocol(e: impl std::fmt::Display) -> Fatal {
    Fatal::new(
        SqlState::PROTOCOL_VIOLATION,
        format!("the database broke the protocol: {e}"),
        EndReason::UpstreamProtocolError,
    )
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), Fatal> {
        loop {
            // Events that found the recorder's queue full are sent before
            // the next command is read: the session waits for room, as a
            // PostgreSQL session does, instead of piling them up in memory.
            if let Some(rec) = self.rec.filter(|r| r.pending()) {
                rec.flush().await;
            }
            let (m, payload) = match self.client.read_message(self.max_msg).await {
                Ok(x) => x,
                Err(e) => {
                    let f = client_read(e);
                    if f.end == EndReason::ProtocolError {
                        let _ = self.client.write_all(f.packet(1)).await;
                    }
                    if let Some(k) = self.handle.killed() {
                        let (state, msg) = k.client_error();
                        let mut out = Vec::new();
                        err_state(&mut out, 0, state, msg);
                        let _ = self.client.write_all(out).await;
                    }
                    return Err(f);
                }
            };
            self.handle.touch(self.shared.now());
            self.handle
                .statements
                .store(self.stats.statements, std::sync::atomic::Ordering::Relaxed);
            self.handle
                .rows
                .store(self.stats.rows, std::sync::atomic::Ordering::Relaxed);
            self.stats.bytes_in += m.wire_len as u64;
            if m.first_seq != 0 {
                let f = Fatal::with_code(
                    code::NET_PACKETS_OUT_OF_ORDER,
                    b"08S01",
                    format!("a command must start with sequence id 0, not {}", m.first_seq),
                    EndReason::ProtocolError,
                );
                let _ = self.client.write_all(f.packet(m.next_seq())).await;
                return Err(f);
            }
            let Some(&code) = payload.first() else {
                let f = Fatal::with_code(code::UNKNOWN_COM, b"08S01", "empty command", EndReason::ProtocolError);
                let _ = self.client.write_all(f.packet(1)).await;
                return Err(f);
            };
            let command = Command::from_code(code);
            // Nothing runs unrecorded (`recording.on_failure = "refuse"`).
            let runs = matches!(
                command,
                Command::Query | Command::StmtPrepare | Command::StmtExecute | Command::StmtFetch | Command::InitDb
            );
            if runs && self.rec.as_ref().is_some_and(|r| r.refusing()) {
                self.reply_err(code::ERROR_ON_WRITE, b"HY000", crate::record::link::REFUSED_MESSAGE)
                    .await?;
                continue;
            }
            match command {
                // The upstream connection's end is the session's (pooled or closed).
                Command::Quit => return Ok(()),
                Command::Query => self.query(&payload).await?,
                Command::StmtPrepare => self.prepare(&payload).await?,
                Command::StmtExecute => self.execute(&payload).await?,
                Command::StmtFetch => {
                    let id = stmt_id(&payload);
                    let cursor = id
                        .and_then(|id| self.prepared.get(&id))
                        .and_then(|p| Some((p.cursor.clone()?, p.cursor_rows, p.sql.clone(), p.class.clone())));
                    match cursor {
                        Some((columns, before, sql, class)) => {
                            // Each fetch is recorded as a statement of its
                            // own, so its rows have somewhere to go.
                            if self.rec.is_some() {
                                let text: Arc<str> = Arc::from(format!("/* COM_STMT_FETCH */ {sql}"));
                                self.record_client(&text, class.as_ref(), None);
                            }
                            // max_rows counts the cursor's rows, not each fetch's.
                            self.rows_before = before;
                            let r = self.forward(&payload, Shape::Fetch { columns }).await;
                            self.rows_before = 0;
                            let r = r?;
                            if let Some(p) = id.and_then(|id| self.prepared.get_mut(&id)) {
                                p.cursor_rows += r.rows;
                            }
                        }
                        None => self.reply_err(code::UNKNOWN_COM, b"HY000", "no open cursor for this statement").await?,
                    }
                }
                Command::StmtClose => {
                    if let Some(id) = stmt_id(&payload) {
                        if let Some(p) = self.prepared.remove(&id) {
                            self.prepared_bytes -= p.sql.len();
                        }
                    }
                    self.send_upstream(&payload).await?;
                }
                Command::StmtSendLongData => {
                    // Which parameter: a reviewer is told it came separately.
                    if let (Some(id), Some(b)) = (stmt_id(&payload), payload.get(5..7)) {
                        let param = u16::from_le_bytes([b[0], b[1]]);
                        if let Some(p) = self.prepared.get_mut(&id) {
                            if !p.long_data.contains(&param) && p.long_data.len() < usize::from(p.params) {
                                p.long_data.push(param);
                            }
                        }
                    }
                    self.send_upstream(&payload).await?
                }
                Command::StmtReset => {
                    if let Some(p) = stmt_id(&payload).and_then(|id| self.prepared.get_mut(&id)) {
                        p.long_data.clear();
                    }
                    self.forward(&payload, Shape::Single).await?;
                }
                Command::SetOption => {
                    self.poolable = false;
                    self.forward(&payload, Shape::Single).await?;
                }
                Command::Ping | Command::Statistics => {
                    self.forward(&payload, Shape::Single).await?;
                }
                Command::ResetConnection if self.enforcer.as_ref().is_some_and(|e| e.read_only) => {
                    // A reset would drop the session's READ ONLY (session
                    // variables go back to the server's globals).
                    self.reply_err(
                        code::NOT_SUPPORTED_YET,
                        b"42000",
                        "gatehouse: COM_RESET_CONNECTION is refused on a read-only session; reconnect instead",
                    )
                    .await?
                }
                Command::ResetConnection => {
                    self.prepared.clear();
                    self.prepared_bytes = 0;
                    self.forward(&payload, Shape::Single).await?;
                }
                Command::FieldList => {
                    self.forward(&payload, Shape::FieldList).await?;
                }
                Command::InitDb => {
                    let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                    if db == self.target.cfg.upstream_database() {
                        self.forward(&payload, Shape::Single).await?;
                    } else {
                        let msg = format!(
                            "gatehouse: database \"{db}\" is not within target \"{}\"; connect with its own database name",
                            self.target.cfg.name
                        );
                        self.reply_err(code::DBACCESS_DENIED, b"42000", &msg).await?
                    }
                }
                Command::ProcessKill => {
                    let id = payload.get(1..5).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    match id {
                        Some(id) => self.kill(kill::Kill { id, query: false }).await?,
                        None => self.reply_err(code::UNKNOWN_COM, b"08S01", "malformed COM_PROCESS_KILL").await?,
                    }
                }
                Command::ChangeUser => {
                    self.reply_err(
                        code::NOT_SUPPORTED_YET,
                        b"42000",
                        "COM_CHANGE_USER is not supported through gatehouse: open a new connection with the other identity's token",
                    )
                    .await?
                }
                other => {
                    let msg = format!("command {other:?} is not supported through gatehouse");
                    self.reply_err(code::UNKNOWN_COM, b"08S01", &msg).await?
                }
            }
        }
    }

    async fn flush_client(&mut self) -> Result<(), Fatal> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stats.bytes_out += self.out.len() as u64;
        let out = std::mem::take(&mut self.out);
        self.out = self
            .client
            .write_all(out)
            .await
            .map_err(|e| Fatal::new(SqlState::CONNECTION_FAILURE, e.to_string(), EndReason::ClientIoError))?;
        Ok(())
    }

    /// An error of gatehouse's own as the answer to the command.
    async fn reply_err(&mut self, code: u16, sql_state: &[u8; 5], message: &str) -> Result<(), Fatal> {
        err(&mut self.out, 1, code, sql_state, message);
        self.flush_client().await
    }

    async fn send_upstream(&mut self, payload: &[u8]) -> Result<(), Fatal> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        write_message(&mut out, 0, payload);
        self.up.conn.write_all(out).await.map_err(upstream_lost)?;
        Ok(())
    }

    async fn forward(&mut self, payload: &[u8], shape: Shape) -> Result<Reader41, Fatal> {
        self.send_upstream(payload).await?;
        self.relay_answer(shape).await
    }

    /// The policy's decision on a statement (held until a reviewer
    /// decides, when it says so).
    async fn decide(&mut self, class: &Arc<Classification>, sql: &str) -> Decided {
        self.decide_with(class, sql, None).await
    }

    /// [`Self::decide`] of a statement with parameters.
    async fn decide_with(
        &mut self,
        class: &Arc<Classification>,
        sql: &str,
        params: Option<&dyn Fn() -> Vec<String>>,
    ) -> Decided {
        let hold = Hold {
            handle: &self.handle,
            client_fd: self.client_fd,
            tx: &self.tx,
        };
        let Some(e) = self.enforcer.as_mut() else {
            return Decided::Pass;
        };
        let statement = Statement {
            class,
            sql,
            params,
            call: None,
        };
        let mut step = e.decide(&statement);
        // Each command is a group of its own: an approved change may run
        // in a read-write transaction opened for it alone.
        e.rw_eligible = true;
        for _ in 0..4 {
            match step {
                Step::Pass => return Decided::Pass,
                Step::Refuse(r) => return Decided::Refused(refusal_text(&r)),
                Step::Hold { .. } => {
                    e.hold(&hold).await;
                    if let (Some(rec), Some((review, outcome, reason, by))) = (self.rec, e.last_review.take()) {
                        rec.push(Ev::Review {
                            session: rec.key,
                            t: crate::record::now_us(),
                            review,
                            outcome,
                            reason,
                            by,
                        });
                    }
                }
                Step::Wait(WaitFor::Catalog) => e.load_catalog().await,
                Step::Wait(_) => {}
            }
            step = e.decide(&statement);
        }
        Decided::Refused("gatehouse could not decide on the statement".into())
    }

    /// COM_QUERY.
    async fn query(&mut self, payload: &[u8]) -> Result<(), Fatal> {
        let raw = &payload[1..];
        let sql = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(_) if self.enforcer.is_some() => {
                return self
                    .reply_err(
                        code::SPECIFIC_ACCESS_DENIED,
                        b"42000",
                        "gatehouse: statement refused: its text is not valid UTF-8",
                    )
                    .await
            }
            Err(_) => "",
        };
        if let Some(k) = kill::parse(sql) {
            return self.kill(k).await;
        }
        self.note_taint(raw);
        let sql_owned: Arc<str> = Arc::from(if sql.is_empty() {
            String::from_utf8_lossy(raw).into_owned()
        } else {
            sql.to_string()
        });
        if let Some(rule) = self.client_secret(raw) {
            self.stats.client_secrets += 1;
            let msg = format!("gatehouse: statement refused: it carries a secret ({rule})");
            self.record_refusal(&sql_owned, None, &msg);
            return self.reply_err(code::SPECIFIC_ACCESS_DENIED, b"42000", &msg).await;
        }
        let class = self.state.policy.as_ref().map(|p| classify(p, sql));
        if let Some(c) = &class {
            if let Some(msg) = self.database_switch(c, sql) {
                self.record_refusal(&sql_owned, Some(c), &msg);
                return self.reply_err(code::DBACCESS_DENIED, b"42000", &msg).await;
            }
            if let Decided::Refused(msg) = self.decide(c, sql).await {
                self.record_refusal(&sql_owned, Some(c), &msg);
                return self.reply_err(code::SPECIFIC_ACCESS_DENIED, b"42000", &msg).await;
            }
        }
        self.record_client(&sql_owned, class.as_ref(), None);
        self.open_read_write().await?;
        self.stats.statements += 1;
        let r = self.forward(payload, Shape::Results { binary: false }).await;
        self.close_read_write();
        r.map(|_| ())
    }

    /// COM_STMT_PREPARE: the text is classified and kept under the id the
    /// server gives it; the decision is taken at each execution.
    async fn prepare(&mut self, payload: &[u8]) -> Result<(), Fatal> {
        self.note_taint(&payload[1..]);
        let sql: Arc<str> = Arc::from(String::from_utf8_lossy(&payload[1..]).into_owned());
        if let Some(rule) = self.client_secret(&payload[1..]) {
            self.stats.client_secrets += 1;
            let msg = format!("gatehouse: statement refused: it carries a secret ({rule})");
            return self.reply_err(code::SPECIFIC_ACCESS_DENIED, b"42000", &msg).await;
        }
        let max_bytes = self.state.config.server.max_prepared_statement_bytes;
        if self.prepared.len() >= MAX_PREPARED || self.prepared_bytes + sql.len() > max_bytes {
            return self
                .reply_err(
                    code::USER_LIMIT_REACHED,
                    b"42000",
                    "gatehouse: too many prepared statements in this session; close some (COM_STMT_CLOSE)",
                )
                .await;
        }
        let class = match (&self.state.policy, std::str::from_utf8(&payload[1..])) {
            (Some(p), Ok(text)) => Some(classify(p, text)),
            (Some(_), Err(_)) => Some(crate::core::enforce::unknown()),
            (None, _) => None,
        };
        // A read-only session's server refuses to prepare a change at all
        // (MariaDB checks at PREPARE): the text is prepared read-write,
        // and the policy decides at each execution as for any statement.
        let write_on_read_only = self.enforcer.as_ref().is_some_and(|e| e.read_only)
            && class
                .as_ref()
                .is_some_and(|c| c.class != crate::sql::StatementClass::Read);
        let name = self.target.cfg.name.clone();
        if write_on_read_only {
            simple_statement(&mut self.up, "SET SESSION TRANSACTION READ WRITE", &name).await?;
        }
        let r = self.forward(payload, Shape::Prepare).await?;
        if write_on_read_only {
            simple_statement(&mut self.up, "SET SESSION TRANSACTION READ ONLY", &name).await?;
        }
        if let Some(p) = r.prepared {
            self.prepared_bytes += sql.len();
            if let Some(old) = self.prepared.insert(
                p.statement_id,
                Prepared {
                    sql,
                    class,
                    params: p.params,
                    bound: Vec::new(),
                    long_data: Vec::new(),
                    cursor: None,
                    cursor_rows: 0,
                },
            ) {
                self.prepared_bytes -= old.sql.len();
            }
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE: decided on the text the server prepared under
    /// that id.
    async fn execute(&mut self, payload: &[u8]) -> Result<(), Fatal> {
        let Some(id) = stmt_id(payload) else {
            return self
                .reply_err(code::UNKNOWN_COM, b"08S01", "malformed COM_STMT_EXECUTE")
                .await;
        };
        let Some(p) = self.prepared.get(&id) else {
            // Not a statement the server confirmed: nothing is sent.
            return self
                .reply_err(
                    1243,
                    b"HY000",
                    &format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute"),
                )
                .await;
        };
        let (sql, class, count) = (p.sql.clone(), p.class.clone(), p.params as usize);
        let Ok(new_types) = bind_types(payload, count) else {
            return self
                .reply_err(code::UNKNOWN_COM, b"08S01", "malformed COM_STMT_EXECUTE")
                .await;
        };
        if let Some(c) = &class {
            // The server's state of this statement (types bound, long data
            // sent) changes only when an execution reaches it: it is taken
            // out while the policy decides and put back if this one is
            // refused.
            let (old_types, long_data) = match self.prepared.get_mut(&id) {
                Some(p) => (std::mem::take(&mut p.bound), std::mem::take(&mut p.long_data)),
                None => Default::default(),
            };
            let decided = {
                // What a reviewer reads: the values this execution binds.
                let bound = new_types.as_deref().unwrap_or(&old_types);
                let params = || shown_params(payload, count, bound, &long_data);
                self.decide_with(c, &sql, Some(&params)).await
            };
            if let Some(p) = self.prepared.get_mut(&id) {
                (p.bound, p.long_data) = (old_types, long_data);
            }
            if let Decided::Refused(msg) = decided {
                self.record_refusal(&sql, Some(c), &msg);
                return self.reply_err(code::SPECIFIC_ACCESS_DENIED, b"42000", &msg).await;
            }
        }
        self.record_client(&sql, class.as_ref(), None);
        self.open_read_write().await?;
        self.stats.statements += 1;
        self.send_upstream(payload).await?;
        if let Some(p) = self.prepared.get_mut(&id) {
            if let Some(types) = new_types {
                p.bound = types;
            }
            p.long_data.clear();
        }
        let r = self.relay_answer(Shape::Results { binary: true }).await;
        self.close_read_write();
        let r = r?;
        if let (Some(cursor), Some(p)) = (r.cursor, self.prepared.get_mut(&id)) {
            p.cursor = Some(cursor);
            p.cursor_rows = 0;
        }
        Ok(())
    }

    /// A statement whose effects a reset leaves in place keeps the
    /// connection out of the pool (scanned only while it could go back).
    fn note_taint(&mut self, sql: &[u8]) {
        if self.poolable && pool::taints_connection(sql) {
            self.poolable = false;
        }
    }

    /// A secret in a client's statement, when such statements are refused.
    fn client_secret(&self, text: &[u8]) -> Option<String> {
        if !self.state.config.scan.refuse_client_secrets {
            return None;
        }
        let e = self.engine?;
        let found = e.find(text).ok()?;
        found.first().map(|f| e.rule_id(f.rule).to_string())
    }

    /// `USE other`: a session stays within its target's database.
    fn database_switch(&self, c: &Classification, sql: &str) -> Option<String> {
        if !c.statements.iter().any(|s| s.command == "USE") {
            return None;
        }
        let own = self.target.cfg.upstream_database();
        let named = use_database(sql);
        if named.as_deref() == Some(own) && c.statements.len() == 1 {
            return None;
        }
        Some(format!(
            "gatehouse: a session stays within database \"{own}\" of target \"{}\"; connect with the other database's name instead of USE",
            self.target.cfg.name
        ))
    }

    /// Before an approved change on a read-only session: a read-write
    /// transaction for it alone (`SET TRANSACTION` applies to the next one).
    async fn open_read_write(&mut self) -> Result<(), Fatal> {
        let Some(e) = self.enforcer.as_mut() else { return Ok(()) };
        let Some(plan) = e.rw.as_ref() else { return Ok(()) };
        if plan.status != TxStatus::Idle {
            return Ok(());
        }
        let name = self.target.cfg.name.clone();
        simple_statement(&mut self.up, "SET TRANSACTION READ WRITE", &name).await
    }

    fn close_read_write(&mut self) {
        if let Some(e) = self.enforcer.as_mut() {
            e.rw = None;
        }
    }

    /// `KILL` of a session by the id gatehouse gave it.
    async fn kill(&mut self, k: kill::Kill) -> Result<(), Fatal> {
        if self.shared.registry.kill_own(k.id, &self.identity.name, k.query) {
            let mut ok = Vec::new();
            OkPacket {
                status: status::AUTOCOMMIT,
                ..OkPacket::default()
            }
            .write(&mut ok, self.caps, false);
            write_message(&mut self.out, 1, &ok);
            self.flush_client().await
        } else {
            let msg = format!("Unknown thread id: {}", k.id);
            self.reply_err(code::NO_SUCH_THREAD, b"HY000", &msg).await
        }
    }

    /// Waits for more of the answer; meanwhile a client that leaves, a
    /// kill, or a `KILL QUERY` of this session stops the statement upstream.
    async fn fill_upstream(&mut self) -> Result<(), Fatal> {
        let need = self.up.conn.need();
        let handle = self.handle.clone();
        let client_fd = self.client_fd;
        let stop = Cell::new(false);
        let watch = async {
            loop {
                monoio::time::sleep(WATCH).await;
                let gone = matches!(peek(client_fd), Peeked::Eof | Peeked::Failed);
                if gone || handle.take_cancel() || handle.killed().is_some() {
                    stop.set(true);
                    return;
                }
            }
        };
        let (t, a, id) = (self.target, self.account, self.up.established.connection_id);
        let stopping = self.stopping;
        let fill = std::pin::pin!(self.up.conn.fill(need));
        let r = if stopping {
            fill.await
        } else {
            match futures_util::future::select(fill, std::pin::pin!(watch)).await {
                futures_util::future::Either::Left((r, _)) => r,
                futures_util::future::Either::Right(((), fill)) => {
                    if stop.get() {
                        self.stopping = true;
                        tracing::info!(target: "gatehouse::session", protocol = "mysql", upstream_connection = id, "stopping the running statement upstream");
                        // The read stays in flight: the server answers the
                        // interrupted statement with an error.
                        let kill = async {
                            if let Err(e) = upstream::kill_query(t, a, id).await {
                                tracing::warn!(target: "gatehouse::session", protocol = "mysql", error = %e.message, "could not stop the statement upstream");
                            }
                        };
                        futures_util::future::join(fill, kill).await.0
                    } else {
                        fill.await
                    }
                }
            }
        };
        r.map_err(|e| match e {
            ReadError::Wire(w) => upstream_protocol(w),
            other => upstream_lost(other),
        })
    }

    /// Relays one command's answer to the client, its values masked.
    async fn relay_answer(&mut self, shape: Shape) -> Result<Reader41, Fatal> {
        let binary = matches!(shape, Shape::Results { binary: true } | Shape::Fetch { .. });
        let recorded = matches!(shape, Shape::Results { .. } | Shape::Fetch { .. });
        let mut capture = self.rec.filter(|_| recorded).map(Capture::new);
        let fetch = matches!(shape, Shape::Fetch { .. });
        let mut reader = Reader41::new(shape, self.caps);
        reader.keep_names = self.rec.is_some_and(Capture::wants_names);
        if let (Some(c), true) = (capture.as_mut(), fetch) {
            // A fetch's rows come without definitions: the recording lists
            // the columns the cursor was opened with.
            record_columns(c, self.engine, &reader.names);
        }
        // Values masked in this answer, by rule (for its recording).
        let mut answer_masked: Vec<(u32, u64)> = Vec::new();
        // Sequence ids move when a masked message needs more or fewer
        // packets than the server's.
        let mut shift: u8 = 0;
        // After gatehouse answered in the server's place: the rest of the
        // server's answer is read and dropped.
        let mut withheld = false;
        let mut rows_sent: u64 = 0;
        self.prescan.clear();
        loop {
            let m = match self.up.conn.peek_message(self.max_msg) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.prescan.clear();
                    self.flush_client().await?;
                    // Within one long answer too (a procedure's many result
                    // sets): what found the recorder's queue full is sent
                    // before more is read from the server.
                    if let Some(rec) = self.rec.filter(|r| r.pending()) {
                        rec.flush().await;
                    }
                    self.fill_upstream().await?;
                    continue;
                }
                Err(e) => return Err(self.fail_answer(upstream_protocol(e), withheld, shift).await),
            };
            let start = self.up.conn.pos;
            // A row the pass over the buffered rows found clean needs no
            // pass of its own.
            let clean_row = match self.engine {
                Some(e) if reader.in_rows() && !withheld => {
                    let mut verdict = self.prescan.take(start);
                    if verdict.is_none() {
                        let types = reader.binary().then_some(&reader.types[..]);
                        let conn = &self.up.conn;
                        self.prescan.scan(
                            e,
                            self.applies.as_deref(),
                            &conn.buf,
                            start,
                            self.max_msg,
                            types,
                            reader.types.len(),
                        );
                        verdict = self.prescan.take(start);
                    }
                    verdict == Some(false)
                }
                _ => false,
            };
            let wire = &self.up.conn.buf[start..start + m.wire_len];
            let p = crate::wire::mysql::payload(wire, &m);
            let engine = self.engine;
            let applies = self.applies.clone();
            let scratch = &mut self.scratch;
            let counts = &mut self.masked_by_rule;
            let answer_counts = &mut answer_masked;
            let mut masked = 0u64;
            let mut mask = |v: Value<'_>| -> Result<Option<Vec<u8>>, String> {
                if clean_row && matches!(v, Value::TextRow(..) | Value::BinaryRow(..)) {
                    return Ok(None);
                }
                match engine {
                    Some(e) => mask_value(e, applies.as_deref(), scratch, v, &mut |rule| {
                        masked += 1;
                        count_rule(counts, rule);
                        count_rule(answer_counts, rule);
                    }),
                    None => Ok(None),
                }
            };
            let was_rows = reader.in_rows();
            let act = reader.on_message(&p, &mut mask);
            self.stats.masked += masked;
            let act = match act {
                Ok(a) => a,
                Err(ReadFailure::Protocol(e)) => {
                    return Err(self.fail_answer(upstream_protocol(e), withheld, shift).await)
                }
                Err(ReadFailure::Scan(why)) => {
                    // Fail closed: nothing of this value leaves; the client
                    // gets an error in place of the rest of the answer.
                    tracing::warn!(target: "gatehouse::scan", protocol = "mysql", error = %why, "result withheld: scanning failed");
                    if !withheld {
                        let msg = "gatehouse withheld a result it could not scan for secrets";
                        err(
                            &mut self.out,
                            m.first_seq.wrapping_add(shift),
                            code::UNKNOWN,
                            b"HY000",
                            msg,
                        );
                        if let Some(c) = capture.as_mut() {
                            c.error(code::UNKNOWN, msg);
                        }
                        withheld = true;
                    }
                    Act::Keep
                }
            };
            let row = was_rows && reader.in_rows() || (was_rows && act != Act::Keep && !reader.done());
            if was_rows && !matches!(act, Act::LocalInfile) && reader.rows > rows_sent && row {
                rows_sent = reader.rows;
                self.stats.rows += 1;
                if let Some(max) = self.max_rows {
                    if self.rows_before + rows_sent > max && !withheld {
                        let msg = format!(
                            "gatehouse: the result exceeds this role's limit of {max} rows; the rest was not sent"
                        );
                        err(
                            &mut self.out,
                            m.first_seq.wrapping_add(shift),
                            code::USER_LIMIT_REACHED,
                            b"42000",
                            &msg,
                        );
                        if let Some(c) = capture.as_mut() {
                            c.error(code::USER_LIMIT_REACHED, &msg);
                        }
                        withheld = true;
                    }
                }
            }
            if let (Some(c), false) = (capture.as_mut(), withheld) {
                match reader.event {
                    Event::ColumnsDone => record_columns(c, self.engine, &reader.names),
                    Event::Row => {
                        let sent: &[u8] = match &act {
                            Act::Replace(new) => new,
                            _ => &p,
                        };
                        c.row(sent, binary, &reader.types, &reader.flags);
                    }
                    Event::RowsEnd => c.rows_end(),
                    Event::Ok(affected) => c.ok(affected),
                    Event::Error => {
                        if let Some((code, message)) = &reader.error {
                            let text = match self.engine {
                                Some(e) => e.mask_text(message),
                                None => message.clone(),
                            };
                            c.error(*code, &text);
                        }
                    }
                    Event::Other => {}
                }
            }
            match act {
                Act::LocalInfile => {
                    drop(p);
                    self.up.conn.pos += m.wire_len;
                    self.local_infile(&m, shift, &mut withheld).await?;
                    reader.after_local_infile();
                    continue;
                }
                _ if withheld => {}
                Act::Keep if shift == 0 => self.out.extend_from_slice(wire),
                Act::Keep => {
                    write_message(&mut self.out, m.first_seq.wrapping_add(shift), &p);
                }
                Act::Replace(new) => {
                    let next = write_message(&mut self.out, m.first_seq.wrapping_add(shift), &new);
                    shift = next.wrapping_sub(m.next_seq());
                }
            }
            drop(p);
            self.up.conn.pos += m.wire_len;
            if reader.done() {
                break;
            }
            if self.out.len() >= FLUSH_AT {
                self.flush_client().await?;
            }
        }
        self.stopping = false;
        // An ERR carries no status: the transaction is where it was.
        if reader.error.is_none() {
            self.tx.set(if reader.status & status::IN_TRANS != 0 {
                TxStatus::InBlock
            } else {
                TxStatus::Idle
            });
        }
        self.flush_client().await?;
        if let Some(c) = capture {
            let engine = self.engine;
            let masked = answer_masked
                .into_iter()
                .map(|(r, n)| (engine.map(|e| e.rule_id(r).to_string()).unwrap_or_default(), n))
                .collect();
            c.finish(masked);
        }
        Ok(reader)
    }

    /// The answer broke off: the client is told, the session ends.
    async fn fail_answer(&mut self, f: Fatal, withheld: bool, _shift: u8) -> Fatal {
        self.out.clear();
        if !withheld {
            let _ = self.client.write_all(f.packet(1)).await;
        }
        f
    }

    /// LOAD DATA LOCAL INFILE: the server asks the client for a file. Under
    /// a policy the upstream login never offers it (the server refuses the
    /// statement itself); without one the client's file goes through.
    async fn local_infile(
        &mut self,
        request: &crate::wire::mysql::Message,
        shift: u8,
        withheld: &mut bool,
    ) -> Result<(), Fatal> {
        if self.state.policy.is_some() || *withheld {
            // Say "no file" to the server; its answer is read as usual.
            let mut out = Vec::new();
            write_message(&mut out, request.next_seq(), &[]);
            self.up.conn.write_all(out).await.map_err(upstream_lost)?;
            if !*withheld {
                err(
                    &mut self.out,
                    1,
                    code::SPECIFIC_ACCESS_DENIED,
                    b"42000",
                    "gatehouse: LOAD DATA LOCAL INFILE is refused under a policy",
                );
                *withheld = true;
            }
            return Ok(());
        }
        let start = self.up.conn.pos - request.wire_len;
        let wire = self.up.conn.buf[start..self.up.conn.pos].to_vec();
        if shift == 0 {
            self.out.extend_from_slice(&wire);
        } else {
            let p = crate::wire::mysql::payload(&wire, request).into_owned();
            write_message(&mut self.out, request.first_seq.wrapping_add(shift), &p);
        }
        self.flush_client().await?;
        // The file's packets, up to an empty one, go upstream as they are
        // (their sequence ids continue the server's).
        loop {
            let (m, p) = self.client.read_message(self.max_msg).await.map_err(client_read)?;
            let mut out = Vec::with_capacity(p.len() + 8);
            write_message(&mut out, m.first_seq.wrapping_sub(shift), &p);
            self.stats.bytes_in += m.wire_len as u64;
            self.up.conn.write_all(out).await.map_err(upstream_lost)?;
            if p.is_empty() {
                return Ok(());
            }
        }
    }

    /// What the recording keeps of a client statement: its text as a
    /// query, the class, and gatehouse's refusal if any.
    /// A statement gatehouse refused: recorded with the refusal, and its
    /// answer (the error the client got) so that later answers stay with
    /// their own statements.
    fn record_refusal(&self, sql: &Arc<str>, class: Option<&Arc<Classification>>, message: &str) {
        self.record_client(sql, class, Some(message));
        if let Some(rec) = self.rec {
            Capture::refused(rec, message);
        }
    }

    fn record_client(&self, sql: &Arc<str>, class: Option<&Arc<Classification>>, refused: Option<&str>) {
        let Some(rec) = self.rec else { return };
        let mut frames = Vec::with_capacity(sql.len() + 8);
        crate::wire::pg::cstring_message(&mut frames, b'Q', sql.as_bytes());
        rec.push(Ev::Client {
            session: rec.key,
            t: crate::record::now_us(),
            frames,
            refused: refused
                .map(|m| vec![(0, SqlState::INSUFFICIENT_PRIVILEGE.code(), m.to_string())])
                .unwrap_or_default(),
            statements: vec![StatementRef {
                frame: 0,
                sql: sql.clone(),
                class: class.map(|c| c.class.as_str()),
                bind: None,
            }],
        });
    }
}

fn refusal_text(r: &Refusal) -> String {
    format!("gatehouse: statement refused: {}", r.message())
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The database `USE name` names (bare or in backticks), if that is all
/// the statement is.
fn use_database(sql: &str) -> Option<String> {
    let t = sql.trim().trim_end_matches(';').trim_end();
    let (kw, rest) = t.split_at(t.find(|c: char| c.is_ascii_whitespace())?);
    if !kw.eq_ignore_ascii_case("use") {
        return None;
    }
    let name = rest.trim();
    if let Some(inner) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
        if inner.contains('`') {
            return None;
        }
        return Some(inner.to_string());
    }
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
        return None;
    }
    Some(name.to_string())
}
