//! Targets the harness starts and stops itself: gatehouse (from the
//! template in loadtest/) and PgBouncer (Debian's package), each with its own
//! configuration in a temporary directory, on loopback.

use crate::scenario::{GatehouseSpec, PgbouncerSpec, RunFile};
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process the harness started; stopped on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// SIGTERM for gatehouse (drain), SIGINT for PgBouncer (immediate).
    stop_signal: i32,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, self.stop_signal);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Random token, hex.
pub fn token(prefix: &str) -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("{prefix}-{}", hex::encode(b))
}

/// gatehouse's stored form of a token.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

/// Fills `{{KEY}}` placeholders; an unknown placeholder left over is an error.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    // Placeholders only count outside comments.
    for line in out.lines() {
        let code = line.split('#').next().unwrap_or("");
        if let Some(i) = code.find("{{") {
            bail!("template: unknown placeholder at {:?}", &code[i..]);
        }
    }
    Ok(out)
}

/// A self-signed certificate for localhost, as PEM files in `dir`.
pub fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("making a TLS certificate")?;
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok((cert, key))
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn wait_listening(p: &mut Proc, port: u16) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(st)) = p.child.try_wait() {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "{} exited at startup ({st}); log {}:\n{}",
                p.name,
                p.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if port_open(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} is not listening on 127.0.0.1:{port} after 20 s", p.name)
}

/// The gatehouse binary: given, or $CARGO_TARGET_DIR/release/gatehouse, or
/// target/release/gatehouse of the repository; built with cargo when
/// missing (or always, when `build`, a no-op if fresh).
pub fn gatehouse_bin(spec: &GatehouseSpec, run: &RunFile, repo: &Path, build: bool) -> Result<PathBuf> {
    if let Some(b) = &spec.bin {
        let b = run.resolve(b);
        if !b.exists() {
            bail!("no gatehouse binary at {}", b.display());
        }
        return Ok(b);
    }
    if let Ok(b) = std::env::var("GATEHOUSE_BIN") {
        return Ok(PathBuf::from(b));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let bin = target_dir.join(&spec.profile).join("gatehouse");
    if build || !bin.exists() {
        let mut args = vec!["build", "--locked", "-p", "gatehouse", "--bin", "gatehouse"];
        if spec.profile == "release" {
            args.push("--release");
        }
        eprintln!("building gatehouse: cargo {} (a no-op when fresh)", args.join(" "));
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // Under `cargo run`, the package variables of the harness would make
        // build scripts that watch them (ring's) rebuild: leave them out.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            {
                cargo.env_remove(k.as_ref());
            }
        }
        let st = cargo.args(&args).current_dir(repo).status().context("running cargo")?;
        if !st.success() {
            bail!("building gatehouse failed");
        }
    }
    if !bin.exists() {
        bail!("no gatehouse binary at {}", bin.display());
    }
    Ok(bin)
}

pub struct GatehouseRun {
    pub proc: Proc,
    pub load_token: String,
    pub held_token: String,
    pub admin_token: String,
    pub port: u16,
    pub admin_port: u16,
    pub mysql_port: u16,
    /// Where its configuration has it record sessions, if it records.
    pub recordings_dir: Option<PathBuf>,
}

