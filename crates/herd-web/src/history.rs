//! Recent history for the dashboard's small charts: every [`PERIOD`], the connection rate of
//! every service and real server, and the latency of every check target,
//! kept for [`POINTS`] periods (in memory; Prometheus is the place for long history).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::time::Duration;

pub const PERIOD: Duration = Duration::from_secs(2);
/// Ten minutes of two-second samples.
pub const POINTS: usize = 300;

#[derive(Debug, Default)]
pub struct History {
    /// Keyed by `service` (`TCP 1.2.3.4:80`) or `service real`.
    pub cps: HashMap<String, VecDeque<f64>>,
    /// Keyed by `check target`, in milliseconds.
    pub latency: HashMap<String, VecDeque<f64>>,
}

fn push(m: &mut HashMap<String, VecDeque<f64>>, key: String, v: f64) {
    let q = m.entry(key).or_default();
    if q.len() == POINTS {
        q.pop_front();
    }
    q.push_back(v);
}

pub fn real_key(service: &herd_core::model::ServiceKey, real: std::net::SocketAddr) -> String {
    format!("{service} {real}")
}

pub fn check_key(check: &str, target: &str) -> String {
    format!("{check} {target}")
}

impl History {
    pub fn record(
        &mut self,
        services: &[herd_core::api::ServiceStatus],
        checks: &[herd_core::api::HealthCheckStatus],
    ) {
        let mut seen = std::collections::HashSet::new();
        for s in services {
            let k = s.spec.key.to_string();
            push(&mut self.cps, k.clone(), s.rates.cps as f64);
            seen.insert(k);
            for r in &s.reals {
                let k = real_key(&s.spec.key, r.spec.address);
                push(&mut self.cps, k.clone(), r.rates.cps as f64);
                seen.insert(k);
            }
        }
        for c in checks {
            for t in &c.targets {
                if let Some(us) = t.latency_us {
                    let k = check_key(&c.name, &t.target);
                    push(&mut self.latency, k.clone(), us as f64 / 1000.0);
                    seen.insert(k);
                }
            }
        }
        // What is gone from the config goes from the charts.
        for m in [&mut self.cps, &mut self.latency] {
            m.retain(|k, _| seen.contains(k));
        }
    }
}

/// A small SVG line chart of `values` (oldest first), scaled to its maximum; `label` is its
/// accessible name and tooltip.
pub fn sparkline(values: &VecDeque<f64>, label: &str) -> String {
    let (w, h) = (120.0, 24.0);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let mut pts = String::new();
    let n = values.len().max(2) - 1;
    for (i, v) in values.iter().enumerate() {
        let x = w * i as f64 / n as f64;
        let y = if max > 0.0 {
            h - 1.0 - (h - 2.0) * v / max
        } else {
            h - 1.0
        };
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let last = values.back().copied().unwrap_or(0.0);
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"{label}\"><title>{label}: now {last:.0}, max {max:.0}</title>\
         <polyline points=\"{}\"/></svg>",
        pts.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_charts_scale() {
        let mut m = HashMap::new();
        for i in 0..POINTS + 10 {
            push(&mut m, "a".into(), i as f64);
        }
        assert_eq!(m["a"].len(), POINTS);
        assert_eq!(m["a"][0], 10.0);
        let svg = sparkline(&VecDeque::from(vec![0.0, 5.0, 10.0]), "cps");
        assert!(
            svg.contains("points=\"0.0,23.0 60.0,12.0 120.0,1.0\""),
            "{svg}"
        );
        let flat = sparkline(&VecDeque::new(), "x");
        assert!(flat.contains("points=\"\""), "{flat}");
    }
}
