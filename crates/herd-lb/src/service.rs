//! A virtual service at run time.
//!
//! The data plane asks [`Service::schedule`] for a real server for every new connection and
//! holds the returned [`Conn`] for the connection's lifetime; dropping it ends the connection
//! in the books (counts, overload flag, persistence template, connection table).
//!
//! Locking: one mutex per service, held for a scheduling decision and at the two state changes
//! of a connection (half-close, close). Byte and packet counters are atomics and never take it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use herd_core::api::{
    AdminState, ConnEntry, QuorumStatus, Rates, RealHealth, RealStatus, ServiceStatus,
};
use herd_core::model::{mask_addr, Protocol, Quorum, RealSpec, ServiceKey, ServiceSpec, Timeouts};

use crate::sched::{new_scheduler, wlc_pick, ConnInfo, DestView, Scheduler};
use crate::stats::{Counters, RateEst};

/// A real server's live state, shared by the service and every connection to it.
#[derive(Debug)]
pub struct Dest {
    addr: SocketAddr,
    active: AtomicU32,
    inactive: AtomicU32,
    overloaded: AtomicBool,
    upper: AtomicU32,
    lower: AtomicU32,
    pub stats: Counters,
}

impl Dest {
    fn new(spec: &RealSpec) -> Self {
        Dest {
            addr: spec.address,
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            upper: AtomicU32::new(spec.upper_threshold),
            lower: AtomicU32::new(spec.lower_threshold),
            stats: Counters::default(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn total_conns(&self) -> u32 {
        self.active.load(Relaxed) + self.inactive.load(Relaxed)
    }

    /// The kernel's `ip_vs_bind_dest` rule: at or above the upper threshold → overloaded.
    fn check_overload_on_bind(&self) {
        let upper = self.upper.load(Relaxed);
        if upper != 0 && self.total_conns() >= upper {
            self.overloaded.store(true, Relaxed);
        }
    }

    /// The kernel's `ip_vs_unbind_dest` rule: below the lower threshold (or, without one, below
    /// ¾ of the upper) → accepting again.
    fn check_overload_on_unbind(&self) {
        if !self.overloaded.load(Relaxed) {
            return;
        }
        let (upper, lower, total) = (
            self.upper.load(Relaxed),
            self.lower.load(Relaxed),
            self.total_conns(),
        );
        let clear = if lower != 0 {
            total < lower
        } else if upper != 0 {
            u64::from(total) * 4 < u64::from(upper) * 3
        } else {
            true
        };
        if clear {
            self.overloaded.store(false, Relaxed);
        }
    }

    fn set_thresholds(&self, upper: u32, lower: u32) {
        self.upper.store(upper, Relaxed);
        self.lower.store(lower, Relaxed);
        if upper == 0 {
            self.overloaded.store(false, Relaxed);
        } else {
            self.check_overload_on_bind();
            self.check_overload_on_unbind();
        }
    }
}

#[derive(Debug)]
struct DestEntry {
    spec: RealSpec,
    dest: Arc<Dest>,
    /// Removed by a reload: weight forced to 0 until its last connection ends.
    draining: bool,
    /// What the health monitor says; kept across reloads.
    health: RealHealth,
    /// What an operator says; kept across reloads.
    admin: AdminState,
    est: RateEst,
}

impl DestEntry {
    /// The weight the schedulers see: 0 while draining, drained or disabled by an operator, or
    /// taken out by the health monitor.
    fn effective_weight(&self) -> u32 {
        if self.draining || self.health != RealHealth::Up || self.admin != AdminState::Enabled {
            0
        } else {
            self.spec.weight
        }
    }
}

/// A persistence template: clients of one masked address stick to one real server.
#[derive(Debug, Clone, Copy)]
struct Template {
    dest: SocketAddr,
    expires_ms: u64,
    conns: u32,
}

/// Connection state as the connection table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// TCP, both directions open.
    Established,
    /// TCP, one side has closed.
    FinWait,
    /// A UDP session.
    Udp,
}

impl ConnState {
    fn name(self) -> &'static str {
        match self {
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::Udp => "UDP",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ConnRecord {
    client: SocketAddr,
    dest: SocketAddr,
    state: ConnState,
    since_ms: u64,
}

#[derive(Debug)]
struct Inner {
    spec: ServiceSpec,
    dests: Vec<DestEntry>,
    sched: Box<dyn Scheduler>,
    /// Reused for every decision, so scheduling does not allocate.
    views: Vec<DestView>,
    templates: HashMap<IpAddr, Template>,
    /// The connection table: a slab, so opening and closing connections does not allocate
    /// once it has grown to the peak number of connections.
    conns: Vec<Option<ConnRecord>>,
    free: Vec<usize>,
    open: usize,
    est: RateEst,
    quorum: Option<Quorum>,
    /// Below quorum (with hysteresis): new connections go to the sorry server.
    quorum_lost: bool,
    /// The sorry server's books, while one is configured.
    sorry: Option<Arc<Dest>>,
}

/// A virtual service at run time.
#[derive(Debug)]
pub struct Service {
    key: ServiceKey,
    pub stats: Counters,
    inner: Mutex<Inner>,
}

/// Why no real server could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDest {
    /// No real server is configured, or all have weight 0, are overloaded or were excluded.
    Unavailable,
}

impl Service {
    /// Creates a service with its real servers, given in configuration order; the kernel's list
    /// order (newest first) is derived from it.
    pub fn new(spec: ServiceSpec, reals: &[RealSpec], seed: u64) -> Arc<Service> {
        let sched = new_scheduler(spec.scheduler, spec.sched_flags, seed);
        let svc = Service {
            key: spec.key,
            stats: Counters::default(),
            inner: Mutex::new(Inner {
                spec,
                dests: Vec::new(),
                sched,
                views: Vec::new(),
                templates: HashMap::new(),
                conns: Vec::new(),
                free: Vec::new(),
                open: 0,
                est: RateEst::default(),
                quorum: None,
                quorum_lost: false,
                sorry: None,
            }),
        };
        {
            let mut inner = svc.lock();
            for r in reals {
                inner.insert_dest(*r);
            }
            inner.refresh_sched();
        }
        Arc::new(svc)
    }

    pub fn key(&self) -> ServiceKey {
        self.key
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while holding it; with panic = "abort" that cannot
        // happen in the daemon, and in tests the data is still consistent enough to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn spec(&self) -> ServiceSpec {
        self.lock().spec.clone()
    }

    /// Real servers in the kernel's list order, without those draining after a reload.
    pub fn reals(&self) -> Vec<RealSpec> {
        self.lock()
            .dests
            .iter()
            .filter(|d| !d.draining)
            .map(|d| d.spec)
            .collect()
    }

    /// Picks a real server for a new connection from `client` to `vip`, skipping the real
    /// servers in `exclude` (those a connect attempt just failed on).
    ///
    /// Persistence: a client (masked to the configured prefix) with a live template goes to
    /// the same real server while that server has weight > 0. Templates pointing at a quiesced
    /// server are dropped, as with the kernel's `expire_quiescent_template=1`, so that setting a
    /// weight to 0 really drains a persistent service.
    pub fn schedule(
        self: &Arc<Self>,
        client: SocketAddr,
        vip: SocketAddr,
        now_ms: u64,
        exclude: &[SocketAddr],
    ) -> Result<Conn, NoDest> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.quorum_lost {
            if let Some(sorry) = inner.sorry.clone() {
                if exclude.contains(&sorry.addr) {
                    return Err(NoDest::Unavailable);
                }
                return Ok(self.bind(inner, sorry, client, None, now_ms));
            }
        }
        let persist = inner.spec.persistence;
        let pkey = persist.map(|p| mask_addr(client.ip(), p.prefix));

        let mut chosen: Option<usize> = None;
        if let Some(k) = pkey {
            if let Some(t) = inner.templates.get(&k).copied() {
                let live = t.conns > 0 || t.expires_ms > now_ms;
                let idx = inner.dests.iter().position(|d| d.dest.addr == t.dest);
                match idx {
                    Some(i)
                        if live
                            && inner.dests[i].effective_weight() > 0
                            && !exclude.contains(&t.dest) =>
                    {
                        chosen = Some(i)
                    }
                    _ => {
                        if t.conns == 0 || idx.is_none() || exclude.contains(&t.dest) {
                            inner.templates.remove(&k);
                        }
                    }
                }
            }
        }

        if chosen.is_none() {
            inner.fill_views();
            // A retry after a failed connect: the servers that failed count as overloaded for
            // this pick, which every scheduler skips (the kernel's rule for a server above
            // its upper threshold). Weights stay as they are, so the table-based schedulers
            // neither rebuild nor restart their rotation.
            for v in inner.views.iter_mut() {
                if exclude.contains(&v.addr) {
                    v.overloaded = true;
                }
            }
            let info = ConnInfo { client, vip };
            chosen = inner
                .sched
                .schedule(&inner.views, &info, now_ms)
                .filter(|&i| !exclude.contains(&inner.views[i].addr));
            // Hashing schedulers without fallback have no other answer, and lblc/lblcr may
            // answer from their cache: fall back to the least loaded of the others (the wlc
            // rule), so the client still gets an answer.
            if chosen.is_none() && !exclude.is_empty() {
                chosen = wlc_pick(&inner.views);
            }
            if let (Some(i), Some(k), Some(p)) = (chosen, pkey, persist) {
                let t = inner.templates.entry(k).or_insert(Template {
                    dest: inner.dests[i].dest.addr,
                    expires_ms: 0,
                    conns: 0,
                });
                t.dest = inner.dests[i].dest.addr;
                t.expires_ms = now_ms + u64::from(p.timeout) * 1000;
            }
        }
        let i = chosen.ok_or(NoDest::Unavailable)?;
        let dest = inner.dests[i].dest.clone();
        if let (Some(k), Some(p)) = (pkey, persist) {
            if let Some(t) = inner.templates.get_mut(&k) {
                t.conns += 1;
                t.expires_ms = t.expires_ms.max(now_ms + u64::from(p.timeout) * 1000);
            }
        }

        Ok(self.bind(inner, dest, client, pkey, now_ms))
    }

    /// Books a new connection to `dest`.
    fn bind(
        self: &Arc<Self>,
        inner: &mut Inner,
        dest: Arc<Dest>,
        client: SocketAddr,
        pkey: Option<IpAddr>,
        now_ms: u64,
    ) -> Conn {
        let state = match self.key.protocol {
            Protocol::Tcp => {
                dest.active.fetch_add(1, Relaxed);
                ConnState::Established
            }
            // The kernel counts UDP "connections" as inactive.
            Protocol::Udp => {
                dest.inactive.fetch_add(1, Relaxed);
                ConnState::Udp
            }
        };
        dest.check_overload_on_bind();
        dest.stats.add_conn();
        self.stats.add_conn();
        let slot = inner.insert_conn(ConnRecord {
            client,
            dest: dest.addr,
            state,
            since_ms: now_ms,
        });
        Conn {
            service: self.clone(),
            dest,
            inactive: AtomicBool::new(state != ConnState::Established),
            slot,
            persist_key: pkey,
            end_ms: AtomicU64::new(now_ms),
            proxy_protocol: inner.spec.proxy_protocol,
        }
    }

    /// Sets the quorum (`None`: none). The sorry server keeps its counters while its address
    /// stays the same. Returns whether the quorum is lost now.
    pub fn set_quorum(&self, quorum: Option<Quorum>) -> bool {
        let mut inner = self.lock();
        let sorry = quorum.and_then(|q| q.sorry_server);
        if inner.sorry.as_ref().map(|d| d.addr) != sorry {
            inner.sorry = sorry.map(|a| {
                Arc::new(Dest::new(&RealSpec {
                    address: a,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    forward: Default::default(),
                }))
            });
        }
        inner.quorum = quorum;
        inner.check_quorum();
        inner.quorum_lost
    }

    /// The quorum and whether it holds, if the service has one.
    pub fn quorum(&self) -> Option<QuorumStatus> {
        let inner = self.lock();
        inner.quorum.map(|q| QuorumStatus {
            quorum: q,
            up: inner.up_count(),
            lost: inner.quorum_lost,
        })
    }

    /// Whether the service is failing, for VRRP's `track-service`: its quorum is lost, or,
    /// without a quorum, no real server is up.
    pub fn failing(&self) -> bool {
        let inner = self.lock();
        match inner.quorum {
            Some(_) => inner.quorum_lost,
            None => inner.up_count() == 0,
        }
    }

    /// Connections open through this service (for draining).
    pub fn open_conns(&self) -> usize {
        self.lock().open
    }

    /// Status for listings.
    pub fn status(&self) -> ServiceStatus {
        let inner = self.lock();
        let mut persistent: HashMap<SocketAddr, u32> = HashMap::new();
        for t in inner.templates.values() {
            *persistent.entry(t.dest).or_default() += 1;
        }
        let reals: Vec<RealStatus> = inner
            .dests
            .iter()
            // A real server the health monitor removed is listed with `health: removed`; the
            // ipvsadm view leaves it out (`RealStatus::listed`), as after mon's lvs.alert's
            // `ipvsadm -d`.
            .map(|d| RealStatus {
                spec: RealSpec {
                    weight: d.effective_weight(),
                    ..d.spec
                },
                active_conns: d.dest.active.load(Relaxed),
                inactive_conns: d.dest.inactive.load(Relaxed),
                persistent_conns: persistent.get(&d.dest.addr).copied().unwrap_or(0),
                overloaded: d.dest.overloaded.load(Relaxed),
                draining: d.draining,
                health: d.health,
                configured_weight: d.spec.weight,
                admin: d.admin,
                sorry: false,
                stats: d.dest.stats.snapshot(),
                rates: d.est.rates(),
            })
            .collect();
        let mut reals = reals;
        // While it stands in, the sorry server is listed as keepalived puts it in the table.
        if let (true, Some(d)) = (inner.quorum_lost, &inner.sorry) {
            reals.push(RealStatus {
                spec: RealSpec {
                    address: d.addr,
                    weight: 1,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    forward: Default::default(),
                },
                active_conns: d.active.load(Relaxed),
                inactive_conns: d.inactive.load(Relaxed),
                persistent_conns: 0,
                overloaded: false,
                draining: false,
                health: RealHealth::Up,
                configured_weight: 1,
                admin: AdminState::Enabled,
                sorry: true,
                stats: d.stats.snapshot(),
                rates: Rates::default(),
            });
        }
        ServiceStatus {
            spec: inner.spec.clone(),
            quorum: inner.quorum.map(|q| QuorumStatus {
                quorum: q,
                up: inner.up_count(),
                lost: inner.quorum_lost,
            }),
            reals,
            stats: self.stats.snapshot(),
            rates: inner.est.rates(),
        }
    }

    /// The connection table, with seconds to expiry from the given timeouts. An established
    /// TCP connection shows its full idle timeout (the proxy re-arms it on every read), a
    /// half-closed one the time left of `tcp-fin`.
    pub fn connections(&self, now_ms: u64, t: &Timeouts, out: &mut Vec<ConnEntry>) {
        let inner = self.lock();
        for r in inner.conns.iter().flatten() {
            let elapsed = (now_ms.saturating_sub(r.since_ms) / 1000) as u32;
            let expire = match r.state {
                ConnState::Established => t.tcp,
                ConnState::FinWait => t.tcp_fin.saturating_sub(elapsed),
                ConnState::Udp => t.udp,
            };
            out.push(ConnEntry {
                protocol: self.key.protocol,
                expire_secs: expire,
                state: r.state.name().to_string(),
                client: r.client,
                virtual_addr: self.key.address,
                real: r.dest,
            });
        }
        for (k, tpl) in &inner.templates {
            out.push(ConnEntry {
                protocol: self.key.protocol,
                expire_secs: (tpl.expires_ms.saturating_sub(now_ms) / 1000) as u32,
                state: "NONE".to_string(),
                client: SocketAddr::new(*k, 0),
                virtual_addr: self.key.address,
                real: tpl.dest,
            });
        }
    }

    /// Replaces scheduler, flags, persistence and PROXY protocol setting (ipvsadm `-E`).
    pub fn set_spec(&self, spec: ServiceSpec, seed: u64) {
        let mut inner = self.lock();
        if spec.scheduler != inner.spec.scheduler || spec.sched_flags != inner.spec.sched_flags {
            inner.sched = new_scheduler(spec.scheduler, spec.sched_flags, seed);
        }
        if spec.persistence.map(|p| p.prefix) != inner.spec.persistence.map(|p| p.prefix) {
            inner.templates.clear();
        }
        inner.spec = spec;
        inner.refresh_sched();
    }

    pub fn has_real(&self, addr: SocketAddr) -> bool {
        self.lock()
            .dests
            .iter()
            .any(|d| d.dest.addr == addr && !d.draining)
    }

    /// Adds a real server; one that is draining after a reload is revived instead.
    pub fn add_real(&self, spec: RealSpec) {
        let mut inner = self.lock();
        inner.insert_dest(spec);
        inner.refresh_sched();
    }

    /// Changes weight, thresholds and forwarding of a real server. Returns false if absent.
    pub fn edit_real(&self, spec: RealSpec) -> bool {
        let mut inner = self.lock();
        let Some(d) = inner
            .dests
            .iter_mut()
            .find(|d| d.dest.addr == spec.address && !d.draining)
        else {
            return false;
        };
        d.spec = spec;
        d.dest
            .set_thresholds(spec.upper_threshold, spec.lower_threshold);
        inner.refresh_sched();
        true
    }

    /// Sets what the health monitor says about a real server: whether that changed anything,
    /// `None` if there is no real server at this address. `Quiesced` and `Removed` both stop new connections (open ones continue);
    /// `Removed` also hides the server from listings and drops its persistence templates.
    pub fn set_health(&self, addr: SocketAddr, health: RealHealth) -> Option<bool> {
        self.set_state(addr, |d| {
            (d.health != health).then(|| {
                d.health = health;
                health != RealHealth::Up
            })
        })
    }

    /// Sets what an operator says about a real server: whether that changed anything, `None` if
    /// there is no real server at this address.
    /// Anything but `Enabled` stops new connections, persistent clients' too (their templates
    /// go); open connections continue.
    pub fn set_admin(&self, addr: SocketAddr, state: AdminState) -> Option<bool> {
        self.set_state(addr, |d| {
            (d.admin != state).then(|| {
                d.admin = state;
                state != AdminState::Enabled
            })
        })
    }

    /// Changes a real server's health or operator state with `change`, which says whether it
    /// changed anything (`None`: no) and whether the server now stops taking new connections
    /// (its persistence templates go then). Returns whether it changed anything, `None` if
    /// there is no real server at `addr`.
    fn set_state(
        &self,
        addr: SocketAddr,
        change: impl FnOnce(&mut DestEntry) -> Option<bool>,
    ) -> Option<bool> {
        let mut inner = self.lock();
        let d = inner.dests.iter_mut().find(|d| d.dest.addr == addr)?;
        let Some(stops) = change(d) else {
            return Some(false);
        };
        if stops {
            inner.templates.retain(|_, t| t.dest != addr);
        }
        inner.refresh_sched();
        Some(true)
    }

    /// Removes a real server at once (ipvsadm `-d`); its open connections continue to the end.
    pub fn remove_real(&self, addr: SocketAddr) -> bool {
        let mut inner = self.lock();
        let before = inner.dests.len();
        inner.dests.retain(|d| d.dest.addr != addr);
        let removed = inner.dests.len() != before;
        if removed {
            inner.templates.retain(|_, t| t.dest != addr);
            inner.refresh_sched();
        }
        removed
    }

    /// Makes the real servers equal to `reals` (a reload): new ones are added, existing ones
    /// updated, and missing ones quiesced — weight 0, no new connections — until their last
    /// connection ends (see [`Service::maintain`]).
    pub fn reconcile_reals(&self, reals: &[RealSpec]) {
        let mut inner = self.lock();
        for r in reals {
            inner.insert_dest(*r);
        }
        for d in inner.dests.iter_mut() {
            if !reals.iter().any(|r| r.address == d.dest.addr) {
                d.draining = true;
            }
        }
        let gone: Vec<SocketAddr> = inner
            .dests
            .iter()
            .filter(|d| d.draining)
            .map(|d| d.dest.addr)
            .collect();
        inner.templates.retain(|_, t| !gone.contains(&t.dest));
        inner.refresh_sched();
    }

    /// Periodic housekeeping: expires persistence templates, forgets drained real servers and,
    /// when `sample` is set (every [`RateEst::PERIOD_MS`]), feeds the rate estimators.
    pub fn maintain(&self, now_ms: u64, sample: bool) {
        let mut inner = self.lock();
        inner
            .templates
            .retain(|_, t| t.conns > 0 || t.expires_ms > now_ms);
        let before = inner.dests.len();
        inner
            .dests
            .retain(|d| !(d.draining && d.dest.total_conns() == 0));
        if inner.dests.len() != before {
            inner.refresh_sched();
        }
        if sample {
            let s = self.stats.snapshot();
            inner.est.sample(s);
            for d in inner.dests.iter_mut() {
                d.est.sample(d.dest.stats.snapshot());
            }
        }
    }

    /// Zeroes counters and rates (ipvsadm `-Z`).
    pub fn zero(&self) {
        let mut inner = self.lock();
        self.stats.zero();
        inner.est = RateEst::default();
        for d in inner.dests.iter_mut() {
            d.dest.stats.zero();
            d.est = RateEst::default();
        }
    }

    fn conn_state_change(&self, slot: usize, state: ConnState, now_ms: u64) {
        let mut inner = self.lock();
        if let Some(Some(r)) = inner.conns.get_mut(slot) {
            r.state = state;
            r.since_ms = now_ms;
        }
    }

    fn conn_closed(&self, slot: usize, persist_key: Option<IpAddr>, dest: SocketAddr, now_ms: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.conns.get_mut(slot) {
            if entry.take().is_some() {
                inner.free.push(slot);
                inner.open -= 1;
            }
        }
        if let (Some(k), Some(p)) = (persist_key, inner.spec.persistence) {
            // Only the template this connection counted in: when its template was replaced
            // (its real server failed or was removed), the new one does not count it.
            if let Some(t) = inner.templates.get_mut(&k).filter(|t| t.dest == dest) {
                t.conns = t.conns.saturating_sub(1);
                t.expires_ms = t.expires_ms.max(now_ms + u64::from(p.timeout) * 1000);
            }
        }
    }
}

impl Inner {
    fn insert_dest(&mut self, spec: RealSpec) {
        if let Some(d) = self.dests.iter_mut().find(|d| d.dest.addr == spec.address) {
            d.spec = spec;
            d.draining = false;
            d.dest
                .set_thresholds(spec.upper_threshold, spec.lower_threshold);
            return;
        }
        // The kernel links a new destination at the head of the service's list.
        self.dests.insert(
            0,
            DestEntry {
                spec,
                dest: Arc::new(Dest::new(&spec)),
                draining: false,
                health: RealHealth::Up,
                admin: AdminState::Enabled,
                est: RateEst::default(),
            },
        );
    }

    fn fill_views(&mut self) {
        self.views.clear();
        for d in &self.dests {
            self.views.push(DestView {
                addr: d.dest.addr,
                weight: d.effective_weight(),
                active: d.dest.active.load(Relaxed),
                inactive: d.dest.inactive.load(Relaxed),
                overloaded: d.dest.overloaded.load(Relaxed),
            });
        }
    }

    fn refresh_sched(&mut self) {
        self.fill_views();
        self.sched.update(&self.views);
        self.check_quorum();
    }

    /// Real servers that can take new connections as far as the operator and the health
    /// monitor are concerned (overload is passing, and does not count).
    fn up_count(&self) -> u32 {
        self.dests
            .iter()
            .filter(|d| d.effective_weight() > 0)
            .count() as u32
    }

    /// keepalived's rule: lost below `min - hysteresis`, regained at `min + hysteresis`.
    fn check_quorum(&mut self) {
        let Some(q) = self.quorum else {
            self.quorum_lost = false;
            return;
        };
        let up = self.up_count();
        if self.quorum_lost {
            if up >= q.min.saturating_add(q.hysteresis) {
                self.quorum_lost = false;
            }
        } else if up < q.min.saturating_sub(q.hysteresis) {
            self.quorum_lost = true;
        }
    }

    fn insert_conn(&mut self, r: ConnRecord) -> usize {
        self.open += 1;
        match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(r);
                i
            }
            None => {
                self.conns.push(Some(r));
                self.conns.len() - 1
            }
        }
    }
}

