//! Real processes for end-to-end tests: Prometheus (Debian's package) as
//! sender or receiver, scrape targets, and the orgsplit binary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::process::{Child, Command};

use super::{metric, Upstream};

/// The Prometheus binary; its absence fails the test unless skipping was
/// asked for.
pub fn prometheus_bin() -> Option<PathBuf> {
    binary("prometheus")
}

/// A binary of Debian's prometheus package (`prometheus`, `promtool`); its
/// absence fails the test unless skipping was asked for.
pub fn binary(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        // Never a silent skip: only when asked for (ORGSPLIT_TEST_SKIP_MISSING=1).
        if !std::env::var("ORGSPLIT_TEST_SKIP_MISSING").is_ok_and(|v| v == "1") {
            panic!("{name} is not installed; scripts/test installs it (or set ORGSPLIT_TEST_SKIP_MISSING=1 to skip these tests)");
        }
        eprintln!("SKIPPED: {name} not installed (apt-get install prometheus)");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Scrape targets: one HTTP server whose `/metrics` page is the same for
/// every job; the jobs differ in the `namespace` target label they attach.
pub async fn start_targets() -> SocketAddr {
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

pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    // Appended to, so a restarted process keeps its predecessor's log.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Starts the real orgsplit binary with a file table and waits until it is
/// ready.
pub async fn start_orgsplit(dir: &Path, upstream_url: &str, table: &str) -> (Child, u16) {
    std::fs::write(dir.join("namespaces.yaml"), table).unwrap();
    let rest = format!(
        "upstream:
  url: {upstream_url}
routing:
  unmapped: drop
lookup:
  file: {}
",
        dir.join("namespaces.yaml").display()
    );
    start_orgsplit_with(dir, &rest).await
}

/// Starts the real orgsplit binary with `config` (everything but `listen`)
/// and waits until it is ready.
pub async fn start_orgsplit_with(dir: &Path, config: &str) -> (Child, u16) {
    let port = free_port();
    (start_orgsplit_on(dir, port, config).await, port)
}

/// Starts the real orgsplit binary on `port` with `config` (everything but
/// `listen`), its config and log in `dir`, and waits until it is ready.
pub async fn start_orgsplit_on(dir: &Path, port: u16, config: &str) -> Child {
    let config = format!("listen: 127.0.0.1:{port}\n{config}");
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
    child
}

pub async fn wait_ready(url: &str, log: &Path) {
    let started = Instant::now();
    loop {
        if let Ok(r) = super::client().get(url).send().await {
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
pub async fn start_prometheus(
    bin: &Path,
    dir: &Path,
    name: &str,
    targets: SocketAddr,
    jobs: &[(&str, Option<&str>)],
    remote_write: Option<&str>,
    extra: &[&str],
) -> (Child, u16) {
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
    start_prometheus_config(bin, dir, name, &cfg, extra).await
}

/// Starts a Prometheus with the configuration `cfg` (YAML) and waits until
/// it is ready.
pub async fn start_prometheus_config(
    bin: &Path,
    dir: &Path,
    name: &str,
    cfg: &str,
    extra: &[&str],
) -> (Child, u16) {
    let port = free_port();
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
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn scrape_metric(port: u16, name: &str) -> f64 {
    let page = super::client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&page, name)
}

/// Runs an instant query against a Prometheus (at `time`, Unix seconds, if
/// given) and returns `data.result`.
pub async fn query(port: u16, query: &str, time: Option<f64>) -> Vec<serde_json::Value> {
    let mut params = vec![("query", query.to_string())];
    if let Some(t) = time {
        params.push(("time", t.to_string()));
    }
    let r: serde_json::Value = super::client()
        .get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query(&params)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Series key: all labels, sorted, as one string.
pub fn key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub type Samples = BTreeMap<String, BTreeSet<(i64, u64)>>;

/// What the sender stored: series key → (timestamp ms, value bits), for the
/// given namespace, up to `until_ms`.
pub async fn scraped(prom_port: u16, namespace: &str, until_ms: i64) -> Samples {
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
pub fn received(upstream: &Upstream, tenant: &str, from_ms: i64, until_ms: i64) -> Samples {
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

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits (up to 90 s) until every sample the Prometheus at `prom_port`
/// scraped for each `(tenant, namespace)` between `from_ms` and `until_ms`
/// has reached that tenant, and panics with what is missing otherwise.
/// Returns how many samples that was.
pub async fn all_arrive(
    prom_port: u16,
    upstream: &Upstream,
    tenants: &[(&str, &str)],
    (from_ms, until_ms): (i64, i64),
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut want: Vec<Samples> = Vec::new();
    loop {
        if want.iter().all(|w| w.is_empty()) {
            want.clear();
            for (_, ns) in tenants {
                let mut w = scraped(prom_port, ns, until_ms).await;
                w.values_mut()
                    .for_each(|s| s.retain(|(t, _)| *t >= from_ms));
                w.retain(|_, v| !v.is_empty());
                want.push(w);
            }
        }
        let got: Vec<Samples> = tenants
            .iter()
            .map(|(tenant, _)| received(upstream, tenant, from_ms, until_ms))
            .collect();
        if got == want {
            return want.iter().flat_map(|w| w.values()).map(|s| s.len()).sum();
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = tenants
                .iter()
                .zip(want.iter().zip(&got))
                .map(|((tenant, _), (want, got))| {
                    let n: usize = want
                        .iter()
                        .map(|(k, v)| v.difference(got.get(k).unwrap_or(&BTreeSet::new())).count())
                        .sum();
                    let extra: Vec<&String> = got
                        .keys()
                        .filter(|k| !want.contains_key(*k))
                        .take(3)
                        .collect();
                    format!("{tenant}: {n} samples missing, extra series {extra:?}")
                })
                .collect();
            panic!("not every sample arrived: {}", missing.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
