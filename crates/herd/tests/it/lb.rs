//! The director forwarding real traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::util::{get, tally, wait_for, Backend, Daemon, Net};

pub fn service(vip: SocketAddr, sched: &str, reals: &[(SocketAddr, u32)]) -> String {
    service_with(vip, sched, "", reals)
}

/// A config with one service; `extra` lines go into the service's table.
pub fn service_with(
    vip: SocketAddr,
    sched: &str,
    extra: &str,
    reals: &[(SocketAddr, u32)],
) -> String {
    let mut s = format!(
        "[lb]\nworkers = 2\nconnect-timeout = \"1s\"\n\n[[lb.service]]\naddress = \"{vip}\"\nscheduler = \"{sched}\"\n{extra}\n"
    );
    for (a, w) in reals {
        s.push_str(&format!(
            "[[lb.service.real]]\naddress = \"{a}\"\nweight = {w}\n"
        ));
    }
    s
}

#[test]
fn wrr_weights_1_2_3_give_10_20_30_of_60() {
    let net = Net::new("wrr_weights");
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::http(net.addr(10 + i, 8080), &format!("node0{i}")))
        .collect();
    let vip = net.addr(100, 8080);
    let d = Daemon::start(
        "wrr_weights",
        &service(
            vip,
            "wrr",
            &[(b[0].addr, 1), (b[1].addr, 2), (b[2].addr, 3)],
        ),
    );
    let t = tally(vip, 60);
    assert_eq!(t.get("node01"), Some(&10), "{t:?}");
    assert_eq!(t.get("node02"), Some(&20), "{t:?}");
    assert_eq!(t.get("node03"), Some(&30), "{t:?}");
    // The counters saw the same.
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let conns: Vec<u64> = json[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stats"]["conns"].as_u64().unwrap())
        .collect();
    let mut sorted = conns.clone();
    sorted.sort();
    assert_eq!(sorted, vec![10, 20, 30]);
    assert_eq!(json[0]["stats"]["conns"], 60);
    assert!(json[0]["stats"]["bytes-in"].as_u64().unwrap() > 60 * 20);
}

#[test]
fn a_dead_real_server_is_invisible_to_clients() {
    let net = Net::new("dead_real");
    let b1 = Backend::http(net.addr(11, 8080), "node01");
    let b2 = Backend::http(net.addr(12, 8080), "node02");
    // Nothing listens on .13: every connect there is refused and must be retried elsewhere.
    let dead = net.addr(13, 8080);
    let vip = net.addr(100, 8080);
    let _d = Daemon::start(
        "dead_real",
        &service(vip, "rr", &[(b1.addr, 1), (b2.addr, 1), (dead, 1)]),
    );
    let mut errors = 0;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        match get(vip) {
            Ok(body) => *seen.entry(body).or_insert(0) += 1,
            Err(_) => errors += 1,
        }
    }
    assert_eq!(errors, 0, "client-visible errors; answers: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 1000);
    assert!(seen["node01"] > 300 && seen["node02"] > 300, "{seen:?}");
}

/// A backend that reads the request and then resets the connection (SO_LINGER 0), after
/// sending `partial` first.
fn resetting(addr: SocketAddr, partial: &'static [u8]) -> Backend {
    Backend::custom(addr, move |mut s: TcpStream| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        if !partial.is_empty() {
            let _ = s.write_all(partial);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO));
    })
}

