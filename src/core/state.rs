//! What sessions share: the compiled configuration (swapped whole on reload)
//! and the process-wide registries.

use super::counters::Counters;
use super::registry::Registry;
use crate::config::{Config, Protocol, Target};
use crate::identity::Authenticator;
use crate::scan::{self, Engine};
use crate::tls;
use arc_swap::ArcSwap;
use sha2::Digest;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// An upstream account: who gatehouse logs in as.
pub struct AccountRt {
    /// `default` for the target's own `user` (shared with every session
    /// that logs in as it).
    pub name: Arc<str>,
    pub user: String,
    pub password: Option<String>,
}

impl TargetRt {
    pub fn pool_limits(&self) -> super::pool::PoolLimits {
        super::pool::PoolLimits {
            max_idle: self.cfg.pool_size,
            idle_timeout: std::time::Duration::from_secs(self.cfg.pool_idle_timeout_secs),
            lifetime: std::time::Duration::from_secs(self.cfg.pool_lifetime_secs),
            kept: self.pool_kept.clone(),
        }
    }
}

/// A target ready to connect to.
pub struct TargetRt {
    pub cfg: Target,
    /// `cfg.name`, shared with every session of the target (an idle
    /// session keeps the name and nothing else of it).
    pub name: Arc<str>,
    /// The default account first, then `[[target.account]]`s.
    pub accounts: Vec<AccountRt>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Idle connections the pools keep for this target (all workers).
    pub pool_kept: Arc<AtomicUsize>,
}

/// The compiled configuration. Read-only; replaced as a whole on reload.
pub struct State {
    pub config: Config,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub targets: Vec<TargetRt>,
    pub auth: Box<dyn Authenticator>,
    /// The compiled secret rules; `None` when scanning is off.
    pub scan: Option<Arc<Engine>>,
    /// The statement policy; `None`: every statement is allowed.
    pub policy: Option<Arc<crate::policy::Policy>>,
    /// Which build of the configuration this is (upstream pools of older
    /// ones are closed).
    pub generation: u64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl State {
    pub fn build(config: Config) -> Result<State, String> {
        let server_tls = match &config.server.tls {
            Some(t) => Some(tls::server_config(t)?),
            None => None,
        };
        let mut targets = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            let err = |e: String| format!("target `{}`: {e}", t.name);
            let mut accounts = vec![AccountRt {
                name: "default".into(),
                user: t.user.clone(),
                password: t.resolve_password().map_err(err)?,
            }];
            for a in &t.accounts {
                accounts.push(AccountRt {
                    name: a.name.as_str().into(),
                    user: a.user.clone(),
                    password: a
                        .resolve_password()
                        .map_err(|e| err(format!("account `{}`: {e}", a.name)))?,
                });
            }
            targets.push(TargetRt {
                name: t.name.as_str().into(),
                accounts,
                tls: tls::upstream_config(t).map_err(err)?,
                server_name: tls::server_name(t).map_err(err)?,
                pool_kept: Arc::default(),
                cfg: t.clone(),
            });
        }
        let auth = crate::identity::from_config(&config)?;
        let scan = if config.scan.enabled {
            Some(build_engine(&config)?)
        } else {
            None
        };
        let policy = config
            .policy
            .as_ref()
            .map(|p| Arc::new(crate::policy::Policy::compile(p)));
        if let Some(p) = &policy {
            for (role, id) in p.named_rules() {
                let known = scan
                    .as_ref()
                    .is_some_and(|e| (0..e.rule_count()).any(|i| e.rule_id(i as u32) == id));
                if !known {
                    return Err(format!(
                        "policy.roles.{role}.unmasked_rules: no secret rule has the id `{id}`"
                    ));
                }
            }
        }
        Ok(State {
            config,
            server_tls,
            targets,
            auth,
            scan,
            policy,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Which rules mask for an identity with `roles`: `None` when all do,
    /// else a flag per rule index.
    pub fn masking_for(&self, roles: &[String]) -> Option<Arc<[bool]>> {
        let (p, e) = (self.policy.as_ref()?, self.scan.as_ref()?);
        let exempt = p.unmasked_rules(roles);
        if exempt.is_empty() {
            return None;
        }
        Some(
            (0..e.rule_count())
                .map(|i| !exempt.contains(&e.rule_id(i as u32)))
                .collect(),
        )
    }

    /// The account named `name` on a target (`None`: the default one).
    pub fn account<'a>(&self, t: &'a TargetRt, name: Option<&str>) -> Option<&'a AccountRt> {
        match name {
            None => t.accounts.first(),
            Some(n) => t.accounts.iter().find(|a| &*a.name == n),
        }
    }

    /// The target a client reaches with `database` as `user`.
    pub fn select_target(&self, protocol: Protocol, database: &str, user: &str) -> Option<&TargetRt> {
        self.targets.iter().find(|t| {
            t.cfg.protocol == protocol
                && t.cfg.database == database
                && (t.cfg.client_users.is_empty() || t.cfg.client_users.iter().any(|u| u == user))
        })
    }
}

/// The secret rules the configuration names: a rules file or the built-in
/// rules, minus those switched off, plus `[[scan.rule]]` tables.
pub fn scan_rules(config: &Config) -> Result<Vec<scan::Rule>, String> {
    let sc = &config.scan;
    let mut extra = Vec::with_capacity(sc.rules.len());
    for t in &sc.rules {
        let r: scan::Rule = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e| format!("scan.rule: {e}"))?;
        extra.push(r);
    }
    let mut rules = scan::assemble(sc.rules_file.as_deref(), &sc.disabled_rules, extra)?;
    for (id, m) in &sc.masks {
        let kind = match m.as_str() {
            "partial" => scan::MaskKind::Partial,
            "hash" => scan::MaskKind::Hash,
            _ => scan::MaskKind::Redact,
        };
        let rule = rules
            .iter_mut()
            .find(|r| &r.id == id)
            .ok_or_else(|| format!("scan.masks: no rule has the id `{id}`"))?;
        rule.mask = kind;
    }
    Ok(rules)
}

