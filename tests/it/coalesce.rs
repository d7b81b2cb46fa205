//! Coalescing over real HTTP: concurrent pushes' batches for one tenant go
//! upstream as one request while the tenant is busy, each sender hears the
//! answer for its own data, and an idle tenant's batch goes out at once.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use orgsplit::formats::rw1::pb;

/// An orgsplit with `upstream.coalesce` set to `coalesce` (a YAML flow map;
/// tests use long windows so merging does not depend on timing), in front
/// of a fresh recording upstream.
async fn setup(coalesce: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), TABLE);
    let upstream = Upstream::start().await;
    let cfg = config(dir.path(), &upstream.url(), "  unmapped: drop").replace(
        "  timeout: 2s\n",
        &format!("  timeout: 5s\n  coalesce: {coalesce}\n"),
    );
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    (dir, upstream, orgsplit)
}

fn one(name: &str, namespace: &str, extra: &[(&str, &str)]) -> pb::WriteRequest {
    let mut labels = vec![("__name__", name), ("namespace", namespace)];
    labels.extend_from_slice(extra);
    request(vec![series(&labels, 1.0, 1)])
}

fn names(received: &Received) -> Vec<String> {
    let mut n: Vec<String> = received
        .request
        .timeseries
        .iter()
        .map(|s| label_of(s, "__name__").unwrap_or("").to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn concurrent_pushes_for_a_busy_tenant_travel_in_one_request() {
    let (_d, upstream, o) = setup("{window: 3s}").await;
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(400)));
    // The first push finds acme idle and goes out at once ...
    let first = tokio::spawn({
        let url = o.url("/api/v1/push");
        async move { push_to(&url, &one("first", "shop-prod", &[])).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... these three arrive while it is out: acme's batches wait for it,
    // globex's batch of the second push goes out on its own lane.
    let mut b = one("second", "shop-prod", &[]);
    b.timeseries.push(series(
        &[("__name__", "g"), ("namespace", "billing")],
        2.0,
        2,
    ));
    let (c, d) = (
        one("third", "shop-dev", &[]),
        one("fourth", "shop-prod", &[]),
    );
    let (r2, r3, r4) = tokio::join!(o.push(&b), o.push(&c), o.push(&d));
    assert_eq!(first.await.unwrap().0, 204);
    for (status, _, body) in [r2, r3, r4] {
        assert_eq!(status, 204, "{body}");
    }
    let received = upstream.received();
    let acme: Vec<&Received> = received.iter().filter(|r| r.tenant == "acme").collect();
    assert_eq!(
        acme.len(),
        2,
        "one request for the first push, one for the rest"
    );
    assert_eq!(names(acme[0]), ["first"]);
    assert_eq!(names(acme[1]), ["fourth", "second", "third"]);
    let globex: Vec<&Received> = received.iter().filter(|r| r.tenant == "globex").collect();
    assert_eq!(globex.len(), 1);
    assert_eq!(names(globex[0]), ["g"], "lanes never mix tenants");
    let page = o.metrics().await;
    assert_eq!(
        metric(&page, "orgsplit_upstream_coalesced_batches_total"),
        3.0
    );
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 5.0);
}

#[tokio::test]
async fn a_refused_merged_request_is_resent_so_each_sender_hears_its_own_answer() {
    let (_d, upstream, o) = setup("{window: 3s}").await;
    upstream.set(
        "acme",
        Behaviour::Poison("poison", Duration::from_millis(300)),
    );
    let first = tokio::spawn({
        let url = o.url("/api/v1/push");
        async move { push_to(&url, &one("first", "shop-prod", &[])).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (bad, good) = (
        one("bad", "shop-prod", &[("poison", "yes")]),
        one("good", "shop-dev", &[]),
    );
    let (bad, good) = tokio::join!(o.push(&bad), o.push(&good));
    assert_eq!(first.await.unwrap().0, 204);
    assert_eq!(bad.0, 400, "the sender of the bad series hears the 400");
    assert!(bad.2.contains("acme"), "{}", bad.2);
    assert_eq!(
        good.0, 204,
        "the other sender's batch was accepted on its own"
    );
    let acme: Vec<Vec<String>> = upstream
        .received()
        .iter()
        .filter(|r| r.tenant == "acme")
        .map(names)
        .collect();
    assert!(acme.contains(&vec!["good".to_string()]), "{acme:?}");
    assert!(!acme.iter().flatten().any(|n| n == "bad"));
    let page = o.metrics().await;
    assert_eq!(metric(&page, "orgsplit_forwarded_series_total"), 2.0);
}

#[tokio::test]
async fn a_merged_request_stays_within_max_bytes() {
    // Each of these one-series batches decodes to 54 bytes: a bound of
    // 120 bytes holds two of them, never three.
    let (_d, upstream, o) = setup("{window: 3s, max_bytes: 120}").await;
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(300)));
    let first = tokio::spawn({
        let url = o.url("/api/v1/push");
        async move { push_to(&url, &one("first", "shop-prod", &[])).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reqs = ["b", "c", "d", "e"].map(|n| one(n, "shop-prod", &[]));
    let answers = futures::future::join_all(reqs.iter().map(|r| o.push(r))).await;
    assert_eq!(first.await.unwrap().0, 204);
    assert!(answers.iter().all(|a| a.0 == 204), "{answers:?}");
    let acme: Vec<Received> = upstream
        .received()
        .into_iter()
        .filter(|r| r.tenant == "acme")
        .collect();
    let sizes: Vec<usize> = acme.iter().map(|r| r.request.timeseries.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 5, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= 2),
        "a merge past max_bytes: {sizes:?}"
    );
    assert!(
        sizes.contains(&2),
        "still merged up to the bound: {sizes:?}"
    );
    for r in &acme {
        let bytes = prost::Message::encoded_len(&r.request);
        assert!(
            r.request.timeseries.len() == 1 || bytes <= 120,
            "{bytes} bytes"
        );
    }
}

#[tokio::test]
async fn an_idle_tenant_is_sent_at_once_whatever_the_window() {
    let (_d, upstream, o) = setup("{window: 5s}").await;
    let started = Instant::now();
    let (status, _, body) = o.push(&one("alone", "shop-prod", &[])).await;
    assert_eq!(status, 204, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.received().len(), 1);
}

#[tokio::test]
async fn with_coalescing_off_every_push_is_its_own_request() {
    let (_d, upstream, o) = setup("{enabled: false}").await;
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(200)));
    let reqs = ["a", "b", "c"].map(|n| one(n, "shop-prod", &[]));
    let (a, b, c) = tokio::join!(o.push(&reqs[0]), o.push(&reqs[1]), o.push(&reqs[2]));
    assert_eq!([a.0, b.0, c.0], [204, 204, 204]);
    assert_eq!(upstream.received().len(), 3);
}

/// POSTs a request to `url` as Prometheus does (for use from a spawned task).
async fn push_to(url: &str, req: &pb::WriteRequest) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(orgsplit::testing::compress(req))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
