//! The daemon's node agent: `[agent]` (with the sync modules and `[nodes]`) applied to what
//! runs. One path for start, reload and stop ([`Running::apply`]): start is an apply from
//! nothing, a reload applies the difference, stop applies nothing.
//!
//! Every key applies in place. What can fail is done first, and a failure changes nothing:
//! the certificates, key and CA are read again (a renewed file with the same name counts), the
//! audit log's directory made, new listen addresses bound. Then, infallibly: the agent's
//! settings swapped (each connection keeps the ones it was accepted with), listeners no longer
//! configured stopped (their connections finish), the new ones served, revocations and modules
//! replaced, the schedules and the node watch started or stopped. Nothing needs a restart.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Result;
use herd_agent::agent::{Agent, Listening, Settings};
use herd_agent::client::Target;
use herd_agent::grant::Checker;
use herd_agent::module::Modules;
use herd_agent::tls::{self, Files, Revoked};
use herd_core::config::agent::AgentConfig;
use herd_core::config::Config;
use tokio::task::JoinHandle;

/// This node's name: `[agent] name`, else the host name up to the first dot.
pub fn node_name(cfg: &AgentConfig) -> String {
    if let Some(n) = &cfg.name {
        return n.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    host.split('.').next().unwrap_or(host).to_string()
}

pub fn revoked_set(cfg: &AgentConfig) -> Revoked {
    Arc::new(RwLock::new(
        cfg.revoked.iter().cloned().collect::<HashSet<_>>(),
    ))
}

/// Replaces the revoked serials (reload applies them at once, to new connections).
fn set_revoked(revoked: &Revoked, cfg: &AgentConfig) {
    *revoked.write().unwrap_or_else(|p| p.into_inner()) = cfg.revoked.iter().cloned().collect();
}

/// Why `[agent]` could not be applied; the agent runs on as it was.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent: cannot load its certificates (herd init; herd cert issue NODE): {0}")]
    Certificates(String),
    #[error("agent: cannot use its certificate as a client: {0}")]
    ClientCertificate(String),
    #[error("agent: cannot create {dir}: {error}")]
    AuditDir { dir: PathBuf, error: std::io::Error },
    #[error("agent.listen: cannot bind {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// The addresses the agent accepts on now; empty when no agent runs.
    pub listening: Vec<SocketAddr>,
    /// The `[agent]` keys whose change was applied (`listen`, `name`, `max-connections`, …),
    /// and `started` or `stopped` when the agent did.
    pub changed: Vec<&'static str>,
}

/// A task stopped when this is dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The node agent as the daemon runs it, from nothing (no `[agent] listen`) to everything.
#[derive(Debug)]
pub struct Running {
    revoked: Revoked,
    modules: Modules,
    /// What the node watch last saw (while it runs).
    nodes: NodeCache,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Made at the first start, kept across a stop (its uptime, its grants' replay cache).
    agent: Option<Arc<Agent>>,
    /// Per configured address, its listener.
    listeners: Vec<(SocketAddr, Listening)>,
    /// `[agent] port`, read by the schedules and the node watch at every round.
    port: Arc<AtomicU16>,
    schedules: Option<Task>,
    watch: Option<Task>,
    /// What was applied last; `None` while no agent runs.
    applied: Option<AgentConfig>,
    /// The TLS in force and the file contents it was made from.
    tls: Option<Loaded>,
}

/// The agent's TLS, read from its files. Kept while the files say the same: a new
/// `ServerConfig` would end every TLS session its tickets resume (the next connection of
/// every relay and admin would pay a full handshake).
#[derive(Clone)]
struct Loaded {
    /// The paths, and the bytes of the CA, the certificate and the key.
    source: (Files, [Vec<u8>; 3]),
    server: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    relay: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("files", &self.source.0)
            .finish_non_exhaustive()
    }
}

impl Default for Running {
    fn default() -> Self {
        Running::new()
    }
}

