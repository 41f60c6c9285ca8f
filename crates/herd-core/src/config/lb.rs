//! `[lb]` and `[[lb.service]]`: the director's settings and its virtual services with their
//! real servers. The services' vocabulary ([`ServiceSpec`], [`RealSpec`], schedulers) is
//! [`crate::model`]'s, which the control API and the director share.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::values::{
    duration, format_duration, parse_real_addr, parse_socket_addr, secs_u32, RawDuration,
};
use crate::model::{
    netmask_to_prefix, prefix_to_netmask, Forward, ModelError, Persistence, Protocol, Quorum,
    RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec, Timeouts, MAX_THRESHOLD,
    MAX_WEIGHT,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLb {
    pub data_plane: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
    pub connect_timeout: Option<Spanned<RawDuration>>,
    pub idle_poll: Option<Spanned<RawDuration>>,
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTimeouts {
    pub tcp: Option<Spanned<RawDuration>>,
    pub tcp_fin: Option<Spanned<RawDuration>>,
    pub udp: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawService {
    pub name: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub scheduler: Option<Spanned<String>>,
    pub hash_fallback: Option<bool>,
    pub hash_port: Option<bool>,
    pub persistence: Option<Spanned<RawDuration>>,
    pub persistence_netmask: Option<Spanned<String>>,
    pub proxy_protocol: Option<bool>,
    pub quorum: Option<Spanned<i64>>,
    pub quorum_hysteresis: Option<Spanned<i64>>,
    pub sorry_server: Option<Spanned<String>>,
    #[serde(default)]
    pub real: Vec<Spanned<RawReal>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawReal {
    pub address: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    pub upper_threshold: Option<Spanned<i64>>,
    pub lower_threshold: Option<Spanned<i64>>,
    pub forward: Option<Spanned<String>>,
}

/// The data plane that forwards traffic for the virtual services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneKind {
    /// Userspace TCP/UDP proxy (works without privileges).
    Proxy,
}

/// One virtual service with its real servers.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub spec: ServiceSpec,
    pub reals: Vec<RealSpec>,
    pub quorum: Option<Quorum>,
}

/// Validated director settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    pub data_plane: DataPlaneKind,
    /// Worker threads of the data plane; 0 = one per core.
    pub workers: usize,
    pub connect_timeout: Duration,
    /// How long a data-plane worker that has run out of work keeps yielding the CPU before it
    /// sleeps in `epoll_wait`; 0 = sleep at once.
    pub idle_poll: Duration,
    pub timeouts: Timeouts,
    pub services: Vec<ServiceConfig>,
}

/// Longest accepted `lb.idle-poll`: beyond this, polling costs CPU without a return.
pub const MAX_IDLE_POLL: Duration = Duration::from_millis(1);

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            data_plane: DataPlaneKind::Proxy,
            workers: 0,
            connect_timeout: Duration::from_secs(3),
            idle_poll: Duration::from_micros(10),
            timeouts: Timeouts::default(),
            services: Vec::new(),
        }
    }
}

/// Validates `[lb]` and its services.
pub(super) fn validate(l: &Lines<'_>, raw: &RawLb, errs: &mut Vec<ConfigError>) -> LbConfig {
    let mut lb = LbConfig::default();
    if let Some(dp) = &raw.data_plane {
        match dp.get_ref().as_str() {
            "proxy" => lb.data_plane = DataPlaneKind::Proxy,
            other => errs.push(l.err(
                Some(dp),
                "lb.data-plane",
                format!("unknown data plane {other:?} (expected proxy)"),
            )),
        }
    }
    if let Some(w) = &raw.workers {
        match usize::try_from(*w.get_ref()) {
            Ok(n) if n <= 1024 => lb.workers = n,
            _ => errs.push(l.err(
                Some(w),
                "lb.workers",
                format!(
                    "{} is out of range 0..=1024 (0 = one per core)",
                    w.get_ref()
                ),
            )),
        }
    }
    if let Some(d) = &raw.connect_timeout {
        match duration(d) {
            Ok(v) if !v.is_zero() => lb.connect_timeout = v,
            Ok(_) => errs.push(l.err(Some(d), "lb.connect-timeout", "must be greater than zero")),
            Err(e) => errs.push(l.err(Some(d), "lb.connect-timeout", e)),
        }
    }
    if let Some(d) = &raw.idle_poll {
        match duration(d) {
            Ok(v) if v <= MAX_IDLE_POLL => lb.idle_poll = v,
            Ok(_) => errs.push(l.err(
                Some(d),
                "lb.idle-poll",
                format!("must be at most {}", format_duration(MAX_IDLE_POLL)),
            )),
            Err(e) => errs.push(l.err(Some(d), "lb.idle-poll", e)),
        }
    }
    if let Some(t) = &raw.timeouts {
        for (val, key, slot) in [
            (&t.tcp, "lb.timeouts.tcp", &mut lb.timeouts.tcp),
            (&t.tcp_fin, "lb.timeouts.tcp-fin", &mut lb.timeouts.tcp_fin),
            (&t.udp, "lb.timeouts.udp", &mut lb.timeouts.udp),
        ] {
            if let Some(v) = val {
                match duration(v).and_then(secs_u32) {
                    Ok(0) => errs.push(l.err(Some(v), key, "must be at least 1s")),
                    Ok(s) => *slot = s,
                    Err(e) => errs.push(l.err(Some(v), key, e)),
                }
            }
        }
    }

    let mut seen_services = HashSet::new();
    for (i, svc) in raw.service.iter().enumerate() {
        let prefix = format!("lb.service[{i}]");
        if let Some(s) = service(l, &prefix, svc, errs) {
            if !seen_services.insert(s.spec.key) {
                errs.push(l.err(
                    Some(&svc.get_ref().address),
                    format!("{prefix}.address"),
                    format!("duplicate virtual service {}", s.spec.key),
                ));
            }
            lb.services.push(s);
        }
    }
    lb
}

