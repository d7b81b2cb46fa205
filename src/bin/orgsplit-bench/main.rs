//! Load test: runs the real `orgsplit` binary as a server in front of an
//! in-process upstream over loopback HTTP, drives it with concurrent pushes
//! for a fixed time, and reports throughput, CPU, latency and memory.
//!
//! ```text
//!  this process (core 1): workers ──POST──► orgsplit (core 0) ──POST × tenants──► upstream (this process)
//!                                  └──────────────────── direct (baseline) ──────►
//! ```
//!
//! Figures (per sample for remote write, per log line for the Loki corpora):
//! - samples/s accepted (2xx) through orgsplit;
//! - CPU seconds of the orgsplit process (utime + stime from /proc) per
//!   million samples, next to the floor of the body's codec (snappy or gzip
//!   decompress + compress of the same bodies, measured in this process) and
//!   their ratio;
//! - p50/p99 latency through orgsplit, the same for the bodies pushed
//!   straight to the upstream, and the difference (the added latency);
//! - peak RSS of orgsplit (VmHWM).
//!
//! `cargo run --release --bin orgsplit-bench -- --duration 10s --pin`
//!
//! With `--soak` it runs the soak test instead (see `soak.rs`), with
//! `--attack` the hostile-input run (see `attack.rs`).

mod attack;
mod soak;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use clap::Parser;
use orgsplit::testing::{self, Shape};

