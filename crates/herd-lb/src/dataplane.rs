//! The boundary between the director's control side and whatever moves the packets.
//!
//! The control side (table, schedulers, API) never knows which data plane runs: the userspace
//! proxy today, kernel NAT (nftables DNAT) or DR (nftables netdev MAC rewrite) later. A data
//! plane learns the set of virtual services through [`DataPlane::apply`], and every later change
//! to one of them through [`DataPlane::changed`]; it asks each [`crate::service::Service`] for a
//! real server per new connection (or, for kernel data planes, programs the kernel from the
//! service's real servers when told of a change).
//!
//! The [`crate::table::Table`] owns its data plane and is the only caller: every operation that
//! changes forwarding (ipvsadm, a reload, a health verdict, an operator's drain) goes through the
//! table, which tells the data plane once the new state is in place.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herd_core::api::{AdminState, RealHealth};
use herd_core::config::lb::LbConfig;
use herd_core::model::{ServiceKey, Timeouts};

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

/// What changed in one virtual service's forwarding state (told after the change is made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Scheduler, scheduler flags, persistence or PROXY protocol (ipvsadm `-E`, a reload).
    Service,
    /// A real server added (ipvsadm `-a`, a reload), or one draining after a reload revived.
    RealAdded(SocketAddr),
    /// Weight, thresholds or forwarding method (ipvsadm `-e`, a reload).
    RealEdited(SocketAddr),
    /// A real server removed: at once (ipvsadm `-d`) or, after a reload, taking no new
    /// connections while its open ones finish.
    RealRemoved(SocketAddr),
    /// The health monitor's verdict, when it differs from the last.
    Health(SocketAddr, RealHealth),
    /// An operator's drain, disable or enable, when it differs from the last.
    Admin(SocketAddr, AdminState),
    /// The quorum or the sorry server.
    Quorum,
}

/// Why a data plane refused a set of services.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// A listener could not be bound (address in use, no such address, no permission).
    #[error("cannot listen on {service}: {source}")]
    Bind {
        service: ServiceKey,
        source: io::Error,
    },
    /// Anything else the data plane could not do for a service.
    #[error("{service}: {source}")]
    Internal {
        service: ServiceKey,
        source: io::Error,
    },
}

pub trait DataPlane: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    /// Serves exactly `services`: starts listening for services not served yet and stops
    /// accepting for services no longer in the list (their open connections continue). Either
    /// every new listener is up or nothing changed, and the error names the service that
    /// failed (e.g. address in use).
    fn apply(&self, services: &[Arc<Service>]) -> Result<(), DataPlaneError>;

    /// `service`, one the data plane serves, changed as `change` says; the service already
    /// holds its new state. Cannot fail from the table's side: a data plane that programs
    /// something (the kernel) and fails must log it and set it right itself. The userspace
    /// proxy reads the service on every new connection and needs nothing here.
    fn changed(&self, service: &Arc<Service>, change: Change);

    fn set_settings(&self, settings: Settings);

    /// Serves with `n` workers (threads of a userspace data plane; at least one), changed in
    /// place without dropping a connection. A data plane without workers ignores it.
    fn set_workers(&self, n: usize) -> io::Result<()>;

    /// The workers serving now.
    fn workers(&self) -> usize;

    /// Stops accepting new connections everywhere (the start of a graceful shutdown).
    fn stop_accepting(&self);

    /// Connections still open, including those of services already removed.
    fn open_connections(&self) -> usize;
}

/// What a [`Recording`] data plane was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// [`DataPlane::apply`]: the keys of the services to serve.
    Apply(Vec<ServiceKey>),
    /// [`DataPlane::changed`].
    Changed(ServiceKey, Change),
    /// [`DataPlane::set_settings`].
    Settings(Settings),
    /// [`DataPlane::set_workers`].
    Workers(usize),
}

/// A data plane that forwards nothing and records every call, for tests of the control side
/// (the table, the daemon): they assert the sequence a real data plane would be told.
/// `fail_apply` makes the next [`DataPlane::apply`] fail as a bind failure would.
#[derive(Debug, Default)]
pub struct Recording {
    events: std::sync::Mutex<Vec<Event>>,
    pub fail_apply: std::sync::atomic::AtomicBool,
    workers: std::sync::atomic::AtomicUsize,
}

impl Recording {
    /// The calls so far, oldest first; `take` empties the record.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

impl DataPlane for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn apply(&self, services: &[Arc<Service>]) -> Result<(), DataPlaneError> {
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.key()).collect();
        if self
            .fail_apply
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let service = *keys.last().unwrap_or(&ServiceKey {
                protocol: herd_core::model::Protocol::Tcp,
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
            });
            let source = io::Error::from(io::ErrorKind::AddrInUse);
            return Err(DataPlaneError::Bind { service, source });
        }
        self.push(Event::Apply(keys));
        Ok(())
    }

    fn changed(&self, service: &Arc<Service>, change: Change) {
        self.push(Event::Changed(service.key(), change));
    }

    fn set_settings(&self, settings: Settings) {
        self.push(Event::Settings(settings));
    }

    fn set_workers(&self, n: usize) -> io::Result<()> {
        self.workers
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
        self.push(Event::Workers(n.max(1)));
        Ok(())
    }

    fn workers(&self) -> usize {
        self.workers
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1)
    }

    fn stop_accepting(&self) {}

    fn open_connections(&self) -> usize {
        0
    }
}
