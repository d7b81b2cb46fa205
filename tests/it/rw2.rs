//! Remote write 2.0 over real HTTP: content negotiation, the split, the
//! written-count headers, and `upstream.protocol` against upstreams that
//! speak 2.0, refuse it (415, as Mimir before 2.17 and Cortex do), or
//! ignore the Content-Type and read it as an empty 1.0 request (as
//! Prometheus 2 does).

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use orgsplit::formats::rw1::pb;
use orgsplit::formats::rw2::{pb as v2, CONTENT_TYPE};
use orgsplit::testing::rw2::{resolve, Builder, Resolved};
use prost::Message;

/// How the fake upstream treats remote write 2.0.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Speaks {
    /// Mimir 2.17+: takes 2.0 and answers with the written counts.
    V2,
    /// Mimir before 2.17, Cortex: 415 for 2.0.
    V1Strict,
    /// Prometheus 2.x: reads any body as 1.0 and answers 204 (a 2.0 body
    /// is an empty 1.0 request to it).
    V1Blind,
}

#[derive(Debug, Clone)]
enum Got {
    V1(pb::WriteRequest),
    V2(v2::Request),
}

#[derive(Clone)]
struct Fake {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<(String, Got)>>>,
    /// Tenant → samples-written count to claim instead of the real one.
    claim: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Tenant → status to answer.
    fail: Arc<Mutex<BTreeMap<String, u16>>>,
    /// Tenant → how long to take before answering.
    delay: Arc<Mutex<BTreeMap<String, std::time::Duration>>>,
}