#[derive(Parser, Debug, Clone)]
#[command(about = "Load test orgsplit as a real server")]
struct Args {
    /// How long to drive load.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent pushes in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Target samples per second (0: as fast as it goes).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Series per request (1 sample each, ~12 labels); for the Loki
    /// corpora, log lines per request (20 per stream).
    #[arg(long, default_value_t = 2000)]
    series: usize,
    /// Tenants the series spread over; several (`20,200`) run one load
    /// test each and compare their cost per sample.
    #[arg(long, value_delimiter = ',', default_value = "20")]
    tenants: Vec<usize>,
    /// Request bodies: `random` (random label values, ~3.5:1 snappy),
    /// `cadvisor` (shaped like real cAdvisor / kube-state-metrics output,
    /// ~5:1); the same series as remote write 2.0: `rw2`, `rw2-cadvisor`
    /// (sent upstream as 2.0, `upstream.protocol: v2`); Loki pushes of
    /// ~120-byte logfmt lines: `loki` (snappy protobuf, as Promtail and
    /// Alloy send), `loki-json` (plain JSON), `loki-json-gzip`; OTLP/HTTP
    /// protobuf, gzip, one resource per namespace (`k8s.namespace.name`):
    /// `otlp-metrics`, `otlp-logs`, `otlp-traces` (and uncompressed,
    /// as the OpenTelemetry SDKs send by default: `otlp-metrics-plain`, ...); the same logs as
    /// OTLP/HTTP JSON: `otlp-logs-json`, `otlp-logs-json-gzip`. Several
    /// (`random,rw2,loki,otlp-metrics`) run one load test each.
    #[arg(long, value_delimiter = ',', default_value = "random")]
    corpus: Vec<String>,
    /// The orgsplit binary (default: next to this one).
    #[arg(long)]
    orgsplit: Option<PathBuf>,
    /// Pin orgsplit to CPU 0 and this process to CPU 1 (needs `taskset`).
    #[arg(long)]
    pin: bool,
    /// Extra YAML appended to orgsplit's config (e.g. limits).
    #[arg(long, default_value = "")]
    extra_config: String,
    /// Soak test: table churn and upstream faults for `--duration`, at
    /// `--rate` (default 50 000) samples/s; reports RSS, FDs and losses.
    #[arg(long)]
    soak: bool,
    /// Hostile-input run: each attack (or only the named ones, comma
    /// separated) for `--duration` against a fresh orgsplit with default
    /// limits, while a well-behaved sender keeps pushing; reports peak RSS
    /// and what the well-behaved sender saw. See `attack.rs`.
    #[arg(long, num_args = 0..=1, default_missing_value = "all")]
    attack: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pin {
        let me = std::process::id().to_string();
        let ok = std::process::Command::new("taskset")
            .args(["-a", "-cp", "1", &me])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("--pin needs `taskset` (util-linux) and two CPUs");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(which) = args.attack.clone() {
        return runtime.block_on(attack::run(&args, &which));
    }
    if args.soak {
        let args = Args {
            rate: if args.rate == 0 { 50_000 } else { args.rate },
            ..args
        };
        return runtime.block_on(soak::run(&args));
    }
    let mut results = Vec::new();
    for corpus in &args.corpus {
        for &tenants in &args.tenants {
            let one = Args {
                tenants: vec![tenants],
                corpus: vec![corpus.clone()],
                ..args.clone()
            };
            results.push(runtime.block_on(run(one))?);
        }
    }
    if results.len() > 1 {
        println!(
            "\nsummary (CPU-s per million samples or log lines; ratio to the codec floor of the same corpus)"
        );
        for r in &results {
            let base = results
                .iter()
                .find(|b| b.corpus == r.corpus)
                .map_or(r.per_million, |b| b.per_million);
            println!(
                "  {:<14} {:>4} tenants: {:.3} CPU-s/M = {:.2}x floor, {:.2}x the {}-tenant cost, p99 added {:.2} ms, peak RSS {:.1} MiB",
                r.corpus, r.tenants, r.per_million, r.per_million / r.floor,
                r.per_million / base,
                results.iter().find(|b| b.corpus == r.corpus).map_or(0, |b| b.tenants),
                r.p99_added, r.rss_mib
            );
        }
    }
    Ok(())
}

/// The figures of one load test, for the summary.
struct Figures {
    corpus: String,
    tenants: usize,
    per_million: f64,
    floor: f64,
    p99_added: f64,
    rss_mib: f64,
}

impl Args {
    /// The (first) tenant count.
    fn tenant_count(&self) -> usize {
        self.tenants.first().copied().unwrap_or(20)
    }
}

/// What the bodies are, so they go to the right path with the right headers.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    RemoteWrite,
    RemoteWrite2,
    LokiProto,
    LokiJson {
        gzip: bool,
    },
    /// OTLP/HTTP protobuf: metrics, logs or traces; gzip or not.
    Otlp(&'static str, bool),
    /// OTLP/HTTP JSON logs; gzip or not.
    OtlpLogsJson {
        gzip: bool,
    },
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::RemoteWrite | Kind::RemoteWrite2 => "/api/v1/push",
            Kind::LokiProto | Kind::LokiJson { .. } => "/loki/api/v1/push",
            Kind::Otlp("metrics", _) => "/v1/metrics",
            Kind::Otlp("logs", _) | Kind::OtlpLogsJson { .. } => "/v1/logs",
            Kind::Otlp(..) => "/v1/traces",
        }
    }

    /// The path the in-process upstream serves these bodies at, when
    /// pushed to it directly (the latency baseline).
    fn upstream_path(self) -> &'static str {
        match self {
            Kind::Otlp("metrics", _) => "/otlp/v1/metrics",
            Kind::Otlp("logs", _) | Kind::OtlpLogsJson { .. } => "/otlp/v1/logs",
            other => other.path(),
        }
    }

    /// Whether the bodies are gzip (else snappy, or plain JSON).
    fn gzip(self) -> bool {
        matches!(
            self,
            Kind::LokiJson { gzip: true } | Kind::Otlp(_, true) | Kind::OtlpLogsJson { gzip: true }
        )
    }

    /// Request headers, as the real senders set them.
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::RemoteWrite => &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            Kind::RemoteWrite2 => &[
                ("Content-Encoding", "snappy"),
                (
                    "Content-Type",
                    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                ),
                ("X-Prometheus-Remote-Write-Version", "2.0.0"),
            ],
            Kind::Otlp(_, true) => &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "gzip"),
            ],
            Kind::Otlp(_, false) => &[("Content-Type", "application/x-protobuf")],
            Kind::LokiProto => &[("Content-Type", "application/x-protobuf")],
            Kind::LokiJson { gzip: false } | Kind::OtlpLogsJson { gzip: false } => {
                &[("Content-Type", "application/json")]
            }
            Kind::LokiJson { gzip: true } | Kind::OtlpLogsJson { gzip: true } => &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::RemoteWrite | Kind::RemoteWrite2 => "samples",
            Kind::Otlp("metrics", _) => "points",
            Kind::Otlp("traces", _) => "spans",
            _ => "lines",
        }
    }
}

/// Requests, each with its body as sent and the decoded bytes, and the
/// samples (or log lines) each carries.
struct Corpus {
    kind: Kind,
    bodies: Vec<Bytes>,
    decoded: Vec<Vec<u8>>,
    samples: u64,
    decoded_bytes: usize,
}

