use std::collections::BTreeMap;

use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::config::Routing;
use crate::formats::rw1::pb;
use crate::testing::{self, Shape};

fn label(name: &str, value: &str) -> pb::Label {
    pb::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(labels: &[(&str, &str)], value: f64) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: vec![pb::Sample {
            value,
            timestamp: 1000,
        }],
        ..Default::default()
    }
}

fn routing(f: impl FnOnce(&mut Routing)) -> Router {
    let mut r = Routing {
        default_tenant: "fallback".into(),
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
        ("broken", "../evil"),
    ])
}

/// Splits and decodes each batch, so tests compare series, not bytes.
fn run(
    router: &Router,
    req: &pb::WriteRequest,
    table: &Snapshot,
) -> (BTreeMap<String, pb::WriteRequest>, SplitCounts) {
    let body = req.encode_to_vec();
    let split = router
        .split_rw1(&body, table, &FamilyIndex::default())
        .unwrap();
    let mut out = BTreeMap::new();
    for b in &split.batches {
        let decoded = pb::WriteRequest::decode(b.body.as_slice()).unwrap();
        assert_eq!(b.counts.series as usize, decoded.timeseries.len());
        assert!(
            out.insert(b.tenant.to_string(), decoded).is_none(),
            "one batch per tenant"
        );
    }
    (out, split.stats)
}

fn values(req: &pb::WriteRequest) -> Vec<f64> {
    req.timeseries.iter().map(|t| t.samples[0].value).collect()
}

fn mixed() -> pb::WriteRequest {
    pb::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("namespace", "shop-prod")], 1.0),
            series(&[("__name__", "up"), ("namespace", "billing")], 2.0),
            series(&[("__name__", "up"), ("namespace", "shop-dev")], 3.0),
            series(&[("__name__", "up")], 4.0),
            series(&[("__name__", "up"), ("namespace", "unknown")], 5.0),
            series(&[("__name__", "up"), ("namespace", "broken")], 6.0),
            series(&[("__name__", "up"), ("namespace", "shop-prod")], 7.0),
        ],
        metadata: vec![],
    }
}

#[test]
fn namespace_mode_groups_by_organization() {
    let (out, stats) = run(&routing(|_| {}), &mixed(), &table());
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["acme", "fallback", "globex"]
    );
    assert_eq!(values(&out["acme"]), [1.0, 3.0, 7.0]);
    assert_eq!(values(&out["globex"]), [2.0]);
    assert_eq!(values(&out["fallback"]), [4.0, 5.0, 6.0]);
    assert_eq!(stats.defaulted(Unmapped::NoLabel), 1);
    assert_eq!(stats.defaulted(Unmapped::NoOrganization), 1);
    assert_eq!(stats.defaulted(Unmapped::InvalidTenant), 1);
    assert_eq!(stats.received.series, 7);
    assert_eq!(stats.received.samples, 7);
}

