//! The namespace → organization table.
//!
//! ```text
//!  file.rs (YAML, re-read on change) ──┐
//!  kube.rs (Namespace list/watch)  ────┴─► OrgTable::replace ─► ArcSwap<Snapshot>
//!                                                                  │ load_full (one atomic op
//!  push handler, once per request ◄────────────────────────────────┘  per request, no lock)
//! ```
//!
//! Invariant: a request works on one [`Snapshot`] from start to end, so it sees
//! either the old or the new mapping of a namespace, never a mix. Snapshots are
//! immutable; a change builds a new one and swaps it in.

pub mod file;
pub mod kube;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hashbrown::HashMap;

use crate::signals::TableSignals;
use crate::tenant::{InvalidTenant, TenantId};

/// What a namespace maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Org {
    /// A valid tenant ID.
    Tenant(TenantId),
    /// The namespace has an organization value that is not a valid tenant ID.
    Invalid(InvalidTenant),
}

impl Org {
    /// The entry for organization `id`: a tenant if it is a valid tenant
    /// ID, else why not.
    pub fn tenant(id: &str) -> Org {
        match TenantId::new(id) {
            Ok(t) => Org::Tenant(t),
            Err(e) => Org::Invalid(e),
        }
    }
}

/// One immutable version of the table.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    map: HashMap<Box<str>, Org>,
}

impl Snapshot {
    /// Builds a snapshot from `(namespace, organization)` pairs, validating
    /// each organization as a tenant ID. Invalid ones are kept as
    /// [`Org::Invalid`] (so their series are counted as such) and logged here,
    /// once per table build rather than once per series.
    pub fn from_pairs<I, N, O>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, O)>,
        N: Into<Box<str>>,
        O: AsRef<str>,
    {
        let mut snapshot = Self::default();
        for (namespace, org) in pairs {
            snapshot.set(namespace.into(), Some(org.as_ref()));
        }
        snapshot
    }

    /// Sets (`Some`) or removes (`None`) the organization of `namespace`.
    /// Returns whether the table changed. An organization that is not a
    /// valid tenant ID is stored as [`Org::Invalid`] and logged.
    pub fn set(&mut self, namespace: Box<str>, org: Option<&str>) -> bool {
        let Some(org) = org else {
            return self.map.remove(&namespace).is_some();
        };
        let entry = Org::tenant(org);
        if self.map.get(&namespace) == Some(&entry) {
            return false;
        }
        if let Org::Invalid(e) = &entry {
            tracing::warn!(%namespace, organization = %org.escape_debug(), error = %e,
                "organization is not a valid tenant ID; the namespace is unmapped");
        }
        self.map.insert(namespace, entry);
        true
    }

    /// The organization of `namespace`, if it has one.
    #[inline]
    pub fn get(&self, namespace: &str) -> Option<&Org> {
        self.map.get(namespace)
    }

    /// Number of namespaces in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over `(namespace, org)`, for `check-config` and tests.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Org)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }
}

/// The shared, swappable table. Cloning it is cheap; all clones see the same
/// table.
#[derive(Clone, Default)]
pub struct OrgTable {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    current: ArcSwap<Snapshot>,
    /// Set by the first complete load; never cleared.
    synced: AtomicBool,
    /// Unix seconds of the last successful load.
    last_sync: AtomicU64,
    signals: TableSignals,
}

impl OrgTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose loads are reported to `signals`.
    pub fn with_signals(signals: TableSignals) -> Self {
        Self {
            inner: Arc::new(Inner {
                signals,
                ..Default::default()
            }),
        }
    }

    /// Where the table and its feeds report loads and failures.
    pub fn signals(&self) -> &TableSignals {
        &self.inner.signals
    }

    /// A table that is already synced with `snapshot` (tests, `inspect`).
    pub fn with(snapshot: Snapshot) -> Self {
        let table = Self::new();
        table.replace(snapshot);
        table
    }

    /// The current snapshot. One atomic operation; never blocks.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Swaps in a complete new table and marks the table synced.
    pub fn replace(&self, snapshot: Snapshot) {
        let size = snapshot.len();
        self.inner.current.store(Arc::new(snapshot));
        let now = unix_now();
        self.inner.last_sync.store(now, Ordering::Relaxed);
        self.inner.synced.store(true, Ordering::Release);
        self.report(size, now);
    }

    /// Records that the source confirmed the table is current without
    /// changing it (a watch event that changed nothing).
    pub fn touch(&self) {
        let now = unix_now();
        self.inner.last_sync.store(now, Ordering::Relaxed);
        self.report(self.snapshot().len(), now);
    }

    fn report(&self, namespaces: usize, unix_seconds: u64) {
        let s = &self.inner.signals;
        s.namespaces.set(namespaces as f64);
        s.last_sync.set(unix_seconds as f64);
    }

    /// True once a complete table has been loaded.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
    }

    /// Unix seconds of the last successful load (0 if none yet).
    pub fn last_sync(&self) -> u64 {
        self.inner.last_sync.load(Ordering::Relaxed)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_orgs_are_kept_as_invalid() {
        let s = Snapshot::from_pairs([("a", "acme"), ("b", "../x"), ("c", "")]);
        assert_eq!(s.get("a"), Some(&Org::tenant("acme")));
        assert!(matches!(s.get("b"), Some(Org::Invalid(_))));
        assert_eq!(s.get("c"), Some(&Org::Invalid(InvalidTenant::Empty)));
        assert_eq!(s.get("d"), None);
    }

    #[test]
    fn readers_keep_their_snapshot_across_a_swap() {
        let table = OrgTable::with(Snapshot::from_pairs([("a", "one")]));
        assert!(table.is_synced());
        let before = table.snapshot();
        table.replace(Snapshot::from_pairs([("a", "two")]));
        assert_eq!(before.get("a"), Some(&Org::tenant("one")));
        assert_eq!(table.snapshot().get("a"), Some(&Org::tenant("two")));
    }
}
