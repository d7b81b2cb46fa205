//! Fault injection end to end: a real Prometheus sends through the real
//! orgsplit binary (namespaces from the Kubernetes API stand-in) to a fake
//! Mimir behind a proxy, while the test breaks things in turn:
//!
//! 1. one tenant's upstream answers 500 for 30 s, then recovers;
//! 2. the other tenant's upstream answers slower than `upstream.timeout`;
//! 3. the upstream refuses connections;
//! 4. the Kubernetes API goes down and comes back;
//!
//! and, all along, unrelated namespaces are created, relabelled and deleted
//! every 100 ms. Afterwards every sample the sender scraped for each tenant
//! must be in that tenant and in no other, and Prometheus must have failed
//! (dropped) none.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kube_api::FakeKube;
use common::prom::*;
use common::proxy::Proxy;
use common::*;

const ORG: &str = "appuio.io/organization";

/// Series key: all labels, sorted, as one string.
fn key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

type Samples = BTreeMap<String, BTreeSet<(i64, u64)>>;

/// What the sender stored: series key → (timestamp ms, value bits), for the
/// given namespace, up to `until_ms`.
async fn scraped(prom_port: u16, namespace: &str, until_ms: i64) -> Samples {
    let selector = format!("{{namespace=\"{namespace}\"}}[10m]");
    let mut out = Samples::new();
    for s in query(prom_port, &selector, Some(until_ms as f64 / 1000.0)).await {
        let labels: BTreeMap<String, String> = serde_json::from_value(s["metric"].clone()).unwrap();
        let set = out.entry(key(&labels)).or_default();
        for v in s["values"].as_array().cloned().unwrap_or_default() {
            let ts = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = v[1].as_str().unwrap().parse().unwrap();
            if ts <= until_ms {
                set.insert((ts, value.to_bits()));
            }
        }
    }
    out
}

/// What a tenant received from orgsplit, deduplicated (retries re-send).
fn received(upstream: &Upstream, tenant: &str, from_ms: i64, until_ms: i64) -> Samples {
    let mut out = Samples::new();
    for s in upstream
        .series_by_tenant()
        .get(tenant)
        .cloned()
        .unwrap_or_default()
    {
        let labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let set = out.entry(key(&labels)).or_default();
        for sample in s.samples {
            if sample.timestamp >= from_ms && sample.timestamp <= until_ms {
                // Prometheus stores a NaN stale marker; compare bits.
                set.insert((sample.timestamp, sample.value.to_bits()));
            }
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scraped_sample_reaches_exactly_its_tenant_through_faults() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr).await;
    let kube = FakeKube::start().await;
    kube.upsert("shop-prod", &[(ORG, "acme")]);
    kube.upsert("billing", &[(ORG, "globex")]);
    let targets = start_targets().await;
    let (_orgsplit, orgsplit_port) = start_orgsplit_with(
        dir.path(),
        &format!(
            "upstream: {{url: \"http://{}/api/v1/push\", timeout: 1s}}
routing: {{unmapped: drop}}
lookup:
  kubernetes: {{org_label: \"{ORG}\", kubeconfig: \"{}\"}}
",
            proxy.addr,
            kube.kubeconfig(dir.path()).display()
        ),
    )
    .await;
    let (_prom, prom_port) = start_prometheus(
        &bin,
        dir.path(),
        "sender",
        targets,
        &[("shop", Some("shop-prod")), ("billing", Some("billing"))],
        Some(&format!("http://127.0.0.1:{orgsplit_port}/api/v1/push")),
        &[],
    )
    .await;

    // Table churn: unrelated namespaces every 100 ms, plus no-op updates of
    // the two that matter, for the whole run.
    let churning = Arc::new(AtomicBool::new(true));
    let churn = {
        let churning = churning.clone();
        let kube = Arc::new(kube);
        let k = kube.clone();
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while churning.load(Ordering::Relaxed) {
                i += 1;
                k.upsert(
                    &format!("churn-{}", i % 50),
                    &[(ORG, &format!("org-{}", i % 7))],
                );
                if i % 3 == 0 {
                    k.delete(&format!("churn-{}", (i + 25) % 50));
                }
                if i % 10 == 0 {
                    k.upsert("shop-prod", &[(ORG, "acme"), ("rev", &i.to_string())]);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (task, kube)
    };
    let kube = churn.1.clone();

    let has = |tenant: &str| upstream.series_by_tenant().contains_key(tenant);
    eventually("data in both tenants", Duration::from_secs(60), || {
        has("acme") && has("globex")
    })
    .await;
    let from_ms = now_ms();

    // 1. acme's upstream fails for 30 s.
    upstream.set("acme", Behaviour::Status(500, None, "ingester unavailable"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    upstream.clear("acme");
    // 2. globex's upstream is slower than upstream.timeout.
    upstream.set("globex", Behaviour::Delay(Duration::from_millis(1500)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    upstream.clear("globex");
    // 3. connections refused.
    proxy.down();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.up().await;
    // 4. the Kubernetes API is down; routing goes on with the last table.
    kube.set_down(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    kube.set_down(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    churning.store(false, Ordering::Relaxed);
    churn.0.await.unwrap();

    // Everything scraped up to now must arrive once the queue drains.
    let until_ms = now_ms() - 2000;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut want_acme, mut want_globex) = (Samples::new(), Samples::new());
    loop {
        if want_acme.is_empty() {
            want_acme = scraped(prom_port, "shop-prod", until_ms).await;
            want_globex = scraped(prom_port, "billing", until_ms).await;
            want_acme
                .values_mut()
                .for_each(|s| s.retain(|(t, _)| *t >= from_ms));
            want_globex
                .values_mut()
                .for_each(|s| s.retain(|(t, _)| *t >= from_ms));
            want_acme.retain(|_, v| !v.is_empty());
            want_globex.retain(|_, v| !v.is_empty());
        }
        let got_acme = received(&upstream, "acme", from_ms, until_ms);
        let got_globex = received(&upstream, "globex", from_ms, until_ms);
        if got_acme == want_acme && got_globex == want_globex {
            break;
        }
        if Instant::now() > deadline {
            let missing = |want: &Samples, got: &Samples| -> usize {
                want.iter()
                    .map(|(k, v)| v.difference(got.get(k).unwrap_or(&BTreeSet::new())).count())
                    .sum()
            };
            panic!(
                "not every sample arrived: acme missing {}, globex missing {}; extra series in acme: {:?}",
                missing(&want_acme, &got_acme),
                missing(&want_globex, &got_globex),
                got_acme.keys().filter(|k| !want_acme.contains_key(*k)).take(3).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total: usize = want_acme
        .values()
        .chain(want_globex.values())
        .map(|s| s.len())
        .sum();
    assert!(total > 500, "too few samples to mean anything: {total}");

    // No tenant ever saw the other's namespace, and no third tenant exists.
    let by_tenant = upstream.series_by_tenant();
    assert_eq!(by_tenant.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    for (tenant, ns) in [("acme", "shop-prod"), ("globex", "billing")] {
        for s in &by_tenant[tenant] {
            assert_eq!(label_of(s, "namespace"), Some(ns), "{tenant} got {s:?}");
        }
    }
    // Prometheus retried everything and dropped nothing.
    let failed = scrape_metric(prom_port, "prometheus_remote_storage_samples_failed_total").await;
    let retried = scrape_metric(prom_port, "prometheus_remote_storage_samples_retried_total").await;
    assert_eq!(failed, 0.0);
    assert!(retried > 0.0, "the faults should have caused retries");
}