#[test]
fn unmapped_keys_are_reported_by_key_with_what_they_held() {
    let (_, stats) = run(&routing(|_| {}), &mixed(), &table());
    let keys: Vec<(Option<&str>, Unmapped, bool, u64)> = stats
        .unmapped
        .iter()
        .map(|u| (u.key.as_deref(), u.reason, u.defaulted, u.counts.samples))
        .collect();
    assert_eq!(
        keys,
        [
            (None, Unmapped::NoLabel, true, 1),
            (Some("unknown"), Unmapped::NoOrganization, true, 1),
            (Some("broken"), Unmapped::InvalidTenant, true, 1),
        ]
    );
    // A request with nothing unmapped reports nothing, and many keys
    // stop at the bound (the totals still count them all).
    let mapped = pb::WriteRequest {
        timeseries: vec![series(&[("namespace", "shop-prod")], 1.0)],
        metadata: vec![],
    };
    assert!(run(&routing(|_| {}), &mapped, &table())
        .1
        .unmapped
        .is_empty());
    // A made-up namespace of 10 000 bytes is kept as its first 128.
    let long = format!("é{}", "x".repeat(10_000));
    let odd = pb::WriteRequest {
        timeseries: vec![series(&[("namespace", &long)], 1.0)],
        metadata: vec![],
    };
    let (_, stats) = run(&routing(|_| {}), &odd, &table());
    let kept = stats.unmapped[0].key.as_deref().unwrap();
    assert_eq!(kept.len(), crate::signals::MAX_UNMAPPED_KEY_BYTES);
    assert!(long.starts_with(kept));
    let many = pb::WriteRequest {
        timeseries: (0..MAX_UNMAPPED_KEYS + 8)
            .flat_map(|i| {
                let ns = format!("stray-{i}");
                [
                    series(&[("namespace", &ns)], 1.0),
                    series(&[("namespace", &ns)], 1.0),
                ]
            })
            .collect(),
        metadata: vec![],
    };
    let router = routing(|r| r.unmapped = UnmappedPolicy::Drop);
    let (_, stats) = run(&router, &many, &table());
    assert_eq!(stats.unmapped.len(), MAX_UNMAPPED_KEYS);
    assert!(stats
        .unmapped
        .iter()
        .all(|u| !u.defaulted && u.counts.series == 2));
    assert_eq!(
        stats.dropped(Unmapped::NoOrganization),
        2 * (MAX_UNMAPPED_KEYS as u64 + 8)
    );
}

#[test]
fn drop_policy_counts_each_reason() {
    let router = routing(|r| r.unmapped = UnmappedPolicy::Drop);
    let (out, stats) = run(&router, &mixed(), &table());
    assert_eq!(out.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(stats.dropped, [1, 1, 1]);
    assert_eq!(stats.dropped_samples, 3);
    assert_eq!(stats.defaulted, [0, 0, 0]);
}

#[test]
fn reject_policy_refuses_the_whole_request_and_names_the_series() {
    let router = routing(|r| r.unmapped = UnmappedPolicy::Reject);
    let body = mixed().encode_to_vec();
    let err = router
        .split_rw1(&body, &table(), &FamilyIndex::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RouteError::Rejected { .. }));
    assert!(
        msg.contains("no namespace label") && msg.contains("__name__=\"up\""),
        "{msg}"
    );

    // without unmapped series the same router forwards normally
    let ok = pb::WriteRequest {
        timeseries: mixed().timeseries.into_iter().take(3).collect(),
        metadata: vec![],
    };
    let (out, _) = run(&router, &ok, &table());
    assert_eq!(out.len(), 2);
}

#[test]
fn namespace_labels_are_tried_in_order() {
    let router =
        routing(|r| r.namespace_labels = vec!["exported_namespace".into(), "namespace".into()]);
    let req = pb::WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("exported_namespace", "billing"),
                    ("namespace", "shop-prod"),
                ],
                1.0,
            ),
            series(&[("namespace", "shop-prod")], 2.0),
        ],
        metadata: vec![],
    };
    let (out, _) = run(&router, &req, &table());
    assert_eq!(values(&out["globex"]), [1.0]);
    assert_eq!(values(&out["acme"]), [2.0]);
}

#[test]
fn label_mode_with_prefix_and_removal() {
    let router = routing(|r| {
        r.mode = RoutingMode::Label;
        r.tenant_label = "tenant".into();
        r.remove_tenant_label = true;
        r.tenant_prefix = "team-".into();
    });
    let req = pb::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "a"), ("tenant", "blue"), ("zone", "1")], 1.0),
            series(&[("__name__", "b"), ("tenant", "red")], 2.0),
            series(&[("__name__", "c")], 3.0),
            series(&[("__name__", "d"), ("tenant", "a|b")], 4.0),
        ],
        metadata: vec![],
    };
    let (out, stats) = run(&router, &req, &Snapshot::default());
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["fallback", "team-blue", "team-red"]
    );
    assert_eq!(
        out["team-blue"].timeseries[0].labels,
        [label("__name__", "a"), label("zone", "1")]
    );
    assert_eq!(
        out["team-red"].timeseries[0].labels,
        [label("__name__", "b")]
    );
    // unmapped series keep their labels
    assert_eq!(values(&out["fallback"]), [3.0, 4.0]);
    assert_eq!(
        out["fallback"].timeseries[1].labels[1],
        label("tenant", "a|b")
    );
    assert_eq!(stats.defaulted(Unmapped::InvalidTenant), 1);
}

