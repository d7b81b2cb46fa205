//! Arbitrary bytes as a decompressed remote write 2.0 request: split in
//! namespace and label mode, and converted to 1.0. Must never panic, hang
//! or allocate beyond the limits; whatever is accepted must come out as
//! tenant requests that the schema's own types decode, whose every ref
//! resolves, and whose series are exactly the input's series of that
//! tenant.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use orgsplit::config::{Mode, Routing, UnmappedPolicy};
use orgsplit::formats::rw2::{self, pb as v2, Rw2};
use orgsplit::pool::BufferPool;
use orgsplit::route::{FamilyIndex, Router};
use orgsplit::table::Snapshot;
use orgsplit::tenant::Allowance;
use orgsplit::testing::rw2::resolve;
use orgsplit::wire::Limits;
use prost::Message;

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
static ROUTERS: LazyLock<[Router; 2]> = LazyLock::new(|| {
    [
        Router::new(
            &Routing {
                namespace_labels: vec!["namespace".into(), "exported_namespace".into()],
                default_tenant: "fallback".into(),
                ..Default::default()
            },
            *LIMITS,
        ),
        Router::new(
            &Routing {
                mode: Mode::Label,
                remove_tenant_label: true,
                tenant_prefix: "t-".into(),
                unmapped: UnmappedPolicy::Drop,
                ..Default::default()
            },
            *LIMITS,
        ),
    ]
});
static TABLE: LazyLock<Snapshot> =
    LazyLock::new(|| Snapshot::from_pairs([("a", "acme"), ("b", "globex"), ("c", "../bad")]));
static NO_POOL: BufferPool = BufferPool::disabled();

fuzz_target!(|data: &[u8]| {
    for (i, router) in ROUTERS.iter().enumerate() {
        let Ok(split) = router.split_with(
            &Rw2,
            data,
            &TABLE,
            &FamilyIndex::default(),
            &NO_POOL,
            &Allowance::Any,
        ) else {
            continue;
        };
        // Accepted: the schema's types read the input and every output.
        let input = v2::Request::decode(data).expect("accepted input decodes");
        let input = resolve(&input).expect("accepted input's refs resolve");
        let mut out = 0;
        for b in &split.batches {
            assert!(orgsplit::tenant::validate(&b.tenant).is_ok());
            let got = v2::Request::decode(b.body.as_slice()).expect("tenant request decodes");
            assert_eq!(got.symbols.first().map(String::as_str), Some(""));
            let got = resolve(&got).expect("tenant request's refs resolve");
            out += got.len();
            if i == 0 {
                // Namespace mode leaves series as they were: each is one
                // of the input's.
                for s in &got {
                    assert!(input.contains(s));
                }
            }
            let mut v1 = Vec::new();
            rw2::to_v1(&b.body, *LIMITS, &mut v1).expect("tenant request converts");
            orgsplit::wire::pb::WriteRequest::decode(v1.as_slice()).expect("1.0 form decodes");
        }
        let dropped: u64 = split.stats.dropped.iter().sum();
        assert_eq!(out as u64 + dropped, input.len() as u64);
    }
});
