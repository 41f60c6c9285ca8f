//! `GET /metrics`: the Prometheus text format (version 0.0.4), named by Prometheus'
//! conventions — `herd_` prefix, base units (`_bytes`, `_seconds`), counters ending in
//! `_total`, states as one series per state with value 1 or 0, HELP and TYPE for every family.
//!
//! The text is written by `prometheus-client`'s encoder. The values are not kept in its
//! metric types between scrapes: each scrape takes one [`Snapshot`] of the daemon and hands
//! it to the registry as a [`Collector`], so that a series ends the moment its service, real
//! server, check or instance leaves the config. The families are tables ([`SERVICE`],
//! [`REAL`], [`TARGET`], [`VRRP`]) of a name, a help text and how to read the value.

use std::sync::atomic::Ordering::Relaxed;

use herd_core::api::{
    HealthCheckStatus, HealthTargetStatus, RealStatus, ServiceStatus, VrrpStatus,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use hyper::StatusCode;

use crate::access::session;
use crate::http::{self, Req, Resp};
use crate::snapshot::{self, Snapshot};
use crate::state::{State, WebCounters};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A sample's value; its variant is its family's type.
#[derive(Debug, Clone, Copy)]
enum Num {
    /// A counter (the encoder names its samples `…_total`).
    Count(u64),
    /// A gauge that is a whole number.
    Int(i64),
    /// A gauge with a fraction (seconds).
    Real(f64),
}

fn flag(b: bool) -> Num {
    Num::Int(i64::from(b))
}

fn int(v: impl Into<u64>) -> Num {
    Num::Int(i64::try_from(v.into()).unwrap_or(i64::MAX))
}

/// One family of a table: its name (a counter's without `_total`, which the encoder adds),
/// its help text, and how to read its value from one row.
struct Def<T> {
    name: &'static str,
    help: &'static str,
    value: fn(&T) -> Num,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Num)>,
}

/// The families of one scrape, in order of first appearance, each with its samples.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, labels: Labels, v: Num) {
        let i = match self.0.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                let kind = match v {
                    Num::Count(_) => MetricType::Counter,
                    Num::Int(_) | Num::Real(_) => MetricType::Gauge,
                };
                self.0.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        self.0[i].samples.push((labels, v));
    }

    fn table<T>(&mut self, defs: &[Def<T>], row: &T, labels: &Labels) {
        for d in defs {
            self.add(d.name, d.help, labels.clone(), (d.value)(row));
        }
    }
}

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut m = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let s = m.encode_family(labels)?;
                match *v {
                    Num::Count(n) => ConstCounter::new(n).encode(s)?,
                    Num::Int(n) => ConstGauge::new(n).encode(s)?,
                    Num::Real(x) => ConstGauge::new(x).encode(s)?,
                }
            }
        }
        Ok(())
    }
}

/// A virtual service's families (labels `service`, `protocol`, `vip`).
const SERVICE: &[Def<ServiceStatus>] = &[
    Def {
        name: "herd_lb_service_up",
        help: "1 while a virtual service has a real server in service and its quorum (if any).",
        value: |s| flag(snapshot::standing(s) != snapshot::Standing::Down),
    },
    Def {
        name: "herd_lb_connections",
        help: "Connections scheduled by a virtual service.",
        value: |s| Num::Count(s.stats.conns),
    },
    Def {
        name: "herd_lb_received_bytes",
        help: "Bytes received from clients by a virtual service.",
        value: |s| Num::Count(s.stats.bytes_in),
    },
    Def {
        name: "herd_lb_sent_bytes",
        help: "Bytes sent to clients by a virtual service.",
        value: |s| Num::Count(s.stats.bytes_out),
    },
    Def {
        name: "herd_lb_received_packets",
        help: "Chunks (TCP) or datagrams (UDP) received from clients.",
        value: |s| Num::Count(s.stats.pkts_in),
    },
    Def {
        name: "herd_lb_sent_packets",
        help: "Chunks (TCP) or datagrams (UDP) sent to clients.",
        value: |s| Num::Count(s.stats.pkts_out),
    },
    Def {
        name: "herd_lb_connections_per_second",
        help: "New connections per second, the kernel estimator's average.",
        value: |s| int(s.rates.cps),
    },
    Def {
        name: "herd_lb_received_bytes_per_second",
        help: "Bytes per second from clients, estimated.",
        value: |s| int(s.rates.bps_in),
    },
    Def {
        name: "herd_lb_sent_bytes_per_second",
        help: "Bytes per second to clients, estimated.",
        value: |s| int(s.rates.bps_out),
    },
    Def {
        name: "herd_lb_received_packets_per_second",
        help: "Chunks (TCP) or datagrams (UDP) per second from clients, estimated.",
        value: |s| int(s.rates.pps_in),
    },
    Def {
        name: "herd_lb_sent_packets_per_second",
        help: "Chunks (TCP) or datagrams (UDP) per second to clients, estimated.",
        value: |s| int(s.rates.pps_out),
    },
    Def {
        name: "herd_lb_active_connections",
        help: "Open connections (ActiveConn) of a virtual service.",
        value: |s| {
            int(s
                .reals
                .iter()
                .map(|r| u64::from(r.active_conns))
                .sum::<u64>())
        },
    },
    Def {
        name: "herd_lb_inactive_connections",
        help: "Half-closed connections (InActConn) of a virtual service.",
        value: |s| {
            int(s
                .reals
                .iter()
                .map(|r| u64::from(r.inactive_conns))
                .sum::<u64>())
        },
    },
];

