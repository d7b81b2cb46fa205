//! OTLP/HTTP over real HTTP: the OpenTelemetry Python SDK's exporters send
//! metrics, logs and traces through orgsplit into a fake Mimir, Loki and
//! Tempo that record what each tenant received (decoded with the official
//! schema's prost types); the answers OTLP senders get; what is refused.

use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prost::Message;

/// One request a fake OTLP receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    tenant: String,
    content_type: String,
    encoding: String,
    /// Decompressed.
    body: Vec<u8>,
}

/// Tenant → (status, Retry-After, body) to answer instead of 200.
type Failures = BTreeMap<String, (u16, Option<u64>, &'static str)>;

#[derive(Clone, Default)]
struct Fake {
    got: Arc<Mutex<Vec<Got>>>,
    /// Tenant → (status, Retry-After, body) to answer instead of 200.
    fail: Arc<Mutex<Failures>>,
    /// How long every answer takes.
    delay: Arc<Mutex<std::time::Duration>>,
}

/// A fake Mimir, Loki and Tempo on one port, answering every path.
async fn fake() -> (std::net::SocketAddr, Fake) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(receive))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, fake)
}

async fn receive(
    State(fake): State<Fake>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let tenant = h("x-scope-orgid");
    let delay = *fake.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if let Some((status, retry, text)) = fake.fail.lock().unwrap().get(&tenant).copied() {
        let mut r = (StatusCode::from_u16(status).unwrap(), text).into_response();
        if let Some(s) = retry {
            r.headers_mut().insert("retry-after", s.into());
        }
        return r;
    }
    let encoding = h("content-encoding");
    let body = match encoding.as_str() {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "" => body.to_vec(),
        other => panic!("unexpected encoding {other}"),
    };
    fake.got.lock().unwrap().push(Got {
        path: format!("/{path}"),
        tenant,
        content_type: h("content-type"),
        encoding,
        body,
    });
    (StatusCode::OK, "").into_response()
}

impl Fake {
    fn got(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }
}

fn config(dir: &std::path::Path, fake: std::net::SocketAddr, routing: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
upstream:
  url: http://{fake}/api/v1/push
  timeout: 2s
loki:
  upstream:
    url: http://{fake}/loki/api/v1/push
otlp:
  traces:
    upstream: http://{fake}/v1/traces
routing:
  namespace_labels: [namespace]
{routing}
lookup:
  file: {}
{extra}",
        dir.join("table.yaml").display()
    )
}

async fn start(routing: &str, extra: &str) -> (tempfile::TempDir, Fake, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let (addr, fake) = fake().await;
    let o = Orgsplit::start(dir.path(), &config(dir.path(), addr, routing, extra)).await;
    (dir, fake, o)
}

fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Tenant → the `namespace` attributes of its data points, or
/// "resource:<ns>" for points of a resource that named its namespace.
fn metric_points(fake: &Fake) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in fake.got("/otlp/v1/metrics") {
        assert_eq!(g.content_type, "application/x-protobuf");
        let req = ExportMetricsServiceRequest::decode(g.body.as_slice()).unwrap();
        for rm in req.resource_metrics {
            let at_resource = rm
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "k8s.namespace.name"))
                .map(|ns| format!("resource:{ns}"));
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let Some(metric::Data::Sum(sum)) = m.data else {
                        panic!("{m:?}")
                    };
                    for p in sum.data_points {
                        let ns = at_resource.clone().unwrap_or_else(|| {
                            string_attr(&p.attributes, "namespace").unwrap().to_string()
                        });
                        out.entry(g.tenant.clone()).or_default().push(ns);
                    }
                }
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn span_names(fake: &Fake) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in fake.got("/v1/traces") {
        let req = ExportTraceServiceRequest::decode(g.body.as_slice()).unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    assert_eq!(s.events.len(), 1, "events travel with their span");
                    out.entry(g.tenant.clone()).or_default().push(s.name);
                }
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn log_lines(fake: &Fake) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in fake.got("/otlp/v1/logs") {
        let req = ExportLogsServiceRequest::decode(g.body.as_slice()).unwrap();
        for rl in req.resource_logs {
            for sl in rl.scope_logs {
                for r in sl.log_records {
                    let Some(any_value::Value::StringValue(line)) = r.body.and_then(|b| b.value)
                    else {
                        panic!("no body")
                    };
                    out.entry(g.tenant.clone()).or_default().push(line);
                }
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// orgsplit with the gRPC listener on, `extra` appended to its config, in
/// front of a fresh fake: the fake's address and state, and orgsplit.
async fn start_grpc(
    routing: &str,
    extra: &str,
) -> (tempfile::TempDir, std::net::SocketAddr, Fake, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let (addr, fake) = fake().await;
    let cfg = config(dir.path(), addr, routing, extra)
        .replace("otlp:\n", "otlp:\n  grpc:\n    listen: 127.0.0.1:0\n");
    let o = Orgsplit::start(dir.path(), &cfg).await;
    (dir, addr, fake, o)
}

/// Where scripts/test installs the OpenTelemetry Python SDK and its
/// OTLP/HTTP exporters (PyPI).
fn python_path() -> std::path::PathBuf {
    std::env::var_os("OTLP_CLIENT_PYTHONPATH")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps-otel")
        })
}

async fn python_client(spec: serde_json::Value) -> Vec<String> {
    let out = run_python("otlp_client.py", python_path(), spec.to_string()).await;
    assert!(
        out.status.success(),
        "the OpenTelemetry client failed (scripts/test installs it into target/pydeps-otel): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The OpenTelemetry Python SDK sends a data point, a log record and a span
/// from each of four namespaces (the namespace on the item, as the
/// Collector's Prometheus receiver leaves it), and one of each from a
/// resource that carries `k8s.namespace.name`: every organization's
/// Mimir, Loki and Tempo tenant gets exactly its own, the namespace with
/// no organization is dropped by policy, and the sender is told success.
#[tokio::test]
async fn the_opentelemetry_sdk_is_split_by_namespace_organization() {
    for compression in ["none", "gzip"] {
        let (_dir, fake, o) = start("  unmapped: drop", "").await;
        let results = python_client(serde_json::json!({
            "endpoint": o.url(""),
            "compression": compression,
            "namespaces": ["shop-prod", "billing", "shop-dev", "nowhere"],
            "resource_namespace": "billing",
        }))
        .await;
        assert_eq!(
            results,
            [
                "metrics SUCCESS",
                "metrics SUCCESS",
                "traces SUCCESS",
                "traces SUCCESS",
                "logs SUCCESS",
                "logs SUCCESS"
            ]
        );
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            metric_points(&fake),
            BTreeMap::from([
                ("acme".into(), s(&["shop-dev", "shop-prod"])),
                ("globex".into(), s(&["billing", "resource:billing"])),
            ]),
            "{compression}"
        );
        assert_eq!(
            span_names(&fake),
            BTreeMap::from([
                ("acme".into(), s(&["work in shop-dev", "work in shop-prod"])),
                ("globex".into(), s(&["work in any", "work in billing"])),
            ])
        );
        assert_eq!(
            log_lines(&fake),
            BTreeMap::from([
                (
                    "acme".into(),
                    s(&["line from shop-dev", "line from shop-prod"])
                ),
                (
                    "globex".into(),
                    s(&["line from billing", "line from the resource"])
                ),
            ])
        );
        // Each tenant's request went in the encoding it came in.
        let want = if compression == "gzip" { "gzip" } else { "" };
        assert!(fake.got.lock().unwrap().iter().all(|g| g.encoding == want));
        let page = o.metrics().await;
        for signal in ["metrics", "logs", "traces"] {
            assert!(
                page.contains(&format!(
                    "orgsplit_series_dropped_total{{signal=\"{signal}\",reason=\"no_organization\"}} 1"
                )),
                "{signal}: {page}"
            );
        }
    }
}

/// An OTLP metrics request of one gauge point named `name`, on a
/// resource of namespace `namespace`.
fn one_point(namespace: &str, name: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "k8s.namespace.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(namespace.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default()],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// orgsplit (namespace mode, `unmapped: drop`, a 3 s coalescing window, so
/// merging does not depend on timing) in front of a fake that takes 400 ms
/// to answer.
async fn busy_upstream() -> (tempfile::TempDir, Fake, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let (addr, fake) = fake().await;
    let yaml = config(dir.path(), addr, "  unmapped: drop", "").replace(
        "  timeout: 2s\n",
        "  timeout: 2s\n  coalesce: {window: 3s}\n",
    );
    let o = Orgsplit::start(dir.path(), &yaml).await;
    *fake.delay.lock().unwrap() = std::time::Duration::from_millis(400);
    (dir, fake, o)
}

/// The metric names a metrics request holds, sorted.
fn metric_names(g: &Got) -> Vec<String> {
    let req = ExportMetricsServiceRequest::decode(g.body.as_slice()).unwrap();
    let mut names: Vec<String> = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_protobuf_pushes_for_a_busy_tenant_travel_in_one_request() {
    let (_dir, fake, o) = busy_upstream().await;
    // The first push finds acme idle and goes at once; the next three
    // arrive while it is out and wait for it, merged into one request (two
    // protobuf requests one after the other are one request). A gzip push
    // all for acme at the same time goes whole, as its sender's bytes.
    let first = {
        let url = o.url("/v1/metrics");
        tokio::spawn(async move {
            client()
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(one_point("shop-prod", "first"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let gzip = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&one_point("shop-dev", "gzipped")).unwrap();
        e.finish().unwrap()
    };
    let gzip_push = async {
        client()
            .post(o.url("/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(gzip)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let (r2, r3, r4, rg) = tokio::join!(
        post(
            &o,
            "/v1/metrics",
            "application/x-protobuf",
            one_point("shop-prod", "second")
        ),
        post(
            &o,
            "/v1/metrics",
            "application/x-protobuf",
            one_point("shop-dev", "third")
        ),
        post(
            &o,
            "/v1/metrics",
            "application/x-protobuf",
            one_point("shop-prod", "fourth")
        ),
        gzip_push,
    );
    assert_eq!(first.await.unwrap(), 200);
    for (status, _, body) in [r2, r3, r4] {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(rg, 200);
    let got = fake.got("/otlp/v1/metrics");
    assert!(got.iter().all(|g| g.tenant == "acme"));
    let plain: Vec<Vec<String>> = got
        .iter()
        .filter(|g| g.encoding.is_empty())
        .map(metric_names)
        .collect();
    assert_eq!(
        plain,
        [
            vec!["first".to_string()],
            vec!["fourth".into(), "second".into(), "third".into()]
        ],
        "one request for the first push, one for the three that waited"
    );
    let gzipped: Vec<Vec<String>> = got
        .iter()
        .filter(|g| g.encoding == "gzip")
        .map(metric_names)
        .collect();
    assert_eq!(
        gzipped,
        [vec!["gzipped".to_string()]],
        "a push all for acme goes on its own, as it was sent"
    );
    assert_eq!(
        metric(
            &o.metrics().await,
            "orgsplit_upstream_coalesced_batches_total{signal=\"metrics\"}"
        ),
        3.0
    );
}

async fn post(
    o: &Orgsplit,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, HeaderMap, Vec<u8>) {
    let r = client()
        .post(o.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn json_logs(namespaces: &[&str]) -> String {
    let records: Vec<serde_json::Value> = namespaces
        .iter()
        .map(|ns| {
            serde_json::json!({
                "timeUnixNano": "1700000000000000000",
                "body": {"stringValue": format!("hello from {ns}")},
                "attributes": [{"key": "namespace", "value": {"stringValue": ns}}],
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
            })
        })
        .collect();
    serde_json::json!({
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "n1"}}]},
            "scopeLogs": [{"scope": {"name": "filelog"}, "logRecords": records}],
        }]
    })
    .to_string()
}

/// OTLP JSON on Loki's path: each tenant's request goes as JSON, and the
/// sender hears 200 with `partial_success` naming what the drop policy
/// dropped, in JSON.
#[tokio::test]
async fn json_goes_as_json_and_dropped_items_are_a_partial_success() {
    let (_dir, fake, o) = start("  unmapped: drop", "").await;
    let body = json_logs(&["shop-prod", "nowhere", "billing", "nowhere"]);
    let (status, headers, answer) =
        post(&o, "/otlp/v1/logs", "application/json", body.into()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(headers["content-type"], "application/json");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "2");
    assert!(answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("routing.unmapped"));
    let got = fake.got("/otlp/v1/logs");
    assert_eq!(got.len(), 2);
    for g in got {
        assert_eq!(g.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
        let records = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
        assert_eq!(records.as_array().unwrap().len(), 1);
        let ns = if g.tenant == "acme" {
            "shop-prod"
        } else {
            "billing"
        };
        assert_eq!(
            records[0]["body"]["stringValue"],
            format!("hello from {ns}")
        );
        // Items go as they came: IDs stay hex strings, numbers strings.
        assert_eq!(records[0]["traceId"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(records[0]["timeUnixNano"], "1700000000000000000");
        assert_eq!(
            v["resourceLogs"][0]["scopeLogs"][0]["scope"]["name"],
            "filelog"
        );
    }
}

/// What an OTLP sender is told when it cannot be served: a
/// `google.rpc.Status` in its encoding, with the status that says whether
/// to retry.
#[tokio::test]
async fn refusals_are_statuses_an_otlp_sender_understands() {
    let (_dir, fake, o) = start("  unmapped: reject", "").await;
    // Malformed protobuf: 400, INVALID_ARGUMENT, nothing sent.
    let (status, headers, body) = post(
        &o,
        "/v1/logs",
        "application/x-protobuf",
        vec![0x0a, 0x05, 1],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(body[..2], [0x08, 3], "code INVALID_ARGUMENT");
    // Malformed JSON: 400 with a JSON Status.
    let (status, _, body) = post(
        &o,
        "/v1/metrics",
        "application/json",
        b"{\"resourceMetrics\":[{".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("OTLP JSON"), "{v}");
    // The reject policy: 400, nothing sent to anyone.
    let (status, _, body) = post(
        &o,
        "/v1/logs",
        "application/json",
        json_logs(&["billing", "nowhere"]).into(),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(fake.got.lock().unwrap().is_empty());
    // Not OTLP: 415.
    let (status, _, _) = post(&o, "/v1/traces", "text/plain", b"hi".to_vec()).await;
    assert_eq!(status, 415);
    // An upstream that throttles: 429 with Retry-After, UNAVAILABLE-class.
    fake.fail
        .lock()
        .unwrap()
        .insert("globex".into(), (429, Some(7), "slow down"));
    let (status, headers, body) = post(
        &o,
        "/v1/logs",
        "application/json",
        json_logs(&["billing"]).into(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 8);
    assert!(v["message"].as_str().unwrap().contains("slow down"));
    // A 5xx upstream: 502/503 class, retryable.
    fake.fail
        .lock()
        .unwrap()
        .insert("globex".into(), (500, None, "ingester down"));
    let (status, _, _) = post(
        &o,
        "/v1/logs",
        "application/json",
        json_logs(&["billing"]).into(),
    )
    .await;
    assert!(matches!(status, 500 | 502 | 503), "{status}");
}

/// A signal with no upstream is 404, and paths around the OTLP ones reach
/// nothing.
#[tokio::test]
async fn unconfigured_signals_and_paths_around_them_are_404() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let (addr, fake) = fake().await;
    // No Loki and no traces upstream: metrics only.
    let cfg = format!(
        "listen: 127.0.0.1:0\nupstream:\n  url: http://{addr}/api/v1/push\nrouting:\n  namespace_labels: [namespace]\n  unmapped: drop\nlookup:\n  file: {}\n",
        dir.path().join("table.yaml").display()
    );
    let o = Orgsplit::start(dir.path(), &cfg).await;
    for path in ["/v1/logs", "/v1/traces", "/otlp/v1/logs"] {
        let (status, _, body) = post(&o, path, "application/json", b"{}".to_vec()).await;
        assert_eq!(status, 404, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["message"].as_str().unwrap().contains("otlp."), "{v}");
    }
    for path in [
        "/v1/metrics/",
        "/v1/metrics/..",
        "/v1//metrics",
        "/v1/%6detrics",
        "/otlp/v1/metrics/x",
        "/v1/metrics%2f..%2fapi%2fv1%2fpush",
    ] {
        let (status, _, _) = post(&o, path, "application/json", b"{}".to_vec()).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = post(&o, "/v1/metrics", "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 200, "metrics go to Mimir's OTLP path by default");
    assert!(
        fake.got.lock().unwrap().is_empty(),
        "an empty request sends nothing"
    );
}

/// The OpenTelemetry SDK's gRPC exporters (grpcio), as the Collector's
/// default `otlp` exporter speaks: split like OTLP/HTTP, gzip or not; the
/// tenant comes from the token, never from `x-scope-orgid` metadata; a
/// forged or expired token and an organization outside the token's are
/// refused with nothing forwarded.
#[tokio::test]
async fn the_grpc_exporters_are_split_with_the_tenant_of_their_token() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let (addr, fake) = fake().await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let extra = format!(
        "auth:\n  anonymous: {{enabled: false}}\n  jwt:\n    hs256_secret_file: {}\n",
        secret.display()
    );
    let cfg = config(dir.path(), addr, "  unmapped: drop", &extra)
        .replace("otlp:\n", "otlp:\n  grpc:\n    listen: 127.0.0.1:0\n");
    let o = Orgsplit::start(dir.path(), &cfg).await;
    let grpc = format!("http://{}", o.grpc_addr.expect("the gRPC listener is on"));
    let acme = pyjwt(
        serde_json::json!({"alg": "HS256", "key_file": secret, "claims": {"tenant_id": "acme"}}),
    );
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let expired = pyjwt(
        serde_json::json!({"alg": "HS256", "key_file": secret, "claims": {"tenant_id": "acme", "exp": an_hour_ago}}),
    );
    let forged = pyjwt(
        serde_json::json!({"alg": "HS256", "key_file": "/etc/hostname", "claims": {"tenant_id": "acme"}}),
    );
    let send = |token: &str, namespaces: &[&str], compression: &str| {
        serde_json::json!({
            "endpoint": grpc,
            "protocol": "grpc",
            "compression": compression,
            "headers": {"authorization": format!("Bearer {token}"), "x-scope-orgid": "globex"},
            "namespaces": namespaces,
        })
    };
    for compression in ["gzip", "none"] {
        let results = python_client(send(
            &acme,
            &["shop-prod", "shop-dev", "nowhere"],
            compression,
        ))
        .await;
        assert_eq!(
            results,
            ["metrics SUCCESS", "traces SUCCESS", "logs SUCCESS"],
            "{compression}"
        );
    }
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        metric_points(&fake),
        BTreeMap::from([(
            "acme".into(),
            s(&["shop-dev", "shop-dev", "shop-prod", "shop-prod"])
        )])
    );
    assert_eq!(
        span_names(&fake)["acme"],
        s(&[
            "work in shop-dev",
            "work in shop-dev",
            "work in shop-prod",
            "work in shop-prod"
        ])
    );
    assert_eq!(log_lines(&fake)["acme"].len(), 4);
    assert!(fake.got.lock().unwrap().iter().all(|g| g.tenant == "acme"));
    // Bodies go upstream over HTTP as OTLP protobuf.
    assert!(fake
        .got
        .lock()
        .unwrap()
        .iter()
        .all(|g| g.content_type == "application/x-protobuf"));

    fake.got.lock().unwrap().clear();
    let results = python_client(send(&forged, &["shop-prod"], "none")).await;
    assert_eq!(
        results,
        ["metrics FAILURE", "traces FAILURE", "logs FAILURE"]
    );
    let results = python_client(send(&acme, &["billing"], "none")).await;
    assert_eq!(
        results,
        ["metrics FAILURE", "traces FAILURE", "logs FAILURE"]
    );
    let results = python_client(send(&expired, &["shop-prod"], "none")).await;
    assert_eq!(
        results,
        ["metrics FAILURE", "traces FAILURE", "logs FAILURE"]
    );
    assert!(fake.got.lock().unwrap().is_empty(), "nothing forwarded");
    let page = o.metrics().await;
    assert!(
        page.contains("orgsplit_requests_total{signal=\"traces\",code=\"401\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("orgsplit_requests_total{signal=\"traces\",code=\"403\"} 1"),
        "{page}"
    );
}

/// One raw gRPC call with grpcio (tests/helpers/grpc_call.py): the status
/// code's name, whether the trailers carried `grpc-status-details-bin`,
/// and the status message.
async fn grpc_call(
    target: std::net::SocketAddr,
    path: &str,
    message: &[u8],
) -> (String, bool, String) {
    grpc_call_tls(target, path, message, serde_json::Value::Null).await
}

/// [`grpc_call`] over TLS (`tls`: `{"ca", "cert", "key"}` PEMs).
async fn grpc_call_tls(
    target: std::net::SocketAddr,
    path: &str,
    message: &[u8],
    tls: serde_json::Value,
) -> (String, bool, String) {
    let spec = serde_json::json!({
        "target": target.to_string(),
        "path": path,
        "message": message.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "tls": tls,
    });
    let out = run_python("grpc_call.py", python_path(), spec.to_string()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut words = stdout.splitn(3, ' ');
    let code = words.next().unwrap_or_default().to_string();
    let details = words.next() == Some("details");
    let message = words.next().unwrap_or_default().to_string();
    (code, details, message)
}

/// What a gRPC client hears: unknown methods are `UNIMPLEMENTED`,
/// malformed messages `INVALID_ARGUMENT`, an oversized message is refused
/// from its length prefix, a throttled upstream is `RESOURCE_EXHAUSTED`
/// with `RetryInfo`, and an accepted export is `OK`.
#[tokio::test]
async fn grpc_statuses_follow_the_otlp_mapping() {
    let (_dir, _, fake, o) =
        start_grpc("  unmapped: drop", "limits:\n  max_body_bytes: 4096\n").await;
    let grpc = o.grpc_addr.unwrap();
    const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    let profiles = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";
    assert_eq!(grpc_call(grpc, profiles, &[]).await.0, "UNIMPLEMENTED");
    assert_eq!(
        grpc_call(grpc, LOGS, &[0x0a, 0x05, 1]).await.0,
        "INVALID_ARGUMENT"
    );
    let (code, _, _) = grpc_call(grpc, LOGS, &[0; 5000]).await;
    assert!(
        matches!(code.as_str(), "OUT_OF_RANGE" | "RESOURCE_EXHAUSTED"),
        "{code}"
    );
    let logs: ExportLogsServiceRequest = serde_json::from_str(&json_logs(&["billing"])).unwrap();
    fake.fail
        .lock()
        .unwrap()
        .insert("globex".into(), (429, Some(9), "slow down"));
    let (code, details, message) = grpc_call(grpc, LOGS, &logs.encode_to_vec()).await;
    assert_eq!(
        (code.as_str(), details),
        ("RESOURCE_EXHAUSTED", true),
        "{message}"
    );
    assert!(message.contains("slow down"), "{message}");
    fake.fail.lock().unwrap().clear();
    assert_eq!(grpc_call(grpc, LOGS, &logs.encode_to_vec()).await.0, "OK");
    assert_eq!(fake.got("/otlp/v1/logs").len(), 1);

    // A memory budget smaller than the message: refused as it arrives,
    // retryable, before it is buffered whole.
    let (_small_dir, _, small_fake, small) = start_grpc(
        "  unmapped: drop",
        "limits:\n  max_body_bytes: 65536\n  max_decoded_bytes: 1024\n  max_inflight_bytes: 2048\n",
    )
    .await;
    let mut big = logs.clone();
    big.resource_logs[0].scope_logs[0].log_records[0].body =
        Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(20_000))),
        });
    let (code, details, message) =
        grpc_call(small.grpc_addr.unwrap(), LOGS, &big.encode_to_vec()).await;
    assert_eq!((code.as_str(), details), ("UNAVAILABLE", true), "{message}");
    assert!(message.contains("as the message arrived"), "{message}");
    let page = small.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_overloaded_total{signal=\"logs\",limit=\"bytes\""
        ),
        1.0,
        "{page}"
    );
    let page = o.metrics().await;
    assert_eq!(
        metric(
            &page,
            "orgsplit_requests_total{signal=\"logs\",code=\"413\""
        ),
        1.0,
        "the oversized message is counted: {page}"
    );
    assert!(
        small_fake.got.lock().unwrap().is_empty(),
        "nothing forwarded"
    );
}

/// The gRPC listener takes TLS and client certificates as the HTTP one
/// does: a certificate's principal writes its organization; without one,
/// `UNAUTHENTICATED`.
#[tokio::test]
async fn grpc_over_tls_with_client_certificates() {
    let pki = common::tls::Pki::new();
    let server = pki.leaf(&["localhost"], false);
    let client = pki.leaf(&["prom-acme.example"], true);
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert, key, ca) = (
        write("server.pem", &server.cert_pem),
        write("server.key", &server.key_pem),
        write("ca.pem", &pki.ca_pem),
    );
    let (addr, fake) = fake().await;
    let extra = format!(
        "tls: {{cert_file: {cert}, key_file: {key}}}\nauth:\n  anonymous: {{enabled: false}}\n  mtls:\n    client_ca_file: {ca}\n    principals:\n      prom-acme.example: [acme]\n"
    );
    let cfg = config(dir.path(), addr, "  unmapped: drop", &extra)
        .replace("otlp:\n", "otlp:\n  grpc:\n    listen: 127.0.0.1:0\n");
    let o = Orgsplit::start(dir.path(), &cfg).await;
    let grpc = o.grpc_addr.unwrap();
    const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    let logs: ExportLogsServiceRequest =
        serde_json::from_str(&json_logs(&["shop-prod", "billing"])).unwrap();
    let with_cert =
        serde_json::json!({"ca": pki.ca_pem, "cert": client.cert_pem, "key": client.key_pem});
    let without = serde_json::json!({"ca": pki.ca_pem});
    // billing is outside the certificate's organization.
    assert_eq!(
        grpc_call_tls(grpc, LOGS, &logs.encode_to_vec(), with_cert.clone())
            .await
            .0,
        "PERMISSION_DENIED"
    );
    let acme_only: ExportLogsServiceRequest =
        serde_json::from_str(&json_logs(&["shop-prod", "shop-dev"])).unwrap();
    assert_eq!(
        grpc_call_tls(grpc, LOGS, &acme_only.encode_to_vec(), with_cert)
            .await
            .0,
        "OK"
    );
    let (code, _, _) = grpc_call_tls(grpc, LOGS, &acme_only.encode_to_vec(), without).await;
    assert!(
        matches!(code.as_str(), "UNAUTHENTICATED" | "UNAVAILABLE"),
        "{code}"
    );
    let got = fake.got("/otlp/v1/logs");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tenant, "acme");
}

/// A gRPC message that stalls half-way is cut off at `limits.body_timeout`
/// with a retryable status, and holds nothing after.
#[tokio::test]
async fn a_stalled_grpc_message_is_cut_off_at_the_body_timeout() {
    let (_dir, _, fake, o) = start_grpc("  unmapped: drop", "limits:\n  body_timeout: 1s\n").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    // The prefix announces 4 096 bytes; two arrive, then nothing.
    tx.send(Ok(vec![0, 0, 0, 16, 0, 0x0a, 0x02])).await.unwrap();
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let r = client
        .post(format!(
            "http://{}/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            o.grpc_addr.unwrap()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.headers().get("grpc-status").unwrap(), "14", "UNAVAILABLE");
    assert!(
        elapsed >= std::time::Duration::from_millis(900)
            && elapsed < std::time::Duration::from_secs(5),
        "{elapsed:?}"
    );
    drop(tx);
    assert!(fake.got.lock().unwrap().is_empty());
}

/// Gzip bodies do not join, but their decoded protobuf does: while acme's
/// request is out, two gzip pushes that each span acme and a namespace with
/// no organization reach acme as ONE gzip request holding both, compressed
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gzip_pushes_for_a_busy_tenant_are_merged_and_gzipped_once() {
    use std::io::Write;
    let (_dir, fake, o) = busy_upstream().await;
    let gzip_push = |names: [&str; 2]| {
        // Two requests one after the other: two resources, one dropped.
        let mut body = one_point("shop-prod", names[0]);
        body.extend(one_point("nowhere", names[1]));
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        let body = e.finish().unwrap();
        let url = o.url("/v1/metrics");
        async move {
            client()
                .post(url)
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "gzip")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let first = tokio::spawn(gzip_push(["first", "x"]));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (a, b) = tokio::join!(gzip_push(["second", "y"]), gzip_push(["third", "z"]));
    assert_eq!([first.await.unwrap(), a, b], [200; 3]);
    let got = fake.got("/otlp/v1/metrics");
    assert!(got
        .iter()
        .all(|g| g.tenant == "acme" && g.encoding == "gzip"));
    let names: Vec<Vec<String>> = got.iter().map(metric_names).collect();
    assert_eq!(
        names,
        [
            vec!["first".to_string()],
            vec!["second".into(), "third".into()]
        ]
    );
}

/// Two JSON documents one after the other are not one, but their
/// resources in one top-level array are: while acme's request is out, the
/// acme resources of two further JSON pushes (each also carrying a
/// resource with no organization, so that none goes whole) reach the
/// upstream as ONE JSON request, plain and gzip alike (the gzip one
/// compressed once). Plain and gzip never share a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_json_pushes_for_a_busy_tenant_travel_in_one_request() {
    use std::io::Write;
    let (_dir, fake, o) = busy_upstream().await;
    let resource = |namespace: &str, name: &str| {
        serde_json::json!({
            "resource": {"attributes": [
                {"key": "k8s.namespace.name", "value": {"stringValue": namespace}}
            ]},
            "scopeMetrics": [{"metrics": [
                {"name": name, "gauge": {"dataPoints": [{"asDouble": 1.0}]}}
            ]}]
        })
    };
    let push = |name: &str, gzip: bool| {
        let body = serde_json::json!({
            "resourceMetrics": [resource("shop-prod", name), resource("nowhere", "dropped")]
        })
        .to_string()
        .into_bytes();
        let url = o.url("/v1/metrics");
        async move {
            let mut r = client()
                .post(url)
                .header("content-type", "application/json");
            let body = if gzip {
                r = r.header("content-encoding", "gzip");
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&body).unwrap();
                e.finish().unwrap()
            } else {
                body
            };
            r.body(body).send().await.unwrap().status().as_u16()
        }
    };
    let first = tokio::spawn(push("first", false));
    let first_gzip = tokio::spawn(push("first-gz", true));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let statuses = tokio::join!(
        push("second", false),
        push("third", false),
        push("second-gz", true),
        push("third-gz", true),
    );
    assert_eq!(
        [first.await.unwrap(), first_gzip.await.unwrap()],
        [200, 200]
    );
    assert_eq!(statuses, (200, 200, 200, 200));
    let got = fake.got("/otlp/v1/metrics");
    assert!(got
        .iter()
        .all(|g| g.tenant == "acme" && g.content_type == "application/json"));
    // Each request's metric names, sorted, by encoding, in arrival order.
    let requests = |encoding: &str| -> Vec<Vec<String>> {
        got.iter()
            .filter(|g| g.encoding == encoding)
            .map(|g| {
                let v: serde_json::Value = serde_json::from_slice(&g.body).unwrap();
                let mut names: Vec<String> = v["resourceMetrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r["scopeMetrics"].as_array().unwrap())
                    .flat_map(|s| s["metrics"].as_array().unwrap())
                    .map(|m| m["name"].as_str().unwrap().to_string())
                    .collect();
                names.sort();
                names
            })
            .collect()
    };
    assert_eq!(requests(""), [vec!["first"], vec!["second", "third"]]);
    assert_eq!(
        requests("gzip"),
        [vec!["first-gz"], vec!["second-gz", "third-gz"]]
    );
}
