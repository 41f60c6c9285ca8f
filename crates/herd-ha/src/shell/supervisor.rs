//! The VRRP thread's supervisor: it holds the running config, applies new ones (preparing
//! everything that can fail before it changes anything) and routes commands to the groups
//! that hold the named instances.

use std::collections::{HashMap, HashSet};

use herd_core::config::vrrp::{VrrpConfig, VrrpInstance};
use tokio::sync::{mpsc, oneshot};

use super::group::{Change, Failing, Group, GroupCmd};
use super::io::{Opened, Sys};
use super::member::Prepared;
use super::plan::{plan, GroupKey, Plan};
use super::{lock, Applied, Board};
use crate::auth::Key;
use crate::netlink::Netlink;
use crate::HaError;

/// What the [`super::Ha`] handle asks of the VRRP thread.
#[derive(Debug)]
pub(crate) enum Cmd {
    Apply(
        Box<VrrpConfig>,
        std::sync::mpsc::SyncSender<Result<Applied, HaError>>,
    ),
    Failover(Vec<String>, oneshot::Sender<Result<Vec<String>, HaError>>),
    Resume(Vec<String>, oneshot::Sender<Result<Vec<String>, HaError>>),
    /// Masters resign; VIPs are parked for the hand-over window.
    Stop(oneshot::Sender<()>),
    /// After [`Cmd::Stop`]: the parked VIPs go, the thread ends.
    Finish(oneshot::Sender<()>),
}

/// A running group, seen from the supervisor.
#[derive(Debug)]
struct Handle {
    key: GroupKey,
    tx: mpsc::UnboundedSender<GroupCmd>,
    names: Vec<String>,
}

impl Handle {
    /// Sends a command and waits for the group's answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> GroupCmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }
}

/// What an apply has read and opened before it changes anything.
struct Ready {
    update: Vec<Prepared>,
    add: Vec<Prepared>,
    opened: Vec<(GroupKey, Opened)>,
}

#[derive(Debug)]
pub(crate) struct Supervisor {
    /// Opened with the first group.
    nl: Option<Netlink>,
    groups: Vec<Handle>,
    running: Vec<VrrpInstance>,
    /// The bytes of each running instance's auth key, to notice a changed key file.
    secrets: HashMap<String, Vec<u8>>,
    board: Board,
    failing: Failing,
}

