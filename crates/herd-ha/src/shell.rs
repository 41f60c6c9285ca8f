//! The I/O shell around the state machines: raw sockets, timers, netlink, announcements and
//! hooks.
//!
//! VRRP runs on a thread of its own (`herd-vrrp`, a single-threaded runtime), so that API
//! requests, reloads or health history writes on the control thread never delay an advert.
//! Instances are grouped by interface: one raw socket per interface receives every VRRP
//! packet on it and hands each to the instance with its VRID.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_core::api::{TrackStatus, VrrpStatus, VrrpTransition};
use herd_core::config::vrrp::{Vip, VrrpConfig, VrrpInstance};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::announce::Announcer;
use crate::auth::{Key, Replay, Sequence};
use crate::handover::{self, ArpQuiet};
use crate::netlink::{link_up, Link, Netlink};
use crate::notify;
use crate::packet::{
    Advert, Ipv4Header, Malformed, Version, GROUP_V4, GROUP_V6, IPPROTO_VRRP, TTL,
};
use crate::state::{Action, Instance, Params, Reason, State};

/// How often tracked interfaces are looked at.
const TRACK_EVERY: Duration = Duration::from_millis(100);
/// Transitions kept per instance for `herd ha status`.
const KEEP_TRANSITIONS: usize = 20;

type Reply = oneshot::Sender<Result<Vec<String>, String>>;
type Failing = Arc<Mutex<HashSet<String>>>;

#[derive(Debug)]
enum Cmd {
    Failover(Vec<String>, Reply),
    Resume(Vec<String>, Reply),
    /// Masters resign; VIPs are parked for the hand-over window.
    Stop(oneshot::Sender<()>),
    /// After [`Cmd::Stop`]: the parked VIPs go, the thread ends.
    Finish(oneshot::Sender<()>),
}

