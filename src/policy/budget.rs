//! Budgets against anomalies: per identity, statements, rows and bytes over
//! a sliding minute, across all of the identity's sessions and workers.
//!
//! A [`Meter`] is a handful of atomics shared by the identity's sessions;
//! the data path adds to it once per statement (statements) and once per
//! ReadyForQuery (rows, bytes), and reads it once per statement. The
//! sliding minute is the usual two-window estimate: the previous minute's
//! count weighted by how much of it still lies in the last 60 seconds, plus
//! the current minute's.

use crate::config::{BudgetConfig, Verdict};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Identities metered at once; past it, meters no session holds are dropped.
pub const MAX_METERS: usize = 100_000;

const STATEMENTS: usize = 0;
const ROWS: usize = 1;
const BYTES: usize = 2;

/// The limits that apply to one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub statements_per_minute: Option<u64>,
    pub rows_per_minute: Option<u64>,
    pub bytes_per_minute: Option<u64>,
    /// `Approve` (hold) or `Deny`.
    pub action: Verdict,
    /// Who approves a statement held by the budget: the role's approvers.
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    pub approval_timeout: Duration,
}

impl Budget {
    pub fn from_config(c: &BudgetConfig, approvers: &[String], required: u32, timeout: Duration) -> Budget {
        Budget {
            statements_per_minute: c.statements_per_minute,
            rows_per_minute: c.rows_per_minute,
            bytes_per_minute: c.bytes_per_minute,
            action: c.action,
            approvers: approvers.to_vec(),
            approvals_required: required,
            approval_timeout: timeout,
        }
    }

    /// Per limit the larger of the two (no limit wins); hold over deny.
    pub fn most_generous(&self, o: &Budget) -> Budget {
        let max = |a: Option<u64>, b: Option<u64>| Some(a?.max(b?));
        Budget {
            statements_per_minute: max(self.statements_per_minute, o.statements_per_minute),
            rows_per_minute: max(self.rows_per_minute, o.rows_per_minute),
            bytes_per_minute: max(self.bytes_per_minute, o.bytes_per_minute),
            action: if self.action == Verdict::Approve || o.action == Verdict::Approve {
                Verdict::Approve
            } else {
                Verdict::Deny
            },
            approvers: {
                let mut a = self.approvers.clone();
                a.extend(o.approvers.iter().filter(|x| !self.approvers.contains(x)).cloned());
                a
            },
            approvals_required: self.approvals_required.min(o.approvals_required),
            approval_timeout: self.approval_timeout.max(o.approval_timeout),
        }
    }

    /// The limit the identity is past at `now` (seconds), said for a person;
    /// `None` while within budget. The statement about to run counts.
    pub fn exceeded(&self, m: &Meter, now: u64) -> Option<String> {
        let checks = [
            (self.statements_per_minute, STATEMENTS, "statements", 1),
            (self.rows_per_minute, ROWS, "rows", 0),
            (self.bytes_per_minute, BYTES, "bytes", 0),
        ];
        for (limit, kind, what, this) in checks {
            let Some(limit) = limit else { continue };
            let used = m.rate(now, kind);
            if used + this > limit {
                return Some(format!(
                    "budget exceeded: {used} {what} in the last minute, the limit is {limit} per minute"
                ));
            }
        }
        None
    }
}

/// One identity's usage: the current and the previous minute, counted
/// here, and (in a fleet) what the other instances counted as of their
/// last flush.
#[derive(Debug, Default)]
pub struct Meter {
    /// The minute `cur` counts (seconds / 60).
    minute: AtomicU64,
    cur: [AtomicU64; 3],
    prev: [AtomicU64; 3],
    /// The minute `remote_cur` counts; `remote_prev` is the one before.
    remote_minute: AtomicU64,
    remote_cur: [AtomicU64; 3],
    remote_prev: [AtomicU64; 3],
}

/// (statements, rows, bytes) of one minute.
pub type Counts = [u64; 3];