#[allow(clippy::too_many_arguments)]
pub fn start_gatehouse(
    bin: &Path,
    spec: &GatehouseSpec,
    run: &RunFile,
    tmp: &Path,
    pg_port: u16,
    (pooled_port, pooled_password): (u16, &str),
    cert: &(PathBuf, PathBuf),
) -> Result<GatehouseRun> {
    if port_open(spec.port) {
        bail!("127.0.0.1:{} is in use (gatehouse's port)", spec.port);
    }
    if port_open(spec.admin_port) {
        bail!("127.0.0.1:{} is in use (gatehouse's admin port)", spec.admin_port);
    }
    if port_open(spec.mysql_port) {
        bail!("127.0.0.1:{} is in use (gatehouse's MySQL port)", spec.mysql_port);
    }
    let template_path = run.resolve(spec.template.as_deref().unwrap_or(Path::new("gatehouse.toml.in")));
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading the template {}", template_path.display()))?;
    let (load_token, held_token, admin_token) = (token("load"), token("held"), token("admin"));
    let tmp_s = tmp.display().to_string();
    let extra = spec.extra_toml.replace("{{TMP}}", &tmp_s);
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert.0.display(),
        cert.1.display()
    );
    let text = fill(
        &template,
        &[
            ("PORT", spec.port.to_string()),
            ("ADMIN_PORT", spec.admin_port.to_string()),
            ("WORKERS", spec.workers.to_string()),
            ("PG_PORT", pg_port.to_string()),
            ("POOLED_PORT", pooled_port.to_string()),
            ("POOLED_PASSWORD", pooled_password.to_string()),
            ("MYSQL_PORT", spec.mysql_port.to_string()),
            ("MYSQL_UPSTREAM_PORT", spec.mysql_upstream_port.to_string()),
            ("DATABASE", run.database.clone()),
            ("LOAD_HASH", token_hash(&load_token)),
            ("HELD_HASH", token_hash(&held_token)),
            ("ADMIN_HASH", token_hash(&admin_token)),
            ("TLS", tls),
            ("EXTRA", extra),
            ("TMP", tmp_s),
        ],
    )?;
    // As gatehouse reads it: relative to the configuration's directory,
    // its default when `[recording]` names none.
    let recordings_dir = toml::from_str::<toml::Value>(&text).ok().and_then(|v| {
        let recording = v.get("recording")?;
        let dir = recording
            .get("dir")
            .and_then(|d| d.as_str())
            .unwrap_or("/var/lib/gatehouse/recordings");
        Some(tmp.join(dir))
    });
    let cfg = tmp.join("gatehouse.toml");
    std::fs::write(&cfg, text)?;
    let log = tmp.join("gatehouse.log");
    let out = std::fs::File::create(&log)?;
    let err = out.try_clone()?;
    // Own process group: a Ctrl-C at the terminal reaches the harness only,
    // which then stops the process itself.
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proc = Proc {
        name: "gatehouse".into(),
        child,
        stop_signal: libc::SIGTERM,
        log,
    };
    wait_listening(&mut proc, spec.port)?;
    wait_listening(&mut proc, spec.admin_port)?;
    wait_listening(&mut proc, spec.mysql_port)?;
    Ok(GatehouseRun {
        proc,
        load_token,
        held_token,
        admin_token,
        port: spec.port,
        admin_port: spec.admin_port,
        mysql_port: spec.mysql_port,
        recordings_dir,
    })
}

/// PgBouncer's configuration for a run. `backslash_quote`, which gatehouse
/// pins in every upstream login under a policy, is not among the startup
/// parameters PgBouncer passes on: it refuses the login unless told to
/// ignore it (gatehouse in front of PgBouncer, as the idle scenario's
/// pooled target is). `hops` says whether its connections to PostgreSQL
/// are TLS too (`server_tls_sslmode = require`, global in PgBouncer).
pub fn pgbouncer_ini(
    spec: &PgbouncerSpec,
    hops: Hops,
    database: &str,
    pg_port: u16,
    dir: &Path,
    cert: &(PathBuf, PathBuf),
) -> String {
    format!(
        "[databases]\n\
         {database} = host=127.0.0.1 port={pg_port} dbname={database} user=postgres\n\
         postgres = host=127.0.0.1 port={pg_port} dbname=postgres user=postgres\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = md5\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = {mode}\n\
         max_client_conn = 12000\n\
         default_pool_size = {pool}\n\
         max_db_connections = {maxdb}\n\
         server_tls_sslmode = {server_tls}\n\
         client_tls_sslmode = allow\n\
         client_tls_cert_file = {cert}\n\
         client_tls_key_file = {key}\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         ignore_startup_parameters = backslash_quote\n",
        port = hops.port(spec),
        server_tls = match hops {
            Hops::PlainUpstream => "disable",
            Hops::TlsUpstream => "require",
        },
        mode = spec.pool_mode,
        pool = spec.pool_size,
        maxdb = spec.pool_size + 10,
        dir = dir.display(),
        cert = cert.0.display(),
        key = cert.1.display(),
    )
}

/// Which of the two PgBouncers: plain to PostgreSQL (every scenario) or
/// TLS to PostgreSQL too (scenarios with `upstream_tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hops {
    PlainUpstream,
    TlsUpstream,
}

impl Hops {
    pub fn port(self, spec: &PgbouncerSpec) -> u16 {
        match self {
            Hops::PlainUpstream => spec.port,
            Hops::TlsUpstream => spec.upstream_tls_port,
        }
    }
}

