//! The I/O shell around the state machines: raw sockets, timers, netlink, announcements and
//! hooks, and the one path from the running instances to a config ([`Ha::apply`]).
//!
//! VRRP runs on a thread of its own (named `herd-vrrp`, a single-threaded runtime), so that API
//! requests, reloads or health history writes on the control thread never delay an advert.
//! Instances are grouped by interface and family (`group`): one raw socket per group
//! receives every VRRP packet on it and hands each to the instance with its VRID. The
//! `supervisor` holds the running config and applies new ones: what an apply does is
//! planned without I/O (`plan`), everything that can fail is done before anything changes,
//! and each group then carries out its part (`change`).
//!
//! - `io`: the narrow trait through which a group touches the world, and the real one.
//! - `member`: one instance in its group, the checks a received advert passes.
//! - `park`: hand-overs and the real-server role.

mod change;
mod group;
mod io;
mod member;
mod park;
mod plan;
mod supervisor;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use herd_core::api::VrrpStatus;
use herd_core::config::vrrp::VrrpConfig;
use tokio::sync::{mpsc, oneshot};

use self::group::Failing;
use self::supervisor::{Cmd, Supervisor};
use crate::HaError;

/// What `herd ha status` reads: each instance's last published state, in config order.
#[derive(Debug, Default)]
pub(crate) struct Statuses {
    pub order: Vec<String>,
    pub by_name: HashMap<String, VrrpStatus>,
}

pub(crate) type Board = Arc<Mutex<Statuses>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The monotonic clock, read through tokio so that tests can pause it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock: when transitions happened (ms), the auth trailer's sequence numbers (µs).
pub(crate) use herd_core::clock::{wall_ms, wall_us};

/// What an apply did, by instance name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Instances that started.
    pub added: Vec<String>,
    /// Instances whose changes were applied in place (their role stayed).
    pub changed: Vec<String>,
    /// Instances whose interface, VRID, family or version changed: the old one resigned and
    /// a new one started.
    pub replaced: Vec<String>,
    /// Instances that resigned and went.
    pub removed: Vec<String>,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.replaced.is_empty()
            && self.removed.is_empty()
    }
}

/// The running VRRP instances.
#[derive(Debug)]
pub struct Ha {
    board: Board,
    /// Tracked services that are failing now, as the daemon last said.
    failing: Failing,
    /// The services some instance tracks.
    tracked: Mutex<HashSet<String>>,
    cmd: mpsc::UnboundedSender<Cmd>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Ha {
    /// VRRP without instances: its thread runs, and [`apply`](Self::apply) gives it some.
    /// Nothing is opened until an instance needs it.
    pub fn new() -> Result<Ha, HaError> {
        let board = Board::default();
        let failing = Failing::default();
        let supervisor = Supervisor::new(board.clone(), failing.clone());
        let (cmd, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("herd-vrrp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt.block_on(supervisor.run(rx));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(HaError::Thread)?;
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(HaError::Thread(e)),
            Err(_) => Some(HaError::Ended),
        };
        if let Some(e) = failed {
            let _ = thread.join();
            return Err(e);
        }
        Ok(Ha {
            board,
            failing,
            tracked: Mutex::default(),
            cmd,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Goes from the running instances to `cfg`'s, matched by name: new ones start, removed
    /// ones resign and remove their VIPs, those whose interface, VRID, family or version
    /// changed are replaced (the old one resigns, a new one starts), and every other change
    /// applies in place without giving up mastership (see [`crate::state::Instance::reconfigure`]).
    /// If anything fails (a missing interface, a socket, a key file), nothing changes and
    /// the error says why. Blocks; call it off the runtime.
    pub fn apply(&self, cfg: &VrrpConfig) -> Result<Applied, HaError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.cmd
            .send(Cmd::Apply(Box::new(cfg.clone()), tx))
            .map_err(|_| HaError::NotRunning)?;
        let applied = rx.recv().map_err(|_| HaError::NotRunning)??;
        *lock(&self.tracked) = cfg
            .instances
            .iter()
            .flat_map(|i| i.track_services.iter().map(|t| t.name.clone()))
            .collect();
        Ok(applied)
    }

    /// Every instance as it runs now (its priority in effect, the advert interval of its
    /// master), in config order.
    pub fn status(&self) -> Vec<VrrpStatus> {
        let board = lock(&self.board);
        board
            .order
            .iter()
            .filter_map(|n| board.by_name.get(n).cloned())
            .collect()
    }

    /// The virtual services whose health [`set_failing_services`](Self::set_failing_services)
    /// should report (those of the config applied last).
    pub fn tracked_services(&self) -> HashSet<String> {
        lock(&self.tracked).clone()
    }

    /// The daemon's word on its virtual services: which of them are failing now (the others
    /// pass). Read by `track-service` at the next tracking round.
    pub fn set_failing_services(&self, failing: HashSet<String>) {
        *lock(&self.failing) = failing;
    }

    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Vec<String>, HaError>>) -> Cmd,
    ) -> Result<Vec<String>, HaError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| HaError::NotRunning)?;
        rx.blocking_recv().map_err(|_| HaError::NotRunning)?
    }

    /// Planned hand-over: the named master instances (all masters if none is named) resign and
    /// stand by. Returns the instances that resigned. Blocks; call it off the runtime.
    pub fn failover(&self, names: Vec<String>) -> Result<Vec<String>, HaError> {
        self.ask(|r| Cmd::Failover(names, r))
    }

    /// Ends the standby of the named instances (all if none is named).
    pub fn resume(&self, names: Vec<String>) -> Result<Vec<String>, HaError> {
        self.ask(|r| Cmd::Resume(names, r))
    }

    /// Masters resign (priority 0) and stop hooks run. With a hand-over window, a master's
    /// VIPs stay parked on `lo` so that its open connections can drain (see
    /// [`crate::handover`]) until [`finish`](Self::finish) or the window's end; otherwise they
    /// are removed. Blocks; call it off the runtime.
    pub fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// After [`stop`](Self::stop) (and the drain of connections): parked VIPs are removed and
    /// the VRRP thread ends. Blocks; call it off the runtime.
    pub fn finish(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Finish(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}
