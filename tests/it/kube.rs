//! The org table follows Namespaces through the real kube-rs client, against
//! an API stand-in that speaks the list/watch wire protocol.

use crate::common;

use std::time::{Duration, Instant};

use common::kube_api::FakeKube;
use common::*;

const ORG: &str = "appuio.io/organization";

async fn setup(kube: &FakeKube, extra: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:0
upstream: {{url: \"{}\", timeout: 2s}}
routing: {{unmapped: drop}}
lookup:
  kubernetes:
    org_label: {ORG}
    org_annotation: example.com/organization
    kubeconfig: {}
{extra}",
        upstream.url(),
        kube.kubeconfig(dir.path()).display()
    );
    let orgsplit = Orgsplit::start(dir.path(), &yaml).await;
    (dir, upstream, orgsplit)
}

async fn status_of(orgsplit: &Orgsplit, path: &str) -> u16 {
    client()
        .get(orgsplit.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_ready(orgsplit: &Orgsplit) -> Duration {
    let started = Instant::now();
    while status_of(orgsplit, "/readyz").await != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Pushes one series per namespace and returns namespace → tenant it reached
/// ("-" for not forwarded).
async fn route(orgsplit: &Orgsplit, upstream: &Upstream, namespaces: &[&str]) -> Vec<String> {
    upstream.reset();
    let series_list = namespaces
        .iter()
        .map(|ns| series(&[("__name__", "up"), ("namespace", ns)], 1.0, 1))
        .collect();
    let (status, _, body) = orgsplit.push(&request(series_list)).await;
    assert_eq!(status, 204, "{body}");
    let received = upstream.received();
    namespaces
        .iter()
        .map(|ns| {
            let tenants: Vec<&str> = received
                .iter()
                .filter(|r| {
                    r.request
                        .timeseries
                        .iter()
                        .any(|s| label_of(s, "namespace") == Some(ns))
                })
                .map(|r| r.tenant.as_str())
                .collect();
            assert!(tenants.len() <= 1, "{ns} reached {tenants:?}");
            tenants.first().unwrap_or(&"-").to_string()
        })
        .collect()
}

/// Polls until routing of `namespaces` equals `want`; returns how long it took.
async fn until_routes(
    orgsplit: &Orgsplit,
    upstream: &Upstream,
    namespaces: &[&str],
    want: &[&str],
) -> Duration {
    let started = Instant::now();
    loop {
        let got = route(orgsplit, upstream, namespaces).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "routing stuck at {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn syncs_then_routes_and_follows_changes_within_a_second() {
    let kube = FakeKube::start().await;
    kube.upsert("shop-prod", &[(ORG, "acme")]);
    kube.upsert("billing", &[(ORG, "globex")]);
    kube.upsert_with("legacy", &[], &[("example.com/organization", "initech")]);
    kube.upsert("kube-system", &[]);
    let (_d, upstream, orgsplit) = setup(&kube, "").await;
    wait_ready(&orgsplit).await;
    let all = ["shop-prod", "billing", "legacy", "kube-system", "new-ns"];
    assert_eq!(
        route(&orgsplit, &upstream, &all).await,
        ["acme", "globex", "initech", "-", "-"]
    );

    // create
    kube.upsert("new-ns", &[(ORG, "acme")]);
    let took = until_routes(
        &orgsplit,
        &upstream,
        &all,
        &["acme", "globex", "initech", "-", "acme"],
    )
    .await;
    assert!(took < Duration::from_secs(1), "create took {took:?}");
    // relabel
    kube.upsert("billing", &[(ORG, "acme")]);
    let took = until_routes(
        &orgsplit,
        &upstream,
        &all,
        &["acme", "acme", "initech", "-", "acme"],
    )
    .await;
    assert!(took < Duration::from_secs(1), "relabel took {took:?}");
    // organization removed, and an invalid one
    kube.upsert("shop-prod", &[]);
    kube.upsert("legacy", &[(ORG, "../evil")]);
    let took = until_routes(&orgsplit, &upstream, &all, &["-", "acme", "-", "-", "acme"]).await;
    assert!(took < Duration::from_secs(1), "unlabel took {took:?}");
    // delete
    kube.delete("new-ns");
    let took = until_routes(&orgsplit, &upstream, &all, &["-", "acme", "-", "-", "-"]).await;
    assert!(took < Duration::from_secs(1), "delete took {took:?}");

    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_table_namespaces"), 2.0, "{page}");
    assert!(
        metric(
            &page,
            "orgsplit_series_dropped_total{reason=\"invalid_tenant\"}"
        ) >= 1.0,
        "{page}"
    );
    // no polling: one list, then watches only
    assert_eq!(kube.lists.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn not_ready_until_the_first_sync_and_keeps_retrying() {
    let kube = FakeKube::start().await;
    kube.upsert("shop-prod", &[(ORG, "acme")]);
    kube.set_down(true);
    let (_d, upstream, orgsplit) = setup(&kube, "").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_of(&orgsplit, "/readyz").await, 503);
    assert_eq!(status_of(&orgsplit, "/healthz").await, 200);
    // pushes are told to retry, not routed against an empty table
    let (status, headers, body) = orgsplit
        .push(&request(vec![series(
            &[("namespace", "shop-prod")],
            1.0,
            1,
        )]))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(upstream.received().is_empty());

    kube.set_down(false);
    wait_ready(&orgsplit).await;
    assert_eq!(route(&orgsplit, &upstream, &["shop-prod"]).await, ["acme"]);
}

#[tokio::test]
async fn an_api_outage_keeps_the_last_table_and_recovers() {
    let kube = FakeKube::start().await;
    kube.upsert("shop-prod", &[(ORG, "acme")]);
    kube.upsert("billing", &[(ORG, "globex")]);
    let (_d, upstream, orgsplit) = setup(&kube, "").await;
    wait_ready(&orgsplit).await;

    kube.set_down(true);
    // keeps routing, stays ready, for a while
    for _ in 0..10 {
        assert_eq!(
            route(&orgsplit, &upstream, &["shop-prod", "billing"]).await,
            ["acme", "globex"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status_of(&orgsplit, "/readyz").await, 200);
    let page = orgsplit.metrics().await;
    assert!(
        metric(&page, "orgsplit_table_sync_errors_total") >= 1.0,
        "{page}"
    );
    assert_eq!(metric(&page, "orgsplit_table_source_up"), 0.0, "{page}");

    // changes made while it was down arrive after recovery
    kube.set_down(false);
    kube.upsert("billing", &[(ORG, "acme")]);
    kube.delete("shop-prod");
    until_routes(
        &orgsplit,
        &upstream,
        &["shop-prod", "billing"],
        &["-", "acme"],
    )
    .await;
    let page = orgsplit.metrics().await;
    assert_eq!(metric(&page, "orgsplit_table_source_up"), 1.0, "{page}");
}

#[tokio::test]
async fn cut_watches_resume_and_410_relists_without_losing_updates() {
    let kube = FakeKube::start().await;
    kube.upsert("a", &[(ORG, "one")]);
    let (_d, upstream, orgsplit) = setup(&kube, "").await;
    wait_ready(&orgsplit).await;
    let lists = || kube.lists.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(lists(), 1);

    // A cut watch resumes from its resourceVersion: no relist.
    kube.cut_watches();
    kube.upsert("b", &[(ORG, "two")]);
    until_routes(&orgsplit, &upstream, &["a", "b"], &["one", "two"]).await;
    assert_eq!(lists(), 1, "a resumed watch must not relist");

    // History compacted while changes happen: the resumed watch gets 410,
    // the client relists, and every change is there.
    kube.compact();
    kube.upsert("a", &[(ORG, "three")]);
    kube.upsert("c", &[(ORG, "four")]);
    kube.compact();
    kube.delete("b");
    until_routes(
        &orgsplit,
        &upstream,
        &["a", "b", "c"],
        &["three", "-", "four"],
    )
    .await;
    assert!(lists() >= 2, "410 must force a relist");
}

#[tokio::test]
async fn label_selector_limits_the_namespaces() {
    let kube = FakeKube::start().await;
    kube.upsert("tenant-ns", &[(ORG, "acme"), ("managed", "yes")]);
    kube.upsert("other-ns", &[(ORG, "globex")]);
    let (_d, upstream, orgsplit) = setup(&kube, "    label_selector: managed=yes\n").await;
    wait_ready(&orgsplit).await;
    assert_eq!(
        route(&orgsplit, &upstream, &["tenant-ns", "other-ns"]).await,
        ["acme", "-"]
    );
    // leaving the selector removes it
    kube.upsert("tenant-ns", &[(ORG, "acme")]);
    until_routes(
        &orgsplit,
        &upstream,
        &["tenant-ns", "other-ns"],
        &["-", "-"],
    )
    .await;
}

#[tokio::test]
async fn ten_thousand_namespaces_sync_with_paging_and_route_fast() {
    let kube = FakeKube::start().await;
    kube.preload((0..10_000).map(|i| {
        (
            format!("ns-{i}"),
            vec![(ORG.to_string(), format!("org-{}", i % 500))],
        )
    }));
    let (_d, upstream, orgsplit) = setup(&kube, "").await;
    let took = wait_ready(&orgsplit).await;
    assert!(took < Duration::from_secs(10), "sync took {took:?}");
    // the default page size is 500: 20 pages, one list each
    assert_eq!(kube.lists.load(std::sync::atomic::Ordering::Relaxed), 20);

    // a 2 000-series request over 2 000 namespaces routes every series to
    // its organization
    let req = request(
        (0..2000)
            .map(|i| {
                series(
                    &[("__name__", "up"), ("namespace", &format!("ns-{}", i * 5))],
                    1.0,
                    1,
                )
            })
            .collect(),
    );
    upstream.reset();
    let (status, _, body) = orgsplit.push(&req).await;
    assert_eq!(status, 204, "{body}");
    for r in upstream.received() {
        for s in &r.request.timeseries {
            let i: usize = label_of(s, "namespace").unwrap()[3..].parse().unwrap();
            assert_eq!(r.tenant, format!("org-{}", i % 500));
        }
    }
    assert_eq!(
        upstream
            .received()
            .iter()
            .map(|r| r.request.timeseries.len())
            .sum::<usize>(),
        2000
    );

    // The lookup is O(1): routing with 10 000 namespaces in the table is not
    // measurably slower than with 10 (split only, no network).
    use orgsplit::config::Routing;
    use orgsplit::route::{FamilyIndex, Router};
    use orgsplit::table::Snapshot;
    let small = Snapshot::from_pairs((0..10).map(|i| (format!("ns-{i}"), "acme".to_string())));
    let big = orgsplit.table.snapshot();
    let router = Router::new(
        &Routing {
            unmapped: orgsplit::config::UnmappedPolicy::Drop,
            ..Default::default()
        },
        Default::default(),
    );
    let body = {
        use prost::Message;
        req.encode_to_vec()
    };
    let time = |t: &Snapshot| {
        let families = FamilyIndex::default();
        let mut best = Duration::MAX;
        for _ in 0..30 {
            let started = Instant::now();
            router.split_rw1(&body, t, &families).unwrap();
            best = best.min(started.elapsed());
        }
        best
    };
    let (small_t, big_t) = (time(&small), time(&big));
    assert!(
        big_t < small_t * 3 + Duration::from_millis(1),
        "10k namespaces: {big_t:?}, 10 namespaces: {small_t:?}"
    );
}
