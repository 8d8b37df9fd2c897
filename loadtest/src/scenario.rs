//! Scenario files (`loadtest/scenarios/*.toml`) and run files (targets, which
//! scenarios, managed processes), parsed and checked before any traffic.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Longest a scenario may run per target, whatever its file says.
pub const MAX_DURATION_S: f64 = 600.0;
/// Most clients (working connections) a scenario may open.
pub const MAX_CLIENTS: usize = 2_000;
/// Most idle connections a scenario may hold.
pub const MAX_IDLE: usize = 50_000;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One-row selects by primary key.
    PointSelect,
    /// Many-column rows carrying secrets (the cost of masking), `rows` per statement.
    WideRows,
    /// One statement returning `rows` rows (default 1M).
    LargeResult,
    /// `COPY … FROM STDIN` of `bytes` per statement.
    CopyIn,
    /// `COPY (…) TO STDOUT` of `rows` rows.
    CopyOut,
    /// Connect, (TLS,) authenticate, one statement, disconnect.
    Storm,
    /// `idle_connections` logged-in connections held while `clients` run point selects.
    IdlePlusWork,
    /// Writes held for approval and approved by the harness through the admin API.
    Approvals,
    /// One-row selects by primary key over MySQL (`protocol`: `simple` is
    /// COM_QUERY, `prepared` COM_STMT_EXECUTE of a statement prepared
    /// once), against targets with a `mysql_port`.
    MysqlPointSelect,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PointSelect => "point_select",
            Kind::WideRows => "wide_rows",
            Kind::LargeResult => "large_result",
            Kind::CopyIn => "copy_in",
            Kind::CopyOut => "copy_out",
            Kind::Storm => "storm",
            Kind::IdlePlusWork => "idle_plus_work",
            Kind::Approvals => "approvals",
            Kind::MysqlPointSelect => "mysql_point_select",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Query messages, values inlined.
    #[default]
    Simple,
    /// Parse/Bind/Execute/Sync with the unnamed statement, every time.
    Extended,
    /// A named statement parsed once per connection, then Bind/Execute/Sync.
    Prepared,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        }
    }
}

