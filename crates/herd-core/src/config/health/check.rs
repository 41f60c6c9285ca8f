//! One `[[health.check]]`: which keys each probe type takes ([`TYPE_KEYS`], data), the probe
//! types with their small validators ([`TYPES`]), and the keys every type shares (targets,
//! port, timing, thresholds, failure action, flapping, alerts).

use std::path::PathBuf;
use std::time::Duration;

use herd_rules::spec::{CheckKind, CheckSpec, ExecProtocol, Flap, OnFailure, Targets, Tls};
use toml::Spanned;

use super::super::error::{ConfigError, Lines};
use super::super::lb::LbConfig;
use super::super::values::{duration, duration_value, host_port, RawDuration};
use super::{
    alert, command, find_service, parse_status, real_matches, unescape, HealthConfig, RawCheck,
    DEFAULT_CERT_WARNING, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT, DNS_TYPES,
};

/// The keys that only some probe types take, with those types, in the order their errors are
/// reported. Every other key of a check is taken by every type.
pub(super) const TYPE_KEYS: &[(&str, &[&str])] = &[
    ("send", &["tcp", "udp"]),
    ("expect", &["tcp", "http", "https", "udp", "dns"]),
    ("query", &["dns"]),
    ("query-type", &["dns"]),
    ("method", &["http", "https"]),
    ("path", &["http", "https"]),
    ("host", &["http", "https"]),
    ("status", &["http", "https"]),
    ("sni", &["https"]),
    ("tls-ca", &["https"]),
    ("cert-warning", &["https"]),
    ("tls-verify", &["https"]),
    ("command", &["exec"]),
    ("protocol", &["exec"]),
];

/// Builds a check type's [`CheckKind`] from its own keys; `None` when a key it needs is
/// missing or unusable (the error is in `errs`).
type KindValidator = fn(&Ck<'_, '_>, &RawCheck, &mut Vec<ConfigError>) -> Option<CheckKind>;

/// The probe types, in the order the "unknown check type" error lists them.
pub(super) const TYPES: &[(&str, KindValidator)] = &[
    ("icmp", icmp),
    ("tcp", tcp),
    ("http", http),
    ("https", http),
    ("udp", udp),
    ("dns", dns),
    ("exec", exec),
];

/// A check's place in the file, for its errors: `health.check[3]` and its keys.
pub(super) struct Ck<'a, 'b> {
    l: &'a Lines<'b>,
    key: &'a str,
}

impl Ck<'_, '_> {
    fn err<T>(
        &self,
        span: Option<&Spanned<T>>,
        k: &str,
        reason: impl std::fmt::Display,
    ) -> ConfigError {
        self.l.err(span, format!("{}.{k}", self.key), reason)
    }
}

/// Where a type-specific key is given: `None` if it is not, else the byte offset its error
/// points at (`tls-verify`, a plain bool without a span, points at `type`).
fn given(r: &RawCheck, k: &str) -> Option<usize> {
    fn at<T>(s: &Option<Spanned<T>>) -> Option<usize> {
        s.as_ref().map(|s| s.span().start)
    }
    match k {
        "send" => at(&r.send),
        "expect" => at(&r.expect),
        "query" => at(&r.query),
        "query-type" => at(&r.query_type),
        "method" => at(&r.method),
        "path" => at(&r.path),
        "host" => at(&r.host),
        "status" => at(&r.status),
        "sni" => at(&r.sni),
        "tls-ca" => at(&r.tls_ca),
        "cert-warning" => at(&r.cert_warning),
        "tls-verify" => r.tls_verify.map(|_| r.kind.span().start),
        "command" => at(&r.command),
        "protocol" => at(&r.protocol),
        _ => None,
    }
}

/// Validates one check; `None` if it has errors (they are in `errs`).
pub(super) fn check(
    l: &Lines<'_>,
    key: &str,
    rc: &Spanned<RawCheck>,
    lb: &LbConfig,
    h: &HealthConfig,
    errs: &mut Vec<ConfigError>,
) -> Option<CheckSpec> {
    let ck = Ck { l, key };
    let r = rc.get_ref();
    let before = errs.len();
    let name = r.name.get_ref().clone();
    if name.is_empty() || name.contains(char::is_whitespace) {
        errs.push(ck.err(
            Some(&r.name),
            "name",
            "must be a non-empty word without spaces",
        ));
    }
    type_keys(&ck, r, errs);
    let kind = kind(&ck, r, errs)?;
    let targets = targets(&ck, r, lb, h, errs)?;
    let reals = reals(&ck, r, &targets, lb, errs);
    let port = port(&ck, r, &targets, h, errs);
    let (interval, failure_interval, timeout) = timing(&ck, r, errs);
    let rise = count(&ck, &r.rise, "rise", DEFAULT_RISE, errs);
    let fall = count(&ck, &r.fall, "fall", DEFAULT_FALL, errs);
    let on_failure = on_failure(&ck, r, &targets, errs);
    let flap = flap(&ck, r, errs);
    let mut alerts = Vec::new();
    for (j, ra) in r.alert.iter().enumerate() {
        if let Some(a) = alert(l, &format!("{key}.alert[{j}]"), ra, h.smtp.is_some(), errs) {
            alerts.push(a);
        }
    }
    if errs.len() != before {
        return None;
    }
    Some(CheckSpec {
        name,
        kind,
        targets,
        reals,
        port,
        interval,
        failure_interval,
        timeout,
        rise,
        fall,
        depends: r.depends.iter().map(|d| d.get_ref().clone()).collect(),
        on_failure,
        flap,
        alerts,
        disabled: r.disabled.unwrap_or(false),
    })
}

