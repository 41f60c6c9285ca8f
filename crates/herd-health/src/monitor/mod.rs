//! The monitor: runs the probes on their schedules, feeds the rule engine, and carries out
//! what it decides — the director's real servers follow their checks, alerts go to their
//! sinks (a burst across many targets grouped into one notification), and everything is
//! recorded in the history.
//!
//! One way in from a config: [`Monitor::apply`]. Starting is an apply to an empty monitor,
//! a reload is an apply of the new config (only the difference takes effect), stopping is an
//! apply of an empty config (or dropping the monitor). A probe task whose check and target
//! are unchanged keeps running on its timer; an added one starts, a removed one stops, a
//! changed one restarts; target states, silences and disables carry over by name (see
//! [`Engine::adopt`](herd_rules::Engine::adopt)), and the director is told the verdict on every real server.
//!
//! Scheduling (mon's, plus thresholds): each (check, target) has one task, so a check never
//! runs twice at once against the same target. Runs start every `interval` (`failure-interval`
//! while the target is down), start to start; a run that overruns is followed at once by the
//! next. The first run starts at a random point within `health.randstart` (default: the
//! check's interval) so that a thousand checks do not fire together. At most
//! `health.max-concurrent` probes run at once.
//!
//! Files: `plan` (a config's checks resolved into targets), `run` (the probe task),
//! `react` (the engine's events turned into effects), `dispatch` (alert grouping and
//! sending), `query` (what operators ask and set), `store` (the history file's writer).

mod dispatch;
mod error;
mod plan;
mod query;
mod react;
mod run;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herd_core::api::{DowntimeEntry, HealthEvent, RealHealth};
use herd_core::config::health::HealthConfig;
use herd_core::config::Config;
use herd_core::model::ServiceKey;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::dispatch::{Outbox, Pending};
use self::plan::{Plan, Schedule, TaskId};
use self::react::Effect;
use self::run::{ProbeFuture, Prober, Runner, Step, Times};
use self::state::State;
use crate::clock::{local_now, wall_ms};
use crate::probe::ExecEnv;
use herd_rules::{Key, Outcome, Status};

pub use self::dispatch::GROUP_WAIT;
pub use self::error::MonitorError;

/// What the monitor needs from the director.
pub trait Director: Send + Sync + fmt::Debug {
    /// Applies a verdict on a real server of a virtual service.
    fn set_health(&self, service: &ServiceKey, real: SocketAddr, health: RealHealth);
}

/// Entries kept in the in-memory history.
const HISTORY: usize = 2000;

/// A running monitor. Dropping it stops every task.
#[derive(Debug)]
pub struct Monitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    director: Arc<dyn Director>,
    prober: Box<dyn Prober>,
    /// The last config applied and the rule engine's state.
    state: Mutex<State>,
    /// The running tasks; held for the whole of an apply, so that applies do not interleave.
    tasks: Mutex<Tasks>,
    alerts: mpsc::UnboundedSender<Pending>,
    history: Mutex<VecDeque<HealthEvent>>,
    downtime: Mutex<VecDeque<DowntimeEntry>>,
    /// The history file's writer, if there is a file.
    store: Mutex<Option<store::Writer>>,
}

#[derive(Debug, Default)]
struct Tasks {
    targets: HashMap<TaskId, Running>,
    /// The next probe task's generation.
    next: u64,
    dispatch: Option<JoinHandle<()>>,
    prune: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Running {
    schedule: Schedule,
    generation: u64,
    handle: JoinHandle<()>,
}

impl Tasks {
    /// Keeps the tasks whose (check, target) is still wanted with the same schedule, stops
    /// the others, and records in `keys` which task runs what. Returns the tasks to start,
    /// with their generations, in a stable order.
    fn reconcile(
        &mut self,
        wanted: Vec<(TaskId, Key, Schedule)>,
        keys: &mut HashMap<TaskId, (Key, u64)>,
    ) -> Vec<(TaskId, u64, Schedule)> {
        let mut start = Vec::new();
        for (id, key, schedule) in wanted {
            let generation = match self.targets.get(&id) {
                Some(r) if r.schedule == schedule => r.generation,
                _ => {
                    self.next += 1;
                    start.push((id.clone(), self.next, schedule));
                    self.next
                }
            };
            keys.insert(id, (key, generation));
        }
        self.targets.retain(|id, r| {
            let keep = keys.get(id).is_some_and(|&(_, g)| g == r.generation);
            if !keep {
                r.handle.abort();
            }
            keep
        });
        start.sort_by(|a, b| a.0.cmp(&b.0));
        start
    }
}

impl Monitor {
    /// A monitor that runs nothing yet; [`apply`](Monitor::apply) gives it checks. Must run
    /// inside a tokio runtime.
    pub fn new(director: Arc<dyn Director>) -> Monitor {
        Monitor::with_prober(director, Box::new(run::Probes))
    }

