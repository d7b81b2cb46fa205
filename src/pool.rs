//! Reusable byte buffers, so a steady stream of pushes stops allocating its
//! large buffers (the decompressed body, the per-tenant batches).
//!
//! Taking and giving back costs one uncontended lock per buffer, per
//! request (never per series). The pool is bounded in count and in the size
//! of the buffers it keeps, so it cannot hold on to memory after a burst.

use std::sync::Mutex;

/// A bounded pool of `Vec<u8>`.
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_buffers: usize,
    max_capacity: usize,
}

impl BufferPool {
    /// A pool that keeps at most `max_buffers` buffers of at most
    /// `max_capacity` bytes each.
    pub const fn new(max_buffers: usize, max_capacity: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            max_buffers,
            max_capacity,
        }
    }

    /// A pool that keeps nothing (every `take` allocates).
    pub const fn disabled() -> Self {
        Self::new(0, 0)
    }

    /// An empty buffer with at least `capacity` bytes of room.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        if self.max_buffers > 0 {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut buf) = free.pop() {
                drop(free);
                buf.reserve(capacity);
                return buf;
            }
        }
        Vec::with_capacity(capacity)
    }

    /// Returns a buffer for reuse (or frees it, if the pool is full or the
    /// buffer too large).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max_buffers {
            free.push(buf);
        }
    }

    /// Buffers currently kept.
    pub fn len(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for BufferPool {
    /// 256 buffers of up to 4 MiB: at most 1 GiB in theory, in practice the
    /// working set of the requests in flight (a typical Prometheus batch is
    /// a few hundred KiB decoded).
    fn default() -> Self {
        Self::new(256, 4 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let pool = BufferPool::new(2, 1024);
        let mut a = pool.take(100);
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(10);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        pool.give(vec![0; 4096]); // too large: freed
        assert_eq!(pool.len(), 0);
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.len(), 2);
        let off = BufferPool::disabled();
        off.give(Vec::with_capacity(10));
        assert!(off.is_empty());
    }
}
