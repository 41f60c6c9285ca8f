//! The audit log: one JSON line per request that runs or is refused, written before what it
//! records goes ahead (the log fails closed).

use std::io::Write;
use std::net::SocketAddr;

use serde::Serialize;

use super::{Conn, Settings};
use crate::pki::Identity;

impl Conn<'_> {
    /// Writes one line; the time is taken here (nothing is formatted when there is no log).
    /// An error says why; what the line records must not go ahead without it (fail closed),
    /// except what has happened already (an end, a refusal), which the error log then notes.
    pub(super) fn audit(&self, rec: &AuditRecord<'_>) -> Result<(), String> {
        let Some(path) = &self.s.audit_log else {
            return Ok(());
        };
        let rec = AuditRecord {
            time: jiff::Timestamp::now().to_string(),
            ..rec.clone()
        };
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        let _guard = self.agent.audit.lock().unwrap_or_else(|p| p.into_inner());
        open_audit_log(path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "agent: cannot write the audit log");
                format!("cannot write the audit log {}: {e}", path.display())
            })
    }
}

/// Opens the audit log to append, creating it 0600: it names every command run as root. A log
/// an older herd made (0644) loses its bits for other users.
fn open_audit_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o007 != 0 {
        // Best effort: a file the agent does not own keeps what its owner chose.
        if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o770)) {
            tracing::warn!(path = %path.display(), error = %e, "agent: the audit log is readable by every user");
        }
    }
    Ok(f)
}

/// One line of the audit log (JSON).
#[derive(Debug, Clone, Serialize)]
pub(super) struct AuditRecord<'a> {
    pub(super) time: String,
    pub(super) event: &'static str,
    pub(super) request: &'static str,
    pub(super) who: &'a str,
    pub(super) role: &'static str,
    pub(super) serial: &'a str,
    pub(super) from: String,
    pub(super) node: &'a str,
    pub(super) user: &'a str,
    /// The node that relayed the request (the admin's grant names `who`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) via: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) exit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) signal: Option<i32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ended_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ms: Option<u64>,
}

impl<'a> AuditRecord<'a> {
    pub(super) fn new(id: &'a Identity, peer: SocketAddr, s: &'a Settings) -> Self {
        AuditRecord {
            time: String::new(),
            event: "",
            request: "",
            who: &id.name,
            role: id.role.as_str(),
            serial: &id.serial,
            from: peer.to_string(),
            node: &s.name,
            user: &s.user,
            via: None,
            command: None,
            reason: None,
            pid: None,
            exit: None,
            signal: None,
            timed_out: false,
            ended_by: None,
            ms: None,
        }
    }
}
