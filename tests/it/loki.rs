//! Loki pushes over real HTTP: protobuf (snappy) and JSON (plain, gzip,
//! deflate) split by namespace organization into a fake Loki that records
//! what each tenant received, byte for byte; the unmapped policies, the
//! answers Loki gives (204, 429, 5xx) passed on, and the limits.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use orgsplit::formats::loki::pb;
use prost::Message;

/// One push the fake Loki received.
#[derive(Debug, Clone)]
struct Got {
    tenant: String,
    content_type: String,
    encoding: String,
    /// The body, decompressed.
    body: Vec<u8>,
}

/// Tenant → (status, Retry-After) to answer instead of accepting.
type Failures = BTreeMap<String, (u16, Option<u64>)>;

#[derive(Clone)]
struct FakeLoki {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    /// How long to take over each answer.
    delay: Arc<Mutex<Duration>>,
    /// Tenant → (status, Retry-After) to answer.
    fail: Arc<Mutex<Failures>>,
}

impl FakeLoki {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Default::default();
        let fail: Arc<Mutex<Failures>> = Default::default();
        let delay: Arc<Mutex<Duration>> = Default::default();
        let (g, f, d) = (got.clone(), fail.clone(), delay.clone());
        let app = axum::Router::new().route(
            "/loki/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (got, fail, delay) = (g.clone(), f.clone(), *d.lock().unwrap());
                async move {
                    tokio::time::sleep(delay).await;
                    receive(&got, &fail, headers, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            got,
            fail,
            delay,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn fail(&self, tenant: &str, status: u16, retry_after: Option<u64>) {
        self.fail
            .lock()
            .unwrap()
            .insert(tenant.into(), (status, retry_after));
    }

    /// Proto pushes received, by tenant.
    fn proto(&self) -> BTreeMap<String, Vec<pb::StreamAdapter>> {
        let mut out: BTreeMap<String, Vec<pb::StreamAdapter>> = BTreeMap::new();
        for g in self.got() {
            assert_eq!(g.content_type, "application/x-protobuf");
            let req = pb::PushRequest::decode(g.body.as_slice()).unwrap();
            out.entry(g.tenant).or_default().extend(req.streams);
        }
        out
    }

    /// JSON pushes received, by tenant: each stream object's text.
    fn json(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in self.got() {
            assert_eq!(g.content_type, "application/json");
            #[derive(serde::Deserialize)]
            struct Push<'a> {
                #[serde(borrow)]
                streams: Vec<&'a serde_json::value::RawValue>,
            }
            let push: Push = serde_json::from_slice(&g.body).unwrap();
            out.entry(g.tenant)
                .or_default()
                .extend(push.streams.iter().map(|s| s.get().to_string()));
        }
        out
    }
}

fn receive(
    got: &Mutex<Vec<Got>>,
    fail: &Mutex<Failures>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = headers["x-scope-orgid"].to_str().unwrap().to_string();
    if let Some(&(status, retry)) = fail.lock().unwrap().get(&tenant) {
        let mut r = (StatusCode::from_u16(status).unwrap(), "loki says no").into_response();
        if let Some(s) = retry {
            r.headers_mut().insert("retry-after", s.into());
        }
        return r;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (content_type, encoding) = (header("content-type"), header("content-encoding"));
    let body = match (content_type.as_str(), encoding.as_str()) {
        ("application/x-protobuf", "") => snap::raw::Decoder::new().decompress_vec(&body).unwrap(),
        (_, "gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        (_, "deflate") => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        (_, "") => body.to_vec(),
        other => panic!("unexpected encoding {other:?}"),
    };
    got.lock().unwrap().push(Got {
        tenant,
        content_type,
        encoding,
        body,
    });
    StatusCode::NO_CONTENT.into_response()
}

fn loki_config(dir: &std::path::Path, loki: &str, routing: &str, extra: &str) -> String {
    format!(
        "{}loki:\n  upstream:\n    url: {loki}\n    timeout: 2s\n{extra}",
        config(dir, "http://127.0.0.1:9/api/v1/push", routing)
    )
}

async fn start(routing: &str, extra: &str) -> (tempfile::TempDir, FakeLoki, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let loki = FakeLoki::start().await;
    let cfg = loki_config(dir.path(), &loki.url(), routing, extra);
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    (dir, loki, orgsplit)
}

fn entry(ns: i64, line: &[u8], metadata: &[(&str, &str)]) -> pb::EntryAdapter {
    let metadata: Vec<(&[u8], &[u8])> = metadata
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    entry_bytes(ns, line, &metadata)
}

fn entry_bytes(ns: i64, line: &[u8], metadata: &[(&[u8], &[u8])]) -> pb::EntryAdapter {
    pb::EntryAdapter {
        timestamp: Some(pb::Timestamp {
            seconds: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as i32,
        }),
        line: line.to_vec(),
        structured_metadata: metadata
            .iter()
            .map(|(n, v)| pb::LabelPairAdapter {
                name: n.to_vec(),
                value: v.to_vec(),
            })
            .collect(),
        parsed: vec![],
    }
}

fn stream(labels: &str, entries: Vec<pb::EntryAdapter>) -> pb::StreamAdapter {
    pb::StreamAdapter {
        labels: labels.into(),
        entries,
        hash: 0,
    }
}

async fn post(
    o: &Orgsplit,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, HeaderMap, String) {
    let mut r = client().post(o.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

async fn push_proto(o: &Orgsplit, req: &pb::PushRequest) -> (u16, HeaderMap, String) {
    let body = snappy(&req.encode_to_vec());
    post(
        o,
        "/loki/api/v1/push",
        &[("Content-Type", "application/x-protobuf")],
        body,
    )
    .await
}

/// `data` with the HTTP `Content-Encoding` `encoding` applied (none for "").
fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

async fn push_json(o: &Orgsplit, json: &str, encoding: &str) -> (u16, HeaderMap, String) {
    let body = encode(encoding, json.as_bytes());
    let mut headers = vec![("Content-Type", "application/json")];
    if !encoding.is_empty() {
        headers.push(("Content-Encoding", encoding));
    }
    post(o, "/loki/api/v1/push", &headers, body).await
}

#[tokio::test]
async fn protobuf_streams_reach_their_tenants_byte_for_byte() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let shop = stream(
        r#"{app="cart", namespace="shop-prod"}"#,
        vec![
            entry(
                1_700_000_000_123_456_789,
                b"GET /cart 200",
                &[("trace_id", "abc")],
            ),
            // Not UTF-8, in the line and in structured metadata: Loki's
            // decoder does not check, neither does orgsplit.
            entry_bytes(
                1_700_000_000_200_000_000,
                b"\xff\xfe raw",
                &[(b"t\xe3ace_id", b"\xff")],
            ),
        ],
    );
    let billing = stream(
        "{namespace=\"billing\", job=\"invoices\"}",
        vec![entry(1_700_000_001_000_000_000, b"invoice 7 sent", &[])],
    );
    let dev = stream(
        // Escapes and odd spacing, read as Loki reads them: shop-dev.
        "{ namespace = \"shop\\x2ddev\" ,app='x', }",
        vec![entry(1_700_000_002_000_000_000, b"dev line", &[])],
    );
    let lost = stream(
        r#"{namespace="nobody-owns-this"}"#,
        vec![entry(1_700_000_003_000_000_000, b"unmapped", &[])],
    );
    let req = pb::PushRequest {
        streams: vec![shop.clone(), billing.clone(), lost, dev.clone()],
        format: String::new(),
    };
    let (status, _, body) = push_proto(&o, &req).await;
    assert_eq!(status, 204, "{body}");
    let got = loki.proto();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(got["acme"], vec![shop, dev]);
    assert_eq!(got["globex"], vec![billing]);

    let page = o.metrics().await;
    assert_eq!(
        metric(&page, r#"orgsplit_received_series_total{signal="logs""#),
        4.0
    );
    assert_eq!(
        metric(&page, r#"orgsplit_received_samples_total{signal="logs""#),
        5.0
    );
    assert_eq!(
        metric(&page, r#"orgsplit_forwarded_samples_total{signal="logs""#),
        4.0
    );
    assert_eq!(
        metric(
            &page,
            r#"orgsplit_series_dropped_total{signal="logs",reason="no_organization""#
        ),
        1.0
    );
    assert_eq!(
        metric(&page, r#"orgsplit_requests_total{signal="logs",code="204""#),
        1.0
    );
    // Nothing counted as remote write.
    assert_eq!(metric(&page, "orgsplit_received_series_total"), 0.0);
}

#[tokio::test]
async fn json_streams_reach_their_tenants_in_the_encoding_they_came_in() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let shop = r#"{"stream":{"namespace":"shop-prod","app":"cart"},"values":[["1700000000123456789","{\"msg\":\"hi \\u00e9\"}"],["1700000000200000000","two",{"trace_id":"abc"}]]}"#;
    let billing = r#"{ "stream" : { "namespace" : "bill\u0069ng" } , "values" : [ [ "1700000001000000000" , "invoice" ] ] }"#;
    let json = format!(
        r#"{{"streams":[{shop},{billing},{{"stream":{{"app":"no-namespace"}},"values":[["1","x"]]}}]}}"#
    );
    for encoding in ["", "gzip", "deflate"] {
        loki.got.lock().unwrap().clear();
        let (status, _, body) = push_json(&o, &json, encoding).await;
        assert_eq!(status, 204, "{encoding}: {body}");
        for g in loki.got() {
            assert_eq!(g.encoding, encoding, "sent on as it came");
        }
        let got = loki.json();
        assert_eq!(got["acme"], vec![shop.to_string()], "{encoding}");
        assert_eq!(got["globex"], vec![billing.to_string()], "{encoding}");
        assert_eq!(got.len(), 2);
    }
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            r#"orgsplit_series_dropped_total{signal="logs",reason="no_label""#
        ),
        3.0
    );
}

/// A stream's unknown keys travel to Loki with it, so they are held to
/// strict JSON like the rest: valid ones are forwarded byte for byte, a
/// lone UTF-16 surrogate escape (which a lax skip would let through to
/// Loki) refuses the push with nothing sent. Found by the split_loki fuzz
/// target.
#[tokio::test]
async fn unknown_stream_keys_are_forwarded_only_when_they_are_strict_json() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let stream = r#"{"stream":{"namespace":"billing"},"extra":{"a":[1,2.5,true,null,"\u00e9"]},"values":[["1","x"]]}"#;
    let (status, _, body) = push_json(&o, &format!(r#"{{"streams":[{stream}]}}"#), "").await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(loki.json()["globex"], vec![stream.to_string()]);
    loki.got.lock().unwrap().clear();

    for bad in [r#""\udddd""#, r#"["\ud800x"]"#, r#"{"\udc00":1}"#] {
        let json = format!(
            r#"{{"streams":[{{"stream":{{"namespace":"billing"}},"extra":{bad},"values":[["1","x"]]}}]}}"#
        );
        let (status, _, body) = push_json(&o, &json, "").await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert!(loki.got().is_empty(), "nothing was sent");
}

/// Loki undoes a gzip or deflate `Content-Encoding` before reading its
/// snappy protobuf, so orgsplit does too: the streams reach their tenants
/// as plain snappy protobuf. A layer that inflates past max_body_bytes is
/// 413, one that is not gzip is 400, and neither sends anything.
#[tokio::test]
async fn protobuf_inside_gzip_or_deflate_is_read_as_loki_reads_it() {
    let (_dir, loki, o) = start("  unmapped: drop", "limits: {max_body_bytes: 4096}\n").await;
    let shop = stream(
        r#"{namespace="shop-prod"}"#,
        vec![entry(1_700_000_000_000_000_001, b"in gzip", &[])],
    );
    let billing = stream(
        r#"{namespace="billing"}"#,
        vec![entry(1_700_000_000_000_000_002, b"in gzip too", &[])],
    );
    let req = pb::PushRequest {
        streams: vec![shop.clone(), billing.clone()],
        format: String::new(),
    };
    let inner = snappy(&req.encode_to_vec());
    let gzip = |data: &[u8]| encode("gzip", data);
    // Two gzip members, as Go's reader (and so Loki) reads them: one body.
    let half = inner.len() / 2;
    let two_members = [gzip(&inner[..half]), gzip(&inner[half..])].concat();
    for (encoding, body) in [
        ("gzip", gzip(&inner)),
        ("deflate", encode("deflate", &inner)),
        ("gzip", two_members),
    ] {
        loki.got.lock().unwrap().clear();
        let (status, _, text) = post(
            &o,
            "/loki/api/v1/push",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", encoding),
            ],
            body,
        )
        .await;
        assert_eq!(status, 204, "{encoding}: {text}");
        for g in loki.got() {
            assert_eq!(g.encoding, "", "sent on as plain snappy protobuf");
        }
        let got = loki.proto();
        assert_eq!(got["acme"], vec![shop.clone()], "{encoding}");
        assert_eq!(got["globex"], vec![billing.clone()], "{encoding}");
    }
    loki.got.lock().unwrap().clear();

    // The inflated body exactly at max_body_bytes is taken; one byte over
    // is 413 (below).
    let mut seed = 7u64;
    let mut noise = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u8
    };
    // Hex digits: snappy finds few repeats in them, gzip halves them, so
    // the gzip body stays within the limit while what it holds reaches it.
    let random: Vec<u8> = (0..4096)
        .map(|_| b"0123456789abcdef"[usize::from(noise() % 16)])
        .collect();
    let exact = (3000..4096)
        .map(|n| {
            snappy(
                &pb::PushRequest {
                    streams: vec![stream(
                        r#"{namespace="billing"}"#,
                        vec![entry(1, &random[..n], &[])],
                    )],
                    format: String::new(),
                }
                .encode_to_vec(),
            )
        })
        .find(|body| body.len() == 4096)
        .expect("some line length makes the body exactly 4096 bytes");
    let (status, _, text) = post(
        &o,
        "/loki/api/v1/push",
        &[("Content-Encoding", "gzip")],
        gzip(&exact),
    )
    .await;
    assert_eq!(status, 204, "exactly at the limit: {text}");
    assert_eq!(loki.proto()["globex"].len(), 1);
    loki.got.lock().unwrap().clear();

    let bomb = gzip(&vec![0u8; 4097]);
    let (status, _, text) = post(
        &o,
        "/loki/api/v1/push",
        &[("Content-Encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(status, 413, "{text}");
    let (status, _, text) = post(
        &o,
        "/loki/api/v1/push",
        &[("Content-Encoding", "gzip")],
        inner.clone(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("not valid gzip"), "{text}");
    assert!(loki.got().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn the_legacy_path_takes_loki_pushes_and_remote_write_alike() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let req = pb::PushRequest {
        streams: vec![stream(
            r#"{namespace="billing"}"#,
            vec![entry(1_700_000_000_000_000_000, b"legacy", &[])],
        )],
        format: String::new(),
    };
    let (status, _, body) = post(
        &o,
        "/api/prom/push",
        &[("Content-Type", "application/x-protobuf")],
        snappy(&req.encode_to_vec()),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(loki.proto()["globex"].len(), 1);

    // The old JSON form is refused with a clear message, nothing sent.
    let legacy = r#"{"streams":[{"labels":"{namespace=\"billing\"}","entries":[{"ts":"2024-01-01T00:00:00Z","line":"x"}]}]}"#;
    let (status, _, body) = post(
        &o,
        "/api/prom/push",
        &[("Content-Type", "application/json")],
        legacy.into(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("legacy JSON push"), "{body}");
    assert_eq!(loki.got().len(), 1);
}

#[tokio::test]
async fn ambiguous_streams_are_refused_whole() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    // Each would let orgsplit and Loki read different namespaces.
    for (what, json) in [
        (
            "two stream maps in different case",
            r#"{"streams":[{"stream":{"namespace":"billing"},"Stream":{"namespace":"shop-prod"},"values":[["1","x"]]}]}"#,
        ),
        (
            "namespace twice",
            r#"{"streams":[{"stream":{"namespace":"billing","namespace":"shop-prod"},"values":[["1","x"]]}]}"#,
        ),
        (
            "streams twice",
            r#"{"streams":[],"STREAMS":[{"stream":{"namespace":"billing"},"values":[["1","x"]]}]}"#,
        ),
        (
            "not JSON",
            r#"{"streams":[{"stream":{"namespace":"billing"}"#,
        ),
        (
            "timestamp not an integer",
            r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["soon","x"]]}]}"#,
        ),
    ] {
        let (status, _, body) = push_json(&o, json, "").await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    for labels in [
        r#"{namespace="billing", namespace="shop-prod"}"#,
        r#"{namespace="billing", namespace=""}"#,
        r#"{namespace=~"billing"}"#,
        r#"{namespace="billing""#,
        "{}",
    ] {
        let req = pb::PushRequest {
            streams: vec![stream(labels, vec![entry(1, b"x", &[])])],
            format: String::new(),
        };
        let (status, _, body) = push_proto(&o, &req).await;
        assert_eq!(status, 400, "{labels}: {body}");
    }
    assert!(loki.got().is_empty(), "nothing forwarded");
}

#[tokio::test]
async fn reject_policy_refuses_the_push_and_sends_nothing() {
    let (_dir, loki, o) = start("  unmapped: reject", "").await;
    let req = pb::PushRequest {
        streams: vec![
            stream(r#"{namespace="billing"}"#, vec![entry(1, b"ok", &[])]),
            stream(r#"{app="orphan"}"#, vec![entry(1, b"no ns", &[])]),
        ],
        format: String::new(),
    };
    let (status, _, body) = push_proto(&o, &req).await;
    assert_eq!(status, 400);
    assert!(body.contains(r#"{app="orphan"}"#), "{body}");
    assert!(loki.got().is_empty());
}

#[tokio::test]
async fn lokis_answers_are_passed_on_under_the_retry_contract() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let req = pb::PushRequest {
        streams: vec![
            stream(r#"{namespace="billing"}"#, vec![entry(1, b"a", &[])]),
            stream(r#"{namespace="shop-prod"}"#, vec![entry(1, b"b", &[])]),
        ],
        format: String::new(),
    };
    // A tenant over its ingestion rate: 429 with Loki's Retry-After.
    loki.fail("globex", 429, Some(7));
    let (status, headers, _) = push_proto(&o, &req).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    // A failing Loki: retryable.
    loki.fail("globex", 500, None);
    let (status, _, _) = push_proto(&o, &req).await;
    assert!(status >= 500, "{status}");
    // Loki refusing a stream (400): the sender hears it, naming the tenant.
    loki.fail("globex", 400, None);
    let (status, _, body) = push_proto(&o, &req).await;
    assert_eq!(status, 400);
    assert!(body.contains("globex"), "{body}");
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            r#"orgsplit_upstream_requests_total{signal="logs",status="429""#
        ),
        1.0
    );
}

#[tokio::test]
async fn limits_are_checked_before_anything_is_sent() {
    let extra = "limits:\n  max_line_bytes: 10\n  max_entries_per_request: 3\n  max_streams_per_request: 2\n  max_label_string_bytes: 40\n";
    let (_dir, loki, o) = start("  unmapped: drop", extra).await;
    let one = |labels: &str, lines: &[&[u8]]| {
        stream(labels, lines.iter().map(|l| entry(1, l, &[])).collect())
    };
    let cases = [
        (
            vec![one(r#"{namespace="billing"}"#, &[b"eleven bytes"])],
            400,
            "max_line_bytes",
        ),
        (
            vec![one(r#"{namespace="billing"}"#, &[b"1", b"2", b"3", b"4"])],
            413,
            "max_entries_per_request",
        ),
        (
            vec![
                one(r#"{namespace="billing"}"#, &[b"1"]),
                one(r#"{namespace="billing"}"#, &[b"1"]),
                one(r#"{namespace="billing"}"#, &[b"1"]),
            ],
            413,
            "max_streams_per_request",
        ),
        (
            vec![one(
                r#"{namespace="billing", app="a-rather-long-application-name"}"#,
                &[b"1"],
            )],
            400,
            "max_label_string_bytes",
        ),
    ];
    for (streams, want, key) in cases {
        let req = pb::PushRequest {
            streams,
            format: String::new(),
        };
        let (status, _, body) = push_proto(&o, &req).await;
        assert_eq!(status, want, "{key}: {body}");
        assert!(body.contains(key), "{key}: {body}");
    }
    assert!(loki.got().is_empty());
    // Exactly at every limit at once: accepted and delivered. The label
    // string is 40 bytes, a line 10, 3 entries over 2 streams.
    let at_limit = r#"{namespace="billing", app="abcdefghijk"}"#;
    assert_eq!(at_limit.len(), 40);
    let req = pb::PushRequest {
        streams: vec![
            one(at_limit, &[b"ten bytes!", b"2"]),
            one(r#"{namespace="billing"}"#, &[b"3"]),
        ],
        format: String::new(),
    };
    let (status, _, body) = push_proto(&o, &req).await;
    assert_eq!(status, 204, "at the limits: {body}");
    assert_eq!(loki.proto()["globex"], req.streams);
    let (status, _, body) = push_json(
        &o,
        r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","ten bytes!"],["2","b"],["3","c"]]}]}"#,
        "",
    )
    .await;
    assert_eq!(status, 204, "JSON at the limits: {body}");
    let delivered = loki.got().len();
    assert_eq!(delivered, 2);
    // The same limits in JSON.
    let (status, _, body) = push_json(
        &o,
        r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","eleven bytes"]]}]}"#,
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = push_json(
        &o,
        r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","a"],["1","b"],["1","c"],["1","d"]]}]}"#,
        "",
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(loki.got().len(), delivered, "nothing more was sent");
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            r#"orgsplit_requests_rejected_total{signal="logs",reason="too_many_entries""#
        ),
        2.0
    );
}

#[tokio::test]
async fn bad_encodings_get_clear_answers() {
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let json = r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","x"]]}]}"#;
    // A gzip body whose trailer understates its size.
    let mut gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(json.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let n = gz.len();
    gz[n - 4..].copy_from_slice(&5u32.to_le_bytes());
    let (status, _, body) = post(
        &o,
        "/loki/api/v1/push",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        gz,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = post(
        &o,
        "/loki/api/v1/push",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "br"),
        ],
        json.into(),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _, body) = post(
        &o,
        "/loki/api/v1/push",
        &[("Content-Type", "application/x-protobuf")],
        b"not snappy at all".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(loki.got().is_empty());
}

/// A JSON push of one billing stream, padded with whitespace to exactly
/// `size` bytes (still valid JSON: Loki's decoder and orgsplit's skip it).
fn padded_json(size: usize) -> String {
    let head = r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","x"]]}"#;
    let tail = "]}";
    format!("{head}{}{tail}", " ".repeat(size - head.len() - tail.len()))
}

#[tokio::test]
async fn compressed_json_is_held_to_max_decoded_bytes_at_the_byte() {
    let limit = 65_536;
    let (_dir, loki, o) = start(
        "  unmapped: drop",
        &format!("limits:\n  max_decoded_bytes: {limit}\n"),
    )
    .await;
    for encoding in ["gzip", "deflate"] {
        // Exactly at the limit: accepted and delivered.
        let (status, _, body) = push_json(&o, &padded_json(limit), encoding).await;
        assert_eq!(status, 204, "{encoding} at the limit: {body}");
        // One byte over: refused, whether the gzip trailer says so up front
        // or deflate only shows it while inflating.
        let (status, _, body) = push_json(&o, &padded_json(limit + 1), encoding).await;
        assert_eq!(status, 413, "{encoding} over the limit: {body}");
        assert!(body.contains("max_decoded_bytes"), "{encoding}: {body}");
    }
    let got = loki.got();
    assert_eq!(got.len(), 2);
    for g in &got {
        assert_eq!(g.tenant, "globex");
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(v["streams"][0]["values"][0][1], "x");
    }
}

#[tokio::test]
async fn deflate_at_its_densest_is_admitted() {
    // Deflate expands at most 1032 times, so orgsplit admits a deflate body
    // at that ratio (it has no size field to read). A body compressed as
    // densely as deflate allows must still be accepted whole.
    let (_dir, loki, o) = start("  unmapped: drop", "").await;
    let json = padded_json(4 << 20);
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(json.as_bytes()).unwrap();
    let dense = e.finish().unwrap();
    assert!(
        json.len() / dense.len() > 1000,
        "the body is near deflate's densest ({}:1)",
        json.len() / dense.len()
    );
    let (status, _, body) = post(
        &o,
        "/loki/api/v1/push",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "deflate"),
        ],
        dense,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let got = loki.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tenant, "globex");
    // The stream is forwarded as it came; the padding between streams is not.
    assert_eq!(
        String::from_utf8_lossy(&got[0].body),
        r#"{"streams":[{"stream":{"namespace":"billing"},"values":[["1","x"]]}]}"#
    );
}

#[tokio::test]
async fn label_mode_can_remove_the_tenant_label_from_streams() {
    let routing =
        "  mode: label\n  tenant_label: tenant\n  remove_tenant_label: true\n  unmapped: drop";
    let (_dir, loki, o) = start(routing, "").await;
    let req = pb::PushRequest {
        streams: vec![stream(
            r#"{app="a", tenant="team-1", env="prod"}"#,
            vec![entry(5, b"line", &[("k", "v")])],
        )],
        format: String::new(),
    };
    let (status, _, body) = push_proto(&o, &req).await;
    assert_eq!(status, 204, "{body}");
    let got = loki.proto();
    assert_eq!(got["team-1"][0].labels, r#"{app="a", env="prod"}"#);
    assert_eq!(got["team-1"][0].entries, req.streams[0].entries);

    loki.got.lock().unwrap().clear();
    let (status, _, body) = push_json(
        &o,
        r#"{"streams":[{"stream":{"tenant":"team-2","app":"b"},"values":[["5","line"]]}]}"#,
        "",
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let got = loki.json();
    let s: serde_json::Value = serde_json::from_str(&got["team-2"][0]).unwrap();
    assert_eq!(s["stream"], serde_json::json!({"app": "b"}));
    assert_eq!(s["values"], serde_json::json!([["5", "line"]]));
}

#[tokio::test]
async fn loki_pushes_are_404_when_no_loki_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let cfg = config(
        dir.path(),
        "http://127.0.0.1:9/api/v1/push",
        "  unmapped: drop",
    );
    let o = Orgsplit::start(dir.path(), &cfg).await;
    let (status, _, body) = push_json(&o, r#"{"streams":[]}"#, "").await;
    assert_eq!(status, 404);
    assert!(body.contains("loki.upstream.url"), "{body}");
}

/// Where `.ci/run` installs python-logging-loki (pure Python) for
/// `/usr/bin/python3`.
fn python_path() -> std::path::PathBuf {
    std::env::var_os("LOKI_CLIENT_PYTHONPATH")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps"))
}

/// A real Loki client library (python-logging-loki, JSON pushes) sends
/// records of three namespaces through orgsplit: each organization's Loki
/// tenant gets exactly its records, with the library's labels and lines.
#[tokio::test]
async fn a_python_loki_client_is_split_by_namespace_organization() {
    let (_dir, loki, o) = start("  unmapped: reject", "").await;
    let records = serde_json::json!({
        "url": o.url("/loki/api/v1/push"),
        "records": [
            {"namespace": "shop-prod", "message": "order 1 \"paid\" ✓"},
            {"namespace": "billing", "message": "invoice 7 sent"},
            {"namespace": "shop-dev", "message": "debug line\twith tab"},
            {"namespace": "unknown-ns", "message": "refused: no organization"},
        ],
    });
    let out = run_python("loki_client.py", python_path(), records.to_string()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["204", "204", "204", "400"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (tenant, streams) in loki.json() {
        for s in streams {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert_eq!(v["stream"]["app"], "orgsplit-e2e");
            assert_eq!(v["stream"]["logger"], "e2e");
            for value in v["values"].as_array().unwrap() {
                got.entry(tenant.clone()).or_default().push((
                    v["stream"]["namespace"].as_str().unwrap().to_string(),
                    value[1].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let pair = |ns: &str, line: &str| (ns.to_string(), line.to_string());
    assert_eq!(
        got,
        BTreeMap::from([
            (
                "acme".to_string(),
                vec![
                    pair("shop-prod", "order 1 \"paid\" ✓"),
                    pair("shop-dev", "debug line\twith tab")
                ]
            ),
            (
                "globex".to_string(),
                vec![pair("billing", "invoice 7 sent")]
            ),
        ])
    );
}

#[tokio::test]
async fn concurrent_protobuf_pushes_for_a_busy_tenant_travel_in_one_request() {
    let (_dir, loki, o) = start(
        "  unmapped: drop",
        "    coalesce: {enabled: true, window: 3s}\n",
    )
    .await;
    *loki.delay.lock().unwrap() = Duration::from_millis(400);
    let one = |app: &str, line: &[u8]| pb::PushRequest {
        streams: vec![stream(
            &format!("{{app=\"{app}\", namespace=\"shop-prod\"}}"),
            vec![entry(1_700_000_000_000_000_000, line, &[])],
        )],
        format: String::new(),
    };
    // The first push finds acme idle and goes at once; the next three
    // arrive while it is out and wait for it, merged into one request. A
    // JSON push for acme at the same time is never merged with protobuf.
    let first = {
        let (o_url, req) = (o.url("/loki/api/v1/push"), one("first", b"1"));
        tokio::spawn(async move {
            client()
                .post(o_url)
                .header("Content-Type", "application/x-protobuf")
                .body(
                    snap::raw::Encoder::new()
                        .compress_vec(&req.encode_to_vec())
                        .unwrap(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let json = r#"{"streams":[{"stream":{"namespace":"shop-prod","app":"json"},"values":[["1700000000000000000","j"]]}]}"#;
    let (second, third, fourth) = (one("second", b"2"), one("third", b"3"), one("fourth", b"4"));
    let (r2, r3, r4, rj) = tokio::join!(
        push_proto(&o, &second),
        push_proto(&o, &third),
        push_proto(&o, &fourth),
        push_json(&o, json, ""),
    );
    assert_eq!(first.await.unwrap(), 204);
    for (status, _, body) in [r2, r3, r4, rj] {
        assert_eq!(status, 204, "{body}");
    }
    let got = loki.got();
    let proto: Vec<&Got> = got
        .iter()
        .filter(|g| g.content_type == "application/x-protobuf")
        .collect();
    assert_eq!(
        proto.len(),
        2,
        "one request for the first push, one for the rest"
    );
    let apps = |g: &Got| -> Vec<String> {
        let req = pb::PushRequest::decode(g.body.as_slice()).unwrap();
        let mut apps: Vec<String> = req.streams.iter().map(|s| s.labels.clone()).collect();
        apps.sort();
        apps
    };
    assert_eq!(apps(proto[0]), [r#"{app="first", namespace="shop-prod"}"#]);
    assert_eq!(
        apps(proto[1]),
        [
            r#"{app="fourth", namespace="shop-prod"}"#,
            r#"{app="second", namespace="shop-prod"}"#,
            r#"{app="third", namespace="shop-prod"}"#,
        ]
    );
    let json: Vec<&Got> = got
        .iter()
        .filter(|g| g.content_type == "application/json")
        .collect();
    assert_eq!(json.len(), 1, "JSON goes on its own");
    assert!(got.iter().all(|g| g.tenant == "acme"));
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_upstream_coalesced_batches_total{signal=\"logs\"}"
        ),
        3.0
    );
}

/// Two JSON documents one after the other are not one, but their streams
/// in one `streams` array are: while acme's JSON request is out, the acme
/// streams of two further JSON pushes (each also carrying a stream with no
/// organization, so that none goes whole) reach Loki as ONE JSON push,
/// plain and gzip alike, the gzip one compressed once. Plain and gzip are
/// never mixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_json_pushes_for_a_busy_tenant_travel_in_one_request() {
    let (_dir, loki, o) = start(
        "  unmapped: drop",
        "    coalesce: {enabled: true, window: 3s}\n",
    )
    .await;
    *loki.delay.lock().unwrap() = Duration::from_millis(400);
    let stream = |app: &str| {
        format!(
            r#"{{"stream":{{"namespace":"shop-prod","app":"{app}"}},"values":[["1700000000000000000","line of {app}"]]}}"#
        )
    };
    let push = |app: &str, encoding: &'static str| {
        let json = format!(
            r#"{{"streams":[{},{{"stream":{{"namespace":"nowhere"}},"values":[["1","x"]]}}]}}"#,
            stream(app)
        );
        let o_url = o.url("/loki/api/v1/push");
        async move {
            let mut r = client()
                .post(o_url)
                .header("Content-Type", "application/json");
            if !encoding.is_empty() {
                r = r.header("Content-Encoding", encoding);
            }
            let r = r
                .body(encode(encoding, json.as_bytes()))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    let first = tokio::spawn(push("first", ""));
    let first_gzip = tokio::spawn(push("first-gz", "gzip"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let statuses = tokio::join!(
        push("second", ""),
        push("third", ""),
        push("second-gz", "gzip"),
        push("third-gz", "gzip"),
    );
    assert_eq!(
        [first.await.unwrap(), first_gzip.await.unwrap()],
        [204, 204]
    );
    assert_eq!(statuses, (204, 204, 204, 204));
    let got = loki.got();
    assert!(got.iter().all(|g| g.tenant == "acme"));
    // Each request's streams, sorted, by encoding, in the order received.
    let requests = |encoding: &str| -> Vec<Vec<String>> {
        got.iter()
            .filter(|g| g.encoding == encoding)
            .map(|g| {
                #[derive(serde::Deserialize)]
                struct Push<'a> {
                    #[serde(borrow)]
                    streams: Vec<&'a serde_json::value::RawValue>,
                }
                let push: Push = serde_json::from_slice(&g.body).unwrap();
                let mut streams: Vec<String> =
                    push.streams.iter().map(|s| s.get().to_string()).collect();
                streams.sort();
                streams
            })
            .collect()
    };
    assert_eq!(
        requests(""),
        [
            vec![stream("first")],
            vec![stream("second"), stream("third")]
        ]
    );
    assert_eq!(
        requests("gzip"),
        [
            vec![stream("first-gz")],
            vec![stream("second-gz"), stream("third-gz")]
        ]
    );
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_upstream_coalesced_batches_total{signal=\"logs\"}"
        ),
        4.0
    );
}