/// Every type-specific key given to a type that does not take it is an error.
fn type_keys(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) {
    let kind_name = r.kind.get_ref().as_str();
    for (k, types) in TYPE_KEYS {
        if let Some(at) = given(r, k) {
            if !types.contains(&kind_name) {
                errs.push(ConfigError {
                    file: ck.l.file.to_string(),
                    line: Some(ck.l.line(at)),
                    key: format!("{}.{k}", ck.key),
                    reason: format!("only for type {}", types.join(" or ")),
                });
            }
        }
    }
}

/// The probe, by the validator of its `type`.
fn kind(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    let kind_name = r.kind.get_ref().as_str();
    if let Some((_, validate)) = TYPES.iter().find(|(t, _)| *t == kind_name) {
        return validate(ck, r, errs);
    }
    let names: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
    let (last, rest) = names.split_last().unwrap_or((&"", &[]));
    errs.push(ck.err(
        Some(&r.kind),
        "type",
        format!(
            "unknown check type {kind_name:?} (expected {} or {last})",
            rest.join(", ")
        ),
    ));
    None
}

fn icmp(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    if let Some(p) = &r.port {
        errs.push(ck.err(Some(p), "port", "ICMP has no ports"));
    }
    Some(CheckKind::Icmp)
}

fn tcp(_: &Ck<'_, '_>, r: &RawCheck, _: &mut Vec<ConfigError>) -> Option<CheckKind> {
    Some(CheckKind::Tcp {
        send: r.send.as_ref().map(|s| unescape(s.get_ref())),
        expect: r.expect.as_ref().map(|s| unescape(s.get_ref())),
    })
}

/// `http` and `https` (with its TLS keys).
fn http(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    let method = r
        .method
        .as_ref()
        .map_or("GET".to_string(), |m| m.get_ref().to_ascii_uppercase());
    if !method.chars().all(|c| c.is_ascii_alphabetic()) || method.is_empty() {
        errs.push(ck.err(r.method.as_ref(), "method", "not an HTTP method"));
    }
    let path = r
        .path
        .as_ref()
        .map_or("/".to_string(), |p| p.get_ref().clone());
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        errs.push(ck.err(
            r.path.as_ref(),
            "path",
            "must start with / and contain no spaces",
        ));
    }
    let status = statuses(ck, r, errs);
    if let Some(e) = &r.expect {
        if let Err(err) = regex_lite::Regex::new(e.get_ref()) {
            errs.push(ck.err(Some(e), "expect", format!("bad regex: {err}")));
        }
    }
    let tls = (r.kind.get_ref() == "https").then(|| tls(ck, r, errs));
    Some(CheckKind::Http {
        method,
        path,
        host: r.host.as_ref().map(|h| h.get_ref().clone()),
        status,
        expect: r.expect.as_ref().map(|e| e.get_ref().clone()),
        tls,
    })
}