#[test]
fn histograms_exemplars_and_odd_floats_are_untouched() {
    let mut req = testing::request(&Shape {
        series: 50,
        namespaces: 3,
        histogram_every: 3,
        exemplar_every: 4,
        ..Default::default()
    });
    req.timeseries[1].samples[0].value = f64::from_bits(0x7ff8_0000_0000_0001); // a NaN payload (stale marker-like)
    req.timeseries[2].samples[0].value = -0.0;
    let router = routing(|_| {});
    let table = Snapshot::from_pairs(testing::table_pairs(3, 2));
    let (out, stats) = run(&router, &req, &table);
    let mut got: Vec<pb::TimeSeries> = out.into_values().flat_map(|r| r.timeseries).collect();
    let mut want = req.timeseries.clone();
    let key = |t: &pb::TimeSeries| format!("{:?}", t.labels);
    got.sort_by_key(key);
    want.sort_by_key(key);
    // bit-identical floats: compare encodings, not f64 equality (NaN != NaN)
    assert_eq!(
        got.iter().map(|t| t.encode_to_vec()).collect::<Vec<_>>(),
        want.iter().map(|t| t.encode_to_vec()).collect::<Vec<_>>()
    );
    assert_eq!(stats.received.histograms, 17);
    assert_eq!(stats.received.exemplars, 13);
}

#[test]
fn metadata_goes_to_the_tenants_that_own_the_family() {
    let router = routing(|r| {
        r.unmapped = UnmappedPolicy::Drop;
        r.default_tenant = String::new();
    });
    let families = FamilyIndex::default();
    let series_req = pb::WriteRequest {
        timeseries: vec![
            series(
                &[
                    ("__name__", "shop_orders_total"),
                    ("namespace", "shop-prod"),
                ],
                1.0,
            ),
            series(&[("__name__", "up"), ("namespace", "shop-prod")], 1.0),
            series(&[("__name__", "up"), ("namespace", "billing")], 1.0),
        ],
        metadata: vec![],
    }
    .encode_to_vec();
    let t = table();
    router.split_rw1(&series_req, &t, &families).unwrap();

    let meta = |name: &str| pb::MetricMetadata {
        r#type: 1,
        metric_family_name: name.into(),
        help: format!("help for {name}"),
        unit: String::new(),
    };
    // a metadata-only request, as Prometheus sends every minute
    let meta_req = pb::WriteRequest {
        timeseries: vec![],
        metadata: vec![meta("shop_orders"), meta("up"), meta("unseen")],
    }
    .encode_to_vec();
    let split = router.split_rw1(&meta_req, &t, &families).unwrap();
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in &split.batches {
        let r = pb::WriteRequest::decode(b.body.as_slice()).unwrap();
        got.insert(
            b.tenant.to_string(),
            r.metadata
                .into_iter()
                .map(|m| m.metric_family_name)
                .collect(),
        );
    }
    assert_eq!(got["acme"], ["shop_orders", "up"]);
    assert_eq!(
        got["globex"],
        ["up"],
        "globex must not learn of acme's metric"
    );
    assert_eq!(split.stats.metadata_dropped, 1);

    // with a default tenant, unknown families go there
    let router = routing(|_| {});
    let split = router.split_rw1(&meta_req, &t, &families).unwrap();
    assert!(split
        .batches
        .iter()
        .any(|b| b.tenant.as_str() == "fallback" && b.counts.metadata == 1));
}

#[test]
fn malformed_bodies_are_errors() {
    let router = routing(|_| {});
    let t = table();
    let good = mixed().encode_to_vec();
    for cut in [1, 5, good.len() / 2, good.len() - 1] {
        let err = router.split_rw1(&good[..cut], &t, &FamilyIndex::default());
        assert!(matches!(err, Err(RouteError::Wire(_))), "cut at {cut}");
    }
}

