//! The memory budget of the requests in flight (`limits.max_inflight_bytes`),
//! and the CPU bound of heavy work (`cores`).
//!
//! ```text
//!  body frame arrives ─► Charge::try_grow(frame) ──── over budget ─► 503, body dropped
//!  body complete, declared decoded size D ─► Charge::try_grow(3 D)  (decoded + batches + compressed)
//!  tenant bodies compressed ─► Charge::shrink_to(what is still held) ─► forward ─► drop: released
//! ```
//!
//! When the budget is full, a request that needs room waits briefly and
//! signals *pressure*; requests whose bodies have made no progress for a
//! while (stalled senders) give up their bytes at that signal and are told
//! to retry. So senders that stall part-way through their bodies can fill
//! the budget only until someone who is actually sending needs it.
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
use std::time::Duration;

use tokio::sync::Notify;

/// CPUs this process may run on (respects affinity masks and cgroup
/// quotas): the bound of CPU-heavy work at once (splits, password hashes).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A byte budget shared by all requests.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    /// Signalled when a request found the budget full.
    pressure: Notify,
    /// Signalled when bytes are released.
    released: Notify,
}

impl ByteBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
            pressure: Notify::new(),
            released: Notify::new(),
        })
    }

    /// Resolves at the next signal that some request needs room.
    pub async fn pressure(&self) {
        self.pressure.notified().await
    }

    /// A new, empty charge against this budget.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
            expected: 0,
        }
    }

    /// Bytes charged now, over all requests.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests holding at most this much are *small*: a typical push.
    fn small(&self) -> usize {
        self.max / 32
    }

    /// What a request that is not small may fill the budget up to: the
    /// rest is kept for small ones, so that large senders (stalled or not)
    /// cannot take every byte and lock out ordinary pushes.
    fn large_limit(&self) -> usize {
        self.max - self.max / 4
    }

    fn try_take(&self, n: usize, limit: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|&next| next <= limit) else {
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
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            self.released.notify_waiters();
        }
    }
}

/// What one request holds of the budget; released when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
    /// What the request is expected to hold in the end (a body's declared
    /// length, say): whether it is small is judged by this too, so a
    /// large body is not small while it is still arriving.
    expected: usize,
}

impl Charge {
    /// Charges `n` more bytes, if the budget has room. A charge that grows
    /// past a small request's size may only use the part of the budget not
    /// kept for small requests.
    pub fn try_grow(&mut self, n: usize) -> bool {
        let b = &self.budget;
        let limit = if self.bytes.saturating_add(n).max(self.expected) <= b.small() {
            b.max
        } else {
            b.large_limit()
        };
        self.take(n, limit)
    }

    fn take(&mut self, n: usize, limit: usize) -> bool {
        if self.budget.try_take(n, limit) {
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
        if self.bytes.saturating_add(n) <= self.budget.large_limit() {
            return self.try_grow(n);
        }
        let room = self.budget.max.saturating_sub(self.bytes);
        self.take(n.min(room), self.budget.max)
    }

    /// [`Charge::try_grow`] (or [`Charge::try_grow_alone`] with `alone`),
    /// and when the budget is full: signal pressure, so stalled requests
    /// release their bytes, and try again as bytes are released, for at
    /// most `wait`.
    pub async fn grow(&mut self, n: usize, alone: bool, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let budget = self.budget.clone();
        loop {
            let released = budget.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let grown = if alone {
                self.try_grow_alone(n)
            } else {
                self.try_grow(n)
            };
            if grown {
                return true;
            }
            self.budget.pressure.notify_waiters();
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Declares what this request will hold at least in the end
    /// (`usize::MAX` when unknown: not small).
    pub fn expect(&mut self, n: usize) {
        self.expected = n;
    }

    /// Releases what is charged beyond `n` bytes.
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            self.budget.give(self.bytes - n);
            self.bytes = n;
        }
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
        let budget = ByteBudget::new(3200);
        let mut a = budget.charge();
        assert!(a.try_grow(1400));
        let mut b = budget.charge();
        assert!(!b.try_grow(1001), "past the part large requests may use");
        assert!(b.try_grow(1000));
        assert_eq!(budget.used(), 2400);
        // what is kept back serves small requests only
        let mut small: Vec<Charge> = (0..8).map(|_| budget.charge()).collect();
        for c in &mut small {
            assert!(c.try_grow(100), "a small request fits");
        }
        let mut declared_large = budget.charge();
        declared_large.expect(1000);
        assert!(
            !declared_large.try_grow(1),
            "a large body is large from its first byte"
        );
        assert!(!budget.charge().try_grow(1), "the whole budget is used");
        drop(small);
        a.shrink_to(400);
        assert_eq!(budget.used(), 1400);
        drop(b);
        assert_eq!(budget.used(), 400);
        let mut a = {
            let mut c = budget.charge();
            assert!(c.try_grow(10));
            drop(a);
            c
        };
        // a request larger than the whole budget runs only alone
        let mut big = budget.charge();
        assert!(!big.try_grow_alone(5000), "another request holds bytes");
        a.shrink_to(0);
        assert!(big.try_grow_alone(5000));
        assert_eq!(budget.used(), 3200);
        assert!(!budget.charge().try_grow(1));
        drop(big);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_request_that_needs_room_makes_stalled_ones_let_go() {
        let budget = ByteBudget::new(3200);
        let mut stalled = budget.charge();
        assert!(stalled.try_grow(2000));
        // The stalled request gives up its bytes when pressure is signalled.
        let b = budget.clone();
        let holder = tokio::spawn(async move {
            b.pressure().await;
            drop(stalled);
        });
        tokio::task::yield_now().await;
        let mut fresh = budget.charge();
        assert!(fresh.grow(1500, false, Duration::from_secs(5)).await);
        holder.await.unwrap();
        assert_eq!(budget.used(), 1500);
        // Nobody lets go: it gives up after `wait`.
        let mut more = budget.charge();
        let started = std::time::Instant::now();
        assert!(!more.grow(1000, false, Duration::from_millis(100)).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
