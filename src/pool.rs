//! Reusable byte buffers, so a steady stream of pushes stops allocating its
//! large buffers (the decompressed body, the per-tenant batches).
//!
//! Taking and giving back costs one uncontended lock per buffer, per
//! request (never per series). The pool is bounded in the total bytes it
//! keeps and in the size of each buffer, so it cannot hold on to memory after
//! a burst.

use std::sync::Mutex;

/// A bounded pool of `Vec<u8>`.
pub struct BufferPool {
    free: Mutex<Free>,
    max_buffers: usize,
    max_capacity: usize,
    max_total: usize,
}

struct Free {
    bufs: Vec<Vec<u8>>,
    /// Sum of the capacities in `bufs`.
    bytes: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_buffers` buffers of at most
    /// `max_capacity` bytes each, `max_total` bytes in all.
    pub const fn new(max_buffers: usize, max_capacity: usize, max_total: usize) -> Self {
        Self {
            free: Mutex::new(Free {
                bufs: Vec::new(),
                bytes: 0,
            }),
            max_buffers,
            max_capacity,
            max_total,
        }
    }

    /// A kept buffer that fits `need` bytes without wasting much: capacity
    /// between `need` and four times it, among the most recently returned.
    fn pop(&self, need: usize) -> Option<Vec<u8>> {
        const LOOK: usize = 8;
        if self.max_buffers == 0 {
            return None;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = free.bufs.len();
        let fits = |b: &Vec<u8>| b.capacity() >= need && b.capacity() / 4 <= need.max(256);
        let i = (n.saturating_sub(LOOK)..n)
            .rev()
            .find(|&i| fits(&free.bufs[i]))?;
        let buf = free.bufs.swap_remove(i);
        free.bytes -= buf.capacity();
        Some(buf)
    }

    /// A pool that keeps nothing (every `take` allocates).
    pub const fn disabled() -> Self {
        Self::new(0, 0, 0)
    }

    /// An empty buffer with at least `capacity` bytes of room.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        match self.pop(capacity) {
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
    /// it ever held is zeroed (zeroing a compression buffer on every use
    /// cost as much as a tenth of the compression itself).
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut buf = self.pop(len).unwrap_or_default();
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
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.bufs.len() < self.max_buffers && free.bytes + buf.capacity() <= self.max_total {
            free.bytes += buf.capacity();
            free.bufs.push(buf);
        }
    }

    /// Buffers currently kept.
    pub fn len(&self) -> usize {
        self.free.lock().map(|f| f.bufs.len()).unwrap_or(0)
    }

    /// Bytes currently kept.
    pub fn bytes(&self) -> usize {
        self.free.lock().map(|f| f.bytes).unwrap_or(0)
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
    /// Up to 1024 buffers of up to 4 MiB each, 16 MiB in all: the working
    /// set of several typical requests (a Prometheus batch is a few hundred
    /// KiB decoded, split into one buffer per tenant).
    fn default() -> Self {
        Self::new(1024, 4 << 20, 16 << 20)
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
