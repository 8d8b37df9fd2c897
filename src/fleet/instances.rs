//! The fleet's instances: who is there (each writes a heartbeat with the
//! periodic sync), and reloads of every instance's configuration.
//!
//! Configuration stays in each instance's own file, distributed by
//! whatever manages the machines (the appliance's seed, configuration
//! management). A reload asked of one instance with `?fleet=true` is
//! announced to the others, which each re-read their own file and write
//! the outcome to the control database, where the asking instance reads
//! them back for its answer.

use super::sessions::alive_window;
use super::{Fleet, RELOADS_CHANNEL};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// How long a fleet-wide reload waits for the other instances' outcomes.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// An instance as the control database knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub name: String,
    /// Its admin listener (where its live sessions are tailed).
    pub admin: Option<String>,
    /// Its PostgreSQL listener, as other instances reach it.
    pub data: Option<String>,
    pub started: u64,
    pub last_seen: u64,
    /// Heard from within the liveness window.
    pub alive: bool,
    pub reloaded: Option<u64>,
    pub reload_outcome: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReloadRequest {
    from: String,
    by: String,
    /// Unix ms of the request: outcomes written after it answer it.
    at_ms: i64,
}

impl Fleet {
    /// Every instance the control database has heard of.
    pub async fn instances(&self) -> Result<Vec<Instance>, String> {
        let window = alive_window(self.settings.sync_ms) as f64;
        let rows = self
            .with_client("listing instances", move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT name, admin, data, extract(epoch FROM started)::int8, extract(epoch FROM last_seen)::int8, \
                         last_seen > now() - make_interval(secs => $1), extract(epoch FROM reloaded)::int8, reload_outcome \
                         FROM gatehouse.instances ORDER BY name",
                        &[&window],
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Instance {
                name: r.get(0),
                admin: r.get(1),
                data: r.get(2),
                started: r.get::<_, i64>(3).max(0) as u64,
                last_seen: r.get::<_, i64>(4).max(0) as u64,
                alive: r.get(5),
                reloaded: r.get::<_, Option<i64>>(6).map(|v| v.max(0) as u64),
                reload_outcome: r.get(7),
            })
            .collect())
    }

    /// Writes this instance's reload outcome.
    pub async fn record_reload(&self, outcome: &str) -> Result<(), String> {
        let (name, outcome) = (self.instance.clone(), outcome.to_string());
        self.with_client("recording a reload", move |c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE gatehouse.instances SET reloaded = clock_timestamp(), reload_outcome = $2 WHERE name = $1",
                    &[&name as &(dyn ToSql + Sync), &outcome],
                )
                .await
            })
        })
        .await
        .map(|_| ())
    }

    /// Asks every other instance to reload; returns, per live instance,
    /// its outcome (or that it has not answered within `RELOAD_WAIT`).
    pub async fn reload_all(&self, by: &str) -> Result<Vec<(String, String)>, String> {
        let at_ms = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)) as i64;
        let request = serde_json::to_string(&ReloadRequest {
            from: self.instance.clone(),
            by: by.to_string(),
            at_ms,
        })
        .map_err(|e| e.to_string())?;
        self.request("reload", RELOADS_CHANNEL, request).await?;
        let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
        loop {
            let others: Vec<Instance> = self
                .instances()
                .await?
                .into_iter()
                .filter(|i| i.alive && i.name != self.instance)
                .collect();
            let answered = |i: &Instance| {
                i.reloaded.is_some_and(|t| (t as i64) * 1000 >= at_ms - 1000) && i.reload_outcome.is_some()
            };
            if others.iter().all(answered) || tokio::time::Instant::now() >= deadline {
                return Ok(others
                    .into_iter()
                    .map(|i| {
                        let outcome = if answered(&i) {
                            i.reload_outcome.clone().unwrap_or_default()
                        } else {
                            "no answer yet".to_string()
                        };
                        (i.name, outcome)
                    })
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a request for other instances and announces its id: the
    /// request itself is in a table only gatehouse's role writes, so a
    /// NOTIFY sent by anyone else names nothing.
    pub(super) async fn request(&self, kind: &'static str, channel: &'static str, body: String) -> Result<(), String> {
        self.with_client("asking the other instances", move |c| {
            Box::pin(async move {
                c.execute(
                    "WITH r AS (INSERT INTO gatehouse.requests (kind, body) VALUES ($1, $2::text::jsonb) RETURNING id) \
                     SELECT pg_notify($3, id::text) FROM r",
                    &[&kind as &(dyn ToSql + Sync), &body, &channel],
                )
                .await
            })
        })
        .await
        .map(|_| ())
    }

    /// Reads an announced request and acts on it (a minute old at most).
    pub(super) async fn on_request(self: Arc<Self>, payload: String) {
        let Ok(id) = payload.parse::<i64>() else {
            return;
        };
        let row = self
            .with_client("reading a request", move |c| {
                Box::pin(async move {
                    c.query_opt(
                        "SELECT kind, body::text FROM gatehouse.requests WHERE id = $1 AND created > now() - interval '1 minute'",
                        &[&id],
                    )
                    .await
                })
            })
            .await;
        let (kind, body): (String, String) = match row {
            Ok(Some(r)) => (r.get(0), r.get(1)),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target: "gatehouse::fleet", error = %e, "a request of another instance not read");
                return;
            }
        };
        match kind.as_str() {
            "kill" => {
                if let Ok(k) = serde_json::from_str(&body) {
                    self.on_kill(k).await;
                }
            }
            "reload" => {
                if let Ok(r) = serde_json::from_str::<ReloadRequest>(&body) {
                    self.on_reload(r).await;
                }
            }
            _ => {}
        }
    }

    /// Reloads this instance's own file as another instance asked (one
    /// reload at a time; a request that finds one running is answered by
    /// it).
    async fn on_reload(&self, req: ReloadRequest) {
        if req.from == self.instance {
            return;
        }
        if self.reloading.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let ops = self.ops.clone();
        let outcome = match tokio::task::spawn_blocking(move || ops.reload()).await {
            Ok(Ok(())) => "reloaded".to_string(),
            Ok(Err(e)) => format!("refused: {e}"),
            Err(_) => "reload failed".to_string(),
        };
        self.reloading.store(false, std::sync::atomic::Ordering::Release);
        tracing::info!(target: "gatehouse::admin", by = %req.by, via = %format!("instance {}", req.from), outcome = %outcome, "configuration reload asked by another instance");
        if let Some(rec) = &self.recorder {
            rec.audit(
                &req.by,
                &[],
                "reload",
                "configuration",
                &format!("{outcome}, via instance {}", req.from),
            )
            .await;
        }
        if let Err(e) = self.record_reload(&outcome).await {
            tracing::warn!(target: "gatehouse::fleet", error = %e, "reload outcome not written");
        }
    }
}
