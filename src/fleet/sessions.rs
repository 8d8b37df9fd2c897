//! Sessions across the fleet: each instance writes its live sessions to
//! the control database (when one opens or ends, checked every
//! `SESSIONS_TICK`, and their progress with the periodic sync), so that
//! any instance's admin API lists them all, kills one on another instance
//! (a NOTIFY the owner acts on), and passes a CancelRequest the load
//! balancer sent to the wrong instance to the one that has the session.

use super::{Fleet, KILLS_CHANNEL};
use crate::core::KillReason;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

/// How often an instance looks whether its sessions changed.
pub const SESSIONS_TICK: Duration = Duration::from_millis(100);
/// Cancels passed on per second at most (a flood of made-up keys must not
/// turn into a flood of control queries and connections).
const CANCELS_PER_SECOND: u64 = 20;
/// How long a kill requested of another instance is waited for.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// A session of another instance, as the control database has it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteSession {
    pub instance: String,
    /// The instance's admin listener (where its live sessions are tailed).
    pub admin: Option<String>,
    pub id: String,
    pub identity: String,
    pub target: String,
    pub client_addr: String,
    pub started: u64,
    pub statements: u64,
    pub rows: u64,
}

/// A kill asked of the instance that has the session.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct KillRequest {
    pub instance: String,
    pub session: u32,
    pub by: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub from: String,
    pub reason: String,
}

/// What the data plane hands a cancel to.
pub(super) struct PeerCanceller {
    tx: mpsc::Sender<(u32, Vec<u8>)>,
    /// (second, count) of cancels passed on.
    window: AtomicU64,
}

impl PeerCanceller {
    pub(super) fn new(tx: mpsc::Sender<(u32, Vec<u8>)>) -> PeerCanceller {
        PeerCanceller {
            tx,
            window: AtomicU64::new(0),
        }
    }
}

impl crate::core::state::PeerCancel for PeerCanceller {
    fn forward(&self, pid: u32, secret: &[u8]) {
        // One word: the second in the high bits, the count in the low 16.
        let now = crate::policy::reviews::now_unix();
        let w = self.window.load(Ordering::Relaxed);
        let (sec, n) = (w >> 16, w & 0xffff);
        let next = if sec == now {
            (sec << 16) | (n + 1)
        } else {
            (now << 16) | 1
        };
        if sec == now && n >= CANCELS_PER_SECOND {
            return;
        }
        if self
            .window
            .compare_exchange(w, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let _ = self.tx.try_send((pid, secret.to_vec()));
    }
}

/// A forwarded CancelRequest (gatehouse's code: never passed on again).
fn forwarded_cancel(pid: u32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + secret.len());
    let mut rest = pid.to_be_bytes().to_vec();
    rest.extend_from_slice(secret);
    crate::wire::pg::request_packet(&mut out, crate::wire::pg::FORWARDED_CANCEL_CODE, &rest);
    out
}

/// Seconds after its last heartbeat an instance's sessions stop being
/// listed.
pub fn alive_window(sync_ms: u64) -> i64 {
    ((sync_ms * 3) / 1000).max(10) as i64
}