/// An http check's accepted statuses (200-399 unless given).
fn statuses(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Vec<(u16, u16)> {
    let Some(s) = &r.status else {
        return vec![(200, 399)];
    };
    let mut status = Vec::new();
    for item in s.get_ref() {
        match parse_status(item) {
            Ok(range) => status.push(range),
            Err(e) => errs.push(ck.err(Some(s), "status", e)),
        }
    }
    if s.get_ref().is_empty() {
        errs.push(ck.err(Some(s), "status", "needs at least one status"));
    }
    status
}

fn tls(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Tls {
    Tls {
        sni: r.sni.as_ref().map(|s| s.get_ref().clone()),
        verify: r.tls_verify.unwrap_or(true),
        ca: r.tls_ca.as_ref().map(|p| PathBuf::from(p.get_ref())),
        expiry_warning: match &r.cert_warning {
            None => DEFAULT_CERT_WARNING,
            Some(d) => duration(d).unwrap_or_else(|e| {
                errs.push(ck.err(Some(d), "cert-warning", e));
                DEFAULT_CERT_WARNING
            }),
        },
    }
}

fn udp(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    let Some(send) = &r.send else {
        errs.push(ck.err(Some(&r.kind), "send", "type udp needs send (the datagram)"));
        return None;
    };
    Some(CheckKind::Udp {
        send: unescape(send.get_ref()),
        expect: r.expect.as_ref().map(|s| unescape(s.get_ref())),
    })
}

fn dns(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    let Some(q) = &r.query else {
        errs.push(ck.err(
            Some(&r.kind),
            "query",
            "type dns needs query (a name to look up)",
        ));
        return None;
    };
    let name = q.get_ref().trim_end_matches('.');
    if name.is_empty()
        || name.len() > 253
        || name.split('.').any(|l| l.is_empty() || l.len() > 63)
        || name.contains(char::is_whitespace)
    {
        errs.push(ck.err(
            Some(q),
            "query",
            format!("{:?} is not a domain name", q.get_ref()),
        ));
    }
    let qt = r
        .query_type
        .as_ref()
        .map_or("A".to_string(), |t| t.get_ref().to_ascii_uppercase());
    if !DNS_TYPES.contains(&qt.as_str()) {
        errs.push(ck.err(
            r.query_type.as_ref(),
            "query-type",
            format!(
                "unknown type {qt:?} (expected one of {})",
                DNS_TYPES.join(" ")
            ),
        ));
    }
    Some(CheckKind::Dns {
        query: q.get_ref().clone(),
        query_type: qt,
        expect: r.expect.as_ref().map(|s| s.get_ref().clone()),
    })
}

fn exec(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<CheckKind> {
    let Some(cmd) = &r.command else {
        errs.push(ck.err(Some(&r.kind), "command", "type exec needs a command"));
        return None;
    };
    let (mut words, no_hosts) = match command(cmd.get_ref()) {
        Ok(w) => w,
        Err(e) => {
            errs.push(ck.err(Some(cmd), "command", e));
            return None;
        }
    };
    let protocol = match r.protocol.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("mon") => ExecProtocol::Mon,
        Some("nagios") => ExecProtocol::Nagios,
        Some(other) => {
            errs.push(ck.err(
                r.protocol.as_ref(),
                "protocol",
                format!("unknown protocol {other:?} (expected mon or nagios)"),
            ));
            ExecProtocol::Mon
        }
    };
    words.shrink_to_fit();
    Some(CheckKind::Exec {
        command: words,
        protocol,
        no_hosts,
    })
}

/// Exactly one of `service`, `hosts` or `group`, naming something that exists.
fn targets(
    ck: &Ck<'_, '_>,
    r: &RawCheck,
    lb: &LbConfig,
    h: &HealthConfig,
    errs: &mut Vec<ConfigError>,
) -> Option<Targets> {
    match (&r.service, &r.hosts, &r.group) {
        (Some(s), None, None) => {
            if find_service(lb, s.get_ref()).is_none() {
                errs.push(ck.err(
                    Some(s),
                    "service",
                    format!("no lb.service named or at {:?}", s.get_ref()),
                ));
            }
            Some(Targets::Service(s.get_ref().clone()))
        }
        (None, Some(hs), None) => {
            if hs.get_ref().is_empty() {
                errs.push(ck.err(Some(hs), "hosts", "needs at least one host"));
            }
            Some(Targets::Hosts(hs.get_ref().clone()))
        }
        (None, None, Some(g)) => {
            if !h.hostgroups.contains_key(g.get_ref()) {
                errs.push(ck.err(
                    Some(g),
                    "group",
                    format!("no health.hostgroups entry {:?}", g.get_ref()),
                ));
            }
            Some(Targets::Group(g.get_ref().clone()))
        }
        _ => {
            errs.push(ck.l.err(
                Some(&r.name),
                ck.key.to_string(),
                "needs exactly one of service, hosts or group",
            ));
            None
        }
    }
}

/// `reals`: some real servers of the checked service.
fn reals(
    ck: &Ck<'_, '_>,
    r: &RawCheck,
    targets: &Targets,
    lb: &LbConfig,
    errs: &mut Vec<ConfigError>,
) -> Vec<String> {
    let Some(rs) = &r.reals else {
        return Vec::new();
    };
    let (Targets::Service(name), Some(_)) = (targets, &r.service) else {
        errs.push(ck.err(
            Some(rs),
            "reals",
            "only for checks of a service's real servers",
        ));
        return Vec::new();
    };
    let svc = find_service(lb, name);
    for x in rs.get_ref() {
        let known =
            svc.is_some_and(|svc| svc.reals.iter().any(|real| real_matches(real.address, x)));
        if svc.is_some() && !known {
            errs.push(ck.err(
                Some(rs),
                "reals",
                format!("{x:?} is not a real server of {name}"),
            ));
        }
    }
    rs.get_ref().clone()
}

/// `port`, and a port where a tcp or udp check of hosts needs one.
fn port(
    ck: &Ck<'_, '_>,
    r: &RawCheck,
    targets: &Targets,
    h: &HealthConfig,
    errs: &mut Vec<ConfigError>,
) -> Option<u16> {
    let port = r
        .port
        .as_ref()
        .and_then(|p| match u16::try_from(*p.get_ref()) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                errs.push(ck.err(
                    Some(p),
                    "port",
                    format!("{} is out of range 1..=65535", p.get_ref()),
                ));
                None
            }
        });
    let hosts: &[String] = match targets {
        Targets::Hosts(hs) => hs,
        Targets::Group(g) => h.hostgroups.get(g).map_or(&[], |v| v.as_slice()),
        Targets::Service(_) => &[],
    };
    let kind_name = r.kind.get_ref().as_str();
    if r.port.is_none()
        && matches!(kind_name, "tcp" | "udp")
        && !hosts.iter().all(|h| host_port(h).1.is_some())
    {
        errs.push(ck.err(
            Some(&r.kind),
            "port",
            format!("a {kind_name} check of hosts needs a port"),
        ));
    }
    port
}

