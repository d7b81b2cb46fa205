//! Two replicas behind one address lose nothing across restarts: a real
//! Prometheus remote-writes through a Service-like balancer
//! (`common/balancer.rs`: readiness-probed, round robin per connection) to
//! two real orgsplit processes, and each replica in turn gets SIGTERM during
//! the traffic and is started again on its port, as a rolling update does;
//! then one is killed outright (SIGKILL) and started again, as a crash.
//! Every sample scraped must reach its tenant, and Prometheus must have
//! failed (dropped) none.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::balancer::Balancer;
use common::prom::*;
use common::*;
use tokio::process::Child;

/// A replica's config: the shared table, and a short grace period so the
/// test does not wait the default 5 s per restart (the order of events is
/// the same).
fn replica_config(table: &Path, upstream: SocketAddr) -> String {
    format!(
        "upstream: {{url: \"http://{upstream}/api/v1/push\", timeout: 2s}}
routing: {{unmapped: drop}}
lookup: {{file: \"{}\"}}
shutdown: {{grace_period: 2s}}
",
        table.display()
    )
}

/// Pushes the replica on `port` has answered 204 since it started.
async fn pushes_served(port: u16) -> f64 {
    scrape_metric(port, r#"orgsplit_requests_total{code="204"}"#).await
}

/// SIGTERM, then wait for a clean exit (the grace period, then in-flight
/// pushes finish).
async fn terminate(child: &mut Child) {
    let pid = child.id().expect("replica running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("replica exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "replica exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_replicas_loses_no_sample() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let table = dir.path().join("namespaces.yaml");
    std::fs::write(&table, "shop-prod: acme\nbilling: globex\n").unwrap();
    let config = replica_config(&table, upstream.addr);

    let ports = [free_port(), free_port()];
    let dirs: Vec<_> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
    let mut replicas = Vec::new();
    for (d, &port) in dirs.iter().zip(&ports) {
        std::fs::create_dir(d).unwrap();
        replicas.push(start_orgsplit_on(d, port, &config).await);
    }
    let balancer = Balancer::start(&ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)))).await;
    for &p in &ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], p));
        eventually(
            "the balancer sees both replicas ready",
            Duration::from_secs(10),
            || balancer.is_ready(addr),
        )
        .await;
    }

    // Several shards, so Prometheus holds several connections and both
    // replicas carry traffic.
    let targets = start_targets().await;
    let mut cfg = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, ns) in [("shop", "shop-prod"), ("billing", "billing")] {
        cfg.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{targets}']\n        labels: {{namespace: {ns}}}\n"
        ));
    }
    cfg.push_str(&format!(
        "remote_write:
  - url: http://{}/api/v1/push
    queue_config:
      min_shards: 4
      max_shards: 4
      max_samples_per_send: 20
      batch_send_deadline: 200ms
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 2s
",
        balancer.addr
    ));
    let (_prom, prom_port) = start_prometheus_config(&bin, dir.path(), "sender", &cfg, &[]).await;

    let has = |tenant: &str| upstream.series_by_tenant().contains_key(tenant);
    eventually("data in both tenants", Duration::from_secs(60), || {
        has("acme") && has("globex")
    })
    .await;
    let from_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // A rolling update: each replica in turn is stopped and started again
    // on its port while Prometheus keeps sending.
    for (i, (child, d)) in replicas.iter_mut().zip(&dirs).enumerate() {
        let served = pushes_served(ports[i]).await;
        assert!(
            served > 0.0,
            "replica {i} carried no traffic before its restart (connections {:?})",
            balancer.connections()
        );
        terminate(child).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        *child = start_orgsplit_on(d, ports[i], &config).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    // And a crash: SIGKILL, no grace at all. Pushes it was serving are
    // cut; Prometheus retries them against the other replica.
    let served = pushes_served(ports[0]).await;
    assert!(
        served > 0.0,
        "replica 0 carried no traffic before the crash"
    );
    replicas[0].start_kill().unwrap();
    replicas[0].wait().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[0] = start_orgsplit_on(&dirs[0], ports[0], &config).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let until_ms = now_ms() - 2000;
    let total = all_arrive(
        prom_port,
        &upstream,
        &[("acme", "shop-prod"), ("globex", "billing")],
        (from_ms, until_ms),
    )
    .await;
    assert!(total > 200, "too few samples to mean anything: {total}");

    // Nothing crossed tenants, and no third tenant appeared.
    let by_tenant = upstream.series_by_tenant();
    assert_eq!(by_tenant.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    for (tenant, ns) in [("acme", "shop-prod"), ("globex", "billing")] {
        for s in &by_tenant[tenant] {
            assert_eq!(label_of(s, "namespace"), Some(ns), "{tenant} got {s:?}");
        }
    }
    let failed = scrape_metric(prom_port, "prometheus_remote_storage_samples_failed_total").await;
    assert_eq!(failed, 0.0, "Prometheus dropped samples");
    let dropped = scrape_metric(prom_port, "prometheus_remote_storage_samples_dropped_total").await;
    assert_eq!(dropped, 0.0, "Prometheus dropped samples");
    let c = balancer.connections();
    assert!(c.iter().all(|&n| n > 0), "both replicas served: {c:?}");
    let retried = scrape_metric(prom_port, "prometheus_remote_storage_samples_retried_total").await;
    eprintln!("{total} samples checked; connections per replica {c:?}; samples Prometheus retried: {retried}");
}
