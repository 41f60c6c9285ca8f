//! Admission before authentication: who may hold an unfinished TLS handshake.
//!
//! Anyone who can reach the agent's port can open a TCP connection and then say nothing, and
//! until the handshake ends the agent cannot tell a stranger from an admin. So unfinished
//! handshakes never take the slots of verified peers (`max-connections`): they have a budget of
//! their own, and each source address (an IPv4 address, an IPv6 /64, which one host usually
//! holds whole) may hold at most [`PER_SOURCE`] of it.
//!
//! A new connection is never refused for want of room. It displaces the oldest unfinished
//! handshake of its own source when that source is at its cap, or else, when the budget is
//! full, the oldest of the source holding the most. Refusing the newcomer instead would let
//! a few idle connections, renewed every [`crate::deadlines::HANDSHAKE_TIMEOUT`], lock every admin
//! out; displacing means a flood must outpace the admin's own handshake (milliseconds) to
//! keep them out, and a flood from many sources displaces its own connections first.
//!
//! The table is plain data (no I/O, no clock): the agent keeps a handle per handshake (the
//! sender of a channel whose drop tells the handshake to give up) and drops the ones displaced.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Unfinished handshakes one source may hold at once.
pub const PER_SOURCE: usize = 8;

/// Where a connection comes from, as far as the caps go: an IPv4 address (IPv4-mapped IPv6
/// addresses included), or the /64 of an IPv6 address ([`herd_core::addr::client_key`], as
/// the dashboard counts its clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source(herd_core::addr::client_key(ip))
    }
}

/// The unfinished handshakes, per source, oldest first.
#[derive(Debug)]
pub struct Handshakes<T> {
    budget: usize,
    per_source: usize,
    next: u64,
    total: usize,
    sources: HashMap<Source, VecDeque<(u64, T)>>,
}

impl<T> Handshakes<T> {
    /// At most `budget` handshakes in all and `per_source` from one source (each at least 1).
    pub fn new(budget: usize, per_source: usize) -> Handshakes<T> {
        Handshakes {
            budget: budget.max(1),
            per_source: per_source.max(1),
            next: 0,
            total: 0,
            sources: HashMap::new(),
        }
    }