/// One forwarded connection. The data plane holds it while the connection lives; dropping it
/// closes the connection in the books.
///
/// Its methods take `&self` so that both directions of a connection, running concurrently in
/// one task, can account through the same handle.
#[derive(Debug)]
pub struct Conn {
    service: Arc<Service>,
    dest: Arc<Dest>,
    /// True once the connection counts as inactive (half-closed TCP or UDP).
    inactive: AtomicBool,
    slot: usize,
    persist_key: Option<IpAddr>,
    end_ms: AtomicU64,
    proxy_protocol: bool,
}

impl Conn {
    pub fn dest_addr(&self) -> SocketAddr {
        self.dest.addr
    }

    /// Whether the real server expects a PROXY protocol v2 header first.
    pub fn proxy_protocol(&self) -> bool {
        self.proxy_protocol
    }

    /// Client → real server traffic.
    pub fn record_in(&self, pkts: u64, bytes: u64) {
        self.dest.stats.add_in(pkts, bytes);
        self.service.stats.add_in(pkts, bytes);
    }

    /// Real server → client traffic.
    pub fn record_out(&self, pkts: u64, bytes: u64) {
        self.dest.stats.add_out(pkts, bytes);
        self.service.stats.add_out(pkts, bytes);
    }

    /// One side of a TCP connection closed: from now on it counts as inactive, as the
    /// kernel counts a connection in FIN_WAIT.
    pub fn half_closed(&self, now_ms: u64) {
        if !self.inactive.swap(true, Relaxed) {
            self.dest.active.fetch_sub(1, Relaxed);
            self.dest.inactive.fetch_add(1, Relaxed);
            self.end_ms.store(now_ms, Relaxed);
            self.service
                .conn_state_change(self.slot, ConnState::FinWait, now_ms);
        }
    }

