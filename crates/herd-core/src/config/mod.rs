//! The config file: strict TOML with kebab-case keys, parsed in two steps.
//!
//! 1. [`RawConfig`] mirrors the file. Unknown keys and wrong types are rejected by serde; every
//!    value that needs a semantic check keeps its byte span (`toml::Spanned`).
//! 2. [`Config::from_raw`] turns it into the typed model and collects *every* problem as a
//!    [`ConfigError`] that names file, line and key (`herd.toml:12: lb.service[0].real[1].weight:
//!    70000 is out of range 0..=65535`).
//!
//! Nothing here binds a socket: validation happens before the daemon touches the network.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub mod agent;
pub mod cluster;
pub mod health;
pub mod smtp;
pub mod sync;
pub mod vrrp;
pub mod web;

pub use agent::{listen_address, normalize_serial};
pub use vrrp::parse_vip;

use agent::AgentConfig;
use cluster::ClusterConfig;
use health::HealthConfig;
use vrrp::VrrpConfig;

pub use health::{find_service, host_port, parse_http_url, real_matches, split_words, HttpUrl};

use crate::model::{
    netmask_to_prefix, prefix_to_netmask, Forward, Persistence, Protocol, Quorum, RealSpec,
    SchedFlags, SchedulerKind, ServiceKey, ServiceSpec, Timeouts, MAX_THRESHOLD, MAX_WEIGHT,
};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.reason),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.reason),
        }
    }
}

/// All problems found in a config file; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A duration in the config: an integer number of seconds or a string with a unit
/// (`"500ms"`, `"30s"`, `"15m"`, `"2h"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parses `"10us"`, `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"1d"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 500ms, 30s, 15m, 2h)"))?;
    let d = match unit.trim() {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(d)
}

/// Renders a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if d.subsec_millis() != 0 || d.as_secs() == 0 && !d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub lb: RawLb,
    pub health: Option<health::RawHealth>,
    pub vrrp: Option<vrrp::RawVrrp>,
    pub nodes: Option<cluster::RawNodes>,
    pub groups: Option<cluster::RawGroups>,
    pub agent: Option<agent::RawAgent>,
    pub sync: Option<sync::RawSync>,
    pub web: Option<web::RawWeb>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    pub socket: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<RawDuration>>,
    pub log_level: Option<Spanned<String>>,
}

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

/// Validated daemon settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub socket: Option<PathBuf>,
    pub drain_timeout: Duration,
    pub log_level: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: None,
            drain_timeout: Duration::from_secs(30),
            log_level: "info".into(),
        }
    }
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

/// A validated config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub lb: LbConfig,
    pub health: HealthConfig,
    pub vrrp: VrrpConfig,
    pub cluster: ClusterConfig,
    pub agent: AgentConfig,
    /// `[sync.module.*]`, in name order.
    pub sync_modules: Vec<sync::SyncModule>,
    /// `[sync] fanout`: `herd sync push` connections beyond which agents relay (None: the
    /// default, [`sync::SYNC_FANOUT`]).
    pub sync_fanout: Option<usize>,
    /// `[web]`: the dashboard and HTTP API; none without the section.
    pub web: Option<web::WebConfig>,
}

/// Maps byte offsets of the source to 1-based line numbers.
struct Lines<'a> {
    src: &'a str,
    file: &'a str,
}

