//! `[nodes]` and `[groups]`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::error::{ConfigError, Lines};
use crate::nodeset::{NodeSet, NodeSetError};

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
        match super::values::host_port(addr) {
            (_, Some(_)) => addr.to_string(),
            (h, None) if h.contains(':') => format!("[{h}]:{port}"),
            (h, None) => format!("{h}:{port}"),
        }
    }
}

pub(super) type RawNodes = BTreeMap<String, Spanned<String>>;
pub(super) type RawGroups = BTreeMap<String, Spanned<String>>;

pub(super) fn validate(
    l: &Lines<'_>,
    nodes: Option<&RawNodes>,
    groups: Option<&RawGroups>,
    errs: &mut Vec<ConfigError>,
) -> ClusterConfig {
    let mut cfg = ClusterConfig::default();
    // Keys are sorted by the map; their lines come from the values' spans.
    for (names, addrs) in nodes.into_iter().flatten() {
        let key = format!("nodes.{names:?}");
        let n = match NodeSet::parse(names) {
            Ok(n) => n,
            Err(e) => {
                errs.push(l.err(Some(addrs), key, e.reason));
                continue;
            }
        };
        let a = match NodeSet::parse(addrs.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                errs.push(l.err(Some(addrs), key, e.reason));
                continue;
            }
        };
        if a.len() != n.len() {
            errs.push(l.err(
                Some(addrs),
                key,
                format!(
                    "{} nodes but {} addresses (they pair up in order)",
                    n.len(),
                    a.len()
                ),
            ));
            continue;
        }
        cfg.node_entries
            .push((names.clone(), addrs.get_ref().clone()));
        for (node, addr) in n.iter().zip(a.iter()) {
            if cfg
                .nodes
                .insert(node.to_string(), addr.to_string())
                .is_some()
            {
                errs.push(l.err(Some(addrs), &key, format!("node {node} is listed twice")));
            }
        }
    }
    for (name, expr) in groups.into_iter().flatten() {
        let key = format!("groups.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errs.push(l.err(
                Some(expr),
                key,
                "a group name is letters, digits, '-' and '_'",
            ));
            continue;
        }
        if name == "all" {
            errs.push(l.err(
                Some(expr),
                key,
                "@all is every node in [nodes]; it cannot be redefined",
            ));
            continue;
        }
        cfg.groups.insert(name.clone(), expr.get_ref().clone());
    }
    // Each group must expand (unknown or circular references are found here, not at use).
    for (name, expr) in groups.into_iter().flatten() {
        if cfg.groups.contains_key(name) {
            if let Err(e) = cfg.resolve(&format!("@{name}")) {
                errs.push(l.err(Some(expr), format!("groups.{name}"), e.reason));
            }
        }
    }
    cfg
}

pub(super) fn nodes_out(c: &ClusterConfig) -> Option<BTreeMap<String, String>> {
    (!c.node_entries.is_empty()).then(|| c.node_entries.iter().cloned().collect())
}

pub(super) fn groups_out(c: &ClusterConfig) -> Option<BTreeMap<String, String>> {
    (!c.groups.is_empty()).then(|| c.groups.clone())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn parse(body: &str) -> Result<Config, String> {
        Config::parse("t.toml", body).map_err(|e| e.to_string())
    }

    #[test]
    fn nodes_pair_up_with_addresses_and_groups_expand() {
        let cfg = parse(
            r#"
[nodes]
"node[01-04]" = "127.0.1.[1-4]"
db1 = "db1.example.com:2876"

[groups]
web = "node[01-03]"
front = "@web,db1"
"#,
        )
        .unwrap();
        let c = &cfg.cluster;
        assert_eq!(c.address("node03"), "127.0.1.3");
        assert_eq!(c.address("db1"), "db1.example.com:2876");
        assert_eq!(c.address("elsewhere"), "elsewhere");
        assert_eq!(c.resolve("@all").unwrap().fold(), "db1,node[01-04]");
        assert_eq!(
            c.resolve("@front!node02").unwrap().fold(),
            "db1,node[01,03]"
        );
        // Rendered back, read again: the same cluster.
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.cluster, cfg.cluster);
    }

    #[test]
    fn bad_nodes_and_groups_name_line_and_key() {
        let e = parse("[nodes]\n\"n[1-3]\" = \"10.0.0.[1-2]\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2: nodes.\"n[1-3]\": 3 nodes but 2 addresses"),
            "{e}"
        );
        let e = parse("[nodes]\n\"n[1-\" = \"10.0.0.1\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2: nodes.\"n[1-\": '[' is never closed"),
            "{e}"
        );
        let e = parse("[nodes]\nn1 = \"a\"\n\"n[1-2]\" = \"b,c\"\n").unwrap_err();
        assert!(e.contains("node n1 is listed twice"), "{e}");
        let e = parse("[groups]\na = \"@b\"\nb = \"@a\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2: groups.a:") && e.contains("nests too deep"),
            "{e}"
        );
        let e = parse("[groups]\nweb = \"@nope\"\n").unwrap_err();
        assert!(
            e.contains("t.toml:2: groups.web: in group @web: unknown group @nope"),
            "{e}"
        );
        let e = parse("[groups]\nall = \"n1\"\n").unwrap_err();
        assert!(e.contains("groups.all: @all is every node"), "{e}");
        let e = parse("[groups]\n\"w b\" = \"n1\"\n").unwrap_err();
        assert!(e.contains("a group name is letters"), "{e}");
    }
}
