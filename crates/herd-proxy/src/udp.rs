//! UDP: a session per client address, each with its own connected socket towards the real
//! server, ended after the `udp` idle timeout.
//!
//! With `SO_REUSEPORT` the kernel hashes a client's datagrams to the same worker socket, so each
//! socket keeps its own session table and no table is shared between workers. When the socket
//! moves to another worker (its own retired), its sessions move with it: their reply tasks
//! stop, and the sockets towards the real servers leave the old worker's reactor and join the
//! new one's, so a client's datagrams keep going to the same real server and the old worker
//! has nothing left to run.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use herd_lb::service::Conn;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::listener::{Held, Stop};
use crate::{OpenGuard, ServiceSlot, Shared};

const MAX_DATAGRAM: usize = 65536;

#[derive(Debug)]
struct Session {
    backend: UdpSocket,
    last_ms: AtomicU64,
    conn: Conn,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

/// What a reply task returns when its session moves: the client and the session's count in
/// `open_connections`.
type Paused = Option<(SocketAddr, OpenGuard)>;

/// A UDP listener's sessions on their way to another worker, out of any reactor.
#[derive(Debug, Default)]
pub(crate) struct State {
    moving: Vec<Moving>,
}

#[derive(Debug)]
struct Moving {
    peer: SocketAddr,
    backend: std::net::UdpSocket,
    last_ms: u64,
    conn: Conn,
    guard: OpenGuard,
}

/// A listening socket's sessions and their reply tasks.
#[derive(Debug)]
struct Table {
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    sessions: Sessions,
    /// The sessions' reply tasks belong to the listener's task: when the listener is stopped
    /// (service removed, daemon draining), dropping the set aborts them, so they neither keep
    /// the VIP's socket open nor hold up a drain; clients' next datagrams go to whatever serves
    /// the VIP then.
    replies: JoinSet<Paused>,
    /// Set to tell the reply tasks to stop and return their sessions, which are moving.
    moving: watch::Sender<bool>,
}

impl Table {
    fn get(&self, peer: SocketAddr) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned()
    }

    /// Adds a session and starts relaying its real server's answers.
    fn add(&mut self, peer: SocketAddr, sess: Session, guard: OpenGuard) -> Arc<Session> {
        let s = Arc::new(sess);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, s.clone());
        while self.replies.try_join_next().is_some() {}
        self.replies.spawn(replies(
            s.clone(),
            self.sock.clone(),
            peer,
            self.sessions.clone(),
            self.shared.clone(),
            guard,
            self.moving.subscribe(),
        ));
        s
    }

    /// Takes over sessions that moved here: their sockets join this worker's reactor.
    fn resume(&mut self, state: State) {
        for m in state.moving {
            match UdpSocket::from_std(m.backend) {
                Ok(backend) => {
                    let sess = Session {
                        backend,
                        last_ms: AtomicU64::new(m.last_ms),
                        conn: m.conn,
                    };
                    self.add(m.peer, sess, m.guard);
                }
                // Dropping the connection ends the session; the client's next datagram
                // schedules afresh.
                Err(e) => {
                    tracing::debug!(client = %m.peer, error = %e, "cannot move a udp session")
                }
            }
        }
    }

    /// Stops the reply tasks and takes the listening socket and the sessions out of this
    /// worker's reactor, still open, for another worker to take over.
    async fn pause(mut self) -> Option<(OwnedFd, State)> {
        self.moving.send_replace(true);
        let mut guards = HashMap::new();
        while let Some(ended) = self.replies.join_next().await {
            if let Ok(Some((peer, guard))) = ended {
                guards.insert(peer, guard);
            }
        }
        // The reply tasks have ended: the table holds the only reference to each session left.
        let table = std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        let mut state = State::default();
        for (peer, sess) in table {
            let (Some(guard), Ok(sess)) = (guards.remove(&peer), Arc::try_unwrap(sess)) else {
                continue;
            };
            match sess.backend.into_std() {
                Ok(backend) => state.moving.push(Moving {
                    peer,
                    backend,
                    last_ms: sess.last_ms.into_inner(),
                    conn: sess.conn,
                    guard,
                }),
                Err(e) => tracing::debug!(client = %peer, error = %e, "cannot move a udp session"),
            }
        }
        let fd = match Arc::try_unwrap(self.sock) {
            Ok(sock) => sock.into_std().map(OwnedFd::from),
            // Not expected (only the reply tasks share it); a duplicate serves as well.
            Err(sock) => sock.as_fd().try_clone_to_owned(),
        };
        match fd {
            Ok(fd) => Some((fd, state)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand over a udp listener");
                None
            }
        }
    }
}

