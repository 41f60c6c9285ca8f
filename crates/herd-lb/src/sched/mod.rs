//! The fourteen IPVS schedulers, as pure code.
//!
//! A scheduler sees the real servers of one virtual service as a slice of [`DestView`]s, in the
//! kernel's list order (the most recently added real server first, as `ip_vs_add_dest` links
//! new destinations at the head of the list), and picks one for a new connection. It never
//! does I/O, never reads a clock (time comes in as `now_ms`) and draws randomness from its own
//! seeded generator, so every decision is reproducible in tests.
//!
//! Availability follows the kernel: a real server with weight 0 or the overload flag (above
//! its upper connection threshold) gets no new connections from any scheduler, except where
//! the kernel's scheduler says otherwise (documented per scheduler). The one exception is
//! [`Lblc`]: like `ip_vs_lblc`, it keeps sending a destination address to its cached real
//! server while that server has a weight above zero, without looking at the overload flag.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use herd_core::model::{SchedFlags, SchedulerKind};

mod fo;
mod hash;
mod lblc;
mod lc;
mod mh;
mod rng;
mod rr;
mod twos;
mod wrr;

#[cfg(test)]
mod testutil;

pub use fo::{WeightedFailover, WeightedOverflow};
pub use hash::{DestHash, SourceHash, HASH_TAB_SIZE};
pub use lblc::{Lblc, Lblcr, LBLC_DEFAULT_EXPIRATION_MS};
pub(crate) use lc::wlc_pick;
pub use lc::{LeastConn, NeverQueue, ShortestExpectedDelay, WeightedLeastConn};
pub use mh::{Maglev, MH_DEFAULT_TAB_SIZE, MH_PRIMES};
pub use rng::SplitMix64;
pub use rr::RoundRobin;
pub use twos::TwoChoices;
pub use wrr::WeightedRoundRobin;

/// A scheduler's view of one real server at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestView {
    /// Identity of the real server; hash tables key on it.
    pub addr: SocketAddr,
    /// The configured weight; 0 quiesces the server (existing connections stay, new ones
    /// go elsewhere).
    pub weight: u32,
    /// Connections in an active state (for TCP: established), the kernel's `activeconns`.
    pub active: u32,
    /// Connections in any other state, the kernel's `inactconns`.
    pub inactive: u32,
    /// Above its upper connection threshold (the kernel's `IP_VS_DEST_F_OVERLOAD`).
    pub overloaded: bool,
}

impl DestView {
    /// The kernel's `ip_vs_dest_conn_overhead`: active connections weigh 256 times an inactive
    /// one.
    pub fn overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }

    /// Weight above zero and not overloaded.
    pub fn usable(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }
}

/// What a scheduler may look at of the new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address and port (the packet's source).
    pub client: SocketAddr,
    /// The virtual service address the client connected to (the packet's destination).
    pub vip: SocketAddr,
}

/// One scheduling method.
pub trait Scheduler: Send + fmt::Debug {
    /// The method this scheduler implements, so that callers can show and compare it.
    fn kind(&self) -> SchedulerKind;

    /// Called whenever the list of real servers or one of their weights or thresholds changed
    /// (the kernel's `add_dest`/`del_dest`/`upd_dest` hooks); hash-based schedulers rebuild
    /// their tables here.
    fn update(&mut self, dests: &[DestView]);

    /// Picks the real server for a new connection: an index into `dests`, or `None` when no
    /// real server is available. `dests` is the same list last passed to `update`, with fresh
    /// connection counts.
    fn schedule(&mut self, dests: &[DestView], conn: &ConnInfo, now_ms: u64) -> Option<usize>;
}

