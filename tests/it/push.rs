//! The push path over real HTTP: orgsplit in-process on a TCP port, a fake
//! Mimir that decodes and records what each tenant receives.

use crate::common;

use std::time::Duration;

use common::*;
use orgsplit::formats::rw1::pb;

async fn setup(extra_routing: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let upstream = Upstream::start().await;
    let orgsplit = Orgsplit::start(
        dir.path(),
        &config(dir.path(), &upstream.url(), extra_routing),
    )
    .await;
    (dir, upstream, orgsplit)
}

fn names(series: &[pb::TimeSeries]) -> Vec<String> {
    series
        .iter()
        .map(|s| label_of(s, "__name__").unwrap_or("").to_string())
        .collect()
}

fn mixed() -> pb::WriteRequest {
    request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "billing")], 2.0, 2),
        series(&[("__name__", "c"), ("namespace", "shop-dev")], 3.0, 3),
        series(&[("__name__", "d")], 4.0, 4),
        series(&[("__name__", "e"), ("namespace", "nowhere")], 5.0, 5),
        series(&[("__name__", "f"), ("namespace", "broken")], 6.0, 6),
    ])
}

#[tokio::test]
async fn each_tenant_gets_exactly_its_series_with_the_right_headers() {
    let (_dir, upstream, orgsplit) = setup("  default_tenant: fallback\n  unmapped: default").await;
    let body = orgsplit::testing::compress(&mixed());
    let r = common::client()
        .post(orgsplit.url("/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .header("X-Scope-OrgID", "attacker")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", r.text().await.unwrap());

    let got = upstream.series_by_tenant();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["acme", "fallback", "globex"]
    );
    assert_eq!(names(&got["acme"]), ["a", "c"]);
    assert_eq!(names(&got["globex"]), ["b"]);
    assert_eq!(names(&got["fallback"]), ["d", "e", "f"]);

    for r in upstream.received() {
        assert_eq!(r.headers["content-encoding"], "snappy");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(r.headers.get_all("x-scope-orgid").iter().count(), 1);
        assert_ne!(r.tenant, "attacker");
    }

    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_received_series_total"), 6.0);
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 6.0);
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_defaulted_total{reason=\"no_label\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_defaulted_total{reason=\"no_organization\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_defaulted_total{reason=\"invalid_tenant\"}"
        ),
        1.0
    );
    assert_eq!(metric(&page, "orgsplit_requests_total{code=\"204\"}"), 1.0);
}

#[tokio::test]
async fn drop_policy_forwards_the_rest_and_counts_the_drops() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 204, "{body}");
    let got = upstream.series_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(names(&got["acme"]), ["a", "c"]);
    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_series_dropped_total"), 3.0);
    assert_eq!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"no_organization\"}"
        ),
        1.0
    );
    assert_eq!(metric(&page, "orgsplit_samples_dropped_total"), 3.0);
}

#[tokio::test]
async fn reject_policy_answers_400_and_forwards_nothing() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: reject").await;
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 400);
    assert!(body.contains("no namespace label"), "{body}");
    assert!(upstream.received().is_empty());

    // a fully mapped request still goes through
    let ok = request(mixed().timeseries.into_iter().take(3).collect());
    let (status, _, _) = orgsplit.push(&ok).await;
    assert_eq!(status, 204);
    assert_eq!(upstream.series_by_tenant().len(), 2);
}

#[tokio::test]
async fn label_mode_is_cortex_tenant_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:0
upstream: {{url: \"{}\"}}
routing:
  mode: label
  tenant_label: team
  remove_tenant_label: true
  tenant_prefix: \"t-\"
  unmapped: drop
",
        upstream.url()
    );
    let orgsplit = Orgsplit::start(dir.path(), &yaml).await;
    let req = request(vec![
        series(
            &[("__name__", "x"), ("team", "red"), ("namespace", "n")],
            1.0,
            1,
        ),
        series(&[("__name__", "y"), ("team", "blue")], 2.0, 2),
        series(&[("__name__", "z")], 3.0, 3),
    ]);
    let (status, _, body) = orgsplit.push(&req).await;
    assert_eq!(status, 204, "{body}");
    let got = upstream.series_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["t-blue", "t-red"]);
    assert_eq!(
        got["t-red"][0].labels,
        [label("__name__", "x"), label("namespace", "n")]
    );
}

