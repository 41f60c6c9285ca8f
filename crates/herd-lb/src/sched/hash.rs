//! Destination hashing (`ip_vs_dh`) and source hashing (`ip_vs_sh`).

use std::net::IpAddr;

use herd_core::model::{SchedFlags, SchedulerKind};

use super::{addr_fold, ConnInfo, DestView, Scheduler, Snapshot};

/// Buckets in the dh and sh tables (the kernel's default `CONFIG_IP_VS_{DH,SH}_TAB_BITS` = 8).
pub const HASH_TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_BITS: u32 = 8;
const TAB_MASK: u32 = (1 << TAB_BITS) - 1;

/// The kernel's `hash_32`: multiply by the 32-bit golden ratio and keep the top `bits` bits,
/// which are the best mixed ones.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// `ip_vs_dh_hashkey`: the bucket of a destination address.
fn dh_bucket(ip: IpAddr) -> usize {
    hash_32(addr_fold(ip), TAB_BITS) as usize
}

/// `ip_vs_sh_hashkey`: the bucket of a source address and port (0 unless `sh-port`), shifted
/// by `offset` for the fallback walk. The port is added to the folded address before hashing.
fn sh_bucket(ip: IpAddr, port: u16, offset: u32) -> usize {
    let h = hash_32(u32::from(port).wrapping_add(addr_fold(ip)), TAB_BITS);
    (offset.wrapping_add(h) & TAB_MASK) as usize
}

/// Destination hashing: a static 256-bucket table maps the hash of the packet's destination
/// address (the virtual address, which matters for firewall-mark services spanning many
/// addresses, e.g. cache clusters) to a real server.
///
/// The buckets are dealt out to the servers one each in list order, over and over
/// (`ip_vs_dh_reassign`), so weights only matter in that weight 0 quiesces a server. When the
/// hashed server is quiesced or overloaded there is no fallback: the connection gets no
/// server, so that a cache cluster can bypass to the origin instead.
#[derive(Debug, Clone, Default)]
pub struct DestHash {
    /// Bucket -> index in the list; empty when the list is empty.
    table: Vec<u32>,
    snapshot: Snapshot,
}

impl DestHash {
    /// A scheduler with an empty table; `update` fills it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket table as list indices, for inspection in tests and diagnostics.
    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

impl Scheduler for DestHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Dh
    }

    fn update(&mut self, dests: &[DestView]) {
        self.table.clear();
        if !dests.is_empty() {
            let n = dests.len();
            self.table
                .extend((0..HASH_TAB_SIZE).map(|b| (b % n) as u32));
        }
        self.snapshot = Snapshot::of(dests);
    }

    fn schedule(&mut self, dests: &[DestView], conn: &ConnInfo, _now_ms: u64) -> Option<usize> {
        if !self.snapshot.matches(dests) {
            self.update(dests);
        }
        let i = *self.table.get(dh_bucket(conn.vip.ip()))? as usize;
        dests.get(i).filter(|d| d.usable()).map(|_| i)
    }
}

/// Source hashing: a static 256-bucket table maps the hash of the client's address (and
/// source port with `sh-port`) to a real server, so a client keeps reaching the same server
/// without any per-client state.
///
/// `ip_vs_sh_reassign` walks the list in order, giving each server `weight` consecutive
/// buckets (at least one, so a quiesced server still owns one) and starting over until the
/// 256 buckets are dealt, which makes a server's share proportional to its weight. When the
/// hashed server is quiesced or overloaded there is no server for the connection, unless
/// `sh-fallback` is set: then the kernel probes further buckets, starting from a point
/// derived from the original hash so the choice stays deterministic per client, and takes
/// the first usable server found.
#[derive(Debug, Clone, Default)]
pub struct SourceHash {
    flags: SchedFlags,
    /// Bucket -> index in the list; empty when the list is empty.
    table: Vec<u32>,
    snapshot: Snapshot,
}

impl SourceHash {
    /// A scheduler with an empty table; `flags` selects `sh-fallback` and `sh-port`.
    pub fn new(flags: SchedFlags) -> Self {
        SourceHash {
            flags,
            ..Self::default()
        }
    }

    /// The bucket table as list indices, for inspection in tests and diagnostics.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    fn bucket_dest(&self, dests: &[DestView], bucket: usize) -> Option<usize> {
        let i = *self.table.get(bucket)? as usize;
        dests.get(i).filter(|d| d.usable()).map(|_| i)
    }
}