/// Compiles the secret rules the configuration names. A reload whose rules
/// and hash key are unchanged gets the engine already compiled (compiling
/// the Hyperscan database takes about a second), and hash masks stay the
/// same across it.
pub fn build_engine(config: &Config) -> Result<Arc<Engine>, String> {
    use std::sync::Mutex;
    // Without a configured key, hash masks are stable for this process:
    // one random key for its whole life, reloads included.
    static PROCESS_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COMPILED: Mutex<Option<([u8; 32], Arc<Engine>)>> = Mutex::new(None);
    let sc = &config.scan;
    let rules = scan_rules(config)?;
    let key_text = match (&sc.hash_key, &sc.hash_key_env) {
        (Some(k), _) => k.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| format!("scan.hash_key_env: {var} is not set"))?,
        (None, None) => PROCESS_KEY
            .get_or_init(|| hex::encode(rand::random::<[u8; 32]>()))
            .clone(),
    };
    let key: [u8; 32] = sha2::Sha256::digest(key_text.as_bytes()).into();
    // What the engine is made of: every rule as parsed, and the key.
    let fingerprint: [u8; 32] = {
        let mut h = sha2::Sha256::new();
        h.update(format!("{rules:?}").as_bytes());
        h.update(key);
        h.finalize().into()
    };
    let mut compiled = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((f, engine)) = compiled.as_ref() {
        if *f == fingerprint {
            return Ok(engine.clone());
        }
    }
    let engine = Arc::new(Engine::new(&rules, key).map_err(|e| e.to_string())?);
    *compiled = Some((fingerprint, engine.clone()));
    Ok(engine)
}

/// Process-wide state shared by all workers.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub registry: Registry,
    /// Sessions open now, over all workers.
    pub active: AtomicUsize,
    /// Connections still in their handshake (TLS, startup, login).
    pub handshakes: AtomicUsize,
    /// Logged-in sessions, over all and by identity (`max_connections`,
    /// `max_sessions_per_identity`).
    pub seats: Arc<super::admission::Seats>,
    /// Set once SIGTERM arrives: accept no more.
    pub draining: AtomicBool,
    /// Seconds since start, advanced by the housekeeping thread; sessions
    /// stamp their last activity with it (a load, not a clock read).
    pub coarse_now: AtomicU64,
    /// Unix seconds, advanced by the same thread: budgets count in wall
    /// clock minutes, which a fleet's instances share.
    pub unix_now: AtomicU64,
    /// Per-worker counters for the metrics endpoint.
    pub counters: Counters,
    /// When the process started serving (Unix seconds).
    pub started_unix: u64,
    /// Reviews of held statements and the grants approvals give.
    pub reviews: Arc<crate::policy::reviews::Reviews>,
    /// Per-identity budget meters.
    pub budgets: crate::policy::Budgets,
    /// The session recorder, when `[recording]` is configured (set once at
    /// start; a reload does not move it).
    pub recorder: std::sync::OnceLock<Arc<dyn crate::record::link::Sink>>,
    /// Bumped when a statement that may change functions, operators or
    /// types ends: workers read targets' catalogs afresh.
    pub catalog_epoch: AtomicU64,
    /// Where a CancelRequest for a session this instance does not know is
    /// passed on (a fleet's other instances); set once at start.
    pub peer_cancel: std::sync::OnceLock<Arc<dyn PeerCancel>>,
}

