//! Fleet mode: several instances behind one load balancer, sharing state
//! through a PostgreSQL control database that gatehouse owns a schema in.
//!
//! Each instance keeps one connection to it (`Fleet`), on the control
//! plane's runtime: the data path never waits on it. What the instances
//! share, and how:
//!
//! - reviews and their grants (`reviews`): the row in the control database
//!   is the truth; every decision is a transaction on it, so N-of-M counts
//!   approvals made on any instance, and a decision is announced with
//!   NOTIFY to the instance holding the statement. Each instance mirrors
//!   the open reviews into its own `Reviews`, which its sessions and
//!   console read.
//!
//! - budgets (`budgets`): each instance writes its per-identity counts
//!   every `budget_flush_ms` and adds the others' to its meters.
//!
//! - sessions (`sessions`): each instance writes its live sessions, so
//!   that any admin API lists and kills them all, and a CancelRequest that
//!   reached the wrong instance is passed to the right one.
//!
//! - recordings (`objects`): sealed recordings go to an S3-compatible
//!   bucket, indexed in the control database, readable from any instance.
//!
//! An instance that loses the control database keeps serving what its
//! policy allows, refuses to hold statements (a hold nobody else could see
//! or decide), and catches up when the connection is back.

pub mod budgets;
pub mod instances;
pub mod objects;
pub mod reviews;
pub mod schema;
pub mod sessions;

use crate::core::Shared;
use crate::policy::reviews::{Review, Reviews};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The channel decisions are announced on (payload: the review's id).
pub const REVIEWS_CHANNEL: &str = "gatehouse_reviews";
/// The channel kills of another instance's sessions are asked on.
pub const KILLS_CHANNEL: &str = "gatehouse_kills";
/// The channel a reload of every instance is asked on.
pub const RELOADS_CHANNEL: &str = "gatehouse_reloads";
/// Review events waiting to be written to the control database.
const OUTBOX: usize = 20_000;
/// Notifications waiting to be read (past it they are dropped: the
/// periodic sync reads what they announced).
const NOTICES: usize = 4096;
/// What a client is told when a hold is refused for want of the control
/// database.
pub const UNREACHABLE: &str =
    "this gatehouse instance cannot reach the fleet's control database, so no one could see or decide a review: try again when it is back";

/// What this instance did to a review, to be written through.
pub enum Outbound {
    Opened(Review),
    Withdrawn(Review),
}

/// Reads the control connection, passing notifications on, until it ends.
async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, tx: mpsc::Sender<(String, String)>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(n)) => {
                let _ = tx.try_send((n.channel().to_string(), n.payload().to_string()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "gatehouse::fleet", error = %e, "control database connection ended");
                break;
            }
        }
    }
}

/// This instance's link to the fleet.
pub struct Fleet {
    pub instance: String,
    settings: crate::config::Fleet,
    shared: Arc<Shared>,
    reviews: Arc<Reviews>,
    /// The control connection; `None` while it is down. Decisions take it
    /// for a whole transaction.
    client: tokio::sync::Mutex<Option<Client>>,
    connected: AtomicBool,
    /// Why the control database is unreachable, for `/readyz` and the log.
    trouble: Mutex<Option<String>>,
    /// Reviews this instance opened and has not seen end.
    mine: Mutex<HashSet<String>>,
    /// This instance's admin listener, as the other instances may reach it.
    admin: Option<String>,
    /// This instance's PostgreSQL listener, where other instances pass
    /// cancels.
    data_addr: Option<String>,
    /// Sessions as last written to the control database.
    sessions_written: Mutex<sessions::Written>,
    /// The registry's generation as of that write.
    sessions_generation: std::sync::atomic::AtomicU64,
    /// The bucket sealed recordings go to, when configured.
    pub objects: Option<Arc<objects::Objects>>,
    /// Reloads this process's configuration (asked by another instance).
    ops: Arc<dyn crate::core::ops::Ops>,
    /// Set while a reload asked by another instance runs (one at a time).
    reloading: AtomicBool,
    /// The recorder, whose audit log takes what other instances asked.
    recorder: Option<Arc<crate::control::recorder::Recorder>>,
    /// This run of the instance: a second live instance under the same
    /// name has another, and is refused.
    incarnation: String,
}

