//! gatehouse-load: drives PostgreSQL endpoints (direct, gatehouse, PgBouncer,
//! any other proxy) through the scenarios in loadtest/scenarios and reports
//! throughput, latency percentiles, ratios against the direct target, errors,
//! and the proxy's CPU time and memory.
//!
//!   cargo run --release -p gatehouse-load -- standard     # direct vs gatehouse vs PgBouncer
//!   cargo run -p gatehouse-load -- smoke                  # every scenario, ~1 s each (CI)
//!   cargo run --release -p gatehouse-load -- run my-run.toml --scenario point-prepared-c32
//!   cargo run --release -p gatehouse-load -- list

mod admin;
mod managed;
mod mysql;
mod pg;
mod procmon;
mod report;
mod scenario;
mod stats;
mod workload;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use scenario::{Kind, Managed, RunFile, Scenario};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use workload::{Endpoint, Progress, Tables};

/// Set by Ctrl-C: the running scenario stops, the rest are skipped, managed
/// processes are stopped and the report is still written.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser)]
#[command(
    name = "gatehouse-load",
    about = "Load harness for gatehouse and other PostgreSQL endpoints"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The standard comparison (loadtest/standard.toml): direct PostgreSQL,
    /// gatehouse (masking on), PgBouncer; writes loadtest/report/standard.*.
    Standard(Opts),
    /// Every scenario shrunk to about a second against direct PostgreSQL and
    /// a gatehouse it starts (loadtest/smoke.toml); fails on any error.
    Smoke(Opts),
    /// Any run file.
    Run {
        /// The run file (targets, scenarios, managed processes).
        file: PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
    /// The scenarios a run file would use.
    List {
        #[arg(default_value_os_t = crate_dir().join("standard.toml"))]
        file: PathBuf,
    },
}

#[derive(Args, Clone, Default)]
struct Opts {
    /// Only these scenarios (repeatable).
    #[arg(long = "scenario", short = 's')]
    scenarios: Vec<String>,
    /// Only these targets (repeatable).
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Override every scenario's measured seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Shrink every scenario to about a second and few operations.
    #[arg(long)]
    smoke: bool,
    /// Use this gatehouse binary (default: built with cargo).
    #[arg(long)]
    gatehouse_bin: Option<PathBuf>,
    /// Do not run cargo to build gatehouse when its binary exists.
    #[arg(long)]
    no_build: bool,
    /// Write the report here (default: the run file's output_dir).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip creating and filling the tables.
    #[arg(long)]
    no_setup: bool,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Standard(o) => run_file(&crate_dir().join("standard.toml"), o),
        Cmd::Smoke(mut o) => {
            o.smoke = true;
            run_file(&crate_dir().join("smoke.toml"), o)
        }
        Cmd::Run { file, opts } => run_file(&file, opts),
        Cmd::List { file } => list(&file),
    };
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("gatehouse-load: {e:#}");
            std::process::exit(1);
        }
    }
}

fn list(file: &Path) -> Result<i32> {
    let run = RunFile::load(file)?;
    for s in run.load_scenarios(&[])? {
        println!(
            "{:<28} {:<15} {:<9} clients={:<4} {:>5} s  {}",
            s.name,
            s.kind.as_str(),
            s.protocol.as_str(),
            s.clients,
            s.duration_s,
            s.description
        );
    }
    Ok(0)
}

fn run_file(file: &Path, opts: Opts) -> Result<i32> {
    let mut run = RunFile::load(file)?;
    if let Some(b) = &opts.gatehouse_bin {
        if let Some(g) = run.gatehouse.as_mut() {
            g.bin = Some(std::fs::canonicalize(b).with_context(|| format!("{}", b.display()))?);
        }
    }
    if !opts.targets.is_empty() {
        for t in &opts.targets {
            if !run.targets.iter().any(|x| &x.name == t) {
                bail!("no target named {t:?} in {}", file.display());
            }
        }
        run.targets.retain(|t| opts.targets.contains(&t.name));
    }
    let mut scenarios = run.load_scenarios(&opts.scenarios)?;
    for s in scenarios.iter_mut() {
        if opts.smoke {
            *s = s.smoke();
        }
        if let Some(d) = opts.duration {
            s.duration_s = d;
            s.validate().with_context(|| format!("--duration for {}", s.name))?;
        }
    }
    let threads = match run.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(execute(run, scenarios, opts))
}

