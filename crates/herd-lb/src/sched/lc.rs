//! The least-connection family: `lc`, `wlc`, `sed` and `nq`.
//!
//! All of them compare loads without division, as the kernel does: `a/wa > b/wb` is written
//! `a * wb > b * wa`. The products are computed in 128 bits, so they cannot overflow even for
//! extreme counts and weights (the kernel uses 64 bits, which is the same for any realistic
//! count).

use herd_core::model::SchedulerKind;

use super::{ConnInfo, DestView, Scheduler};

/// `lhs_load * rhs_weight > rhs_load * lhs_weight`, i.e. the load per weight of the left
/// side is higher than the right side's.
pub(crate) fn heavier(lhs_load: u64, lhs_weight: u32, rhs_load: u64, rhs_weight: u32) -> bool {
    u128::from(lhs_load) * u128::from(rhs_weight) > u128::from(rhs_load) * u128::from(lhs_weight)
}

/// The kernel's weighted-least pattern shared by `wlc`, `sed`, `lblc` and `lblcr`: the first
/// usable server is the initial candidate, and a later server replaces the candidate only
/// when the candidate is strictly heavier per weight, so ties go to the earlier server.
/// Later servers are skipped only for the overload flag; one with weight 0 can never win,
/// because `load * 0 > x` is never true.
fn weighted_least(dests: &[DestView], load: impl Fn(&DestView) -> u64) -> Option<usize> {
    let first = dests.iter().position(DestView::usable)?;
    let mut least = first;
    let mut loh = load(&dests[first]);
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.overloaded {
            continue;
        }
        let doh = load(d);
        if heavier(loh, dests[least].weight, doh, d.weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// The weighted least-connection choice (`ip_vs_wlc_schedule`, also `__ip_vs_lblc_schedule`).
pub(crate) fn wlc_pick(dests: &[DestView]) -> Option<usize> {
    weighted_least(dests, DestView::overhead)
}

/// The kernel's `ip_vs_sed_dest_overhead`: only active connections count, plus one for the
/// connection being scheduled.
fn sed_overhead(d: &DestView) -> u64 {
    u64::from(d.active) + 1
}

/// Least connection (`ip_vs_lc`): the usable real server with the smallest
/// [`DestView::overhead`], ignoring weights except that weight 0 quiesces a server.
///
/// Ties go to the first server in list order, because the kernel only replaces its
/// candidate on a strictly smaller overhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastConn;

impl Scheduler for LeastConn {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lc
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.usable() {
                continue;
            }
            let doh = d.overhead();
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

/// Weighted least connection (`ip_vs_wlc`, ipvsadm's default): the usable real server with
/// the smallest overhead per weight, so a server of twice the weight is expected to carry
/// twice the connections.
///
/// The first usable server is the starting candidate and only a strictly lower
/// `overhead / weight` (compared as `loh * w > doh * lw`) replaces it, so ties go to the
/// earlier server in list order, i.e. the most recently added one.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedLeastConn;

impl Scheduler for WeightedLeastConn {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wlc
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        wlc_pick(dests)
    }
}

/// Shortest expected delay (`ip_vs_sed`): the usable real server minimising
/// `(active + 1) / weight`, the delay the new connection would see if each server works its
/// queue at a rate proportional to its weight.
///
/// Unlike wlc it counts the new connection itself and ignores inactive connections, which
/// makes it send work to a fast idle server rather than to a slow idle one. Ties go to the
/// earlier server in list order.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sed
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        weighted_least(dests, sed_overhead)
    }
}