fn d_clients() -> usize {
    1
}
fn d_duration() -> f64 {
    10.0
}
fn d_pipeline() -> usize {
    1
}
fn d_op_timeout() -> f64 {
    30.0
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: Kind,
    #[serde(default)]
    pub protocol: Protocol,
    /// Working connections, each one task.
    #[serde(default = "d_clients")]
    pub clients: usize,
    /// Measured seconds per target (after the warm-up).
    #[serde(default = "d_duration")]
    pub duration_s: f64,
    /// Stop after this many measured operations, if earlier than the duration.
    #[serde(default)]
    pub max_ops: Option<u64>,
    /// Seconds of unmeasured traffic first.
    #[serde(default)]
    pub warmup_s: f64,
    /// Statements sent before reading their results (point selects, wide rows).
    #[serde(default = "d_pipeline")]
    pub pipeline: usize,
    /// TLS to the target (SSLRequest, then rustls).
    #[serde(default)]
    pub tls: bool,
    /// TLS on the proxy's hop to PostgreSQL too (needs `tls`): a managed
    /// gatehouse's `<database>_tls` target (`tls = "require"`) and a second
    /// PgBouncer with `server_tls_sslmode = require`. The direct target has
    /// one hop, the client's.
    #[serde(default)]
    pub upstream_tls: bool,
    /// Logged-in idle connections (idle_plus_work).
    #[serde(default)]
    pub idle_connections: usize,
    /// Rows per statement: wide_rows (100), large_result and copy_out (1,000,000).
    #[serde(default)]
    pub rows: Option<u64>,
    /// Bytes per COPY IN statement (64 MiB).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Seconds one operation may take before it counts as an error.
    #[serde(default = "d_op_timeout")]
    pub op_timeout_s: f64,
    /// Run only against these targets (by name); empty: all.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Leave out targets marked `direct` (e.g. 10,000 idle connections that
    /// PostgreSQL's max_connections cannot take).
    #[serde(default)]
    pub skip_direct: bool,
    /// Run `pgbench` with the same statement, clients and duration against
    /// each target too (point_select only), to show the harness is not the bottleneck.
    #[serde(default)]
    pub pgbench_check: bool,
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> Result<Scenario> {
        let s: Scenario = toml::from_str(text).with_context(|| format!("{origin}: not a scenario"))?;
        s.validate()
            .with_context(|| format!("{origin}: scenario {:?}", s.name))?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Scenario::parse(&text, &path.display().to_string())
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("name: letters, digits, - and _ only");
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            bail!("clients: 1..={MAX_CLIENTS}");
        }
        if !(self.duration_s > 0.0 && self.duration_s <= MAX_DURATION_S) {
            bail!("duration_s: more than 0, at most {MAX_DURATION_S}");
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s <= MAX_DURATION_S) {
            bail!("warmup_s: 0..={MAX_DURATION_S}");
        }
        if !(self.op_timeout_s > 0.0 && self.op_timeout_s <= MAX_DURATION_S) {
            bail!("op_timeout_s: more than 0, at most {MAX_DURATION_S}");
        }
        if self.pipeline == 0 || self.pipeline > 1000 {
            bail!("pipeline: 1..=1000");
        }
        if self.max_ops == Some(0) {
            bail!("max_ops: at least 1");
        }
        if self.idle_connections > MAX_IDLE {
            bail!("idle_connections: at most {MAX_IDLE}");
        }
        match self.kind {
            Kind::IdlePlusWork if self.idle_connections == 0 => bail!("idle_plus_work needs idle_connections"),
            Kind::IdlePlusWork => {}
            _ if self.idle_connections > 0 => bail!("idle_connections is for idle_plus_work"),
            _ => {}
        }
        if self.pipeline > 1 && !matches!(self.kind, Kind::PointSelect | Kind::WideRows | Kind::IdlePlusWork) {
            bail!("pipeline is for point_select, wide_rows and idle_plus_work");
        }
        if self.pgbench_check && !matches!(self.kind, Kind::PointSelect) {
            bail!("pgbench_check is for point_select");
        }
        if self.kind == Kind::MysqlPointSelect && self.protocol == Protocol::Extended {
            bail!("mysql_point_select: protocol simple or prepared");
        }
        if self.kind == Kind::MysqlPointSelect && self.tls {
            bail!("mysql_point_select: no TLS");
        }
        if self.upstream_tls && !self.tls {
            bail!("upstream_tls: TLS on both hops needs tls = true too");
        }
        if self.upstream_tls && matches!(self.kind, Kind::MysqlPointSelect | Kind::IdlePlusWork | Kind::Approvals) {
            bail!("upstream_tls: not for mysql_point_select, idle_plus_work or approvals");
        }
        if self.rows == Some(0) || self.bytes == Some(0) {
            bail!("rows and bytes: at least 1");
        }
        Ok(())
    }

    /// Rows per statement for the kinds that have them.
    pub fn rows_per_op(&self) -> u64 {
        match self.kind {
            Kind::WideRows => self.rows.unwrap_or(100),
            Kind::LargeResult | Kind::CopyOut => self.rows.unwrap_or(1_000_000),
            _ => 1,
        }
    }

    pub fn copy_bytes(&self) -> u64 {
        self.bytes.unwrap_or(64 << 20)
    }

    /// The same scenario shrunk for a smoke run: about a second, few operations.
    pub fn smoke(&self) -> Scenario {
        let mut s = self.clone();
        s.duration_s = s.duration_s.min(1.0);
        s.warmup_s = 0.0;
        s.clients = s.clients.min(4);
        s.op_timeout_s = s.op_timeout_s.min(20.0);
        s.pgbench_check = false;
        let cap = match s.kind {
            Kind::LargeResult | Kind::CopyOut | Kind::CopyIn => 2,
            Kind::Approvals => 10,
            _ => 200,
        };
        s.max_ops = Some(s.max_ops.map_or(cap, |m| m.min(cap)));
        if matches!(s.kind, Kind::LargeResult | Kind::CopyOut) {
            s.rows = Some(s.rows_per_op().min(20_000));
        }
        if s.kind == Kind::CopyIn {
            s.bytes = Some(s.copy_bytes().min(1 << 20));
        }
        if s.kind == Kind::IdlePlusWork {
            s.idle_connections = s.idle_connections.min(20);
        }
        s
    }
}

