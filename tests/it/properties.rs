//! Properties over random requests and tables: isolation and accounting.

use std::collections::BTreeMap;

use orgsplit::answer::{self, TenantOutcome};
use orgsplit::config::{Routing, UnmappedPolicy};
use orgsplit::formats::rw1::pb;
use orgsplit::route::{FamilyIndex, Router};
use orgsplit::table::{Org, Snapshot};
use proptest::prelude::*;
use prost::Message;

fn arb_series() -> impl Strategy<Value = pb::TimeSeries> {
    (
        prop::option::of(prop_oneof!["ns-[0-9]", "[a-z|./]{0,6}"]),
        "[a-z]{1,5}",
        prop::collection::vec((any::<f64>(), any::<i64>()), 1..3),
    )
        .prop_map(|(ns, name, samples)| {
            let mut labels = vec![pb::Label {
                name: "__name__".into(),
                value: name,
            }];
            if let Some(ns) = ns {
                labels.push(pb::Label {
                    name: "namespace".into(),
                    value: ns,
                });
            }
            pb::TimeSeries {
                labels,
                samples: samples
                    .into_iter()
                    .map(|(value, timestamp)| pb::Sample { value, timestamp })
                    .collect(),
                ..Default::default()
            }
        })
}

/// A series that may also carry an exemplar with labels and extra labels
/// that other series share (so symbols are shared across tenants).
fn arb_rich_series() -> impl Strategy<Value = pb::TimeSeries> {
    (
        arb_series(),
        prop::option::of(("[a-c]", "[a-z]{0,3}")),
        prop::option::of(("[a-z]{0,4}", any::<f64>(), any::<i64>())),
    )
        .prop_map(|(mut s, extra, exemplar)| {
            if let Some((name, value)) = extra {
                s.labels.push(pb::Label {
                    name: format!("x_{name}"),
                    value,
                });
            }
            if let Some((trace, value, timestamp)) = exemplar {
                s.exemplars.push(pb::Exemplar {
                    labels: vec![pb::Label {
                        name: "trace_id".into(),
                        value: trace,
                    }],
                    value,
                    timestamp,
                });
            }
            s
        })
}

