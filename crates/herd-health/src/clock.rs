//! The wall clock, read in one place. Timers (intervals, timeouts, alert grouping) use tokio's
//! clock instead, so that tests can pause it; the wall clock only stamps what is recorded and
//! shown (history, alert times, `MON_*` variables) and what the rule engine is told is "now".

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The local time now (time zone included), for the alert periods the rule engine checks.
pub fn local_now() -> herd_core::period::LocalTime {
    herd_core::period::LocalTime::now()
}
