//! `[sync.module.NAME]`: trees a node serves to `herd sync pull`, and pull schedules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::cluster::ClusterConfig;
use super::error::{ConfigError, Lines};
use super::values::{duration, format_duration, RawDuration};

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSync {
    pub fanout: Option<Spanned<i64>>,
    #[serde(default)]
    pub module: BTreeMap<String, RawModule>,
}

pub(super) fn fanout(
    l: &Lines<'_>,
    raw: Option<&RawSync>,
    errs: &mut Vec<ConfigError>,
) -> Option<usize> {
    let n = raw?.fanout.as_ref()?;
    match usize::try_from(*n.get_ref()) {
        Ok(v) if (1..=65_536).contains(&v) => Some(v),
        _ => {
            errs.push(l.err(Some(n), "sync.fanout", "out of range 1..=65536"));
            None
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawModule {
    pub path: Spanned<String>,
    pub read_only: Option<bool>,
    pub allow: Option<Spanned<Vec<String>>>,
    pub write: Option<Spanned<Vec<String>>>,
    pub max_connections: Option<Spanned<i64>>,
    pub exclude: Option<Vec<String>>,
    pub schedule: Option<RawSchedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSchedule {
    pub from: Spanned<String>,
    pub nodes: Spanned<String>,
    pub every: Spanned<RawDuration>,
    pub dest: Option<Spanned<String>>,
    #[serde(default)]
    pub delete: bool,
}

fn module_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// An absolute path without `..`.
fn abs_path(p: &str) -> bool {
    let p = std::path::Path::new(p);
    p.is_absolute()
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

pub(super) fn validate(
    l: &Lines<'_>,
    raw: Option<&RawSync>,
    cluster: &ClusterConfig,
    errs: &mut Vec<ConfigError>,
) -> Vec<SyncModule> {
    let mut out = Vec::new();
    for (name, m) in raw.map(|r| &r.module).into_iter().flatten() {
        let key = |k: &str| format!("sync.module.{name}.{k}");
        if !module_name_ok(name) {
            errs.push(l.err(
                Some(&m.path),
                format!("sync.module.{name:?}"),
                "a module name is letters, digits, '.', '_' and '-'",
            ));
        }
        if !abs_path(m.path.get_ref()) {
            errs.push(l.err(Some(&m.path), key("path"), "an absolute path without '..'"));
        }
        let access = |v: &Option<Spanned<Vec<String>>>, k: &str, errs: &mut Vec<ConfigError>| {
            let Some(list) = v else {
                return Vec::new();
            };
            for e in list.get_ref() {
                let bad = match e.strip_prefix("role:") {
                    Some(r) if ["admin", "node", "read-only"].contains(&r) => None,
                    Some(r) => Some(format!("{r:?} is not a role (admin, node, read-only)")),
                    None => cluster.resolve(e).err().map(|e| e.to_string()),
                };
                if let Some(why) = bad {
                    errs.push(l.err(Some(list), key(k), why));
                }
            }
            list.get_ref().clone()
        };
        let allow = access(&m.allow, "allow", errs);
        let write = access(&m.write, "write", errs);
        let read_only = m.read_only.unwrap_or(true);
        if read_only && !write.is_empty() {
            errs.push(l.err(
                m.write.as_ref(),
                key("write"),
                "the module is read-only (read-only = false lets these push into it)",
            ));
        }
        let max_connections = match &m.max_connections {
            None => 0,
            Some(n) if (0..=65_536).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                errs.push(l.err(
                    Some(n),
                    key("max-connections"),
                    "out of range 0..=65536 (0: no limit)",
                ));
                0
            }
        };
        let schedule = m
            .schedule
            .as_ref()
            .map(|s| schedule(l, name, s, cluster, errs));
        out.push(SyncModule {
            name: name.clone(),
            path: PathBuf::from(m.path.get_ref()),
            read_only,
            allow,
            write,
            max_connections,
            exclude: m.exclude.clone().unwrap_or_default(),
            schedule,
        });
    }
    out
}

/// `[sync.module.NAME.schedule]`.
fn schedule(
    l: &Lines<'_>,
    name: &str,
    s: &RawSchedule,
    cluster: &ClusterConfig,
    errs: &mut Vec<ConfigError>,
) -> PullSchedule {
    let key = |k: &str| format!("sync.module.{name}.{k}");
    if s.from.get_ref().is_empty() {
        errs.push(l.err(
            Some(&s.from),
            key("schedule.from"),
            "the node serving the module",
        ));
    }
    if let Err(e) = cluster.resolve(s.nodes.get_ref()) {
        errs.push(l.err(Some(&s.nodes), key("schedule.nodes"), e.to_string()));
    }
    let every = match duration(&s.every) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => d,
        Ok(_) => {
            errs.push(l.err(Some(&s.every), key("schedule.every"), "at least 1s"));
            std::time::Duration::from_secs(1)
        }
        Err(e) => {
            errs.push(l.err(Some(&s.every), key("schedule.every"), e));
            std::time::Duration::from_secs(300)
        }
    };
    if let Some(d) = &s.dest {
        if !abs_path(d.get_ref()) {
            errs.push(l.err(
                Some(d),
                key("schedule.dest"),
                "an absolute path without '..'",
            ));
        }
    }
    PullSchedule {
        from: s.from.get_ref().clone(),
        nodes: s.nodes.get_ref().clone(),
        every,
        dest: s.dest.as_ref().map(|d| PathBuf::from(d.get_ref())),
        delete: s.delete,
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct SyncOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    fanout: Option<usize>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    module: BTreeMap<String, ModuleOut>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ModuleOut {
    path: String,
    read_only: bool,
    allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    write: Vec<String>,
    max_connections: usize,
    exclude: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleOut>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ScheduleOut {
    from: String,
    nodes: String,
    every: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dest: Option<String>,
    delete: bool,
}

pub(super) fn sync_out(modules: &[SyncModule], fanout: Option<usize>) -> Option<SyncOut> {
    if modules.is_empty() && fanout.is_none() {
        return None;
    }
    Some(SyncOut {
        fanout,
        module: modules
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    ModuleOut {
                        path: m.path.display().to_string(),
                        read_only: m.read_only,
                        allow: m.allow.clone(),
                        write: m.write.clone(),
                        max_connections: m.max_connections,
                        exclude: m.exclude.clone(),
                        schedule: m.schedule.as_ref().map(|s| ScheduleOut {
                            from: s.from.clone(),
                            nodes: s.nodes.clone(),
                            every: format_duration(s.every),
                            dest: s.dest.as_ref().map(|d| d.display().to_string()),
                            delete: s.delete,
                        }),
                    },
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const NODES: &str =
        "[nodes]\n\"node[1-4]\" = \"127.0.9.[1-4]\"\n[groups]\nweb = \"node[1-3]\"\n";

    #[test]
    fn modules_parse_check_access_and_round_trip() {
        let src = format!(
            "{NODES}[sync]\nfanout = 4\n[sync.module.www]\npath = \"/srv/www\"\nallow = [\"@web\", \"role:read-only\"]\n\
             exclude = [\"*.tmp\"]\n[sync.module.www.schedule]\nfrom = \"node1\"\nnodes = \"@web\"\n\
             every = \"5m\"\ndelete = true\n[sync.module.up]\npath = \"/srv/up\"\nread-only = false\n\
             write = [\"node4\"]\n"
        );
        let cfg = Config::parse("t.toml", &src).unwrap();
        let m = &cfg.sync_modules;
        assert_eq!(m.len(), 2);
        let (up, www) = (&m[0], &m[1]);
        assert_eq!(www.schedule.as_ref().unwrap().every.as_secs(), 300);
        let c = &cfg.cluster;
        assert!(www.permits(c, "node2", "node", false));
        assert!(!www.permits(c, "node4", "node", false));
        assert!(www.permits(c, "anyone", "read-only", false));
        // A node set names nodes, not other certificates that carry a node's name.
        assert!(!up.permits(c, "node4", "read-only", true));
        assert!(www.permits(c, "admin", "admin", true));
        assert!(!www.permits(c, "node2", "node", true), "read-only module");
        assert!(up.permits(c, "node4", "node", true));
        assert!(!up.permits(c, "node3", "node", true));
        assert_eq!(cfg.sync_fanout, Some(4));
        let again = Config::parse("out.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.sync_modules, cfg.sync_modules);
        assert_eq!(again.sync_fanout, Some(4));
    }

    #[test]
    fn bad_modules_are_named_with_their_line() {
        let cases = [
            ("[sync.module.w]\npath = \"srv\"\n", "t.toml:6: sync.module.w.path: an absolute path"),
            (
                "[sync.module.w]\npath = \"/srv\"\nallow = [\"@nope\"]\n",
                "sync.module.w.allow",
            ),
            (
                "[sync.module.w]\npath = \"/srv\"\nallow = [\"role:boss\"]\n",
                "\"boss\" is not a role",
            ),
            (
                "[sync.module.w]\npath = \"/srv\"\nwrite = [\"node1\"]\n",
                "sync.module.w.write: the module is read-only",
            ),
            (
                "[sync.module.w]\npath = \"/srv\"\n[sync.module.w.schedule]\nfrom = \"node1\"\nnodes = \"@web\"\nevery = \"0s\"\n",
                "sync.module.w.schedule.every: at least 1s",
            ),
            ("[sync.module.w]\npath = \"/srv\"\nfoo = 1\n", "unknown field `foo`"),
            ("[sync]\nfanout = 0\n", "t.toml:6: sync.fanout: out of range"),
        ];
        for (text, want) in cases {
            let err = Config::parse("t.toml", &format!("{NODES}{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