#[test]
fn a_reset_before_any_reply_sends_the_request_to_another_real_server() {
    let net = Net::new("reset_retry");
    let bad = resetting(net.addr(11, 8080), b"");
    let good = Backend::http(net.addr(12, 8080), "node02");
    let vip = net.addr(100, 8080);
    let d = Daemon::start(
        "reset_retry",
        &service(vip, "rr", &[(bad.addr, 1), (good.addr, 1)]),
    );
    for i in 0..100 {
        assert_eq!(get(vip).as_deref(), Ok("node02"), "request {i}");
    }
    // Half the connections were scheduled to the resetting server first, and counted there.
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let conns = |a: SocketAddr| {
        json[0]["reals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == a.to_string())
            .unwrap()["stats"]["conns"]
            .as_u64()
            .unwrap()
    };
    assert!(conns(bad.addr) >= 40, "{json}");
    assert_eq!(conns(good.addr), 100);
}

#[test]
fn a_reset_after_part_of_the_reply_is_not_retried() {
    let net = Net::new("reset_partial");
    // The reply has begun: sending the request again could answer the client twice.
    let bad = resetting(net.addr(11, 8080), b"HTTP/1.0 200 OK\r\n");
    let vip = net.addr(100, 8080);
    let _d = Daemon::start("reset_partial", &service(vip, "rr", &[(bad.addr, 1)]));
    let mut s = TcpStream::connect(vip).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert_eq!(got, b"HTTP/1.0 200 OK\r\n", "{r:?}");
}

#[test]
fn weight_zero_quiesces_new_connections_but_open_ones_continue() {
    let net = Net::new("quiesce");
    // An echo backend keeps a connection open for as long as the client wants.
    let echo = |mut s: TcpStream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    };
    let b1 = Backend::custom(net.addr(11, 7000), echo);
    let b2 = Backend::custom(net.addr(12, 7000), echo);
    let vip = net.addr(100, 7000);
    let d = Daemon::start(
        "quiesce",
        &service(vip, "rr", &[(b1.addr, 1), (b2.addr, 1)]),
    );
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(vip).unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        open.push(s);
    }
    let b1s = b1.addr.to_string();
    d.ok(&[
        "lb",
        "real",
        "edit",
        &vip.to_string(),
        &b1s,
        "--weight",
        "0",
    ]);
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let r1 = json[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == b1s.as_str())
        .unwrap()
        .clone();
    assert_eq!(r1["weight"], 0);
    assert_eq!(r1["active-conns"], 2, "open connections still count: {r1}");
    let before = r1["stats"]["conns"].as_u64().unwrap();
    for _ in 0..10 {
        let mut s = TcpStream::connect(vip).unwrap();
        s.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).unwrap();
    }
    // Open connections to the quiesced server still work.
    for s in open.iter_mut() {
        s.write_all(b"ok").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    }
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let r1 = json[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == b1s.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        r1["stats"]["conns"].as_u64().unwrap(),
        before,
        "no new connections to a weight-0 server"
    );
    drop(open);
    wait_for("connections to close", Duration::from_secs(5), || {
        let json: serde_json::Value =
            serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
        json[0]["reals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["active-conns"] == 0 && r["inactive-conns"] == 0)
    });
}

#[test]
fn drain_disable_and_enable_by_an_operator() {
    let net = Net::new("admin_state");
    let b: Vec<Backend> = (1..=2)
        .map(|i| Backend::http(net.addr(10 + i, 8080), &format!("node0{i}")))
        .collect();
    let vip = net.addr(100, 8080);
    let d = Daemon::start(
        "admin_state",
        &service(vip, "rr", &[(b[0].addr, 1), (b[1].addr, 1)]),
    );
    let (v, r1) = (vip.to_string(), b[0].addr.to_string());
    d.ok(&["lb", "real", "drain", &v, &r1]);
    assert_eq!(tally(vip, 10).get("node02"), Some(&10));
    // Listed with weight 0 (the fourth column), as ipvsadm shows a quiesced server.
    let ipvs = d.ok(&["ipvsadm", "-L", "-n"]);
    let line = ipvs.lines().find(|l| l.contains(&r1)).expect("listed");
    assert_eq!(line.split_whitespace().nth(3), Some("0"), "{ipvs}");
    let list = d.ok(&["lb", "list"]);
    assert!(list.contains("draining"), "{list}");
    // A reload keeps the operator's word.
    d.ok(&["reload"]);
    assert_eq!(tally(vip, 6).get("node02"), Some(&6));
    d.ok(&["lb", "real", "disable", &v, &r1]);
    assert!(!d.ok(&["ipvsadm", "-L", "-n"]).contains(&r1));
    assert_eq!(tally(vip, 4).get("node02"), Some(&4));
    d.ok(&["lb", "real", "enable", &v, &r1]);
    let t = tally(vip, 10);
    assert_eq!((t.get("node01"), t.get("node02")), (Some(&5), Some(&5)));
    let out = d.herd(&["lb", "real", "drain", &v, "127.0.0.1:1"]);
    assert!(!out.status.success());
}

