//! End to end with a real Prometheus (Debian's `prometheus` package) as the
//! sender, the real `orgsplit` binary in between, and either the recording
//! fake Mimir or a second real Prometheus (remote-write receiver) upstream.
//!
//! Under `CI=true` a missing `prometheus` binary fails these tests; elsewhere
//! they are skipped with a message.

use crate::common;

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
    stdout_of(std::process::Command::new(env!("CARGO_BIN_EXE_orgsplit")).args(args))
}

/// The orgsplit binary over `shop-prod: acme, billing: globex`, accepting
/// only tokens signed by the keys in `trust`.
async fn start_orgsplit_trusting(
    d: &std::path::Path,
    upstream_url: &str,
    trust: &std::path::Path,
) -> (tokio::process::Child, u16) {
    std::fs::write(
        d.join("namespaces.yaml"),
        "shop-prod: acme\nbilling: globex\n",
    )
    .unwrap();
    let config = format!(
        "upstream:\n  url: {upstream_url}\nrouting:\n  unmapped: drop\nlookup:\n  file: {}\n\
         auth:\n  anonymous: {{enabled: false}}\n  jwt:\n    trust_store: {}\n",
        d.join("namespaces.yaml").display(),
        trust.display()
    );
    start_orgsplit_with(d, &config).await
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
    let (_orgsplit, port) = start_orgsplit_trusting(d, &upstream.url(), &store).await;
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

/// A small multi-tenant Mimir made of real Prometheus servers, one per
/// tenant: pushes go to `/api/v1/write` of the tenant's Prometheus, and
/// `/prometheus/api/v1/...` queries to its `/api/v1/...`, by
/// `X-Scope-OrgID` (a missing or unknown tenant is refused, as Mimir does).
async fn tenant_router(receivers: BTreeMap<String, u16>) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    let receivers = std::sync::Arc::new(receivers);
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let receivers = receivers.clone();
            async move {
                let tenant = headers
                    .get("x-scope-orgid")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let Some(port) = receivers.get(tenant) else {
                    return (StatusCode::UNAUTHORIZED, "no org id").into_response();
                };
                let path = match uri.path() {
                    "/api/v1/push" => "/api/v1/write".to_string(),
                    p => match p.strip_prefix("/prometheus") {
                        Some(rest) => rest.to_string(),
                        None => return StatusCode::NOT_FOUND.into_response(),
                    },
                };
                let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                let mut r =
                    client().request(method, format!("http://127.0.0.1:{port}{path}{query}"));
                for name in [
                    "content-type",
                    "content-encoding",
                    "x-prometheus-remote-write-version",
                ] {
                    if let Some(v) = headers.get(name) {
                        r = r.header(name, v);
                    }
                }
                let answer = r.body(body).send().await.unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                (status, answer.bytes().await.unwrap()).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The read path end to end: two real Prometheus senders write through
/// orgsplit, each with its own organization's token from
/// `orgsplit token create`, into a multi-tenant store of real Prometheus
/// servers; queries through orgsplit's `/prometheus` API with each token
/// see that organization's series and no other's, whatever tenant the
/// client names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_through_orgsplit_see_only_the_tokens_organization() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let targets = start_targets().await;
    let mut receivers = BTreeMap::new();
    let mut children = Vec::new();
    for tenant in ["acme", "globex"] {
        let (child, port) = start_prometheus(
            &bin,
            d,
            &format!("store-{tenant}"),
            targets,
            &[],
            None,
            &["--web.enable-remote-write-receiver"],
        )
        .await;
        children.push(child);
        receivers.insert(tenant.to_string(), port);
    }
    let store = tenant_router(receivers).await;

    let (key, trust) = (d.join("signing.pem"), d.join("trust"));
    std::fs::create_dir(&trust).unwrap();
    orgsplit_cmd(&["keys", "create", key.to_str().unwrap()]);
    std::fs::write(
        trust.join("k.pem"),
        orgsplit_cmd(&["keys", "public", key.to_str().unwrap()]),
    )
    .unwrap();
    let token = |tenant: &str| {
        let t = orgsplit_cmd(&[
            "token",
            "create",
            "--key",
            key.to_str().unwrap(),
            "--tenant",
            tenant,
        ]);
        let path = d.join(format!("{tenant}.token"));
        std::fs::write(&path, &t).unwrap();
        (t.trim().to_string(), path)
    };
    let (acme_token, acme_file) = token("acme");
    let (globex_token, globex_file) = token("globex");

    let (_orgsplit, port) =
        start_orgsplit_trusting(d, &format!("http://{store}/api/v1/push"), &trust).await;
    for (name, namespace, file) in [
        ("acme", "shop-prod", &acme_file),
        ("globex", "billing", &globex_file),
    ] {
        let cfg = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app-{name}\n    \
             static_configs:\n      - targets: ['{targets}']\n        labels: {{namespace: {namespace}}}\n\
             remote_write:\n  - url: http://127.0.0.1:{port}/api/v1/push\n    \
             authorization:\n      credentials_file: {}\n    \
             queue_config: {{batch_send_deadline: 500ms, min_backoff: 100ms, max_backoff: 1s}}\n",
            file.display()
        );
        let (child, _) =
            start_prometheus_config(&bin, d, &format!("sender-{name}"), &cfg, &[]).await;
        children.push(child);
    }

    // Through orgsplit, as Grafana's Prometheus datasource asks.
    let ask = |token: String, spoof: &'static str| async move {
        let r: serde_json::Value = client()
            .get(format!("http://127.0.0.1:{port}/prometheus/api/v1/query"))
            .query(&[("query", "app_temperature_celsius")])
            .bearer_auth(token)
            .header("X-Scope-OrgID", spoof)
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
            .iter()
            .map(|s| {
                s["metric"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<BTreeSet<String>>()
    };
    let started = Instant::now();
    loop {
        let (a, g) = (
            ask(acme_token.clone(), "globex").await,
            ask(globex_token.clone(), "acme").await,
        );
        // Never another organization's series, at any moment.
        assert!(!a.contains("billing"), "acme's token saw globex's series");
        assert!(!g.contains("shop-prod"), "globex's token saw acme's series");
        if a.contains("shop-prod") && g.contains("billing") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "series never arrived: {a:?} {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Grafana's probe of the datasource.
    let r = client()
        .get(format!(
            "http://127.0.0.1:{port}/prometheus/api/v1/status/buildinfo"
        ))
        .bearer_auth(&acme_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No token, no data.
    let r = client()
        .get(format!(
            "http://127.0.0.1:{port}/prometheus/api/v1/query?query=up"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Recorded remote write 2.0 pushes (fixtures/requests/rw2, built from
/// the spec's schema) through the orgsplit binary into a multi-tenant
/// store of real Prometheus 2.42 receivers, which know only 1.0 and answer
/// a 2.0 body with a headerless 204: orgsplit notices (`upstream.protocol:
/// auto`), sends each tenant's push again as 1.0, and every mapped series
/// is queryable in exactly its organization's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_2_0_pushes_reach_real_prometheus_tenants() {
    use orgsplit::formats::rw2::{pb as v2, CONTENT_TYPE};
    use prost::Message;
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let targets = start_targets().await;
    let mut receivers = BTreeMap::new();
    let mut children = Vec::new();
    for tenant in ["acme", "globex"] {
        let (child, port) = start_prometheus(
            &bin,
            d,
            &format!("store-{tenant}"),
            targets,
            &[],
            None,
            &[
                "--web.enable-remote-write-receiver",
                "--enable-feature=native-histograms",
            ],
        )
        .await;
        children.push(child);
        receivers.insert(tenant.to_string(), port);
    }
    let store = tenant_router(receivers.clone()).await;
    let (_orgsplit, port) = start_orgsplit(
        d,
        &format!("http://{store}/api/v1/push"),
        "shop-prod: acme\nbilling: globex\n",
    )
    .await;

    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests/rw2");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Series (by namespace) each store must end up with.
    let mut want: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for name in [
        "prometheus-2.42-series-2000.v2.snappy",
        "hand-built-histograms-exemplars.v2.snappy",
    ] {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&std::fs::read(base.join(name)).unwrap())
            .unwrap();
        let mut request = v2::Request::decode(raw.as_slice()).unwrap();
        // Fresh timestamps, so the stores take the samples as recent.
        for t in &mut request.timeseries {
            t.samples.iter_mut().for_each(|s| s.timestamp = now);
            t.histograms.iter_mut().for_each(|h| h.timestamp = now);
            t.exemplars.iter_mut().for_each(|e| e.timestamp = now);
        }
        let mut samples = 0u64;
        for t in &request.timeseries {
            let labels: Vec<(&str, &str)> = t
                .labels_refs
                .chunks(2)
                .map(|p| {
                    (
                        &*request.symbols[p[0] as usize],
                        &*request.symbols[p[1] as usize],
                    )
                })
                .collect();
            let tenant = match labels.iter().find(|l| l.0 == "namespace").map(|l| l.1) {
                Some("shop-prod") => "acme",
                Some("billing") => "globex",
                _ => continue,
            };
            samples += t.samples.len() as u64;
            let metric = labels.iter().find(|l| l.0 == "__name__").unwrap().1;
            want.entry(tenant).or_default().insert(metric.to_string());
        }
        let r = client()
            .post(format!("http://127.0.0.1:{port}/api/v1/push"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", CONTENT_TYPE)
            .header("X-Prometheus-Remote-Write-Version", "2.0.0")
            .body(
                snap::raw::Encoder::new()
                    .compress_vec(&request.encode_to_vec())
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let written = r.headers()["x-prometheus-remote-write-samples-written"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(status, 204, "{name}: {}", r.text().await.unwrap());
        assert_eq!(written, samples.to_string(), "{name}");
    }

    // Each store has exactly its organization's metric names, by namespace.
    for (tenant, port) in &receivers {
        let names = |namespace: &'static str| async move {
            let r: serde_json::Value = client()
                .get(format!("http://127.0.0.1:{port}/api/v1/series"))
                .query(&[("match[]", format!("{{namespace=\"{namespace}\"}}"))])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["__name__"].as_str().unwrap().to_string())
                .collect::<BTreeSet<String>>()
        };
        let (own, other) = match tenant.as_str() {
            "acme" => ("shop-prod", "billing"),
            _ => ("billing", "shop-prod"),
        };
        assert_eq!(names(own).await, want[tenant.as_str()], "{tenant}");
        assert!(
            names(other).await.is_empty(),
            "{tenant} holds {other}'s series"
        );
    }
    let page = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&page, "orgsplit_upstream_downgraded_requests_total") >= 2.0);
}
