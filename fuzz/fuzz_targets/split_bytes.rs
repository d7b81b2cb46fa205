//! Arbitrary bytes, both as a decompressed WriteRequest and as a snappy
//! body through the server's pipeline, in namespace and label mode. Must
//! never panic, hang or allocate beyond the limits.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use orgsplit::config::{Mode, Routing, UnmappedPolicy};
use orgsplit::formats::rw1::Rw1;
use orgsplit::pipeline::Pipeline;
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
    max_symbols: 10_000,
    max_symbol_bytes: 1024,
    ..Default::default()
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
/// The pipelines, with a 1 MiB decoded limit.
static PIPELINES: LazyLock<[Pipeline<Rw1>; 2]> = LazyLock::new(|| {
    [&*NAMESPACE, &*LABEL].map(|router| {
        Pipeline::new(
            Rw1,
            router.clone(),
            FamilyIndex::new(10_000, 1 << 20),
            Arc::default(),
            1 << 20,
        )
    })
});

fuzz_target!(|data: &[u8]| {
    for (router, pipeline) in [&*NAMESPACE, &*LABEL].into_iter().zip(PIPELINES.iter()) {
        // As a decompressed WriteRequest: every batch must decode again.
        if let Ok(split) = router.split(data, &TABLE, &FAMILIES) {
            for b in &split.batches {
                assert!(orgsplit::tenant::validate(&b.tenant).is_ok());
                assert!(b.body.len() <= data.len() * 2 + 64);
            }
        }
        // As a snappy body: every tenant request must decompress to a
        // request that decodes again.
        if let Ok(out) = pipeline.process(data, &TABLE) {
            for o in &out.outgoing {
                let raw = snap::raw::Decoder::new().decompress_vec(&o.body).unwrap();
                assert_eq!(raw.len(), o.decoded_len);
            }
        }
    }
});
