//! End to end with a real Prometheus (Debian's `prometheus` package) as the
//! sender, the real `orgsplit` binary in between, and either the recording
//! fake Mimir or a second real Prometheus (remote-write receiver) upstream.
//!
//! Under `CI=true` a missing `prometheus` binary fails these tests; elsewhere
//! they are skipped with a message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::prom::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_series_arrive_split_per_organization() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let targets = start_targets().await;
    let (_orgsplit, orgsplit_port) = start_orgsplit(
        dir.path(),
        &upstream.url(),
        "shop-prod: acme\nshop-dev: acme\nbilling: globex\n",
    )
    .await;
    let (_prom, prom_port) = start_prometheus(
        &bin,
        dir.path(),
        "sender",
        targets,
        &[
            ("shop", Some("shop-prod")),
            ("shopdev", Some("shop-dev")),
            ("billing", Some("billing")),
            ("stray", Some("not-in-table")),
            ("nolabel", None),
        ],
        Some(&format!("http://127.0.0.1:{orgsplit_port}/api/v1/push")),
        &[],
    )
    .await;

    // Wait until both tenants have each job's app metrics and metadata.
    let want_jobs = |tenant: &str, jobs: &[&str]| {
        let by_tenant = upstream.series_by_tenant();
        let Some(series) = by_tenant.get(tenant) else {
            return false;
        };
        jobs.iter().all(|job| {
            series.iter().any(|s| {
                label_of(s, "job") == Some(job)
                    && label_of(s, "__name__") == Some("app_temperature_celsius")
            })
        })
    };
    let has_metadata = |tenant: &str| {
        upstream.received().iter().any(|r| {
            r.tenant == tenant
                && r.request
                    .metadata
                    .iter()
                    .any(|m| m.metric_family_name == "app_requests_total")
        })
    };
    eventually(
        "series of every job in its tenant",
        Duration::from_secs(60),
        || want_jobs("acme", &["shop", "shopdev"]) && want_jobs("globex", &["billing"]),
    )
    .await;
    eventually("metadata for both tenants", Duration::from_secs(30), || {
        has_metadata("acme") && has_metadata("globex")
    })
    .await;

    // Every series is in the tenant of its namespace and nowhere else.
    let by_tenant = upstream.series_by_tenant();
    assert_eq!(
        by_tenant.keys().collect::<Vec<_>>(),
        ["acme", "globex"],
        "only mapped organizations receive data"
    );
    let namespaces = |tenant: &str| -> BTreeSet<String> {
        by_tenant[tenant]
            .iter()
            .map(|s| label_of(s, "namespace").unwrap_or("<none>").to_string())
            .collect()
    };
    assert_eq!(
        namespaces("acme"),
        BTreeSet::from(["shop-prod".into(), "shop-dev".into()])
    );
    assert_eq!(namespaces("globex"), BTreeSet::from(["billing".into()]));
    // Values and histograms (classic) came through as scraped.
    let temp = by_tenant["globex"]
        .iter()
        .find(|s| label_of(s, "__name__") == Some("app_temperature_celsius"))
        .unwrap();
    assert_eq!(temp.samples[0].value, 21.5);
    assert!(by_tenant["acme"]
        .iter()
        .any(|s| label_of(s, "__name__") == Some("app_latency_seconds_bucket")));
    // Metadata went only to tenants with that family, never to a third one.
    for r in upstream.received() {
        assert!(r.tenant == "acme" || r.tenant == "globex");
    }

    // The stray and label-less jobs were dropped by policy, and counted.
    let dropped_no_org = scrape_metric(
        orgsplit_port,
        "orgsplit_series_dropped_total{reason=\"no_organization\"}",
    )
    .await;
    let dropped_no_label = scrape_metric(
        orgsplit_port,
        "orgsplit_series_dropped_total{reason=\"no_label\"}",
    )
    .await;
    assert!(dropped_no_org > 0.0 && dropped_no_label > 0.0);
    // Prometheus saw every push accepted.
    let failed = scrape_metric(prom_port, "prometheus_remote_storage_samples_failed_total").await;
    let sent = scrape_metric(prom_port, "prometheus_remote_storage_samples_total").await;
    assert_eq!(failed, 0.0);
    assert!(sent > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_receiver_accepts_the_reencoded_pushes() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let targets = start_targets().await;
    // The upstream is a second real Prometheus with its remote-write receiver
    // on. It ignores X-Scope-OrgID, so it shows what all tenants received.
    let (_receiver, receiver_port) = start_prometheus(
        &bin,
        dir.path(),
        "receiver",
        targets,
        &[],
        None,
        &["--web.enable-remote-write-receiver"],
    )
    .await;
    let (_orgsplit, orgsplit_port) = start_orgsplit(
        dir.path(),
        &format!("http://127.0.0.1:{receiver_port}/api/v1/write"),
        "shop-prod: acme\nbilling: globex\n",
    )
    .await;
    let (_sender, sender_port) = start_prometheus(
        &bin,
        dir.path(),
        "sender",
        targets,
        &[
            ("shop", Some("shop-prod")),
            ("billing", Some("billing")),
            ("stray", Some("not-in-table")),
        ],
        Some(&format!("http://127.0.0.1:{orgsplit_port}/api/v1/push")),
        &[],
    )
    .await;

    let query = |q: &'static str| async move {
        query(receiver_port, q, None)
            .await
            .into_iter()
            .map(|s| {
                (
                    s["metric"]["namespace"].as_str().unwrap_or("").to_string(),
                    s["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect::<BTreeMap<String, String>>()
    };
    let started = Instant::now();
    loop {
        let got = query("app_temperature_celsius").await;
        if got.len() == 2 {
            assert_eq!(
                got,
                BTreeMap::from([
                    ("billing".to_string(), "21.5".to_string()),
                    ("shop-prod".to_string(), "21.5".to_string()),
                ])
            );
            break;
        }
        assert!(
            got.len() < 2 || !got.contains_key("not-in-table"),
            "unmapped namespace was forwarded: {got:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "receiver never got both namespaces: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let counts = query("count by (namespace) ({__name__=~\"app_.*\"})").await;
    assert!(!counts.contains_key("not-in-table"), "{counts:?}");
    assert_eq!(
        counts.get("shop-prod").map(String::as_str),
        Some("7"),
        "{counts:?}"
    );
    // The receiver accepted every push: nothing failed at the sender.
    let failed = scrape_metric(
        sender_port,
        "prometheus_remote_storage_samples_failed_total",
    )
    .await;
    assert_eq!(failed, 0.0);
    let upstream_errors = scrape_metric(
        orgsplit_port,
        "orgsplit_upstream_requests_total{status=\"4xx\"}",
    )
    .await;
    assert_eq!(upstream_errors, 0.0);
}

/// Runs the orgsplit binary with `args`; its standard output.
fn orgsplit_cmd(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orgsplit"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "orgsplit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An operator's whole path: `orgsplit keys create`, `keys public` into the
/// trust store, `token create` into a file, and a real Prometheus sending
/// with `authorization.credentials_file`: its series land in the token's
/// tenant; a Prometheus without the token gets nothing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_with_a_token_from_orgsplit_token_create() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, store, token_file) = (d.join("signing.pem"), d.join("trust"), d.join("token"));
    std::fs::create_dir(&store).unwrap();
    let kid = orgsplit_cmd(&["keys", "create", key.to_str().unwrap(), "--type", "rsa"]);
    let public = orgsplit_cmd(&["keys", "public", key.to_str().unwrap()]);
    std::fs::write(store.join("signing.pub"), public).unwrap();
    let pub_path = store.join("signing.pub");
    assert_eq!(
        orgsplit_cmd(&["keys", "id", pub_path.to_str().unwrap()]),
        kid
    );
    let token = orgsplit_cmd(&[
        "token",
        "create",
        "--key",
        key.to_str().unwrap(),
        "--tenant",
        "acme",
        "--expires",
        "1h",
    ]);
    std::fs::write(&token_file, &token).unwrap();
    let inspected = orgsplit_cmd(&[
        "token",
        "inspect",
        token.trim(),
        "--trust-store",
        store.to_str().unwrap(),
    ]);
    assert!(inspected.contains("verifies: yes"), "{inspected}");

    let upstream = Upstream::start().await;
    let targets = start_targets().await;
    std::fs::write(
        d.join("namespaces.yaml"),
        "shop-prod: acme\nbilling: globex\n",
    )
    .unwrap();
    let (_orgsplit, port) = start_orgsplit_with(
        d,
        &format!(
            "upstream:\n  url: {}\nrouting:\n  unmapped: drop\nlookup:\n  file: {}\n\
             auth:\n  anonymous: {{enabled: false}}\n  jwt:\n    trust_store: {}\n",
            upstream.url(),
            d.join("namespaces.yaml").display(),
            store.display()
        ),
    )
    .await;
    let prometheus = |sender: &str, credentials: Option<&std::path::Path>| {
        let auth = credentials
            .map(|p| {
                format!(
                    "    authorization:\n      credentials_file: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels: {{sender: {sender}}}\nscrape_configs:\n  - job_name: shop\n    \
             static_configs:\n      - targets: ['{targets}']\n        labels: {{namespace: shop-prod}}\n\
             remote_write:\n  - url: http://127.0.0.1:{port}/api/v1/push\n{auth}    \
             queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}\n"
        )
    };
    let (_with, _) = start_prometheus_config(
        &bin,
        d,
        "with-token",
        &prometheus("with-token", Some(&token_file)),
        &[],
    )
    .await;
    let (_without, _) =
        start_prometheus_config(&bin, d, "no-token", &prometheus("no-token", None), &[]).await;

    eventually(
        "the token's series in acme",
        Duration::from_secs(60),
        || {
            upstream.series_by_tenant().get("acme").is_some_and(|s| {
                s.iter()
                    .any(|s| label_of(s, "__name__") == Some("app_temperature_celsius"))
            })
        },
    )
    .await;
    // The tokenless sender has been refused meanwhile.
    let refused = Instant::now();
    while scrape_metric(
        port,
        "orgsplit_auth_failures_total{mode=\"anonymous\",reason=\"missing\"",
    )
    .await
        == 0.0
    {
        assert!(
            refused.elapsed() < Duration::from_secs(30),
            "no 401 counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tenants: BTreeSet<String> = upstream.received().into_iter().map(|r| r.tenant).collect();
    assert_eq!(tenants, BTreeSet::from(["acme".to_string()]));
    // Every series that arrived came from the token's Prometheus.
    let senders: BTreeSet<String> = upstream.series_by_tenant()["acme"]
        .iter()
        .filter_map(|s| label_of(s, "sender").map(String::from))
        .collect();
    assert_eq!(senders, BTreeSet::from(["with-token".to_string()]));
}
