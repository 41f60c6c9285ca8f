//! The `[health]` section: raw form, validated form ([`HealthConfig`]; the checks themselves
//! are [`herd_rules::spec`]'s), validation, and rendering back.
//!
//! Here: the raw form, [`HealthConfig`], the section's settings and the checks' list and
//! dependencies, and the value syntax checks share (commands, URLs, statuses). One check's keys
//! are `health/check.rs` (the table of which keys each type takes); one alert's are
//! `health/alert.rs`; rendering back to TOML is `health/render.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use herd_rules::spec::CheckSpec;
use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::lb::LbConfig;
use super::smtp::{self, RawAddresses, RawSmtp, Smtp};
use super::values::host_port;
use super::values::{duration, RawDuration};

mod alert;
mod check;
mod render;

use alert::alert;
pub(in crate::config) use render::HealthOut;

/// The `[health]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// At most this many checks run at once (mon's `maxprocs`); further ones wait their turn.
    pub max_concurrent: usize,
    /// A check's first run starts at a random point within this long after start-up (mon's
    /// `randstart`); `None` = within the check's own interval.
    pub randstart: Option<Duration>,
    /// Directories searched, in order, for an `exec` check's program given without a `/`
    /// (mon's `mondir`).
    pub mondir: Vec<PathBuf>,
    /// Directories searched for an `exec` alert's program given without a `/` (`alertdir`).
    pub alertdir: Vec<PathBuf>,
    /// The SQLite file that keeps the history and the downtime log across restarts; `None` =
    /// the last 2000 events in memory only.
    pub history: Option<PathBuf>,
    /// History older than this is deleted.
    pub history_retention: Duration,
    /// Named lists of hosts (mon's `hostgroup`).
    pub hostgroups: BTreeMap<String, Vec<String>>,
    /// The mail server that `email` alerts go through.
    pub smtp: Option<Smtp>,
    /// Where to speak mon's client protocol (`moncmd`, `monshow`; mon's port is 2583);
    /// `None` = off. Read at start-up.
    pub mon_listen: Option<std::net::SocketAddr>,
    /// The mon port on an address that is not loopback, knowingly (its `login` sends a
    /// password in the clear).
    pub mon_insecure: bool,
    /// Clients the mon port serves at once; more are told so and closed. The daemon lowers
    /// it further when the process has few file descriptors.
    pub mon_max_connections: usize,
    /// A mon client that sends nothing for this long is disconnected.
    pub mon_idle_timeout: Duration,
    pub checks: Vec<herd_rules::spec::CheckSpec>,
}

/// Default of `health.history-retention`: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86400);

/// Default of `health.mon-max-connections`.
pub const DEFAULT_MON_MAX_CONNECTIONS: usize = 64;