impl Lines<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: Option<&Spanned<T>>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: span.map(|s| self.line(s.span().start)),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Parses every item of a list of strings with `parse`; each item it refuses is an error
    /// at the list's line, with `parse`'s reason.
    fn each<T>(
        &self,
        list: &Spanned<Vec<String>>,
        key: &str,
        errs: &mut Vec<ConfigError>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(list.get_ref().len());
        for item in list.get_ref() {
            match parse(item) {
                Ok(v) => out.push(v),
                Err(why) => errs.push(self.err(Some(list), key, why)),
            }
        }
        out
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: None,
                key: "(file)".into(),
                reason: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(&file, &src)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(file: &str, src: &str) -> Result<Config, ConfigErrors> {
        let lines = Lines { src, file };
        let raw = parse_raw(&lines)?;
        Config::from_raw(file, src, raw)
    }

    fn from_raw(file: &str, src: &str, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let l = Lines { src, file };
        let mut errs = Vec::new();
        let mut cfg = Config::default();

        if let Some(s) = &raw.daemon.socket {
            cfg.daemon.socket = Some(PathBuf::from(s.get_ref()));
        }
        if let Some(d) = &raw.daemon.drain_timeout {
            match duration(d) {
                Ok(v) => cfg.daemon.drain_timeout = v,
                Err(e) => errs.push(l.err(Some(d), "daemon.drain-timeout", e)),
            }
        }
        if let Some(lv) = &raw.daemon.log_level {
            match lv.get_ref().as_str() {
                "error" | "warn" | "info" | "debug" | "trace" => {
                    cfg.daemon.log_level = lv.get_ref().clone()
                }
                other => errs.push(l.err(
                    Some(lv),
                    "daemon.log-level",
                    format!("unknown level {other:?} (expected error, warn, info, debug or trace)"),
                )),
            }
        }

        if let Some(dp) = &raw.lb.data_plane {
            match dp.get_ref().as_str() {
                "proxy" => cfg.lb.data_plane = DataPlaneKind::Proxy,
                other => errs.push(l.err(
                    Some(dp),
                    "lb.data-plane",
                    format!("unknown data plane {other:?} (expected proxy)"),
                )),
            }
        }
        if let Some(w) = &raw.lb.workers {
            match usize::try_from(*w.get_ref()) {
                Ok(n) if n <= 1024 => cfg.lb.workers = n,
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
        if let Some(d) = &raw.lb.connect_timeout {
            match duration(d) {
                Ok(v) if !v.is_zero() => cfg.lb.connect_timeout = v,
                Ok(_) => {
                    errs.push(l.err(Some(d), "lb.connect-timeout", "must be greater than zero"))
                }
                Err(e) => errs.push(l.err(Some(d), "lb.connect-timeout", e)),
            }
        }
        if let Some(d) = &raw.lb.idle_poll {
            match duration(d) {
                Ok(v) if v <= MAX_IDLE_POLL => cfg.lb.idle_poll = v,
                Ok(_) => errs.push(l.err(
                    Some(d),
                    "lb.idle-poll",
                    format!("must be at most {}", format_duration(MAX_IDLE_POLL)),
                )),
                Err(e) => errs.push(l.err(Some(d), "lb.idle-poll", e)),
            }
        }
        if let Some(t) = &raw.lb.timeouts {
            for (val, key, slot) in [
                (&t.tcp, "lb.timeouts.tcp", &mut cfg.lb.timeouts.tcp),
                (
                    &t.tcp_fin,
                    "lb.timeouts.tcp-fin",
                    &mut cfg.lb.timeouts.tcp_fin,
                ),
                (&t.udp, "lb.timeouts.udp", &mut cfg.lb.timeouts.udp),
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
        for (i, svc) in raw.lb.service.iter().enumerate() {
            let prefix = format!("lb.service[{i}]");
            if let Some(s) = service(&l, &prefix, svc, &mut errs) {
                if !seen_services.insert(s.spec.key) {
                    errs.push(l.err(
                        Some(&svc.get_ref().address),
                        format!("{prefix}.address"),
                        format!("duplicate virtual service {}", s.spec.key),
                    ));
                }
                cfg.lb.services.push(s);
            }
        }

        if let Some(h) = &raw.health {
            cfg.health = health::validate(&l, h, &cfg.lb, &mut errs);
        }
        if let Some(v) = &raw.vrrp {
            cfg.vrrp = vrrp::validate(&l, v, &cfg.lb, &mut errs);
        }
        cfg.cluster = cluster::validate(&l, raw.nodes.as_ref(), raw.groups.as_ref(), &mut errs);
        cfg.agent = agent::validate(&l, raw.agent.as_ref(), &mut errs);
        cfg.sync_modules = sync::validate(&l, raw.sync.as_ref(), &cfg.cluster, &mut errs);
        cfg.sync_fanout = sync::fanout(&l, raw.sync.as_ref(), &mut errs);
        cfg.web = web::validate(&l, raw.web.as_ref(), &mut errs);

        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Replaces its secrets — login hashes, VRRPv2 passwords — by a note, for showing it where
    /// the file itself is not readable (the web).
    pub fn redact_secrets(&mut self) {
        const NOTE: &str = "(redacted; see the config file)";
        for u in self.web.iter_mut().flat_map(|w| &mut w.users) {
            u.password = NOTE.to_string();
        }
        for i in &mut self.vrrp.instances {
            if i.auth_pass.is_some() {
                i.auth_pass = Some(NOTE.to_string());
            }
        }
    }

    /// Renders the config as TOML that [`Config::parse`] reads back to an equal config.
    pub fn to_toml(&self) -> String {
        let file = FileOut {
            daemon: DaemonOut {
                socket: self.daemon.socket.as_ref().map(|p| p.display().to_string()),
                drain_timeout: format_duration(self.daemon.drain_timeout),
                log_level: self.daemon.log_level.clone(),
            },
            lb: LbOut {
                data_plane: "proxy",
                workers: self.lb.workers,
                connect_timeout: format_duration(self.lb.connect_timeout),
                idle_poll: format_duration(self.lb.idle_poll),
                timeouts: TimeoutsOut {
                    tcp: format!("{}s", self.lb.timeouts.tcp),
                    tcp_fin: format!("{}s", self.lb.timeouts.tcp_fin),
                    udp: format!("{}s", self.lb.timeouts.udp),
                },
                service: self.lb.services.iter().map(ServiceOut::from).collect(),
            },
            health: (self.health != HealthConfig::default())
                .then(|| health::HealthOut::from(&self.health)),
            vrrp: (!self.vrrp.instances.is_empty()).then(|| vrrp::VrrpOut::from(&self.vrrp)),
            nodes: cluster::nodes_out(&self.cluster),
            groups: cluster::groups_out(&self.cluster),
            agent: agent::agent_out(&self.agent),
            sync: sync::sync_out(&self.sync_modules, self.sync_fanout),
            web: web::web_out(self.web.as_ref()),
        };
        toml::to_string(&file).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn parse_raw(l: &Lines<'_>) -> Result<RawConfig, ConfigErrors> {
    let one = |line: Option<usize>, key: String, reason: String| {
        ConfigErrors(vec![ConfigError {
            file: l.file.to_string(),
            line,
            key,
            reason,
        }])
    };
    let de = toml::de::Deserializer::parse(l.src).map_err(|e| {
        one(
            e.span().map(|s| l.line(s.start)),
            "(syntax)".into(),
            e.message().trim().to_string(),
        )
    })?;
    // The path of the failing key comes from serde_path_to_error-style tracking done by serde
    // itself: toml reports the span, we report the key text found there.
    RawConfig::deserialize(de).map_err(|e| {
        let span = e.span();
        let key = span
            .clone()
            .and_then(|s| l.src.get(s))
            .map(|k| key_path_at(l.src, k, e.span().map(|s| s.start).unwrap_or(0)))
            .unwrap_or_else(|| "(config)".to_string());
        one(
            span.map(|s| l.line(s.start)),
            key,
            e.message().trim().to_string(),
        )
    })
}

/// Best-effort dotted path of the key at `offset`: the innermost `[table]` header above it,
/// followed by the key of that line (e.g. `lb.service.real.wieght`). serde reports the span of
/// the offending key (unknown field) or value (wrong type); both sit on the key's line.
fn key_path_at(src: &str, text: &str, offset: usize) -> String {
    let offset = offset.min(src.len());
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[line_start..line_end];
    let key = match line.find('=') {
        Some(eq) if !line.trim_start().starts_with('[') => line[..eq].trim(),
        _ => text.split('=').next().unwrap_or(text).trim(),
    };
    let key = key.trim_matches('"');
    let key = if key.len() > 60 || key.contains('\n') || key.starts_with('[') {
        ""
    } else {
        key
    };
    let header = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (header, key.is_empty()) {
        (Some(h), false) => format!("{h}.{key}"),
        (Some(h), true) => h,
        (None, false) => key.to_string(),
        (None, true) => "(config)".to_string(),
    }
}

/// The longest duration any setting takes (a year): far beyond any sensible timeout, and far
/// from where adding it to a clock could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

fn duration(d: &Spanned<RawDuration>) -> Result<Duration, String> {
    duration_value(d.get_ref())
}

pub(super) fn duration_value(d: &RawDuration) -> Result<Duration, String> {
    let v = match d {
        RawDuration::Secs(n) if *n >= 0 => Duration::from_secs(*n as u64),
        RawDuration::Secs(n) => return Err(format!("{n} is negative")),
        RawDuration::Text(s) => parse_duration(s)?,
    };
    if v > MAX_DURATION {
        return Err(format!("{} is longer than a year", format_duration(v)));
    }
    Ok(v)
}

fn secs_u32(d: Duration) -> Result<u32, String> {
    u32::try_from(d.as_secs()).map_err(|_| format!("{}s is too long", d.as_secs()))
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
        Some(p) => p.get_ref().parse().unwrap_or_else(|e: String| {
            errs.push(l.err(Some(p), format!("{prefix}.protocol"), e));
            Protocol::Tcp
        }),
    };
    let address = parse_socket_addr(raw.address.get_ref())
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
        Some(s) => s.get_ref().parse().unwrap_or_else(|e: String| {
            errs.push(l.err(Some(s), format!("{prefix}.scheduler"), e));
            SchedulerKind::Wlc
        }),
    };
    let sched_flags = SchedFlags {
        fallback: raw.hash_fallback.unwrap_or(false),
        port: raw.hash_port.unwrap_or(false),
    };
    let persistence = match &raw.persistence {
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
    };
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
        let rr = r.get_ref();
        let address = match parse_real_addr(rr.address.get_ref(), address.port()) {
            Ok(a) if a.port() == 0 => {
                errs.push(l.err(
                    Some(&rr.address),
                    format!("{rp}.address"),
                    format!("{a}: a real server needs a port other than 0"),
                ));
                continue;
            }
            Ok(a) => a,
            Err(e) => {
                errs.push(l.err(Some(&rr.address), format!("{rp}.address"), e));
                continue;
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
                format!("duplicate real server {address} in {key}"),
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
            Some(f) => f.get_ref().parse().unwrap_or_else(|e: String| {
                errs.push(l.err(Some(f), format!("{rp}.forward"), e));
                Forward::default()
            }),
        };
        reals.push(RealSpec {
            address,
            weight,
            upper_threshold: upper,
            lower_threshold: lower,
            forward,
        });
    }
    let quorum = quorum(l, prefix, raw, &spec, &reals, errs);
    (errs.len() == before).then_some(ServiceConfig {
        spec,
        reals,
        quorum,
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

/// Parses `VIP:port` — `127.0.0.1:80` or `[::1]:80`. A port is required.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("invalid address {s:?} (expected IPv4:port or [IPv6]:port)"))
}

/// Parses a real server address; without a port it takes the virtual service's port, as
/// ipvsadm does.
pub fn parse_real_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("invalid address {s:?} (expected IP or IP:port)"))
}

// Serialize-only mirror of the file, used by `to_toml`.

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FileOut {
    daemon: DaemonOut,
    lb: LbOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<health::HealthOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vrrp: Option<vrrp::VrrpOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<agent::AgentOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<sync::SyncOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    web: Option<web::WebOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct DaemonOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<String>,
    drain_timeout: String,
    log_level: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct LbOut {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[daemon]
drain-timeout = "10s"

[lb]
workers = 1
connect-timeout = "500ms"
timeouts = { tcp = "15m", tcp-fin = 120, udp = "5m" }

[[lb.service]]
name = "web"
address = "127.0.0.100:8080"
scheduler = "wrr"
persistence = "360s"
persistence-netmask = "255.255.255.0"
quorum = 2
quorum-hysteresis = 1
sorry-server = "127.0.0.99"

  [[lb.service.real]]
  address = "127.0.0.11:8080"
  weight = 1

  [[lb.service.real]]
  address = "127.0.0.12"
  weight = 2
  forward = "masq"

[[lb.service]]
protocol = "udp"
address = "[::1]:53"
scheduler = "sh"
hash-port = true
"#;

    #[test]
    fn good_config_parses_and_round_trips() {
        let cfg = Config::parse("good.toml", GOOD).unwrap();
        assert_eq!(cfg.lb.services.len(), 2);
        let web = &cfg.lb.services[0];
        assert_eq!(web.spec.scheduler, SchedulerKind::Wrr);
        assert_eq!(
            web.spec.persistence,
            Some(Persistence {
                timeout: 360,
                prefix: 24
            })
        );
        assert_eq!(web.reals[1].address, "127.0.0.12:8080".parse().unwrap());
        assert_eq!(web.reals[1].forward, Forward::Masq);
        assert_eq!(
            cfg.lb.timeouts,
            Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            }
        );
        assert_eq!(cfg.lb.connect_timeout, Duration::from_millis(500));
        assert_eq!(
            web.quorum,
            Some(Quorum {
                min: 2,
                hysteresis: 1,
                sorry_server: Some("127.0.0.99:8080".parse().unwrap())
            })
        );
        let again = Config::parse("out.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again, cfg);
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$oHjFL8CY0WImNjp2Eu+MyA$HRNYyKlzlxaL6Kx8OuDstOAH8CC25m2jYibKg/kuEsc";

    #[test]
    fn secrets_are_redacted_on_request() {
        let src = format!("[web.user.ann]\npassword = \"{HASH}\"\nrole = \"admin\"\n");
        let mut cfg = Config::parse("w.toml", &src).unwrap();
        cfg.redact_secrets();
        let out = cfg.to_toml();
        assert!(!out.contains("argon2id"), "{out}");
        assert!(
            out.contains("password = \"(redacted; see the config file)\""),
            "{out}"
        );
    }

    #[test]
    fn the_web_section_parses_round_trips_and_names_its_errors() {
        let src = format!(
            "[web]\nlisten = \"[::1]:9443\"\ntls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\n\
             session-timeout = \"30m\"\nmetrics-public = false\n\
             trusted-proxies = [\"10.0.0.0/8\", \"::1\"]\n\n\
             [web.user.ann]\npassword = \"{HASH}\"\nrole = \"admin\"\n\n\
             [web.user.\"rob@ops\"]\npassword = \"{HASH}\"\nrole = \"read-only\"\n"
        );
        let cfg = Config::parse("w.toml", &src).unwrap();
        let w = cfg.web.as_ref().unwrap();
        assert_eq!(w.listen, "[::1]:9443".parse().unwrap());
        assert_eq!(w.session_timeout, Duration::from_secs(1800));
        assert!(!w.metrics_public);
        assert_eq!(
            w.users
                .iter()
                .map(|u| (u.name.as_str(), u.role))
                .collect::<Vec<_>>(),
            [
                ("ann", web::WebRole::Admin),
                ("rob@ops", web::WebRole::ReadOnly)
            ]
        );
        assert_eq!(Config::parse("out.toml", &cfg.to_toml()).unwrap(), cfg);
        // No section, no web server; users alone imply the default address.
        assert!(Config::parse("n.toml", "").unwrap().web.is_none());
        let only = format!("[web.user.ann]\npassword = \"{HASH}\"\nrole = \"admin\"\n");
        let w = Config::parse("u.toml", &only).unwrap().web.unwrap();
        assert_eq!(w.listen.to_string(), web::DEFAULT_LISTEN);

        check_err(
            "[web]\nlisten = \"9000\"\n",
            "bad.toml:2: web.listen: \"9000\" is not an address with a port",
        );
        check_err(
            "[web]\ntls-cert = \"/c.pem\"\n",
            "bad.toml:2: web.tls-cert: needs web.tls-key too",
        );
        check_err(
            "[web]\ntls-cert = \"c.pem\"\ntls-key = \"/k\"\n",
            "bad.toml:2: web.tls-cert: an absolute path",
        );
        check_err(
            "[web]\nsession-timeout = \"5s\"\n",
            "bad.toml:2: web.session-timeout: at least 1m",
        );
        check_err(
            "[web]\ntrusted-proxies = [\"10.0.0.0/40\"]\n",
            "bad.toml:2: web.trusted-proxies: \"10.0.0.0/40\" is not an address or a network",
        );
        check_err(
            "[web]\nmetrics-token-file = \"t\"\n",
            "bad.toml:2: web.metrics-token-file: an absolute path",
        );
        check_err(
            "[web]\nport = 9000\n",
            "bad.toml:2: web.port: unknown field",
        );
        // Plain HTTP beyond loopback only when the config says it knows.
        check_err(
            "[web]\nlisten = \"0.0.0.0:9000\"\n",
            "bad.toml:2: web.listen: plain HTTP on 0.0.0.0:9000, which is not a loopback address",
        );
        check_err(
            "[web]\nlisten = \"[2001:db8::1]:9000\"\n",
            "web.listen: plain HTTP on [2001:db8::1]:9000",
        );
        for ok in [
            "[web]\nlisten = \"0.0.0.0:9000\"\ninsecure = true\n",
            "[web]\nlisten = \"[::ffff:127.0.0.2]:9000\"\n",
            "[web]\nlisten = \"10.0.0.1:9443\"\ntls-cert = \"/c.pem\"\ntls-key = \"/k.pem\"\n",
        ] {
            let cfg = Config::parse("ok.toml", ok).unwrap();
            assert_eq!(
                Config::parse("out.toml", &cfg.to_toml()).unwrap(),
                cfg,
                "{ok}"
            );
        }
        check_err(
            "[health]\nmon-listen = \"0.0.0.0:2583\"\n",
            "bad.toml:2: health.mon-listen: 0.0.0.0:2583 is not a loopback address",
        );
        let cfg = Config::parse(
            "ok.toml",
            "[health]\nmon-listen = \"0.0.0.0:2583\"\nmon-insecure = true\n",
        )
        .unwrap();
        assert!(cfg.health.mon_insecure);
        assert_eq!(Config::parse("out.toml", &cfg.to_toml()).unwrap(), cfg);
        check_err(
            "[web.user.ann]\npassword = \"hunter2\"\nrole = \"admin\"\n",
            "bad.toml:2: web.user.ann.password: not an argon2id hash",
        );
        check_err(
            &format!(
                "[web.user.ann]\npassword = \"{}\"\nrole = \"admin\"\n",
                HASH.replace("argon2id", "argon2i")
            ),
            "web.user.ann.password: not an argon2id hash",
        );
        check_err(
            &format!("[web.user.ann]\npassword = \"{HASH}\"\nrole = \"root\"\n"),
            "bad.toml:3: web.user.ann.role: unknown role \"root\" (expected admin or read-only)",
        );
        check_err(
            &format!("[web.user.\"a b\"]\npassword = \"{HASH}\"\nrole = \"admin\"\n"),
            "bad.toml:2: web.user.\"a b\": a user name is",
        );
    }

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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(format_duration(Duration::from_micros(10)), "10us");
        assert_eq!(format_duration(Duration::from_micros(2500)), "2500us");
    }
}
