//! Realistic remote-write requests and Loki pushes for tests, benches, fuzz
//! seeds and the load generator. Deterministic: the same seed gives the same bytes.

use prost::Message;

use crate::formats::rw1::pb;

/// Shape of a generated request.
#[derive(Debug, Clone)]
pub struct Shape {
    pub series: usize,
    /// Distinct namespaces, named `ns-0`, `ns-1`, ...
    pub namespaces: usize,
    /// Labels per series, including `__name__` and `namespace`.
    pub labels: usize,
    pub samples_per_series: usize,
    /// Every n-th series carries a native histogram instead of samples (0: none).
    pub histogram_every: usize,
    /// Every n-th series carries an exemplar (0: none).
    pub exemplar_every: usize,
    /// Every n-th series has no namespace label (0: none).
    pub no_namespace_every: usize,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            series: 2000,
            namespaces: 20,
            labels: 12,
            samples_per_series: 1,
            histogram_every: 0,
            exemplar_every: 0,
            no_namespace_every: 0,
            seed: 1,
        }
    }
}

/// A tiny xorshift generator, so tests need no RNG dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn label(name: &str, value: impl Into<String>) -> pb::Label {
    pb::Label {
        name: name.into(),
        value: value.into(),
    }
}

/// A native histogram sample with a few buckets.
pub fn histogram(ts: i64, n: u64) -> pb::Histogram {
    pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(n + 3)),
        sum: n as f64 * 0.25,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: Some(pb::histogram::ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![
            pb::BucketSpan {
                offset: 0,
                length: 2,
            },
            pb::BucketSpan {
                offset: 3,
                length: 1,
            },
        ],
        positive_deltas: vec![1, 0, (n % 5) as i64],
        negative_spans: vec![],
        negative_deltas: vec![],
        negative_counts: vec![],
        positive_counts: vec![],
        reset_hint: 0,
        timestamp: ts,
        custom_values: vec![],
    }
}

