//! What a check is: its probe, targets, thresholds, alert rules and sinks, as the config
//! validates it (herd-core's `config::health`) and the engine and monitor run it.
//!
//! Names follow mon where mon has one (`interval`, `alertevery` → `every`, `alertafter` →
//! `after`/`within`, `numalerts` → `max`, `depend` → `depends`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::period::Period;

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
