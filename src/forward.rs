//! One snappy-compressed push per tenant, sent in parallel over pooled
//! keep-alive connections.
//!
//! ```text
//!  Batch { tenant, body } ─► snappy ─► POST upstream.url ─┐
//!  Batch { tenant, body } ─► snappy ─► POST upstream.url ─┼─► Vec<(tenant, answer::Upstream)>
//!  ...                                                   ─┘
//! ```
//!
//! Headers are built here from scratch: nothing of the incoming request (in
//! particular a client-supplied `X-Scope-OrgID`) is ever passed through.

use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};

use crate::answer::Upstream;
use crate::config;

/// Sends tenant pushes to the upstream.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    url: reqwest::Url,
    tenant_header: HeaderName,
    timeout: Duration,
}

/// Errors building the forwarder from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream.url: {0}")]
    Url(String),
    #[error("upstream.tenant_header: {0}")]
    Header(String),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Forwarder {
    pub fn new(cfg: &config::Upstream) -> Result<Self, ForwardError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| ForwardError::Url(e.to_string()))?;
        let tenant_header = HeaderName::from_bytes(cfg.tenant_header.as_bytes())
            .map_err(|e| ForwardError::Header(e.to_string()))?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            // A redirect would re-send the body somewhere else; treat it as
            // an error instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orgsplit/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url,
            tenant_header,
            timeout: cfg.timeout,
        })
    }

    /// Compresses `body` (an encoded `WriteRequest`) and pushes it for
    /// `tenant`. Never fails: every way it can end is an [`Upstream`].
    pub async fn push(&self, tenant: &str, body: &[u8]) -> Upstream {
        let started = Instant::now();
        let outcome = match HeaderValue::from_str(tenant) {
            Ok(tenant_value) => {
                let compressed = match snap::raw::Encoder::new().compress_vec(body) {
                    Ok(c) => c,
                    Err(e) => return Upstream::Unreachable(format!("snappy: {e}")),
                };
                self.send(tenant_value, compressed).await
            }
            // Tenant IDs are validated long before this; keep the guard anyway.
            Err(_) => Upstream::Status {
                status: 400,
                retry_after: None,
                message: "tenant ID is not a valid header value".into(),
            },
        };
        crate::metrics::upstream(outcome.class(), started.elapsed());
        outcome
    }

    async fn send(&self, tenant: HeaderValue, compressed: Vec<u8>) -> Upstream {
        let request = self
            .client
            .post(self.url.clone())
            .header(self.tenant_header.clone(), tenant)
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .timeout(self.timeout)
            .body(compressed);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Upstream::Timeout,
            Err(e) => return Upstream::Unreachable(error_chain(&e)),
        };
        let status = response.status();
        if status.is_success() {
            // Drain the (normally empty) body so the connection is reused.
            let _ = response.bytes().await;
            return Upstream::Accepted;
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let message = match response.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned(),
            Err(e) if e.is_timeout() => return Upstream::Timeout,
            Err(e) => error_chain(&e),
        };
        Upstream::Status {
            status: status.as_u16(),
            retry_after,
            message,
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
