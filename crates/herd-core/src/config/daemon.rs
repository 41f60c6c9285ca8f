//! `[daemon]`: the control socket, the drain timeout on stop, the log level.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::values::{duration, format_duration, RawDuration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    pub socket: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<RawDuration>>,
    pub log_level: Option<Spanned<String>>,
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

/// Validates `[daemon]`.
pub(super) fn validate(
    l: &Lines<'_>,
    raw: &RawDaemon,
    errs: &mut Vec<ConfigError>,
) -> DaemonConfig {
    let mut daemon = DaemonConfig::default();
    if let Some(s) = &raw.socket {
        daemon.socket = Some(PathBuf::from(s.get_ref()));
    }
    if let Some(d) = &raw.drain_timeout {
        match duration(d) {
            Ok(v) => daemon.drain_timeout = v,
            Err(e) => errs.push(l.err(Some(d), "daemon.drain-timeout", e)),
        }
    }
    if let Some(lv) = &raw.log_level {
        match lv.get_ref().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => {
                daemon.log_level = lv.get_ref().clone()
            }
            other => errs.push(l.err(
                Some(lv),
                "daemon.log-level",
                format!("unknown level {other:?} (expected error, warn, info, debug or trace)"),
            )),
        }
    }
    daemon
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct DaemonOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<String>,
    drain_timeout: String,
    log_level: String,
}

pub(super) fn daemon_out(d: &DaemonConfig) -> DaemonOut {
    DaemonOut {
        socket: d.socket.as_ref().map(|p| p.display().to_string()),
        drain_timeout: format_duration(d.drain_timeout),
        log_level: d.log_level.clone(),
    }
}
