//! The client connection limit (`limits.max_connections`), and who gives
//! way when it is reached.
//!
//! ```text
//!  accept ─► slot free? ── yes ─► serve (holding the slot until it closes)
//!              │ no
//!              ▼
//!  a connection that has not sent a single request yet? ── yes ─► close it, take its slot
//!              │ no
//!              ▼
//!  close the new connection (counted)
//! ```
//!
//! Connections that only sit there (opened, nothing sent) are what a flood of
//! sockets looks like; a sender that pushes has sent a request on its
//! connection. So when every slot is taken, such a connection gives way to a
//! new one, and senders that push keep getting in. Idle keep-alive
//! connections are closed by `limits.header_timeout` anyway.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The connection slots shared by the listeners.
pub struct Connections {
    slots: Arc<Semaphore>,
    /// Connections that have not sent a request yet, by id.
    /// Ids grow with time, so the first entry is the oldest.
    silent: Mutex<BTreeMap<u64, Arc<Flags>>>,
    next_id: AtomicU64,
}

/// What one connection shares with the limit.
#[derive(Default)]
pub struct Flags {
    /// Set by the first request on the connection.
    spoke: AtomicBool,
    /// Tells the connection to close, to free its slot.
    evict: Notify,
}

impl Flags {
    /// Marks that a request arrived on this connection.
    #[inline]
    pub fn spoke(&self) {
        if !self.spoke.load(Ordering::Relaxed) {
            self.spoke.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection should close to free its slot.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// A connection's slot; frees it when dropped.
pub struct Slot {
    id: u64,
    pub flags: Arc<Flags>,
    connections: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections
            .silent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            silent: Mutex::default(),
            next_id: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection: a free one, or one a silent connection
    /// gives up. `None` when every connection has spoken.
    pub async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !self.evict_one() {
                    return None;
                }
                // The evicted connection's task ends and frees its slot.
                tokio::time::timeout(Duration::from_secs(1), self.slots.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flags = Arc::new(Flags::default());
        self.silent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, flags.clone());
        Some(Slot {
            id,
            flags,
            connections: self.clone(),
            _permit: permit,
        })
    }

    /// Tells the oldest connection that has not sent a request to close (the
    /// oldest: a new connection gets the moment it needs to send its first
    /// request).
    fn evict_one(&self) -> bool {
        let mut silent = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        // Those that spoke since they were listed leave the list as they
        // come up (each once), so this is O(log n) amortised.
        while let Some((_, flags)) = silent.pop_first() {
            if !flags.spoke.load(Ordering::Relaxed) {
                flags.evict.notify_one();
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silent_connections_give_way() {
        let c = Connections::new(2);
        let a = c.admit().await.unwrap();
        let b = c.admit().await.unwrap();
        a.flags.spoke();
        // b has not spoken: it is told to go, and its slot is taken.
        let evicted = {
            let flags = b.flags.clone();
            tokio::spawn(async move {
                flags.evicted().await;
                drop(b);
            })
        };
        let new = c.admit().await.expect("b gave way");
        evicted.await.unwrap();
        new.flags.spoke();
        // everyone has spoken: nobody gives way
        assert!(c.admit().await.is_none());
        drop(a);
        assert!(c.admit().await.is_some());
    }
}
