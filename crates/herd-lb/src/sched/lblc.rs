//! Locality-based least connection, without (`ip_vs_lblc`) and with (`ip_vs_lblcr`)
//! replication.
//!
//! Both remember, per destination address of the packet (the virtual address, which varies
//! for firewall-mark services such as transparent cache clusters), which real server(s)
//! served it, so that requests for the same destination hit the same cache. New
//! destinations go to the weighted least-connection choice.
//!
//! The kernel expires the remembered entries from a timer: every minute it collects entries
//! idle for 6 minutes when the table holds more than 16 times its 1024 buckets, and every
//! 30 minutes it removes every entry idle for the expiration time (the `lblc_expiration` /
//! `lblcr_expiration` sysctl, 24 hours by default). Here time comes in with each call: an
//! entry idle for the expiration time is treated as gone at once (the kernel may keep using
//! it until its next half-hourly sweep), and the collection runs at most once per minute of
//! `now_ms`, from `schedule`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use herd_core::model::SchedulerKind;

use super::lc::{heavier, wlc_pick};
use super::{ConnInfo, DestView, Scheduler};

/// The kernel's default for the `lblc_expiration` and `lblcr_expiration` sysctls: 24 hours.
pub const LBLC_DEFAULT_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;

/// `CHECK_EXPIRE_INTERVAL`: how often the collection runs.
const CHECK_EXPIRE_INTERVAL_MS: u64 = 60 * 1000;
/// `ENTRY_TIMEOUT`: idle time after which an entry may be collected when the table is full.
const ENTRY_TIMEOUT_MS: u64 = 6 * 60 * 1000;
/// `IP_VS_LBLC_TAB_SIZE * 16`: the entry count above which idle entries are collected.
const MAX_ENTRIES: usize = 1024 * 16;

/// The kernel's `is_overloaded` for lblc and lblcr: the server has more active connections
/// than its weight while some server in the service is below half of its weight. Both
/// halves are absolute, not relative to weight ratios: a busy cache is only abandoned when
/// there is clearly spare capacity elsewhere.
fn is_overloaded(dests: &[DestView], i: usize) -> bool {
    let d = &dests[i];
    d.active > d.weight
        && dests
            .iter()
            .any(|m| u64::from(m.active) * 2 < u64::from(m.weight))
}

fn expired(now: u64, lastuse: u64, expiration: u64) -> bool {
    now.saturating_sub(lastuse) >= expiration
}

/// The minute timer's work: drop expired entries, and when the table is over its size limit,
/// the least recently used entries idle for `ENTRY_TIMEOUT`, up to the kernel's goal of 4/3
/// of the excess (at most half the limit).
fn collect_garbage<E>(
    map: &mut HashMap<IpAddr, E>,
    lastuse: impl Fn(&E) -> u64,
    now: u64,
    expiration: u64,
) {
    map.retain(|_, e| !expired(now, lastuse(e), expiration));
    if map.len() > MAX_ENTRIES {
        let goal = ((map.len() - MAX_ENTRIES) * 4 / 3).min(MAX_ENTRIES / 2);
        let mut idle: Vec<(u64, IpAddr)> = map
            .iter()
            .filter(|(_, e)| now.saturating_sub(lastuse(e)) >= ENTRY_TIMEOUT_MS)
            .map(|(k, e)| (lastuse(e), *k))
            .collect();
        idle.sort_unstable();
        for (_, k) in idle.into_iter().take(goal) {
            map.remove(&k);
        }
    }
}

fn position(dests: &[DestView], addr: SocketAddr) -> Option<usize> {
    dests.iter().position(|d| d.addr == addr)
}

#[derive(Debug, Clone)]
struct LblcEntry {
    dest: SocketAddr,
    lastuse: u64,
}

/// Locality-based least connection: a destination address keeps going to the real server
/// that first got it, unless that server has been removed, quiesced (weight 0), or is
/// overloaded by the kernel's rule (more active connections than its weight while another
/// server is below half of its weight); then the weighted least-connection choice replaces
/// it in the cache.
///
/// Kernel quirk kept on purpose: the cached server's overload flag (upper connection
/// threshold) is not looked at, so a destination address keeps reaching its cache even
/// above the threshold. New choices do skip overloaded servers.
#[derive(Debug, Clone)]
pub struct Lblc {
    cache: HashMap<IpAddr, LblcEntry>,
    expiration_ms: u64,
    next_check_ms: u64,
}

impl Default for Lblc {
    fn default() -> Self {
        Self::new()
    }
}

