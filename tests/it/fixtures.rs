//! Captured Prometheus requests (fixtures/requests) through the real push
//! path, and through both splitters.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use orgsplit::config::{Routing, UnmappedPolicy};
use orgsplit::route::{reference, Router};
use orgsplit::table::Snapshot;
use prost::Message;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snappy"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 3, "fixtures missing");
    out
}

#[test]
fn zero_copy_and_reference_agree_on_captured_requests() {
    let table = Snapshot::from_pairs([("shop-prod", "acme"), ("billing", "globex")]);
    for policy in [UnmappedPolicy::Default, UnmappedPolicy::Drop] {
        let router = Router::new(
            &Routing {
                default_tenant: "platform".into(),
                unmapped: policy,
                ..Default::default()
            },
            Default::default(),
        );
        for (name, body) in fixtures() {
            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
            assert!(reference::split(&router, &raw, &table).is_some(), "{name}");
            if let Err(e) = orgsplit::testing::agreement(&router, &raw, &table) {
                panic!("{name} with {policy:?}: {e}");
            }
        }
    }
}

#[tokio::test]
async fn captured_batch_lands_in_the_right_tenants() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), "shop-prod: acme\nbilling: globex\n");
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(
        dir.path(),
        &config(dir.path(), &upstream.url(), "  unmapped: drop"),
    )
    .await;
    let (_, body) = fixtures()
        .into_iter()
        .find(|(n, _)| n.ends_with("series-2000.snappy"))
        .unwrap();
    let input = orgsplit::testing::decompress(&body).unwrap();
    let (status, _, text) = orgsplit.push_raw(body).await;
    assert_eq!(status, 204, "{text}");

    let got = upstream.series_by_tenant();
    let mut want: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut dropped = 0;
    for s in &input.timeseries {
        match label_of(s, "namespace") {
            Some("shop-prod") => want.entry("acme").or_default().push(s.encode_to_vec()),
            Some("billing") => want.entry("globex").or_default().push(s.encode_to_vec()),
            _ => dropped += 1,
        }
    }
    assert!(dropped > 0 && want.len() == 2);
    for (tenant, series) in want {
        let got: Vec<Vec<u8>> = got[tenant].iter().map(|s| s.encode_to_vec()).collect();
        assert_eq!(got, series, "{tenant}");
    }
    let page = orgsplit.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_series_dropped_total{reason=\"no_label\"}"),
        dropped as f64
    );
}

/// The remote write 2.0 fixtures (fixtures/requests/rw2), built from the
/// spec's schema: Prometheus 2.42's captured 2 000-series batch and its
/// metadata as one 2.0 request (as a 2.0 sender sends them, metadata on
/// each series), and a hand-built request with what 2.0 adds (native
/// histograms with start timestamps, exemplars with labels, created
/// timestamps, help and unit).
fn rw2_fixtures() -> Vec<(&'static str, orgsplit::formats::rw2::pb::Request)> {
    use orgsplit::formats::rw2::pb as v2;
    use orgsplit::testing::rw2::{from_v1, Builder};
    let captured = |suffix: &str| {
        let (_, body) = fixtures()
            .into_iter()
            .find(|(n, _)| n.ends_with(suffix))
            .unwrap();
        orgsplit::testing::decompress(&body).unwrap()
    };
    let mut batch = captured("series-2000.snappy");
    batch.metadata = captured("metadata.snappy").metadata;
    let converted = from_v1(&batch);

    let mut b = Builder::default();
    let help = b.sym("Request latency.");
    let unit = b.sym("seconds");
    for (i, ns) in ["shop-prod", "billing", "shop-prod"]
        .into_iter()
        .enumerate()
    {
        let name = format!("http_request_duration_seconds_{i}");
        let trace = b.refs(&[("trace_id", &format!("{i:032x}"))]);
        let labels = b.refs(&[("__name__", &name), ("job", "api"), ("namespace", ns)]);
        b.request.timeseries.push(v2::TimeSeries {
            labels_refs: labels,
            histograms: vec![v2::Histogram {
                count: Some(v2::histogram::Count::CountInt(10 + i as u64)),
                sum: 1.5,
                schema: 3,
                zero_threshold: 1e-128,
                zero_count: Some(v2::histogram::ZeroCount::ZeroCountInt(1)),
                positive_spans: vec![v2::BucketSpan {
                    offset: 0,
                    length: 2,
                }],
                positive_deltas: vec![4, 1],
                timestamp: 1_700_000_000_000,
                start_timestamp: 1_699_999_000_000,
                ..Default::default()
            }],
            exemplars: vec![v2::Exemplar {
                labels_refs: trace,
                value: 0.25,
                timestamp: 1_700_000_000_000,
            }],
            metadata: Some(v2::Metadata {
                r#type: v2::metadata::MetricType::Histogram as i32,
                help_ref: help,
                unit_ref: unit,
            }),
            created_timestamp: 1_699_999_000_000,
            ..Default::default()
        });
    }
    vec![
        ("prometheus-2.42-series-2000.v2.snappy", converted),
        ("hand-built-histograms-exemplars.v2.snappy", b.request),
    ]
}

