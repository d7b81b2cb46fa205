//! Tenant requests sent upstream in parallel over pooled keep-alive
//! connections (HTTP/2 with TLS upstreams that offer it).
//!
//! ```text
//!  Push { tenant, snappy body } ─► coalesce (lane per tenant) ─► client: POST upstream.url ─┐
//!  Push { tenant, snappy body } ─►   idle: at once; busy: merged with others' batches       ─┼─► Upstream per push
//!  ...                                                                                      ─┘
//! ```
//!
//! Headers are built here from scratch: nothing of the incoming request (in
//! particular a client-supplied `X-Scope-OrgID`) is ever passed through.
//!
//! With `upstream.coalesce` on (the default), the batches of concurrent
//! pushes for the same tenant travel in one upstream request while that
//! tenant's previous request is still out (see [`coalesce`]); the cost of
//! an upstream request is then paid per busy tenant, not per push.

pub(crate) mod client;
pub mod coalesce;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::answer::Upstream;
use crate::config;
use crate::credentials::{CredentialError, Credentials};
use crate::signals::UpstreamSignals;
use crate::tenant::TenantId;

pub use coalesce::{Coalesce, SplitGuard};

/// Sends tenant pushes to the upstream.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    client: client::Client,
    /// Headers every push carries besides the tenant's and credentials.
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    credentials: Credentials,
    /// Bounds the pushes in flight to the upstream (`upstream.max_connections`).
    slots: Semaphore,
    failures: FailureLog,
    signals: UpstreamSignals,
    coalesce: Option<coalesce::Lanes>,
}

/// Errors building the forwarder from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream.url: {0}")]
    Url(String),
    #[error("upstream.tenant_header: {0}")]
    Header(String),
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upstream TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

/// One tenant's request, as the forwarder sends it: borrowed from what the
/// pipeline produced, so handing it over copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub tenant: &'a TenantId,
    /// The snappy-compressed request.
    pub body: &'a Bytes,
    /// Bytes `body` decompresses to.
    pub decoded_len: usize,
    /// Whether this body may be merged with other pushes' bodies for the
    /// same tenant (the format's requests concatenate).
    pub mergeable: bool,
}

impl Forwarder {
    /// orgsplit's own upstream credentials (also sent by the read proxy).
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    /// Builds the client. Must run inside the Tokio runtime (credential
    /// files are followed by a background task).
    pub fn new(cfg: &config::Upstream, signals: UpstreamSignals) -> Result<Self, ForwardError> {
        let headers = vec![
            (
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("snappy"),
            ),
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
            (
                HeaderName::from_static("x-prometheus-remote-write-version"),
                HeaderValue::from_static("0.1.0"),
            ),
        ];
        Ok(Self {
            inner: Arc::new(Inner {
                client: client::Client::new(cfg)?,
                headers,
                timeout: cfg.timeout,
                credentials: Credentials::start(cfg)?,
                slots: Semaphore::new(cfg.max_connections),
                failures: FailureLog::default(),
                signals,
                coalesce: cfg
                    .coalesce
                    .enabled
                    .then(|| coalesce::Lanes::new(&cfg.coalesce)),
            }),
        })
    }

    /// Marks a push as being split until the guard drops: batches for
    /// tenants wait for it (within the coalescing window), since it may
    /// bring more for the same tenants.
    pub fn splitting(&self) -> SplitGuard {
        SplitGuard::enter(self.inner.coalesce.as_ref().map(|l| l.splitting()))
    }

    /// Sends `push`, merged with other pushes' batches for the same tenant
    /// when coalescing is on and the upstream is busy with that tenant.
    /// Never fails: every way it can end is an [`Upstream`].
    pub async fn push(&self, push: Push<'_>) -> Upstream {
        match &self.inner.coalesce {
            Some(lanes) if push.mergeable => lanes.push(self, push).await,
            _ => self.send(push.tenant, push.body.clone(), 1).await,
        }
    }

    /// One upstream request carrying `batches` tenant batches. Waiting for a
    /// slot counts against the deadline.
    async fn send(&self, tenant: &TenantId, body: Bytes, batches: usize) -> Upstream {
        let inner = &*self.inner;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(inner.timeout, inner.slots.acquire()).await {
            Ok(Ok(_permit)) => {
                let left = inner.timeout.saturating_sub(started.elapsed());
                self.exchange(tenant, body, left).await
            }
            _ => Upstream::Timeout,
        };
        inner.signals.requests(outcome.class()).increment(1);
        inner
            .signals
            .duration
            .record(started.elapsed().as_secs_f64());
        if batches > 1 {
            inner.signals.coalesced.increment(batches as u64);
        }
        if outcome != Upstream::Accepted {
            inner.failures.log(tenant, &outcome);
        }
        outcome
    }

    async fn exchange(&self, tenant: &TenantId, body: Bytes, timeout: Duration) -> Upstream {
        let inner = &*self.inner;
        // Validated tenant IDs are visible ASCII, so this never fails; the
        // bytes are shared, not copied.
        let Ok(tenant_value) = HeaderValue::from_maybe_shared(tenant.shared()) else {
            return Upstream::Status {
                status: 400,
                retry_after: None,
                message: "tenant ID is not a valid header value".into(),
            };
        };
        let auth = inner.credentials.header().map(|a| (*a).clone());
        match inner
            .client
            .post(tenant_value, &inner.headers, auth, body, timeout)
            .await
        {
            Ok(r) if (200..300).contains(&r.status) => Upstream::Accepted,
            Ok(r) => Upstream::Status {
                status: r.status,
                retry_after: r.retry_after,
                message: String::from_utf8_lossy(&r.prefix).into_owned(),
            },
            Err(client::Failure::Timeout) => Upstream::Timeout,
            Err(client::Failure::Unreachable(e)) => Upstream::Unreachable(e),
        }
    }
}

/// Most bytes of an upstream answer that are read (for the error message).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Logs failed pushes: one line per failure, but at most one per tenant
/// every 10 s, so a failing tenant cannot flood the log (the metrics count
/// every failure).
#[derive(Default)]
struct FailureLog {
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(10);
    /// Tenants remembered at most; beyond it the map is cleared.
    const MAX_TENANTS: usize = 10_000;

    fn log(&self, tenant: &TenantId, outcome: &Upstream) {
        let tenant = tenant.as_str();
        let suppressed = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.len() >= Self::MAX_TENANTS {
                last.clear();
            }
            match last.get_mut(tenant) {
                Some((at, n)) if at.elapsed() < Self::EVERY => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    *at = Instant::now();
                    std::mem::take(n)
                }
                None => {
                    last.insert(tenant.to_owned(), (Instant::now(), 0));
                    0
                }
            }
        };
        match outcome {
            Upstream::Status {
                status, message, ..
            } => tracing::warn!(%tenant, status, message = %message.trim(), suppressed,
                "upstream rejected push"),
            Upstream::Timeout => tracing::warn!(%tenant, suppressed, "upstream push timed out"),
            Upstream::Unreachable(e) => {
                tracing::warn!(%tenant, error = %e, suppressed, "upstream unreachable")
            }
            Upstream::Accepted => {}
        }
    }
}
