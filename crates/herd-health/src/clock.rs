//! The wall clock and the system's time zone, read in one place. Timers (intervals, timeouts,
//! alert grouping) use tokio's clock instead, so that tests can pause it; the wall clock only
//! stamps what is recorded and shown (history, alert times, `MON_*` variables) and what the
//! rule engine is told is "now"; the local time (TZ, /etc/localtime, via jiff) is what its
//! alert periods are evaluated in (the conversion is herd-rules' `period::in_zone`).

use std::time::SystemTime;

use herd_rules::period::{in_zone, LocalTime};
use jiff::tz::TimeZone;

/// Milliseconds since the Unix epoch: herd-core's one wall clock.
pub use herd_core::clock::wall_ms;

/// The system's local time at the given instant.
pub fn local_at(t: SystemTime) -> LocalTime {
    in_zone(t, &TimeZone::system())
}

/// The local time now (time zone included), for the alert periods the rule engine checks.
pub fn local_now() -> LocalTime {
    local_at(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn at_and_now_use_the_system_zone() {
        let t = local_at(UNIX_EPOCH + Duration::from_secs(1_709_220_645));
        assert!((2024..=2024).contains(&t.year));
        assert!(matches!((t.month, t.mday), (2, 29) | (3, 1)));
        assert_eq!((t.minute % 15, t.second), (0, 45));
        let now = local_now();
        assert!(now.year >= 2024);
        assert!((1..=12).contains(&now.month) && now.hour < 24 && now.wday < 7);
        assert!((1..=366).contains(&now.yday));
    }
}
