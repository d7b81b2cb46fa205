//! Arbitrary bytes, both as a decompressed WriteRequest and as a snappy
//! body, through the splitter in namespace and label mode. Must never panic,
//! hang or allocate beyond the limits.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use orgsplit::config::{Mode, Routing, UnmappedPolicy};
use orgsplit::pipeline;
use orgsplit::pool::BufferPool;
use orgsplit::route::{FamilyIndex, Router};
use orgsplit::table::Snapshot;
use orgsplit::wire::Limits;

static LIMITS: LazyLock<Limits> = LazyLock::new(|| Limits {
    max_labels: 64,
    max_label_bytes: 1024,
    max_series: 10_000,
    max_metadata: 10_000,
    max_samples: 100_000,
    max_exemplars: 1_000,
    max_buckets: 256,
    max_tenants: 1_000,
});
static NAMESPACE: LazyLock<Router> = LazyLock::new(|| {
    Router::new(
        &Routing {
            namespace_labels: vec!["namespace".into(), "exported_namespace".into()],
            default_tenant: "fallback".into(),
            ..Default::default()
        },
        *LIMITS,
    )
});
static LABEL: LazyLock<Router> = LazyLock::new(|| {
    Router::new(
        &Routing {
            mode: Mode::Label,
            remove_tenant_label: true,
            tenant_prefix: "t-".into(),
            unmapped: UnmappedPolicy::Drop,
            ..Default::default()
        },
        *LIMITS,
    )
});
static TABLE: LazyLock<Snapshot> =
    LazyLock::new(|| Snapshot::from_pairs([("a", "acme"), ("b", "globex"), ("c", "../bad")]));
static FAMILIES: LazyLock<FamilyIndex> = LazyLock::new(|| FamilyIndex::new(10_000, 1 << 20));
static POOL: LazyLock<Arc<BufferPool>> = LazyLock::new(Arc::default);

fuzz_target!(|data: &[u8]| {
    for router in [&*NAMESPACE, &*LABEL] {
        // As a decompressed WriteRequest: every batch must decode again.
        if let Ok(split) = router.split(data, &TABLE, &FAMILIES) {
            for b in &split.batches {
                assert!(orgsplit::tenant::validate(&b.tenant).is_ok());
                assert!(b.body.len() <= data.len() * 2 + 64);
            }
        }
        // As a snappy body, with a 1 MiB decoded limit.
        let _ = pipeline::process(data, 1 << 20, router, &TABLE, &FAMILIES, &POOL);
    }
});