/// A real server's families (labels `service`, `protocol`, `vip`, `real`), before its admin
/// state.
const REAL: &[Def<RealStatus>] = &[
    Def {
        name: "herd_lb_real_up",
        help: "1 while a real server takes new connections (weight above 0, enabled, passing its checks).",
        value: |r| flag(snapshot::in_service(r)),
    },
    Def {
        name: "herd_lb_real_weight",
        help: "A real server's weight as the schedulers see it.",
        value: |r| int(r.spec.weight),
    },
];

/// A real server's families after its admin state.
const REAL_TRAFFIC: &[Def<RealStatus>] = &[
    Def {
        name: "herd_lb_real_connections",
        help: "Connections scheduled to a real server.",
        value: |r| Num::Count(r.stats.conns),
    },
    Def {
        name: "herd_lb_real_active_connections",
        help: "Open connections (ActiveConn) of a real server.",
        value: |r| int(r.active_conns),
    },
    Def {
        name: "herd_lb_real_inactive_connections",
        help: "Half-closed connections (InActConn) of a real server.",
        value: |r| int(r.inactive_conns),
    },
    Def {
        name: "herd_lb_real_received_bytes",
        help: "Bytes from clients forwarded to a real server.",
        value: |r| Num::Count(r.stats.bytes_in),
    },
    Def {
        name: "herd_lb_real_sent_bytes",
        help: "Bytes from a real server forwarded to clients.",
        value: |r| Num::Count(r.stats.bytes_out),
    },
    Def {
        name: "herd_lb_real_connections_per_second",
        help: "New connections per second to a real server, estimated.",
        value: |r| int(r.rates.cps),
    },
    Def {
        name: "herd_lb_real_received_bytes_per_second",
        help: "Bytes per second forwarded to a real server, estimated.",
        value: |r| int(r.rates.bps_in),
    },
    Def {
        name: "herd_lb_real_sent_bytes_per_second",
        help: "Bytes per second from a real server, estimated.",
        value: |r| int(r.rates.bps_out),
    },
];

/// A check target's families (labels `check`, `target`) that every target has; its verdict,
/// duration and last run are there only once known.
const TARGET: &[Def<HealthTargetStatus>] = &[
    Def {
        name: "herd_health_target_flapping",
        help: "1 while a target is flapping.",
        value: |t| flag(t.flapping),
    },
    Def {
        name: "herd_health_target_silenced",
        help: "1 while a target's alerts are held by a silence.",
        value: |t| flag(t.silenced.is_some()),
    },
];

/// A VRRP instance's families (labels `instance`, `interface`), after its state.
const VRRP: &[Def<VrrpStatus>] = &[
    Def {
        name: "herd_vrrp_priority",
        help: "The priority in effect (after tracking).",
        value: |v| int(v.priority),
    },
    Def {
        name: "herd_vrrp_transitions",
        help: "State changes of a VRRP instance since the daemon started.",
        value: |v| Num::Count(v.transitions_total),
    },
    Def {
        name: "herd_vrrp_adverts_sent",
        help: "VRRP advertisements sent.",
        value: |v| Num::Count(v.adverts_sent),
    },
    Def {
        name: "herd_vrrp_adverts_received",
        help: "VRRP advertisements received and accepted.",
        value: |v| Num::Count(v.adverts_received),
    },
];

const VRRP_STATES: [&str; 4] = ["init", "backup", "master", "fault"];
const ADMIN_STATES: [&str; 3] = ["enabled", "draining", "disabled"];

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// With one more label.
fn with(l: &Labels, k: &'static str, v: &str) -> Labels {
    let mut l = l.clone();
    l.push((k, v.to_string()));
    l
}