/// The running VRRP instances.
#[derive(Debug)]
pub struct Ha {
    status: Arc<Mutex<Vec<VrrpStatus>>>,
    /// Tracked services that are failing now, as the daemon last said.
    failing: Failing,
    /// The services some instance tracks.
    tracked: HashSet<String>,
    cmd: mpsc::UnboundedSender<Cmd>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ha {
    /// Opens the sockets of every instance and starts them (as backups, or master for an
    /// address owner). Fails, with nothing started, if an interface is missing, has no address
    /// of the instance's family, or a socket cannot be opened (VRRP needs CAP_NET_RAW and
    /// CAP_NET_ADMIN).
    pub fn start(cfg: &VrrpConfig) -> io::Result<Ha> {
        let status = Arc::new(Mutex::new(Vec::new()));
        let failing = Failing::default();
        let fail = failing.clone();
        let (cmd, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let instances = cfg.instances.clone();
        let tracked = instances
            .iter()
            .flat_map(|i| i.track_services.iter().map(|t| t.name.clone()))
            .collect();
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("herd-vrrp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match setup(instances, st, fail).await {
                        Ok(groups) => {
                            let _ = ready_tx.send(Ok(()));
                            supervise(groups, rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Ha {
                status,
                failing,
                tracked,
                cmd,
                thread: Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("the VRRP thread ended during start-up"))
            }
        }
    }

    pub fn status(&self) -> Vec<VrrpStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The virtual services whose health [`set_failing_services`](Self::set_failing_services)
    /// should report (those of the config VRRP started with).
    pub fn tracked_services(&self) -> &HashSet<String> {
        &self.tracked
    }

    /// The daemon's word on its virtual services: which of them are failing now (the others
    /// pass). Read by `track-service` at the next tracking round.
    pub fn set_failing_services(&self, failing: HashSet<String>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }

    fn ask(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<Vec<String>, String> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .map_err(|_| "VRRP is not running".to_string())?;
        rx.blocking_recv()
            .map_err(|_| "VRRP is not running".to_string())?
    }

    /// Planned hand-over: the named master instances (all masters if none is named) resign and
    /// stand by. Returns the instances that resigned. Blocks; call it off the runtime.
    pub fn failover(&self, names: Vec<String>) -> Result<Vec<String>, String> {
        self.ask(|r| Cmd::Failover(names, r))
    }

    /// Ends the standby of the named instances (all if none is named).
    pub fn resume(&self, names: Vec<String>) -> Result<Vec<String>, String> {
        self.ask(|r| Cmd::Resume(names, r))
    }

    /// Masters resign (priority 0) and stop hooks run. With a hand-over window, a master's
    /// VIPs stay parked on `lo` so that its open connections can drain (see
    /// [`crate::handover`]) until [`finish`](Self::finish) or the window's end; otherwise they
    /// are removed. Blocks; call it off the runtime.
    pub fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// After [`stop`](Self::stop) (and the drain of connections): parked VIPs are removed and
    /// the VRRP thread ends. Blocks; call it off the runtime.
    pub fn finish(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Finish(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// One instance inside its group.
#[derive(Debug)]
struct Member {
    cfg: VrrpInstance,
    vm: Instance,
    key: Option<Key>,
    seq: Sequence,
    replay: Replay,
    password: Option<[u8; 8]>,
    vips: Vec<IpAddr>,
    slot: usize,
    transitions: VecDeque<VrrpTransition>,
    transitions_total: u64,
    sent: u64,
    received: u64,
    /// Our VIPs are on `lo`: for a hand-over, or as a real server.
    parked: Option<Parked>,
    /// Hand-over: strays go to this old master until then.
    forwarding: Option<(IpAddr, Instant)>,
    /// One per `cfg.track_scripts`: passing now.
    scripts: Vec<Arc<AtomicBool>>,
    tracking: Vec<TrackStatus>,
}

/// Why a member's VIPs are on `lo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parked {
    /// A hand-over: the old master's connections drain here until then.
    Until(Instant),
    /// The real-server role: for as long as the instance is backup.
    RealServer,
}

/// The instances of one family on one interface and their socket.
struct Group {
    iface: String,
    link: Link,
    /// The loopback interface's index: where VIPs are parked.
    lo: u32,
    arp: ArpQuiet,
    failing: Failing,
    /// The adverts' source: an IPv4 address of the interface, or its IPv6 link-local one.
    local: IpAddr,
    sock: AsyncFd<Socket>,
    announcer: Arc<Announcer>,
    nl: Netlink,
    members: Vec<Member>,
    dropped: BTreeMap<Malformed, u64>,
    status: Arc<Mutex<Vec<VrrpStatus>>>,
    cmd: mpsc::UnboundedReceiver<Cmd>,
}

fn err(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn open_v4(iface: &str, index: u32, local: std::net::Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW.nonblocking().cloexec(),
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(index))?;
    s.set_multicast_if_v4(&local)?;
    s.set_multicast_ttl_v4(u32::from(TTL))?;
    s.set_ttl_v4(u32::from(TTL))?;
    s.set_multicast_loop_v4(false)?;
    Ok(s)
}

/// The IPv6 socket hands over payloads only: the hop limit and the destination come as
/// control messages ([`crate::ancillary`]).
fn open_v6(iface: &str, index: u32) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW.nonblocking().cloexec(),
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.join_multicast_v6(&GROUP_V6, index)?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(u32::from(TTL))?;
    s.set_unicast_hops_v6(u32::from(TTL))?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_hoplimit_v6(true)?;
    crate::sys::set_recv_pktinfo_v6(&s)?;
    Ok(s)
}

/// The address a group's adverts come from: the interface's first IPv4 address that is not
/// a VIP, or (IPv6, RFC 5798 §5.1.2.1) its link-local address.
fn source_address(iface: &str, link: &Link, v6: bool, vips: &[IpAddr]) -> io::Result<IpAddr> {
    let found = link.addrs.iter().find_map(|(a, _)| match a {
        IpAddr::V4(_) if !v6 && !vips.contains(a) => Some(*a),
        IpAddr::V6(l) if v6 && l.is_unicast_link_local() && !vips.contains(a) => Some(*a),
        _ => None,
    });
    found.ok_or_else(|| {
        let what = if v6 {
            "an IPv6 link-local address (fe80::/10; is IPv6 disabled there, or addr_gen_mode none?)"
        } else {
            "an IPv4 address of its own"
        };
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("interface {iface} has no {what} to send VRRP from"),
        )
    })
}

async fn setup(
    instances: Vec<VrrpInstance>,
    status: Arc<Mutex<Vec<VrrpStatus>>>,
    failing: Failing,
) -> io::Result<Vec<(mpsc::UnboundedSender<Cmd>, Vec<String>)>> {
    let nl = Netlink::connect().map_err(|e| err("netlink", e))?;
    // One group per interface and family.
    let mut by_iface: Vec<(String, bool, Vec<VrrpInstance>)> = Vec::new();
    for i in instances {
        let v6 = i.is_ipv6();
        match by_iface
            .iter_mut()
            .find(|(n, f, _)| *n == i.interface && *f == v6)
        {
            Some((_, _, v)) => v.push(i),
            None => by_iface.push((i.interface.clone(), v6, vec![i])),
        }
    }
    let mut groups = Vec::new();
    let mut slot = 0;
    let mut started = Vec::new();
    for (iface, v6, list) in by_iface {
        let link = nl.link(&iface).await?;
        let vips: Vec<IpAddr> = list
            .iter()
            .flat_map(|i| i.vips.iter().map(|v| v.addr))
            .collect();
        let local = source_address(&iface, &link, v6, &vips)?;
        let sock = match local {
            IpAddr::V4(l) => open_v4(&iface, link.index, l),
            IpAddr::V6(_) => open_v6(&iface, link.index),
        }
        .map_err(|e| err(format!("VRRP socket on {iface}"), e))?;
        let announcer = Announcer::new(link.index, link.mac, !v6, v6).map_err(|e| {
            let what = if v6 { "neighbour advertisement" } else { "ARP" };
            err(format!("{what} socket on {iface}"), e)
        })?;
        let mut members = Vec::new();
        for cfg in list {
            let key = match &cfg.auth_key_file {
                Some(p) => {
                    let secret = std::fs::read(p).map_err(|e| {
                        err(
                            format!("vrrp instance {}: auth-key-file {}", cfg.name, p.display()),
                            e,
                        )
                    })?;
                    let secret = secret.trim_ascii();
                    if secret.len() < 16 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "vrrp instance {}: auth-key-file {} holds fewer than 16 bytes",
                                cfg.name,
                                p.display()
                            ),
                        ));
                    }
                    Some(Key::new(secret))
                }
                None => None,
            };
            let password = cfg.auth_pass.as_ref().map(|p| {
                let mut b = [0u8; 8];
                b[..p.len()].copy_from_slice(p.as_bytes());
                b
            });
            let params = Params {
                vrid: cfg.vrid,
                version: if cfg.version == 2 {
                    Version::V2
                } else {
                    Version::V3
                },
                priority: cfg.priority,
                interval_cs: cfg.interval_cs(),
                preempt: cfg.preempt,
                preempt_delay: cfg.preempt_delay,
            };
            started.push(cfg.name.clone());
            members.push(Member {
                vm: Instance::new(params, local),
                vips: cfg.vips.iter().map(|v| v.addr).collect(),
                key,
                seq: Sequence::default(),
                replay: Replay::default(),
                password,
                slot,
                transitions: VecDeque::new(),
                transitions_total: 0,
                sent: 0,
                received: 0,
                parked: None,
                forwarding: None,
                scripts: cfg
                    .track_scripts
                    .iter()
                    .map(|_| Arc::new(AtomicBool::new(true)))
                    .collect(),
                tracking: Vec::new(),
                cfg,
            });
            slot += 1;
        }
        groups.push((iface, link, local, sock, announcer, members));
    }
    status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .resize_with(slot, || VrrpStatus {
            name: String::new(),
            interface: String::new(),
            vrid: 0,
            version: 3,
            state: "init".into(),
            priority: 0,
            configured_priority: 0,
            standby: false,
            master: None,
            address: String::new(),
            advert_interval_ms: 0,
            vips: Vec::new(),
            transitions: Vec::new(),
            transitions_total: 0,
            adverts_sent: 0,
            adverts_received: 0,
            dropped: BTreeMap::new(),
            handover: None,
            real_server: false,
            tracking: Vec::new(),
        });
    let lo = nl.link("lo").await?.index;
    let mut handles = Vec::new();
    for (iface, link, local, sock, announcer, members) in groups {
        let (tx, rx) = mpsc::unbounded_channel();
        let names = members.iter().map(|m| m.cfg.name.clone()).collect();
        let mut g = Group {
            arp: ArpQuiet::new(&iface),
            iface,
            link,
            lo,
            failing: failing.clone(),
            local,
            sock: crate::sys::register(sock)?,
            announcer: Arc::new(announcer),
            nl: nl.clone(),
            members,
            dropped: BTreeMap::new(),
            status: status.clone(),
            cmd: rx,
        };
        g.begin().await;
        tokio::spawn(g.run());
        handles.push((tx, names));
    }
    tracing::info!(instances = ?started, "vrrp started");
    Ok(handles)
}

