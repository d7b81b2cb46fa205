//! Captured Prometheus requests (fixtures/requests) through the real push
//! path, and through both splitters.

mod common;

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
