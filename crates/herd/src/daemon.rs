//! `herd daemon`: the node daemon.
//!
//! Start-up order (the same every time, so that nothing is half-up):
//! 1. parse and validate the config without touching the network;
//! 2. bind the control socket and the virtual services (start-up is a reload from an empty
//!    table, so it shares the reload path);
//! 3. serve: the control API, the data plane, housekeeping;
//! 4. on SIGTERM/SIGINT stop accepting and drain open connections, for at most
//!    `daemon.drain-timeout`; SIGHUP (or `herd reload`) reloads.

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
    /// The health monitor of the config applied last; replaced (keeping its state) on reload.
    monitor: Mutex<Option<Arc<Monitor>>>,
    /// The last config applied, for what a save keeps besides the table (daemon settings).
    config: Mutex<Config>,
    dp: Arc<dyn DataPlane>,
    started: Instant,
    reloads: AtomicU64,
    workers: usize,
    /// VRRP, when the config has instances; changes to them take effect at restart.
    ha: Option<herd_ha::Ha>,
    /// The agent's revoked serials, shared with its TLS verifier (reload replaces them).
    revoked: herd_agent::tls::Revoked,
    /// The sync modules the agent serves (reload replaces them).
    modules: herd_agent::module::Modules,
    /// The dashboard and HTTP API, when the config has `[web]`.
    web: std::sync::OnceLock<herd_web::Web>,
    /// The agents of `[nodes]` as the node watch last saw them (with an agent running).
    nodes: crate::agent::NodeCache,
    watching_nodes: std::sync::atomic::AtomicBool,
    /// The connection caps of the mon port, the dashboard and the agent, sized at start from
    /// the open-files limit (see `fdlimit`).
    caps: crate::fdlimit::Caps,
}

