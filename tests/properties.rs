//! Properties over random requests and tables: isolation and accounting.

use std::collections::BTreeMap;

use orgsplit::answer::{self, Upstream};
use orgsplit::config::{Routing, UnmappedPolicy};
use orgsplit::route::{FamilyIndex, Router};
use orgsplit::table::{Org, Snapshot};
use orgsplit::wire::pb;
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
        let split = router.split(&body, &table, &FamilyIndex::default()).unwrap();

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

    /// 2xx only if every tenant push succeeded; retryable whenever any push
    /// failed retryably.
    #[test]
    fn the_answer_is_2xx_only_if_every_push_succeeded(
        outcomes in prop::collection::vec(prop_oneof![
            Just(Upstream::Accepted),
            (400u16..600, prop::option::of(0u64..120)).prop_map(|(status, retry_after)| Upstream::Status {
                status, retry_after, message: "m".into() }),
            Just(Upstream::Timeout),
            Just(Upstream::Unreachable("refused".into())),
        ], 0..8)
    ) {
        let results: Vec<(String, Upstream)> =
            outcomes.iter().cloned().enumerate().map(|(i, o)| (format!("t{i}"), o)).collect();
        let a = answer::combine(&results);
        let all_ok = outcomes.iter().all(|o| *o == Upstream::Accepted);
        prop_assert_eq!(a.status.is_success(), all_ok);
        let any_retryable = outcomes.iter().any(|o| o.is_retryable());
        let prometheus_retries = a.status.is_server_error() || a.status.as_u16() == 429;
        prop_assert_eq!(prometheus_retries, any_retryable);
        if a.status.as_u16() == 429 {
            let only_429 = outcomes
                .iter()
                .filter(|o| o.is_retryable())
                .all(|o| matches!(o, Upstream::Status { status: 429, .. }));
            prop_assert!(only_429, "429 although other retryable failures happened");
        }
        // every failed tenant is named
        for (t, o) in &results {
            if o.is_retryable() || (!any_retryable && *o != Upstream::Accepted) {
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
        .split(&body, &table, &FamilyIndex::default())
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