impl Meter {
    /// Moves to `now`'s minute if it changed. Races with adders may lose a
    /// few counts at the turn of a minute, never more.
    fn turn(&self, now: u64) {
        let m = now / 60;
        let seen = self.minute.load(Ordering::Acquire);
        if m <= seen {
            return;
        }
        if self
            .minute
            .compare_exchange(seen, m, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            for i in 0..3 {
                let c = self.cur[i].swap(0, Ordering::AcqRel);
                self.prev[i].store(if m == seen + 1 { c } else { 0 }, Ordering::Release);
            }
        }
    }

    fn add(&self, now: u64, kind: usize, n: u64) {
        if n == 0 {
            return;
        }
        self.turn(now);
        self.cur[kind].fetch_add(n, Ordering::Relaxed);
    }

    /// The estimate of the last 60 seconds, here and on the fleet's
    /// other instances.
    fn rate(&self, now: u64, kind: usize) -> u64 {
        self.turn(now);
        let into = now % 60;
        let (remote_cur, remote_prev) = self.remote(now / 60, kind);
        let prev = self.prev[kind].load(Ordering::Relaxed) + remote_prev;
        let cur = self.cur[kind].load(Ordering::Relaxed) + remote_cur;
        prev * (60 - into) / 60 + cur
    }

    /// The other instances' (current, previous) minute counts as of `minute`.
    fn remote(&self, minute: u64, kind: usize) -> (u64, u64) {
        let at = self.remote_minute.load(Ordering::Acquire);
        if at == minute {
            (
                self.remote_cur[kind].load(Ordering::Relaxed),
                self.remote_prev[kind].load(Ordering::Relaxed),
            )
        } else if at + 1 == minute {
            (0, self.remote_cur[kind].load(Ordering::Relaxed))
        } else if at == minute + 1 {
            // The flush turned the minute a moment before this clock did:
            // its previous minute is this one.
            (self.remote_prev[kind].load(Ordering::Relaxed), 0)
        } else {
            (0, 0)
        }
    }

    /// What this instance counted: its current minute, that minute's
    /// counts and the previous minute's (a fleet flushes them).
    pub fn local(&self, now: u64) -> (u64, Counts, Counts) {
        self.turn(now);
        let load = |a: &[AtomicU64; 3]| [0, 1, 2].map(|i| a[i].load(Ordering::Relaxed));
        (self.minute.load(Ordering::Acquire), load(&self.cur), load(&self.prev))
    }

    /// Sets what the fleet's other instances counted in `minute` and the
    /// minute before.
    pub fn set_remote(&self, minute: u64, cur: Counts, prev: Counts) {
        for i in 0..3 {
            self.remote_cur[i].store(cur[i], Ordering::Relaxed);
            self.remote_prev[i].store(prev[i], Ordering::Relaxed);
        }
        self.remote_minute.store(minute, Ordering::Release);
    }

    pub fn add_statement(&self, now: u64) {
        self.add(now, STATEMENTS, 1);
    }

    pub fn add_result(&self, now: u64, rows: u64, bytes: u64) {
        self.add(now, ROWS, rows);
        self.add(now, BYTES, bytes);
    }

    /// (statements, rows, bytes) in the last minute, for the API.
    pub fn usage(&self, now: u64) -> (u64, u64, u64) {
        (self.rate(now, STATEMENTS), self.rate(now, ROWS), self.rate(now, BYTES))
    }
}

/// The meters of every identity with a budget, process-wide.
#[derive(Default)]
pub struct Budgets {
    meters: Mutex<HashMap<String, Arc<Meter>>>,
}