fn corpus(args: &Args) -> anyhow::Result<Corpus> {
    let name = args.corpus.first().map_or("random", String::as_str);
    let kind = match name {
        "random" | "cadvisor" => Kind::RemoteWrite,
        "rw2" | "rw2-cadvisor" => Kind::RemoteWrite2,
        "loki" => Kind::LokiProto,
        "loki-json" => Kind::LokiJson { gzip: false },
        "loki-json-gzip" => Kind::LokiJson { gzip: true },
        "otlp-metrics" => Kind::Otlp("metrics", true),
        "otlp-logs" => Kind::Otlp("logs", true),
        "otlp-traces" => Kind::Otlp("traces", true),
        "otlp-metrics-plain" => Kind::Otlp("metrics", false),
        "otlp-logs-plain" => Kind::Otlp("logs", false),
        "otlp-traces-plain" => Kind::Otlp("traces", false),
        "otlp-logs-json" => Kind::OtlpLogsJson { gzip: false },
        "otlp-logs-json-gzip" => Kind::OtlpLogsJson { gzip: true },
        other => {
            bail!("unknown corpus {other:?}: random, cadvisor, rw2, rw2-cadvisor, loki, loki-json, loki-json-gzip, otlp-metrics, otlp-logs, otlp-traces, otlp-*-plain, otlp-logs-json or otlp-logs-json-gzip")
        }
    };
    let mut bodies = Vec::new();
    let mut decoded = Vec::new();
    let mut samples = args.series as u64;
    for seed in 1..=8 {
        let shape = Shape {
            series: args.series,
            namespaces: args.tenant_count().max(20),
            seed,
            ..Default::default()
        };
        let (raw, body) = match kind {
            Kind::RemoteWrite => {
                let req = match name {
                    "cadvisor" => testing::cadvisor_request(&shape),
                    _ => testing::request(&shape),
                };
                (prost::Message::encode_to_vec(&req), testing::compress(&req))
            }
            Kind::RemoteWrite2 => {
                let req = match name {
                    "rw2-cadvisor" => testing::cadvisor_request(&shape),
                    _ => testing::request(&shape),
                };
                let v2 = testing::rw2::from_v1(&req);
                (
                    prost::Message::encode_to_vec(&v2),
                    testing::rw2::compress(&v2),
                )
            }
            Kind::Otlp(signal, gzipped) => {
                let raw = match signal {
                    "metrics" => testing::otlp::metrics(&shape, false),
                    "logs" => testing::otlp::logs(&shape, false),
                    _ => testing::otlp::traces(&shape, false),
                };
                let body = if gzipped { gzip(&raw) } else { raw.clone() };
                (raw, body)
            }
            Kind::OtlpLogsJson { gzip: gzipped } => {
                let raw = testing::otlp::logs_json(&shape);
                let body = if gzipped { gzip(&raw) } else { raw.clone() };
                (raw, body)
            }
            Kind::LokiProto | Kind::LokiJson { .. } => {
                let push = testing::loki_push(&Shape {
                    series: (args.series / 20).max(1),
                    ..shape
                });
                samples = push.lines as u64;
                match kind {
                    Kind::LokiProto => {
                        let body = snap::raw::Encoder::new().compress_vec(&push.proto)?;
                        (push.proto, body)
                    }
                    Kind::LokiJson { gzip: true } => {
                        let body = gzip(&push.json);
                        (push.json, body)
                    }
                    _ => (push.json.clone(), push.json),
                }
            }
        };
        decoded.push(raw);
        bodies.push(Bytes::from(body));
    }
    Ok(Corpus {
        kind,
        decoded_bytes: decoded.last().map_or(0, Vec::len),
        decoded,
        bodies,
        samples,
    })
}

/// Gzip at the fastest level, as log agents usually do.
fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

