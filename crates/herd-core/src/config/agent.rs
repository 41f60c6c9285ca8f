//! `[agent]`: the node agent (TCP 2875, mutual TLS) and what `herd exec` uses to reach it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};

/// The port of the node agent (gexec's).
pub const AGENT_PORT: u16 = 2875;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAgent {
    pub listen: Option<Spanned<Vec<String>>>,
    pub port: Option<Spanned<i64>>,
    pub name: Option<Spanned<String>>,
    pub pki: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub revoked: Option<Spanned<Vec<String>>>,
    pub user: Option<Spanned<String>>,
    pub audit_log: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub fanout: Option<Spanned<i64>>,
}

/// A certificate serial as herd writes it: lower-case hex without separators or leading
/// zero bytes (`herd cert show` prints it so).
pub fn normalize_serial(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let trimmed = hex.trim_start_matches("00");
    Some(if trimmed.is_empty() {
        "00".to_string()
    } else {
        trimmed.to_string()
    })
}

/// `127.0.1.1`, `127.0.1.1:2875`, `::1`, `[::1]:2875` → a socket address.
pub fn listen_address(s: &str, port: u16) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)))
}

pub(super) fn validate(
    l: &Lines<'_>,
    raw: Option<&RawAgent>,
    errs: &mut Vec<ConfigError>,
) -> AgentConfig {
    let mut cfg = AgentConfig::default();
    let Some(r) = raw else {
        return cfg;
    };
    if let Some(p) = &r.port {
        match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => cfg.port = port,
            _ => errs.push(l.err(Some(p), "agent.port", "a port is 1..=65535")),
        }
    }
    if let Some(list) = &r.listen {
        for a in list.get_ref() {
            match listen_address(a, cfg.port) {
                Some(sa) if !cfg.listen.contains(&sa) => cfg.listen.push(sa),
                Some(sa) => errs.push(l.err(Some(list), "agent.listen", format!("{sa} is listed twice"))),
                None => errs.push(l.err(
                    Some(list),
                    "agent.listen",
                    format!("{a:?} is not an IP address (with an optional port); the agent binds only addresses named here"),
                )),
            }
        }
    }
    if let Some(n) = &r.name {
        if n.get_ref().is_empty() {
            errs.push(l.err(Some(n), "agent.name", "an empty name"));
        }
        cfg.name = Some(n.get_ref().clone());
    }
    identity_paths(l, r, &mut cfg, errs);
    if let Some(list) = &r.revoked {
        cfg.revoked = l.each(list, "agent.revoked", errs, |s| {
            normalize_serial(s).ok_or_else(|| {
                format!("{s:?} is not a certificate serial (hex, as `herd cert show` prints it)")
            })
        });
    }
    if let Some(u) = &r.user {
        let ok = !u.get_ref().is_empty()
            && u.get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            errs.push(l.err(
                Some(u),
                "agent.user",
                format!("{:?} is not a user name", u.get_ref()),
            ));
        }
        cfg.user = u.get_ref().clone();
    }
    match r.audit_log.as_ref().map(|a| a.get_ref().as_str()) {
        None => {}
        Some("none") => cfg.audit_log = None,
        Some("") => errs.push(l.err(
            r.audit_log.as_ref(),
            "agent.audit-log",
            "an empty path (\"none\" turns the log off)",
        )),
        Some(p) => cfg.audit_log = Some(PathBuf::from(p)),
    }
    limits(l, r, &mut cfg, errs);
    cfg
}

/// `pki`, and the CA, certificate and key files that override its defaults (in pairs).
fn identity_paths(l: &Lines<'_>, r: &RawAgent, cfg: &mut AgentConfig, errs: &mut Vec<ConfigError>) {
    let path = |v: &Option<Spanned<String>>, key: &str, errs: &mut Vec<ConfigError>| {
        let p = v.as_ref()?;
        if p.get_ref().is_empty() {
            errs.push(l.err(Some(p), format!("agent.{key}"), "an empty path"));
            return None;
        }
        Some(PathBuf::from(p.get_ref()))
    };
    if let Some(dir) = path(&r.pki, "pki", errs) {
        cfg.pki = dir;
    }
    cfg.ca = path(&r.ca, "ca", errs);
    cfg.cert = path(&r.cert, "cert", errs);
    cfg.key = path(&r.key, "key", errs);
    cfg.client_cert = path(&r.client_cert, "client-cert", errs);
    cfg.client_key = path(&r.client_key, "client-key", errs);
    if r.cert.is_some() != r.key.is_some() {
        errs.push(l.err(
            r.cert.as_ref().or(r.key.as_ref()),
            "agent.cert",
            "cert and key go together",
        ));
    }
    if r.client_cert.is_some() != r.client_key.is_some() {
        errs.push(l.err(
            r.client_cert.as_ref().or(r.client_key.as_ref()),
            "agent.client-cert",
            "client-cert and client-key go together",
        ));
    }
}

