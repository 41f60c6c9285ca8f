//! What the rule engine's events mean for the world, worked out under the state's lock (the
//! events' keys are indices into that state) and carried out after it is released.

use std::net::SocketAddr;

use herd_core::api::DowntimeEntry;
use herd_core::model::ServiceKey;
use herd_rules::spec::AlertOn;

use super::dispatch::Pending;
use super::plan::group_name;
use super::state::State;
use crate::clock::wall_ms;
use crate::notice::Kind;
use herd_rules::{Event, Key, Status};

/// One thing to do, in the order the events asked for it.
#[derive(Debug)]
pub(super) enum Effect {
    /// An entry for the history.
    Record {
        check: String,
        target: String,
        event: String,
        detail: String,
    },
    /// An outage ended: an entry for the downtime log.
    Outage(DowntimeEntry),
    /// An alert for the dispatch.
    Alert(Pending),
    /// Tell the director the verdict on this real server.
    Sync(ServiceKey, SocketAddr),
}

impl State {
    /// The effects of `events`; `times` are the target's first failure, last failure and last
    /// success, for alerts.
    pub(super) fn effects(&self, events: Vec<Event>, times: (u64, u64, u64)) -> Vec<Effect> {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                Event::StateChanged {
                    key,
                    from,
                    to,
                    from_since_ms,
                } => self.state_changed(key, from, to, from_since_ms, &mut out),
                Event::Alert {
                    key,
                    rule,
                    on,
                    summary,
                    detail,
                } => {
                    let kind = if on == AlertOn::Up {
                        Kind::Up
                    } else {
                        Kind::Failure
                    };
                    let alert = self.alert(key, rule, kind, times);
                    out.extend(alert.map(|p| {
                        Effect::Alert(Pending {
                            summary,
                            detail,
                            ..p
                        })
                    }));
                }
                Event::Suppressed { key, rule, on, why } => {
                    let (check, target) = self.names(key);
                    out.push(record(
                        check,
                        target,
                        "held",
                        format!("{on} alert #{rule}: {why}"),
                    ));
                }
                Event::SilenceLifted { id } => {
                    tracing::info!(id, "silence ended: what it covers recovered");
                    let detail = format!("silence #{id}: recovered");
                    out.push(record("*".into(), "*".into(), "unsilenced", detail));
                }
                Event::Flapping { key, started } => self.flapping(key, started, times, &mut out),
            }
        }
        out
    }

    fn state_changed(
        &self,
        key: Key,
        from: Status,
        to: Status,
        from_since_ms: u64,
        out: &mut Vec<Effect>,
    ) {
        let (check, target) = self.names(key);
        let t = self.engine.target(key);
        let summary = t
            .last
            .as_ref()
            .map(|o| o.summary.clone())
            .unwrap_or_default();
        tracing::info!(%check, %target, %from, %to, "{summary}");
        if from == Status::Down && to == Status::Up {
            out.push(Effect::Outage(DowntimeEntry {
                check: check.clone(),
                target: target.clone(),
                down_ms: from_since_ms,
                up_ms: wall_ms(),
                // The last failure: the one before the current pass.
                summary: t.last_failure.clone(),
            }));
        }
        out.push(Effect::Record {
            check,
            target,
            event: to.to_string(),
            detail: summary,
        });
        if let Some((svc, real)) = self.bindings.get(&key) {
            out.push(Effect::Sync(*svc, *real));
        }
    }

    fn flapping(&self, key: Key, started: bool, times: (u64, u64, u64), out: &mut Vec<Effect>) {
        let (check, target) = self.names(key);
        if started {
            tracing::warn!(%check, %target, "flapping: alerts held until it settles");
            let spec = self.engine.spec(key.check);
            for (rule, a) in spec.alerts.iter().enumerate() {
                if a.on == AlertOn::Down {
                    let summary =
                        format!("{check} is flapping on {target}; alerts held until it settles");
                    let alert = self.alert(key, rule, Kind::Flapping, times);
                    out.extend(alert.map(|p| Effect::Alert(Pending { summary, ..p })));
                }
            }
        }
        let event = if started { "flapping" } else { "settled" };
        out.push(record(check, target, event, String::new()));
    }

    /// An alert of rule `rule` of the check of `key` about its target, without words yet.
    fn alert(&self, key: Key, rule: usize, kind: Kind, times: (u64, u64, u64)) -> Option<Pending> {
        let spec = self.engine.spec(key.check);
        let a = spec.alerts.get(rule)?;
        Some(Pending {
            check: spec.name.clone(),
            group: group_name(spec),
            rule,
            sink: a.sink.clone(),
            timeout: a.timeout,
            sent: self.sent.get(key.check).cloned().unwrap_or_default(),
            kind,
            host: self.engine.target(key).name.clone(),
            summary: String::new(),
            detail: String::new(),
            times,
        })
    }

    /// The names of a check and target.
    fn names(&self, key: Key) -> (String, String) {
        (
            self.engine.spec(key.check).name.clone(),
            self.engine.target(key).name.clone(),
        )
    }
}

fn record(check: String, target: String, event: &str, detail: String) -> Effect {
    Effect::Record {
        check,
        target,
        event: event.to_string(),
        detail,
    }
}