/// Never queue (`ip_vs_nq`): the first usable real server with no active connection, so that
/// an idle server is used rather than making the connection wait behind others; when every
/// server is busy, the shortest-expected-delay choice.
///
/// Only active connections decide whether a server is idle; inactive ones (e.g. TIME_WAIT)
/// are ignored, as in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Nq
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.usable() {
                continue;
            }
            if d.active == 0 {
                return Some(i);
            }
            let doh = sed_overhead(d);
            if least.is_none_or(|(l, loh)| heavier(loh, dests[l].weight, doh, d.weight)) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// One crafted list and the pick of each method: (lc, wlc, sed, nq).
    type Case = (&'static str, Vec<DestView>, [Option<usize>; 4]);

    fn check(cases: Vec<Case>) {
        for (name, dests, want) in cases {
            let mut scheds: [Box<dyn Scheduler>; 4] = [
                Box::new(LeastConn),
                Box::new(WeightedLeastConn),
                Box::new(ShortestExpectedDelay),
                Box::new(NeverQueue),
            ];
            for (s, want) in scheds.iter_mut().zip(want) {
                s.update(&dests);
                let got = s.schedule(&dests, &conn(1, 1000, 1), 0);
                assert_eq!(got, want, "{name}: {}", s.kind());
            }
        }
    }

    #[test]
    fn formula_picks() {
        check(vec![
            ("empty", vec![], [None; 4]),
            (
                "all quiesced or overloaded",
                vec![dest(1, 0, 0, 0), overloaded(dest(2, 3, 0, 0))],
                [None; 4],
            ),
            ("single", vec![dest(1, 1, 5, 5)], [Some(0); 4]),
            (
                // Idle servers: wlc keeps the first (0*w > 0*w is false); sed prefers the
                // heaviest weight ((0+1)/10 < (0+1)/1); nq takes the first idle one.
                "idle, different weights",
                vec![dest(1, 1, 0, 0), dest(2, 10, 0, 0)],
                [Some(0), Some(0), Some(1), Some(0)],
            ),
            (
                // wlc: 256/1 vs 768/3 tie -> first. sed: 2/1 vs 4/3 -> second.
                "wlc tie, sed differs",
                vec![dest(1, 1, 1, 0), dest(2, 3, 3, 0)],
                [Some(0), Some(0), Some(1), Some(1)],
            ),
            (
                // lc counts overhead only: 256*2+0 vs 256*1+300 = 512 vs 556 -> first.
                // wlc: 512/1 vs 556/4 -> second. sed: 3/1 vs 2/4 -> second.
                "inactive matters to lc and wlc only",
                vec![dest(1, 1, 2, 0), dest(2, 4, 1, 300)],
                [Some(0), Some(1), Some(1), Some(1)],
            ),
            (
                // The second server has no active connection: nq takes it at once, while sed
                // weighs (0+1)/1 against (2+1)/10 and takes the first. lc: 512 vs 50;
                // wlc: 512/10 vs 50/1 -> second.
                "nq idle test uses active only",
                vec![dest(1, 10, 2, 0), dest(2, 1, 0, 50)],
                [Some(1), Some(1), Some(0), Some(1)],
            ),
            (
                // nq takes the first idle server, not the best weight among idle ones.
                "nq first idle",
                vec![dest(1, 5, 3, 0), dest(2, 1, 0, 0), dest(3, 100, 0, 0)],
                [Some(1), Some(1), Some(2), Some(1)],
            ),
            (
                // Nobody idle: nq falls back to sed. sed: 5/2, 3/1, 9/6 -> third.
                "nq falls back to sed",
                vec![dest(1, 2, 4, 0), dest(2, 1, 2, 0), dest(3, 6, 8, 0)],
                [Some(1), Some(2), Some(2), Some(2)],
            ),
            (
                "ties go to the first in list order",
                vec![dest(1, 2, 3, 1), dest(2, 2, 3, 1), dest(3, 2, 3, 1)],
                [Some(0); 4],
            ),
            (
                // Proportional load: 4/2 == 2/1 for wlc -> first; sed 5/2 < 3/1 -> first;
                // lc only sees the smaller count.
                "wlc proportional tie",
                vec![dest(1, 2, 4, 0), dest(2, 1, 2, 0)],
                [Some(1), Some(0), Some(0), Some(0)],
            ),
            (
                // Skipped: weight 0 (least loaded but quiesced) and overloaded.
                "skip unusable",
                vec![
                    dest(1, 0, 0, 0),
                    overloaded(dest(2, 9, 0, 0)),
                    dest(3, 1, 7, 0),
                    dest(4, 1, 5, 0),
                ],
                [Some(3), Some(3), Some(3), Some(3)],
            ),
            (
                // A quiesced server after the first usable one can never win, even idle.
                "weight 0 later in the list",
                vec![dest(1, 1, 9, 9), dest(2, 0, 0, 0)],
                [Some(0); 4],
            ),
            (
                // Counts and weights large enough to overflow 64-bit products.
                "huge numbers",
                vec![
                    dest(1, u32::MAX, u32::MAX, u32::MAX),
                    dest(2, u32::MAX - 1, u32::MAX, u32::MAX),
                ],
                [Some(0), Some(0), Some(0), Some(0)],
            ),
        ]);
    }

    #[test]
    fn wlc_balances_proportionally_to_weight() {
        // Feed each pick back as an active connection: loads end up proportional to weights.
        let mut dests = vec![dest(1, 1, 0, 0), dest(2, 2, 0, 0), dest(3, 3, 0, 0)];
        let mut s = WeightedLeastConn;
        for _ in 0..600 {
            let i = s.schedule(&dests, &conn(1, 1, 1), 0).unwrap();
            dests[i].active += 1;
        }
        let got: Vec<u32> = dests.iter().map(|d| d.active).collect();
        assert_eq!(got, vec![100, 200, 300]);
    }
}
