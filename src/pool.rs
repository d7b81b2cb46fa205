//! Reusable byte buffers, so a steady stream of pushes stops allocating its
//! large buffers (request bodies, decompressed bodies, per-tenant batches,
//! compressed bodies).
//!
//! The free buffers are kept in a few shards, each behind its own lock; a
//! thread takes from and gives to its own shard first, so threads rarely
//! meet on a lock (a push takes and gives several buffers per tenant, never
//! per series). The pool is bounded in the total bytes it keeps and in the
//! size of each buffer (counted across shards), so it cannot hold on to
//! memory after a burst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Shards of the free lists.
const SHARDS: usize = 4;

/// A bounded pool of `Vec<u8>`.
pub struct BufferPool {
    shards: [Mutex<Vec<Vec<u8>>>; SHARDS],
    /// Buffers and bytes (capacities) kept, over all shards.
    count: AtomicUsize,
    bytes: AtomicUsize,
    max_buffers: usize,
    max_capacity: usize,
    max_total: usize,
}

/// This thread's shard.
fn home() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    HOME.with(|h| *h)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BufferPool {
    /// A pool that keeps at most `max_buffers` buffers of at most
    /// `max_capacity` bytes each, `max_total` bytes in all.
    pub const fn new(max_buffers: usize, max_capacity: usize, max_total: usize) -> Self {
        Self {
            shards: [const { Mutex::new(Vec::new()) }; SHARDS],
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_buffers,
            max_capacity,
            max_total,
        }
    }

    /// A kept buffer that fits `need` bytes without wasting much: capacity
    /// between `need` and four times it, among the most recently returned
    /// of this thread's shard, then of the others. With `filled`, one that
    /// already holds `need` initialised bytes is preferred (searched for
    /// first, in every shard), so [`Self::take_filled`] rarely zeroes.
    fn pop(&self, need: usize, filled: bool) -> Option<Vec<u8>> {
        if self.max_buffers == 0 || self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let fits = |b: &Vec<u8>| b.capacity() >= need && b.capacity() / 4 <= need.max(256);
        if filled {
            if let Some(buf) = self.search(|b| b.len() >= need && fits(b)) {
                return Some(buf);
            }
        }
        self.search(fits)
    }

    fn search(&self, wanted: impl Fn(&Vec<u8>) -> bool) -> Option<Vec<u8>> {
        const LOOK: usize = 8;
        let home = home();
        for k in 0..SHARDS {
            let mut free = lock(&self.shards[(home + k) % SHARDS]);
            let n = free.len();
            if let Some(i) = (n.saturating_sub(LOOK)..n)
                .rev()
                .find(|&i| wanted(&free[i]))
            {
                let buf = free.swap_remove(i);
                drop(free);
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(buf.capacity(), Ordering::Relaxed);
                return Some(buf);
            }
        }
        None
    }

    /// A pool that keeps nothing (every `take` allocates).
    pub const fn disabled() -> Self {
        Self::new(0, 0, 0)
    }

    /// An empty buffer with at least `capacity` bytes of room.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        match self.pop(capacity, false) {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// A buffer of at least `len` bytes with unspecified content, for APIs
    /// that write into a `&mut [u8]` (snappy); use its first `len` bytes.
    /// A reused buffer keeps the length it had, so only the part beyond what
    /// it ever held is zeroed, and a buffer that needs no zeroing is
    /// preferred (zeroing a buffer this large on every use cost as much as
    /// a tenth of the snappy work around it).
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut buf = self.pop(len, true).unwrap_or_default();
        // Stale bytes from an earlier use are allowed here; `clear` in
        // `take` is what hides them elsewhere.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// Returns a buffer for reuse (or frees it, if the pool is full or the
    /// buffer too large). Its content is kept until reuse.
    pub fn give(&self, buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity == 0 || capacity > self.max_capacity {
            return;
        }
        // Reserve room in the bounds first, so racing givers cannot both
        // pass them.
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max_buffers {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if self.bytes.fetch_add(capacity, Ordering::Relaxed) + capacity > self.max_total {
            self.bytes.fetch_sub(capacity, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        lock(&self.shards[home()]).push(buf);
    }

    /// Buffers currently kept.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Bytes currently kept.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pooled buffer that goes back to its pool when dropped, so it can be
/// handed out as [`bytes::Bytes`] (`Bytes::from_owner`), e.g. as an HTTP body.
pub struct Pooled {
    buf: Vec<u8>,
    /// The buffer's first `len` bytes are the content.
    len: usize,
    pool: std::sync::Arc<BufferPool>,
}

impl Pooled {
    /// The whole of `buf`.
    pub fn new(buf: Vec<u8>, pool: std::sync::Arc<BufferPool>) -> Self {
        Self::prefix(buf, usize::MAX, pool)
    }

    /// The first `len` bytes of `buf` (a buffer from
    /// [`BufferPool::take_filled`], which keeps its full length for reuse).
    pub fn prefix(buf: Vec<u8>, len: usize, pool: std::sync::Arc<BufferPool>) -> Self {
        let len = len.min(buf.len());
        Self { buf, len, pool }
    }

    /// Appends to the content (a buffer made with [`Pooled::new`]).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.truncate(self.len);
        self.buf.extend_from_slice(data);
        self.len = self.buf.len();
    }

    /// Into shared bytes that give the buffer back when the last clone drops.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

impl Default for BufferPool {
    /// Up to 1024 buffers of up to 4 MiB each, 8 MiB in all: the working
    /// set of several typical requests (a Prometheus batch is a few hundred
    /// KiB decoded, split into one buffer per tenant). 16 MiB bought no
    /// measurable speed and cost 10 MiB of peak RSS in the load test.
    fn default() -> Self {
        Self::new(1024, 4 << 20, 8 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let pool = BufferPool::new(2, 1024, 1 << 20);
        let mut a = pool.take(100);
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(50);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        pool.give(vec![0; 4096]); // larger than the pool keeps: freed
        assert_eq!(pool.len(), 0);
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.len(), 2, "count bound");

        // a buffer far larger than asked for stays in the pool
        let pool = BufferPool::new(4, 4096, 1 << 20);
        let big = Vec::with_capacity(2048);
        let big_ptr = big.as_ptr();
        pool.give(big);
        let small = pool.take(100);
        assert_ne!(small.as_ptr(), big_ptr);
        let fitting = pool.take(600);
        assert_eq!(fitting.as_ptr(), big_ptr);

        // filled buffers reuse without zeroing what they already hold
        let pool = BufferPool::new(1, 1024, 1 << 20);
        pool.give(vec![7u8; 100]);
        let f = pool.take_filled(80);
        assert!(f.len() >= 80);
        assert_eq!(f[0], 7, "not zeroed again");
        pool.give(f);
        assert!(pool.take_filled(200).len() >= 200);

        // a filled buffer is preferred to a more recent empty one
        let pool = BufferPool::new(4, 1024, 1 << 20);
        let filled = vec![7u8; 300];
        let filled_ptr = filled.as_ptr();
        pool.give(filled);
        pool.give(Vec::with_capacity(300));
        let f = pool.take_filled(200);
        assert_eq!(f.as_ptr(), filled_ptr, "the initialised buffer is taken");
        assert_eq!(f[199], 7, "and not zeroed again");

        // the byte bound
        let pool = BufferPool::new(10, 1024, 1500);
        pool.give(Vec::with_capacity(1000));
        pool.give(Vec::with_capacity(1000));
        assert_eq!((pool.len(), pool.bytes()), (1, 1000));
        let off = BufferPool::disabled();
        off.give(Vec::with_capacity(10));
        assert!(off.is_empty());
    }
}
