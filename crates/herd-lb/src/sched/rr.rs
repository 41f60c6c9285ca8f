//! Round robin (`ip_vs_rr`).

use std::collections::HashMap;
use std::net::SocketAddr;

use herd_core::model::SchedulerKind;

use super::{ConnInfo, DestView, Scheduler};

/// Round robin: each new connection goes to the next usable real server after the one that
/// got the previous connection, wrapping around the list.
///
/// Like the kernel, the position is a real server, not a number: adding servers (at the head
/// of the list) does not move it, and when the server at the position is removed the
/// position falls back to its predecessor (`ip_vs_rr_del_dest`), so that the rotation goes on
/// with the removed server's successor instead of restarting or skipping one. Servers with
/// weight 0 or the overload flag are passed over.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    /// Index in `addrs` of the last pick; `None` is the list head (start from the first).
    cursor: Option<usize>,
    /// The list as of the last `update`, to find the position again when it changes.
    addrs: Vec<SocketAddr>,
}

impl RoundRobin {
    /// A scheduler positioned at the head of the list, as `ip_vs_rr_init_svc` leaves it.
    pub fn new() -> Self {
        Self::default()
    }

    fn in_sync(&self, dests: &[DestView]) -> bool {
        self.addrs.len() == dests.len() && self.addrs.iter().zip(dests).all(|(a, d)| *a == d.addr)
    }
}

impl Scheduler for RoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Rr
    }

    fn update(&mut self, dests: &[DestView]) {
        let new_pos: HashMap<SocketAddr, usize> =
            dests.iter().enumerate().map(|(i, d)| (d.addr, i)).collect();
        // Keep the same real server; if it is gone, walk back to the nearest predecessor
        // that is still there (the kernel's `p->next->prev` after the unlink), else the head.
        self.cursor = self.cursor.and_then(|c| {
            self.addrs
                .get(..=c)
                .unwrap_or(&[])
                .iter()
                .rev()
                .find_map(|a| new_pos.get(a).copied())
        });
        self.addrs = dests.iter().map(|d| d.addr).collect();
    }

    fn schedule(&mut self, dests: &[DestView], _conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        if !self.in_sync(dests) {
            self.update(dests);
        }
        let n = dests.len();
        // From the entry after the position to the end, then from the head up to and
        // including the position itself (the kernel's two passes).
        let start = self.cursor.map_or(0, |c| c + 1);
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].usable())?;
        self.cursor = Some(pick);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn run(dests: &[DestView], n: usize) -> Vec<Option<usize>> {
        let mut s = RoundRobin::new();
        s.update(dests);
        picks(&mut s, dests, n)
    }

    #[test]
    fn rotates_over_usable_dests() {
        let cases: Vec<(Vec<DestView>, Vec<Option<usize>>)> = vec![
            (vec![], vec![None, None]),
            (vec![dest(1, 1, 0, 0)], vec![Some(0), Some(0), Some(0)]),
            (
                vec![dest(1, 1, 0, 0), dest(2, 5, 0, 0), dest(3, 1, 0, 0)],
                vec![Some(0), Some(1), Some(2), Some(0), Some(1)],
            ),
            // Weight 0 and overloaded are passed over; weights do not matter otherwise.
            (
                vec![
                    dest(1, 1, 0, 0),
                    dest(2, 0, 0, 0),
                    overloaded(dest(3, 1, 0, 0)),
                    dest(4, 9, 0, 0),
                ],
                vec![Some(0), Some(3), Some(0), Some(3)],
            ),
            (
                vec![dest(1, 0, 0, 0), overloaded(dest(2, 1, 0, 0))],
                vec![None, None],
            ),
        ];
        for (dests, want) in cases {
            assert_eq!(run(&dests, want.len()), want, "{dests:?}");
        }
    }

    #[test]
    fn continues_with_successor_after_the_current_dest_is_removed() {
        let a = dest(1, 1, 0, 0);
        let b = dest(2, 1, 0, 0);
        let c = dest(3, 1, 0, 0);
        let d = dest(4, 1, 0, 0);
        let mut s = RoundRobin::new();
        let full = [a, b, c, d];
        s.update(&full);
        assert_eq!(picks(&mut s, &full, 2), vec![Some(0), Some(1)]); // a, b
                                                                     // Remove b, the current position: the next pick is c, b's successor.
        let without_b = [a, c, d];
        s.update(&without_b);
        assert_eq!(
            picks(&mut s, &without_b, 3),
            vec![Some(1), Some(2), Some(0)]
        ); // c, d, a
           // Remove a (current position, first in the list): the next pick is the new first.
        let without_a = [c, d];
        s.update(&without_a);
        assert_eq!(picks(&mut s, &without_a, 2), vec![Some(0), Some(1)]); // c, d
    }

    #[test]
    fn removing_another_dest_keeps_the_position() {
        let [a, b, c, d] = [
            dest(1, 1, 0, 0),
            dest(2, 1, 0, 0),
            dest(3, 1, 0, 0),
            dest(4, 1, 0, 0),
        ];
        let mut s = RoundRobin::new();
        s.update(&[a, b, c, d]);
        assert_eq!(
            picks(&mut s, &[a, b, c, d], 3),
            vec![Some(0), Some(1), Some(2)]
        ); // a b c
           // Remove a; position stays at c, next is d.
        s.update(&[b, c, d]);
        assert_eq!(picks(&mut s, &[b, c, d], 2), vec![Some(2), Some(0)]); // d, b
    }

    #[test]
    fn adding_at_head_keeps_the_position() {
        let [a, b, c, e] = [
            dest(1, 1, 0, 0),
            dest(2, 1, 0, 0),
            dest(3, 1, 0, 0),
            dest(5, 1, 0, 0),
        ];
        let mut s = RoundRobin::new();
        s.update(&[a, b, c]);
        assert_eq!(picks(&mut s, &[a, b, c], 2), vec![Some(0), Some(1)]); // a b
                                                                          // e is added at the head (newest first); the rotation goes on with c, then wraps to e.
        s.update(&[e, a, b, c]);
        assert_eq!(
            picks(&mut s, &[e, a, b, c], 3),
            vec![Some(3), Some(0), Some(1)]
        );
    }

    #[test]
    fn resyncs_without_update() {
        let [a, b, c] = [dest(1, 1, 0, 0), dest(2, 1, 0, 0), dest(3, 1, 0, 0)];
        let mut s = RoundRobin::new();
        assert_eq!(picks(&mut s, &[a, b, c], 2), vec![Some(0), Some(1)]);
        // The caller forgot update(): b stays the position all the same.
        assert_eq!(picks(&mut s, &[c, b], 1), vec![Some(0)]);
    }

    #[test]
    fn quiesced_dest_is_skipped_until_it_comes_back() {
        let mut dests = [dest(1, 1, 0, 0), dest(2, 1, 0, 0), dest(3, 1, 0, 0)];
        let mut s = RoundRobin::new();
        s.update(&dests);
        assert_eq!(picks(&mut s, &dests, 1), vec![Some(0)]);
        dests[1].weight = 0;
        s.update(&dests);
        assert_eq!(picks(&mut s, &dests, 3), vec![Some(2), Some(0), Some(2)]);
        dests[1].weight = 1;
        s.update(&dests);
        assert_eq!(picks(&mut s, &dests, 2), vec![Some(0), Some(1)]);
    }
}