fn service(
    l: &Lines<'_>,
    prefix: &str,
    svc: &Spanned<RawService>,
    errs: &mut Vec<ConfigError>,
) -> Option<ServiceConfig> {
    let raw = svc.get_ref();
    let before = errs.len();
    let protocol = match &raw.protocol {
        None => Protocol::Tcp,
        Some(p) => p.get_ref().parse().unwrap_or_else(|e: ModelError| {
            errs.push(l.err(Some(p), format!("{prefix}.protocol"), e));
            Protocol::Tcp
        }),
    };
    let address = parse_socket_addr(raw.address.get_ref())
        .map_err(|e| e.to_string())
        .and_then(|a| match a.port() {
            0 => Err(format!("{a}: a virtual service needs a port other than 0")),
            _ => Ok(a),
        })
        .unwrap_or_else(|e| {
            errs.push(l.err(Some(&raw.address), format!("{prefix}.address"), e));
            SocketAddr::from(([0, 0, 0, 0], 0))
        });
    let scheduler = match &raw.scheduler {
        None => SchedulerKind::Wlc,
        Some(s) => s.get_ref().parse().unwrap_or_else(|e: ModelError| {
            errs.push(l.err(Some(s), format!("{prefix}.scheduler"), e));
            SchedulerKind::Wlc
        }),
    };
    let sched_flags = SchedFlags {
        fallback: raw.hash_fallback.unwrap_or(false),
        port: raw.hash_port.unwrap_or(false),
    };
    let persistence = persistence(l, prefix, raw, address, errs);
    if raw.proxy_protocol == Some(true) && protocol == Protocol::Udp {
        errs.push(l.err(
            raw.protocol.as_ref(),
            format!("{prefix}.proxy-protocol"),
            "the PROXY protocol is supported for TCP services only",
        ));
    }
    let key = ServiceKey { protocol, address };
    let spec = ServiceSpec {
        key,
        name: raw.name.as_ref().map(|n| n.get_ref().clone()),
        scheduler,
        sched_flags,
        persistence,
        proxy_protocol: raw.proxy_protocol.unwrap_or(false),
    };

    let mut reals = Vec::new();
    let mut seen = HashSet::new();
    for (j, r) in raw.real.iter().enumerate() {
        let rp = format!("{prefix}.real[{j}]");
        if let Some(real) = real(l, &rp, r.get_ref(), &spec, &mut seen, errs) {
            reals.push(real);
        }
    }
    let quorum = quorum(l, prefix, raw, &spec, &reals, errs);
    (errs.len() == before).then_some(ServiceConfig {
        spec,
        reals,
        quorum,
    })
}

