//! The monitor's brain, without I/O: check results in, state changes and alerts out.
//!
//! [`Engine`] keeps, for every (check, target), the up/down state with rise/fall hysteresis,
//! the outage's failures and alerts, flap detection, and the silences and disables that
//! operators set. Time comes in as arguments: `now_ms` (milliseconds since the Unix epoch, so
//! silences can carry wall-clock expiries) and the [`LocalTime`] that alert periods are
//! evaluated in. Tests drive it with a fake clock.
//!
//! Rules, in mon's words where mon has them:
//! - A target's first result sets its state; after that it goes down after `fall` consecutive
//!   failures and up after `rise` consecutive passes.
//! - Down alerts fire only while the target is down, and only when every rule of the alert
//!   agrees: inside its `period`; `after` consecutive failures (or `after` failures `within` a
//!   window, not necessarily consecutive); the first of the outage, or `every` since the last
//!   one; fewer than `max` sent in this outage.
//! - An up alert fires once when the target is up again after a down alert went out.
//! - A check whose parent (`depends`) is down for the same target, a silenced target and a
//!   flapping one have their alerts held: reported once per outage as [`Event::Suppressed`],
//!   not sent. State changes are never held: the director must see the truth.
//! - Flapping: `flap.changes` state changes within `flap.window` start it (one
//!   [`Event::Flapping`] notice); it ends once the target has kept its state for a whole
//!   window, and whatever alert is then due goes out.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::period::LocalTime;
use crate::spec::{AlertOn, CheckSpec};
use serde::Serialize;

/// A silence that names a check or target the engine does not know (it would silence
/// nothing); the variant says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("no check named {0:?}")]
    Check(String),
    #[error("check {check} has no target {target:?}")]
    TargetOfCheck { check: String, target: String },
    #[error("no check has a target {0:?}")]
    Target(String),
}

/// A probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Nagios' WARNING: passes (the target stays in service) but is shown as such.
    Warning,
    Critical,
    /// Nagios' UNKNOWN, or a probe that could not run: counts as a failure.
    Unknown,
}

impl Verdict {
    /// Whether the target passes.
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::Warning)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Critical => "critical",
            Verdict::Unknown => "unknown",
        }
    }
}

/// What one run of a probe against one target found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    /// One line (mon's summary line).
    pub summary: String,
    /// The rest of the output (mon's detail), truncated by the prober.
    pub detail: String,
    pub latency: Duration,
}

impl Outcome {
    /// A passing outcome with this summary.
    pub fn ok(summary: impl Into<String>) -> Outcome {
        Outcome::new(Verdict::Ok, summary)
    }

    /// A failing outcome with this summary.
    pub fn fail(summary: impl Into<String>) -> Outcome {
        Outcome::new(Verdict::Critical, summary)
    }

    pub fn new(verdict: Verdict, summary: impl Into<String>) -> Outcome {
        Outcome {
            verdict,
            summary: summary.into(),
            detail: String::new(),
            latency: Duration::ZERO,
        }
    }
}

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No result yet.
    Unknown,
    Up,
    Down,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
        })
    }
}

/// Why an alert was held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum Suppression {
    /// An operator's silence (mon's `ack`).
    Silenced { id: u64 },
    /// The parent check is down for this target (mon's `depend`).
    Dependency { parent: String },
    /// The target is flapping.
    Flapping,
}

impl fmt::Display for Suppression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Suppression::Silenced { id } => write!(f, "silenced (#{id})"),
            Suppression::Dependency { parent } => write!(f, "parent check {parent} is down"),
            Suppression::Flapping => f.write_str("flapping"),
        }
    }
}

/// A (check, target) pair, by index into the engine's checks and that check's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub check: usize,
    pub target: usize,
}

