//! Which tenants have series of which metric, so metadata can follow them.
//!
//! Remote-write metadata (`MetricMetadata`) carries a metric family name and no
//! labels, and Prometheus sends it in requests of its own, once a minute. To
//! send a family's help text only to the tenants that own series of that
//! family (and not leak one organization's metric names to another), the
//! router records the `(metric name, tenant)` pairs it forwards here.
//!
//! Reads are lock-free (`ArcSwap`); a write copies the map, which only happens
//! when a request brings a pair not seen before, so it stops once traffic is
//! warm. The index is bounded: past `capacity` names it stops learning (and
//! such families go to the default tenant, or are counted as dropped).

use std::sync::Arc;

use arc_swap::ArcSwap;
use hashbrown::HashMap;

/// Suffixes a series name may add to its family's name (histograms,
/// summaries, OpenMetrics counters and info metrics).
pub(crate) const SUFFIXES: [&str; 8] = [
    "", "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount",
];

type Map = HashMap<Box<str>, Vec<Arc<str>>>;

/// Metric name → tenants that have received series of it.
pub struct FamilyIndex {
    map: ArcSwap<Map>,
    capacity: usize,
}

impl Default for FamilyIndex {
    fn default() -> Self {
        Self::new(200_000)
    }
}

impl FamilyIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: ArcSwap::from_pointee(Map::new()),
            capacity,
        }
    }

    /// Records that each `(metric name, tenant)` pair was forwarded.
    pub fn learn<'x>(&self, pairs: impl Iterator<Item = (&'x str, &'x str)>) {
        let current = self.map.load();
        let new: Vec<(&str, &str)> = pairs
            .filter(|(name, tenant)| {
                !current.get(*name).is_some_and(|ts| {
                    ts.iter()
                        .any(|t| crate::wire::same(t.as_bytes(), tenant.as_bytes()))
                })
            })
            .collect();
        if new.is_empty() {
            return;
        }
        drop(current);
        self.map.rcu(|old| {
            let mut map: Map = (**old).clone();
            for &(name, tenant) in &new {
                if let Some(tenants) = map.get_mut(name) {
                    if !tenants.iter().any(|t| &**t == tenant) {
                        tenants.push(tenant.into());
                    }
                } else if map.len() < self.capacity {
                    map.insert(name.into(), vec![tenant.into()]);
                }
            }
            map
        });
    }

    /// Tenants that have series of metric family `family`, without duplicates.
    pub fn tenants(&self, family: &str) -> Vec<Arc<str>> {
        let map = self.map.load();
        let mut out: Vec<Arc<str>> = Vec::new();
        let mut name = String::with_capacity(family.len() + 8);
        for suffix in SUFFIXES {
            name.clear();
            name.push_str(family);
            name.push_str(suffix);
            for t in map.get(name.as_str()).into_iter().flatten() {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    /// Number of metric names known.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let names = |f: &str| {
            let mut v: Vec<String> = idx.tenants(f).iter().map(|t| t.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(names("http_requests_total"), ["acme"]);
        assert_eq!(names("http_requests"), ["acme"]);
        assert_eq!(names("latency"), ["acme", "globex"]);
        assert_eq!(names("up"), ["acme", "globex"]);
        assert!(names("secret_metric").is_empty());
    }

    #[test]
    fn bounded() {
        let idx = FamilyIndex::new(2);
        idx.learn([("a", "t"), ("b", "t"), ("c", "t")].into_iter());
        assert_eq!(idx.len(), 2);
        idx.learn([("a", "u")].into_iter());
        assert_eq!(idx.tenants("a").len(), 2);
    }
}