/// A VIP as a host address, as it is parked on `lo`.
fn host_route(vip: Vip) -> Vip {
    Vip {
        addr: vip.addr,
        prefix: if vip.addr.is_ipv6() { 128 } else { 32 },
    }
}

/// Sends a command to every group and waits for each to answer.
async fn broadcast(
    groups: &[(mpsc::UnboundedSender<Cmd>, Vec<String>)],
    make: fn(oneshot::Sender<()>) -> Cmd,
) {
    for (tx, _) in groups {
        let (t, r) = oneshot::channel();
        if tx.send(make(t)).is_ok() {
            let _ = r.await;
        }
    }
}

/// Routes commands to the groups that hold the named instances.
async fn supervise(
    groups: Vec<(mpsc::UnboundedSender<Cmd>, Vec<String>)>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    while let Some(cmd) = rx.recv().await {
        let (failover, names, reply) = match cmd {
            Cmd::Stop(done) => {
                broadcast(&groups, Cmd::Stop).await;
                let _ = done.send(());
                continue;
            }
            Cmd::Finish(done) => {
                broadcast(&groups, Cmd::Finish).await;
                let _ = done.send(());
                return;
            }
            Cmd::Failover(names, reply) => (true, names, reply),
            Cmd::Resume(names, reply) => (false, names, reply),
        };
        if let Some(bad) = names
            .iter()
            .find(|n| !groups.iter().any(|(_, have)| have.contains(n)))
        {
            let _ = reply.send(Err(format!("no vrrp instance {bad:?}")));
            continue;
        }
        let mut done = Vec::new();
        let mut failed = None;
        for (tx, have) in &groups {
            // An empty list means every instance.
            let mine: Vec<String> = names.iter().filter(|n| have.contains(n)).cloned().collect();
            if !names.is_empty() && mine.is_empty() {
                continue;
            }
            let (t, r) = oneshot::channel();
            let cmd = if failover {
                Cmd::Failover(mine, t)
            } else {
                Cmd::Resume(mine, t)
            };
            if tx.send(cmd).is_err() {
                continue;
            }
            match r.await {
                Ok(Ok(v)) => done.extend(v),
                Ok(Err(e)) => failed = Some(e),
                Err(_) => {}
            }
        }
        let _ = reply.send(match failed {
            Some(e) => Err(e),
            None => Ok(done),
        });
    }
}

