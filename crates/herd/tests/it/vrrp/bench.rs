//! The failover benchmark (`bench/failover.sh`; ignored in the test suite, since timing is not
//! pass/fail): two directors, two real servers and a client. The master director dies by
//! SIGKILL; the figure is the time from the kill to the client's first answer through the VIP.
//! Modes, run in the same session:
//! - `herd`: herd's VRRP, advert 100 ms.
//! - `keepalived-1s`, `keepalived-0.1s`: keepalived's VRRP beside herd as a load balancer
//!   only; the kill takes both (the director dies).
//!
//! Env: `RUNS` (default 10), `MODES` (comma-separated, default all three), `OUT` (a JSON file
//! for the figures).

use std::time::Duration;

use herd_testkit::{require_root, wait_until};

use super::{now, Client, Director, Keepalived, Site, VIP};

/// One failover; the seconds from SIGKILL to the client's first answer.
fn one_run(mode: &str, run: usize) -> f64 {
    let site = Site::new(&format!("vrrpbench-{mode}-{run}"));
    let (lan, dir) = (&site.lan, &site.dir);
    let advert = match mode {
        "herd" => None,
        "keepalived-1s" => Some("1"),
        "keepalived-0.1s" => Some("0.1"),
        other => panic!("unknown mode {other:?} (herd, keepalived-1s, keepalived-0.1s)"),
    };
    let (mut d1, mut d2, mut k1, _k2) = match advert {
        None => (
            Director::new(lan, dir, 1, 200),
            Director::new(lan, dir, 2, 150),
            None,
            None,
        ),
        Some(a) => {
            let d1 = Director::with(lan, dir, 1, None);
            let d2 = Director::with(lan, dir, 2, None);
            let k1 = Keepalived::new(&d1.host, dir, 200, a);
            let k2 = Keepalived::new(&d2.host, dir, 150, a);
            (d1, d2, Some(k1), Some(k2))
        }
    };
    assert!(
        wait_until(Duration::from_secs(15), || d1.host.has_addr(VIP)),
        "{mode}: d1 never took the VIP\n{}",
        d1.report("")
    );
    let clog = Client::start(&site, 60, Duration::from_secs(10), || {
        format!("{mode}: {}", d1.report(""))
    });
    // Kill at a pseudo-random point of the advert cycle, so runs sample its phase.
    let phase = (now().fract() * 1000.0) as u64 % 1000;
    std::thread::sleep(Duration::from_millis(200 + phase));
    let t0 = now();
    if let Some(k) = k1.as_mut() {
        k.kill();
    }
    d1.kill();
    // Only requests begun once everything is dead count (a live half of the director could
    // still answer while the other half is being killed); the time counts from the first kill.
    let dead = now();
    let t = clog.recovered(dead, Duration::from_secs(15), || {
        format!("{mode}: {}", d2.report(""))
    }) + (dead - t0);
    assert!(d2.host.has_addr(VIP), "{mode}: d2 does not hold the VIP");
    d2.kill();
    site.clean();
    t
}

fn summary(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (xs[0], median, xs[n - 1])
}

#[test]
#[ignore = "benchmark: run with bench/failover.sh"]
fn failover_benchmark() {
    if !require_root("failover_benchmark") {
        return;
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let modes =
        std::env::var("MODES").unwrap_or_else(|_| "herd,keepalived-1s,keepalived-0.1s".to_string());
    let modes: Vec<&str> = modes.split(',').map(str::trim).collect();
    let mut results: Vec<(String, Vec<f64>)> =
        modes.iter().map(|m| (m.to_string(), vec![])).collect();
    // Interleaved: run i of every mode before run i+1 of any, so drift hits all modes alike.
    for run in 0..runs {
        for (mode, times) in results.iter_mut() {
            let t = one_run(mode, run);
            eprintln!("run {:>2}/{runs} {mode:<16} {t:.3} s", run + 1);
            times.push(t);
        }
    }
    println!("\nfailover: SIGKILL of the master director to the client's first answer through the VIP ({runs} runs)");
    println!("{:<16} {:>8} {:>8} {:>8}", "mode", "min", "median", "max");
    let mut json = Vec::new();
    for (mode, times) in &mut results {
        let raw = times.clone();
        let (min, median, max) = summary(times);
        println!("{mode:<16} {min:>7.3}s {median:>7.3}s {max:>7.3}s");
        json.push(serde_json::json!({
            "mode": mode, "runs": raw, "min": min, "median": median, "max": max,
        }));
    }
    if let Some(out) = std::env::var("OUT").ok().filter(|o| !o.is_empty()) {
        std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}
