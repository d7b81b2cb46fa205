//! `orgsplit-bench --soak`: long load with table churn and injected upstream
//! faults, reporting RSS and open file descriptors over time, and the loss
//! count (pushes acknowledged to the sender that some tenant never got).
//!
//! Every push carries one timestamp of its own on all its samples, and every
//! push spans all tenants, so the upstream can record, per tenant, which
//! pushes it accepted. A push the client saw acknowledged (2xx) must be in
//! every tenant's set; anything missing is a loss.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use orgsplit::formats::rw1::pb;
use orgsplit::testing::{self, Shape};

#[derive(Default)]
struct Upstream {
    /// tenant → push ids (timestamps) accepted.
    accepted: Mutex<HashMap<String, HashSet<i64>>>,
    failing: AtomicBool,
}

pub async fn run(args: &super::Args) -> anyhow::Result<()> {
    let state = Arc::new(Upstream::default());
    let upstream = {
        let state = state.clone();
        let app = axum::Router::new().route(
            "/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    if state.failing.load(Ordering::Relaxed) {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let tenant = headers
                        .get("X-Scope-OrgID")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let Ok(req) = testing::decompress(&body) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    let ids: HashSet<i64> = req
                        .timeseries
                        .iter()
                        .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
                        .collect();
                    state
                        .accepted
                        .lock()
                        .unwrap()
                        .entry(tenant)
                        .or_default()
                        .extend(ids);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let dir = tempfile::tempdir()?;
    let (mut child, port) = super::start_orgsplit(args, dir.path(), upstream).await?;
    let pid = child.id().context("no pid")?;
    let url = format!("http://127.0.0.1:{port}/api/v1/push");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + args.duration;
    let template = testing::request(&Shape {
        series: args.series,
        namespaces: args.tenant_count().max(20),
        ..Default::default()
    });
    let tenants = args.tenant_count();

    // Faults: the upstream fails for 3 s out of every 20 s.
    let faults = {
        let state = state.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(17)).await;
                state.failing.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(3)).await;
                state.failing.store(false, Ordering::Relaxed);
            }
        })
    };
    // Churn: the table file is rewritten every 100 ms with extra namespaces.
    let churn = {
        let table = dir.path().join("table.yaml");
        let base: String = testing::table_pairs(tenants.max(20), tenants)
            .into_iter()
            .map(|(ns, org)| format!("{ns}: {org}\n"))
            .collect();
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let extra: String = (0..(i % 50))
                    .map(|j| format!("churn-{j}: org-{}\n", (i + j) % 7))
                    .collect();
                let tmp = table.with_extension("tmp");
                let _ = std::fs::write(&tmp, format!("{base}{extra}"));
                let _ = std::fs::rename(&tmp, &table);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Load: workers push, retrying each push until it is acknowledged, as
    // Prometheus does.
    let next_id = Arc::new(AtomicU64::new(1));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let retries = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(
        args.concurrency as f64 * args.series as f64 / args.rate.max(1) as f64,
    );
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, template) = (client.clone(), url.clone(), template.clone());
        let (next_id, acked, retries) = (next_id.clone(), acked.clone(), retries.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let id = 1_700_000_000_000 + next_id.fetch_add(1, Ordering::Relaxed) as i64;
                let body = Bytes::from(testing::compress(&stamp(&template, id)));
                let started = Instant::now();
                loop {
                    let ok = client
                        .post(&url)
                        .header("Content-Encoding", "snappy")
                        .body(body.clone())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        acked.lock().unwrap().push(id);
                        break;
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
            }
        }));
    }

    println!(
        "{:>6} {:>10} {:>6} {:>10} {:>8}",
        "t(s)", "RSS(MiB)", "FDs", "acked", "retries"
    );
    let started = Instant::now();
    let mut rss_series = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let rss = rss_kib(pid)? as f64 / 1024.0;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        rss_series.push(rss);
        println!(
            "{:>6.0} {:>10.1} {:>6} {:>10} {:>8}",
            started.elapsed().as_secs_f64(),
            rss,
            fds,
            acked.lock().unwrap().len(),
            retries.load(Ordering::Relaxed)
        );
    }
    for w in workers {
        let _ = w.await;
    }
    let _ = faults.await;
    let _ = churn.await;
    let _ = child.kill().await;

    let acked = acked.lock().unwrap().clone();
    let accepted = state.accepted.lock().unwrap();
    let mut lost = 0usize;
    for id in &acked {
        let everywhere = (0..tenants).all(|t| {
            accepted
                .get(&format!("org-{t}"))
                .is_some_and(|ids| ids.contains(id))
        });
        if !everywhere {
            lost += 1;
        }
    }
    let (first, last) = (
        rss_series.first().copied().unwrap_or(0.0),
        rss_series.last().copied().unwrap_or(0.0),
    );
    println!(
        "soak: {} pushes acknowledged ({} samples), {} retries, {} lost; RSS first {:.1} MiB, last {:.1} MiB, max {:.1} MiB",
        acked.len(),
        acked.len() * args.series,
        retries.load(Ordering::Relaxed),
        lost,
        first,
        last,
        rss_series.iter().copied().fold(0.0, f64::max)
    );
    if lost > 0 {
        anyhow::bail!("{lost} acknowledged pushes did not reach every tenant");
    }
    Ok(())
}

/// The template with every sample at timestamp `id`.
fn stamp(template: &pb::WriteRequest, id: i64) -> pb::WriteRequest {
    let mut req = template.clone();
    for s in &mut req.timeseries {
        for x in &mut s.samples {
            x.timestamp = id;
        }
    }
    req
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/status")))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
}
