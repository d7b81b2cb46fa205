//! `orgsplit-bench --attack`: hostile input against the real binary.
//!
//! For each attack, a fresh orgsplit with the default limits (and the
//! shipped Deployment's 256 MiB memory limit in mind) is attacked for
//! `--duration` while a well-behaved sender pushes a small two-tenant
//! request every 100 ms. Reported per attack: orgsplit's peak RSS, what the
//! well-behaved sender saw (2xx, other answers, slowest answer), how the
//! attacker was answered, and whether orgsplit was still up at the end.
//!
//! ```text
//!  attackers (this process) ──► orgsplit (child) ──► upstream (this process;
//!  good sender (this process) ──►                      misbehaves on cue)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use orgsplit::testing::{self, Shape};
use orgsplit::wire::encode::put_bytes_field;
use prost::Message;
use tokio::io::AsyncWriteExt;

/// The attacks, by name.
const ATTACKS: [&str; 9] = [
    "metadata-flood",
    "exemplar-flood",
    "partial-bodies",
    "slow-senders",
    "idle-sockets",
    "new-tenants",
    "new-families",
    "huge-answers",
    "large-pushes",
];

/// An upstream that accepts everything, or answers tenant `org-0` with a
/// 500 and a 400 MiB body while `huge` is set.
#[derive(Default)]
struct Upstream {
    huge: AtomicBool,
}

