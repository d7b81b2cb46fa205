//! Hostile input over real HTTP: each gets a clear 4xx (or is routed by a
//! documented rule), nothing reaches any tenant that should not, and the
//! server stays up.

use crate::common;

use common::*;
use orgsplit::formats::rw1::pb;
use orgsplit::wire::encode::put_bytes_field;

async fn setup(extra: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    start_dropping(
        &format!(
            "shop-prod: acme\nbilling: globex\ndotdot: \"../x\"\npipe: \"a|b\"\nlong: \"{}\"\n",
            "o".repeat(200)
        ),
        extra,
    )
    .await
}

fn good_series() -> pb::TimeSeries {
    series(&[("__name__", "ok"), ("namespace", "shop-prod")], 1.0, 1)
}

/// Asserts a 4xx whose body contains `want`, that nothing was forwarded,
/// and that the server still serves a good push afterwards.
async fn refused(o: &Orgsplit, upstream: &Upstream, body: Vec<u8>, status: u16, want: &str) {
    let (s, _, text) = o.push_raw(body).await;
    assert_eq!(s, status, "{text}");
    assert!(text.contains(want), "{want:?} not in {text:?}");
    assert!(upstream.received().is_empty(), "something was forwarded");
    let (s, _, _) = o.push(&request(vec![good_series()])).await;
    assert_eq!(s, 204, "server still works");
    upstream.reset();
}

#[tokio::test]
async fn length_prefixes_pointing_past_the_end() {
    let (_d, upstream, o) = setup("").await;
    // a label whose value claims 1000 bytes, inside a series that claims
    // less than that
    let mut label = Vec::new();
    put_bytes_field(&mut label, 1, b"namespace");
    label.extend_from_slice(&[0x12, 0xe8, 0x07]); // field 2, len 1000
    label.extend_from_slice(b"shop-prod");
    let mut series = Vec::new();
    put_bytes_field(&mut series, 1, &label);
    let mut req = Vec::new();
    put_bytes_field(&mut req, 1, &series);
    refused(&o, &upstream, snappy(&req), 400, "truncated").await;
    // a series that claims 2^40 bytes
    let mut req = vec![0x0a];
    orgsplit::wire::encode::put_varint(&mut req, 1 << 40);
    req.extend_from_slice(&[0; 8]);
    refused(&o, &upstream, snappy(&req), 400, "truncated").await;
}

#[tokio::test]
async fn too_many_labels_and_huge_label_values() {
    let (_d, upstream, o) =
        setup("limits: {max_labels_per_series: 100, max_label_bytes: 4096}\n").await;
    let mut many = good_series();
    for i in 0..100_000 {
        many.labels.push(label(&format!("l{i}"), "v"));
    }
    refused(
        &o,
        &upstream,
        orgsplit::testing::compress(&request(vec![many])),
        400,
        "100002 labels",
    )
    .await;
    let mut huge = good_series();
    huge.labels.push(label("blob", &"x".repeat(10 << 20)));
    let body = orgsplit::testing::compress(&request(vec![good_series(), huge]));
    refused(&o, &upstream, body, 400, "more than the limit of 4096").await;
}

#[tokio::test]
async fn invalid_utf8_in_label_names_and_values() {
    let (_d, upstream, o) = setup("").await;
    for (name, value) in [
        (&b"namespace"[..], &b"shop-\xff"[..]),
        (&b"na\xc3me"[..], &b"v"[..]),
    ] {
        let mut l1 = Vec::new();
        put_bytes_field(&mut l1, 1, b"namespace");
        put_bytes_field(&mut l1, 2, b"shop-prod");
        let mut l2 = Vec::new();
        put_bytes_field(&mut l2, 1, name);
        put_bytes_field(&mut l2, 2, value);
        let mut series = Vec::new();
        put_bytes_field(&mut series, 1, &l1);
        put_bytes_field(&mut series, 1, &l2);
        let mut req = Vec::new();
        put_bytes_field(&mut req, 1, &series);
        refused(&o, &upstream, snappy(&req), 400, "UTF-8").await;
    }
}

#[tokio::test]
async fn organizations_that_are_not_tenant_ids_are_unmapped() {
    let (_d, upstream, o) = setup("").await;
    let req = request(vec![
        series(&[("namespace", "dotdot")], 1.0, 1),
        series(&[("namespace", "pipe")], 2.0, 1),
        series(&[("namespace", "long")], 3.0, 1),
        series(&[("namespace", "../../etc")], 4.0, 1),
        good_series(),
    ]);
    let (s, _, text) = o.push(&req).await;
    assert_eq!(s, 204, "{text}");
    let got = upstream.series_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme"]);
    assert_eq!(got["acme"].len(), 1);
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"invalid_tenant\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"no_organization\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn label_mode_values_crafted_as_tenant_ids_are_unmapped() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nupstream: {{url: \"{}\"}}\nrouting: {{mode: label, tenant_label: tenant, unmapped: drop}}\n",
        upstream.url()
    );
    let o = Orgsplit::start(dir.path(), &yaml).await;
    let long = "t".repeat(200);
    let req = request(vec![
        series(&[("tenant", "../x")], 1.0, 1),
        series(&[("tenant", "a|b")], 1.0, 1),
        series(&[("tenant", &long)], 1.0, 1),
        series(&[("tenant", ".")], 1.0, 1),
        series(&[("tenant", "ok-tenant")], 1.0, 1),
    ]);
    assert_eq!(o.push(&req).await.0, 204);
    let got = upstream.series_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["ok-tenant"]);
    let page = o.metrics().await;
    assert_eq!(metric(&page, "orgsplit_invalid_tenant_total"), 4.0);
}

#[tokio::test]
async fn duplicate_namespace_labels_route_by_the_first() {
    let (_d, upstream, o) = setup("").await;
    let req = request(vec![series(
        &[
            ("__name__", "dup"),
            ("namespace", "billing"),
            ("namespace", "shop-prod"),
        ],
        1.0,
        1,
    )]);
    assert_eq!(o.push(&req).await.0, 204);
    let got = upstream.series_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["globex"]);
}

#[tokio::test]
async fn a_client_supplied_tenant_header_is_ignored() {
    let (_d, upstream, o) = setup("").await;
    let r = client()
        .post(o.url("/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .header("X-Scope-OrgID", "globex")
        .header("X-Scope-OrgID", "acme|globex")
        .body(orgsplit::testing::compress(&request(vec![series(
            &[("namespace", "nowhere")],
            1.0,
            1,
        )])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        upstream.received().is_empty(),
        "unmapped series must not follow the client's header"
    );
}

#[tokio::test]
async fn many_series_beyond_the_limit_are_refused() {
    let (_d, upstream, o) = setup("limits: {max_series_per_request: 1000}\n").await;
    let req = request((0..1001).map(|_| good_series()).collect());
    refused(
        &o,
        &upstream,
        orgsplit::testing::compress(&req),
        413,
        "more than 1000 series",
    )
    .await;
}
