//! The JSON messages inside control frames.

use serde::{Deserialize, Serialize};

use crate::pki::Role;

/// The first frame of a connection, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Who and how is the agent (any role).
    Ping,
    /// Run a command (admin).
    Exec(ExecRequest),
}

impl Request {
    /// The role a certificate needs for this request.
    pub fn allowed(&self, role: Role) -> bool {
        match self {
            Request::Ping => true,
            Request::Exec(_) => role == Role::Admin,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Exec(_) => "exec",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExecRequest {
    /// Run with `/bin/sh -c`.
    pub command: String,
    /// The agent kills the command's process group after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether stdin frames follow; otherwise the command's stdin is empty.
    #[serde(default)]
    pub stdin: bool,
    /// This node's rank in the run (gexec's numbering), and the run's size: the command sees
    /// them as `HERD_RANK` and `HERD_SIZE`.
    #[serde(default)]
    pub rank: u32,
    #[serde(default)]
    pub size: u32,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Exit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Killed for running past its timeout.
    #[serde(default)]
    pub timed_out: bool,
}

impl Exit {
    /// As a shell reports it: the exit code, or 128 + the signal.
    pub fn status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Why the agent did not run, or stopped serving, a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Failure {
    /// Refused by policy (role), rather than failed.
    #[serde(default)]
    pub refused: bool,
    pub message: String,
}

/// The answer to a ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pong {
    pub name: String,
    pub version: String,
    /// How the agent saw the caller.
    pub you: String,
    pub role: Role,
    pub uptime_secs: u64,
    pub load: [f64; 3],
}

/// Signals a client may send to a command's process group.
pub const SIGNALS: [i32; 5] = [1, 2, 3, 9, 15];