impl Member {
    fn record(&mut self, from: State, to: State, reason: Reason) {
        self.transitions_total += 1;
        if self.transitions.len() == KEEP_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(VrrpTransition {
            at_ms: wall_ms(),
            from: from.as_str().into(),
            to: to.as_str().into(),
            reason: reason.as_str().into(),
        });
    }
}

impl Group {
    /// Start-up: addresses a crashed predecessor may have left are removed first (a backup
    /// must not answer for the VIP), then every instance starts.
    async fn begin(&mut self) {
        // Hand-over tables a crashed predecessor left: one nft run for the whole interface.
        let stale: String = self
            .members
            .iter()
            .filter(|m| !m.cfg.handover_window.is_zero())
            .map(|m| handover::removal(&self.table(m)))
            .collect();
        if !stale.is_empty() {
            if let Err(e) = handover::nft(&stale).await {
                tracing::debug!(interface = %self.iface, "hand-over tables: {e}");
            }
        }
        for i in 0..self.members.len() {
            for vip in self.members[i].cfg.vips.clone() {
                if let Err(e) = self.nl.del(self.link.index, vip).await {
                    tracing::warn!(instance = %self.members[i].cfg.name, "{e}");
                }
                if let Err(e) = self.nl.del(self.lo, host_route(vip)).await {
                    tracing::warn!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
            let m = &self.members[i];
            for (script, passing) in m.cfg.track_scripts.iter().zip(&m.scripts) {
                crate::track::spawn(m.cfg.name.clone(), script.clone(), passing.clone());
            }
            let actions = self.members[i].vm.start(Instant::now());
            self.apply(i, actions).await;
        }
        self.publish();
    }

    async fn run(mut self) {
        let mut track = tokio::time::interval(TRACK_EVERY);
        track.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 4096];
        loop {
            let next = self
                .members
                .iter()
                .filter_map(|m| m.vm.deadline())
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = self.cmd.recv() => match cmd {
                    None => {
                        self.stop().await;
                        self.finish().await;
                        return;
                    }
                    Some(Cmd::Stop(done)) => {
                        self.stop().await;
                        self.publish();
                        let _ = done.send(());
                    }
                    Some(Cmd::Finish(done)) => {
                        self.finish().await;
                        self.publish();
                        let _ = done.send(());
                        return;
                    }
                    Some(Cmd::Failover(names, reply)) => {
                        let r = self.failover(names).await;
                        let _ = reply.send(r);
                    }
                    Some(Cmd::Resume(names, reply)) => {
                        let _ = reply.send(self.resume(&names));
                    }
                },
                _ = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    for i in 0..self.members.len() {
                        let actions = self.members[i].vm.poll(now);
                        self.apply(i, actions).await;
                    }
                }
                r = self.sock.readable() => {
                    let mut packets = Vec::new();
                    let v6 = self.local.is_ipv6();
                    if let Ok(mut guard) = r {
                        // Bounded, so that a flood cannot starve the timers.
                        while packets.len() < 64 {
                            match guard.try_io(|s| read(s.get_ref(), v6, &mut buf)) {
                                Ok(Ok(p)) => packets.push(p),
                                Ok(Err(e)) => {
                                    tracing::warn!(interface = %self.iface, "VRRP receive: {e}");
                                    break;
                                }
                                Err(_would_block) => break,
                            }
                        }
                    }
                    for p in packets {
                        match p {
                            Ok(d) => self.receive(d).await,
                            Err(why) => self.drop_packet(why),
                        }
                    }
                }
                _ = track.tick() => {
                    // Stopped (every instance back in Init), only hand-overs are left.
                    if self.members.iter().any(|m| m.vm.state() != State::Init) {
                        self.track().await;
                    }
                    self.expire(Instant::now()).await;
                }
            }
            self.publish();
        }
    }
}

