//! The control plane: a small tokio runtime on low-priority threads that
//! owns the admin API, the notifiers of reviews (and, as it lands, the
//! recorder). Workers never wait on it on the hot path.

pub mod admin;
pub mod announce;
pub mod client;
pub mod console;
pub mod decide;
pub mod links;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod recorder;
pub mod recordings_api;
pub mod slack;
pub mod sso;

use crate::core::Shared;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Nice value of control-plane threads: the data plane comes first.
pub const CONTROL_NICE: libc::c_int = 10;
/// Threads of the control runtime.
pub const CONTROL_THREADS: usize = 2;

pub use crate::core::ops::Ops;

/// The running control plane; dropping it stops its threads.
pub struct Control {
    pub rt: tokio::runtime::Runtime,
    /// The admin API's bound address, when it serves.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// What the notifiers of reviews did.
    pub notify: Arc<notify::Stats>,
    /// The link to the fleet, in fleet mode.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

fn lower_priority() {
    // SAFETY: setpriority on the calling thread (Linux: who = 0 is this
    // thread); failure only leaves the default priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, CONTROL_NICE);
    }
}

/// Starts the control runtime and, when configured, the admin server.
/// `ready` turns true once the data plane listens.
pub fn start(
    shared: Arc<Shared>,
    ready: Arc<AtomicBool>,
    ops: Arc<dyn Ops>,
    recorder: Option<Arc<recorder::Recorder>>,
) -> anyhow::Result<Control> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CONTROL_THREADS)
        .thread_name("gatehouse-ctl")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()?;
    let state = shared.state.load_full();
    // Announce new reviews; the settings are read per review, so a reload
    // applies to the next one.
    let from = shared.clone();
    let links = Arc::new(links::Links::default());
    let notify = notify::start(
        rt.handle(),
        &shared.reviews,
        Arc::new(move || notify::Settings::from_config(&from.state.load().config)),
        links.clone(),
    );
    // The fleet link hooks into reviews before any session can open one.
    let fleet = match state.config.fleet.clone() {
        Some(f) => Some(
            crate::fleet::Fleet::start(
                rt.handle(),
                f,
                shared.clone(),
                state.config.admin.listen.clone(),
                crate::fleet::sessions::data_address(&state.config),
                recorder.clone(),
                ops.clone(),
            )
            .map_err(|e| anyhow::anyhow!("fleet: {e}"))?,
        ),
        None => None,
    };
    let admin_addr = match &state.config.admin.listen {
        Some(addr) => {
            let addr: std::net::SocketAddr = addr.parse()?;
            let tls = match &state.config.admin.tls {
                Some(t) => Some(
                    crate::tls::server_config_for(t, &[b"http/1.1".as_slice()])
                        .map_err(|e| anyhow::anyhow!("admin TLS: {e}"))?,
                ),
                None => None,
            };
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin): {e}"))?;
            let bound = listener.local_addr()?;
            let app = admin::AppState {
                links,
                fleet: fleet.clone(),
                ..admin::AppState::new(shared, ready, ops, recorder)
            };
            let limits = admin::Limits {
                connections: state.config.admin.max_connections,
                header_timeout: std::time::Duration::from_secs(state.config.admin.header_timeout_secs),
            };
            rt.spawn(admin::serve(listener, tls, limits, app));
            tracing::info!(listen = %bound, tls = state.config.admin.tls.is_some(), "admin API serving");
            Some(bound)
        }
        None => None,
    };
    Ok(Control {
        rt,
        admin_addr,
        notify,
        fleet,
    })
}
