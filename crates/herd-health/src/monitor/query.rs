//! What operators ask of the monitor and set in it: status, history, silences, disables,
//! test alerts (the API's health requests end here).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use herd_core::api::{
    DeliveryStatus, DowntimeEntry, HealthCheckStatus, HealthEvent, HealthTargetStatus,
    SilenceStatus,
};
use herd_rules::spec::CheckSpec;

use super::dispatch::{count, describe, sink_name};
use super::error::MonitorError;
use super::plan::group_name;
use super::{lock, ms, Monitor};
use crate::alert;
use crate::clock::wall_ms;
use crate::history::Store;
use crate::notice::{Kind, Notice};
use herd_rules::{Engine, Key, Silence, TargetState};

impl Monitor {
    /// Checks and their targets, for `herd health list` and the dashboard.
    pub fn status(&self) -> (Vec<HealthCheckStatus>, Vec<SilenceStatus>) {
        let now = wall_ms();
        let mut st = self.inner.state();
        let silences: Vec<SilenceStatus> = st
            .engine
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
        let e = &st.engine;
        let checks = e
            .checks()
            .enumerate()
            .map(|(ci, (spec, targets))| {
                let sent = st.sent.get(ci);
                HealthCheckStatus {
                    name: spec.name.clone(),
                    kind: spec.kind.type_name().to_string(),
                    group: group_name(spec),
                    interval_ms: ms(spec.interval),
                    alerts_delivered: sent.map_or(0, |c| c[0].load(Relaxed)),
                    alerts_failed: sent.map_or(0, |c| c[1].load(Relaxed)),
                    disabled: !targets.is_empty() && all_disabled(e, ci, targets.len()),
                    targets: targets
                        .iter()
                        .map(|t| target_status(spec, t, &silences))
                        .collect(),
                }
            })
            .collect();
        (checks, silences)
    }

    /// The last `limit` history entries, oldest first: from the history file if there is
    /// one (so they outlive restarts), else from memory.
    pub fn history(&self, limit: usize) -> Vec<HealthEvent> {
        let path = self.inner.state().cfg.history.clone();
        if let Some(path) = path {
            match Store::open_read(&path).and_then(|s| s.recent(limit)) {
                Ok(v) => return v,
                Err(e) => tracing::warn!(error = %e, "reading the history from memory instead"),
            }
        }
        last(&self.inner.history, limit)
    }

    /// The last `limit` outages, oldest first (mon's downtime log).
    pub fn downtime(&self, limit: usize) -> Vec<DowntimeEntry> {
        let path = self.inner.state().cfg.history.clone();
        if let Some(path) = path {
            match Store::open_read(&path).and_then(|s| s.downtime(limit)) {
                Ok(v) => return v,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the downtime log from memory instead")
                }
            }
        }
        last(&self.inner.downtime, limit)
    }

    /// Holds the alerts of a check (all with `None`) on a target (all with `None`) for
    /// `secs` (or until recovery); returns the silence's number.
    pub fn silence(
        &self,
        check: Option<String>,
        target: Option<String>,
        secs: Option<u64>,
        until_recovery: bool,
        author: String,
        reason: String,
    ) -> Result<u64, MonitorError> {
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
        let id = self
            .inner
            .state()
            .engine
            .silence(s)
            .map_err(|e| MonitorError::Refused(e.to_string()))?;
        self.inner.record(
            c.as_deref().unwrap_or("*"),
            t.as_deref().unwrap_or("*"),
            "silenced",
            format!("silence #{id}"),
        );
        Ok(id)
    }

    pub fn unsilence(&self, id: u64) -> Result<(), MonitorError> {
        if self.inner.state().engine.unsilence(id) {
            Ok(())
        } else {
            Err(MonitorError::NoSilence(id))
        }
    }

    /// Disables (or enables) a check, or one of its targets.
    pub fn set_disabled(
        &self,
        check: &str,
        target: Option<&str>,
        disabled: bool,
    ) -> Result<(), MonitorError> {
        self.inner
            .state()
            .engine
            .set_disabled(check, target, disabled)
            .map_err(MonitorError::Refused)?;
        self.inner.record(
            check,
            target.unwrap_or("*"),
            if disabled { "disabled" } else { "enabled" },
            String::new(),
        );
        Ok(())
    }

    /// Sends a test notification through every alert rule of a check, now.
    pub async fn test_alert(&self, check: &str) -> Result<Vec<DeliveryStatus>, MonitorError> {
        let (spec, hosts, cfg, sent) = {
            let st = self.inner.state();
            let no_check = || MonitorError::NoCheck(check.to_string());
            let ci = st.engine.check_index(check).ok_or_else(no_check)?;
            let (spec, targets) = st.engine.checks().nth(ci).ok_or_else(no_check)?;
            let hosts: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
            let sent = st.sent.get(ci).cloned().unwrap_or_default();
            (spec.clone(), hosts, st.cfg.clone(), sent)
        };
        if spec.alerts.is_empty() {
            return Err(MonitorError::NoAlerts(check.to_string()));
        }
        let notice = test_notice(&spec, hosts);
        let mut out = Vec::new();
        for rule in &spec.alerts {
            let d = alert::send(&rule.sink, &notice, rule.timeout, &cfg).await;
            count(&sent, d.ok);
            let detail = describe(&rule.sink, &d);
            self.inner
                .record(check, &notice.hosts.join(" "), "test", detail);
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

fn test_notice(spec: &CheckSpec, hosts: Vec<String>) -> Notice {
    Notice {
        kind: Kind::Test,
        check: spec.name.clone(),
        group: group_name(spec),
        hosts,
        summary: format!("test alert for {}", spec.name),
        detail: String::new(),
        time: wall_ms() / 1000,
        first_failure: 0,
        last_failure: 0,
        last_success: 0,
    }
}

/// Whether no target of check `ci` is enabled.
fn all_disabled(e: &Engine, ci: usize, targets: usize) -> bool {
    !(0..targets).any(|ti| {
        e.enabled(Key {
            check: ci,
            target: ti,
        })
    })
}

fn target_status(
    spec: &CheckSpec,
    t: &TargetState,
    silences: &[SilenceStatus],
) -> HealthTargetStatus {
    let last = t.last.as_ref();
    HealthTargetStatus {
        target: t.name.clone(),
        status: t.status.to_string(),
        since_ms: t.since_ms,
        last_ms: t.last_ms,
        verdict: last.map(|o| o.verdict.as_str().to_string()),
        summary: last.map(|o| o.summary.clone()).unwrap_or_default(),
        latency_us: last.map(|o| u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX)),
        flapping: t.flapping,
        disabled: t.disabled,
        silenced: silences
            .iter()
            .find(|s| {
                s.check.as_deref().is_none_or(|c| c == spec.name)
                    && s.target.as_deref().is_none_or(|x| x == t.name)
            })
            .map(|s| s.id),
    }
}

/// The last `limit` entries of a ring, oldest first.
fn last<T: Clone>(ring: &Mutex<VecDeque<T>>, limit: usize) -> Vec<T> {
    let h = lock(ring);
    h.iter()
        .skip(h.len().saturating_sub(limit))
        .cloned()
        .collect()
}