/// Generates a request of the given shape, in the style of what Prometheus
/// sends for Kubernetes pods (job, instance, pod, container, ... labels).
pub fn request(shape: &Shape) -> pb::WriteRequest {
    let mut rng = Rng(shape.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let names = [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "go_goroutines",
        "container_memory_working_set_bytes",
        "kube_pod_status_ready",
    ];
    let extra = [
        "job",
        "instance",
        "pod",
        "container",
        "endpoint",
        "service",
        "prometheus",
        "code",
        "method",
        "handler",
        "le",
        "node",
        "image",
        "uid",
    ];
    let base_ts = 1_700_000_000_000i64;
    let mut timeseries = Vec::with_capacity(shape.series);
    for i in 0..shape.series {
        let ns = (rng.next() % shape.namespaces.max(1) as u64) as usize;
        let mut labels = vec![label(
            "__name__",
            names[(rng.next() % names.len() as u64) as usize],
        )];
        let omit_ns = shape.no_namespace_every > 0 && i % shape.no_namespace_every == 0;
        for name in extra.iter().take(shape.labels.saturating_sub(2)) {
            labels.push(label(name, format!("{name}-{}-{ns}", rng.next() % 1000)));
        }
        if !omit_ns {
            labels.push(label("namespace", format!("ns-{ns}")));
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ts = pb::TimeSeries {
            labels,
            ..Default::default()
        };
        if shape.histogram_every > 0 && i % shape.histogram_every == 0 {
            ts.histograms
                .push(histogram(base_ts + i as i64, rng.next() % 100));
        } else {
            for s in 0..shape.samples_per_series {
                ts.samples.push(pb::Sample {
                    value: (rng.next() % 100_000) as f64 / 7.0,
                    timestamp: base_ts + (s as i64) * 15_000,
                });
            }
        }
        if shape.exemplar_every > 0 && i % shape.exemplar_every == 0 {
            ts.exemplars.push(pb::Exemplar {
                labels: vec![label("trace_id", format!("{:016x}", rng.next()))],
                value: 0.123,
                timestamp: base_ts,
            });
        }
        timeseries.push(ts);
    }
    pb::WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// A request shaped like real cAdvisor and kube-state-metrics output, as
/// a Prometheus scraping kubelets sends it: pods of a few containers, each
/// container with a run of metrics, long label values (cgroup paths, image
/// references, container IDs) repeated across the run; namespaces spread
/// over `shape.namespaces`. It compresses about 5:1 with snappy, like the
/// real thing, where [`request`]'s random values compress about 3.5:1.
pub fn cadvisor_request(shape: &Shape) -> pb::WriteRequest {
    let mut rng = Rng(shape.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let metrics = [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_spec_memory_limit_bytes",
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_resource_requests",
        "container_cpu_cfs_throttled_periods_total",
    ];
    let images = [
        "registry.example.com/platform/api-gateway:v2.14.3",
        "docker.io/library/nginx:1.27.2-alpine",
        "quay.io/prometheus/node-exporter:v1.8.2",
        "ghcr.io/acme/billing-worker@sha256:5f1d8c2e4b7a9c0d3e6f8a1b2c4d5e7f9a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d",
    ];
    let base_ts = 1_700_000_000_000i64;
    let mut timeseries = Vec::with_capacity(shape.series);
    while timeseries.len() < shape.series {
        // One pod: a namespace, a node, a few containers.
        let ns = (rng.next() % shape.namespaces.max(1) as u64) as usize;
        let node = rng.next() % 40;
        let pod_uid = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            rng.next() as u32,
            rng.next() as u16,
            rng.next() as u16,
            rng.next() as u16,
            rng.next() & 0xffff_ffff_ffff
        );
        let pod = format!(
            "workload-{ns}-{:x}-{:05x}",
            rng.next() % 0xffff_ffff,
            rng.next() % 0xfffff
        );
        for c in 0..(1 + rng.next() % 3) {
            // A few of the container's metrics per push (Prometheus sends a
            // scrape's series in several pushes, interleaved with others).
            let first = (rng.next() % metrics.len() as u64) as usize;
            let run = 1 + (rng.next() % 3) as usize;
            let container = ["app", "sidecar", "init-config"][c as usize];
            let cid = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                rng.next()
            );
            let image = images[(rng.next() % images.len() as u64) as usize];
            for metric in metrics.iter().cycle().skip(first).take(run) {
                if timeseries.len() == shape.series {
                    break;
                }
                let mut labels = vec![
                    label("__name__", *metric),
                    label("container", container),
                    label("id", format!("/kubepods/burstable/pod{pod_uid}/{cid}")),
                    label("image", image),
                    label(
                        "instance",
                        format!("10.20.{}.{}:10250", node / 8, 10 + node),
                    ),
                    label("job", "kubelet"),
                    label("metrics_path", "/metrics/cadvisor"),
                    label("name", &cid[..16]),
                    label("namespace", format!("ns-{ns}")),
                    label("node", format!("worker-{node:02}")),
                    label("pod", pod.clone()),
                ];
                labels.truncate(shape.labels.max(3).min(labels.len()));
                if !labels.iter().any(|l| l.name == "namespace") {
                    labels.push(label("namespace", format!("ns-{ns}")));
                }
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                let samples = (0..shape.samples_per_series.max(1))
                    .map(|s| pb::Sample {
                        value: (rng.next() % 1_000_000_000) as f64 / 3.7,
                        // Each target is scraped at its own offset.
                        timestamp: base_ts + (node as i64) * 311 + (s as i64) * 15_000,
                    })
                    .collect();
                timeseries.push(pb::TimeSeries {
                    labels,
                    samples,
                    ..Default::default()
                });
            }
        }
    }
    pb::WriteRequest {
        timeseries,
        metadata: vec![],
    }
}

/// Puts every series of `req` into namespace `ns`.
pub fn set_namespace(req: &mut pb::WriteRequest, ns: &str) {
    for label in req.timeseries.iter_mut().flat_map(|s| s.labels.iter_mut()) {
        if label.name == "namespace" {
            label.value = ns.into();
        }
    }
}

/// `namespace: organization` pairs for `namespaces` namespaces spread over
/// `orgs` organizations: `ns-i` belongs to `org-(i % orgs)`.
pub fn table_pairs(namespaces: usize, orgs: usize) -> Vec<(String, String)> {
    (0..namespaces)
        .map(|i| (format!("ns-{i}"), format!("org-{}", i % orgs.max(1))))
        .collect()
}

/// One Loki push in both encodings, with the number of log lines.
pub struct LokiPush {
    /// `logproto.PushRequest`, not yet snappy-compressed.
    pub proto: Vec<u8>,
    /// The same streams as Loki's JSON push body.
    pub json: Vec<u8>,
    pub lines: usize,
}

/// A Loki push shaped like a log agent's batch: `shape.series` streams of
/// 20 entries each (logfmt lines of about 120 bytes), labelled `app`,
/// `container`, `namespace` (over `shape.namespaces`) and `pod`.
pub fn loki_push(shape: &Shape) -> LokiPush {
    use crate::formats::loki::pb as loki;
    let mut proto = Vec::new();
    let mut json = Vec::new();
    let seed = shape.seed as usize;
    for s in 0..shape.series {
        let (app, ns) = ((s + seed) % 13, (s + seed) % shape.namespaces.max(1));
        let pod = format!("svc-{s}-{seed}d9f8b6c5-x2x9z");
        let mut entries = Vec::new();
        let mut values = Vec::new();
        for e in 0..20 {
            let ts = 1_700_000_000_000_000_000i64 + (seed * 1_000_000 + s * 20 + e) as i64;
            let line = format!(
                "level=info ts=2024-01-01T00:00:00.{e:03}Z caller=handler.go:{s} msg=\"request served\" status=200 bytes={}",
                s * 31 + e
            );
            entries.push(loki::EntryAdapter {
                timestamp: Some(loki::Timestamp {
                    seconds: ts / 1_000_000_000,
                    nanos: (ts % 1_000_000_000) as i32,
                }),
                line: line.clone().into_bytes(),
                ..Default::default()
            });
            values.push(serde_json::json!([ts.to_string(), line]));
        }
        json.push(serde_json::json!({
            "stream": {"app": format!("svc-{app}"), "container": "main", "namespace": format!("ns-{ns}"), "pod": pod},
            "values": values,
        }));
        proto.push(loki::StreamAdapter {
            labels: format!(
                r#"{{app="svc-{app}", container="main", namespace="ns-{ns}", pod="{pod}"}}"#
            ),
            entries,
            hash: 0,
        });
    }
    LokiPush {
        proto: loki::PushRequest {
            streams: proto,
            format: String::new(),
        }
        .encode_to_vec(),
        json: serde_json::json!({ "streams": json })
            .to_string()
            .into_bytes(),
        lines: shape.series * 20,
    }
}

/// Encodes and snappy-compresses a request, as Prometheus sends it.
pub fn compress(request: &pb::WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compression of an in-memory buffer")
}

/// Decompresses and decodes a request, as a receiver would.
pub fn decompress(body: &[u8]) -> Result<pb::WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| e.to_string())?;
    pb::WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())
}