fn arb_table() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        ("ns-[0-9]", prop_oneof!["org-[a-c]", "[a-z|./]{0,4}"]),
        0..10,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The union of the per-tenant outputs is the input (as a multiset)
    /// minus what the policy dropped, and every series is in the tenant of
    /// its own namespace's organization, or the default tenant when it has
    /// none.
    #[test]
    fn every_series_lands_in_exactly_its_tenant(
        series in prop::collection::vec(arb_series(), 0..40),
        pairs in arb_table(),
        drop_policy in any::<bool>(),
    ) {
        let table = Snapshot::from_pairs(pairs);
        let router = Router::new(
            &Routing {
                default_tenant: "fallback".into(),
                unmapped: if drop_policy { UnmappedPolicy::Drop } else { UnmappedPolicy::Default },
                ..Default::default()
            },
            Default::default(),
        );
        let req = pb::WriteRequest { timeseries: series.clone(), metadata: vec![] };
        let body = req.encode_to_vec();
        let split = router.split_rw1(&body, &table, &FamilyIndex::default()).unwrap();

        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for b in &split.batches {
            for s in pb::WriteRequest::decode(b.body.as_slice()).unwrap().timeseries {
                out.push((b.tenant.to_string(), s.encode_to_vec()));
            }
        }
        let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dropped = 0u64;
        for s in &series {
            let ns = s.labels.iter().find(|l| l.name == "namespace").map(|l| l.value.as_str());
            let own = ns.and_then(|ns| match table.get(ns) {
                Some(Org::Tenant(t)) => Some(t.to_string()),
                _ => None,
            });
            match (own, drop_policy) {
                (Some(t), _) => expected.push((t, s.encode_to_vec())),
                (None, false) => expected.push(("fallback".into(), s.encode_to_vec())),
                (None, true) => dropped += 1,
            }
        }
        out.sort();
        expected.sort();
        prop_assert_eq!(out, expected);
        prop_assert_eq!(split.stats.dropped.iter().sum::<u64>(), dropped);
        prop_assert_eq!(split.stats.received.series, series.len() as u64);
    }

    /// Remote write 2.0: every tenant's request decodes with the schema's
    /// own types to exactly the input series of that tenant (refs resolved
    /// to the same strings, samples and exemplars bit for bit), and
    /// converted to 1.0 it is exactly what the 1.0 path sends that tenant
    /// for the same series.
    #[test]
    fn a_2_0_split_matches_its_input_and_the_1_0_path(
        series in prop::collection::vec(arb_rich_series(), 0..30),
        pairs in arb_table(),
        drop_policy in any::<bool>(),
    ) {
        use orgsplit::formats::rw2::{self, pb as v2};
        use orgsplit::testing::rw2::{from_v1, resolve};
        static NO_POOL: orgsplit::pool::BufferPool = orgsplit::pool::BufferPool::disabled();
        let table = Snapshot::from_pairs(pairs);
        let router = Router::new(
            &Routing {
                default_tenant: "fallback".into(),
                unmapped: if drop_policy { UnmappedPolicy::Drop } else { UnmappedPolicy::Default },
                ..Default::default()
            },
            Default::default(),
        );
        let v1_request = pb::WriteRequest { timeseries: series, metadata: vec![] };
        let v1_split = router.split_rw1(&v1_request.encode_to_vec(), &table, &FamilyIndex::default()).unwrap();
        let v1_out: BTreeMap<String, pb::WriteRequest> = v1_split
            .batches
            .iter()
            .map(|b| (b.tenant.to_string(), pb::WriteRequest::decode(b.body.as_slice()).unwrap()))
            .collect();

        let v2_request = from_v1(&v1_request);
        let v2_split = router
            .split(&rw2::Rw2, &v2_request.encode_to_vec(), &table, &FamilyIndex::default(), &NO_POOL, &orgsplit::tenant::Allowance::Any)
            .unwrap();
        prop_assert_eq!(v2_split.stats.received, v1_split.stats.received);
        prop_assert_eq!(v2_split.stats.dropped, v1_split.stats.dropped);
        let mut tenants = Vec::new();
        for b in &v2_split.batches {
            let tenant = b.tenant.to_string();
            let got = v2::Request::decode(b.body.as_slice()).unwrap();
            prop_assert_eq!(got.symbols.first().map(String::as_str), Some(""));
            // Exactly this tenant's series of the input, resolved.
            let want = resolve(&from_v1(&v1_out[&tenant])).unwrap();
            prop_assert_eq!(resolve(&got).unwrap(), want);
            // Converted to 1.0: what the 1.0 path sent this tenant.
            let mut converted = Vec::new();
            rw2::to_v1(&b.body, Default::default(), &mut converted).unwrap();
            let converted = pb::WriteRequest::decode(converted.as_slice()).unwrap();
            let encode = |r: &pb::WriteRequest| r.timeseries.iter().map(|t| t.encode_to_vec()).collect::<Vec<_>>();
            prop_assert_eq!(encode(&converted), encode(&v1_out[&tenant]));
            tenants.push(tenant);
        }
        tenants.sort();
        prop_assert_eq!(tenants, v1_out.keys().cloned().collect::<Vec<_>>());
    }

    /// 2xx only if every tenant push succeeded; retryable whenever any push
    /// failed retryably.
    #[test]
    fn the_answer_is_2xx_only_if_every_push_succeeded(
        outcomes in prop::collection::vec(prop_oneof![
            Just(TenantOutcome::Accepted),
            (400u16..600, prop::option::of(0u64..120)).prop_map(|(status, retry_after)| TenantOutcome::Status {
                status, retry_after, message: "m".into() }),
            Just(TenantOutcome::Timeout),
            Just(TenantOutcome::Unreachable("refused".into())),
        ], 0..8)
    ) {
        let results: Vec<(String, TenantOutcome)> =
            outcomes.iter().cloned().enumerate().map(|(i, o)| (format!("t{i}"), o)).collect();
        let a = answer::combine(&results);
        let all_ok = outcomes.iter().all(|o| *o == TenantOutcome::Accepted);
        prop_assert_eq!(a.status.is_success(), all_ok);
        let any_retryable = outcomes.iter().any(|o| o.is_retryable());
        let prometheus_retries = a.status.is_server_error() || a.status.as_u16() == 429;
        prop_assert_eq!(prometheus_retries, any_retryable);
        if a.status.as_u16() == 429 {
            let only_429 = outcomes
                .iter()
                .filter(|o| o.is_retryable())
                .all(|o| matches!(o, TenantOutcome::Status { status: 429, .. }));
            prop_assert!(only_429, "429 although other retryable failures happened");
        }
        // every failed tenant is named
        for (t, o) in &results {
            if o.is_retryable() || (!any_retryable && *o != TenantOutcome::Accepted) {
                prop_assert!(a.body.contains(&format!("tenant {t}:")), "{}", a.body);
            }
        }
    }
}

