//! The daemon's node agent: settings from `[agent]`, bound before the daemon says ready.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use herd_agent::agent::{Agent, Settings};
use herd_agent::grant::Checker;
use herd_agent::tls::{self, Files, Revoked};
use herd_core::config::agent::AgentConfig;

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
pub fn set_revoked(revoked: &Revoked, cfg: &AgentConfig) {
    *revoked.write().unwrap_or_else(|p| p.into_inner()) = cfg.revoked.iter().cloned().collect();
}

/// Loads the agent's certificates and binds its addresses; `None` when `[agent] listen` is
/// empty. Nothing is served until [`Agent::spawn`].
pub async fn bind(
    cfg: &AgentConfig,
    revoked: Revoked,
    modules: herd_agent::module::Modules,
) -> Result<Option<(Arc<Agent>, Vec<tokio::net::TcpListener>)>> {
    if cfg.listen.is_empty() {
        return Ok(None);
    }
    let name = node_name(cfg);
    let (cert, key) = cfg.node_paths(&name);
    let files = Files {
        ca: cfg.ca_path(),
        cert,
        key,
    };
    let (server, verifier) = tls::server_parts(&files, revoked.clone())
        .map_err(anyhow::Error::msg)
        .context("agent: cannot load its certificates (herd init; herd cert issue NODE)")?;
    // The same identity, as a client: to relay runs to a subtree.
    let relay_tls = tls::relay_client_config(&files)
        .map_err(anyhow::Error::msg)
        .context("agent: cannot use its certificate as a client")?;
    if let Some(log) = &cfg.audit_log {
        if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("agent: cannot create {}", dir.display()))?;
        }
    }
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("agent.listen: cannot bind {addr}"))?;
        listeners.push(l);
    }
    let agent = Agent::new(Settings {
        name,
        tls: server,
        revoked,
        user: cfg.user.clone(),
        audit_log: cfg.audit_log.clone(),
        max_connections: cfg.max_connections,
        grants: Arc::new(Checker::new(verifier)),
        relay_tls: Some(relay_tls),
        modules,
    });
    Ok(Some((agent, listeners)))
}

/// Pulls the modules whose `schedule` names this node (the seeds' cron line, in the daemon):
/// each every `every`, the first at once, never two pulls of one module at a time. The module
/// table is read every second, so a reload changes the schedules at once.
pub fn spawn_schedules(agent: &Arc<Agent>, port: u16) {
    use std::collections::HashMap;
    use std::time::Duration;

    let s = agent.settings().clone();
    let Some(tls) = s.relay_tls.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut last: HashMap<String, tokio::time::Instant> = HashMap::new();
        let running: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            let due: Vec<_> = {
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
                            let from = herd_agent::client::Target {
                                rank: 0,
                                name: sch.from.clone(),
                                addr: table.cluster().agent_address(&sch.from, port),
                            };
                            (m.clone(), sch.clone(), from)
                        })
                    })
                    .collect()
            };
            for (m, sch, from) in due {
                last.insert(m.name.clone(), now);
                if !running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(m.name.clone())
                {
                    tracing::warn!(module = %m.name, "sync: the last scheduled pull still runs; skipping this one");
                    continue;
                }
                let (tls, running) = (tls.clone(), running.clone());
                tokio::spawn(async move {
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
                    let res =
                        herd_agent::sync::pull(tls, &from, req, local, Duration::from_secs(10))
                            .await;
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
                });
            }
        }
    });
}

/// How often the daemon pings the agents of `[nodes]` for `Request::Nodes`.
const NODE_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the node watch last saw: this node's name and every node of `[nodes]`.
pub type NodeCache = Arc<std::sync::Mutex<(Option<String>, Vec<herd_core::api::NodeStatus>)>>;

/// Pings every node of `[nodes]` (this one too) with this node's certificate every
/// [`NODE_WATCH_EVERY`], at most 64 at a time, and keeps the answers in `cache`. The node list
/// is read from the module table, so a reload changes it at once.
pub fn spawn_node_watch(agent: &Arc<Agent>, port: u16, cache: NodeCache) {
    use std::time::Duration;

    let s = agent.settings().clone();
    let Some(tls) = s.relay_tls.clone() else {
        return;
    };
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tick = tokio::time::interval(NODE_WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let targets: Vec<herd_agent::client::Target> = {
                let table = s.modules.read().unwrap_or_else(|p| p.into_inner());
                table
                    .cluster()
                    .nodes
                    .keys()
                    .map(|n| herd_agent::client::Target {
                        rank: 0,
                        name: n.clone(),
                        addr: table.cluster().agent_address(n, port),
                    })
                    .collect()
            };
            let tasks: Vec<_> = targets
                .into_iter()
                .map(|t| {
                    let (tls, slots) = (tls.clone(), slots.clone());
                    tokio::spawn(async move {
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
                    })
                })
                .collect();
            let mut nodes = Vec::new();
            for t in tasks {
                if let Ok(n) = t.await {
                    nodes.push(n);
                }
            }
            *cache.lock().unwrap_or_else(|p| p.into_inner()) = (Some(s.name.clone()), nodes);
        }
    });
}