/// Checks that the zero-copy split and the prost reference agree on `body`:
/// both reject it, or both produce the same tenants with the same series
/// (bit for bit, in order), metadata and drop count.
pub fn agreement(
    router: &crate::route::Router,
    body: &[u8],
    table: &crate::table::Snapshot,
) -> Result<(), String> {
    use std::collections::BTreeMap;
    let reference = crate::route::reference::split(router, body, table);
    let fast = router.split_rw1(body, table, &crate::route::FamilyIndex::default());
    match (reference, fast) {
        (None, Err(_)) => Ok(()),
        (Some(r), Ok(split)) => {
            let mut got = BTreeMap::new();
            for b in &split.batches {
                let decoded = pb::WriteRequest::decode(b.body.as_slice())
                    .map_err(|e| format!("batch for {:?} does not decode: {e}", b.tenant))?;
                // encodings, so NaNs compare bitwise
                got.insert(b.tenant.to_string(), decoded.encode_to_vec());
            }
            let want: BTreeMap<String, Vec<u8>> = r
                .tenants
                .iter()
                .map(|(k, v)| (k.clone(), v.encode_to_vec()))
                .collect();
            if got != want {
                return Err(format!(
                    "tenants differ: zero-copy {:?}, reference {:?}",
                    got.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>()
                ));
            }
            let dropped: u64 = split.stats.dropped.iter().sum();
            if dropped != r.dropped {
                return Err(format!("dropped {dropped} vs reference {}", r.dropped));
            }
            Ok(())
        }
        (r, f) => Err(format!(
            "paths disagree: reference {}, zero-copy {}",
            if r.is_some() { "accepts" } else { "rejects" },
            match f {
                Ok(_) => "accepts".to_string(),
                Err(e) => format!("rejects: {e}"),
            }
        )),
    }
}

