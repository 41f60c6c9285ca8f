//! TCP: accept, schedule, connect (retrying on other real servers), forward.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_lb::dataplane::Settings;
use herd_lb::service::{Conn, Service};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use tokio::io::unix::AsyncFdReadyGuard;

use crate::clock::now_ms;
use crate::listener::{Held, Stop};
use crate::proxy_protocol::{encode_v2, Transport};
use crate::splice::{forward, read_ready, write_all, write_ready, Buf, Flow, Sock};
use crate::{OpenGuard, ServiceSlot, Shared};

/// Most connections accepted per wake-up before the connections already accepted get to run
/// (haproxy's `tune.maxaccept`). Accepting a deep backlog in one go queues every new client
/// behind all the others: with 1000 clients in `Connection: close` mode, p99 was 150 ms without a
/// cap and 200 ms with 16, against 25–45 ms with 4 (HAProxy: 22–50 ms on the same runs).
///
/// Tried and not kept: starting each accepted connection in the accept loop itself (reading
/// the request, scheduling, connecting, sending), up to 64 per wake-up, as nginx does. It
/// narrowed the latencies of new connections when the proxy shares its CPU with clients and
/// servers, but keep-alive connections on the same worker lost to a stream of new ones:
/// their p99 rose by 7–63% and their share of requests fell (bench/README.md, 2026-12-06).
const MAX_ACCEPT: usize = 4;

/// Accepts connections on one of the service's SO_REUSEPORT listeners until aborted, or until
/// stopped: then it hands the listening socket back, still open, with the connections waiting
/// in its queue.
pub(crate) async fn accept_loop(
    listener: Sock,
    slot: Arc<ServiceSlot>,
    shared: Arc<Shared>,
    mut stop: Stop,
) {
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        let stopped = tokio::select! {
            biased;
            to = &mut stop => to.ok(),
            ready = read_ready(&listener) => {
                let Ok(g) = ready else {
                    return;
                };
                accept_batch(g, &slot, &shared, &mut backoff).await;
                continue;
            }
        };
        // Deregistered from this worker's reactor; the descriptor stays open.
        if let Some(to) = stopped {
            let _ = to.send(Held::Tcp(listener.into_inner()));
        }
        return;
    }
}

/// Accepts what the listener has queued, up to [`MAX_ACCEPT`] connections, and spawns a task
/// for each on this worker.
async fn accept_batch(
    mut g: AsyncFdReadyGuard<'_, OwnedFd>,
    slot: &ServiceSlot,
    shared: &Arc<Shared>,
    backoff: &mut herd_core::backoff::Backoff,
) {
    let vip = slot.key.address;
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    for accepted in 0.. {
        if accepted == MAX_ACCEPT {
            // The backlog may hold more: keep the readiness and let others run first.
            drop(g);
            tokio::task::yield_now().await;
            return;
        }
        match g
            .try_io(|fd| rustix::net::acceptfrom_with(fd.get_ref(), flags).map_err(io::Error::from))
        {
            Ok(Ok((fd, addr))) => {
                backoff.succeeded();
                let Some(peer) = addr.and_then(|a| SocketAddr::try_from(a).ok()) else {
                    continue;
                };
                let svc = slot.current();
                let guard = OpenGuard::new(shared);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    if let Some(started) = Started::start(fd, peer, vip, &svc) {
                        handle(started, vip, svc, &shared).await;
                    }
                });
            }
            Ok(Err(e)) if is_exhaustion(&e) => {
                // Out of file descriptors or memory: back off (10 ms, growing to 100 ms)
                // instead of spinning; the backlog holds the clients meanwhile.
                tracing::warn!(service = %slot.key, error = %e, "accept failed");
                tokio::time::sleep(backoff.failed()).await;
                return;
            }
            Ok(Err(e)) => {
                // One connection's problem (reset before it was accepted, a protocol
                // error): skip it, the next one is fine.
                tracing::debug!(service = %slot.key, error = %e, "accept failed");
            }
            Err(_would_block) => return,
        }
    }
}

