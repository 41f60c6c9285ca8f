//! The shell's decisions through a fake [`Io`] that records what a group does: packet
//! dispatch by VRID, a group's part of an apply, the order of actions, tracking weights, and
//! timers on tokio's paused clock.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::config::vrrp::{TrackInterface, TrackScript, Vip, VrrpInstance};
use tokio::sync::{mpsc, oneshot};

use super::group::{Change, Group, GroupCmd};
use super::io::{Datagram, Dev, Io, Watch};
use super::member::Prepared;
use super::plan::tests::instance;
use super::{lock, Board};
use crate::notify;
use crate::packet::{Advert, Malformed, Version, GROUP_V4, TTL};
use crate::state::State;

const LOCAL: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What the group did, one line per call, with the (paused) time in ms since the log began.
#[derive(Debug, Clone)]
struct Log(Arc<Mutex<Vec<(u64, String)>>>, tokio::time::Instant);

impl Log {
    fn new() -> Log {
        Log(Arc::default(), tokio::time::Instant::now())
    }

    fn push(&self, line: String) {
        let ms = self.1.elapsed().as_millis() as u64;
        self.0.lock().unwrap().push((ms, line));
    }

    /// The lines, without times.
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn take(&self) -> Vec<String> {
        let v = self.lines();
        self.0.lock().unwrap().clear();
        v
    }

    /// When the adverts with this priority were sent.
    fn sent_at(&self, what: &str) -> Vec<u64> {
        let v = self.0.lock().unwrap();
        v.iter()
            .filter(|(_, l)| l.starts_with(what))
            .map(|(t, _)| *t)
            .collect()
    }
}

#[derive(Debug)]
struct Fake {
    log: Log,
    packets: mpsc::UnboundedReceiver<Datagram>,
    down: Arc<Mutex<HashSet<String>>>,
    quiet: bool,
}

impl Io for Fake {
    async fn recv(&mut self) -> Vec<Result<Datagram, Malformed>> {
        match self.packets.recv().await {
            Some(d) => vec![Ok(d)],
            None => std::future::pending().await,
        }
    }

    fn send(&self, buf: &[u8], dst: IpAddr) -> std::io::Result<()> {
        let a = Advert::parse(buf, ip(LOCAL), dst).expect("the group sends valid adverts");
        let addrs: Vec<String> = a.addrs.iter().map(|a| a.to_string()).collect();
        self.log.push(format!(
            "send {} prio {} int {} to {dst} [{}]",
            a.vrid,
            a.priority,
            a.interval_cs,
            addrs.join(" ")
        ));
        Ok(())
    }

    async fn add(&self, dev: Dev, vip: Vip) -> std::io::Result<()> {
        self.log.push(format!("add {dev:?} {vip}"));
        Ok(())
    }

    async fn del(&self, dev: Dev, vip: Vip) -> std::io::Result<()> {
        self.log.push(format!("del {dev:?} {vip}"));
        Ok(())
    }

    fn announce(&self, instance: &str, vips: Vec<IpAddr>, _: u32, _: Duration) {
        let vips: Vec<String> = vips.iter().map(|a| a.to_string()).collect();
        self.log
            .push(format!("announce {instance} [{}]", vips.join(" ")));
    }

    async fn hook(&self, command: String, ev: notify::Event, _: Duration, wait: bool) {
        self.log.push(format!(
            "hook {command} {} {} wait={wait}",
            ev.instance, ev.state
        ));
    }

    async fn nft(&self, _script: String) -> std::io::Result<()> {
        self.log.push("nft".into());
        Ok(())
    }

    fn quiet_arp(&mut self) -> std::io::Result<()> {
        self.quiet = true;
        Ok(())
    }

    fn arp_quiet(&self) -> bool {
        self.quiet
    }

    fn release_arp(&mut self) -> std::io::Result<()> {
        self.quiet = false;
        Ok(())
    }

    fn link_up(&self, name: &str) -> bool {
        !self.down.lock().unwrap().contains(name)
    }

    fn watch(&self, instance: &str, script: TrackScript, _: Arc<AtomicBool>) -> Watch {
        self.log
            .push(format!("watch {instance} {}", script.command));
        Watch::default()
    }
}

struct Rig {
    group: Group<Fake>,
    log: Log,
    packets: mpsc::UnboundedSender<Datagram>,
    down: Arc<Mutex<HashSet<String>>>,
    board: Board,
}