#[test]
fn udp_sessions_are_forwarded_and_counted() {
    let net = Net::new("udp");
    let mut threads = Vec::new();
    let mut reals = Vec::new();
    for i in 1..=2u8 {
        let sock = UdpSocket::bind(net.addr(10 + i, 5300)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        reals.push((sock.local_addr().unwrap(), 1));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let mut reply = format!("node0{i}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from);
                if &buf[..n] == b"quit" {
                    break;
                }
            }
        }));
    }
    let vip = net.addr(100, 5300);
    let cfg = service_with(vip, "rr", "protocol = \"udp\"", &reals);
    let d = Daemon::start("udp", &cfg);
    let mut answers = std::collections::BTreeMap::new();
    let mut clients = Vec::new();
    for c in 0..4 {
        let s = UdpSocket::bind(net.addr(200 + c, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for k in 0..3 {
            let msg = format!("c{c}m{k}");
            s.send_to(msg.as_bytes(), vip).unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(from, vip, "replies come from the VIP");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let (node, echo) = text.split_once(':').unwrap();
            assert_eq!(echo, msg);
            // A session sticks to its real server.
            let prev = answers.insert(c, node.to_string());
            assert!(
                prev.is_none() || prev.as_deref() == Some(node),
                "session moved: {prev:?} -> {node}"
            );
        }
        clients.push(s);
    }
    let nodes: std::collections::BTreeSet<_> = answers.values().collect();
    assert_eq!(nodes.len(), 2, "rr spreads sessions: {answers:?}");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let inact: u64 = json[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["inactive-conns"].as_u64().unwrap())
        .sum();
    assert_eq!(
        inact, 4,
        "UDP sessions count as InActConn, as in the kernel: {json}"
    );
    assert_eq!(json[0]["stats"]["pkts-in"], 12);
    assert_eq!(json[0]["stats"]["pkts-out"], 12);
    for (a, _) in &reals {
        let s = UdpSocket::bind(net.addr(250, 0)).unwrap();
        s.send_to(b"quit", a).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn proxy_protocol_v2_tells_the_backend_the_client_address() {
    let net = Net::new("ppv2");
    let b = Backend::custom(net.addr(11, 8080), |mut s: TcpStream| {
        let mut buf = vec![0u8; 512];
        let mut got = 0;
        loop {
            let n = s.read(&mut buf[got..]).unwrap();
            if n == 0 {
                return;
            }
            got += n;
            if let Some((client, local, len)) = herd_proxy::proxy_protocol::decode_v2(&buf[..got]) {
                if buf[len..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    let body = format!("{client} {local}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
            }
        }
    });
    let vip = net.addr(100, 8080);
    let cfg = service_with(vip, "rr", "proxy-protocol = true", &[(b.addr, 1)]);
    let _d = Daemon::start("ppv2", &cfg);
    let client = std::net::TcpStream::connect(vip).unwrap();
    let me = client.local_addr().unwrap();
    drop(client);
    let body = get(vip).unwrap();
    let (c, l) = body.split_once(' ').unwrap();
    let c: SocketAddr = c.parse().unwrap();
    assert_eq!(c.ip(), me.ip());
    assert_eq!(l, vip.to_string());
}

#[test]
fn ipv6_service_on_loopback() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        assert!(std::env::var("CI").is_err(), "CI must have IPv6 loopback");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let b = Backend::http(format!("[::1]:{port}").parse().unwrap(), "six");
    let probe = std::net::TcpListener::bind("[::1]:0").unwrap();
    let vip = probe.local_addr().unwrap();
    drop(probe);
    let _d = Daemon::start("ipv6", &service(vip, "wlc", &[(b.addr, 1)]));
    assert_eq!(get(vip).unwrap(), "six");
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[test]
fn bulk_transfers_in_both_directions_arrive_intact_through_splice() {
    const UP: usize = 3 << 20;
    const DOWN: usize = 5 << 20;
    let net = Net::new("bulk");
    let b = Backend::custom(net.addr(11, 9000), |mut s: TcpStream| {
        // Read everything the client sends (until its FIN), then answer with the hash of it
        // followed by a large body.
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&fnv(&got).to_be_bytes()).unwrap();
        s.write_all(&(got.len() as u64).to_be_bytes()).unwrap();
        s.write_all(&pattern(DOWN, 7)).unwrap();
    });
    let vip = net.addr(100, 9000);
    let d = Daemon::start("bulk", &service(vip, "rr", &[(b.addr, 1)]));
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let up = pattern(UP, 3);
    // Small writes first (the copy path), then bulk (the splice path).
    for chunk in up[..4096].chunks(100) {
        c.write_all(chunk).unwrap();
    }
    c.write_all(&up[4096..]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    assert_eq!(resp.len(), 16 + DOWN);
    assert_eq!(
        u64::from_be_bytes(resp[..8].try_into().unwrap()),
        fnv(&up),
        "upload corrupted"
    );
    assert_eq!(
        u64::from_be_bytes(resp[8..16].try_into().unwrap()),
        UP as u64
    );
    assert!(resp[16..] == pattern(DOWN, 7)[..], "download corrupted");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    assert_eq!(json[0]["stats"]["bytes-in"], UP as u64);
    assert_eq!(json[0]["stats"]["bytes-out"], (16 + DOWN) as u64);
}

#[test]
fn a_server_that_speaks_first_and_half_closes_is_forwarded_faithfully() {
    // The client says nothing until the server's greeting arrives (SMTP, FTP, MySQL), so the
    // proxy's first read finds nothing; later the server ends its side while the client still
    // has bytes to send. Both FINs must travel on their own, and no byte may be lost.
    let net = Net::new("half_close");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let b = Backend::custom(net.addr(11, 2500), move |mut s: TcpStream| {
        s.write_all(b"220 ready\n").unwrap();
        let mut cmd = [0u8; 5];
        s.read_exact(&mut cmd).unwrap();
        assert_eq!(&cmd, b"QUIT\n");
        s.write_all(b"221 bye\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let _ = tx.lock().unwrap().send(rest);
    });
    let vip = net.addr(100, 2500);
    let _d = Daemon::start("half_close", &service(vip, "rr", &[(b.addr, 1)]));
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 10];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"220 ready\n");
    c.write_all(b"QUIT\n").unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer)
        .expect("the server's FIN did not arrive");
    assert_eq!(answer, b"221 bye\n");
    // The client's direction is still open after the server's FIN.
    c.write_all(b"late words").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rest, b"late words");
}

#[test]
fn urgent_data_does_not_stall_a_connection() {
    // A read stops short at TCP's urgent mark with data still queued behind it; the proxy must
    // not take that short read for an empty queue.
    let net = Net::new("urgent");
    let echo = Backend::custom(net.addr(11, 7000), |mut s: TcpStream| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let vip = net.addr(100, 7000);
    let _d = Daemon::start("urgent", &service(vip, "rr", &[(echo.addr, 1)]));
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // One exchange first, so that the connection is in the forwarding loop (not at its first
    // read, which happens before the socket is registered).
    c.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    c.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    // Corked, the three writes leave as one segment: the proxy's read of it stops at the mark.
    rustix::net::sockopt::set_tcp_cork(&c, true).unwrap();
    c.write_all(b"hello").unwrap();
    rustix::net::send(&c, b"!", rustix::net::SendFlags::OOB).unwrap();
    c.write_all(b"world").unwrap();
    rustix::net::sockopt::set_tcp_cork(&c, false).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 10 {
        let n = c
            .read(&mut buf)
            .expect("stalled: the bytes after the urgent mark never came");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // The urgent byte itself is out of band: a stream proxy passes the in-band bytes on.
    assert_eq!(got, b"helloworld");
}