/// Creates a scheduler. `seed` feeds the schedulers that draw random numbers (`twos`).
///
/// `flags` only matter to `sh` and `mh` (fallback to another real server, hashing the source
/// port); the other methods ignore them, as the kernel does.
pub fn new_scheduler(kind: SchedulerKind, flags: SchedFlags, seed: u64) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::Rr => Box::new(RoundRobin::new()),
        SchedulerKind::Wrr => Box::new(WeightedRoundRobin::new()),
        SchedulerKind::Lc => Box::new(LeastConn),
        SchedulerKind::Wlc => Box::new(WeightedLeastConn),
        SchedulerKind::Lblc => Box::new(Lblc::new()),
        SchedulerKind::Lblcr => Box::new(Lblcr::new()),
        SchedulerKind::Dh => Box::new(DestHash::new()),
        SchedulerKind::Sh => Box::new(SourceHash::new(flags)),
        SchedulerKind::Sed => Box::new(ShortestExpectedDelay),
        SchedulerKind::Nq => Box::new(NeverQueue),
        SchedulerKind::Fo => Box::new(WeightedFailover),
        SchedulerKind::Ovf => Box::new(WeightedOverflow),
        SchedulerKind::Mh => Box::new(Maglev::new(flags)),
        SchedulerKind::Twos => Box::new(TwoChoices::new(seed)),
    }
}

/// The kernel's 32-bit fold of an address for its hash tables: the IPv4 address in host
/// order, or the XOR of the four 32-bit words of an IPv6 address.
pub(crate) fn addr_fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            o.chunks_exact(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .fold(0, |acc, w| acc ^ w)
        }
    }
}

/// What a table-building scheduler saw at its last rebuild: addresses and weights in list
/// order. Comparing it with the list handed to `schedule` lets a scheduler rebuild itself
/// when a caller forgot to call `update`, instead of returning an index for the wrong list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot(Vec<(SocketAddr, u32)>);

impl Snapshot {
    pub(crate) fn of(dests: &[DestView]) -> Self {
        Snapshot(dests.iter().map(|d| (d.addr, d.weight)).collect())
    }