/// PgBouncer for a run, checking `password` (MD5) for the user `postgres`.
pub fn start_pgbouncer(
    spec: &PgbouncerSpec,
    hops: Hops,
    run: &RunFile,
    tmp: &Path,
    pg_port: u16,
    password: &str,
) -> Result<Proc> {
    let bin = spec
        .bin
        .clone()
        .map(|b| run.resolve(&b))
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"));
    if !bin.exists() {
        bail!(
            "no PgBouncer at {} (Debian: apt-get install -y pgbouncer)",
            bin.display()
        );
    }
    let port = hops.port(spec);
    if port_open(port) {
        bail!("127.0.0.1:{port} is in use (PgBouncer's port)");
    }
    let dir = tmp.join(match hops {
        Hops::PlainUpstream => "pgbouncer",
        Hops::TlsUpstream => "pgbouncer-tls",
    });
    std::fs::create_dir_all(&dir)?;
    // PgBouncer reads its TLS files as its own user: copies inside its directory.
    let cert = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(tmp.join("server.crt"), &cert.0)?;
    std::fs::copy(tmp.join("server.key"), &cert.1)?;
    std::fs::write(dir.join("userlist.txt"), userlist("postgres", password))?;
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, pgbouncer_ini(spec, hops, &run.database, pg_port, &dir, &cert))?;
    let log = dir.join("stdout.log");
    let out = std::fs::File::create(&log)?;
    let err = out.try_clone()?;
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let mut cmd = if root {
        // PgBouncer refuses to run as root; setpriv execs in place, so the
        // child's pid is PgBouncer's own.
        let (uid, gid) = postgres_ids().context("PgBouncer cannot run as root and there is no postgres user")?;
        for p in [&dir, &tmp.to_path_buf()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
        }
        for f in std::fs::read_dir(&dir)? {
            std::os::unix::fs::chown(f?.path(), Some(uid), Some(gid))?;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.arg(&ini)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = cmd.spawn().context("starting PgBouncer")?;
    let mut proc = Proc {
        name: "pgbouncer".into(),
        child,
        stop_signal: libc::SIGINT,
        log: dir.join("pgbouncer.log"),
    };
    wait_listening(&mut proc, port)?;
    Ok(proc)
}

/// PgBouncer's `auth_file` line for `user`: the password stored as
/// PostgreSQL stores an MD5 one (`md5` and the hex of MD5(password, user)).
fn userlist(user: &str, password: &str) -> String {
    use md5::{Digest, Md5};
    let hash = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    format!("\"{user}\" \"md5{}\"\n", hex::encode(hash))
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres")).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbouncer_stores_the_password_as_postgresql_does() {
        // SELECT 'md5' || md5('secret' || 'postgres');
        assert_eq!(
            userlist("postgres", "secret"),
            "\"postgres\" \"md553f48b7c4b76a86ce72276c5755f217d\"\n"
        );
    }

    #[test]
    fn placeholders_are_filled_and_checked() {
        let t = "# {{COMMENTED}} stays\nport = {{PORT}}\n{{EXTRA}}\n";
        let out = fill(t, &[("PORT", "6434".into()), ("EXTRA", "[recording]".into())]).unwrap();
        assert!(out.contains("port = 6434\n[recording]"));
        assert!(fill("x = {{NOPE}}", &[]).is_err());
    }

    #[test]
    fn bundled_template_fills() {
        let t = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("gatehouse.toml.in")).unwrap();
        let keys = [
            "PORT",
            "ADMIN_PORT",
            "WORKERS",
            "PG_PORT",
            "POOLED_PORT",
            "POOLED_PASSWORD",
            "MYSQL_PORT",
            "MYSQL_UPSTREAM_PORT",
            "DATABASE",
            "LOAD_HASH",
            "HELD_HASH",
            "ADMIN_HASH",
            "TLS",
            "EXTRA",
            "TMP",
        ];
        let vars: Vec<(&str, String)> = keys
            .iter()
            .map(|k| {
                (
                    *k,
                    if matches!(*k, "TLS" | "EXTRA") {
                        String::new()
                    } else {
                        "1".to_string()
                    },
                )
            })
            .collect();
        let out = fill(&t, &vars).unwrap();
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert!(parsed.contains_key("policy"));
    }

    #[test]
    fn token_hashes_like_gatehouse() {
        // printf %s demo-token-change-me | gatehouse token hash
        assert_eq!(
            token_hash("demo-token-change-me"),
            "sha256:b5d56f2eacf505c2639b22468f3a8b1bcaf7d619cadbab47dc6ce515fc4c3612"
        );
        assert_ne!(token("a"), token("a"));
    }
}
