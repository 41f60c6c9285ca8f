//! What an apply does: the difference between the running instances and a new config,
//! without I/O. Instances are told apart by name.

use herd_core::config::vrrp::VrrpInstance;

/// The instances of a config grouped as the shell runs them: one group per interface and
/// address family (one raw socket each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub iface: String,
    pub v6: bool,
}

impl GroupKey {
    pub fn of(i: &VrrpInstance) -> GroupKey {
        GroupKey {
            iface: i.interface.clone(),
            v6: i.is_ipv6(),
        }
    }
}

/// The steps of an apply. Removals run before changes and additions, so that a VRID freed by
/// one instance can be taken by another in the same apply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Instances that resign and go: removed from the config, or replaced.
    pub remove: Vec<String>,
    /// Instances that change in place (their role stays).
    pub update: Vec<VrrpInstance>,
    /// Instances that start: new in the config, or replacing one of the same name.
    pub add: Vec<VrrpInstance>,
    /// The names of replaced instances (in both `remove` and `add`).
    pub replaced: Vec<String>,
}

/// Whether an instance's change can be applied in place: the same virtual router on the
/// same interface, family and protocol version. Everything else (priority, interval,
/// preempt, VIPs, peers, auth, hooks, tracking, hand-over and real-server settings) can.
pub(crate) fn in_place(old: &VrrpInstance, new: &VrrpInstance) -> bool {
    old.interface == new.interface
        && old.vrid == new.vrid
        && old.is_ipv6() == new.is_ipv6()
        && old.version == new.version
}

/// The plan from the running instances to a new config's.
pub(crate) fn plan(old: &[VrrpInstance], new: &[VrrpInstance]) -> Plan {
    let mut p = Plan::default();
    for o in old {
        match new.iter().find(|n| n.name == o.name) {
            None => p.remove.push(o.name.clone()),
            Some(n) if !in_place(o, n) => {
                p.remove.push(o.name.clone());
                p.replaced.push(o.name.clone());
            }
            Some(_) => {}
        }
    }
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            Some(o) if in_place(o, n) => {
                if o != n {
                    p.update.push(n.clone());
                }
            }
            _ => p.add.push(n.clone()),
        }
    }
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herd_core::config::vrrp::{Notify, Vip};
    use std::time::Duration;

    pub(crate) fn instance(name: &str, iface: &str, vrid: u8, priority: u8) -> VrrpInstance {
        VrrpInstance {
            name: name.into(),
            interface: iface.into(),
            vrid,
            version: 3,
            priority,
            advert_int: Duration::from_millis(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec![Vip {
                addr: format!("10.0.0.{vrid}").parse().unwrap(),
                prefix: 24,
            }],
            unicast_peers: Vec::new(),
            auth_key_file: None,
            auth_pass: None,
            garp_count: 1,
            garp_interval: Duration::ZERO,
            notify: Notify::default(),
            notify_timeout: Duration::from_secs(5),
            handover_window: Duration::ZERO,
            real_server: false,
            track_interfaces: Vec::new(),
            track_scripts: Vec::new(),
            track_services: Vec::new(),
        }
    }

    fn names(v: &[VrrpInstance]) -> Vec<&str> {
        v.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn an_unchanged_config_plans_nothing() {
        let a = vec![instance("a", "eth0", 1, 100), instance("b", "eth1", 2, 100)];
        assert_eq!(plan(&a, &a), Plan::default());
    }

    #[test]
    fn starting_is_an_apply_from_empty_and_stopping_one_to_empty() {
        let a = vec![instance("a", "eth0", 1, 100), instance("b", "eth1", 2, 100)];
        let up = plan(&[], &a);
        assert_eq!(names(&up.add), ["a", "b"]);
        assert!(up.remove.is_empty() && up.update.is_empty());
        let down = plan(&a, &[]);
        assert_eq!(down.remove, ["a", "b"]);
        assert!(down.add.is_empty() && down.update.is_empty());
    }

    #[test]
    fn changes_in_place_are_updates_and_the_rest_replacements() {
        let old = vec![
            instance("prio", "eth0", 1, 100),
            instance("iface", "eth0", 2, 100),
            instance("vrid", "eth0", 3, 100),
            instance("family", "eth0", 4, 100),
            instance("version", "eth0", 5, 100),
            instance("gone", "eth0", 6, 100),
            instance("same", "eth0", 7, 100),
        ];
        let mut new = old.clone();
        new[0].priority = 50;
        new[0].advert_int = Duration::from_millis(300);
        new[0].vips.push(Vip {
            addr: "10.0.0.200".parse().unwrap(),
            prefix: 24,
        });
        new[1].interface = "eth1".into();
        new[2].vrid = 33;
        new[3].vips = vec![Vip {
            addr: "fd00::4".parse().unwrap(),
            prefix: 64,
        }];
        new[4].version = 2;
        new.remove(5);
        new.push(instance("new", "eth0", 8, 100));
        let p = plan(&old, &new);
        assert_eq!(names(&p.update), ["prio"]);
        assert_eq!(p.update[0].priority, 50);
        assert_eq!(p.replaced, ["iface", "vrid", "family", "version"]);
        assert_eq!(p.remove, ["iface", "vrid", "family", "version", "gone"]);
        assert_eq!(names(&p.add), ["iface", "vrid", "family", "version", "new"]);
    }

    #[test]
    fn instances_are_grouped_by_interface_and_family() {
        let mut v6 = instance("b", "eth0", 2, 100);
        v6.vips[0].addr = "fd00::2".parse().unwrap();
        let k4 = GroupKey::of(&instance("a", "eth0", 1, 100));
        let k6 = GroupKey::of(&v6);
        assert_eq!((k4.iface.as_str(), k4.v6), ("eth0", false));
        assert_eq!((k6.iface.as_str(), k6.v6), ("eth0", true));
        assert_ne!(k4, k6);
    }
}
