//! The monitor: runs the probes on their schedules, feeds the rule engine, and carries out
//! what it decides — the director's real servers follow their checks, alerts go to their
//! sinks (a burst across many targets grouped into one notification), and everything is
//! recorded in the history.
//!
//! Scheduling (mon's, plus thresholds): each (check, target) has one task, so a check never
//! runs twice at once against the same target. Runs start every `interval` (`failure-interval`
//! while the target is down), start to start; a run that overruns is followed at once by the
//! next. The first run starts at a random point within `health.randstart` (default: the
//! check's interval) so that a thousand checks do not fire together. At most
//! `health.max-concurrent` probes run at once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_core::api::{
    DeliveryStatus, DowntimeEntry, HealthCheckStatus, HealthEvent, HealthTargetStatus, RealHealth,
    SilenceStatus,
};
use herd_core::config::health::HealthConfig;
use herd_core::config::{find_service, host_port, real_matches, Config};
use herd_core::model::ServiceKey;
use herd_rules::spec::{AlertOn, CheckKind, CheckSpec, OnFailure, Sink, Targets};
use herd_rules::{Engine, Event, Key, Silence, Status};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::alert::{self, Kind, Notice};
use crate::history::Store;
use crate::probe::{self, ExecEnv};

/// What the monitor needs from the director.
pub trait Director: Send + Sync + fmt::Debug {
    /// Applies a verdict on a real server of a virtual service.
    fn set_health(&self, service: &ServiceKey, real: SocketAddr, health: RealHealth);
}

/// Entries kept in the in-memory history.
const HISTORY: usize = 2000;

/// How long alerts of one check and rule are collected into one notification.
pub const GROUP_WAIT: Duration = Duration::from_secs(1);

/// A running monitor. Dropping it stops every probe.
#[derive(Debug)]
pub struct Monitor {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    cfg: HealthConfig,
    engine: Mutex<Engine>,
    /// Per (check, target): what to probe.
    targets: HashMap<Key, probe::Target>,
    /// Per (check, target) of a service check: the real server it stands for.
    bindings: HashMap<Key, (ServiceKey, SocketAddr)>,
    /// Every real server of every service, for the director's initial sync.
    reals: Vec<(ServiceKey, SocketAddr)>,
    director: Arc<dyn Director>,
    sem: Semaphore,
    alerts: mpsc::UnboundedSender<Pending>,
    history: Mutex<VecDeque<HealthEvent>>,
    downtime: Mutex<VecDeque<DowntimeEntry>>,
    /// To the history file's writer thread, if there is a file.
    store: Option<Mutex<std::sync::mpsc::Sender<StoreOp>>>,
    /// Per check: notifications delivered and failed (shared by name with the monitor a reload
    /// replaces, so that its last deliveries still count).
    sent: Vec<Arc<[std::sync::atomic::AtomicU64; 2]>>,
}

/// Work for the history file's writer.
#[derive(Debug)]
enum StoreOp {
    Event(HealthEvent),
    Outage(DowntimeEntry),
    /// Delete what is older than this (ms since the epoch).
    Prune(u64),
}

