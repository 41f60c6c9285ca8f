//! The monotonic clock the director's books are kept in: milliseconds since the process
//! started. herd-lb takes time as an argument; this is where the daemon reads it.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}
