//! The health monitor's vocabulary: checks, their targets, alert rules and sinks.
//!
//! The config (`[health]`, see [`crate::config`]) is validated into these types; the monitor in
//! `herd-health` runs them. Names follow mon where mon has one (`interval`, `alertevery` →
//! `every`, `alertafter` → `after`/`within`, `numalerts` → `max`, `depend` → `depends`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::period::Period;

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
    pub checks: Vec<CheckSpec>,
}

/// The SMTP relay of `email` alerts (`[health.smtp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Host name or address of the relay.
    pub host: String,
    pub port: u16,
    /// The envelope sender and `From:` address.
    pub from: String,
    pub tls: SmtpTls,
    /// Trusted CAs (PEM) for the relay's certificate; default: Mozilla's roots.
    pub tls_ca: Option<PathBuf>,
    /// AUTH (PLAIN or LOGIN) user; the password is read from `password_file` at each send.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback).
    None,
    /// STARTTLS when the relay offers it, else plain text.
    Opportunistic,
    /// STARTTLS, or fail.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    /// The port that goes with the mode when the config gives none.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Tls => 465,
            _ => 25,
        }
    }
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

/// What a check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every real server of the virtual service with this name or `VIP:port` address. The
    /// check's verdict drives the director.
    Service(String),
    /// These hosts (names or addresses), alerts only.
    Hosts(Vec<String>),
    /// The hosts of a `[health.hostgroups]` entry, alerts only.
    Group(String),
}

/// What a real server failing its checks does to it in the director.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Weight 0: no new connections, open ones drain (keepalived's `inhibit_on_failure`).
    #[default]
    Quiesce,
    /// Removed from the service (mon's `lvs.alert`), added back on recovery.
    Remove,
}

/// How an `exec` check's program reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecProtocol {
    /// mon's monitor protocol: exit 0 = ok; first stdout line = summary, the rest = detail;
    /// hosts appended as arguments unless the command ends in `;;`.
    #[default]
    Mon,
    /// Nagios plugins: exit 0/1/2/3 = ok/warning/critical/unknown, perfdata after `|`.
    Nagios,
}

/// The probe a check runs against each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect; optionally send bytes and expect a substring in the reply.
    Tcp {
        send: Option<String>,
        expect: Option<String>,
    },
    /// HTTP/1.1 request; the status must fall in one of `status` (inclusive ranges).
    Http {
        method: String,
        path: String,
        host: Option<String>,
        status: Vec<(u16, u16)>,
        /// A regex the body must match.
        expect: Option<String>,
        /// HTTPS: how to speak TLS (`None`: plain HTTP).
        tls: Option<Tls>,
    },
    /// An ICMP echo (ping); a ping socket where the system allows one, else a raw socket
    /// (root).
    Icmp,
    /// A UDP datagram; passes on a reply (containing `expect`, if set).
    Udp {
        send: String,
        expect: Option<String>,
    },
    /// A DNS query over UDP; passes on NOERROR with a record of the type (equal to `expect`,
    /// if set, in text form: `192.0.2.1`, `mail.example.com.`).
    Dns {
        query: String,
        query_type: String,
        expect: Option<String>,
    },
    /// An external program (mon monitor or Nagios plugin).
    Exec {
        /// Program and arguments, split like a shell would (no expansion).
        command: Vec<String>,
        protocol: ExecProtocol,
        /// mon's trailing `;;`: do not append the hosts as arguments.
        no_hosts: bool,
    },
}

impl CheckKind {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { tls: None, .. } => "http",
            CheckKind::Http { tls: Some(_), .. } => "https",
            CheckKind::Icmp => "icmp",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Dns { .. } => "dns",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// TLS settings of an `https` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Server name sent (SNI) and verified; default: the `host` header's name, else the target.
    pub sni: Option<String>,
    /// Verify the certificate chain and name (default). Off: any certificate is accepted, but
    /// an expired one still fails the check.
    pub verify: bool,
    /// PEM bundle of trusted CAs; default: the system's bundle, else Mozilla's roots.
    pub ca: Option<PathBuf>,
    /// A certificate expiring within this long makes the check's verdict `warning` (the target
    /// stays in service).
    pub expiry_warning: Duration,
}

/// Default of an https check's `cert-warning`: 14 days.
pub const DEFAULT_CERT_WARNING: Duration = Duration::from_secs(14 * 86400);

/// Flap detection: this many state changes within `window` make a check flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    pub changes: u32,
    pub window: Duration,
}

/// One check: a probe, its targets, its schedule, its thresholds and its alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// Unique among checks; other checks name it in `depends`.
    pub name: String,
    pub kind: CheckKind,
    pub targets: Targets,
    /// With a service target: only these of its real servers (`ip` or `ip:port`); empty = all.
    pub reals: Vec<String>,
    /// Port to probe; default: the real server's port (service targets) or the probe's usual
    /// port (80 for http).
    pub port: Option<u16>,
    pub interval: Duration,
    /// Interval while failing (mon's `failure_interval`); default: `interval`.
    pub failure_interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a target back up.
    pub rise: u32,
    /// Consecutive failures that take a target down.
    pub fall: u32,
    /// Checks this one depends on: while a parent is down for the target, this check's alerts
    /// are suppressed (mon's `depend`).
    pub depends: Vec<String>,
    pub on_failure: OnFailure,
    pub flap: Option<Flap>,
    pub alerts: Vec<AlertSpec>,
    /// Configured as disabled: not run until `herd health enable`.
    pub disabled: bool,
}

/// When an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertOn {
    /// While the target is down (mon's `alert`).
    Down,
    /// When it comes back up after a down alert was sent (mon's `upalert`).
    Up,
}

impl fmt::Display for AlertOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlertOn::Down => "down",
            AlertOn::Up => "up",
        })
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A program called with mon's alert protocol (`-s svc -g group -h hosts -t time [-u]`
    /// then the configured arguments; summary and detail on stdin; `MON_*` environment), so
    /// mon's `alert.d` scripts work unchanged.
    Exec { command: Vec<String> },
    /// An HTTP POST of the notification as JSON to this `http://` or `https://` URL; any 2xx
    /// is success. `tls_ca`: trusted CAs (PEM) for an https URL; default: the system's.
    Webhook {
        url: String,
        tls_ca: Option<PathBuf>,
    },
    /// A mail to these addresses through `[health.smtp]`, worded like mon's `mail.alert`.
    Email { to: Vec<String> },
    /// The daemon's log.
    Log,
}

/// One alert rule of a check (one `alert`/`upalert` line of a mon `period` block).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    pub on: AlertOn,
    pub sink: Sink,
    /// Alerts only fire inside this period (mon's `period`).
    pub period: Period,
    /// Repeat a down alert at most this often while the target stays down (mon's
    /// `alertevery`); `None` = once per outage.
    pub every: Option<Duration>,
    /// Alert only after this many failures ...
    pub after: u32,
    /// ... within this long (mon's `alertafter N T`); `None` = consecutive failures.
    pub within: Option<Duration>,
    /// At most this many down alerts per outage (mon's `numalerts`); 0 = no limit.
    pub max: u32,
    /// The sink is killed after this long.
    pub timeout: Duration,
}