/// A VRRP packet as the raw socket gave it: the payload and what the IP header said.
#[derive(Debug)]
struct Datagram {
    payload: Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
}

/// Reads one packet. IPv4 raw sockets hand over the IP header; IPv6 ones the payload, with
/// the hop limit and destination as control messages.
fn read(sock: &Socket, v6: bool, buf: &mut [u8]) -> io::Result<Result<Datagram, Malformed>> {
    if !v6 {
        let n = (&mut &*sock).read(buf)?;
        let pkt = &buf[..n];
        return Ok(Ipv4Header::parse(pkt).map(|h| Datagram {
            payload: pkt[h.header_len..h.total_len].to_vec(),
            src: IpAddr::V4(h.src),
            dst: IpAddr::V4(h.dst),
            ttl: h.ttl,
        }));
    }
    let m = crate::sys::recv_msg(sock, buf, crate::ancillary::RECEIVE_SPACE)?;
    if m.truncated {
        return Ok(Err(Malformed::Length));
    }
    let Some(src) = m.from.as_socket_ipv6() else {
        return Ok(Err(Malformed::Short));
    };
    let seen = crate::ancillary::parse(&m.control);
    // Without the kernel's word on the hop limit the routed-packet check cannot be made.
    let (Some(ttl), Some(dst)) = (seen.hop_limit, seen.dst) else {
        return Ok(Err(Malformed::Ttl));
    };
    Ok(Ok(Datagram {
        payload: buf[..m.len].to_vec(),
        src: IpAddr::V6(*src.ip()),
        dst: IpAddr::V6(dst),
        ttl,
    }))
}

impl Group {
    fn drop_packet(&mut self, why: Malformed) {
        *self.dropped.entry(why).or_default() += 1;
    }

    /// One packet from the raw socket.
    async fn receive(&mut self, d: Datagram) {
        if d.ttl != TTL {
            return self.drop_packet(Malformed::Ttl);
        }
        let (src, dst) = (d.src, d.dst);
        let adv = match Advert::parse(&d.payload, src, dst) {
            Ok(a) => a,
            Err(why) => return self.drop_packet(why),
        };
        let Some(i) = self.members.iter().position(|m| m.cfg.vrid == adv.vrid) else {
            return self.drop_packet(Malformed::Vrid);
        };
        let m = &mut self.members[i];
        // IPv6 adverts come from link-local addresses, which `unicast-peers` does not name.
        if src.is_ipv4() && !m.cfg.unicast_peers.is_empty() && !m.cfg.unicast_peers.contains(&src) {
            return self.drop_packet(Malformed::Peer);
        }
        if adv.version != m.vm.params().version {
            return self.drop_packet(Malformed::Version);
        }
        match &m.key {
            Some(key) => match key.verify(&adv, src, dst) {
                Some(seq) if m.replay.accept(src, seq) => {}
                _ => return self.drop_packet(Malformed::Auth),
            },
            None if adv.trailer.is_some() => return self.drop_packet(Malformed::Auth),
            None => {}
        }
        if adv.version == Version::V2 {
            if adv.password != m.password {
                return self.drop_packet(Malformed::Auth);
            }
            if adv.interval_cs != m.vm.params().interval_cs {
                return self.drop_packet(Malformed::Interval);
            }
        }
        m.received += 1;
        let actions = m.vm.advert(Instant::now(), src, &adv);
        self.apply(i, actions).await;
    }

