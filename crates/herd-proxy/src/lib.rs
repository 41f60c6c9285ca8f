//! herd-proxy: the userspace data plane.
//!
//! Each virtual service gets one listening socket per worker thread, all bound with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the workers and no accept lock is
//! shared. TCP is forwarded with `splice(2)` (see `splice.rs`); UDP through a per-socket session
//! table (see `udp.rs`). The proxy asks the service's scheduler for a real server per new
//! connection or UDP session and keeps a [`herd_lb::service::Conn`] for its lifetime.
//!
//! A reload hands the proxy a new list of services: listeners of services that stay are left
//! alone (their connections never notice), new ones are bound before anything else changes,
//! and removed ones stop accepting while their connections run to the end.

pub mod clock;
pub mod proxy_protocol;
mod splice;
mod sys;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use herd_core::model::{Protocol, ServiceKey};
use herd_lb::dataplane::{Change, DataPlane, DataPlaneError, Settings};
use herd_lb::service::Service;
use socket2::{Domain, Socket, Type};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// What every connection task reads: settings and the count of open connections.
#[derive(Debug)]
pub(crate) struct Shared {
    settings: RwLock<Settings>,
    open: AtomicUsize,
    /// `Settings::idle_poll` in nanoseconds, read before every sleep without a lock.
    idle_poll_ns: AtomicU64,
}

impl Shared {
    fn new(settings: Settings) -> Shared {
        Shared {
            settings: RwLock::new(settings),
            open: AtomicUsize::new(0),
            idle_poll_ns: AtomicU64::new(nanos(settings.idle_poll)),
        }
    }

    pub(crate) fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, settings: Settings) {
        self.idle_poll_ns.store(nanos(settings.idle_poll), Relaxed);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Runs when a worker has no task left to run, right before it sleeps in `epoll_wait`:
    /// yields the CPU for up to `lb.idle-poll` first.
    ///
    /// Under load, the next event usually arrives within microseconds. Sleeping for it means
    /// the CPU halts and the event's sender has to wake it with an inter-processor interrupt;
    /// in a virtual machine both are exits to the hypervisor. On the development VM a worker
    /// alone on its core slept up to four times as often as HAProxy's and forwarded ~5% fewer
    /// keep-alive requests for it; 10 µs of yielding closed that gap (bench/README.md). On a
    /// core shared with other processes, yielding hands them the CPU, so it costs little there.
    /// This is what the kernel's `haltpoll` idle driver does for guests (for up to 200 µs),
    /// here bounded per sleep and off with `idle-poll = 0`.
    ///
    /// The hook runs before tokio looks at epoll again, so it cannot see events: one that
    /// arrives during the yielding waits for its end, up to `idle-poll` of added latency
    /// (hence the small default; 100 µs measured worse than none).
    /// Each pass is one `sched_yield` call.
    fn before_sleep(&self) {
        let ns = self.idle_poll_ns.load(Relaxed);
        if ns == 0 {
            return;
        }
        let start = std::time::Instant::now();
        while start.elapsed().as_nanos() < u128::from(ns) {
            std::thread::yield_now();
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

/// Task polls between two looks at epoll while a worker is busy (tokio's default is 61).
///
/// A busy worker only harvests new events every `EVENT_INTERVAL` polls, so an event that
/// arrives just after a look waits for the whole batch ahead of it. With the default, herd made
/// 0.11–0.15 `epoll_wait` calls per keep-alive request against HAProxy's 0.6, and its p99 was
/// 20% above HAProxy's at equal req/s; at 4 it makes ~0.5 and the tail matched (bench/README.md).
const EVENT_INTERVAL: u32 = 4;

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
        let shared = Arc::new(Shared::new(settings));
        for i in 0..workers.max(1) {
            let (tx, rx) = std::sync::mpsc::channel();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("herd-worker-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .event_interval(EVENT_INTERVAL)
                        .enable_all()
                        .on_thread_park(move || shared.before_sleep())
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
            shared,
            listening: Mutex::new(HashMap::new()),
        })
    }

    fn bind(&self, key: &ServiceKey) -> Result<Vec<Socket>, DataPlaneError> {
        let mut out = Vec::with_capacity(self.workers.len());
        for _ in 0..self.workers.len() {
            out.push(bind_one(key).map_err(|source| DataPlaneError::Bind {
                service: *key,
                source,
            })?);
        }
        Ok(out)
    }

    fn spawn(
        &self,
        slot: &Arc<ServiceSlot>,
        sockets: Vec<Socket>,
    ) -> Result<Vec<JoinHandle<()>>, DataPlaneError> {
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

fn internal(key: &ServiceKey, source: std::io::Error) -> DataPlaneError {
    DataPlaneError::Internal {
        service: *key,
        source,
    }
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
    // A VIP is bound before this director owns it: on a VRRP backup the listener waits,
    // and it serves the moment the address arrives, with no rebind on a role change.
    if addr.is_ipv6() {
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
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

    fn apply(&self, services: &[Arc<Service>]) -> Result<(), DataPlaneError> {
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

    /// Nothing to do: a connection asks its service for a real server when it starts, so it
    /// sees every change made before.
    fn changed(&self, _service: &Arc<Service>, _change: Change) {}

    fn set_settings(&self, settings: Settings) {
        self.shared.set(settings);
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

    fn settings(idle_poll: std::time::Duration) -> Settings {
        Settings {
            timeouts: herd_core::model::Timeouts::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            idle_poll,
        }
    }

    #[test]
    fn a_worker_yields_for_idle_poll_before_sleeping_and_reloads_change_it() {
        use std::time::{Duration, Instant};
        let shared = Shared::new(settings(Duration::from_millis(20)));
        let t = Instant::now();
        shared.before_sleep();
        assert!(t.elapsed() >= Duration::from_millis(20));
        // Set to 0 (as a reload would): no yielding at all.
        shared.set(settings(Duration::ZERO));
        assert_eq!(shared.idle_poll_ns.load(Relaxed), 0);
        assert_eq!(shared.settings().idle_poll, Duration::ZERO);
        shared.set(settings(Duration::from_micros(10)));
        assert_eq!(shared.idle_poll_ns.load(Relaxed), 10_000);
    }
}
