//! Every resource that grows with input or time is bounded: each test drives
//! one resource to its limit (or an attacker's far past it) and checks the
//! answer the sender gets, that nothing leaks or is lost silently, and that
//! the server keeps serving others.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

async fn setup(extra: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    start_dropping(TABLE, extra).await
}

fn two_tenants() -> orgsplit::formats::rw1::pb::WriteRequest {
    request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "billing")], 2.0, 2),
    ])
}

#[tokio::test]
async fn a_huge_upstream_answer_is_read_only_as_far_as_the_message_needs() {
    let (_d, upstream, o) = setup("").await;
    // 400 MiB of error message: orgsplit must read a prefix and hang up.
    upstream.set("globex", Behaviour::HugeBody(500, 400 << 20));
    let started = Instant::now();
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("globex"), "{body}");
    assert!(
        body.len() < 16 << 10,
        "message is a prefix: {} bytes",
        body.len()
    );
    // A few socket buffers' worth at most, not the 400 MiB.
    let taken = upstream.streamed();
    assert!(
        taken < 32 << 20,
        "orgsplit read {taken} bytes of the answer"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Same for a 2xx with a body nobody asked for: accepted, not drained.
    upstream.reset();
    upstream.set("globex", Behaviour::HugeBody(200, 400 << 20));
    let before = upstream.streamed();
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 204, "{body}");
    assert!(upstream.streamed() - before < 32 << 20);
    upstream.clear("globex");
    let (status, _, _) = o.push(&two_tenants()).await;
    assert_eq!(status, 204);
}

/// A request of `n` copies of the raw field `field` (tag and body), after
/// one good series.
fn flood(field: &[u8], n: usize) -> Vec<u8> {
    use prost::Message;
    let mut body = request(vec![series(
        &[("__name__", "a"), ("namespace", "shop-prod")],
        1.0,
        1,
    )])
    .encode_to_vec();
    body.reserve(field.len() * n);
    for _ in 0..n {
        body.extend_from_slice(field);
    }
    body
}

/// Asserts a 413 naming `key`, that nothing was forwarded, and that the
/// server still serves a good push.
async fn too_many(o: &Orgsplit, upstream: &Upstream, body: Vec<u8>, key: &str) {
    let (status, _, text) = o.push_raw(snappy(&body)).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains(key), "{key} not in {text}");
    assert!(upstream.received().is_empty(), "something was forwarded");
    let (status, _, _) = o.push(&two_tenants()).await;
    assert_eq!(status, 204);
    upstream.reset();
}

#[tokio::test]
async fn thirty_million_empty_metadata_entries_are_refused_as_they_are_counted() {
    // 3 MB compressed, 62 MB decoded, 31 million `metadata {}` fields: with
    // no count limit this took the process past 1 GiB and was answered 204.
    let body = flood(&[0x1a, 0x00], 31_000_000);
    // With the defaults, its decoded size alone is too much.
    let (_d, upstream, o) = setup("").await;
    too_many(&o, &upstream, body.clone(), "limits.max_decoded_bytes").await;
    drop(o);
    // Allowed that size, it is refused as the entries are counted.
    let (_d, upstream, o) =
        setup("limits: {max_decoded_bytes: 67108864, max_inflight_bytes: 268435456}\n").await;
    let started = Instant::now();
    too_many(&o, &upstream, body, "limits.max_metadata_per_request").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_rejected_total{reason=\"too_many_metadata\""
        ),
        1.0
    );
}