/// What the engine decided after a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The target's state changed; the director follows `to`. `from` had held since
    /// `from_since_ms`.
    StateChanged {
        key: Key,
        from: Status,
        to: Status,
        from_since_ms: u64,
    },
    /// Send alert rule `rule` of the check.
    Alert {
        key: Key,
        rule: usize,
        on: AlertOn,
        summary: String,
        detail: String,
    },
    /// Alert rule `rule` would have fired but is held.
    Suppressed {
        key: Key,
        rule: usize,
        on: AlertOn,
        why: Suppression,
    },
    /// Flapping started (`started`) or settled.
    Flapping { key: Key, started: bool },
    /// A silence set to last until recovery ended: every target it covers is up again.
    SilenceLifted { id: u64 },
}

/// An operator's silence: alerts of matching targets are held until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silence {
    pub id: u64,
    /// Check name; `None` = every check.
    pub check: Option<String>,
    /// Target; `None` = every target of the check(s).
    pub target: Option<String>,
    /// Milliseconds since the Unix epoch; `None` = until lifted.
    pub until_ms: Option<u64>,
    /// Also ends when every target it covers is up again (mon's `ack`).
    pub until_recovery: bool,
    pub author: String,
    pub reason: String,
    pub created_ms: u64,
}

impl Silence {
    fn matches(&self, check: &str, target: &str) -> bool {
        self.check.as_deref().is_none_or(|c| c == check)
            && self.target.as_deref().is_none_or(|t| t == target)
    }

    fn live(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| now_ms < u)
    }
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    /// Down alerts sent in this outage.
    sent: u32,
    last_ms: Option<u64>,
    /// A hold was already reported in this outage.
    held: bool,
}

/// The engine's record of one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub name: String,
    pub status: Status,
    /// When the state last changed (ms since the epoch).
    pub since_ms: u64,
    pub last: Option<Outcome>,
    pub last_ms: Option<u64>,
    pub flapping: bool,
    pub disabled: bool,
    /// The summary of the last failed run.
    pub last_failure: String,
    ok_run: u32,
    fail_run: u32,
    /// Times of recent failures, newest last (for `after` + `within`).
    failures: VecDeque<u64>,
    /// Times of recent state changes (for flap detection).
    changes: VecDeque<u64>,
    rules: Vec<RuleState>,
    /// A down alert went out and no up alert since.
    down_alerted: bool,
}

/// Failure times kept per target: enough for any `after`.
const MAX_FAILURES_KEPT: usize = 1024;

#[derive(Debug)]
struct CheckState {
    spec: CheckSpec,
    targets: Vec<TargetState>,
    disabled: bool,
}

/// The rule engine.
#[derive(Debug)]
pub struct Engine {
    checks: Vec<CheckState>,
    by_name: HashMap<String, usize>,
    silences: Vec<Silence>,
    next_silence: u64,
}

impl Engine {
    /// Checks with their resolved target names (a real server's `ip:port`, or a host).
    pub fn new(checks: Vec<(CheckSpec, Vec<String>)>, now_ms: u64) -> Engine {
        let mut by_name = HashMap::new();
        let checks: Vec<CheckState> = checks
            .into_iter()
            .enumerate()
            .map(|(i, (spec, targets))| {
                by_name.insert(spec.name.clone(), i);
                let targets = targets
                    .into_iter()
                    .map(|name| TargetState {
                        name,
                        status: Status::Unknown,
                        since_ms: now_ms,
                        last: None,
                        last_ms: None,
                        flapping: false,
                        disabled: false,
                        last_failure: String::new(),
                        ok_run: 0,
                        fail_run: 0,
                        failures: VecDeque::new(),
                        changes: VecDeque::new(),
                        rules: vec![RuleState::default(); spec.alerts.len()],
                        down_alerted: false,
                    })
                    .collect();
                CheckState {
                    disabled: spec.disabled,
                    spec,
                    targets,
                }
            })
            .collect();
        Engine {
            checks,
            by_name,
            silences: Vec::new(),
            next_silence: 1,
        }
    }

