//! Shared test harness: a recording fake upstream, an in-process orgsplit on a
//! real TCP port, a Kubernetes API stand-in, and helpers to push.
#![allow(dead_code)]

pub mod balancer;
pub mod kube_api;
pub mod prom;
pub mod proxy;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use orgsplit::config::Config;
use orgsplit::formats::rw1::pb;
use orgsplit::server::Server;
use orgsplit::table::OrgTable;
use tokio::net::TcpListener;

/// One push the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub tenant: String,
    pub headers: HeaderMap,
    pub request: pb::WriteRequest,
    /// The body as it arrived (snappy).
    pub body: Bytes,
}

/// How the fake upstream answers a tenant.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Status(u16, Option<u64>, &'static str),
    Delay(Duration),
    /// Answers this status with a streamed body of this many bytes, and
    /// counts how many of them the client took ([`Upstream::streamed`]).
    HugeBody(u16, u64),
    /// Answers every request after this delay; 400 (as Mimir does for a
    /// bad sample) when a series in it carries the named label, and then
    /// records nothing of it.
    Poison(&'static str, Duration),
}

#[derive(Default)]
struct UpstreamState {
    received: Mutex<Vec<Received>>,
    /// Bytes of `HugeBody` answers handed to the connection so far.
    streamed: std::sync::atomic::AtomicU64,
    /// Delayed pushes in progress now, and the most at once.
    delayed_now: std::sync::atomic::AtomicU64,
    delayed_peak: std::sync::atomic::AtomicU64,
    behaviour: Mutex<HashMap<String, Behaviour>>,
}