#[tokio::test]
async fn each_repeated_item_has_a_limit_and_is_accepted_up_to_it() {
    let (_d, upstream, o) = setup(
        "limits:
  max_series_per_request: 10
  max_metadata_per_request: 10
  max_samples_per_request: 20
  max_exemplars_per_request: 10
  max_buckets_per_histogram: 10
",
    )
    .await;
    use orgsplit::formats::rw1::pb;
    use prost::Message;
    let one = |f: &dyn Fn(&mut pb::TimeSeries)| {
        let mut s = series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1);
        f(&mut s);
        s
    };
    // At the limit: accepted, everything forwarded.
    let metadata = |n: usize| pb::WriteRequest {
        timeseries: vec![one(&|_| {})],
        metadata: (0..n)
            .map(|i| pb::MetricMetadata {
                r#type: 1,
                metric_family_name: format!("a{i}"),
                help: "h".into(),
                unit: String::new(),
            })
            .collect(),
    };
    let series_n = |n: usize| request((0..n).map(|_| one(&|_| {})).collect());
    let samples = |n: usize| {
        request(vec![one(&|s| {
            s.samples = (0..n as i64)
                .map(|t| pb::Sample {
                    value: 1.0,
                    timestamp: t,
                })
                .collect()
        })])
    };
    let exemplars = |n: usize| {
        request(vec![one(&|s| {
            s.exemplars = (0..n as i64)
                .map(|t| pb::Exemplar {
                    labels: vec![label("trace_id", "x")],
                    value: 1.0,
                    timestamp: t,
                })
                .collect()
        })])
    };
    let buckets = |n: usize| {
        request(vec![one(&|s| {
            s.samples.clear();
            s.histograms = vec![pb::Histogram {
                schema: 0,
                positive_spans: vec![pb::BucketSpan {
                    offset: 0,
                    length: (n - 1) as u32,
                }],
                positive_deltas: vec![1; n - 1],
                ..Default::default()
            }];
        })])
    };
    type Make<'a> = &'a dyn Fn(usize) -> pb::WriteRequest;
    let cases: [(Make, usize, &str); 5] = [
        (&series_n, 10, "max_series_per_request"),
        (&metadata, 10, "max_metadata_per_request"),
        (&samples, 20, "max_samples_per_request"),
        (&exemplars, 10, "max_exemplars_per_request"),
        (&buckets, 10, "max_buckets_per_histogram"),
    ];
    for (make, limit, key) in cases {
        let (status, _, text) = o.push(&make(limit)).await;
        assert_eq!(status, 204, "{key} at its limit: {text}");
        assert!(!upstream.received().is_empty(), "{key}");
        upstream.reset();
        too_many(&o, &upstream, make(limit + 1).encode_to_vec(), key).await;
    }
}

#[tokio::test]
async fn floods_of_empty_exemplars_samples_and_buckets_are_refused() {
    let (_d, upstream, o) = setup("").await;
    // One series holding millions of empty items: each costs two bytes on
    // the wire and far more in any decoder downstream.
    let mut labels = Vec::new();
    for (n, v) in [("__name__", "a"), ("namespace", "shop-prod")] {
        let mut l = Vec::new();
        orgsplit::wire::encode::put_bytes_field(&mut l, 1, n.as_bytes());
        orgsplit::wire::encode::put_bytes_field(&mut l, 2, v.as_bytes());
        orgsplit::wire::encode::put_bytes_field(&mut labels, 1, &l);
    }
    let one_series = |item: &[u8], n: usize| {
        let mut s = labels.clone();
        for _ in 0..n {
            s.extend_from_slice(item);
        }
        let mut body = Vec::new();
        orgsplit::wire::encode::put_bytes_field(&mut body, 1, &s);
        body
    };
    // exemplar {} and sample {} repeated
    too_many(
        &o,
        &upstream,
        one_series(&[0x1a, 0x00], 15_000_000),
        "limits.max_exemplars_per_request",
    )
    .await;
    too_many(
        &o,
        &upstream,
        one_series(&[0x12, 0x00], 15_000_000),
        "limits.max_samples_per_request",
    )
    .await;
    // a histogram with 10 million packed deltas
    let mut h = Vec::new();
    orgsplit::wire::encode::put_bytes_field(&mut h, 12, &vec![0u8; 10_000_000]);
    let mut item = Vec::new();
    orgsplit::wire::encode::put_bytes_field(&mut item, 4, &h);
    too_many(
        &o,
        &upstream,
        one_series(&item, 1),
        "limits.max_buckets_per_histogram",
    )
    .await;
}