impl Fake {
    async fn start(speaks: Speaks) -> Self {
        let fake = Fake {
            addr: "127.0.0.1:0".parse().unwrap(),
            got: Default::default(),
            claim: Default::default(),
            fail: Default::default(),
            delay: Default::default(),
        };
        let state = fake.clone();
        let app = axum::Router::new().route(
            "/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let tenant = headers["x-scope-orgid"].to_str().unwrap();
                    let delay = state.delay.lock().unwrap().get(tenant).copied();
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    state.receive(speaks, headers, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { addr, ..fake }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    fn receive(&self, speaks: Speaks, headers: HeaderMap, body: Bytes) -> Response {
        let tenant = headers["x-scope-orgid"].to_str().unwrap().to_string();
        let is_v2 = headers["content-type"] == CONTENT_TYPE;
        assert_eq!(
            headers["x-prometheus-remote-write-version"],
            if is_v2 { "2.0.0" } else { "0.1.0" }
        );
        if let Some(&status) = self.fail.lock().unwrap().get(&tenant) {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        if is_v2 && speaks == Speaks::V1Strict {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "2.0 not supported").into_response();
        }
        if is_v2 && speaks == Speaks::V2 {
            let request = v2::Request::decode(raw.as_slice()).unwrap();
            let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
            let histograms: usize = request.timeseries.iter().map(|t| t.histograms.len()).sum();
            let exemplars: usize = request.timeseries.iter().map(|t| t.exemplars.len()).sum();
            let samples = self
                .claim
                .lock()
                .unwrap()
                .get(&tenant)
                .copied()
                .unwrap_or(samples as u64);
            self.got.lock().unwrap().push((tenant, Got::V2(request)));
            return (
                StatusCode::NO_CONTENT,
                [
                    (
                        "x-prometheus-remote-write-samples-written",
                        samples.to_string(),
                    ),
                    (
                        "x-prometheus-remote-write-histograms-written",
                        histograms.to_string(),
                    ),
                    (
                        "x-prometheus-remote-write-exemplars-written",
                        exemplars.to_string(),
                    ),
                ],
            )
                .into_response();
        }
        let request = pb::WriteRequest::decode(raw.as_slice()).unwrap();
        self.got.lock().unwrap().push((tenant, Got::V1(request)));
        StatusCode::NO_CONTENT.into_response()
    }

    fn got(&self) -> Vec<(String, Got)> {
        self.got.lock().unwrap().clone()
    }

    /// Tenant → resolved 2.0 series received.
    fn v2_by_tenant(&self) -> BTreeMap<String, Vec<Resolved>> {
        let mut out: BTreeMap<String, Vec<Resolved>> = BTreeMap::new();
        for (tenant, got) in self.got() {
            if let Got::V2(r) = got {
                out.entry(tenant).or_default().extend(resolve(&r).unwrap());
            }
        }
        out
    }
}

/// orgsplit in namespace mode (unmapped: drop) in front of a fake that
/// speaks `speaks`; `upstream` is added to the upstream section, `extra` to
/// the end.
async fn start_with(
    speaks: Speaks,
    upstream: &str,
    extra: &str,
) -> (tempfile::TempDir, Fake, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let fake = Fake::start(speaks).await;
    let cfg = format!(
        "{}{extra}",
        config(dir.path(), &fake.url(), "  unmapped: drop")
            .replace("  timeout: 2s\n", &format!("  timeout: 2s\n{upstream}"))
    );
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    (dir, fake, orgsplit)
}

async fn start(speaks: Speaks, extra: &str) -> (tempfile::TempDir, Fake, Orgsplit) {
    start_with(speaks, "", extra).await
}

/// Three tenants' series sharing symbols, one unmapped, with a histogram,
/// an exemplar and metadata: 4 samples, 1 histogram, 1 exemplar in all, of
/// which the unmapped series holds 1 sample.
fn request() -> v2::Request {
    let mut b = Builder::default();
    let help = b.sym("Requests served.");
    b.series(
        &[("__name__", "up"), ("job", "a"), ("namespace", "shop-prod")],
        1.0,
        10,
    );
    b.series(
        &[("__name__", "up"), ("job", "a"), ("namespace", "billing")],
        2.0,
        10,
    );
    let s = b.series(
        &[("__name__", "reqs_total"), ("namespace", "shop-dev")],
        3.0,
        10,
    );
    s.metadata = Some(v2::Metadata {
        r#type: 1,
        help_ref: help,
        unit_ref: 0,
    });
    s.created_timestamp = 5;
    let trace = b.refs(&[("trace_id", "f00d")]);
    b.request.timeseries[2].exemplars.push(v2::Exemplar {
        labels_refs: trace,
        value: 3.0,
        timestamp: 9,
    });
    let h = b.series(&[("__name__", "lat"), ("namespace", "billing")], 0.0, 0);
    h.samples.clear();
    h.histograms.push(v2::Histogram {
        count: Some(v2::histogram::Count::CountInt(2)),
        sum: 0.5,
        schema: 1,
        timestamp: 10,
        ..Default::default()
    });
    b.series(&[("__name__", "up"), ("namespace", "kube-system")], 4.0, 10);
    b.request
}

async fn push_v2(orgsplit: &Orgsplit, body: Vec<u8>) -> (u16, HeaderMap, String) {
    let r = client()
        .post(orgsplit.url("/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", CONTENT_TYPE)
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn written(headers: &HeaderMap) -> [u64; 3] {
    ["samples", "histograms", "exemplars"].map(|k| {
        headers[format!("x-prometheus-remote-write-{k}-written").as_str()]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    })
}

fn names(series: &[Resolved]) -> Vec<&str> {
    series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .find(|l| l.0 == "__name__")
                .unwrap()
                .1
                .as_str()
        })
        .collect()
}

#[tokio::test]
async fn a_2_0_push_is_split_and_answered_with_what_was_written() {
    let (_dir, fake, orgsplit) = start(Speaks::V2, "").await;
    let request = request();
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request)).await;
    assert_eq!(status, 204, "{body}");
    // Everything but the unmapped series' sample (dropped by policy).
    assert_eq!(written(&headers), [3, 1, 1]);

    let got = fake.v2_by_tenant();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(names(&got["acme"]), ["up", "reqs_total"]);
    assert_eq!(names(&got["globex"]), ["up", "lat"]);
    // Exactly the input's series, refs resolved to the same strings.
    let input = resolve(&request).unwrap();
    assert_eq!(got["acme"], [input[0].clone(), input[2].clone()]);
    assert_eq!(got["globex"], [input[1].clone(), input[3].clone()]);
    for (tenant, g) in fake.got() {
        let Got::V2(r) = g else {
            panic!("1.0 push to a 2.0 upstream")
        };
        assert_eq!(r.symbols[0], "");
        let text = r.symbols.join(" ");
        assert!(!text.contains("kube-system"), "{tenant}: {text}");
        if tenant == "globex" {
            assert!(!text.contains("shop") && !text.contains("f00d"), "{text}");
        }
    }

    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 4.0);
    assert_eq!(metric(&page, "orgsplit_series_dropped_total"), 1.0);
}

#[tokio::test]
async fn the_upstreams_own_written_counts_are_summed() {
    let (_dir, fake, orgsplit) = start(Speaks::V2, "").await;
    // globex's upstream says it wrote none of its 1 float sample.
    fake.claim.lock().unwrap().insert("globex".into(), 0);
    let (status, headers, _) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204);
    assert_eq!(written(&headers), [2, 1, 1]);
}