impl Supervisor {
    pub fn new(board: Board, failing: Failing) -> Supervisor {
        Supervisor {
            nl: None,
            groups: Vec::new(),
            running: Vec::new(),
            secrets: HashMap::new(),
            board,
            failing,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Apply(cfg, reply) => {
                    let _ = reply.send(self.apply(*cfg).await);
                }
                Cmd::Stop(done) => {
                    self.broadcast(GroupCmd::Stop).await;
                    let _ = done.send(());
                }
                Cmd::Finish(done) => {
                    self.broadcast(GroupCmd::Finish).await;
                    let _ = done.send(());
                    return;
                }
                Cmd::Failover(names, reply) => {
                    let _ = reply.send(self.route(names, true).await);
                }
                Cmd::Resume(names, reply) => {
                    let _ = reply.send(self.route(names, false).await);
                }
            }
        }
        // The handle went without a stop: resign as on one.
        self.broadcast(GroupCmd::Stop).await;
        self.broadcast(GroupCmd::Finish).await;
    }

    /// Sends a command to every group and waits for each to answer.
    async fn broadcast(&self, make: fn(oneshot::Sender<()>) -> GroupCmd) {
        for g in &self.groups {
            g.ask(make).await;
        }
    }

    /// Failover or resume of the named instances (all if none is named).
    async fn route(&self, names: Vec<String>, failover: bool) -> Result<Vec<String>, HaError> {
        if self.running.is_empty() {
            return Err(HaError::NoInstances);
        }
        if let Some(bad) = names
            .iter()
            .find(|n| !self.groups.iter().any(|g| g.names.contains(n)))
        {
            return Err(HaError::NoInstance(bad.clone()));
        }
        let mut done = Vec::new();
        let mut failed = None;
        for g in &self.groups {
            // An empty list means every instance.
            let mine: Vec<String> = names
                .iter()
                .filter(|n| g.names.contains(n))
                .cloned()
                .collect();
            if !names.is_empty() && mine.is_empty() {
                continue;
            }
            let answer = if failover {
                g.ask(|t| GroupCmd::Failover(mine, t)).await
            } else {
                g.ask(|t| GroupCmd::Resume(mine, t)).await
            };
            match answer {
                Some(Ok(v)) => done.extend(v),
                Some(Err(e)) => failed = Some(e),
                None => {}
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// From the running instances to `cfg`'s: everything that can fail first (key files,
    /// interfaces, sockets), then the changes, which cannot.
    async fn apply(&mut self, cfg: VrrpConfig) -> Result<Applied, HaError> {
        let plan = plan(&self.running, &cfg.instances);
        let ready = self.prepare(&plan, &cfg).await?;
        Ok(self.commit(plan, ready, cfg).await)
    }

    async fn prepare(&mut self, plan: &Plan, cfg: &VrrpConfig) -> Result<Ready, HaError> {
        let mut update = plan
            .update
            .iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        // Unchanged instances read their key files again: a new key applies too.
        for i in &cfg.instances {
            let listed = |v: &[VrrpInstance]| v.iter().any(|u| u.name == i.name);
            if i.auth_key_file.is_none() || listed(&plan.update) || listed(&plan.add) {
                continue;
            }
            let p = prepare(i)?;
            if p.key.as_ref().map(|k| &k.1) != self.secrets.get(&i.name) {
                update.push(p);
            }
        }
        let add = plan
            .add
            .iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let mut opened: Vec<(GroupKey, Opened)> = Vec::new();
        for p in &add {
            let key = GroupKey::of(&p.cfg);
            if self.groups.iter().any(|g| g.key == key) || opened.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let vips: Vec<_> = add
                .iter()
                .filter(|q| GroupKey::of(&q.cfg) == key)
                .flat_map(|q| q.cfg.vips.iter().map(|v| v.addr))
                .collect();
            let nl = self.netlink()?;
            let o = Sys::open(&nl, &key.iface, key.v6, &vips).await?;
            opened.push((key, o));
        }
        Ok(Ready {
            update,
            add,
            opened,
        })
    }

    fn netlink(&mut self) -> Result<Netlink, HaError> {
        if let Some(nl) = &self.nl {
            return Ok(nl.clone());
        }
        let nl = Netlink::connect().map_err(HaError::Netlink)?;
        self.nl = Some(nl.clone());
        Ok(nl)
    }

    /// The changes of an apply, which cannot fail: removals and changes in place in the
    /// running groups, then additions to them, then new groups.
    async fn commit(&mut self, plan: Plan, ready: Ready, cfg: VrrpConfig) -> Applied {
        let after: HashSet<GroupKey> = cfg.instances.iter().map(GroupKey::of).collect();
        for g in &self.groups {
            let change = Change {
                remove: plan
                    .remove
                    .iter()
                    .filter(|n| g.names.contains(n))
                    .cloned()
                    .collect(),
                update: in_group(&ready.update, &g.key),
                add: Vec::new(),
                end: !after.contains(&g.key),
            };
            if !(change.remove.is_empty() && change.update.is_empty() && !change.end) {
                g.ask(|t| GroupCmd::Change(change, t)).await;
            }
        }
        self.groups.retain(|g| after.contains(&g.key));
        for g in &self.groups {
            let add = in_group(&ready.add, &g.key);
            if !add.is_empty() {
                let change = Change {
                    add,
                    ..Change::default()
                };
                g.ask(|t| GroupCmd::Change(change, t)).await;
            }
        }
        for (key, o) in ready.opened {
            let (tx, rx) = mpsc::unbounded_channel();
            let iface = key.iface.clone();
            let mut g = Group::new(
                iface,
                o.index,
                o.local,
                o.sys,
                self.failing.clone(),
                self.board.clone(),
            );
            g.start_members(in_group(&ready.add, &key)).await;
            g.publish();
            tokio::spawn(g.run(rx));
            self.groups.push(Handle {
                key,
                tx,
                names: Vec::new(),
            });
        }
        for g in &mut self.groups {
            g.names = cfg
                .instances
                .iter()
                .filter(|i| GroupKey::of(i) == g.key)
                .map(|i| i.name.clone())
                .collect();
        }
        lock(&self.board).order = cfg.instances.iter().map(|i| i.name.clone()).collect();
        for p in ready.update.iter().chain(&ready.add) {
            match &p.key {
                Some((_, secret)) => self.secrets.insert(p.cfg.name.clone(), secret.clone()),
                None => self.secrets.remove(&p.cfg.name),
            };
        }
        self.secrets
            .retain(|name, _| cfg.instances.iter().any(|i| i.name == *name));
        self.running = cfg.instances;
        applied(plan, &ready.update)
    }
}

/// The prepared instances that belong to a group.
fn in_group(v: &[Prepared], key: &GroupKey) -> Vec<Prepared> {
    v.iter()
        .filter(|p| GroupKey::of(&p.cfg) == *key)
        .cloned()
        .collect()
}

/// What an apply did, by instance name.
fn applied(plan: Plan, update: &[Prepared]) -> Applied {
    let replaced = plan.replaced;
    let fresh = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !replaced.contains(n))
            .collect()
    };
    Applied {
        added: fresh(plan.add.into_iter().map(|i| i.name).collect()),
        removed: fresh(plan.remove),
        changed: update.iter().map(|p| p.cfg.name.clone()).collect(),
        replaced,
    }
}

