//! The memory budget of the requests in flight (`limits.max_inflight_bytes`).
//!
//! ```text
//!  body frame arrives ─► Charge::try_grow(frame) ──── over budget ─► 503, body dropped
//!  body complete, declared decoded size D ─► Charge::try_grow(3 D)  (decoded + batches + compressed)
//!  tenant bodies compressed ─► Charge::shrink_to(what is still held) ─► forward ─► drop: released
//! ```
//!
//! Invariant: every byte a request makes orgsplit hold (the compressed body
//! while it arrives, chunked or not; the decompressed body; the per-tenant
//! batches and their compressed bodies until the upstream answered) is
//! charged here before it is allocated, and released when the request ends,
//! however it ends (the [`Charge`] is a guard). The sum over all requests
//! never exceeds the budget, except that one request larger than the whole
//! budget may run when it is the only one (see [`Charge::try_grow_alone`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A byte budget shared by all requests.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A new, empty charge against this budget.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes charged now, over all requests.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.max
    }

    fn try_take(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|&next| next <= self.max) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one request holds of the budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Charge {
    /// Charges `n` more bytes, if the budget has room.
    pub fn try_grow(&mut self, n: usize) -> bool {
        if self.budget.try_take(n) {
            self.bytes += n;
            true
        } else {
            false
        }
    }

    /// Like [`Charge::try_grow`], but a request that needs more than the
    /// whole budget may have all of it: it then runs alone, so a limit on
    /// one request's size that is larger than the budget cannot make that
    /// request fail forever.
    pub fn try_grow_alone(&mut self, n: usize) -> bool {
        let room = self.budget.max.saturating_sub(self.bytes);
        self.try_grow(n.min(room))
    }

    /// Releases what is charged beyond `n` bytes.
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            self.budget.give(self.bytes - n);
            self.bytes = n;
        }
    }

    /// Bytes this charge holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_and_released() {
        let budget = ByteBudget::new(100);
        let mut a = budget.charge();
        assert!(a.try_grow(60));
        let mut b = budget.charge();
        assert!(!b.try_grow(41), "over the budget");
        assert!(b.try_grow(40));
        assert_eq!(budget.used(), 100);
        a.shrink_to(10);
        assert_eq!(budget.used(), 50);
        drop(b);
        assert_eq!(budget.used(), 10);
        // a request larger than the whole budget runs only alone
        let mut big = budget.charge();
        assert!(!big.try_grow_alone(500), "another request holds bytes");
        drop(a);
        assert!(big.try_grow_alone(500));
        assert_eq!(budget.used(), 100);
        assert!(!budget.charge().try_grow(1));
        drop(big);
        assert_eq!(budget.used(), 0);
    }
}
