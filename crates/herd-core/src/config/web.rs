//! `[web]`: the dashboard, the HTTP API and `/metrics`, and `[web.user.NAME]` logins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::values::{duration, format_duration, RawDuration};

/// Where the dashboard listens when `[web]` names no address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

/// What a login may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebRole {
    /// Everything, including the actions (drain, weights, silences, failover).
    Admin,
    /// Look, never touch.
    ReadOnly,
}

impl WebRole {
    pub fn as_str(self) -> &'static str {
        match self {
            WebRole::Admin => "admin",
            WebRole::ReadOnly => "read-only",
        }
    }
}

impl std::fmt::Display for WebRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One login: a name, an argon2id hash in PHC form (`herd user add` makes it), a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebUser {
    pub name: String,
    pub password: String,
    pub role: WebRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: HTTPS, and cookies marked `Secure`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A session ends after this long without a request.
    pub session_timeout: Duration,
    /// JSON lines, one per action and per login; none = the daemon's log only.
    pub audit_log: Option<PathBuf>,
    /// `/metrics` without a login (Prometheus scrapes it); false = a session or the token.
    pub metrics_public: bool,
    /// A file holding a token that `/metrics` accepts as `Authorization: Bearer TOKEN` (for
    /// scrapers, with `metrics-public = false`).
    pub metrics_token_file: Option<PathBuf>,
    /// Host names the dashboard answers to besides IP addresses and `localhost` (requests
    /// naming any other host are refused: DNS rebinding).
    pub hostnames: Vec<String>,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For`, `-Proto` and `-Host`
    /// are believed: the client's address for the login limit and the audit log, and HTTPS
    /// for the cookies.
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    pub users: Vec<WebUser>,
    /// Plain HTTP on an address that is not loopback, knowingly: passwords and session
    /// cookies then cross the network in the clear.
    pub insecure: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid literal"),
            tls: None,
            session_timeout: Duration::from_secs(3600),
            audit_log: None,
            metrics_public: true,
            metrics_token_file: None,
            hostnames: Vec::new(),
            trusted_proxies: Vec::new(),
            users: Vec::new(),
            insecure: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWeb {
    pub listen: Option<Spanned<String>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub session_timeout: Option<Spanned<RawDuration>>,
    pub audit_log: Option<Spanned<String>>,
    pub metrics_public: Option<bool>,
    pub metrics_token_file: Option<Spanned<String>>,
    pub hostnames: Option<Spanned<Vec<String>>>,
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
    pub insecure: Option<bool>,
    #[serde(default)]
    pub user: BTreeMap<String, RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUser {
    pub password: Spanned<String>,
    pub role: Spanned<String>,
}

/// A login name: letters, digits, `.`, `_`, `-`, `@`; 1 to 64 of them.
pub fn user_name_ok(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// Checks the shape of an argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`); the
/// web server parses it fully when it starts.
pub fn argon2id_hash_ok(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    let b64 = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    };
    parts.len() == 6
        && parts[0].is_empty()
        && parts[1] == "argon2id"
        && parts[2].starts_with("v=")
        && ["m=", "t=", "p="]
            .iter()
            .all(|k| parts[3].split(',').any(|p| p.starts_with(k)))
        && b64(parts[4])
        && b64(parts[5])
}

pub(super) fn validate(
    l: &Lines<'_>,
    raw: Option<&RawWeb>,
    errs: &mut Vec<ConfigError>,
) -> Option<WebConfig> {
    let raw = raw?;
    let mut cfg = WebConfig::default();
    if let Some(a) = &raw.listen {
        match a.get_ref().parse::<SocketAddr>() {
            Ok(v) => cfg.listen = v,
            Err(_) => errs.push(l.err(
                Some(a),
                "web.listen",
                format!(
                    "{:?} is not an address with a port (e.g. 127.0.0.1:9000)",
                    a.get_ref()
                ),
            )),
        }
    }
    let path = |p: &Spanned<String>, key: &str, errs: &mut Vec<ConfigError>| {
        if std::path::Path::new(p.get_ref()).is_absolute() {
            Some(PathBuf::from(p.get_ref()))
        } else {
            errs.push(l.err(Some(p), key, "an absolute path"));
            None
        }
    };
    match (&raw.tls_cert, &raw.tls_key) {
        (Some(c), Some(k)) => {
            if let (Some(c), Some(k)) =
                (path(c, "web.tls-cert", errs), path(k, "web.tls-key", errs))
            {
                cfg.tls = Some((c, k));
            }
        }
        (Some(c), None) => errs.push(l.err(Some(c), "web.tls-cert", "needs web.tls-key too")),
        (None, Some(k)) => errs.push(l.err(Some(k), "web.tls-key", "needs web.tls-cert too")),
        (None, None) => {}
    }
    cfg.insecure = raw.insecure.unwrap_or(false);
    if cfg.tls.is_none() && !cfg.listen.ip().to_canonical().is_loopback() && !cfg.insecure {
        errs.push(l.err(
            raw.listen.as_ref(),
            "web.listen",
            format!(
                "plain HTTP on {}, which is not a loopback address: logins and session cookies \
                 would cross the network in the clear; give web.tls-cert and web.tls-key, or \
                 say `insecure = true` in [web] if a TLS proxy in front of it is on this host",
                cfg.listen
            ),
        ));
    }
    if let Some(d) = &raw.session_timeout {
        match duration(d) {
            Ok(v) if v >= Duration::from_secs(60) => cfg.session_timeout = v,
            Ok(_) => errs.push(l.err(Some(d), "web.session-timeout", "at least 1m")),
            Err(e) => errs.push(l.err(Some(d), "web.session-timeout", e)),
        }
    }
    if let Some(p) = &raw.audit_log {
        cfg.audit_log = path(p, "web.audit-log", errs);
    }
    if let Some(m) = raw.metrics_public {
        cfg.metrics_public = m;
    }
    if let Some(p) = &raw.metrics_token_file {
        cfg.metrics_token_file = path(p, "web.metrics-token-file", errs);
    }
    allowed_names(l, raw, &mut cfg, errs);
    users(l, raw, &mut cfg, errs);
    Some(cfg)
}

