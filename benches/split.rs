//! Split throughput, in process: the pipeline (what orgsplit runs), the
//! prost reference path, and the floor (snappy decompress + compress of the
//! same bytes, which any proxy must pay), on two corpora: `random` (random
//! label values, compresses ~2:1) and `cadvisor` (shaped like real cAdvisor
//! and kube-state-metrics output, compresses ~5:1).
//!
//! `cargo bench --bench split`; throughput is in samples (elements) per
//! second; the decoded size per request is printed first, for MB/s, and a
//! summary of the pipeline's cost against the floor per corpus.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orgsplit::config::{Routing, UnmappedPolicy};
use orgsplit::formats::rw1::pb;
use orgsplit::formats::{rw1::Rw1, rw2::Rw2};
use orgsplit::pipeline::Pipeline;
use orgsplit::route::{reference, FamilyIndex, Router};
use orgsplit::table::Snapshot;
use orgsplit::tenant::Allowance;
use orgsplit::testing::{self, Shape};
use prost::Message;

struct Case {
    name: String,
    compressed: Vec<u8>,
    /// The same series as a remote write 2.0 request, compressed.
    v2: Vec<u8>,
    decoded: Vec<u8>,
    samples: u64,
    table: Snapshot,
}

fn case(series: usize, tenants: usize, histograms: bool) -> Case {
    corpus_case(false, series, tenants, histograms)
}