impl herd_web::Backend for Daemon {
    fn call(&self, req: Request) -> Response {
        self.handle(req)
    }
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
    /// Builds the daemon and binds the virtual services of `config`. Nothing is bound if any
    /// listener fails.
    pub fn start(source: Source, config: Config) -> Result<Arc<Daemon>, ApiError> {
        let workers = worker_count(config.lb.workers);
        let settings = Settings::from_config(&config.lb);
        let proxy = Proxy::new(workers, settings).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("cannot start the data plane: {e}"),
            )
        })?;
        let dp: Arc<dyn DataPlane> = Arc::new(proxy);
        let mut table = Table::new(settings);
        table.apply_config(&config.lb, dp.as_ref())?;
        let table = Arc::new(Mutex::new(table));
        let ha = if config.vrrp.instances.is_empty() {
            None
        } else {
            // Bound after the virtual services: a director only claims the VIP once it can
            // serve it.
            Some(herd_ha::Ha::start(&config.vrrp).map_err(|e| {
                ApiError::new(ErrorKind::Internal, format!("cannot start VRRP: {e}"))
            })?)
        };
        let monitor = Monitor::start(&config, Arc::new(TableDirector(table.clone())), None);
        let limit = crate::fdlimit::current();
        let caps = crate::fdlimit::caps(limit, &config);
        tracing::info!(
            open_files = limit,
            mon = caps.mon,
            web = caps.web,
            agent = caps.agent,
            "connection caps"
        );
        Ok(Arc::new(Daemon {
            caps,
            revoked: crate::agent::revoked_set(&config.agent),
            modules: std::sync::Arc::new(std::sync::RwLock::new(herd_agent::module::Table::new(
                &config.cluster,
                &config.sync_modules,
            ))),
            ha,
            web: std::sync::OnceLock::new(),
            nodes: Arc::default(),
            watching_nodes: std::sync::atomic::AtomicBool::new(false),
            source,
            table,
            monitor: Mutex::new(Some(Arc::new(monitor))),
            config: Mutex::new(config),
            dp,
            started: Instant::now(),
            reloads: AtomicU64::new(0),
            workers,
        }))
    }

    /// The dashboard's audit log, when there is one: the record of changes through the mon
    /// port too.
    pub(crate) fn web_audit(&self) -> Option<&herd_web::Web> {
        self.web.get()
    }

    /// The dashboard's logins in the running config (none without `[web]`): the mon port
    /// checks its logins against them.
    pub(crate) fn web_users(&self) -> Vec<herd_core::config::web::WebUser> {
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner());
        cfg.web
            .as_ref()
            .map(|w| w.users.clone())
            .unwrap_or_default()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config and applies the difference; on any error the running state stays.
    /// Returns the changed sections that wait for a restart.
    pub fn reload(&self) -> Result<Vec<String>, ApiError> {
        let cfg = self
            .source
            .load()
            .map_err(|e| ApiError::new(ErrorKind::Config, e.to_string()))?;
        let services = {
            let mut table = self.table();
            table.apply_config(&cfg.lb, self.dp.as_ref())?;
            table.services().len()
        };
        let mut pending = Vec::new();
        if worker_count(cfg.lb.workers) != self.workers {
            pending.push("lb.workers".to_string());
        }
        {
            let old = self.config.lock().unwrap_or_else(|p| p.into_inner());
            if cfg.vrrp != old.vrrp {
                pending.push("vrrp".to_string());
            }
            // Revocations apply at once (to new connections); the rest at restart.
            let mut agent = cfg.agent.clone();
            agent.revoked.clone_from(&old.agent.revoked);
            if agent != old.agent {
                pending.push("agent".to_string());
            }
        }
        crate::agent::set_revoked(&self.revoked, &cfg.agent);
        // Modules (and the node sets their lists name) apply at once, to new transfers.
        self.modules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .update(&cfg.cluster, &cfg.sync_modules);
        match (self.web.get(), &cfg.web) {
            (Some(w), web) => pending.extend(w.reload(web.as_ref())),
            (None, Some(_)) => pending.push("web".to_string()),
            (None, None) => {}
        }
        for p in &pending {
            tracing::warn!("{p} changed: takes effect when the daemon restarts");
        }
        // The new monitor takes over the old one's states, silences and disables, and tells
        // the director the verdict on every real server (the table lock is not held here: it
        // takes it).
        {
            let mut slot = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
            let old = slot.take();
            if let Some(m) = &old {
                m.stop();
            }
            let director = Arc::new(TableDirector(self.table.clone()));
            *slot = Some(Arc::new(Monitor::start(&cfg, director, old.as_deref())));
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        let n = self.reloads.fetch_add(1, Relaxed) + 1;
        tracing::info!(reloads = n, services, "config reloaded");
        Ok(pending)
    }

    /// The node watch's last look; before its first, or without an agent, the configured
    /// nodes, not pinged.
    fn nodes(&self) -> Response {
        let watching = self.watching_nodes.load(Relaxed);
        if watching {
            let (this, nodes) = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if this.is_some() {
                return Response::Nodes { this, nodes };
            }
        }
        let why = if watching {
            "not pinged yet"
        } else {
            "not pinged: this daemon runs no agent ([agent] listen)"
        };
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = cfg
            .cluster
            .nodes
            .keys()
            .map(|n| {
                herd_core::api::NodeStatus::unanswered(
                    n.clone(),
                    cfg.cluster.agent_address(n, cfg.agent.port),
                    why.to_string(),
                    0,
                )
            })
            .collect();
        Response::Nodes { this: None, nodes }
    }

    fn monitor(&self) -> Result<Arc<Monitor>, ApiError> {
        self.monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, "the health monitor is not running"))
    }

    fn ha(&self) -> Result<&herd_ha::Ha, ApiError> {
        self.ha
            .as_ref()
            .ok_or_else(|| invalid("no vrrp instances are configured".to_string()))
    }

    /// Masters resign and hand their addresses over (called before the drain, so that a
    /// backup takes over at once instead of after the master-down interval; the open
    /// connections drain here, see `herd_ha::handover`).
    pub fn stop_ha(&self) {
        if let Some(h) = &self.ha {
            h.stop();
        }
    }

    /// After the drain: VIPs parked for the hand-over go, VRRP ends.
    pub fn finish_ha(&self) {
        if let Some(h) = &self.ha {
            h.finish();
        }
    }

    /// Answers one API request.
    pub fn handle(&self, req: Request) -> Response {
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        }
    }

    fn dispatch(&self, req: Request) -> Result<Response, ApiError> {
        let dp = self.dp.as_ref();
        let ok = |r: Result<(), ApiError>| r.map(|()| Response::Ok);
        match req {
            Request::Status => Ok(Response::Status(DaemonStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api_version: API_VERSION,
                pid: std::process::id(),
                uptime_secs: self.started.elapsed().as_secs(),
                config_path: match &self.source {
                    Source::File(p) => Some(p.display().to_string()),
                    Source::Embedded { name, .. } => Some(name.clone()),
                },
                data_plane: dp.name().to_string(),
                workers: self.workers,
                reloads: self.reloads.load(Relaxed),
            })),
            Request::Reload => self.reload().map(|pending| Response::Reloaded { pending }),
            Request::List { service } => Ok(Response::Services {
                services: self.table().status(service.as_ref())?,
            }),
            Request::AddService { service } => ok(self.table().add_service(service, &[], dp)),
            Request::EditService { service } => ok(self.table().edit_service(service)),
            Request::DeleteService { service } => ok(self.table().delete_service(&service, dp)),
            Request::Clear => ok(self.table().clear(dp)),
            Request::AddReal { service, real } => ok(self.table().add_real(&service, real)),
            Request::EditReal { service, real } => ok(self.table().edit_real(&service, real)),
            Request::DeleteReal { service, address } => {
                ok(self.table().delete_real(&service, address))
            }
            Request::Zero { service } => ok(self.table().zero(service.as_ref())),
            Request::GetTimeouts => Ok(Response::Timeouts {
                timeouts: self.table().settings().timeouts,
            }),
            Request::SetTimeouts { timeouts } => {
                self.table().set_timeouts(timeouts, dp);
                Ok(Response::Ok)
            }
            Request::Connections => Ok(Response::Connections {
                connections: self.table().connections(now_ms()),
            }),
            Request::HealthList => {
                let (checks, silences) = self.monitor()?.status();
                Ok(Response::Health { checks, silences })
            }
            Request::HealthHistory { limit } => Ok(Response::HealthHistory {
                entries: self.monitor()?.history(limit.unwrap_or(100)),
            }),
            Request::HealthDowntime { limit } => Ok(Response::Downtime {
                entries: self.monitor()?.downtime(limit.unwrap_or(100)),
            }),
            Request::HealthSilence {
                check,
                target,
                secs,
                until_recovery,
                author,
                reason,
            } => self
                .monitor()?
                .silence(check, target, secs, until_recovery, author, reason)
                .map(|id| Response::Silenced { id })
                .map_err(invalid),
            Request::HealthUnsilence { id } => ok(self.monitor()?.unsilence(id).map_err(invalid)),
            Request::HealthDisable {
                check,
                target,
                disabled,
            } => ok(self
                .monitor()?
                .set_disabled(&check, target.as_deref(), disabled)
                .map_err(invalid)),
            Request::HealthTestAlert { check } => {
                let m = self.monitor()?;
                // Requests run on a blocking thread: wait here for the alert programs.
                tokio::runtime::Handle::current()
                    .block_on(m.test_alert(&check))
                    .map(|deliveries| Response::Deliveries { deliveries })
                    .map_err(invalid)
            }
            Request::SetRealState {
                service,
                address,
                state,
            } => ok(self.table().set_admin(&service, address, state)),
            Request::Nodes => Ok(self.nodes()),
            Request::HaStatus => Ok(Response::Ha {
                instances: self.ha.as_ref().map(|h| h.status()).unwrap_or_default(),
            }),
            Request::HaFailover { instances } => self
                .ha()?
                .failover(instances)
                .map(|instances| Response::HaChanged { instances })
                .map_err(invalid),
            Request::HaResume { instances } => self
                .ha()?
                .resume(instances)
                .map(|instances| Response::HaChanged { instances })
                .map_err(invalid),
            Request::ExportConfig { redact } => {
                let mut cfg = self
                    .config
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let lb: LbConfig = self.table().to_config(&cfg.lb);
                cfg.lb = lb;
                if redact {
                    cfg.redact_secrets();
                }
                Ok(Response::Config {
                    toml: cfg.to_toml(),
                })
            }
        }
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
        let Some(ha) = self
            .ha
            .as_ref()
            .filter(|h| !h.tracked_services().is_empty())
        else {
            return;
        };
        let failing = self
            .table()
            .services()
            .iter()
            .filter_map(|s| Some((s.spec().name?, s)))
            .filter(|(name, s)| ha.tracked_services().contains(name) && s.failing())
            .map(|(name, _)| name)
            .collect();
        ha.set_failing_services(failing);
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

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::Invalid, message)
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