#[test]
fn stats_match_the_outputs_on_a_large_request() {
    let req = orgsplit::testing::request(&orgsplit::testing::Shape {
        series: 5000,
        namespaces: 50,
        no_namespace_every: 7,
        ..Default::default()
    });
    let table = Snapshot::from_pairs(orgsplit::testing::table_pairs(40, 9));
    let router = Router::new(
        &Routing {
            unmapped: UnmappedPolicy::Drop,
            ..Default::default()
        },
        Default::default(),
    );
    let body = req.encode_to_vec();
    let split = router
        .split_rw1(&body, &table, &FamilyIndex::default())
        .unwrap();
    let mut per_tenant = BTreeMap::new();
    for b in &split.batches {
        let n = pb::WriteRequest::decode(b.body.as_slice())
            .unwrap()
            .timeseries
            .len() as u64;
        assert_eq!(n, b.counts.series);
        per_tenant.insert(b.tenant.to_string(), n);
    }
    let forwarded: u64 = per_tenant.values().sum();
    assert_eq!(forwarded + split.stats.dropped.iter().sum::<u64>(), 5000);
    assert_eq!(per_tenant.len(), 9);
}

/// A label value quoted the way a Loki client might: raw backquotes, or
/// double or single quotes with Go escapes (`style` picks which, and
/// whether plain characters are escaped too).
fn go_quote(value: &str, style: u8) -> String {
    if style % 3 == 0 && !value.contains('`') {
        return format!("`{value}`");
    }
    let q = if style % 3 == 2 { '\'' } else { '"' };
    let mut out = String::from(q);
    for c in value.chars() {
        match c {
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_alphanumeric() && style & 4 != 0 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_ascii_alphanumeric() && style & 16 != 0 => {
                out.push_str(&format!("\\{:03o}", c as u32))
            }
            c if !c.is_ascii() && style & 8 != 0 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// A Loki stream: its labels (namespace maybe), quoting styles, entries
/// (timestamp in ns, line).
type LokiStream = (Vec<(String, String)>, u8, Vec<(i64, Vec<u8>)>);

fn arb_loki_stream() -> impl Strategy<Value = LokiStream> {
    (
        prop::option::of(prop_oneof!["ns-[0-9]", "[a-z\"'`\\\\\n é]{0,5}"]),
        prop::collection::vec(("[a-z_][a-z0-9_]{0,4}", "[a-z \"é]{0,4}"), 1..3),
        any::<u8>(),
        prop::collection::vec(
            (any::<i64>(), prop::collection::vec(any::<u8>(), 0..12)),
            0..3,
        ),
    )
        .prop_map(|(ns, mut labels, style, entries)| {
            labels.retain(|(n, _)| n != "namespace");
            if let Some(ns) = ns {
                let at = style as usize % (labels.len() + 1);
                labels.insert(at, ("namespace".into(), ns));
            }
            (labels, style, entries)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Loki pushes, protobuf and JSON: the per-tenant outputs reassemble
    /// the input (each stream byte for byte, in exactly the tenant of its
    /// namespace's organization, or the default tenant), minus what the
    /// policy dropped, counted.
    #[test]
    fn loki_outputs_reassemble_the_input(
        streams in prop::collection::vec(arb_loki_stream(), 0..20),
        pairs in arb_table(),
        drop_policy in any::<bool>(),
    ) {
        use orgsplit::formats::loki::{pb as lp, LokiJson, LokiProto};
        static NO_POOL: orgsplit::pool::BufferPool = orgsplit::pool::BufferPool::disabled();
        let table = Snapshot::from_pairs(pairs);
        let router = Router::new(
            &Routing {
                default_tenant: "fallback".into(),
                unmapped: if drop_policy { UnmappedPolicy::Drop } else { UnmappedPolicy::Default },
                ..Default::default()
            },
            Default::default(),
        );
        let tenant_of = |labels: &[(String, String)]| -> Option<String> {
            let ns = labels.iter().find(|(n, _)| n == "namespace").map(|(_, v)| v.as_str());
            match ns.filter(|ns| !ns.is_empty()).map(|ns| table.get(ns)) {
                Some(Some(Org::Tenant(t))) => Some(t.to_string()),
                _ => (!drop_policy).then(|| "fallback".to_string()),
            }
        };

        // Protobuf, the label string quoted in many ways.
        let proto: Vec<lp::StreamAdapter> = streams
            .iter()
            .map(|(labels, style, entries)| lp::StreamAdapter {
                labels: format!(
                    "{{{}}}",
                    labels
                        .iter()
                        .enumerate()
                        .map(|(i, (n, v))| format!("{n}={}", go_quote(v, style.rotate_left(i as u32))))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                entries: entries
                    .iter()
                    .map(|(ns, line)| lp::EntryAdapter {
                        timestamp: Some(lp::Timestamp { seconds: ns / 1_000_000_000, nanos: (ns % 1_000_000_000) as i32 }),
                        line: line.clone(),
                        ..Default::default()
                    })
                    .collect(),
                hash: 0,
            })
            .collect();
        let body = lp::PushRequest { streams: proto.clone(), format: String::new() }.encode_to_vec();
        let split = router
            .split(&LokiProto, &body, &table, &FamilyIndex::default(), &NO_POOL, &orgsplit::tenant::Allowance::Any)
            .unwrap();
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for b in &split.batches {
            for s in lp::PushRequest::decode(b.body.as_slice()).unwrap().streams {
                out.push((b.tenant.to_string(), s.encode_to_vec()));
            }
        }
        let mut expected: Vec<(String, Vec<u8>)> = streams
            .iter()
            .zip(&proto)
            .filter_map(|((labels, _, _), s)| Some((tenant_of(labels)?, s.encode_to_vec())))
            .collect();
        out.sort();
        expected.sort();
        prop_assert_eq!(&out, &expected);
        let dropped = split.stats.dropped.iter().sum::<u64>();
        prop_assert_eq!(dropped + out.len() as u64, streams.len() as u64);
        let entries: usize = streams.iter().map(|s| s.2.len()).sum();
        prop_assert_eq!(split.stats.received.samples, entries as u64);

        // JSON: each stream object's text arrives as it was sent.
        let texts: Vec<String> = streams
            .iter()
            .map(|(labels, _, entries)| {
                let map: BTreeMap<&str, &str> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let values: Vec<(String, String)> = entries
                    .iter()
                    .map(|(ns, line)| (ns.to_string(), String::from_utf8_lossy(line).into_owned()))
                    .collect();
                serde_json::json!({"stream": map, "values": values}).to_string()
            })
            .collect();
        let body = format!(r#"{{"streams":[{}]}}"#, texts.join(","));
        let split = router
            .split(&LokiJson, body.as_bytes(), &table, &FamilyIndex::default(), &NO_POOL, &orgsplit::tenant::Allowance::Any)
            .unwrap();
        let mut out: Vec<(String, String)> = Vec::new();
        for b in &split.batches {
            #[derive(serde::Deserialize)]
            struct Push<'a> {
                #[serde(borrow)]
                streams: Vec<&'a serde_json::value::RawValue>,
            }
            let push: Push = serde_json::from_slice(&b.body).unwrap();
            out.extend(push.streams.iter().map(|s| (b.tenant.to_string(), s.get().to_string())));
        }
        let mut expected: Vec<(String, String)> = streams
            .iter()
            .zip(&texts)
            .filter_map(|((labels, _, _), t)| Some((tenant_of(labels)?, t.clone())))
            .collect();
        // The forwarder's merge of batches (a busy tenant's, of several
        // pushes): one JSON push holding every batch's streams in order.
        if !split.batches.is_empty() {
            let in_order: Vec<String> = out_in_order(&split.batches);
            let bodies: Vec<&[u8]> = split.batches.iter().map(|b| b.body.as_slice()).collect();
            let mut merged = Vec::new();
            orgsplit::formats::json_batch::merge(&bodies, &mut merged).unwrap();
            let push: JsonPush = serde_json::from_slice(&merged).unwrap();
            let merged: Vec<String> = push.streams.iter().map(|s| s.get().to_string()).collect();
            prop_assert_eq!(merged, in_order);
        }
        out.sort();
        expected.sort();
        prop_assert_eq!(out, expected);
    }
}

#[derive(serde::Deserialize)]
struct JsonPush<'a> {
    #[serde(borrow)]
    streams: Vec<&'a serde_json::value::RawValue>,
}

/// The stream texts of Loki JSON batches, batch after batch.
fn out_in_order(batches: &[orgsplit::route::Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let push: JsonPush = serde_json::from_slice(&b.body).unwrap();
            push.streams
                .iter()
                .map(|s| s.get().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}