/// Passes on a CancelRequest whose key no session here has: the load
/// balancer may have sent it to another instance than the session's.
pub trait PeerCancel: Send + Sync {
    /// Takes the key; never blocks (the work happens elsewhere).
    fn forward(&self, pid: u32, secret: &[u8]);
}

/// A connection counted in `Shared::handshakes` until its handshake ends.
pub struct InHandshake<'a>(&'a Shared);

impl Drop for InHandshake<'_> {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A session counted in `Shared::active` until it is dropped.
pub struct ActiveSession<'a>(&'a Shared);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Counts a new session: how many are open with it, and the guard that
    /// stops counting it.
    pub fn enter(&self) -> (usize, ActiveSession<'_>) {
        let count = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        (count, ActiveSession(self))
    }

    /// Counts a connection in its handshake: how many are with it, and the
    /// guard to drop when the handshake ends (either way). Handshakes are
    /// bounded apart from logged-in sessions, so a flood of slow ones
    /// cannot take the places of agents that log in.
    pub fn enter_handshake(&self) -> (usize, InHandshake<'_>) {
        let count = self.handshakes.fetch_add(1, Ordering::AcqRel) + 1;
        (count, InHandshake(self))
    }

    pub fn new(state: State, workers: usize) -> Arc<Shared> {
        Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            registry: Registry::new(),
            active: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            seats: Arc::default(),
            draining: AtomicBool::new(false),
            coarse_now: AtomicU64::new(0),
            unix_now: AtomicU64::new(crate::policy::reviews::now_unix()),
            counters: Counters::new(workers),
            reviews: Arc::default(),
            budgets: Default::default(),
            recorder: Default::default(),
            catalog_epoch: AtomicU64::new(0),
            peer_cancel: std::sync::OnceLock::new(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }

    pub fn now(&self) -> u64 {
        self.coarse_now.load(Ordering::Relaxed)
    }

    /// Unix seconds, as of the housekeeping thread's last tick.
    pub fn unix_now(&self) -> u64 {
        self.unix_now.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod engine_tests {
    use super::build_engine;
    use crate::config::Config;
    use std::path::Path;
    use std::sync::Arc;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[[target]]\nname = \"t\"\ndatabase = \"t\"\nhost = \"127.0.0.1\"\nuser = \"u\"\ntls = \"disable\"\n{extra}"
        );
        Config::parse(&text, "test.toml", Path::new(".")).unwrap()
    }

    #[test]
    fn an_unchanged_reload_reuses_the_engine_and_keeps_hash_masks() {
        let a = build_engine(&config("")).unwrap();
        let b = build_engine(&config("")).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "same rules, same key: the compiled engine is reused"
        );
        // A change in the rules compiles anew.
        let c = build_engine(&config("[scan]\ndisabled_rules = [\"aws-access-key-id\"]\n")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Back to the first rules, compiled anew: the same process key, so
        // a hash mask of a secret is the same as before.
        let mask = "[scan.masks]\n\"aws-access-key-id\" = \"hash\"\n";
        let e1 = build_engine(&config(mask)).unwrap();
        let _ = build_engine(&config("")).unwrap();
        let e2 = build_engine(&config(mask)).unwrap();
        assert!(!Arc::ptr_eq(&e1, &e2));
        let text = "key AKIAQRSTUVWXYZ234567 used";
        let m1 = e1.mask_text(text);
        assert!(m1.contains("[HASH:"), "{m1}");
        assert_eq!(m1, e2.mask_text(text));
    }
}
