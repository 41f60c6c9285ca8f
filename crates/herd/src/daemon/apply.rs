//! One path from the running state to a config: start-up applies a config to a daemon running
//! nothing, a reload applies the new config to the running one, and each subsystem takes only
//! its difference.
//!
//! Order, the same every time: the listeners that may fail to bind, before anything else
//! changes (the mon port, the dashboard, the node agent with its sync modules), the virtual
//! services and their data plane, VRRP (a director claims a VIP only once it can serve it),
//! the health monitor (which tells the table its verdicts). Each subsystem applies all of its part
//! or none of it; if one fails, the ones before it have applied and the ones after it have
//! not, the error names the one that failed, and the config kept as "running" stays the old
//! one (a later reload applies the rest).

use std::sync::Arc;

use herd_core::api::{ApiError, ErrorKind};
use herd_core::config::Config;

use super::{lb_error, Daemon};

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
    fn me(&self) -> Result<Arc<Daemon>, ApiError> {
        self.me
            .upgrade()
            .ok_or_else(|| failed("the daemon", "is shutting down"))
    }

    /// Makes the running state equal to `next` (see the module's doc for the order).
    pub(crate) fn apply(&self, next: Config) -> Result<Applied, ApiError> {
        let limit = crate::fdlimit::current();
        let caps = crate::fdlimit::caps(limit, &next);
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
        self.apply_mon(&next)?;
        self.apply_web(&next)?;
        self.apply_agent(&next)?;
        let services = self.apply_lb(&next)?;
        self.apply_ha(&next)?;
        self.apply_health(&next);
        *self.config() = next;
        Ok(Applied { services })
    }

    /// The mon client protocol's port: its address and limits.
    fn apply_mon(&self, next: &Config) -> Result<(), ApiError> {
        let limits = crate::monproto::Limits {
            max_connections: self.caps().mon,
            idle: next.health.mon_idle_timeout,
        };
        let me = self.me()?;
        let backend: Arc<dyn herd_web::Backend> = me.clone();
        let accounts: Arc<dyn crate::monproto::Accounts> = me;
        self.mon
            .apply(next.health.mon_listen, limits, backend, accounts)
            .map_err(|e| ApiError::new(ErrorKind::Bind, e.to_string()))
    }

    /// The virtual services (the table and, through it, the data plane) and the number of
    /// data-plane workers. Returns how many services there are.
    fn apply_lb(&self, next: &Config) -> Result<usize, ApiError> {
        let services = {
            let mut table = self.table();
            table.apply_config(&next.lb).map_err(lb_error)?;
            table.services().len()
        };
        let workers = super::worker_count(next.lb.workers);
        if workers != self.dp.workers() {
            self.dp
                .set_workers(workers)
                .map_err(|e| ApiError::new(ErrorKind::Bind, format!("lb.workers: {e}")))?;
            tracing::info!(workers, "data-plane workers");
        }
        Ok(services)
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

    /// The health monitor: unchanged checks keep running on their timers, the rest start,
    /// stop or restart; then the director hears every verdict (the table lock is not held
    /// here: the monitor takes it).
    fn apply_health(&self, next: &Config) {
        self.monitor.apply(next);
    }

    /// The node agent: every `[agent]` key in place (new addresses bound first, certificate
    /// files read again, limits resized), the revoked serials, the sync modules and their
    /// schedules, the node watch. A failure changes nothing of the agent.
    fn apply_agent(&self, next: &Config) -> Result<(), ApiError> {
        let applied = self.agent.apply(next).map_err(|e| {
            let kind = if matches!(e, crate::agent::AgentError::Bind { .. }) {
                ErrorKind::Bind
            } else {
                ErrorKind::Config
            };
            ApiError::new(kind, e.to_string())
        })?;
        if !applied.changed.is_empty() {
            tracing::info!(changed = ?applied.changed, listening = ?applied.listening, "node agent");
        }
        Ok(())
    }

    /// The dashboard: started, moved, changed or stopped in place (see `herd_web::Web::apply`).
    fn apply_web(&self, next: &Config) -> Result<(), ApiError> {
        let max = self.caps().web;
        let me = self.me()?;
        let web = self
            .web
            .get_or_init(|| herd_web::Web::new(me, web_info(next), max));
        web.set_max_connections(max);
        web.apply(next.web.as_ref()).map_err(|e| {
            let kind = if matches!(e, herd_web::WebError::Bind { .. }) {
                ErrorKind::Bind
            } else {
                ErrorKind::Config
            };
            ApiError::new(kind, e.to_string())
        })?;
        if let (Some(addr), Some(cfg)) = (web.local_addr(), &next.web) {
            tracing::info!(%addr, users = cfg.users.len(), "dashboard");
        }
        Ok(())
    }
}

/// What the dashboard's pages say about this node: the agent's name, else the host name.
fn web_info(cfg: &Config) -> herd_web::Info {
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