/// Reads what an instance needs from files (its auth key).
fn prepare(cfg: &VrrpInstance) -> Result<Prepared, HaError> {
    let key = match &cfg.auth_key_file {
        Some(path) => {
            let secret = std::fs::read(path).map_err(|source| HaError::KeyFile {
                instance: cfg.name.clone(),
                path: path.clone(),
                source,
            })?;
            let secret = secret.trim_ascii();
            if secret.len() < 16 {
                return Err(HaError::ShortKey {
                    instance: cfg.name.clone(),
                    path: path.clone(),
                });
            }
            Some((Key::new(secret), secret.to_vec()))
        }
        None => None,
    };
    Ok(Prepared {
        cfg: cfg.clone(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::plan::tests::instance;

    fn key_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("herd-ha-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[tokio::test(start_paused = true)]
    async fn an_apply_that_cannot_read_a_key_changes_nothing_and_says_why() {
        let mut s = Supervisor::new(Board::default(), Failing::default());
        let mut a = instance("a", "eth0", 1, 100);
        let short = key_file("short", b"  too short \n");
        a.auth_key_file = Some(short.clone());
        let cfg = VrrpConfig {
            instances: vec![a.clone()],
        };
        let e = s.apply(cfg).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "vrrp instance a: auth-key-file {} holds fewer than 16 bytes",
                short.display()
            )
        );
        let missing = std::env::temp_dir().join("herd-ha-no-such-key");
        a.auth_key_file = Some(missing.clone());
        let e = s
            .apply(VrrpConfig { instances: vec![a] })
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "vrrp instance a: auth-key-file {}: ",
                missing.display()
            )),
            "{e}"
        );
        assert!(s.running.is_empty() && s.groups.is_empty() && s.nl.is_none());
        std::fs::remove_file(short).unwrap();
    }

    #[test]
    fn a_key_file_is_read_and_trimmed() {
        let mut a = instance("a", "eth0", 1, 100);
        let p = key_file("good", b"0123456789abcdef\n");
        a.auth_key_file = Some(p.clone());
        let prepared = prepare(&a).unwrap();
        assert_eq!(prepared.key.unwrap().1, b"0123456789abcdef");
        std::fs::remove_file(p).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn commands_without_instances_say_so() {
        let s = Supervisor::new(Board::default(), Failing::default());
        let e = s.route(Vec::new(), true).await.unwrap_err();
        assert_eq!(e.to_string(), "no vrrp instances are configured");
    }

    #[test]
    fn what_an_apply_did_names_replacements_once() {
        let old = vec![instance("a", "eth0", 1, 100), instance("b", "eth0", 2, 100)];
        let mut new = vec![instance("a", "eth1", 1, 100), instance("c", "eth0", 3, 100)];
        new.push(instance("d", "eth0", 4, 100));
        let p = plan(&old, &new);
        let update = vec![Prepared {
            cfg: instance("x", "eth0", 9, 100),
            key: None,
        }];
        assert_eq!(
            applied(p, &update),
            Applied {
                added: vec!["c".into(), "d".into()],
                changed: vec!["x".into()],
                replaced: vec!["a".into()],
                removed: vec!["b".into()],
            }
        );
    }
}
