//! Arbitrary bytes, both as a decompressed WriteRequest and as a snappy
//! body through the server's pipeline, in namespace and label mode. Must
//! never panic, hang or allocate beyond the limits.
#![no_main]

mod common;

use std::sync::{Arc, LazyLock};

use common::TABLE;
use libfuzzer_sys::fuzz_target;
use orgsplit::formats::rw1::Rw1;
use orgsplit::pipeline::Pipeline;
use orgsplit::route::{FamilyIndex, Router};

static ROUTERS: LazyLock<[Router; 2]> =
    LazyLock::new(|| common::routers(&["namespace", "exported_namespace"]));
static FAMILIES: LazyLock<FamilyIndex> = LazyLock::new(|| FamilyIndex::new(10_000, 1 << 20));
/// The pipelines, with a 1 MiB decoded limit.
static PIPELINES: LazyLock<[Pipeline<Rw1>; 2]> = LazyLock::new(|| {
    ROUTERS.each_ref().map(|router| {
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
    for (router, pipeline) in ROUTERS.iter().zip(PIPELINES.iter()) {
        // As a decompressed WriteRequest: every batch must decode again.
        if let Ok(split) = router.split_rw1(data, &TABLE, &FAMILIES) {
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