/// Does this `accept` error mean the process or the system is out of a resource (so that
/// retrying at once would spin), rather than a problem of one connection?
fn is_exhaustion(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let exhausted = [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM];
    e.raw_os_error()
        .is_some_and(|n| exhausted.contains(&Errno::from_raw_os_error(n)))
}

/// A connection to a real server, opened and maybe not yet registered with the reactor.
#[derive(Debug)]
struct Opened {
    fd: OwnedFd,
    /// How much of the first bytes `send` took.
    sent: usize,
    /// The handshake is known to be complete (a `send` succeeded).
    connected: bool,
}

/// Opens a non-blocking connection to `addr` and sends `first` (what the client has sent so
/// far) as far as the socket takes it, without the reactor; [`Opened::settle`] does the rest.
///
/// Over loopback and fast LANs the handshake often completes inside `connect(2)` itself, so
/// the first bytes are sent at once: a `send` that succeeds proves the connection is up, and
/// the round through the reactor to learn that (EPOLLOUT) is skipped. Only a `send` that
/// answers `EAGAIN` (still connecting) or an empty `first` waits for EPOLLOUT.
fn open(addr: SocketAddr, first: &[u8]) -> io::Result<Opened> {
    let family = if addr.is_ipv6() {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let mut opened = Opened {
        fd,
        sent: 0,
        connected: false,
    };
    if !first.is_empty() {
        match rustix::net::send(&opened.fd, first, SendFlags::NOSIGNAL) {
            Ok(n) => {
                opened.sent = n;
                opened.connected = true;
            }
            // Still in SYN_SENT.
            Err(rustix::io::Errno::AGAIN) => {}
            // Refused or unreachable: the handshake failed already.
            Err(e) => return Err(e.into()),
        }
    }
    Ok(opened)
}

impl Opened {
    /// Registers the socket, waits for the handshake if `send` could not tell, and sends
    /// what of `first` is left; returns once the connection is established and `first` is on
    /// its way.
    async fn settle(self, first: &[u8]) -> io::Result<Sock> {
        let rest = &first[self.sent..];
        let connected = self.connected;
        let sock = crate::sys::register(self.fd)?;
        if !connected {
            let mut g = write_ready(&sock).await?;
            // A failed connect reports EPOLLHUP (with EPOLLERR) alongside its EPOLLOUT, which the
            // write readiness shows as "write closed"; only then is SO_ERROR worth a system call,
            // to say why.
            if g.ready().is_write_closed() {
                return Err(match rustix::net::sockopt::socket_error(sock.get_ref())? {
                    Err(e) => e.into(),
                    Ok(()) => io::Error::from(io::ErrorKind::ConnectionRefused),
                });
            }
            g.retain_ready();
        }
        write_all(&sock, rest).await?;
        Ok(sock)
    }
}

/// A new connection after its first, synchronous steps ([`Started::start`]).
#[derive(Debug)]
struct Started {
    client: OwnedFd,
    peer: SocketAddr,
    /// What the client had sent by the accept (`n` bytes); later the buffer the server's
    /// reply is read into.
    first: Buf,
    n: usize,
    /// When the client had sent something: the real server chosen for it, and the connection
    /// to it opened with those bytes.
    attempt: Option<Attempt>,
    /// The PROXY protocol header followed by those bytes, if the real server needs it.
    with_header: Option<Vec<u8>>,
}

/// A real server chosen for a connection, and the connection to it opened or failed.
#[derive(Debug)]
struct Attempt {
    conn: Conn,
    opened: io::Result<Opened>,
}

impl Attempt {
    /// Asks the scheduler for a real server (none of `failed`) and opens the connection to
    /// it with the client's bytes. `None`: no real server is available.
    fn begin(
        svc: &Arc<Service>,
        peer: SocketAddr,
        vip: SocketAddr,
        client_bytes: &[u8],
        with_header: &mut Option<Vec<u8>>,
        failed: &[SocketAddr],
    ) -> Option<Attempt> {
        let conn = svc.schedule(peer, vip, now_ms(), failed).ok()?;
        let opened = open(
            conn.dest_addr(),
            first_bytes(&conn, peer, vip, client_bytes, with_header),
        );
        Some(Attempt { conn, opened })
    }
}

impl Started {
    /// The first thing a connection's task does: reads what the client has sent, picks a real
    /// server and opens the connection to it with those bytes, all before the client socket
    /// is registered with the reactor ([`handle`] goes on from there). `None`: the client
    /// reset the connection already, there is nothing to forward.
    ///
    /// Most clients send their request right after the handshake, so it is usually queued by
    /// the time the connection is accepted, and goes out with the connect. If the client has
    /// sent nothing yet, or speaks second, the task waits for whoever speaks first. An end of
    /// stream read here is read again there, as EOF stays readable.
    fn start(
        client: OwnedFd,
        peer: SocketAddr,
        vip: SocketAddr,
        svc: &Arc<Service>,
    ) -> Option<Started> {
        let mut first = Buf::take();
        let n = match rustix::net::recv(&client, first.get(), RecvFlags::empty()) {
            Ok((n, _)) => n,
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(_) => return None,
        };
        let mut with_header = None;
        // No real server available: `connect` asks again and says so.
        let attempt = (n > 0)
            .then(|| Attempt::begin(svc, peer, vip, &first.get()[..n], &mut with_header, &[]))
            .flatten();
        Some(Started {
            client,
            peer,
            first,
            n,
            attempt,
            with_header,
        })
    }
}

/// What goes to the real server first: the client's bytes, behind a PROXY protocol header if
/// the real server wants one (built on first use, then kept for retries on other servers).
fn first_bytes<'a>(
    conn: &Conn,
    peer: SocketAddr,
    vip: SocketAddr,
    client_bytes: &'a [u8],
    with_header: &'a mut Option<Vec<u8>>,
) -> &'a [u8] {
    if !conn.proxy_protocol() {
        return client_bytes;
    }
    with_header.get_or_insert_with(|| {
        let mut v = Vec::with_capacity(64 + client_bytes.len());
        encode_v2(peer, vip, Transport::Stream, &mut v);
        v.extend_from_slice(client_bytes);
        v
    })
}

