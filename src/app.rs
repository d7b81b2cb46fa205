//! The state every request handler shares, built once from the config.
//!
//! ```text
//!  Config ─► App { pipeline (router, family index, buffer pool), org table,
//!                  forwarder, limits, memory budget, metrics, shutdown flag }
//!  push / health / server ─► App's methods (its fields are its own)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_rustls::TlsAcceptor;

use crate::activity::Activity;
use crate::auth::Authenticator;
use crate::config::{Config, Limits, RoutingMode, ServerTls};
use crate::formats::Destination;
use crate::formats::PushKind;
use crate::forward::{ForwardError, Forwarder};
use crate::limits::ByteBudget;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineParts, PushPipeline, REGISTRY};
use crate::pool::BufferPool;
use crate::route::Router;
use crate::signals::Signal;
use crate::table::OrgTable;

/// Everything a request handler needs, shared by all requests.
pub struct App {
    /// One pipeline per push kind, in [`PushKind::id`] order.
    pipelines: Vec<Box<dyn PushPipeline>>,
    /// Where the pushes of the other destinations go (Loki, OTLP), by
    /// [`Destination`] (index 0, remote write, is `forwarder`), for those
    /// that are configured.
    other_forwarders: [Option<Forwarder>; 5],
    /// Who is sending, and what it may write (shared with the read path).
    auth: Arc<Authenticator>,
    /// `routing.mode`: principal mode sends pushes whole.
    mode: RoutingMode,
    /// Request bodies, decoded bodies, batches and compressed bodies.
    pool: Arc<BufferPool>,
    table: OrgTable,
    forwarder: Forwarder,
    limits: Limits,
    metrics: Metrics,
    /// What the operator page shows (shared with it).
    activity: Arc<Activity>,
    per_tenant_metrics: bool,
    /// Push requests being processed and forwarded
    /// (`limits.max_inflight_requests`), taken once a body has arrived.
    inflight_requests: Semaphore,
    /// Memory of the requests in flight (`limits.max_inflight_bytes`).
    budget: Arc<ByteBudget>,
    /// Splits running on blocking threads at once: one per core.
    cpu: Semaphore,
    /// Set when shutdown begins; `/readyz` answers 503 from then on.
    shutting_down: AtomicBool,
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
    #[error("auth: {0}")]
    Auth(String),
}

impl App {
    /// Builds the shared state from a validated config, a table that is fed
    /// elsewhere (file or Kubernetes) and the server's metrics. Must run
    /// inside the runtime.
    pub fn new(config: &Config, table: OrgTable, metrics: Metrics) -> Result<Self, ServerError> {
        let limits = config.limits.clone();
        let router = Router::new(&config.routing, limits.wire())
            .with_signals(metrics.route())
            .with_outside_allowance(config.auth.outside_allowance);
        let activity = Arc::new(Activity::new());
        let auth = Arc::new(
            Authenticator::new(&config.auth, metrics.auth())
                .map_err(ServerError::Auth)?
                .recording_to(activity.clone()),
        );
        auth.follow();
        let kinds: Vec<&'static PushKind> = REGISTRY.iter().map(|r| r.kind).collect();
        let pool = Arc::new(BufferPool::default());
        let forwarder = Forwarder::new(&config.upstream, metrics.upstream(), &kinds, pool.clone())?;
        let mut other_forwarders: [Option<Forwarder>; 5] = Default::default();
        for destination in Destination::ALL {
            let (upstream, signal) = match destination {
                Destination::RemoteWrite => continue,
                Destination::Loki => (
                    config.loki.enabled().then(|| config.loki.upstream.clone()),
                    Signal::Logs,
                ),
                Destination::OtlpMetrics => {
                    (config.otlp_upstream(Signal::Metrics), Signal::Metrics)
                }
                Destination::OtlpLogs => (config.otlp_upstream(Signal::Logs), Signal::Logs),
                Destination::OtlpTraces => (config.otlp_upstream(Signal::Traces), Signal::Traces),
            };
            if let Some(upstream) = upstream {
                other_forwarders[destination as usize] = Some(Forwarder::new(
                    &upstream,
                    metrics.signal(signal).upstream(),
                    &kinds,
                    pool.clone(),
                )?);
            }
        }
        // OTLP items are routed by attributes: the same policies, their
        // own keys.
        let attribute_router = Router::new(&config.attribute_routing(), limits.wire())
            .with_signals(metrics.route())
            .with_outside_allowance(config.auth.outside_allowance);
        let tls = config
            .tls
            .as_ref()
            .map(|tls| tls_acceptor(tls, &auth))
            .transpose()?;
        let parts = PipelineParts {
            router: &router,
            attribute_router: &attribute_router,
            // Names are metric names and tenant IDs: 80 bytes a pair on
            // average is generous for real ones and bounds made-up ones.
            family_index: (
                limits.max_metadata_index_pairs,
                limits.max_metadata_index_pairs.saturating_mul(80),
            ),
            pool: &pool,
            max_decoded: limits.max_decoded_bytes,
        };
        let pipelines = REGISTRY.iter().map(|r| (r.build)(&parts)).collect();
        Ok(Self {
            pipelines,
            other_forwarders,
            auth,
            mode: config.routing.mode,
            pool,
            table,
            forwarder,
            inflight_requests: Semaphore::new(limits.max_inflight_requests),
            budget: ByteBudget::new(limits.max_inflight_bytes),
            cpu: Semaphore::new(crate::limits::cores()),
            limits,
            metrics,
            activity,
            per_tenant_metrics: config.metrics.per_tenant,
            shutting_down: AtomicBool::new(false),
            grace_period: config.shutdown.grace_period,
            // In-flight pushes end within upstream.timeout (plus the time to
            // read and split the request, and a coalescing window).
            drain_timeout: config.upstream.timeout + Duration::from_secs(5),
            tls,
        })
    }

