//! One path from the running state to a config: start-up applies a config to a daemon running
//! nothing, a reload applies the new config to the running one, and each subsystem takes only
//! its difference. One apply at a time (a SIGHUP, `herd reload` and the dashboard's Reload
//! wait for each other).
//!
//! Order, the same every time:
//! 1. the agent **prepares**: certificates read, new addresses bound — nothing changes yet;
//! 2. the listeners that may fail to bind, each in place: the mon port, the dashboard;
//! 3. the virtual services and the data plane's workers;
//! 4. VRRP (a director claims a VIP only once it can serve it);
//! 5. what can no longer fail: the agent's prepared change is committed, the health monitor
//!    applied (it tells the table its verdicts).
//!
//! Each subsystem applies all of its part or none of it. If one fails, the error names it; the
//! agent and the monitor are unchanged, the listeners of step 2 and the steps before the one
//! that failed have applied, and the config kept as "running" stays the old one (a later reload
//! applies the rest).

use std::sync::{Arc, Weak};

use herd_core::api::{ApiError, ErrorKind, Request, Response};
use herd_core::config::web::WebUser;
use herd_core::config::Config;

use super::{lb_error, Daemon};
use crate::fdlimit::Caps;

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Virtual services now configured.
    pub services: usize,
}

fn failed(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

impl Daemon {
    /// Makes the running state equal to `next` (see the module's doc for the order).
    pub(crate) fn apply(&self, next: Config) -> Result<Applied, ApiError> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let limit = crate::fdlimit::current();
        let caps = crate::fdlimit::caps(limit, &next);
        let agent = self.agent.prepare(&next).map_err(agent_error)?;
        self.apply_mon(&next, caps)?;
        self.apply_web(&next, caps)?;
        let services = self.apply_lb(&next)?;
        self.apply_ha(&next)?;
        let applied = agent.commit();
        if !applied.changed.is_empty() {
            tracing::info!(changed = ?applied.changed, listening = ?applied.listening, "node agent");
        }
        self.monitor.apply(&next);
        if caps != self.caps() {
            tracing::info!(
                open_files = limit,
                mon = caps.mon,
                web = caps.web,
                agent = caps.agent,
                "connection caps"
            );
        }
        *self.caps.lock().unwrap_or_else(|p| p.into_inner()) = caps;
        *self.config() = next;
        Ok(Applied { services })
    }

    /// The mon client protocol's port: its address and limits.
    fn apply_mon(&self, next: &Config, caps: Caps) -> Result<(), ApiError> {
        let limits = crate::monproto::Limits {
            max_connections: caps.mon,
            idle: next.health.mon_idle_timeout,
        };
        self.mon
            .apply(next.health.mon_listen, limits)
            .map_err(|e| ApiError::new(ErrorKind::Bind, e.to_string()))
    }

    /// The dashboard: started, moved, changed or stopped in place (see `herd_web::Web::apply`).
    fn apply_web(&self, next: &Config, caps: Caps) -> Result<(), ApiError> {
        let web = &self.web;
        web.apply(next.web.as_ref()).map_err(|e| {
            let kind = if matches!(e, herd_web::WebError::Bind { .. }) {
                ErrorKind::Bind
            } else {
                ErrorKind::Config
            };
            ApiError::new(kind, e.to_string())
        })?;
        web.set_max_connections(caps.web);
        web.set_info(web_info(next));
        if let (Some(addr), Some(cfg)) = (web.local_addr(), &next.web) {
            tracing::info!(%addr, users = cfg.users.len(), "dashboard");
        }
        Ok(())
    }

    /// The virtual services (the table and, through it, the data plane) and the number of
    /// data-plane workers, together: if the services cannot be applied, the workers go back.
    /// Returns how many services there are.
    fn apply_lb(&self, next: &Config) -> Result<usize, ApiError> {
        let (before, want) = (self.dp.workers(), super::worker_count(next.lb.workers));
        if want != before {
            self.dp
                .set_workers(want)
                .map_err(|e| ApiError::new(ErrorKind::Bind, format!("lb.workers: {e}")))?;
            tracing::info!(workers = want, "data-plane workers");
        }
        let mut table = self.table();
        if let Err(e) = table.apply_config(&next.lb) {
            if want != before {
                if let Err(back) = self.dp.set_workers(before) {
                    tracing::error!(error = %back, "lb.workers: cannot go back to {before}");
                }
            }
            return Err(lb_error(e));
        }
        Ok(table.services().len())
    }

    /// VRRP instances, changed in place (priorities, intervals, VIPs, peers, hooks,
    /// tracking); an instance whose interface, VRID, family or version changes is replaced.
    /// All or nothing: on an error (a missing interface, a socket, a key file) the running
    /// instances stay as they were.
    fn apply_ha(&self, next: &Config) -> Result<(), ApiError> {
        let applied = self
            .ha
            .apply(&next.vrrp)
            .map_err(|e| failed("cannot apply VRRP", e))?;
        if !applied.is_empty() {
            tracing::info!(?applied, "vrrp applied");
        }
        Ok(())
    }
}

fn agent_error(e: crate::agent::AgentError) -> ApiError {
    let kind = if matches!(e, crate::agent::AgentError::Bind { .. }) {
        ErrorKind::Bind
    } else {
        ErrorKind::Config
    };
    ApiError::new(kind, e.to_string())
}

/// What the dashboard's pages say about this node: the agent's name, else the host name.
pub(super) fn web_info(cfg: &Config) -> herd_web::Info {
    let node = cfg.agent.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    });
    herd_web::Info {
        version: env!("CARGO_PKG_VERSION"),
        node,
    }
}

/// The daemon as its listeners (the dashboard, the mon port) reach it: held weakly, so that a
/// daemon that fails to start, or ends, is dropped with everything it bound.
#[derive(Debug)]
pub(super) struct Handle(pub(super) Weak<Daemon>);

impl Handle {
    fn daemon(&self) -> Option<Arc<Daemon>> {
        self.0.upgrade()
    }
}

impl herd_web::Backend for Handle {
    fn call(&self, req: Request) -> Response {
        match self.daemon() {
            Some(d) => d.handle(req),
            None => Response::Error(failed("the daemon", "is shutting down")),
        }
    }
}

/// The mon port's logins are the dashboard's, and its changes go to the dashboard's audit log
/// when there is one.
impl crate::monproto::Accounts for Handle {
    fn users(&self) -> Vec<WebUser> {
        let Some(d) = self.daemon() else {
            return Vec::new();
        };
        let cfg = d.config();
        cfg.web
            .as_ref()
            .map(|w| w.users.clone())
            .unwrap_or_default()
    }

    fn audit_writable(&self) -> Result<(), String> {
        let d = self.daemon().ok_or("the daemon is shutting down")?;
        d.web.audit_writable().map_err(|e| e.to_string())
    }

    fn audit(
        &self,
        user: &str,
        role: &str,
        peer: std::net::IpAddr,
        event: &str,
        detail: String,
        result: Result<(), String>,
    ) {
        if let Some(d) = self.daemon() {
            d.web.audit(user, role, peer, event, detail, result);
        }
    }
}
