//! `herd daemon`: the node daemon.
//!
//! Start-up order (the same every time, so that nothing is half-up; `cli/daemon.rs` runs it):
//! 1. parse and validate the config without touching the network;
//! 2. refuse if another daemon answers on the control socket;
//! 3. apply the config to a daemon running nothing ([`apply`]: listeners, virtual services,
//!    VRRP, health checks, the agent — the same path a reload takes);
//! 4. bind the control socket, whose appearance means ready; serve the control API and
//!    housekeeping ([`control`]);
//! 5. on SIGTERM/SIGINT stop accepting, let VRRP masters resign, and drain open connections
//!    for at most `daemon.drain-timeout`; SIGHUP (or `herd reload`) reloads.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herd_core::api::{
    ApiError, DaemonStatus, ErrorKind, RealHealth, Request, Response, API_VERSION, MAX_MESSAGE,
};
use herd_core::config::lb::LbConfig;
use herd_core::config::Config;
use herd_core::model::ServiceKey;
use herd_health::monitor::{Director, Monitor};
use herd_lb::dataplane::{DataPlane, Settings};
use herd_lb::stats::RateEst;
use herd_lb::table::Table;
use herd_proxy::clock::now_ms;
use herd_proxy::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

mod apply;
mod control;
mod dispatch;
#[cfg(test)]
mod tests;

pub use control::{bind_control, check_control, Signals};
use control::{serve_control, stop_signal};
use dispatch::lb_error;

/// Where the config comes from: a file (reloadable) or text embedded in the binary (demo).
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Embedded { name: String, text: String },
}

impl Source {
    fn load(&self) -> Result<Config, herd_core::config::ConfigErrors> {
        match self {
            Source::File(p) => Config::load(p),
            Source::Embedded { name, text } => Config::parse(name, text),
        }
    }
}

/// The running daemon's state, shared by the control API and housekeeping.
#[derive(Debug)]
pub struct Daemon {
    source: Source,
    table: Arc<Mutex<Table>>,
    /// The health monitor; each apply gives it the checks of the config.
    monitor: Monitor,
    /// The last config applied, for what a save keeps besides the table (daemon settings).
    config: Mutex<Config>,
    /// Held for the length of an apply: one at a time.
    applying: Mutex<()>,
    /// The mon client protocol's port.
    mon: crate::monproto::Port,
    dp: Arc<dyn DataPlane>,
    started: Instant,
    reloads: AtomicU64,
    /// VRRP: the instances of the config applied last (none is fine).
    ha: herd_ha::Ha,
    /// The node agent (with the sync modules, their schedules and the node watch).
    agent: crate::agent::Running,
    /// The dashboard and HTTP API (serving while the config has `[web]`), made by the first
    /// apply.
    web: herd_web::Web,
    /// The connection caps of the mon port, the dashboard and the agent, sized by each apply
    /// from the open-files limit (see `fdlimit`).
    caps: Mutex<crate::fdlimit::Caps>,
}

/// Number of data-plane workers for a config value (0 = one per core).
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

impl Daemon {
    /// Builds the daemon and applies `config` to it: the start-up is an apply from nothing
    /// (see [`Daemon::apply`]); if any part fails, the error says which. Call within a tokio
    /// runtime, off its async workers (`spawn_blocking`): listeners are bound here.
    pub fn start(source: Source, config: Config) -> Result<Arc<Daemon>, ApiError> {
        let daemon = Daemon::empty(source, &config)?;
        daemon.apply(config)?;
        Ok(daemon)
    }