    fn with_prober(director: Arc<dyn Director>, prober: Box<dyn Prober>) -> Monitor {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            director,
            prober,
            state: Mutex::new(State::empty()),
            tasks: Mutex::new(Tasks::default()),
            alerts: tx,
            history: Mutex::new(VecDeque::new()),
            downtime: Mutex::new(VecDeque::new()),
            store: Mutex::new(None),
        });
        let dispatch = tokio::spawn(dispatch::dispatch(inner.clone(), rx));
        inner.tasks().dispatch = Some(dispatch);
        Monitor { inner }
    }

    /// Goes from what runs to what `config` asks for: probe tasks of unchanged (check,
    /// target) pairs keep running on their timers, added ones start, removed ones stop,
    /// changed ones restart; the rule engine keeps the state, silences and disables of
    /// everything that still exists (by name); the history file follows `health.history`.
    /// Then the director hears the verdict on every real server of `config`: a new check's
    /// current verdict, and up for a server that only a removed check held out.
    pub fn apply(&self, config: &Config) {
        self.inner.apply(config);
    }

    /// Stops every task: probes, alert dispatch and history pruning (alerts already being
    /// sent finish); when the monitor is dropped. A monitor that stays in use stops its checks
    /// with an apply of an empty config instead.
    fn stop(&self) {
        let mut t = self.inner.tasks();
        for (_, r) in t.targets.drain() {
            r.handle.abort();
        }
        for h in [t.dispatch.take(), t.prune.take()].into_iter().flatten() {
            h.abort();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locks, a poisoned lock being as good as any (what it guards stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        lock(&self.tasks)
    }

    /// [`Monitor::apply`].
    fn apply(self: &Arc<Self>, config: &Config) {
        let mut plan = Plan::new(config);
        let wanted = std::mem::take(&mut plan.tasks);
        let h = &config.health;
        let mut tasks = self.tasks();
        let start = {
            let mut st = self.state();
            let mut next = State::next(&st, plan, h.clone());
            let start = tasks.reconcile(wanted, &mut next.keys);
            *st = next;
            start
        };
        for (id, generation, schedule) in start {
            let delay = run::random_below(h.randstart.unwrap_or(schedule.interval));
            let task = run::run_target(
                self.clone(),
                id.clone(),
                generation,
                schedule.clone(),
                delay,
            );
            let running = Running {
                schedule,
                generation,
                handle: tokio::spawn(task),
            };
            tasks.targets.insert(id, running);
        }
        self.set_store(h.history.as_deref(), &mut tasks);
        drop(tasks);
        self.sync_all();
    }

    /// Opens the history file `path` if it is not the one open (closing the other), and
    /// keeps its pruning running.
    fn set_store(self: &Arc<Self>, path: Option<&Path>, tasks: &mut Tasks) {
        let mut slot = lock(&self.store);
        if slot.as_ref().map(|w| w.path.as_path()) == path {
            return;
        }
        *slot = path.and_then(|p| match store::start(p) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "health history kept in memory only");
                None
            }
        });
        let open = slot.is_some();
        drop(slot);
        if let Some(h) = tasks.prune.take() {
            h.abort();
        }
        if open {
            tasks.prune = Some(tokio::spawn(prune_hourly(self.clone())));
        }
    }

    /// Carries out effects, in order, without holding the state's lock (the director takes
    /// its own).
    fn perform(&self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Record {
                    check,
                    target,
                    event,
                    detail,
                } => self.record(&check, &target, &event, detail),
                Effect::Outage(o) => self.outage(o),
                Effect::Alert(p) => {
                    let _ = self.alerts.send(p);
                }
                Effect::Sync(svc, real) => self.sync(&svc, real),
            }
        }
    }

    fn record(&self, check: &str, targets: &str, event: &str, detail: String) {
        let e = HealthEvent {
            time_ms: wall_ms(),
            check: check.to_string(),
            targets: targets.to_string(),
            event: event.to_string(),
            detail,
        };
        self.to_store(|| store::StoreOp::Event(e.clone()));
        push(&self.history, e);
    }

    fn outage(&self, o: DowntimeEntry) {
        self.to_store(|| store::StoreOp::Outage(o.clone()));
        push(&self.downtime, o);
    }

    fn to_store(&self, op: impl FnOnce() -> store::StoreOp) {
        if let Some(w) = lock(&self.store).as_ref() {
            let _ = w.tx.send(op());
        }
    }

    /// Tells the director the verdict on one real server.
    fn sync(&self, svc: &ServiceKey, real: SocketAddr) {
        let verdict = self.state().verdict(svc, real);
        self.director.set_health(svc, real, verdict);
    }

    /// Tells the director the verdict on every real server (after an apply): servers no
    /// check has found down are up, even if a check since removed had taken them out.
    fn sync_all(&self) {
        let verdicts: Vec<_> = {
            let st = self.state();
            st.reals
                .iter()
                .map(|(svc, real)| (*svc, *real, st.verdict(svc, *real)))
                .collect()
        };
        for (svc, real, v) in verdicts {
            self.director.set_health(&svc, real, v);
        }
    }
}