/// Default of `health.mon-idle-timeout`.
pub const DEFAULT_MON_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of `health.max-concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 64;

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            randstart: None,
            mondir: vec![
                PathBuf::from("/usr/lib/mon/mon.d"),
                PathBuf::from("/usr/local/lib/mon/mon.d"),
            ],
            alertdir: vec![
                PathBuf::from("/usr/lib/mon/alert.d"),
                PathBuf::from("/usr/local/lib/mon/alert.d"),
            ],
            history: None,
            history_retention: DEFAULT_RETENTION,
            hostgroups: BTreeMap::new(),
            smtp: None,
            mon_listen: None,
            mon_insecure: false,
            mon_max_connections: DEFAULT_MON_MAX_CONNECTIONS,
            mon_idle_timeout: DEFAULT_MON_IDLE_TIMEOUT,
            checks: Vec::new(),
        }
    }
}

/// Default of an https check's `cert-warning`: 14 days.
pub const DEFAULT_CERT_WARNING: Duration = Duration::from_secs(14 * 86400);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHealth {
    pub max_concurrent: Option<Spanned<i64>>,
    pub randstart: Option<Spanned<RawDuration>>,
    pub mondir: Option<Vec<String>>,
    pub alertdir: Option<Vec<String>>,
    pub history: Option<Spanned<String>>,
    pub history_retention: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub hostgroups: BTreeMap<String, Spanned<Vec<String>>>,
    pub smtp: Option<Spanned<RawSmtp>>,
    pub mon_listen: Option<Spanned<String>>,
    pub mon_insecure: Option<bool>,
    pub mon_max_connections: Option<Spanned<i64>>,
    pub mon_idle_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub check: Vec<Spanned<RawCheck>>,
}

/// A command as one string (split like a shell, no expansion) or as a list of words.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    Line(String),
    Words(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCheck {
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub service: Option<Spanned<String>>,
    pub hosts: Option<Spanned<Vec<String>>>,
    pub group: Option<Spanned<String>>,
    pub reals: Option<Spanned<Vec<String>>>,
    pub port: Option<Spanned<i64>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub failure_interval: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    #[serde(default)]
    pub depends: Vec<Spanned<String>>,
    pub on_failure: Option<Spanned<String>>,
    pub flap: Option<Spanned<RawFlap>>,
    pub disabled: Option<bool>,
    // tcp
    pub send: Option<Spanned<String>>,
    // tcp, http
    pub expect: Option<Spanned<String>>,
    // http
    pub method: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub status: Option<Spanned<Vec<String>>>,
    // https
    pub sni: Option<Spanned<String>>,
    pub tls_verify: Option<bool>,
    pub tls_ca: Option<Spanned<String>>,
    pub cert_warning: Option<Spanned<RawDuration>>,
    // dns
    pub query: Option<Spanned<String>>,
    pub query_type: Option<Spanned<String>>,
    // exec
    pub command: Option<Spanned<RawCommand>>,
    pub protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub alert: Vec<Spanned<RawAlert>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFlap {
    pub changes: i64,
    pub window: RawDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAlert {
    pub on: Option<Spanned<String>>,
    pub exec: Option<Spanned<RawCommand>>,
    pub webhook: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub email: Option<Spanned<RawAddresses>>,
    pub log: Option<bool>,
    pub period: Option<Spanned<String>>,
    pub every: Option<Spanned<RawDuration>>,
    pub after: Option<Spanned<i64>>,
    pub within: Option<Spanned<RawDuration>>,
    pub max: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// Record types a dns check can ask for.
const DNS_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT"];

const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;

/// Validates `[health]`; problems go to `errs`. `lb` is the already-validated director
/// config, which `service = ...` targets refer to.
pub(super) fn validate(
    l: &Lines<'_>,
    raw: &RawHealth,
    lb: &LbConfig,
    errs: &mut Vec<ConfigError>,
) -> HealthConfig {
    let mut h = HealthConfig::default();
    settings(l, raw, &mut h, errs);
    mon_port(l, raw, &mut h, errs);
    if let Some(raw_smtp) = &raw.smtp {
        h.smtp = smtp::validate(l, raw_smtp, errs);
    }
    checks(l, raw, lb, &mut h, errs);
    h
}

/// The monitor's own settings: concurrency, directories, history, host groups.
fn settings(l: &Lines<'_>, raw: &RawHealth, h: &mut HealthConfig, errs: &mut Vec<ConfigError>) {
    if let Some(n) = &raw.max_concurrent {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=10_000).contains(&v) => h.max_concurrent = v,
            _ => errs.push(l.err(
                Some(n),
                "health.max-concurrent",
                format!("{} is out of range 1..=10000", n.get_ref()),
            )),
        }
    }
    if let Some(d) = &raw.randstart {
        match duration(d) {
            Ok(v) => h.randstart = Some(v),
            Err(e) => errs.push(l.err(Some(d), "health.randstart", e)),
        }
    }
    if let Some(d) = &raw.mondir {
        h.mondir = d.iter().map(PathBuf::from).collect();
    }
    if let Some(d) = &raw.alertdir {
        h.alertdir = d.iter().map(PathBuf::from).collect();
    }
    if let Some(p) = &raw.history {
        if p.get_ref().is_empty() {
            errs.push(l.err(Some(p), "health.history", "an empty path"));
        } else {
            h.history = Some(PathBuf::from(p.get_ref()));
        }
    }
    if let Some(d) = &raw.history_retention {
        match duration(d) {
            Ok(v) if v >= Duration::from_secs(3600) => h.history_retention = v,
            Ok(_) => errs.push(l.err(Some(d), "health.history-retention", "must be at least 1h")),
            Err(e) => errs.push(l.err(Some(d), "health.history-retention", e)),
        }
    }
    for (name, hosts) in &raw.hostgroups {
        if hosts.get_ref().is_empty() {
            errs.push(l.err(
                Some(hosts),
                format!("health.hostgroups.{name}"),
                "a host group needs at least one host",
            ));
        }
        h.hostgroups.insert(name.clone(), hosts.get_ref().clone());
    }
}

/// mon's client port: where, whether off loopback knowingly, and its limits.
fn mon_port(l: &Lines<'_>, raw: &RawHealth, h: &mut HealthConfig, errs: &mut Vec<ConfigError>) {
    if let Some(m) = &raw.mon_listen {
        match m.get_ref().parse() {
            Ok(a) => h.mon_listen = Some(a),
            Err(_) => errs.push(l.err(
                Some(m),
                "health.mon-listen",
                format!("{:?} is not ip:port (e.g. \"127.0.0.1:2583\")", m.get_ref()),
            )),
        }
    }
    h.mon_insecure = raw.mon_insecure.unwrap_or(false);
    if let Some(a) = h.mon_listen {
        if !a.ip().to_canonical().is_loopback() && !h.mon_insecure {
            errs.push(l.err(
                raw.mon_listen.as_ref(),
                "health.mon-listen",
                format!(
                    "{a} is not a loopback address: mon's protocol is plain text, its `login` \
                     password included; keep it on 127.0.0.1 (moncmd on this host, or through \
                     an SSH tunnel), or say `mon-insecure = true` in [health]"
                ),
            ));
        }
    }
    mon_limits(l, raw, h, errs);
}

/// The checks, their unique names and their dependencies (known names, no cycles).
fn checks(
    l: &Lines<'_>,
    raw: &RawHealth,
    lb: &LbConfig,
    h: &mut HealthConfig,
    errs: &mut Vec<ConfigError>,
) {
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, rc) in raw.check.iter().enumerate() {
        let key = format!("health.check[{i}]");
        if let Some(c) = check::check(l, &key, rc, lb, h, errs) {
            if names.insert(c.name.clone(), i).is_some() {
                errs.push(l.err(
                    Some(&rc.get_ref().name),
                    format!("{key}.name"),
                    format!("duplicate check name {:?}", c.name),
                ));
            }
            h.checks.push(c);
        }
    }
    // Dependencies: known names, no cycles.
    for (i, rc) in raw.check.iter().enumerate() {
        for d in &rc.get_ref().depends {
            if !names.contains_key(d.get_ref()) {
                errs.push(l.err(
                    Some(d),
                    format!("health.check[{i}].depends"),
                    format!("no check named {:?}", d.get_ref()),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&h.checks) {
        errs.push(ConfigError {
            file: l.file.to_string(),
            line: None,
            key: "health.check.depends".into(),
            reason: format!("dependency cycle: {}", cycle.join(" -> ")),
        });
    }
}

fn find_cycle(checks: &[CheckSpec]) -> Option<Vec<String>> {
    let deps: HashMap<&str, &[String]> = checks
        .iter()
        .map(|c| (c.name.as_str(), c.depends.as_slice()))
        .collect();
    fn visit<'a>(
        n: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        path: &mut Vec<&'a str>,
        done: &mut HashSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| *p == n) {
            let mut c: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for d in deps.get(n).copied().unwrap_or_default() {
            if let Some(c) = visit(d, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = HashSet::new();
    for c in checks {
        if let Some(cycle) = visit(&c.name, &deps, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

/// A webhook URL that [`parse_http_url`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("{0:?}: bad port")]
    BadPort(String),
}

/// A command line that [`split_words`] cannot split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("unclosed single quote")]
    UnclosedSingleQuote,
    #[error("unclosed double quote")]
    UnclosedDoubleQuote,
    #[error("a backslash at the end")]
    TrailingBackslash,
}

/// A webhook URL: `http[s]://host[:port][/path]`.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, UrlError> {
    let (tls, rest) = match url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        _ => return Err(UrlError::NotHttp(url.to_string())),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = host_port(authority);
    if host.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(UrlError::NotHttp(url.to_string()));
    }
    if authority.ends_with(':')
        || (authority
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.contains(':'))
            && port.is_none())
    {
        return Err(UrlError::BadPort(url.to_string()));
    }
    Ok(HttpUrl {
        tls,
        host: host.to_string(),
        port: port.unwrap_or(if tls { 443 } else { 80 }),
        path: path.to_string(),
    })
}