    /// A daemon running nothing yet: an empty table on a data plane with the configured
    /// number of workers.
    fn empty(source: Source, config: &Config) -> Result<Arc<Daemon>, ApiError> {
        let workers = worker_count(config.lb.workers);
        let settings = Settings::from_config(&config.lb);
        let proxy = Proxy::new(workers, settings).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("cannot start the data plane: {e}"),
            )
        })?;
        Daemon::assemble(source, Arc::new(proxy), settings)
    }

    /// A daemon running nothing yet on the data plane `dp`.
    fn assemble(
        source: Source,
        dp: Arc<dyn DataPlane>,
        settings: Settings,
    ) -> Result<Arc<Daemon>, ApiError> {
        let table = Arc::new(Mutex::new(Table::new(settings, dp.clone())));
        let monitor = Monitor::new(Arc::new(TableDirector(table.clone())));
        // No instances yet: an idle thread, nothing opened until an apply brings some.
        let ha = herd_ha::Ha::new()
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("cannot start VRRP: {e}")))?;
        let empty = Config::default();
        Ok(Arc::new_cyclic(|me| {
            // The listeners reach the daemon through a weak handle: a daemon that fails to
            // start, or ends, is dropped with everything it bound.
            let handle = Arc::new(apply::Handle(me.clone()));
            Daemon {
                applying: Mutex::new(()),
                caps: Mutex::new(crate::fdlimit::Caps::default()),
                agent: crate::agent::Running::new(),
                ha,
                web: herd_web::Web::new(handle.clone(), apply::web_info(&empty), 0),
                mon: crate::monproto::Port::new(handle.clone(), handle),
                source,
                table,
                monitor,
                config: Mutex::new(empty),
                dp,
                started: Instant::now(),
                reloads: AtomicU64::new(0),
            }
        }))
    }

    /// The config applied last.
    pub(crate) fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection caps the config applied last was given.
    pub(crate) fn caps(&self) -> crate::fdlimit::Caps {
        *self.caps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config and applies the difference (see [`Daemon::apply`]). Returns the
    /// changed keys that wait for a restart: none, every key applies in place (the API keeps
    /// the list for a key that one day cannot).
    pub fn reload(&self) -> Result<Vec<String>, ApiError> {
        let cfg = self
            .source
            .load()
            .map_err(|e| ApiError::new(ErrorKind::Config, e.to_string()))?;
        let applied = self.apply(cfg)?;
        let n = self.reloads.fetch_add(1, Relaxed) + 1;
        tracing::info!(reloads = n, services = applied.services, "config reloaded");
        Ok(Vec::new())
    }

    /// Masters resign and hand their addresses over (called before the drain, so that a
    /// backup takes over at once instead of after the master-down interval; the open
    /// connections drain here, see `herd_ha::handover`).
    pub fn stop_ha(&self) {
        self.ha.stop();
    }

    /// After the drain: VIPs parked for the hand-over go, VRRP ends.
    pub fn finish_ha(&self) {
        self.ha.finish();
    }

    /// Housekeeping every second; rates are sampled every two seconds as the kernel does.
    async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let sample = n.is_multiple_of(RateEst::PERIOD_MS / 1000);
            self.table().maintain(now_ms(), sample);
            self.tell_ha_services();
        }
    }

    /// VRRP's `track-service`: which tracked virtual services are failing now.
    fn tell_ha_services(&self) {
        let tracked = self.ha.tracked_services();
        if tracked.is_empty() {
            return;
        }
        let failing = self
            .table()
            .services()
            .iter()
            .filter_map(|s| Some((s.spec().name?, s)))
            .filter(|(name, s)| tracked.contains(name) && s.failing())
            .map(|(name, _)| name)
            .collect();
        self.ha.set_failing_services(failing);
    }

    /// Stops accepting and waits for open connections to finish, at most `timeout`.
    async fn drain(&self, timeout: Duration) {
        self.dp.stop_accepting();
        // Bounded by the config check; saturate anyway rather than overflow the clock.
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + herd_core::config::MAX_DURATION);
        loop {
            let open = self.dp.open_connections();
            if open == 0 {
                tracing::info!("drained");
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(open, "drain timeout reached; closing remaining connections");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The director as the health monitor sees it: the virtual service table.
#[derive(Debug)]
struct TableDirector(Arc<Mutex<Table>>);

impl Director for TableDirector {
    fn set_health(&self, service: &ServiceKey, real: SocketAddr, health: RealHealth) {
        let table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let lost = |t: &Table| t.get(service).and_then(|s| s.quorum()).map(|q| q.lost);
        let before = lost(&table);
        // A real server removed by ipvsadm since the config was loaded: nothing to do.
        if let Err(e) = table.set_health(service, real, health) {
            tracing::debug!(error = %e, "health verdict not applied");
        }
        match (before, lost(&table)) {
            (Some(false), Some(true)) => {
                tracing::warn!(%service, "quorum lost: new connections go to the sorry server, if any")
            }
            (Some(true), Some(false)) => tracing::warn!(%service, "quorum regained"),
            _ => {}
        }
    }
}

/// What start-up bound, handed to [`serve`].
#[derive(Debug)]
pub struct Bound {
    pub control: UnixListener,
    pub control_path: PathBuf,
}

/// Runs the daemon until SIGTERM/SIGINT (or `shutdown` resolves), then drains; a second
/// SIGTERM/SIGINT during the drain ends it at once.
pub async fn serve(
    daemon: Arc<Daemon>,
    signals: Signals,
    bound: Bound,
    drain_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let Bound {
        control,
        control_path,
    } = bound;
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let ctl = tokio::spawn(serve_control(daemon.clone(), control));
    let hk = tokio::spawn(daemon.clone().housekeeping());
    tracing::info!(socket = %control_path.display(), "ready");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            sig = stop_signal(&mut term, &mut int) => { tracing::info!("{sig}: draining"); break; }
            _ = &mut shutdown => break,
            _ = hup.recv() => {
                let d = daemon.clone();
                match tokio::task::spawn_blocking(move || d.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("reload refused, keeping the running config:\n{e}"),
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        }
    }
    ctl.abort();
    // The agent stops accepting; its sessions (a command running) finish.
    daemon.agent.stop();
    // The dashboard still shows the drain, but takes no more actions.
    daemon.web.stop_actions();
    daemon.mon.stop();
    let _ = std::fs::remove_file(&control_path);
    {
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.stop_ha()).await;
    }
    tokio::select! {
        _ = daemon.drain(drain_timeout) => {}
        sig = stop_signal(&mut term, &mut int) => {
            tracing::warn!("{sig} again: closing open connections now");
        }
    }
    {
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.finish_ha()).await;
    }
    hk.abort();
    Ok(())
}
