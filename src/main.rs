//! The `gatehouse` command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "A database gateway for AI agents")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file without serving.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Scans a file (or stdin with `-`) for secrets and prints findings as JSON lines.
    Scan {
        /// The input; `-` or nothing for stdin.
        file: Option<PathBuf>,
        /// Rules file (default: the rules built into the binary, or the
        /// configuration's with --config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Use the scanning settings of this configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Tokens: `hash` prints the stored form of a static token; `keygen` and
    /// `mint` make OIDC signing keys and JWTs for development and tests.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Reviews of held statements, over the admin API: `list`, `approve`, `deny`.
    Review {
        #[command(subcommand)]
        cmd: ReviewCmd,
    },
    /// Checks recordings (a file, or every one under a directory): the hash
    /// chain, the sequence and the seal. Exit 0: all intact and sealed;
    /// 1: a record fails (named); 2: cannot read.
    ///
    /// Given the recordings directory, also checks the audit log's account:
    /// a session file deleted or rewritten, or an audit log cut short. With
    /// --key, every seal and every audit log checkpoint must carry a valid
    /// signature by that key.
    Verify {
        path: PathBuf,
        /// Print a line per file, not only failures.
        #[arg(long, short)]
        verbose: bool,
        /// Public key (PEM, from `gatehouse keygen --recordings`) that must
        /// have signed; repeat while a key is being rotated.
        #[arg(long, value_name = "PUBLIC_KEY")]
        key: Vec<PathBuf>,
        /// The gateway is running: report session files without a seal as
        /// open rather than failed.
        #[arg(long)]
        live: bool,
    },
    /// Makes a key pair: with --recordings, the Ed25519 key that signs
    /// recordings (OUT/recording-key.pem, mode 0600, for `[recording]
    /// signing_key`) and its public half (OUT/recording-key.pub.pem, for
    /// `gatehouse verify --key`).
    Keygen {
        /// The recordings' signing key (the only kind so far).
        #[arg(long)]
        recordings: bool,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Prints a recorded session as it happened, with its timing.
    Replay {
        /// A recording file (or use --admin and --session).
        file: Option<PathBuf>,
        /// The session id, fetched from the admin API.
        #[arg(long)]
        session: Option<String>,
        /// text (a transcript), json (lines) or csv.
        #[arg(long, default_value = "text")]
        format: String,
        /// Time scale: 2 plays twice as fast.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print at once, without the recorded pauses.
        #[arg(long)]
        no_wait: bool,
        /// Longest pause between two records, in seconds.
        #[arg(long, default_value_t = 10.0)]
        max_pause: f64,
        #[command(flatten)]
        session_admin: Option<AdminArgs>,
    },
}

/// How `gatehouse review` reaches the admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin API [default: $GATEHOUSE_ADMIN_URL, else http://127.0.0.1:9090].
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// The admin token. Prefer $GATEHOUSE_ADMIN_TOKEN or --token-env: others
    /// can read a command line.
    #[arg(long, value_name = "T", conflicts_with = "token_env")]
    token: Option<String>,
    /// The environment variable holding the admin token [default: GATEHOUSE_ADMIN_TOKEN].
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// CA bundle (PEM) for an https:// admin URL [default: the built-in web roots].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON rather than a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ReviewCmd {
    /// Lists reviews: open ones (oldest first), then finished ones (newest first).
    List {
        /// Only the reviews waiting for a decision.
        #[arg(long)]
        pending: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approves a review as the token's name.
    Approve {
        id: String,
        /// Why (kept in the log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Also grant the statement's class to the identity on the target
        /// for N minutes (0: this statement, once).
        #[arg(long, value_name = "N", default_value_t = 0)]
        grant_minutes: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Denies a review; the client gets the reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn admin_client(a: &AdminArgs) -> anyhow::Result<gatehouse::control::client::AdminClient> {
    let url = match &a.admin {
        Some(u) => u.clone(),
        None => std::env::var("GATEHOUSE_ADMIN_URL")
            .unwrap_or_else(|_| gatehouse::control::client::DEFAULT_ADMIN_URL.to_string()),
    };
    let token = match (&a.token, &a.token_env) {
        (Some(t), _) => t.clone(),
        (None, var) => {
            let var = var.as_deref().unwrap_or("GATEHOUSE_ADMIN_TOKEN");
            match std::env::var(var) {
                Ok(t) if !t.is_empty() => t,
                _ => anyhow::bail!("no admin token: set {var} (or give --token-env VAR)"),
            }
        }
    };
    gatehouse::control::client::AdminClient::new(&url, &token, a.ca_file.as_deref()).map_err(|e| anyhow::anyhow!(e))
}

fn review(cmd: ReviewCmd) -> anyhow::Result<ExitCode> {
    use gatehouse::control::client;
    let print = |v: &serde_json::Value, json: bool| {
        if json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{}", client::describe(v));
        }
    };
    match cmd {
        ReviewCmd::List { pending, admin } => {
            let list = admin_client(&admin)?.list(pending)?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                print!("{}", client::table(&list, now));
            }
        }
        ReviewCmd::Approve {
            id,
            reason,
            grant_minutes,
            admin,
        } => print(&admin_client(&admin)?.approve(&id, &reason, grant_minutes)?, admin.json),
        ReviewCmd::Deny { id, reason, admin } => print(&admin_client(&admin)?.deny(&id, &reason)?, admin.json),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Reads a token on stdin and prints its `sha256:` form for `token_hash`.
    Hash,
    /// Generates a development signing key: DIR/KID.pem (private, PKCS#8)
    /// and DIR/jwks.json (the public keys; the new one is added), for
    /// `[oidc] jwks_file`.
    Keygen {
        /// RS256, ES256 or EdDSA.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Key id (default: the key's RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Prints a signed JWT for development and tests.
    Mint {
        /// Private key (PEM) from `gatehouse token keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Key id for the header (default: the key's thumbprint).
        #[arg(long)]
        kid: Option<String>,
        /// RS256, ES256 or EdDSA (default: the key's).
        #[arg(long)]
        alg: Option<String>,
        #[arg(long)]
        iss: String,
        /// Audience; repeat for several.
        #[arg(long, required = true)]
        aud: Vec<String>,
        #[arg(long)]
        sub: String,
        /// Groups, comma-separated.
        #[arg(long)]
        groups: Option<String>,
        /// Lifetime, e.g. 90s, 15m, 1h (negative for an expired token).
        #[arg(long, default_value = "1h", allow_hyphen_values = true)]
        ttl: String,
        /// Sets `nbf` this far from now.
        #[arg(long, allow_hyphen_values = true)]
        nbf_in: Option<String>,
        /// More claims, KEY=VALUE (VALUE is JSON when it parses, else a string).
        #[arg(long)]
        claim: Vec<String>,
    },
}

/// Logs to stderr through a writer thread (see `gatehouse::logs`); the
/// returned guard writes what is queued when dropped.
fn init_logs(format: &str, level: &str) -> std::io::Result<gatehouse::logs::Background> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let json = format == "json";
    let (sink, guard) = gatehouse::logs::background(std::io::stderr(), json, gatehouse::logs::QUEUE_LINES)?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // No colours: every control character a client could put into a
        // field is escaped on the way out (see `logs::one_line`).
        .with_ansi(false)
        .with_writer(sink);
    if json {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
    Ok(guard)
}

fn verify(path: &std::path::Path, verbose: bool, keys: &[PathBuf], live: bool) -> anyhow::Result<ExitCode> {
    use gatehouse::record::signing::{Keyring, PublicKey};
    let mut ring = Keyring::default();
    for k in keys {
        match PublicKey::load(k) {
            Ok(k) => ring.0.push(k),
            Err(e) => {
                eprintln!("--key {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let checked = match gatehouse::record::verify(path, (!keys.is_empty()).then_some(&ring), live) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let reports = &checked.reports;
    let mut bad = 0;
    for r in reports {
        match &r.broken {
            None => {
                if verbose {
                    let signed = match &r.signed_by {
                        Some(k) => format!(", signed by key {k}"),
                        None => String::new(),
                    };
                    let state = if r.sealed { "sealed" } else { "open" };
                    println!("{}: ok, {} records, {state}{signed}", r.path.display(), r.intact);
                }
            }
            Some((n, why)) => {
                bad += 1;
                println!(
                    "{}: FAILED at record {n}: {why} ({} records before it are intact)",
                    r.path.display(),
                    r.intact.min(*n)
                );
            }
        }
    }
    for n in &checked.notes {
        println!("{n}");
    }
    println!(
        "{} recording(s) checked, {} intact, {} failed{}",
        reports.len(),
        reports.len() - bad,
        bad,
        if keys.is_empty() { "" } else { " (signatures checked)" }
    );
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn replay(
    file: Option<PathBuf>,
    session: Option<String>,
    admin: Option<AdminArgs>,
    format: &str,
    speed: f64,
    no_wait: bool,
    max_pause: f64,
) -> anyhow::Result<ExitCode> {
    use gatehouse::record::render::{self, Format};
    use std::io::Write;
    let fmt: Format = format.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let data: Vec<u8> = match (file, session, admin) {
        (Some(f), None, _) => std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
        (None, Some(id), Some(a)) => admin_client(&a)?.download(
            &format!(
                "/api/v1/recordings/{}/events?format=jsonl",
                id.replace(['/', '?', '#'], "")
            ),
            1 << 30,
        )?,
        _ => anyhow::bail!("give a recording FILE, or --admin URL and --session ID"),
    };
    if speed.is_nan() || speed <= 0.0 {
        anyhow::bail!("--speed must be more than 0");
    }
    let mut out = std::io::stdout().lock();
    if fmt == Format::Csv {
        out.write_all(render::CSV_HEADER.as_bytes())?;
    }
    let mut last: Option<u64> = None;
    for v in gatehouse::record::records(&data[..]) {
        let t = v["t"].as_u64().unwrap_or(0);
        if let (Some(l), false) = (last, no_wait) {
            let pause = (t.saturating_sub(l) as f64 / 1e6 / speed).min(max_pause);
            if pause > 0.0005 {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_secs_f64(pause));
            }
        }
        last = Some(t);
        out.write_all(render::line(&v, fmt).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Verify {
            path,
            verbose,
            key,
            live,
        } => verify(&path, verbose, &key, live),
        Cmd::Keygen { recordings, out, force } => {
            if !recordings {
                anyhow::bail!("say which key: --recordings (OIDC development keys: `gatehouse token keygen`)");
            }
            let (private_pem, public) = gatehouse::record::signing::generate().map_err(|e| anyhow::anyhow!(e))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let key_path = out.join("recording-key.pem");
            let pub_path = out.join("recording-key.pub.pem");
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut o = std::fs::OpenOptions::new();
                o.write(true).mode(0o600);
                if force {
                    o.create(true).truncate(true);
                } else {
                    o.create_new(true);
                }
                let mut f = o
                    .open(&key_path)
                    .with_context(|| format!("writing {} (--force replaces it)", key_path.display()))?;
                f.write_all(private_pem.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::write(&pub_path, public.to_pem()).with_context(|| format!("writing {}", pub_path.display()))?;
            println!("key id: {}", public.id());
            println!(
                "private key: {} (for [recording] signing_key; keep it outside the recordings directory)",
                key_path.display()
            );
            println!("public key: {} (for gatehouse verify --key)", pub_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay {
            file,
            session,
            format,
            speed,
            no_wait,
            max_pause,
            session_admin,
        } => replay(file, session, session_admin, &format, speed, no_wait, max_pause),
        Cmd::Review { cmd } => review(cmd),
        Cmd::Serve { config } => {
            let cfg = match gatehouse::config::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let _logs = init_logs(&cfg.log.format, &cfg.log.level)?;
            let recording = cfg.recording.clone();
            let start_planes: gatehouse::runtime::StartPlanes<'_> = Box::new(move |shared, ready, ops| {
                let recorder = match &recording {
                    Some(r) => {
                        let rec = gatehouse::control::recorder::Recorder::start(r)
                            .map_err(|e| anyhow::anyhow!("recording: {}: {e}", r.dir.display()))?;
                        tracing::info!(dir = %r.dir.display(), results = ?r.results, "recording sessions");
                        let sink: std::sync::Arc<dyn gatehouse::record::link::Sink> = rec.clone();
                        let _ = shared.recorder.set(sink);
                        Some(rec)
                    }
                    None => None,
                };
                let control = gatehouse::control::start(shared.clone(), ready, ops, recorder)?;
                Ok(Box::new(control))
            });
            gatehouse::runtime::serve(config, cfg, start_planes)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { config } => match gatehouse::config::Config::load(&config) {
            Ok(cfg) => match gatehouse::core::State::build(cfg).and_then(|s| {
                // Serving compiles each rule's regex on its first hit; check
                // compiles them all now.
                if s.config.scan.enabled {
                    let rules = gatehouse::core::state::scan_rules(&s.config)?;
                    gatehouse::scan::rules::compile_all(&rules)?;
                }
                Ok(s)
            }) {
                Ok(s) => {
                    for t in &s.config.targets {
                        for w in t.credential_warnings() {
                            eprintln!("{}: warning: {w}", config.display());
                        }
                    }
                    if let Some(r) = &s.config.recording {
                        match gatehouse::control::recorder::load_signer(r) {
                            Ok(Some(_)) => {}
                            Ok(None) => eprintln!(
                                "{}: warning: recording: no signing_key: whoever can write {} can rewrite recordings and the audit log unseen",
                                config.display(),
                                r.dir.display()
                            ),
                            Err(e) => {
                                eprintln!("{}: recording.signing_key: {e}", config.display());
                                return Ok(ExitCode::from(1));
                            }
                        }
                    }
                    println!(
                        "{}: ok ({} targets, {} identities)",
                        config.display(),
                        s.targets.len(),
                        s.config.identities.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    Ok(ExitCode::from(1))
                }
            },
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Cmd::Scan { file, rules, config } => {
            let engine = match (&config, &rules) {
                (Some(c), _) => {
                    let mut cfg = gatehouse::config::Config::load(c)?;
                    if rules.is_some() {
                        cfg.scan.rules_file = rules.clone();
                    }
                    gatehouse::core::state::build_engine(&cfg).map_err(|e| anyhow::anyhow!(e))?
                }
                (None, r) => {
                    let rules =
                        gatehouse::scan::assemble(r.as_deref(), &[], Vec::new()).map_err(|e| anyhow::anyhow!(e))?;
                    std::sync::Arc::new(gatehouse::scan::Engine::new(&rules, [0; 32])?)
                }
            };
            let input: Box<dyn Read> = match file.as_deref() {
                None => Box::new(std::io::stdin().lock()),
                Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
                Some(p) => Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
            };
            let n = gatehouse::scan::report::scan_stream(&engine, input, &mut std::io::stdout().lock())?;
            eprintln!("{n} findings");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token { cmd: TokenCmd::Hash } => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the token from stdin")?;
            let t = s.trim_end_matches(['\n', '\r']);
            if t.is_empty() {
                anyhow::bail!("no token on stdin");
            }
            println!("{}", gatehouse::identity::hash_token(t.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token {
            cmd: TokenCmd::Keygen { alg, out, kid },
        } => {
            use gatehouse::identity::{jwks::Alg, mint};
            let alg =
                Alg::from_name(&alg).ok_or_else(|| anyhow::anyhow!("--alg: `{alg}` is not RS256, ES256 or EdDSA"))?;
            let g = mint::keygen(alg, kid.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let key_path = out.join(format!("{}.pem", g.kid));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&key_path)
                    .with_context(|| format!("writing {}", key_path.display()))?;
                f.write_all(g.private_pem.as_bytes())?;
            }
            let jwks_path = out.join("jwks.json");
            let existing = match std::fs::read_to_string(&jwks_path) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", jwks_path.display())),
            };
            let doc = mint::add_to_jwks(existing.as_deref(), g.jwk)
                .map_err(|e| anyhow::anyhow!("{}: {e}", jwks_path.display()))?;
            std::fs::write(&jwks_path, doc + "\n").with_context(|| format!("writing {}", jwks_path.display()))?;
            println!("kid: {}", g.kid);
            println!("private key: {}", key_path.display());
            println!("jwks: {}", jwks_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Token {
            cmd:
                TokenCmd::Mint {
                    key,
                    kid,
                    alg,
                    iss,
                    aud,
                    sub,
                    groups,
                    ttl,
                    nbf_in,
                    claim,
                },
        } => {
            use gatehouse::identity::{jwks::Alg, mint};
            let alg = match alg {
                Some(a) => Some(
                    Alg::from_name(&a).ok_or_else(|| anyhow::anyhow!("--alg: `{a}` is not RS256, ES256 or EdDSA"))?,
                ),
                None => None,
            };
            let pem = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            let signer =
                mint::SigningKey::from_pem(&pem, alg).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let kid = kid.unwrap_or_else(|| signer.public_jwk(None)["kid"].as_str().unwrap_or_default().to_string());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let ttl = mint::parse_duration(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let mut claims = serde_json::Map::new();
            claims.insert("iss".into(), iss.into());
            claims.insert(
                "aud".into(),
                if aud.len() == 1 {
                    aud[0].clone().into()
                } else {
                    aud.into()
                },
            );
            claims.insert("sub".into(), sub.into());
            claims.insert("iat".into(), now.into());
            claims.insert("exp".into(), (now + ttl).into());
            if let Some(n) = nbf_in {
                let n = mint::parse_duration(&n).map_err(|e| anyhow::anyhow!("--nbf-in: {e}"))?;
                claims.insert("nbf".into(), (now + n).into());
            }
            if let Some(g) = groups {
                let list: Vec<String> = g
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                claims.insert("groups".into(), list.into());
            }
            for c in claim {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--claim: `{c}` is not KEY=VALUE"))?;
                let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                claims.insert(k.to_string(), v);
            }
            println!(
                "{}",
                mint::mint(&signer, Some(&kid), &claims).map_err(|e| anyhow::anyhow!(e))?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e:#}");
            ExitCode::from(1)
        }
    }
}