    /// Ends the connection at `now_ms`: persistence templates count their timeout from
    /// there. Dropping a `Conn` without calling this ends it at the time of its last state
    /// change.
    pub fn close(self, now_ms: u64) {
        self.end_ms.store(now_ms, Relaxed);
    }

    fn release_counts(&self) {
        if self.inactive.load(Relaxed) {
            self.dest.inactive.fetch_sub(1, Relaxed);
        } else {
            self.dest.active.fetch_sub(1, Relaxed);
        }
        self.dest.check_overload_on_unbind();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.service.conn_closed(
            self.slot,
            self.persist_key,
            self.dest.addr,
            self.end_ms.load(Relaxed),
        );
        self.release_counts();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::api::service_spec;
    use herd_core::model::{Forward, Persistence, SchedulerKind};

    fn real(host: u8, weight: u32) -> RealSpec {
        RealSpec {
            address: SocketAddr::from(([10, 0, 0, host], 80)),
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            forward: Forward::Masq,
        }
    }

    fn svc(kind: SchedulerKind, reals: &[RealSpec]) -> Arc<Service> {
        svc_with(kind, None, reals)
    }

    /// An rr service with persistence (`timeout` seconds, clients grouped by `prefix` bits).
    fn persistent_svc(timeout: u32, prefix: u8, reals: &[RealSpec]) -> Arc<Service> {
        let p = Persistence { timeout, prefix };
        svc_with(SchedulerKind::Rr, Some(p), reals)
    }

    fn svc_with(
        kind: SchedulerKind,
        persistence: Option<Persistence>,
        reals: &[RealSpec],
    ) -> Arc<Service> {
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            address: vip(),
        };
        let mut spec = service_spec(key, kind);
        spec.persistence = persistence;
        Service::new(spec, reals, 1)
    }