/// Starts the thread that owns the history file; it ends when the monitor is gone.
fn start_store(path: &std::path::Path) -> Result<std::sync::mpsc::Sender<StoreOp>, String> {
    let mut store = Store::open(path)?;
    let (tx, rx) = std::sync::mpsc::channel::<StoreOp>();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("herd-history".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                // Everything queued meanwhile goes in the same transaction.
                let (mut events, mut outages, mut prune) = (Vec::new(), Vec::new(), None);
                for op in std::iter::once(first).chain(rx.try_iter()) {
                    match op {
                        StoreOp::Event(e) => events.push(e),
                        StoreOp::Outage(o) => outages.push(o),
                        StoreOp::Prune(t) => prune = Some(t),
                    }
                }
                if let Err(e) = store.append(&events, &outages) {
                    tracing::error!(file = %shown, error = %e, "cannot write the health history");
                }
                if let Some(t) = prune {
                    match store.prune(t) {
                        Ok(n) if n > 0 => tracing::info!(file = %shown, rows = n, "old health history deleted"),
                        Ok(_) => {}
                        Err(e) => tracing::error!(file = %shown, error = %e, "cannot prune the health history"),
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the history writer: {e}"))?;
    Ok(tx)
}

/// An alert waiting to be grouped.
#[derive(Debug)]
struct Pending {
    check: usize,
    rule: usize,
    kind: Kind,
    host: String,
    summary: String,
    detail: String,
    times: (u64, u64, u64),
}

impl Monitor {
    /// Resolves the targets of every check and starts them. `previous` hands over the state
    /// of a monitor being replaced (a reload): target states, silences and disables of the
    /// checks and targets that still exist. Must run inside a tokio runtime.
    pub fn start(
        config: &Config,
        director: Arc<dyn Director>,
        previous: Option<&Monitor>,
    ) -> Monitor {
        let cfg = config.health.clone();
        let mut targets = HashMap::new();
        let mut bindings = HashMap::new();
        let mut engine_checks = Vec::new();
        for (ci, spec) in cfg.checks.iter().enumerate() {
            let mut names = Vec::new();
            for (ti, (name, target, binding)) in resolve(config, spec).into_iter().enumerate() {
                let key = Key {
                    check: ci,
                    target: ti,
                };
                names.push(name);
                targets.insert(key, target);
                if let Some(b) = binding {
                    bindings.insert(key, b);
                }
            }
            engine_checks.push((spec.clone(), names));
        }
        let mut engine = Engine::new(engine_checks, wall_ms());
        if let Some(prev) = previous {
            let old = prev.inner.engine();
            engine.adopt(&old);
        }
        let sent = cfg
            .checks
            .iter()
            .map(|c| {
                previous
                    .and_then(|p| {
                        let i = p.inner.cfg.checks.iter().position(|o| o.name == c.name)?;
                        p.inner.sent.get(i).cloned()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let reals = config
            .lb
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(move |r| (s.spec.key, r.address)))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let store = cfg.history.as_deref().and_then(|p| match start_store(p) {
            Ok(tx) => Some(Mutex::new(tx)),
            Err(e) => {
                tracing::error!(error = %e, "health history kept in memory only");
                None
            }
        });
        let inner = Arc::new(Inner {
            sem: Semaphore::new(cfg.max_concurrent.max(1)),
            cfg,
            engine: Mutex::new(engine),
            targets,
            bindings,
            reals,
            director,
            alerts: tx,
            history: Mutex::new(VecDeque::new()),
            downtime: Mutex::new(VecDeque::new()),
            store,
            sent,
        });
        inner.sync_all();
        let mut tasks = vec![tokio::spawn(dispatch(inner.clone(), rx))];
        if inner.store.is_some() {
            tasks.push(tokio::spawn(prune_hourly(inner.clone())));
        }
        let mut keys: Vec<Key> = inner.targets.keys().copied().collect();
        keys.sort();
        for key in keys {
            let spec = &inner.cfg.checks[key.check];
            let spread = inner.cfg.randstart.unwrap_or(spec.interval);
            let delay = random_below(spread);
            tasks.push(tokio::spawn(run_target(inner.clone(), key, delay)));
        }
        Monitor { inner, tasks }
    }

    /// Stops every probe and the alert dispatch (alerts already running finish).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Checks and their targets, for `herd health list` and the dashboard.
    pub fn status(&self) -> (Vec<HealthCheckStatus>, Vec<SilenceStatus>) {
        let now = wall_ms();
        let mut e = self.inner.engine();
        let silences: Vec<SilenceStatus> = e
            .silences(now)
            .iter()
            .map(|s| SilenceStatus {
                id: s.id,
                check: s.check.clone(),
                target: s.target.clone(),
                until_ms: s.until_ms,
                until_recovery: s.until_recovery,
                author: s.author.clone(),
                reason: s.reason.clone(),
                created_ms: s.created_ms,
            })
            .collect();
        let checks = e
            .checks()
            .enumerate()
            .map(|(ci, (spec, targets))| HealthCheckStatus {
                name: spec.name.clone(),
                kind: spec.kind.type_name().to_string(),
                group: group_name(spec),
                interval_ms: ms(spec.interval),
                alerts_delivered: self
                    .inner
                    .sent
                    .get(ci)
                    .map_or(0, |c| c[0].load(std::sync::atomic::Ordering::Relaxed)),
                alerts_failed: self
                    .inner
                    .sent
                    .get(ci)
                    .map_or(0, |c| c[1].load(std::sync::atomic::Ordering::Relaxed)),
                disabled: !(0..targets.len()).any(|ti| {
                    e.enabled(Key {
                        check: ci,
                        target: ti,
                    })
                }) && !targets.is_empty(),
                targets: targets
                    .iter()
                    .map(|t| HealthTargetStatus {
                        target: t.name.clone(),
                        status: t.status.to_string(),
                        since_ms: t.since_ms,
                        last_ms: t.last_ms,
                        verdict: t.last.as_ref().map(|o| o.verdict.as_str().to_string()),
                        summary: t
                            .last
                            .as_ref()
                            .map(|o| o.summary.clone())
                            .unwrap_or_default(),
                        latency_us: t
                            .last
                            .as_ref()
                            .map(|o| u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX)),
                        flapping: t.flapping,
                        disabled: t.disabled,
                        silenced: silences
                            .iter()
                            .find(|s| {
                                s.check.as_deref().is_none_or(|c| c == spec.name)
                                    && s.target.as_deref().is_none_or(|x| x == t.name)
                            })
                            .map(|s| s.id),
                    })
                    .collect(),
            })
            .collect();
        (checks, silences)
    }

    /// The last `limit` history entries, oldest first: from the history file if there is
    /// one (so they outlive restarts), else from memory.
    pub fn history(&self, limit: usize) -> Vec<HealthEvent> {
        if let Some(path) = &self.inner.cfg.history {
            match Store::open_read(path).and_then(|s| s.recent(limit)) {
                Ok(v) => return v,
                Err(e) => tracing::warn!(error = %e, "reading the history from memory instead"),
            }
        }
        last(&self.inner.history, limit)
    }

    /// The last `limit` outages, oldest first (mon's downtime log).
    pub fn downtime(&self, limit: usize) -> Vec<DowntimeEntry> {
        if let Some(path) = &self.inner.cfg.history {
            match Store::open_read(path).and_then(|s| s.downtime(limit)) {
                Ok(v) => return v,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the downtime log from memory instead")
                }
            }
        }
        last(&self.inner.downtime, limit)
    }

    pub fn silence(
        &self,
        check: Option<String>,
        target: Option<String>,
        secs: Option<u64>,
        until_recovery: bool,
        author: String,
        reason: String,
    ) -> Result<u64, String> {
        let now = wall_ms();
        let s = Silence {
            id: 0,
            check,
            target,
            until_ms: secs.map(|s| now.saturating_add(s.saturating_mul(1000))),
            until_recovery,
            author,
            reason,
            created_ms: now,
        };
        let (c, t) = (s.check.clone(), s.target.clone());
        let id = self.inner.engine().silence(s).map_err(|e| e.to_string())?;
        self.inner.record(
            c.as_deref().unwrap_or("*"),
            t.as_deref().unwrap_or("*"),
            "silenced",
            format!("silence #{id}"),
        );
        Ok(id)
    }

    pub fn unsilence(&self, id: u64) -> Result<(), String> {
        if self.inner.engine().unsilence(id) {
            Ok(())
        } else {
            Err(format!("no silence #{id}"))
        }
    }

    pub fn set_disabled(
        &self,
        check: &str,
        target: Option<&str>,
        disabled: bool,
    ) -> Result<(), String> {
        self.inner.engine().set_disabled(check, target, disabled)?;
        self.inner.record(
            check,
            target.unwrap_or("*"),
            if disabled { "disabled" } else { "enabled" },
            String::new(),
        );
        Ok(())
    }

    /// Sends a test notification through every alert rule of a check, now.
    pub async fn test_alert(&self, check: &str) -> Result<Vec<DeliveryStatus>, String> {
        let ci = self
            .inner
            .engine()
            .check_index(check)
            .ok_or_else(|| format!("no check named {check:?}"))?;
        let spec = &self.inner.cfg.checks[ci];
        if spec.alerts.is_empty() {
            return Err(format!("check {check} has no alerts"));
        }
        let now = wall_ms() / 1000;
        let hosts: Vec<String> = self
            .inner
            .engine()
            .checks()
            .nth(ci)
            .map_or(vec![], |(_, ts)| {
                ts.iter().map(|t| t.name.clone()).collect()
            });
        let notice = Notice {
            kind: Kind::Test,
            check: spec.name.clone(),
            group: group_name(spec),
            hosts: hosts.clone(),
            summary: format!("test alert for {}", spec.name),
            detail: String::new(),
            time: now,
            first_failure: 0,
            last_failure: 0,
            last_success: 0,
        };
        let mut out = Vec::new();
        for rule in &spec.alerts {
            let d = alert::send(&rule.sink, &notice, rule.timeout, &self.inner.cfg).await;
            self.inner.count_delivery(ci, d.ok);
            self.inner
                .record(check, &hosts.join(" "), "test", describe(&rule.sink, &d));
            out.push(DeliveryStatus {
                sink: sink_name(&rule.sink),
                ok: d.ok,
                error: d.error,
                took_ms: d.took_ms,
            });
        }
        Ok(out)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// Counts one notification of check `ci`.
    fn count_delivery(&self, ci: usize, ok: bool) {
        if let Some(c) = self.sent.get(ci) {
            c[usize::from(!ok)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, check: &str, targets: &str, event: &str, detail: String) {
        let e = HealthEvent {
            time_ms: wall_ms(),
            check: check.to_string(),
            targets: targets.to_string(),
            event: event.to_string(),
            detail,
        };
        self.to_store(|| StoreOp::Event(e.clone()));
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(e);
    }

    fn to_store(&self, op: impl FnOnce() -> StoreOp) {
        if let Some(tx) = &self.store {
            let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(op());
        }
    }

    fn outage(&self, o: DowntimeEntry) {
        self.to_store(|| StoreOp::Outage(o.clone()));
        let mut d = self.downtime.lock().unwrap_or_else(|p| p.into_inner());
        if d.len() == HISTORY {
            d.pop_front();
        }
        d.push_back(o);
    }

    /// Tells the director the verdict on every real server (at start and after a reload):
    /// servers no check has found down are up, even if an earlier monitor had taken them out.
    fn sync_all(&self) {
        for (svc, real) in &self.reals {
            self.sync(svc, *real);
        }
    }

    /// A real server is up unless one of its checks has it down; `remove` wins over `quiesce`.
    fn sync(&self, svc: &ServiceKey, real: SocketAddr) {
        let verdict = {
            let e = self.engine();
            let mut v = RealHealth::Up;
            for (key, b) in &self.bindings {
                if b != &(*svc, real) || e.target(*key).status != Status::Down {
                    continue;
                }
                v = match (v, e.spec(key.check).on_failure) {
                    (_, OnFailure::Remove) | (RealHealth::Removed, _) => RealHealth::Removed,
                    _ => RealHealth::Quiesced,
                };
            }
            v
        };
        self.director.set_health(svc, real, verdict);
    }

    fn handle(&self, events: Vec<Event>, outcome_times: (u64, u64, u64)) {
        for ev in events {
            match ev {
                Event::StateChanged {
                    key,
                    from,
                    to,
                    from_since_ms,
                } => {
                    let (check, target, summary) = self.names(key);
                    tracing::info!(%check, %target, %from, %to, "{summary}");
                    if from == Status::Down && to == Status::Up {
                        self.outage(DowntimeEntry {
                            check: check.clone(),
                            target: target.clone(),
                            down_ms: from_since_ms,
                            up_ms: wall_ms(),
                            summary: self.last_failure(key),
                        });
                    }
                    self.record(&check, &target, &to.to_string(), summary);
                    if let Some((svc, real)) = self.bindings.get(&key) {
                        self.sync(svc, *real);
                    }
                }
                Event::Alert {
                    key,
                    rule,
                    on,
                    summary,
                    detail,
                } => {
                    let (_, host, _) = self.names(key);
                    let _ = self.alerts.send(Pending {
                        check: key.check,
                        rule,
                        kind: if on == AlertOn::Up {
                            Kind::Up
                        } else {
                            Kind::Failure
                        },
                        host,
                        summary,
                        detail,
                        times: outcome_times,
                    });
                }
                Event::Suppressed { key, rule, on, why } => {
                    let (check, target, _) = self.names(key);
                    self.record(
                        &check,
                        &target,
                        "held",
                        format!("{on} alert #{rule}: {why}"),
                    );
                }
                Event::SilenceLifted { id } => {
                    tracing::info!(id, "silence ended: what it covers recovered");
                    self.record("*", "*", "unsilenced", format!("silence #{id}: recovered"));
                }
                Event::Flapping { key, started } => {
                    let (check, target, _) = self.names(key);
                    if started {
                        tracing::warn!(%check, %target, "flapping: alerts held until it settles");
                        let spec = &self.cfg.checks[key.check];
                        for (rule, a) in spec.alerts.iter().enumerate() {
                            if a.on == AlertOn::Down {
                                let _ = self.alerts.send(Pending {
                                    check: key.check,
                                    rule,
                                    kind: Kind::Flapping,
                                    host: target.clone(),
                                    summary: format!("{check} is flapping on {target}; alerts held until it settles"),
                                    detail: String::new(),
                                    times: outcome_times,
                                });
                            }
                        }
                    }
                    self.record(
                        &check,
                        &target,
                        if started { "flapping" } else { "settled" },
                        String::new(),
                    );
                }
            }
        }
    }

    /// The summary of the target's last failure (the one before the current pass).
    fn last_failure(&self, key: Key) -> String {
        self.engine().target(key).last_failure.clone()
    }

    fn names(&self, key: Key) -> (String, String, String) {
        let e = self.engine();
        let t = e.target(key);
        (
            e.spec(key.check).name.clone(),
            t.name.clone(),
            t.last
                .as_ref()
                .map(|o| o.summary.clone())
                .unwrap_or_default(),
        )
    }
}

/// One task per (check, target).
async fn run_target(inner: Arc<Inner>, key: Key, first: Duration) {
    tokio::time::sleep(first).await;
    let spec = inner.cfg.checks[key.check].clone();
    let Some(base) = inner.targets.get(&key).cloned() else {
        return;
    };
    let mut first_failure = 0u64;
    let mut last_failure = 0u64;
    let mut last_success = 0u64;
    loop {
        let start = tokio::time::Instant::now();
        let enabled = inner.engine().enabled(key);
        let mut down = false;
        if enabled {
            let env = {
                let e = inner.engine();
                let t = e.target(key);
                ExecEnv {
                    check: spec.name.clone(),
                    last_summary: t
                        .last
                        .as_ref()
                        .map(|o| o.summary.clone())
                        .unwrap_or_default(),
                    last_detail: t
                        .last
                        .as_ref()
                        .map(|o| o.detail.clone())
                        .unwrap_or_default(),
                    last_failure,
                    first_failure,
                    last_success,
                    mondir: inner.cfg.mondir.clone(),
                }
            };
            let outcome = {
                let _permit = inner.sem.acquire().await;
                let target = resolve_addr(&base, &spec).await;
                probe::run(&spec.kind, &target, spec.timeout, &env).await
            };
            let now = wall_ms();
            if outcome.verdict.passes() {
                last_success = now / 1000;
                first_failure = 0;
            } else {
                last_failure = now / 1000;
                if first_failure == 0 {
                    first_failure = now / 1000;
                }
            }
            let events = inner
                .engine()
                .observe(key, outcome, now, &crate::localtime::now());
            inner.handle(events, (first_failure, last_failure, last_success));
            down = inner.engine().target(key).status == Status::Down;
        }
        let every = if down {
            spec.failure_interval
        } else {
            spec.interval
        };
        tokio::time::sleep_until(start + every).await;
    }
}

/// Deletes history older than the retention, at start and every hour.
async fn prune_hourly(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let keep = ms(inner.cfg.history_retention);
        inner.to_store(|| StoreOp::Prune(wall_ms().saturating_sub(keep)));
    }
}

/// Groups alerts of one (check, rule, kind) arriving within [`GROUP_WAIT`] into one
/// notification, then sends it.
async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + GROUP_WAIT;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.push(p);
        }
        let mut groups: Vec<(usize, usize, Kind, Vec<Pending>)> = Vec::new();
        for p in batch {
            match groups
                .iter_mut()
                .find(|g| g.0 == p.check && g.1 == p.rule && g.2 == p.kind)
            {
                Some(g) => g.3.push(p),
                None => groups.push((p.check, p.rule, p.kind, vec![p])),
            }
        }
        for (check, rule, kind, ps) in groups {
            let inner = inner.clone();
            // Alert programs run concurrently; each has its own timeout.
            tokio::spawn(async move {
                let spec = &inner.cfg.checks[check];
                let Some(a) = spec.alerts.get(rule) else {
                    return;
                };
                let mut hosts: Vec<String> = ps.iter().map(|p| p.host.clone()).collect();
                hosts.dedup();
                let summary = if ps.len() == 1 {
                    ps[0].summary.clone()
                } else {
                    format!("{} targets: {}", ps.len(), hosts.join(" "))
                };
                let detail = ps
                    .iter()
                    .map(|p| {
                        if ps.len() == 1 {
                            p.detail.clone()
                        } else {
                            format!("{}: {}\n{}", p.host, p.summary, p.detail)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("");
                let t = ps.iter().map(|p| p.times).fold((u64::MAX, 0, 0), |acc, x| {
                    (acc.0.min(x.0.max(1)), acc.1.max(x.1), acc.2.max(x.2))
                });
                let notice = Notice {
                    kind,
                    check: spec.name.clone(),
                    group: group_name(spec),
                    hosts: hosts.clone(),
                    summary,
                    detail,
                    time: wall_ms() / 1000,
                    first_failure: if t.0 == u64::MAX { 0 } else { t.0 },
                    last_failure: t.1,
                    last_success: t.2,
                };
                let d = alert::send(&a.sink, &notice, a.timeout, &inner.cfg).await;
                inner.count_delivery(check, d.ok);
                if !d.ok {
                    tracing::warn!(check = %spec.name, error = %d.error, "alert failed");
                }
                let event = match kind {
                    Kind::Up => "upalert",
                    Kind::Flapping => "flapping-alert",
                    Kind::Test => "test",
                    Kind::Failure => "alert",
                };
                inner.record(&spec.name, &hosts.join(" "), event, describe(&a.sink, &d));
            });
        }
    }
}

/// The last `limit` entries of a ring, oldest first.
fn last<T: Clone>(ring: &Mutex<VecDeque<T>>, limit: usize) -> Vec<T> {
    let h = ring.lock().unwrap_or_else(|p| p.into_inner());
    h.iter()
        .skip(h.len().saturating_sub(limit))
        .cloned()
        .collect()
}

fn describe(sink: &Sink, d: &alert::Delivery) -> String {
    if d.ok {
        format!("{} ok in {} ms", sink_name(sink), d.took_ms)
    } else {
        format!("{} failed: {}", sink_name(sink), d.error)
    }
}

fn sink_name(sink: &Sink) -> String {
    match sink {
        Sink::Exec { command } => format!("exec {}", command.join(" ")),
        Sink::Webhook { url, .. } => format!("webhook {url}"),
        Sink::Email { to } => format!("email {}", to.join(", ")),
        Sink::Log => "log".to_string(),
    }
}

/// The targets of a check: (name, what to probe, the real server it stands for).
type Resolved = (String, probe::Target, Option<(ServiceKey, SocketAddr)>);

fn resolve(config: &Config, spec: &CheckSpec) -> Vec<Resolved> {
    let default_port = spec.port.or(match spec.kind {
        CheckKind::Http { tls: None, .. } => Some(80),
        CheckKind::Http { tls: Some(_), .. } => Some(443),
        CheckKind::Dns { .. } => Some(53),
        _ => None,
    });
    let host = |h: &str| {
        // "ip", "ip:port", "[v6]:port", "name" or "name:port"; names are looked up at each run.
        let (name, port) = host_port(h);
        let port = spec.port.or(port).or(default_port);
        let addr = name
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| Some(SocketAddr::new(ip, port?)));
        (
            h.to_string(),
            probe::Target {
                host: name.to_string(),
                addr,
                port,
            },
            None,
        )
    };
    match &spec.targets {
        Targets::Service(s) => find_service(&config.lb, s)
            .map(|svc| {
                svc.reals
                    .iter()
                    .filter(|r| {
                        spec.reals.is_empty()
                            || spec.reals.iter().any(|x| real_matches(r.address, x))
                    })
                    .map(|r| {
                        let addr =
                            SocketAddr::new(r.address.ip(), spec.port.unwrap_or(r.address.port()));
                        (
                            r.address.to_string(),
                            probe::Target {
                                host: r.address.ip().to_string(),
                                addr: Some(addr),
                                port: Some(addr.port()),
                            },
                            Some((svc.spec.key, r.address)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Targets::Hosts(hs) => hs.iter().map(|h| host(h)).collect(),
        Targets::Group(g) => config
            .health
            .hostgroups
            .get(g)
            .map(|hs| hs.iter().map(|h| host(h)).collect())
            .unwrap_or_default(),
    }
}

/// A target given by name gets its address looked up at each run (names can move).
async fn resolve_addr(t: &probe::Target, spec: &CheckSpec) -> probe::Target {
    if t.addr.is_some() || matches!(spec.kind, CheckKind::Exec { .. }) {
        return t.clone();
    }
    // icmp has no port; the lookup still needs one.
    let port = match (t.port, &spec.kind) {
        (Some(p), _) => p,
        (None, CheckKind::Icmp) => 0,
        (None, _) => return t.clone(),
    };
    let lookup = tokio::net::lookup_host((t.host.as_str(), port));
    let addr = match tokio::time::timeout(spec.timeout, lookup).await {
        Ok(Ok(mut it)) => it.next(),
        _ => None,
    };
    probe::Target { addr, ..t.clone() }
}

fn group_name(spec: &CheckSpec) -> String {
    match &spec.targets {
        Targets::Service(s) => s.clone(),
        Targets::Group(g) => g.clone(),
        Targets::Hosts(_) => "hosts".to_string(),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A uniformly spread start offset in `[0, d)`, from the standard library's randomly keyed
/// hasher (no RNG dependency for one number per task).
fn random_below(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let n = ms(d);
    if n == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_ms());
    Duration::from_millis(h.finish() % n)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    #[tokio::test]
    async fn an_icmp_target_given_by_name_is_looked_up() {
        let cfg = herd_core::config::Config::parse(
            "t.toml",
            "[[health.check]]\nname = \"ping\"\ntype = \"icmp\"\nhosts = [\"localhost\"]\n",
        )
        .unwrap();
        let spec = &cfg.health.checks[0];
        let t = probe::Target {
            host: "localhost".into(),
            addr: None,
            port: None,
        };
        let got = resolve_addr(&t, spec).await;
        assert!(got.addr.is_some_and(|a| a.ip().is_loopback()), "{got:?}");
    }
}