pub use crate::ctlsock::{bind as bind_control, check as check_control};

async fn serve_control(daemon: Arc<Daemon>, listener: UnixListener) {
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                let d = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_client(d, stream).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait (growing) rather than spin.
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }
}

async fn serve_client(daemon: Arc<Daemon>, stream: UnixStream) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let resp = if line.len() > MAX_MESSAGE {
            Response::Error(ApiError::new(ErrorKind::Invalid, "request too large"))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => {
                    let d = daemon.clone();
                    // Requests may bind sockets or take the table lock: keep them off the
                    // async workers.
                    tokio::task::spawn_blocking(move || d.handle(req))
                        .await
                        .unwrap_or_else(|e| {
                            Response::Error(ApiError::new(ErrorKind::Internal, e.to_string()))
                        })
                }
                Err(e) => Response::Error(ApiError::new(
                    ErrorKind::Invalid,
                    format!("bad request: {e}"),
                )),
            }
        };
        let mut out =
            serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"result\":\"error\"}".to_vec());
        out.push(b'\n');
        wr.write_all(&out).await?;
        if line.len() > MAX_MESSAGE {
            return Ok(());
        }
    }
}

/// The signals the daemon handles. Installed before anything is bound, so that a SIGHUP
/// (`systemctl reload`) during start-up cannot kill the daemon with the default action.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        })
    }
}

