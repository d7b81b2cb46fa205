//! Arbitrary bytes as a decompressed remote write 2.0 request: split in
//! namespace and label mode, and converted to 1.0. Must never panic, hang
//! or allocate beyond the limits; whatever is accepted must come out as
//! tenant requests that the schema's own types decode, whose every ref
//! resolves, and whose series are exactly the input's series of that
//! tenant. The accepted input (as a principal-mode push goes whole) and
//! the tenant requests, merged as the coalescer merges them, must be one
//! request holding all their series in order.
#![no_main]

mod common;

use std::sync::LazyLock;

use common::{LIMITS, NO_POOL, TABLE};
use libfuzzer_sys::fuzz_target;
use orgsplit::formats::rw2::{self, pb as v2, Rw2};
use orgsplit::route::{FamilyIndex, Router};
use orgsplit::tenant::Allowance;
use orgsplit::testing::rw2::resolve;
use prost::Message;

static ROUTERS: LazyLock<[Router; 2]> =
    LazyLock::new(|| common::routers(&["namespace", "exported_namespace"]));

fuzz_target!(|data: &[u8]| {
    for (i, router) in ROUTERS.iter().enumerate() {
        let Ok(split) = router.split(
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
            orgsplit::formats::rw1::pb::WriteRequest::decode(v1.as_slice()).expect("1.0 form decodes");
        }
        let dropped: u64 = split.stats.dropped.iter().sum();
        assert_eq!(out as u64 + dropped, input.len() as u64);
        let mut parts: Vec<&[u8]> = vec![data];
        parts.extend(split.batches.iter().map(|b| b.body.as_slice()));
        let mut merged = Vec::new();
        rw2::merge(&parts, &mut merged).expect("accepted requests merge");
        let merged = v2::Request::decode(merged.as_slice()).expect("merged request decodes");
        let merged = resolve(&merged).expect("merged request's refs resolve");
        let want: Vec<_> = parts
            .iter()
            .flat_map(|p| resolve(&v2::Request::decode(*p).unwrap()).unwrap())
            .collect();
        assert_eq!(merged, want);
    }
});
