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
        self.with_client("announcing a reload", move |c| {
            Box::pin(async move {
                c.execute("SELECT pg_notify($1, $2)", &[&RELOADS_CHANNEL, &request])
                    .await
            })
        })
        .await?;
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

    /// Reloads this instance's own file as another instance asked.
    pub(super) async fn on_reload(self: Arc<Self>, payload: String) {
        let Ok(req) = serde_json::from_str::<ReloadRequest>(&payload) else {
            return;
        };
        if req.from == self.instance {
            return;
        }
        let ops = self.ops.clone();
        let outcome = match tokio::task::spawn_blocking(move || ops.reload()).await {
            Ok(Ok(())) => "reloaded".to_string(),
            Ok(Err(e)) => format!("refused: {e}"),
            Err(_) => "reload failed".to_string(),
        };
        tracing::info!(target: "gatehouse::admin", by = %req.by, via = %format!("instance {}", req.from), outcome = %outcome, "configuration reload asked by another instance");
        if let Err(e) = self.record_reload(&outcome).await {
            tracing::warn!(target: "gatehouse::fleet", error = %e, "reload outcome not written");
        }
    }
}
