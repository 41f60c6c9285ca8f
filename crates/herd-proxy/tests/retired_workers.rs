//! Retired workers end once their connections have. Alone in their test binary, as they count
//! the process's `herd-worker-*` threads, and one at a time.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herd_core::model::Protocol;
use herd_lb::dataplane::DataPlane;
use support::{ask, connect, eventually, exchange, proxy, udp_real, worker_threads, Echo};

/// Held by each test while it runs: the thread counts are the whole process's.
fn alone() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    let guard = ONE.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        eventually(|| worker_threads() == 0),
        "{} threads",
        worker_threads()
    );
    guard
}

#[test]
fn retired_workers_finish_their_connections_then_exit() {
    let _alone = alone();
    let echo = Echo::start();
    let (proxy, vip) = proxy(4, Protocol::Tcp, &[echo.addr]);
    assert_eq!(worker_threads(), 4);
    // Spread over the four workers' listeners by the kernel's hash: the three that retire all
    // get none with a chance of (1/4)^32.
    let mut clients: Vec<_> = (0..32).map(|_| connect(vip).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        exchange(c, format!("{i} before").as_bytes()).unwrap();
    }

    proxy.set_workers(1).unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        exchange(c, format!("{i} after").as_bytes()).unwrap();
    }
    let retired_with_connections = worker_threads();
    assert!(
        (2..=4).contains(&retired_with_connections),
        "retired workers run their connections: {retired_with_connections} threads"
    );
    assert_eq!(proxy.open_connections(), 32);

    // A new worker takes a number no live thread has.
    proxy.set_workers(2).unwrap();
    assert_eq!(worker_threads(), retired_with_connections + 1);
    proxy.set_workers(1).unwrap();

    clients.clear();
    assert!(
        eventually(|| worker_threads() == 1),
        "{} threads",
        worker_threads()
    );
    assert!(eventually(|| proxy.open_connections() == 0));
    // Dropping the proxy ends its last worker too.
    drop(proxy);
    assert!(
        eventually(|| worker_threads() == 0),
        "{} threads",
        worker_threads()
    );
}

#[test]
fn udp_sessions_move_with_their_socket_so_retired_workers_exit_at_once() {
    let _alone = alone();
    let stop = Arc::new(AtomicBool::new(false));
    let (a, ta) = udp_real("a", stop.clone());
    let (proxy, vip) = proxy(4, Protocol::Udp, &[a]);
    let clients: Vec<UdpSocket> = (0..32)
        .map(|i| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(ask(&c, vip, &format!("c{i} before")), "a");
            c
        })
        .collect();
    assert_eq!(proxy.open_connections(), 32);

    proxy.set_workers(1).unwrap();
    // The sessions live on (for the `udp` timeout, 300 s), on the remaining worker.
    assert!(
        eventually(|| worker_threads() == 1),
        "{} threads",
        worker_threads()
    );
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(ask(c, vip, &format!("c{i} after")), "a");
    }
    assert_eq!(proxy.open_connections(), 32, "no session opened anew");

    drop(proxy);
    assert!(
        eventually(|| worker_threads() == 0),
        "{} threads",
        worker_threads()
    );
    stop.store(true, SeqCst);
    ta.join().unwrap();
}