    /// A new budget (a reload's `max-connections`): a lower one displaces nothing at once;
    /// each new handshake then displaces one while the total is at or above it.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// How many handshakes are unfinished.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Admits a handshake from `src` with its handle; returns its id (for [`Self::finish`])
    /// and the handle of the handshake it displaces, if it had to.
    pub fn admit(&mut self, src: Source, handle: T) -> (u64, Option<T>) {
        let mine = self.sources.get(&src).map_or(0, VecDeque::len);
        let displaced = if mine >= self.per_source {
            self.pop_oldest(src)
        } else if self.total >= self.budget {
            self.heaviest().and_then(|s| self.pop_oldest(s))
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.sources.entry(src).or_default().push_back((id, handle));
        self.total += 1;
        (id, displaced)
    }

    /// The handshake `id` from `src` ended (either way); its handle, if it was still there.
    pub fn finish(&mut self, src: Source, id: u64) -> Option<T> {
        let queue = self.sources.get_mut(&src)?;
        let at = queue.iter().position(|(i, _)| *i == id)?;
        let (_, handle) = queue.remove(at)?;
        if queue.is_empty() {
            self.sources.remove(&src);
        }
        self.total -= 1;
        Some(handle)
    }

    fn pop_oldest(&mut self, src: Source) -> Option<T> {
        let id = self.sources.get(&src)?.front()?.0;
        self.finish(src, id)
    }

    /// The source holding the most handshakes; of those, the one whose oldest is oldest.
    fn heaviest(&self) -> Option<Source> {
        self.sources
            .iter()
            .filter_map(|(s, q)| Some((q.len(), std::cmp::Reverse(q.front()?.0), *s)))
            .max_by_key(|(len, oldest, _)| (*len, *oldest))
            .map(|(_, _, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Source {
        Source::from(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(v4("10.0.0.1"), v4("::ffff:10.0.0.1"));
        assert_ne!(v4("10.0.0.1"), v4("10.0.0.2"));
        assert_eq!(
            v4("2001:db8:1:2::1"),
            v4("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(v4("2001:db8:1:2::1"), v4("2001:db8:1:3::1"));
        assert_ne!(v4("::1"), v4("127.0.0.1"));
    }

    #[test]
    fn a_source_at_its_cap_displaces_its_own_oldest() {
        let mut t = Handshakes::new(100, 3);
        let (a, b) = (v4("10.0.0.1"), v4("10.0.0.2"));
        for i in 0..3 {
            assert_eq!(t.admit(a, i).1, None);
        }
        assert_eq!(t.admit(b, 100).1, None);
        // The fourth from `a` pushes out `a`'s first; `b` is untouched.
        assert_eq!(t.admit(a, 3).1, Some(0));
        assert_eq!(t.admit(a, 4).1, Some(1));
        assert_eq!(t.len(), 4);
        assert_eq!(t.sources[&b].len(), 1);
    }

    #[test]
    fn a_full_budget_displaces_from_the_source_holding_the_most() {
        let mut t = Handshakes::new(6, 4);
        let (a, b, c) = (v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3"));
        // `c` came first and holds one; `a` holds four, `b` one.
        let (c_id, _) = t.admit(c, "c0");
        for h in ["a0", "a1", "a2", "a3"] {
            t.admit(a, h);
        }
        t.admit(b, "b0");
        assert_eq!(t.len(), 6);
        // A newcomer from `c` (one held, under its cap) displaces `a`'s oldest, not `c`'s,
        // although `c`'s is the oldest of all.
        assert_eq!(t.admit(c, "c1").1, Some("a0"));
        assert_eq!(t.len(), 6);
        // Once every source holds the same, the oldest of all goes.
        assert_eq!(t.admit(b, "b1").1, Some("a1"));
        assert_eq!(t.admit(b, "b2").1, Some("c0"));
        assert_eq!(t.finish(c, c_id), None, "already displaced");
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn a_lower_budget_is_reached_as_handshakes_come_and_go() {
        let mut t = Handshakes::new(4, 4);
        let ids: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|ip| (v4(ip), t.admit(v4(ip), *ip).0))
            .collect();
        t.set_budget(2);
        assert_eq!(t.len(), 4, "nothing is displaced at once");
        // Each newcomer displaces one while the total is at or above the budget: it never
        // grows, and comes down to the budget as the others end.
        assert_eq!(t.admit(v4("10.0.0.5"), "10.0.0.5").1, Some("10.0.0.1"));
        assert_eq!(t.len(), 4);
        t.finish(ids[1].0, ids[1].1);
        t.finish(ids[2].0, ids[2].1);
        assert_eq!(t.admit(v4("10.0.0.6"), "10.0.0.6").1, Some("10.0.0.4"));
        assert_eq!(t.len(), 2);
        t.set_budget(3);
        assert_eq!(t.admit(v4("10.0.0.7"), "10.0.0.7").1, None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn finished_handshakes_free_their_place() {
        let mut t = Handshakes::new(2, 2);
        let a = v4("10.0.0.1");
        let (x, _) = t.admit(a, 'x');
        let (y, _) = t.admit(a, 'y');
        assert_eq!(t.finish(a, x), Some('x'));
        assert_eq!(t.admit(a, 'z').1, None);
        assert_eq!(t.finish(a, y), Some('y'));
        assert_eq!(t.finish(a, y), None);
        assert_eq!(t.len(), 1);
        assert!(t.sources.len() == 1);
        let (z, _) = (t.sources[&a][0].0, ());
        t.finish(a, z);
        assert!(t.is_empty() && t.sources.is_empty());
    }
}
