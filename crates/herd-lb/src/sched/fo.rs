//! Weighted failover (`ip_vs_fo`) and weighted overflow (`ip_vs_ovf`).

use herd_core::model::SchedulerKind;

use super::{ConnInfo, DestView, Scheduler};

/// Weighted failover: every new connection goes to the usable real server with the highest
/// weight, so weights act as priorities and lower ones are standbys that take over only when
/// the higher ones are quiesced (weight 0) or overloaded.
///
/// Ties go to the first server in list order, because the kernel only replaces its
/// candidate on a strictly higher weight. Connection counts are not looked at.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Fo
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            // `weight > hw` with hw starting at 0 also excludes weight 0.
            if !d.overloaded && d.weight > best.map_or(0, |(_, hw)| hw) {
                best = Some((i, d.weight));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Weighted overflow: like failover, the highest-weight usable real server gets the new
/// connection, but the weight also caps the active connections a server takes before the
/// next one in line gets the overflow.
///
/// The kernel skips a server when `active > weight`, so a server still gets a connection
/// when it has exactly `weight` active ones and ends up with `weight + 1` before it
/// overflows. Only active connections count (the kernel notes that this makes the method a
/// poor fit for UDP). Ties go to the first server in list order.
#[derive(Debug, Clone, Copy, Default)]
pub struct WeightedOverflow;

impl Scheduler for WeightedOverflow {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ovf
    }

    fn update(&mut self, _dests: &[DestView]) {}

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.overloaded || d.active > d.weight || d.weight == 0 {
                continue;
            }
            if best.is_none_or(|(_, hw)| d.weight > hw) {
                best = Some((i, d.weight));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// A named list and the picks of (fo, ovf).
    type Case = (&'static str, Vec<DestView>, [Option<usize>; 2]);

    fn check(cases: Vec<Case>) {
        for (name, dests, [fo, ovf]) in cases {
            assert_eq!(
                WeightedFailover.schedule(&dests, &conn(1, 1, 1), 0),
                fo,
                "{name}: fo"
            );
            assert_eq!(
                WeightedOverflow.schedule(&dests, &conn(1, 1, 1), 0),
                ovf,
                "{name}: ovf"
            );
        }
    }

    #[test]
    fn orderings() {
        check(vec![
            ("empty", vec![], [None, None]),
            (
                "highest weight",
                vec![dest(1, 1, 0, 0), dest(2, 5, 0, 0), dest(3, 3, 0, 0)],
                [Some(1), Some(1)],
            ),
            (
                "ties to the first",
                vec![dest(1, 2, 0, 0), dest(2, 5, 0, 0), dest(3, 5, 0, 0)],
                [Some(1), Some(1)],
            ),
            // fo ignores counts; ovf overflows once active > weight.
            (
                "primary full",
                vec![dest(1, 1, 0, 0), dest(2, 5, 6, 0), dest(3, 3, 0, 0)],
                [Some(1), Some(2)],
            ),
            // active == weight is still eligible for ovf.
            (
                "primary at weight",
                vec![dest(1, 1, 0, 0), dest(2, 5, 5, 0)],
                [Some(1), Some(1)],
            ),
            // Inactive connections do not count for ovf.
            (
                "inactive ignored",
                vec![dest(1, 1, 0, 0), dest(2, 5, 0, 1000)],
                [Some(1), Some(1)],
            ),
            (
                "all full",
                vec![dest(1, 1, 2, 0), dest(2, 5, 6, 0)],
                [Some(1), None],
            ),
            (
                "skip quiesced and overloaded",
                vec![
                    dest(1, 0, 0, 0),
                    overloaded(dest(2, 9, 0, 0)),
                    dest(3, 2, 0, 0),
                    dest(4, 1, 0, 0),
                ],
                [Some(2), Some(2)],
            ),
            (
                "nothing usable",
                vec![dest(1, 0, 0, 0), overloaded(dest(2, 9, 0, 0))],
                [None, None],
            ),
        ]);
    }

    #[test]
    fn ovf_fills_in_weight_order() {
        let mut dests = vec![dest(1, 1, 0, 0), dest(2, 3, 0, 0), dest(3, 2, 0, 0)];
        let mut order = Vec::new();
        while let Some(i) = WeightedOverflow.schedule(&dests, &conn(1, 1, 1), 0) {
            dests[i].active += 1;
            order.push(i);
        }
        // Each server takes weight + 1 connections, the heaviest first.
        assert_eq!(order, vec![1, 1, 1, 1, 2, 2, 2, 0, 0]);
    }
}