    pub(crate) fn matches(&self, dests: &[DestView]) -> bool {
        self.0.len() == dests.len()
            && self
                .0
                .iter()
                .zip(dests)
                .all(|(&(a, w), d)| a == d.addr && w == d.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addr_fold_matches_kernel() {
        assert_eq!(addr_fold("10.0.0.1".parse().unwrap()), 0x0a00_0001);
        // 2001:db8::1 -> 0x20010db8 ^ 0 ^ 0 ^ 0x00000001
        assert_eq!(addr_fold("2001:db8::1".parse().unwrap()), 0x2001_0db9);
    }

    #[test]
    fn every_kind_is_constructed_with_its_kind() {
        for kind in SchedulerKind::ALL {
            let s = new_scheduler(kind, SchedFlags::default(), 1);
            assert_eq!(s.kind(), kind);
        }
    }

    #[test]
    fn empty_list_gives_none_for_every_scheduler() {
        for kind in SchedulerKind::ALL {
            for flags in all_flags() {
                let mut s = new_scheduler(kind, flags, 7);
                s.update(&[]);
                assert_eq!(s.schedule(&[], &conn(1, 1000, 1), 0), None, "{kind}");
                // Also without a prior update.
                let mut s = new_scheduler(kind, flags, 7);
                assert_eq!(s.schedule(&[], &conn(1, 1000, 1), 0), None, "{kind}");
            }
        }
    }

    #[test]
    fn unusable_dests_are_never_picked_by_any_scheduler() {
        // Every real server is either quiesced (weight 0) or overloaded.
        let dests = [
            dest(1, 0, 0, 0),
            overloaded(dest(2, 5, 0, 0)),
            dest(3, 0, 9, 9),
            overloaded(dest(4, 1, 0, 0)),
        ];
        for kind in SchedulerKind::ALL {
            for flags in all_flags() {
                let mut s = new_scheduler(kind, flags, 3);
                s.update(&dests);
                for c in 0..50 {
                    assert_eq!(
                        s.schedule(&dests, &conn(c, 40000 + c as u16, c), 0),
                        None,
                        "{kind}"
                    );
                }
            }
        }
    }

    #[test]
    fn single_usable_dest_among_unusable_is_found() {
        // The usable one has no more active connections than its weight, so that ovf takes it.
        let dests = [
            dest(1, 0, 0, 0),
            overloaded(dest(2, 5, 0, 0)),
            dest(3, 2, 2, 1),
            dest(4, 0, 0, 0),
        ];
        for kind in SchedulerKind::ALL {
            let mut s = new_scheduler(
                kind,
                SchedFlags {
                    fallback: true,
                    port: false,
                },
                3,
            );
            s.update(&dests);
            for c in 0..50 {
                let got = s.schedule(&dests, &conn(c, 1000, c), 0);
                if kind == SchedulerKind::Dh {
                    // dh has no fallback: a bucket of an unusable real server yields nothing.
                    assert!(matches!(got, None | Some(2)), "{kind} conn {c}: {got:?}");
                } else {
                    // Everyone else, sh and mh with fallback included, finds the only one.
                    assert_eq!(got, Some(2), "{kind} conn {c}");
                }
            }
        }
    }

    fn arb_dests() -> impl Strategy<Value = Vec<DestView>> {
        prop::collection::vec(
            (0u32..6, 0u32..40, 0u32..40, prop::bool::weighted(0.2)),
            0..9,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (w, a, ina, o))| {
                    let mut d = dest(i as u32 + 1, w, a, ina);
                    d.overloaded = o;
                    d
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every scheduler returns an index into the list, and the index names a usable real
        /// server. The documented exception is lblc, whose cached real server only needs a
        /// weight above zero (the kernel does not look at its overload flag).
        #[test]
        fn every_pick_is_in_range_and_usable(
            lists in prop::collection::vec(arb_dests(), 1..4),
            conns in prop::collection::vec((0u32..64, 0u16..4, 0u32..4), 1..40),
            seed in any::<u64>(),
            fallback in any::<bool>(),
            port in any::<bool>(),
        ) {
            for kind in SchedulerKind::ALL {
                let mut s = new_scheduler(kind, SchedFlags { fallback, port }, seed);
                let mut now = 0u64;
                for dests in &lists {
                    s.update(dests);
                    for &(c, p, v) in &conns {
                        now += 1_000;
                        let ci = conn(c, 1000 + p, v);
                        if let Some(i) = s.schedule(dests, &ci, now) {
                            prop_assert!(i < dests.len(), "{kind}: {i} out of range");
                            if kind == SchedulerKind::Lblc {
                                prop_assert!(dests[i].weight > 0, "{kind}: weight 0 picked");
                            } else {
                                prop_assert!(dests[i].usable(), "{kind}: unusable {:?}", dests[i]);
                            }
                        } else if kind == SchedulerKind::Ovf {
                            // ovf also refuses servers with more active connections than weight.
                            prop_assert!(
                                !dests.iter().any(|d| d.usable() && d.active <= d.weight),
                                "{kind}: None with servers below their weight"
                            );
                        } else if !matches!(kind, SchedulerKind::Dh | SchedulerKind::Sh | SchedulerKind::Mh) {
                            // Only the hash schedulers may refuse while a usable dest exists.
                            prop_assert!(!dests.iter().any(DestView::usable), "{kind}: None with usable dests");
                        }
                    }
                }
            }
        }

        /// With fallback, the hash schedulers also find a usable real server whenever there
        /// is one (mh only among the dests that were in the table: ones added with weight 0
        /// are left out).
        #[test]
        fn hash_fallback_finds_usable(dests in arb_dests(), c in 0u32..1000, p in 0u16..100) {
            let usable = dests.iter().any(DestView::usable);
            for kind in [SchedulerKind::Sh, SchedulerKind::Mh] {
                let mut s = new_scheduler(kind, SchedFlags { fallback: true, port: true }, 0);
                s.update(&dests);
                let got = s.schedule(&dests, &conn(c, p, 0), 0);
                prop_assert_eq!(got.is_some(), usable, "{}", kind);
            }
        }
    }
}
