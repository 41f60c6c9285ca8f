//! herd-proxy: the userspace data plane.
//!
//! Each virtual service gets one listening socket per worker thread, all bound with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the workers and no accept lock is
//! shared. TCP is forwarded with `splice(2)` (see [`splice`]); UDP through a per-socket session
//! table (see [`udp`]). The proxy asks the service's scheduler for a real server per new
//! connection or UDP session and keeps a [`herd_lb::service::Conn`] for its lifetime.
//!
//! A reload hands the proxy a new list of services: listeners of services that stay are left
//! alone (their connections never notice), new ones are bound before anything else changes,
//! and removed ones stop accepting while their connections run to the end.

pub mod clock;
pub mod proxy_protocol;
pub mod splice;
mod sys;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use herd_core::api::{ApiError, ErrorKind};
use herd_core::model::{Protocol, ServiceKey};
use herd_lb::dataplane::{DataPlane, Settings};
use herd_lb::service::Service;
use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// What every connection task reads: settings and the count of open connections.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: RwLock<Settings>,
    open: AtomicUsize,
}

impl Shared {
    pub(crate) fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counts one open connection (or UDP session) while alive.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Relaxed);
        OpenGuard(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// The service a set of listeners serves. Replaced in place when a service is deleted and
/// added again under the same key, so the listeners need not be re-bound.
#[derive(Debug)]
pub(crate) struct ServiceSlot {
    pub(crate) key: ServiceKey,
    service: RwLock<Arc<Service>>,
}

impl ServiceSlot {
    pub(crate) fn current(&self) -> Arc<Service> {
        self.service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug)]
struct Listening {
    slot: Arc<ServiceSlot>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        // Stops accepting (the sockets close with their tasks); connection tasks are separate
        // and run to their end.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The userspace proxy data plane.
///
/// Each worker is an OS thread running its own single-threaded tokio runtime; every service has
/// one `SO_REUSEPORT` listener per worker, served on that worker. A connection lives its whole
/// life on the worker that accepted it: no task migrates, and no scheduler state is shared
/// between workers (a single-threaded runtime also wakes tasks more cheaply than the
/// work-stealing one).
#[derive(Debug)]
pub struct Proxy {
    workers: Vec<Handle>,
    shared: Arc<Shared>,
    listening: Mutex<HashMap<ServiceKey, Listening>>,
}

impl Proxy {
    /// Starts `workers` worker threads (at least one).
    pub fn new(workers: usize, settings: Settings) -> std::io::Result<Proxy> {
        let mut handles = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("herd-worker-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // The worker runs its tasks until the process exits.
                    rt.block_on(std::future::pending::<()>());
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("worker thread died at start"))??;
            handles.push(handle);
        }
        Ok(Proxy {
            workers: handles,
            shared: Arc::new(Shared {
                settings: RwLock::new(settings),
                open: AtomicUsize::new(0),
            }),
            listening: Mutex::new(HashMap::new()),
        })
    }

    fn bind(&self, key: &ServiceKey) -> Result<Vec<Socket>, ApiError> {
        let mut out = Vec::with_capacity(self.workers.len());
        for _ in 0..self.workers.len() {
            out.push(bind_one(key).map_err(|e| {
                ApiError::new(ErrorKind::Bind, format!("cannot listen on {key}: {e}"))
            })?);
        }
        Ok(out)
    }

    fn spawn(
        &self,
        slot: &Arc<ServiceSlot>,
        sockets: Vec<Socket>,
    ) -> Result<Vec<JoinHandle<()>>, ApiError> {
        let mut tasks = Vec::with_capacity(sockets.len());
        for (s, rt) in sockets.into_iter().zip(&self.workers) {
            // Registration binds a socket to the reactor of the runtime entered here.
            let _enter = rt.enter();
            let shared = self.shared.clone();
            let slot2 = slot.clone();
            let task = match slot.key.protocol {
                Protocol::Tcp => {
                    let l = sys::register(s.into()).map_err(|e| internal(&slot.key, e))?;
                    rt.spawn(tcp::accept_loop(l, slot2, shared))
                }
                Protocol::Udp => {
                    let u = tokio::net::UdpSocket::from_std(s.into())
                        .map_err(|e| internal(&slot.key, e))?;
                    rt.spawn(udp::serve(Arc::new(u), slot2, shared))
                }
            };
            tasks.push(task);
        }
        Ok(tasks)
    }
}

fn internal(key: &ServiceKey, e: std::io::Error) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("{key}: {e}"))
}

fn bind_one(key: &ServiceKey) -> std::io::Result<Socket> {
    let addr: SocketAddr = key.address;
    let (ty, proto) = match key.protocol {
        Protocol::Tcp => (Type::STREAM, socket2::Protocol::TCP),
        Protocol::Udp => (Type::DGRAM, socket2::Protocol::UDP),
    };
    let s = Socket::new(
        Domain::for_address(addr),
        ty.nonblocking().cloexec(),
        Some(proto),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    // One socket per worker: the kernel balances new connections across them.
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    if key.protocol == Protocol::Tcp {
        // Accepted sockets inherit it: one system call per listener, not one per connection.
        s.set_tcp_nodelay(true)?;
        s.listen(4096)?;
    }
    Ok(s)
}

impl DataPlane for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn apply(&self, services: &[Arc<Service>]) -> Result<(), ApiError> {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        // Bind every new listener first; only when all succeeded does anything change.
        let mut fresh = Vec::new();
        for svc in services {
            let key = svc.key();
            if !listening.contains_key(&key) {
                fresh.push((svc.clone(), self.bind(&key)?));
            }
        }
        for svc in services {
            if let Some(l) = listening.get(&svc.key()) {
                let mut cur = l.slot.service.write().unwrap_or_else(|p| p.into_inner());
                if !Arc::ptr_eq(&cur, svc) {
                    *cur = svc.clone();
                }
            }
        }
        listening.retain(|k, _| services.iter().any(|s| s.key() == *k));
        for (svc, sockets) in fresh {
            let slot = Arc::new(ServiceSlot {
                key: svc.key(),
                service: RwLock::new(svc),
            });
            let tasks = self.spawn(&slot, sockets)?;
            listening.insert(slot.key, Listening { slot, tasks });
        }
        Ok(())
    }

    fn set_settings(&self, settings: Settings) {
        *self
            .shared
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = settings;
    }

    fn stop_accepting(&self) {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn open_connections(&self) -> usize {
        self.shared.open.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            address: "127.0.0.1:0".parse().unwrap(),
        };
        let l: std::net::TcpListener = bind_one(&key).unwrap().into();
        l.set_nonblocking(false).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = std::net::TcpStream::connect(addr).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap());
    }
}
