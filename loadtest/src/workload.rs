//! Runs one scenario against one target: clients as tokio tasks under a
//! shared [`Bound`], a progress line, CPU and RSS of the target's process.

use crate::pg::{Conn, ConnectParams};
use crate::procmon;
use crate::scenario::{Kind, Protocol, Scenario};
use crate::stats::{Bound, Go, Recorder};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A target as the runner uses it (managed ones filled in).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub direct: bool,
    pub params: ConnectParams,
    pub idle_dbname: Option<String>,
    pub pid: Option<u32>,
    /// host:port of the admin API and a token that may approve.
    pub admin: Option<(String, String)>,
    /// (user, password) whose writes are held.
    pub approval: Option<(String, Option<String>)>,
    /// The same endpoint over MySQL, for MySQL scenarios.
    pub mysql: Option<crate::mysql::MyParams>,
    /// How a scenario with `upstream_tls` reaches this proxy instead.
    pub upstream_tls: Option<UpstreamTlsRoute>,
}

/// Where a proxy is reached with TLS on its hop to PostgreSQL as well: a
/// database of its own (gatehouse's `<database>_tls` target) or another
/// process (a second PgBouncer, whose server TLS mode is global).
#[derive(Clone, Debug)]
pub struct UpstreamTlsRoute {
    pub port: u16,
    pub dbname: String,
    /// The process to watch, when it is not the endpoint's own.
    pub pid: Option<u32>,
}

impl Endpoint {
    /// This endpoint as a scenario with `upstream_tls` uses it, or `None`
    /// when it has no such route. The direct target is itself: its only hop
    /// is the client's, which the scenario's `tls` already covers.
    pub fn with_upstream_tls(&self) -> Option<Endpoint> {
        if self.direct {
            return Some(self.clone());
        }
        let route = self.upstream_tls.as_ref()?;
        let mut ep = self.clone();
        ep.params.port = route.port;
        ep.params.dbname = route.dbname.clone();
        if route.pid.is_some() {
            ep.pid = route.pid;
        }
        Some(ep)
    }
}

/// Sizes of the tables made by the setup.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub accounts: u64,
    pub secret_rows: u64,
}

/// What one scenario did against one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_requested: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_opened: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_alive: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_open_s: Option<f64>,
    /// Why the last idle connections could not open, if some could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_first_error: Option<String>,
    /// The target's VmRSS growth per idle connection held, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_idle_kib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgbench_tps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_clients: Option<usize>,
}

pub struct Measured {
    pub rec: Recorder,
    pub elapsed_s: f64,
    pub cpu_s: Option<f64>,
    pub harness_cpu_s: Option<f64>,
    pub rss_peak_kib: Option<u64>,
    pub vmhwm_kib: Option<u64>,
    pub extra: Extra,
}

/// A small fast PRNG (xorshift64*), one per client.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

const POINT_SQL: &str = "select abalance from gh_load_accounts where aid = $1";

fn big_select(rows: u64) -> String {
    format!("select g, md5(g::text), repeat('x', 200) from generate_series(1, {rows}) g")
}

