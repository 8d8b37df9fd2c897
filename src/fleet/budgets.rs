//! Budgets counted across the fleet.
//!
//! Each instance meters its own sessions as a lone instance does (atomics
//! on the data path, no control query per statement). Every
//! `budget_flush_ms` it writes its counts of the current and previous
//! minute per identity (absolute values: a lost or repeated flush is
//! harmless) and reads the sums of the other instances', which the meters
//! add to their own. A budget is therefore enforced fleet-wide with a lag
//! of one flush (plus a query): over one flush interval the other
//! instances may each run what they would run alone in that time before
//! they see the total.

use super::Fleet;
use crate::policy::budget::Counts;
use crate::policy::reviews::now_unix;
use std::collections::HashMap;
use tokio_postgres::types::ToSql;

/// Minutes of counts kept in the control database.
const KEEP_MINUTES: i64 = 3;

impl Fleet {
    /// Writes this instance's counts and takes the others'.
    pub(super) async fn flush_budgets(&self) -> Result<(), String> {
        // The data path's clock, so that both turn minutes together.
        let now = self.shared.unix_now();
        let minute = now / 60;
        let meters = self.shared.budgets.snapshot();
        let (mut ids, mut minutes, mut st, mut rows, mut bytes) = (vec![], vec![], vec![], vec![], vec![]);
        for (identity, meter) in &meters {
            let (at, cur, prev) = meter.local(now);
            for (m, c) in [(at, cur), (at.saturating_sub(1), prev)] {
                if c != [0, 0, 0] && m + 1 >= minute {
                    ids.push(identity.clone());
                    minutes.push(m as i64);
                    st.push(c[0] as i64);
                    rows.push(c[1] as i64);
                    bytes.push(c[2] as i64);
                }
            }
        }
        let instance = self.instance.clone();
        let since = minute as i64 - 1;
        let others = self
            .with_client("flushing budgets", move |c| {
                Box::pin(async move {
                    if !ids.is_empty() {
                        c.execute(
                            "INSERT INTO gatehouse.budget_usage (identity, instance, minute, statements, rows, bytes) \
                             SELECT u.i, $1, u.m, u.s, u.r, u.b \
                             FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) AS u(i, m, s, r, b) \
                             ON CONFLICT (identity, instance, minute) DO UPDATE \
                             SET statements = EXCLUDED.statements, rows = EXCLUDED.rows, bytes = EXCLUDED.bytes",
                            &[&instance as &(dyn ToSql + Sync), &ids, &minutes, &st, &rows, &bytes],
                        )
                        .await?;
                    }
                    c.query(
                        "SELECT identity, minute, sum(statements)::int8, sum(rows)::int8, sum(bytes)::int8 \
                         FROM gatehouse.budget_usage WHERE instance <> $1 AND minute >= $2 GROUP BY identity, minute",
                        &[&instance as &(dyn ToSql + Sync), &since],
                    )
                    .await
                })
            })
            .await?;
        let mut remote: HashMap<String, (Counts, Counts)> = HashMap::new();
        for row in others {
            let identity: String = row.get(0);
            let m: i64 = row.get(1);
            let counts = [2, 3, 4].map(|i| row.get::<_, i64>(i).max(0) as u64);
            let e = remote.entry(identity).or_default();
            if m as u64 == minute {
                e.0 = counts;
            } else if m as u64 + 1 == minute {
                e.1 = counts;
            }
        }
        // Meters of identities seen only elsewhere are made here, so that
        // their first session on this instance starts from the fleet's count.
        for (identity, (cur, prev)) in &remote {
            self.shared.budgets.meter(identity).set_remote(minute, *cur, *prev);
        }
        for (identity, meter) in meters {
            if !remote.contains_key(&identity) {
                meter.set_remote(minute, [0; 3], [0; 3]);
            }
        }
        Ok(())
    }

    /// Drops counts too old to matter (run with the periodic sync).
    pub(super) async fn expire_budgets(&self) -> Result<(), String> {
        let before = (now_unix() / 60) as i64 - KEEP_MINUTES;
        self.with_client("expiring budget counts", move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM gatehouse.budget_usage WHERE minute < $1", &[&before])
                    .await
            })
        })
        .await
        .map(|_| ())
    }
}
