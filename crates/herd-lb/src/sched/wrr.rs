//! Weighted round robin (`ip_vs_wrr`).

use herd_core::model::SchedulerKind;

use super::{ConnInfo, DestView, Scheduler, Snapshot};

/// Weighted round robin with the kernel's pass structure.
///
/// The kernel walks the list in passes with a falling "current weight" `cw`: the first pass
/// takes every real server whose weight is at least `mw` (the maximum weight), the next at
/// least `mw - di` (`di` being the gcd of the weights), and so on down to 1, then starts over.
/// A server of weight `w` is therefore picked `w / di` times per cycle, and heavy servers are
/// picked first and most often within a cycle rather than in one burst. To let servers whose
/// weight was just lowered below `di` still be picked, `mw` is the maximum minus `di - 1`, so
/// that the last pass is always `cw = 1`.
///
/// On every change of the list (`ip_vs_wrr_dest_changed`) the position goes back to the head
/// of the list, `di` and `mw` are recomputed, and `cw` is kept when it still fits (rounded to
/// the new step), so a weight change does not restart the whole cycle. Servers with weight 0
/// or the overload flag are passed over; when every weight is 0 nothing is available.
#[derive(Debug, Clone, Default)]
pub struct WeightedRoundRobin {
    /// Index of the last pick; `None` is the list head.
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight, reduced by `di - 1`.
    mw: i64,
    /// Step between passes: the gcd of the positive weights.
    di: i64,
    snapshot: Snapshot,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl WeightedRoundRobin {
    /// A scheduler for an empty list, as `ip_vs_wrr_init_svc` creates it; the first `update`
    /// sets `cw` to the maximum weight.
    pub fn new() -> Self {
        WeightedRoundRobin {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
            snapshot: Snapshot::default(),
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wrr
    }

    fn update(&mut self, dests: &[DestView]) {
        let g = dests
            .iter()
            .map(|d| i64::from(d.weight))
            .filter(|&w| w > 0)
            .fold(0, |g, w| if g > 0 { gcd(w, g) } else { w });
        let max = dests.iter().map(|d| i64::from(d.weight)).max().unwrap_or(0);
        self.cl = None;
        self.di = if g > 0 { g } else { 1 };
        self.mw = max - (self.di - 1);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
        self.snapshot = Snapshot::of(dests);
    }

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        if !self.snapshot.matches(dests) {
            self.update(dests);
        }
        if self.mw == 0 {
            return None;
        }
        let n = dests.len();
        let last = self.cl.filter(|&i| i < n);
        let mut pos = last;
        // `stop` ends the search at `last` once every server was checked with cw = 1.
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        // The kernel's loop ends within two cycles of cw; the bound only guards the port.
        let max_passes = 2 * (self.mw / self.di.max(1) + 2);
        for _ in 0..max_passes {
            let start = pos.map_or(0, |i| i + 1);
            for (i, d) in dests.iter().enumerate().skip(start) {
                if !d.overloaded && i64::from(d.weight) >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            // End of the list: next pass with a lower weight, from the head.
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                // Every server was already checked for weight >= 1 in this call.
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
        self.cl = None;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn weights(ws: &[u32]) -> Vec<DestView> {
        ws.iter()
            .enumerate()
            .map(|(i, &w)| dest(i as u32 + 1, w, 0, 0))
            .collect()
    }

    fn run(dests: &[DestView], n: usize) -> Vec<Option<usize>> {
        let mut s = WeightedRoundRobin::new();
        s.update(dests);
        picks(&mut s, dests, n)
    }

    fn some(v: &[usize]) -> Vec<Option<usize>> {
        v.iter().map(|&i| Some(i)).collect()
    }

    /// Real servers added with weights 1, 2 and 3, in that order. The kernel links each new
    /// server at the head, so the list is [w3, w2, w1] (indices 0, 1, 2). With mw = 3, di = 1:
    ///
    /// * pass cw = 3 takes the servers of weight >= 3: index 0;
    /// * pass cw = 2 takes weight >= 2: indices 0, 1;
    /// * pass cw = 1 takes everyone: indices 0, 1, 2;
    ///
    /// so one cycle is 0 0 1 0 1 2 (weights 3 3 2 3 2 1), repeated.
    #[test]
    fn weights_1_2_3_added_in_order_interleave_like_the_kernel() {
        let list = weights(&[3, 2, 1]);
        let cycle = [0, 0, 1, 0, 1, 2];
        let want: Vec<usize> = cycle.iter().cycle().take(18).copied().collect();
        assert_eq!(run(&list, 18), some(&want));
    }

    /// The same weights with the list in the other order ([w1, w2, w3], i.e. added 3, 2, 1):
    /// pass 3 takes index 2; pass 2 indices 1, 2; pass 1 indices 0, 1, 2.
    #[test]
    fn weights_1_2_3_in_list_order_interleave_like_the_kernel() {
        let list = weights(&[1, 2, 3]);
        let cycle = [2, 1, 2, 0, 1, 2];
        let want: Vec<usize> = cycle.iter().cycle().take(18).copied().collect();
        assert_eq!(run(&list, 18), some(&want));
    }

    #[test]
    fn sixty_picks_are_split_10_20_30() {
        for ws in [[1, 2, 3], [3, 2, 1], [2, 3, 1]] {
            let list = weights(&ws);
            let mut count = [0u32; 3];
            for p in run(&list, 60) {
                count[p.unwrap()] += 1;
            }
            let want: Vec<u32> = ws.iter().map(|w| w * 10).collect();
            assert_eq!(count.to_vec(), want, "{ws:?}");
        }
    }

    #[test]
    fn sequences() {
        let cases: Vec<(Vec<DestView>, Vec<Option<usize>>)> = vec![
            // Equal weights: plain round robin.
            (weights(&[1, 1, 1]), some(&[0, 1, 2, 0, 1, 2])),
            (weights(&[5, 5]), some(&[0, 1, 0, 1])),
            // gcd 2: weights 4 and 2 behave as 2 and 1 (mw = 4 - 1 = 3, passes cw = 3, 1).
            (weights(&[4, 2]), some(&[0, 0, 1, 0, 0, 1])),
            // Weight 0 and overloaded are passed over.
            (
                vec![
                    dest(1, 0, 0, 0),
                    dest(2, 2, 0, 0),
                    overloaded(dest(3, 5, 0, 0)),
                    dest(4, 1, 0, 0),
                ],
                some(&[1, 1, 3, 1, 1, 3]),
            ),
            (weights(&[0, 0]), vec![None, None]),
            (vec![overloaded(dest(1, 3, 0, 0))], vec![None, None]),
            (vec![], vec![None]),
        ];
        for (dests, want) in cases {
            assert_eq!(run(&dests, want.len()), want, "{dests:?}");
        }
    }

    #[test]
    fn dest_changed_restarts_at_head_and_keeps_cw() {
        let mut s = WeightedRoundRobin::new();
        let list = weights(&[3, 2, 1]);
        s.update(&list);
        // 0 (cw 3), 0 (cw 2): now cw = 2 and the position is index 0.
        assert_eq!(picks(&mut s, &list, 2), some(&[0, 0]));
        // A weight change: position back to the head, cw 2 still fits (<= mw 3, di 1).
        let list2 = weights(&[3, 2, 2]);
        s.update(&list2);
        // cw 2 from the head: 0, 1, 2; then cw 1: 0, 1, ...
        assert_eq!(picks(&mut s, &list2, 5), some(&[0, 1, 2, 0, 1]));
    }

    #[test]
    fn dest_changed_rounds_cw_to_new_step() {
        let mut s = WeightedRoundRobin::new();
        let list = weights(&[5, 3]);
        s.update(&list);
        // cw 5: idx 0; cw 4: idx 0; cw 3: idx 0 -> cw = 3.
        assert_eq!(picks(&mut s, &list, 3), some(&[0, 0, 0]));
        // New weights 6 and 4: di 2, mw 6 - 1 = 5; cw 3 stays below mw and becomes 3/2*2+1 = 3.
        let list2 = weights(&[6, 4]);
        s.update(&list2);
        // From the head with cw 3: idx 0, 1; cw 1: idx 0, 1; restart cw 5: idx 0; cw 3: idx 0, 1.
        assert_eq!(picks(&mut s, &list2, 7), some(&[0, 1, 0, 1, 0, 0, 1]));
    }

    #[test]
    fn overload_mid_cycle_skips_and_recovers() {
        let mut list = weights(&[2, 1]);
        let mut s = WeightedRoundRobin::new();
        s.update(&list);
        assert_eq!(picks(&mut s, &list, 1), some(&[0]));
        list[0].overloaded = true; // the flag changes without an update, as in the kernel
        assert_eq!(picks(&mut s, &list, 3), some(&[1, 1, 1]));
        list[0].overloaded = false;
        let got = picks(&mut s, &list, 3);
        assert!(got.contains(&Some(0)), "{got:?}");
    }
}
