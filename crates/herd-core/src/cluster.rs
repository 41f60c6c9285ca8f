//! The cluster's nodes and groups (`[nodes]`, `[groups]`): who `herd exec -w` and
//! `herd nodeset` can name, and where each node's agent is reached.

use std::collections::BTreeMap;

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
}