impl Runner for Inner {
    fn prepare(&self, id: &TaskId, generation: u64, times: &Times) -> Step {
        let st = self.state();
        let Some(key) = st.key(id, generation) else {
            return Step::Gone;
        };
        if !st.engine.enabled(key) {
            return Step::Disabled;
        }
        let t = st.engine.target(key);
        let last = t.last.as_ref();
        let env = ExecEnv {
            check: id.check.clone(),
            last_summary: last.map(|o| o.summary.clone()).unwrap_or_default(),
            last_detail: last.map(|o| o.detail.clone()).unwrap_or_default(),
            last_failure: times.last_failure,
            first_failure: times.first_failure,
            last_success: times.last_success,
            mondir: st.cfg.mondir.clone(),
        };
        Step::Run(env, st.sem.clone())
    }

    fn observe(
        &self,
        id: &TaskId,
        generation: u64,
        outcome: Outcome,
        now: u64,
        times: Times,
    ) -> Option<bool> {
        let (effects, down) = {
            let mut st = self.state();
            let key = st.key(id, generation)?;
            let events = st.engine.observe(key, outcome, now, &local_now());
            let effects = st.effects(events, times.tuple());
            (effects, st.engine.target(key).status == Status::Down)
        };
        self.perform(effects);
        Some(down)
    }

    fn probe<'a>(&'a self, schedule: &'a Schedule, env: &'a ExecEnv) -> ProbeFuture<'a> {
        self.prober.probe(schedule, env)
    }
}

impl Outbox for Inner {
    fn health_config(&self) -> Arc<HealthConfig> {
        self.state().cfg.clone()
    }

    fn record(&self, check: &str, targets: &str, event: &str, detail: String) {
        Inner::record(self, check, targets, event, detail);
    }
}

/// Appends to a ring of at most [`HISTORY`] entries.
fn push<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    let mut h = lock(ring);
    if h.len() == HISTORY {
        h.pop_front();
    }
    h.push_back(item);
}

/// Deletes history older than the retention, at once and every hour.
async fn prune_hourly(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let keep = ms(inner.state().cfg.history_retention);
        inner.to_store(|| store::StoreOp::Prune(wall_ms().saturating_sub(keep)));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
