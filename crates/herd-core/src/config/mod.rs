//! The config file: strict TOML with kebab-case keys, parsed in two steps.
//!
//! 1. [`RawConfig`] mirrors the file. Unknown keys and wrong types are rejected by serde; every
//!    value that needs a semantic check keeps its byte span (`toml::Spanned`).
//! 2. [`Config::from_raw`] turns it into the typed model and collects *every* problem as a
//!    [`ConfigError`] that names file, line and key (`herd.toml:12: lb.service[0].real[1].weight:
//!    70000 is out of range 0..=65535`).
//!
//! Each section is one module holding its raw form, its validated form and its validation
//! (`daemon`, `lb`, `health`, `smtp`, `vrrp`, `cluster`, `agent`, `sync`, `web`); the value
//! syntax they share (durations, addresses) is `values`. This module holds only the top level:
//! loading and parsing, the errors, and the list of sections.
//!
//! Nothing here binds a socket: validation happens before the daemon touches the network.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod agent;
pub mod cluster;
pub mod daemon;
mod error;
pub mod health;
pub mod lb;
pub mod smtp;
pub mod sync;
mod values;
pub mod vrrp;
pub mod web;

pub use agent::{listen_address, normalize_serial};
pub use vrrp::{parse_vip, VipError};

use error::Lines;
pub use error::{ConfigError, ConfigErrors};

use agent::AgentConfig;
use cluster::ClusterConfig;
use daemon::DaemonConfig;
use health::HealthConfig;
use lb::LbConfig;
use vrrp::VrrpConfig;

pub use health::{
    find_service, parse_http_url, real_matches, split_words, HttpUrl, UrlError, WordsError,
};

pub use values::{
    duration_value, format_duration, host_port, parse_duration, parse_real_addr, parse_socket_addr,
    AddressError, DurationError, RawDuration, MAX_DURATION,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: daemon::RawDaemon,
    #[serde(default)]
    pub lb: lb::RawLb,
    pub health: Option<health::RawHealth>,
    pub vrrp: Option<vrrp::RawVrrp>,
    pub nodes: Option<cluster::RawNodes>,
    pub groups: Option<cluster::RawGroups>,
    pub agent: Option<agent::RawAgent>,
    pub sync: Option<sync::RawSync>,
    pub web: Option<web::RawWeb>,
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
        // The sections, in the order their errors are reported; [health] and [vrrp] refer to
        // [lb]'s services, [sync] to [nodes] and [groups].
        let daemon = daemon::validate(&l, &raw.daemon, &mut errs);
        let lb = lb::validate(&l, &raw.lb, &mut errs);
        let health = raw.health.as_ref().map_or_else(HealthConfig::default, |h| {
            health::validate(&l, h, &lb, &mut errs)
        });
        let vrrp = raw.vrrp.as_ref().map_or_else(VrrpConfig::default, |v| {
            vrrp::validate(&l, v, &lb, &mut errs)
        });
        let cluster = cluster::validate(&l, raw.nodes.as_ref(), raw.groups.as_ref(), &mut errs);
        let agent = agent::validate(&l, raw.agent.as_ref(), &mut errs);
        let sync_modules = sync::validate(&l, raw.sync.as_ref(), &cluster, &mut errs);
        let sync_fanout = sync::fanout(&l, raw.sync.as_ref(), &mut errs);
        let web = web::validate(&l, raw.web.as_ref(), &mut errs);
        let cfg = Config {
            daemon,
            lb,
            health,
            vrrp,
            cluster,
            agent,
            sync_modules,
            sync_fanout,
            web,
        };

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
            daemon: daemon::daemon_out(&self.daemon),
            lb: lb::lb_out(&self.lb),
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

// Serialize-only mirror of the file, used by `to_toml`.

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FileOut {
    daemon: daemon::DaemonOut,
    lb: lb::LbOut,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Persistence, Quorum, SchedulerKind, Timeouts};
    use std::time::Duration;

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
}
