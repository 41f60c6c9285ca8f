//! The local time the rule engine's periods are evaluated in: the one place that reads the
//! system's time zone (TZ, /etc/localtime, via jiff) and, for [`now`], the clock. The
//! conversion itself is herd-rules' [`herd_rules::period::in_zone`].

use std::time::SystemTime;

use herd_rules::period::{in_zone, LocalTime};
use jiff::tz::TimeZone;

/// The system's local time zone at the given instant.
pub fn at(t: SystemTime) -> LocalTime {
    in_zone(t, &TimeZone::system())
}

/// The current local time.
pub fn now() -> LocalTime {
    at(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn at_and_now_use_the_system_zone() {
        let t = at(UNIX_EPOCH + Duration::from_secs(1_709_220_645));
        assert!((2024..=2024).contains(&t.year));
        assert!(matches!((t.month, t.mday), (2, 29) | (3, 1)));
        assert_eq!((t.minute % 15, t.second), (0, 45));
        let now = now();
        assert!(now.year >= 2024);
        assert!((1..=12).contains(&now.month) && now.hour < 24 && now.wday < 7);
        assert!((1..=366).contains(&now.yday));
    }
}
