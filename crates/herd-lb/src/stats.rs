//! Counters and the kernel's rate estimator (`net/netfilter/ipvs/ip_vs_est.c`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use herd_core::api::{Rates, Stats};

/// Cumulative counters, updated by the data plane without locks.
#[derive(Debug, Default)]
pub struct Counters {
    conns: AtomicU64,
    pkts_in: AtomicU64,
    pkts_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    pub fn add_conn(&self) {
        self.conns.fetch_add(1, Relaxed);
    }

    /// Client → real server traffic.
    pub fn add_in(&self, pkts: u64, bytes: u64) {
        self.pkts_in.fetch_add(pkts, Relaxed);
        self.bytes_in.fetch_add(bytes, Relaxed);
    }

    /// Real server → client traffic.
    pub fn add_out(&self, pkts: u64, bytes: u64) {
        self.pkts_out.fetch_add(pkts, Relaxed);
        self.bytes_out.fetch_add(bytes, Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            conns: self.conns.load(Relaxed),
            pkts_in: self.pkts_in.load(Relaxed),
            pkts_out: self.pkts_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }

    pub fn zero(&self) {
        for c in [
            &self.conns,
            &self.pkts_in,
            &self.pkts_out,
            &self.bytes_in,
            &self.bytes_out,
        ] {
            c.store(0, Relaxed);
        }
    }
}

/// The kernel's estimator: sampled every [`RateEst::PERIOD_MS`], an exponentially weighted
/// moving average with factor ¼, kept in fixed point (connections and packets scaled by 2^10
/// per second, bytes by 2^5), exactly as `ip_vs_est.c` does, so `--rate` shows the same numbers
/// for the same traffic.
#[derive(Debug, Default, Clone)]
pub struct RateEst {
    last: Stats,
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

impl RateEst {
    /// The kernel samples every two seconds.
    pub const PERIOD_MS: u64 = 2000;

    /// Starts estimating from the current counters.
    pub fn new(now: Stats) -> Self {
        RateEst {
            last: now,
            ..RateEst::default()
        }
    }

    /// Feeds one sample taken [`Self::PERIOD_MS`] after the previous one.
    pub fn sample(&mut self, s: Stats) {
        // Deltas over 2 s, scaled: <<9 is (<<10 per second) / 2 s; <<4 is (<<5 per second) / 2 s.
        let d = |now: u64, last: u64| now.wrapping_sub(last) as i64;
        let step = |avg: &mut i64, rate: i64| *avg += (rate - *avg) >> 2;
        step(&mut self.cps, d(s.conns, self.last.conns) << 9);
        step(&mut self.inpps, d(s.pkts_in, self.last.pkts_in) << 9);
        step(&mut self.outpps, d(s.pkts_out, self.last.pkts_out) << 9);
        step(&mut self.inbps, d(s.bytes_in, self.last.bytes_in) << 4);
        step(&mut self.outbps, d(s.bytes_out, self.last.bytes_out) << 4);
        self.last = s;
    }

    /// The rates per second, rounded as the kernel reads them out.
    pub fn rates(&self) -> Rates {
        let r10 = |v: i64| ((v.max(0) + 0x1FF) >> 10) as u64;
        let r5 = |v: i64| ((v.max(0) + 0xF) >> 5) as u64;
        Rates {
            cps: r10(self.cps),
            pps_in: r10(self.inpps),
            pps_out: r10(self.outpps),
            bps_in: r5(self.inbps),
            bps_out: r5(self.outbps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_converges_to_the_true_rate() {
        let mut est = RateEst::new(Stats::default());
        let mut s = Stats::default();
        // The average closes a quarter of the gap per sample: 100 samples leave no error.
        for _ in 0..100 {
            // 100 connections/s and 1 MB/s in, sampled every 2 s.
            s.conns += 200;
            s.bytes_in += 2_000_000;
            est.sample(s);
        }
        let r = est.rates();
        assert_eq!(r.cps, 100);
        assert_eq!(r.bps_in, 1_000_000);
        assert_eq!(r.bps_out, 0);
    }

    #[test]
    fn rate_decays_after_traffic_stops() {
        let mut est = RateEst::new(Stats::default());
        let s = Stats {
            conns: 2000,
            ..Stats::default()
        };
        est.sample(s);
        let first = est.rates().cps;
        assert!(
            first > 0 && first < 1000,
            "first sample is averaged in by 1/4: {first}"
        );
        for _ in 0..60 {
            est.sample(s);
        }
        assert_eq!(est.rates().cps, 0);
    }

    #[test]
    fn counters_snapshot_and_zero() {
        let c = Counters::default();
        c.add_conn();
        c.add_in(2, 100);
        c.add_out(3, 300);
        assert_eq!(
            c.snapshot(),
            Stats {
                conns: 1,
                pkts_in: 2,
                pkts_out: 3,
                bytes_in: 100,
                bytes_out: 300
            }
        );
        c.zero();
        assert_eq!(c.snapshot(), Stats::default());
    }
}
