//! Prometheus text exposition of the data plane's counters.

use crate::core::counters::WorkerCounters;
use crate::core::Shared;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_worker(out: &mut String, s: &Shared, name: &str, help: &str, f: impl Fn(&WorkerCounters) -> &AtomicU64) {
    family(out, name, "counter", help);
    for (i, w) in s.counters.workers.iter().enumerate() {
        let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", f(w).load(Ordering::Relaxed));
    }
}

/// Label values are rule ids and similar: escape what the format needs.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders all metrics.
pub fn render(s: &Shared, recorder: Option<&super::recorder::Recorder>) -> String {
    let mut out = String::with_capacity(4096);
    family(&mut out, "gatehouse_up", "gauge", "1 while the process serves.");
    let _ = writeln!(out, "gatehouse_up 1");
    family(
        &mut out,
        "gatehouse_start_time_seconds",
        "gauge",
        "Start time of the process, Unix seconds.",
    );
    let _ = writeln!(out, "gatehouse_start_time_seconds {}", s.started_unix);
    family(
        &mut out,
        "gatehouse_sessions_active",
        "gauge",
        "Client connections open now (all phases).",
    );
    let _ = writeln!(out, "gatehouse_sessions_active {}", s.active.load(Ordering::Relaxed));
    family(
        &mut out,
        "gatehouse_draining",
        "gauge",
        "1 after SIGTERM, while sessions drain.",
    );
    let _ = writeln!(
        out,
        "gatehouse_draining {}",
        u8::from(s.draining.load(Ordering::Relaxed))
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_sessions_opened_total",
        "Sessions past authentication.",
        |w| &w.sessions_opened,
    );
    per_worker(&mut out, s, "gatehouse_sessions_closed_total", "Sessions ended.", |w| {
        &w.sessions_closed
    });
    family(
        &mut out,
        "gatehouse_sessions_ended_total",
        "counter",
        "Sessions ended, by why (the `end` of the session close line).",
    );
    for r in crate::core::end::EndReason::ALL {
        let n = s.counters.ended[r.index()].load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(out, "gatehouse_sessions_ended_total{{reason=\"{}\"}} {n}", r.as_str());
        }
    }
    per_worker(
        &mut out,
        s,
        "gatehouse_sessions_refused_total",
        "Connections refused before a session began.",
        |w| &w.sessions_refused,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_client_bytes_total",
        "Bytes read from clients (closed sessions).",
        |w| &w.bytes_in,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_server_bytes_total",
        "Bytes read from servers (closed sessions).",
        |w| &w.bytes_out,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_statements_total",
        "Query and Execute messages (closed sessions).",
        |w| &w.statements,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_rows_total",
        "DataRow messages (closed sessions).",
        |w| &w.rows,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_client_secrets_total",
        "Client statements that carried a secret.",
        |w| &w.client_secrets,
    );
    per_worker(
        &mut out,
        s,
        "gatehouse_cancels_total",
        "Cancel requests forwarded upstream.",
        |w| &w.cancels,
    );
    {
        use crate::core::counters as c;
        for (name, help, v) in [
            (
                "gatehouse_upstream_logins_total",
                "Logins to upstream servers (new upstream connections).",
                &c::UPSTREAM_LOGINS,
            ),
            (
                "gatehouse_pool_reused_total",
                "Sessions served by a kept upstream connection.",
                &c::POOL_REUSED,
            ),
            (
                "gatehouse_pool_returned_total",
                "Upstream connections reset and kept after their session.",
                &c::POOL_RETURNED,
            ),
            (
                "gatehouse_pool_closed_total",
                "Kept upstream connections closed (expired, dead, over the limit, reload).",
                &c::POOL_CLOSED,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
    family(
        &mut out,
        "gatehouse_masked_values_total",
        "counter",
        "Values masked, by rule.",
    );
    let state = s.state.load();
    if let Some(engine) = &state.scan {
        for (id, n) in engine.counts() {
            if n > 0 {
                let _ = writeln!(out, "gatehouse_masked_values_total{{rule=\"{}\"}} {n}", label(id));
            }
        }
        family(&mut out, "gatehouse_scan_rules", "gauge", "Secret rules in force.");
        let _ = writeln!(out, "gatehouse_scan_rules {}", engine.rule_count());
    }
    family(
        &mut out,
        "gatehouse_reviews_pending",
        "gauge",
        "Statements held for approval now.",
    );
    let _ = writeln!(out, "gatehouse_reviews_pending {}", s.reviews.pending());
    if let Some(r) = recorder {
        family(
            &mut out,
            "gatehouse_statements_by_class_total",
            "counter",
            "Recorded statements by class and policy decision.",
        );
        for ((class, decision), n) in r.stats.statements.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "gatehouse_statements_by_class_total{{class=\"{}\",decision=\"{}\"}} {n}",
                label(class),
                label(decision)
            );
        }
        family(
            &mut out,
            "gatehouse_recorder_backlog",
            "gauge",
            "Events waiting for the recorder's writers.",
        );
        let _ = writeln!(out, "gatehouse_recorder_backlog {}", r.backlog());
        let st = &r.stats;
        for (name, help, v) in [
            ("gatehouse_recorder_records_total", "Records written.", &st.records),
            ("gatehouse_recorder_bytes_total", "Bytes of records written.", &st.bytes),
            (
                "gatehouse_recorder_gaps_total",
                "Gap records (result rows not recorded).",
                &st.gaps,
            ),
            (
                "gatehouse_recorder_gap_rows_total",
                "Result rows not recorded.",
                &st.gap_rows,
            ),
            ("gatehouse_recorder_syncs_total", "File syncs.", &st.syncs),
            (
                "gatehouse_recorder_write_errors_total",
                "Failed writes or syncs.",
                &st.write_errors,
            ),
            (
                "gatehouse_recorder_deleted_total",
                "Recordings deleted by retention.",
                &st.deleted,
            ),
            (
                "gatehouse_recorder_recovered_total",
                "Sessions an unclean stop left open, sealed at this start.",
                &st.recovered,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
    out
}

/// The fleet link's gauges, then every sample labelled with the
/// instance's name (`fleet_instance`, not `instance`: Prometheus sets that
/// one to the scrape target).
pub fn for_fleet(mut text: String, fleet: &crate::fleet::Fleet) -> String {
    family(
        &mut text,
        "gatehouse_fleet_control_connected",
        "gauge",
        "1 while the fleet's control database is reachable (holds are refused otherwise).",
    );
    let _ = writeln!(
        text,
        "gatehouse_fleet_control_connected {}",
        u8::from(fleet.connected())
    );
    label_samples(&text, "fleet_instance", &fleet.instance)
}

/// Adds `key="value"` to every sample line of an exposition. `value` is a
/// checked instance name (no quote or backslash to escape).
fn label_samples(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(brace) = line.find('{') {
            out.push_str(&line[..=brace]);
            let _ = write!(out, "{key}=\"{value}\"");
            if !line[brace + 1..].starts_with('}') {
                out.push(',');
            }
            out.push_str(&line[brace + 1..]);
        } else if let Some(space) = line.find(' ') {
            let _ = write!(out, "{}{{{key}=\"{value}\"}}{}", &line[..space], &line[space..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod fleet_label_tests {
    #[test]
    fn every_sample_carries_the_instance() {
        let text = "# HELP a x\n# TYPE a gauge\na 1\nb{k=\"v\"} 2\nc{} 3\n";
        assert_eq!(
            super::label_samples(text, "fleet_instance", "gw-a"),
            "# HELP a x\n# TYPE a gauge\na{fleet_instance=\"gw-a\"} 1\nb{fleet_instance=\"gw-a\",k=\"v\"} 2\nc{fleet_instance=\"gw-a\"} 3\n"
        );
    }
}