async fn run(args: Args) -> anyhow::Result<Figures> {
    let corpus = corpus(&args)?;
    let unit = corpus.kind.unit();
    let upstream = start_upstream().await?;
    let dir = tempfile::tempdir()?;
    let (mut child, port) = start_orgsplit(&args, dir.path(), upstream).await?;
    let pid = child.id().context("orgsplit has no pid")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let via = format!("http://127.0.0.1:{port}{}", corpus.kind.path());
    let direct = format!("http://{upstream}{}", corpus.kind.upstream_path());

    // Warm up connections and pools.
    drive(&client, &via, &corpus, 2, Duration::from_millis(500), 0).await;

    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let load = drive(
        &client,
        &via,
        &corpus,
        args.concurrency,
        args.duration,
        args.rate,
    )
    .await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid)? - cpu0;
    let rss = peak_rss_kib(pid)?;

    // The latency of the same bodies straight to the upstream, at the same
    // concurrency and request rate, as the baseline.
    let rate = if args.rate > 0 {
        args.rate
    } else {
        (load.ok as f64 * corpus.samples as f64 / elapsed.as_secs_f64()) as u64
    };
    let base = drive(
        &client,
        &direct,
        &corpus,
        args.concurrency,
        Duration::from_secs(2).min(args.duration),
        rate,
    )
    .await;

    let _ = child.kill().await;
    let floor = floor_cpu_per_million(&corpus);
    let samples = load.ok * corpus.samples;
    let per_million = cpu / (samples as f64 / 1e6);
    let (p50, p99) = (load.percentile(0.50), load.percentile(0.99));
    let (b50, b99) = (base.percentile(0.50), base.percentile(0.99));
    println!("orgsplit-bench: {} corpus, {} {unit} per request, {} tenants, {} bytes decoded, concurrency {}, {}",
        args.corpus.first().map_or("random", String::as_str),
        corpus.samples, args.tenant_count(), corpus.decoded_bytes, args.concurrency,
        if args.rate > 0 { format!("target {} {unit}/s", args.rate) } else { "unthrottled".into() });
    println!(
        "requests:               {} ok, {} failed in {:.1}s",
        load.ok,
        load.failed,
        elapsed.as_secs_f64()
    );
    println!(
        "throughput:             {:.0} {unit}/s ({:.1} MB/s decoded)",
        samples as f64 / elapsed.as_secs_f64(),
        load.ok as f64 * corpus.decoded_bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "orgsplit CPU:           {:.2} s = {:.3} CPU-s per million {unit}",
        cpu, per_million
    );
    println!(
        "{:<24}{:.3} CPU-s per million {unit} (ratio {:.2}x)",
        if corpus.kind.gzip() {
            "gzip floor:"
        } else {
            "snappy floor:"
        },
        floor,
        per_million / floor
    );
    println!(
        "latency via orgsplit:   p50 {:.2} ms, p99 {:.2} ms",
        p50, p99
    );
    println!(
        "latency direct:         p50 {:.2} ms, p99 {:.2} ms",
        b50, b99
    );
    println!(
        "added latency:          p50 {:.2} ms, p99 {:.2} ms",
        p50 - b50,
        p99 - b99
    );
    println!("orgsplit peak RSS:      {:.1} MiB", rss as f64 / 1024.0);
    if load.ok == 0 {
        bail!("no push succeeded");
    }
    Ok(Figures {
        corpus: args.corpus.first().cloned().unwrap_or_default(),
        tenants: args.tenant_count(),
        per_million,
        floor,
        p99_added: p99 - b99,
        rss_mib: rss as f64 / 1024.0,
    })
}