/// The COPY IN payload: lines like `42\t<md5>\t<200 x>\n`, about 64 KiB.
fn copy_chunk() -> Vec<u8> {
    let mut v = Vec::with_capacity(70 * 1024);
    let mut i = 0u64;
    while v.len() < 64 * 1024 {
        i += 1;
        let _ = writeln!(
            v,
            "{i}\t{:032x}\t{}",
            (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            "x".repeat(200)
        );
    }
    v
}

struct Client {
    sc: Arc<Scenario>,
    ep: Arc<Endpoint>,
    tables: Tables,
    rng: Rng,
    conn: Option<Conn>,
    my: Option<crate::mysql::MyClient>,
    tls: Option<tokio_rustls::TlsConnector>,
    chunk: Arc<Vec<u8>>,
    not_held: u64,
}

/// Result of one operation (or one pipelined batch).
struct Done {
    /// Per statement: when it completed, relative to the batch start.
    latencies: Vec<Duration>,
    rows: u64,
    bytes: u64,
}

impl Client {
    fn params(&self) -> ConnectParams {
        let mut p = self.ep.params.clone();
        p.tls = self.sc.tls;
        if self.sc.kind == Kind::Approvals {
            if let Some((u, pw)) = &self.ep.approval {
                p.user = u.clone();
                p.password = pw.clone();
            }
        }
        p
    }

    async fn ensure_conn(&mut self) -> Result<(), anyhow::Error> {
        if self.sc.kind == Kind::MysqlPointSelect {
            if self.my.is_none() {
                let Some(p) = &self.ep.mysql else {
                    bail!("no MySQL port")
                };
                self.my = Some(crate::mysql::MyClient::open(p, self.sc.protocol == Protocol::Prepared).await?);
            }
            return Ok(());
        }
        if self.conn.is_some() || self.sc.kind == Kind::Storm {
            return Ok(());
        }
        let mut c = Conn::connect(&self.params(), self.tls.as_ref()).await?;
        match (self.sc.kind, self.sc.protocol) {
            (Kind::PointSelect | Kind::IdlePlusWork, Protocol::Prepared) => {
                c.parse("s", POINT_SQL);
                c.sync();
                c.round_trip(1, |_, _| {}).await?;
            }
            (Kind::WideRows, Protocol::Prepared) => {
                c.parse("s", &self.wide_sql());
                c.sync();
                c.round_trip(1, |_, _| {}).await?;
            }
            (Kind::LargeResult, Protocol::Prepared) => {
                c.parse("s", &big_select(self.sc.rows_per_op()));
                c.sync();
                c.round_trip(1, |_, _| {}).await?;
            }
            (Kind::CopyIn, _) => {
                c.simple("create temp table gh_load_copy_in (a int, b text, c text)")
                    .await?;
            }
            _ => {}
        }
        self.conn = Some(c);
        Ok(())
    }

    fn wide_sql(&self) -> String {
        format!(
            "select * from gh_load_secrets where id > $1 and id <= $1 + {}",
            self.sc.rows_per_op()
        )
    }

    /// Untimed preparation before an operation.
    async fn before(&mut self) -> Result<(), anyhow::Error> {
        self.ensure_conn().await?;
        if self.sc.kind == Kind::CopyIn {
            if let Some(c) = self.conn.as_mut() {
                c.simple("truncate gh_load_copy_in").await?;
            }
        }
        Ok(())
    }

    async fn op(&mut self, n: usize) -> Result<Done, anyhow::Error> {
        let t0 = Instant::now();
        let mut lat = Vec::with_capacity(n);
        let kind = self.sc.kind;
        let protocol = self.sc.protocol;
        if kind == Kind::Storm {
            let c = Conn::connect(&self.params(), self.tls.as_ref()).await?;
            let mut c = c;
            let o = c.simple("select 1").await?;
            c.close().await;
            lat.push(t0.elapsed());
            return Ok(Done {
                latencies: lat,
                rows: o.rows,
                bytes: 0,
            });
        }
        let rows_per_op = self.sc.rows_per_op();
        let (accounts, secrets) = (self.tables.accounts.max(1), self.tables.secret_rows);
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(match kind {
                Kind::WideRows => self.rng.below(secrets.saturating_sub(rows_per_op).max(1)),
                _ => 1 + self.rng.below(accounts),
            });
        }
        if kind == Kind::MysqlPointSelect {
            let Some(my) = self.my.as_mut() else {
                bail!("no connection")
            };
            let mut rows = 0;
            for k in keys {
                rows += my.point_select(k).await?;
                lat.push(t0.elapsed());
            }
            return Ok(Done {
                latencies: lat,
                rows,
                bytes: 0,
            });
        }
        let approval = self.ep.admin.clone();
        let Some(c) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let outcome = match kind {
            Kind::PointSelect | Kind::IdlePlusWork | Kind::WideRows => {
                let wide = kind == Kind::WideRows;
                for k in &keys {
                    let ks = k.to_string();
                    match protocol {
                        Protocol::Simple => {
                            let sql = if wide {
                                format!(
                                    "select * from gh_load_secrets where id > {k} and id <= {}",
                                    k + rows_per_op
                                )
                            } else {
                                format!("select abalance from gh_load_accounts where aid = {k}")
                            };
                            c.query(&sql);
                        }
                        Protocol::Extended => {
                            if wide {
                                c.parse(
                                    "",
                                    &format!(
                                        "select * from gh_load_secrets where id > $1 and id <= $1 + {rows_per_op}"
                                    ),
                                );
                            } else {
                                c.parse("", POINT_SQL);
                            }
                            c.bind_execute_sync("", &[ks.as_bytes()]);
                        }
                        Protocol::Prepared => c.bind_execute_sync("s", &[ks.as_bytes()]),
                    }
                }
                c.round_trip(n, |_, at| lat.push(at - t0)).await?
            }
            Kind::LargeResult => {
                match protocol {
                    Protocol::Simple => c.query(&big_select(rows_per_op)),
                    Protocol::Extended => {
                        c.parse("", &big_select(rows_per_op));
                        c.bind_execute_sync("", &[]);
                    }
                    Protocol::Prepared => c.bind_execute_sync("s", &[]),
                }
                c.round_trip(1, |_, at| lat.push(at - t0)).await?
            }
            Kind::CopyOut => {
                c.query(&format!("copy ({}) to stdout", big_select(rows_per_op)));
                c.round_trip(1, |_, at| lat.push(at - t0)).await?
            }
            Kind::CopyIn => {
                let o = c
                    .copy_in("copy gh_load_copy_in from stdin", &self.chunk, self.sc.copy_bytes())
                    .await?;
                lat.push(t0.elapsed());
                o
            }
            Kind::Approvals => {
                let Some((addr, token)) = approval else {
                    bail!("no admin API for this target");
                };
                c.query(&format!(
                    "update gh_load_accounts set abalance = abalance where aid = {}",
                    keys.first().copied().unwrap_or(1)
                ));
                c.flush().await?;
                match c.until_notice().await? {
                    Some(notice) => {
                        let id = crate::pg::review_id(&notice)
                            .with_context(|| format!("no review id in the notice {notice:?}"))?;
                        crate::admin::approve(&addr, &token, &id).await?;
                        let o = c.finish(|_| {}).await?;
                        lat.push(t0.elapsed());
                        o
                    }
                    None => {
                        self.not_held += 1;
                        bail!("the statement was not held for approval");
                    }
                }
            }
            Kind::Storm | Kind::MysqlPointSelect => handled_above()?,
        };
        Ok(Done {
            latencies: lat,
            rows: outcome.rows,
            bytes: outcome.bytes,
        })
    }
}