/// The next SIGTERM or SIGINT.
async fn stop_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The node agent with its addresses bound, not yet serving.
pub type BoundAgent = (Arc<herd_agent::agent::Agent>, Vec<tokio::net::TcpListener>);

/// Binds the node agent when `[agent] listen` names addresses (before the control socket,
/// whose appearance means ready).
pub async fn bind_agent(daemon: &Daemon) -> Result<Option<BoundAgent>> {
    let mut cfg = daemon
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .agent
        .clone();
    // No more than the open-files limit leaves for the agent.
    cfg.max_connections = daemon.caps.agent;
    crate::agent::bind(&cfg, daemon.revoked.clone(), daemon.modules.clone()).await
}

/// Binds the dashboard and HTTP API when the config has `[web]` (before the control socket,
/// whose appearance means ready).
pub async fn bind_web(daemon: &Arc<Daemon>) -> Result<Option<herd_web::Listener>> {
    let (web, agent_name) = {
        let c = daemon.config.lock().unwrap_or_else(|p| p.into_inner());
        (c.web.clone(), c.agent.name.clone())
    };
    let Some(cfg) = web else {
        return Ok(None);
    };
    let node = agent_name.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    });
    let info = herd_web::Info {
        version: env!("CARGO_PKG_VERSION"),
        node,
    };
    let backend: Arc<dyn herd_web::Backend> = daemon.clone();
    let (web, listener) = herd_web::Web::bind(&cfg, backend, info)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(url = %web.url(&listener), users = cfg.users.len(), "dashboard");
    let _ = daemon.web.set(web);
    Ok(Some(listener))
}

/// What start-up bound, handed to [`serve`].
#[derive(Debug)]
pub struct Bound {
    pub control: UnixListener,
    pub control_path: PathBuf,
    pub agent: Option<BoundAgent>,
    pub web: Option<herd_web::Listener>,
    pub mon: Option<tokio::net::TcpListener>,
}

/// Binds mon's client protocol when the config has `health.mon-listen`: like every listener,
/// before the control socket appears (its appearance means "ready", and a client that saw it
/// must find the mon port too); a failure to bind stops the start-up.
pub async fn bind_mon(daemon: &Daemon) -> Result<Option<tokio::net::TcpListener>> {
    let addr = daemon
        .config
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .health
        .mon_listen;
    let Some(addr) = addr else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("health.mon-listen: cannot bind {addr}"))?;
    Ok(Some(l))
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
        agent,
        web,
        mon,
    } = bound;
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let idle = {
        let c = daemon.config.lock().unwrap_or_else(|p| p.into_inner());
        c.health.mon_idle_timeout
    };
    let mon = mon.map(|l| {
        let limits = crate::monproto::Limits {
            max_connections: daemon.caps.mon,
            idle,
        };
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, max_connections = limits.max_connections, "mon client protocol");
        tokio::spawn(crate::monproto::serve(daemon.clone(), l, limits))
    });
    if let Some((agent, listeners)) = agent {
        tracing::info!(name = %agent.settings().name, "node agent");
        agent.spawn(listeners);
        let port = daemon
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .agent
            .port;
        crate::agent::spawn_schedules(&agent, port);
        // Only the dashboard shows the nodes: without it, no daemon pings the others.
        if agent.settings().relay_tls.is_some() && daemon.web.get().is_some() {
            daemon.watching_nodes.store(true, Relaxed);
            crate::agent::spawn_node_watch(&agent, port, daemon.nodes.clone());
        }
    }
    if let (Some(w), Some(l)) = (daemon.web.get(), web) {
        w.spawn(l, daemon.caps.web);
    }
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
    // The dashboard still shows the drain, but takes no more actions.
    if let Some(w) = daemon.web.get() {
        w.stop_actions();
    }
    if let Some(m) = mon {
        m.abort();
    }
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
