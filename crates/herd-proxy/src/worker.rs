//! Worker threads: each an OS thread named `herd-worker-N` running its own single-threaded tokio
//! runtime, until it is retired and its last task has ended.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::Shared;

/// Task polls between two looks at epoll while a worker is busy (tokio's default is 61).
///
/// A busy worker only harvests new events every `EVENT_INTERVAL` polls, so an event that
/// arrives just after a look waits for the whole batch ahead of it. With the default, herd made
/// 0.11–0.15 `epoll_wait` calls per keep-alive request against HAProxy's 0.6, and its p99 was
/// 20% above HAProxy's at equal req/s; at 4 it makes ~0.5 and the tail matched (bench/README.md).
const EVENT_INTERVAL: u32 = 4;

/// How often a retired worker looks whether its last connection has ended.
const RETIRED_POLL: Duration = Duration::from_millis(50);

/// One worker thread, as the proxy holds it while the worker serves.
///
/// Dropping it retires the worker: the thread goes on running the tasks it has (TCP
/// connections) and exits once none is left. Its listeners must have been moved away first.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) rt: Handle,
    /// Dropped to retire the worker.
    _retire: oneshot::Sender<()>,
}

/// The numbers `N` of the `herd-worker-N` threads alive, retired ones included, so that a
/// new worker takes the lowest free one and no two live threads share a name.
#[derive(Debug, Default)]
pub(crate) struct Numbers(Mutex<BTreeSet<usize>>);

impl Numbers {
    fn take(&self) -> usize {
        let mut used = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = (0..).find(|n| !used.contains(n)).unwrap_or(0);
        used.insert(n);
        n
    }

    fn give_back(&self, n: usize) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
    }
}

/// Gives a thread's number back when the thread ends, however it ends.
struct Numbered(Arc<Numbers>, usize);

impl Drop for Numbered {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}

impl Worker {
    /// Starts a worker thread and returns once its runtime is up.
    pub(crate) fn start(shared: &Arc<Shared>, numbers: &Arc<Numbers>) -> io::Result<Worker> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (retire, retired) = oneshot::channel::<()>();
        let shared = shared.clone();
        let n = numbers.take();
        let numbered = Numbered(numbers.clone(), n);
        std::thread::Builder::new()
            .name(format!("herd-worker-{n}"))
            .spawn(move || {
                let _numbered = numbered;
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .event_interval(EVENT_INTERVAL)
                    .enable_all()
                    .on_thread_park(move || shared.before_sleep())
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                let handle = rt.handle().clone();
                rt.block_on(serve_until_retired(handle, retired));
            })?;
        let rt = rx
            .recv()
            .map_err(|_| io::Error::other("worker thread died at start"))??;
        Ok(Worker {
            rt,
            _retire: retire,
        })
    }
}

/// A worker's life: it serves until retired (or the proxy is dropped), then runs its remaining
/// tasks to their end. Its listeners (and UDP sessions) were handed to other workers before, so
/// what is left are TCP connections, which end by themselves.
async fn serve_until_retired(rt: Handle, retired: oneshot::Receiver<()>) {
    let _ = retired.await;
    while rt.metrics().num_alive_tasks() > 0 {
        tokio::time::sleep(RETIRED_POLL).await;
    }
}
