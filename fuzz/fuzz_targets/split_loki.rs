//! Arbitrary bytes as a decompressed Loki push (the first byte picks
//! protobuf or JSON) and as a stream label string. Must never panic, hang
//! or allocate beyond the limits; whatever is accepted must come out as
//! tenant requests that decode (the schema's own types, or a JSON parser),
//! every stream in the tenant its own labels route to, and every received
//! stream either forwarded once or counted as dropped.
#![no_main]

mod common;

use std::sync::LazyLock;

use common::{NO_POOL, TABLE};
use libfuzzer_sys::fuzz_target;
use orgsplit::formats::loki::{labels, pb, LokiJson, LokiProto};
use orgsplit::route::{FamilyIndex, Router, Split};
use orgsplit::table::Org;
use orgsplit::tenant::Allowance;
use orgsplit::wire::LabelQuery;
use prost::Message;

static ROUTERS: LazyLock<[Router; 2]> =
    LazyLock::new(|| common::routers(&["namespace", "k8s_namespace_name"]));
static QUERY: LazyLock<LabelQuery> =
    LazyLock::new(|| LabelQuery::new(["namespace", "k8s_namespace_name"]));

/// The tenant namespace mode must have sent a stream with these labels to.
fn namespace_tenant(labels: &str) -> String {
    let scan = labels::scan(labels, &QUERY, 64).expect("forwarded labels parse");
    match scan.best.map(|f| TABLE.get(&f.value).cloned()) {
        Some(Some(Org::Tenant(t))) => t.to_string(),
        _ => "fallback".into(),
    }
}

fn check(split: &Split, json: bool, namespace_mode: bool) {
    let mut streams = 0u64;
    for b in &split.batches {
        let tenant = b.tenant.to_string();
        if json {
            let v: serde_json::Value = serde_json::from_slice(&b.body).expect("tenant JSON parses");
            let list = v["streams"].as_array().expect("a streams array");
            streams += list.len() as u64;
            if namespace_mode {
                for s in list {
                    let labels = s
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("stream")))
                        .and_then(|(_, v)| v.as_object())
                        .expect("a stream map");
                    let ns = ["namespace", "k8s_namespace_name"].iter().find_map(|n| {
                        labels
                            .get(*n)
                            .and_then(|v| v.as_str())
                            .filter(|v| !v.is_empty())
                    });
                    let want = match ns.map(|ns| TABLE.get(ns).cloned()) {
                        Some(Some(Org::Tenant(t))) => t.to_string(),
                        _ => "fallback".into(),
                    };
                    assert_eq!(tenant, want);
                }
            }
        } else {
            let req = pb::PushRequest::decode(b.body.as_slice()).expect("tenant push decodes");
            streams += req.streams.len() as u64;
            if namespace_mode {
                for s in &req.streams {
                    assert_eq!(tenant, namespace_tenant(&s.labels));
                }
            }
        }
        assert_eq!(b.counts.series, {
            let n = if json {
                serde_json::from_slice::<serde_json::Value>(&b.body).unwrap()["streams"]
                    .as_array()
                    .unwrap()
                    .len()
            } else {
                pb::PushRequest::decode(b.body.as_slice())
                    .unwrap()
                    .streams
                    .len()
            };
            n as u64
        });
    }
    let dropped: u64 = split.stats.dropped.iter().sum();
    assert_eq!(streams + dropped, split.stats.received.series);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(scan) = labels::scan(text, &QUERY, 64) {
            if let Some(found) = scan.best {
                let rest = labels::without(text, found.span);
                if let Ok(again) = labels::scan(&rest, &QUERY, 64) {
                    assert_eq!(again.labels, scan.labels - 1);
                }
            }
        }
    }
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let json = kind & 1 == 1;
    for (router, namespace_mode) in ROUTERS.iter().zip([true, false]) {
        let split = if json {
            router.split(
                &LokiJson,
                body,
                &TABLE,
                &FamilyIndex::default(),
                &NO_POOL,
                &Allowance::Any,
            )
        } else {
            router.split(
                &LokiProto,
                body,
                &TABLE,
                &FamilyIndex::default(),
                &NO_POOL,
                &Allowance::Any,
            )
        };
        if let Ok(split) = split {
            check(&split, json, namespace_mode);
        }
    }
});