impl Fleet {
    /// Writes the sessions that opened or ended since the last write; with
    /// `progress`, also the counts of those that ran something.
    pub(super) async fn sync_sessions(&self, progress: bool) -> Result<(), String> {
        let generation = self.shared.registry.generation();
        if !progress && generation == self.sessions_generation.load(Ordering::Acquire) {
            return Ok(());
        }
        let live = self.shared.registry.list_progress();
        let (gone, mut upsert) = {
            let written = self.sessions_written.lock().unwrap_or_else(|p| p.into_inner());
            let ids: std::collections::HashSet<u32> = live.iter().map(|(id, ..)| *id).collect();
            let gone: Vec<i64> = written
                .keys()
                .filter(|id| !ids.contains(id))
                .map(|id| *id as i64)
                .collect();
            let upsert: Vec<_> = live
                .iter()
                .filter(|(id, _, st, rows)| written.get(id) != Some(&(*st, *rows)))
                .cloned()
                .collect();
            (gone, upsert)
        };
        if gone.is_empty() && upsert.is_empty() {
            self.sessions_generation.store(generation, Ordering::Release);
            return Ok(());
        }
        upsert.truncate(50_000);
        let instance = self.instance.clone();
        let ids: Vec<i64> = upsert.iter().map(|(id, ..)| *id as i64).collect();
        let identity: Vec<String> = upsert.iter().map(|(_, i, ..)| i.identity.name.clone()).collect();
        let target: Vec<String> = upsert.iter().map(|(_, i, ..)| i.target.to_string()).collect();
        let client: Vec<String> = upsert.iter().map(|(_, i, ..)| i.client.to_string()).collect();
        let started: Vec<i64> = upsert.iter().map(|(_, i, ..)| i.started_unix as i64).collect();
        let st: Vec<i64> = upsert.iter().map(|(_, _, s, _)| *s as i64).collect();
        let rows: Vec<i64> = upsert.iter().map(|(_, _, _, r)| *r as i64).collect();
        let gone_q = gone.clone();
        self.with_client("writing sessions", move |c| {
            Box::pin(async move {
                if !gone_q.is_empty() {
                    c.execute(
                        "DELETE FROM gatehouse.sessions WHERE instance = $1 AND session = ANY($2)",
                        &[&instance as &(dyn ToSql + Sync), &gone_q],
                    )
                    .await?;
                }
                if !ids.is_empty() {
                    c.execute(
                        "INSERT INTO gatehouse.sessions (instance, session, identity, target, client, started, statements, rows) \
                         SELECT $1, u.* FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[]) \
                         AS u(session, identity, target, client, started, statements, rows) \
                         ON CONFLICT (instance, session) DO UPDATE SET statements = EXCLUDED.statements, rows = EXCLUDED.rows",
                        &[&instance as &(dyn ToSql + Sync), &ids, &identity, &target, &client, &started, &st, &rows],
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
        let mut written = self.sessions_written.lock().unwrap_or_else(|p| p.into_inner());
        for id in gone {
            written.remove(&(id as u32));
        }
        for (id, _, s, r) in upsert {
            written.insert(id, (s, r));
        }
        self.sessions_generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// After (re)connecting: this instance's rows are rewritten from
    /// scratch (an earlier run's are dropped).
    pub(super) async fn reset_sessions(&self) -> Result<(), String> {
        let instance = self.instance.clone();
        let data = self.data_addr.clone();
        self.with_client("resetting sessions", move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM gatehouse.sessions WHERE instance = $1", &[&instance])
                    .await?;
                c.execute(
                    "UPDATE gatehouse.instances SET data = $2 WHERE name = $1",
                    &[&instance, &data],
                )
                .await
            })
        })
        .await?;
        self.sessions_written.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.sessions_generation.store(u64::MAX, Ordering::Release);
        self.sync_sessions(true).await
    }

    /// The other live instances' sessions.
    pub async fn remote_sessions(&self) -> Result<Vec<RemoteSession>, String> {
        let instance = self.instance.clone();
        let window = alive_window(self.settings.sync_ms) as f64;
        let rows = self
            .with_client("listing sessions", move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT s.instance, s.session, s.identity, s.target, s.client, s.started, s.statements, s.rows, i.admin \
                         FROM gatehouse.sessions s JOIN gatehouse.instances i ON i.name = s.instance \
                         WHERE s.instance <> $1 AND i.last_seen > now() - make_interval(secs => $2) \
                         ORDER BY s.started LIMIT 100000",
                        &[&instance as &(dyn ToSql + Sync), &window],
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| RemoteSession {
                instance: r.get(0),
                id: r.get::<_, i64>(1).to_string(),
                identity: r.get(2),
                target: r.get(3),
                client_addr: r.get(4),
                started: r.get::<_, i64>(5).max(0) as u64,
                statements: r.get::<_, i64>(6).max(0) as u64,
                rows: r.get::<_, i64>(7).max(0) as u64,
                admin: r.get(8),
            })
            .collect())
    }

    /// Asks `instance` to kill its session `session`; `Ok(true)` once it is
    /// gone from the list, `Ok(false)` when no such session is listed.
    pub async fn kill_remote(
        &self,
        instance: &str,
        session: u32,
        by: &str,
        roles: &[String],
        reason: &str,
    ) -> Result<bool, String> {
        let request = serde_json::to_string(&KillRequest {
            instance: instance.to_string(),
            session,
            by: by.to_string(),
            roles: roles.to_vec(),
            from: self.instance.clone(),
            reason: reason.to_string(),
        })
        .map_err(|e| e.to_string())?;
        if !self.session_listed(instance, session).await? {
            return Ok(false);
        }
        self.request("kill", KILLS_CHANNEL, request).await?;
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !self.session_listed(instance, session).await? {
                return Ok(true);
            }
        }
        Err(format!(
            "{instance} was asked to kill session {session} and has not yet"
        ))
    }

    async fn session_listed(&self, instance: &str, session: u32) -> Result<bool, String> {
        let (instance, sid) = (instance.to_string(), session as i64);
        self.with_client("finding a session", move |c| {
            Box::pin(async move {
                Ok(c.query_opt(
                    "SELECT 1 FROM gatehouse.sessions WHERE instance = $1 AND session = $2",
                    &[&instance as &(dyn ToSql + Sync), &sid],
                )
                .await?
                .is_some())
            })
        })
        .await
    }

    /// Acts on a kill another instance asked for (if it is this one's),
    /// and writes it to this instance's audit log.
    pub(super) async fn on_kill(&self, k: KillRequest) {
        if k.instance != self.instance {
            return;
        }
        let killed = self.shared.registry.kill(k.session, KillReason::Admin);
        let via = format!("instance {}", k.from);
        tracing::info!(
            target: "gatehouse::admin",
            session = k.session,
            by = %k.by,
            via = %via,
            reason = ?k.reason,
            killed,
            "session kill asked by another instance"
        );
        if let Some(rec) = &self.recorder {
            let outcome = match (killed, k.reason.is_empty()) {
                (false, _) => format!("not found, via {via}"),
                (true, true) => format!("killed, via {via}"),
                (true, false) => format!("killed, reason: {}, via {via}", k.reason),
            };
            rec.audit(&k.by, &k.roles, "kill", &format!("session {}", k.session), &outcome)
                .await;
        }
    }

    /// Passes a cancel to the instances listing a session with this id
    /// (each checks the key; only the session's own acts).
    pub(super) async fn forward_cancel(self: Arc<Self>, pid: u32, secret: Vec<u8>) {
        let mut addrs: Vec<String> = Vec::new();
        for attempt in 0..2 {
            let instance = self.instance.clone();
            let sid = pid as i64;
            match self
                .with_client("finding a session to cancel", move |c| {
                    Box::pin(async move {
                        c.query(
                            "SELECT DISTINCT i.data FROM gatehouse.sessions s JOIN gatehouse.instances i ON i.name = s.instance \
                             WHERE s.session = $1 AND s.instance <> $2 AND i.data IS NOT NULL",
                            &[&sid as &(dyn ToSql + Sync), &instance],
                        )
                        .await
                    })
                })
                .await
            {
                Ok(rows) => addrs = rows.iter().map(|r| r.get::<_, String>(0)).collect(),
                Err(e) => {
                    tracing::warn!(target: "gatehouse::fleet", error = %e, "cancel not passed on");
                    return;
                }
            }
            if !addrs.is_empty() || attempt == 1 {
                break;
            }
            // A session that opened a moment ago may not be written yet.
            tokio::time::sleep(SESSIONS_TICK * 3).await;
        }
        if addrs.is_empty() {
            tracing::info!(target: "gatehouse::fleet", session = pid, "cancel request for no session in the fleet ignored");
            return;
        }
        let packet = forwarded_cancel(pid, &secret);
        for addr in addrs {
            let packet = packet.clone();
            let timeout = self.timeout();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let sent = tokio::time::timeout(timeout, async {
                    let mut s = tokio::net::TcpStream::connect(&addr).await?;
                    s.write_all(&packet).await?;
                    s.shutdown().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => {
                        tracing::info!(target: "gatehouse::fleet", session = pid, to = %addr, "cancel request passed on")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(target: "gatehouse::fleet", to = %addr, error = %e, "cancel request not passed on")
                    }
                    Err(_) => {
                        tracing::warn!(target: "gatehouse::fleet", to = %addr, "cancel request not passed on: timed out")
                    }
                }
            });
        }
    }
}

/// The address other instances reach this one's PostgreSQL listener at:
/// `[fleet] advertise`, else the first PostgreSQL listener unless it is a
/// wildcard address.
pub fn data_address(config: &crate::config::Config) -> Option<String> {
    if let Some(a) = config.fleet.as_ref().and_then(|f| f.advertise.clone()) {
        return Some(a);
    }
    let first = config
        .server
        .listen
        .iter()
        .find(|l| l.protocol() == crate::config::Protocol::Postgres)?;
    let addr: std::net::SocketAddr = first.address().parse().ok()?;
    if addr.ip().is_unspecified() {
        tracing::warn!(target: "gatehouse::fleet", "cancels cannot be passed to this instance: it listens on a wildcard address and [fleet] has no advertise");
        return None;
    }
    Some(addr.to_string())
}

/// Sessions written, by id: (statements, rows) as last written.
pub(super) type Written = HashMap<u32, (u64, u64)>;
