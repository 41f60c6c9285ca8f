//! `GET /metrics`: the Prometheus text format (version 0.0.4), named by Prometheus'
//! conventions — `herd_` prefix, base units (`_bytes`, `_seconds`), counters ending in
//! `_total`, states as one series per state with value 1 or 0, HELP and TYPE for every family.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use hyper::StatusCode;

use crate::http::{self, Req, Resp};
use crate::snapshot::{self, Snapshot};
use crate::State;

/// The web server's own counters.
#[derive(Debug, Default)]
pub struct WebCounters {
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logins_limited: AtomicU64,
}

impl WebCounters {
    pub fn login(&self, outcome: &str) {
        match outcome {
            "ok" => &self.logins_ok,
            "limited" => &self.logins_limited,
            _ => &self.logins_failed,
        }
        .fetch_add(1, Relaxed);
    }
}

pub async fn serve(st: &Arc<State>, req: &Req) -> Resp {
    if !st.cfg().metrics_public && !bearer_ok(st, req) && http::session(st, req).is_none() {
        return crate::api::unauthorized();
    }
    let snap = snapshot::take(st, snapshot::Want::default()).await;
    let idle = st.cfg().session_timeout;
    let sessions = st
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .live(std::time::Instant::now(), idle);
    let body = render(&snap, &st.counters, sessions, st.info.version);
    http::full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        body,
    )
}

/// `Authorization: Bearer TOKEN` with the token of `web.metrics-token-file`.
fn bearer_ok(st: &State, req: &Req) -> bool {
    let token = st
        .metrics_token
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match (
        token,
        req.header("authorization")
            .and_then(|h| h.strip_prefix("Bearer ")),
    ) {
        (Some(t), Some(given)) => crate::auth::same(given.trim(), &t),
        _ => false,
    }
}

/// Families in order of appearance, each with its samples.
#[derive(Default)]
struct Out {
    families: Vec<(String, &'static str, &'static str)>,
    samples: BTreeMap<String, Vec<String>>,
}

