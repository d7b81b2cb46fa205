//! Routes, listeners (plain or TLS), admission limits and graceful shutdown.
//!
//! ```text
//!  TcpListener ─(TLS?)─► hyper (HTTP/1.1, h2) ─► axum ─┬─ POST /api/v1/push, /push ─► push::push
//!                                                      ├─ POST /loki/api/v1/push, /api/prom/push ─► push::loki_push
//!                                                      ├─ GET  /metrics
//!                                                      ├─ GET  /healthz, /alive
//!                                                      ├─ GET  /readyz
//!                                                      ├─ GET  /ui/, /ui/api/tenants ─► ui (its own state)
//!                                                      └─ anything else ─► read::handle (its own state)
//!  metrics_listen (optional): metrics, health and /ui/
//!  otlp.grpc.listen (optional): h2 ─► the three OTLP Export methods ─► push::grpc
//! ```
//!
//! Shutdown (SIGTERM): `/readyz` turns 503 at once; pushes are still served
//! for `shutdown.grace_period` so endpoints can update; then the listeners
//! close and in-flight pushes finish, bounded by `upstream.timeout`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, RoutingMode};
use crate::connections::Connections;
use crate::metrics::Metrics;
use crate::read::ReadProxy;
use crate::table::{self, OrgTable};
use crate::ui::OperatorPage;

/// A configured server: the org table's feed started, the shared state
/// built, the listeners bound. [`Server::serve`] runs it.
pub struct Server {
    app: Arc<App>,
    read: Arc<ReadProxy>,
    /// The operator page (`/ui/`).
    page: Arc<OperatorPage>,
    table: OrgTable,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    /// OTLP over gRPC (`otlp.grpc`).
    grpc_listener: Option<TcpListener>,
}

impl Server {
    /// Starts the table feed (file or Kubernetes), builds the state and
    /// binds `listen` (and `metrics_listen`). Must run inside the runtime.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let table = OrgTable::with_signals(metrics.table());
        if let Some(file) = &config.lookup.file {
            table::file::start(file.clone(), table.clone())?;
        }
        if let Some(kube) = &config.lookup.kubernetes {
            table::kube::start(kube.clone(), table.clone()).await?;
        }
        if config.routing.mode != RoutingMode::Namespace && !table.is_synced() {
            // Label and principal modes need no table.
            table.replace(Default::default());
        }
        if config.tls.is_none() && (config.auth.jwt.is_some() || config.auth.basic.is_some()) {
            tracing::warn!(
                "auth.jwt / auth.basic without tls: tokens and passwords cross the network \
                 in clear text unless TLS is terminated in front of orgsplit"
            );
        }
        let app = Arc::new(App::new(config, table.clone(), metrics.clone())?);
        let read = Arc::new(
            ReadProxy::new(
                config,
                app.auth().clone(),
                metrics,
                app.forwarder().credentials().clone(),
            )
            .map_err(|e| anyhow::anyhow!("read: {e}"))?,
        );
        let page = Arc::new(OperatorPage::new(
            config,
            table.clone(),
            app.activity().clone(),
            app.auth().clone(),
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
        };
        let listener = bind(config.listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let grpc_listener = match config.otlp.grpc.address() {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            app,
            read,
            page,
            table,
            listener,
            metrics_listener,
            grpc_listener,
        })
    }

    /// The address the push listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the OTLP gRPC listener is bound to, if it is on.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The org table the server routes with.
    pub fn table(&self) -> &OrgTable {
        &self.table
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see
    /// the module doc).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let routes = routes(self.app.clone(), self.read, self.page.clone());
        let grpc = self
            .grpc_listener
            .map(|l| (l, grpc_routes().with_state(self.app.clone())));
        serve(
            self.app,
            routes,
            self.listener,
            Listeners {
                metrics: self
                    .metrics_listener
                    .map(|l| (l, crate::ui::routes(self.page))),
                grpc,
            },
            shutdown,
        )
        .await
    }
}

/// The HTTP routes of the main listener: the push path and its state,
/// the operator page with its own, and, for every other path, the read
/// path with its own.
fn routes(app: Arc<App>, read: Arc<ReadProxy>, page: Arc<OperatorPage>) -> axum::Router {
    let read = axum::Router::new()
        .fallback(crate::read::handle)
        .with_state(read);
    let mut router = axum::Router::new();
    // Every push endpoint of every format, one handler.
    for endpoint in crate::formats::ENDPOINTS {
        for path in endpoint.paths {
            router = router.route(
                path,
                post(move |state, peer, headers, body| {
                    crate::push::serve(endpoint, state, peer, headers, body)
                }),
            );
        }
    }
    router
        .merge(ops_routes())
        // Everything else: the read proxy's routes, or 404.
        .with_state(app)
        .merge(crate::ui::routes(page))
        .fallback_service(read)
}

