use std::collections::BTreeMap;

use prost::Message;

use super::*;
use crate::config::{Routing, RoutingMode, UnmappedPolicy};
use crate::formats::rw1::pb as v1;
use crate::pool::BufferPool;
use crate::route::{FamilyIndex, RouteError, Router, SplitCounts};
use crate::table::Snapshot;
use crate::tenant::Allowance;
use crate::testing::rw2::{resolve, Builder, Resolved};

fn router(f: impl FnOnce(&mut Routing)) -> Router {
    let mut r = Routing {
        default_tenant: "fallback".into(),
        unmapped: UnmappedPolicy::Default,
        ..Default::default()
    };
    f(&mut r);
    Router::new(&r, RequestLimits::default())
}

fn table() -> Snapshot {
    Snapshot::from_pairs([
        ("shop-prod", "acme"),
        ("shop-dev", "acme"),
        ("billing", "globex"),
    ])
}

fn split_body(
    router: &Router,
    body: &[u8],
) -> Result<(BTreeMap<String, Vec<u8>>, SplitCounts), RouteError> {
    static NO_POOL: BufferPool = BufferPool::disabled();
    let split = router.split(
        &Rw2,
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

/// Splits, and checks what every tenant's request must hold whatever the
/// input: it decodes, its table starts with "" and has no entry twice
/// and none unused.
fn split(router: &Router, req: &pb::Request) -> BTreeMap<String, pb::Request> {
    let (bodies, _) = split_body(router, &req.encode_to_vec()).unwrap();
    bodies
        .into_iter()
        .map(|(tenant, body)| {
            let decoded = pb::Request::decode(body.as_slice()).unwrap();
            assert_eq!(decoded.symbols.first().map(String::as_str), Some(""));
            let distinct: std::collections::HashSet<_> = decoded.symbols.iter().collect();
            assert_eq!(
                distinct.len(),
                decoded.symbols.len(),
                "{tenant}: a symbol twice"
            );
            let mut used = vec![false; decoded.symbols.len()];
            used[0] = true;
            for t in &decoded.timeseries {
                let metadata = t.metadata.iter().flat_map(|m| [m.help_ref, m.unit_ref]);
                let exemplars = t
                    .exemplars
                    .iter()
                    .flat_map(|e| e.labels_refs.iter().copied());
                for r in t
                    .labels_refs
                    .iter()
                    .copied()
                    .chain(exemplars)
                    .chain(metadata)
                {
                    used[r as usize] = true;
                }
            }
            assert!(
                used.iter().all(|&u| u),
                "{tenant}: unused symbols {:?}",
                decoded.symbols
            );
            (tenant, decoded)
        })
        .collect()
}

fn labels(resolved: &[Resolved]) -> Vec<Vec<(String, String)>> {
    resolved.iter().map(|r| r.labels.clone()).collect()
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn each_tenant_gets_a_compact_table_of_its_own_symbols() {
    let mut b = Builder::default();
    let acme = [
        ("__name__", "up"),
        ("job", "shop"),
        ("namespace", "shop-prod"),
    ];
    let globex = [
        ("__name__", "up"),
        ("job", "billing"),
        ("namespace", "billing"),
    ];
    let acme_dev = [
        ("__name__", "rss"),
        ("job", "shop"),
        ("namespace", "shop-dev"),
    ];
    b.series(&acme, 1.0, 10);
    b.series(&globex, 2.0, 20);
    b.series(&acme_dev, 3.0, 30);
    let out = split(&router(|_| {}), &b.request);
    assert_eq!(out.keys().collect::<Vec<_>>(), ["acme", "globex"]);

    let acme_out = resolve(&out["acme"]).unwrap();
    assert_eq!(labels(&acme_out), [owned(&acme), owned(&acme_dev)]);
    let globex_out = resolve(&out["globex"]).unwrap();
    assert_eq!(labels(&globex_out), [owned(&globex)]);
    // Samples as they were.
    assert_eq!(out["acme"].timeseries[1].samples[0].value, 3.0);
    assert_eq!(out["acme"].timeseries[1].samples[0].timestamp, 30);
    // Shared symbols are in both; nothing of one tenant is in the other's.
    assert_eq!(
        out["globex"].symbols,
        ["", "__name__", "up", "job", "billing", "namespace"]
    );
    assert!(!out["acme"].symbols.iter().any(|s| s == "billing"));
    assert!(!out["globex"].symbols.iter().any(|s| s.starts_with("shop")));
}

#[test]
fn refs_anywhere_in_the_table_and_symbols_after_the_series() {
    // The table in an odd order, the namespace as its last entry, and the
    // symbols field written after the series (protobuf allows any order).
    let request = pb::Request {
        symbols: ["", "zzz", "namespace", "__name__", "x", "shop-prod"]
            .map(String::from)
            .to_vec(),
        timeseries: vec![pb::TimeSeries {
            labels_refs: vec![3, 4, 2, 5, 1, 1],
            samples: vec![pb::Sample {
                value: 1.5,
                timestamp: 7,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    };
    let mut body = Vec::new();
    for t in &request.timeseries {
        crate::wire::encode::put_bytes_field(&mut body, 5, &t.encode_to_vec());
    }
    for s in &request.symbols {
        crate::wire::encode::put_bytes_field(&mut body, 4, s.as_bytes());
    }
    let (out, _) = split_body(&router(|_| {}), &body).unwrap();
    let acme = pb::Request::decode(out["acme"].as_slice()).unwrap();
    assert_eq!(
        labels(&resolve(&acme).unwrap()),
        [owned(&[
            ("__name__", "x"),
            ("namespace", "shop-prod"),
            ("zzz", "zzz")
        ])]
    );
    assert_eq!(
        acme.symbols,
        ["", "__name__", "x", "namespace", "shop-prod", "zzz"]
    );
}

#[test]
fn histograms_exemplars_metadata_timestamps_and_unknown_fields_travel() {
    let mut b = Builder::default();
    let series_labels = [("__name__", "req_seconds"), ("namespace", "billing")];
    let labels_refs = b.refs(&series_labels);
    let trace = b.refs(&[("trace_id", "abc123")]);
    let help = b.sym("Request latency.");
    let unit = b.sym("seconds");
    // A symbol only another tenant uses.
    b.series(&[("__name__", "other"), ("namespace", "shop-prod")], 9.0, 1);
    let histogram = pb::Histogram::decode(
        crate::testing::histogram(1000, 3)
            .encode_to_vec()
            .as_slice(),
    )
    .unwrap();
    let histogram = pb::Histogram {
        start_timestamp: 500,
        classic_buckets: vec![pb::ClassicBucket {
            upper_bound: 0.5,
            cumulative_count: 2.0,
        }],
        ..histogram
    };
    let series = pb::TimeSeries {
        labels_refs,
        histograms: vec![histogram],
        exemplars: vec![pb::Exemplar {
            labels_refs: trace,
            value: 0.25,
            timestamp: 999,
        }],
        metadata: Some(pb::Metadata {
            r#type: pb::metadata::MetricType::Histogram as i32,
            help_ref: help,
            unit_ref: unit,
        }),
        created_timestamp: 400,
        ..Default::default()
    };
    // A field no version of the schema knows (number 15, a string).
    let mut series_body = series.encode_to_vec();
    crate::wire::encode::put_bytes_field(&mut series_body, 15, b"future");
    let mut body = b.request.encode_to_vec();
    crate::wire::encode::put_bytes_field(&mut body, 5, &series_body);

    let (out, stats) = split_body(&router(|_| {}), &body).unwrap();
    assert_eq!(stats.received.histograms, 1);
    assert_eq!(stats.received.exemplars, 1);
    assert_eq!(stats.received.metadata, 1);
    let globex = pb::Request::decode(out["globex"].as_slice()).unwrap();
    let got = resolve(&globex).unwrap();
    let want = resolve(&pb::Request {
        symbols: b.request.symbols.clone(),
        timeseries: vec![series],
    })
    .unwrap();
    assert_eq!(got, want);
    assert_eq!(got[0].exemplars[0].0, owned(&[("trace_id", "abc123")]));
    assert_eq!(
        got[0].metadata,
        Some((3, "Request latency.".into(), "seconds".into()))
    );
    assert!(!globex.symbols.iter().any(|s| s == "other"));
    // The unknown field's bytes are in the tenant's series.
    let raw = &out["globex"];
    assert!(raw.windows(8).any(|w| w == b"\x7a\x06future"));
}

#[test]
fn malformed_requests_are_refused_naming_the_problem() {
    let r = router(|_| {});
    let refuse = |body: Vec<u8>| match split_body(&r, &body) {
        Err(RouteError::Wire(e)) => e,
        other => panic!("accepted: {other:?}"),
    };
    let mut b = Builder::default();
    b.series(&[("__name__", "up"), ("namespace", "billing")], 1.0, 1);
    // A ref past the end of the table.
    let mut bad = b.request.clone();
    bad.timeseries[0].labels_refs[3] = 99;
    let e = refuse(bad.encode_to_vec());
    assert!(
        matches!(
            e,
            WireError::SymbolRef {
                index: 99,
                len: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("symbol 99"), "{e}");
    // An exemplar's and metadata's refs are checked too.
    let mut bad = b.request.clone();
    bad.timeseries[0].exemplars.push(pb::Exemplar {
        labels_refs: vec![1, 50],
        value: 1.0,
        timestamp: 1,
    });
    assert!(matches!(
        refuse(bad.encode_to_vec()),
        WireError::SymbolRef { index: 50, .. }
    ));
    let mut bad = b.request.clone();
    bad.timeseries[0].metadata = Some(pb::Metadata {
        r#type: 1,
        help_ref: 0,
        unit_ref: 7,
    });
    assert!(matches!(
        refuse(bad.encode_to_vec()),
        WireError::SymbolRef {
            what: "unit_ref",
            ..
        }
    ));
    // A table whose first entry is not "".
    let mut bad = b.request.clone();
    bad.symbols[0] = "x".into();
    assert_eq!(refuse(bad.encode_to_vec()), WireError::FirstSymbol);
    // Refs that are not pairs.
    let mut bad = b.request.clone();
    bad.timeseries[0].labels_refs.pop();
    assert!(matches!(
        refuse(bad.encode_to_vec()),
        WireError::OddLabelRefs(_)
    ));
    // A 1.0 body sent as 2.0.
    let v1_body = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
    .encode_to_vec();
    let e = refuse(v1_body);
    assert_eq!(e, WireError::V1InV2(1));
    assert!(e.to_string().contains("remote write 1.0"), "{e}");
}

/// Splits `body` in namespace mode within `limits`: how many tenant
/// requests it made, or why it was refused.
fn split_within(body: &[u8], limits: RequestLimits) -> Result<usize, RouteError> {
    split_body(&Router::new(&Routing::default(), limits), body).map(|(out, _)| out.len())
}

#[test]
fn symbol_limits_are_enforced() {
    let mut b = Builder::default();
    b.series(&[("__name__", "up"), ("namespace", "billing")], 1.0, 1);
    let body = b.request.encode_to_vec();
    let limited = |max_symbols, max_symbol_bytes| {
        split_within(
            &body,
            RequestLimits {
                max_symbols,
                max_symbol_bytes,
                ..RequestLimits::default()
            },
        )
    };
    // 5 symbols, the longest 9 bytes ("namespace"): exactly at both limits.
    assert!(limited(5, 9).is_ok());
    assert!(matches!(
        limited(4, 9),
        Err(RouteError::Wire(WireError::TooMany {
            item: Limited::Symbols,
            limit: 4
        }))
    ));
    assert!(matches!(
        limited(5, 8),
        Err(RouteError::Wire(WireError::SymbolTooLong {
            index: 3,
            len: 9,
            limit: 8
        }))
    ));
}

#[test]
fn label_limits_are_enforced_whatever_the_symbol_limit() {
    let mut b = Builder::default();
    let long = "x".repeat(20);
    b.series(
        &[("__name__", "up"), ("namespace", "billing"), ("pod", &long)],
        1.0,
        1,
    );
    let body = b.request.encode_to_vec();
    let limited = |max_labels, max_label_bytes| {
        split_within(
            &body,
            RequestLimits {
                max_labels,
                max_label_bytes,
                ..RequestLimits::default()
            },
        )
    };
    // Three labels, the longest value 20 bytes: exactly at both limits.
    assert!(matches!(limited(3, 20), Ok(1)));
    assert!(matches!(
        limited(3, 19),
        Err(RouteError::Wire(WireError::LabelTooLong {
            which: "value",
            len: 20,
            limit: 19
        }))
    ));
    assert!(matches!(
        limited(2, 20),
        Err(RouteError::Wire(WireError::TooManyLabels {
            count: 3,
            limit: 2
        }))
    ));
}

/// Symbols several tenants' series share are kept apart per tenant
/// request: past the first thousand shared (where each request's dense
/// array ends and its hash map begins) as before it.
#[test]
fn many_symbols_shared_between_tenants_resolve_in_each_tenants_own_table() {
    let mut b = Builder::default();
    let mut want: BTreeMap<&str, Vec<Vec<(String, String)>>> = BTreeMap::new();
    for i in 0..1500 {
        let shared = format!("shared-{i}");
        for (ns, tenant) in [
            ("billing", "globex"),
            ("shop-prod", "acme"),
            ("shop-dev", "acme"),
        ] {
            let own = format!("{ns}-{i}");
            let labels = [
                ("__name__", "up"),
                ("namespace", ns),
                ("shared", shared.as_str()),
                ("own", own.as_str()),
            ];
            b.series(&labels, 1.0, i);
            want.entry(tenant).or_default().push(owned(&labels));
        }
    }
    // `split` checks each table holds every symbol once and none unused.
    let out = split(&router(|_| {}), &b.request);
    assert_eq!(out.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    for (tenant, want) in want {
        assert_eq!(labels(&resolve(&out[tenant]).unwrap()), want, "{tenant}");
    }
    assert!(!out["globex"].symbols.iter().any(|s| s.starts_with("shop")));
    assert!(!out["acme"].symbols.iter().any(|s| s.starts_with("billing")));
}

#[test]
fn label_mode_removes_the_tenant_label_pair() {
    let r = router(|r| {
        r.mode = RoutingMode::Label;
        r.tenant_label = "tenant".into();
        r.remove_tenant_label = true;
    });
    let mut b = Builder::default();
    b.series(
        &[("__name__", "up"), ("tenant", "team-a"), ("z", "1")],
        1.0,
        1,
    );
    let out = split(&r, &b.request);
    assert_eq!(
        labels(&resolve(&out["team-a"]).unwrap()),
        [owned(&[("__name__", "up"), ("z", "1")])]
    );
    assert!(!out["team-a"]
        .symbols
        .iter()
        .any(|s| s == "team-a" || s == "tenant"));
}

#[test]
fn unmapped_series_follow_the_policy() {
    let mut b = Builder::default();
    b.series(&[("__name__", "up")], 1.0, 1);
    b.series(&[("__name__", "up"), ("namespace", "nobody")], 2.0, 1);
    b.series(&[("__name__", "up"), ("namespace", "billing")], 3.0, 1);
    let out = split(&router(|_| {}), &b.request);
    assert_eq!(out["fallback"].timeseries.len(), 2);
    assert_eq!(out["globex"].timeseries.len(), 1);

    let body = b.request.encode_to_vec();
    let (out, stats) = split_body(&router(|r| r.unmapped = UnmappedPolicy::Drop), &body).unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["globex"]);
    assert_eq!(stats.dropped.iter().sum::<u64>(), 2);

    let e = split_body(&router(|r| r.unmapped = UnmappedPolicy::Reject), &body).unwrap_err();
    assert!(e.to_string().contains("__name__=\"up\""), "{e}");
}

#[test]
fn conversion_to_v1_keeps_what_v1_can_carry_and_counts_the_rest() {
    let mut b = Builder::default();
    let help = b.sym("Requests.");
    let trace = b.refs(&[("trace_id", "t1")]);
    let s = b.series(
        &[
            ("__name__", "http_requests_total"),
            ("namespace", "billing"),
        ],
        5.0,
        100,
    );
    s.samples[0].start_timestamp = 50;
    s.created_timestamp = 50;
    s.metadata = Some(pb::Metadata {
        r#type: 1,
        help_ref: help,
        unit_ref: 0,
    });
    s.exemplars.push(pb::Exemplar {
        labels_refs: trace,
        value: 5.0,
        timestamp: 99,
    });
    // A second series of the same family: its metadata is not repeated.
    let s = b.series(
        &[
            ("__name__", "http_requests_total"),
            ("namespace", "shop-prod"),
        ],
        6.0,
        100,
    );
    s.metadata = Some(pb::Metadata {
        r#type: 1,
        help_ref: help,
        unit_ref: 0,
    });
    let h = b.series(&[("__name__", "latency_bucket"), ("le", "1")], 0.0, 0);
    h.samples.clear();
    h.histograms.push(pb::Histogram {
        count: Some(pb::histogram::Count::CountInt(3)),
        sum: 1.5,
        timestamp: 100,
        classic_buckets: vec![pb::ClassicBucket::default()],
        ..Default::default()
    });
    h.metadata = Some(pb::Metadata {
        r#type: 3,
        help_ref: 0,
        unit_ref: 0,
    });

    let mut out = Vec::new();
    let lost = to_v1(
        &b.request.encode_to_vec(),
        RequestLimits::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        lost,
        Lost {
            start_timestamps: 2,
            classic_buckets: 1,
            unknown_fields: 0
        }
    );
    let got = v1::WriteRequest::decode(out.as_slice()).unwrap();
    let label = |n: &str, v: &str| v1::Label {
        name: n.into(),
        value: v.into(),
    };
    assert_eq!(got.timeseries.len(), 3);
    assert_eq!(
        got.timeseries[0].labels,
        [
            label("__name__", "http_requests_total"),
            label("namespace", "billing")
        ]
    );
    assert_eq!(
        got.timeseries[0].samples,
        [v1::Sample {
            value: 5.0,
            timestamp: 100
        }]
    );
    assert_eq!(
        got.timeseries[0].exemplars,
        [v1::Exemplar {
            labels: vec![label("trace_id", "t1")],
            value: 5.0,
            timestamp: 99
        }]
    );
    assert_eq!(got.timeseries[2].histograms.len(), 1);
    assert_eq!(got.timeseries[2].histograms[0].sum, 1.5);
    assert_eq!(got.timeseries[2].histograms[0].timestamp, 100);
    assert_eq!(
        got.metadata,
        [
            v1::MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            },
            v1::MetricMetadata {
                r#type: 3,
                metric_family_name: "latency".into(),
                help: String::new(),
                unit: String::new(),
            }
        ]
    );
}

/// A 2.0 request of `series`, each (labels, exemplar labels, help): the
/// strings come from a small vocabulary, so tables of different requests
/// share entries.
/// One series of [`request_of`]: label pairs, an exemplar's label pair and
/// a help text, as indexes into its vocabulary.
type SeriesSpec = (Vec<(u8, u8)>, Option<(u8, u8)>, Option<u8>);

fn request_of(series: &[SeriesSpec]) -> pb::Request {
    const WORDS: [&str; 8] = [
        "__name__",
        "namespace",
        "up",
        "job",
        "shop-prod",
        "billing",
        "a",
        "",
    ];
    let w = |i: u8| WORDS[usize::from(i) % WORDS.len()];
    let mut b = Builder::default();
    for (i, (labels, exemplar, help)) in series.iter().enumerate() {
        let labels: Vec<(&str, &str)> = labels.iter().map(|&(n, v)| (w(n), w(v))).collect();
        let exemplar = exemplar.map(|(n, v)| pb::Exemplar {
            labels_refs: b.refs(&[(w(n), w(v))]),
            value: i as f64,
            timestamp: 7,
        });
        let metadata = help.map(|h| pb::Metadata {
            r#type: 1,
            help_ref: b.sym(w(h)),
            unit_ref: b.sym("seconds"),
        });
        let s = b.series(&labels, i as f64, 1000 + i as i64);
        s.exemplars.extend(exemplar);
        s.metadata = metadata;
    }
    b.request
}

/// Merges `bodies` and checks what a merged request must hold whatever
/// the input: it decodes, its table starts with "" and has no entry twice.
fn merged(bodies: &[&[u8]]) -> pb::Request {
    let mut out = Vec::new();
    merge(bodies, &mut out).unwrap();
    let req = pb::Request::decode(out.as_slice()).unwrap();
    assert_eq!(req.symbols.first().map(String::as_str), Some(""));
    let distinct: std::collections::HashSet<_> = req.symbols.iter().collect();
    assert_eq!(distinct.len(), req.symbols.len(), "a symbol twice");
    req
}

proptest::proptest! {
    /// Merged requests hold every series of every input, in order, with
    /// the same labels, samples, exemplars and metadata strings.
    #[test]
    fn merged_requests_hold_each_inputs_series_in_order(
        inputs in proptest::collection::vec(
            proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..8, 0u8..8), 1..4),
                    proptest::option::of((0u8..8, 0u8..8)),
                    proptest::option::of(0u8..8),
                ),
                0..6,
            ),
            1..5,
        )
    ) {
        let requests: Vec<pb::Request> = inputs.iter().map(|s| request_of(s)).collect();
        let bodies: Vec<Vec<u8>> = requests.iter().map(Message::encode_to_vec).collect();
        let parts: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let got = resolve(&merged(&parts)).unwrap();
        let want: Vec<Resolved> = requests.iter().flat_map(|r| resolve(r).unwrap()).collect();
        proptest::prop_assert_eq!(got, want);
    }
}

#[test]
fn one_tenants_batches_of_several_pushes_merge_into_one_request() {
    let r = router(|_| {});
    let mut pushes = Vec::new();
    for (i, ns) in ["shop-prod", "shop-dev", "shop-prod"].iter().enumerate() {
        let mut b = Builder::default();
        b.series(
            &[
                ("__name__", "up"),
                ("namespace", ns),
                ("pod", &format!("p{i}")),
            ],
            1.0,
            1,
        );
        b.series(&[("__name__", "x"), ("namespace", "billing")], 2.0, 2);
        let help = b.sym("Help text.");
        b.series(&[("__name__", "errors_total"), ("namespace", ns)], 3.0, 3)
            .metadata = Some(pb::Metadata {
            r#type: 2,
            help_ref: help,
            unit_ref: 0,
        });
        pushes.push(split_body(&r, &b.request.encode_to_vec()).unwrap().0);
    }
    let acme: Vec<&[u8]> = pushes.iter().map(|p| p["acme"].as_slice()).collect();
    let req = merged(&acme);
    let want: Vec<Resolved> = acme
        .iter()
        .flat_map(|b| resolve(&pb::Request::decode(*b).unwrap()).unwrap())
        .collect();
    let got = resolve(&req).unwrap();
    assert_eq!(got.len(), 6);
    assert_eq!(got, want);
    // Shared strings are in the merged table once: smaller than the parts.
    let parts: usize = acme.iter().map(|b| b.len()).sum();
    assert!(req.encode_to_vec().len() < parts);
    assert!(!req.symbols.iter().any(|s| s == "x" || s == "billing"));
}

#[test]
fn merging_a_request_with_a_ref_outside_its_table_fails_without_panicking() {
    let good = request_of(&[(vec![(0, 2)], None, None)]).encode_to_vec();
    // Its table is not the start of the merged one, so its refs are
    // rewritten (and checked); a first request's series go unchanged.
    let mut bad = Builder::default();
    bad.series(&[("job", "up")], 1.0, 1).labels_refs[1] = 40;
    let bad = bad.request.encode_to_vec();
    let mut out = Vec::new();
    let err = merge(&[&good, &bad], &mut out).unwrap_err();
    assert!(
        matches!(err, WireError::SymbolRef { index: 40, .. }),
        "{err}"
    );
    let truncated = &good[..good.len() - 1];
    assert!(merge(&[&good, truncated], &mut Vec::new()).is_err());
}
