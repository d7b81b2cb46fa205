//! Which tenants have series of which metric, so metadata can follow them.
//!
//! Remote-write metadata (`MetricMetadata`) carries a metric family name and no
//! labels, and Prometheus sends it in requests of its own, once a minute. To
//! send a family's help text only to the tenants that own series of that
//! family (and not leak one organization's metric names to another), the
//! router records the `(metric name, tenant)` pairs it forwards here.
//!
//! ```text
//!  request's distinct (name, tenant) pairs ─► read lock: all in `current`? ─ yes ─► done
//!                                                  │ no
//!                                                  ▼
//!                          write lock: insert the new pairs into `current`
//!                          (`current` full? it becomes `previous`, the old
//!                           `previous` is forgotten, counted in `rotations`)
//!  metadata of family f ─► read lock: tenants of f (and f_bucket, f_total, ...)
//!                          in `current` ∪ `previous`
//! ```
//!
//! Invariants:
//! - bounded: each generation holds at most `max_pairs` pairs and
//!   `max_bytes` of names, whatever the input (label mode makes the number
//!   of tenants as large as the senders like);
//! - every update is O(1) amortised per pair: hash lookups and inserts, no
//!   copy of the index and no scan of a family's tenants;
//! - forgetting only loses routing for metadata, never for series: a family
//!   whose pairs were forgotten follows the unknown-family rule (the default
//!   tenant, or counted as dropped) until its series are seen again, which
//!   for a live family is the next push. A pair still in use is re-learned
//!   into `current` on its next push, so what is forgotten is what was least
//!   recently seen.
//!
//! The lock is held for one batch of lookups per request (never per series),
//! and is never taken for writing once traffic is warm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::{HashMap, HashSet};

/// Suffixes a series name may add to its family's name (histograms,
/// summaries, OpenMetrics counters and info metrics).
pub(crate) const SUFFIXES: [&str; 8] = [
    "", "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount",
];

/// Tenants of one family: a short list while there are few (a scan of at
/// most [`FEW`] is cheaper than hashing), a set beyond.
enum Tenants {
    Few(Vec<Arc<str>>),
    Many(HashSet<Arc<str>>),
}

const FEW: usize = 8;

impl Tenants {
    fn contains(&self, tenant: &str) -> bool {
        match self {
            Tenants::Few(v) => v.iter().any(|t| &**t == tenant),
            Tenants::Many(s) => s.contains(tenant),
        }
    }

    /// Inserts `tenant` (known to be absent).
    fn insert(&mut self, tenant: Arc<str>) {
        match self {
            Tenants::Few(v) if v.len() < FEW => v.push(tenant),
            Tenants::Few(v) => {
                let mut set: HashSet<Arc<str>> = v.drain(..).collect();
                set.insert(tenant);
                *self = Tenants::Many(set);
            }
            Tenants::Many(s) => {
                s.insert(tenant);
            }
        }
    }

    fn try_for_each<'s, E>(
        &'s self,
        f: impl FnMut(&'s Arc<str>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Tenants::Few(v) => v.iter().try_for_each(f),
            Tenants::Many(s) => s.iter().try_for_each(f),
        }
    }
}

/// One generation of pairs.
#[derive(Default)]
struct Generation {
    families: HashMap<Box<str>, Tenants>,
    /// Tenant names of this generation, shared by all its families.
    tenants: HashSet<Arc<str>>,
    pairs: usize,
    /// Bytes of family and tenant names held.
    bytes: usize,
}

impl Generation {
    fn contains(&self, family: &str, tenant: &str) -> bool {
        self.families
            .get(family)
            .is_some_and(|ts| ts.contains(tenant))
    }

    fn insert(&mut self, family: &str, tenant: &str) {
        let tenant = match self.tenants.get(tenant) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = tenant.into();
                self.bytes += t.len();
                self.tenants.insert(t.clone());
                t
            }
        };
        match self.families.get_mut(family) {
            Some(ts) if ts.contains(&tenant) => return,
            Some(ts) => ts.insert(tenant),
            None => {
                self.bytes += family.len();
                self.families
                    .insert(family.into(), Tenants::Few(vec![tenant]));
            }
        }
        self.pairs += 1;
    }
}

#[derive(Default)]
struct Generations {
    current: Generation,
    previous: Generation,
}

/// Metric name → tenants that have received series of it; bounded.
pub struct FamilyIndex {
    inner: RwLock<Generations>,
    max_pairs: usize,
    max_bytes: usize,
    rotations: AtomicU64,
}

pub use crate::signals::FamilyIndexSize as FamilyStats;

impl Default for FamilyIndex {
    /// 250 000 pairs and 16 MiB of names per generation: a few tens of MiB
    /// at most, and far more than a cluster's metric families times the
    /// organizations that have each.
    fn default() -> Self {
        Self::new(250_000, 16 << 20)
    }
}

impl FamilyIndex {
    /// An index keeping at most `max_pairs` pairs and `max_bytes` bytes of
    /// names in each of its two generations.
    pub fn new(max_pairs: usize, max_bytes: usize) -> Self {
        Self {
            inner: RwLock::default(),
            max_pairs: max_pairs.max(1),
            max_bytes: max_bytes.max(1),
            rotations: AtomicU64::new(0),
        }
    }

