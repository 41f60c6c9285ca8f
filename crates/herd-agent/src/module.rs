//! The sync modules an agent serves (`[sync.module.*]`): who may pull from or push into each,
//! and how many transfers each serves at once. A reload swaps the table.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use herd_core::config::cluster::ClusterConfig;
use herd_core::config::sync::SyncModule;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pki::Identity;

/// Why a module cannot serve a transfer (each text is what the peer is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("{node} has no module {name:?}")]
    Unknown { node: String, name: String },
    /// `what`: "pull" or "push into"; `why`: "" or " (it is read-only)".
    #[error("refused: {who:?} ({role} certificate) may not {what} module {name:?}{why}")]
    Refused {
        who: String,
        role: crate::pki::Role,
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("module {name:?} is busy: {max} transfers at once (max-connections); try later")]
    Busy { name: String, max: usize },
}

#[derive(Debug, Default)]
pub struct Table {
    /// For the node sets and groups the access lists name.
    cluster: ClusterConfig,
    modules: BTreeMap<String, Served>,
}

#[derive(Debug)]
struct Served {
    module: SyncModule,
    /// `max-connections`, when there is one.
    slots: Option<Arc<Semaphore>>,
}

/// The table, shared by the agent's connections and replaced on reload.
pub type Modules = Arc<RwLock<Table>>;

/// A module opened for one transfer: its settings, and its slot while the transfer runs.
#[derive(Debug)]
pub struct Open {
    pub module: SyncModule,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Table {
    pub fn new(cluster: &ClusterConfig, modules: &[SyncModule]) -> Table {
        let mut t = Table::default();
        t.update(cluster, modules);
        t
    }

    /// The new config's modules; a module whose limit is unchanged keeps its slots (and the
    /// transfers running in them).
    pub fn update(&mut self, cluster: &ClusterConfig, modules: &[SyncModule]) {
        let mut old = std::mem::take(&mut self.modules);
        self.cluster = cluster.clone();
        for m in modules {
            let slots = match old.remove(&m.name) {
                Some(s) if s.module.max_connections == m.max_connections => s.slots,
                _ => (m.max_connections > 0).then(|| Arc::new(Semaphore::new(m.max_connections))),
            };
            self.modules.insert(
                m.name.clone(),
                Served {
                    module: m.clone(),
                    slots,
                },
            );
        }
    }

    pub fn modules(&self) -> impl Iterator<Item = &SyncModule> {
        self.modules.values().map(|s| &s.module)
    }

    pub fn cluster(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// Module `name` for a transfer by `id` (`write`: a push into it), or why not.
    pub fn open(
        &self,
        name: &str,
        id: &Identity,
        write: bool,
        node: &str,
    ) -> Result<Open, ModuleError> {
        let Some(s) = self.modules.get(name) else {
            return Err(ModuleError::Unknown {
                node: node.to_string(),
                name: name.to_string(),
            });
        };
        if !s
            .module
            .permits(&self.cluster, &id.name, id.role.as_str(), write)
        {
            let what = if write { "push into" } else { "pull" };
            let why = if write && s.module.read_only {
                " (it is read-only)"
            } else {
                ""
            };
            return Err(ModuleError::Refused {
                who: id.name.clone(),
                role: id.role,
                what,
                name: name.to_string(),
                why,
            });
        }
        let slot = match &s.slots {
            None => None,
            Some(sem) => Some(
                sem.clone()
                    .try_acquire_owned()
                    .map_err(|_| ModuleError::Busy {
                        name: name.to_string(),
                        max: s.module.max_connections,
                    })?,
            ),
        };
        Ok(Open {
            module: s.module.clone(),
            _slot: slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Role;
    use std::path::PathBuf;

    fn id(name: &str, role: Role) -> Identity {
        Identity {
            name: name.into(),
            role,
            serial: "01".into(),
            not_after: i64::MAX,
        }
    }

    fn module(max: usize) -> SyncModule {
        SyncModule {
            name: "www".into(),
            path: PathBuf::from("/srv/www"),
            read_only: true,
            allow: vec!["node[1-2]".into()],
            write: Vec::new(),
            max_connections: max,
            exclude: Vec::new(),
            schedule: None,
        }
    }

    #[test]
    fn slots_limit_transfers_and_survive_a_reload_with_the_same_limit() {
        let cluster = ClusterConfig::default();
        let mut t = Table::new(&cluster, &[module(1)]);
        let n1 = id("node1", Role::Node);
        let first = t.open("www", &n1, false, "me").unwrap();
        let busy = t.open("www", &n1, false, "me").unwrap_err().to_string();
        assert!(busy.contains("busy"), "{busy}");
        // A reload with the same limit keeps the transfer's slot taken.
        t.update(&cluster, &[module(1)]);
        assert!(t.open("www", &n1, false, "me").is_err());
        drop(first);
        let again = t.open("www", &n1, false, "me").unwrap();
        drop(again);
        // Who may: the list, admins; not others, not for writing a read-only module.
        let e = t
            .open("www", &id("node3", Role::Node), false, "me")
            .unwrap_err()
            .to_string();
        assert!(e.contains("may not pull"), "{e}");
        assert!(t
            .open("www", &id("alice", Role::Admin), false, "me")
            .is_ok());
        let e = t.open("www", &n1, true, "me").unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        let e = t.open("nope", &n1, false, "me").unwrap_err().to_string();
        assert_eq!(e, "me has no module \"nope\"");
        // No limit: any number at once.
        t.update(&cluster, &[module(0)]);
        let held: Vec<_> = (0..5)
            .map(|_| t.open("www", &n1, false, "me").unwrap())
            .collect();
        assert_eq!(held.len(), 5);
    }
}