/// `max-connections` and `fanout`.
fn limits(l: &Lines<'_>, r: &RawAgent, cfg: &mut AgentConfig, errs: &mut Vec<ConfigError>) {
    let count = |v: &Option<Spanned<i64>>, key: &str, max: i64, errs: &mut Vec<ConfigError>| {
        let n = v.as_ref()?;
        if (1..=max).contains(n.get_ref()) {
            Some(*n.get_ref() as usize)
        } else {
            errs.push(l.err(
                Some(n),
                format!("agent.{key}"),
                format!("out of range 1..={max}"),
            ));
            None
        }
    };
    if let Some(n) = count(&r.max_connections, "max-connections", 65_536, errs) {
        cfg.max_connections = n;
    }
    if let Some(n) = count(&r.fanout, "fanout", 65_536, errs) {
        cfg.fanout = n;
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct AgentOut {
    listen: Vec<String>,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    pki: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    revoked: Vec<String>,
    user: String,
    audit_log: String,
    max_connections: usize,
    fanout: usize,
}

pub(super) fn agent_out(c: &AgentConfig) -> Option<AgentOut> {
    if *c == AgentConfig::default() {
        return None;
    }
    let p = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    Some(AgentOut {
        listen: c.listen.iter().map(|a| a.to_string()).collect(),
        port: c.port,
        name: c.name.clone(),
        pki: c.pki.display().to_string(),
        ca: p(&c.ca),
        cert: p(&c.cert),
        key: p(&c.key),
        client_cert: p(&c.client_cert),
        client_key: p(&c.client_key),
        revoked: c.revoked.clone(),
        user: c.user.clone(),
        audit_log: p(&c.audit_log).unwrap_or_else(|| "none".to_string()),
        max_connections: c.max_connections,
        fanout: c.fanout,
    })
}

#[cfg(test)]
mod tests {
    use super::AGENT_PORT;
    use super::*;

    #[test]
    fn serials_normalize_as_herd_prints_them() {
        assert_eq!(normalize_serial("00:8F:01").as_deref(), Some("8f01"));
        assert_eq!(normalize_serial("4a1b").as_deref(), Some("4a1b"));
        assert_eq!(normalize_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }

    #[test]
    fn listen_takes_addresses_with_or_without_port() {
        assert_eq!(
            listen_address("127.0.1.1", AGENT_PORT),
            Some("127.0.1.1:2875".parse().unwrap())
        );
        assert_eq!(
            listen_address("[::1]:99", AGENT_PORT),
            Some("[::1]:99".parse().unwrap())
        );
        assert_eq!(listen_address("::1", 7), Some("[::1]:7".parse().unwrap()));
        assert_eq!(listen_address("node1", 7), None);
    }

    #[test]
    fn agent_section_parses_round_trips_and_names_bad_keys() {
        use crate::config::Config;
        let text =
            "[agent]\nlisten = [\"127.0.1.1\", \"[::1]:2999\"]\nport = 2876\nname = \"node01\"\n\
                    revoked = [\"00:AB:cd\"]\naudit-log = \"none\"\nfanout = 32\n";
        let cfg = Config::parse("t.toml", text).unwrap();
        let a = &cfg.agent;
        assert_eq!(
            a.listen,
            vec![
                "127.0.1.1:2876".parse().unwrap(),
                "[::1]:2999".parse().unwrap()
            ]
        );
        assert_eq!(
            (a.revoked.as_slice(), a.audit_log.as_ref(), a.fanout),
            (&["abcd".to_string()][..], None, 32)
        );
        assert_eq!(a.ca_path(), PathBuf::from("/etc/herd/pki/ca.crt"));
        assert_eq!(
            a.node_paths("node01").0,
            PathBuf::from("/etc/herd/pki/node01.crt")
        );
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.agent, cfg.agent);

        let e = Config::parse("t.toml", "[agent]\nlisten = [\"node1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:2: agent.listen: \"node1\" is not an IP address"),
            "{e}"
        );
        let e = Config::parse("t.toml", "[agent]\n\nrevoked = [\"zz\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:3: agent.revoked: \"zz\" is not a certificate serial"),
            "{e}"
        );
        let e = Config::parse("t.toml", "[agent]\ncert = \"/x.crt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:2: agent.cert: cert and key go together"),
            "{e}"
        );
        let e = Config::parse("t.toml", "[agent]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2"), "{e}");
    }
}
