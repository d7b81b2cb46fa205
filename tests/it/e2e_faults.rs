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

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::kube_api::FakeKube;
use common::prom::*;
use common::proxy::Proxy;
use common::*;

const ORG: &str = "appuio.io/organization";

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
    let total = all_arrive(
        prom_port,
        &upstream,
        &[("acme", "shop-prod"), ("globex", "billing")],
        (from_ms, until_ms),
    )
    .await;
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