async fn execute(run: RunFile, scenarios: Vec<Scenario>, opts: Opts) -> Result<i32> {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping the running scenario, skipping the rest");
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
    let idle_max = scenarios.iter().map(|s| s.idle_connections).max().unwrap_or(0);
    let nofile = procmon::raise_nofile((idle_max as u64 * 2 + 4096).max(65536));
    if (idle_max as u64) * 2 + 1024 > nofile {
        eprintln!("warning: open-file limit {nofile} is low for {idle_max} idle connections through a proxy");
    }
    let repo = crate_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let tmp = tempfile::Builder::new().prefix("gatehouse-load.").tempdir()?;
    let cert = managed::make_cert(tmp.path())?;
    let pg_port = run.targets.iter().find(|t| t.direct).map_or(5432, |t| t.port);

    // Managed processes: PgBouncer first (gatehouse's pooled target points at it).
    let mut procs: Vec<managed::Proc> = Vec::new();
    let wants = |m: Managed| run.targets.iter().any(|t| t.managed == Some(m));
    let mut pgb_port = None;
    let mut pgb_tls_port = None;
    // PgBouncer checks a password, as gatehouse checks its token: a
    // connection storm's login is then one round trip on each.
    let pgb_password = managed::token("pgbouncer");
    if wants(Managed::Pgbouncer) {
        if let Some(spec) = &run.pgbouncer {
            let p = managed::start_pgbouncer(
                spec,
                managed::Hops::PlainUpstream,
                &run,
                tmp.path(),
                pg_port,
                &pgb_password,
            )?;
            eprintln!(
                "pgbouncer pid {} on 127.0.0.1:{} ({} mode)",
                p.pid(),
                spec.port,
                spec.pool_mode
            );
            pgb_port = Some((spec.port, p.pid()));
            procs.push(p);
            if scenarios.iter().any(|s| s.upstream_tls) {
                let p = managed::start_pgbouncer(
                    spec,
                    managed::Hops::TlsUpstream,
                    &run,
                    tmp.path(),
                    pg_port,
                    &pgb_password,
                )?;
                eprintln!(
                    "pgbouncer pid {} on 127.0.0.1:{} ({} mode, TLS to PostgreSQL)",
                    p.pid(),
                    spec.upstream_tls_port,
                    spec.pool_mode
                );
                pgb_tls_port = Some((spec.upstream_tls_port, p.pid()));
                procs.push(p);
            }
        }
    }
    let mut gh = None;
    if wants(Managed::Gatehouse) {
        if let Some(spec) = &run.gatehouse {
            let mut spec = spec.clone();
            if opts.no_build && spec.bin.is_none() {
                let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| repo.join("target"));
                spec.bin = Some(target_dir.join(format!("{}/gatehouse", spec.profile)));
            }
            let bin = managed::gatehouse_bin(&spec, &run, &repo, true)?;
            let pooled = spec.pooled_port.or(pgb_port.map(|p| p.0)).unwrap_or(pg_port);
            let g = managed::start_gatehouse(&bin, &spec, &run, tmp.path(), pg_port, (pooled, &pgb_password), &cert)?;
            eprintln!(
                "gatehouse pid {} on 127.0.0.1:{} (admin 127.0.0.1:{}), {}",
                g.proc.pid(),
                g.port,
                g.admin_port,
                bin.display()
            );
            gh = Some(g);
        }
    }

    // Endpoints.
    let mut endpoints = Vec::new();
    for t in &run.targets {
        let dbname = t.dbname.clone().unwrap_or_else(|| run.database.clone());
        let mut ep = Endpoint {
            name: t.name.clone(),
            direct: t.direct,
            params: pg::ConnectParams {
                host: t.host.clone(),
                port: t.port,
                user: t.user.clone(),
                password: t.password.clone(),
                dbname,
                tls: false,
            },
            idle_dbname: t.idle_dbname.clone(),
            pid: t.pid,
            admin: match (&t.admin_url, &t.admin_token) {
                (Some(u), Some(tok)) => Some((admin::host_port(u)?, tok.clone())),
                _ => None,
            },
            approval: t.approval_user.clone().map(|u| (u, t.approval_password.clone())),
            mysql: t.mysql_port.map(|port| mysql::MyParams {
                host: t.host.clone(),
                port,
                user: t.mysql_user.clone().unwrap_or_else(|| "root".into()),
                password: None,
                dbname: run.database.clone(),
            }),
            upstream_tls: t.upstream_tls_port.map(|port| workload::UpstreamTlsRoute {
                port,
                dbname: t.upstream_tls_dbname.clone().unwrap_or_else(|| run.database.clone()),
                pid: None,
            }),
        };
        if let Some(pf) = &t.pidfile {
            let pf = run.resolve(pf);
            let text = std::fs::read_to_string(&pf).with_context(|| format!("pidfile {}", pf.display()))?;
            ep.pid = Some(
                text.trim()
                    .parse()
                    .with_context(|| format!("pidfile {}", pf.display()))?,
            );
        }
        match t.managed {
            Some(Managed::Gatehouse) => {
                let Some(g) = &gh else { bail!("gatehouse did not start") };
                ep.params.port = g.port;
                if t.user == "postgres" {
                    ep.params.user = "load".into();
                }
                ep.params.password = Some(g.load_token.clone());
                ep.pid = Some(g.proc.pid());
                ep.admin = Some((format!("127.0.0.1:{}", g.admin_port), g.admin_token.clone()));
                ep.approval = Some(("load-held".into(), Some(g.held_token.clone())));
                ep.mysql = Some(mysql::MyParams {
                    host: "127.0.0.1".into(),
                    port: g.mysql_port,
                    user: t.mysql_user.clone().unwrap_or_else(|| "load".into()),
                    password: Some(g.load_token.clone()),
                    dbname: run.database.clone(),
                });
                if ep.idle_dbname.is_none() && pgb_port.is_some() {
                    ep.idle_dbname = Some(format!("{}_pooled", run.database));
                }
                ep.upstream_tls = Some(workload::UpstreamTlsRoute {
                    port: g.port,
                    dbname: format!("{}_tls", run.database),
                    pid: None,
                });
            }
            Some(Managed::Pgbouncer) => {
                let Some((port, pid)) = pgb_port else {
                    bail!("PgBouncer did not start")
                };
                ep.params.port = port;
                ep.params.password = Some(pgb_password.clone());
                ep.pid = Some(pid);
                ep.upstream_tls = pgb_tls_port.map(|(port, pid)| workload::UpstreamTlsRoute {
                    port,
                    dbname: ep.params.dbname.clone(),
                    pid: Some(pid),
                });
            }
            None => {}
        }
        endpoints.push(ep);
    }

    let tables = Tables {
        accounts: run.setup.accounts,
        secret_rows: run.setup.secret_rows,
    };
    if !opts.no_setup {
        let base = endpoints.iter().find(|e| e.direct).or(endpoints.first());
        if let Some(ep) = base {
            eprintln!("setup: database {} and tables through {}", run.database, ep.name);
            workload::setup(ep, &run.database, tables).await.context("setup")?;
        }
        let mysql_base = endpoints.iter().filter(|e| e.direct).find_map(|e| e.mysql.as_ref());
        if let (Some(p), true) = (mysql_base, scenarios.iter().any(|s| s.kind == Kind::MysqlPointSelect)) {
            eprintln!("setup: MySQL database {} and tables on port {}", run.database, p.port);
            mysql::setup(p, tables.accounts).await.context("MySQL setup")?;
        }
    }

    let label = run.label.clone().unwrap_or_else(|| "run".into());
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    let total = scenarios.len() * endpoints.len();
    let mut k = 0;
    let wall = std::time::Instant::now();
    for sc in &scenarios {
        for ep in &endpoints {
            k += 1;
            let routed = if sc.upstream_tls {
                ep.with_upstream_tls()
            } else {
                Some(ep.clone())
            };
            let skip = if INTERRUPTED.load(Ordering::Relaxed) {
                Some("interrupted".to_string())
            } else if !sc.targets.is_empty() && !sc.targets.contains(&ep.name) {
                Some("not among the scenario's targets".into())
            } else if routed.is_none() {
                Some("no route with TLS to PostgreSQL (upstream_tls_port)".into())
            } else if sc.skip_direct && ep.direct {
                Some("the scenario leaves out the direct target".into())
            } else if sc.kind == Kind::Approvals && (ep.admin.is_none() || ep.approval.is_none()) {
                Some("no admin API to approve with".into())
            } else if sc.kind == Kind::MysqlPointSelect && ep.mysql.is_none() {
                Some("no MySQL port".into())
            } else {
                None
            };
            let progress = Progress::new(format!("[{k}/{total}] {} @ {}", sc.name, ep.name));
            let mut row = empty_row(sc, ep);
            if let Some(why) = skip {
                row.skipped = Some(why);
                rows.push(row);
                continue;
            }
            let Some(ep) = &routed else { continue };
            let m = workload::run(sc, ep, tables, &progress).await?;
            fill_row(&mut row, sc, &m);
            if sc.pgbench_check && !INTERRUPTED.load(Ordering::Relaxed) {
                progress.line("pgbench with the same statement, clients and duration…");
                match workload::pgbench(sc, ep, tables, tmp.path()).await {
                    Ok(tps) => row.extra.pgbench_tps = Some(tps),
                    Err(e) => progress.done(&format!("pgbench: {e:#}")),
                }
            }
            progress.done(&format!(
                "{:.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  errors {}{}",
                row.ops_per_s,
                row.latency.p50_ms,
                row.latency.p99_ms,
                row.errors,
                row.error_samples
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
            rows.push(row);
            if let Some(g) = &mut gh {
                if let Ok(Some(st)) = g.proc.child.try_wait() {
                    bail!(
                        "gatehouse exited ({st}) during {}; log {}",
                        sc.name,
                        g.proc.log.display()
                    );
                }
            }
        }
    }
    report::compare(&mut rows);
    let rep = report::Report {
        label: label.clone(),
        started_unix,
        smoke: opts.smoke,
        machine: report::Machine::probe(gh.as_ref().and_then(|g| g.recordings_dir.as_deref())),
        rows,
    };
    let out_base = opts
        .out
        .clone()
        .unwrap_or_else(|| run.resolve(run.output_dir.as_deref().unwrap_or(Path::new("results"))));
    let out = out_base.join(format!("{label}-{started_unix}"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let md = report::markdown(&rep);
    std::fs::write(out.join("summary.md"), &md)?;
    report::write_json(&rep, &out.join("report.json"))?;
    report::write_svg(&rep, &out.join("chart.svg"))?;
    if let (Some(dir), false) = (
        &run.latest_dir,
        opts.smoke || !opts.scenarios.is_empty() || !opts.targets.is_empty(),
    ) {
        let dir = run.resolve(dir);
        std::fs::create_dir_all(&dir)?;
        for (from, to) in [("summary.md", "md"), ("report.json", "json"), ("chart.svg", "svg")] {
            std::fs::copy(out.join(from), dir.join(format!("{label}.{to}")))?;
        }
        eprintln!("latest report: {}/{label}.{{md,json,svg}}", dir.display());
    }
    println!("{md}");
    eprintln!(
        "report: {}/{{summary.md,report.json,chart.svg}} ({:.0} s)",
        out.display(),
        wall.elapsed().as_secs_f64()
    );
    drop(procs);
    if let Some(mut g) = gh {
        g.proc.stop();
    }
    // Leave the sockets' TIME_WAIT and the runtime alone: done.
    tokio::time::sleep(Duration::from_millis(10)).await;
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Ok(130);
    }
    if opts.smoke {
        let bad: Vec<String> = rep
            .rows
            .iter()
            .filter(|r| r.skipped.is_none() && (r.errors > 0 || r.ops == 0))
            .map(|r| format!("{} @ {}", r.scenario, r.target))
            .collect();
        if !bad.is_empty() {
            eprintln!("smoke: errors or no operations in: {}", bad.join(", "));
            return Ok(1);
        }
        let ran = rep.rows.iter().filter(|r| r.skipped.is_none()).count();
        eprintln!("smoke: {ran} scenario runs, no errors");
    }
    Ok(0)
}

fn empty_row(sc: &Scenario, ep: &Endpoint) -> report::Row {
    report::Row {
        scenario: sc.name.clone(),
        kind: sc.kind.as_str().into(),
        protocol: sc.protocol.as_str().into(),
        clients: sc.clients,
        pipeline: sc.pipeline,
        tls: sc.tls,
        upstream_tls: sc.upstream_tls,
        target: ep.name.clone(),
        direct: ep.direct,
        skipped: None,
        ops: 0,
        errors: 0,
        error_samples: Vec::new(),
        elapsed_s: 0.0,
        ops_per_s: 0.0,
        rows_per_s: 0.0,
        mb_per_s: 0.0,
        latency: Default::default(),
        vs_direct: None,
        latency_added_us: None,
        cpu_s: None,
        cpu_us_per_op: None,
        rss_peak_mib: None,
        vmhwm_mib: None,
        harness_cpu_s: None,
        extra: Default::default(),
    }
}

fn fill_row(row: &mut report::Row, _sc: &Scenario, m: &workload::Measured) {
    let r = &m.rec;
    row.ops = r.ops;
    row.errors = r.errors;
    row.error_samples = r.error_samples.clone();
    row.elapsed_s = m.elapsed_s;
    row.ops_per_s = stats::rate(r.ops, m.elapsed_s);
    row.rows_per_s = stats::rate(r.rows, m.elapsed_s);
    row.mb_per_s = stats::rate(r.bytes, m.elapsed_s) / 1e6;
    row.latency = r.latency();
    row.cpu_s = m.cpu_s;
    row.cpu_us_per_op = m.cpu_s.filter(|_| r.ops > 0).map(|c| c * 1e6 / r.ops as f64);
    row.rss_peak_mib = m.rss_peak_kib.map(|k| k as f64 / 1024.0);
    row.vmhwm_mib = m.vmhwm_kib.map(|k| k as f64 / 1024.0);
    row.harness_cpu_s = m.harness_cpu_s;
    row.extra = m.extra.clone();
}
