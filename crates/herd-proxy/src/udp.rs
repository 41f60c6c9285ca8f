//! UDP: a session per client address, each with its own connected socket towards the real
//! server, ended after the `udp` idle timeout.
//!
//! With `SO_REUSEPORT` the kernel hashes a client's datagrams to the same worker socket, so each
//! socket keeps its own session table and no table is shared between workers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_lb::service::Conn;
use tokio::net::UdpSocket;

use crate::clock::now_ms;
use crate::{OpenGuard, ServiceSlot, Shared};

const MAX_DATAGRAM: usize = 65536;

#[derive(Debug)]
struct Session {
    backend: UdpSocket,
    last_ms: AtomicU64,
    conn: Conn,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

pub(crate) async fn serve(sock: Arc<UdpSocket>, slot: Arc<ServiceSlot>, shared: Arc<Shared>) {
    let sessions: Sessions = Arc::default();
    // The sessions' reply tasks belong to this task: when the listener is stopped (service
    // removed, daemon draining), dropping the set aborts them, so they neither keep the VIP's
    // socket open nor hold up a drain; clients' next datagrams go to whatever serves the VIP
    // then.
    let mut replies_tasks = tokio::task::JoinSet::new();
    let vip = slot.key.address;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
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
