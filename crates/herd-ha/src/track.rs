//! Tracking beyond interfaces: scripts run on a schedule (keepalived's `vrrp_script`), and the
//! director's own virtual services (their health is pushed in by the daemon).
//!
//! Every tracked object has a weight, as in keepalived: failing with a negative weight lowers
//! the priority by it, passing with a positive weight raises it, and weight 0 means fault while
//! failing.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herd_core::config::vrrp::TrackScript;
use tokio::process::Command;

/// `fall` failures in a row make a passing script failing; `rise` passes make it pass again.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    passing: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts passing, as keepalived's scripts do: a director is not demoted before its first
    /// check has run.
    pub fn new(fall: u32, rise: u32) -> Hysteresis {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            passing: true,
            streak: 0,
        }
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    /// One result; returns whether the verdict changed.
    pub fn record(&mut self, pass: bool) -> bool {
        if pass == self.passing {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let need = if self.passing { self.fall } else { self.rise };
        if self.streak >= need {
            self.passing = pass;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

/// The priority after tracking and whether the instance is in fault, from the configured
/// priority and each tracked object's (passing, weight).
pub fn effect(priority: u8, tracked: impl IntoIterator<Item = (bool, i32)>) -> (u8, bool) {
    let mut p = i32::from(priority);
    let mut fault = false;
    for (passing, weight) in tracked {
        match (passing, weight) {
            (false, 0) => fault = true,
            (false, w) if w < 0 => p += w,
            (true, w) if w > 0 => p += w,
            _ => {}
        }
    }
    (p.clamp(1, 255) as u8, fault)
}

/// Runs `command` once with `sh -c` in its own process group; a pass is exit status 0 before
/// `timeout` (then the group is killed).
pub async fn check(command: &str, timeout: Duration) -> bool {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match crate::notify::run_bounded(cmd, timeout).await {
        Ok(Some(out)) => out.status.success(),
        Ok(None) => {
            tracing::warn!("track-script {command:?}: no answer within {timeout:?}");
            false
        }
        Err(e) => {
            tracing::warn!("track-script {command:?}: {e}");
            false
        }
    }
}

/// Runs a script every interval, keeping `passing` up to date, until the returned handle
/// aborts it (or the runtime ends).
pub fn spawn(
    instance: String,
    script: TrackScript,
    passing: Arc<AtomicBool>,
) -> tokio::task::AbortHandle {
    let task = tokio::spawn(async move {
        let mut h = Hysteresis::new(script.fall, script.rise);
        let mut tick = tokio::time::interval(script.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pass = check(&script.command, script.timeout).await;
            if h.record(pass) {
                tracing::info!(
                    instance = %instance,
                    "track-script {:?} is {}",
                    script.command,
                    if h.passing() { "passing again" } else { "failing" }
                );
                passing.store(h.passing(), Ordering::Relaxed);
            }
        }
    });
    task.abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise() {
        let mut h = Hysteresis::new(2, 3);
        assert!(h.passing());
        assert!(!h.record(false));
        assert!(!h.record(true), "a pass resets the streak");
        assert!(!h.record(false));
        assert!(h.record(false), "two failures in a row");
        assert!(!h.passing());
        assert!(!h.record(true) && !h.record(true));
        assert!(h.record(true), "three passes");
        assert!(h.passing());
    }

    #[test]
    fn weights_as_keepalived() {
        assert_eq!(effect(100, []), (100, false));
        assert_eq!(effect(100, [(false, -30), (true, -30)]), (70, false));
        assert_eq!(effect(100, [(true, 20), (false, 20)]), (120, false));
        assert_eq!(effect(100, [(false, 0)]), (100, true));
        assert_eq!(effect(10, [(false, -200)]), (1, false), "clamped");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_check_passes_fails_and_times_out() {
        assert!(check("exit 0", Duration::from_secs(5)).await);
        assert!(!check("exit 3", Duration::from_secs(5)).await);
        let t = std::time::Instant::now();
        assert!(!check("sleep 30", Duration::from_millis(200)).await);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "killed at the timeout"
        );
    }
}
