//! A service's listening sockets, at least one per worker, and how they move between workers
//! without ever closing.
//!
//! Closing one of a service's `SO_REUSEPORT` sockets resets the connections waiting in its
//! accept queue (the kernel hashed them to that socket and does not move them, unless
//! `net.ipv4.tcp_migrate_req` is set), and for UDP it would lose the sessions of the clients
//! hashed to it. So a socket, once bound, stays open for as long as its service is served:
//! when its worker retires, its task stops and hands the socket back (still open, its queue
//! intact) and another worker takes it over. A worker may thus hold more than one socket of a
//! service; when workers are added, these surplus sockets move to them first, and only the
//! remaining workers get newly bound ones.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc};

use herd_core::model::Protocol;
use socket2::Socket;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::worker::Worker;
use crate::{sys, tcp, udp, ServiceSlot, Shared};

/// A listening socket between two tasks, still open.
#[derive(Debug)]
pub(crate) enum Held {
    Tcp(OwnedFd),
    /// A UDP socket with the sessions of the clients hashed to it.
    Udp(OwnedFd, udp::State),
}

impl Held {
    fn fresh(socket: Socket, protocol: Protocol) -> Held {
        match protocol {
            Protocol::Tcp => Held::Tcp(socket.into()),
            Protocol::Udp => Held::Udp(socket.into(), udp::State::default()),
        }
    }
}

/// What a listener's task is asked to stop with: the channel to hand its socket back through.
pub(crate) type Stop = oneshot::Receiver<mpsc::Sender<Held>>;

/// One listening socket served by a task on one worker.
#[derive(Debug)]
struct Listener {
    /// Index of the worker (in the proxy's list) whose runtime runs the task.
    worker: usize,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<mpsc::Sender<Held>>>,
}

impl Listener {
    /// Registers the socket with `rt`'s reactor and starts serving it there.
    fn start(
        held: Held,
        worker: usize,
        rt: &Handle,
        slot: &Arc<ServiceSlot>,
        shared: &Arc<Shared>,
    ) -> io::Result<Listener> {
        // Registration binds a socket to the reactor of the runtime entered here.
        let _enter = rt.enter();
        let (stop_tx, stop) = oneshot::channel();
        let (slot, shared) = (slot.clone(), shared.clone());
        let task = match held {
            Held::Tcp(fd) => rt.spawn(tcp::accept_loop(sys::register(fd)?, slot, shared, stop)),
            Held::Udp(fd, state) => {
                let sock = tokio::net::UdpSocket::from_std(fd.into())?;
                rt.spawn(udp::serve(sock, slot, shared, state, stop))
            }
        };
        Ok(Listener {
            worker,
            task,
            stop: Some(stop_tx),
        })
    }

    /// Stops the task and takes its socket back, still open. `None`: the task had ended
    /// already.
    ///
    /// Blocks until the task answers: a worker answers at its next look at the task, within
    /// one accept batch.
    fn take_back(mut self) -> Option<Held> {
        let (tx, rx) = mpsc::channel();
        self.stop.take()?.send(tx).ok()?;
        rx.recv().ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Stops accepting (the socket closes with its task, unless it was handed back);
        // connection tasks are separate and run to their end.
        self.task.abort();
    }
}

/// A service's listeners. Dropping it stops accepting for the service.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) slot: Arc<ServiceSlot>,
    listeners: Vec<Listener>,
}

impl Listening {
    /// Starts serving `slot` on `sockets`, freshly bound, spread over `workers`.
    pub(crate) fn start(
        slot: Arc<ServiceSlot>,
        sockets: Vec<Socket>,
        workers: &[Worker],
        shared: &Arc<Shared>,
    ) -> io::Result<Listening> {
        let mut listening = Listening {
            slot,
            listeners: Vec::new(),
        };
        listening.spread(workers, sockets, shared)?;
        Ok(listening)
    }

    /// Listeners per worker, for the first `n` workers.
    fn counts(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for l in &self.listeners {
            if let Some(c) = counts.get_mut(l.worker) {
                *c += 1;
            }
        }
        counts
    }