/// `interval`, `failure-interval` (default: the interval) and `timeout` (default: 3 s or
/// the interval if shorter).
fn timing(
    ck: &Ck<'_, '_>,
    r: &RawCheck,
    errs: &mut Vec<ConfigError>,
) -> (Duration, Duration, Duration) {
    let mut dur = |v: &Option<Spanned<RawDuration>>, k: &str, default: Duration| match v {
        None => default,
        Some(d) => match duration(d) {
            Ok(x) if !x.is_zero() => x,
            Ok(_) => {
                errs.push(ck.err(Some(d), k, "must be greater than zero"));
                default
            }
            Err(e) => {
                errs.push(ck.err(Some(d), k, e));
                default
            }
        },
    };
    let interval = dur(&r.interval, "interval", DEFAULT_INTERVAL);
    let failure_interval = dur(&r.failure_interval, "failure-interval", interval);
    let timeout = dur(&r.timeout, "timeout", DEFAULT_TIMEOUT.min(interval));
    (interval, failure_interval, timeout)
}

/// `rise` or `fall`: 1..=100.
fn count(
    ck: &Ck<'_, '_>,
    v: &Option<Spanned<i64>>,
    k: &str,
    default: u32,
    errs: &mut Vec<ConfigError>,
) -> u32 {
    match v {
        None => default,
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(x) if (1..=100).contains(&x) => x,
            _ => {
                errs.push(ck.err(
                    Some(n),
                    k,
                    format!("{} is out of range 1..=100", n.get_ref()),
                ));
                default
            }
        },
    }
}

/// `on-failure`, for checks of a service's real servers only.
fn on_failure(
    ck: &Ck<'_, '_>,
    r: &RawCheck,
    targets: &Targets,
    errs: &mut Vec<ConfigError>,
) -> OnFailure {
    let on_failure = match r.on_failure.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("quiesce") => OnFailure::Quiesce,
        Some("remove") => OnFailure::Remove,
        Some(other) => {
            errs.push(ck.err(
                r.on_failure.as_ref(),
                "on-failure",
                format!("unknown action {other:?} (expected quiesce or remove)"),
            ));
            OnFailure::Quiesce
        }
    };
    if r.on_failure.is_some() && !matches!(targets, Targets::Service(_)) {
        errs.push(ck.err(
            r.on_failure.as_ref(),
            "on-failure",
            "only for checks of a service's real servers",
        ));
    }
    on_failure
}

/// `flap = { changes, window }`.
fn flap(ck: &Ck<'_, '_>, r: &RawCheck, errs: &mut Vec<ConfigError>) -> Option<Flap> {
    let f = r.flap.as_ref()?;
    let raw = f.get_ref();
    let changes = u32::try_from(raw.changes)
        .ok()
        .filter(|c| (2..=1000).contains(c));
    let window = duration_value(&raw.window).ok().filter(|w| !w.is_zero());
    match (changes, window) {
        (Some(changes), Some(window)) => Some(Flap { changes, window }),
        _ => {
            errs.push(ck.err(
                Some(f),
                "flap",
                "needs changes in 2..=1000 and a window greater than zero",
            ));
            None
        }
    }
}
