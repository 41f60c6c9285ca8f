//! `[health]` rendered back to TOML (`Config::to_toml`): a serialize-only mirror of the raw
//! form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use herd_rules::spec::{
    AlertOn, AlertSpec, CheckKind, CheckSpec, ExecProtocol, OnFailure, Sink, Targets,
};
use serde::Serialize;

use super::super::smtp::SmtpOut;
use super::super::values::format_duration;
use super::HealthConfig;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(in crate::config) struct HealthOut {
    max_concurrent: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    randstart: Option<String>,
    mondir: Vec<String>,
    alertdir: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<String>,
    history_retention: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    hostgroups: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    smtp: Option<SmtpOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mon_listen: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mon_insecure: bool,
    mon_max_connections: usize,
    mon_idle_timeout: String,
    check: Vec<CheckOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct CheckOut {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reals: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    interval: String,
    failure_interval: String,
    timeout: String,
    rise: u32,
    fall: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_failure: Option<OnFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flap: Option<FlapOut>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_verify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<ExecProtocol>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alert: Vec<AlertOut>,
}

#[derive(Serialize)]
struct FlapOut {
    changes: u32,
    window: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct AlertOut {
    on: AlertOn,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log: bool,
    period: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    within: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    timeout: String,
}

impl From<&HealthConfig> for HealthOut {
    fn from(h: &HealthConfig) -> Self {
        let paths = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
        HealthOut {
            max_concurrent: h.max_concurrent,
            randstart: h.randstart.map(format_duration),
            mondir: paths(&h.mondir),
            alertdir: paths(&h.alertdir),
            history: h.history.as_ref().map(|p| p.display().to_string()),
            history_retention: format_duration(h.history_retention),
            hostgroups: h.hostgroups.clone(),
            smtp: h.smtp.as_ref().map(SmtpOut::from),
            mon_listen: h.mon_listen.map(|a| a.to_string()),
            mon_insecure: h.mon_insecure,
            mon_max_connections: h.mon_max_connections,
            mon_idle_timeout: format_duration(h.mon_idle_timeout),
            check: h.checks.iter().map(CheckOut::from).collect(),
        }
    }
}

impl From<&CheckSpec> for CheckOut {
    fn from(c: &CheckSpec) -> Self {
        let (service, hosts, group) = match &c.targets {
            Targets::Service(s) => (Some(s.clone()), None, None),
            Targets::Hosts(h) => (None, Some(h.clone()), None),
            Targets::Group(g) => (None, None, Some(g.clone())),
        };
        let mut out = CheckOut {
            name: c.name.clone(),
            kind: c.kind.type_name(),
            service,
            hosts,
            group,
            reals: c.reals.clone(),
            port: c.port,
            interval: format_duration(c.interval),
            failure_interval: format_duration(c.failure_interval),
            timeout: format_duration(c.timeout),
            rise: c.rise,
            fall: c.fall,
            depends: c.depends.clone(),
            on_failure: matches!(c.targets, Targets::Service(_)).then_some(c.on_failure),
            flap: c.flap.map(|f| FlapOut {
                changes: f.changes,
                window: format_duration(f.window),
            }),
            disabled: c.disabled,
            send: None,
            expect: None,
            method: None,
            path: None,
            host: None,
            status: None,
            sni: None,
            tls_verify: None,
            tls_ca: None,
            cert_warning: None,
            query: None,
            query_type: None,
            command: None,
            protocol: None,
            alert: c.alerts.iter().map(AlertOut::from).collect(),
        };
        kind_keys(&mut out, &c.kind);
        out
    }
}

/// The keys of a check's own type.
fn kind_keys(out: &mut CheckOut, kind: &CheckKind) {
    match kind {
        CheckKind::Tcp { send, expect } => {
            out.send = send.clone();
            out.expect = expect.clone();
        }
        CheckKind::Http {
            method,
            path,
            host,
            status,
            expect,
            tls,
        } => {
            if let Some(t) = tls {
                out.sni = t.sni.clone();
                out.tls_verify = Some(t.verify);
                out.tls_ca = t.ca.as_ref().map(|p| p.display().to_string());
                out.cert_warning = Some(format_duration(t.expiry_warning));
            }
            out.method = Some(method.clone());
            out.path = Some(path.clone());
            out.host = host.clone();
            out.status = Some(
                status
                    .iter()
                    .map(|&(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect(),
            );
            out.expect = expect.clone();
        }
        CheckKind::Icmp => {}
        CheckKind::Udp { send, expect } => {
            out.send = Some(send.clone());
            out.expect = expect.clone();
        }
        CheckKind::Dns {
            query,
            query_type,
            expect,
        } => {
            out.query = Some(query.clone());
            out.query_type = Some(query_type.clone());
            out.expect = expect.clone();
        }
        CheckKind::Exec {
            command,
            protocol,
            no_hosts,
        } => {
            let mut words = command.clone();
            if *no_hosts {
                words.push(";;".into());
            }
            out.command = Some(words);
            out.protocol = Some(*protocol);
        }
    }
}

impl From<&AlertSpec> for AlertOut {
    fn from(a: &AlertSpec) -> Self {
        let down = a.on == AlertOn::Down;
        AlertOut {
            on: a.on,
            exec: match &a.sink {
                Sink::Exec { command } => Some(command.clone()),
                _ => None,
            },
            webhook: match &a.sink {
                Sink::Webhook { url, .. } => Some(url.clone()),
                _ => None,
            },
            tls_ca: match &a.sink {
                Sink::Webhook {
                    tls_ca: Some(ca), ..
                } => Some(ca.display().to_string()),
                _ => None,
            },
            email: match &a.sink {
                Sink::Email { to } => Some(to.clone()),
                _ => None,
            },
            log: a.sink == Sink::Log,
            period: a.period.to_string(),
            every: a.every.map(format_duration),
            after: (down && (a.after != 1 || a.within.is_some())).then_some(a.after),
            within: a.within.map(format_duration),
            max: (down && a.max != 0).then_some(a.max),
            timeout: format_duration(a.timeout),
        }
    }
}