/// `"200"` or `"200-399"`.
fn parse_status(s: &str) -> Result<(u16, u16), String> {
    let one = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{s:?} is not a status or range of statuses (100-599)"))
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(format!("{s:?}: the range is backwards"));
            }
            Ok((a, b))
        }
        None => one(s).map(|c| (c, c)),
    }
}

/// Splits a command; a trailing `;;` (mon: do not append the hosts) is removed and reported.
fn command(c: &RawCommand) -> Result<(Vec<String>, bool), String> {
    let mut words = match c {
        RawCommand::Words(w) => w.clone(),
        RawCommand::Line(s) => split_words(s).map_err(|e| e.to_string())?,
    };
    let mut no_hosts = false;
    if let Some(last) = words.last_mut() {
        if last == ";;" {
            words.pop();
            no_hosts = true;
        } else if let Some(stripped) = last.strip_suffix(";;") {
            *last = stripped.to_string();
            no_hosts = true;
        }
    }
    if words.first().is_none_or(|w| w.is_empty()) {
        return Err("empty command".into());
    }
    Ok((words, no_hosts))
}

/// Splits a command line into words the way `sh` would, without any expansion: single quotes
/// keep everything, double quotes keep everything but `\"` and `\\`, a backslash outside
/// quotes escapes the next character.
pub fn split_words(s: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(WordsError::UnclosedSingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(WordsError::UnclosedDoubleQuote),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(WordsError::UnclosedDoubleQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(x) => cur.push(x),
                    None => return Err(WordsError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `\r`, `\n`, `\t` and `\\` in tcp `send`/`expect` (TOML basic strings already do this;
/// literal strings do not, and protocol chat is usually written in them).
fn unescape(s: &str) -> String {
    s.replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\t", "\t")
}

/// Whether a real server's address is the one a check's `reals` entry names (`ip:port`, or
/// `ip` for any port).
pub fn real_matches(addr: std::net::SocketAddr, entry: &str) -> bool {
    match entry.parse::<std::net::SocketAddr>() {
        Ok(a) => a == addr,
        Err(_) => entry
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == addr.ip()),
    }
}

/// The service a check's `service = ...` names: by name, else by `VIP:port` address.
pub fn find_service<'a>(lb: &'a LbConfig, s: &str) -> Option<&'a super::lb::ServiceConfig> {
    lb.services
        .iter()
        .find(|x| x.spec.name.as_deref() == Some(s))
        .or_else(|| {
            let addr = super::values::parse_socket_addr(s).ok()?;
            lb.services.iter().find(|x| x.spec.key.address == addr)
        })
}

/// `mon-max-connections` and `mon-idle-timeout`: what one mon client may hold.
fn mon_limits(l: &Lines<'_>, raw: &RawHealth, h: &mut HealthConfig, errs: &mut Vec<ConfigError>) {
    if let Some(n) = &raw.mon_max_connections {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=65_536).contains(&v) => h.mon_max_connections = v,
            _ => errs.push(l.err(
                Some(n),
                "health.mon-max-connections",
                format!("{} is out of range 1..=65536", n.get_ref()),
            )),
        }
    }
    if let Some(d) = &raw.mon_idle_timeout {
        match duration(d) {
            Ok(v) if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&v) => {
                h.mon_idle_timeout = v
            }
            Ok(_) => errs.push(l.err(Some(d), "health.mon-idle-timeout", "must be from 1s to 1d")),
            Err(e) => errs.push(l.err(Some(d), "health.mon-idle-timeout", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::smtp::{Smtp, SmtpTls};
    use crate::config::Config;
    use herd_rules::spec::Tls;
    use herd_rules::spec::{AlertOn, CheckKind, ExecProtocol, OnFailure, Sink, Targets};

    const GOOD: &str = r#"
[[lb.service]]
name = "web"
address = "127.0.0.100:8080"
  [[lb.service.real]]
  address = "127.0.0.11:8080"
  [[lb.service.real]]
  address = "127.0.0.12:8080"

[health]
max-concurrent = 20
randstart = "30s"
mondir = ["/usr/lib/mon/mon.d"]
history = "/var/lib/herd/health.db"
history-retention = "30d"
mon-listen = "127.0.0.1:2583"
mon-max-connections = 16
mon-idle-timeout = "90s"

[health.hostgroups]
www = ["127.0.0.11", "127.0.0.12"]

[health.smtp]
server = "mail.example.com:587"
from = "herd@example.com"
tls = "starttls"
username = "herd"
password-file = "/etc/herd/smtp.pass"

[[health.check]]
name = "ping"
type = "exec"
group = "www"
command = "fping.monitor"
interval = "5s"

[[health.check]]
name = "http"
type = "http"
service = "web"
path = "/health"
status = ["200-299", "304"]
expect = "ok|OK"
interval = "2s"
failure-interval = "1s"
timeout = "1s"
rise = 2
fall = 3
depends = ["ping"]
on-failure = "remove"
flap = { changes = 5, window = "10m" }

  [[health.check.alert]]
  exec = "file.alert -d /tmp/herd 'web down'"
  period = "wd {Mon-Fri} hr {7am-10pm}"
  every = "10m"
  after = 2
  within = "30m"
  max = 5

  [[health.check.alert]]
  on = "up"
  exec = ["file.alert", "-d", "/tmp/herd"]

  [[health.check.alert]]
  log = true

  [[health.check.alert]]
  webhook = "http://127.0.0.1:9099/hooks/herd"

  [[health.check.alert]]
  email = ["ops@example.com", "web@example.com"]

  [[health.check.alert]]
  webhook = "https://hooks.example/herd"
  tls-ca = "/etc/herd/hooks-ca.pem"

[[health.check]]
name = "nagios"
type = "exec"
hosts = ["db1"]
command = "check_pgsql -H db1 ;;"
protocol = "nagios"

[[health.check]]
name = "redis"
type = "tcp"
hosts = ["127.0.0.31:6379"]
send = 'PING\r\n'
expect = "+PONG"

[[health.check]]
name = "tls"
type = "https"
service = "web"
sni = "www.example.com"
tls-verify = false
cert-warning = "30d"

[[health.check]]
name = "icmp"
type = "icmp"
group = "www"

[[health.check]]
name = "ntp"
type = "udp"
hosts = ["127.0.0.41:123"]
send = "ping"

[[health.check]]
name = "resolver"
type = "dns"
hosts = ["127.0.0.53"]
port = 5353
query = "www.example.com"
query-type = "aaaa"
expect = "2001:db8::1"

[[health.check]]
name = "one"
type = "tcp"
service = "127.0.0.100:8080"
reals = ["127.0.0.12"]
"#;

    #[test]
    fn a_health_section_parses_and_round_trips() {
        let cfg = Config::parse("good.toml", GOOD).unwrap();
        let h = &cfg.health;
        assert_eq!(h.max_concurrent, 20);
        assert_eq!(h.randstart, Some(Duration::from_secs(30)));
        assert_eq!(
            h.history.as_deref(),
            Some(std::path::Path::new("/var/lib/herd/health.db"))
        );
        assert_eq!(h.history_retention, Duration::from_secs(30 * 86400));
        assert_eq!(h.mon_listen, Some("127.0.0.1:2583".parse().unwrap()));
        assert_eq!(h.mon_max_connections, 16);
        assert_eq!(h.mon_idle_timeout, Duration::from_secs(90));
        assert_eq!(h.checks.len(), 9);
        assert_eq!(h.checks[5].kind, CheckKind::Icmp);
        assert_eq!(h.checks[8].reals, ["127.0.0.12"]);
        assert_eq!(
            h.checks[4].kind,
            CheckKind::Http {
                method: "GET".into(),
                path: "/".into(),
                host: None,
                status: vec![(200, 399)],
                expect: None,
                tls: Some(Tls {
                    sni: Some("www.example.com".into()),
                    verify: false,
                    ca: None,
                    expiry_warning: Duration::from_secs(30 * 86400)
                })
            }
        );
        assert_eq!(
            h.checks[8].targets,
            Targets::Service("127.0.0.100:8080".into())
        );
        assert_eq!(
            h.checks[7].kind,
            CheckKind::Dns {
                query: "www.example.com".into(),
                query_type: "AAAA".into(),
                expect: Some("2001:db8::1".into())
            }
        );
        let http = &h.checks[1];
        assert_eq!(http.targets, Targets::Service("web".into()));
        assert_eq!(
            http.kind,
            CheckKind::Http {
                method: "GET".into(),
                path: "/health".into(),
                host: None,
                status: vec![(200, 299), (304, 304)],
                expect: Some("ok|OK".into()),
                tls: None,
            }
        );
        assert_eq!((http.rise, http.fall), (2, 3));
        assert_eq!(http.failure_interval, Duration::from_secs(1));
        assert_eq!(http.on_failure, OnFailure::Remove);
        assert_eq!(http.alerts.len(), 6);
        assert_eq!(
            http.alerts[5].sink,
            Sink::Webhook {
                url: "https://hooks.example/herd".into(),
                tls_ca: Some("/etc/herd/hooks-ca.pem".into())
            }
        );
        assert_eq!(
            http.alerts[4].sink,
            Sink::Email {
                to: vec!["ops@example.com".into(), "web@example.com".into()]
            }
        );
        assert_eq!(
            h.smtp,
            Some(Smtp {
                host: "mail.example.com".into(),
                port: 587,
                from: "herd@example.com".into(),
                tls: SmtpTls::Starttls,
                tls_ca: None,
                username: Some("herd".into()),
                password_file: Some("/etc/herd/smtp.pass".into()),
            })
        );
        assert_eq!(
            http.alerts[3].sink,
            Sink::Webhook {
                url: "http://127.0.0.1:9099/hooks/herd".into(),
                tls_ca: None
            }
        );
        let a = &http.alerts[0];
        assert_eq!(
            a.sink,
            Sink::Exec {
                command: vec![
                    "file.alert".into(),
                    "-d".into(),
                    "/tmp/herd".into(),
                    "web down".into()
                ]
            }
        );
        assert_eq!((a.after, a.max), (2, 5));
        assert_eq!(a.within, Some(Duration::from_secs(1800)));
        assert_eq!(http.alerts[1].on, AlertOn::Up);
        assert_eq!(http.alerts[2].sink, Sink::Log);
        // Defaults: interval 5s, timeout 3s, rise 2, fall 3.
        let ping = &h.checks[0];
        assert_eq!(
            (ping.interval, ping.failure_interval, ping.timeout),
            (
                Duration::from_secs(5),
                Duration::from_secs(5),
                Duration::from_secs(3)
            )
        );
        assert_eq!(
            h.checks[2].kind,
            CheckKind::Exec {
                command: vec!["check_pgsql".into(), "-H".into(), "db1".into()],
                protocol: ExecProtocol::Nagios,
                no_hosts: true
            }
        );
        assert_eq!(
            h.checks[3].kind,
            CheckKind::Tcp {
                send: Some("PING\r\n".into()),
                expect: Some("+PONG".into())
            }
        );
        let text = cfg.to_toml();
        let again = Config::parse("out.toml", &text).unwrap();
        assert_eq!(again, cfg, "{text}");
    }

    fn err_of(health: &str) -> String {
        let src = format!("[[lb.service]]\nname = \"web\"\naddress = \"127.0.0.100:80\"\n{health}");
        match Config::parse("h.toml", &src) {
            Ok(_) => panic!("accepted:\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    /// A value each type-specific key accepts.
    fn sample(k: &str) -> &'static str {
        match k {
            "status" => "[\"200\"]",
            "tls-verify" => "false",
            "cert-warning" => "\"1d\"",
            "query-type" => "\"A\"",
            "method" => "\"GET\"",
            "path" => "\"/\"",
            "tls-ca" => "\"/ca.pem\"",
            "protocol" => "\"mon\"",
            "query" => "\"example.com\"",
            "command" => "\"true\"",
            _ => "\"x\"",
        }
    }

    /// Every key of the type-keys table is refused, with the table's list of types, by a type
    /// that does not take it (icmp takes none of them), and accepted by every type that does.
    #[test]
    fn type_specific_keys_follow_the_table() {
        for (k, types) in check::TYPE_KEYS {
            let src = format!(
                "[[health.check]]\nname = \"x\"\ntype = \"icmp\"\nhosts = [\"a\"]\n{k} = {}\n",
                sample(k)
            );
            let want = format!("health.check[0].{k}: only for type {}", types.join(" or "));
            let err = err_of(&src);
            assert!(err.contains(&want), "{k}: {err}");
            for t in *types {
                let mut keys = vec![("hosts", "[\"a:1\"]")];
                match *t {
                    "udp" => keys.push(("send", "\"x\"")),
                    "dns" => keys.push(("query", "\"example.com\"")),
                    "exec" => keys.push(("command", "\"true\"")),
                    _ => {}
                }
                keys.retain(|(key, _)| key != k);
                keys.push((k, sample(k)));
                let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                let src = format!("[lb]\n[[health.check]]\nname = \"x\"\ntype = \"{t}\"\n{body}");
                if let Err(e) = Config::parse("h.toml", &src) {
                    panic!("{t} with {k}:\n{src}\n{e}");
                }
            }
        }
    }

    #[test]
    fn bad_checks_name_file_line_and_key() {
        for (health, want) in [
            (
                "[[health.check]]\nname = \"x\"\ntype = \"smtp\"\nhosts = [\"a\"]\n",
                "h.toml:6: health.check[0].type: unknown check type \"smtp\"",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"api\"\n",
                "h.toml:7: health.check[0].service: no lb.service named or at \"api\"",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nstatus = [\"2xx\"]\n",
                "h.toml:8: health.check[0].status: \"2xx\" is not a status",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nexpect = \"(\"\n",
                "h.toml:8: health.check[0].expect: bad regex",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nsend = \"x\"\n",
                "h.toml:8: health.check[0].send: only for type tcp",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"exec\"\nhosts = [\"a\"]\n",
                "h.toml:6: health.check[0].command: type exec needs a command",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"udp\"\nhosts = [\"a:1\"]\n",
                "h.toml:6: health.check[0].send: type udp needs send",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"dns\"\nhosts = [\"a\"]\nquery = \"a..b\"\n",
                "h.toml:8: health.check[0].query: \"a..b\" is not a domain name",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"dns\"\nhosts = [\"a\"]\nquery = \"a.b\"\nquery-type = \"ANY\"\n",
                "h.toml:9: health.check[0].query-type: unknown type \"ANY\"",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"tcp\"\nhosts = [\"a\"]\n",
                "h.toml:6: health.check[0].port: a tcp check of hosts needs a port",
            ),
            (
                "[health]\nmon-max-connections = 0\n",
                "h.toml:5: health.mon-max-connections: 0 is out of range 1..=65536",
            ),
            (
                "[health]\nmon-idle-timeout = \"500ms\"\n",
                "h.toml:5: health.mon-idle-timeout: must be from 1s to 1d",
            ),
            (
                "[health]\nmon-idle-timeout = \"soon\"\n",
                "h.toml:5: health.mon-idle-timeout: ",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"tcp\"\nhosts = [\"a\"]\nport = 80\non-failure = \"remove\"\n",
                "h.toml:9: health.check[0].on-failure: only for checks of a service",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nhosts = [\"a\"]\n",
                "h.toml:5: health.check[0]: needs exactly one of service, hosts or group",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nfall = 0\n",
                "h.toml:8: health.check[0].fall: 0 is out of range 1..=100",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\ninterval = \"0s\"\n",
                "h.toml:8: health.check[0].interval: must be greater than zero",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\ndepends = [\"ping\"]\n",
                "h.toml:8: health.check[0].depends: no check named \"ping\"",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\ncommand = \"x\"\n",
                "h.toml:8: health.check[0].command: only for type exec",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nwieght = 1\n",
                "h.toml:8: health.check.wieght: unknown field `wieght`",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\nexec = \"a\"\nlog = true\n",
                "h.toml:8: health.check[0].alert[0]: needs exactly one of exec, webhook, email or log = true",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\nwebhook = \"http://hooks.example/x\"\ntls-ca = \"/ca.pem\"\n",
                "h.toml:10: health.check[0].alert[0].tls-ca: only for https:// webhooks",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\non = \"up\"\nlog = true\nevery = \"1m\"\n",
                "health.check[0].alert[0].every: only for on = \"down\" alerts",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\nlog = true\nwithin = \"1m\"\n",
                "h.toml:10: health.check[0].alert[0].within: needs after",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"exec\"\nhosts = [\"a\"]\ncommand = \"x 'y\"\n",
                "h.toml:8: health.check[0].command: unclosed single quote",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\nreals = [\"127.0.0.9\"]\n",
                "h.toml:8: health.check[0].reals: \"127.0.0.9\" is not a real server of web",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nhosts = [\"a\"]\nreals = [\"127.0.0.9\"]\n",
                "h.toml:8: health.check[0].reals: only for checks of a service",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\nemail = \"ops@example.com\"\n",
                "h.toml:9: health.check[0].alert[0].email: e-mail alerts need a [health.smtp] section",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1:25\"\nfrom = \"herd@x\"\n[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check.alert]]\nemail = [\"ops\"]\n",
                "h.toml:12: health.check[0].alert[0].email: \"ops\" is not a mail address",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1:\"\nfrom = \"herd@x\"\n",
                "h.toml:5: health.smtp.server: \"127.0.0.1:\" is not host[:port]",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1\"\nfrom = \"herd\"\ntls = \"ssl\"\n",
                "h.toml:6: health.smtp.from: \"herd\" is not a mail address",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1\"\nfrom = \"herd@x\"\ntls = \"ssl\"\n",
                "h.toml:7: health.smtp.tls: unknown mode \"ssl\"",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1\"\nfrom = \"herd@x\"\ntls = \"none\"\nusername = \"u\"\npassword-file = \"/p\"\n",
                "h.toml:7: health.smtp.tls: a password is not sent over plain text",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1\"\nfrom = \"herd@x\"\nusername = \"u\"\n",
                "health.smtp: username and password-file go together",
            ),
            (
                "[health.smtp]\nserver = \"127.0.0.1\"\nfrom = \"herd@x\"\nusername = \"u\"\npassword-file = \"/p\"\n",
                "h.toml:7: health.smtp.tls: a password is not sent over plain text",
            ),
            (
                "[[health.check]]\nname = \"x\"\ntype = \"http\"\ngroup = \"www\"\n",
                "h.toml:7: health.check[0].group: no health.hostgroups entry \"www\"",
            ),
        ] {
            let got = err_of(health);
            assert!(got.contains(want), "want {want:?}\n got {got:?}");
        }
    }

    #[test]
    fn duplicate_names_and_dependency_cycles_are_refused() {
        let two = "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"web\"\n";
        assert!(err_of(two).contains("h.toml:9: health.check[1].name: duplicate check name \"x\""));
        let cycle = "[[health.check]]\nname = \"a\"\ntype = \"http\"\nservice = \"web\"\ndepends = [\"b\"]\n[[health.check]]\nname = \"b\"\ntype = \"http\"\nservice = \"web\"\ndepends = [\"a\"]\n";
        assert!(
            err_of(cycle).contains("dependency cycle: a -> b -> a"),
            "{}",
            err_of(cycle)
        );
    }

    #[test]
    fn webhook_urls() {
        let ok = |u: &str| {
            let p = parse_http_url(u).unwrap();
            (p.tls, p.host, p.port, p.path)
        };
        assert_eq!(
            ok("http://127.0.0.1:9099/h"),
            (false, "127.0.0.1".into(), 9099, "/h".into())
        );
        assert_eq!(
            ok("http://hooks.local"),
            (false, "hooks.local".into(), 80, "/".into())
        );
        assert_eq!(
            ok("http://[::1]:81/x?y=1"),
            (false, "::1".into(), 81, "/x?y=1".into())
        );
        assert_eq!(
            ok("https://hooks.example/x"),
            (true, "hooks.example".into(), 443, "/x".into())
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://u@h/",
            "http://h:/",
            "http://h:99999/",
            "h/x",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn words_split_like_a_shell_without_expansion() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("a  b\tc"), ["a", "b", "c"]);
        assert_eq!(
            w(r#"a 'b c' "d \"e\" $f" g\ h"#),
            ["a", "b c", "d \"e\" $f", "g h"]
        );
        assert_eq!(w("''"), [""]);
        assert!(split_words("\"abc").is_err());
        assert!(split_words("abc\\").is_err());
    }
}
