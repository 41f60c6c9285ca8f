//! The cluster's nodes and groups (`[nodes]`, `[groups]`): who `herd exec -w` and
//! `herd nodeset` can name, and where each node's agent is reached.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::nodeset::{NodeSet, NodeSetError};

/// The port of the node agent (gexec's).
pub const AGENT_PORT: u16 = 2875;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Node name → its agent's address as written (`10.0.0.5`, `web1.example.com:2875`);
    /// `[nodes]` entries with ranges are expanded pairwise.
    pub nodes: BTreeMap<String, String>,
    /// The `[nodes]` entries as written, for rendering the config back.
    pub node_entries: Vec<(String, String)>,
    /// Group name → node set expression (it may name other groups).
    pub groups: BTreeMap<String, String>,
}

impl ClusterConfig {
    /// Every node of `[nodes]` (the group `@all`).
    pub fn all(&self) -> NodeSet {
        self.nodes.keys().map(String::as_str).collect()
    }

    /// Expands an expression with this cluster's groups; `@all` is every node in `[nodes]`.
    pub fn resolve(&self, expr: &str) -> Result<NodeSet, NodeSetError> {
        let all = self.all().fold();
        NodeSet::parse_with(expr, &|name| match self.groups.get(name) {
            Some(e) => Some(e.clone()),
            None if name == "all" => Some(all.clone()),
            None => None,
        })
    }

    /// Where `node`'s agent listens: its `[nodes]` address, else its own name (resolved by
    /// DNS when used).
    pub fn address<'a>(&'a self, node: &'a str) -> &'a str {
        self.nodes.get(node).map(String::as_str).unwrap_or(node)
    }

    /// `node`'s agent as `host:port` (`port` when its address names none).
    pub fn agent_address(&self, node: &str, port: u16) -> String {
        let addr = self.address(node);
        match crate::config::host_port(addr) {
            (_, Some(_)) => addr.to_string(),
            (h, None) if h.contains(':') => format!("[{h}]:{port}"),
            (h, None) => format!("{h}:{port}"),
        }
    }
}

/// `[agent]`: this node's agent, and how `herd exec` reaches the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Addresses the agent binds; none = no agent on this node.
    pub listen: Vec<std::net::SocketAddr>,
    /// The port of nodes whose `[nodes]` address has none.
    pub port: u16,
    /// This node's name (`HERD_NODE`, `herd exec -X`); default: the host name.
    pub name: Option<String>,
    /// Where `herd init` and `herd cert issue` keep keys and certificates.
    pub pki: PathBuf,
    /// Default `<pki>/ca.crt`.
    pub ca: Option<PathBuf>,
    /// The agent's own; default `<pki>/<name>.crt` and `.key`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// What `herd exec` presents; default `<pki>/admin.crt` and `.key`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Serials of revoked certificates (normalised lower-case hex).
    pub revoked: Vec<String>,
    /// Admin commands run as this user.
    pub user: String,
    /// None: no audit log.
    pub audit_log: Option<PathBuf>,
    pub max_connections: usize,
    /// Connections `herd exec` holds at once.
    pub fanout: usize,
}

/// Where the PKI lives unless `[agent] pki` says otherwise.
pub const DEFAULT_PKI: &str = "/etc/herd/pki";

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: Vec::new(),
            port: AGENT_PORT,
            name: None,
            pki: PathBuf::from(DEFAULT_PKI),
            ca: None,
            cert: None,
            key: None,
            client_cert: None,
            client_key: None,
            revoked: Vec::new(),
            user: "root".to_string(),
            audit_log: Some(PathBuf::from("/var/log/herd/audit.log")),
            max_connections: 1024,
            fanout: 128,
        }
    }
}

impl AgentConfig {
    pub fn ca_path(&self) -> PathBuf {
        self.ca.clone().unwrap_or_else(|| self.pki.join("ca.crt"))
    }

    /// The agent's certificate and key, for a node called `name`.
    pub fn node_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.cert
                .clone()
                .unwrap_or_else(|| self.pki.join(format!("{name}.crt"))),
            self.key
                .clone()
                .unwrap_or_else(|| self.pki.join(format!("{name}.key"))),
        )
    }

    /// The certificate and key `herd exec` presents.
    pub fn client_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.client_cert
                .clone()
                .unwrap_or_else(|| self.pki.join("admin.crt")),
            self.client_key
                .clone()
                .unwrap_or_else(|| self.pki.join("admin.key")),
        )
    }
}

/// `herd sync push` sends to this many nodes at once, and agents relay to the rest: content
/// is bandwidth, and a source that sends each byte twice, to two relays, is done far sooner
/// than one that sends it to every node (`[sync] fanout`, `--fanout`).
pub const SYNC_FANOUT: usize = 2;

/// `[sync.module.NAME]`: a tree this node serves to `herd sync pull NODE::NAME` (rsyncd.conf's
/// modules), and optionally takes pushes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncModule {
    pub name: String,
    /// The module's root on the node that serves it.
    pub path: PathBuf,
    /// No pushes into the module (rsyncd's `read only`, default yes).
    pub read_only: bool,
    /// Who may pull: node sets (`@web`, `node[1-8]`: those nodes' certificates) and roles
    /// (`role:read-only`); admins always may.
    pub allow: Vec<String>,
    /// Who may push with `herd sync push --module` when not read-only; admins always may.
    pub write: Vec<String>,
    /// Transfers served at once (0: no limit).
    pub max_connections: usize,
    /// Paths left out, both ways (rsync's patterns).
    pub exclude: Vec<String>,
    /// Nodes that pull this module on a timer (the seeds' cron line).
    pub schedule: Option<PullSchedule>,
}

/// `[sync.module.NAME.schedule]`: every node of `nodes` pulls `from::NAME` into `dest` every
/// `every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSchedule {
    /// The node that serves the module.
    pub from: String,
    /// Who pulls (a node set expression).
    pub nodes: String,
    pub every: std::time::Duration,
    /// Default: the module's path.
    pub dest: Option<PathBuf>,
    pub delete: bool,
}

impl SyncModule {
    /// Whether a peer with this name and role may pull (`write`: push into) the module.
    pub fn permits(&self, cluster: &ClusterConfig, name: &str, role: &str, write: bool) -> bool {
        if role == "admin" {
            return true;
        }
        if write && self.read_only {
            return false;
        }
        let list = if write { &self.write } else { &self.allow };
        list.iter().any(|entry| match entry.strip_prefix("role:") {
            Some(r) => r == role,
            // A node set names nodes: a certificate of another role with a node's name
            // (a read-only user "node1") is not that node.
            None => role == "node" && cluster.resolve(entry).is_ok_and(|set| set.contains(name)),
        })
    }
}
