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
    /// Make a directory the copy of the client's tree (admin; into a module, as it says).
    Sync(SyncRequest),
    /// Send a module's tree to the client, which makes its directory the copy (as the module
    /// says: `[sync.module.NAME] allow`).
    Pull(PullRequest),
}

impl Request {
    /// The role a certificate needs for this request.
    pub fn allowed(&self, role: Role) -> bool {
        match self {
            Request::Ping => true,
            // A node relays: its request must carry an admin's grant (checked by the agent).
            Request::Exec(e) => role == Role::Admin || (role == Role::Node && e.auth.is_some()),
            // A node relays an admin's push: with the admin's grant (checked by the agent).
            Request::Sync(r) => {
                role == Role::Admin
                    || r.module.is_some()
                    || (role == Role::Node && r.auth.is_some())
            }
            // The module's own list decides (the agent checks it).
            Request::Pull(_) => true,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Exec(_) => "exec",
            Request::Sync(_) => "sync",
            Request::Pull(_) => "pull",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// For a run through relays: the whole stdin's length and hash, which the admin's grant
    /// covers. Every agent that gets it buffers stdin and checks it before running anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_digest: Option<StdinDigest>,
    /// This node's rank in the run (gexec's numbering), and the run's size: the command sees
    /// them as `HERD_RANK` and `HERD_SIZE`.
    #[serde(default)]
    pub rank: u32,
    #[serde(default)]
    pub size: u32,
    /// Nodes this agent relays the run to (tree fanout), and how many connections it may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtree: Vec<Hop>,
    #[serde(default)]
    pub fanout: u32,
    /// The connect timeout a relay uses (0: 10 s).
    #[serde(default)]
    pub connect_timeout_ms: u64,
    /// The admin's grant: required when the caller is a node (a relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

/// The largest stdin a run through relays may carry: each agent of the tree holds it whole
/// until it has checked it against the admin's grant.
pub const RELAYED_STDIN_MAX: u64 = 16 << 20;

/// The length and BLAKE3 (hex) of a run's whole stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StdinDigest {
    pub len: u64,
    pub blake3: String,
}

impl StdinDigest {
    pub fn of(data: &[u8]) -> StdinDigest {
        StdinDigest {
            len: data.len() as u64,
            blake3: blake3::hash(data).to_hex().to_string(),
        }
    }
}

/// A node of the run, as a relay needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Hop {
    pub rank: u32,
    pub name: String,
    /// `host:port` of its agent.
    pub addr: String,
}

/// An admin's signed grant (see [`crate::grant`]); binary fields in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Auth {
    /// The signer's certificate (DER).
    pub cert: String,
    /// The grant, as JSON: exactly the bytes signed.
    pub signed: String,
    pub sig: String,
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

/// Why a node did not run the command, or how it was lost (also sent by relays on behalf of
/// their subtree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Refused by policy: the certificate's role, or a grant that does not hold.
    Refused,
    /// The agent could not run it (no such user, ...).
    Agent,
    /// Not reached: TCP connect or TLS handshake failed.
    Connect,
    /// The connection broke or went silent while the command ran.
    Lost,
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

/// `herd sync push`: the destination and how to compare.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SyncRequest {
    /// An absolute path on the node; created if missing.
    pub dest: String,
    #[serde(default)]
    pub delete: bool,
    #[serde(default)]
    pub checksum: bool,
    /// Only report what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// rsync-style patterns; also protect matching destination files from `delete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub rank: u32,
    /// Into this module of the node (`dest` is then its path): its `write` list decides who may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Nodes this agent relays the push to (content flows down the tree, once per subtree),
    /// and how many connections it may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtree: Vec<Hop>,
    #[serde(default)]
    pub fanout: u32,
    #[serde(default)]
    pub connect_timeout_ms: u64,
    /// The admin's grant, when a node relays the push (it covers the request and the
    /// manifest's hash; the manifest has every file's hash, and each file is checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Set by the receiving side, never sent: the tree comes from an admin, so setuid and
    /// setgid bits are kept (from anyone else, a pull or a module push, they are cleared).
    #[serde(skip)]
    pub trusted: bool,
}

/// `herd sync pull NODE::MODULE`: which module, and how the client compares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PullRequest {
    pub module: String,
    /// Hash every file of the module (the client compares by content).
    #[serde(default)]
    pub checksum: bool,
    /// Compress the content on the wire (zstd).
    #[serde(default)]
    pub compress: bool,
}

/// What a sync did on a node (or would do, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SyncDone {
    pub written: u64,
    pub bytes: u64,
    /// Content bytes received for them (less than `bytes` when deltas travelled).
    #[serde(default)]
    pub received: u64,
    pub removed: u64,
    pub meta: u64,
    /// Entries not applied, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(String, String)>,
    /// The plan, for a dry run: one line per action (`write PATH`, `remove PATH`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
}