#[test]
fn too_many_series() {
    let router = Router::new(
        &Routing {
            default_tenant: "x".into(),
            ..Default::default()
        },
        RequestLimits {
            max_series: 3,
            ..RequestLimits::default()
        },
    );
    let (body, t) = (mixed().encode_to_vec(), table());
    let err = router.split_rw1(&body, &t, &FamilyIndex::default());
    assert!(matches!(
        err,
        Err(RouteError::Wire(WireError::TooMany {
            item: crate::wire::LimitedItem::Series,
            limit: 3
        }))
    ));
}

/// The zero-copy split and the reference split agree: same tenants, same
/// series (in order), same metadata.
fn assert_agrees(router: &Router, req: &pb::WriteRequest, table: &Snapshot) {
    if let Err(e) = testing::agreement(router, &req.encode_to_vec(), table) {
        panic!("{e}");
    }
}

#[test]
fn zero_copy_matches_reference_on_generated_fixtures() {
    let table = Snapshot::from_pairs(testing::table_pairs(15, 4));
    for (i, policy) in [
        UnmappedPolicy::Default,
        UnmappedPolicy::Drop,
        UnmappedPolicy::Reject,
    ]
    .into_iter()
    .enumerate()
    {
        let req = testing::request(&Shape {
            series: 500,
            namespaces: 20,
            histogram_every: 7,
            exemplar_every: 5,
            no_namespace_every: if policy == UnmappedPolicy::Reject {
                0
            } else {
                11
            },
            seed: i as u64 + 1,
            ..Default::default()
        });
        let router = routing(|r| r.unmapped = policy);
        assert_agrees(&router, &req, &table);
    }
}

fn arb_label() -> impl Strategy<Value = pb::Label> {
    (
        prop_oneof![
            Just("namespace".to_string()),
            Just("tenant".to_string()),
            Just("__name__".to_string()),
            "[a-z]{1,6}"
        ],
        prop_oneof![
            Just("ns-1".to_string()),
            Just("ns-2".to_string()),
            Just("a|b".to_string()),
            "[a-z0-9-]{0,8}"
        ],
    )
        .prop_map(|(name, value)| pb::Label { name, value })
}

fn arb_series() -> impl Strategy<Value = pb::TimeSeries> {
    (
        prop::collection::vec(arb_label(), 1..6),
        prop::collection::vec((any::<f64>(), any::<i64>()), 0..3),
        0..2usize,
    )
        .prop_map(|(labels, samples, hist)| pb::TimeSeries {
            labels,
            samples: samples
                .into_iter()
                .map(|(value, timestamp)| pb::Sample { value, timestamp })
                .collect(),
            histograms: (0..hist).map(|i| testing::histogram(i as i64, 3)).collect(),
            exemplars: vec![],
        })
}

fn arb_request() -> impl Strategy<Value = pb::WriteRequest> {
    (
        prop::collection::vec(arb_series(), 0..20),
        prop::collection::vec("[a-z_]{1,8}", 0..3),
    )
        .prop_map(|(timeseries, families)| pb::WriteRequest {
            timeseries,
            metadata: families
                .into_iter()
                .map(|f| pb::MetricMetadata {
                    r#type: 2,
                    metric_family_name: f,
                    help: "h".into(),
                    unit: String::new(),
                })
                .collect(),
        })
}

proptest! {
    #[test]
    fn zero_copy_matches_reference_on_random_requests(
        req in arb_request(),
        policy in prop_oneof![Just(UnmappedPolicy::Default), Just(UnmappedPolicy::Drop), Just(UnmappedPolicy::Reject)],
        label_mode in any::<bool>(),
        remove in any::<bool>(),
    ) {
        let table = Snapshot::from_pairs([("ns-1", "org-a"), ("ns-2", "org-b"), ("x", "bad/")]);
        let router = routing(|r| {
            r.unmapped = policy;
            if label_mode {
                r.mode = RoutingMode::Label;
                r.remove_tenant_label = remove;
            }
        });
        assert_agrees(&router, &req, &table);
    }
}
