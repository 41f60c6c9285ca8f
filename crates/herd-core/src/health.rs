//! The `[health]` section's validated form: the monitor's settings and its checks (the checks'
//! own types, [`herd_rules::spec`], belong to the rule engine's crate).
//!
//! The config (`[health]`, see [`crate::config`]) is validated into these types; the monitor in
//! `herd-health` runs them. Names follow mon where mon has one (`interval`, `alertevery` →
//! `every`, `alertafter` → `after`/`within`, `numalerts` → `max`, `depend` → `depends`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

/// Default of an https check's `cert-warning`: 14 days.
pub const DEFAULT_CERT_WARNING: Duration = Duration::from_secs(14 * 86400);