fn corpus_case(cadvisor: bool, series: usize, tenants: usize, histograms: bool) -> Case {
    let namespaces = tenants.max(20);
    let shape = Shape {
        series,
        namespaces,
        histogram_every: if histograms { 4 } else { 0 },
        ..Default::default()
    };
    let req = if cadvisor {
        testing::cadvisor_request(&shape)
    } else {
        testing::request(&shape)
    };
    let samples = req
        .timeseries
        .iter()
        .map(|t| (t.samples.len() + t.histograms.len()) as u64)
        .sum();
    let decoded = req.encode_to_vec();
    Case {
        name: format!(
            "{}{series}x12/{tenants}t{}",
            if cadvisor { "cadvisor/" } else { "" },
            if histograms { "/hist" } else { "" }
        ),
        compressed: testing::compress(&req),
        v2: testing::rw2::compress(&testing::rw2::from_v1(&req)),
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

/// The server's 2.0 pipeline, with the bench's routing.
fn pipeline_v2() -> Pipeline<Rw2> {
    Pipeline::new(
        Rw2,
        router(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    )
}

/// The pipeline the server runs, with the bench's routing.
fn pipeline() -> Pipeline<Rw1> {
    Pipeline::new(
        Rw1,
        router(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    )
}

/// Best-of-three seconds per call of `f`, each run about `budget` long.
fn time(budget: std::time::Duration, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let mut n = 0u32;
        while started.elapsed() < budget {
            f();
            n += 1;
        }
        best = best.min(started.elapsed().as_secs_f64() / f64::from(n));
    }
    best
}

/// The pipeline against the floor on both corpora, printed before the
/// criterion groups (the in-process target is 1.2×).
fn summary() {
    summary_loki();
    summary_otlp();
    let pipeline = pipeline();
    let v2_pipeline = pipeline_v2();
    let budget = std::time::Duration::from_millis(300);
    for cadvisor in [false, true] {
        for tenants in [20, 200] {
            let k = corpus_case(cadvisor, 2000, tenants, false);
            let mut decoded = vec![0u8; k.decoded.len()];
            let mut out = vec![0u8; snap::raw::max_compress_len(k.decoded.len())];
            let mut enc = snap::raw::Encoder::new();
            let floor = time(budget, || {
                let n = snap::raw::Decoder::new()
                    .decompress(&k.compressed, &mut decoded)
                    .unwrap();
                black_box(enc.compress(&decoded[..n], &mut out).unwrap());
            });
            let split = time(budget, || {
                black_box(pipeline.process(&k.compressed, &k.table).unwrap());
            });
            eprintln!(
                "summary {:<28} ratio {:.1}:1  floor {:.3} CPU-s/M samples  pipeline {:.3} CPU-s/M  = {:.2}x floor",
                k.name,
                k.decoded.len() as f64 / k.compressed.len() as f64,
                floor / k.samples as f64 * 1e6,
                split / k.samples as f64 * 1e6,
                split / floor
            );
            // The same series sent as remote write 2.0, against the floor
            // of the 2.0 body.
            let v2_len = snap::raw::decompress_len(&k.v2).unwrap();
            let mut decoded = vec![0u8; v2_len];
            let mut out = vec![0u8; snap::raw::max_compress_len(v2_len)];
            let floor_v2 = time(budget, || {
                let n = snap::raw::Decoder::new()
                    .decompress(&k.v2, &mut decoded)
                    .unwrap();
                black_box(enc.compress(&decoded[..n], &mut out).unwrap());
            });
            let split_v2 = time(budget, || {
                black_box(v2_pipeline.process(&k.v2, &k.table).unwrap());
            });
            eprintln!(
                "summary {:<28} ratio {:.1}:1  floor {:.3} CPU-s/M samples  pipeline {:.3} CPU-s/M  = {:.2}x floor, {:.2}x the 1.0 pipeline",
                format!("rw2/{}", k.name),
                v2_len as f64 / k.v2.len() as f64,
                floor_v2 / k.samples as f64 * 1e6,
                split_v2 / k.samples as f64 * 1e6,
                split_v2 / floor_v2,
                split_v2 / split
            );
        }
    }
}

/// Loki pushes through the server's pipelines, against the floor of their
/// codec (decompress + compress the same body): lines/s and CPU per
/// million lines.
fn summary_loki() {
    use orgsplit::formats::loki::{LokiJson, LokiProto};
    use orgsplit::pipeline::Codec;
    let budget = std::time::Duration::from_millis(300);
    let table = Snapshot::from_pairs(testing::table_pairs(50, 20));
    let push = testing::loki_push(&Shape {
        series: 500,
        namespaces: 50,
        ..Default::default()
    });
    let (proto, json, lines) = (push.proto, push.json, push.lines);
    let gzip = |b: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let snappy = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
    let report = |name: &str, floor: f64, split: f64| {
        eprintln!(
            "summary {name:<28} {:.0} lines/s  floor {:.3} CPU-s/M lines  pipeline {:.3} CPU-s/M lines  = {:.2}x floor",
            lines as f64 / split,
            floor / lines as f64 * 1e6,
            split / lines as f64 * 1e6,
            split / floor
        );
    };
    let snappy_floor = |decoded: &[u8]| {
        let c = snappy(decoded);
        time(budget, || {
            let d = snap::raw::Decoder::new().decompress_vec(&c).unwrap();
            black_box(snap::raw::Encoder::new().compress_vec(&d).unwrap());
        })
    };
    let p = Pipeline::new(
        LokiProto,
        router(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    );
    let body = snappy(&proto);
    let split = time(budget, || {
        black_box(p.process(&body, &table).unwrap());
    });
    report("loki/proto", snappy_floor(&proto), split);
    let p = Pipeline::new(
        LokiJson,
        router(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    )
    .with_codec(Codec::Identity);
    let split = time(budget, || {
        black_box(p.process(&json, &table).unwrap());
    });
    report("loki/json (snappy floor)", snappy_floor(&json), split);
    let p = Pipeline::new(
        LokiJson,
        router(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    )
    .with_codec(Codec::Gzip);
    let body = gzip(&json);
    let floor = time(budget, || {
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut d).unwrap();
        black_box(gzip(&d));
    });
    let split = time(budget, || {
        black_box(p.process(&body, &table).unwrap());
    });
    report("loki/json+gzip (gzip floor)", floor, split);
}

/// An OTLP metrics request of 2 000 data points, 10 attributes each, over
/// 50 namespaces: as the Collector's Prometheus receiver sends them (one
/// resource, `namespace` on each point), or as `k8sattributes` does (one
/// resource per namespace with `k8s.namespace.name`).
fn otlp_metrics(per_point: bool) -> Vec<u8> {
    testing::otlp::metrics(
        &Shape {
            series: 2000,
            namespaces: 50,
            seed: 0,
            ..Default::default()
        },
        per_point,
    )
}

/// OTLP metrics through the server's pipelines (gzip, as the exporters
/// send by default), against the gzip floor (decompress + compress the
/// same body): data points/s and CPU per million points.
fn summary_otlp() {
    use orgsplit::formats::otlp::{OtlpProto, OtlpSignal};
    use orgsplit::pipeline::Codec;
    let budget = std::time::Duration::from_millis(300);
    let table = Snapshot::from_pairs(testing::table_pairs(50, 20));
    let gzip = |b: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let router = Router::new(
        &Routing {
            unmapped: UnmappedPolicy::Drop,
            namespace_labels: vec!["k8s.namespace.name".into(), "namespace".into()],
            ..Default::default()
        },
        Default::default(),
    );
    let points = 2000.0;
    for (name, per_point) in [("otlp/per-point", true), ("otlp/per-resource", false)] {
        let decoded = otlp_metrics(per_point);
        let body = gzip(&decoded);
        let floor = time(budget, || {
            let mut d = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut d)
                .unwrap();
            black_box(gzip(&d));
        });
        let p = Pipeline::new(
            OtlpProto(OtlpSignal::Metrics),
            router.clone(),
            FamilyIndex::default(),
            Default::default(),
            usize::MAX,
        )
        .with_codec(Codec::Gzip);
        let split = time(budget, || {
            black_box(p.process(&body, &table).unwrap());
        });
        let plain = Pipeline::new(
            OtlpProto(OtlpSignal::Metrics),
            router.clone(),
            FamilyIndex::default(),
            Default::default(),
            usize::MAX,
        )
        .with_codec(Codec::Identity);
        let split_plain = time(budget, || {
            black_box(plain.process(&decoded, &table).unwrap());
        });
        eprintln!(
            "summary {name:<28} {:.0} points/s  gzip floor {:.3} CPU-s/M points  pipeline {:.3} CPU-s/M points  = {:.2}x floor  (uncompressed: {:.3} CPU-s/M points)",
            points / split,
            floor / points * 1e6,
            split / points * 1e6,
            split / floor,
            split_plain / points * 1e6,
        );
    }
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
    summary();
    let router = router();
    let pipeline = pipeline();
    let cases = [
        case(2000, 20, false),
        corpus_case(true, 2000, 20, false),
        corpus_case(true, 2000, 200, false),
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
                pipeline
                    .process(black_box(&k.compressed), &k.table)
                    .unwrap()
                    .outgoing
                    .len()
            })
        });
        group.bench_with_input(BenchmarkId::new("rw2", &k.name), k, |b, k| {
            let pipeline = pipeline_v2();
            b.iter(|| black_box(pipeline.process(&k.v2, &k.table).unwrap()));
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

/// The pieces of the pipeline on the headline request of each corpus
/// (`stages/2000x12/20t`, `stages/cadvisor/2000x12/20t`).
fn stages(c: &mut Criterion) {
    let router = router();
    let families = FamilyIndex::default();
    let pool = orgsplit::pool::BufferPool::default();
    for cadvisor in [false, true] {
        stages_of(
            c,
            &router,
            &families,
            &pool,
            corpus_case(cadvisor, 2000, 20, false),
        );
    }
}

fn stages_of(
    c: &mut Criterion,
    router: &Router,
    families: &FamilyIndex,
    pool: &orgsplit::pool::BufferPool,
    k: Case,
) {
    let mut group = c.benchmark_group(format!("stages/{}", k.name));
    group.throughput(Throughput::Elements(k.samples));
    group.bench_function("decompress", |b| {
        let mut out = vec![0u8; k.decoded.len()];
        b.iter(|| {
            snap::raw::Decoder::new()
                .decompress(black_box(&k.compressed), &mut out)
                .unwrap()
        })
    });
    group.bench_function("route", |b| {
        b.iter(|| {
            let split = router
                .split(
                    &Rw1,
                    black_box(&k.decoded),
                    &k.table,
                    families,
                    pool,
                    &Allowance::Any,
                )
                .unwrap();
            for batch in split.batches {
                pool.give(batch.body);
            }
        })
    });
    group.bench_function("walk-only", |b| {
        let query = orgsplit::wire::LabelQuery::new(["namespace"]);
        b.iter(|| {
            orgsplit::formats::rw1::Request::new(black_box(&k.decoded))
                .fields(&query, Default::default())
                .count()
        })
    });
    let split = router.split_rw1(&k.decoded, &k.table, families).unwrap();
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

/// What the operator page's record costs a push: one
/// `Activity::request` with 20 and 200 tenant pushes and a few unmapped
/// namespaces (`activity/request/200t`), against a push's whole pipeline
/// in the groups above.
fn activity(c: &mut Criterion) {
    use orgsplit::activity::{Activity, TenantPush};
    use orgsplit::signals::{Counts, Signal, SplitCounts, Unmapped, UnmappedKey};
    let activity = Activity::new();
    let counts = Counts {
        series: 100,
        samples: 100,
        ..Default::default()
    };
    let stats = SplitCounts {
        received: counts,
        unmapped: (0..3)
            .map(|i| UnmappedKey {
                key: Some(format!("stray-{i}").into()),
                reason: Unmapped::NoOrganization,
                defaulted: false,
                counts,
            })
            .collect(),
        ..Default::default()
    };
    let mut group = c.benchmark_group("activity");
    for tenants in [20usize, 200] {
        let names: Vec<String> = (0..tenants).map(|i| format!("org-{i}")).collect();
        group.bench_function(format!("request/{tenants}t"), |b| {
            b.iter(|| {
                activity.request(
                    Signal::Metrics,
                    &stats,
                    names.iter().map(|n| TenantPush {
                        tenant: n,
                        counts: &counts,
                        bytes: 1000,
                        status: None,
                        class: "2xx",
                        took: std::time::Duration::from_millis(2),
                    }),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, stages, activity);
criterion_main!(benches);
