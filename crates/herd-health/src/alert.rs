//! Alert sinks: where a notification goes, and how.
//!
//! `exec` sinks follow mon's alert protocol, so the scripts in mon's `alert.d` work unchanged:
//!
//! ```text
//! ALERT -s CHECK -g GROUP -h "HOST ..." -t UNIXTIME [-u] ARGS...
//! ```
//!
//! with the summary line and then the detail on stdin, and mon's environment: `MON_ALERTTYPE`
//! (`failure`, `up` or `test`), `MON_OPSTATUS` (0 = failing, 1 = ok), `MON_SERVICE`,
//! `MON_GROUP`, `MON_DESCRIPTION`, `MON_LAST_SUMMARY`, `MON_LAST_OUTPUT`, `MON_FIRST_FAILURE`,
//! `MON_LAST_FAILURE`, `MON_LAST_SUCCESS`, `MON_RETVAL`. Every run has a timeout (the process
//! group is killed at it) and its outcome is returned for the record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use herd_core::health::Sink;
use serde::Serialize;

use crate::probe::{dirs, find_program, run_program};

/// What kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Targets are failing (mon's `alert`).
    Failure,
    /// Targets recovered (mon's `upalert`).
    Up,
    /// Flapping started; alerts are held until it settles.
    Flapping,
    /// `herd health test-alert`.
    Test,
}

impl Kind {
    /// `MON_ALERTTYPE`.
    fn mon_type(self) -> &'static str {
        match self {
            Kind::Failure | Kind::Flapping => "failure",
            Kind::Up => "up",
            Kind::Test => "test",
        }
    }
}

/// One notification: possibly several targets of one check (a grouped burst).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub kind: Kind,
    /// The check's name (mon's service).
    pub check: String,
    /// The check's group: its service, host group or `hosts` (mon's watch group).
    pub group: String,
    pub hosts: Vec<String>,
    pub summary: String,
    pub detail: String,
    /// Unix seconds.
    pub time: u64,
    pub first_failure: u64,
    pub last_failure: u64,
    pub last_success: u64,
}

/// The recorded outcome of one alert run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub ok: bool,
    /// What went wrong, or `""`.
    pub error: String,
    pub took_ms: u64,
}

/// Sends `notice` to `sink`; never fails, the outcome says how it went.
pub async fn send(
    sink: &Sink,
    notice: &Notice,
    timeout: Duration,
    alertdir: &[PathBuf],
) -> Delivery {
    let start = Instant::now();
    let result = match sink {
        Sink::Log => {
            tracing::warn!(
                kind = ?notice.kind,
                check = %notice.check,
                group = %notice.group,
                hosts = %notice.hosts.join(" "),
                "{}",
                notice.summary
            );
            Ok(())
        }
        Sink::Exec { command } => exec(command, notice, timeout, alertdir).await,
    };
    let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => Delivery {
            ok: true,
            error: String::new(),
            took_ms,
        },
        Err(error) => Delivery {
            ok: false,
            error,
            took_ms,
        },
    }
}

async fn exec(
    command: &[String],
    n: &Notice,
    timeout: Duration,
    alertdir: &[PathBuf],
) -> Result<(), String> {
    let program = command.first().ok_or("empty command")?;
    let path = find_program(program, alertdir)
        .ok_or_else(|| format!("{program}: not found (searched {})", dirs(alertdir)))?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg("-s")
        .arg(&n.check)
        .arg("-g")
        .arg(&n.group)
        .arg("-h")
        .arg(n.hosts.join(" "))
        .arg("-t")
        .arg(n.time.to_string());
    if n.kind == Kind::Up {
        cmd.arg("-u");
    }
    cmd.args(&command[1..]);
    let failing = matches!(n.kind, Kind::Failure | Kind::Flapping);
    cmd.env("MON_ALERTTYPE", n.kind.mon_type())
        .env("MON_OPSTATUS", if failing { "0" } else { "1" })
        .env("MON_RETVAL", if failing { "1" } else { "0" })
        .env("MON_SERVICE", &n.check)
        .env("MON_GROUP", &n.group)
        .env("MON_DESCRIPTION", format!("{} of {}", n.check, n.group))
        .env("MON_LAST_SUMMARY", &n.summary)
        .env("MON_LAST_OUTPUT", format!("{}\n{}", n.summary, n.detail))
        .env("MON_FIRST_FAILURE", n.first_failure.to_string())
        .env("MON_LAST_FAILURE", n.last_failure.to_string())
        .env("MON_LAST_SUCCESS", n.last_success.to_string());
    let mut input = n.summary.clone().into_bytes();
    input.push(b'\n');
    input.extend_from_slice(n.detail.as_bytes());
    if !n.detail.is_empty() && !n.detail.ends_with('\n') {
        input.push(b'\n');
    }
    let run = run_program(cmd, Some(input), timeout)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if run.timed_out {
        return Err(format!(
            "{}: killed after {timeout:?} (timeout)",
            path.display()
        ));
    }
    match run.status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("{}: {s}", path.display())),
        None => Err(format!("{}: no exit status", path.display())),
    }
}