fn rig() -> Rig {
    let log = Log::new();
    let (packets, rx) = mpsc::unbounded_channel();
    let down = Arc::new(Mutex::new(HashSet::new()));
    let fake = Fake {
        log: log.clone(),
        packets: rx,
        down: down.clone(),
        quiet: false,
    };
    let board = Board::default();
    let group = Group::new(
        "eth0".into(),
        2,
        ip(LOCAL),
        fake,
        Default::default(),
        board.clone(),
    );
    Rig {
        group,
        log,
        packets,
        down,
        board,
    }
}

fn prepared(i: &VrrpInstance) -> Prepared {
    Prepared {
        cfg: i.clone(),
        key: None,
    }
}

/// An advert from `src` as the raw socket hands it over.
fn datagram(src: &str, vrid: u8, priority: u8, interval_cs: u16) -> Datagram {
    let adv = Advert {
        version: Version::V3,
        vrid,
        priority,
        interval_cs,
        addrs: vec![ip(&format!("10.0.0.{vrid}"))],
        password: None,
        trailer: None,
    };
    let dst = IpAddr::V4(GROUP_V4);
    Datagram {
        payload: adv.encode(ip(src), dst),
        src: ip(src),
        dst,
        ttl: TTL,
    }
}

fn vip(s: &str) -> Vip {
    Vip {
        addr: ip(s),
        prefix: 24,
    }
}

fn state(r: &Rig, name: &str) -> State {
    r.group.members[r.group.position(name).unwrap()].vm.state()
}

/// A group with instance "a" (VRID 1) that has become master.
async fn master_a(priority: u8) -> Rig {
    let mut r = rig();
    r.group
        .start_members(vec![prepared(&instance("a", "eth0", 1, priority))])
        .await;
    let deadline = r.group.members[0].vm.deadline().unwrap();
    r.group.poll(deadline).await;
    assert_eq!(state(&r, "a"), State::Master);
    r.log.take();
    r
}

#[tokio::test(start_paused = true)]
async fn packets_go_to_the_instance_with_their_vrid() {
    let mut r = rig();
    let a = instance("a", "eth0", 1, 100);
    let b = instance("b", "eth0", 2, 100);
    r.group
        .start_members(vec![prepared(&a), prepared(&b)])
        .await;
    r.group.receive(datagram(PEER, 2, 200, 10)).await;
    let b_ = &r.group.members[1];
    assert_eq!((b_.received, b_.vm.master()), (1, Some(ip(PEER))));
    let a_ = &r.group.members[0];
    assert_eq!((a_.received, a_.vm.master()), (0, None));
    // A VRID no instance has, a wrong TTL, garbage: dropped and counted, nobody hears them.
    r.group.receive(datagram(PEER, 9, 200, 10)).await;
    let mut routed = datagram(PEER, 1, 200, 10);
    routed.ttl = 64;
    r.group.receive(routed).await;
    let mut short = datagram(PEER, 1, 200, 10);
    short.payload.truncate(4);
    r.group.receive(short).await;
    let dropped: Vec<_> = r.group.dropped.iter().map(|(k, v)| (*k, *v)).collect();
    assert!(dropped.contains(&(Malformed::Vrid, 1)), "{dropped:?}");
    assert!(dropped.contains(&(Malformed::Ttl, 1)), "{dropped:?}");
    assert_eq!(dropped.iter().map(|(_, n)| n).sum::<u64>(), 3);
    assert_eq!(r.group.members[0].received, 0);
}

