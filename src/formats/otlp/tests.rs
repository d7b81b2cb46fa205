//! The OTLP walks against the official schema's prost types
//! (`opentelemetry-proto`): every item reaches exactly the tenant the
//! reference rule gives it, inside its own resource, scope and metric, and
//! protobuf and JSON split alike.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

use super::json::OtlpJson;
use super::*;
use crate::config::{Routing, UnmappedPolicy};
use crate::pool::BufferPool;
use crate::route::{FamilyIndex, RouteError, Router, SplitCounts};
use crate::table::Snapshot;
use crate::tenant::Allowance;

fn router(unmapped: UnmappedPolicy) -> Router {
    let r = Routing {
        default_tenant: "fallback".into(),
        unmapped,
        namespace_labels: vec!["k8s.namespace.name".into(), "namespace".into()],
        ..Default::default()
    };
    Router::new(&r, RequestLimits::default())
}

fn table() -> Snapshot {
    Snapshot::from_pairs([
        ("shop-prod", "acme"),
        ("shop-dev", "acme"),
        ("billing", "globex"),
    ])
}

fn split_with<F: Format>(
    format: &F,
    router: &Router,
    body: &[u8],
) -> Result<(BTreeMap<String, Vec<u8>>, SplitCounts), RouteError> {
    static NO_POOL: BufferPool = BufferPool::disabled();
    let split = router.split(
        format,
        body,
        &table(),
        &FamilyIndex::default(),
        &NO_POOL,
        &Allowance::Any,
    )?;
    let mut out = BTreeMap::new();
    for b in split.batches {
        assert!(out.insert(b.tenant.to_string(), b.body).is_none());
    }
    Ok((out, split.stats))
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes,
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: "1.2".into(),
        attributes: vec![kv("scope.attr", "x")],
        ..Default::default()
    })
}