/// Connects to a real server and sends it the client's first bytes, trying others when a
/// connect fails or times out, so the client never sees a dead real server while another one
/// is available. `attempt` is one [`Started::start`] began, `with_header` what it built for it
/// from the same `client_bytes` (kept for the retries of this call only: the next call may
/// have more client bytes).
#[allow(clippy::too_many_arguments)]
async fn connect(
    svc: &Arc<Service>,
    peer: SocketAddr,
    vip: SocketAddr,
    timeout: Duration,
    client_bytes: &[u8],
    mut with_header: Option<Vec<u8>>,
    mut attempt: Option<Attempt>,
    failed: &mut Vec<SocketAddr>,
) -> Option<(Conn, Sock)> {
    loop {
        let next = attempt
            .take()
            .or_else(|| Attempt::begin(svc, peer, vip, client_bytes, &mut with_header, failed));
        let Some(Attempt { conn, opened }) = next else {
            if failed.is_empty() {
                tracing::debug!(service = %svc.key(), "no real server available");
            } else {
                tracing::warn!(service = %svc.key(), ?failed, "every available real server refused the connection");
            }
            return None;
        };
        let addr = conn.dest_addr();
        let bytes = first_bytes(&conn, peer, vip, client_bytes, &mut with_header);
        let settled = match opened {
            Ok(o) => tokio::time::timeout(timeout, o.settle(bytes)).await,
            Err(e) => Ok(Err(e)),
        };
        match settled {
            Ok(Ok(sock)) => return Some((conn, sock)),
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

async fn handle(started: Started, vip: SocketAddr, svc: Arc<Service>, shared: &Shared) {
    let settings = shared.settings();
    let Started {
        client,
        peer,
        mut first,
        mut n,
        mut attempt,
        mut with_header,
    } = started;
    // TCP_NODELAY comes from the listener: Linux copies it into accepted sockets.
    let Ok(client) = crate::sys::register(client) else {
        return;
    };
    let mut failed = Vec::new();
    // The client's first bytes stay in their buffer until the real server answers (that
    // buffer is what the server's reply is read into): a server that resets the connection
    // before any reply — one stopping with connections still in its accept queue does — has
    // the request taken back and sent to another real server, as nginx's `proxy_next_upstream
    // error` does. Only while the client has sent nothing more.
    let back: Mutex<Option<Buf>> = Mutex::new(None);
    loop {
        let Some((conn, server)) = connect(
            &svc,
            peer,
            vip,
            settings.connect_timeout,
            &first.get()[..n],
            with_header.take(),
            attempt.take(),
            &mut failed,
        )
        .await
        else {
            return;
        };
        if n > 0 {
            conn.record_in(1, n as u64);
        } else if failed.is_empty() {
            // The client had sent nothing by the accept: see who speaks first. If it is the
            // client, its first bytes are read here, so that they too can be taken back.
            if let Some(k) = first_words(&client, &server, &mut first, &settings).await {
                n = k;
                conn.record_in(1, n as u64);
            }
        }
        let keep = (n > 0).then_some(first);
        let end = pump(&client, &server, &conn, shared, keep, &back).await;
        let addr = conn.dest_addr();
        conn.close(now_ms());
        let again = back.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (end, again) {
            (End::ResetBeforeReply, Some(buf)) => {
                tracing::debug!(real = %addr, "reset before any reply; trying another real server");
                failed.push(addr);
                first = buf;
            }
            _ => return,
        }
    }
}

/// Waits until the client or the server speaks. When the client does, reads its bytes into
/// `buf` and sends them on; returns how many. `None`: the server spoke first, the client
/// closed, or nothing came within the idle timeout (the forwarding loop sorts these out).
async fn first_words(
    client: &Sock,
    server: &Sock,
    buf: &mut Buf,
    settings: &Settings,
) -> Option<usize> {
    let idle = Duration::from_secs(u64::from(settings.timeouts.tcp.max(1)));
    let client_first = tokio::time::timeout(idle, async {
        tokio::select! {
            biased;
            _ = read_ready(server) => false,
            _ = read_ready(client) => true,
        }
    })
    .await
    .unwrap_or(false);
    if !client_first {
        return None;
    }
    let n = match rustix::net::recv(client.get_ref(), buf.get(), RecvFlags::empty()) {
        Ok((n, _)) if n > 0 => n,
        _ => return None,
    };
    write_all(server, &buf.get()[..n]).await.ok()?;
    Some(n)
}

/// How a connection's forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    /// The real server reset the connection before sending anything, and the client has sent
    /// nothing after its first bytes: the request may go to another real server.
    ResetBeforeReply,
}

/// Forwards both directions until the connection ends: both sides closed, an error, or an
/// idle timeout (`tcp` while both directions are open, `tcp-fin` once one side has closed).
/// `first` holds the client's first bytes (already sent) and is the buffer the server's reply
/// is read into; a reset before any reply puts it back into `back`.
async fn pump(
    client: &Sock,
    server: &Sock,
    conn: &Conn,
    shared: &Shared,
    first: Option<Buf>,
    back: &Mutex<Option<Buf>>,
) -> End {
    let flow = Flow::default();
    let activity = &flow.activity;
    let retry = first.is_some().then_some(back);
    let c2s = forward(client, server, &flow, |n| conn.record_in(1, n), None, None);
    let s2c = forward(
        server,
        client,
        &flow,
        |n| conn.record_out(1, n),
        first,
        retry,
    );
    tokio::pin!(c2s, s2c);
    // Read at every period, so `ipvsadm --set` and reloads reach open connections too.
    let tcp_idle = || Duration::from_secs(u64::from(shared.settings().timeouts.tcp.max(1)));
    let fin_idle = || Duration::from_secs(u64::from(shared.settings().timeouts.tcp_fin.max(1)));

    // Phase 1: both directions open.
    let first = tokio::select! {
        r = &mut c2s => Some((r, true)),
        r = &mut s2c => Some((r, false)),
        _ = idle(activity, tcp_idle) => None,
    };
    let Some((result, client_done)) = first else {
        return End::Done;
    };
    if let Err(e) = result {
        // A reset or error on one side ends the connection; dropping both sockets closes them.
        // The server's reset before anything moved either way (the client's first bytes went
        // out with the connect, outside the forwarding) can be retried elsewhere.
        let untouched = activity.load(Relaxed) == 0;
        return if !client_done && untouched && e.kind() == io::ErrorKind::ConnectionReset {
            End::ResetBeforeReply
        } else {
            End::Done
        };
    }
    // Phase 2: half-closed, as the kernel's FIN_WAIT.
    conn.half_closed(now_ms());
    if client_done {
        tokio::select! {
            _ = &mut s2c => {},
            _ = idle(activity, fin_idle) => {},
        }
    } else {
        tokio::select! {
            _ = &mut c2s => {},
            _ = idle(activity, fin_idle) => {},
        }
    }
    End::Done
}

/// Completes when `activity` has not changed for a whole period (so after between one and
/// two periods of silence). One timer per connection, re-armed only once per period.
async fn idle(activity: &AtomicU64, period: impl Fn() -> Duration) {
    let mut seen = activity.load(Relaxed);
    loop {
        tokio::time::sleep(period()).await;
        let now = activity.load(Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use rustix::io::Errno;

    use super::*;

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use herd_core::api::service_spec;
    use herd_core::model::{Forward, Protocol, RealSpec, SchedulerKind, ServiceKey};

    /// A loopback port that refuses connections: bound, not listening, and kept bound (so no
    /// other socket can take it) while the returned socket lives.
    fn refusing() -> (socket2::Socket, SocketAddr) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        (s, addr)
    }

    /// A `fo` service (the heaviest available real server first) on `vip`.
    fn fo(vip: SocketAddr, reals: &[(SocketAddr, u32)], proxy_protocol: bool) -> Arc<Service> {
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            address: vip,
        };
        let mut spec = service_spec(key, SchedulerKind::Fo);
        spec.proxy_protocol = proxy_protocol;
        let reals: Vec<RealSpec> = reals
            .iter()
            .map(|&(address, weight)| RealSpec {
                address,
                weight,
                upper_threshold: 0,
                lower_threshold: 0,
                forward: Forward::Masq,
            })
            .collect();
        Service::new(spec, &reals, 1)
    }

    /// Runs a connection's task to its end (at most 10 s).
    fn run(started: Started, vip: SocketAddr, svc: &Arc<Service>) {
        let shared = Arc::new(Shared::new(Settings {
            timeouts: herd_core::model::Timeouts::default(),
            connect_timeout: Duration::from_secs(2),
            idle_poll: Duration::ZERO,
        }));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                handle(started, vip, svc.clone(), &shared),
            )
            .await
        })
        .expect("the connection ends once both sides are done");
    }

    /// The listener clients connect to, and its address (the VIP).
    fn front() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let vip = l.local_addr().unwrap();
        (l, vip)
    }

    /// Accepts a connection as the accept loop does (non-blocking); with `request`, first
    /// waits until the client's bytes are queued on it, as they usually are.
    fn accept(l: &TcpListener, request: bool) -> (OwnedFd, SocketAddr) {
        let (s, peer) = l.accept().unwrap();
        if request {
            s.peek(&mut [0u8; 1]).unwrap();
        }
        s.set_nonblocking(true).unwrap();
        (OwnedFd::from(s), peer)
    }

    /// Connection counts of every real server of `svc`: (active, inactive).
    fn counts(svc: &Service) -> Vec<(u32, u32)> {
        svc.status()
            .reals
            .iter()
            .map(|r| (r.active_conns, r.inactive_conns))
            .collect()
    }

    /// A request that is already there when its connection is accepted goes out with the
    /// connect, before the client socket is registered, and the task carries on with that
    /// connection: the real server gets the request exactly once, and the client the answer.
    #[test]
    fn a_waiting_request_goes_out_with_the_connect_and_the_task_carries_on() {
        let live_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = live_listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = live_listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"pong").unwrap();
            got
        });
        let (front, vip) = front();
        let svc = fo(vip, &[(live, 1)], false);
        let mut client = TcpStream::connect(vip).unwrap();
        client.write_all(b"ping!").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (fd, peer) = accept(&front, true);
        let started = Started::start(fd, peer, vip, &svc).unwrap();
        assert_eq!(started.n, 5);
        let attempt = started.attempt.as_ref().expect("started with the request");
        assert_eq!(attempt.conn.dest_addr(), live);
        assert!(attempt.opened.is_ok());

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        run(started, vip, &svc);
        // Neither lost nor sent twice (the first `send` and the rest after registering).
        assert_eq!(server.join().unwrap(), b"ping!");
        assert_eq!(reader.join().unwrap(), b"pong");
        assert_eq!(counts(&svc), vec![(0, 0)]);
    }

    /// When the first connect is refused, the request goes to another real server, and the
    /// client never knows.
    #[test]
    fn a_refused_first_connect_is_retried_elsewhere() {
        let (_dead_socket, dead) = refusing();
        let live_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = live_listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = live_listener.accept().unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).unwrap();
            s.write_all(b"pong:").unwrap();
            s.write_all(&req).unwrap();
        });
        let (front, vip) = front();
        let svc = fo(vip, &[(dead, 2), (live, 1)], false);
        let mut client = TcpStream::connect(vip).unwrap();
        client.write_all(b"ping!").unwrap();
        let (fd, peer) = accept(&front, true);
        let started = Started::start(fd, peer, vip, &svc).unwrap();
        let attempt = started.attempt.as_ref().expect("started with the request");
        assert_eq!(attempt.conn.dest_addr(), dead);

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        run(started, vip, &svc);
        server.join().unwrap();
        assert_eq!(reader.join().unwrap(), b"pong:ping!");
        assert_eq!(counts(&svc), vec![(0, 0), (0, 0)]);
    }

    /// With the PROXY protocol, a request that arrives after the accept and is reset by the
    /// first real server before any reply goes to the next one behind a header of its own,
    /// with the client's bytes after it.
    #[test]
    fn a_late_request_reset_before_any_reply_is_retried_behind_a_proxy_header() {
        use crate::proxy_protocol::decode_v2;
        // Reads until the request is in, then resets the connection.
        let resetting = TcpListener::bind("127.0.0.1:0").unwrap();
        let first = resetting.local_addr().unwrap();
        let resetter = std::thread::spawn(move || {
            let (mut s, _) = resetting.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"ping!") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the request: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        });
        // Answers with the client address from the header and the bytes after it.
        let answering = TcpListener::bind("127.0.0.1:0").unwrap();
        let second = answering.local_addr().unwrap();
        let answerer = std::thread::spawn(move || {
            let (mut s, _) = answering.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                if let Some((client, _, len)) = decode_v2(&got) {
                    if got.len() >= len + 5 {
                        let reply = format!("{client} {}", String::from_utf8_lossy(&got[len..]));
                        s.write_all(reply.as_bytes()).unwrap();
                        return;
                    }
                }
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed before the request: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
        });
        let (front, vip) = front();
        let svc = fo(vip, &[(first, 2), (second, 1)], true);
        let mut client = TcpStream::connect(vip).unwrap();
        let me = client.local_addr().unwrap();
        let (fd, peer) = accept(&front, false);
        // Nothing sent yet: no real server is picked before the client speaks.
        let started = Started::start(fd, peer, vip, &svc).unwrap();
        assert_eq!(started.n, 0);
        assert!(started.attempt.is_none());

        let talker = std::thread::spawn(move || {
            client.write_all(b"ping!").unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        run(started, vip, &svc);
        resetter.join().unwrap();
        answerer.join().unwrap();
        assert_eq!(
            String::from_utf8(talker.join().unwrap()).unwrap(),
            format!("{me} ping!")
        );
    }

    #[test]
    fn only_resource_exhaustion_makes_accept_back_off() {
        let err = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        for e in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert!(is_exhaustion(&err(e)), "{e}");
        }
        for e in [Errno::CONNABORTED, Errno::PROTO, Errno::PERM] {
            assert!(!is_exhaustion(&err(e)), "{e}");
        }
        assert!(!is_exhaustion(&io::Error::other("no errno")));
    }
}
