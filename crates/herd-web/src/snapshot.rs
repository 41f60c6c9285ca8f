//! One look at the daemon: what the pages and `/metrics` render, gathered through the backend.

use std::sync::Arc;

use herd_core::api::{
    DaemonStatus, DowntimeEntry, HealthCheckStatus, HealthEvent, Request, Response, ServiceStatus,
    SilenceStatus, VrrpStatus,
};

use crate::state::State;

#[derive(Debug, Default)]
pub struct Snapshot {
    pub status: Option<DaemonStatus>,
    pub services: Vec<ServiceStatus>,
    pub checks: Vec<HealthCheckStatus>,
    pub silences: Vec<SilenceStatus>,
    pub vrrp: Vec<VrrpStatus>,
    pub history: Vec<HealthEvent>,
    pub downtime: Vec<DowntimeEntry>,
    /// This node's agent name and the nodes of `[nodes]` (for the nodes page).
    pub this_node: Option<String>,
    pub nodes: Vec<herd_core::api::NodeStatus>,
    /// Requests that failed, in words (shown, never hidden).
    pub errors: Vec<String>,
}

/// What a view needs beyond the services.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    pub history: bool,
    pub nodes: bool,
}

pub async fn take(st: &Arc<State>, want: Want) -> Snapshot {
    let mut s = Snapshot::default();
    let note = |r: &Response, errs: &mut Vec<String>| {
        if let Response::Error(e) = r {
            errs.push(e.message.clone());
        }
    };
    let r = st.call(Request::Status).await;
    note(&r, &mut s.errors);
    if let Response::Status(d) = r {
        s.status = Some(d);
    }
    let r = st.call(Request::List { service: None }).await;
    note(&r, &mut s.errors);
    if let Response::Services { services } = r {
        s.services = services;
    }
    // No health monitor or no VRRP is not an error for a view: the sections stay empty.
    if let Response::Health { checks, silences } = st.call(Request::HealthList).await {
        s.checks = checks;
        s.silences = silences;
    }
    if let Response::Ha { instances } = st.call(Request::HaStatus).await {
        s.vrrp = instances;
    }
    if want.nodes {
        if let Response::Nodes { this, nodes } = st.call(Request::Nodes).await {
            s.this_node = this;
            s.nodes = nodes;
        }
    }
    if want.history {
        if let Response::HealthHistory { entries } =
            st.call(Request::HealthHistory { limit: Some(200) }).await
        {
            s.history = entries;
        }
        if let Response::Downtime { entries } =
            st.call(Request::HealthDowntime { limit: Some(50) }).await
        {
            s.downtime = entries;
        }
    }
    s
}

/// How a service stands: every real server in service, some, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Up,
    Degraded,
    Down,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Up => "up",
            Standing::Degraded => "degraded",
            Standing::Down => "down",
        }
    }
}

/// A real server takes new connections: weight > 0 as listed (drained, disabled, failing or
/// removed ones list 0 or are absent).
pub fn in_service(r: &herd_core::api::RealStatus) -> bool {
    r.spec.weight > 0 && !r.sorry && !r.draining
}

/// Up when every real server an operator has left enabled is in service, degraded when some
/// are not (failing checks, weight 0, overloaded is not counted), down when none is or the
/// quorum is lost. A drained or disabled server is the operator's choice, not a degradation.
pub fn standing(s: &ServiceStatus) -> Standing {
    let reals: Vec<_> = s
        .reals
        .iter()
        .filter(|r| !r.sorry && !r.draining && r.admin == herd_core::api::AdminState::Enabled)
        .collect();
    let up = reals.iter().filter(|r| in_service(r)).count();
    if up == 0 || s.quorum.is_some_and(|q| q.lost) {
        Standing::Down
    } else if up < reals.len() {
        Standing::Degraded
    } else {
        Standing::Up
    }
}

/// A failing target whose alerts are not held: what the overview calls an open alert.
#[derive(Debug, Clone)]
pub struct OpenAlert {
    pub check: String,
    pub target: String,
    pub since_ms: u64,
    pub summary: String,
    pub silenced: Option<u64>,
}

pub fn open_alerts(s: &Snapshot) -> Vec<OpenAlert> {
    let mut v = Vec::new();
    for c in &s.checks {
        for t in &c.targets {
            if t.status == "down" && !t.disabled && !c.disabled {
                v.push(OpenAlert {
                    check: c.name.clone(),
                    target: t.target.clone(),
                    since_ms: t.since_ms,
                    summary: t.summary.clone(),
                    silenced: t.silenced,
                });
            }
        }
    }
    v
}

/// The service's display name: its name, else `TCP vip:port`.
pub fn service_label(s: &ServiceStatus) -> String {
    match &s.spec.name {
        Some(n) => n.clone(),
        None => s.spec.key.to_string(),
    }
}