    fn send(&mut self, i: usize, priority: u8, interval_cs: u16) {
        let m = &mut self.members[i];
        let mut adv = Advert {
            version: m.vm.params().version,
            vrid: m.cfg.vrid,
            priority,
            interval_cs,
            addrs: m.vips.clone(),
            password: m.password,
            trailer: None,
        };
        let dsts: Vec<IpAddr> = match (m.cfg.unicast_peers.is_empty(), self.local) {
            (true, IpAddr::V4(_)) => vec![IpAddr::V4(GROUP_V4)],
            (true, IpAddr::V6(_)) => vec![IpAddr::V6(GROUP_V6)],
            (false, _) => m.cfg.unicast_peers.clone(),
        };
        if let Some(key) = &m.key {
            key.sign(&mut adv, m.seq.advance(), self.local, dsts[0]);
        }
        let index = self.link.index;
        for dst in dsts {
            let buf = adv.encode(self.local, dst);
            let sent = match (self.local, dst) {
                (IpAddr::V6(local), IpAddr::V6(d)) => {
                    // The source must be the address the checksum covers: pinned per packet.
                    let scope = if d.is_multicast() || d.is_unicast_link_local() {
                        index
                    } else {
                        0
                    };
                    let to = SockAddr::from(SocketAddrV6::new(d, 0, 0, scope));
                    let control = crate::ancillary::source(local, index);
                    crate::sys::send_msg(self.sock.get_ref(), &buf, &to, &control)
                }
                _ => {
                    let to = SockAddr::from(SocketAddr::new(dst, 0));
                    self.sock.get_ref().send_to(&buf, &to)
                }
            };
            match sent {
                Ok(_) => m.sent += 1,
                Err(e) => tracing::warn!(instance = %m.cfg.name, "send advert to {dst}: {e}"),
            }
        }
    }

    fn announce(&self, i: usize) {
        let m = &self.members[i];
        let (count, gap) = (m.cfg.garp_count, m.cfg.garp_interval);
        let vips = m.vips.clone();
        let name = m.cfg.name.clone();
        let announcer = self.announcer.clone();
        tokio::spawn(async move {
            for k in 0..count {
                if k > 0 {
                    tokio::time::sleep(gap).await;
                }
                if let Err(e) = announcer.announce(&vips) {
                    tracing::warn!(instance = %name, "gratuitous ARP: {e}");
                }
            }
        });
    }

