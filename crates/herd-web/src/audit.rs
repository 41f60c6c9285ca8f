//! The web audit log: one JSON line per action and per login (`web.audit-log`), the recent
//! ones kept in memory for the overview and `GET /api/v1/audit`.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::AuditError;

/// The log, for appending. Client addresses and user names: for root and the daemon's group
/// only (0640), and a symlink at the path is not followed.
fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Entries kept in memory.
const RECENT: usize = 200;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AuditEntry {
    /// RFC 3339, UTC.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub user: String,
    pub role: String,
    /// The client's address.
    pub from: String,
    /// `login`, `login-failed`, `logout`, or the action (`drain`, `weight`, `silence`, …).
    pub event: String,
    /// What it was done to, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug)]
pub struct Audit {
    path: Mutex<Option<PathBuf>>,
    recent: Mutex<VecDeque<AuditEntry>>,
}

impl Audit {
    pub fn new(path: Option<PathBuf>) -> Audit {
        Audit {
            path: Mutex::new(path),
            recent: Mutex::default(),
        }
    }

    pub fn set_path(&self, path: Option<PathBuf>) {
        *self.path.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }

    /// Whether an action's line can be written now: the log is opened for appending (created
    /// 0640 if missing) and nothing is written. Actions are refused when it cannot be: an
    /// action nobody can account for is not done (`web.audit-log` fails closed).
    pub fn writable(&self) -> Result<(), AuditError> {
        let path = self.path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(path) = path else {
            return Ok(());
        };
        open(&path)
            .map(drop)
            .map_err(|source| AuditError { path, source })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        user: &str,
        role: &str,
        from: std::net::IpAddr,
        event: &str,
        detail: String,
        result: Result<(), String>,
    ) {
        let now = jiff::Timestamp::now();
        let e = AuditEntry {
            time: now.to_string(),
            time_ms: now.as_millisecond().max(0) as u64,
            user: user.to_string(),
            role: role.to_string(),
            from: from.to_string(),
            event: event.to_string(),
            detail,
            ok: result.is_ok(),
            error: result.err().unwrap_or_default(),
        };
        tracing::info!(
            user = %e.user, from = %e.from, event = %e.event, detail = %e.detail, ok = e.ok,
            error = %e.error, "web audit"
        );
        let path = self.path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(path) = path {
            let mut line = serde_json::to_vec(&e).unwrap_or_default();
            line.push(b'\n');
            let res = open(&path).and_then(|mut f| f.write_all(&line));
            if let Err(err) = res {
                tracing::error!(path = %path.display(), error = %err, "web: cannot write the audit log");
            }
        }
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(e);
    }

    /// Newest last.
    pub fn recent(&self) -> Vec<AuditEntry> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
