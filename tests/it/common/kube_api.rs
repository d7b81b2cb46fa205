//! A Kubernetes API stand-in for Namespaces that speaks the real wire
//! protocol the kube-rs client uses: `GET /api/v1/namespaces` lists with
//! `resourceVersion`, `limit`/`continue` paging and `labelSelector`; with
//! `watch=true` it streams chunked JSON events (ADDED, MODIFIED, DELETED,
//! BOOKMARK, and ERROR 410 for a resourceVersion that was compacted away).
//!
//! Tests can take it down (503 for every request, open watches cut), cut the
//! open watches, or compact the event log to force a relist.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Clone)]
struct Ns {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    rv: u64,
}

#[derive(Default)]
struct Inner {
    namespaces: BTreeMap<String, Ns>,
    rv: u64,
    /// (resourceVersion, type, name, object)
    events: Vec<(u64, &'static str, String, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    down: bool,
    /// Bumped to cut every open watch.
    generation: u64,
}

pub struct FakeKube {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    wake: broadcast::Sender<()>,
    pub lists: Arc<AtomicU64>,
    pub watches: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    wake: broadcast::Sender<()>,
    lists: Arc<AtomicU64>,
    watches: Arc<AtomicU64>,
}

fn object(name: &str, ns: &Ns) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "resourceVersion": ns.rv.to_string(),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": ns.labels,
            "annotations": ns.annotations,
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// `key=value`, `key!=value` and `key` terms, comma-separated.
fn matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels.get(k).map(String::as_str) != Some(v)
            } else if let Some((k, v)) = term.split_once('=') {
                labels.get(k.trim_end_matches('=')).map(String::as_str) == Some(v)
            } else {
                labels.contains_key(term)
            }
        })
}

impl FakeKube {
    pub async fn start() -> Self {
        let shared = Shared {
            inner: Arc::default(),
            wake: broadcast::channel(1024).0,
            lists: Arc::default(),
            watches: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/api/v1/namespaces", axum::routing::get(namespaces))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            inner: shared.inner,
            wake: shared.wake,
            lists: shared.lists,
            watches: shared.watches,
        }
    }

    /// Writes a kubeconfig that points at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{}\"}}
users:
- name: test
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: test}}
current-context: fake
",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    /// Creates or updates a namespace with these labels.
    pub fn upsert(&self, name: &str, labels: &[(&str, &str)]) {
        self.upsert_with(name, labels, &[]);
    }

    pub fn upsert_with(&self, name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let ns = Ns {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rv,
        };
        let kind = if inner.namespaces.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let obj = object(name, &ns);
        inner.namespaces.insert(name.into(), ns);
        inner.events.push((rv, kind, name.into(), obj));
        drop(inner);
        let _ = self.wake.send(());
    }

    /// Many namespaces at once, without one event each (a cluster that
    /// already had them before orgsplit started).
    pub fn preload(&self, items: impl IntoIterator<Item = (String, Vec<(String, String)>)>) {
        let mut inner = self.inner.lock().unwrap();
        for (name, labels) in items {
            inner.rv += 1;
            let rv = inner.rv;
            inner.namespaces.insert(
                name,
                Ns {
                    labels: labels.into_iter().collect(),
                    annotations: BTreeMap::new(),
                    rv,
                },
            );
        }
        inner.oldest = inner.rv;
    }

    pub fn delete(&self, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(mut ns) = inner.namespaces.remove(name) {
            inner.rv += 1;
            ns.rv = inner.rv;
            let rv = inner.rv;
            let obj = object(name, &ns);
            inner.events.push((rv, "DELETED", name.into(), obj));
        }
        drop(inner);
        let _ = self.wake.send(());
    }

    /// Down: every request gets 503 and open watches are cut.
    pub fn set_down(&self, down: bool) {
        let mut inner = self.inner.lock().unwrap();
        inner.down = down;
        inner.generation += 1;
        drop(inner);
        let _ = self.wake.send(());
    }

    /// Cuts every open watch (as an API server restart or a load balancer
    /// idle timeout does); clients resume from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.inner.lock().unwrap().generation += 1;
        let _ = self.wake.send(());
    }

    /// Forgets the event history: a watch resuming from an older
    /// resourceVersion gets `410 Gone` and must relist. Cuts open watches.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.events.clear();
        inner.oldest = inner.rv;
        inner.generation += 1;
        drop(inner);
        let _ = self.wake.send(());
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_: Option<String>,
    label_selector: Option<String>,
    allow_watch_bookmarks: Option<bool>,
    timeout_seconds: Option<u64>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn namespaces(State(s): State<Shared>, Query(p): Query<Params>) -> Response {
    if s.inner.lock().unwrap().down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(status(503, "ServiceUnavailable", "apiserver is down")),
        )
            .into_response();
    }
    let selector = p.label_selector.clone().unwrap_or_default();
    if p.watch.as_deref().is_some_and(|w| w == "true" || w == "1") {
        s.watches.fetch_add(1, Ordering::Relaxed);
        return watch(s, p, selector);
    }
    s.lists.fetch_add(1, Ordering::Relaxed);
    let inner = s.inner.lock().unwrap();
    let after = p.continue_.clone().unwrap_or_default();
    let limit = p.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut next = None;
    for (name, ns) in inner
        .namespaces
        .iter()
        .filter(|(name, _)| after.is_empty() || name.as_str() > after.as_str())
        .filter(|(_, ns)| matches(&selector, &ns.labels))
    {
        if items.len() == limit {
            next = items
                .last()
                .map(|o: &Value| o["metadata"]["name"].as_str().unwrap().to_string());
            break;
        }
        items.push(object(name, ns));
    }
    let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
    if let Some(n) = next {
        metadata["continue"] = json!(n);
    }
    axum::Json(
        json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": metadata, "items": items}),
    )
    .into_response()
}

fn watch(s: Shared, p: Params, selector: String) -> Response {
    let from: u64 = p
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = p.allow_watch_bookmarks.unwrap_or(false);
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(290));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut wake = s.wake.subscribe();
    let inner = s.inner.clone();
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).unwrap();
            b.push(b'\n');
            Bytes::from(b)
        };
        let (generation, gone) = {
            let i = inner.lock().unwrap();
            (i.generation, from < i.oldest)
        };
        if gone {
            let _ = tx
                .send(line(json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")})))
                .await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = from;
        loop {
            let batch: Vec<Value> = {
                let i = inner.lock().unwrap();
                if i.generation != generation || i.down {
                    return;
                }
                let mut out = Vec::new();
                let floor = sent;
                for (rv, kind, _, obj) in i.events.iter().filter(|e| e.0 > floor) {
                    let labels: BTreeMap<String, String> =
                        serde_json::from_value(obj["metadata"]["labels"].clone())
                            .unwrap_or_default();
                    let kind = if matches(&selector, &labels) {
                        *kind
                    } else {
                        "DELETED"
                    };
                    out.push(json!({"type": kind, "object": obj}));
                    sent = *rv;
                }
                out
            };
            for ev in batch {
                if tx.send(line(ev)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = wake.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if bookmarks {
                        // Only vouch for what was sent, so a resume from
                        // this bookmark never skips an event.
                        let rv = sent;
                        let bm = json!({"type": "BOOKMARK", "object": {"kind": "Namespace", "apiVersion": "v1",
                            "metadata": {"resourceVersion": rv.to_string()}}});
                        if tx.send(line(bm)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}
