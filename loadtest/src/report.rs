//! The report: one row per scenario and target, as a markdown table, JSON
//! and an SVG chart of throughput and latency per target.

use crate::stats::{ratio, Latency};
use crate::workload::Extra;
use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub kind: String,
    pub protocol: String,
    pub clients: usize,
    pub pipeline: usize,
    pub tls: bool,
    /// TLS on the proxy's hop to PostgreSQL too.
    pub upstream_tls: bool,
    pub target: String,
    pub direct: bool,
    /// Why the scenario did not run against this target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub ops: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_samples: Vec<String>,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
    pub latency: Latency,
    /// Throughput over the direct target's in the same scenario.
    pub vs_direct: Option<f64>,
    /// Mean latency minus the direct target's, in µs.
    pub latency_added_us: Option<f64>,
    /// CPU time (user + system) of the target's process while measured.
    pub cpu_s: Option<f64>,
    pub cpu_us_per_op: Option<f64>,
    /// Peak of VmRSS sampled every 100 ms during the scenario.
    pub rss_peak_mib: Option<f64>,
    /// VmHWM at the end: the peak over the process's whole life so far.
    pub vmhwm_mib: Option<f64>,
    pub harness_cpu_s: Option<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub os: String,
    pub kernel: String,
    pub postgres: Option<String>,
    pub pgbouncer: Option<String>,
    /// The file system gatehouse recorded sessions to (see [`file_system`]).
    pub recordings_fs: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub started_unix: u64,
    pub smoke: bool,
    pub machine: Machine,
    pub rows: Vec<Row>,
}

impl Machine {
    /// The machine; `recordings` is where gatehouse recorded sessions.
    pub fn probe(recordings: Option<&Path>) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_default();
        let mem_kib = crate::procmon::parse_status_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|s| s.trim_matches('"').to_string()))
            .unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let version = |cmd: &str, arg: &str| {
            std::process::Command::new(cmd)
                .arg(arg)
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string))
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: mem_kib as f64 / (1024.0 * 1024.0),
            cpu,
            os,
            kernel,
            postgres: version("pg_config", "--version").or_else(|| version("psql", "--version")),
            pgbouncer: version("/usr/sbin/pgbouncer", "--version"),
            recordings_fs: recordings.and_then(file_system),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB, {}, Linux {}{}{}{}",
            self.cores,
            self.cpu,
            self.memory_gib,
            self.os,
            self.kernel,
            self.postgres.as_deref().map(|v| format!(", {v}")).unwrap_or_default(),
            self.pgbouncer.as_deref().map(|v| format!(", {v}")).unwrap_or_default(),
            self.recordings_fs
                .as_deref()
                .map(|v| format!("; gatehouse's recordings on {v}"))
                .unwrap_or_default(),
        )
    }
}

/// The file system holding `path` (its nearest existing ancestor): its
/// type, its source and, for the ext family, whether it has a journal. A
/// storm of short sessions records a file per session, and ext4 without a
/// journal steps over every recently deleted inode when it makes one (the
/// harness deletes each run's recordings), so storm figures are several
/// times lower there than on a journaled ext4 or tmpfs (README,
/// Performance).
pub fn file_system(path: &Path) -> Option<String> {
    let path = path.ancestors().find(|p| p.exists())?.canonicalize().ok()?;
    let mount = mount_of(&std::fs::read_to_string("/proc/self/mountinfo").ok()?, &path)?;
    // The block device's kernel name (vda, vda1, dm-0, loop0), which jbd2
    // names a journal after.
    let device = std::fs::read_link(format!("/sys/dev/block/{}", mount.device))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let journals: Option<Vec<String>> = std::fs::read_dir("/proc/fs/jbd2").ok().map(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    });
    Some(describe(&mount, device.as_deref(), journals.as_deref()))
}

/// A mount, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
struct Mount {
    /// major:minor
    device: String,
    fstype: String,
    source: String,
}

