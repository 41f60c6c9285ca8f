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
//!
//! The number of workers changes in place too ([`Proxy::resize`], the data plane's `set_workers`): a listening socket,
//! once bound, stays open while its service is served, and moves to another worker when its
//! own retires (closing it would reset the connections in its accept queue); a retired worker
//! finishes its connections, then exits (see `listener.rs` and `worker.rs`).

pub mod clock;
mod listener;
pub mod proxy_protocol;
mod splice;
mod sys;
mod tcp;
mod udp;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herd_core::model::{Protocol, ServiceKey};
use herd_lb::dataplane::{Change, DataPlane, DataPlaneError, Settings};
use herd_lb::service::Service;
use socket2::{Domain, Socket, Type};

use crate::listener::Listening;
use crate::worker::{Numbers, Worker};

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
        yield_for(ns, || start.elapsed(), std::thread::yield_now);
    }
}

/// Calls `yield_now` until `elapsed` reaches `ns` nanoseconds (none at all for 0); returns
/// how many times it yielded. The clock and the yield are arguments so that tests can count.
fn yield_for(ns: u64, mut elapsed: impl FnMut() -> Duration, mut yield_now: impl FnMut()) -> u64 {
    let mut passes = 0;
    while ns > 0 && elapsed().as_nanos() < u128::from(ns) {
        yield_now();
        passes += 1;
    }
    passes
}

fn nanos(d: Duration) -> u64 {
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

/// The userspace proxy data plane.
///
/// Each worker is an OS thread running its own single-threaded tokio runtime; every service has
/// one `SO_REUSEPORT` listener per worker (or more, see `listener.rs`), served on that worker.
/// A connection lives its whole life on the worker that accepted it: no task migrates, and no
/// scheduler state is shared between workers (a single-threaded runtime also wakes tasks more
/// cheaply than the work-stealing one).
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    numbers: Arc<Numbers>,
    state: Mutex<State>,
}

/// The workers and what they listen on, changed together.
#[derive(Debug)]
struct State {
    workers: Vec<Worker>,
    listening: HashMap<ServiceKey, Listening>,
}

