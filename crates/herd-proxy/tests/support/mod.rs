//! What the proxy's tests over real sockets share: a proxy in front of echo servers on
//! loopback, and a look at the process's worker threads.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herd_core::api::service_spec;
use herd_core::model::{Forward, Protocol, RealSpec, SchedulerKind, ServiceKey, Timeouts};
use herd_lb::dataplane::{DataPlane, Settings};
use herd_lb::service::Service;
use herd_proxy::Proxy;

/// A port on 127.0.0.1 that was free a moment ago, for a VIP (the proxy binds one socket per
/// worker to it, so port 0 would not do).
pub fn free_port(protocol: Protocol) -> SocketAddr {
    match protocol {
        Protocol::Tcp => TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        Protocol::Udp => UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    }
}

/// A proxy with `workers` workers serving one round-robin service on a fresh VIP.
pub fn proxy(workers: usize, protocol: Protocol, reals: &[SocketAddr]) -> (Proxy, SocketAddr) {
    let settings = Settings {
        timeouts: Timeouts::default(),
        connect_timeout: Duration::from_secs(2),
        idle_poll: Duration::ZERO,
    };
    let proxy = Proxy::new(workers, settings).unwrap();
    let vip = free_port(protocol);
    let key = ServiceKey {
        protocol,
        address: vip,
    };
    let reals: Vec<RealSpec> = reals
        .iter()
        .map(|&address| RealSpec {
            address,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            forward: Forward::Masq,
        })
        .collect();
    let svc = Service::new(service_spec(key, SchedulerKind::Rr), &reals, 1);
    proxy.apply(&[svc]).unwrap();
    (proxy, vip)
}

/// A TCP echo server on loopback, a thread per connection; stops accepting when dropped.
pub struct Echo {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Echo {
    pub fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let acceptor = std::thread::spawn(move || {
            for s in l.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Sends `msg` and reads the echo back; an error says what went wrong.
pub fn exchange(s: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != msg {
        return Err(format!("echo {got:?} for {msg:?}"));
    }
    Ok(())
}

/// A client connection through the proxy, with timeouts so that a lost one fails the test
/// instead of hanging it.
pub fn connect(vip: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    Ok(s)
}

/// The threads of this process named `herd-worker-*`.
pub fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("herd-worker-"))
        .count()
}

/// Waits (at most 10 s) until `f` holds; whether it does.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A UDP real server that answers every datagram with its name and the datagram, until
/// `stop`.
pub fn udp_real(
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(SeqCst) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from);
            }
        }
    });
    (addr, t)
}

/// Sends `msg` from `client` through the proxy; the name of the real server that answered.
pub fn ask(client: &UdpSocket, vip: SocketAddr, msg: &str) -> String {
    client.send_to(msg.as_bytes(), vip).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, vip, "answers come from the VIP");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let (node, echo) = text.split_once(':').unwrap();
    assert_eq!(echo, msg);
    node.to_string()
}