/// The mount holding `path` (canonical): the one with the longest mount
/// point that is an ancestor of it, the last mounted among equals.
fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let point = unescape(left.get(4)?);
            if !path.starts_with(&point) {
                return None;
            }
            let mut right = right.split(' ');
            let mount = Mount {
                device: left.get(2)?.to_string(),
                fstype: right.next()?.to_string(),
                source: unescape(right.next().unwrap_or("")),
            };
            Some((point.len(), mount))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, m)| m)
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a report names a mount: `device` is its block device's name,
/// `journals` the entries of `/proc/fs/jbd2` (`<device>-<inode>` for a
/// journal inside the file system; an external journal is named after
/// its own device and is not recognised); either unknown says so.
fn describe(mount: &Mount, device: Option<&str>, journals: Option<&[String]>) -> String {
    if !["ext2", "ext3", "ext4"].contains(&mount.fstype.as_str()) {
        return format!("{} ({})", mount.fstype, mount.source);
    }
    let journal = match (device, journals) {
        (Some(device), Some(journals)) => {
            let prefix = format!("{device}-");
            let has = journals.iter().any(|j| {
                j.strip_prefix(&prefix)
                    .is_some_and(|inode| !inode.is_empty() && inode.bytes().all(|c| c.is_ascii_digit()))
            });
            if has {
                "with a journal"
            } else {
                "without a journal"
            }
        }
        _ => "journal unknown",
    };
    format!("{} {journal} ({})", mount.fstype, mount.source)
}

/// Fills the columns compared with the direct target of the same scenario.
pub fn compare(rows: &mut [Row]) {
    let direct: Vec<(String, f64, f64)> = rows
        .iter()
        .filter(|r| r.direct && r.skipped.is_none() && r.ops > 0)
        .map(|r| (r.scenario.clone(), r.ops_per_s, r.latency.mean_ms))
        .collect();
    for r in rows.iter_mut() {
        if r.skipped.is_some() || r.ops == 0 {
            continue;
        }
        if let Some((_, tput, mean)) = direct.iter().find(|(s, _, _)| *s == r.scenario) {
            r.vs_direct = ratio(r.ops_per_s, *tput);
            if !r.direct {
                r.latency_added_us = Some((r.latency.mean_ms - mean) * 1000.0);
            }
        }
    }
}

fn f(x: Option<f64>, p: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.p$}"),
        _ => String::new(),
    }
}

/// Throughput with a unit that suits the scenario.
fn throughput(r: &Row) -> String {
    if r.ops_per_s >= 100.0 {
        format!("{:.0}", r.ops_per_s)
    } else {
        format!("{:.2}", r.ops_per_s)
    }
}

pub fn markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`{}`{}: {}.\n",
        rep.label,
        if rep.smoke { " (smoke)" } else { "" },
        rep.machine.describe()
    );
    s.push_str(
        "| scenario | target | ops/s | MB/s | mean ms | p50 ms | p99 ms | p99.9 ms | vs direct | added µs | errors | proxy CPU µs/op | peak RSS MiB | notes |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in &rep.rows {
        if let Some(why) = &r.skipped {
            let _ = writeln!(
                s,
                "| {} | {} | | | | | | | | | | | | skipped: {why} |",
                r.scenario, r.target
            );
            continue;
        }
        let l = &r.latency;
        let mut notes = Vec::new();
        if let (Some(o), Some(q)) = (r.extra.idle_opened, r.extra.idle_requested) {
            notes.push(format!(
                "idle {o}/{q} held{}",
                r.extra
                    .idle_alive
                    .map(|a| format!(" ({a} alive at the end)"))
                    .unwrap_or_default()
            ));
        }
        if let Some(k) = r.extra.rss_per_idle_kib {
            notes.push(format!("+{k:.1} KiB RSS per idle connection"));
        }
        if let Some(e) = &r.extra.idle_first_error {
            let e: String = e.chars().take(100).collect();
            notes.push(format!("idle refused: {}", e.replace('|', "/")));
        }
        if let Some(t) = r.extra.pgbench_tps {
            notes.push(format!("pgbench {t:.0} tps"));
        }
        if let Some(n) = r.extra.not_held.filter(|n| *n > 0) {
            notes.push(format!("{n} not held"));
        }
        if let Some(v) = r.vmhwm_mib {
            notes.push(format!("VmHWM {v:.0} MiB"));
        }
        if r.errors > 0 {
            if let Some(e) = r.error_samples.first() {
                let e: String = e.chars().take(80).collect();
                notes.push(format!("first error: {}", e.replace('|', "/")));
            }
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.target,
            throughput(r),
            if matches!(r.kind.as_str(), "wide_rows" | "large_result" | "copy_in" | "copy_out") {
                format!("{:.1}", r.mb_per_s)
            } else {
                String::new()
            },
            l.mean_ms,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            f(r.vs_direct, 3),
            f(r.latency_added_us, 0),
            r.errors,
            f(r.cpu_us_per_op, 1),
            f(r.rss_peak_mib, 1),
            notes.join("; ")
        );
    }
    s
}