impl Proxy {
    /// Starts `workers` worker threads (at least one).
    pub fn new(workers: usize, settings: Settings) -> std::io::Result<Proxy> {
        let shared = Arc::new(Shared::new(settings));
        let numbers = Arc::new(Numbers::default());
        let workers = (0..workers.max(1))
            .map(|_| Worker::start(&shared, &numbers))
            .collect::<std::io::Result<_>>()?;
        Ok(Proxy {
            shared,
            numbers,
            state: Mutex::new(State {
                workers,
                listening: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of workers serving (not counting retired ones still finishing their
    /// connections).
    fn serving(&self) -> usize {
        self.state().workers.len()
    }

    /// Changes the number of workers (at least one) in place, without dropping a connection:
    /// what `lb.workers` does on a reload.
    ///
    /// Growing starts the new worker threads and gives each a listener for every service:
    /// first the surplus listening sockets of workers that hold more than one, then newly
    /// bound ones. All of these are bound before anything changes; if one fails (the error
    /// names the service), the worker count stays as it was.
    ///
    /// Shrinking retires the last workers: their listeners stop and hand their sockets, still
    /// open and with the connections waiting in their accept queues, to the remaining workers.
    /// UDP sessions move along with their listening socket (each client keeps its real
    /// server). A retired thread runs its open TCP connections to their end, then exits.
    ///
    /// Either way no listening socket closes, so new connections are never refused or reset,
    /// and open ones carry on where they are. Blocks until the moved listeners' tasks have
    /// answered (one accept batch each).
    fn resize(&self, n: usize) -> std::io::Result<()> {
        let n = n.max(1);
        let mut state = self.state();
        let State { workers, listening } = &mut *state;
        if n == workers.len() {
            return Ok(());
        }
        let mut fresh = HashMap::new();
        let mut retiring = Vec::new();
        if n > workers.len() {
            // Everything that can fail comes first; dropping the new workers retires them.
            let started = (workers.len()..n)
                .map(|_| Worker::start(&self.shared, &self.numbers))
                .collect::<std::io::Result<Vec<_>>>()?;
            for (key, l) in listening.iter() {
                let sockets = (0..l.missing(n))
                    .map(|_| bind_one(key).map_err(|e| cannot_listen(key, e)))
                    .collect::<std::io::Result<Vec<_>>>()?;
                fresh.insert(*key, sockets);
            }
            workers.extend(started);
        } else {
            retiring = workers.split_off(n);
        }
        let mut failed = Ok(());
        for (key, l) in listening.iter_mut() {
            let sockets = fresh.remove(key).unwrap_or_default();
            if let Err(e) = l.spread(workers, sockets, &self.shared) {
                failed = failed.and(Err(e));
            }
        }
        // Only now that their listeners have moved away.
        drop(retiring);
        failed
    }

    fn bind(&self, key: &ServiceKey, workers: usize) -> Result<Vec<Socket>, DataPlaneError> {
        let mut out = Vec::with_capacity(workers);
        for _ in 0..workers {
            out.push(bind_one(key).map_err(|source| DataPlaneError::Bind {
                service: *key,
                source,
            })?);
        }
        Ok(out)
    }
}

/// A bind error as `apply` words it, kept as an I/O error.
fn cannot_listen(key: &ServiceKey, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen on {key}: {e}"))
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
        let mut state = self.state();
        let State { workers, listening } = &mut *state;
        // Bind every new listener first; only when all succeeded does anything change.
        let mut fresh = Vec::new();
        for svc in services {
            let key = svc.key();
            if !listening.contains_key(&key) {
                fresh.push((svc.clone(), self.bind(&key, workers.len())?));
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
            let l = Listening::start(slot.clone(), sockets, workers, &self.shared)
                .map_err(|e| internal(&slot.key, e))?;
            listening.insert(slot.key, l);
        }
        Ok(())
    }

    /// Nothing to do: a connection asks its service for a real server when it starts, so it
    /// sees every change made before.
    fn changed(&self, _service: &Arc<Service>, _change: Change) {}

    /// See [`Proxy::resize`].
    fn set_workers(&self, n: usize) -> std::io::Result<()> {
        self.resize(n)
    }

    fn workers(&self) -> usize {
        self.serving()
    }

    fn set_settings(&self, settings: Settings) {
        self.shared.set(settings);
    }

    fn stop_accepting(&self) {
        self.state().listening.clear();
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

    /// What `before_sleep` does with the setting it reads: yield passes until the clock has
    /// advanced by `ns` (a fake clock that advances `step` per reading). Also the clock
    /// readings it made.
    fn passes(ns: u64, step: Duration) -> (u64, u32) {
        use std::cell::Cell;
        let (now, readings, yielded) = (Cell::new(Duration::ZERO), Cell::new(0), Cell::new(0));
        let passes = yield_for(
            ns,
            || {
                readings.set(readings.get() + 1);
                now.get()
            },
            || {
                yielded.set(yielded.get() + 1);
                now.set(now.get() + step);
            },
        );
        assert_eq!(passes, yielded.get());
        (passes, readings.get())
    }

    #[test]
    fn a_worker_yields_for_idle_poll_before_sleeping_and_reloads_change_it() {
        let shared = Shared::new(settings(Duration::from_millis(20)));
        let ns = || shared.idle_poll_ns.load(Relaxed);
        assert_eq!(ns(), 20_000_000);
        // 1 ms per pass: 20 passes, then the 21st reading shows 20 ms have passed.
        assert_eq!(passes(ns(), Duration::from_millis(1)), (20, 21));
        // Set to 0 (as a reload would): no yielding at all, not even a clock reading.
        shared.set(settings(Duration::ZERO));
        assert_eq!(ns(), 0);
        assert_eq!(shared.settings().idle_poll, Duration::ZERO);
        assert_eq!(passes(ns(), Duration::from_millis(1)), (0, 0));
        shared.set(settings(Duration::from_micros(10)));
        assert_eq!(ns(), 10_000);
        assert_eq!(passes(ns(), Duration::from_micros(3)), (4, 5));
        // The real clock: returns once the time has passed (no bound on how long after).
        shared.before_sleep();
    }
}