/// Serves one of the service's SO_REUSEPORT sockets until aborted, or until stopped: then it
/// hands the socket back, still open, with its sessions.
pub(crate) async fn serve(
    sock: UdpSocket,
    slot: Arc<ServiceSlot>,
    shared: Arc<Shared>,
    state: State,
    mut stop: Stop,
) {
    let mut table = Table {
        sock: Arc::new(sock),
        shared: shared.clone(),
        sessions: Arc::default(),
        replies: JoinSet::new(),
        moving: watch::channel(false).0,
    };
    table.resume(state);
    let vip = slot.key.address;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            biased;
            to = &mut stop => Err(to.ok()),
            r = table.sock.recv_from(&mut buf) => Ok(r),
        };
        let (n, peer) = match received {
            Err(to) => return hand_back(table, to).await,
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::debug!(service = %slot.key, error = %e, "udp receive failed");
                continue;
            }
        };
        let sess = match table.get(peer) {
            Some(s) => s,
            None => match open_session(&slot, peer, vip).await {
                Some(s) => table.add(peer, s, OpenGuard::new(&shared)),
                // No real server: the datagram is dropped, as the kernel drops it.
                None => continue,
            },
        };
        sess.last_ms.store(now_ms(), Relaxed);
        if sess.backend.send(&buf[..n]).await.is_ok() {
            sess.conn.record_in(1, n as u64);
        }
    }
}

/// Hands the socket and its sessions to whoever stopped the task.
async fn hand_back(table: Table, to: Option<mpsc::Sender<Held>>) {
    let Some(to) = to else { return };
    if let Some((fd, state)) = table.pause().await {
        let _ = to.send(Held::Udp(fd, state));
    }
}

async fn open_session(slot: &ServiceSlot, peer: SocketAddr, vip: SocketAddr) -> Option<Session> {
    let svc = slot.current();
    let conn = svc.schedule(peer, vip, now_ms(), &[]).ok()?;
    let dest = conn.dest_addr();
    let local: SocketAddr = if dest.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let backend = UdpSocket::bind(local).await.ok()?;
    if let Err(e) = backend.connect(dest).await {
        tracing::debug!(real = %dest, error = %e, "udp connect failed");
        return None;
    }
    Some(Session {
        backend,
        last_ms: AtomicU64::new(now_ms()),
        conn,
    })
}

/// Relays the real server's answers to the client until the session has been idle for the
/// `udp` timeout (or the real server refuses), then forgets it; or until the session moves to
/// another worker (`moving`), then returns it.
async fn replies(
    sess: Arc<Session>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    sessions: Sessions,
    shared: Arc<Shared>,
    guard: OpenGuard,
    mut moving: watch::Receiver<bool>,
) -> Paused {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle = Duration::from_secs(u64::from(shared.settings().timeouts.udp.max(1)));
        tokio::select! {
            // Between two datagrams: nothing is lost (a `recv` cancelled is cancelled before it
            // took a datagram), and the session goes on where its socket goes.
            Ok(()) = moving.changed() => return Some((peer, guard)),
            r = sess.backend.recv(&mut buf) => match r {
                Ok(n) => {
                    sess.last_ms.store(now_ms(), Relaxed);
                    if sock.send_to(&buf[..n], peer).await.is_ok() {
                        sess.conn.record_out(1, n as u64);
                    }
                }
                // ICMP port unreachable from the real server ends the session; the client's
                // next datagram schedules afresh.
                Err(_) => break,
            },
            _ = tokio::time::sleep(idle) => {
                let quiet = now_ms().saturating_sub(sess.last_ms.load(Relaxed));
                if quiet >= idle.as_millis() as u64 {
                    break;
                }
            }
        }
    }
    sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&peer);
    None
}
