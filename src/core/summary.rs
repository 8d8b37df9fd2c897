//! The end of a session, the same for every protocol: the recording's
//! close record, the worker's counters and the `session close` log line.

use super::counters::WorkerCounters as W;
use super::end::EndReason;
use super::state::Shared;
use crate::record::events::Ev;
use crate::record::link::SessionRec;
use std::net::SocketAddr;
use std::time::Instant;

/// What a session did, counted as it closes.
pub struct Summary<'a> {
    pub session: u32,
    pub identity: &'a str,
    pub target: &'a str,
    pub client: SocketAddr,
    pub worker: usize,
    pub client_tls: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub statements: u64,
    pub rows: u64,
    pub masked: u64,
    /// Masked values by rule, as the log shows them (`rule=count,…`).
    pub masked_rules: String,
    /// Statements from the client that carried a secret.
    pub client_secrets: u64,
    pub started: Instant,
    pub end: EndReason,
    /// Why, where the end has more to say than its name.
    pub reason: Option<&'a str>,
}

impl Summary<'_> {
    /// Records the close (when the session is recorded), counts the session
    /// and logs its close line.
    pub async fn close(&self, shared: &Shared, rec: Option<&SessionRec>) {
        if let Some(r) = rec {
            r.push(Ev::Close {
                session: r.key,
                t: crate::record::now_us(),
                end: self.end.as_str(),
                bytes_in: self.bytes_in,
                bytes_out: self.bytes_out,
                statements: self.statements,
                rows: self.rows,
                masked: self.masked,
            });
            r.end().await;
        }
        let c = shared.counters.worker(self.worker);
        W::add(&c.sessions_closed, 1);
        shared.counters.ended(self.end);
        W::add(&c.bytes_in, self.bytes_in);
        W::add(&c.bytes_out, self.bytes_out);
        W::add(&c.statements, self.statements);
        W::add(&c.rows, self.rows);
        W::add(&c.masked, self.masked);
        W::add(&c.client_secrets, self.client_secrets);
        tracing::info!(
            target: "gatehouse::session",
            session = self.session,
            identity = %self.identity,
            target = %self.target,
            client = %self.client,
            worker = self.worker,
            client_tls = self.client_tls,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            statements = self.statements,
            rows = self.rows,
            masked = self.masked,
            masked_rules = %self.masked_rules,
            client_secrets = self.client_secrets,
            duration_ms = self.started.elapsed().as_millis() as u64,
            end = self.end.as_str(),
            reason = self.reason,
            "session close"
        );
    }
}