    /// The pipeline of a push kind.
    pub(crate) fn pipeline(&self, kind: &PushKind) -> &dyn PushPipeline {
        &*self.pipelines[kind.id]
    }

    /// The forwarder of a destination's pushes, if it is configured.
    pub(crate) fn forwarder_for(&self, destination: Destination) -> Option<&Forwarder> {
        match destination {
            Destination::RemoteWrite => Some(&self.forwarder),
            other => self.other_forwarders[other as usize].as_ref(),
        }
    }

    pub(crate) fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The metrics push forwarder (its credentials serve the read path too).
    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Whether pushes go whole to the sender's own tenant.
    pub(crate) fn principal_mode(&self) -> bool {
        self.mode == RoutingMode::Principal
    }

    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    pub(crate) fn table(&self) -> &OrgTable {
        &self.table
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The record behind the operator page.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub(crate) fn per_tenant_metrics(&self) -> bool {
        self.per_tenant_metrics
    }

    pub(crate) fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// A request slot, if one is free.
    pub(crate) fn request_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.inflight_requests.try_acquire().ok()
    }

    /// A core for a large split; waits while every core is busy.
    pub(crate) async fn core(&self) -> Option<SemaphorePermit<'_>> {
        self.cpu.acquire().await.ok()
    }

    /// Whether the server can route: the table has loaded and shutdown has
    /// not begun.
    pub(crate) fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.table.is_synced() {
            Err("namespace table not loaded yet")
        } else {
            Ok(())
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub(crate) fn grace_period(&self) -> Duration {
        self.grace_period
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    pub(crate) fn tls(&self) -> Option<&TlsAcceptor> {
        self.tls.as_ref()
    }

    /// The `/metrics` page, with the gauges read at scrape time.
    pub(crate) fn render_metrics(&self) -> String {
        let families = self.pipelines.iter().map(|p| p.families().stats()).fold(
            Default::default(),
            |sum: crate::signals::FamilyIndexSize, s| crate::signals::FamilyIndexSize {
                pairs: sum.pairs + s.pairs,
                bytes: sum.bytes + s.bytes,
                rotations: sum.rotations + s.rotations,
            },
        );
        self.metrics.at_scrape(self.budget.used(), families);
        self.metrics.render()
    }
}

fn tls_acceptor(tls: &ServerTls, auth: &Authenticator) -> Result<TlsAcceptor, ServerError> {
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
        .with_client_cert_verifier(match auth.client_ca() {
            Some(ca) => ca.handshake_verifier(),
            None => rustls::server::WebPkiClientVerifier::no_client_auth(),
        })
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", Path::new(&tls.key_file).display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
