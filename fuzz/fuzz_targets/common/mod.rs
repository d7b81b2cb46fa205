//! What the splitting fuzz targets share: limits small enough that no run
//! allocates much (each format reads only its own), the two routers every
//! target splits with, the table they route by, and a disabled pool.
#![allow(dead_code)]

use std::sync::LazyLock;

use orgsplit::config::{Routing, RoutingMode, UnmappedPolicy};
use orgsplit::pool::BufferPool;
use orgsplit::route::Router;
use orgsplit::table::Snapshot;
use orgsplit::wire::RequestLimits;

pub static LIMITS: LazyLock<RequestLimits> = LazyLock::new(|| RequestLimits {
    max_labels: 64,
    max_label_bytes: 1024,
    max_series: 10_000,
    max_metadata: 10_000,
    max_samples: 100_000,
    max_exemplars: 1_000,
    max_buckets: 256,
    max_tenants: 1_000,
    max_symbols: 10_000,
    max_symbol_bytes: 1024,
    max_streams: 10_000,
    max_entries: 100_000,
    max_line_bytes: 4096,
    max_label_string_bytes: 4096,
    ..Default::default()
});

/// Namespace mode over `namespace_labels` with a default tenant, and label
/// mode (prefix `t-`, tenant label removed, unmapped dropped).
pub fn routers(namespace_labels: &[&str]) -> [Router; 2] {
    [
        Router::new(
            &Routing {
                namespace_labels: namespace_labels.iter().map(|l| l.to_string()).collect(),
                default_tenant: "fallback".into(),
                ..Default::default()
            },
            *LIMITS,
        ),
        Router::new(
            &Routing {
                mode: RoutingMode::Label,
                remove_tenant_label: true,
                tenant_prefix: "t-".into(),
                unmapped: UnmappedPolicy::Drop,
                ..Default::default()
            },
            *LIMITS,
        ),
    ]
}

/// Two organizations, and one whose name is not a tenant ID.
pub static TABLE: LazyLock<Snapshot> =
    LazyLock::new(|| Snapshot::from_pairs([("a", "acme"), ("b", "globex"), ("c", "../bad")]));

pub static NO_POOL: BufferPool = BufferPool::disabled();