impl Running {
    /// No agent yet: [`Running::apply`] starts it.
    pub fn new() -> Running {
        Running {
            revoked: Arc::default(),
            modules: Arc::default(),
            nodes: Arc::default(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent, once started (it stays after a stop).
    pub fn agent(&self) -> Option<Arc<Agent>> {
        self.state().agent.clone()
    }

    /// The node watch's cache while the watch runs (an agent and `[web]`), else `None`.
    pub fn node_watch(&self) -> Option<NodeCache> {
        self.state().watch.as_ref().map(|_| self.nodes.clone())
    }

    /// Takes the agent to what `cfg` says: [`Running::prepare`], then [`Prepared::commit`].
    /// Must run inside the daemon's tokio runtime (it spawns the accept loops); it blocks
    /// only to read the certificate files and bind. On an error nothing has changed.
    pub fn apply(&self, cfg: &Config) -> Result<Applied, AgentError> {
        Ok(self.prepare(cfg)?.commit())
    }

    /// What can fail, done first: the certificates, key and CA read, the audit log's
    /// directory made, the new listen addresses bound. Nothing changes until
    /// [`Prepared::commit`]; dropping it instead closes what it bound. (A daemon that
    /// prepares every subsystem before it commits any applies a reload whole or not at all.)
    pub fn prepare(&self, cfg: &Config) -> Result<Prepared<'_>, AgentError> {
        let mut want = cfg.agent.clone();
        // No more than the open-files limit leaves for the agent.
        want.max_connections = crate::fdlimit::caps(crate::fdlimit::current(), cfg).agent;
        let serve = if want.listen.is_empty() {
            None
        } else {
            let name = node_name(&want);
            let st = self.state();
            let loaded = load_tls(&want, &name, self.revoked.clone(), st.tls.as_ref())?;
            make_audit_dir(&want)?;
            let fresh = bind_new(&want.listen, &st.listeners)?;
            Some((name, loaded, fresh))
        };
        Ok(Prepared {
            running: self,
            want,
            serve,
            cluster: cfg.cluster.clone(),
            modules: cfg.sync_modules.clone(),
            web: cfg.web.is_some(),
        })
    }

    /// Stops accepting (the connections open finish), the schedules and the node watch:
    /// an apply of nothing.
    pub fn stop(&self) -> Applied {
        stop(&mut self.state())
    }

    /// The agent with the new settings (made at the first start).
    fn settle_agent(
        &self,
        st: &mut State,
        want: &AgentConfig,
        name: String,
        loaded: Loaded,
    ) -> Arc<Agent> {
        st.tls = Some(loaded.clone());
        let grants = match &st.agent {
            Some(a) => {
                let g = a.settings().grants.clone();
                g.set_verifier(loaded.verifier);
                g
            }
            None => Arc::new(Checker::new(loaded.verifier)),
        };
        let settings = Settings {
            name,
            tls: loaded.server,
            revoked: self.revoked.clone(),
            user: want.user.clone(),
            audit_log: want.audit_log.clone(),
            max_connections: want.max_connections,
            grants,
            relay_tls: Some(loaded.relay),
            modules: self.modules.clone(),
        };
        match &st.agent {
            Some(a) => {
                a.update(settings);
                a.clone()
            }
            None => st.agent.insert(Agent::new(settings)).clone(),
        }
    }
}

/// A listener bound for a configured address, not served yet.
type Bound = (SocketAddr, tokio::net::TcpListener);

/// An apply whose fallible part is done ([`Running::prepare`]).
pub struct Prepared<'a> {
    running: &'a Running,
    want: AgentConfig,
    /// With an address to listen on: the name, the TLS read, the listeners bound.
    serve: Option<(String, Loaded, Vec<Bound>)>,
    cluster: herd_core::config::cluster::ClusterConfig,
    modules: Vec<herd_core::config::sync::SyncModule>,
    web: bool,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("agent", &self.want)
            .field("web", &self.web)
            .finish_non_exhaustive()
    }
}