impl Scheduler for SourceHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn update(&mut self, dests: &[DestView]) {
        self.table.clear();
        if !dests.is_empty() {
            let mut p = 0usize;
            let mut count = 0u32;
            for _ in 0..HASH_TAB_SIZE {
                self.table.push(p as u32);
                count += 1;
                if count >= dests[p].weight {
                    p = (p + 1) % dests.len();
                    count = 0;
                }
            }
        }
        self.snapshot = Snapshot::of(dests);
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
        let ihash = sh_bucket(ip, port, 0);
        if let Some(i) = self.bucket_dest(dests, ihash) {
            return Some(i);
        }
        if !self.flags.fallback {
            return None;
        }
        // `ip_vs_sh_get_fallback`: offsets ihash, ihash+1, ... each added to the hash again,
        // so the walk visits every bucket, starting at 2 * ihash.
        (0..HASH_TAB_SIZE as u32)
            .map(|offset| (offset + ihash as u32) & TAB_MASK)
            .find_map(|roffset| self.bucket_dest(dests, sh_bucket(ip, port, roffset)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::testutil::*;
    use super::*;

    #[test]
    fn hash_32_matches_kernel() {
        // hash_32(val, bits) = (val * 0x61C88647) >> (32 - bits).
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(
            hash_32(0x0a00_0001, 8),
            (0x0a00_0001u32.wrapping_mul(0x61C8_8647)) >> 24
        );
        assert_eq!(hash_32(u32::MAX, 32), 0x61C8_8647u32.wrapping_neg());
    }

    #[test]
    fn dh_table_deals_buckets_round_robin() {
        let dests = [dest(1, 1, 0, 0), dest(2, 100, 0, 0), dest(3, 0, 0, 0)];
        let mut s = DestHash::new();
        s.update(&dests);
        let want: Vec<u32> = (0..256).map(|b| b % 3).collect();
        assert_eq!(s.table(), want.as_slice());
        s.update(&[]);
        assert!(s.table().is_empty());
    }

    #[test]
    fn dh_same_destination_same_server_and_spread() {
        let dests: Vec<DestView> = (1..=4).map(|n| dest(n, 1, 0, 0)).collect();
        let mut s = DestHash::new();
        s.update(&dests);
        let mut seen = HashSet::new();
        for vip in 0..200 {
            let a = s.schedule(&dests, &conn(1, 1000, vip), 0);
            // Client and port do not matter, only the destination address.
            let b = s.schedule(&dests, &conn(77, 2000, vip), 0);
            assert_eq!(a, b);
            seen.insert(a.unwrap());
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn dh_unavailable_hashed_dest_gives_none() {
        let mut dests: Vec<DestView> = (1..=2).map(|n| dest(n, 1, 0, 0)).collect();
        let mut s = DestHash::new();
        s.update(&dests);
        let vip = (0..100)
            .find(|&v| s.schedule(&dests, &conn(1, 1, v), 0) == Some(0))
            .unwrap();
        dests[0].overloaded = true;
        assert_eq!(s.schedule(&dests, &conn(1, 1, vip), 0), None);
        dests[0].overloaded = false;
        dests[0].weight = 0;
        s.update(&dests);
        assert_eq!(s.schedule(&dests, &conn(1, 1, vip), 0), None);
    }

    #[test]
    fn dh_ipv6_folds_words() {
        let dests: Vec<DestView> = (1..=7).map(|n| dest(n, 1, 0, 0)).collect();
        let mut s = DestHash::new();
        s.update(&dests);
        let c = |vip: &str| ConnInfo {
            client: "[2001:db8::5]:1234".parse().unwrap(),
            vip: vip.parse().unwrap(),
        };
        // 2001:db8:0:1:: and 2001:db8::1 fold to the same 32-bit value, 0x20010db9.
        let a = s.schedule(&dests, &c("[2001:db8:0:1::]:80"), 0);
        let b = s.schedule(&dests, &c("[2001:db8::1]:80"), 0);
        assert_eq!(a, b);
        let bucket = hash_32(0x2001_0db8 ^ 0x0000_0001, 8) as usize;
        assert_eq!(a, Some(bucket % 7));
    }

    #[test]
    fn sh_table_gives_each_dest_weight_buckets_in_turn() {
        let dests = [dest(1, 2, 0, 0), dest(2, 0, 0, 0), dest(3, 3, 0, 0)];
        let mut s = SourceHash::new(SchedFlags::default());
        s.update(&dests);
        // 0 0 | 1 (weight 0 still takes one bucket) | 2 2 2 | 0 0 | 1 | 2 2 2 ...
        let cycle = [0, 0, 1, 2, 2, 2];
        let want: Vec<u32> = cycle.iter().cycle().take(256).copied().collect();
        assert_eq!(s.table(), want.as_slice());
    }

    #[test]
    fn sh_buckets_proportional_to_weights() {
        let dests = [dest(1, 1, 0, 0), dest(2, 2, 0, 0), dest(3, 5, 0, 0)];
        let mut s = SourceHash::new(SchedFlags::default());
        s.update(&dests);
        let mut count = [0u32; 3];
        for &b in s.table() {
            count[b as usize] += 1;
        }
        // 256 = 32 cycles of 8 buckets.
        assert_eq!(count, [32, 64, 160]);
        // Large weights: the first servers get everything (the kernel has the same limit).
        let big = [dest(1, 200, 0, 0), dest(2, 100, 0, 0)];
        s.update(&big);
        let mut count = [0u32; 2];
        for &b in s.table() {
            count[b as usize] += 1;
        }
        assert_eq!(count, [200, 56]);
    }

    #[test]
    fn sh_same_source_same_server_and_spread() {
        let dests: Vec<DestView> = (1..=5).map(|n| dest(n, 1, 0, 0)).collect();
        let mut s = SourceHash::new(SchedFlags::default());
        s.update(&dests);
        let mut seen = HashSet::new();
        for client in 0..300 {
            let a = s.schedule(&dests, &conn(client, 1000, 1), 0);
            // Without sh-port the port does not matter; neither does the destination.
            let b = s.schedule(&dests, &conn(client, 2000, 9), 0);
            assert_eq!(a, b);
            seen.insert(a.unwrap());
        }
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn sh_port_spreads_one_client() {
        let dests: Vec<DestView> = (1..=5).map(|n| dest(n, 1, 0, 0)).collect();
        let mut s = SourceHash::new(SchedFlags {
            fallback: false,
            port: true,
        });
        s.update(&dests);
        let seen: HashSet<_> = (0..200)
            .map(|p| s.schedule(&dests, &conn(1, 30000 + p, 1), 0))
            .collect();
        assert_eq!(seen.len(), 5);
        // Same client and port: same server.
        assert_eq!(
            s.schedule(&dests, &conn(1, 30001, 1), 0),
            s.schedule(&dests, &conn(1, 30001, 2), 0)
        );
        // The bucket is hash_32(port + address).
        let addr = u32::from(std::net::Ipv4Addr::new(192, 168, 0, 1));
        let b = hash_32(30001 + addr, 8) as usize;
        assert_eq!(s.schedule(&dests, &conn(1, 30001, 1), 0), Some(b % 5));
    }

    #[test]
    fn sh_unavailable_without_and_with_fallback() {
        let mut dests: Vec<DestView> = (1..=3).map(|n| dest(n, 1, 0, 0)).collect();
        let mut plain = SourceHash::new(SchedFlags::default());
        let mut fb = SourceHash::new(SchedFlags {
            fallback: true,
            port: false,
        });
        plain.update(&dests);
        fb.update(&dests);
        let clients: Vec<u32> = (0..100)
            .filter(|&c| plain.schedule(&dests, &conn(c, 1, 1), 0) == Some(1))
            .collect();
        assert!(!clients.is_empty());
        dests[1].overloaded = true;
        for &c in &clients {
            assert_eq!(plain.schedule(&dests, &conn(c, 1, 1), 0), None);
            let got = fb.schedule(&dests, &conn(c, 1, 1), 0);
            assert!(matches!(got, Some(0) | Some(2)), "{got:?}");
            // Deterministic per client.
            assert_eq!(got, fb.schedule(&dests, &conn(c, 1, 1), 0));
        }
        // The other clients are not moved by the fallback.
        for c in 0..100 {
            if !clients.contains(&c) {
                assert_eq!(
                    fb.schedule(&dests, &conn(c, 1, 1), 0),
                    plain.schedule(&dests, &conn(c, 1, 1), 0)
                );
            }
        }
    }

    #[test]
    fn sh_fallback_walk_matches_kernel_order() {
        // Only one usable server: the walk must reach it, and it must be the first usable
        // bucket in the kernel's probe order (2*ihash, 2*ihash+1, ...).
        let mut dests: Vec<DestView> = (1..=16).map(|n| dest(n, 1, 0, 0)).collect();
        for d in dests.iter_mut() {
            d.weight = 0;
        }
        dests[11].weight = 3;
        let mut s = SourceHash::new(SchedFlags {
            fallback: true,
            port: false,
        });
        s.update(&dests);
        let table = s.table().to_vec();
        for client in 0..50 {
            let c = conn(client, 1, 1);
            let ip = c.client.ip();
            let ihash = sh_bucket(ip, 0, 0);
            let want = (0..256u32)
                .map(|o| table[sh_bucket(ip, 0, (o + ihash as u32) % 256)] as usize)
                .find(|&i| dests[i].usable());
            assert_eq!(s.schedule(&dests, &c, 0), want);
            assert_eq!(want, Some(11));
        }
    }
}