/// `persistence` and `persistence-netmask` of a service at `address`.
fn persistence(
    l: &Lines<'_>,
    prefix: &str,
    raw: &RawService,
    address: SocketAddr,
    errs: &mut Vec<ConfigError>,
) -> Option<Persistence> {
    match &raw.persistence {
        None => {
            if let Some(m) = &raw.persistence_netmask {
                errs.push(l.err(
                    Some(m),
                    format!("{prefix}.persistence-netmask"),
                    "needs persistence",
                ));
            }
            None
        }
        Some(p) => {
            let timeout = match duration(p).and_then(secs_u32) {
                Ok(0) => {
                    errs.push(l.err(
                        Some(p),
                        format!("{prefix}.persistence"),
                        "must be at least 1s",
                    ));
                    0
                }
                Ok(t) => t,
                Err(e) => {
                    errs.push(l.err(Some(p), format!("{prefix}.persistence"), e));
                    0
                }
            };
            let max = if address.is_ipv6() { 128 } else { 32 };
            let prefix_len = match &raw.persistence_netmask {
                None => max,
                Some(m) => match netmask_to_prefix(m.get_ref()) {
                    Ok(n) if n <= max => n,
                    Ok(n) => {
                        errs.push(l.err(
                            Some(m),
                            format!("{prefix}.persistence-netmask"),
                            format!("/{n} is longer than the address"),
                        ));
                        max
                    }
                    Err(e) => {
                        errs.push(l.err(Some(m), format!("{prefix}.persistence-netmask"), e));
                        max
                    }
                },
            };
            Some(Persistence {
                timeout,
                prefix: prefix_len,
            })
        }
    }
}

/// One real server of the service `spec`; `None` if its address is unusable. `seen`: the
/// service's real servers so far.
fn real(
    l: &Lines<'_>,
    rp: &str,
    rr: &RawReal,
    spec: &ServiceSpec,
    seen: &mut HashSet<SocketAddr>,
    errs: &mut Vec<ConfigError>,
) -> Option<RealSpec> {
    let address = match parse_real_addr(rr.address.get_ref(), spec.key.address.port()) {
        Ok(a) if a.port() == 0 => {
            errs.push(l.err(
                Some(&rr.address),
                format!("{rp}.address"),
                format!("{a}: a real server needs a port other than 0"),
            ));
            return None;
        }
        Ok(a) => a,
        Err(e) => {
            errs.push(l.err(Some(&rr.address), format!("{rp}.address"), e));
            return None;
        }
    };
    if address.is_ipv6() != spec.key.address.is_ipv6() {
        errs.push(l.err(
            Some(&rr.address),
            format!("{rp}.address"),
            "address family differs from the virtual service's",
        ));
    }
    if !seen.insert(address) {
        errs.push(l.err(
            Some(&rr.address),
            format!("{rp}.address"),
            format!("duplicate real server {address} in {}", spec.key),
        ));
    }
    let weight = ranged(l, errs, &rr.weight, &format!("{rp}.weight"), MAX_WEIGHT, 1);
    let upper = ranged(
        l,
        errs,
        &rr.upper_threshold,
        &format!("{rp}.upper-threshold"),
        MAX_THRESHOLD,
        0,
    );
    let lower = ranged(
        l,
        errs,
        &rr.lower_threshold,
        &format!("{rp}.lower-threshold"),
        MAX_THRESHOLD,
        0,
    );
    // The kernel refuses a lower threshold above the upper one, also when there is no
    // upper threshold (0).
    if lower > upper {
        if let Some(lt) = &rr.lower_threshold {
            errs.push(l.err(
                Some(lt),
                format!("{rp}.lower-threshold"),
                format!("{lower} is above the upper threshold {upper}"),
            ));
        }
    }
    let forward = match &rr.forward {
        None => Forward::default(),
        Some(f) => f.get_ref().parse().unwrap_or_else(|e: ModelError| {
            errs.push(l.err(Some(f), format!("{rp}.forward"), e));
            Forward::default()
        }),
    };
    Some(RealSpec {
        address,
        weight,
        upper_threshold: upper,
        lower_threshold: lower,
        forward,
    })
}