pub fn write_json(rep: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(rep)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
];

/// One row per scenario: throughput per target on the left, latency
/// p50 / p99 / p99.9 per target on the right.
pub fn write_svg(rep: &Report, path: &Path) -> Result<()> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &rep.rows {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut targets: Vec<&str> = Vec::new();
    for r in &rep.rows {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
    }
    let band = 60 + 36 * targets.len() as u32;
    let height = 60 + band * scenarios.len().max(1) as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<std::io::Error>| anyhow::anyhow!("chart: {e:?}");
    root.fill(&WHITE).map_err(draw)?;
    let (title, body) = root.split_vertically(60);
    title
        .draw(&Text::new(
            format!(
                "gatehouse-load: {}{}",
                rep.label,
                if rep.smoke { " (smoke)" } else { "" }
            ),
            (10, 8),
            ("sans-serif", 20).into_font(),
        ))
        .map_err(draw)?;
    title
        .draw(&Text::new(
            rep.machine.describe(),
            (10, 34),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(draw)?;
    let rows = body.split_evenly((scenarios.len().max(1), 1));
    for (area, sc) in rows.iter().zip(&scenarios) {
        let (left, right) = area.split_horizontally(600);
        let rs: Vec<&Row> = rep.rows.iter().filter(|r| r.scenario == *sc).collect();
        let bytes_kind = matches!(
            rs.first().map(|r| r.kind.as_str()),
            Some("large_result" | "copy_in" | "copy_out")
        );
        let value = |r: &Row| if bytes_kind { r.mb_per_s } else { r.ops_per_s };
        let unit = if bytes_kind { "MB/s" } else { "ops/s" };
        let max = rs.iter().map(|r| value(r)).fold(0.0, f64::max).max(1e-9) * 1.7;
        let n = targets.len() as f64;
        let mut chart = ChartBuilder::on(&left)
            .caption(format!("{sc}: throughput ({unit})"), ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(18)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..max, 0.0..n)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(5)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(draw)?;
        for (i, t) in targets.iter().enumerate() {
            let y = n - i as f64 - 1.0;
            let Some(r) = rs.iter().find(|r| r.target == *t) else {
                continue;
            };
            let c = COLORS[i % COLORS.len()];
            let v = value(r);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (v, y + 0.85)],
                    c.mix(0.8).filled(),
                )))
                .map_err(draw)?;
            let label = match (&r.skipped, r.vs_direct) {
                (Some(_), _) => format!("{t}: skipped"),
                (None, Some(x)) if !r.direct => format!("{t}: {v:.1} ({x:.2}x direct)"),
                _ => format!("{t}: {v:.1}"),
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (v + max * 0.01, y + 0.7),
                    ("sans-serif", 11),
                )))
                .map_err(draw)?;
        }
        let lmax = rs.iter().map(|r| r.latency.p999_ms).fold(0.0, f64::max).max(1e-6) * 1.9;
        let mut chart = ChartBuilder::on(&right)
            .caption(format!("{sc}: latency ms (p50 / p99 / p99.9)"), ("sans-serif", 14))
            .margin(6)
            .x_label_area_size(18)
            .y_label_area_size(10)
            .build_cartesian_2d(0.0..lmax, 0.0..n)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(5)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(draw)?;
        for (i, t) in targets.iter().enumerate() {
            let y = n - i as f64 - 1.0;
            let Some(r) = rs.iter().find(|r| r.target == *t && r.skipped.is_none()) else {
                continue;
            };
            let c = COLORS[i % COLORS.len()];
            let l = &r.latency;
            for (k, (v, alpha)) in [(l.p50_ms, 1.0), (l.p99_ms, 0.6), (l.p999_ms, 0.3)].iter().enumerate() {
                let y0 = y + 0.1 + k as f64 * 0.27;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y0), (*v, y0 + 0.24)],
                        c.mix(*alpha).filled(),
                    )))
                    .map_err(draw)?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{t}: {:.3} / {:.3} / {:.3}", l.p50_ms, l.p99_ms, l.p999_ms),
                    (l.p999_ms + lmax * 0.01, y + 0.7),
                    ("sans-serif", 11),
                )))
                .map_err(draw)?;
        }
    }
    root.present().map_err(draw)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, target: &str, direct: bool, ops_per_s: f64, mean_ms: f64) -> Row {
        Row {
            scenario: scenario.into(),
            kind: "point_select".into(),
            protocol: "prepared".into(),
            clients: 1,
            pipeline: 1,
            tls: false,
            upstream_tls: false,
            target: target.into(),
            direct,
            skipped: None,
            ops: 100,
            errors: 0,
            error_samples: vec![],
            elapsed_s: 1.0,
            ops_per_s,
            rows_per_s: ops_per_s,
            mb_per_s: 0.0,
            latency: Latency {
                mean_ms,
                p50_ms: mean_ms,
                p99_ms: mean_ms * 2.0,
                p999_ms: mean_ms * 3.0,
                max_ms: mean_ms * 4.0,
            },
            vs_direct: None,
            latency_added_us: None,
            cpu_s: None,
            cpu_us_per_op: None,
            rss_peak_mib: None,
            vmhwm_mib: None,
            harness_cpu_s: None,
            extra: Extra::default(),
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            label: "t".into(),
            started_unix: 0,
            smoke: false,
            machine: Machine {
                cores: 2,
                memory_gib: 1.0,
                cpu: "cpu".into(),
                os: "os".into(),
                kernel: "k".into(),
                postgres: None,
                pgbouncer: None,
                recordings_fs: None,
            },
            rows,
        }
    }

    #[test]
    fn ratios_against_direct_per_scenario() {
        let mut rows = vec![
            row("a", "direct", true, 1000.0, 0.100),
            row("a", "gatehouse", false, 600.0, 0.130),
            row("b", "gatehouse", false, 50.0, 1.0),
        ];
        compare(&mut rows);
        assert_eq!(rows[0].vs_direct, Some(1.0));
        assert_eq!(rows[0].latency_added_us, None);
        assert_eq!(rows[1].vs_direct, Some(0.6));
        assert!((rows[1].latency_added_us.unwrap() - 30.0).abs() < 1e-9);
        // No direct row for b: nothing to compare with.
        assert_eq!(rows[2].vs_direct, None);
    }

    #[test]
    fn table_json_and_chart() {
        let mut rows = vec![
            row("a", "direct", true, 1000.0, 0.100),
            row("a", "gatehouse", false, 600.0, 0.130),
        ];
        let mut skipped = row("a", "pgbouncer", false, 0.0, 0.0);
        skipped.skipped = Some("no admin API".into());
        rows.push(skipped);
        compare(&mut rows);
        let rep = report(rows);
        let md = markdown(&rep);
        assert!(md.contains("| a | gatehouse | 600 |"), "{md}");
        assert!(md.contains("| 0.600 | 30 |"), "{md}");
        assert!(md.contains("skipped: no admin API"));
        let dir = tempfile::tempdir().unwrap();
        write_json(&rep, &dir.path().join("r.json")).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
        assert_eq!(v["rows"][1]["vs_direct"], 0.6);
        write_svg(&rep, &dir.path().join("r.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("r.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("gatehouse"));
    }

    #[test]
    fn the_file_system_of_a_path_is_its_nearest_mounts() {
        let proc_fs = super::file_system(Path::new("/proc/self/status")).unwrap();
        assert!(proc_fs.starts_with("proc "), "{proc_fs}");
        // A path not made yet: the file system it would be made on.
        let dir = tempfile::tempdir().unwrap();
        let later = dir.path().join("recordings/2026-12-06");
        let fs = super::file_system(&later).unwrap();
        assert_eq!(Some(fs.clone()), super::file_system(dir.path()));
        assert!(!fs.starts_with("proc "), "{fs}");
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /proc rw,nosuid - proc proc rw
30 22 0:40 / /mnt/a\\040b rw shared:9 - tmpfs tmp\\040fs rw,size=4g
31 22 7:0 / /mnt/jrnl rw,relatime shared:10 - ext4 /dev/loop0 rw
32 31 0:41 / /mnt/jrnl/over rw - tmpfs tmpfs rw
";

    #[test]
    fn a_mount_is_the_longest_mount_point_above_the_path() {
        let m = |p: &str| super::mount_of(MOUNTINFO, Path::new(p)).map(|m| (m.device, m.fstype, m.source));
        let t = |d: &str, f: &str, s: &str| Some((d.to_string(), f.to_string(), s.to_string()));
        assert_eq!(m("/work/x"), t("254:0", "ext4", "/dev/vda"));
        assert_eq!(m("/mnt/jrnl/recordings"), t("7:0", "ext4", "/dev/loop0"));
        assert_eq!(m("/mnt/jrnl/over/r"), t("0:41", "tmpfs", "tmpfs"));
        // Components, not bytes: /mnt/jrnl2 is on the root.
        assert_eq!(m("/mnt/jrnl2"), t("254:0", "ext4", "/dev/vda"));
        // A mount point with a space in it, as mountinfo escapes it.
        assert_eq!(m("/mnt/a b/r"), t("0:40", "tmpfs", "tmp fs"));
        assert_eq!(m("/mnt/a"), t("254:0", "ext4", "/dev/vda"));
    }

    #[test]
    fn an_ext_file_system_says_whether_it_has_a_journal() {
        let mount = |fstype: &str| super::Mount {
            device: "254:1".into(),
            fstype: fstype.into(),
            source: "/dev/vda1".into(),
        };
        let journals = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let d = super::describe;
        assert_eq!(
            d(&mount("ext4"), Some("vda1"), Some(&journals(&["loop0-8", "vda1-8"]))),
            "ext4 with a journal (/dev/vda1)"
        );
        // vda's journal is not vda1's, nor is a name without an inode.
        assert_eq!(
            d(
                &mount("ext4"),
                Some("vda1"),
                Some(&journals(&["vda-8", "vda1-", "vda10-8"]))
            ),
            "ext4 without a journal (/dev/vda1)"
        );
        assert_eq!(
            d(&mount("ext2"), Some("vda1"), Some(&[])),
            "ext2 without a journal (/dev/vda1)"
        );
        assert_eq!(d(&mount("ext4"), None, Some(&[])), "ext4 journal unknown (/dev/vda1)");
        assert_eq!(
            d(&mount("ext4"), Some("vda1"), None),
            "ext4 journal unknown (/dev/vda1)"
        );
        assert_eq!(d(&mount("xfs"), Some("vda1"), Some(&[])), "xfs (/dev/vda1)");
    }
}