/// A fake Mimir distributor that decodes every push and records it by tenant.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn start() -> Self {
        let state = Arc::new(UpstreamState::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Self::router(&state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// The same fake, over TLS (`client_ca`: require client certificates).
    pub async fn start_tls(leaf: &tls::Leaf, client_ca: Option<&str>) -> Self {
        let state = Arc::new(UpstreamState::default());
        let addr = tls::serve_tls(Self::router(&state), leaf, client_ca).await;
        Self { addr, state }
    }

    fn router(state: &Arc<UpstreamState>) -> axum::Router {
        axum::Router::new()
            .route("/api/v1/push", axum::routing::post(receive))
            .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
            .with_state(state.clone())
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    /// Makes the upstream answer `tenant` this way (accepted pushes are
    /// recorded; rejected ones are not).
    pub fn set(&self, tenant: &str, behaviour: Behaviour) {
        self.state
            .behaviour
            .lock()
            .unwrap()
            .insert(tenant.into(), behaviour);
    }

    pub fn clear(&self, tenant: &str) {
        self.state.behaviour.lock().unwrap().remove(tenant);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The most `Delay`ed pushes that were in progress at once.
    pub fn delayed_peak(&self) -> u64 {
        self.state
            .delayed_peak
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes of `HugeBody` answers the client has read (or the socket took).
    pub fn streamed(&self) -> u64 {
        self.state
            .streamed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.state.received.lock().unwrap().clear();
    }

    /// Tenant → all series it received, in arrival order.
    pub fn series_by_tenant(&self) -> BTreeMap<String, Vec<pb::TimeSeries>> {
        let mut out: BTreeMap<String, Vec<pb::TimeSeries>> = BTreeMap::new();
        for r in self.received() {
            out.entry(r.tenant)
                .or_default()
                .extend(r.request.timeseries);
        }
        out
    }
}

async fn receive(
    State(state): State<Arc<UpstreamState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = headers
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let behaviour = state.behaviour.lock().unwrap().get(&tenant).cloned();
    match behaviour {
        Some(Behaviour::Status(code, retry_after, msg)) => {
            let mut r = (StatusCode::from_u16(code).unwrap(), msg).into_response();
            if let Some(s) = retry_after {
                r.headers_mut().insert("Retry-After", s.into());
            }
            return r;
        }
        Some(Behaviour::Delay(d)) => {
            use std::sync::atomic::Ordering::SeqCst;
            let now = state.delayed_now.fetch_add(1, SeqCst) + 1;
            state.delayed_peak.fetch_max(now, SeqCst);
            tokio::time::sleep(d).await;
            state.delayed_now.fetch_sub(1, SeqCst);
        }
        Some(Behaviour::Poison(label, delay)) => {
            tokio::time::sleep(delay).await;
            if let Ok(r) = orgsplit::testing::decompress(&body) {
                if r.timeseries
                    .iter()
                    .any(|s| s.labels.iter().any(|l| l.name == label))
                {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("series with label {label}"),
                    )
                        .into_response();
                }
            }
        }
        Some(Behaviour::HugeBody(code, total)) => {
            const CHUNK: u64 = 64 << 10;
            let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
            let counter = state.clone();
            let stream = futures::stream::iter((0..total.div_ceil(CHUNK)).map(move |_| {
                counter
                    .streamed
                    .fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk.clone())
            }));
            return (
                StatusCode::from_u16(code).unwrap(),
                [("content-length", total.to_string())],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        None => {}
    }
    // Large bodies are decoded on a blocking thread, so that tests on a
    // one-thread runtime measure orgsplit's latency, not this fake's.
    let decoded = if body.len() > 256 << 10 {
        let body = body.clone();
        tokio::task::spawn_blocking(move || orgsplit::testing::decompress(&body))
            .await
            .unwrap()
    } else {
        orgsplit::testing::decompress(&body)
    };
    let request = match decoded {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    state.received.lock().unwrap().push(Received {
        tenant,
        headers,
        request,
        body,
    });
    StatusCode::OK.into_response()
}

/// An orgsplit server running in this process on a real TCP port.
pub struct Orgsplit {
    pub addr: SocketAddr,
    /// The OTLP gRPC listener, when `otlp.grpc` is on.
    pub grpc_addr: Option<SocketAddr>,
    /// The org table the server routes with.
    pub table: OrgTable,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<()>,
}

impl Orgsplit {
    /// Starts orgsplit with `yaml` as its config file (written to `dir`).
    pub async fn start(dir: &Path, yaml: &str) -> Self {
        let path = dir.join("orgsplit.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut config = Config::load(Some(&path), &Default::default()).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(&config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let grpc_addr = server.grpc_addr();
        let table = server.table().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .unwrap()
        });
        Self {
            addr,
            grpc_addr,
            table,
            stop: Some(tx),
            done,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// POSTs a raw body to `/api/v1/push` with the headers Prometheus sends.
    pub async fn push_raw(&self, body: Vec<u8>) -> (u16, HeaderMap, String) {
        let r = client()
            .post(self.url("/api/v1/push"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    pub async fn push(&self, request: &pb::WriteRequest) -> (u16, HeaderMap, String) {
        self.push_raw(orgsplit::testing::compress(request)).await
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Orgsplit {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `cmd` to its end and returns its standard output, after checking
/// it succeeded (the failure names the command and shows what it printed).
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn label(name: &str, value: &str) -> pb::Label {
    pb::Label {
        name: name.into(),
        value: value.into(),
    }
}

/// A series with one sample.
pub fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> pb::TimeSeries {
    pb::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: vec![pb::Sample {
            value,
            timestamp: ts,
        }],
        ..Default::default()
    }
}

pub fn request(series: Vec<pb::TimeSeries>) -> pb::WriteRequest {
    pb::WriteRequest {
        timeseries: series,
        metadata: vec![],
    }
}

/// Value of a label of a series.
pub fn label_of<'a>(ts: &'a pb::TimeSeries, name: &str) -> Option<&'a str> {
    ts.labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// Reads a counter or gauge from a metrics page: the sum of all lines whose
/// name and labels start with `prefix` (e.g. `orgsplit_series_dropped_total{reason="no_label"`).
/// Remote write is the default signal: `signal="metrics"` may be left out
/// of the prefix (log lines are named with `signal="logs"`).
pub fn metric(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if prefix.contains("signal=") {
                return l.to_string();
            }
            if l.contains("signal=\"logs\"") {
                return String::new();
            }
            l.replacen("{signal=\"metrics\",", "{", 1)
                .replacen("{signal=\"metrics\"}", "", 1)
        })
        .filter(|l| {
            l.starts_with(prefix)
                && l[prefix.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == ' ' || c == '{' || c == ',' || c == '}')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The config used by most tests: namespace mode over `table.yaml` in `dir`.
pub fn config(dir: &Path, upstream: &str, extra_routing: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
upstream:
  url: {upstream}
  timeout: 2s
routing:
  namespace_labels: [namespace]
{extra_routing}
lookup:
  file: {}
",
        dir.join("table.yaml").display()
    )
}

pub const TABLE: &str = "shop-prod: acme\nshop-dev: acme\nbilling: globex\nbroken: \"../evil\"\n";

pub fn write_table(dir: &Path, text: &str) {
    std::fs::write(dir.join("table.yaml"), text).unwrap();
}

/// An orgsplit in namespace mode with policy `drop` over `table`, `extra`
/// appended to its config, in front of a fresh recording upstream.
pub async fn start_dropping(table: &str, extra: &str) -> (tempfile::TempDir, Upstream, Orgsplit) {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), table);
    let upstream = Upstream::start().await;
    let cfg = format!(
        "{}{extra}",
        config(dir.path(), &upstream.url(), "  unmapped: drop")
    );
    let orgsplit = Orgsplit::start(dir.path(), &cfg).await;
    (dir, upstream, orgsplit)
}

/// Snappy block compression of raw bytes (hand-made bodies).
pub fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(b).unwrap()
}

/// Runs `tests/helpers/<script>` with Debian's `/usr/bin/python3`, the
/// packages under `pythonpath` and `input` on its standard input (on a
/// blocking thread); its output.
pub async fn run_python(
    script: &str,
    pythonpath: std::path::PathBuf,
    input: String,
) -> std::process::Output {
    use std::io::Write;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(script);
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .env("PYTHONPATH", pythonpath)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (scripts/test installs it and the test clients)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// A token made by PyJWT from `spec` (see `tests/helpers/pyjwt_token.py`).
pub fn pyjwt(spec: serde_json::Value) -> String {
    use std::io::Write;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/pyjwt_token.py");
    // Debian's python3 with python3-jwt (installed by .ci/run).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt-get install python3-jwt python3-cryptography)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT helper failed (apt-get install python3-jwt python3-cryptography): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