/// The text of one scrape.
pub fn render(s: &Snapshot, web: &WebCounters, sessions: usize, version: &str) -> String {
    let mut f = Families::default();
    f.add(
        "herd_build_info",
        "Always 1; the version is a label.",
        labels(&[("version", version)]),
        Num::Int(1),
    );
    if let Some(d) = &s.status {
        f.add(
            "herd_uptime_seconds",
            "Seconds since the daemon started.",
            Labels::new(),
            int(d.uptime_secs),
        );
        f.add(
            "herd_config_reloads",
            "Config reloads applied.",
            Labels::new(),
            Num::Count(d.reloads),
        );
    }
    for svc in &s.services {
        services(&mut f, svc);
    }
    for c in &s.checks {
        check(&mut f, c);
    }
    alerts(&mut f, s);
    for v in &s.vrrp {
        vrrp(&mut f, v);
    }
    logins(&mut f, web, sessions);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(f));
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

fn services(f: &mut Families, svc: &ServiceStatus) {
    let proto = svc.spec.key.protocol.ipvs_name().to_lowercase();
    let vip = svc.spec.key.address.to_string();
    let name = snapshot::service_label(svc);
    let l = labels(&[("service", &name), ("protocol", &proto), ("vip", &vip)]);
    f.table(SERVICE, svc, &l);
    if let Some(q) = svc.quorum {
        f.add(
            "herd_lb_quorum_lost",
            "1 while a virtual service is below its quorum.",
            l.clone(),
            flag(q.lost),
        );
    }
    for r in &svc.reals {
        let rl = with(&l, "real", &r.spec.address.to_string());
        f.table(REAL, r, &rl);
        for st in ADMIN_STATES {
            f.add(
                "herd_lb_real_admin_state",
                "What an operator has done to a real server; 1 for the state it is in.",
                with(&rl, "state", st),
                flag(r.admin.as_str() == st),
            );
        }
        f.table(REAL_TRAFFIC, r, &rl);
    }
}

fn check(f: &mut Families, c: &HealthCheckStatus) {
    for (outcome, n) in [
        ("delivered", c.alerts_delivered),
        ("failed", c.alerts_failed),
    ] {
        f.add(
            "herd_health_alerts",
            "Alert notifications of a check since the daemon started, by outcome.",
            labels(&[("check", &c.name), ("outcome", outcome)]),
            Num::Count(n),
        );
    }
    for t in &c.targets {
        let l = labels(&[("check", &c.name), ("target", &t.target)]);
        if t.status != "unknown" {
            f.add(
                "herd_health_target_up",
                "1 while a target passes its check, 0 while it fails (absent until the first verdict).",
                l.clone(),
                flag(t.status == "up"),
            );
        }
        if let Some(us) = t.latency_us {
            f.add(
                "herd_health_check_duration_seconds",
                "How long the last run of a check on a target took.",
                l.clone(),
                Num::Real(us as f64 / 1e6),
            );
        }
        if let Some(ms) = t.last_ms {
            f.add(
                "herd_health_last_check_timestamp_seconds",
                "When a check last ran on a target (Unix time).",
                l.clone(),
                Num::Real(ms as f64 / 1e3),
            );
        }
        f.table(TARGET, t, &l);
    }
}

fn alerts(f: &mut Families, s: &Snapshot) {
    let open = snapshot::open_alerts(s);
    let unsilenced = open.iter().filter(|a| a.silenced.is_none()).count();
    for (name, help, n) in [
        (
            "herd_health_alerts_open",
            "Failing targets, silenced or not.",
            open.len(),
        ),
        (
            "herd_health_alerts_unsilenced",
            "Failing targets whose alerts are not held.",
            unsilenced,
        ),
        (
            "herd_health_silences",
            "Silences in force.",
            s.silences.len(),
        ),
    ] {
        f.add(name, help, Labels::new(), int(n as u64));
    }
}

fn vrrp(f: &mut Families, v: &VrrpStatus) {
    let l = labels(&[("instance", &v.name), ("interface", &v.interface)]);
    for st in VRRP_STATES {
        f.add(
            "herd_vrrp_state",
            "A VRRP instance's state; 1 for the state it is in.",
            with(&l, "state", st),
            flag(v.state == st),
        );
    }
    f.table(VRRP, v, &l);
    for (reason, n) in &v.dropped {
        f.add(
            "herd_vrrp_dropped_packets",
            "VRRP packets dropped, by reason.",
            with(&l, "reason", reason),
            Num::Count(*n),
        );
    }
}

