//! The boundary between the director's control side and whatever moves the packets.
//!
//! The control side (table, schedulers, API) never knows which data plane runs: the userspace
//! proxy today, kernel NAT (nftables DNAT) or DR (nftables netdev MAC rewrite) later. A data
//! plane learns the set of virtual services through [`DataPlane::apply`] and asks each
//! [`crate::service::Service`] for a real server per new connection (or, for kernel data planes,
//! programs the kernel from the service's real servers).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use herd_core::api::ApiError;
use herd_core::config::lb::LbConfig;
use herd_core::model::Timeouts;

use crate::service::Service;

/// Settings every data plane honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub timeouts: Timeouts,
    /// How long to wait for a real server to accept a connection before trying another.
    pub connect_timeout: Duration,
    /// How long a worker with nothing to do keeps yielding the CPU before it sleeps.
    pub idle_poll: Duration,
}

impl Settings {
    pub fn from_config(cfg: &LbConfig) -> Settings {
        Settings {
            timeouts: cfg.timeouts,
            connect_timeout: cfg.connect_timeout,
            idle_poll: cfg.idle_poll,
        }
    }
}

pub trait DataPlane: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    /// Serves exactly `services`: starts listening for services not served yet and stops
    /// accepting for services no longer in the list (their open connections continue). Either
    /// every new listener is up or nothing changed, and the error names the service that
    /// failed (e.g. address in use).
    fn apply(&self, services: &[Arc<Service>]) -> Result<(), ApiError>;

    fn set_settings(&self, settings: Settings);

    /// Stops accepting new connections everywhere (the start of a graceful shutdown).
    fn stop_accepting(&self);

    /// Connections still open, including those of services already removed.
    fn open_connections(&self) -> usize;
}