/// `hostnames` (the Host headers served) and `trusted-proxies`.
fn allowed_names(l: &Lines<'_>, raw: &RawWeb, cfg: &mut WebConfig, errs: &mut Vec<ConfigError>) {
    if let Some(h) = &raw.hostnames {
        cfg.hostnames = l.each(h, "web.hostnames", errs, |n| {
            let ok = !n.is_empty()
                && n.len() <= 253
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            ok.then(|| n.to_ascii_lowercase()).ok_or_else(|| {
                format!("{n:?} is not a host name (letters, digits, '-' and '.'; no port)")
            })
        });
    }
    if let Some(list) = &raw.trusted_proxies {
        cfg.trusted_proxies = l.each(list, "web.trusted-proxies", errs, |e| {
            parse_net(e).ok_or_else(|| {
                format!("{e:?} is not an address or a network (10.0.0.5, 10.0.0.0/8, ::1)")
            })
        });
    }
}

/// `[web.user.NAME]`: a name, an argon2id hash and a role each.
fn users(l: &Lines<'_>, raw: &RawWeb, cfg: &mut WebConfig, errs: &mut Vec<ConfigError>) {
    for (name, u) in &raw.user {
        let key = |k: &str| format!("web.user.{name}.{k}");
        if !user_name_ok(name) {
            errs.push(l.err(
                Some(&u.password),
                format!("web.user.{name:?}"),
                "a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'",
            ));
        }
        if !argon2id_hash_ok(u.password.get_ref()) {
            errs.push(l.err(
                Some(&u.password),
                key("password"),
                "not an argon2id hash ($argon2id$v=19$m=…,t=…,p=…$salt$hash); `herd user add` makes one",
            ));
        }
        let role = match u.role.get_ref().as_str() {
            "admin" => WebRole::Admin,
            "read-only" => WebRole::ReadOnly,
            other => {
                errs.push(l.err(
                    Some(&u.role),
                    key("role"),
                    format!("unknown role {other:?} (expected admin or read-only)"),
                ));
                continue;
            }
        };
        cfg.users.push(WebUser {
            name: name.clone(),
            password: u.password.get_ref().clone(),
            role,
        });
    }
}

/// `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8` → address and prefix length.
pub fn parse_net(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let ip: std::net::IpAddr = a.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if p.is_empty() {
        max
    } else {
        p.trim().parse().ok()?
    };
    (prefix <= max).then_some((ip, prefix))
}

/// Whether `ip` is in the network `(net, prefix)` (IPv4-mapped IPv6 counts as IPv4).
pub fn in_net(ip: std::net::IpAddr, (net, prefix): (std::net::IpAddr, u8)) -> bool {
    use std::net::IpAddr;
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct WebOut {
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<String>,
    session_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_log: Option<String>,
    metrics_public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_token_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hostnames: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    user: BTreeMap<String, UserOut>,
}

#[derive(Serialize)]
pub(super) struct UserOut {
    password: String,
    role: &'static str,
}

pub(super) fn web_out(c: Option<&WebConfig>) -> Option<WebOut> {
    let c = c?;
    Some(WebOut {
        listen: c.listen.to_string(),
        tls_cert: c.tls.as_ref().map(|t| t.0.display().to_string()),
        tls_key: c.tls.as_ref().map(|t| t.1.display().to_string()),
        session_timeout: format_duration(c.session_timeout),
        audit_log: c.audit_log.as_ref().map(|p| p.display().to_string()),
        metrics_public: c.metrics_public,
        metrics_token_file: c
            .metrics_token_file
            .as_ref()
            .map(|p| p.display().to_string()),
        hostnames: c.hostnames.clone(),
        trusted_proxies: c
            .trusted_proxies
            .iter()
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect(),
        insecure: c.insecure,
        user: c
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    UserOut {
                        password: u.password.clone(),
                        role: u.role.as_str(),
                    },
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$oHjFL8CY0WImNjp2Eu+MyA$HRNYyKlzlxaL6Kx8OuDstOAH8CC25m2jYibKg/kuEsc";

    /// Each bad input names the file, the line and the key.
    fn check_err(src: &str, expect: &str) {
        let err = Config::parse("bad.toml", src).unwrap_err().to_string();
        assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
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
            [("ann", WebRole::Admin), ("rob@ops", WebRole::ReadOnly)]
        );
        assert_eq!(Config::parse("out.toml", &cfg.to_toml()).unwrap(), cfg);
        // No section, no web server; users alone imply the default address.
        assert!(Config::parse("n.toml", "").unwrap().web.is_none());
        let only = format!("[web.user.ann]\npassword = \"{HASH}\"\nrole = \"admin\"\n");
        let w = Config::parse("u.toml", &only).unwrap().web.unwrap();
        assert_eq!(w.listen.to_string(), DEFAULT_LISTEN);

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
}
