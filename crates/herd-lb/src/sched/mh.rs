//! Maglev hashing (`ip_vs_mh`).
//!
//! Maglev (Eisenbud et al., NSDI 2016, section 3.4) fills a lookup table of prime size `M`:
//! every real server has its own permutation of the table positions (a start `offset` and a
//! `skip`, both from hashes of the server's address and port), and the servers take turns
//! claiming the next free position of their permutation until the table is full. A client's
//! address hash then indexes the table.
//!
//! Two properties follow and are tested below:
//!
//! * Balance. With equal weights every server claims exactly one position per round, so
//!   the counts differ by at most one: each server owns `floor(M/N)` or `ceil(M/N)`
//!   positions. That is within 1 % of `M/N` as soon as `M/N >= 100`.
//! * Small disruption. The permutations do not depend on the other servers, so after a
//!   server is removed the others mostly claim the same positions as before, plus the freed
//!   ones. Maglev does not guarantee minimal disruption: a server that reaches a freed
//!   position earlier in its permutation finishes its quota earlier, and positions it used to
//!   claim later go to someone else, a cascade whose size the paper only measures. The
//!   tests pin a measured bound: the other servers lose at most four times the removed
//!   server's share `M/N` (typically 0.4 of a share, about 2 % of the table).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use herd_core::model::{SchedFlags, SchedulerKind};

use super::{addr_fold, ConnInfo, DestView, Scheduler, Snapshot};

/// The table sizes the kernel offers (`primes[]` in `ip_vs_mh.c`), indexed by
/// `CONFIG_IP_VS_MH_TAB_INDEX - 8`.
pub const MH_PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// The kernel's default table size (`CONFIG_IP_VS_MH_TAB_INDEX` = 12).
pub const MH_DEFAULT_TAB_SIZE: u32 = 4093;

/// The largest table accepted by [`Maglev::with_table_size`]; larger tables only cost memory.
const MAX_TAB_SIZE: u32 = 1 << 24;

/// `generate_hash_secret`: the kernel uses fixed keys, so tables are the same on every
/// director with the same servers in the same order.
const HASH1_KEY: [u64; 2] = [2_654_435_761, 2_654_435_761];
const HASH2_KEY: [u64; 2] = [2_654_446_892, 2_654_446_892];

fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-c-d of `data` under the key `k`.
fn siphash(c_rounds: usize, d_rounds: usize, k: [u64; 2], data: &[u8]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ k[0],
        0x646f_7261_6e64_6f6d ^ k[1],
        0x6c79_6765_6e65_7261 ^ k[0],
        0x7465_6462_7974_6573 ^ k[1],
    ];
    let mut blocks = data.chunks_exact(8);
    for block in blocks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        let m = u64::from_le_bytes(word);
        v[3] ^= m;
        for _ in 0..c_rounds {
            sipround(&mut v);
        }
        v[0] ^= m;
    }
    let mut last = (data.len() as u64) << 56;
    for (i, &byte) in blocks.remainder().iter().enumerate() {
        last |= u64::from(byte) << (8 * i);
    }
    v[3] ^= last;
    for _ in 0..c_rounds {
        sipround(&mut v);
    }
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..d_rounds {
        sipround(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's `hsiphash` of a 4-byte value as on 64-bit machines, where it is SipHash-1-3
/// truncated to 32 bits (32-bit kernels use HalfSipHash and build different tables). The
/// value is hashed in the machine's byte order, which for the kernels that matter
/// (x86-64, arm64) is little endian.
fn hsiphash_u32(val: u32, key: [u64; 2]) -> u32 {
    siphash(1, 3, key, &val.to_le_bytes()) as u32
}

/// `ip_vs_mh_hashkey`: the folded address plus the port (host order) plus an offset, hashed.
fn mh_hashkey(ip: IpAddr, port: u16, key: [u64; 2], offset: u32) -> u32 {
    hsiphash_u32(
        offset
            .wrapping_add(u32::from(port))
            .wrapping_add(addr_fold(ip)),
        key,
    )
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2u64..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// The kernel's `fls`: the 1-based position of the highest set bit, 0 for 0.
fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// Maglev hashing on the client's address (and source port with `mh-port`).
///
/// Weights work by turns: in each round a server claims `weight` positions in a row, after
/// dividing all weights by their gcd and shifting them right so that the largest fits in
/// `IP_VS_MH_TAB_BITS` bits (6 for the default table), which keeps a few heavy servers from
/// taking whole rounds of a small table.
///
/// The table is built from each server's last non-zero weight (the kernel's
/// `last_weight`): setting a weight to 0 quiesces the server without reshuffling the table,
/// its clients just find it unavailable, while a server added with weight 0 is left out of
/// the table. A client whose server is quiesced or overloaded gets no server, unless
/// `mh-fallback` is set: then the client's address is rehashed with offsets 0, 1, 2, ...
/// added (starting from the original position) until a usable server comes up.
///
/// The kernel refuses to build a table for more servers than positions and keeps its old
/// table; so does this type.
#[derive(Debug, Clone)]
pub struct Maglev {
    flags: SchedFlags,
    /// Table size, a prime.
    m: u32,
    /// `IP_VS_MH_TAB_BITS`: the bit budget of the largest turn count.
    tab_bits: u32,
    /// Position -> index into `members`; empty when no server has a non-zero last weight.
    table: Vec<u32>,
    /// The servers the table was built from, in the list order of that time.
    members: Vec<SocketAddr>,
    /// For each member, its index in the current list, if it is still there.
    member_pos: Vec<Option<usize>>,
    /// The last non-zero weight of each server of the current list (0 if added with 0).
    last_weight: HashMap<SocketAddr, u32>,
    snapshot: Snapshot,
}

impl Maglev {
    /// A scheduler with the kernel's default table of 4093 positions.
    pub fn new(flags: SchedFlags) -> Self {
        Self::build(flags, MH_DEFAULT_TAB_SIZE)
    }

    /// A scheduler with a table of `m` positions. `m` must be a prime (at most 2^24):
    /// only then is every server's permutation a full cycle over the table, which the
    /// population loop relies on to terminate. Returns `None` otherwise.
    pub fn with_table_size(flags: SchedFlags, m: u32) -> Option<Self> {
        (is_prime(m) && m <= MAX_TAB_SIZE).then(|| Self::build(flags, m))
    }

    fn build(flags: SchedFlags, m: u32) -> Self {
        Maglev {
            flags,
            m,
            // The kernel pairs each prime with CONFIG_IP_VS_MH_TAB_INDEX, the prime's bit
            // length, and uses half of it.
            tab_bits: fls(m) / 2,
            table: Vec::new(),
            members: Vec::new(),
            member_pos: Vec::new(),
            last_weight: HashMap::new(),
            snapshot: Snapshot::default(),
        }
    }

    /// The table size.
    pub fn table_size(&self) -> u32 {
        self.m
    }

    /// The owner of every table position (empty when there is no table), to inspect balance
    /// and disruption.
    pub fn table_owners(&self) -> Vec<SocketAddr> {
        self.table
            .iter()
            .map(|&k| self.members[k as usize])
            .collect()
    }

    fn resolve(&mut self, dests: &[DestView]) {
        let pos: HashMap<SocketAddr, usize> =
            dests.iter().enumerate().map(|(i, d)| (d.addr, i)).collect();
        self.member_pos = self.members.iter().map(|a| pos.get(a).copied()).collect();
    }

    /// `ip_vs_mh_permutate` and `ip_vs_mh_populate`.
    fn populate(&mut self, dests: &[DestView], last_weight: &[u32]) {
        self.table.clear();
        self.members = dests.iter().map(|d| d.addr).collect();
        let g = last_weight.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        if g == 0 {
            return;
        }
        let max = last_weight.iter().copied().max().unwrap_or(0) / g;
        let shift = fls(max).saturating_sub(self.tab_bits);
        let m = self.m;
        let turns: Vec<u32> = last_weight
            .iter()
            .map(|&lw| match (lw / g) >> shift {
                0 => u32::from(lw != 0),
                t => t,
            })
            .collect();
        let skip: Vec<u32> = dests
            .iter()
            .map(|d| mh_hashkey(d.addr.ip(), d.addr.port(), HASH2_KEY, 0) % (m - 1) + 1)
            .collect();
        let mut perm: Vec<u32> = dests
            .iter()
            .map(|d| mh_hashkey(d.addr.ip(), d.addr.port(), HASH1_KEY, 0) % m)
            .collect();

        let mut taken = vec![false; m as usize];
        let mut table = vec![0u32; m as usize];
        let mut filled = 0u32;
        let mut dt_count = 0u32;
        // Every round claims at least one position (some server has turns), so M rounds
        // are always enough; the bound only makes termination obvious.
        'rounds: for _ in 0..m {
            let mut p = 0;
            while p < dests.len() {
                if turns[p] < 1 {
                    p += 1;
                    continue;
                }
                let mut c = perm[p];
                while taken[c as usize] {
                    perm[p] += skip[p];
                    if perm[p] >= m {
                        perm[p] -= m;
                    }
                    c = perm[p];
                }
                taken[c as usize] = true;
                table[c as usize] = p as u32;
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
                dt_count += 1;
                if dt_count >= turns[p] {
                    dt_count = 0;
                    p += 1;
                }
            }
        }
        self.table = table;
    }

    /// The list index of the server at a table position, if it is still in the list and
    /// usable (`is_unavailable` looks at the current weight and the overload flag).
    fn usable_at(&self, dests: &[DestView], position: u32) -> Option<usize> {
        let member = *self.table.get(position as usize)? as usize;
        let i = (*self.member_pos.get(member)?)?;
        dests.get(i).filter(|d| d.usable()).map(|_| i)
    }
}

impl Scheduler for Maglev {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Mh
    }

    fn update(&mut self, dests: &[DestView]) {
        // `__ip_vs_update_dest`: last_weight follows the weight on add and on any change to
        // a non-zero weight; a change to 0 keeps the previous one.
        let last_weight: Vec<u32> = dests
            .iter()
            .map(|d| match self.last_weight.get(&d.addr) {
                Some(&old) if d.weight == 0 => old,
                _ => d.weight,
            })
            .collect();
        self.last_weight = dests
            .iter()
            .map(|d| d.addr)
            .zip(last_weight.iter().copied())
            .collect();
        self.snapshot = Snapshot::of(dests);
        if dests.len() <= self.m as usize {
            self.populate(dests, &last_weight);
        }
        self.resolve(dests);
    }

    fn schedule(&mut self, dests: &[DestView], conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        if !self.snapshot.matches(dests) {
            self.update(dests);
        }
        if self.table.is_empty() {
            return None;
        }
        let ip = conn.client.ip();
        let port = if self.flags.port {
            conn.client.port()
        } else {
            0
        };
        let m = self.m;
        let ihash = mh_hashkey(ip, port, HASH1_KEY, 0) % m;
        if let Some(i) = self.usable_at(dests, ihash) {
            return Some(i);
        }
        if !self.flags.fallback {
            return None;
        }
        (0..m).find_map(|offset| {
            let roffset = (offset + ihash) % m;
            self.usable_at(dests, mh_hashkey(ip, port, HASH1_KEY, roffset) % m)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::hash::Hasher;

    use proptest::prelude::*;

    use super::super::testutil::*;
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn siphash_rounds_match_std_siphash_2_4() {
        // std's (deprecated) SipHasher is SipHash-2-4; agreeing with it on every length
        // checks the round function, block handling and finalisation shared with 1-3.
        let data: Vec<u8> = (0u8..40).collect();
        for (k0, k1) in [
            (0u64, 0u64),
            (0x0706050403020100, 0x0f0e0d0c0b0a0908),
            (1, u64::MAX),
        ] {
            for len in 0..data.len() {
                let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
                h.write(&data[..len]);
                assert_eq!(
                    siphash(2, 4, [k0, k1], &data[..len]),
                    h.finish(),
                    "len {len}"
                );
            }
        }
        // The reference vector of the SipHash paper (key 00..0f, 15-byte message 00..0e).
        let key = [0x0706050403020100, 0x0f0e0d0c0b0a0908];
        assert_eq!(siphash(2, 4, key, &data[..15]), 0xa129ca6149be45e5);
    }

    #[test]
    fn table_size_must_be_prime() {
        assert!(Maglev::with_table_size(SchedFlags::default(), 4093).is_some());
        assert!(Maglev::with_table_size(SchedFlags::default(), 251).is_some());
        assert!(Maglev::with_table_size(SchedFlags::default(), 4096).is_none());
        assert!(Maglev::with_table_size(SchedFlags::default(), 1).is_none());
        assert!(Maglev::with_table_size(SchedFlags::default(), 0).is_none());
        for p in MH_PRIMES {
            let mh = Maglev::with_table_size(SchedFlags::default(), p).unwrap();
            assert_eq!(mh.table_size(), p);
        }
        // Bit budgets as the kernel's CONFIG_IP_VS_MH_TAB_INDEX / 2.
        assert_eq!(Maglev::new(SchedFlags::default()).tab_bits, 6);
        assert_eq!(
            Maglev::with_table_size(SchedFlags::default(), 251)
                .unwrap()
                .tab_bits,
            4
        );
        assert_eq!(
            Maglev::with_table_size(SchedFlags::default(), 131071)
                .unwrap()
                .tab_bits,
            8
        );
    }

    fn owners_count(mh: &Maglev, dests: &[DestView]) -> Vec<usize> {
        let owners = mh.table_owners();
        dests
            .iter()
            .map(|d| owners.iter().filter(|&&a| a == d.addr).count())
            .collect()
    }

    #[test]
    fn weights_give_turns() {
        let dests = [dest(1, 1, 0, 0), dest(2, 2, 0, 0), dest(3, 3, 0, 0)];
        let mut mh = Maglev::new(SchedFlags::default());
        mh.update(&dests);
        // 4093 = 682 rounds of 6 positions + 1: the first server takes the last one.
        assert_eq!(owners_count(&mh, &dests), vec![683, 1364, 2046]);
        // Weights with a common divisor behave as the reduced ones.
        let scaled = [dest(1, 10, 0, 0), dest(2, 20, 0, 0), dest(3, 30, 0, 0)];
        mh.update(&scaled);
        assert_eq!(owners_count(&mh, &scaled), vec![683, 1364, 2046]);
    }

    #[test]
    fn large_weights_are_shifted() {
        // Weights 1 and 1000: 1000 needs 10 bits, the default budget is 6, so turns are
        // 1000 >> 4 = 62 and 1 >> 4 = 0, raised to 1 because the weight is not zero.
        let dests = [dest(1, 1, 0, 0), dest(2, 1000, 0, 0)];
        let mut mh = Maglev::new(SchedFlags::default());
        mh.update(&dests);
        // 4093 = 64 full rounds of 63 positions and a last one of 61 (1 + 60).
        assert_eq!(owners_count(&mh, &dests), vec![65, 64 * 62 + 60]);
    }

    #[test]
    fn same_client_same_server_and_spread() {
        let dests: Vec<DestView> = (1..=6).map(|n| dest(n, 1, 0, 0)).collect();
        let mut mh = Maglev::new(SchedFlags::default());
        mh.update(&dests);
        let mut seen = std::collections::HashSet::new();
        for c in 0..300 {
            let a = mh.schedule(&dests, &conn(c, 1000, 1), 0);
            assert_eq!(a, mh.schedule(&dests, &conn(c, 2000, 2), 0));
            seen.insert(a.unwrap());
        }
        assert_eq!(seen.len(), 6);
        // With mh-port one client spreads over the servers.
        let mut mh = Maglev::new(SchedFlags {
            fallback: false,
            port: true,
        });
        mh.update(&dests);
        let seen: std::collections::HashSet<_> = (0..300)
            .map(|p| mh.schedule(&dests, &conn(1, 10000 + p, 1), 0))
            .collect();
        assert_eq!(seen.len(), 6);
    }

    #[test]
    fn quiesced_keeps_table_but_added_with_zero_is_left_out() {
        let mut dests: Vec<DestView> = (1..=4).map(|n| dest(n, 1, 0, 0)).collect();
        let mut mh = Maglev::new(SchedFlags::default());
        mh.update(&dests);
        let before = mh.table_owners();
        // Weight to 0: same table, but its clients get no server (no fallback).
        dests[2].weight = 0;
        mh.update(&dests);
        assert_eq!(mh.table_owners(), before);
        let victims: Vec<u32> = (0..400)
            .filter(|&c| before[slot_of(&mh, c)] == dests[2].addr)
            .collect();
        assert!(!victims.is_empty());
        for &c in &victims {
            assert_eq!(mh.schedule(&dests, &conn(c, 1, 1), 0), None);
        }
        // With fallback they go elsewhere, deterministically.
        let mut fb = Maglev::new(SchedFlags {
            fallback: true,
            port: false,
        });
        fb.update(&(1..=4).map(|n| dest(n, 1, 0, 0)).collect::<Vec<_>>());
        fb.update(&dests);
        for &c in &victims {
            let got = fb.schedule(&dests, &conn(c, 1, 1), 0);
            assert!(matches!(got, Some(i) if i != 2), "{got:?}");
            assert_eq!(got, fb.schedule(&dests, &conn(c, 1, 1), 0));
        }
        // A server that was added with weight 0 takes no position at all.
        let mut fresh = Maglev::new(SchedFlags::default());
        fresh.update(&dests);
        assert!(!fresh.table_owners().contains(&dests[2].addr));
        assert_eq!(fresh.table_owners().len(), 4093);
        // Raising it later puts it in.
        dests[2].weight = 1;
        fresh.update(&dests);
        assert_eq!(fresh.table_owners(), before);
    }

    fn slot_of(mh: &Maglev, client: u32) -> usize {
        let c = conn(client, 1, 1);
        (mh_hashkey(c.client.ip(), 0, HASH1_KEY, 0) % mh.m) as usize
    }

    #[test]
    fn all_zero_weights_give_no_table() {
        let dests = [dest(1, 0, 0, 0), dest(2, 0, 0, 0)];
        let mut mh = Maglev::new(SchedFlags {
            fallback: true,
            port: false,
        });
        mh.update(&dests);
        assert!(mh.table_owners().is_empty());
        assert_eq!(mh.schedule(&dests, &conn(1, 1, 1), 0), None);
    }

    #[test]
    fn more_dests_than_positions_keeps_old_table() {
        let mut mh = Maglev::with_table_size(SchedFlags::default(), 3).unwrap();
        let few: Vec<DestView> = (1..=2).map(|n| dest(n, 1, 0, 0)).collect();
        mh.update(&few);
        let before = mh.table_owners();
        let many: Vec<DestView> = (1..=4).map(|n| dest(n, 1, 0, 0)).collect();
        mh.update(&many);
        assert_eq!(mh.table_owners(), before);
        // Lookups still resolve the old owners to their new indices.
        for c in 0..20 {
            if let Some(i) = mh.schedule(&many, &conn(c, 1, 1), 0) {
                assert!(before.contains(&many[i].addr));
            }
        }
    }

    /// The first kernel prime above 100 * n, or a larger prime when n is beyond the list.
    fn prime_above(n: u32) -> u32 {
        MH_PRIMES
            .iter()
            .copied()
            .find(|&p| p > 100 * n)
            .unwrap_or_else(|| (100 * n + 1..).find(|&p| is_prime(p)).unwrap())
    }

    fn arb_servers(max: usize) -> impl Strategy<Value = Vec<DestView>> {
        prop::collection::hash_set((any::<u32>(), 1u16..), 2..max).prop_map(|set| {
            set.into_iter()
                .map(|(ip, port)| DestView {
                    addr: SocketAddr::new(IpAddr::V4(ip.into()), port),
                    weight: 1,
                    active: 0,
                    inactive: 0,
                    overloaded: false,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Equal weights: every server owns floor(M/N) or ceil(M/N) positions, hence within
        /// 1 % of M/N whenever M > 100 N.
        #[test]
        fn balance_within_one_percent(dests in arb_servers(40)) {
            let n = dests.len() as u32;
            let m = prime_above(n);
            let mut mh = Maglev::with_table_size(SchedFlags::default(), m).unwrap();
            mh.update(&dests);
            let ideal = f64::from(m) / f64::from(n);
            for c in owners_count(&mh, &dests) {
                let c = c as u32;
                prop_assert!(c == m / n || c == m.div_ceil(n), "count {c}, M {m}, N {n}");
                prop_assert!((f64::from(c) - ideal).abs() <= 0.01 * ideal);
            }
        }

        /// Removing one server moves all of its positions and only a few of the others':
        /// at most `DISRUPTION_SHARES` times the removed server's share `M/N`.
        #[test]
        fn removal_disrupts_little(dests in arb_servers(40), pick in any::<prop::sample::Index>()) {
            let n = dests.len() as u32;
            let m = prime_above(n);
            let (moved_others, removed_owned) = removal_disruption(&dests, pick.index(dests.len()), m);
            prop_assert_eq!(removed_owned, 0);
            let share = f64::from(m) / f64::from(n);
            prop_assert!(
                (moved_others as f64) <= DISRUPTION_SHARES * share,
                "{} of {} positions of other servers moved (N {})", moved_others, m, n
            );
        }
    }

    /// Builds the table for `dests`, removes `gone` and returns how many positions owned by
    /// the other servers changed owner, and how many positions the removed server still owns.
    fn removal_disruption(dests: &[DestView], gone: usize, m: u32) -> (usize, usize) {
        let mut mh = Maglev::with_table_size(SchedFlags::default(), m).unwrap();
        mh.update(dests);
        let before = mh.table_owners();
        let mut rest = dests.to_vec();
        let removed = rest.remove(gone).addr;
        mh.update(&rest);
        let after = mh.table_owners();
        let moved_others = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != removed && b != a)
            .count();
        (
            moved_others,
            after.iter().filter(|&&a| a == removed).count(),
        )
    }

    /// The bound on the positions of other servers that move when one server is removed,
    /// in units of the removed server's share `M/N` (equal weights, M the kernel's prime
    /// above 100 N).
    ///
    /// Maglev gives no worst-case bound: a server that reaches a freed position early
    /// finishes its quota early, and the positions it used to claim last go to others, a
    /// cascade that is long when two servers' permutations happen to be similar (e.g. the
    /// same skip). The number is empirical: over 200,000 random sets of 2 to 39 servers with
    /// one random removal (`cargo run --release -p herd-lb --example
    /// maglev_disruption`), the other positions that moved were a
    /// median 0.39 shares, 0.90 at the 99th percentile, 1.7 at the 99.99th and 2.3 at most
    /// (as a fraction of the whole table: median 1.9 %, 99th percentile 3.5 %, but up to
    /// 29 % for 3 servers in a 509 table). Four shares leaves a wide margin.
    const DISRUPTION_SHARES: f64 = 4.0;

    /// The typical disruption on a fixed sample: removing one server from each of 50 fixed
    /// random sets of 10 to 40 servers moves on average less than 3 % of the table to other
    /// owners besides the removed server's own positions (measured: about 2 %).
    #[test]
    fn mean_disruption_is_a_few_percent() {
        let mut rng = crate::sched::SplitMix64::new(2016);
        let (mut moved, mut total) = (0usize, 0usize);
        for _ in 0..50 {
            let n = 10 + rng.below(31) as u32;
            let m = prime_above(n);
            let dests: Vec<DestView> = (0..n).map(|_| random_server(&mut rng)).collect();
            let gone = rng.below(u64::from(n)) as usize;
            moved += removal_disruption(&dests, gone, m).0;
            total += m as usize;
        }
        let mean = moved as f64 / total as f64;
        assert!(mean < 0.03, "mean disruption {mean}");
    }

    fn random_server(rng: &mut crate::sched::SplitMix64) -> DestView {
        DestView {
            addr: SocketAddr::new(
                IpAddr::V4((rng.next_u64() as u32).into()),
                rng.next_u64() as u16 | 1,
            ),
            weight: 1,
            active: 0,
            inactive: 0,
            overloaded: false,
        }
    }
}
