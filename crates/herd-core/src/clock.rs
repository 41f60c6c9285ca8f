//! The wall clock, for the shells that stamp what they record with it (VRRP transitions and
//! authentication sequence numbers, the monitor's history and alerts). The cores take time as
//! an argument, and timers use the monotonic clock (tokio's, so tests can pause it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 before it).
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    wall_us() / 1000
}