/// Remote write 2.0 requests: built from 1.0 ones or by hand, and resolved
/// back into plain series (the reference reading of a 2.0 request).
pub mod rw2 {
    use std::collections::HashMap;

    use prost::Message;

    use crate::formats::rw1::pb;
    use crate::formats::rw2::pb as v2;

    /// Interns strings into a request's symbol table ("" first).
    #[derive(Debug)]
    pub struct Builder {
        pub request: v2::Request,
        index: HashMap<String, u32>,
    }

    impl Default for Builder {
        fn default() -> Self {
            let mut b = Self {
                request: v2::Request::default(),
                index: HashMap::new(),
            };
            b.sym("");
            b
        }
    }

    impl Builder {
        /// The ref of `s`, added to the table if new.
        pub fn sym(&mut self, s: &str) -> u32 {
            if let Some(&r) = self.index.get(s) {
                return r;
            }
            let r = self.request.symbols.len() as u32;
            self.request.symbols.push(s.to_string());
            self.index.insert(s.to_string(), r);
            r
        }

        /// Refs of `labels`, as name, value pairs.
        pub fn refs(&mut self, labels: &[(&str, &str)]) -> Vec<u32> {
            labels
                .iter()
                .flat_map(|(n, v)| [self.sym(n), self.sym(v)])
                .collect()
        }

        /// Adds a series with one sample.
        pub fn series(
            &mut self,
            labels: &[(&str, &str)],
            value: f64,
            ts: i64,
        ) -> &mut v2::TimeSeries {
            let labels_refs = self.refs(labels);
            self.request.timeseries.push(v2::TimeSeries {
                labels_refs,
                samples: vec![v2::Sample {
                    value,
                    timestamp: ts,
                    start_timestamp: 0,
                }],
                ..Default::default()
            });
            self.request.timeseries.last_mut().expect("just pushed")
        }
    }

    /// The 2.0 form of a 1.0 request: the same series, samples,
    /// histograms and exemplars; each series gets its family's metadata.
    pub fn from_v1(req: &pb::WriteRequest) -> v2::Request {
        let mut b = Builder::default();
        let meta: HashMap<&str, &pb::MetricMetadata> = req
            .metadata
            .iter()
            .map(|m| (m.metric_family_name.as_str(), m))
            .collect();
        for s in &req.timeseries {
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let labels_refs = b.refs(&labels);
            let exemplars = s
                .exemplars
                .iter()
                .map(|e| {
                    let l: Vec<(&str, &str)> = e
                        .labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                        .collect();
                    v2::Exemplar {
                        labels_refs: b.refs(&l),
                        value: e.value,
                        timestamp: e.timestamp,
                    }
                })
                .collect();
            let name = labels
                .iter()
                .find(|(n, _)| *n == "__name__")
                .map_or("", |l| l.1);
            let metadata = meta.get(name).map(|m| v2::Metadata {
                r#type: m.r#type,
                help_ref: b.sym(&m.help),
                unit_ref: b.sym(&m.unit),
            });
            b.request.timeseries.push(v2::TimeSeries {
                labels_refs,
                samples: s
                    .samples
                    .iter()
                    .map(|x| v2::Sample {
                        value: x.value,
                        timestamp: x.timestamp,
                        start_timestamp: 0,
                    })
                    .collect(),
                histograms: s
                    .histograms
                    .iter()
                    .map(|h| {
                        v2::Histogram::decode(h.encode_to_vec().as_slice()).expect("same fields")
                    })
                    .collect(),
                exemplars,
                metadata,
                created_timestamp: 0,
            });
        }
        b.request
    }

