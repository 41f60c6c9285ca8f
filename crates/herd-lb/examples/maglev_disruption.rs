//! The measurement behind the Maglev scheduler's disruption bound (`DISRUPTION_SHARES` in
//! `src/sched/mh.rs`): over many random sets of 2 to 39 real servers with one removed, how many
//! table positions of the *other* servers change owner, in units of the removed server's share
//! `M/N` and as a fraction of the table.
//!
//! A benchmark, not a test (it asserts nothing and takes a while):
//! `cargo run --release -p herd-lb --example maglev_disruption [ROUNDS]` (default 200,000).

use std::net::{IpAddr, SocketAddr};

use herd_core::model::SchedFlags;
use herd_lb::sched::{DestView, Maglev, Scheduler, SplitMix64, MH_PRIMES};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut rng = SplitMix64::new(2);
    let mut shares = Vec::with_capacity(rounds);
    let mut fractions = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let n = 2 + rng.below(38) as u32;
        let m = prime_above(n);
        let dests: Vec<DestView> = (0..n).map(|_| random_server(&mut rng)).collect();
        let gone = rng.below(u64::from(n)) as usize;
        let moved = moved_others(&dests, gone, m) as f64;
        shares.push(moved / (f64::from(m) / f64::from(n)));
        fractions.push(moved / f64::from(m));
    }
    shares.sort_by(f64::total_cmp);
    fractions.sort_by(f64::total_cmp);
    let l = shares.len();
    println!("{rounds} random sets of 2..39 servers, one removed");
    for q in [0.5, 0.9, 0.99, 0.999, 0.9999] {
        let k = ((l as f64 * q) as usize).min(l - 1);
        println!("q{q}: {:.3} shares, {:.4} of M", shares[k], fractions[k]);
    }
    println!(
        "max: {:.3} shares, {:.4} of M",
        shares[l - 1],
        fractions[l - 1]
    );
}

/// The first kernel prime above 100 n (the table size the kernel would use).
fn prime_above(n: u32) -> u32 {
    MH_PRIMES
        .iter()
        .copied()
        .find(|&p| p > 100 * n)
        .expect("n below 40 has a kernel prime")
}

/// Positions owned by servers other than `dests[gone]` that change owner when it goes.
fn moved_others(dests: &[DestView], gone: usize, m: u32) -> usize {
    let mut mh = Maglev::with_table_size(SchedFlags::default(), m).expect("a kernel prime");
    mh.update(dests);
    let before = mh.table_owners();
    let mut rest = dests.to_vec();
    let removed = rest.remove(gone).addr;
    mh.update(&rest);
    let after = mh.table_owners();
    before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != removed && b != a)
        .count()
}

fn random_server(rng: &mut SplitMix64) -> DestView {
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
