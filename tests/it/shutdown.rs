//! Graceful shutdown of the real binary: readiness, the grace period, and
//! pushes in flight during SIGTERM.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &Path, upstream: &Upstream, grace: &str) -> (Child, u16) {
    write_table(dir, TABLE);
    let port = free_port();
    let cfg = format!(
        "listen: 127.0.0.1:{port}
upstream: {{url: \"{}\", timeout: 3s}}
routing: {{unmapped: drop}}
lookup: {{file: \"{}\"}}
shutdown: {{grace_period: {grace}}}
",
        upstream.url(),
        dir.join("table.yaml").display()
    );
    std::fs::write(dir.join("c.yaml"), cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_orgsplit"))
        .arg("-c")
        .arg(dir.join("c.yaml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while ready(port).await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

async fn ready(port: u16) -> Option<u16> {
    client()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn push(port: u16, id: u64) -> Result<u16, String> {
    let req = request(vec![
        series(
            &[
                ("__name__", "seq"),
                ("namespace", "shop-prod"),
                ("id", &id.to_string()),
            ],
            id as f64,
            1,
        ),
        series(
            &[
                ("__name__", "seq"),
                ("namespace", "billing"),
                ("id", &id.to_string()),
            ],
            id as f64,
            1,
        ),
    ]);
    client()
        .post(format!("http://127.0.0.1:{port}/api/v1/push"))
        .header("Content-Encoding", "snappy")
        .body(orgsplit::testing::compress(&req))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_serves_the_grace_period_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let (mut child, port) = start(dir.path(), &upstream, "2s").await;
    let t0 = Instant::now();
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ready(port).await, Some(503), "not ready at once");
    // still serving pushes during the grace period
    assert_eq!(push(port, 1).await, Ok(204));
    let code = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits after the grace period")
        .unwrap();
    assert!(code.success(), "{code:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "left before the grace period ended"
    );
    assert!(push(port, 2).await.is_err(), "listener closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_is_lost_or_half_delivered_across_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    // Slow upstream answers keep pushes in flight when the listener closes.
    upstream.set("acme", Behaviour::Delay(Duration::from_millis(150)));
    upstream.set("globex", Behaviour::Delay(Duration::from_millis(100)));
    let (mut child, port) = start(dir.path(), &upstream, "1s").await;

    type Outcomes = Arc<Mutex<Vec<(u64, Result<u16, String>)>>>;
    let results: Outcomes = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut senders = Vec::new();
    for worker in 0..6u64 {
        let results = results.clone();
        senders.push(tokio::spawn(async move {
            let mut id = worker * 1_000_000;
            while Instant::now() < stop_at {
                id += 1;
                let r = push(port, id).await;
                let refused = r.is_err();
                results.lock().unwrap().push((id, r));
                if refused {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    sigterm(&child);
    let code = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(code.success(), "{code:?}");
    for s in senders {
        s.await.unwrap();
    }

    let results = results.lock().unwrap().clone();
    let by_tenant = upstream.series_by_tenant();
    let ids = |tenant: &str| -> BTreeSet<String> {
        by_tenant
            .get(tenant)
            .map(|v| {
                v.iter()
                    .filter_map(|s| label_of(s, "id"))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (acme, globex) = (ids("acme"), ids("globex"));
    let mut accepted = 0;
    for (id, r) in &results {
        match r {
            Ok(204) => {
                accepted += 1;
                let id = id.to_string();
                assert!(
                    acme.contains(&id) && globex.contains(&id),
                    "push {id} answered 204 but not delivered to both tenants"
                );
            }
            Ok(s) => assert!(*s >= 500 || *s == 429, "push {id} got non-retryable {s}"),
            Err(_) => {} // connection refused or reset: Prometheus retries
        }
    }
    assert!(accepted > 10, "too few pushes accepted: {accepted}");
    assert!(
        results.iter().any(|(_, r)| r.is_err()),
        "the listener never closed during the run"
    );
}