    /// Labels as name, value pairs.
    pub type Labels = Vec<(String, String)>;

    /// A series of a 2.0 request with every ref resolved.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Resolved {
        pub labels: Labels,
        /// Samples, histograms and created timestamp, as encoded (so NaNs
        /// compare bitwise): the series without labels, exemplars and
        /// metadata.
        pub payload: Vec<u8>,
        /// Labels, value bits, timestamp.
        pub exemplars: Vec<(Labels, u64, i64)>,
        /// Type, help, unit.
        pub metadata: Option<(i32, String, String)>,
    }

    /// Resolves every ref of `req`; `None` if one is out of range.
    pub fn resolve(req: &v2::Request) -> Option<Vec<Resolved>> {
        let s = |r: u32| req.symbols.get(r as usize).cloned();
        let pairs = |refs: &[u32]| -> Option<Vec<(String, String)>> {
            refs.chunks(2)
                .map(|p| Some((s(p[0])?, s(*p.get(1)?)?)))
                .collect()
        };
        req.timeseries
            .iter()
            .map(|t| {
                let payload = v2::TimeSeries {
                    samples: t.samples.clone(),
                    histograms: t.histograms.clone(),
                    created_timestamp: t.created_timestamp,
                    ..Default::default()
                }
                .encode_to_vec();
                Some(Resolved {
                    labels: pairs(&t.labels_refs)?,
                    payload,
                    exemplars: t
                        .exemplars
                        .iter()
                        .map(|e| Some((pairs(&e.labels_refs)?, e.value.to_bits(), e.timestamp)))
                        .collect::<Option<_>>()?,
                    metadata: match &t.metadata {
                        Some(m) => Some((m.r#type, s(m.help_ref)?, s(m.unit_ref)?)),
                        None => None,
                    },
                })
            })
            .collect()
    }

    /// Encodes and snappy-compresses a 2.0 request.
    pub fn compress(request: &v2::Request) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy compression of an in-memory buffer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cadvisor_corpus_is_shaped_like_the_real_thing() {
        let req = cadvisor_request(&Shape::default());
        assert_eq!(req.timeseries.len(), 2000);
        let raw = req.encode_to_vec();
        let ratio = raw.len() as f64 / compress(&req).len() as f64;
        let per_series = raw.len() / 2000;
        eprintln!("snappy ratio {ratio:.1}:1, {per_series} bytes per series");
        assert!((4.0..6.5).contains(&ratio), "snappy ratio {ratio:.1}:1");
        assert!(
            (250..550).contains(&per_series),
            "{per_series} bytes per series"
        );
        assert!(req.timeseries.iter().all(|s| s.labels.len() == 11));
    }
}

/// OTLP request generators (protobuf, not compressed), for benches and
/// the load test.
pub mod otlp {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::Shape;

    fn kv(k: &str, v: String) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            ..Default::default()
        }
    }

    /// Where each item's namespace is: on its resource
    /// (`k8s.namespace.name`, as the Collector's `k8sattributes` sets it:
    /// one resource per namespace) or on each item (`namespace`, as the
    /// Collector's Prometheus receiver sends: one resource).
    fn resources<T>(
        shape: &Shape,
        per_item: bool,
        item: impl Fn(usize, Option<usize>) -> T,
    ) -> Vec<(Vec<KeyValue>, Vec<T>)> {
        let namespaces = shape.namespaces.max(1);
        let seed = shape.seed as usize;
        if per_item {
            let items = (0..shape.series)
                .map(|i| item(i + seed, Some((i + seed) % namespaces)))
                .collect();
            return vec![(vec![kv("service.name", "prometheus".into())], items)];
        }
        (0..namespaces.min(shape.series.max(1)))
            .map(|ns| {
                let items = (0..shape.series)
                    .filter(|i| i % namespaces == ns)
                    .map(|i| item(i + seed, None))
                    .collect();
                (vec![kv("k8s.namespace.name", format!("ns-{ns}"))], items)
            })
            .collect()
    }

    /// `shape.series` gauge points with 10 attributes, 10 points a metric.
    pub fn metrics(shape: &Shape, per_item: bool) -> Vec<u8> {
        let point = |i: usize, ns: Option<usize>| NumberDataPoint {
            attributes: (0..9)
                .map(|a| kv(&format!("label_{a}"), format!("value-{}-{a}", i % 97)))
                .chain(ns.map(|ns| kv("namespace", format!("ns-{ns}"))))
                .collect(),
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        };
        let resource_metrics = resources(shape, per_item, point)
            .into_iter()
            .map(|(attributes, points)| ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: points
                        .chunks(10)
                        .enumerate()
                        .map(|(m, p)| Metric {
                            name: format!("metric_{m}"),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: p.to_vec(),
                            })),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
    }

    /// `shape.series` log records of about 120 bytes with 4 attributes.
    pub fn logs(shape: &Shape, per_item: bool) -> Vec<u8> {
        let record = |i: usize, ns: Option<usize>| {
            LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "level=info ts=2026-12-07T12:00:00Z caller=handler.go:{} msg=\"request served\" path=/api/v1/items/{i} status=200 took=3.2ms",
                    i % 400
                ))),
            }),
            attributes: [("pod", format!("app-{}", i % 13)), ("container", "app".into())]
                .into_iter()
                .map(|(k, v)| kv(k, v))
                .chain(ns.map(|ns| kv("namespace", format!("ns-{ns}"))))
                .collect(),
            ..Default::default()
        }
        };
        let resource_logs = resources(shape, per_item, record)
            .into_iter()
            .map(|(attributes, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }.encode_to_vec()
    }

    /// The records of [`logs`] (one resource per namespace) as OTLP/HTTP
    /// JSON, written as the protobuf-to-JSON mapping says (lowerCamelCase
    /// keys, 64-bit integers as strings).
    pub fn logs_json(shape: &Shape) -> Vec<u8> {
        use serde_json::{json, Value};
        let req = ExportLogsServiceRequest::decode(&logs(shape, false)[..]).expect("our own logs");
        let string = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let attributes = |a: &[KeyValue]| -> Vec<Value> {
            a.iter()
                .map(|kv| json!({"key": kv.key, "value": {"stringValue": string(&kv.value)}}))
                .collect()
        };
        let resources: Vec<Value> = req
            .resource_logs
            .iter()
            .map(|rl| {
                let scopes: Vec<Value> = rl
                    .scope_logs
                    .iter()
                    .map(|sl| {
                        let records: Vec<Value> = sl
                            .log_records
                            .iter()
                            .map(|r| {
                                json!({
                                    "timeUnixNano": r.time_unix_nano.to_string(),
                                    "severityText": r.severity_text,
                                    "body": {"stringValue": string(&r.body)},
                                    "attributes": attributes(&r.attributes),
                                })
                            })
                            .collect();
                        json!({"scope": {}, "logRecords": records})
                    })
                    .collect();
                let resource = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                json!({"resource": {"attributes": attributes(resource)}, "scopeLogs": scopes})
            })
            .collect();
        serde_json::to_vec(&json!({ "resourceLogs": resources })).expect("JSON values serialise")
    }

    /// `shape.series` spans with 6 attributes.
    pub fn traces(shape: &Shape, per_item: bool) -> Vec<u8> {
        let span = |i: usize, ns: Option<usize>| Span {
            trace_id: (i as u128 * 0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec(),
            span_id: (i as u64 * 0x2545_f491).to_be_bytes().to_vec(),
            name: format!("GET /api/v1/items/{}", i % 50),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_003_000_000 + i as u64,
            attributes: [
                ("http.method", "GET".to_string()),
                ("http.route", format!("/api/v1/items/{}", i % 50)),
                ("http.status_code", "200".into()),
                ("net.peer.name", format!("client-{}", i % 7)),
                ("service.version", "1.4.2".into()),
            ]
            .into_iter()
            .map(|(k, v)| kv(k, v))
            .chain(ns.map(|ns| kv("namespace", format!("ns-{ns}"))))
            .collect(),
            ..Default::default()
        };
        let resource_spans = resources(shape, per_item, span)
            .into_iter()
            .map(|(attributes, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }.encode_to_vec()
    }
}
