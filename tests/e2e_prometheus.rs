//! End to end with a real Prometheus (Debian's `prometheus` package) as the
//! sender, the real `orgsplit` binary in between, and either the recording
//! fake Mimir or a second real Prometheus (remote-write receiver) upstream.
//!
//! Under `CI=true` a missing `prometheus` binary fails these tests; elsewhere
//! they are skipped with a message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::process::{Child, Command};

/// The Prometheus binary, or `None` (skip) outside CI.
fn prometheus_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("prometheus is not installed; .ci/run installs Debian's `prometheus` package");
        }
        eprintln!("SKIPPED: prometheus not installed (apt-get install prometheus)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scrape targets: one HTTP server whose `/metrics` page is the same for
/// every job; the jobs differ in the `namespace` target label they attach.
async fn start_targets() -> SocketAddr {
    let page = "# HELP app_requests_total Requests served.\n\
# TYPE app_requests_total counter\n\
app_requests_total{path=\"/\"} 5\n\
app_requests_total{path=\"/cart\"} 7\n\
# HELP app_temperature_celsius Temperature.\n\
# TYPE app_temperature_celsius gauge\n\
app_temperature_celsius 21.5\n\
# HELP app_latency_seconds Latency.\n\
# TYPE app_latency_seconds histogram\n\
app_latency_seconds_bucket{le=\"0.1\"} 3\n\
app_latency_seconds_bucket{le=\"+Inf\"} 4\n\
app_latency_seconds_sum 0.9\n\
app_latency_seconds_count 4\n";
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            ([("content-type", "text/plain; version=0.0.4")], page)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Starts the real orgsplit binary and waits until it is ready.
async fn start_orgsplit(dir: &Path, upstream_url: &str, table: &str) -> (Child, u16) {
    let port = free_port();
    std::fs::write(dir.join("namespaces.yaml"), table).unwrap();
    let config = format!(
        "listen: 127.0.0.1:{port}
upstream:
  url: {upstream_url}
routing:
  unmapped: drop
lookup:
  file: {}
",
        dir.join("namespaces.yaml").display()
    );
    std::fs::write(dir.join("orgsplit.yaml"), config).unwrap();
    let child = spawn(
        Path::new(env!("CARGO_BIN_EXE_orgsplit")),
        &[
            "--config".into(),
            dir.join("orgsplit.yaml").display().to_string(),
        ],
        &dir.join("orgsplit.log"),
    );
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        &dir.join("orgsplit.log"),
    )
    .await;
    (child, port)
}

async fn wait_ready(url: &str, log: &Path) {
    let started = Instant::now();
    loop {
        if let Ok(r) = common::client().get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!(
                "{url} never became ready; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a Prometheus that scrapes `targets` as jobs with the given
/// namespace labels (`None`: no namespace label) and remote-writes to
/// `remote_write` (if any). Extra flags are appended.
async fn start_prometheus(
    bin: &Path,
    dir: &Path,
    name: &str,
    targets: SocketAddr,
    jobs: &[(&str, Option<&str>)],
    remote_write: Option<&str>,
    extra: &[&str],
) -> (Child, u16) {
    let port = free_port();
    let mut cfg = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, ns) in jobs {
        cfg.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{targets}']\n"
        ));
        if let Some(ns) = ns {
            cfg.push_str(&format!("        labels: {{namespace: {ns}}}\n"));
        }
    }
    if let Some(url) = remote_write {
        cfg.push_str(&format!(
            "remote_write:
  - url: {url}
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send: true
      send_interval: 2s
"
        ));
    }
    let cfg_path = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut args = vec![
        format!("--config.file={}", cfg_path.display()),
        format!(
            "--storage.tsdb.path={}",
            dir.join(format!("{name}-data")).display()
        ),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let log = dir.join(format!("{name}.log"));
    let child = spawn(bin, &args, &log);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready"), &log).await;
    (child, port)
}

/// Polls `check` until it returns true or the deadline passes.
async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scrape_metric(port: u16, name: &str) -> f64 {
    let page = common::client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&page, name)
}

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
        let r: serde_json::Value = common::client()
            .get(format!("http://127.0.0.1:{receiver_port}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
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
