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
