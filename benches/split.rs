//! Split throughput, in process: the zero-copy path (what orgsplit runs),
//! the prost reference path, and the floor (snappy decompress + compress of
//! the same bytes, which any proxy must pay).
//!
//! `cargo bench --bench split`; throughput is in samples (elements) per
//! second; the decoded size per request is printed first, for MB/s.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orgsplit::config::{Routing, UnmappedPolicy};
use orgsplit::pipeline;
use orgsplit::pool::BufferPool;
use orgsplit::route::{reference, FamilyIndex, Router};
use orgsplit::table::Snapshot;
use orgsplit::testing::{self, Shape};
use orgsplit::wire::pb;
use prost::Message;

struct Case {
    name: String,
    compressed: Vec<u8>,
    decoded: Vec<u8>,
    samples: u64,
    table: Snapshot,
}

fn case(series: usize, tenants: usize, histograms: bool) -> Case {
    let namespaces = tenants.max(20);
    let req = testing::request(&Shape {
        series,
        namespaces,
        histogram_every: if histograms { 4 } else { 0 },
        ..Default::default()
    });
    let samples = req
        .timeseries
        .iter()
        .map(|t| (t.samples.len() + t.histograms.len()) as u64)
        .sum();
    let decoded = req.encode_to_vec();
    Case {
        name: format!(
            "{series}x12/{tenants}t{}",
            if histograms { "/hist" } else { "" }
        ),
        compressed: testing::compress(&req),
        decoded,
        samples,
        table: Snapshot::from_pairs(testing::table_pairs(namespaces, tenants)),
    }
}

fn router() -> Router {
    Router::new(
        &Routing {
            unmapped: UnmappedPolicy::Drop,
            ..Default::default()
        },
        Default::default(),
    )
}

/// The reference path: prost decode, group owned series, encode, compress.
fn reference_path(router: &Router, c: &Case) -> usize {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&c.compressed)
        .unwrap();
    let split = reference::split(router, &raw, &c.table).unwrap();
    split
        .tenants
        .values()
        .map(|r| {
            snap::raw::Encoder::new()
                .compress_vec(&r.encode_to_vec())
                .unwrap()
                .len()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let router = router();
    let families = FamilyIndex::default();
    let pool = std::sync::Arc::new(BufferPool::default());
    let cases = [
        case(2000, 20, false),
        case(2000, 20, true),
        case(500, 20, false),
        case(10_000, 20, false),
        case(2000, 1, false),
        case(2000, 500, false),
    ];
    for k in &cases {
        eprintln!(
            "case {}: {} samples, {} bytes decoded, {} compressed",
            k.name,
            k.samples,
            k.decoded.len(),
            k.compressed.len()
        );
    }
    let mut group = c.benchmark_group("split");
    for k in &cases {
        group.throughput(Throughput::Elements(k.samples));
        group.bench_with_input(BenchmarkId::new("zero-copy", &k.name), k, |b, k| {
            b.iter(|| {
                let (out, _) = pipeline::process(
                    black_box(&k.compressed),
                    usize::MAX,
                    &router,
                    &k.table,
                    &families,
                    &pool,
                )
                .unwrap();
                out.len()
            })
        });
        group.bench_with_input(BenchmarkId::new("floor", &k.name), k, |b, k| {
            let mut decoded = vec![0u8; k.decoded.len()];
            let mut out = vec![0u8; snap::raw::max_compress_len(k.decoded.len())];
            let mut enc = snap::raw::Encoder::new();
            b.iter(|| {
                let n = snap::raw::Decoder::new()
                    .decompress(black_box(&k.compressed), &mut decoded)
                    .unwrap();
                enc.compress(&decoded[..n], &mut out).unwrap()
            })
        });
        if k.decoded.len() < 2_000_000 {
            group.bench_with_input(BenchmarkId::new("reference", &k.name), k, |b, k| {
                b.iter(|| reference_path(&router, black_box(k)))
            });
        }
    }
    group.finish();
}

/// The pieces of the zero-copy path on the headline request.
fn stages(c: &mut Criterion) {
    let router = router();
    let families = FamilyIndex::default();
    let pool = std::sync::Arc::new(BufferPool::default());
    let k = case(2000, 20, false);
    let mut group = c.benchmark_group("stages/2000x12/20t");
    group.throughput(Throughput::Elements(k.samples));
    group.bench_function("decompress", |b| {
        b.iter(|| {
            let size = pipeline::decoded_len(&k.compressed, usize::MAX).unwrap();
            // Dropping the buffer gives it back to the pool.
            drop(pipeline::decompress(black_box(&k.compressed), size, &pool).unwrap());
        })
    });
    group.bench_function("route", |b| {
        b.iter(|| {
            let split = router
                .split_with(black_box(&k.decoded), &k.table, &families, &pool)
                .unwrap();
            for batch in split.batches {
                pool.give(batch.body);
            }
        })
    });
    group.bench_function("walk-only", |b| {
        let query = orgsplit::wire::LabelQuery::new(["namespace"]);
        b.iter(|| {
            orgsplit::wire::Request::new(black_box(&k.decoded))
                .fields(&query, Default::default())
                .count()
        })
    });
    let split = router.split(&k.decoded, &k.table, &families).unwrap();
    let bodies: Vec<Vec<u8>> = split.batches.iter().map(|b| b.body.clone()).collect();
    group.bench_function("compress", |b| {
        let mut enc = snap::raw::Encoder::new();
        b.iter(|| {
            bodies
                .iter()
                .map(|body| enc.compress_vec(black_box(body)).unwrap().len())
                .sum::<usize>()
        })
    });
    let _ = pb::WriteRequest::default();
    group.finish();
}

criterion_group!(benches, bench, stages);
criterion_main!(benches);