/// A target: any PostgreSQL endpoint on loopback.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    #[serde(default = "d_host")]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default = "d_user")]
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Default: the run's `database`.
    #[serde(default)]
    pub dbname: Option<String>,
    /// The baseline the others are compared with.
    #[serde(default)]
    pub direct: bool,
    /// The process to watch for CPU time and RSS.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub pidfile: Option<PathBuf>,
    /// `gatehouse` or `pgbouncer`: started (and stopped) by the harness,
    /// which fills in port, password, pid and the admin API.
    #[serde(default)]
    pub managed: Option<Managed>,
    /// Database for the idle connections of idle_plus_work (default: dbname).
    #[serde(default)]
    pub idle_dbname: Option<String>,
    /// Admin API of a gatehouse (http://127.0.0.1:PORT), for approvals.
    #[serde(default)]
    pub admin_url: Option<String>,
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Identity whose writes are held for approval.
    #[serde(default)]
    pub approval_user: Option<String>,
    #[serde(default)]
    pub approval_password: Option<String>,
    /// The same endpoint's MySQL port, for MySQL scenarios (a managed
    /// gatehouse's is filled in); a target without one skips them.
    #[serde(default)]
    pub mysql_port: Option<u16>,
    /// The MySQL user (default `root`; `load` through a managed gatehouse).
    #[serde(default)]
    pub mysql_user: Option<String>,
    /// For scenarios with `upstream_tls`: the port and database that reach
    /// this proxy with TLS on its hop to PostgreSQL too (a managed one's are
    /// filled in). A proxy without them skips those scenarios; the direct
    /// target needs none (its only hop is the client's).
    #[serde(default)]
    pub upstream_tls_port: Option<u16>,
    #[serde(default)]
    pub upstream_tls_dbname: Option<String>,
}

fn d_host() -> String {
    "127.0.0.1".into()
}
fn d_user() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Managed {
    Gatehouse,
    Pgbouncer,
}

/// Traffic goes to loopback only.
pub fn check_loopback(host: &str) -> Result<()> {
    if host == "localhost" {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => bail!("host {host:?}: the harness only talks to loopback (127.0.0.0/8, ::1, localhost)"),
    }
}

impl Target {
    pub fn validate(&self) -> Result<()> {
        check_loopback(&self.host).with_context(|| format!("target {:?}", self.name))?;
        if self.managed.is_none() && self.port == 0 {
            bail!("target {:?}: port is required", self.name);
        }
        if let Some(u) = &self.admin_url {
            let hp = u.strip_prefix("http://").unwrap_or(u);
            let host = hp.rsplit_once(':').map(|(h, _)| h).unwrap_or(hp);
            check_loopback(host.trim_matches(['[', ']']))
                .with_context(|| format!("target {:?}: admin_url", self.name))?;
        }
        Ok(())
    }
}

fn d_gh_port() -> u16 {
    6434
}
fn d_gh_admin_port() -> u16 {
    9190
}
fn d_pgb_port() -> u16 {
    6433
}
fn d_database() -> String {
    "gh_load".into()
}

/// `[gatehouse]`: how the harness starts a gatehouse for `managed = "gatehouse"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatehouseSpec {
    /// Binary (default: $CARGO_TARGET_DIR or target, /release/gatehouse, built if missing).
    #[serde(default)]
    pub bin: Option<PathBuf>,
    #[serde(default = "d_gh_port")]
    pub port: u16,
    #[serde(default = "d_gh_admin_port")]
    pub admin_port: u16,
    /// 0: one per core.
    #[serde(default)]
    pub workers: usize,
    /// Configuration template (default: gatehouse.toml.in beside the run file).
    #[serde(default)]
    pub template: Option<PathBuf>,
    /// TOML put in place of `{{EXTRA}}`, e.g. a `[recording]` section.
    /// `{{TMP}}` in it is the run's temporary directory.
    #[serde(default)]
    pub extra_toml: String,
    /// Upstream for the `*_pooled` database used by idle connections (default: the managed PgBouncer).
    #[serde(default)]
    pub pooled_port: Option<u16>,
    /// Cargo profile of the binary built when `bin` is not given: release or debug.
    #[serde(default = "d_profile")]
    pub profile: String,
    /// gatehouse's MySQL listener.
    #[serde(default = "d_gh_mysql_port")]
    pub mysql_port: u16,
    /// The MariaDB/MySQL server its MySQL target reaches (on 127.0.0.1).
    #[serde(default = "d_mysql_upstream_port")]
    pub mysql_upstream_port: u16,
}

fn d_gh_mysql_port() -> u16 {
    3317
}
fn d_mysql_upstream_port() -> u16 {
    3306
}

fn d_profile() -> String {
    "release".into()
}

/// `[pgbouncer]`: how the harness starts PgBouncer for `managed = "pgbouncer"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgbouncerSpec {
    #[serde(default)]
    pub bin: Option<PathBuf>,
    #[serde(default = "d_pgb_port")]
    pub port: u16,
    #[serde(default = "d_pool")]
    pub pool_size: u32,
    #[serde(default = "d_pool_mode")]
    pub pool_mode: String,
    /// A second PgBouncer, started only for scenarios with `upstream_tls`,
    /// alike but with `server_tls_sslmode = require`: PgBouncer's server TLS
    /// mode is global, so one process cannot have both.
    #[serde(default = "d_pgb_upstream_tls_port")]
    pub upstream_tls_port: u16,
}

