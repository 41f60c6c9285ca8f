//! Weighted random twos choice (`ip_vs_twos`).

use herd_core::model::SchedulerKind;

use super::lc::heavier;
use super::{ConnInfo, DestView, Scheduler, SplitMix64};

/// Power of two choices: draw two real servers at random, each with probability
/// proportional to its weight, and take the one with the lower overhead per weight.
///
/// Sampling two and keeping the better one avoids both the herd behaviour of always taking
/// the global least-loaded server (which every balancer would pick at once) and the
/// imbalance of a single random pick. Following the kernel exactly, each draw is a number in
/// `0..=total` (note the inclusive upper end) walked down the usable servers in list order,
/// so the first usable server gets one extra chance in `total + 1`. The second choice wins
/// only when the first is strictly heavier (`w2 * oh1 > w1 * oh2`), so with equal or zero
/// loads the first draw decides. Randomness comes from a seeded [`SplitMix64`], so runs
/// repeat for a seed.
#[derive(Debug, Clone)]
pub struct TwoChoices {
    rng: SplitMix64,
}

impl TwoChoices {
    /// A scheduler whose random draws are determined by `seed`.
    pub fn new(seed: u64) -> Self {
        TwoChoices {
            rng: SplitMix64::new(seed),
        }
    }
}

impl Scheduler for TwoChoices {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Twos
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        let total: u64 = dests
            .iter()
            .filter(|d| d.usable())
            .map(|d| u64::from(d.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r1 = self.rng.below(total + 1);
        let mut r2 = self.rng.below(total + 1);
        let mut choice1: Option<usize> = None;
        let mut choice2: Option<usize> = None;
        for (i, d) in dests.iter().enumerate().filter(|(_, d)| d.usable()) {
            let w = u64::from(d.weight);
            // `r -= w; if r <= 0` without going negative.
            if choice1.is_none() {
                if r1 <= w {
                    choice1 = Some(i);
                } else {
                    r1 -= w;
                }
            }
            if choice2.is_none() {
                if r2 <= w {
                    choice2 = Some(i);
                } else {
                    r2 -= w;
                }
            }
            if choice1.is_some() && choice2.is_some() {
                break;
            }
        }
        let c1 = choice1?;
        match choice2 {
            Some(c2)
                if heavier(
                    dests[c1].overhead(),
                    dests[c1].weight,
                    dests[c2].overhead(),
                    dests[c2].weight,
                ) =>
            {
                Some(c2)
            }
            _ => Some(c1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn counts(s: &mut TwoChoices, dests: &[DestView], n: usize) -> Vec<u32> {
        let mut c = vec![0u32; dests.len()];
        for p in picks(s, dests, n) {
            c[p.unwrap()] += 1;
        }
        c
    }

    #[test]
    fn deterministic_per_seed() {
        let dests: Vec<DestView> = (1..=5).map(|n| dest(n, n, 0, 0)).collect();
        let a = picks(&mut TwoChoices::new(9), &dests, 100);
        let b = picks(&mut TwoChoices::new(9), &dests, 100);
        let c = picks(&mut TwoChoices::new(10), &dests, 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn idle_distribution_is_proportional_to_weight() {
        // With zero loads the second draw never wins, so the pick follows the first draw:
        // weight / (total + 1), plus 1 / (total + 1) for the first server in the list.
        let dests = [
            dest(1, 1, 0, 0),
            dest(2, 2, 0, 0),
            dest(3, 3, 0, 0),
            dest(4, 4, 0, 0),
        ];
        let n = 110_000;
        let got = counts(&mut TwoChoices::new(1), &dests, n);
        let want = [2.0 / 11.0, 2.0 / 11.0, 3.0 / 11.0, 4.0 / 11.0];
        for (g, w) in got.iter().zip(want) {
            let share = f64::from(*g) / n as f64;
            assert!((share - w).abs() < 0.01, "{got:?}");
        }
    }

    #[test]
    fn equal_loads_favour_heavier_weights() {
        // With equal non-zero overhead, the lighter load per weight is the heavier weight,
        // so of the two draws the heavier server wins: shares grow faster than weights.
        let dests = [dest(1, 1, 1, 0), dest(2, 1, 1, 0), dest(3, 2, 1, 0)];
        let got = counts(&mut TwoChoices::new(5), &dests, 40_000);
        // P(third) = 1 - P(neither draw is the third) = 1 - (3/5)^2 = 0.64.
        let share = f64::from(got[2]) / 40_000.0;
        assert!((share - 0.64).abs() < 0.02, "{got:?}");
    }

    #[test]
    fn lower_load_wins() {
        // One idle and one busy server of equal weight: the busy one is only picked when
        // both draws land on it, one time in four (first server's extra chance aside).
        let dests = [dest(1, 1000, 50, 0), dest(2, 1000, 0, 0)];
        let got = counts(&mut TwoChoices::new(3), &dests, 40_000);
        let busy = f64::from(got[0]) / 40_000.0;
        assert!((busy - 0.25).abs() < 0.02, "{got:?}");
    }

    #[test]
    fn skips_unusable_and_handles_empty() {
        let mut s = TwoChoices::new(0);
        assert_eq!(s.schedule(&[], &conn(1, 1, 1), 0), None);
        let dests = [
            dest(1, 0, 0, 0),
            overloaded(dest(2, 7, 0, 0)),
            dest(3, 2, 4, 0),
        ];
        for p in picks(&mut s, &dests, 200) {
            assert_eq!(p, Some(2));
        }
        let none = [dest(1, 0, 0, 0), overloaded(dest(2, 7, 0, 0))];
        assert_eq!(s.schedule(&none, &conn(1, 1, 1), 0), None);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let dests = [
            dest(1, u32::MAX, u32::MAX, u32::MAX),
            dest(2, u32::MAX, 0, 0),
        ];
        let mut s = TwoChoices::new(0);
        for p in picks(&mut s, &dests, 100) {
            assert!(p.is_some());
        }
    }
}
