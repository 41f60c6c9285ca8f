//! Retired workers end once their connections have: alone in its test binary, as it counts
//! the process's `herd-worker-*` threads.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use herd_core::model::Protocol;
use herd_lb::dataplane::DataPlane;
use support::{connect, eventually, exchange, proxy, worker_threads, Echo};

#[test]
fn retired_workers_finish_their_connections_then_exit() {
    let echo = Echo::start();
    let (proxy, vip) = proxy(4, Protocol::Tcp, &[echo.addr]);
    assert_eq!(worker_threads(), 4);
    // Spread over the four workers' listeners by the kernel's hash: with 32 connections,
    // every worker gets some but with a chance of 4·(3/4)^32 (about 1 in 2,500).
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
    assert_eq!(proxy.open_connections(), 0);
    // Dropping the proxy ends its last worker too.
    drop(proxy);
    assert!(
        eventually(|| worker_threads() == 0),
        "{} threads",
        worker_threads()
    );
}