/// `quorum`, `quorum-hysteresis` and `sorry-server` of a service.
fn quorum(
    l: &Lines<'_>,
    prefix: &str,
    raw: &RawService,
    spec: &ServiceSpec,
    reals: &[RealSpec],
    errs: &mut Vec<ConfigError>,
) -> Option<Quorum> {
    let Some(q) = &raw.quorum else {
        for (set, k) in [
            (raw.quorum_hysteresis.is_some(), "quorum-hysteresis"),
            (raw.sorry_server.is_some(), "sorry-server"),
        ] {
            if set {
                errs.push(l.err(Some(&raw.address), format!("{prefix}.{k}"), "needs quorum"));
            }
        }
        return None;
    };
    let min = match u32::try_from(*q.get_ref()) {
        Ok(n) if n >= 1 => n,
        _ => {
            errs.push(l.err(
                Some(q),
                format!("{prefix}.quorum"),
                format!("{} is out of range 1..", q.get_ref()),
            ));
            1
        }
    };
    let hysteresis = match &raw.quorum_hysteresis {
        None => 0,
        Some(h) => match u32::try_from(*h.get_ref()) {
            Ok(n) if n < min => n,
            _ => {
                errs.push(l.err(
                    Some(h),
                    format!("{prefix}.quorum-hysteresis"),
                    format!(
                        "{} must be at least 0 and below quorum ({min})",
                        h.get_ref()
                    ),
                ));
                0
            }
        },
    };
    let sorry_server = raw.sorry_server.as_ref().and_then(|s| {
        match parse_real_addr(s.get_ref(), spec.key.address.port()) {
            Ok(a) if reals.iter().any(|r| r.address == a) => {
                errs.push(l.err(
                    Some(s),
                    format!("{prefix}.sorry-server"),
                    format!("{a} is one of the service's real servers"),
                ));
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                errs.push(l.err(Some(s), format!("{prefix}.sorry-server"), e));
                None
            }
        }
    });
    Some(Quorum {
        min,
        hysteresis,
        sorry_server,
    })
}