    /// How many sockets must be bound so that each of `n` workers can have a listener once
    /// the surplus ones (beyond the first of a worker, or on workers past `n`) have moved.
    pub(crate) fn missing(&self, n: usize) -> usize {
        let counts = self.counts(n);
        let idle = counts.iter().filter(|&&c| c == 0).count();
        let surplus = self.listeners.len() - (n - idle);
        idle.saturating_sub(surplus)
    }

    /// Gives each of `workers` a listener: moves those of workers past the list (retiring)
    /// and, where workers still have none, surplus ones of the workers with the most; adds
    /// `fresh` sockets; then places every socket in hand on the worker with the fewest.
    /// No socket is closed on the way. An error (registering with a worker's reactor failed)
    /// leaves the other listeners placed.
    pub(crate) fn spread(
        &mut self,
        workers: &[Worker],
        fresh: Vec<Socket>,
        shared: &Arc<Shared>,
    ) -> io::Result<()> {
        let n = workers.len();
        let (gone, stay) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition::<Vec<_>, _>(|l| l.worker >= n);
        self.listeners = stay;
        let mut held: Vec<Held> = gone.into_iter().filter_map(Listener::take_back).collect();
        let mut counts = self.counts(n);
        let idle = counts.iter().filter(|&&c| c == 0).count();
        while held.len() + fresh.len() < idle {
            let busiest = (0..n).filter(|&w| counts[w] > 1).max_by_key(|&w| counts[w]);
            let Some(w) = busiest else { break };
            let Some(i) = self.listeners.iter().rposition(|l| l.worker == w) else {
                break;
            };
            counts[w] -= 1;
            held.extend(self.listeners.swap_remove(i).take_back());
        }
        let protocol = self.slot.key.protocol;
        held.extend(fresh.into_iter().map(|s| Held::fresh(s, protocol)));
        let mut failed = None;
        for h in held {
            let Some(w) = (0..n).min_by_key(|&w| counts[w]) else {
                break;
            };
            match Listener::start(h, w, &workers[w].rt, &self.slot, shared) {
                Ok(l) => {
                    self.listeners.push(l);
                    counts[w] += 1;
                }
                Err(e) => {
                    tracing::warn!(service = %self.slot.key, error = %e, "cannot move a listener");
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herd_core::api::service_spec;
    use herd_core::model::{Protocol, SchedulerKind, ServiceKey, Timeouts};
    use herd_lb::dataplane::{DataPlane, Settings};
    use herd_lb::service::Service;

    use crate::Proxy;

    /// Listeners per worker of the proxy's one service.
    fn counts(proxy: &Proxy) -> Vec<usize> {
        let state = proxy.state();
        let l = state.listening.values().next().unwrap();
        l.counts(state.workers.len())
    }

    #[test]
    fn a_shrink_keeps_every_socket_and_a_grow_moves_them_back_before_binding() {
        let settings = Settings {
            timeouts: Timeouts::default(),
            connect_timeout: Duration::from_secs(1),
            idle_poll: Duration::ZERO,
        };
        let proxy = Proxy::new(3, settings).unwrap();
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            address,
        };
        let svc = Service::new(service_spec(key, SchedulerKind::Rr), &[], 1);
        proxy.apply(std::slice::from_ref(&svc)).unwrap();
        assert_eq!(counts(&proxy), [1, 1, 1]);
        proxy.set_workers(1).unwrap();
        assert_eq!(counts(&proxy), [3]);
        let missing = |n| proxy.state().listening[&key].missing(n);
        assert_eq!((missing(2), missing(3), missing(5)), (0, 0, 2));
        // Two surplus sockets for three new workers: one more is bound.
        proxy.set_workers(4).unwrap();
        assert_eq!(counts(&proxy), [1, 1, 1, 1]);
        proxy.set_workers(2).unwrap();
        assert_eq!(counts(&proxy), [2, 2]);
        // Services added now get a listener per current worker; after stopping, an apply
        // starts afresh with the current count.
        proxy.stop_accepting();
        proxy.apply(&[svc]).unwrap();
        assert_eq!(counts(&proxy), [1, 1]);
    }
}