impl Budgets {
    /// Every meter, for a fleet's flush.
    pub fn snapshot(&self) -> Vec<(String, Arc<Meter>)> {
        let g = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        g.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The identity's meter (taken once per session).
    pub fn meter(&self, identity: &str) -> Arc<Meter> {
        let mut g = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = g.get(identity) {
            return m.clone();
        }
        if g.len() >= MAX_METERS {
            g.retain(|_, m| Arc::strong_count(m) > 1);
        }
        let m = Arc::new(Meter::default());
        g.insert(identity.to_string(), m.clone());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(st: Option<u64>, rows: Option<u64>, bytes: Option<u64>) -> Budget {
        Budget {
            statements_per_minute: st,
            rows_per_minute: rows,
            bytes_per_minute: bytes,
            action: Verdict::Approve,
            approvers: vec!["dba".into()],
            approvals_required: 1,
            approval_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn statements_past_the_limit_are_flagged() {
        let b = budget(Some(3), None, None);
        let m = Meter::default();
        for _ in 0..3 {
            assert_eq!(b.exceeded(&m, 100), None);
            m.add_statement(100);
        }
        let why = b.exceeded(&m, 100).unwrap();
        assert!(why.contains("3 statements") && why.contains("limit is 3"), "{why}");
    }

    #[test]
    fn the_minute_slides() {
        let b = budget(Some(10), None, None);
        let m = Meter::default();
        for _ in 0..10 {
            m.add_statement(60); // minute 1, its first second
        }
        assert!(b.exceeded(&m, 60).is_some());
        // 30 s into minute 2: half of minute 1 still counts.
        assert_eq!(m.usage(150).0, 5);
        assert!(b.exceeded(&m, 150).is_none());
        // Two minutes on, nothing counts.
        assert_eq!(m.usage(300).0, 0);
    }

    #[test]
    fn rows_and_bytes() {
        let b = budget(None, Some(100), Some(1000));
        let m = Meter::default();
        m.add_result(5, 100, 10);
        assert!(b.exceeded(&m, 5).is_none());
        m.add_result(5, 1, 10);
        assert!(b.exceeded(&m, 5).unwrap().contains("101 rows"));
        let m = Meter::default();
        m.add_result(5, 1, 1001);
        assert!(b.exceeded(&m, 5).unwrap().contains("bytes"));
    }

    #[test]
    fn most_generous_of_roles() {
        let a = Budget {
            action: Verdict::Deny,
            ..budget(Some(10), Some(5), None)
        };
        let b = Budget {
            action: Verdict::Deny,
            ..budget(Some(20), None, Some(7))
        };
        let c = a.most_generous(&b);
        assert_eq!(c.statements_per_minute, Some(20));
        assert_eq!(c.rows_per_minute, None);
        assert_eq!(c.bytes_per_minute, None);
        assert_eq!(c.action, Verdict::Deny);
        assert_eq!(a.most_generous(&budget(Some(1), None, None)).action, Verdict::Approve);
    }

    #[test]
    fn the_fleet_s_counts_add_to_the_local_ones() {
        let b = budget(Some(10), None, None);
        let m = Meter::default();
        m.add_statement(600);
        m.add_statement(600);
        // Minute 10: the others counted 7 now and 4 in minute 9.
        m.set_remote(10, [7, 0, 0], [4, 0, 0]);
        assert_eq!(m.usage(600).0, 2 + 7 + 4);
        assert!(b.exceeded(&m, 600).is_some());
        assert_eq!(
            m.local(600),
            (10, [2, 0, 0], [0, 0, 0]),
            "the flush sends local counts only"
        );
        // 30 s into minute 11 without a fresh flush: the others' minute 10
        // is the previous one, half of it counts.
        assert_eq!(m.usage(690).0, (2 + 7) / 2);
        // Stale beyond that: nothing of theirs counts.
        assert_eq!(m.usage(780).0, 0);
    }

    #[test]
    fn meters_are_per_identity_and_bounded() {
        let bs = Budgets::default();
        let a = bs.meter("a");
        a.add_statement(1);
        assert_eq!(bs.meter("a").usage(1).0, 1);
        assert_eq!(bs.meter("b").usage(1).0, 0);
    }
}