fn number(ns: Option<&str>, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: ns
            .map(|ns| vec![kv("job", "api"), kv("namespace", ns)])
            .unwrap_or_else(|| vec![kv("job", "api")]),
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        exemplars: vec![Exemplar {
            filtered_attributes: vec![kv("trace", "t")],
            value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(3)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What the reference says one tenant gets, flattened to one entry per
/// item with everything around it: (resource, scope, metric header, item).
type Flat = Vec<(Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)>;

fn tenant_of(attributes: &[KeyValue]) -> Option<&'static str> {
    let ns = ["k8s.namespace.name", "namespace"].iter().find_map(|key| {
        attributes.iter().find(|a| a.key == *key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    })?;
    Some(match ns {
        "shop-prod" | "shop-dev" => "acme",
        "billing" => "globex",
        _ => "fallback",
    })
}

/// The reference split of a metrics request: (tenant → flat items).
fn metrics_reference(req: &ExportMetricsServiceRequest) -> BTreeMap<String, Flat> {
    let mut out: BTreeMap<String, Flat> = BTreeMap::new();
    for rm in &req.resource_metrics {
        let at_resource = rm.resource.as_ref().and_then(|r| tenant_of(&r.attributes));
        let mut rm_head = rm.clone();
        rm_head.scope_metrics.clear();
        for sm in &rm.scope_metrics {
            let mut sm_head = sm.clone();
            sm_head.metrics.clear();
            for m in &sm.metrics {
                for (head, point, attributes) in metric_points(m) {
                    let tenant = at_resource
                        .or_else(|| tenant_of(&attributes))
                        .unwrap_or("fallback");
                    out.entry(tenant.into()).or_default().push((
                        rm_head.encode_to_vec(),
                        sm_head.encode_to_vec(),
                        head,
                        point,
                    ));
                }
            }
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// A metric's points: (the metric with no points, the point, its
/// attributes).
fn metric_points(m: &Metric) -> Vec<(Vec<u8>, Vec<u8>, Vec<KeyValue>)> {
    let mut head = m.clone();
    let points: Vec<(Vec<u8>, Vec<KeyValue>)> = match &mut head.data {
        Some(metric::Data::Gauge(g)) => std::mem::take(&mut g.data_points)
            .into_iter()
            .map(|p| (p.encode_to_vec(), p.attributes))
            .collect(),
        Some(metric::Data::Sum(s)) => std::mem::take(&mut s.data_points)
            .into_iter()
            .map(|p| (p.encode_to_vec(), p.attributes))
            .collect(),
        Some(metric::Data::Histogram(h)) => std::mem::take(&mut h.data_points)
            .into_iter()
            .map(|p| (p.encode_to_vec(), p.attributes))
            .collect(),
        _ => Vec::new(),
    };
    let head = head.encode_to_vec();
    points
        .into_iter()
        .map(|(p, a)| (head.clone(), p, a))
        .collect()
}

/// Splits a metrics request and flattens each tenant's output the same
/// way, checking that every output decodes.
fn metrics_split(req: &ExportMetricsServiceRequest, json: bool) -> BTreeMap<String, Flat> {
    let router = router(UnmappedPolicy::Default);
    let bodies = if json {
        let body = serde_json::to_vec(req).unwrap();
        split_with(&OtlpJson(OtlpSignal::Metrics), &router, &body)
            .unwrap()
            .0
    } else {
        split_with(
            &OtlpProto(OtlpSignal::Metrics),
            &router,
            &req.encode_to_vec(),
        )
        .unwrap()
        .0
    };
    bodies
        .into_iter()
        .map(|(tenant, body)| {
            let decoded: ExportMetricsServiceRequest = if json {
                serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{tenant}: {e}: {}", String::from_utf8_lossy(&body)))
            } else {
                ExportMetricsServiceRequest::decode(body.as_slice()).unwrap()
            };
            let mut flat = metrics_reference_flat(&decoded);
            flat.sort();
            (tenant, flat)
        })
        .collect()
}

/// Every item of a request with what surrounds it, whatever its tenant.
fn metrics_reference_flat(req: &ExportMetricsServiceRequest) -> Flat {
    let mut flat = Flat::new();
    for rm in &req.resource_metrics {
        let mut rm_head = rm.clone();
        rm_head.scope_metrics.clear();
        for sm in &rm.scope_metrics {
            let mut sm_head = sm.clone();
            sm_head.metrics.clear();
            for m in &sm.metrics {
                for (head, point, _) in metric_points(m) {
                    flat.push((
                        rm_head.encode_to_vec(),
                        sm_head.encode_to_vec(),
                        head,
                        point,
                    ));
                }
            }
        }
    }
    flat
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: "a gauge".into(),
        unit: "1".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// The Collector's Prometheus receiver: one resource per scrape target,
/// `namespace` on each data point.
fn prometheus_receiver_shaped() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(vec![kv("service.name", "kube-state-metrics")]),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("otelcol/prometheusreceiver"),
                metrics: vec![
                    gauge(
                        "kube_pod_info",
                        vec![
                            number(Some("shop-prod"), 1.0),
                            number(Some("billing"), 1.0),
                            number(Some("shop-dev"), 1.0),
                            number(None, 1.0),
                        ],
                    ),
                    sum(
                        "http_requests_total",
                        vec![number(Some("billing"), 7.0), number(Some("elsewhere"), 2.0)],
                    ),
                    Metric {
                        name: "latency".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: vec![kv("namespace", "shop-prod")],
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

#[test]
fn data_points_split_by_their_own_namespace_inside_their_resource_scope_and_metric() {
    let req = prometheus_receiver_shaped();
    let want = metrics_reference(&req);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["acme", "fallback", "globex"]
    );
    assert_eq!(metrics_split(&req, false), want);
    assert_eq!(
        metrics_split(&req, true),
        want,
        "JSON splits as protobuf does"
    );
}

#[test]
fn a_resource_with_a_namespace_goes_whole_byte_for_byte() {
    // The k8sattributes processor's shape: the namespace on the resource,
    // and a point that names another namespace stays with its resource.
    let rm = |ns: &str| ResourceMetrics {
        resource: resource(vec![kv("k8s.namespace.name", ns), kv("k8s.pod.name", "p")]),
        scope_metrics: vec![ScopeMetrics {
            scope: scope("app"),
            metrics: vec![gauge("up", vec![number(Some("billing"), 1.0)])],
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![rm("shop-prod"), rm("billing"), rm("shop-dev")],
    };
    let (bodies, stats) = split_with(
        &OtlpProto(OtlpSignal::Metrics),
        &router(UnmappedPolicy::Default),
        &req.encode_to_vec(),
    )
    .unwrap();
    let acme = ExportMetricsServiceRequest {
        resource_metrics: vec![rm("shop-prod"), rm("shop-dev")],
    };
    let globex = ExportMetricsServiceRequest {
        resource_metrics: vec![rm("billing")],
    };
    assert_eq!(bodies["acme"], acme.encode_to_vec());
    assert_eq!(bodies["globex"], globex.encode_to_vec());
    assert_eq!(bodies.len(), 2);
    assert_eq!(stats.received.samples, 3);
    assert_eq!(stats.received.exemplars, 3);
}

#[test]
fn unknown_fields_survive_and_two_tenant_requests_concatenate() {
    let mut req = prometheus_receiver_shaped();
    req.resource_metrics[0].scope_metrics[0].metrics.truncate(1);
    let mut body = Vec::new();
    // An unknown field (99) inside the resource, before everything else.
    let rm = req.resource_metrics[0].encode_to_vec();
    let mut rm_body = Vec::new();
    crate::wire::encode::put_bytes_field(&mut rm_body, 99, b"future");
    rm_body.extend_from_slice(&rm);
    crate::wire::encode::put_bytes_field(&mut body, 1, &rm_body);
    let (bodies, _) = split_with(
        &OtlpProto(OtlpSignal::Metrics),
        &router(UnmappedPolicy::Default),
        &body,
    )
    .unwrap();
    let acme = &bodies["acme"];
    assert!(
        acme.windows(6).any(|w| w == b"future"),
        "unknown field kept"
    );
    // Each tenant's body decodes; two of them concatenated decode as one.
    let mut joined = acme.clone();
    joined.extend_from_slice(&bodies["globex"]);
    let joined = ExportMetricsServiceRequest::decode(joined.as_slice()).unwrap();
    assert_eq!(joined.resource_metrics.len(), 2);
}

#[test]
fn the_drop_policy_counts_what_it_drops() {
    let req = prometheus_receiver_shaped();
    let (bodies, stats) = split_with(
        &OtlpProto(OtlpSignal::Metrics),
        &router(UnmappedPolicy::Drop),
        &req.encode_to_vec(),
    )
    .unwrap();
    assert!(!bodies.contains_key("fallback"));
    // One point with no namespace attribute, one in an unknown namespace.
    assert_eq!(stats.dropped_samples, 2);
    assert_eq!(stats.received.samples, 6);
    assert_eq!(stats.received.histograms, 1);
}

fn logs_request() -> ExportLogsServiceRequest {
    let record = |ns: &str, line: &str| LogRecord {
        time_unix_nano: 1,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(line.into())),
        }),
        attributes: vec![
            kv("log.file.path", "/var/log/pods/x"),
            kv("k8s.namespace.name", ns),
        ],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![
            // filelog: the namespace parsed from the file path onto each record.
            ResourceLogs {
                resource: resource(vec![kv("host.name", "node-1")]),
                scope_logs: vec![ScopeLogs {
                    scope: scope("filelog"),
                    log_records: vec![
                        record("shop-prod", "a"),
                        record("billing", "b"),
                        record("shop-prod", "c"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceLogs {
                resource: resource(vec![kv("k8s.namespace.name", "billing")]),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record("shop-prod", "stays with its resource")],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

fn log_lines(req: &ExportLogsServiceRequest) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for rl in &req.resource_logs {
        let host = format!("{:?}", rl.resource.as_ref().map(|r| &r.attributes));
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                if let Some(any_value::Value::StringValue(s)) =
                    r.body.as_ref().and_then(|b| b.value.as_ref())
                {
                    lines.push((host.clone(), s.clone()));
                }
            }
        }
    }
    lines
}

#[test]
fn log_records_and_spans_split_like_data_points_in_protobuf_and_json() {
    let req = logs_request();
    for json in [false, true] {
        let body = if json {
            serde_json::to_vec(&req).unwrap()
        } else {
            req.encode_to_vec()
        };
        let bodies = if json {
            split_with(
                &OtlpJson(OtlpSignal::Logs),
                &router(UnmappedPolicy::Default),
                &body,
            )
        } else {
            split_with(
                &OtlpProto(OtlpSignal::Logs),
                &router(UnmappedPolicy::Default),
                &body,
            )
        }
        .unwrap()
        .0;
        let decode = |b: &[u8]| -> ExportLogsServiceRequest {
            if json {
                serde_json::from_slice(b).unwrap()
            } else {
                ExportLogsServiceRequest::decode(b).unwrap()
            }
        };
        let acme = log_lines(&decode(&bodies["acme"]));
        let globex = log_lines(&decode(&bodies["globex"]));
        let node = format!("{:?}", Some(vec![kv("host.name", "node-1")]));
        let billing = format!("{:?}", Some(vec![kv("k8s.namespace.name", "billing")]));
        assert_eq!(
            acme,
            [(node.clone(), "a".into()), (node.clone(), "c".into())]
        );
        assert_eq!(
            globex,
            [
                (node, "b".into()),
                (billing, "stays with its resource".into())
            ]
        );
    }

    let span = |ns: &str, name: &str| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: 2,
        attributes: vec![kv("namespace", ns)],
        events: vec![span::Event {
            name: "exception".into(),
            attributes: vec![kv("exception.type", "E")],
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(vec![kv("service.name", "checkout")]),
            scope_spans: vec![ScopeSpans {
                scope: scope("tracer"),
                spans: vec![span("billing", "pay"), span("shop-dev", "cart")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for json in [false, true] {
        let bodies = if json {
            let body = serde_json::to_vec(&req).unwrap();
            split_with(
                &OtlpJson(OtlpSignal::Traces),
                &router(UnmappedPolicy::Default),
                &body,
            )
        } else {
            split_with(
                &OtlpProto(OtlpSignal::Traces),
                &router(UnmappedPolicy::Default),
                &req.encode_to_vec(),
            )
        }
        .unwrap()
        .0;
        for (tenant, name) in [("globex", "pay"), ("acme", "cart")] {
            let got: ExportTraceServiceRequest = if json {
                serde_json::from_slice(&bodies[tenant]).unwrap()
            } else {
                ExportTraceServiceRequest::decode(bodies[tenant].as_slice()).unwrap()
            };
            let mut want = req.clone();
            want.resource_spans[0].scope_spans[0]
                .spans
                .retain(|s| s.name == name);
            assert_eq!(got, want, "{tenant} (json: {json})");
        }
    }
}

#[test]
fn hostile_nesting_and_floods_are_refused_not_recursed() {
    // An attribute value nested far deeper than any SDK writes.
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("x".into())),
    };
    for i in 0..200 {
        value = AnyValue {
            value: Some(if i % 2 == 0 {
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })
            } else {
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(value),
                        ..Default::default()
                    }],
                })
            }),
        };
    }
    let mut req = logs_request();
    req.resource_logs[0].scope_logs[0].log_records[0].body = Some(value);
    let router = router(UnmappedPolicy::Default);
    let err = split_with(&OtlpProto(OtlpSignal::Logs), &router, &req.encode_to_vec()).unwrap_err();
    assert!(
        matches!(err, RouteError::Wire(WireError::TooDeep { .. })),
        "{err}"
    );
    let json = serde_json::to_vec(&req).unwrap();
    let err = split_with(&OtlpJson(OtlpSignal::Logs), &router, &json).unwrap_err();
    assert!(
        matches!(
            err,
            RouteError::Wire(WireError::TooDeep { .. } | WireError::OtlpJson(_))
        ),
        "{err}"
    );

    // More attributes on one item than max_labels.
    let limits = RequestLimits {
        max_labels: 3,
        ..RequestLimits::default()
    };
    let small = Router::new(
        &Routing {
            default_tenant: "fallback".into(),
            ..Default::default()
        },
        limits,
    );
    let mut req = logs_request();
    req.resource_logs[0].scope_logs[0].log_records[0]
        .attributes
        .extend((0..3).map(|i| kv(&format!("a{i}"), "v")));
    for (format, body) in [
        (0, req.encode_to_vec()),
        (1, serde_json::to_vec(&req).unwrap()),
    ] {
        let err = if format == 0 {
            split_with(&OtlpProto(OtlpSignal::Logs), &small, &body)
        } else {
            split_with(&OtlpJson(OtlpSignal::Logs), &small, &body)
        }
        .unwrap_err();
        assert!(
            matches!(
                err,
                RouteError::Wire(WireError::TooMany {
                    item: crate::request_limits::LimitedItem::Attributes,
                    ..
                })
            ),
            "{err}"
        );
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let router = router(UnmappedPolicy::Default);
    for body in [
        &b"\x0a\xff\xff\xff\xff\x0f"[..],
        b"\x0a\x02\x12\x05",
        b"\x0b",
        b"{\"resourceMetrics\": 3, \"resourceLogs\": 3, \"resourceSpans\": 3}",
        b"[]",
    ] {
        for signal in [OtlpSignal::Metrics, OtlpSignal::Logs, OtlpSignal::Traces] {
            assert!(split_with(&OtlpProto(signal), &router, body).is_err() || body.is_empty());
            assert!(split_with(&OtlpJson(signal), &router, body).is_err());
        }
    }
}

/// Random requests: resources with or without a namespace, points with a
/// namespace, another or none.
fn random_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let ns = prop_oneof![
        Just(None),
        Just(Some("shop-prod")),
        Just(Some("billing")),
        Just(Some("nowhere")),
    ];
    // Whole numbers: the test decodes JSON with serde_json, whose float
    // parsing is not exact in the last bit (orgsplit copies the text).
    let point = (ns.clone(), -1000i32..1000).prop_map(|(ns, v)| number(ns, f64::from(v)));
    let metric = (0u8..3, prop::collection::vec(point, 0..4)).prop_map(|(kind, points)| {
        if kind == 0 {
            gauge("g", points)
        } else {
            sum(&format!("s{kind}"), points)
        }
    });
    let scope_metrics = prop::collection::vec(metric, 0..3).prop_map(|metrics| ScopeMetrics {
        scope: scope("s"),
        metrics,
        ..Default::default()
    });
    let rm =
        (ns, prop::collection::vec(scope_metrics, 0..3)).prop_map(|(ns, scopes)| ResourceMetrics {
            resource: resource(
                ns.map(|ns| vec![kv("k8s.namespace.name", ns)])
                    .unwrap_or_default(),
            ),
            scope_metrics: scopes,
            ..Default::default()
        });
    prop::collection::vec(rm, 0..4)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_point_reaches_exactly_its_tenant(req in random_request()) {
        let mut want = metrics_reference(&req);
        want.retain(|_, v| !v.is_empty());
        let got = metrics_split(&req, false);
        // Tenants of resources that went whole with no points are there too.
        let got: BTreeMap<_, _> = got.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        prop_assert_eq!(&got, &want);
        // JSON gives the same items.
        let got: BTreeMap<_, _> =
            metrics_split(&req, true).into_iter().filter(|(_, v)| !v.is_empty()).collect();
        prop_assert_eq!(got, want);
    }

    /// What coalescing does to two pushes' requests for one tenant
    /// (`codec::join`, uncompressed): the joined body decodes, with the
    /// reference, to both requests' items and nothing else.
    #[test]
    fn two_tenant_requests_joined_decode_as_both(a in random_request(), b in random_request()) {
        let router = router(UnmappedPolicy::Default);
        let split = |r: &ExportMetricsServiceRequest| {
            split_with(&OtlpProto(OtlpSignal::Metrics), &router, &r.encode_to_vec()).unwrap().0
        };
        let flat = |body: &[u8]| {
            metrics_reference_flat(&ExportMetricsServiceRequest::decode(body).unwrap())
        };
        let (sa, sb) = (split(&a), split(&b));
        for (tenant, body_a) in &sa {
            let Some(body_b) = sb.get(tenant) else { continue };
            let mut joined = Vec::new();
            crate::codec::join(
                crate::codec::Codec::Identity,
                &[bytes::Bytes::from(body_a.clone()), bytes::Bytes::from(body_b.clone())],
                &mut joined,
            );
            let mut got = flat(&joined);
            got.sort();
            let mut want = flat(body_a);
            want.extend(flat(body_b));
            want.sort();
            prop_assert_eq!(got, want, "tenant {}", tenant);
        }
    }
}

#[test]
fn label_mode_takes_the_tenant_from_the_attribute() {
    let r = Routing {
        mode: crate::config::RoutingMode::Label,
        tenant_label: "tenant".into(),
        tenant_prefix: "t-".into(),
        unmapped: UnmappedPolicy::Drop,
        ..Default::default()
    };
    let router = Router::new(&r, RequestLimits::default());
    let mut req = logs_request();
    req.resource_logs[0].scope_logs[0].log_records[0]
        .attributes
        .push(kv("tenant", "blue"));
    req.resource_logs[1]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("tenant", "green"));
    for json in [false, true] {
        let (bodies, stats) = if json {
            let body = serde_json::to_vec(&req).unwrap();
            split_with(&OtlpJson(OtlpSignal::Logs), &router, &body)
        } else {
            split_with(&OtlpProto(OtlpSignal::Logs), &router, &req.encode_to_vec())
        }
        .unwrap();
        assert_eq!(bodies.keys().collect::<Vec<_>>(), ["t-blue", "t-green"]);
        // The two records without a tenant attribute are dropped, counted.
        assert_eq!(stats.dropped_samples, 2, "json: {json}");
    }
}

/// Brackets inside strings do not nest: a log line full of them is taken,
/// as is a value nested as deep as the JSON bound allows (2 ×
/// MAX_VALUE_DEPTH + 1 levels of JSON; an array value adds three).
#[test]
fn json_values_within_the_bound_are_taken_whatever_their_strings_hold() {
    let line = "[{".repeat(4 * MAX_VALUE_DEPTH);
    let mut deepest = r#"{"stringValue":"x"}"#.to_string();
    for _ in 0..(2 * MAX_VALUE_DEPTH) / 3 {
        deepest = format!(r#"{{"arrayValue":{{"values":[{deepest}]}}}}"#);
    }
    let split = |body: &str| {
        let json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{body}}}]}}]}}]}}"#
        );
        split_with(
            &OtlpJson(OtlpSignal::Logs),
            &router(UnmappedPolicy::Default),
            json.as_bytes(),
        )
    };
    for body in [format!(r#"{{"stringValue":"{line}"}}"#), deepest.clone()] {
        let split = split(&body);
        assert!(split.is_ok(), "{body}: {:?}", split.err());
    }
    let deeper = format!(r#"{{"arrayValue":{{"values":[{deepest}]}}}}"#);
    assert!(matches!(
        split(&deeper),
        Err(RouteError::Wire(WireError::TooDeep { .. }))
    ));
}

#[test]
fn json_values_nested_past_the_bound_are_refused() {
    // Deep enough to pass serde_json's own limit (128), past orgsplit's.
    let mut value = r#"{"stringValue":"x"}"#.to_string();
    for _ in 0..(MAX_VALUE_DEPTH + 5) {
        value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
    }
    const { assert!(3 * (MAX_VALUE_DEPTH + 5) < 128) };
    let body =
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{value}}}]}}]}}]}}"#);
    let err = split_with(
        &OtlpJson(OtlpSignal::Logs),
        &router(UnmappedPolicy::Default),
        body.as_bytes(),
    )
    .unwrap_err();
    assert!(
        matches!(err, RouteError::Wire(WireError::TooDeep { .. })),
        "{err}"
    );
}