#[tokio::test]
async fn a_failed_tenant_push_is_retryable_and_not_counted_as_written() {
    let (_dir, fake, orgsplit) = start(Speaks::V2, "").await;
    fake.fail.lock().unwrap().insert("globex".into(), 503);
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("globex"), "{body}");
    // acme's two samples and its exemplar were written.
    assert_eq!(written(&headers), [2, 0, 1]);
}

#[tokio::test]
async fn content_type_negotiation() {
    let (_dir, fake, orgsplit) = start(Speaks::V2, "").await;
    let v1_body = orgsplit::testing::compress(&request_v1());
    let v2_body = orgsplit::testing::rw2::compress(&request());
    let send = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut r = client()
            .post(orgsplit.url("/api/v1/push"))
            .header("Content-Encoding", "snappy")
            .body(body);
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // 1.0: no header, the bare media type, or proto=prometheus.WriteRequest.
    for ct in [
        None,
        Some("application/x-protobuf"),
        Some("application/x-protobuf;proto=prometheus.WriteRequest"),
        Some("application/x-protobuf; proto=prometheus.WriteRequest"),
    ] {
        assert_eq!(send(ct, v1_body.clone()).await.0, 204, "{ct:?}");
    }
    assert_eq!(send(Some(CONTENT_TYPE), v2_body.clone()).await.0, 204);
    // Anything else: 415, so a sender can fall back; nothing forwarded.
    let before = fake.got().len();
    for ct in [
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/json",
        "text/plain",
    ] {
        let (status, text) = send(Some(ct), v2_body.clone()).await;
        assert_eq!(status, 415, "{ct}: {text}");
        assert!(text.contains("io.prometheus.write.v2.Request"), "{text}");
    }
    // A body of one version labelled as the other: 400 saying so.
    let (status, text) = send(Some(CONTENT_TYPE), v1_body).await;
    assert_eq!(status, 400);
    assert!(text.contains("remote write 1.0 body"), "{text}");
    let (status, text) = send(Some("application/x-protobuf"), v2_body).await;
    assert_eq!(status, 400);
    assert!(text.contains("remote write 2.0 body"), "{text}");
    assert_eq!(fake.got().len(), before);
}

fn request_v1() -> pb::WriteRequest {
    common::request(vec![
        series(&[("__name__", "a"), ("namespace", "shop-prod")], 1.0, 1),
        series(&[("__name__", "b"), ("namespace", "billing")], 2.0, 2),
    ])
}

#[tokio::test]
async fn malformed_2_0_is_400_naming_the_problem_with_nothing_written() {
    let (_dir, fake, orgsplit) = start(Speaks::V2, "").await;
    let mut bad = request();
    bad.timeseries[1].labels_refs[5] = 1000;
    let (status, headers, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&bad)).await;
    assert_eq!(status, 400);
    assert!(body.contains("symbol 1000"), "{body}");
    assert_eq!(written(&headers), [0, 0, 0]);
    let mut bad = request();
    bad.symbols[0] = "up".into();
    let (status, _, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&bad)).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("does not start with the empty string"),
        "{body}"
    );
    assert!(fake.got().is_empty());
}

#[tokio::test]
async fn symbol_limits_answer_413_and_400() {
    let (_dir, fake, orgsplit) = start(
        Speaks::V2,
        "limits:\n  max_symbols_per_request: 15\n  max_symbol_bytes: 16\n",
    )
    .await;
    // request() has 15 symbols, the longest 16 bytes: at both limits.
    let at_limit = request();
    assert_eq!(at_limit.symbols.len(), 15);
    assert_eq!(at_limit.symbols.iter().map(String::len).max(), Some(16));
    let (status, _, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&at_limit)).await;
    assert_eq!(status, 204, "{body}");
    let mut over = request();
    over.symbols.push("a".into());
    let (status, _, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&over)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_symbols_per_request"), "{body}");
    let mut long = request();
    long.symbols[14] = "x".repeat(17);
    let (status, _, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&long)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_symbol_bytes"), "{body}");
    assert_eq!(fake.got().len(), 2);
}

/// The 1.0 series a 2.0 request's series become, by tenant.
fn v1_by_tenant(fake: &Fake) -> BTreeMap<String, pb::WriteRequest> {
    let mut out: BTreeMap<String, pb::WriteRequest> = BTreeMap::new();
    for (tenant, got) in fake.got() {
        if let Got::V1(r) = got {
            let e = out.entry(tenant).or_default();
            e.timeseries.extend(r.timeseries);
            e.metadata.extend(r.metadata);
        }
    }
    out
}