/// The fixtures are what the generator above builds; run with
/// `WRITE_RW2_FIXTURES=1` to write them again.
#[test]
fn rw2_fixtures_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests/rw2");
    for (name, request) in rw2_fixtures() {
        let body = orgsplit::testing::rw2::compress(&request);
        let path = dir.join(name);
        if std::env::var_os("WRITE_RW2_FIXTURES").is_some() {
            std::fs::write(&path, &body).unwrap();
            // Decompressed, as seeds of the 2.0 fuzz target.
            let seeds = dir.join("../../fuzz-seeds/split_rw2");
            std::fs::create_dir_all(&seeds).unwrap();
            std::fs::write(
                seeds.join(name.trim_end_matches(".snappy")),
                request.encode_to_vec(),
            )
            .unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        let decoded = snap::raw::Decoder::new().decompress_vec(&on_disk).unwrap();
        // Bytes, not values: the capture holds NaN stale markers.
        assert!(decoded == request.encode_to_vec(), "{name} is not current");
    }
}

/// The 2.0 fixtures through the real push path: each tenant gets exactly
/// its series, with every ref resolving to the same strings.
#[tokio::test]
async fn rw2_fixtures_land_in_the_right_tenants() {
    use orgsplit::testing::rw2::resolve;
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), "shop-prod: acme\nbilling: globex\n");
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(
        dir.path(),
        &config(dir.path(), &upstream.url(), "  unmapped: drop"),
    )
    .await;
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests/rw2");
    for (name, request) in rw2_fixtures() {
        upstream.reset();
        let body = std::fs::read(base.join(name)).unwrap();
        let r = client()
            .post(orgsplit.url("/api/v1/push"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", orgsplit::formats::rw2::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .unwrap();
        // The recording upstream speaks 1.0 only and answers without the
        // written counts, so orgsplit sends 1.0 (upstream.protocol: auto).
        assert_eq!(r.status().as_u16(), 204, "{name}");
        let written: u64 = r.headers()["x-prometheus-remote-write-samples-written"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let resolved = resolve(&request).unwrap();
        let ns = |labels: &[(String, String)]| {
            labels
                .iter()
                .find(|l| l.0 == "namespace")
                .map(|l| l.1.clone())
        };
        let mut want: BTreeMap<&str, Vec<Vec<(String, String)>>> = BTreeMap::new();
        let mut samples = 0;
        for (s, t) in resolved.iter().zip(&request.timeseries) {
            let tenant = match ns(&s.labels).as_deref() {
                Some("shop-prod") => "acme",
                Some("billing") => "globex",
                _ => continue,
            };
            samples += t.samples.len() as u64;
            want.entry(tenant).or_default().push(s.labels.clone());
        }
        assert_eq!(written, samples, "{name}");
        let got = upstream.series_by_tenant();
        for (tenant, labels) in want {
            let got: Vec<Vec<(String, String)>> = got[tenant]
                .iter()
                .map(|s| {
                    s.labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect()
                })
                .collect();
            assert_eq!(got, labels, "{name}: {tenant}");
        }
    }
}