#[tokio::test]
async fn histograms_exemplars_and_float_bits_arrive_unchanged() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    let mut req = orgsplit::testing::request(&orgsplit::testing::Shape {
        series: 300,
        namespaces: 1,
        histogram_every: 3,
        exemplar_every: 4,
        ..Default::default()
    });
    orgsplit::testing::set_namespace(&mut req, "billing");
    req.timeseries[1].samples[0].value = f64::from_bits(0x7ff0_0000_0000_0002); // Prometheus' stale marker
    let (status, _, body) = orgsplit.push(&req).await;
    assert_eq!(status, 204, "{body}");
    let got = upstream.series_by_tenant();
    use prost::Message;
    let enc = |v: &[pb::TimeSeries]| v.iter().map(|t| t.encode_to_vec()).collect::<Vec<_>>();
    assert_eq!(enc(&got["globex"]), enc(&req.timeseries));
    assert_eq!(
        got["globex"][1].samples[0].value.to_bits(),
        0x7ff0_0000_0000_0002
    );
}

#[tokio::test]
async fn metadata_only_requests_are_forwarded_not_rejected() {
    let (_dir, upstream, orgsplit) = setup("  default_tenant: fallback\n  unmapped: default").await;
    let (status, _, _) = orgsplit
        .push(&request(vec![series(
            &[
                ("__name__", "shop_orders_total"),
                ("namespace", "shop-prod"),
            ],
            1.0,
            1,
        )]))
        .await;
    assert_eq!(status, 204);
    upstream.reset();
    let meta = |n: &str| pb::MetricMetadata {
        r#type: 1,
        metric_family_name: n.into(),
        help: "help".into(),
        unit: String::new(),
    };
    let req = pb::WriteRequest {
        timeseries: vec![],
        metadata: vec![meta("shop_orders_total"), meta("never_seen")],
    };
    let (status, _, body) = orgsplit.push(&req).await;
    assert_eq!(status, 204, "{body}");
    let mut got: Vec<(String, Vec<String>)> = upstream
        .received()
        .into_iter()
        .map(|r| {
            (
                r.tenant,
                r.request
                    .metadata
                    .into_iter()
                    .map(|m| m.metric_family_name)
                    .collect(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("acme".to_string(), vec!["shop_orders_total".to_string()]),
            ("fallback".to_string(), vec!["never_seen".to_string()])
        ]
    );
}

#[tokio::test]
async fn upstream_5xx_for_one_tenant_makes_the_answer_retryable() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    upstream.set("globex", Behaviour::Status(500, None, "ingester down"));
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("globex") && body.contains("ingester down"),
        "{body}"
    );
    // the other tenant was still delivered; a retry re-sends (Mimir dedups)
    assert_eq!(names(&upstream.series_by_tenant()["acme"]), ["a", "c"]);
    upstream.clear("globex");
    let (status, _, _) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 204);
    assert_eq!(names(&upstream.series_by_tenant()["globex"]), ["b"]);
}

#[tokio::test]
async fn only_429s_answer_429_with_the_largest_retry_after() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    upstream.set("acme", Behaviour::Status(429, Some(7), "slow down"));
    upstream.set("globex", Behaviour::Status(429, Some(30), "slow down"));
    let (status, headers, _) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "30");
    // 429 mixed with a 4xx still asks for a retry
    upstream.set("globex", Behaviour::Status(400, None, "bad"));
    let (status, _, _) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn upstream_4xx_passes_back_naming_the_tenant() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    upstream.set("acme", Behaviour::Status(400, None, "out of order sample"));
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("tenant acme") && body.contains("out of order sample"),
        "{body}"
    );
    assert!(!body.contains("globex"), "{body}");
}