#[tokio::test]
async fn pushes_of_thousands_of_new_tenants_cost_the_same_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = format!(
        "listen: 127.0.0.1:0
upstream: {{url: \"{}\", timeout: 20s}}
routing: {{mode: label, tenant_label: tenant, unmapped: drop}}
metrics: {{per_tenant: true}}
",
        upstream.url()
    );
    let o = Orgsplit::start(dir.path(), &cfg).await;
    const TENANTS: usize = 3000;
    let mut took = Vec::new();
    for round in 0..4 {
        upstream.reset();
        let all = (0..TENANTS)
            .map(|i| {
                let t = format!("r{round}-t{i}");
                series(&[("__name__", "up"), ("tenant", &t)], 1.0, 1)
            })
            .collect();
        let started = Instant::now();
        let (status, _, body) = o.push(&request(all)).await;
        took.push(started.elapsed());
        assert_eq!(status, 204, "{body}");
        let got = upstream.series_by_tenant();
        assert_eq!(got.len(), TENANTS, "every tenant got its series");
        assert!(got.values().all(|s| s.len() == 1));
    }
    assert!(took[3] < took[0] * 3, "later pushes slowed down: {took:?}");
    let page = o.metrics().await;
    // per-tenant counters are bounded too
    let labelled = page
        .lines()
        .filter(|l| l.starts_with("orgsplit_tenant_series_total{"))
        .count();
    assert!(labelled <= 1001, "{labelled} tenant label values");
    assert_eq!(
        metric(&page, "orgsplit_tenant_series_total"),
        (4 * TENANTS) as f64,
        "every series still counted"
    );
    assert_eq!(
        metric(&page, "orgsplit_family_index_pairs"),
        (4 * TENANTS) as f64
    );
}

#[tokio::test]
async fn tenants_per_request_are_limited() {
    let (_d, upstream, o) = setup("limits: {max_tenants_per_request: 2}\n").await;
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 204, "{body}");
    upstream.reset();
    let mut three = two_tenants();
    three.timeseries.push(series(
        &[("__name__", "c"), ("namespace", "unknown-ns")],
        1.0,
        1,
    ));
    // the dropped series has no tenant: still two
    let (status, _, body) = o.push(&three).await;
    assert_eq!(status, 204, "{body}");
    upstream.reset();
    let dir = tempfile::tempdir().unwrap();
    let up2 = Upstream::start().await;
    let cfg = format!(
        "listen: 127.0.0.1:0\nupstream: {{url: \"{}\"}}\nrouting: {{mode: label, unmapped: drop}}\nlimits: {{max_tenants_per_request: 2}}\n",
        up2.url()
    );
    let o2 = Orgsplit::start(dir.path(), &cfg).await;
    let req = request(
        ["a", "b", "c"]
            .iter()
            .map(|t| series(&[("__name__", "x"), ("tenant", t)], 1.0, 1))
            .collect(),
    );
    let (status, _, body) = o2.push(&req).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limits.max_tenants_per_request"), "{body}");
    assert!(up2.received().is_empty());
}

/// A sender that sends a push's headers (declaring `declared` body bytes)
/// and `send` bytes of body, then stalls. Returns the connection, to read
/// the answer from.
async fn stall(o: &Orgsplit, declared: usize, send: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\n\
         Content-Type: application/x-protobuf\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![0u8; send]).await.unwrap();
    s
}

/// Asserts that orgsplit told the sender on `s` to retry (503) within `wait`.
async fn told_to_retry(s: &mut tokio::net::TcpStream, wait: Duration) {
    let line = status_of(s, wait).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains(" 503 ")),
        "{line:?}"
    );
}

/// The status line orgsplit wrote on `s`, if any arrives within `wait`.
async fn status_of(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines()
        .next()
        .map(|l| l.to_string())
        .filter(|l| !l.is_empty())
}

