//! What sessions share: the compiled configuration (swapped whole on reload)
//! and the process-wide registries.

use super::registry::Registry;
use super::tls;
use crate::config::{Config, Target};
use crate::identity::{Authenticator, StaticTokens};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A target ready to connect to.
pub struct TargetRt {
    pub cfg: Target,
    pub password: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// The compiled configuration. Read-only; replaced as a whole on reload.
pub struct State {
    pub config: Config,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub targets: Vec<TargetRt>,
    pub auth: Box<dyn Authenticator>,
}

impl State {
    pub fn build(config: Config) -> Result<State, String> {
        let server_tls = match &config.server.tls {
            Some(t) => Some(tls::server_config(t)?),
            None => None,
        };
        let mut targets = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            let err = |e: String| format!("target `{}`: {e}", t.name);
            targets.push(TargetRt {
                password: t.resolve_password().map_err(err)?,
                tls: tls::upstream_config(t).map_err(err)?,
                server_name: tls::server_name(t).map_err(err)?,
                cfg: t.clone(),
            });
        }
        let auth = Box::new(StaticTokens::from_config(&config.identities));
        Ok(State {
            config,
            server_tls,
            targets,
            auth,
        })
    }

    /// The target a client reaches with `database` as `user`.
    pub fn select_target(&self, database: &str, user: &str) -> Option<&TargetRt> {
        self.targets.iter().find(|t| {
            t.cfg.database == database
                && (t.cfg.client_users.is_empty() || t.cfg.client_users.iter().any(|u| u == user))
        })
    }
}

/// Process-wide state shared by all workers.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub registry: Registry,
    /// Sessions open now, over all workers.
    pub active: AtomicUsize,
    /// Set once SIGTERM arrives: accept no more.
    pub draining: AtomicBool,
    /// Seconds since start, advanced by the housekeeping thread; sessions
    /// stamp their last activity with it (a load, not a clock read).
    pub coarse_now: AtomicU64,
}

impl Shared {
    pub fn new(state: State) -> Arc<Shared> {
        Arc::new(Shared {
            state: ArcSwap::from_pointee(state),
            registry: Registry::new(),
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            coarse_now: AtomicU64::new(0),
        })
    }

    pub fn now(&self) -> u64 {
        self.coarse_now.load(Ordering::Relaxed)
    }
}
