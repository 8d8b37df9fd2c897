//! Workers, listeners, signals, shutdown and reload.
//!
//! One worker per core, each a monoio runtime (io_uring, or epoll where
//! io_uring is unavailable) with its own SO_REUSEPORT listener per address.
//! A session and its upstream connection live and die on the worker that
//! accepted it. The main thread only waits for signals; a housekeeping
//! thread keeps the coarse clock, sweeps idle sessions and gives freed
//! heap pages back (`memory`).

mod memory;

use crate::config::{Config, IoDriver, Protocol};
use crate::core::{KillReason, Shared, State};
use monoio::net::TcpListener;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Which I/O driver the workers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

/// Resolves `io_driver` against what the kernel allows; says so once when
/// io_uring is wanted and unavailable.
pub fn choose_driver(want: IoDriver) -> Driver {
    match want {
        IoDriver::Epoll => Driver::Epoll,
        IoDriver::IoUring | IoDriver::Auto => {
            if monoio::utils::detect_uring() {
                Driver::IoUring
            } else {
                tracing::warn!(
                    "io_uring is unavailable here (kernel.io_uring_disabled, seccomp or an old kernel); workers fall back to epoll"
                );
                Driver::Epoll
            }
        }
    }
}

/// Listening sockets of all workers, shut down to stop accepting.
#[derive(Default)]
struct Listeners(Mutex<Vec<RawFd>>);

impl Listeners {
    fn add(&self, fd: RawFd) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
    }
    fn shutdown_all(&self) {
        for &fd in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: the listener fds stay open until their workers exit,
            // which happens after this call (workers wait for the drain).
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin worker to its core");
        }
    }
}

async fn worker_main(
    shared: Arc<Shared>,
    driver: Driver,
    id: usize,
    addrs: Vec<(SocketAddr, Protocol)>,
    listeners: Arc<Listeners>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut bound = Vec::new();
    for (a, protocol) in &addrs {
        // Keepalive and no-delay for every client, set once on the
        // listener before it listens (accepted sockets inherit them).
        let listening = crate::proxy::stream::client_listener_socket(*a).and_then(|l| {
            // The epoll driver reads until EAGAIN; io_uring waits itself.
            if driver == Driver::Epoll {
                l.set_nonblocking(true)?;
            }
            TcpListener::from_std(l)
        });
        match listening {
            Ok(l) => {
                listeners.add(l.as_raw_fd());
                bound.push((l, *protocol));
            }
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {a}: {e}")));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    // This worker's upstream pool: expired, dead and old-configuration
    // connections are closed every few seconds.
    {
        let shared = shared.clone();
        monoio::spawn(async move {
            while !shared.draining.load(Ordering::Acquire) {
                monoio::time::sleep(Duration::from_secs(5)).await;
                let generation = shared.state.load().generation;
                crate::proxy::pg::pool::sweep(generation);
                crate::proxy::mysql::pool::sweep(generation);
            }
        });
    }
    let accepts = bound.into_iter().map(|(l, protocol)| {
        let shared = shared.clone();
        monoio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((tcp, peer)) => match protocol {
                        Protocol::Postgres => {
                            monoio::spawn(crate::proxy::pg::handle_connection(shared.clone(), id, tcp, peer));
                        }
                        Protocol::Mysql => {
                            monoio::spawn(crate::proxy::mysql::handle_connection(shared.clone(), id, tcp, peer));
                        }
                    },
                    Err(e) => {
                        if shared.draining.load(Ordering::Acquire) {
                            break;
                        }
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(worker = id, error = %e, "accept failed");
                        monoio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    });
    let accepts: Vec<_> = accepts.collect();
    for a in accepts {
        a.await;
    }
    // Keep the runtime alive while this process still has sessions, or
    // events of ended ones still to hand to the recorder; the main thread
    // decides when the drain is over.
    while shared.active.load(Ordering::Acquire) > 0 || crate::record::link::backlogged() > 0 {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn run_worker(driver: Driver, fut: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
    match driver {
        Driver::IoUring => {
            // Only this worker's thread submits, and it reaps completions when
            // it waits anyway: with DEFER_TASKRUN the kernel runs completion
            // work then, in a batch, instead of interrupting the worker for
            // each one (measured: less CPU per transaction than COOP_TASKRUN
            // alone). Kernels before 6.1 refuse it; COOP_TASKRUN then.
            let build = |defer: bool| {
                let mut urb = io_uring::IoUring::builder();
                if defer {
                    urb.setup_single_issuer().setup_defer_taskrun();
                } else {
                    urb.setup_coop_taskrun();
                }
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(4096)
                    .uring_builder(urb)
                    .enable_timer()
                    .build()
            };
            let mut rt = match build(true) {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::info!(error = %e, "io_uring without DEFER_TASKRUN (needs Linux 6.1)");
                    build(false)?
                }
            };
            rt.block_on(fut);
        }
        Driver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            rt.block_on(fut);
        }
    }
    Ok(())
}

/// What the CLI starts beside the data plane, once the shared state exists
/// and before the workers accept: the recorder (set on `Shared`) and the
/// control plane. What it returns is kept until the process exits.
pub type StartPlanes<'a> = Box<
    dyn FnOnce(
            &Arc<Shared>,
            Arc<std::sync::atomic::AtomicBool>,
            Arc<dyn crate::core::ops::Ops>,
        ) -> anyhow::Result<Box<dyn std::any::Any>>
        + 'a,
>;

/// Serves until SIGTERM/SIGINT and a drain; reloads on SIGHUP.
pub fn serve(config_path: PathBuf, config: Config, start_planes: StartPlanes<'_>) -> anyhow::Result<()> {
    let workers = config.worker_count();
    let driver = choose_driver(config.server.io_driver);
    let addrs: Vec<(SocketAddr, Protocol)> = config
        .server
        .listen
        .iter()
        .filter_map(|l| Some((l.address().parse().ok()?, l.protocol())))
        .collect();
    let pin = config.server.pin_workers;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if let Some(key) = &config.server.mysql_rsa_key_file {
        crate::proxy::mysql::rsa_key::load(key).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    }
    let state = State::build(config).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    // Building the scanning engine freed ~20 MiB, which would stay resident.
    memory::release_free_pages();
    let shared = Shared::new(state, workers);
    let listeners = Arc::new(Listeners::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(ProcessOps {
        shared: shared.clone(),
        path: config_path.clone(),
    });
    let _planes = start_planes(&shared, ready.clone(), ops)?;

    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for id in 0..workers {
        let (shared, listeners, addrs, tx) = (shared.clone(), listeners.clone(), addrs.clone(), tx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("gatehouse-w{id}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(id % cores);
                    }
                    let err_tx = tx.clone();
                    if let Err(e) = run_worker(driver, worker_main(shared, driver, id, addrs, listeners, tx)) {
                        let _ = err_tx.send(Err(format!("worker {id}: cannot start its runtime: {e}")));
                    }
                })?,
        );
    }
    drop(tx);
    for _ in 0..workers {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!(e),
            Err(_) => anyhow::bail!("a worker exited during startup"),
        }
    }
    ready.store(true, Ordering::Release);
    tracing::info!(workers, driver = ?driver, listen = ?addrs, "gatehouse serving");

    // Housekeeping: the coarse clock and idle sweeps.
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("gatehouse-house".into())
            .spawn(move || {
                let start = Instant::now();
                let mut last_sweep = 0;
                let mut trims = memory::QuietTrims::new();
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = start.elapsed().as_secs();
                    shared.coarse_now.store(now, Ordering::Relaxed);
                    shared
                        .unix_now
                        .store(crate::policy::reviews::now_unix(), Ordering::Relaxed);
                    let idle = shared.state.load().config.server.idle_timeout_secs;
                    if idle > 0 && now != last_sweep {
                        last_sweep = now;
                        let n = shared.registry.sweep_idle(now, idle);
                        if n > 0 {
                            tracing::info!(sessions = n, "closed idle sessions");
                        }
                    }
                    // Last: the clock above must not wait for it.
                    trims.tick();
                }
            })?;
    }

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                let _ = reload(&shared, &config_path);
            }
            _ => break,
        }
    }
    drain(&shared, &listeners);
    if let Some(r) = shared.recorder.get() {
        // Every session has closed (or been ended by the drain): what they
        // sent is written, sealed and synced before the process exits.
        r.finish();
    }
    Ok(())
}

