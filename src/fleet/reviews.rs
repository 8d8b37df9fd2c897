//! Reviews shared by the fleet: written through to the control database
//! as this instance opens and withdraws them, decided there in one
//! transaction each, and mirrored back into every instance's `Reviews`.
//!
//! The row is the truth. A decision locks it (`FOR UPDATE`), applies the
//! same rules as a lone instance (`record_approval` / `record_denial`),
//! writes it and NOTIFYs; the instance holding the statement reads the row
//! and its session, polling its local copy, sees the outcome. The periodic
//! sync re-reads every open review, so a lost notification costs at most
//! `sync_ms`.

use super::{Fleet, Outbound, REVIEWS_CHANNEL, UNREACHABLE};
use crate::policy::reviews::{now_unix, record_approval, record_denial, Grant, Review, ReviewError, Status};

/// Seconds past a review's own timeout before any instance withdraws it:
/// the instance holding it normally ends it first.
pub const SWEEP_GRACE_SECS: u64 = 5;
/// Decided reviews loaded at start, for the inbox's history.
const HISTORY: i64 = 200;
/// Days a decided review stays in the control database.
pub const RETENTION_DAYS: i32 = 30;

/// A decision on a shared review.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    Approve(Grant),
    Deny(&'a str),
}

impl Fleet {
    /// Writes what this instance did to one of its reviews.
    pub(super) async fn write_through(&self, ev: Outbound) {
        match ev {
            Outbound::Opened(r) => {
                self.mine.lock().unwrap_or_else(|p| p.into_inner()).insert(r.id.clone());
                if let Err(e) = self.insert(&r).await {
                    tracing::warn!(target: "gatehouse::fleet", review = %r.id, error = %e, "review not written to the control database: withdrawn");
                    self.reviews.withdraw(&r.id, UNREACHABLE);
                }
            }
            Outbound::Withdrawn(r) => {
                if let Err(e) = self.end_mine(&r).await {
                    tracing::warn!(target: "gatehouse::fleet", review = %r.id, error = %e, "withdrawal not written yet (the sync retries)");
                }
            }
        }
    }

    async fn insert(&self, r: &Review) -> Result<(), String> {
        let json = serde_json::to_string(r).map_err(|e| e.to_string())?;
        let deadline = (r.created + r.request.timeout_secs + SWEEP_GRACE_SECS) as i64;
        let (id, instance, identity) = (r.id.clone(), self.instance.clone(), r.request.identity.clone());
        self.with_client("opening a review", move |c| {
            Box::pin(async move {
                c.execute(
                    "WITH i AS (INSERT INTO gatehouse.reviews (id, instance, identity, status, deadline, review) \
                     VALUES ($1, $2, $3, 'pending', $4, $5::text::jsonb) RETURNING id) \
                     SELECT pg_notify($6, id) FROM i",
                    &[&id, &instance, &identity, &deadline, &json, &REVIEWS_CHANNEL],
                )
                .await
            })
        })
        .await
        .map(|_| ())
    }

    /// Writes this instance's end of its own review (withdrawn: timed out,
    /// cancelled, disconnected) unless it was decided meanwhile.
    async fn end_mine(&self, r: &Review) -> Result<(), String> {
        let json = serde_json::to_string(r).map_err(|e| e.to_string())?;
        let id = r.id.clone();
        let changed = self
            .with_client("ending a review", move |c| {
                Box::pin(async move {
                    c.execute(
                        "WITH u AS (UPDATE gatehouse.reviews SET status = 'withdrawn', review = $2::text::jsonb, updated = now() \
                         WHERE id = $1 AND status = 'pending' RETURNING id) SELECT pg_notify($3, id) FROM u",
                        &[&id, &json, &REVIEWS_CHANNEL],
                    )
                    .await
                })
            })
            .await?;
        if changed == 0 {
            tracing::info!(target: "gatehouse::fleet", review = %r.id, "review ended here after it was decided elsewhere (or it was never written): the statement did not run");
        }
        self.mine.lock().unwrap_or_else(|p| p.into_inner()).remove(&r.id);
        Ok(())
    }