async fn start_upstream() -> anyhow::Result<std::net::SocketAddr> {
    // OTLP receivers answer an (empty) Export...ServiceResponse.
    let otlp = || {
        axum::routing::post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                Bytes::new(),
            )
        })
    };
    let app = axum::Router::new()
        .route(
            "/api/v1/push",
            axum::routing::post(|headers: axum::http::HeaderMap, body: Bytes| async move {
                std::hint::black_box(body.len());
                // A 2.0 receiver says what it wrote (not counted here: the
                // load test does not check counts).
                let v2 = headers
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().ends_with(b"v2.Request"));
                let mut answer = axum::http::Response::new(axum::body::Body::empty());
                if v2 {
                    answer.headers_mut().insert(
                        "x-prometheus-remote-write-samples-written",
                        axum::http::HeaderValue::from_static("1"),
                    );
                }
                answer
            }),
        )
        .route("/otlp/v1/metrics", otlp())
        .route("/otlp/v1/logs", otlp())
        .route("/v1/traces", otlp())
        .route(
            "/loki/api/v1/push",
            axum::routing::post(|body: Bytes| async move {
                std::hint::black_box(body.len());
                axum::http::StatusCode::NO_CONTENT
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn start_orgsplit(
    args: &Args,
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
) -> anyhow::Result<(tokio::process::Child, u16)> {
    start_orgsplit_with(args, dir, upstream, "{unmapped: drop}").await
}

/// [`start_orgsplit`] with its own `routing` section (YAML flow map).
async fn start_orgsplit_with(
    args: &Args,
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    routing: &str,
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let bin = match &args.orgsplit {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no exe dir")?
            .join("orgsplit"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        );
    }
    let table: String = testing::table_pairs(args.tenant_count().max(20), args.tenant_count())
        .into_iter()
        .map(|(ns, org)| format!("{ns}: {org}\n"))
        .collect();
    std::fs::write(dir.join("table.yaml"), table)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // Remote write 2.0 goes upstream as 2.0 (what a 2.0 Mimir takes).
    let protocol = match args.corpus.first().map(String::as_str) {
        Some("rw2" | "rw2-cadvisor") => "v2",
        _ => "auto",
    };
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nupstream: {{url: \"http://{upstream}/api/v1/push\", protocol: {protocol}}}\nloki: {{upstream: {{url: \"http://{upstream}/loki/api/v1/push\"}}}}\notlp: {{traces: {{upstream: \"http://{upstream}/v1/traces\"}}}}\nrouting: {routing}\nlookup: {{file: \"{}\"}}\nlog: {{level: warn}}\n{}\n",
            dir.join("table.yaml").display(),
            args.extra_config
        ),
    )?;
    let mut cmd = if args.pin {
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(&bin);
        c
    } else {
        tokio::process::Command::new(&bin)
    };
    let child = cmd
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("orgsplit.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(&ready).await {
            if r.status().is_success() {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("orgsplit never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, port))
}

struct Load {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
}

impl Load {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Pushes bodies from `corpus` to `url` with `concurrency` workers for
/// `duration`, at most `rate` samples/s in total (0: no limit).
async fn drive(
    client: &reqwest::Client,
    url: &str,
    corpus: &Corpus,
    concurrency: usize,
    duration: Duration,
    rate: u64,
) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    // Each worker sends one request per `interval` when throttled.
    let interval = (rate > 0)
        .then(|| Duration::from_secs_f64(concurrency as f64 * corpus.samples as f64 / rate as f64));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let bodies = corpus.bodies.clone();
        let kind = corpus.kind;
        let (ok, failed) = (ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            // Spread throttled workers over the interval.
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |iv| {
                    iv.mul_f64(w as f64 / concurrency as f64)
                });
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let t = Instant::now();
                let mut r = client.post(&url);
                for (name, value) in kind.headers() {
                    r = r.header(*name, *value);
                }
                let r = r.body(body).send().await;
                let good = matches!(&r, Ok(r) if r.status().is_success());
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
                lat.push(t.elapsed().as_micros() as u64);
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let mut latencies_us = Vec::new();
    for w in workers {
        latencies_us.extend(w.await.unwrap_or_default());
    }
    latencies_us.sort_unstable();
    Load {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        latencies_us,
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    let ticks = 100.0; // USER_HZ on Linux
    Ok((utime + stime) / ticks)
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM")?.parse()?)
}

/// CPU seconds per million samples for decompressing and recompressing the
/// same bodies with their own codec (snappy, or gzip at the fastest level):
/// what any proxy that re-encodes must pay at least. Plain JSON has no codec;
/// its floor is snappy's over the same bytes, the cheapest codec a proxy
/// could use. The best of five 1-second runs, so a noisy neighbour inflates
/// it less.
fn floor_cpu_per_million(corpus: &Corpus) -> f64 {
    let snappy: Vec<Vec<u8>> = corpus
        .decoded
        .iter()
        .map(|raw| {
            snap::raw::Encoder::new()
                .compress_vec(raw)
                .unwrap_or_default()
        })
        .collect();
    let mut raw = Vec::new();
    let mut out = Vec::new();
    let mut enc = snap::raw::Encoder::new();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(1) {
            if corpus.kind.gzip() {
                for body in &corpus.bodies {
                    raw.clear();
                    let _ = std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&body[..]),
                        &mut raw,
                    );
                    std::hint::black_box(gzip(&raw));
                    n += 1;
                }
                continue;
            }
            for body in &snappy {
                raw.resize(snap::raw::decompress_len(body).unwrap_or(0), 0);
                let len = snap::raw::Decoder::new()
                    .decompress(body, &mut raw)
                    .unwrap_or(0);
                out.resize(snap::raw::max_compress_len(len), 0);
                std::hint::black_box(enc.compress(&raw[..len], &mut out).unwrap_or(0));
                n += 1;
            }
        }
        let per_million =
            started.elapsed().as_secs_f64() / (n as f64 * corpus.samples as f64 / 1e6);
        best = best.min(per_million);
    }
    best
}