async fn falls_back_to_1_0(speaks: Speaks) {
    let (_dir, fake, orgsplit) = start(speaks, "").await;
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(written(&headers), [3, 1, 1]);
    let got = v1_by_tenant(&fake);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    let acme = &got["acme"];
    assert_eq!(acme.timeseries.len(), 2);
    assert_eq!(
        label_of(&acme.timeseries[1], "__name__"),
        Some("reqs_total")
    );
    assert_eq!(acme.timeseries[1].exemplars[0].labels[0].value, "f00d");
    assert_eq!(acme.metadata[0].metric_family_name, "reqs_total");
    assert_eq!(acme.metadata[0].help, "Requests served.");
    assert_eq!(got["globex"].timeseries[1].histograms[0].sum, 0.5);
    let page = orgsplit.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_upstream_downgraded_requests_total"),
        2.0
    );
    // reqs_total's created timestamp has no place in 1.0.
    assert_eq!(
        metric(
            &page,
            "orgsplit_downgrade_lost_total{field=\"start_timestamp\"}"
        ),
        1.0
    );

    // Remembered: the next push goes as 1.0 straight away.
    let tried = fake.got().len();
    let (status, _, _) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204);
    let next = &fake.got()[tried..];
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|(_, g)| matches!(g, Got::V1(_))));
}

#[tokio::test]
async fn auto_falls_back_to_1_0_when_the_upstream_answers_415() {
    falls_back_to_1_0(Speaks::V1Strict).await;
}

#[tokio::test]
async fn auto_falls_back_to_1_0_when_the_upstream_says_nothing_of_what_it_wrote() {
    // A Prometheus 2 receiver answers 204 to a 2.0 body it read as empty.
    falls_back_to_1_0(Speaks::V1Blind).await;
}

#[tokio::test]
async fn protocol_v1_converts_and_v2_passes_the_upstreams_refusal_back() {
    let (_dir, fake, orgsplit) = start_with(Speaks::V2, "  protocol: v1\n", "").await;
    let (status, _, _) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204);
    assert!(fake.got().iter().all(|(_, g)| matches!(g, Got::V1(_))));
    assert_eq!(fake.got().len(), 2);

    let (_dir, fake, orgsplit) = start_with(Speaks::V1Strict, "  protocol: v2\n", "").await;
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(written(&headers), [0, 0, 0]);
    assert!(fake.got().is_empty());
}

#[tokio::test]
async fn protocol_v2_never_reports_as_written_what_the_upstream_did_not_confirm() {
    // A 1.0-only receiver that reads a 2.0 body as an empty 1.0 request and
    // answers 204 without the written-count headers (Mimir before 2.17,
    // Prometheus 2.x): nothing was stored, so nothing may be reported.
    let (_dir, fake, orgsplit) = start_with(Speaks::V1Blind, "  protocol: v2\n", "").await;
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        written(&headers),
        [0, 0, 0],
        "the sender sees nothing written"
    );
    assert_eq!(fake.got().len(), 2, "both tenants' parts went as 2.0");
    let page = orgsplit.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_upstream_unconfirmed_requests_total"),
        2.0
    );

    // A 2.0 upstream that confirms: its counts, and nothing unconfirmed.
    let (_dir, _fake, orgsplit) = start_with(Speaks::V2, "  protocol: v2\n", "").await;
    let (status, headers, _) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 204);
    assert_eq!(written(&headers), [3, 1, 1]);
    let page = orgsplit.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_upstream_unconfirmed_requests_total"),
        0.0
    );
}

#[tokio::test]
async fn principal_mode_sends_a_2_0_push_whole() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let fake = Fake::start(Speaks::V2).await;
    let cfg = format!(
        "{}auth:\n  anonymous:\n    allowance: [acme]\n",
        config(
            dir.path(),
            &fake.url(),
            "  mode: principal\n  unmapped: drop"
        )
    );
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    let request = request();
    let (status, headers, body) =
        push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request)).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(written(&headers), [4, 1, 1]);
    let got = fake.got();
    assert_eq!(got.len(), 1);
    let (tenant, Got::V2(r)) = &got[0] else {
        panic!()
    };
    assert_eq!(tenant, "acme");
    assert_eq!(r, &request);
}