async fn start_upstream(state: Arc<Upstream>) -> anyhow::Result<std::net::SocketAddr> {
    let app = axum::Router::new()
        .route(
            "/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    std::hint::black_box(body.len());
                    let tenant = headers.get("X-Scope-OrgID").map(|v| v.as_bytes());
                    if state.huge.load(Ordering::Relaxed) && tenant == Some(b"org-0") {
                        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
                        let body = futures::stream::iter(
                            (0..400).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                        );
                        return (StatusCode::INTERNAL_SERVER_ERROR, Body::from_stream(body))
                            .into_response();
                    }
                    StatusCode::OK.into_response()
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// What the well-behaved sender saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    statuses: Mutex<BTreeMap<String, u64>>,
    slowest_us: AtomicU64,
}

impl Seen {
    fn record(&self, outcome: String, took: Duration) {
        if outcome == "204" {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            *self.statuses.lock().unwrap().entry(outcome).or_default() += 1;
        }
        self.slowest_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn others(&self) -> String {
        let s = self.statuses.lock().unwrap();
        if s.is_empty() {
            return "-".into();
        }
        s.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> String {
    match client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "conn-error".into(),
    }
}

/// A small request over `tenants` organizations (`ns-i` → `org-i`).
fn good_request(tenants: usize) -> Vec<u8> {
    let mut req = testing::request(&Shape {
        series: 20,
        namespaces: tenants,
        ..Default::default()
    });
    // The good sender never writes to org-0 (the one whose upstream
    // misbehaves in `huge-answers`).
    for s in &mut req.timeseries {
        for l in &mut s.labels {
            if l.name == "namespace" && l.value == "ns-0" {
                l.value = "ns-1".into();
            }
        }
    }
    testing::compress(&req)
}

/// A body of one good series followed by `n` copies of `field`.
fn flood(field: &[u8], n: usize) -> Vec<u8> {
    let mut body = testing::request(&Shape {
        series: 1,
        namespaces: 1,
        ..Default::default()
    })
    .encode_to_vec();
    for _ in 0..n {
        body.extend_from_slice(field);
    }
    snap::raw::Encoder::new().compress_vec(&body).unwrap()
}

/// One series carrying `n` copies of `item` (a raw TimeSeries field).
fn flood_in_series(item: &[u8], n: usize) -> Vec<u8> {
    let mut labels = Vec::new();
    for (k, v) in [("__name__", "x"), ("namespace", "ns-1")] {
        let mut l = Vec::new();
        put_bytes_field(&mut l, 1, k.as_bytes());
        put_bytes_field(&mut l, 2, v.as_bytes());
        put_bytes_field(&mut labels, 1, &l);
    }
    for _ in 0..n {
        labels.extend_from_slice(item);
    }
    let mut body = Vec::new();
    put_bytes_field(&mut body, 1, &labels);
    snap::raw::Encoder::new().compress_vec(&body).unwrap()
}

/// Opens a connection, sends a push's headers declaring `declared` bytes and
/// `send` of them, and keeps it open until orgsplit closes it or `until`.
async fn stall(port: u16, declared: usize, send: usize, until: Instant) -> Option<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    let chunk = vec![0u8; 64 << 10];
    let mut left = send;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.ok()?;
        left -= n;
    }
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout_at(
        until.into(),
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await;
    Some(())
}

pub async fn run(args: &super::Args, which: &str) -> anyhow::Result<()> {
    let names: Vec<&str> = if which == "all" {
        ATTACKS.to_vec()
    } else {
        which.split(',').map(str::trim).collect()
    };
    for n in &names {
        anyhow::ensure!(
            ATTACKS.contains(n),
            "unknown attack {n:?}; one of {ATTACKS:?}"
        );
    }
    println!(
        "orgsplit-bench --attack: {} per attack, default limits; good sender: 20 series over 20 tenants every 100 ms",
        humantime::format_duration(args.duration)
    );
    println!(
        "{:<16} {:>14} {:>9} {:>18} {:>11}  {:<34} up",
        "attack", "peak RSS MiB", "good 2xx", "good other", "good max", "attacker saw"
    );
    let mut failed = Vec::new();
    for name in names {
        let line = one(args, name).await?;
        if !line.ok {
            failed.push(name);
        }
        println!("{}", line.text);
    }
    anyhow::ensure!(
        failed.is_empty(),
        "the good sender was refused, or orgsplit went down, during: {failed:?}"
    );
    Ok(())
}

struct Line {
    text: String,
    ok: bool,
}

async fn one(args: &super::Args, name: &str) -> anyhow::Result<Line> {
    let state = Arc::new(Upstream::default());
    let upstream = start_upstream(state.clone()).await?;
    let dir = tempfile::tempdir()?;
    let routing = if name == "new-tenants" {
        "{mode: label, tenant_label: tenant, unmapped: drop}"
    } else {
        "{unmapped: drop}"
    };
    let bench_args = super::Args {
        tenants: vec![20],
        extra_config: args.extra_config.clone(),
        orgsplit: args.orgsplit.clone(),
        pin: false,
        ..<super::Args as clap::Parser>::parse_from(["orgsplit-bench"])
    };
    let (mut child, port) =
        super::start_orgsplit_with(&bench_args, dir.path(), upstream, routing).await?;
    let pid = child.id().context("orgsplit has no pid")?;
    let url = format!("http://127.0.0.1:{port}/api/v1/push");
    let until = Instant::now() + args.duration;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    // The good sender.
    let seen = Arc::new(Seen::default());
    let good = {
        let (client, url, seen) = (client.clone(), url.clone(), seen.clone());
        let body = if name == "new-tenants" {
            let req = testing::request(&Shape {
                series: 20,
                namespaces: 20,
                ..Default::default()
            });
            let mut req = req;
            for (i, s) in req.timeseries.iter_mut().enumerate() {
                s.labels.push(orgsplit::formats::rw1::pb::Label {
                    name: "tenant".into(),
                    value: format!("good-{}", i % 20),
                });
            }
            testing::compress(&req)
        } else {
            good_request(20)
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            while Instant::now() < until {
                let started = Instant::now();
                let outcome = send(&client, &url, body.clone()).await;
                seen.record(outcome, started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The attackers: `workers` loops, each repeating the attack until `until`.
    let attacker: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    let spawn_loop = |tasks: &mut Vec<_>, workers: usize, body: Option<Vec<u8>>| {
        for _ in 0..workers {
            let (client, url, attacker, body) =
                (client.clone(), url.clone(), attacker.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let Some(body) = body else { return };
                while Instant::now() < until {
                    let outcome = send(&client, &url, body.clone()).await;
                    *attacker.lock().unwrap().entry(outcome).or_default() += 1;
                }
            }));
        }
    };
    match name {
        // 31 M empty metadata entries: 3 MB compressed, 62 MB decoded; and
        // 15 M (30 MB decoded, under max_decoded_bytes).
        "metadata-flood" => {
            spawn_loop(&mut tasks, 4, Some(flood(&[0x1a, 0x00], 31_000_000)));
            spawn_loop(&mut tasks, 4, Some(flood(&[0x1a, 0x00], 15_000_000)));
        }
        // 15 M empty exemplars in one series.
        "exemplar-flood" => spawn_loop(
            &mut tasks,
            8,
            Some(flood_in_series(&[0x1a, 0x00], 15_000_000)),
        ),
        // 40 senders send 10 MiB of a 16 MiB body and stall; again when cut off.
        "partial-bodies" => {
            for _ in 0..40 {
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        stall(port, 16 << 20, 10 << 20, until).await;
                    }
                }));
            }
        }
        // 300 senders send headers and 10 bytes and stall; again when cut off.
        "slow-senders" => {
            for _ in 0..300 {
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        stall(port, 100_000, 10, until).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }));
            }
        }
        // 3000 connections that send nothing (more than max_connections).
        "idle-sockets" => {
            for _ in 0..3000 {
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < until {
                        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let mut buf = [0u8; 16];
                        let _ = tokio::time::timeout_at(
                            until.into(),
                            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
                        )
                        .await;
                    }
                }));
            }
        }
        // Label mode: pushes of 15 000 never-seen tenant values each.
        "new-tenants" | "new-families" => {
            let label_mode = name == "new-tenants";
            for w in 0..2u64 {
                let (client, url, attacker) = (client.clone(), url.clone(), attacker.clone());
                tasks.push(tokio::spawn(async move {
                    let mut round = 0u64;
                    while Instant::now() < until {
                        round += 1;
                        let series = (0..15_000)
                            .map(|i| {
                                let (name, extra) = if label_mode {
                                    ("up".to_string(), ("tenant", format!("w{w}-r{round}-t{i}")))
                                } else {
                                    (
                                        format!("metric_w{w}_r{round}_{i}"),
                                        ("namespace", format!("ns-{}", i % 20)),
                                    )
                                };
                                orgsplit::formats::rw1::pb::TimeSeries {
                                    labels: vec![
                                        orgsplit::formats::rw1::pb::Label {
                                            name: "__name__".into(),
                                            value: name,
                                        },
                                        orgsplit::formats::rw1::pb::Label {
                                            name: extra.0.into(),
                                            value: extra.1,
                                        },
                                    ],
                                    samples: vec![orgsplit::formats::rw1::pb::Sample {
                                        value: 1.0,
                                        timestamp: 1,
                                    }],
                                    ..Default::default()
                                }
                            })
                            .collect();
                        let req = orgsplit::formats::rw1::pb::WriteRequest {
                            timeseries: series,
                            metadata: vec![],
                        };
                        let outcome = send(&client, &url, testing::compress(&req)).await;
                        *attacker.lock().unwrap().entry(outcome).or_default() += 1;
                    }
                }));
            }
        }
        // The upstream answers org-0 with 500 and a 400 MiB body; 8 senders
        // push to org-0.
        "huge-answers" => {
            state.huge.store(true, Ordering::Relaxed);
            let mut req = testing::request(&Shape {
                series: 100,
                namespaces: 1,
                ..Default::default()
            });
            testing::set_namespace(&mut req, "ns-0");
            spawn_loop(&mut tasks, 8, Some(testing::compress(&req)));
        }
        // 4 senders of 25 MB-decoded pushes (CPU-heavy), back to back.
        "large-pushes" => {
            let req = testing::request(&Shape {
                series: 90_000,
                namespaces: 20,
                labels: 14,
                ..Default::default()
            });
            spawn_loop(&mut tasks, 4, Some(testing::compress(&req)));
        }
        _ => unreachable!(),
    }

    let _ = good.await;
    for t in tasks {
        t.abort();
    }
    let rss = super::peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    let up = matches!(child.try_wait(), Ok(None))
        && reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
    let _ = child.kill().await;
    let attacker_saw: String = attacker
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let ok_count = seen.ok.load(Ordering::Relaxed);
    let ok = up && seen.statuses.lock().unwrap().is_empty() && ok_count > 0 && rss < 256.0;
    Ok(Line {
        text: format!(
            "{:<16} {:>14.1} {:>9} {:>18} {:>9.0}ms  {:<34} {}",
            name,
            rss,
            ok_count,
            seen.others(),
            seen.slowest_us.load(Ordering::Relaxed) as f64 / 1000.0,
            if attacker_saw.is_empty() {
                "(connections only)".into()
            } else {
                attacker_saw
            },
            if up { "yes" } else { "NO" }
        ),
        ok,
    })
}