    /// Takes over what `old` knew (a reload): the state of every (check, target) that exists
    /// in both by name, the silences, and disables. Alert counters of a check whose alert
    /// rules changed start afresh.
    pub fn adopt(&mut self, old: &Engine) {
        for c in &mut self.checks {
            let Some(&oi) = old.by_name.get(&c.spec.name) else {
                continue;
            };
            let oc = &old.checks[oi];
            c.disabled = oc.disabled;
            let same_rules = oc.spec.alerts == c.spec.alerts;
            for t in &mut c.targets {
                if let Some(ot) = oc.targets.iter().find(|x| x.name == t.name) {
                    let rules = std::mem::take(&mut t.rules);
                    *t = ot.clone();
                    if !same_rules {
                        t.rules = rules;
                    }
                }
            }
        }
        self.silences = old.silences.clone();
        self.next_silence = old.next_silence;
    }

    /// The checks, in config order.
    pub fn checks(&self) -> impl Iterator<Item = (&CheckSpec, &[TargetState])> {
        self.checks.iter().map(|c| (&c.spec, c.targets.as_slice()))
    }

    pub fn spec(&self, check: usize) -> &CheckSpec {
        &self.checks[check].spec
    }

    pub fn target(&self, key: Key) -> &TargetState {
        &self.checks[key.check].targets[key.target]
    }

    pub fn check_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Whether the check should run against the target now.
    pub fn enabled(&self, key: Key) -> bool {
        let c = &self.checks[key.check];
        !c.disabled && !c.targets[key.target].disabled
    }

    /// Disables (or enables) a whole check or one of its targets (mon's `disable`/`enable`).
    /// A disabled target keeps its state; it is not checked until enabled.
    pub fn set_disabled(
        &mut self,
        check: &str,
        target: Option<&str>,
        disabled: bool,
    ) -> Result<(), String> {
        let i = self
            .check_index(check)
            .ok_or_else(|| format!("no check named {check:?}"))?;
        let c = &mut self.checks[i];
        match target {
            None => c.disabled = disabled,
            Some(t) => {
                let ts = c
                    .targets
                    .iter_mut()
                    .find(|x| x.name == t)
                    .ok_or_else(|| format!("check {check} has no target {t:?}"))?;
                ts.disabled = disabled;
            }
        }
        Ok(())
    }

    /// Adds a silence and returns its id. Unknown check or target names are errors, so that
    /// a typo does not silence nothing.
    pub fn silence(&mut self, mut s: Silence) -> Result<u64, SilenceError> {
        if let Some(c) = &s.check {
            let i = self
                .check_index(c)
                .ok_or_else(|| SilenceError::Check(c.clone()))?;
            if let Some(t) = &s.target {
                if !self.checks[i].targets.iter().any(|x| &x.name == t) {
                    return Err(SilenceError::TargetOfCheck {
                        check: c.clone(),
                        target: t.clone(),
                    });
                }
            }
        } else if let Some(t) = &s.target {
            if !self
                .checks
                .iter()
                .any(|c| c.targets.iter().any(|x| &x.name == t))
            {
                return Err(SilenceError::Target(t.clone()));
            }
        }
        s.id = self.next_silence;
        self.next_silence += 1;
        let id = s.id;
        self.silences.push(s);
        Ok(id)
    }

    /// Lifts a silence; false if there was none with this id.
    pub fn unsilence(&mut self, id: u64) -> bool {
        let n = self.silences.len();
        self.silences.retain(|s| s.id != id);
        self.silences.len() != n
    }

    /// The silences still in force.
    pub fn silences(&mut self, now_ms: u64) -> &[Silence] {
        self.silences.retain(|s| s.live(now_ms));
        &self.silences
    }

    fn silenced_by(&self, check: &str, target: &str, now_ms: u64) -> Option<u64> {
        self.silences
            .iter()
            .find(|s| s.live(now_ms) && s.matches(check, target))
            .map(|s| s.id)
    }

    /// The first parent check that is down for this target: for the same target if the
    /// parent checks it, else if any of the parent's targets is down.
    fn parent_down(&self, check: usize, target: &str) -> Option<String> {
        for p in &self.checks[check].spec.depends {
            let Some(&pi) = self.by_name.get(p) else {
                continue;
            };
            let pts = &self.checks[pi].targets;
            let down = match pts.iter().find(|t| t.name == target) {
                Some(t) => t.status == Status::Down,
                None => pts.iter().any(|t| t.status == Status::Down),
            };
            if down {
                return Some(p.clone());
            }
        }
        None
    }

