//! UDP: a session per client address, each with its own connected socket towards the real
//! server, ended after the `udp` idle timeout.
//!
//! With `SO_REUSEPORT` the kernel hashes a client's datagrams to the same worker socket, so each
//! socket keeps its own session table and no table is shared between workers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use herd_lb::service::Conn;
use tokio::net::UdpSocket;
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

/// A UDP listener's sessions: what moves with its socket when its worker retires.
#[derive(Debug, Default)]
pub(crate) struct State {
    sessions: Sessions,
    /// The sessions' reply tasks belong to the listener's task: when the listener is stopped
    /// (service removed, daemon draining), dropping the set aborts them, so they neither keep
    /// the VIP's socket open nor hold up a drain; clients' next datagrams go to whatever serves
    /// the VIP then.
    ///
    /// When the socket moves to another worker, the reply tasks stay where they run (on the
    /// retired worker, which lives on until the last of them ends) and their set moves along:
    /// the sessions continue, answered from the retired worker, fed from the new one.
    replies: JoinSet<()>,
}

pub(crate) async fn serve(
    sock: Arc<UdpSocket>,
    slot: Arc<ServiceSlot>,
    shared: Arc<Shared>,
    state: State,
    mut stop: Stop,
) {
    let State {
        sessions,
        replies: mut replies_tasks,
    } = state;
    let vip = slot.key.address;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            biased;
            to = &mut stop => {
                hand_back(&sock, &slot, State { sessions, replies: replies_tasks }, to.ok());
                return;
            }
            r = sock.recv_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(service = %slot.key, error = %e, "udp receive failed");
                continue;
            }
        };
        let existing = sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .cloned();
        let sess = match existing {
            Some(s) => s,
            None => match open_session(&slot, peer, vip).await {
                Some(s) => {
                    let s = Arc::new(s);
                    sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(peer, s.clone());
                    let guard = OpenGuard::new(&shared);
                    while replies_tasks.try_join_next().is_some() {}
                    replies_tasks.spawn(replies(
                        s.clone(),
                        sock.clone(),
                        peer,
                        sessions.clone(),
                        shared.clone(),
                        guard,
                    ));
                    s
                }
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

/// Hands the socket (a duplicate of its descriptor, as the reply tasks hold the original) and
/// the sessions to whoever stopped the task. Without a free descriptor the socket cannot be
/// handed over: it closes, and its sessions end.
fn hand_back(sock: &UdpSocket, slot: &ServiceSlot, state: State, to: Option<mpsc::Sender<Held>>) {
    let Some(to) = to else { return };
    match sock.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let _ = to.send(Held::Udp(fd, state));
        }
        Err(e) => {
            tracing::warn!(service = %slot.key, error = %e, "cannot hand over a udp listener")
        }
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
/// `udp` timeout (or the real server refuses), then forgets it.
async fn replies(
    sess: Arc<Session>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    sessions: Sessions,
    shared: Arc<Shared>,
    _guard: OpenGuard,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let idle = Duration::from_secs(u64::from(shared.settings().timeouts.udp.max(1)));
        tokio::select! {
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
}
