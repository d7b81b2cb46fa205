//! Routes, listener and graceful shutdown wiring.
//!
//! ```text
//!  TcpListener ─► axum ─┬─ POST /api/v1/push, /push ─► push::push
//!                       ├─ GET  /metrics            ─► metrics handle
//!                       ├─ GET  /healthz, /alive    ─► health::alive
//!                       └─ GET  /readyz             ─► health::ready
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::answer::Upstream;
use crate::config::{Config, Limits};
use crate::forward::{ForwardError, Forwarder};
use crate::route::{FamilyIndex, Router};
use crate::table::OrgTable;
use crate::wire::SeriesLimits;

/// Everything a request handler needs, shared by all requests.
pub struct App {
    pub router: Router,
    pub table: OrgTable,
    pub families: FamilyIndex,
    pub forwarder: Forwarder,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    /// Set when shutdown begins; `/readyz` answers 503 from then on.
    pub shutting_down: AtomicBool,
}

impl App {
    /// Builds the shared state from a validated config and a table that is
    /// fed elsewhere (file or Kubernetes).
    pub fn new(config: &Config, table: OrgTable) -> Result<Self, ForwardError> {
        let limits = config.limits.clone();
        let series_limits = SeriesLimits {
            max_labels: limits.max_labels_per_series,
            max_label_bytes: limits.max_label_bytes,
        };
        Ok(Self {
            router: Router::new(
                &config.routing,
                series_limits,
                limits.max_series_per_request,
            ),
            table,
            families: FamilyIndex::default(),
            forwarder: Forwarder::new(&config.upstream)?,
            limits,
            metrics: crate::metrics::install(),
            shutting_down: AtomicBool::new(false),
        })
    }
}

/// The HTTP routes.
pub fn routes(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/push", post(crate::push::push))
        .route("/push", post(crate::push::push))
        .route("/metrics", get(metrics))
        .route("/healthz", get(crate::health::alive))
        .route("/alive", get(crate::health::alive))
        .route("/readyz", get(crate::health::ready))
        .with_state(app)
}

async fn metrics(axum::extract::State(app): axum::extract::State<Arc<App>>) -> String {
    app.metrics.render()
}

/// Serves until `shutdown` resolves, then stops accepting connections and
/// waits for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flag = app.clone();
    let shutdown = async move {
        shutdown.await;
        flag.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
    };
    axum::serve(listener, routes(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Logs a failed tenant push, at most once per 10 s per process, so a
/// failing tenant cannot flood the log (the metrics count every failure).
pub fn log_upstream_failure(tenant: &str, outcome: &Upstream) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if crate::metrics::rate_limit(&LAST, Duration::from_secs(10)) {
        tracing::warn!(%tenant, outcome = ?outcome, "upstream push failed");
    }
}