#[tokio::test]
async fn series_outside_the_senders_allowance_are_refused() {
    let (_dir, fake, orgsplit) =
        start(Speaks::V2, "auth:\n  anonymous:\n    allowance: [acme]\n").await;
    let (status, _, body) = push_v2(&orgsplit, orgsplit::testing::rw2::compress(&request())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("globex"), "{body}");
    assert!(fake.got().is_empty());
}

/// A 2.0 push of one series per (name, namespace), and one of a namespace
/// with no organization (dropped: so the push is split, never sent whole).
fn pushed(series: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Builder::default();
    for (i, (name, ns)) in series.iter().enumerate() {
        b.series(
            &[("__name__", name), ("namespace", ns), ("pod", "p-1")],
            i as f64,
            10,
        );
    }
    b.series(&[("__name__", "lost"), ("namespace", "nowhere")], 0.0, 10);
    orgsplit::testing::rw2::compress(&b.request)
}

/// While acme's first request is out, three pushes bring acme series (one
/// also globex's): acme's three batches go up as ONE 2.0 request with one
/// symbol table, and each sender hears what its own batches wrote.
async fn busy_tenant_merges(protocol: &str) -> (Fake, Vec<(u16, HeaderMap, String)>) {
    let (_dir, fake, o) = start_with(
        Speaks::V2,
        &format!("  protocol: {protocol}\n  coalesce: {{window: 3s}}\n"),
        "",
    )
    .await;
    fake.delay
        .lock()
        .unwrap()
        .insert("acme".into(), std::time::Duration::from_millis(400));
    let o = Arc::new(o);
    let first = tokio::spawn({
        let o = o.clone();
        async move { push_v2(&o, pushed(&[("first", "shop-prod")])).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (a, b, c) = tokio::join!(
        push_v2(&o, pushed(&[("second", "shop-prod"), ("g", "billing")])),
        push_v2(
            &o,
            pushed(&[("third", "shop-dev"), ("third_b", "shop-dev")])
        ),
        push_v2(&o, pushed(&[("fourth", "shop-prod")])),
    );
    let mut answers = vec![first.await.unwrap()];
    answers.extend([a, b, c]);
    let page = o.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_upstream_coalesced_batches_total"),
        3.0
    );
    (fake, answers)
}

#[tokio::test]
async fn concurrent_2_0_pushes_for_a_busy_tenant_travel_in_one_request() {
    let (fake, answers) = busy_tenant_merges("v2").await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 204, "{body}");
    }
    let written: Vec<[u64; 3]> = answers.iter().map(|a| written(&a.1)).collect();
    assert_eq!(written, [[1, 0, 0], [2, 0, 0], [2, 0, 0], [1, 0, 0]]);
    let acme: Vec<v2::Request> = fake
        .got()
        .into_iter()
        .filter(|(t, _)| t == "acme")
        .map(|(_, g)| match g {
            Got::V2(r) => r,
            Got::V1(_) => panic!("sent as 1.0"),
        })
        .collect();
    assert_eq!(
        acme.len(),
        2,
        "one request for the first push, one for the rest"
    );
    let mut merged = names(&resolve(&acme[1]).unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    merged.sort();
    assert_eq!(merged, ["fourth", "second", "third", "third_b"]);
    // One table: strings the batches share are in it once.
    let symbols = &acme[1].symbols;
    assert_eq!(symbols[0], "");
    assert_eq!(symbols.iter().filter(|s| *s == "pod").count(), 1);
    assert_eq!(symbols.iter().filter(|s| *s == "p-1").count(), 1);
    assert!(!symbols.iter().any(|s| s == "g" || s == "billing"));
    assert_eq!(names(&fake.v2_by_tenant()["globex"]), ["g"]);
}

#[tokio::test]
async fn a_merged_2_0_request_is_converted_once_for_a_1_0_upstream() {
    let (fake, answers) = busy_tenant_merges("v1").await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 204, "{body}");
    }
    let acme: Vec<pb::WriteRequest> = fake
        .got()
        .into_iter()
        .filter(|(t, _)| t == "acme")
        .map(|(_, g)| match g {
            Got::V1(r) => r,
            Got::V2(_) => panic!("sent as 2.0 to a 1.0 upstream"),
        })
        .collect();
    assert_eq!(acme.len(), 2);
    let mut merged: Vec<String> = acme[1]
        .timeseries
        .iter()
        .map(|s| label_of(s, "__name__").unwrap().to_string())
        .collect();
    merged.sort();
    assert_eq!(merged, ["fourth", "second", "third", "third_b"]);
}