impl Prepared<'_> {
    /// Makes it so; nothing here fails.
    pub fn commit(self) -> Applied {
        let Prepared {
            running,
            want,
            serve,
            cluster,
            modules,
            web,
        } = self;
        set_revoked(&running.revoked, &want);
        running
            .modules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .update(&cluster, &modules);
        let mut st = running.state();
        let Some((name, loaded, fresh)) = serve else {
            return stop(&mut st);
        };
        let changed = changes(st.applied.as_ref(), &want);
        let agent = running.settle_agent(&mut st, &want, name, loaded);
        serve_listeners(&mut st, &agent, &want.listen, fresh);
        st.port.store(want.port, Ordering::Relaxed);
        if st.schedules.is_none() {
            let task = tokio::spawn(schedules(agent.clone(), st.port.clone()));
            st.schedules = Some(Task(task));
        }
        match (web, st.watch.is_some()) {
            // Only the dashboard shows the nodes: without it, no daemon pings the others.
            (true, false) => {
                let watch = node_watch(agent.clone(), st.port.clone(), running.nodes.clone());
                st.watch = Some(Task(tokio::spawn(watch)));
            }
            (false, true) => st.watch = None,
            _ => {}
        }
        let listening: Vec<SocketAddr> = st.listeners.iter().map(|(_, l)| l.local_addr()).collect();
        if !changed.is_empty() {
            tracing::info!(name = %agent.settings().name, listen = ?listening, max_connections = want.max_connections, changed = ?changed, "node agent");
        }
        st.applied = Some(want);
        Applied { listening, changed }
    }
}

fn stop(st: &mut State) -> Applied {
    let was = st.applied.take().is_some();
    st.listeners.clear();
    st.schedules = None;
    st.watch = None;
    if was {
        tracing::info!("node agent stopped ([agent] listen is empty)");
    }
    Applied {
        listening: Vec::new(),
        changed: if was { vec!["stopped"] } else { Vec::new() },
    }
}

/// The agent's certificate, key and CA, as a server and as a client (to relay to its
/// subtree), read again from the files.
///
/// What is in force is kept when the files hold what they held.
fn load_tls(
    cfg: &AgentConfig,
    name: &str,
    revoked: Revoked,
    now: Option<&Loaded>,
) -> Result<Loaded, AgentError> {
    let (cert, key) = cfg.node_paths(name);
    let files = Files {
        ca: cfg.ca_path(),
        cert,
        key,
    };
    let read = [&files.ca, &files.cert, &files.key].map(|p| std::fs::read(p).ok());
    if let (Some(now), [Some(ca), Some(cert), Some(key)]) = (now, &read) {
        if now.source.0 == files && now.source.1 == [ca, cert, key].map(Clone::clone) {
            return Ok(now.clone());
        }
    }
    let bytes = read.map(Option::unwrap_or_default);
    let (server, verifier) =
        tls::server_parts(&files, revoked).map_err(|e| AgentError::Certificates(e.to_string()))?;
    let relay = tls::relay_client_config(&files)
        .map_err(|e| AgentError::ClientCertificate(e.to_string()))?;
    Ok(Loaded {
        source: (files, bytes),
        server,
        verifier,
        relay,
    })
}

fn make_audit_dir(cfg: &AgentConfig) -> Result<(), AgentError> {
    let Some(log) = &cfg.audit_log else {
        return Ok(());
    };
    match log.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|error| AgentError::AuditDir {
            dir: dir.to_path_buf(),
            error,
        }),
        None => Ok(()),
    }
}

/// Binds the addresses of `listen` that no listener has yet; all or none.
fn bind_new(
    listen: &[SocketAddr],
    have: &[(SocketAddr, Listening)],
) -> Result<Vec<Bound>, AgentError> {
    listen
        .iter()
        .filter(|a| !have.iter().any(|(h, _)| h == *a))
        .map(|&addr| {
            bind_one(addr)
                .map(|l| (addr, l))
                .map_err(|error| AgentError::Bind { addr, error })
        })
        .collect()
}

