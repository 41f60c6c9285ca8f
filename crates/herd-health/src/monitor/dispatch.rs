//! Alert dispatch: alerts of one check, rule and kind that arrive within [`GROUP_WAIT`] of
//! each other go out as one notification (a burst across many targets is one page, not a
//! hundred), each group to its sink concurrently, the outcome counted and recorded.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use herd_core::config::health::HealthConfig;
use herd_rules::spec::Sink;
use tokio::sync::mpsc;

use crate::alert;
use crate::clock::wall_ms;
use crate::notice::{Delivery, Kind, Notice};

/// How long alerts of one check and rule are collected into one notification.
pub const GROUP_WAIT: Duration = Duration::from_secs(1);

/// Notifications of one check: delivered, failed. Kept by the check's name across applies.
pub(super) type Counters = [AtomicU64; 2];

/// What the dispatch needs from the monitor.
pub(super) trait Outbox: Send + Sync + 'static {
    /// The `[health]` config applied last (alert directories, the mail relay).
    fn health_config(&self) -> Arc<HealthConfig>;
    /// An entry for the history.
    fn record(&self, check: &str, targets: &str, event: &str, detail: String);
}

/// An alert waiting to be grouped. It carries its rule's sink and counters, so that an apply
/// that renumbers or removes checks meanwhile changes nothing about where it goes.
#[derive(Debug)]
pub(super) struct Pending {
    pub check: String,
    pub group: String,
    pub rule: usize,
    pub sink: Sink,
    pub timeout: Duration,
    pub sent: Arc<Counters>,
    pub kind: Kind,
    pub host: String,
    pub summary: String,
    pub detail: String,
    /// The target's first failure, last failure and last success (Unix seconds).
    pub times: (u64, u64, u64),
}

/// Collects alerts into groups and sends each group; runs as long as the monitor.
pub(super) async fn dispatch<O: Outbox>(out: Arc<O>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + GROUP_WAIT;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.push(p);
        }
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        for p in batch {
            match groups.iter_mut().find(|g| {
                let f = &g[0];
                f.check == p.check && f.rule == p.rule && f.kind == p.kind
            }) {
                Some(g) => g.push(p),
                None => groups.push(vec![p]),
            }
        }
        for group in groups {
            // Alert programs run concurrently; each has its own timeout.
            tokio::spawn(send(out.clone(), group));
        }
    }
}

/// Sends one group (never empty) as one notification.
async fn send<O: Outbox>(out: Arc<O>, ps: Vec<Pending>) {
    let notice = notice(&ps);
    let p = &ps[0];
    let cfg = out.health_config();
    let d = alert::send(&p.sink, &notice, p.timeout, &cfg).await;
    count(&p.sent, d.ok);
    if !d.ok {
        tracing::warn!(check = %p.check, error = %d.error, "alert failed");
    }
    let event = match p.kind {
        Kind::Up => "upalert",
        Kind::Flapping => "flapping-alert",
        Kind::Test => "test",
        Kind::Failure => "alert",
    };
    out.record(
        &p.check,
        &notice.hosts.join(" "),
        event,
        describe(&p.sink, &d),
    );
}

/// The notification for a group: one target's own words, or a list of many.
fn notice(ps: &[Pending]) -> Notice {
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
    Notice {
        kind: ps[0].kind,
        check: ps[0].check.clone(),
        group: ps[0].group.clone(),
        hosts,
        summary,
        detail,
        time: wall_ms() / 1000,
        first_failure: if t.0 == u64::MAX { 0 } else { t.0 },
        last_failure: t.1,
        last_success: t.2,
    }
}

/// Counts one notification: delivered or failed.
pub(super) fn count(sent: &Counters, ok: bool) {
    sent[usize::from(!ok)].fetch_add(1, Relaxed);
}

pub(super) fn describe(sink: &Sink, d: &Delivery) -> String {
    if d.ok {
        format!("{} ok in {} ms", sink_name(sink), d.took_ms)
    } else {
        format!("{} failed: {}", sink_name(sink), d.error)
    }
}

pub(super) fn sink_name(sink: &Sink) -> String {
    match sink {
        Sink::Exec { command } => format!("exec {}", command.join(" ")),
        Sink::Webhook { url, .. } => format!("webhook {url}"),
        Sink::Email { to } => format!("email {}", to.join(", ")),
        Sink::Log => "log".to_string(),
    }
}
