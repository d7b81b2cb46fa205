//! Routes, listeners (plain or TLS), admission limits and graceful shutdown.
//!
//! ```text
//!  TcpListener ─(TLS?)─► hyper (HTTP/1.1, h2) ─► axum ─┬─ POST /api/v1/push, /push ─► push::push
//!                                                      ├─ GET  /metrics
//!                                                      ├─ GET  /healthz, /alive
//!                                                      └─ GET  /readyz
//!  metrics_listen (optional): the same minus the push routes
//! ```
//!
//! Shutdown (SIGTERM): `/readyz` turns 503 at once; pushes are still served
//! for `shutdown.grace_period` so endpoints can update; then the listeners
//! close and in-flight pushes finish, bounded by `upstream.timeout`.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits, ServerTls};
use crate::connections::Connections;
use crate::forward::{ForwardError, Forwarder};
use crate::limits::ByteBudget;
use crate::pool::BufferPool;
use crate::route::{FamilyIndex, Router};
use crate::table::OrgTable;

/// Everything a request handler needs, shared by all requests.
pub struct App {
    pub router: Router,
    pub table: OrgTable,
    pub families: FamilyIndex,
    /// Decompression and batch buffers, reused across requests.
    pub pool: Arc<BufferPool>,
    pub forwarder: Forwarder,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    pub per_tenant_metrics: bool,
    /// Push requests being processed and forwarded
    /// (`limits.max_inflight_requests`), taken once a body has arrived.
    pub inflight_requests: Semaphore,
    /// Memory of the requests in flight (`limits.max_inflight_bytes`).
    pub budget: Arc<ByteBudget>,
    /// Splits running on blocking threads at once: one per core.
    pub cpu: Semaphore,
    /// Set when shutdown begins; `/readyz` answers 503 from then on.
    pub shutting_down: AtomicBool,
    grace_period: Duration,
    drain_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

/// Errors building the server from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("tls: {0}")]
    Tls(String),
}

impl App {
    /// Builds the shared state from a validated config and a table that is
    /// fed elsewhere (file or Kubernetes). Must run inside the runtime.
    pub fn new(config: &Config, table: OrgTable) -> Result<Self, ServerError> {
        let limits = config.limits.clone();
        Ok(Self {
            router: Router::new(&config.routing, limits.wire()),
            table,
            // Names are metric names and tenant IDs: 80 bytes a pair on
            // average is generous for real ones and bounds made-up ones.
            families: FamilyIndex::new(
                limits.max_metadata_index_pairs,
                limits.max_metadata_index_pairs.saturating_mul(80),
            ),
            pool: Arc::default(),
            forwarder: Forwarder::new(&config.upstream)?,
            inflight_requests: Semaphore::new(limits.max_inflight_requests),
            budget: ByteBudget::new(limits.max_inflight_bytes),
            cpu: Semaphore::new(crate::pipeline::cores()),
            limits,
            metrics: crate::metrics::install(),
            per_tenant_metrics: config.metrics.per_tenant,
            shutting_down: AtomicBool::new(false),
            grace_period: config.shutdown.grace_period,
            // In-flight pushes end within upstream.timeout (plus the time to
            // read and split the request).
            drain_timeout: config.upstream.timeout + Duration::from_secs(5),
            tls: config.tls.as_ref().map(tls_acceptor).transpose()?,
        })
    }
}

fn tls_acceptor(tls: &ServerTls) -> Result<TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|i| i.collect())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert_file.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate",
            tls.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", Path::new(&tls.key_file).display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The HTTP routes of the main listener.
pub fn routes(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/push", post(crate::push::push))
        .route("/push", post(crate::push::push))
        .merge(ops_routes())
        .with_state(app)
}

/// Metrics and health, also served on `metrics_listen`.
fn ops_routes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(crate::health::alive))
        .route("/alive", get(crate::health::alive))
        .route("/readyz", get(crate::health::ready))
}

async fn metrics(axum::extract::State(app): axum::extract::State<Arc<App>>) -> String {
    crate::metrics::family_index(app.families.stats());
    crate::metrics::inflight_bytes(app.budget.used());
    app.metrics.render()
}

/// Serves `listener` (and `metrics_listener`, if any) until `shutdown`
/// resolves, then shuts down gracefully (see the module doc).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // One connection limit for both listeners: what it bounds is memory.
    let connections = Connections::new(app.limits.max_connections);
    let mut loops = vec![tokio::spawn(accept_loop(
        listener,
        routes(app.clone()),
        Accept::new(&app, &connections),
        stop_rx.clone(),
    ))];
    if let Some(l) = metrics_listener {
        loops.push(tokio::spawn(accept_loop(
            l,
            ops_routes().with_state(app.clone()),
            Accept::new(&app, &connections),
            stop_rx,
        )));
    }

    shutdown.await;
    app.shutting_down.store(true, Ordering::Release);
    tracing::info!(grace_period = ?app.grace_period, "not ready; still serving during the grace period");
    tokio::time::sleep(app.grace_period).await;

    tracing::info!("closing listeners; waiting for in-flight requests");
    let _ = stop_tx.send(true);
    let mut connections = Vec::new();
    for l in loops {
        if let Ok(graceful) = l.await {
            connections.push(graceful.shutdown());
        }
    }
    let drained = futures::future::join_all(connections);
    if tokio::time::timeout(app.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
    Ok(())
}

/// How connections are accepted and served.
struct Accept {
    tls: Option<TlsAcceptor>,
    connections: Arc<Connections>,
    builder: auto::Builder<TokioExecutor>,
}

impl Accept {
    fn new(app: &App, connections: &Arc<Connections>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A connection that does not deliver a request's headers in time
        // (or stays idle that long between requests) is closed, and what it
        // may make hyper buffer is small: a request's headers and the
        // part of its body not yet read are the only memory a connection
        // holds outside the byte budget.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(app.limits.header_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(MAX_STREAMS)
            .initial_stream_window_size(256 << 10)
            .initial_connection_window_size(1 << 20)
            .keep_alive_interval(app.limits.header_timeout)
            .keep_alive_timeout(app.limits.header_timeout);
        Self {
            tls: app.tls.clone(),
            connections: connections.clone(),
            builder,
        }
    }
}

/// Largest request head (HTTP/1.1 read buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 16 << 10;
/// Requests at once on one HTTP/2 connection.
const MAX_STREAMS: u32 = 64;

/// Accepts connections until `stop`; returns the handle that waits for the
/// accepted connections to finish.
async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    accept: Accept,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(slot) = accept.connections.admit().await else {
            // Closing at once tells the client to retry (elsewhere) now,
            // rather than leaving it waiting in the listen backlog.
            crate::metrics::connection_refused();
            static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if crate::metrics::rate_limit(&LAST, Duration::from_secs(10)) {
                tracing::warn!(%peer, "limits.max_connections reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The router, noting on the connection's flags that it has spoken.
        let service = {
            let (router, flags) = (router.clone(), slot.flags.clone());
            hyper::service::service_fn(move |request| {
                flags.spoke();
                tower::ServiceExt::oneshot(router.clone(), request)
            })
        };
        let builder = accept.builder.clone();
        let watcher = graceful.watcher();
        let tls = accept.tls.clone();
        tokio::spawn(async move {
            let flags = slot.flags.clone();
            let serve = async move {
                let Some(tls) = tls else {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                    return;
                };
                match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            };
            // A connection that never sent a request may be closed to let a
            // new one in (see `connections`).
            tokio::select! {
                () = serve => {}
                () = flags.evicted() => {}
            }
            drop(slot);
        });
    }
    graceful
}
