//! The agent's two counts under a limit a reload may change: verified peers served at once
//! (`max-connections`, taken without waiting) and sockets held at once (waited for before an
//! accept). Lowering a limit takes nothing back from what is held: new ones wait, or are
//! turned away, until enough have ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Verified peers served at once.
#[derive(Debug)]
pub(crate) struct Slots {
    max: AtomicUsize,
    used: Arc<AtomicUsize>,
}

/// A verified peer's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            max: AtomicUsize::new(max.max(1)),
            used: Arc::default(),
        }
    }

    /// A place, if fewer than the limit are taken.
    pub fn try_take(&self) -> Option<Slot> {
        let max = self.max.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < max).then_some(u + 1)
            })
            .ok()
            .map(|_| Slot(self.used.clone()))
    }

    pub fn set(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Release);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Places taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Sockets held at once: a semaphore whose size can change. Shrinking forgets the permits
/// that are free and owes the rest, which the next permits given back pay (the accept loop
/// forgets what it acquires while a debt is left).
#[derive(Debug)]
pub(crate) struct Sockets {
    sem: Arc<Semaphore>,
    /// (size, permits owed to a shrink).
    size: Mutex<(usize, usize)>,
}

impl Sockets {
    pub fn new(size: usize) -> Sockets {
        Sockets {
            sem: Arc::new(Semaphore::new(size)),
            size: Mutex::new((size, 0)),
        }
    }

    /// Waits for a socket's permit; `None` once closed.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            let permit = self.sem.clone().acquire_owned().await.ok()?;
            let mut size = self.size.lock().unwrap_or_else(|p| p.into_inner());
            if size.1 == 0 {
                return Some(permit);
            }
            size.1 -= 1;
            permit.forget();
        }
    }

    pub fn resize(&self, to: usize) {
        let mut size = self.size.lock().unwrap_or_else(|p| p.into_inner());
        let (now, owed) = *size;
        if to > now {
            let more = to - now;
            let paid = more.min(owed);
            self.sem.add_permits(more - paid);
            *size = (to, owed - paid);
        } else {
            let less = now - to;
            let forgotten = self.sem.forget_permits(less);
            *size = (to, owed + less - forgotten);
        }
    }

    /// Permits free now (for tests and logs).
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_slot_limit_turns_new_peers_away_until_enough_have_ended() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        slots.set(3);
        let c = slots.try_take().unwrap();
        slots.set(1);
        assert!(slots.try_take().is_none());
        drop((a, b));
        assert!(slots.try_take().is_none(), "one still held, the limit is 1");
        drop(c);
        assert!(slots.try_take().is_some());
    }

    #[tokio::test]
    async fn a_shrunk_socket_limit_is_paid_by_permits_given_back() {
        let s = Sockets::new(3);
        let held: Vec<_> = vec![s.take().await.unwrap(), s.take().await.unwrap()];
        // One free permit is forgotten at once, one is owed.
        s.resize(1);
        assert_eq!(s.available(), 0);
        drop(held);
        // The two given back: one pays the debt (when next taken), one is free.
        assert_eq!(s.available(), 2);
        let one = s.take().await.unwrap();
        assert_eq!(s.available(), 0);
        // Growing again adds permits.
        s.resize(2);
        assert_eq!(s.available(), 1);
        drop(one);
        assert_eq!(s.available(), 2);
    }

    #[test]
    fn growing_pays_a_debt_before_adding_permits() {
        let s = Sockets::new(2);
        let p: Vec<_> = (0..2)
            .map(|_| s.sem.clone().try_acquire_owned().unwrap())
            .collect();
        s.resize(0);
        assert_eq!(*s.size.lock().unwrap(), (0, 2));
        s.resize(1);
        assert_eq!(*s.size.lock().unwrap(), (1, 1));
        assert_eq!(s.available(), 0);
        drop(p);
    }
}