#[test]
fn json_fields_given_twice_are_refused_not_guessed() {
    // Decoders disagree on which `attributes` counts: orgsplit refuses.
    let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"namespace","value":{"stringValue":"shop-prod"}}],"attributes":[{"key":"namespace","value":{"stringValue":"billing"}}]}]}]}]}"#;
    let err = split_with(
        &OtlpJson(OtlpSignal::Logs),
        &router(UnmappedPolicy::Default),
        body,
    )
    .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    // The two spellings of one field count as the same field.
    let body = br#"{"resourceLogs":[],"resource_logs":[]}"#;
    assert!(split_with(
        &OtlpJson(OtlpSignal::Logs),
        &router(UnmappedPolicy::Default),
        body
    )
    .is_err());
}

/// A level is read once, its list walked as the object is read; the
/// order of a resource's fields (its `scopeLogs` before its `resource`)
/// and a list given twice or as `null` read as before, and nothing may
/// follow the request.
#[test]
fn json_fields_in_any_order_split_alike_and_trailing_text_is_refused() {
    let router = router(UnmappedPolicy::Default);
    let split = |body: &str| split_with(&OtlpJson(OtlpSignal::Logs), &router, body.as_bytes());
    let scopes = r#""scopeLogs":[{"logRecords":[{"body":{"stringValue":"a"}},{"body":{"stringValue":"b"},"attributes":[{"key":"namespace","value":{"stringValue":"billing"}}]}]}]"#;
    let resource = r#""resource":{"attributes":[{"key":"k8s.namespace.name","value":{"stringValue":"shop-prod"}}]}"#;
    let plain = r#""resource":{}"#;
    for (first, second, tenants) in [
        (resource, scopes, vec!["acme"]),
        (scopes, resource, vec!["acme"]),
        (plain, scopes, vec!["fallback", "globex"]),
        (scopes, plain, vec!["fallback", "globex"]),
    ] {
        let body = format!(r#"{{"resourceLogs":[{{{first},{second}}}]}}"#);
        let (bodies, stats) = split(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(bodies.keys().collect::<Vec<_>>(), tenants, "{body}");
        assert_eq!(stats.received.samples, 2, "{body}");
    }
    let (bodies, _) = split(&format!(r#"{{"resourceLogs":[{{{resource},{scopes}}}]}}"#)).unwrap();
    let whole: serde_json::Value = serde_json::from_slice(&bodies["acme"]).unwrap();
    assert_eq!(
        whole["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the resource goes whole, both records in it"
    );
    for refused in [
        format!(r#"{{"resourceLogs":[{{{resource},{scopes},{scopes}}}]}}"#),
        format!(r#"{{"resourceLogs":[{{{scopes},{resource},{scopes}}}]}}"#),
        format!(r#"{{"resourceLogs":[{{{resource},{scopes},{resource}}}]}}"#),
        format!(r#"{{"resourceLogs":[{{{scopes},{resource},{resource}}}]}}"#),
        format!(r#"{{"resourceLogs":[{{{resource},{scopes}}}],"resourceLogs":[]}}"#),
        format!(r#"{{"resourceLogs":[{{{resource},{scopes}}}]}} x"#),
        format!(r#"{{"resourceLogs":[{{{resource},{scopes}}}]}}{{}}"#),
        r#"{"resourceLogs":[{"scopeLogs":{}}]}"#.to_string(),
    ] {
        assert!(split(&refused).is_err(), "{refused}");
    }
    for empty in [
        r#"{"resourceLogs":null}"#,
        r#"{"resourceLogs":[{"scopeLogs":null}]}"#,
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":null}]}]}"#,
    ] {
        let (bodies, stats) = split(empty).unwrap();
        assert!(bodies.is_empty(), "{empty}");
        assert_eq!(stats.received.samples, 0);
    }
}