/// Re-reads the configuration and swaps it in whole; on any error the
/// running configuration stays.
pub fn reload(shared: &Shared, path: &std::path::Path) -> Result<(), String> {
    let result = Config::load(path).map_err(|e| e.to_string()).and_then(|cfg| {
        let old = shared.state.load();
        if cfg.server.listen != old.config.server.listen || cfg.server.workers != old.config.server.workers {
            tracing::warn!("listen addresses and worker count change only on restart");
        }
        State::build(cfg)
    });
    match result {
        Ok(s) => {
            // Stored first: a login from now on is checked against the new
            // configuration, and the sweep then ends what it no longer allows.
            let s = Arc::new(s);
            shared.state.store(s.clone());
            let ended = shared.registry.kill_where(KillReason::Revoked, |info| {
                !crate::identity::survives_reload(&info.identity.name, &info.identity.source, &info.target, &s.config)
            });
            tracing::info!(path = %path.display(), ended_sessions = ended, "configuration reloaded; open sessions keep their settings, except those whose identity was removed, whose token changed or that may no longer reach their target");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the running configuration stays");
            Err(e)
        }
    }
}

struct ProcessOps {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl crate::core::ops::Ops for ProcessOps {
    fn reload(&self) -> Result<(), String> {
        reload(&self.shared, &self.path)
    }
}

fn drain(shared: &Shared, listeners: &Listeners) {
    shared.draining.store(true, Ordering::Release);
    listeners.shutdown_all();
    let grace = Duration::from_secs(shared.state.load().config.server.shutdown_timeout_secs);
    let open = shared.active.load(Ordering::Acquire);
    tracing::info!(
        sessions = open,
        grace_secs = grace.as_secs(),
        "draining: no new connections; waiting for sessions to end"
    );
    // Ended sessions' events still on their way to the recorder count as
    // sessions here: `finish` below writes only what reached it.
    let busy = || shared.active.load(Ordering::Acquire) > 0 || crate::record::link::backlogged() > 0;
    let deadline = Instant::now() + grace;
    while busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = shared.registry.kill_all(KillReason::Shutdown);
    if left > 0 {
        tracing::warn!(sessions = left, "drain deadline passed; closing the remaining sessions");
        let until = Instant::now() + Duration::from_secs(3);
        while busy() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let unsent = crate::record::link::backlogged();
    if unsent > 0 {
        tracing::warn!(
            events = unsent,
            "drain deadline passed with ended sessions' events not yet handed to the recorder; they are not recorded"
        );
    }
    tracing::info!("gatehouse stopped");
}