fn d_pgb_upstream_tls_port() -> u16 {
    6435
}
fn d_pool() -> u32 {
    40
}
fn d_pool_mode() -> String {
    "session".into()
}

fn d_setup_accounts() -> u64 {
    100_000
}
fn d_setup_secrets() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    #[serde(default = "d_setup_accounts")]
    pub accounts: u64,
    #[serde(default = "d_setup_secrets")]
    pub secret_rows: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            accounts: d_setup_accounts(),
            secret_rows: d_setup_secrets(),
        }
    }
}

/// A run file: what to run against what.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// Names the report (`standard` gives report/standard.*).
    #[serde(default)]
    pub label: Option<String>,
    /// Database the tables live in (created through the direct target if missing).
    #[serde(default = "d_database")]
    pub database: String,
    /// Scenario names, in order; empty: every file in the scenario directory.
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// Default: `scenarios` beside the run file.
    #[serde(default)]
    pub scenario_dir: Option<PathBuf>,
    /// Default: `results` beside the run file.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// Also copy the report to this directory as <label>.{md,json,svg}.
    #[serde(default)]
    pub latest_dir: Option<PathBuf>,
    /// Runtime threads of the harness (0: one per core).
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub setup: Setup,
    #[serde(default)]
    pub gatehouse: Option<GatehouseSpec>,
    #[serde(default)]
    pub pgbouncer: Option<PgbouncerSpec>,
    #[serde(default, rename = "target")]
    pub targets: Vec<Target>,
    /// Where the file was read from (relative paths resolve against it).
    #[serde(skip)]
    pub base: PathBuf,
}

impl RunFile {
    pub fn parse(text: &str, base: &Path, origin: &str) -> Result<RunFile> {
        let mut r: RunFile = toml::from_str(text).with_context(|| format!("{origin}: not a run file"))?;
        r.base = base.to_path_buf();
        r.validate().with_context(|| origin.to_string())?;
        Ok(r)
    }