    fn client(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, n], 40000 + u16::from(n)))
    }

    fn vip() -> SocketAddr {
        "192.0.2.1:80".parse().unwrap()
    }

    #[test]
    fn new_real_servers_go_to_the_head_of_the_list() {
        let s = svc(SchedulerKind::Rr, &[real(1, 1), real(2, 1)]);
        let order: Vec<u8> = s
            .reals()
            .iter()
            .map(|r| match r.address.ip() {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect();
        assert_eq!(order, vec![2, 1]);
    }

    #[test]
    fn counts_follow_the_connection_life_cycle() {
        let s = svc(SchedulerKind::Rr, &[real(1, 1)]);
        let c = s.schedule(client(1), vip(), 0, &[]).unwrap();
        let st = s.status();
        assert_eq!(
            (st.reals[0].active_conns, st.reals[0].inactive_conns),
            (1, 0)
        );
        c.half_closed(10);
        let st = s.status();
        assert_eq!(
            (st.reals[0].active_conns, st.reals[0].inactive_conns),
            (0, 1)
        );
        let mut table = Vec::new();
        s.connections(1010, &Timeouts::default(), &mut table);
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].state, "FIN_WAIT");
        assert_eq!(table[0].expire_secs, 119);
        c.record_in(1, 100);
        c.record_out(2, 300);
        c.close(20);
        let st = s.status();
        assert_eq!(
            (st.reals[0].active_conns, st.reals[0].inactive_conns),
            (0, 0)
        );
        assert_eq!(st.stats.conns, 1);
        assert_eq!(
            (st.stats.bytes_in, st.stats.bytes_out, st.stats.pkts_out),
            (100, 300, 2)
        );
        assert_eq!(s.open_conns(), 0);
    }

    #[test]
    fn health_verdicts_take_servers_out_and_survive_reloads() {
        let (a, b) = (real(1, 5), real(2, 5));
        let s = persistent_svc(300, 32, &[a, b]);
        let c = s.schedule(client(1), vip(), 0, &[]).unwrap();
        let first = c.dest_addr();
        let other = if first == a.address { b } else { a };
        assert_eq!(s.set_health(first, RealHealth::Quiesced), Some(true));
        // The persistent client moves; the open connection stays counted.
        for n in 1..10 {
            let c2 = s.schedule(client(n), vip(), 0, &[]).unwrap();
            assert_eq!(c2.dest_addr(), other.address);
        }
        let st = s.status();
        let q = st.reals.iter().find(|r| r.spec.address == first).unwrap();
        assert_eq!(
            (q.spec.weight, q.health, q.active_conns),
            (0, RealHealth::Quiesced, 1)
        );
        // A reload keeps the verdict; only the monitor lifts it.
        s.reconcile_reals(&[a, b]);
        assert_eq!(
            s.schedule(client(20), vip(), 0, &[]).unwrap().dest_addr(),
            other.address
        );
        // Removed: out of the ipvsadm listing too.
        assert_eq!(s.set_health(first, RealHealth::Removed), Some(true));
        assert_eq!(s.status().reals.iter().filter(|r| r.listed()).count(), 1);
        assert_eq!(s.reals().len(), 2, "the configured set is unchanged");
        assert_eq!(s.set_health(first, RealHealth::Up), Some(true));
        let st = s.status();
        assert_eq!(st.reals.len(), 2);
        assert!(st
            .reals
            .iter()
            .all(|r| r.spec.weight == 5 && r.health == RealHealth::Up));
        assert_eq!(s.set_health(real(9, 1).address, RealHealth::Up), None);
        drop(c);
    }

    #[test]
    fn an_operators_drain_and_disable_stop_new_connections_and_survive_reloads() {
        let (a, b) = (real(1, 5), real(2, 5));
        let s = persistent_svc(300, 32, &[a, b]);
        let c = s.schedule(client(1), vip(), 0, &[]).unwrap();
        let first = c.dest_addr();
        let other = if first == a.address { b } else { a };
        assert_eq!(s.set_admin(first, AdminState::Draining), Some(true));
        // The persistent client moves too; the open connection stays counted.
        for n in 1..10 {
            assert_eq!(
                s.schedule(client(n), vip(), 0, &[]).unwrap().dest_addr(),
                other.address
            );
        }
        let st = s.status();
        let q = st.reals.iter().find(|r| r.spec.address == first).unwrap();
        assert_eq!(
            (q.spec.weight, q.admin, q.active_conns, q.listed()),
            (0, AdminState::Draining, 1, true)
        );
        // A reload keeps it; a weight change keeps it too.
        s.reconcile_reals(&[a, b]);
        assert!(s.edit_real(RealSpec { weight: 7, ..a }));
        assert!(s.edit_real(RealSpec { weight: 7, ..b }));
        assert_eq!(
            s.schedule(client(20), vip(), 0, &[]).unwrap().dest_addr(),
            other.address
        );
        // Disabled: still in the status (to be enabled again), not listed.
        assert_eq!(s.set_admin(first, AdminState::Disabled), Some(true));
        let st = s.status();
        let q = st.reals.iter().find(|r| r.spec.address == first).unwrap();
        assert!(!q.listed());
        assert_eq!(
            s.schedule(client(21), vip(), 0, &[]).unwrap().dest_addr(),
            other.address
        );
        assert_eq!(s.set_admin(first, AdminState::Enabled), Some(true));
        let st = s.status();
        assert!(st
            .reals
            .iter()
            .all(|r| r.spec.weight == 7 && r.admin == AdminState::Enabled && r.listed()));
        assert_eq!(s.set_admin(real(9, 1).address, AdminState::Draining), None);
        drop(c);
    }

    #[test]
    fn below_quorum_new_connections_go_to_the_sorry_server() {
        let reals = [real(1, 1), real(2, 1), real(3, 1)];
        let s = svc(SchedulerKind::Rr, &reals);
        let sorry: SocketAddr = "10.0.0.99:80".parse().unwrap();
        let q = Quorum {
            min: 2,
            hysteresis: 0,
            sorry_server: Some(sorry),
        };
        assert!(!s.set_quorum(Some(q)));
        s.set_health(reals[0].address, RealHealth::Quiesced);
        assert!(!s.quorum().unwrap().lost, "2 of 3 up: quorum holds");
        let c = s.schedule(client(1), vip(), 0, &[]).unwrap();
        assert_ne!(c.dest_addr(), sorry);
        s.set_health(reals[1].address, RealHealth::Removed);
        let st = s.status();
        assert_eq!(st.quorum.map(|q| (q.up, q.lost)), Some((1, true)));
        let listed = st
            .reals
            .iter()
            .find(|r| r.sorry)
            .expect("sorry server listed");
        assert_eq!(listed.spec.address, sorry);
        for n in 0..5 {
            assert_eq!(
                s.schedule(client(n), vip(), 0, &[]).unwrap().dest_addr(),
                sorry
            );
        }
        // A sorry server that fails to connect: nothing else to offer.
        assert!(s.schedule(client(9), vip(), 0, &[sorry]).is_err());
        s.set_health(reals[0].address, RealHealth::Up);
        assert!(!s.quorum().unwrap().lost);
        assert!(s.status().reals.iter().all(|r| !r.sorry));
        assert_ne!(
            s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr(),
            sorry
        );
        drop(c);
    }

    #[test]
    fn failing_is_a_lost_quorum_or_no_real_server_up() {
        let reals = [real(1, 1), real(2, 1)];
        let s = svc(SchedulerKind::Rr, &reals);
        assert!(!s.failing());
        s.set_health(reals[0].address, RealHealth::Quiesced);
        assert!(!s.failing(), "one of two up");
        s.set_health(reals[1].address, RealHealth::Quiesced);
        assert!(s.failing(), "none up");
        s.set_health(reals[1].address, RealHealth::Up);
        s.set_quorum(Some(Quorum {
            min: 2,
            hysteresis: 0,
            sorry_server: None,
        }));
        assert!(s.failing(), "1 up, quorum 2");
        s.set_health(reals[0].address, RealHealth::Up);
        assert!(!s.failing());
    }

    #[test]
    fn quorum_hysteresis_keeps_the_state_near_the_edge() {
        let reals: Vec<RealSpec> = (1..=5).map(|i| real(i, 1)).collect();
        let s = svc(SchedulerKind::Rr, &reals);
        let q = Quorum {
            min: 3,
            hysteresis: 1,
            sorry_server: None,
        };
        s.set_quorum(Some(q));
        let lost = |n_up: usize| {
            for (i, r) in reals.iter().enumerate() {
                let h = if i < n_up {
                    RealHealth::Up
                } else {
                    RealHealth::Quiesced
                };
                s.set_health(r.address, h);
            }
            s.quorum().unwrap().lost
        };
        // Lost below min - hysteresis = 2; regained at min + hysteresis = 4.
        assert!(!lost(2));
        assert!(lost(1));
        assert!(lost(2));
        assert!(lost(3));
        assert!(!lost(4));
        assert!(!lost(2));
        // Without a sorry server, a lost quorum still schedules to whoever is up.
        assert!(lost(1));
        assert_eq!(
            s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr(),
            reals[0].address
        );
        // Weight 0 set by the operator counts as not up, too.
        s.set_quorum(None);
        assert!(s.quorum().is_none());
    }

    #[test]
    fn weight_zero_gets_no_new_connections() {
        let s = svc(SchedulerKind::Wlc, &[real(1, 1), real(2, 1)]);
        let held = s.schedule(client(1), vip(), 0, &[]).unwrap();
        let first = held.dest_addr();
        assert!(s.edit_real(RealSpec {
            weight: 0,
            ..real(
                if first.ip() == real(1, 1).address.ip() {
                    1
                } else {
                    2
                },
                0
            )
        }));
        for n in 2..20 {
            let c = s.schedule(client(n), vip(), 0, &[]).unwrap();
            assert_ne!(c.dest_addr(), first);
        }
        // The open connection is still counted on the quiesced server.
        let st = s.status();
        let q = st.reals.iter().find(|r| r.spec.address == first).unwrap();
        assert_eq!((q.spec.weight, q.active_conns), (0, 1));
    }

    #[test]
    fn upper_and_lower_thresholds_follow_the_kernel() {
        let r = RealSpec {
            upper_threshold: 4,
            lower_threshold: 2,
            ..real(1, 1)
        };
        let s = svc(SchedulerKind::Rr, &[r]);
        let mut held: Vec<Conn> = (0..4)
            .map(|n| s.schedule(client(n), vip(), 0, &[]).unwrap())
            .collect();
        assert!(s.status().reals[0].overloaded);
        assert!(
            s.schedule(client(9), vip(), 0, &[]).is_err(),
            "overloaded: no new connections"
        );
        held.pop();
        held.pop();
        assert!(
            s.status().reals[0].overloaded,
            "3 and 2 open: not yet below the lower threshold"
        );
        held.pop();
        assert!(!s.status().reals[0].overloaded, "1 open: below 2");
        assert!(s.schedule(client(9), vip(), 0, &[]).is_ok());
    }

    #[test]
    fn without_lower_threshold_three_quarters_of_upper_reopens() {
        let s = svc(
            SchedulerKind::Rr,
            &[RealSpec {
                upper_threshold: 8,
                ..real(1, 1)
            }],
        );
        let mut held: Vec<Conn> = (0..8)
            .map(|n| s.schedule(client(n), vip(), 0, &[]).unwrap())
            .collect();
        assert!(s.status().reals[0].overloaded);
        held.truncate(6);
        assert!(s.status().reals[0].overloaded, "6*4 = 24 is not < 8*3 = 24");
        held.truncate(5);
        assert!(!s.status().reals[0].overloaded);
    }

    #[test]
    fn persistence_sticks_by_masked_client_and_expires() {
        let s = persistent_svc(60, 24, &[real(1, 1), real(2, 1), real(3, 1)]);
        let first = s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr();
        // Same /24, different hosts and ports: same real server, although rr would move on.
        for n in 2..10 {
            let c = s.schedule(client(n), vip(), 1000, &[]).unwrap();
            assert_eq!(c.dest_addr(), first);
        }
        assert_eq!(
            s.status()
                .reals
                .iter()
                .map(|r| r.persistent_conns)
                .sum::<u32>(),
            1
        );
        // A different /24 is scheduled on its own.
        let other = SocketAddr::from(([203, 0, 113, 7], 1234));
        let o = s.schedule(other, vip(), 1000, &[]).unwrap().dest_addr();
        assert_ne!(o, first);
        // After the timeout with no connections, the template is gone.
        s.maintain(1000 + 61_000, false);
        let moved = s
            .schedule(client(1), vip(), 1000 + 61_000, &[])
            .unwrap()
            .dest_addr();
        assert_ne!(moved, first, "rr continues once the template expired");
    }

    #[test]
    fn a_replaced_template_keeps_its_own_count() {
        let s = persistent_svc(10, 32, &[real(1, 1), real(2, 1)]);
        let old = s.schedule(client(1), vip(), 0, &[]).unwrap();
        // The old server fails a connect: the client gets a new template on the other one.
        let new = s.schedule(client(1), vip(), 0, &[old.dest_addr()]).unwrap();
        assert_ne!(new.dest_addr(), old.dest_addr());
        // The old connection ending must not count against the new template...
        old.close(1);
        s.maintain(20_000, false);
        let templates: u32 = s.status().reals.iter().map(|r| r.persistent_conns).sum();
        assert_eq!(templates, 1, "the new template is still in use");
        // ...which still has its connection, so it outlives its timeout.
        let again = s.schedule(client(1), vip(), 20_000, &[]).unwrap();
        assert_eq!(again.dest_addr(), new.dest_addr());
    }

    #[test]
    fn persistence_to_a_quiesced_server_is_dropped() {
        let s = persistent_svc(600, 32, &[real(1, 1), real(2, 1)]);
        let first = s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr();
        let host = match first.ip() {
            IpAddr::V4(v) => v.octets()[3],
            IpAddr::V6(_) => 0,
        };
        assert!(s.edit_real(real(host, 0)));
        assert_ne!(
            s.schedule(client(1), vip(), 1, &[]).unwrap().dest_addr(),
            first
        );
    }

    #[test]
    fn exclusion_retries_reach_every_other_server_even_for_hash_schedulers() {
        // sh without fallback returns nothing when the hashed server is excluded; the retry
        // must still find the other one.
        let s = svc(SchedulerKind::Sh, &[real(1, 1), real(2, 1)]);
        let first = s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr();
        let second = s
            .schedule(client(1), vip(), 0, &[first])
            .unwrap()
            .dest_addr();
        assert_ne!(first, second);
        assert!(s.schedule(client(1), vip(), 0, &[first, second]).is_err());
    }

    #[test]
    fn a_retry_follows_the_schedulers_own_rule() {
        // fo always answers with the heaviest usable server. After the heaviest fails, the
        // retry must get the next heaviest, not the wlc fallback's choice (with no connections
        // open, the first in list order: the newest, real 3).
        let s = svc(SchedulerKind::Fo, &[real(1, 5), real(2, 10), real(3, 3)]);
        let first = s.schedule(client(1), vip(), 0, &[]).unwrap().dest_addr();
        assert_eq!(first, real(2, 0).address);
        let retry = s.schedule(client(1), vip(), 0, &[first]).unwrap();
        assert_eq!(retry.dest_addr(), real(1, 0).address);
    }

    #[test]
    fn retries_keep_the_rotation_and_the_weights() {
        // A dead server (weight 3) among live ones with weights 1, 2, 3: every connection the
        // scheduler gives the dead one is retried, and the retries must spread over the live
        // servers by weight, not all land on one of them.
        let dead = real(9, 3);
        let s = svc(
            SchedulerKind::Wrr,
            &[real(1, 1), real(2, 2), real(3, 3), dead],
        );
        let mut count: HashMap<SocketAddr, u32> = HashMap::new();
        for n in 0..90u32 {
            let c = client((n % 250) as u8);
            let mut conn = s.schedule(c, vip(), 0, &[]).unwrap();
            if conn.dest_addr() == dead.address {
                drop(conn);
                conn = s.schedule(c, vip(), 0, &[dead.address]).unwrap();
            }
            *count.entry(conn.dest_addr()).or_default() += 1;
        }
        let got = |h: u8| count.get(&real(h, 0).address).copied().unwrap_or(0);
        assert_eq!(got(9), 0);
        assert!(got(1) < got(2) && got(2) < got(3), "{count:?}");
        assert!(got(1) >= 9, "{count:?}");
    }

    #[test]
    fn reconcile_drains_removed_servers_until_idle() {
        let s = svc(SchedulerKind::Rr, &[real(1, 1), real(2, 1)]);
        let held: Vec<Conn> = (0..2)
            .map(|n| s.schedule(client(n), vip(), 0, &[]).unwrap())
            .collect();
        s.reconcile_reals(&[real(1, 1), real(3, 1)]);
        let st = s.status();
        let two = st
            .reals
            .iter()
            .find(|r| r.spec.address == real(2, 1).address)
            .unwrap();
        assert!(two.draining);
        assert_eq!((two.spec.weight, two.active_conns), (0, 1));
        for n in 10..20 {
            assert_ne!(
                s.schedule(client(n), vip(), 0, &[]).unwrap().dest_addr(),
                real(2, 1).address
            );
        }
        s.maintain(1, false);
        assert!(
            s.status()
                .reals
                .iter()
                .any(|r| r.spec.address == real(2, 1).address),
            "still has a connection"
        );
        drop(held);
        s.maintain(2, false);
        assert!(!s
            .status()
            .reals
            .iter()
            .any(|r| r.spec.address == real(2, 1).address));
        // Re-adding a draining server revives it instead of duplicating it.
        s.reconcile_reals(&[real(1, 1)]);
        s.add_real(real(3, 5));
        assert_eq!(s.reals().len(), 2);
    }

    #[test]
    fn udp_sessions_count_as_inactive() {
        let key = ServiceKey {
            protocol: Protocol::Udp,
            address: vip(),
        };
        let s = Service::new(service_spec(key, SchedulerKind::Rr), &[real(1, 1)], 1);
        let c = s.schedule(client(1), vip(), 0, &[]).unwrap();
        let st = s.status();
        assert_eq!(
            (st.reals[0].active_conns, st.reals[0].inactive_conns),
            (0, 1)
        );
        drop(c);
        assert_eq!(s.status().reals[0].inactive_conns, 0);
    }
}