fn handled_above() -> Result<crate::pg::Outcome> {
    bail!("storm and MySQL scenarios are handled above")
}

/// Runs operations until the bound says stop; returns the measurements,
/// the statements that were not held (approvals) and when the client stopped.
/// The client connects first, then waits at `gate` for the bound (sent
/// once the idle connections of idle_plus_work are open).
async fn client_loop(
    mut cl: Client,
    mut gate: tokio::sync::watch::Receiver<Option<Arc<Bound>>>,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> (Recorder, u64, Instant) {
    let mut rec = Recorder::new();
    let op_timeout = Duration::from_secs_f64(cl.sc.op_timeout_s);
    let _ = tokio::time::timeout(op_timeout, cl.ensure_conn()).await;
    ready.fetch_add(1, Ordering::Relaxed);
    let bound = match gate.wait_for(Option::is_some).await {
        Ok(b) => b.clone(),
        Err(_) => None,
    };
    let Some(bound) = bound else {
        return (rec, 0, Instant::now());
    };
    let batch = match cl.sc.kind {
        Kind::PointSelect | Kind::WideRows | Kind::IdlePlusWork => cl.sc.pipeline,
        _ => 1,
    };
    loop {
        // Connection set-up and per-operation preparation are not timed.
        if bound.stopped() {
            break;
        }
        let prep = tokio::time::timeout(op_timeout, cl.before()).await;
        let prep_err = match prep {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("timed out connecting".to_string()),
        };
        let go = bound.next(Instant::now(), batch as u64);
        if go == Go::Stop {
            break;
        }
        let measured = go == Go::Measure;
        if let Some(e) = prep_err {
            cl.conn = None;
            cl.my = None;
            if measured {
                rec.error(e);
                bound.errors.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50).min(bound.remaining(Instant::now()))).await;
            continue;
        }
        match tokio::time::timeout(op_timeout, cl.op(batch)).await {
            Ok(Ok(d)) => {
                if measured {
                    for l in &d.latencies {
                        rec.record(*l);
                    }
                    rec.rows += d.rows;
                    rec.bytes += d.bytes;
                    bound.done.fetch_add(d.latencies.len() as u64, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                cl.conn = None;
                cl.my = None;
                if measured {
                    rec.error(format!("{e:#}"));
                    bound.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                cl.conn = None;
                cl.my = None;
                if measured {
                    rec.error(format!("operation timed out after {} s", cl.sc.op_timeout_s));
                    bound.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let stopped_at = Instant::now();
    if let Some(c) = cl.conn.take() {
        c.close().await;
    }
    if let Some(c) = cl.my.take() {
        c.close().await;
    }
    (rec, cl.not_held, stopped_at)
}

/// Opens `n` logged-in connections, `parallel` at a time, within `limit`.
async fn open_idle(p: &ConnectParams, n: usize, limit: Duration, progress: &Progress) -> (Vec<Conn>, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut conns = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let parallel = 64;
    let mut started = 0usize;
    let mut last = Instant::now();
    while (started < n || !set.is_empty()) && Instant::now() < deadline {
        while started < n && set.len() < parallel {
            let p = p.clone();
            set.spawn(async move { Conn::connect(&p, None).await });
            started += 1;
        }
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), set.join_next()).await {
            Ok(Some(Ok(Ok(c)))) => conns.push(c),
            Ok(Some(Ok(Err(e)))) => {
                if errors.len() < 5 {
                    errors.push(e.to_string());
                }
                // Stop early when the target refuses outright.
                if errors.len() >= 5 && conns.is_empty() {
                    break;
                }
            }
            Ok(Some(Err(_))) | Ok(None) => {}
            Err(_) => break,
        }
        if last.elapsed() > Duration::from_millis(500) {
            progress.line(&format!("opening idle connections: {}/{n}", conns.len()));
            last = Instant::now();
        }
    }
    set.abort_all();
    (conns, errors)
}

/// The live progress line on stderr.
pub struct Progress {
    pub label: String,
    tty: bool,
    /// Without a terminal, a line every 5 s rather than a line redrawn every second.
    last: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    pub fn new(label: String) -> Progress {
        Progress {
            label,
            tty: std::io::stderr().is_terminal(),
            last: std::cell::Cell::new(None),
        }
    }
    pub fn line(&self, s: &str) {
        if !self.tty {
            if self.last.get().is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return;
            }
            self.last.set(Some(Instant::now()));
        }
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{} {s}", self.label);
        } else {
            let _ = writeln!(e, "{} {s}", self.label);
        }
        let _ = e.flush();
    }
    pub fn done(&self, s: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(e, "\r\x1b[2K{} {s}", self.label);
        } else {
            let _ = writeln!(e, "{} {s}", self.label);
        }
    }
}

pub async fn run(sc: &Scenario, ep: &Endpoint, tables: Tables, progress: &Progress) -> Result<Measured> {
    let sc = Arc::new(sc.clone());
    let ep = Arc::new(ep.clone());
    let sampler = ep
        .pid
        .map(|p| procmon::RssSampler::start(p, Duration::from_millis(100)));
    let mut extra = Extra::default();

    // The working clients connect first (so that they are not the ones
    // refused when a limit is reached), then the idle connections open, then
    // the clock starts.
    let tls = sc.tls.then(crate::pg::tls_connector);
    let chunk = Arc::new(if sc.kind == Kind::CopyIn {
        copy_chunk()
    } else {
        Vec::new()
    });
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(None);
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(sc.clients);
    for i in 0..sc.clients {
        let cl = Client {
            sc: sc.clone(),
            ep: ep.clone(),
            tables,
            rng: Rng::new(((std::process::id() as u64) << 20) + i as u64 + 1),
            conn: None,
            my: None,
            tls: tls.clone(),
            chunk: chunk.clone(),
            not_held: 0,
        };
        handles.push(tokio::spawn(client_loop(cl, gate_rx.clone(), ready.clone())));
    }

    let mut idle = Vec::new();
    let mut rss_before_idle = None;
    if sc.kind == Kind::IdlePlusWork {
        let mut p = ep.params.clone();
        if let Some(db) = &ep.idle_dbname {
            p.dbname = db.clone();
        }
        p.tls = false;
        // Let the working clients log in first.
        let t = Instant::now();
        while ready.load(Ordering::Relaxed) < sc.clients && t.elapsed() < Duration::from_secs_f64(sc.op_timeout_s) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        rss_before_idle = ep.pid.and_then(|p| procmon::status_kib(p, "VmRSS"));
        let (conns, errors) = open_idle(&p, sc.idle_connections, Duration::from_secs(180), progress).await;
        extra.idle_first_error = errors.first().cloned();
        extra.idle_requested = Some(sc.idle_connections);
        extra.idle_opened = Some(conns.len());
        extra.idle_open_s = Some(t.elapsed().as_secs_f64());
        if conns.len() < sc.idle_connections {
            progress.done(&format!(
                "opened {} of {} idle connections in {:.1} s; first errors: {}",
                conns.len(),
                sc.idle_connections,
                t.elapsed().as_secs_f64(),
                errors.join(" | ")
            ));
        }
        idle = conns;
    }

    let start = Instant::now() + Duration::from_millis(20);
    let bound = Arc::new(Bound::new(
        start,
        Duration::from_secs_f64(sc.warmup_s),
        Duration::from_secs_f64(sc.duration_s),
        sc.max_ops,
    ));
    let _ = gate_tx.send(Some(bound.clone()));

    // CPU from the start of the measured phase.
    tokio::time::sleep_until(bound.measure_from.into()).await;
    let cpu0 = ep.pid.and_then(procmon::cpu_seconds);
    let me = std::process::id();
    let hcpu0 = procmon::cpu_seconds(me);

    // Progress until every client has finished, or the hard limit.
    let hard = bound.deadline + Duration::from_secs_f64(sc.op_timeout_s) + Duration::from_secs(5);
    let mut last = (Instant::now(), 0u64);
    loop {
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        let now = Instant::now();
        if crate::INTERRUPTED.load(Ordering::Relaxed) {
            bound.stop();
        }
        if now >= hard {
            bound.stop();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last.0.elapsed() >= Duration::from_secs(1) {
            let done = bound.done.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let phase = if Instant::now() < bound.measure_from {
                "warm-up".to_string()
            } else {
                format!(
                    "{:5.1}/{:.0} s",
                    bound.measure_from.elapsed().as_secs_f64().min(sc.duration_s),
                    sc.duration_s
                )
            };
            progress.line(&format!(
                "{phase}  ops {done}  {rate:.0}/s  errors {}",
                bound.errors.load(Ordering::Relaxed)
            ));
            last = (Instant::now(), done);
        }
    }
    let hard_stopped = Instant::now();
    let cpu1 = ep.pid.and_then(procmon::cpu_seconds);
    let hcpu1 = procmon::cpu_seconds(me);

    let mut rec = Recorder::new();
    let mut aborted = 0;
    let mut not_held = 0;
    let mut last_stop = bound.measure_from;
    for h in handles {
        if !h.is_finished() {
            h.abort();
            aborted += 1;
            last_stop = last_stop.max(hard_stopped);
            continue;
        }
        if let Ok((r, nh, at)) = h.await {
            rec.merge(&r);
            not_held += nh;
            last_stop = last_stop.max(at);
        }
    }
    // Measured time: from the end of the warm-up until the last client
    // stopped (an operation started before the deadline counts in full).
    let elapsed_s = last_stop.saturating_duration_since(bound.measure_from).as_secs_f64();
    if aborted > 0 {
        extra.aborted_clients = Some(aborted);
        rec.error(format!("{aborted} clients did not stop in time and were aborted"));
    }
    if sc.kind == Kind::Approvals {
        extra.not_held = Some(not_held);
    }
    if !idle.is_empty() {
        extra.idle_alive = Some(idle.iter().filter(|c| c.alive()).count());
    }
    let vmhwm = ep.pid.and_then(|p| procmon::status_kib(p, "VmHWM"));
    let rss_peak = sampler.map(|s| s.finish());
    // The growth from before the idle connections opened to the peak sampled
    // while they were held (VmRSS read once can lag behind).
    if let (Some(a), Some(b), false) = (rss_before_idle, rss_peak, idle.is_empty()) {
        extra.rss_per_idle_kib = Some(b.saturating_sub(a) as f64 / idle.len() as f64);
    }
    // Close the idle connections politely, without waiting long.
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        for c in idle {
            c.close().await;
        }
    })
    .await;
    Ok(Measured {
        rec,
        elapsed_s,
        cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        harness_cpu_s: hcpu0.zip(hcpu1).map(|(a, b)| b - a),
        rss_peak_kib: rss_peak,
        vmhwm_kib: vmhwm,
        extra,
    })
}

/// Creates the database and the tables the scenarios read, if missing,
/// through `ep` (the direct target).
pub async fn setup(ep: &Endpoint, database: &str, tables: Tables) -> Result<()> {
    if database.is_empty()
        || !database
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("database {database:?}: lower-case letters, digits and _ only");
    }
    let mut p = ep.params.clone();
    p.tls = false;
    p.dbname = "postgres".into();
    let mut c = Conn::connect(&p, None)
        .await
        .with_context(|| format!("connecting to {} at {}:{}", ep.name, p.host, p.port))?;
    c.query(&format!("select 1 from pg_database where datname = '{database}'"));
    let o = c.round_trip(1, |_, _| {}).await?;
    if o.rows == 0 {
        c.simple(&format!("create database {database}")).await?;
    }
    c.close().await;
    p.dbname = database.into();
    let mut c = Conn::connect(&p, None).await?;
    c.simple(
        "create table if not exists gh_load_accounts (aid int primary key, abalance int not null default 0, filler char(84))",
    )
    .await?;
    c.simple(
        "create table if not exists gh_load_secrets (id int primary key, owner text, email text, \
         aws_access_key_id text, aws_secret text, dsn text, note text, payload text)",
    )
    .await?;
    let n = count(&mut c, "gh_load_accounts").await?;
    if n != tables.accounts {
        c.simple("truncate gh_load_accounts").await?;
        c.simple(&format!(
            "insert into gh_load_accounts select g, 0, '' from generate_series(1, {}) g",
            tables.accounts
        ))
        .await?;
        c.simple("analyze gh_load_accounts").await?;
    }
    let n = count(&mut c, "gh_load_secrets").await?;
    if n != tables.secret_rows {
        c.simple("truncate gh_load_secrets").await?;
        // Every row carries three secrets the built-in rules mask: an AWS
        // access key ID, an AWS secret assigned to its name, a password in a
        // PostgreSQL URI; and plain columns around them.
        c.simple(&format!(
            "insert into gh_load_secrets select g, 'user ' || g, 'user' || g || '@example.com', \
             'AKIA' || upper(substr(md5(g::text), 1, 16)), \
             'aws_secret_access_key = ' || substr(encode(sha256(g::text::bytea), 'base64'), 1, 40), \
             'postgres://app:' || substr(md5('p' || g), 1, 14) || '@db' || g || '.internal:5432/app', \
             'rotated on ' || (date '2024-01-01' + (g % 365)) || ', ticket OPS-' || (g * 7 % 10000), \
             repeat(md5(g::text), 4) from generate_series(1, {}) g",
            tables.secret_rows
        ))
        .await?;
        c.simple("analyze gh_load_secrets").await?;
    }
    c.close().await;
    Ok(())
}

