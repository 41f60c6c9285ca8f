//! One probe task per (check, target): runs start every `interval` (`failure-interval` while
//! the target is down), start to start; a run that overruns is followed at once by the next.
//! The task finds its (check, target) by name at each run, so an apply that renumbers checks
//! does not disturb it, and ends when an apply has replaced or removed it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::plan::{resolve_addr, Schedule, TaskId};
use crate::clock::wall_ms;
use crate::probe::{self, ExecEnv};
use herd_rules::Outcome;

/// A probe's future.
pub(super) type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// What runs one probe. The monitor's own runs the real probes; its tests put in a fake that
/// answers at once, so that the paused clock alone decides what happens when.
pub(super) trait Prober: Send + Sync + fmt::Debug {
    fn probe<'a>(&'a self, schedule: &'a Schedule, env: &'a ExecEnv) -> ProbeFuture<'a>;
}

/// The real probes ([`probe::run`]), a name looked up first.
#[derive(Debug)]
pub(super) struct Probes;

impl Prober for Probes {
    fn probe<'a>(&'a self, s: &'a Schedule, env: &'a ExecEnv) -> ProbeFuture<'a> {
        Box::pin(async move {
            let target = resolve_addr(&s.target, &s.kind, s.timeout).await;
            probe::run(&s.kind, &target, s.timeout, env).await
        })
    }
}

/// What a probe task needs from the monitor.
pub(super) trait Runner: Send + Sync + 'static {
    /// What the task does next, and with what.
    fn prepare(&self, id: &TaskId, generation: u64, times: &Times) -> Step;
    /// Runs the probe.
    fn probe<'a>(&'a self, schedule: &'a Schedule, env: &'a ExecEnv) -> ProbeFuture<'a>;
    /// Feeds a probe's outcome to the rule engine and carries out what follows. Returns
    /// whether the target is down now, or `None` if the task has been replaced meanwhile.
    fn observe(
        &self,
        id: &TaskId,
        generation: u64,
        outcome: Outcome,
        now: u64,
        times: Times,
    ) -> Option<bool>;
}

/// What the task does next.
pub(super) enum Step {
    /// Its (check, target) is gone or belongs to a newer task: end.
    Gone,
    /// Disabled by an operator: skip this run.
    Disabled,
    /// Probe, with this context, holding a permit of this semaphore.
    Run(ExecEnv, Arc<Semaphore>),
}

/// When the target last failed and passed, for `MON_*` variables and alert notices.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Times {
    /// Unix seconds; 0 = never (or not since the last pass, for the first failure).
    pub first_failure: u64,
    pub last_failure: u64,
    pub last_success: u64,
}

impl Times {
    fn note(&mut self, passed: bool, now_ms: u64) {
        let now = now_ms / 1000;
        if passed {
            self.last_success = now;
            self.first_failure = 0;
        } else {
            self.last_failure = now;
            if self.first_failure == 0 {
                self.first_failure = now;
            }
        }
    }

    pub fn tuple(self) -> (u64, u64, u64) {
        (self.first_failure, self.last_failure, self.last_success)
    }
}

/// The task: the first run after `first`, then on the schedule, until an apply ends it.
pub(super) async fn run_target<R: Runner>(
    inner: Arc<R>,
    id: TaskId,
    generation: u64,
    schedule: Schedule,
    first: Duration,
) {
    tokio::time::sleep(first).await;
    let mut times = Times::default();
    loop {
        let start = Instant::now();
        let down = match inner.prepare(&id, generation, &times) {
            Step::Gone => return,
            Step::Disabled => false,
            Step::Run(env, sem) => {
                let outcome = {
                    let _permit = sem.acquire().await;
                    inner.probe(&schedule, &env).await
                };
                let now = wall_ms();
                times.note(outcome.verdict.passes(), now);
                match inner.observe(&id, generation, outcome, now, times) {
                    Some(down) => down,
                    None => return,
                }
            }
        };
        let every = if down {
            schedule.failure_interval
        } else {
            schedule.interval
        };
        tokio::time::sleep_until(start + every).await;
    }
}

/// A uniformly spread start offset in `[0, d)`, from the standard library's randomly keyed
/// hasher (no RNG dependency for one number per task).
pub(super) fn random_below(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let n = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if n == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_ms());
    Duration::from_millis(h.finish() % n)
}