impl Out {
    fn add(
        &mut self,
        name: &str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        v: f64,
    ) {
        if !self.samples.contains_key(name) {
            self.families.push((name.to_string(), kind, help));
        }
        let mut line = name.to_string();
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape(val));
            }
            line.push('}');
        }
        let _ = write!(line, " {}", fmt_value(v));
        self.samples.entry(name.to_string()).or_default().push(line);
    }

    fn finish(self) -> String {
        let mut s = String::new();
        for (name, kind, help) in &self.families {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} {kind}");
            for l in &self.samples[name] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

const STATES: [&str; 4] = ["init", "backup", "master", "fault"];

pub fn render(s: &Snapshot, web: &WebCounters, sessions: usize, version: &str) -> String {
    let mut o = Out::default();
    o.add(
        "herd_build_info",
        "gauge",
        "Always 1; the version is a label.",
        &[("version", version)],
        1.0,
    );
    if let Some(d) = &s.status {
        o.add(
            "herd_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            &[],
            d.uptime_secs as f64,
        );
        o.add(
            "herd_config_reloads_total",
            "counter",
            "Config reloads applied.",
            &[],
            d.reloads as f64,
        );
    }
    for svc in &s.services {
        let proto = svc.spec.key.protocol.ipvs_name().to_lowercase();
        let vip = svc.spec.key.address.to_string();
        let name = snapshot::service_label(svc);
        let l = [
            ("service", name.as_str()),
            ("protocol", proto.as_str()),
            ("vip", vip.as_str()),
        ];
        o.add(
            "herd_lb_service_up",
            "gauge",
            "1 while a virtual service has a real server in service and its quorum (if any).",
            &l,
            f64::from(u8::from(
                snapshot::standing(svc) != snapshot::Standing::Down,
            )),
        );
        o.add(
            "herd_lb_connections_total",
            "counter",
            "Connections scheduled by a virtual service.",
            &l,
            svc.stats.conns as f64,
        );
        o.add(
            "herd_lb_received_bytes_total",
            "counter",
            "Bytes received from clients by a virtual service.",
            &l,
            svc.stats.bytes_in as f64,
        );
        o.add(
            "herd_lb_sent_bytes_total",
            "counter",
            "Bytes sent to clients by a virtual service.",
            &l,
            svc.stats.bytes_out as f64,
        );
        o.add(
            "herd_lb_received_packets_total",
            "counter",
            "Chunks (TCP) or datagrams (UDP) received from clients.",
            &l,
            svc.stats.pkts_in as f64,
        );
        o.add(
            "herd_lb_sent_packets_total",
            "counter",
            "Chunks (TCP) or datagrams (UDP) sent to clients.",
            &l,
            svc.stats.pkts_out as f64,
        );
        o.add(
            "herd_lb_connections_per_second",
            "gauge",
            "New connections per second, the kernel estimator's average.",
            &l,
            svc.rates.cps as f64,
        );
        o.add(
            "herd_lb_received_bytes_per_second",
            "gauge",
            "Bytes per second from clients, estimated.",
            &l,
            svc.rates.bps_in as f64,
        );
        o.add(
            "herd_lb_sent_bytes_per_second",
            "gauge",
            "Bytes per second to clients, estimated.",
            &l,
            svc.rates.bps_out as f64,
        );
        o.add(
            "herd_lb_received_packets_per_second",
            "gauge",
            "Chunks (TCP) or datagrams (UDP) per second from clients, estimated.",
            &l,
            svc.rates.pps_in as f64,
        );
        o.add(
            "herd_lb_sent_packets_per_second",
            "gauge",
            "Chunks (TCP) or datagrams (UDP) per second to clients, estimated.",
            &l,
            svc.rates.pps_out as f64,
        );
        let (act, inact) = svc.reals.iter().fold((0u64, 0u64), |(a, i), r| {
            (
                a + u64::from(r.active_conns),
                i + u64::from(r.inactive_conns),
            )
        });
        o.add(
            "herd_lb_active_connections",
            "gauge",
            "Open connections (ActiveConn) of a virtual service.",
            &l,
            act as f64,
        );
        o.add(
            "herd_lb_inactive_connections",
            "gauge",
            "Half-closed connections (InActConn) of a virtual service.",
            &l,
            inact as f64,
        );
        if let Some(q) = svc.quorum {
            o.add(
                "herd_lb_quorum_lost",
                "gauge",
                "1 while a virtual service is below its quorum.",
                &l,
                f64::from(u8::from(q.lost)),
            );
        }
        for r in &svc.reals {
            let addr = r.spec.address.to_string();
            let rl = [
                ("service", name.as_str()),
                ("protocol", proto.as_str()),
                ("vip", vip.as_str()),
                ("real", addr.as_str()),
            ];
            o.add("herd_lb_real_up", "gauge", "1 while a real server takes new connections (weight above 0, enabled, passing its checks).", &rl,
                  f64::from(u8::from(snapshot::in_service(r))));
            o.add(
                "herd_lb_real_weight",
                "gauge",
                "A real server's weight as the schedulers see it.",
                &rl,
                f64::from(r.spec.weight),
            );
            for st in ["enabled", "draining", "disabled"] {
                let sl = [rl[0], rl[1], rl[2], rl[3], ("state", st)];
                o.add(
                    "herd_lb_real_admin_state",
                    "gauge",
                    "What an operator has done to a real server; 1 for the state it is in.",
                    &sl,
                    f64::from(u8::from(r.admin.as_str() == st)),
                );
            }
            o.add(
                "herd_lb_real_connections_total",
                "counter",
                "Connections scheduled to a real server.",
                &rl,
                r.stats.conns as f64,
            );
            o.add(
                "herd_lb_real_active_connections",
                "gauge",
                "Open connections (ActiveConn) of a real server.",
                &rl,
                f64::from(r.active_conns),
            );
            o.add(
                "herd_lb_real_inactive_connections",
                "gauge",
                "Half-closed connections (InActConn) of a real server.",
                &rl,
                f64::from(r.inactive_conns),
            );
            o.add(
                "herd_lb_real_received_bytes_total",
                "counter",
                "Bytes from clients forwarded to a real server.",
                &rl,
                r.stats.bytes_in as f64,
            );
            o.add(
                "herd_lb_real_sent_bytes_total",
                "counter",
                "Bytes from a real server forwarded to clients.",
                &rl,
                r.stats.bytes_out as f64,
            );
            o.add(
                "herd_lb_real_connections_per_second",
                "gauge",
                "New connections per second to a real server, estimated.",
                &rl,
                r.rates.cps as f64,
            );
            o.add(
                "herd_lb_real_received_bytes_per_second",
                "gauge",
                "Bytes per second forwarded to a real server, estimated.",
                &rl,
                r.rates.bps_in as f64,
            );
            o.add(
                "herd_lb_real_sent_bytes_per_second",
                "gauge",
                "Bytes per second from a real server, estimated.",
                &rl,
                r.rates.bps_out as f64,
            );
        }
    }
    for c in &s.checks {
        for (outcome, n) in [
            ("delivered", c.alerts_delivered),
            ("failed", c.alerts_failed),
        ] {
            o.add(
                "herd_health_alerts_total",
                "counter",
                "Alert notifications of a check since the daemon started, by outcome.",
                &[("check", c.name.as_str()), ("outcome", outcome)],
                n as f64,
            );
        }
        for t in &c.targets {
            let l = [("check", c.name.as_str()), ("target", t.target.as_str())];
            if t.status != "unknown" {
                o.add("herd_health_target_up", "gauge", "1 while a target passes its check, 0 while it fails (absent until the first verdict).", &l,
                      f64::from(u8::from(t.status == "up")));
            }
            if let Some(us) = t.latency_us {
                o.add(
                    "herd_health_check_duration_seconds",
                    "gauge",
                    "How long the last run of a check on a target took.",
                    &l,
                    us as f64 / 1e6,
                );
            }
            if let Some(ms) = t.last_ms {
                o.add(
                    "herd_health_last_check_timestamp_seconds",
                    "gauge",
                    "When a check last ran on a target (Unix time).",
                    &l,
                    ms as f64 / 1e3,
                );
            }
            o.add(
                "herd_health_target_flapping",
                "gauge",
                "1 while a target is flapping.",
                &l,
                f64::from(u8::from(t.flapping)),
            );
            o.add(
                "herd_health_target_silenced",
                "gauge",
                "1 while a target's alerts are held by a silence.",
                &l,
                f64::from(u8::from(t.silenced.is_some())),
            );
        }
    }
    let open = snapshot::open_alerts(s);
    o.add(
        "herd_health_alerts_open",
        "gauge",
        "Failing targets, silenced or not.",
        &[],
        open.len() as f64,
    );
    o.add(
        "herd_health_alerts_unsilenced",
        "gauge",
        "Failing targets whose alerts are not held.",
        &[],
        open.iter().filter(|a| a.silenced.is_none()).count() as f64,
    );
    o.add(
        "herd_health_silences",
        "gauge",
        "Silences in force.",
        &[],
        s.silences.len() as f64,
    );
    for v in &s.vrrp {
        let l = [
            ("instance", v.name.as_str()),
            ("interface", v.interface.as_str()),
        ];
        for st in STATES {
            let sl = [l[0], l[1], ("state", st)];
            o.add(
                "herd_vrrp_state",
                "gauge",
                "A VRRP instance's state; 1 for the state it is in.",
                &sl,
                f64::from(u8::from(v.state == st)),
            );
        }
        o.add(
            "herd_vrrp_priority",
            "gauge",
            "The priority in effect (after tracking).",
            &l,
            f64::from(v.priority),
        );
        o.add(
            "herd_vrrp_transitions_total",
            "counter",
            "State changes of a VRRP instance since the daemon started.",
            &l,
            v.transitions_total as f64,
        );
        o.add(
            "herd_vrrp_adverts_sent_total",
            "counter",
            "VRRP advertisements sent.",
            &l,
            v.adverts_sent as f64,
        );
        o.add(
            "herd_vrrp_adverts_received_total",
            "counter",
            "VRRP advertisements received and accepted.",
            &l,
            v.adverts_received as f64,
        );
        for (reason, n) in &v.dropped {
            let dl = [l[0], l[1], ("reason", reason.as_str())];
            o.add(
                "herd_vrrp_dropped_packets_total",
                "counter",
                "VRRP packets dropped, by reason.",
                &dl,
                *n as f64,
            );
        }
    }
    for (outcome, c) in [
        ("ok", &web.logins_ok),
        ("failed", &web.logins_failed),
        ("limited", &web.logins_limited),
    ] {
        o.add(
            "herd_web_logins_total",
            "counter",
            "Dashboard and API login attempts, by outcome.",
            &[("outcome", outcome)],
            c.load(Relaxed) as f64,
        );
    }
    o.add(
        "herd_web_sessions",
        "gauge",
        "Dashboard and API sessions alive.",
        &[],
        sessions as f64,
    );
    o.finish()
}
