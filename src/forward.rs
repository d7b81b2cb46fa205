//! One push per tenant, sent in parallel over pooled keep-alive connections.
//!
//! ```text
//!  Outgoing { tenant, snappy body } ─► POST upstream.url ─┐
//!  Outgoing { tenant, snappy body } ─► POST upstream.url ─┼─► Vec<(tenant, answer::Upstream)>
//!  ...                                                   ─┘
//! ```
//!
//! Headers are built here from scratch: nothing of the incoming request (in
//! particular a client-supplied `X-Scope-OrgID`) is ever passed through.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::answer::Upstream;
use crate::config;
use crate::credentials::{CredentialError, Credentials};

/// Sends tenant pushes to the upstream.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    url: reqwest::Url,
    tenant_header: HeaderName,
    timeout: Duration,
    credentials: Credentials,
    /// Bounds the pushes in flight to the upstream (`upstream.max_connections`).
    slots: Arc<Semaphore>,
    failures: Arc<FailureLog>,
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
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, ForwardError> {
    std::fs::read(path).map_err(|source| ForwardError::File {
        path: path.to_owned(),
        source,
    })
}

impl Forwarder {
    /// Builds the client. Must run inside the Tokio runtime (credential
    /// files are followed by a background task).
    pub fn new(cfg: &config::Upstream) -> Result<Self, ForwardError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| ForwardError::Url(e.to_string()))?;
        let tenant_header = HeaderName::from_bytes(cfg.tenant_header.as_bytes())
            .map_err(|e| ForwardError::Header(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(cfg.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            // A redirect would re-send the body somewhere else; treat it as
            // an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orgsplit/", env!("CARGO_PKG_VERSION")));
        let tls = &cfg.tls;
        if let Some(ca) = &tls.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| ForwardError::Tls(format!("{}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(ForwardError::Tls(format!(
                    "{}: no certificate",
                    ca.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ForwardError::Tls(format!("{} / {}: {e}", cert.display(), key.display()))
            })?;
            builder = builder.identity(identity);
        }
        if tls.insecure_skip_verify {
            tracing::warn!(
                upstream = %cfg.url,
                "upstream.tls.insecure_skip_verify is set: the upstream's certificate is NOT \
                 verified, so anyone on the path can read and alter every tenant's data"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(Self {
            client: builder.build()?,
            url,
            tenant_header,
            timeout: cfg.timeout,
            credentials: Credentials::start(cfg)?,
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            failures: Arc::default(),
        })
    }

    /// Pushes `compressed` (a snappy-compressed `WriteRequest`) for
    /// `tenant`. Never fails: every way it can end is an [`Upstream`].
    pub async fn push(&self, tenant: &str, compressed: bytes::Bytes) -> Upstream {
        let started = Instant::now();
        let outcome = match HeaderValue::from_str(tenant) {
            Ok(tenant_value) => {
                // Waiting for a slot counts against the push's deadline.
                match tokio::time::timeout(self.timeout, self.slots.acquire()).await {
                    Ok(Ok(_permit)) => {
                        let left = self.timeout.saturating_sub(started.elapsed());
                        self.send(tenant_value, compressed, left).await
                    }
                    _ => Upstream::Timeout,
                }
            }
            // Tenant IDs are validated long before this; keep the guard anyway.
            Err(_) => Upstream::Status {
                status: 400,
                retry_after: None,
                message: "tenant ID is not a valid header value".into(),
            },
        };
        crate::metrics::upstream(outcome.class(), started.elapsed());
        if outcome != Upstream::Accepted {
            self.failures.log(tenant, &outcome);
        }
        outcome
    }

    async fn send(
        &self,
        tenant: HeaderValue,
        compressed: bytes::Bytes,
        timeout: Duration,
    ) -> Upstream {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(self.tenant_header.clone(), tenant)
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .timeout(timeout)
            .body(compressed);
        if let Some(auth) = self.credentials.header() {
            request = request.header(http::header::AUTHORIZATION, (*auth).clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Upstream::Timeout,
            Err(e) => return Upstream::Unreachable(error_chain(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Read at most a small prefix of the answer, whatever its status or
        // length: an upstream (or something posing as one) must not be able
        // to make orgsplit buffer a large body. A body longer than that is
        // not drained; dropping the response closes its connection instead.
        let prefix = match read_prefix(response, MAX_ANSWER_BYTES).await {
            Ok(p) => p,
            Err(e) if status.is_success() => {
                // The push was accepted; only the (ignored) body failed.
                tracing::debug!(error = %error_chain(&e), "reading an accepted push's answer");
                Vec::new()
            }
            Err(e) if e.is_timeout() => return Upstream::Timeout,
            Err(e) => error_chain(&e).into_bytes(),
        };
        if status.is_success() {
            return Upstream::Accepted;
        }
        Upstream::Status {
            status: status.as_u16(),
            retry_after,
            message: String::from_utf8_lossy(&prefix).into_owned(),
        }
    }
}

/// Most bytes of an upstream answer that are read (for the error message).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Reads at most `limit` bytes of `response`'s body, chunk by chunk, and
/// drops the rest unread.
async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while out.len() < limit {
        match response.chunk().await? {
            Some(chunk) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            None => break,
        }
    }
    Ok(out)
}

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

    fn log(&self, tenant: &str, outcome: &Upstream) {
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

/// The error and its causes on one line ("error sending request: connection
/// refused"), since reqwest's top-level message alone is vague.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