#[tokio::test(start_paused = true)]
async fn unicast_groups_hear_only_their_peers() {
    let mut r = rig();
    let mut a = instance("a", "eth0", 1, 100);
    a.unicast_peers = vec![ip("10.0.0.3")];
    r.group.start_members(vec![prepared(&a)]).await;
    assert_eq!(
        r.group.route(&datagram(PEER, 1, 200, 10)).map(|(i, _)| i),
        Err(Malformed::Peer)
    );
    assert_eq!(
        r.group
            .route(&datagram("10.0.0.3", 1, 200, 10))
            .map(|(i, _)| i),
        Ok(0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_master_sends_then_adds_its_vips_then_announces_them_then_runs_its_hook() {
    let mut r = rig();
    let mut a = instance("a", "eth0", 1, 100);
    a.notify.master = Some("/bin/true".into());
    r.group.start_members(vec![prepared(&a)]).await;
    assert_eq!(
        r.log.take(),
        ["del Iface 10.0.0.1/24", "del Lo 10.0.0.1/32"],
        "what a crashed predecessor left goes first"
    );
    let deadline = r.group.members[0].vm.deadline().unwrap();
    r.group.poll(deadline).await;
    assert_eq!(
        r.log.take(),
        [
            "send 1 prio 100 int 10 to 224.0.0.18 [10.0.0.1]",
            "add Iface 10.0.0.1/24",
            "announce a [10.0.0.1]",
            "hook /bin/true a master wait=false",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_master_changed_in_place_stays_master_and_moves_its_vips_before_it_tells_anyone() {
    let mut r = master_a(100).await;
    let mut a = instance("a", "eth0", 1, 80);
    a.advert_int = Duration::from_millis(300);
    a.vips = vec![vip("10.0.0.7"), vip("10.0.0.8")];
    r.group
        .change(Change {
            update: vec![prepared(&a)],
            ..Change::default()
        })
        .await;
    assert_eq!(state(&r, "a"), State::Master);
    assert_eq!(
        r.log.take(),
        [
            "del Iface 10.0.0.1/24",
            "add Iface 10.0.0.7/24",
            "add Iface 10.0.0.8/24",
            "send 1 prio 80 int 30 to 224.0.0.18 [10.0.0.7 10.0.0.8]",
            "announce a [10.0.0.7 10.0.0.8]",
        ]
    );
    let st = lock(&r.board).by_name["a"].clone();
    assert_eq!(
        (st.state.as_str(), st.priority, st.advert_interval_ms),
        ("master", 80, 300)
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_of_hooks_or_peers_only_sends_nothing_and_keeps_the_role() {
    let mut r = master_a(100).await;
    let mut a = instance("a", "eth0", 1, 100);
    a.notify.backup = Some("/bin/true".into());
    a.unicast_peers = vec![ip(PEER)];
    r.group
        .change(Change {
            update: vec![prepared(&a)],
            ..Change::default()
        })
        .await;
    assert!(r.log.take().is_empty());
    assert_eq!(state(&r, "a"), State::Master);
    // The next advert goes to the new peer.
    let deadline = r.group.members[0].vm.deadline().unwrap();
    r.group.poll(deadline).await;
    assert_eq!(
        r.log.take(),
        ["send 1 prio 100 int 10 to 10.0.0.2 [10.0.0.1]"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_apply_removes_changes_and_adds_in_that_order() {
    let mut r = master_a(100).await;
    let b = instance("b", "eth0", 2, 100);
    r.group.start_members(vec![prepared(&b)]).await;
    r.log.take();
    // "a" goes (its VRID 1 is taken by "c"), "b" changes, "c" starts.
    let mut b2 = b.clone();
    b2.priority = 120;
    let c = instance("c", "eth0", 1, 90);
    r.group
        .change(Change {
            remove: vec!["a".into()],
            update: vec![prepared(&b2)],
            add: vec![prepared(&c)],
            end: false,
        })
        .await;
    assert_eq!(
        r.log.take(),
        [
            // a resigns as on stop, and its VIP goes at once.
            "send 1 prio 0 int 10 to 224.0.0.18 [10.0.0.1]",
            "del Iface 10.0.0.1/24",
            // b is a backup: a new priority is nothing to tell.
            // c starts clean.
            "del Iface 10.0.0.1/24",
            "del Lo 10.0.0.1/32",
        ]
    );
    let names: Vec<_> = r
        .group
        .members
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(r.group.members[0].vm.priority(), 120);
    assert_eq!(state(&r, "c"), State::Backup);
    assert!(
        !lock(&r.board).by_name.contains_key("a"),
        "status forgets a"
    );
}

#[tokio::test(start_paused = true)]
async fn tracking_weights_apply_at_once_when_they_change() {
    let mut r = master_a(100).await;
    r.down.lock().unwrap().insert("eth1".into());
    let mut a = instance("a", "eth0", 1, 100);
    a.track_interfaces = vec![TrackInterface {
        name: "eth1".into(),
        weight: -30,
    }];
    let apply = |a: &VrrpInstance| Change {
        update: vec![prepared(a)],
        ..Change::default()
    };
    r.group.change(apply(&a)).await;
    assert_eq!(r.group.members[0].vm.priority(), 70);
    assert_eq!(
        r.log.take(),
        ["send 1 prio 70 int 10 to 224.0.0.18 [10.0.0.1]"]
    );
    a.track_interfaces[0].weight = -60;
    r.group.change(apply(&a)).await;
    assert_eq!(
        r.log.take(),
        ["send 1 prio 40 int 10 to 224.0.0.18 [10.0.0.1]"]
    );
    // The tracking round agrees, and the interface coming back restores the priority.
    r.group.track().await;
    assert!(r.log.take().is_empty());
    r.down.lock().unwrap().clear();
    r.group.track().await;
    assert_eq!(
        r.log.take(),
        ["send 1 prio 100 int 10 to 224.0.0.18 [10.0.0.1]"]
    );
    // Weight 0: a failing object means fault, and a master in fault resigns.
    r.down.lock().unwrap().insert("eth1".into());
    a.track_interfaces[0].weight = 0;
    r.group.change(apply(&a)).await;
    assert_eq!(state(&r, "a"), State::Fault);
    assert_eq!(
        r.log.take(),
        [
            "send 1 prio 0 int 10 to 224.0.0.18 [10.0.0.1]",
            "del Iface 10.0.0.1/24"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn changed_track_scripts_restart_and_unchanged_ones_keep_running() {
    let mut r = master_a(100).await;
    let script = |command: &str| TrackScript {
        command: command.into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        weight: -10,
        fall: 1,
        rise: 1,
    };
    let mut a = instance("a", "eth0", 1, 100);
    a.track_scripts = vec![script("check-one")];
    let apply = |a: &VrrpInstance| Change {
        update: vec![prepared(a)],
        ..Change::default()
    };
    r.group.change(apply(&a)).await;
    assert_eq!(r.log.take(), ["watch a check-one"]);
    a.priority = 110;
    r.group.change(apply(&a)).await;
    assert_eq!(
        r.log.take(),
        ["send 1 prio 110 int 10 to 224.0.0.18 [10.0.0.1]"]
    );
    a.track_scripts = vec![script("check-two")];
    r.group.change(apply(&a)).await;
    assert_eq!(r.log.take(), ["watch a check-two"]);
}

#[tokio::test(start_paused = true)]
async fn real_server_switched_on_and_off_in_place() {
    let mut r = rig();
    let a = instance("a", "eth0", 1, 100);
    r.group.start_members(vec![prepared(&a)]).await;
    r.log.take();
    let mut on = a.clone();
    on.real_server = true;
    r.group
        .change(Change {
            update: vec![prepared(&on)],
            ..Change::default()
        })
        .await;
    assert_eq!(r.log.take(), ["add Lo 10.0.0.1/32"]);
    assert!(r.group.io.arp_quiet());
    r.group
        .change(Change {
            update: vec![prepared(&a)],
            ..Change::default()
        })
        .await;
    assert_eq!(r.log.take(), ["del Lo 10.0.0.1/32"]);
    assert!(!r.group.io.arp_quiet());
}

/// The group's task on the paused clock: it becomes master after the master-down interval,
/// advertises every interval, and after an apply every new interval.
#[tokio::test(start_paused = true)]
async fn the_advert_timer_follows_an_applied_interval() {
    let r = rig();
    let (log, packets) = (r.log.clone(), r.packets.clone());
    let mut group = r.group;
    group
        .start_members(vec![prepared(&instance("a", "eth0", 1, 100))])
        .await;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(group.run(rx));
    // A master of higher priority holds it back for a second.
    for _ in 0..10 {
        packets.send(datagram(PEER, 1, 200, 10)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.sent_at("send").is_empty());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sent = log.sent_at("send 1 prio 100 int 10");
    assert!(sent.len() >= 5, "a master now: {sent:?}");
    assert!(sent.windows(2).all(|w| w[1] - w[0] == 100), "{sent:?}");
    let mut a = instance("a", "eth0", 1, 100);
    a.advert_int = Duration::from_millis(250);
    let (done, applied) = oneshot::channel();
    let change = Change {
        update: vec![prepared(&a)],
        ..Change::default()
    };
    tx.send(GroupCmd::Change(change, done)).unwrap();
    applied.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sent = log.sent_at("send 1 prio 100 int 25");
    assert!(sent.len() >= 4, "{sent:?}");
    assert!(sent.windows(2).all(|w| w[1] - w[0] == 250), "{sent:?}");
    // Finish ends the task.
    let (done, finished) = oneshot::channel();
    tx.send(GroupCmd::Finish(done)).unwrap();
    finished.await.unwrap();
    task.await.unwrap();
    assert!(log.lines().iter().any(|l| l == "add Iface 10.0.0.1/24"));
}

#[tokio::test(start_paused = true)]
async fn failover_of_a_backup_names_its_state() {
    let mut r = rig();
    r.group
        .start_members(vec![prepared(&instance("a", "eth0", 1, 100))])
        .await;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.group.run(rx));
    let (reply, answer) = oneshot::channel();
    tx.send(GroupCmd::Failover(vec!["a".into()], reply))
        .unwrap();
    let e = answer.await.unwrap().unwrap_err();
    assert_eq!(e.to_string(), "vrrp instance a is backup, not master");
    drop(tx);
    task.await.unwrap();
}