impl Fleet {
    /// Starts the link on `rt`: hooks into `reviews` (opened and withdrawn
    /// reviews are written through) and connects in the background. Until
    /// the first connection, holds are refused.
    pub fn start(
        rt: &tokio::runtime::Handle,
        settings: crate::config::Fleet,
        shared: Arc<Shared>,
        admin: Option<String>,
        data_addr: Option<String>,
        recorder: Option<Arc<crate::control::recorder::Recorder>>,
        ops: Arc<dyn crate::core::ops::Ops>,
    ) -> Result<Arc<Fleet>, String> {
        let objects = match &settings.bucket {
            Some(b) => Some(Arc::new(objects::Objects::new(b)?)),
            None => None,
        };
        let reviews = shared.reviews.clone();
        // Review ids carry the instance's name: two instances' counters
        // cannot make one id.
        reviews.set_id_prefix(&settings.instance);
        let (cancel_tx, cancel_rx) = mpsc::channel(64);
        let _ = shared
            .peer_cancel
            .set(Arc::new(sessions::PeerCanceller::new(cancel_tx)));
        let (tx, rx) = mpsc::channel(OUTBOX);
        reviews.set_refusing(Some(UNREACHABLE.to_string()));
        let fleet = Arc::new(Fleet {
            instance: settings.instance.clone(),
            settings,
            shared,
            reviews: reviews.clone(),
            client: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            trouble: Mutex::new(Some("not connected yet".into())),
            mine: Mutex::new(HashSet::new()),
            admin,
            data_addr,
            sessions_written: Mutex::new(Default::default()),
            sessions_generation: std::sync::atomic::AtomicU64::new(u64::MAX),
            objects: objects.clone(),
            ops,
            reloading: AtomicBool::new(false),
            recorder: recorder.clone(),
            incarnation: format!("{:016x}", rand::random::<u64>()),
        });
        let opened = tx.clone();
        let weak = Arc::downgrade(&reviews);
        let this = Arc::downgrade(&fleet);
        reviews.on_open(Box::new(move |r| {
            // Known as this instance's before anything can look: the
            // periodic sync must not take it for a review the control
            // database dropped.
            if let Some(f) = this.upgrade() {
                f.mine.lock().unwrap_or_else(|p| p.into_inner()).insert(r.id.clone());
            }
            if opened.try_send(Outbound::Opened(r.clone())).is_err() {
                // Fail closed: a review the fleet never hears of could
                // only time out.
                if let Some(reviews) = weak.upgrade() {
                    reviews.withdraw(&r.id, UNREACHABLE);
                }
            }
        }));
        reviews.on_withdraw(Box::new(move |r| {
            // Dropped when full: the periodic sync writes it.
            let _ = tx.try_send(Outbound::Withdrawn(r.clone()));
        }));
        rt.spawn(fleet.clone().run(rx, cancel_rx));
        if let (Some(rec), Some(objects)) = (recorder, objects) {
            rt.spawn(fleet.clone().uploader(rec, objects));
        }
        Ok(fleet)
    }