fn ranged(
    l: &Lines<'_>,
    errs: &mut Vec<ConfigError>,
    v: &Option<Spanned<i64>>,
    key: &str,
    max: u32,
    default: u32,
) -> u32 {
    match v {
        None => default,
        Some(s) => match u32::try_from(*s.get_ref()) {
            Ok(n) if n <= max => n,
            _ => {
                errs.push(l.err(
                    Some(s),
                    key,
                    format!("{} is out of range 0..={max}", s.get_ref()),
                ));
                default
            }
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct LbOut {
    data_plane: &'static str,
    workers: usize,
    connect_timeout: String,
    idle_poll: String,
    timeouts: TimeoutsOut,
    service: Vec<ServiceOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct TimeoutsOut {
    tcp: String,
    tcp_fin: String,
    udp: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ServiceOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    protocol: String,
    address: String,
    scheduler: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    hash_fallback: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    hash_port: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence_netmask: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    proxy_protocol: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum_hysteresis: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sorry_server: Option<String>,
    real: Vec<RealOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct RealOut {
    address: String,
    weight: u32,
    #[serde(skip_serializing_if = "is_zero")]
    upper_threshold: u32,
    #[serde(skip_serializing_if = "is_zero")]
    lower_threshold: u32,
    forward: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl From<&ServiceConfig> for ServiceOut {
    fn from(s: &ServiceConfig) -> Self {
        let v6 = s.spec.key.address.is_ipv6();
        let full = if v6 { 128 } else { 32 };
        ServiceOut {
            name: s.spec.name.clone(),
            protocol: s.spec.key.protocol.to_string(),
            address: s.spec.key.address.to_string(),
            scheduler: s.spec.scheduler.to_string(),
            hash_fallback: s.spec.sched_flags.fallback,
            hash_port: s.spec.sched_flags.port,
            persistence: s.spec.persistence.map(|p| format!("{}s", p.timeout)),
            persistence_netmask: s
                .spec
                .persistence
                .filter(|p| p.prefix != full)
                .map(|p| prefix_to_netmask(p.prefix, v6)),
            proxy_protocol: s.spec.proxy_protocol,
            real: s
                .reals
                .iter()
                .map(|r| RealOut {
                    address: r.address.to_string(),
                    weight: r.weight,
                    upper_threshold: r.upper_threshold,
                    lower_threshold: r.lower_threshold,
                    forward: r.forward.to_string(),
                })
                .collect(),
            quorum: s.quorum.map(|q| q.min),
            quorum_hysteresis: s.quorum.map(|q| q.hysteresis).filter(|&h| h != 0),
            sorry_server: s.quorum.and_then(|q| q.sorry_server).map(|a| a.to_string()),
        }
    }
}

pub(super) fn lb_out(lb: &LbConfig) -> LbOut {
    LbOut {
        data_plane: "proxy",
        workers: lb.workers,
        connect_timeout: format_duration(lb.connect_timeout),
        idle_poll: format_duration(lb.idle_poll),
        timeouts: TimeoutsOut {
            tcp: format!("{}s", lb.timeouts.tcp),
            tcp_fin: format!("{}s", lb.timeouts.tcp_fin),
            udp: format!("{}s", lb.timeouts.udp),
        },
        service: lb.services.iter().map(ServiceOut::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    /// Each bad input names the file, the line and the key.
    fn check_err(src: &str, expect: &str) {
        let err = Config::parse("bad.toml", src).unwrap_err().to_string();
        assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    }

    #[test]
    fn bad_inputs_name_line_and_key() {
        let svc = "[[lb.service]]\naddress = \"127.0.0.1:80\"\n";
        check_err(
            &format!("{svc}quorum = 0\n"),
            "bad.toml:3: lb.service[0].quorum: 0 is out of range 1..",
        );
        check_err(
            &format!("{svc}quorum = 2\nquorum-hysteresis = 2\n"),
            "bad.toml:4: lb.service[0].quorum-hysteresis: 2 must be at least 0 and below quorum (2)",
        );
        check_err(
            &format!("{svc}sorry-server = \"127.0.0.9\"\n"),
            "bad.toml:2: lb.service[0].sorry-server: needs quorum",
        );
        check_err(
            &format!("{svc}quorum = 1\nsorry-server = \"127.0.0.2\"\n[[lb.service.real]]\naddress = \"127.0.0.2\"\n"),
            "bad.toml:4: lb.service[0].sorry-server: 127.0.0.2:80 is one of the service's real servers",
        );
        check_err("[lb]\nwrkers = 2\n", "bad.toml:2: lb.wrkers: unknown field");
        check_err(
            "[lb]\nworkers = \"many\"\n",
            "bad.toml:2: lb.workers: invalid type",
        );
        check_err(
            "[[lb.service]]\naddress = \"1.2.3.4:80\"\n  [[lb.service.real]]\n  weight = \"x\"\n",
            "bad.toml:4: lb.service.real.weight: invalid type",
        );
        check_err(
            "[[lb.service]]\naddress = \"127.0.0.1\"\n",
            "bad.toml:2: lb.service[0].address: invalid address",
        );
        check_err(
            "[[lb.service]]\naddress = \"1.2.3.4:80\"\nscheduler = \"fast\"\n",
            "bad.toml:3: lb.service[0].scheduler: unknown scheduler",
        );
        check_err(
            &format!("{svc}{svc}"),
            "bad.toml:4: lb.service[1].address: duplicate virtual service TCP 127.0.0.1:80",
        );
        check_err(
            &format!("{svc}[[lb.service.real]]\naddress = \"127.0.0.2:80\"\nweight = 70000\n"),
            "bad.toml:5: lb.service[0].real[0].weight: 70000 is out of range 0..=65535",
        );
        check_err(
            &format!("{svc}[[lb.service.real]]\naddress = \"127.0.0.2\"\n[[lb.service.real]]\naddress = \"127.0.0.2:80\"\n"),
            "bad.toml:6: lb.service[0].real[1].address: duplicate real server 127.0.0.2:80",
        );
        check_err("[lb\n", "bad.toml:1: (syntax)");
        check_err(
            "[[lb.service]]\naddress = \"127.0.0.1:0\"\n",
            "bad.toml:2: lb.service[0].address: 127.0.0.1:0: a virtual service needs a port",
        );
        check_err(
            "[daemon]\ndrain-timeout = 9223372036854775807\n",
            "bad.toml:2: daemon.drain-timeout: 9223372036854775807s is longer than a year",
        );
        check_err("[[lb.service]]\nprotocol = \"udp\"\naddress = \"127.0.0.1:53\"\nproxy-protocol = true\n", "bad.toml:2: lb.service[0].proxy-protocol: the PROXY protocol is supported for TCP services only");
        check_err(
            "[lb]\ntimeouts = { tcp = \"5 parsecs\" }\n",
            "bad.toml:2: lb.timeouts.tcp: invalid duration",
        );
        check_err(
            "[lb]\nidle-poll = \"5ms\"\n",
            "bad.toml:2: lb.idle-poll: must be at most 1ms",
        );
    }

    #[test]
    fn idle_poll_defaults_to_10us_and_round_trips() {
        let cfg = Config::parse("a.toml", "").unwrap();
        assert_eq!(cfg.lb.idle_poll, Duration::from_micros(10));
        for (text, want) in [("\"0\"", 0), ("\"250us\"", 250), ("\"1ms\"", 1000)] {
            let cfg = Config::parse("a.toml", &format!("[lb]\nidle-poll = {text}\n")).unwrap();
            assert_eq!(cfg.lb.idle_poll, Duration::from_micros(want));
            let again = Config::parse("out.toml", &cfg.to_toml()).unwrap();
            assert_eq!(again.lb.idle_poll, cfg.lb.idle_poll);
        }
    }
}
