//! The daemon's node agent: settings from `[agent]`, bound before the daemon says ready.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use herd_agent::agent::{Agent, Settings};
use herd_agent::grant::Checker;
use herd_agent::tls::{self, Files, Revoked};
use herd_core::cluster::AgentConfig;

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
    });
    Ok(Some((agent, listeners)))
}