/// As `tokio::net::TcpListener::bind` does it, without waiting (a reload runs on a blocking
/// thread of the runtime).
fn bind_one(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Stops the listeners `listen` no longer names and serves the new ones, in the config's order.
fn serve_listeners(st: &mut State, agent: &Arc<Agent>, listen: &[SocketAddr], fresh: Vec<Bound>) {
    let mut old: HashMap<SocketAddr, Listening> = st.listeners.drain(..).collect();
    let mut fresh: HashMap<SocketAddr, tokio::net::TcpListener> = fresh.into_iter().collect();
    for addr in listen {
        let served = match (old.remove(addr), fresh.remove(addr)) {
            (Some(l), _) => Some(l),
            (None, Some(l)) => agent
                .listen(l)
                .inspect_err(|e| tracing::warn!(%addr, error = %e, "agent: cannot serve"))
                .ok(),
            (None, None) => None,
        };
        if let Some(l) = served {
            if !st.listeners.iter().any(|(a, _)| a == addr) {
                st.listeners.push((*addr, l));
            }
        }
    }
    // What is left in `old` stops accepting as it drops.
}

/// The `[agent]` keys that differ, in config terms.
fn changes(old: Option<&AgentConfig>, new: &AgentConfig) -> Vec<&'static str> {
    let Some(old) = old else {
        return vec!["started"];
    };
    let keys: [(&'static str, bool); 11] = [
        ("listen", old.listen != new.listen),
        ("port", old.port != new.port),
        ("name", old.name != new.name),
        ("pki", old.pki != new.pki),
        ("ca", old.ca != new.ca),
        ("cert", old.cert != new.cert),
        ("key", old.key != new.key),
        ("revoked", old.revoked != new.revoked),
        ("user", old.user != new.user),
        ("audit-log", old.audit_log != new.audit_log),
        (
            "max-connections",
            old.max_connections != new.max_connections,
        ),
    ];
    keys.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect()
}

/// A module whose schedule is due on this node: the module, its schedule, where to pull from.
type Due = (
    herd_core::config::sync::SyncModule,
    herd_core::config::sync::PullSchedule,
    Target,
);

/// Pulls the modules whose `schedule` names this node (the seeds' cron line, in the daemon):
/// each every `every`, the first at once, never two pulls of one module at a time. The module
/// table and the agent's settings are read every second, so a reload changes the schedules
/// at once.
async fn schedules(agent: Arc<Agent>, port: Arc<AtomicU16>) {
    let mut last: HashMap<String, tokio::time::Instant> = HashMap::new();
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let s = agent.settings();
        let Some(tls) = s.relay_tls.clone() else {
            continue;
        };
        for (m, sch, from) in due(&s, port.load(Ordering::Relaxed), &last, now) {
            last.insert(m.name.clone(), now);
            if !running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(m.name.clone())
            {
                tracing::warn!(module = %m.name, "sync: the last scheduled pull still runs; skipping this one");
                continue;
            }
            tokio::spawn(scheduled_pull(tls.clone(), m, sch, from, running.clone()));
        }
    }
}

/// The modules whose schedule names this node and whose `every` has passed since `last`.
fn due(
    s: &Settings,
    port: u16,
    last: &HashMap<String, tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Vec<Due> {
    let table = s.modules.read().unwrap_or_else(|p| p.into_inner());
    table
        .modules()
        .filter_map(|m| {
            let sch = m.schedule.as_ref()?;
            let mine = sch.from != s.name
                && table
                    .cluster()
                    .resolve(&sch.nodes)
                    .is_ok_and(|set| set.contains(&s.name));
            let waiting = last.get(&m.name).is_some_and(|at| now < *at + sch.every);
            (mine && !waiting).then(|| {
                let from = Target {
                    rank: 0,
                    name: sch.from.clone(),
                    addr: table.cluster().agent_address(&sch.from, port),
                };
                (m.clone(), sch.clone(), from)
            })
        })
        .collect()
}

async fn scheduled_pull(
    tls: Arc<rustls::ClientConfig>,
    m: herd_core::config::sync::SyncModule,
    sch: herd_core::config::sync::PullSchedule,
    from: Target,
    running: Arc<Mutex<HashSet<String>>>,
) {
    let dest = sch.dest.clone().unwrap_or_else(|| m.path.clone());
    let local = herd_agent::proto::SyncRequest {
        dest: dest.display().to_string(),
        delete: sch.delete,
        exclude: m.exclude.clone(),
        ..Default::default()
    };
    let req = herd_agent::proto::PullRequest {
        module: m.name.clone(),
        ..Default::default()
    };
    let res = herd_agent::sync::pull(tls, &from, req, local, Duration::from_secs(10)).await;
    match res {
        Ok(d) => tracing::info!(
            module = %m.name, from = %from.name, dest = %dest.display(),
            written = d.written, bytes = d.bytes, received = d.received,
            removed = d.removed, "sync: scheduled pull done"
        ),
        Err(o) => tracing::warn!(
            module = %m.name, from = %from.name,
            "sync: scheduled pull failed: {}", o.problem().unwrap_or_default()
        ),
    }
    running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&m.name);
}