    /// Reads one review (announced by a notification) and mirrors it.
    pub(super) async fn fetch(&self, id: &str) -> Result<(), String> {
        let id = id.to_string();
        let rows = self
            .with_client("reading a review", move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT instance, review::text FROM gatehouse.reviews WHERE id = $1",
                        &[&id],
                    )
                    .await
                })
            })
            .await?;
        for row in rows {
            self.apply(row.get(0), row.get(1)).await;
        }
        Ok(())
    }

    /// Takes one row's state into this instance.
    async fn apply(&self, instance: String, text: String) {
        let review: Review = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "gatehouse::fleet", error = %e, "a review in the control database is unreadable: skipped");
                return;
            }
        };
        if instance == self.instance && review.status == Status::Pending {
            match self.reviews.get(&review.id) {
                Some(local) if local.status == Status::Pending => self.reviews.mirror(review),
                Some(local) if matches!(local.status, Status::Withdrawn { .. }) => {
                    // Ended here, not yet written there.
                    if let Err(e) = self.end_mine(&local).await {
                        tracing::warn!(target: "gatehouse::fleet", error = %e, "withdrawal not written yet");
                    }
                }
                Some(_) => {}
                None => {
                    // An earlier run of this instance held it: its session
                    // is gone with that process.
                    let mut ended = review.clone();
                    ended.status = Status::Withdrawn {
                        why: format!("its instance ({}) restarted", self.instance),
                    };
                    if let Err(e) = self.end_mine(&ended).await {
                        tracing::warn!(target: "gatehouse::fleet", error = %e, "withdrawal not written yet");
                    }
                }
            }
            return;
        }
        if review.status != Status::Pending {
            self.mine.lock().unwrap_or_else(|p| p.into_inner()).remove(&review.id);
        }
        self.reviews.mirror(review);
    }

    /// The periodic sync: heartbeat, withdraw reviews past their deadline
    /// whose instance did not end them, re-read the open reviews and the
    /// live grants; at the first sync after connecting, the recent history.
    pub(super) async fn sync(&self, first: bool) -> Result<(), String> {
        let (name, admin, incarnation) = (self.instance.clone(), self.admin.clone(), self.incarnation.clone());
        let alive_ms = (self.settings.sync_ms * 3) as f64 / 1000.0;
        let now = now_unix() as i64;
        let open = self.reviews.open_ids();
        let looked_for = open.clone();
        let (rows, history) = self
            .with_client("syncing", move |c| {
                Box::pin(async move {
                    // The heartbeat; refused while another run of this name
                    // beats (two instances under one name would overwrite
                    // each other's sessions and counts).
                    let beat = c
                        .query_opt(
                            "INSERT INTO gatehouse.instances AS i (name, admin, incarnation) VALUES ($1, $2, $3) \
                             ON CONFLICT (name) DO UPDATE SET admin = $2, last_seen = now(), incarnation = $3, \
                             started = CASE WHEN i.incarnation IS DISTINCT FROM $3 THEN now() ELSE i.started END \
                             WHERE i.incarnation IS NULL OR i.incarnation = $3 \
                             OR i.last_seen < now() - make_interval(secs => $4) RETURNING name",
                            &[&name as &(dyn tokio_postgres::types::ToSql + Sync), &admin, &incarnation, &alive_ms],
                        )
                        .await?;
                    if beat.is_none() {
                        return Ok(Err(format!(
                            "another live instance runs under the name {name}: each instance needs a name of its own"
                        )));
                    }
                    c.execute(
                        "DELETE FROM gatehouse.requests WHERE created < now() - interval '1 hour'",
                        &[],
                    )
                    .await?;
                    c.execute(
                        "WITH w AS (UPDATE gatehouse.reviews SET status = 'withdrawn', updated = now(), \
                         review = jsonb_set(review, '{status}', jsonb_build_object('state', 'withdrawn', 'why', \
                         'timed out (the instance ' || instance || ' that held it did not end it)')) \
                         WHERE status = 'pending' AND deadline < $1 RETURNING id) SELECT pg_notify($2, id) FROM w",
                        &[&now, &REVIEWS_CHANNEL],
                    )
                    .await?;
                    let rows = c
                        .query(
                            "SELECT instance, review::text FROM gatehouse.reviews WHERE status = 'pending' \
                             OR id = ANY($1) OR (status = 'approved' AND grant_until > $2)",
                            &[&looked_for, &now],
                        )
                        .await?;
                    let history = if first {
                        c.execute(
                            &format!(
                                "DELETE FROM gatehouse.reviews WHERE status <> 'pending' AND updated < now() - interval '{RETENTION_DAYS} days'"
                            ),
                            &[],
                        )
                        .await?;
                        c.query(
                            "SELECT instance, review::text FROM gatehouse.reviews WHERE status <> 'pending' \
                             ORDER BY updated DESC LIMIT $1",
                            &[&HISTORY],
                        )
                        .await?
                    } else {
                        Vec::new()
                    };
                    Ok(Ok((rows, history)))
                })
            })
            .await??;
        for row in history.into_iter().rev() {
            self.apply(row.get(0), row.get(1)).await;
        }
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let instance: String = row.get(0);
            let text: String = row.get(1);
            if let Ok(r) = serde_json::from_str::<Review>(&text) {
                seen.insert(r.id.clone());
            }
            self.apply(instance, text).await;
        }
        // Mirrored reviews the control database no longer has.
        for id in open {
            let mine = self.mine.lock().unwrap_or_else(|p| p.into_inner()).contains(&id);
            if !seen.contains(&id) && !mine {
                if let Some(mut r) = self.reviews.get(&id) {
                    r.status = Status::Withdrawn {
                        why: "no longer in the fleet's control database".into(),
                    };
                    self.reviews.mirror(r);
                }
            }
        }
        Ok(())
    }

    /// Decides a shared review: one transaction on its row, whichever
    /// instance holds the statement.
    pub async fn decide(
        &self,
        id: &str,
        who: &str,
        roles: &[String],
        decision: Decision<'_>,
    ) -> Result<Review, ReviewError> {
        let (id_owned, who, roles) = (id.to_string(), who.to_string(), roles.to_vec());
        let deny_reason = match decision {
            Decision::Deny(r) => Some(r.to_string()),
            Decision::Approve(_) => None,
        };
        let grant = match decision {
            Decision::Approve(g) => Some(g),
            Decision::Deny(_) => None,
        };
        let outcome = self
            .with_client("deciding a review", move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    let row = tx
                        .query_opt(
                            "SELECT review::text FROM gatehouse.reviews WHERE id = $1 FOR UPDATE",
                            &[&id_owned],
                        )
                        .await?;
                    let Some(row) = row else {
                        return Ok(Err(ReviewError::NotFound));
                    };
                    let text: String = row.get(0);
                    let Ok(mut review) = serde_json::from_str::<Review>(&text) else {
                        return Ok(Err(ReviewError::Unavailable(
                            "the review in the control database is unreadable".into(),
                        )));
                    };
                    let ruled = match (grant, &deny_reason) {
                        (Some(g), _) => record_approval(&mut review, &who, &roles, g, now_unix()).map(|_| ()),
                        (None, reason) => record_denial(&mut review, &who, &roles, reason.as_deref().unwrap_or("")),
                    };
                    if let Err(e) = ruled {
                        return Ok(Err(e));
                    }
                    let json = serde_json::to_string(&review).unwrap_or_default();
                    let grant_until = review.grant_until.map(|u| u as i64);
                    tx.execute(
                        "UPDATE gatehouse.reviews SET status = $2, review = $3::text::jsonb, grant_until = $4, updated = now() WHERE id = $1",
                        &[&id_owned, &review.status.name(), &json, &grant_until],
                    )
                    .await?;
                    tx.execute("SELECT pg_notify($1, $2)", &[&REVIEWS_CHANNEL, &id_owned]).await?;
                    tx.commit().await?;
                    Ok(Ok(review))
                })
            })
            .await;
        match outcome {
            Ok(Ok(review)) => {
                self.reviews.mirror(review.clone());
                Ok(review)
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                tracing::warn!(target: "gatehouse::fleet", review = %id, error = %e, "decision not recorded");
                Err(ReviewError::Unavailable(
                    "the fleet's control database did not record the decision (nothing was decided unless the review now says so): try again"
                        .into(),
                ))
            }
        }
    }
}