impl Lblc {
    /// A scheduler with the kernel's default expiration of 24 hours.
    pub fn new() -> Self {
        Self::with_expiration(LBLC_DEFAULT_EXPIRATION_MS)
    }

    /// A scheduler whose entries expire after `expiration_ms` without use, as the
    /// `lblc_expiration` sysctl sets it.
    pub fn with_expiration(expiration_ms: u64) -> Self {
        Lblc {
            cache: HashMap::new(),
            expiration_ms,
            next_check_ms: 0,
        }
    }

    /// The real server remembered for a destination address, if any (expired or not yet
    /// collected entries included), to inspect the cache.
    pub fn cached(&self, dest_ip: IpAddr) -> Option<SocketAddr> {
        self.cache.get(&dest_ip).map(|e| e.dest)
    }

    /// The number of remembered destination addresses.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn tick(&mut self, now: u64) {
        if now >= self.next_check_ms {
            collect_garbage(&mut self.cache, |e| e.lastuse, now, self.expiration_ms);
            self.next_check_ms = now.saturating_add(CHECK_EXPIRE_INTERVAL_MS);
        }
    }
}

impl Scheduler for Lblc {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblc
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], conn: &ConnInfo, now_ms: u64) -> Option<usize> {
        self.tick(now_ms);
        let key = conn.vip.ip();
        let expiration = self.expiration_ms;
        if let Some(en) = self.cache.get_mut(&key) {
            if !expired(now_ms, en.lastuse, expiration) {
                en.lastuse = now_ms;
                if let Some(i) = position(dests, en.dest) {
                    if dests[i].weight > 0 && !is_overloaded(dests, i) {
                        return Some(i);
                    }
                }
            }
        }
        let i = wlc_pick(dests)?;
        self.cache.insert(
            key,
            LblcEntry {
                dest: dests[i].addr,
                lastuse: now_ms,
            },
        );
        Some(i)
    }
}

#[derive(Debug, Clone)]
struct LblcrEntry {
    /// The server set, most recently added first.
    set: Vec<SocketAddr>,
    /// Last change of the set.
    lastmod: u64,
    lastuse: u64,
}

/// Locality-based least connection with replication: a destination address maps to a set of
/// real servers, and a connection goes to the weighted least-connection server of its set.
///
/// When that server is overloaded by the kernel's rule (see [`Lblc`]), or no server of the
/// set is usable, the weighted least-connection server of the whole service serves the
/// connection and joins the set, so a hot destination spreads over more caches. When the set
/// has more than one server and has not changed for the expiration time (24 hours by
/// default), its most loaded server is dropped from it, so that sets shrink back once the
/// load is gone. As in the kernel, the server chosen from the set before that pruning is
/// still used for the connection even if it was the one dropped.
///
/// Unlike lblc, servers of the set with the overload flag are skipped. A removed server
/// stays in the sets (as the kernel keeps it referenced from its trash) and counts for the
/// set size, but it is never chosen, and since its weight and counts are no longer known it
/// is never the one pruned either (the kernel would still weigh it by its last counts).
#[derive(Debug, Clone)]
pub struct Lblcr {
    cache: HashMap<IpAddr, LblcrEntry>,
    expiration_ms: u64,
    next_check_ms: u64,
}

impl Default for Lblcr {
    fn default() -> Self {
        Self::new()
    }
}

impl Lblcr {
    /// A scheduler with the kernel's default expiration of 24 hours.
    pub fn new() -> Self {
        Self::with_expiration(LBLC_DEFAULT_EXPIRATION_MS)
    }

    /// A scheduler whose entries expire, and whose sets shrink, after `expiration_ms`, as
    /// the `lblcr_expiration` sysctl sets it.
    pub fn with_expiration(expiration_ms: u64) -> Self {
        Lblcr {
            cache: HashMap::new(),
            expiration_ms,
            next_check_ms: 0,
        }
    }

    /// The server set remembered for a destination address, most recently added first.
    pub fn server_set(&self, dest_ip: IpAddr) -> Option<&[SocketAddr]> {
        self.cache.get(&dest_ip).map(|e| e.set.as_slice())
    }

    /// The number of remembered destination addresses.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn tick(&mut self, now: u64) {
        if now >= self.next_check_ms {
            collect_garbage(&mut self.cache, |e| e.lastuse, now, self.expiration_ms);
            self.next_check_ms = now.saturating_add(CHECK_EXPIRE_INTERVAL_MS);
        }
    }
}