/// How often the daemon pings the agents of `[nodes]` for `Request::Nodes`.
const NODE_WATCH_EVERY: Duration = Duration::from_secs(10);

/// What the node watch last saw: this node's name and every node of `[nodes]`.
pub type NodeCache = Arc<Mutex<(Option<String>, Vec<herd_core::api::NodeStatus>)>>;

/// Pings every node of `[nodes]` (this one too) with this node's certificate every
/// [`NODE_WATCH_EVERY`], at most 64 at a time, and keeps the answers in `cache`. The node list
/// and the agent's settings are read at every round, so a reload changes them at once.
async fn node_watch(agent: Arc<Agent>, port: Arc<AtomicU16>, cache: NodeCache) {
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(NODE_WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = agent.settings();
        let Some(tls) = s.relay_tls.clone() else {
            continue;
        };
        let targets: Vec<Target> = {
            let table = s.modules.read().unwrap_or_else(|p| p.into_inner());
            let port = port.load(Ordering::Relaxed);
            table
                .cluster()
                .nodes
                .keys()
                .map(|n| Target {
                    rank: 0,
                    name: n.clone(),
                    addr: table.cluster().agent_address(n, port),
                })
                .collect()
        };
        let tasks: Vec<_> = targets
            .into_iter()
            .map(|t| tokio::spawn(ping_node(tls.clone(), slots.clone(), t)))
            .collect();
        let mut nodes = Vec::new();
        for t in tasks {
            if let Ok(n) = t.await {
                nodes.push(n);
            }
        }
        *cache.lock().unwrap_or_else(|p| p.into_inner()) = (Some(s.name.clone()), nodes);
    }
}