#[tokio::test]
async fn senders_that_stall_do_not_lock_out_the_others() {
    // Four request slots; four senders send 10 bytes of body and stall.
    let (_d, upstream, o) = setup("limits: {max_inflight_requests: 4, body_timeout: 2s}\n").await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall(&o, 100_000, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Everyone else is served, at once.
    for _ in 0..8 {
        let started = Instant::now();
        let (status, _, body) = o.push(&two_tenants()).await;
        assert_eq!(status, 204, "{body}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(upstream.received().len(), 16);
    // The stalled ones are told to retry once body_timeout has passed.
    for s in &mut stalled {
        told_to_retry(s, Duration::from_secs(5)).await;
    }
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_rejected_total{reason=\"body_timeout\""
        ),
        4.0
    );
}

#[tokio::test]
async fn hundreds_of_stalled_senders_with_default_limits() {
    let (_d, _upstream, o) = setup("").await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        stalled.push(stall(&o, 1000, 10).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 204, "{body}");
    // default body_timeout is 10 s: well under Prometheus' 30 s
    assert_eq!(
        orgsplit::config::Limits::default().body_timeout,
        Duration::from_secs(10)
    );
}

#[tokio::test]
async fn bytes_still_arriving_are_charged_to_the_budget() {
    // A 2 MiB budget; senders declare 1 MiB bodies, send 700 KiB and stall.
    let (_d, upstream, o) = setup(
        "limits: {max_body_bytes: 1048576, max_decoded_bytes: 1048576, \
         max_inflight_bytes: 2097152, body_timeout: 3s}\n",
    )
    .await;
    let mut stalled = Vec::new();
    let mut peak = 0f64;
    for _ in 0..4 {
        stalled.push(stall(&o, 1 << 20, 700 << 10).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        peak = peak.max(metric(&o.metrics().await, "orgsplit_inflight_bytes"));
    }
    // What arrived is charged, and large requests never take more than
    // three quarters of the budget (the rest is kept for small pushes).
    assert!(peak >= (700 << 10) as f64, "peak {peak}");
    assert!(peak <= (1536 << 10) as f64, "peak {peak}");
    // A small push is served at once beside them.
    let started = Instant::now();
    let (status, _, body) = o.push(&two_tenants()).await;
    assert_eq!(status, 204, "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Stalled bodies gave way to the later senders that needed the room,
    // and were told to retry.
    // (Two 700 KiB bodies fit in the 1.5 MiB large requests may use: the
    // third and fourth sender made the first two give way.)
    for s in &mut stalled[..2] {
        told_to_retry(s, Duration::from_millis(200)).await;
    }
    let page = o.metrics().await;
    assert!(
        metric(
            &page,
            "orgsplit_requests_rejected_total{reason=\"body_stalled\""
        ) + metric(&page, "orgsplit_requests_overloaded_total{limit=\"bytes\"")
            >= 2.0,
        "{page}"
    );
    // The last two time out; then every byte is released.
    for s in &mut stalled[2..] {
        told_to_retry(s, Duration::from_secs(5)).await;
    }
    assert_eq!(metric(&o.metrics().await, "orgsplit_inflight_bytes"), 0.0);
    upstream.reset();
    let (status, _, _) = o.push(&two_tenants()).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn chunked_bodies_are_charged_and_bounded_too() {
    use tokio::io::AsyncWriteExt;
    let (_d, _upstream, o) = setup(
        "limits: {max_body_bytes: 1048576, max_decoded_bytes: 1048576, \
         max_inflight_bytes: 2097152, body_timeout: 3s}\n",
    )
    .await;
    // No Content-Length: 1.5 MiB in 64 KiB chunks is cut off at max_body_bytes.
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    s.write_all(
        b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![0u8; 64 << 10];
    for _ in 0..24 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let line = status_of(&mut s, Duration::from_secs(2)).await;
    assert!(
        line.as_deref().is_some_and(|l| l.contains(" 413 ")),
        "{line:?}"
    );
    // Chunked and stalled: charged as it arrives, released at the timeout.
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    s.write_all(
        b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..10 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = metric(&o.metrics().await, "orgsplit_inflight_bytes");
    assert!(held >= (640 << 10) as f64, "held {held}");
    told_to_retry(&mut s, Duration::from_secs(5)).await;
    assert_eq!(metric(&o.metrics().await, "orgsplit_inflight_bytes"), 0.0);
}

/// Splitting a large push must not hold up the runtime: `/readyz` and
/// small pushes are answered while it runs. The test runtime has a single
/// thread, so any CPU work done on it shows up as their latency.
#[tokio::test(flavor = "current_thread")]
async fn large_pushes_do_not_stall_health_checks_or_other_senders() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let upstream = Upstream::start().await;
    // The fake upstream decodes the large tenant bodies slowly in a debug
    // build on a busy machine: give it time.
    let cfg = config(dir.path(), &upstream.url(), "  unmapped: drop")
        .replace("timeout: 2s", "timeout: 60s")
        + "limits: {max_decoded_bytes: 67108864, max_inflight_bytes: 268435456, \
         max_series_per_request: 0}\n";
    let o = Orgsplit::start(dir.path(), &cfg).await;
    let mut big = orgsplit::testing::request(&orgsplit::testing::Shape {
        series: 120_000,
        namespaces: 3,
        labels: 14,
        ..Default::default()
    });
    for (i, s) in big.timeseries.iter_mut().enumerate() {
        for l in &mut s.labels {
            if l.name == "namespace" {
                l.value = ["shop-prod", "billing", "shop-dev"][i % 3].into();
            }
        }
    }
    let body = orgsplit::testing::compress(&big);
    // How long the split alone takes here (debug builds are slow).
    let started = Instant::now();
    let (status, _, text) = o.push_raw(body.clone()).await;
    let alone = started.elapsed();
    assert_eq!(status, 204, "{text}");
    upstream.reset();

    let big_push = o.push_raw(body);
    let probes = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut worst = Duration::ZERO;
        let until = Instant::now() + alone / 2;
        while Instant::now() < until {
            let started = Instant::now();
            let r = client().get(o.url("/readyz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let (status, _, _) = o.push(&two_tenants()).await;
            assert_eq!(status, 204);
            worst = worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst
    };
    let ((status, _, text), worst) = tokio::join!(big_push, probes);
    assert_eq!(status, 204, "{text}");
    assert!(
        worst < alone / 4 && worst < Duration::from_millis(500),
        "a probe waited {worst:?} while a {alone:?} split ran"
    );
}

#[tokio::test]
async fn silent_connections_give_way_at_the_connection_limit() {
    let (_d, _upstream, o) = setup("limits: {max_connections: 20}\n").await;
    // More sockets than the limit, none of which ever sends a byte.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(o.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A sender that pushes still gets in, and keeps its connection.
    let client = client();
    for _ in 0..5 {
        assert_eq!(push_on(&client, &o).await, 204);
    }
    let page = o.metrics().await;
    assert_eq!(metric(&page, "orgsplit_connections_refused_total"), 0.0);
}

#[tokio::test]
async fn one_push_sends_at_most_256_tenant_pushes_at_once() {
    // Coalesced (the default) and each tenant request on its own.
    for coalesce in ["true", "false"] {
        at_most_256_at_once(coalesce).await;
    }
}

async fn at_most_256_at_once(coalesce: &str) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let cfg = format!(
        "listen: 127.0.0.1:0\nupstream: {{url: \"{}\", timeout: 20s, coalesce: {{enabled: {coalesce}}}}}\n\
         routing: {{mode: label, tenant_label: tenant, unmapped: drop}}\n",
        upstream.url()
    );
    let o = Orgsplit::start(dir.path(), &cfg).await;
    let tenants: Vec<String> = (0..400).map(|i| format!("t{i}")).collect();
    for t in &tenants {
        upstream.set(t, Behaviour::Delay(Duration::from_millis(300)));
    }
    let req = request(
        tenants
            .iter()
            .map(|t| series(&[("__name__", "up"), ("tenant", t)], 1.0, 1))
            .collect(),
    );
    let (status, _, body) = o.push(&req).await;
    assert_eq!(status, 204, "{body}");
    let peak = upstream.delayed_peak();
    assert!(
        (200..=256).contains(&peak),
        "coalesce {coalesce}: {peak} tenant pushes at once"
    );
    assert_eq!(upstream.series_by_tenant().len(), 400);
}

#[tokio::test]
async fn request_heads_are_bounded_in_size_and_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, _upstream, o) = setup("limits: {header_timeout: 1s}\n").await;
    // Headers that never finish: the connection is closed at header_timeout.
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    s.write_all(b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "connection still open: {closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A request head over 16 KiB is refused before it is buffered further.
    let mut s = tokio::net::TcpStream::connect(o.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(32 << 10)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "a 32 KiB head was served: {text}"
    );
    // and the server still works
    let (status, _, _) = o.push(&two_tenants()).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_are_refused_when_all_speak() {
    let (_d, _upstream, o) = setup("limits: {max_connections: 2}\n").await;
    // Two clients push and keep their connections open.
    let (a, b) = (client(), client());
    for c in [&a, &b] {
        assert_eq!(push_on(c, &o).await, 204);
    }
    // Neither is silent, so a third is closed as it is accepted.
    let third = client().get(o.url("/readyz")).send().await;
    assert!(third.is_err(), "{third:?}");
    // The two keep working; the refusal is counted.
    let page = a
        .get(o.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&page, "orgsplit_connections_refused_total") >= 1.0,
        "{page}"
    );
}

/// Pushes `two_tenants()` on `client`'s own connection; the status.
async fn push_on(client: &reqwest::Client, o: &Orgsplit) -> u16 {
    client
        .post(o.url("/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .body(orgsplit::testing::compress(&two_tenants()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