/// `ip_vs_dest_set_min`: the weighted least-connection server of a set, skipping servers that
/// are overloaded, quiesced (as the first candidate) or no longer in the service.
fn set_min(set: &[SocketAddr], dests: &[DestView]) -> Option<usize> {
    let mut members = set.iter().filter_map(|&a| position(dests, a));
    let least = members.by_ref().find(|&i| dests[i].usable())?;
    let (mut least, mut loh) = (least, dests[least].overhead());
    for i in members {
        let d = &dests[i];
        if d.overloaded {
            continue;
        }
        let doh = d.overhead();
        if heavier(loh, dests[least].weight, doh, d.weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// `ip_vs_dest_set_max`: the position in the set of its most loaded server per weight, among
/// servers with a weight above zero (overloaded ones included).
fn set_max(set: &[SocketAddr], dests: &[DestView]) -> Option<usize> {
    let mut members = set
        .iter()
        .enumerate()
        .filter_map(|(k, &a)| position(dests, a).map(|i| (k, i)))
        .filter(|&(_, i)| dests[i].weight > 0);
    let (mut most_k, mut most) = members.next()?;
    let mut moh = dests[most].overhead();
    for (k, i) in members {
        let doh = dests[i].overhead();
        if heavier(doh, dests[i].weight, moh, dests[most].weight) {
            most_k = k;
            most = i;
            moh = doh;
        }
    }
    Some(most_k)
}

impl Scheduler for Lblcr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblcr
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], conn: &ConnInfo, now_ms: u64) -> Option<usize> {
        self.tick(now_ms);
        let key = conn.vip.ip();
        let expiration = self.expiration_ms;
        if let Some(en) = self.cache.get_mut(&key) {
            if !expired(now_ms, en.lastuse, expiration) {
                en.lastuse = now_ms;
                let dest = set_min(&en.set, dests);
                // More than one server and no change for a while: drop the most loaded.
                if en.set.len() > 1 && now_ms > en.lastmod.saturating_add(expiration) {
                    if let Some(k) = set_max(&en.set, dests) {
                        en.set.remove(k);
                        en.lastmod = now_ms;
                    }
                }
                if let Some(i) = dest.filter(|&i| !is_overloaded(dests, i)) {
                    return Some(i);
                }
                let i = wlc_pick(dests)?;
                if !en.set.contains(&dests[i].addr) {
                    en.set.insert(0, dests[i].addr);
                    en.lastmod = now_ms;
                }
                return Some(i);
            }
        }
        let i = wlc_pick(dests)?;
        self.cache.insert(
            key,
            LblcrEntry {
                set: vec![dests[i].addr],
                lastmod: now_ms,
                lastuse: now_ms,
            },
        );
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const HOUR: u64 = 60 * 60 * 1000;

    fn vip_ip(v: u32) -> IpAddr {
        conn(0, 0, v).vip.ip()
    }

    #[test]
    fn lblc_keeps_destination_on_its_server() {
        let mut dests = vec![dest(1, 1, 0, 0), dest(2, 1, 0, 0), dest(3, 1, 0, 0)];
        let mut s = Lblc::new();
        // vip 1: wlc picks the first idle server.
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        dests[0].active = 1;
        // vip 2: wlc now picks server 1; vip 1 stays on server 0 for any client.
        assert_eq!(s.schedule(&dests, &conn(2, 1, 2), 10), Some(1));
        dests[1].active = 1;
        for c in 0..20 {
            assert_eq!(s.schedule(&dests, &conn(c, 7, 1), 20), Some(0));
            assert_eq!(s.schedule(&dests, &conn(c, 7, 2), 20), Some(1));
        }
        assert_eq!(s.cached(vip_ip(1)), Some(dests[0].addr));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn lblc_overload_rule() {
        // Cached server 0 has weight 2. Each case: (weight, active) per server, expected pick.
        type Case = (&'static str, [(u32, u32); 3], Option<usize>);
        let cases: Vec<Case> = vec![
            // active == weight: not overloaded.
            ("at weight", [(2, 2), (2, 0), (2, 0)], Some(0)),
            // active > weight and server 2 is below half its weight (0*2 < 2): move to wlc.
            ("over, spare elsewhere", [(2, 3), (2, 5), (2, 0)], Some(2)),
            // active > weight but nobody below half its weight (1*2 < 2 is false): stay.
            ("over, no spare", [(2, 3), (2, 1), (2, 1)], Some(0)),
            // Far over weight: the rule does not compare loads, only the two thresholds.
            ("far over, no spare", [(2, 50), (2, 1), (2, 1)], Some(0)),
            // A quiesced server (weight 0) never counts as spare capacity.
            (
                "over, spare only quiesced",
                [(2, 3), (2, 1), (0, 0)],
                Some(0),
            ),
        ];
        for (name, spec, want) in cases {
            let mut s = Lblc::new();
            let mut dests: Vec<DestView> = spec
                .iter()
                .enumerate()
                .map(|(i, &(w, _))| dest(i as u32 + 1, w, 0, 0))
                .collect();
            assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0), "{name}");
            for (d, &(_, a)) in dests.iter_mut().zip(&spec) {
                d.active = a;
            }
            assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 1), want, "{name}");
            // The cache follows the new choice.
            let want_addr = want.map(|i| dests[i].addr);
            assert_eq!(s.cached(vip_ip(1)), want_addr, "{name}");
        }
    }

    #[test]
    fn lblc_reschedules_when_cached_dest_quiesced_or_removed() {
        let mut dests = vec![dest(1, 10, 0, 0), dest(2, 10, 5, 0), dest(3, 10, 9, 0)];
        let mut s = Lblc::new();
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        dests[0].weight = 0;
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 1), Some(1));
        dests[0].weight = 10;
        // Cached server 1 is fine again; the entry was replaced and stays.
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 2), Some(1));
        // Remove server 1: reschedule among the rest (server 0 is idle).
        let rest = vec![dests[0], dests[2]];
        assert_eq!(s.schedule(&rest, &conn(1, 1, 1), 3), Some(0));
        assert_eq!(s.cached(vip_ip(1)), Some(dests[0].addr));
    }

    #[test]
    fn lblc_cached_dest_ignores_overload_flag_like_the_kernel() {
        let mut dests = vec![dest(1, 1, 0, 0), dest(2, 1, 0, 0)];
        let mut s = Lblc::new();
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        dests[0].overloaded = true;
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 1), Some(0));
        // A new destination skips the overloaded server.
        assert_eq!(s.schedule(&dests, &conn(1, 1, 2), 1), Some(1));
    }

    #[test]
    fn lblc_entries_expire() {
        let mut dests = vec![dest(1, 1, 0, 0), dest(2, 1, 0, 0)];
        let mut s = Lblc::new();
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        dests[0].active = 1;
        // Used every 23 hours: never expires, stays on server 0.
        for k in 1..5 {
            assert_eq!(s.schedule(&dests, &conn(1, 1, 1), k * 23 * HOUR), Some(0));
        }
        // 24 hours without use: forgotten, wlc picks the idle server 1.
        assert_eq!(
            s.schedule(&dests, &conn(1, 1, 1), 4 * 23 * HOUR + 24 * HOUR),
            Some(1)
        );

        let mut short = Lblc::with_expiration(1000);
        let dests = vec![dest(1, 1, 0, 0), dest(2, 1, 0, 0)];
        assert_eq!(short.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        let busy = vec![dest(1, 1, 1, 0), dest(2, 1, 0, 0)];
        assert_eq!(short.schedule(&busy, &conn(1, 1, 1), 999), Some(0));
        assert_eq!(short.schedule(&busy, &conn(1, 1, 1), 1999), Some(1));
    }

    #[test]
    fn lblc_expired_entries_are_collected() {
        let dests = vec![dest(1, 1, 0, 0)];
        let mut s = Lblc::new();
        for v in 0..10 {
            s.schedule(&dests, &conn(1, 1, v), 0);
        }
        assert_eq!(s.len(), 10);
        s.schedule(&dests, &conn(1, 1, 100), 25 * HOUR);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn lblc_full_table_collects_idle_entries() {
        let dests = vec![dest(1, 1, 0, 0)];
        let mut s = Lblc::new();
        let n = MAX_ENTRIES as u32 + 300;
        for v in 0..n {
            // All within the first minute, so no collection runs yet after the first call.
            s.schedule(&dests, &conn(1, 1, v), u64::from(v) % 1000);
        }
        assert_eq!(s.len(), n as usize);
        // Seven minutes later the timer collects 4/3 of the excess among idle entries
        // before the new destination is added.
        s.schedule(&dests, &conn(1, 1, n + 1), 7 * 60 * 1000);
        assert_eq!(s.len(), n as usize - 400 + 1);
        assert!(s.cached(vip_ip(0)).is_none(), "the oldest entries go first");
    }

    #[test]
    fn lblcr_set_grows_when_overloaded_and_shrinks_after_expiration() {
        let a = dest(1, 2, 0, 0);
        let b = dest(2, 2, 0, 0);
        let c = dest(3, 2, 0, 0);
        let mut s = Lblcr::new();
        let ip = vip_ip(1);
        let at = |aa: u32, ba: u32, ca: u32| {
            let mut v = vec![a, b, c];
            v[0].active = aa;
            v[1].active = ba;
            v[2].active = ca;
            v
        };
        // New destination: the wlc choice, alone in its set.
        assert_eq!(s.schedule(&at(0, 0, 0), &conn(1, 1, 1), 0), Some(0));
        assert_eq!(s.server_set(ip), Some(&[a.addr][..]));
        // Server a over its weight while b is below half of its weight: b joins the set.
        assert_eq!(s.schedule(&at(3, 0, 1), &conn(1, 1, 1), 10), Some(1));
        assert_eq!(s.server_set(ip), Some(&[b.addr, a.addr][..]));
        // Now the set's least loaded member serves; c (outside the set) is not used.
        assert_eq!(s.schedule(&at(3, 1, 0), &conn(1, 1, 1), 20), Some(1));
        assert_eq!(s.schedule(&at(1, 2, 0), &conn(1, 1, 1), 30), Some(0));
        // Within the expiration the set does not shrink.
        assert_eq!(
            s.schedule(&at(1, 2, 0), &conn(1, 1, 1), 10 + 24 * HOUR),
            Some(0)
        );
        assert_eq!(s.server_set(ip).map(<[_]>::len), Some(2));
        // Strictly after lastmod + expiration the most loaded (b) is dropped.
        assert_eq!(
            s.schedule(&at(1, 2, 0), &conn(1, 1, 1), 11 + 24 * HOUR),
            Some(0)
        );
        assert_eq!(s.server_set(ip), Some(&[a.addr][..]));
    }

    #[test]
    fn lblcr_uses_pick_even_if_pruned() {
        // The set's least loaded server is chosen before pruning; if pruning drops it (it
        // is also the most loaded per weight in a one-sided comparison), it still serves.
        let a = dest(1, 1, 0, 0);
        let b = dest(2, 1, 0, 0);
        let mut s = Lblcr::with_expiration(1000);
        let ip = vip_ip(1);
        assert_eq!(s.schedule(&[a, b], &conn(1, 1, 1), 0), Some(0));
        let mut over = [a, b];
        over[0].active = 2; // a over weight 1, b below half -> b joins
        assert_eq!(s.schedule(&over, &conn(1, 1, 1), 100), Some(1));
        assert_eq!(s.server_set(ip), Some(&[b.addr, a.addr][..]));
        // Both equally loaded: set_min picks b (first); set_max keeps the first too (b).
        let mut eq = [a, b];
        eq[0].active = 1;
        eq[1].active = 1;
        // A use within the expiration keeps the entry alive without changing the set.
        assert_eq!(s.schedule(&eq, &conn(1, 1, 1), 600), Some(1));
        assert_eq!(s.server_set(ip).map(<[_]>::len), Some(2));
        // Past lastmod + expiration, b is dropped from the set, yet b serves this connection.
        assert_eq!(s.schedule(&eq, &conn(1, 1, 1), 1101), Some(1));
        assert_eq!(s.server_set(ip), Some(&[a.addr][..]));
    }

    #[test]
    fn lblcr_skips_overloaded_and_removed_members() {
        let a = dest(1, 1, 0, 0);
        let b = dest(2, 1, 0, 0);
        let c = dest(3, 1, 0, 0);
        let mut s = Lblcr::new();
        let ip = vip_ip(1);
        assert_eq!(s.schedule(&[a, b, c], &conn(1, 1, 1), 0), Some(0));
        // a flagged overloaded: no usable member, wlc over the service picks b.
        let mut l = [a, b, c];
        l[0].overloaded = true;
        assert_eq!(s.schedule(&l, &conn(1, 1, 1), 1), Some(1));
        assert_eq!(s.server_set(ip), Some(&[b.addr, a.addr][..]));
        // b removed from the service: a is usable again and serves.
        assert_eq!(s.schedule(&[a, c], &conn(1, 1, 1), 2), Some(0));
        // Removed members stay in the set.
        assert_eq!(s.server_set(ip).map(<[_]>::len), Some(2));
    }

    #[test]
    fn lblcr_entries_expire() {
        let mut s = Lblcr::new();
        let dests = [dest(1, 1, 0, 0), dest(2, 1, 0, 0)];
        assert_eq!(s.schedule(&dests, &conn(1, 1, 1), 0), Some(0));
        let busy = [dest(1, 1, 1, 0), dest(2, 1, 0, 0)];
        assert_eq!(s.schedule(&busy, &conn(1, 1, 1), 23 * HOUR), Some(0));
        assert_eq!(s.schedule(&busy, &conn(1, 1, 1), 47 * HOUR), Some(1));
        assert_eq!(s.server_set(vip_ip(1)), Some(&[dests[1].addr][..]));
    }
}