async fn count(c: &mut Conn, table: &str) -> Result<u64> {
    let v = c.scalar(&format!("select count(*) from {table}")).await?;
    v.as_deref()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("count of {table}: {v:?}"))
}

/// pgbench with the point select, same clients and duration, for comparison.
pub async fn pgbench(sc: &Scenario, ep: &Endpoint, tables: Tables, dir: &std::path::Path) -> Result<f64> {
    let script = dir.join("point-select.sql");
    std::fs::write(
        &script,
        format!(
            "\\set aid random(1, {})\nselect abalance from gh_load_accounts where aid = :aid;\n",
            tables.accounts
        ),
    )?;
    let mode = match sc.protocol {
        Protocol::Simple => "simple",
        Protocol::Extended => "extended",
        Protocol::Prepared => "prepared",
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(sc.clients);
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-n", "-M", mode])
        .arg("-c")
        .arg(sc.clients.to_string())
        .arg("-j")
        .arg(threads.to_string())
        .arg("-T")
        .arg(format!("{}", sc.duration_s.ceil() as u64))
        .arg("-h")
        .arg(&ep.params.host)
        .arg("-p")
        .arg(ep.params.port.to_string())
        .arg("-U")
        .arg(&ep.params.user)
        .arg("-f")
        .arg(&script)
        .arg(&ep.params.dbname)
        .env("PGSSLMODE", if sc.tls { "require" } else { "disable" })
        .env_remove("PGHOST")
        .env_remove("PGSERVICE")
        .kill_on_drop(true);
    match &ep.params.password {
        Some(pw) => cmd.env("PGPASSWORD", pw),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let limit = Duration::from_secs_f64(sc.duration_s + 30.0);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .context("pgbench did not finish in time")?
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_pgbench_tps(&text).with_context(|| {
        format!(
            "pgbench against {}: {}",
            ep.name,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
        )
    })
}

pub fn parse_pgbench_tps(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output() {
        let out = "latency average = 0.604 ms\ninitial connection time = 3.1 ms\ntps = 53008.123456 (without initial connection time)\n";
        assert_eq!(parse_pgbench_tps(out), Some(53008.123456));
        assert_eq!(parse_pgbench_tps("nothing"), None);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(100) < 100);
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn copy_chunk_is_whole_lines() {
        let c = copy_chunk();
        assert!(c.len() >= 64 * 1024);
        assert_eq!(c.last(), Some(&b'\n'));
        assert!(c
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| l.split(|&b| b == b'\t').count() == 3));
    }
}
