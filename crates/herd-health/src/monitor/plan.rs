//! What a config asks the monitor to run: every check resolved into its targets, with the real
//! server each target stands for. Pure (no I/O): names are looked up at each run, not here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use herd_core::config::{find_service, host_port, real_matches, Config};
use herd_core::model::ServiceKey;
use herd_rules::spec::{CheckKind, CheckSpec, Targets};

use crate::probe;
use herd_rules::Key;

/// Who a probe task stands for: a check and one of its targets, by name, because indices
/// move when an apply adds or removes checks and names do not. `nth` tells apart targets
/// written twice in one check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TaskId {
    pub check: String,
    pub target: String,
    pub nth: usize,
}

/// Everything a probe task's runs depend on. An apply leaves a task running (its timer
/// untouched) when its schedule is unchanged; keys that only reach the rule engine (alerts,
/// `rise`, `fall`, `depends`, `on-failure`, flapping) change without restarting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schedule {
    pub kind: CheckKind,
    pub target: probe::Target,
    pub interval: Duration,
    pub failure_interval: Duration,
    pub timeout: Duration,
}

/// A config's checks resolved.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Per check, in config order: its spec and its targets' names (the rule engine's input).
    pub checks: Vec<(CheckSpec, Vec<String>)>,
    /// One probe task per (check, target).
    pub tasks: Vec<(TaskId, Key, Schedule)>,
    /// Per (check, target) of a service check: the real server it stands for.
    pub bindings: HashMap<Key, (ServiceKey, SocketAddr)>,
    /// Every real server of every service, for the director's sync.
    pub reals: Vec<(ServiceKey, SocketAddr)>,
}

impl Plan {
    pub fn new(config: &Config) -> Plan {
        let mut plan = Plan {
            reals: config
                .lb
                .services
                .iter()
                .flat_map(|s| s.reals.iter().map(move |r| (s.spec.key, r.address)))
                .collect(),
            ..Plan::default()
        };
        for (ci, spec) in config.health.checks.iter().enumerate() {
            let mut names: Vec<String> = Vec::new();
            for (ti, (name, target, binding)) in resolve(config, spec).into_iter().enumerate() {
                let key = Key {
                    check: ci,
                    target: ti,
                };
                let id = TaskId {
                    check: spec.name.clone(),
                    target: name.clone(),
                    nth: names.iter().filter(|n| **n == name).count(),
                };
                let schedule = Schedule {
                    kind: spec.kind.clone(),
                    target,
                    interval: spec.interval,
                    failure_interval: spec.failure_interval,
                    timeout: spec.timeout,
                };
                plan.tasks.push((id, key, schedule));
                if let Some(b) = binding {
                    plan.bindings.insert(key, b);
                }
                names.push(name);
            }
            plan.checks.push((spec.clone(), names));
        }
        plan
    }
}

/// The targets of a check: (name, what to probe, the real server it stands for).
type Resolved = (String, probe::Target, Option<(ServiceKey, SocketAddr)>);

fn resolve(config: &Config, spec: &CheckSpec) -> Vec<Resolved> {
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
        Targets::Hosts(hs) => hs.iter().map(|h| host(spec, h)).collect(),
        Targets::Group(g) => config
            .health
            .hostgroups
            .get(g)
            .map(|hs| hs.iter().map(|h| host(spec, h)).collect())
            .unwrap_or_default(),
    }
}

/// A host target: "ip", "ip:port", "[v6]:port", "name" or "name:port"; names are looked up at
/// each run.
fn host(spec: &CheckSpec, h: &str) -> Resolved {
    let default_port = spec.port.or(match spec.kind {
        CheckKind::Http { tls: None, .. } => Some(80),
        CheckKind::Http { tls: Some(_), .. } => Some(443),
        CheckKind::Dns { .. } => Some(53),
        _ => None,
    });
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
}

/// A target given by name gets its address looked up at each run (names can move).
pub(super) async fn resolve_addr(
    t: &probe::Target,
    kind: &CheckKind,
    timeout: Duration,
) -> probe::Target {
    if t.addr.is_some() || matches!(kind, CheckKind::Exec { .. }) {
        return t.clone();
    }
    // icmp has no port; the lookup still needs one.
    let port = match (t.port, kind) {
        (Some(p), _) => p,
        (None, CheckKind::Icmp) => 0,
        (None, _) => return t.clone(),
    };
    let lookup = tokio::net::lookup_host((t.host.as_str(), port));
    let addr = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(mut it)) => it.next(),
        _ => None,
    };
    probe::Target { addr, ..t.clone() }
}

/// The check's group: its service, host group or `hosts` (mon's watch group).
pub(super) fn group_name(spec: &CheckSpec) -> String {
    match &spec.targets {
        Targets::Service(s) => s.clone(),
        Targets::Group(g) => g.clone(),
        Targets::Hosts(_) => "hosts".to_string(),
    }
}