/// The OTLP gRPC listener's routes: the three `Export` methods; anything
/// else is `UNIMPLEMENTED`.
fn grpc_routes() -> axum::Router<Arc<App>> {
    let mut router = axum::Router::new();
    for (path, endpoint) in crate::push::grpc::methods() {
        router = router.route(
            path,
            post(move |state, peer, request| {
                crate::push::grpc::serve(endpoint, state, peer, request)
            }),
        );
    }
    router.fallback(crate::push::grpc::unimplemented)
}

/// The listeners besides the main one.
struct Listeners {
    /// `metrics_listen`: metrics, health and the operator page.
    metrics: Option<(TcpListener, axum::Router)>,
    /// `otlp.grpc`: its listener and routes.
    grpc: Option<(TcpListener, axum::Router)>,
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
    app.render_metrics()
}

/// Serves `listener` (and the others, if any) until `shutdown`
/// resolves, then shuts down gracefully (see the module doc).
async fn serve(
    app: Arc<App>,
    routes: axum::Router,
    listener: TcpListener,
    others: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // One connection limit for both listeners: what it bounds is memory.
    let connections = Connections::new(app.limits().max_connections);
    // Histogram values are folded into buckets every few seconds, so they
    // do not pile up between scrapes (or when nobody scrapes).
    let upkeep = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                app.metrics().upkeep();
            }
        })
    };
    let mut loops = vec![tokio::spawn(accept_loop(
        listener,
        routes,
        Accept::new(&app, &connections),
        stop_rx.clone(),
    ))];
    if let Some((l, page)) = others.metrics {
        loops.push(tokio::spawn(accept_loop(
            l,
            ops_routes().with_state(app.clone()).merge(page),
            Accept::new(&app, &connections),
            stop_rx.clone(),
        )));
    }
    if let Some((l, routes)) = others.grpc {
        loops.push(tokio::spawn(accept_loop(
            l,
            routes,
            Accept::new(&app, &connections),
            stop_rx,
        )));
    }

    shutdown.await;
    app.begin_shutdown();
    let grace_period = app.grace_period();
    tracing::info!(
        ?grace_period,
        "not ready; still serving during the grace period"
    );
    tokio::time::sleep(grace_period).await;

    tracing::info!("closing listeners; waiting for in-flight requests");
    let _ = stop_tx.send(true);
    let mut connections = Vec::new();
    for l in loops {
        if let Ok(graceful) = l.await {
            connections.push(graceful.shutdown());
        }
    }
    let drained = futures::future::join_all(connections);
    upkeep.abort();
    if tokio::time::timeout(app.drain_timeout(), drained)
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
    /// Checks client certificates, when `auth.mtls` is set.
    client_ca: Option<crate::auth::ClientCa>,
    connections: Arc<Connections>,
    builder: auto::Builder<TokioExecutor>,
    metrics: Metrics,
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
            .header_read_timeout(app.limits().header_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(MAX_STREAMS)
            .initial_stream_window_size(256 << 10)
            .initial_connection_window_size(1 << 20)
            .keep_alive_interval(app.limits().header_timeout)
            .keep_alive_timeout(app.limits().header_timeout);
        Self {
            tls: app.tls().cloned(),
            client_ca: app.auth().client_ca().cloned(),
            connections: connections.clone(),
            builder,
            metrics: app.metrics().clone(),
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
            accept.metrics.connection_refused();
            static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if crate::telemetry::rate_limit(&LAST, Duration::from_secs(10)) {
                tracing::warn!(%peer, "limits.max_connections reached; closing new connections");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The router, noting on the connection's flags that it has spoken.
        let service = {
            let (router, flags) = (router.clone(), slot.flags.clone());
            hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                flags.spoke();
                // Only the operator page asks who is calling (loopback?).
                if request.uri().path().starts_with("/ui") {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                }
                tower::ServiceExt::oneshot(router.clone(), request)
            })
        };
        let builder = accept.builder.clone();
        let watcher = graceful.watcher();
        let tls = accept.tls.clone();
        let client_ca = accept.client_ca.clone();
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
                        // The client certificate is checked once per
                        // connection; each request carries the result.
                        let peer = client_ca.map(|ca| {
                            Arc::new(ca.identify(stream.get_ref().1.peer_certificates()))
                        });
                        let service =
                            hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                                if let Some(peer) = &peer {
                                    request.extensions_mut().insert(peer.clone());
                                }
                                hyper::service::Service::call(&service, request)
                            });
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