    /// Feeds one result; returns what follows from it, in order.
    pub fn observe(
        &mut self,
        key: Key,
        outcome: Outcome,
        now_ms: u64,
        local: &LocalTime,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let check_name = self.checks[key.check].spec.name.clone();
        let target_name = self.checks[key.check].targets[key.target].name.clone();
        // Holds other than flapping are the same for every rule; work them out first.
        let outside_hold = match self.silenced_by(&check_name, &target_name, now_ms) {
            Some(id) => Some(Suppression::Silenced { id }),
            None => self
                .parent_down(key.check, &target_name)
                .map(|parent| Suppression::Dependency { parent }),
        };

        let c = &mut self.checks[key.check];
        let spec = &c.spec;
        let t = &mut c.targets[key.target];
        let passes = outcome.verdict.passes();
        count_result(t, &outcome, now_ms);
        let (from, to) = transition(spec, t, key, passes, now_ms, &mut out);
        detect_flapping(spec, t, key, now_ms, &mut out);
        let hold = if t.flapping {
            Some(Suppression::Flapping)
        } else {
            outside_hold
        };
        let alert = Firing {
            key,
            outcome: &outcome,
            hold: &hold,
            now_ms,
            local,
        };
        match t.status {
            Status::Down => down_alerts(spec, t, &alert, &mut out),
            Status::Up if t.down_alerted && hold != Some(Suppression::Flapping) => {
                up_alerts(spec, t, &alert, &mut out)
            }
            _ => {}
        }
        let recovered = from == Status::Down && to == Status::Up;
        t.last = Some(outcome);
        t.last_ms = Some(now_ms);
        if recovered {
            self.lift_on_recovery(&check_name, &target_name, &mut out);
        }
        out
    }