    /// Whether the control database is reachable now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The link's state for `/readyz` (public: states only; errors can
    /// name hosts, users and keys).
    pub fn status(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "instance": self.instance,
            "control_database": if self.connected() { "connected" } else { "unreachable" },
            "schema_version": schema::current(),
        });
        if let Some(o) = &self.objects {
            v["object_storage"] = serde_json::json!(if o.reachable() { "reachable" } else { "unreachable" });
        }
        v
    }

    /// The state with what went wrong, for `GET /api/v1/fleet`.
    pub fn status_detail(&self) -> serde_json::Value {
        let mut v = self.status();
        v["trouble"] = serde_json::json!(self.trouble.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if let Some(o) = &self.objects {
            v["object_storage_trouble"] = serde_json::json!(o.trouble());
        }
        v
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.settings.timeout_secs)
    }

    fn set_trouble(&self, why: Option<String>) {
        *self.trouble.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Connects, migrates and listens; returns the client and the
    /// notifications' receiver (closed when the connection ends).
    async fn connect(&self) -> Result<(Client, mpsc::Receiver<(String, String)>), String> {
        let mut config = self.settings.connect_config()?;
        let (tx, rx) = mpsc::channel(NOTICES);
        let mut client = match self.settings.tls {
            crate::config::ControlTls::Disable => {
                let (client, connection) = tokio::time::timeout(self.timeout(), config.connect(NoTls))
                    .await
                    .map_err(|_| "connecting timed out".to_string())?
                    .map_err(|e| format!("connecting: {e}"))?;
                tokio::spawn(drive(connection, tx));
                client
            }
            crate::config::ControlTls::VerifyFull => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = crate::tls::verifying_client_config(self.settings.ca_file.as_deref())?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                let (client, connection) = tokio::time::timeout(self.timeout(), config.connect(tls))
                    .await
                    .map_err(|_| "connecting timed out".to_string())?
                    .map_err(|e| format!("connecting: {e}"))?;
                tokio::spawn(drive(connection, tx));
                client
            }
        };
        let version = tokio::time::timeout(self.timeout() * 4, schema::migrate(&mut client))
            .await
            .map_err(|_| "migrating timed out".to_string())??;
        tokio::time::timeout(
            self.timeout(),
            client.batch_execute(&format!(
                "LISTEN {REVIEWS_CHANNEL}; LISTEN {KILLS_CHANNEL}; LISTEN {RELOADS_CHANNEL}"
            )),
        )
        .await
        .map_err(|_| "LISTEN timed out".to_string())?
        .map_err(|e| format!("LISTEN: {e}"))?;
        tracing::info!(target: "gatehouse::fleet", instance = %self.instance, schema_version = version, "connected to the control database");
        Ok((client, rx))
    }

    /// Keeps the link up: connect, catch up, then follow notifications,
    /// the periodic sync and this instance's own review events until the
    /// connection drops; then refuse holds and try again.
    async fn run(self: Arc<Self>, mut outbox: mpsc::Receiver<Outbound>, mut cancels: mpsc::Receiver<(u32, Vec<u8>)>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.connect().await {
                Ok((client, mut notices)) => {
                    backoff = Duration::from_millis(200);
                    *self.client.lock().await = Some(client);
                    let first = match self.sync(true).await {
                        Ok(()) => self.reset_sessions().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = first {
                        tracing::warn!(target: "gatehouse::fleet", error = %e, "catching up failed");
                    } else {
                        self.connected.store(true, Ordering::Release);
                        self.set_trouble(None);
                        self.reviews.set_refusing(None);
                        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.sync_ms));
                        let mut flush = tokio::time::interval(Duration::from_millis(self.settings.budget_flush_ms));
                        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        let mut sessions_tick = tokio::time::interval(sessions::SESSIONS_TICK);
                        sessions_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                notice = notices.recv() => match notice {
                                    Some((channel, payload)) if channel == KILLS_CHANNEL || channel == RELOADS_CHANNEL => {
                                        tokio::spawn(self.clone().on_request(payload));
                                    }
                                    Some((_, id)) => {
                                        if let Err(e) = self.fetch(&id).await {
                                            tracing::warn!(target: "gatehouse::fleet", error = %e, "reading a review failed");
                                        }
                                    }
                                    None => break,
                                },
                                Some((pid, secret)) = cancels.recv() => {
                                    tokio::spawn(self.clone().forward_cancel(pid, secret));
                                }
                                _ = sessions_tick.tick() => {
                                    if let Err(e) = self.sync_sessions(false).await {
                                        tracing::warn!(target: "gatehouse::fleet", error = %e, "writing sessions failed");
                                    }
                                }
                                ev = outbox.recv() => match ev {
                                    Some(ev) => self.write_through(ev).await,
                                    None => return,
                                },
                                _ = tick.tick() => {
                                    if let Err(e) = self.sync(false).await {
                                        tracing::warn!(target: "gatehouse::fleet", error = %e, "sync failed");
                                    } else if let Err(e) = self.expire_budgets().await {
                                        tracing::warn!(target: "gatehouse::fleet", error = %e, "expiring budget counts failed");
                                    } else if let Err(e) = self.sync_sessions(true).await {
                                        tracing::warn!(target: "gatehouse::fleet", error = %e, "writing sessions failed");
                                    }
                                }
                                _ = flush.tick() => {
                                    if let Err(e) = self.flush_budgets().await {
                                        tracing::warn!(target: "gatehouse::fleet", error = %e, "budget flush failed");
                                    }
                                }
                            }
                            if self.client.lock().await.is_none() {
                                break;
                            }
                        }
                    }
                    self.lose("the control database connection was lost".into()).await;
                }
                Err(e) => {
                    tracing::warn!(target: "gatehouse::fleet", instance = %self.instance, error = %e, "control database unreachable");
                    self.lose(e).await;
                }
            }
            // Reviews opened meanwhile cannot be written: refuse them.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    ev = outbox.recv() => match ev {
                        Some(Outbound::Opened(r)) => self.reviews.withdraw(&r.id, UNREACHABLE),
                        Some(Outbound::Withdrawn(_)) => {}
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn lose(&self, why: String) {
        *self.client.lock().await = None;
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(target: "gatehouse::fleet", instance = %self.instance, why = %why, "control database lost: holds are refused until it is back");
        }
        self.set_trouble(Some(why));
        self.reviews.set_refusing(Some(UNREACHABLE.to_string()));
    }

    /// Runs `f` on the control connection with the query timeout; a failed
    /// or hung query drops the connection (the supervisor reconnects).
    pub(crate) async fn with_client<T, F>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: for<'c> FnOnce(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    {
        // Waiting for the connection counts against the timeout too: a
        // queue behind a slow query must not hold a decision forever.
        let Ok(mut g) = tokio::time::timeout(self.timeout(), self.client.lock()).await else {
            return Err(format!("{what}: the control connection is busy"));
        };
        let Some(c) = g.as_mut() else {
            return Err("not connected".into());
        };
        match tokio::time::timeout(self.timeout(), f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_closed() || e.as_db_error().is_none() {
                    *g = None;
                }
                Err(format!("{what}: {e}"))
            }
            Err(_) => {
                *g = None;
                Err(format!("{what}: timed out"))
            }
        }
    }
}