#[tokio::test]
async fn slow_upstream_times_out_as_retryable() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    upstream.set("acme", Behaviour::Delay(Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body.contains("acme") && body.contains("timed out"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api/v1/push");
    let orgsplit = Orgsplit::start(dir.path(), &config(dir.path(), &url, "  unmapped: drop")).await;
    let (status, _, body) = orgsplit.push(&mixed()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("unreachable"), "{body}");
}

#[tokio::test]
async fn malformed_bodies_get_400_and_reach_no_tenant() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    let good = {
        use prost::Message;
        mixed().encode_to_vec()
    };
    let snappy = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty request body"),
        (
            "not snappy",
            b"\xff\xff\xff\xff\xff\xff".to_vec(),
            "not snappy",
        ),
        ("uncompressed protobuf", good.clone(), "not"),
        (
            "snappy garbage",
            snappy(b"hello world, not protobuf"),
            "not a valid push request",
        ),
        (
            "truncated protobuf",
            snappy(&good[..good.len() - 3]),
            "truncated",
        ),
        ("empty WriteRequest", snappy(b""), "empty"),
    ];
    for (what, body, want) in cases {
        let (status, _, text) = orgsplit.push_raw(body).await;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(text.contains(want), "{what}: {text}");
    }
    // a truncated snappy stream
    let full = snappy(&good);
    let (status, _, text) = orgsplit.push_raw(full[..full.len() / 2].to_vec()).await;
    assert_eq!(status, 400, "{text}");
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn oversized_bodies_get_413_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let upstream = Upstream::start().await;
    let yaml = format!(
        "{}limits: {{max_body_bytes: 4096, max_decoded_bytes: 65536}}\n",
        config(dir.path(), &upstream.url(), "  unmapped: drop")
    );
    let orgsplit = Orgsplit::start(dir.path(), &yaml).await;
    let (status, _, text) = orgsplit.push_raw(vec![0u8; 5000]).await;
    assert_eq!(status, 413, "{text}");
    // tiny bodies that declare a 1 GiB or 4 GiB decompressed size
    for declared in [1u64 << 30, 4 << 30] {
        let mut bomb = Vec::new();
        let mut n = declared;
        while n >= 0x80 {
            bomb.push((n as u8) | 0x80);
            n >>= 7;
        }
        bomb.push(n as u8);
        bomb.extend_from_slice(&[0; 16]);
        let (status, _, text) = orgsplit.push_raw(bomb).await;
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("max_decoded_bytes"), "{text}");
    }
    // a body sent without Content-Length (chunked) is limited as well
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![0u8; 1000])));
    let r = common::client()
        .post(orgsplit.url("/api/v1/push"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn wrong_method_and_encoding() {
    let (_dir, _upstream, orgsplit) = setup("  unmapped: drop").await;
    let r = common::client()
        .get(orgsplit.url("/api/v1/push"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = common::client()
        .post(orgsplit.url("/push"))
        .header("Content-Encoding", "gzip")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // the /push alias works
    let r = common::client()
        .post(orgsplit.url("/push"))
        .header("Content-Encoding", "snappy")
        .body(orgsplit::testing::compress(&mixed()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}

#[tokio::test]
async fn health_and_readiness() {
    let (_dir, _upstream, orgsplit) = setup("  unmapped: drop").await;
    for path in ["/healthz", "/alive", "/readyz"] {
        let r = common::client()
            .get(orgsplit.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}

/// A Prometheus that scrapes one organization's namespaces (one per
/// namespace, a sidecar, an agent per team) pushes only that organization's
/// series: its body goes upstream as it was sent, byte for byte, and is
/// counted like any other. One series elsewhere, and the push is split.
#[tokio::test]
async fn a_push_all_for_one_organization_goes_upstream_byte_for_byte() {
    let (_dir, upstream, orgsplit) = setup("  unmapped: drop").await;
    let acme = request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "shop-dev")], 2.0, 2),
    ]);
    let sent = orgsplit::testing::compress(&acme);
    let (status, _, body) = orgsplit.push_raw(sent.clone()).await;
    assert_eq!(status, 204, "{body}");
    let mut with_unmapped = acme.clone();
    with_unmapped.timeseries.push(series(
        &[("__name__", "c"), ("namespace", "nowhere")],
        3.0,
        3,
    ));
    let (status, _, body) = orgsplit.push(&with_unmapped).await;
    assert_eq!(status, 204, "{body}");
    let received = upstream.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.tenant == "acme"));
    assert_eq!(received[0].body[..], sent[..], "the sender's own bytes");
    assert_eq!(received[1].request, acme, "the unmapped series left out");
    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 4.0);
}