async fn ping_node(
    tls: Arc<rustls::ClientConfig>,
    slots: Arc<tokio::sync::Semaphore>,
    t: Target,
) -> herd_core::api::NodeStatus {
    let _slot = slots.acquire().await;
    let r = herd_agent::client::ping(tls, &t, Duration::from_secs(5)).await;
    let checked_ms = jiff::Timestamp::now().as_millisecond().max(0) as u64;
    match r {
        Ok(p) => herd_core::api::NodeStatus {
            name: t.name,
            address: t.addr,
            up: true,
            version: Some(p.version),
            uptime_secs: Some(p.uptime_secs),
            load: Some(p.load),
            error: String::new(),
            checked_ms,
        },
        Err(o) => herd_core::api::NodeStatus::unanswered(
            t.name,
            t.addr,
            o.problem().unwrap_or_default(),
            checked_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_agent::client::{self, Outcome};
    use herd_agent::frame::{write_frames, Frame, FrameReader, Kind};
    use herd_agent::pki::{self, Role};
    use herd_agent::proto::Request;

    /// A cluster CA with the certificates of node `n1` and admin `alice`, in a directory of
    /// its own (removed on drop).
    struct Pki {
        dir: PathBuf,
    }

    impl Pki {
        fn new(test: &str) -> Pki {
            let dir =
                std::env::temp_dir().join(format!("herd-agent-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let pki = Pki { dir };
            pki.renew();
            pki
        }

        /// A new CA, and new certificates for `n1` and `alice` (the old ones replaced).
        fn renew(&self) {
            let ca = pki::new_ca("herd test CA", 1).unwrap();
            let write = |name: &str, i: &pki::Issued| {
                std::fs::write(self.dir.join(format!("{name}.crt")), &i.cert_pem).unwrap();
                std::fs::write(self.dir.join(format!("{name}.key")), &i.key_pem).unwrap();
            };
            write("ca", &ca);
            for (name, role) in [("n1", Role::Node), ("alice", Role::Admin)] {
                write(
                    name,
                    &pki::issue(&ca.cert_pem, &ca.key_pem, name, role, 1).unwrap(),
                );
            }
        }

        /// alice's side, with the CA as it is now.
        fn admin(&self) -> Arc<rustls::ClientConfig> {
            tls::client_config(&Files {
                ca: self.dir.join("ca.crt"),
                cert: self.dir.join("alice.crt"),
                key: self.dir.join("alice.key"),
            })
            .unwrap()
        }

        fn config(&self, listen: &[SocketAddr], max_connections: usize) -> Config {
            Config {
                agent: AgentConfig {
                    listen: listen.to_vec(),
                    name: Some("n1".into()),
                    pki: self.dir.clone(),
                    audit_log: None,
                    max_connections,
                    ..AgentConfig::default()
                },
                ..Config::default()
            }
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A loopback address with a port nothing listens on (a moment ago).
    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn n1(addr: SocketAddr) -> Target {
        Target {
            rank: 0,
            name: "n1".into(),
            addr: addr.to_string(),
        }
    }

    async fn ping(tls: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<String, Outcome> {
        client::ping(tls, &n1(addr), Duration::from_secs(3))
            .await
            .map(|p| p.name)
    }

    /// Waits (up to 3 s) until nothing accepts on `addr`.
    async fn closed(addr: SocketAddr) -> bool {
        for _ in 0..60 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_moves_the_agent_to_another_port_and_sessions_on_the_old_one_finish() {
        let pki = Pki::new("port");
        let running = Running::new();
        let (a, b) = (free_addr(), free_addr());
        let applied = running.apply(&pki.config(&[a], 8)).unwrap();
        assert_eq!(applied.listening, vec![a]);
        assert_eq!(applied.changed, vec!["started"]);
        assert_eq!(ping(pki.admin(), a).await.unwrap(), "n1");

        // A session on the old port, handshake done, its request not sent yet.
        let held = client::connect(pki.admin(), &n1(a), Duration::from_secs(3))
            .await
            .unwrap();
        let applied = running.apply(&pki.config(&[b], 8)).unwrap();
        assert_eq!(applied.listening, vec![b]);
        assert_eq!(applied.changed, vec!["listen"]);
        assert_eq!(ping(pki.admin(), b).await.unwrap(), "n1");
        assert!(closed(a).await, "the old port still accepts");
        // The held session is served to its end.
        let (rd, mut wr) = tokio::io::split(held);
        write_frames(&mut wr, &[Frame::json(Kind::Request, 0, &Request::Ping)])
            .await
            .unwrap();
        let answer = FrameReader::new(rd).read().await.unwrap().unwrap();
        assert_eq!(answer.kind, Kind::Pong);

        // A port that cannot be bound: the error names it, and the agent stays where it was.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let e = running.apply(&pki.config(&[b, busy], 8)).unwrap_err();
        assert!(
            matches!(e, AgentError::Bind { addr, .. } if addr == busy),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("agent.listen: cannot bind {busy}: ")),
            "{e}"
        );
        assert_eq!(ping(pki.admin(), b).await.unwrap(), "n1");

        // No listen address: the agent stops; one again: it starts.
        let applied = running.apply(&pki.config(&[], 8)).unwrap();
        assert_eq!(
            applied,
            Applied {
                listening: vec![],
                changed: vec!["stopped"]
            }
        );
        assert!(closed(b).await, "a stopped agent still accepts");
        let applied = running.apply(&pki.config(&[a], 8)).unwrap();
        assert_eq!(
            (applied.listening, applied.changed),
            (vec![a], vec!["started"])
        );
        assert_eq!(ping(pki.admin(), a).await.unwrap(), "n1");
        running.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_reads_the_certificates_again_and_a_bad_key_keeps_the_old_ones() {
        let pki = Pki::new("tls");
        let running = Running::new();
        let a = free_addr();
        running.apply(&pki.config(&[a], 8)).unwrap();
        let old_admin = pki.admin();
        assert_eq!(ping(old_admin.clone(), a).await.unwrap(), "n1");
        // Files that say the same: the TLS in force stays (and its session tickets with it).
        let tls = running.agent().unwrap().settings().tls.clone();
        running.apply(&pki.config(&[a], 6)).unwrap();
        let agent = running.agent().unwrap();
        assert!(Arc::ptr_eq(&tls, &agent.settings().tls));
        assert_eq!(agent.max_connections(), 6);

        // An unreadable key: the reload says so and changes nothing (not even the limit).
        let key = pki.dir.join("n1.key");
        let good_key = std::fs::read(&key).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let e = running.apply(&pki.config(&[a], 4)).unwrap_err();
        assert!(matches!(e, AgentError::Certificates(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "agent: cannot load its certificates (herd init; herd cert issue NODE): "
            ) && text.contains(&key.display().to_string()),
            "{text}"
        );
        assert_eq!(running.agent().unwrap().max_connections(), 6);
        assert_eq!(ping(old_admin.clone(), a).await.unwrap(), "n1");
        std::fs::write(&key, good_key).unwrap();

        // A new CA and certificates under the same names: new handshakes use them.
        pki.renew();
        let applied = running.apply(&pki.config(&[a], 6)).unwrap();
        assert!(applied.changed.is_empty(), "{:?}", applied.changed);
        assert!(!Arc::ptr_eq(&tls, &running.agent().unwrap().settings().tls));
        assert_eq!(ping(pki.admin(), a).await.unwrap(), "n1");
        let refused = ping(old_admin, a).await.unwrap_err();
        assert!(
            matches!(
                refused,
                Outcome::Failed {
                    stage: client::Stage::Connect,
                    ..
                }
            ),
            "{refused:?}"
        );
        running.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prepared_apply_that_is_not_committed_changes_nothing() {
        let pki = Pki::new("prepared");
        let running = Running::new();
        let (a, b) = (free_addr(), free_addr());
        running.apply(&pki.config(&[a], 8)).unwrap();
        let prepared = running.prepare(&pki.config(&[b], 4)).unwrap();
        // Bound already, not served.
        assert!(std::net::TcpListener::bind(b).is_err(), "{b} is not bound");
        drop(prepared);
        assert!(std::net::TcpListener::bind(b).is_ok(), "{b} is still bound");
        assert_eq!(running.agent().unwrap().max_connections(), 8);
        assert_eq!(ping(pki.admin(), a).await.unwrap(), "n1");
        // Committed, it takes effect.
        let applied = running.prepare(&pki.config(&[b], 4)).unwrap().commit();
        assert_eq!(applied.changed, vec!["listen", "max-connections"]);
        assert_eq!(ping(pki.admin(), b).await.unwrap(), "n1");
        running.stop();
    }

    /// Waits (up to 2 s) until the agent serves `n` verified peers.
    async fn serving(agent: &Agent, n: usize) {
        for _ in 0..200 {
            if agent.served() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(agent.served(), n);
    }

    /// What a ping is told when the agent turns it away.
    async fn busy(tls: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> String {
        let o = ping(tls.clone(), addr)
            .await
            .expect_err("served beyond max-connections");
        o.problem().unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_max_connections_takes_effect_on_the_running_agent() {
        let pki = Pki::new("max");
        let running = Running::new();
        let a = free_addr();
        running.apply(&pki.config(&[a], 1)).unwrap();
        let admin = pki.admin();
        // One verified peer holds the one slot (it has 10 s to send its request); a ping
        // before the agent has seen it through its handshake could take the slot first.
        let _held = client::connect(admin.clone(), &n1(a), Duration::from_secs(3))
            .await
            .unwrap();
        let agent = running.agent().unwrap();
        serving(&agent, 1).await;
        let why = busy(&admin, a).await;
        assert!(
            why.starts_with("agent: busy: n1 serves 1 connections already"),
            "{why}"
        );

        let applied = running.apply(&pki.config(&[a], 2)).unwrap();
        assert_eq!(applied.changed, vec!["max-connections"]);
        assert_eq!(ping(admin.clone(), a).await.unwrap(), "n1");

        // Back to one: the held peer keeps its slot, the next is turned away again.
        running.apply(&pki.config(&[a], 1)).unwrap();
        serving(&agent, 1).await;
        assert!(busy(&admin, a).await.contains("busy"));
        running.stop();
    }

    #[test]
    fn changes_name_the_keys_that_differ() {
        let old = AgentConfig::default();
        assert_eq!(changes(None, &old), vec!["started"]);
        assert!(changes(Some(&old), &old).is_empty());
        let new = AgentConfig {
            user: "nobody".into(),
            audit_log: None,
            ..old.clone()
        };
        assert_eq!(changes(Some(&old), &new), vec!["user", "audit-log"]);
    }
}