    pub fn load(path: &Path) -> Result<RunFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        RunFile::parse(&text, &base, &path.display().to_string())
    }

    pub fn validate(&self) -> Result<()> {
        if self.targets.is_empty() {
            bail!("no [[target]]");
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            t.validate()?;
            if !names.insert(t.name.as_str()) {
                bail!("two targets are named {:?}", t.name);
            }
            match t.managed {
                Some(Managed::Gatehouse) if self.gatehouse.is_none() => {
                    bail!(
                        "target {:?} is managed by the harness but there is no [gatehouse]",
                        t.name
                    )
                }
                Some(Managed::Pgbouncer) if self.pgbouncer.is_none() => {
                    bail!(
                        "target {:?} is managed by the harness but there is no [pgbouncer]",
                        t.name
                    )
                }
                _ => {}
            }
        }
        if self.targets.iter().filter(|t| t.direct).count() > 1 {
            bail!("at most one target is `direct`");
        }
        if let Some(g) = &self.gatehouse {
            if g.profile != "release" && g.profile != "debug" {
                bail!("[gatehouse] profile: release or debug");
            }
        }
        if self.threads > 256 {
            bail!("threads: at most 256");
        }
        Ok(())
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub fn scenario_dir(&self) -> PathBuf {
        self.resolve(self.scenario_dir.as_deref().unwrap_or(Path::new("scenarios")))
    }

    /// The scenarios this run names (or all of the directory, sorted by file name).
    pub fn load_scenarios(&self, only: &[String]) -> Result<Vec<Scenario>> {
        let dir = self.scenario_dir();
        let mut all = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        entries.sort();
        for p in entries {
            all.push(Scenario::load(&p)?);
        }
        let wanted: Vec<String> = if !only.is_empty() {
            only.to_vec()
        } else {
            self.scenarios.clone()
        };
        if wanted.is_empty() {
            return Ok(all);
        }
        wanted
            .iter()
            .map(|n| {
                all.iter()
                    .find(|s| &s.name == n)
                    .cloned()
                    .with_context(|| format!("no scenario named {n:?} in {}", dir.display()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scenario_with_defaults() {
        let s = Scenario::parse(
            "name = \"p\"\nkind = \"point_select\"\nprotocol = \"prepared\"\nclients = 32\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.kind, Kind::PointSelect);
        assert_eq!(s.protocol, Protocol::Prepared);
        assert_eq!(s.clients, 32);
        assert_eq!(s.duration_s, 10.0);
        assert_eq!(s.pipeline, 1);
        assert_eq!(s.max_ops, None);
        assert_eq!(s.rows_per_op(), 1);
    }

    #[test]
    fn refuses_bad_scenarios() {
        let bad = [
            "name = \"p\"\nkind = \"nope\"",
            "name = \"p\"\nkind = \"point_select\"\nclients = 0",
            "name = \"p\"\nkind = \"point_select\"\nduration_s = 100000",
            "name = \"p\"\nkind = \"point_select\"\nduration_s = 0",
            "name = \"p\"\nkind = \"idle_plus_work\"",
            "name = \"p\"\nkind = \"storm\"\nidle_connections = 5",
            "name = \"p\"\nkind = \"storm\"\npipeline = 4",
            "name = \"p q\"\nkind = \"storm\"",
            "name = \"p\"\nkind = \"storm\"\nunknown_key = 1",
            "name = \"p\"\nkind = \"storm\"\nmax_ops = 0",
            "name = \"p\"\nkind = \"copy_in\"\npgbench_check = true",
            "name = \"p\"\nkind = \"point_select\"\nupstream_tls = true",
            "name = \"p\"\nkind = \"approvals\"\ntls = true\nupstream_tls = true",
        ];
        assert!(Scenario::parse(
            "name = \"p\"\nkind = \"point_select\"\ntls = true\nupstream_tls = true",
            "t"
        )
        .is_ok());
        for b in bad {
            assert!(Scenario::parse(b, "t").is_err(), "accepted: {b}");
        }
    }

    #[test]
    fn smoke_shrinks_every_kind() {
        let s = Scenario::parse(
            "name = \"big\"\nkind = \"large_result\"\nduration_s = 60\nwarmup_s = 5\nclients = 8\n",
            "t",
        )
        .unwrap()
        .smoke();
        assert!(s.duration_s <= 1.0 && s.warmup_s == 0.0 && s.clients <= 4);
        assert_eq!(s.max_ops, Some(2));
        assert_eq!(s.rows_per_op(), 20_000);
        let i = Scenario::parse(
            "name = \"i\"\nkind = \"idle_plus_work\"\nidle_connections = 10000\n",
            "t",
        )
        .unwrap()
        .smoke();
        assert_eq!(i.idle_connections, 20);
        let c = Scenario::parse("name = \"c\"\nkind = \"copy_in\"\nbytes = 1000000000\n", "t")
            .unwrap()
            .smoke();
        assert_eq!(c.copy_bytes(), 1 << 20);
    }

    #[test]
    fn loopback_only() {
        assert!(check_loopback("127.0.0.1").is_ok());
        assert!(check_loopback("127.1.2.3").is_ok());
        assert!(check_loopback("::1").is_ok());
        assert!(check_loopback("localhost").is_ok());
        assert!(check_loopback("10.0.0.1").is_err());
        assert!(check_loopback("example.com").is_err());
        assert!(check_loopback("0.0.0.0").is_err());
    }

    #[test]
    fn run_file_checks_targets() {
        let ok = "[[target]]\nname = \"direct\"\nport = 5432\ndirect = true\n";
        let r = RunFile::parse(ok, Path::new("/x"), "t").unwrap();
        assert_eq!(r.database, "gh_load");
        assert_eq!(r.targets[0].user, "postgres");
        assert_eq!(r.scenario_dir(), Path::new("/x/scenarios"));
        let remote = "[[target]]\nname = \"r\"\nhost = \"192.168.1.5\"\nport = 5432\n";
        assert!(RunFile::parse(remote, Path::new("/x"), "t").is_err());
        let dup = "[[target]]\nname = \"a\"\nport = 1\n[[target]]\nname = \"a\"\nport = 2\n";
        assert!(RunFile::parse(dup, Path::new("/x"), "t").is_err());
        let unmanaged = "[[target]]\nname = \"g\"\nmanaged = \"gatehouse\"\n";
        assert!(RunFile::parse(unmanaged, Path::new("/x"), "t").is_err());
        let admin = "[[target]]\nname = \"g\"\nport = 1\nadmin_url = \"http://10.1.1.1:9090\"\n";
        assert!(RunFile::parse(admin, Path::new("/x"), "t").is_err());
    }

    #[test]
    fn bundled_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 8, "only {n} scenarios");
        for f in ["standard.toml", "smoke.toml"] {
            RunFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap();
        }
    }
}
