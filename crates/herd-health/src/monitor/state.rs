//! What the last applied config says, with what the rule engine knows about it: the one
//! piece of the monitor behind a lock, swapped whole by an apply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::api::RealHealth;
use herd_core::config::health::HealthConfig;
use herd_core::model::ServiceKey;
use herd_rules::spec::OnFailure;
use tokio::sync::Semaphore;

use super::dispatch::Counters;
use super::plan::{Plan, TaskId};
use crate::clock::wall_ms;
use herd_rules::{Engine, Key, Status};

/// What the last applied config says, with what the rule engine knows.
#[derive(Debug)]
pub(super) struct State {
    pub cfg: Arc<HealthConfig>,
    pub engine: Engine,
    /// Per (check, target) of a service check: the real server it stands for.
    pub bindings: HashMap<Key, (ServiceKey, SocketAddr)>,
    /// Every real server of every service, for the director's sync.
    pub reals: Vec<(ServiceKey, SocketAddr)>,
    /// Per check, in config order.
    pub sent: Vec<Arc<Counters>>,
    /// The (check, target) of each probe task, and the generation of the task that runs it.
    pub keys: HashMap<TaskId, (Key, u64)>,
    /// `health.max-concurrent` permits.
    pub sem: Arc<Semaphore>,
}

impl State {
    pub fn empty() -> State {
        let cfg = HealthConfig::default();
        State {
            sem: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            cfg: Arc::new(cfg),
            engine: Engine::new(Vec::new(), 0),
            bindings: HashMap::new(),
            reals: Vec::new(),
            sent: Vec::new(),
            keys: HashMap::new(),
        }
    }

    /// The state for `plan`, taking over from `old` what still applies. `keys` is left for
    /// the caller, who knows which tasks run.
    pub fn next(old: &State, plan: Plan, cfg: HealthConfig) -> State {
        let sent = plan
            .checks
            .iter()
            .map(|(c, _)| {
                old.engine
                    .check_index(&c.name)
                    .and_then(|i| old.sent.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        let mut engine = Engine::new(plan.checks, wall_ms());
        engine.adopt(&old.engine);
        let sem = if cfg.max_concurrent == old.cfg.max_concurrent {
            old.sem.clone()
        } else {
            Arc::new(Semaphore::new(cfg.max_concurrent.max(1)))
        };
        State {
            cfg: Arc::new(cfg),
            engine,
            bindings: plan.bindings,
            reals: plan.reals,
            sent,
            keys: HashMap::new(),
            sem,
        }
    }

    /// The (check, target) of a task, if the task is still the one that runs it.
    pub fn key(&self, id: &TaskId, generation: u64) -> Option<Key> {
        match self.keys.get(id) {
            Some(&(key, g)) if g == generation => Some(key),
            _ => None,
        }
    }

    /// A real server is up unless one of its checks has it down; `remove` wins over `quiesce`.
    pub fn verdict(&self, svc: &ServiceKey, real: SocketAddr) -> RealHealth {
        let mut v = RealHealth::Up;
        for (key, b) in &self.bindings {
            if b != &(*svc, real) || self.engine.target(*key).status != Status::Down {
                continue;
            }
            v = match (v, self.engine.spec(key.check).on_failure) {
                (_, OnFailure::Remove) | (RealHealth::Removed, _) => RealHealth::Removed,
                _ => RealHealth::Quiesced,
            };
        }
        v
    }
}
