//! `lb.workers` changed in place (`Proxy::set_workers`) under traffic, over real sockets on
//! loopback: no connection is refused, reset or stalled, and UDP sessions stay where they are.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::model::Protocol;
use herd_lb::dataplane::DataPlane;
use support::{ask, connect, eventually, exchange, proxy, udp_real, Echo};

/// What a long-lived client saw: exchanges per phase of the test (before the grow, after it,
/// after the shrink).
type Rounds = Result<[u64; 3], String>;

/// A client that holds one connection and exchanges a message every millisecond (every tenth
/// one large enough for the proxy to splice it) until `phase` says stop (3).
fn client(vip: SocketAddr, id: usize, phase: Arc<AtomicUsize>) -> std::thread::JoinHandle<Rounds> {
    std::thread::spawn(move || {
        let mut s = connect(vip)?;
        let mut rounds = [0u64; 3];
        for round in 0..20_000 {
            let p = phase.load(SeqCst);
            if p >= 3 {
                return Ok(rounds);
            }
            let mut msg = format!("client {id} round {round};").into_bytes();
            if round % 10 == 9 {
                msg.resize(20_000, b'0' + (id % 10) as u8);
            }
            exchange(&mut s, &msg).map_err(|e| format!("client {id} round {round}: {e}"))?;
            rounds[p] += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(format!("client {id}: the test never said stop"))
    })
}

#[test]
fn open_connections_keep_exchanging_data_across_a_grow_and_a_shrink() {
    let echo = Echo::start();
    let (proxy, vip) = proxy(1, Protocol::Tcp, &[echo.addr]);
    let phase = Arc::new(AtomicUsize::new(0));
    let mut early: Vec<_> = (0..8).map(|id| client(vip, id, phase.clone())).collect();
    assert!(eventually(|| proxy.open_connections() == 8));
    std::thread::sleep(Duration::from_millis(100));

    proxy.set_workers(4).unwrap();
    assert_eq!(proxy.workers(), 4);
    phase.store(1, SeqCst);
    // These spread over the four workers' listeners.
    let late: Vec<_> = (8..32).map(|id| client(vip, id, phase.clone())).collect();
    assert!(eventually(|| proxy.open_connections() == 32));
    std::thread::sleep(Duration::from_millis(150));

    proxy.set_workers(1).unwrap();
    assert_eq!(proxy.workers(), 1);
    phase.store(2, SeqCst);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(proxy.open_connections(), 32, "no connection ended");
    phase.store(3, SeqCst);

    for (id, c) in early.drain(..).enumerate() {
        let rounds = c.join().unwrap().unwrap();
        assert!(rounds.iter().all(|&n| n > 0), "client {id}: {rounds:?}");
    }
    for (id, c) in late.into_iter().enumerate() {
        let rounds = c.join().unwrap().unwrap();
        assert!(
            rounds[1] > 0 && rounds[2] > 0,
            "client {}: {rounds:?}",
            id + 8
        );
    }
    assert!(
        eventually(|| proxy.open_connections() == 0),
        "open: {}",
        proxy.open_connections()
    );
}

#[test]
fn connections_made_during_a_shrink_and_a_grow_all_succeed() {
    let echo = Echo::start();
    let (proxy, vip) = proxy(4, Protocol::Tcp, &[echo.addr]);
    let done = Arc::new(AtomicUsize::new(0));
    let resized = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    // Four clients, each connecting, exchanging one message and closing, at least 500 times
    // and until both resizes are over (at most 5,000 times).
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (done, resized, failures) = (done.clone(), resized.clone(), failures.clone());
            std::thread::spawn(move || {
                for n in 0..5_000 {
                    if n >= 500 && resized.load(SeqCst) {
                        return;
                    }
                    let msg = format!("client {id} connection {n}");
                    match connect(vip).and_then(|mut s| exchange(&mut s, msg.as_bytes())) {
                        Ok(()) => done.fetch_add(1, SeqCst),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{msg}: {e}"));
                            0
                        }
                    };
                }
            })
        })
        .collect();
    assert!(eventually(|| done.load(SeqCst) >= 200));
    let t = std::time::Instant::now();
    proxy.set_workers(1).unwrap();
    let (after_shrink, shrink_took) = (done.load(SeqCst), t.elapsed());
    let t = std::time::Instant::now();
    proxy.set_workers(4).unwrap();
    let (after_grow, grow_took) = (done.load(SeqCst), t.elapsed());
    resized.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let total = done.load(SeqCst);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total >= 2_000, "{total}");
    assert!(
        after_shrink < total && after_grow < total,
        "connections went on after the resizes: {after_shrink}, {after_grow} of {total}"
    );
    eprintln!(
        "{total} connections; {after_shrink} done after the shrink ({shrink_took:?}), \
         {after_grow} after the grow ({grow_took:?})"
    );
    assert!(eventually(|| proxy.open_connections() == 0));
}

#[test]
fn udp_sessions_keep_their_real_server_across_a_shrink_and_a_grow() {
    let stop = Arc::new(AtomicBool::new(false));
    let (a, ta) = udp_real("a", stop.clone());
    let (b, tb) = udp_real("b", stop.clone());
    let (proxy, vip) = proxy(4, Protocol::Udp, &[a, b]);
    let clients: Vec<UdpSocket> = (0..16)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c
        })
        .collect();
    let first: BTreeMap<usize, String> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (i, ask(c, vip, &format!("c{i} hello"))))
        .collect();
    // Round robin: a session opened anew would likely land on the other real server.
    assert_eq!(first.values().filter(|n| *n == "a").count(), 8, "{first:?}");
    assert_eq!(proxy.open_connections(), 16);

    for (workers, round) in [(1, "after the shrink"), (4, "after the grow")] {
        proxy.set_workers(workers).unwrap();
        for k in 0..3 {
            for (i, c) in clients.iter().enumerate() {
                let node = ask(c, vip, &format!("c{i} {round} {k}"));
                assert_eq!(node, first[&i], "client {i} {round}");
            }
        }
        // No session was opened anew.
        assert_eq!(proxy.open_connections(), 16, "{round}");
    }
    drop(proxy);
    stop.store(true, SeqCst);
    ta.join().unwrap();
    tb.join().unwrap();
}
