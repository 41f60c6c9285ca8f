//! How long an accept loop waits after a failed `accept`, so that a listener out of file
//! descriptors (EMFILE, ENFILE) or memory neither spins on the error nor sleeps long once the
//! descriptors are back: 10 ms after the first failure, doubling up to 100 ms, and back to
//! 10 ms after an accept that works. Shared by every listener (data plane, control socket,
//! mon port, dashboard, node agent) so that they behave alike; time is the caller's (no I/O here).

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(10);
const MAX: Duration = Duration::from_millis(100);

/// The next wait of one accept loop.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// An accept failed: how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        let now = self.next.unwrap_or(FIRST);
        self.next = Some((now * 2).min(MAX));
        now
    }

    /// An accept worked: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_100ms_and_reset_after_a_success() {
        let mut b = Backoff::default();
        let ms = |b: &mut Backoff| b.failed().as_millis();
        let waits: Vec<_> = (0..6).map(|_| ms(&mut b)).collect();
        assert_eq!(waits, [10, 20, 40, 80, 100, 100]);
        b.succeeded();
        assert_eq!(ms(&mut b), 10);
    }
}