    /// Ends the until-recovery silences covering a target that just came up, when nothing
    /// else they cover is down.
    fn lift_on_recovery(&mut self, check: &str, target: &str, out: &mut Vec<Event>) {
        let checks = &self.checks;
        let still_down = |s: &Silence| {
            checks
                .iter()
                .filter(|c| s.check.as_deref().is_none_or(|n| n == c.spec.name))
                .flat_map(|c| &c.targets)
                .any(|t| {
                    s.target.as_deref().is_none_or(|n| n == t.name) && t.status == Status::Down
                })
        };
        let mut lifted = Vec::new();
        self.silences.retain(|s| {
            let ends = s.until_recovery && s.matches(check, target) && !still_down(s);
            if ends {
                lifted.push(s.id);
            }
            !ends
        });
        out.extend(lifted.into_iter().map(|id| Event::SilenceLifted { id }));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One result into the target's runs of passes and failures.
fn count_result(t: &mut TargetState, outcome: &Outcome, now_ms: u64) {
    let passes = outcome.verdict.passes();
    if passes {
        t.ok_run = t.ok_run.saturating_add(1);
        t.fail_run = 0;
    } else {
        t.fail_run = t.fail_run.saturating_add(1);
        t.ok_run = 0;
        t.last_failure.clone_from(&outcome.summary);
        t.failures.push_back(now_ms);
        if t.failures.len() > MAX_FAILURES_KEPT {
            t.failures.pop_front();
        }
    }
}

/// The target's state after the result, with hysteresis; a change is an event, and a new
/// outage starts its alert counters afresh.
fn transition(
    spec: &CheckSpec,
    t: &mut TargetState,
    key: Key,
    passes: bool,
    now_ms: u64,
    out: &mut Vec<Event>,
) -> (Status, Status) {
    let from = t.status;
    let to = match from {
        Status::Unknown if passes => Status::Up,
        Status::Unknown => Status::Down,
        Status::Up if t.fail_run >= spec.fall.max(1) => Status::Down,
        Status::Down if t.ok_run >= spec.rise.max(1) => Status::Up,
        s => s,
    };
    if to != from {
        let from_since_ms = t.since_ms;
        t.status = to;
        t.since_ms = now_ms;
        out.push(Event::StateChanged {
            key,
            from,
            to,
            from_since_ms,
        });
        if from != Status::Unknown {
            t.changes.push_back(now_ms);
        }
        if to == Status::Down {
            // A new outage: its own alert counters.
            for r in &mut t.rules {
                *r = RuleState::default();
            }
        }
    }
    (from, to)
}

/// Flapping starts at `flap.changes` changes within `flap.window` and ends once the target has
/// kept its state for a whole window.
fn detect_flapping(
    spec: &CheckSpec,
    t: &mut TargetState,
    key: Key,
    now_ms: u64,
    out: &mut Vec<Event>,
) {
    if let Some(flap) = spec.flap {
        let window = ms(flap.window);
        while t
            .changes
            .front()
            .is_some_and(|&c| now_ms.saturating_sub(c) > window)
        {
            t.changes.pop_front();
        }
        if !t.flapping && t.changes.len() >= flap.changes.max(1) as usize {
            t.flapping = true;
            out.push(Event::Flapping { key, started: true });
        } else if t.flapping && t.changes.is_empty() {
            t.flapping = false;
            out.push(Event::Flapping {
                key,
                started: false,
            });
        }
    }
}

/// What the alert rules of one result are evaluated with.
struct Firing<'a> {
    key: Key,
    outcome: &'a Outcome,
    /// Why alerts are held now, if they are.
    hold: &'a Option<Suppression>,
    now_ms: u64,
    local: &'a LocalTime,
}

/// While the target is down: every down rule that agrees fires (or is reported held, once).
fn down_alerts(spec: &CheckSpec, t: &mut TargetState, f: &Firing<'_>, out: &mut Vec<Event>) {
    let (key, now_ms, local) = (f.key, f.now_ms, f.local);
    for (i, rule) in spec.alerts.iter().enumerate() {
        if rule.on != AlertOn::Down {
            continue;
        }
        let rs = &t.rules[i];
        let after = rule.after.max(1);
        let enough = match rule.within {
            None => t.fail_run >= after,
            Some(w) => {
                let since = now_ms.saturating_sub(ms(w));
                t.failures.iter().rev().take_while(|&&f| f >= since).count() >= after as usize
            }
        };
        let due = match (rs.last_ms, rule.every) {
            (None, _) => true,
            (Some(last), Some(every)) => now_ms.saturating_sub(last) >= ms(every),
            (Some(_), None) => false,
        };
        let under_max = rule.max == 0 || rs.sent < rule.max;
        if !(enough && due && under_max && rule.period.contains(local)) {
            continue;
        }
        let rs = &mut t.rules[i];
        match f.hold {
            Some(why) => {
                if !rs.held {
                    rs.held = true;
                    out.push(Event::Suppressed {
                        key,
                        rule: i,
                        on: AlertOn::Down,
                        why: why.clone(),
                    });
                }
            }
            None => {
                rs.sent += 1;
                rs.last_ms = Some(now_ms);
                t.down_alerted = true;
                out.push(Event::Alert {
                    key,
                    rule: i,
                    on: AlertOn::Down,
                    summary: f.outcome.summary.clone(),
                    detail: f.outcome.detail.clone(),
                });
            }
        }
    }
}

/// The target is up again after a down alert: the up rules fire now or never.
fn up_alerts(spec: &CheckSpec, t: &mut TargetState, f: &Firing<'_>, out: &mut Vec<Event>) {
    let (key, local) = (f.key, f.local);
    // The outage is over; its up alert goes out now or never.
    t.down_alerted = false;
    for (i, rule) in spec.alerts.iter().enumerate() {
        if rule.on != AlertOn::Up || !rule.period.contains(local) {
            continue;
        }
        out.push(match f.hold {
            Some(why) => Event::Suppressed {
                key,
                rule: i,
                on: AlertOn::Up,
                why: why.clone(),
            },
            None => Event::Alert {
                key,
                rule: i,
                on: AlertOn::Up,
                summary: f.outcome.summary.clone(),
                detail: f.outcome.detail.clone(),
            },
        });
    }
}

#[cfg(test)]
mod tests;