fn logins(f: &mut Families, web: &WebCounters, sessions: usize) {
    for (outcome, c) in [
        ("ok", &web.logins_ok),
        ("failed", &web.logins_failed),
        ("limited", &web.logins_limited),
    ] {
        f.add(
            "herd_web_logins",
            "Dashboard and API login attempts, by outcome.",
            labels(&[("outcome", outcome)]),
            Num::Count(c.load(Relaxed)),
        );
    }
    f.add(
        "herd_web_sessions",
        "Dashboard and API sessions alive.",
        Labels::new(),
        int(sessions as u64),
    );
}

pub async fn serve(st: &Arc<State>, req: &Req) -> Resp {
    if !st.cfg().metrics_public && !bearer_ok(st, req) && session(st, req).is_none() {
        return http::unauthorized();
    }
    let snap = snapshot::take(st, snapshot::Want::default()).await;
    let idle = st.cfg().session_timeout;
    let sessions = st
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .live(std::time::Instant::now(), idle);
    let body = render(&snap, &st.counters, sessions, st.info().version);
    http::full(StatusCode::OK, CONTENT_TYPE, body)
}

/// `Authorization: Bearer TOKEN` with the token of `web.metrics-token-file`.
fn bearer_ok(st: &State, req: &Req) -> bool {
    match (
        st.metrics_token(),
        req.header("authorization")
            .and_then(|h| h.strip_prefix("Bearer ")),
    ) {
        (Some(t), Some(given)) => crate::auth::same(given.trim(), &t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check with a failing target that has run, and one not yet judged whose name needs
    /// escaping.
    fn snapshot() -> Snapshot {
        let checks = serde_json::from_str(
            r#"[{"name": "tcp", "type": "tcp", "group": "g", "interval-ms": 1000,
                 "disabled": false, "alerts-delivered": 3, "targets": [
                {"target": "10.0.0.2:80", "status": "down", "since-ms": 5,
                 "last-ms": 1765000000123, "latency-us": 1234, "flapping": false,
                 "disabled": false},
                {"target": "a\"b\\c\nd", "status": "unknown", "since-ms": 5,
                 "flapping": true, "disabled": false, "silenced": 4}]}]"#,
        )
        .unwrap();
        Snapshot {
            checks,
            ..Snapshot::default()
        }
    }

    #[test]
    fn health_families_read_as_before() {
        let web = WebCounters::default();
        web.login("limited");
        let text = render(&snapshot(), &web, 2, "1.2");
        for line in [
            "# HELP herd_health_alerts_total Alert notifications of a check since the daemon started, by outcome.",
            "# TYPE herd_health_alerts_total counter",
            "herd_health_alerts_total{check=\"tcp\",outcome=\"delivered\"} 3",
            "herd_health_target_up{check=\"tcp\",target=\"10.0.0.2:80\"} 0",
            "herd_health_check_duration_seconds{check=\"tcp\",target=\"10.0.0.2:80\"} 0.001234",
            "herd_health_last_check_timestamp_seconds{check=\"tcp\",target=\"10.0.0.2:80\"} 1765000000.123",
            "herd_health_target_flapping{check=\"tcp\",target=\"a\\\"b\\\\c\\nd\"} 1",
            "herd_health_target_silenced{check=\"tcp\",target=\"a\\\"b\\\\c\\nd\"} 1",
            "herd_health_alerts_open 1",
            "herd_health_alerts_unsilenced 1",
            "herd_health_silences 0",
            "herd_web_logins_total{outcome=\"limited\"} 1",
            "herd_web_sessions 2",
            "herd_build_info{version=\"1.2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // Not judged yet: no verdict, duration or last run.
        assert!(
            !text.contains("herd_health_target_up{check=\"tcp\",target=\"a"),
            "{text}"
        );
        // Without the daemon's status, no uptime; every family is announced once, before its
        // samples, and a counter's samples all end in `_total`.
        assert!(!text.contains("herd_uptime_seconds"));
        let mut family = "";
        let mut counter = false;
        let mut seen = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(seen.insert(name.to_string()), "{l}");
                family = name;
                counter = kind == "counter";
                assert_eq!(counter, name.ends_with("_total"), "{l}");
            } else if !l.starts_with('#') {
                assert!(l.starts_with(family), "{l} outside {family}");
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{l}");
                assert_eq!(counter, name.ends_with("_total"), "{l}");
            }
        }
    }
}
