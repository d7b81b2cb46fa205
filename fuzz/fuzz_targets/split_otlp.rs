//! Arbitrary bytes as a decoded OTLP export request (the first byte picks
//! metrics, logs or traces, and protobuf or JSON). Must never panic, hang,
//! recurse without bound or allocate beyond the limits; whatever is
//! accepted must come out as tenant requests that decode (protobuf: with
//! the official schema's prost types; JSON: as JSON), every item in the
//! tenant its namespace routes to (namespace mode, protobuf), and every
//! received item either forwarded once or counted as dropped.
#![no_main]

mod common;

use std::sync::LazyLock;

use common::{NO_POOL, TABLE};
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use orgsplit::formats::otlp::{json::OtlpJson, OtlpProto, OtlpSignal};
use orgsplit::route::{FamilyIndex, Router, Split};
use orgsplit::table::Org;
use orgsplit::tenant::Allowance;
use prost::Message;

const KEYS: [&str; 2] = ["k8s.namespace.name", "namespace"];

static ROUTERS: LazyLock<[Router; 2]> = LazyLock::new(|| common::routers(&KEYS));

/// The namespace attributes name, if any (string values only).
fn namespace(attributes: &[KeyValue]) -> Option<&str> {
    KEYS.iter().find_map(|key| {
        let a = attributes.iter().find(|a| a.key == *key)?;
        match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn tenant_of(ns: Option<&str>) -> String {
    match ns.map(|ns| TABLE.get(ns).cloned()) {
        Some(Some(Org::Tenant(t))) => t.to_string(),
        _ => "fallback".into(),
    }
}

/// Every item of a tenant's protobuf request: (the namespace it routes
/// by, counted as one item).
fn items(signal: OtlpSignal, body: &[u8]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    match signal {
        OtlpSignal::Metrics => {
            let req = ExportMetricsServiceRequest::decode(body).expect("tenant metrics decode");
            for rm in &req.resource_metrics {
                let at = rm.resource.as_ref().and_then(|r| namespace(&r.attributes));
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        let attrs: Vec<&[KeyValue]> = match &m.data {
                            Some(Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes[..]).collect(),
                            Some(Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes[..]).collect(),
                            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| &p.attributes[..]).collect(),
                            Some(Data::ExponentialHistogram(h)) => h.data_points.iter().map(|p| &p.attributes[..]).collect(),
                            Some(Data::Summary(s)) => s.data_points.iter().map(|p| &p.attributes[..]).collect(),
                            None => Vec::new(),
                        };
                        for a in attrs {
                            out.push(at.or_else(|| namespace(a)).map(str::to_string));
                        }
                    }
                }
            }
        }
        OtlpSignal::Logs => {
            let req = ExportLogsServiceRequest::decode(body).expect("tenant logs decode");
            for rl in &req.resource_logs {
                let at = rl.resource.as_ref().and_then(|r| namespace(&r.attributes));
                for sl in &rl.scope_logs {
                    for r in &sl.log_records {
                        out.push(at.or_else(|| namespace(&r.attributes)).map(str::to_string));
                    }
                }
            }
        }
        OtlpSignal::Traces => {
            let req = ExportTraceServiceRequest::decode(body).expect("tenant traces decode");
            for rs in &req.resource_spans {
                let at = rs.resource.as_ref().and_then(|r| namespace(&r.attributes));
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(at.or_else(|| namespace(&s.attributes)).map(str::to_string));
                    }
                }
            }
        }
    }
    out
}

fn check(split: &Split, signal: OtlpSignal, json: bool, namespace_mode: bool) {
    let mut forwarded = 0u64;
    for b in &split.batches {
        let n = b.counts.samples + b.counts.histograms;
        forwarded += n;
        if json {
            serde_json::from_slice::<serde_json::Value>(&b.body).expect("tenant JSON parses");
            continue;
        }
        let items = items(signal, &b.body);
        assert_eq!(items.len() as u64, n, "every counted item is in the request");
        if namespace_mode {
            let tenant = b.tenant.to_string();
            for ns in items {
                assert_eq!(tenant, tenant_of(ns.as_deref()), "item in its own tenant");
            }
        }
    }
    let received = split.stats.received.samples + split.stats.received.histograms;
    assert_eq!(forwarded + split.stats.dropped_samples, received);
    if json && !split.batches.is_empty() {
        // The forwarder's merge (coalescing): one document holding every
        // batch's resources.
        let bodies: Vec<&[u8]> = split.batches.iter().map(|b| b.body.as_slice()).collect();
        let mut merged = Vec::new();
        orgsplit::formats::json_batch::merge(&bodies, &mut merged).expect("tenant JSON merges");
        let resources = |body: &[u8]| -> usize {
            let v: serde_json::Value = serde_json::from_slice(body).expect("merged JSON parses");
            let top = v.as_object().expect("an object");
            assert_eq!(top.len(), 1, "one top-level key");
            top.values().next().unwrap().as_array().expect("an array").len()
        };
        let parts: usize = bodies.iter().map(|b| resources(b)).sum();
        assert_eq!(resources(&merged), parts, "every resource once");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let signal = match pick % 3 {
        0 => OtlpSignal::Metrics,
        1 => OtlpSignal::Logs,
        _ => OtlpSignal::Traces,
    };
    let json = pick & 0x80 != 0;
    for (router, namespace_mode) in ROUTERS.iter().zip([true, false]) {
        let split = if json {
            router.split(&OtlpJson(signal), body, &TABLE, &FamilyIndex::default(), &NO_POOL, &Allowance::Any)
        } else {
            router.split(&OtlpProto(signal), body, &TABLE, &FamilyIndex::default(), &NO_POOL, &Allowance::Any)
        };
        if let Ok(split) = split {
            check(&split, signal, json, namespace_mode);
        }
    }
});
