//! TCP: accept, schedule, connect (retrying on other real servers), forward with splice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use herd_lb::service::{Conn, Service};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::now_ms;
use crate::proxy_protocol::{encode_v2, Transport};
use crate::splice::{forward, Pipe};
use crate::{OpenGuard, ServiceSlot, Shared};

/// Accepts connections on one of the service's SO_REUSEPORT listeners until aborted.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    slot: Arc<ServiceSlot>,
    shared: Arc<Shared>,
) {
    let vip = slot.key.address;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let svc = slot.current();
                let guard = OpenGuard::new(&shared);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    handle(stream, peer, vip, svc, &shared).await;
                });
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning; the
                // backlog holds the clients meanwhile.
                tracing::warn!(service = %slot.key, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to a real server, trying others when a connect fails or times out, so the client
/// never sees a dead real server while another one is available.
async fn connect(
    svc: &Arc<Service>,
    peer: SocketAddr,
    vip: SocketAddr,
    timeout: Duration,
) -> Option<(Conn, TcpStream)> {
    let mut failed: Vec<SocketAddr> = Vec::new();
    loop {
        let conn = match svc.schedule(peer, vip, now_ms(), &failed) {
            Ok(c) => c,
            Err(_) => {
                if failed.is_empty() {
                    tracing::debug!(service = %svc.key(), "no real server available");
                } else {
                    tracing::warn!(service = %svc.key(), ?failed, "every available real server refused the connection");
                }
                return None;
            }
        };
        let addr = conn.dest_addr();
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Some((conn, stream)),
            Ok(Err(e)) => {
                tracing::debug!(real = %addr, error = %e, "connect failed; trying another real server")
            }
            Err(_) => {
                tracing::debug!(real = %addr, "connect timed out; trying another real server")
            }
        }
        conn.close(now_ms());
        failed.push(addr);
    }
}

async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    vip: SocketAddr,
    svc: Arc<Service>,
    shared: &Shared,
) {
    let settings = shared.settings();
    let Some((conn, server)) = connect(&svc, peer, vip, settings.connect_timeout).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if conn.proxy_protocol() {
        let mut hdr = Vec::with_capacity(64);
        encode_v2(peer, vip, Transport::Stream, &mut hdr);
        if write_all(&server, &hdr).await.is_err() {
            conn.close(now_ms());
            return;
        }
    }
    let (mut p_in, mut p_out) = match (Pipe::take(), Pipe::take()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot create pipe");
            conn.close(now_ms());
            return;
        }
    };
    let activity = AtomicU64::new(0);
    let conn_ref = &conn;
    let c2s = forward(&client, &server, &mut p_in, &activity, |n| {
        conn_ref.record_in(1, n)
    });
    let s2c = forward(&server, &client, &mut p_out, &activity, |n| {
        conn_ref.record_out(1, n)
    });
    tokio::pin!(c2s, s2c);
    let tcp_idle = Duration::from_secs(u64::from(settings.timeouts.tcp));
    let fin_idle = Duration::from_secs(u64::from(settings.timeouts.tcp_fin));

    // Phase 1: both directions open, idle timeout `tcp`.
    let first = tokio::select! {
        r = &mut c2s => Some((r, true)),
        r = &mut s2c => Some((r, false)),
        _ = idle(&activity, tcp_idle) => None,
    };
    let Some((result, client_done)) = first else {
        return;
    };
    if result.is_err() {
        // A reset or error on one side ends the connection; dropping both sockets closes them.
        return;
    }
    // Phase 2: half-closed, idle timeout `tcp-fin`, as the kernel's FIN_WAIT.
    conn.half_closed(now_ms());
    if client_done {
        tokio::select! {
            _ = &mut s2c => {},
            _ = idle(&activity, fin_idle) => {},
        }
    } else {
        tokio::select! {
            _ = &mut c2s => {},
            _ = idle(&activity, fin_idle) => {},
        }
    }
}

/// Completes when `activity` has not changed for a whole `period` (so after between one and
/// two periods of silence). One timer per connection, re-armed only once per period.
async fn idle(activity: &AtomicU64, period: Duration) {
    let mut seen = activity.load(Relaxed);
    loop {
        tokio::time::sleep(period).await;
        let now = activity.load(Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Counts how many TCP connections are open, for tests.
#[allow(dead_code)]
pub(crate) fn open(shared: &Shared) -> usize {
    shared.open.load(Relaxed)
}