    async fn apply(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send {
                    priority,
                    interval_cs,
                } => self.send(i, priority, interval_cs),
                Action::Announce => {
                    tracing::info!(instance = %self.members[i].cfg.name, "another master heard: announcing again");
                    self.announce(i);
                }
                Action::Transition { from, to, reason } => {
                    self.transition(i, from, to, reason).await
                }
                Action::Inherit { from } => self.forward(i, from).await,
            }
        }
    }

    async fn transition(&mut self, i: usize, from: State, to: State, reason: Reason) {
        let index = self.link.index;
        let m = &mut self.members[i];
        m.record(from, to, reason);
        tracing::info!(
            instance = %m.cfg.name,
            priority = m.vm.priority(),
            "{} -> {} ({})",
            from.as_str(),
            to.as_str(),
            reason.as_str()
        );
        if to == State::Master {
            for vip in m.cfg.vips.clone() {
                if let Err(e) = self.nl.add(index, vip).await {
                    tracing::error!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
            // Back before our parked VIPs expired: they are on the interface again, so the
            // copies on `lo` can go without a moment without the address.
            self.unpark(i).await;
            self.announce(i);
        } else if from == State::Master {
            // We are alive: our connections stay here for the hand-over window, whether the
            // new master forwards them (it heard us resign, or preempted us) or not (then
            // they end as they would have).
            self.park(i).await;
            self.unforward(i).await;
            let m = &self.members[i];
            for vip in m.cfg.vips.clone() {
                if let Err(e) = self.nl.del(index, vip).await {
                    tracing::error!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
        }
        if self.members[i].cfg.real_server {
            self.real_server(i, to).await;
        }
        let m = &self.members[i];
        let hook = match to {
            State::Master => m.cfg.notify.master.clone(),
            State::Backup => m.cfg.notify.backup.clone(),
            State::Fault => m.cfg.notify.fault.clone(),
            State::Init => m.cfg.notify.stop.clone(),
        };
        if let Some(cmd) = hook {
            let ev = notify::Event {
                instance: m.cfg.name.clone(),
                state: to.as_str(),
                old_state: from.as_str(),
                priority: m.vm.priority(),
                vips: m
                    .cfg
                    .vips
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                reason: reason.as_str(),
            };
            let run = notify::run(cmd, ev, m.cfg.notify_timeout);
            if to == State::Init {
                // Stopping: the runtime ends after this, so the hook runs to its end here.
                run.await;
            } else {
                tokio::spawn(run);
            }
        }
    }

    /// Tracking: the instance's own interface down = fault; tracked interfaces, scripts and
    /// services move the priority by their weights (or mean fault, with weight 0).
    async fn track(&mut self) {
        let own = link_up(&self.iface);
        let failing = self
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = Instant::now();
        for i in 0..self.members.len() {
            let m = &self.members[i];
            let status = |kind: &str, name: &str, passing: bool, weight: i32| TrackStatus {
                kind: kind.into(),
                name: name.into(),
                passing,
                weight,
            };
            let tracking: Vec<TrackStatus> =
                m.cfg
                    .track_interfaces
                    .iter()
                    .map(|t| status("interface", &t.name, link_up(&t.name), t.weight))
                    .chain(m.cfg.track_scripts.iter().zip(&m.scripts).map(|(t, p)| {
                        status("script", &t.command, p.load(Ordering::Relaxed), t.weight)
                    }))
                    .chain(
                        m.cfg.track_services.iter().map(|t| {
                            status("service", &t.name, !failing.contains(&t.name), t.weight)
                        }),
                    )
                    .collect();
            let (priority, fault) = crate::track::effect(
                m.cfg.priority,
                tracking.iter().map(|t| (t.passing, t.weight)),
            );
            self.members[i].tracking = tracking;
            let mut actions = self.members[i].vm.set_fault(now, fault || !own);
            actions.extend(self.members[i].vm.set_priority(now, priority));
            self.apply(i, actions).await;
        }
    }

    async fn failover(&mut self, names: Vec<String>) -> Result<Vec<String>, String> {
        let now = Instant::now();
        let mut done = Vec::new();
        for i in 0..self.members.len() {
            let name = self.members[i].cfg.name.clone();
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            match self.members[i].vm.failover(now) {
                Ok(actions) => {
                    self.apply(i, actions).await;
                    done.push(name);
                }
                Err(state) if !names.is_empty() => {
                    return Err(format!(
                        "vrrp instance {name} is {}, not master",
                        state.as_str()
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    fn resume(&mut self, names: &[String]) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        for m in &mut self.members {
            if (names.is_empty() || names.contains(&m.cfg.name)) && m.vm.standby() {
                m.vm.resume();
                done.push(m.cfg.name.clone());
            }
        }
        Ok(done)
    }

    async fn stop(&mut self) {
        for i in 0..self.members.len() {
            let actions = self.members[i].vm.stop();
            self.apply(i, actions).await;
            self.unforward(i).await;
        }
    }

    /// The end: parked VIPs and hand-over tables go.
    async fn finish(&mut self) {
        for i in 0..self.members.len() {
            self.unpark(i).await;
            self.unforward(i).await;
        }
    }

    /// Hand-overs whose window has closed end.
    async fn expire(&mut self, now: Instant) {
        for i in 0..self.members.len() {
            if matches!(self.members[i].parked, Some(Parked::Until(t)) if t <= now) {
                tracing::info!(instance = %self.members[i].cfg.name, "hand-over window closed: parked VIPs removed");
                self.unpark(i).await;
            }
            if self.members[i].forwarding.is_some_and(|(_, t)| t <= now) {
                tracing::info!(instance = %self.members[i].cfg.name, "hand-over window closed: forwarding ends");
                self.unforward(i).await;
            }
        }
    }

    /// The old master's side of a hand-over: the VIPs go on `lo` (and ARP for them goes
    /// quiet) before they leave the interface, so open connections carry on.
    async fn park(&mut self, i: usize) {
        let window = self.members[i].cfg.handover_window;
        if window.is_zero() || !self.put_on_lo(i).await {
            return;
        }
        self.members[i].parked = Some(Parked::Until(Instant::now() + window));
        tracing::info!(instance = %self.members[i].cfg.name, "hand-over: VIPs parked on lo for {window:?}, open connections carry on");
    }

    /// The real-server role follows the state: on as backup (after a hand-over, too: the
    /// VIPs simply stay on `lo`), off otherwise. Leaving it (fault, stop) is a hand-over of
    /// its own: connections to the VIP drain for the window.
    async fn real_server(&mut self, i: usize, to: State) {
        let name = self.members[i].cfg.name.clone();
        match (to, self.members[i].parked) {
            (State::Backup, Some(Parked::RealServer)) | (State::Master, _) => {}
            (State::Backup, parked) => {
                if parked.is_some() || self.put_on_lo(i).await {
                    self.members[i].parked = Some(Parked::RealServer);
                    tracing::info!(instance = %name, "real server: VIPs on lo, ARP for them quiet");
                }
            }
            (_, Some(Parked::RealServer)) => {
                let window = self.members[i].cfg.handover_window;
                if window.is_zero() {
                    self.unpark(i).await;
                } else {
                    self.members[i].parked = Some(Parked::Until(Instant::now() + window));
                }
                tracing::info!(instance = %name, "real server role ends");
            }
            (_, _) => {}
        }
    }

    /// Adds the member's VIPs to `lo` as host addresses, with ARP for them quiet (IPv4);
    /// whether that could be done.
    async fn put_on_lo(&mut self, i: usize) -> bool {
        let name = self.members[i].cfg.name.clone();
        // IPv6 needs no quieting: Linux answers neighbour solicitations only for addresses
        // on the interface they arrive on, never for those on `lo`.
        let quiet = if self.local.is_ipv6() {
            Ok(())
        } else {
            self.arp.engage()
        };
        if let Err(e) = quiet {
            tracing::warn!(instance = %name, "cannot quiet ARP ({e}): the VIPs stay off lo");
            return false;
        }
        for vip in self.members[i].cfg.vips.clone() {
            if let Err(e) = self.nl.add(self.lo, host_route(vip)).await {
                tracing::warn!(instance = %name, "put VIP on lo: {e}");
            }
        }
        true
    }

    async fn unpark(&mut self, i: usize) {
        if self.members[i].parked.take().is_none() {
            return;
        }
        for vip in self.members[i].cfg.vips.clone() {
            if let Err(e) = self.nl.del(self.lo, host_route(vip)).await {
                tracing::warn!(instance = %self.members[i].cfg.name, "hand-over: {e}");
            }
        }
        if self.members.iter().all(|m| m.parked.is_none()) && self.arp.engaged() {
            if let Err(e) = self.arp.release() {
                tracing::warn!(interface = %self.iface, "hand-over: restore ARP settings: {e}");
            }
        }
    }

    /// The new master's side: packets of connections we do not know go to the old master.
    async fn forward(&mut self, i: usize, to: IpAddr) {
        let m = &self.members[i];
        let (window, name) = (m.cfg.handover_window, m.cfg.name.clone());
        if window.is_zero() || m.vips.is_empty() || to.is_ipv6() != self.local.is_ipv6() {
            return;
        }
        let table = self.table(m);
        match handover::nft(&handover::ruleset(&table, &self.iface, &m.vips, to)).await {
            Ok(()) => {
                self.members[i].forwarding = Some((to, Instant::now() + window));
                tracing::info!(instance = %name, "hand-over: connections of {to} stay there for {window:?}");
            }
            Err(e) => tracing::warn!(
                instance = %name,
                "hand-over: cannot forward to {to} ({e}); its open connections will be reset"
            ),
        }
    }

    async fn unforward(&mut self, i: usize) {
        if self.members[i].forwarding.take().is_none() {
            return;
        }
        let table = self.table(&self.members[i]);
        if let Err(e) = handover::nft(&handover::removal(&table)).await {
            tracing::warn!(instance = %self.members[i].cfg.name, "hand-over: remove {table}: {e}");
        }
    }

    /// The nftables table of a member's hand-over forwarding.
    fn table(&self, m: &Member) -> String {
        handover::table(self.link.index, m.cfg.vrid, self.local.is_ipv6())
    }

    /// Copies every member's state where `herd ha status` reads it.
    fn publish(&self) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let dropped: BTreeMap<String, u64> = self
            .dropped
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), *v))
            .collect();
        for m in &self.members {
            st[m.slot] = VrrpStatus {
                name: m.cfg.name.clone(),
                interface: self.iface.clone(),
                vrid: m.cfg.vrid,
                version: m.cfg.version,
                state: m.vm.state().as_str().into(),
                priority: m.vm.priority(),
                configured_priority: m.cfg.priority,
                standby: m.vm.standby(),
                master: m.vm.master().map(|a| a.to_string()),
                address: self.local.to_string(),
                advert_interval_ms: u64::from(m.vm.master_interval_cs()) * 10,
                vips: m.cfg.vips.iter().map(|v| v.to_string()).collect(),
                transitions: m.transitions.iter().cloned().collect(),
                transitions_total: m.transitions_total,
                adverts_sent: m.sent,
                adverts_received: m.received,
                dropped: dropped.clone(),
                handover: handover_note(m, Instant::now()),
                real_server: m.parked == Some(Parked::RealServer),
                tracking: m.tracking.clone(),
            };
        }
    }
}

/// What `herd ha status` says about a hand-over in progress.
fn handover_note(m: &Member, now: Instant) -> Option<String> {
    let left = |t: Instant| t.saturating_duration_since(now).as_secs();
    match (m.parked, m.forwarding) {
        (Some(Parked::Until(t)), _) => Some(format!(
            "VIPs parked on lo, old connections drain here ({}s left)",
            left(t)
        )),
        (_, Some((to, t))) => Some(format!(
            "forwarding connections we do not know to {to} ({}s left)",
            left(t)
        )),
        (_, None) => None,
    }
}