    /// Records that each `(metric name, tenant)` pair was forwarded. The
    /// pairs should be distinct (the router dedupes per request).
    pub fn learn<'x>(&self, pairs: impl Iterator<Item = (&'x str, &'x str)>) {
        let new: Vec<(&str, &str)> = {
            let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
            pairs
                .filter(|(name, tenant)| !g.current.contains(name, tenant))
                .collect()
        };
        if new.is_empty() {
            return;
        }
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (name, tenant) in new {
            if g.current.pairs >= self.max_pairs || g.current.bytes >= self.max_bytes {
                g.previous = std::mem::take(&mut g.current);
                self.rotations.fetch_add(1, Ordering::Relaxed);
            }
            g.current.insert(name, tenant);
        }
    }

    /// Calls `f` once for each tenant that has series of metric family
    /// `family` (under any of the family's series-name suffixes), stopping
    /// at the first error. `name` is scratch space, reused across calls to
    /// avoid allocating.
    pub fn try_for_each_tenant<E>(
        &self,
        family: &str,
        name: &mut String,
        mut f: impl FnMut(&str) -> Result<(), E>,
    ) -> Result<(), E> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        // Tenants already reported for this family (a handful, typically).
        let mut seen: Vec<&Arc<str>> = Vec::new();
        for suffix in SUFFIXES {
            name.clear();
            name.push_str(family);
            name.push_str(suffix);
            for generation in [&g.current, &g.previous] {
                let Some(ts) = generation.families.get(name.as_str()) else {
                    continue;
                };
                ts.try_for_each(|t| {
                    if seen.iter().any(|s| **s == *t) {
                        return Ok(());
                    }
                    seen.push(t);
                    f(t)
                })?;
            }
        }
        Ok(())
    }

    /// Sizes and forgetting so far.
    pub fn stats(&self) -> FamilyStats {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        FamilyStats {
            pairs: g.current.pairs + g.previous.pairs,
            bytes: g.current.bytes + g.previous.bytes,
            rotations: self.rotations.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(idx: &FamilyIndex, f: &str) -> Vec<String> {
        let mut v = Vec::new();
        idx.try_for_each_tenant(f, &mut String::new(), |t| {
            v.push(t.to_string());
            Ok::<(), ()>(())
        })
        .unwrap();
        v.sort();
        v
    }

    #[test]
    fn families_follow_their_series() {
        let idx = FamilyIndex::default();
        idx.learn(
            [
                ("http_requests_total", "acme"),
                ("latency_bucket", "acme"),
                ("latency_count", "globex"),
                ("up", "acme"),
                ("up", "globex"),
            ]
            .into_iter(),
        );
        assert_eq!(names(&idx, "http_requests_total"), ["acme"]);
        assert_eq!(names(&idx, "http_requests"), ["acme"]);
        assert_eq!(names(&idx, "latency"), ["acme", "globex"]);
        assert_eq!(names(&idx, "up"), ["acme", "globex"]);
        assert!(names(&idx, "secret_metric").is_empty());
    }

    #[test]
    fn many_tenants_per_family_stay_exact() {
        let idx = FamilyIndex::default();
        let tenants: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        idx.learn(tenants.iter().map(|t| ("up", t.as_str())));
        idx.learn(tenants.iter().map(|t| ("up", t.as_str())));
        assert_eq!(names(&idx, "up").len(), 1000);
        assert_eq!(idx.stats().pairs, 1000);
    }

    #[test]
    fn bounded_and_forgets_the_least_recently_seen() {
        let idx = FamilyIndex::new(3, 1 << 20);
        idx.learn([("a", "t"), ("b", "t"), ("c", "t")].into_iter());
        assert_eq!(idx.stats().rotations, 0);
        // "a" is seen again (kept); "d" fills a new generation.
        idx.learn([("d", "t")].into_iter());
        assert_eq!(idx.stats().rotations, 1);
        idx.learn([("a", "t")].into_iter());
        assert_eq!(names(&idx, "b"), ["t"], "previous generation still answers");
        idx.learn([("e", "t"), ("f", "t")].into_iter());
        assert_eq!(idx.stats().rotations, 2);
        assert_eq!(names(&idx, "a"), ["t"], "re-learned, so kept");
        assert!(
            names(&idx, "b").is_empty(),
            "least recently seen: forgotten"
        );
        assert!(idx.stats().pairs <= 6);

        // the byte bound holds for long names too
        let idx = FamilyIndex::new(1_000_000, 1000);
        let long = "x".repeat(600);
        for i in 0..100 {
            idx.learn([(format!("{long}{i}").as_str(), "t")].into_iter());
        }
        assert!(idx.stats().bytes <= 2 * (1000 + 700), "{:?}", idx.stats());
    }

    /// Learning new pairs costs the same whether the index is empty or full:
    /// no copy of the index, no scan of a family's tenants.
    #[test]
    fn learning_costs_the_same_when_full() {
        let idx = FamilyIndex::new(100_000, 64 << 20);
        let round = |r: usize| {
            let pairs: Vec<(String, String)> = (0..15_000)
                .map(|i| (format!("metric_{}", i % 50), format!("t{r}-{i}")))
                .collect();
            let started = std::time::Instant::now();
            idx.learn(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())));
            started.elapsed()
        };
        let first: std::time::Duration = (0..4).map(round).sum();
        // 15 000 new tenants per round, 50 families: far past the bound,
        // with thousands of tenants per family.
        let later: Vec<_> = (4..40).map(round).collect();
        let last: std::time::Duration = later[later.len() - 4..].iter().sum();
        assert!(idx.stats().rotations >= 4, "{:?}", idx.stats());
        assert!(idx.stats().pairs <= 200_000, "{:?}", idx.stats());
        assert!(
            last < first * 3,
            "learning slowed down as the index filled: first {first:?}, last {last:?}"
        );
    }
}
