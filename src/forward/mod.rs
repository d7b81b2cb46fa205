//! Tenant requests sent upstream in parallel over pooled keep-alive
//! connections (HTTP/2 with TLS upstreams that offer it).
//!
//! ```text
//!  Push { kind, tenant, body } ─► coalesce (lane per kind and tenant) ─► client: POST upstream.url ─┐
//!  Push { kind, tenant, body } ─►   idle: at once; busy: merged with others' batches              ─┼─► TenantOutcome per push
//!  ...                                                                                      ─┘
//! ```
//!
//! Transport only: what a body is comes from its [`PushKind`] (headers,
//! whether it merges, its downgrade); no format is named here. Headers are
//! built from scratch: nothing of the incoming request (in particular a
//! client-supplied `X-Scope-OrgID`) is ever passed through.
//!
//! With `upstream.coalesce` on (the default), the batches of concurrent
//! pushes for the same tenant travel in one upstream request while that
//! tenant's previous request is still out (see [`coalesce`]); the cost of
//! an upstream request is then paid per busy tenant, not per push.

pub(crate) mod client;
pub mod coalesce;
mod h1;
mod reply;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::answer::{TenantOutcome, Written};
use crate::config::{self, Protocol};
use crate::credentials::{CredentialError, Credentials};
use crate::formats::PushKind;
use crate::pool::BufferPool;
use crate::signals::{Counts, UpstreamSignals};
use crate::tenant::TenantId;

pub use coalesce::{Coalesce, SplitGuard};

/// Sends tenant pushes to the upstream.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    client: client::Client,
    /// The headers of each push kind's requests besides the tenant's and
    /// credentials ([`PushKind::outgoing_headers`]), by [`PushKind::id`].
    headers: Vec<Vec<(HeaderName, HeaderValue)>>,
    /// `upstream.protocol`: whether kinds that have a downgrade are sent as
    /// they are, converted, or (auto) converted once the upstream refused them.
    protocol: Protocol,
    /// With `protocol: auto`, such pushes are converted until this instant
    /// (milliseconds since `epoch`), after the upstream refused them.
    v1_until: std::sync::atomic::AtomicU64,
    epoch: Instant,
    timeout: Duration,
    credentials: Credentials,
    /// Bounds the pushes in flight to the upstream (`upstream.max_connections`).
    slots: Semaphore,
    failures: FailureLog,
    signals: UpstreamSignals,
    coalesce: Option<coalesce::Lanes>,
    /// Buffers for the bodies compressed here ([`PushKind::merge`]).
    pool: Arc<BufferPool>,
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
    /// The request body: in its kind's codec when `encoded`, else decoded
    /// (the rebuilt bodies of a kind with [`PushKind::merge`]).
    pub body: &'a Bytes,
    /// Bytes `body` decompresses to.
    pub decoded_len: usize,
    /// What the body is: its headers, whether it may be merged with other
    /// pushes' bodies for the same tenant, its downgrade.
    pub kind: &'static PushKind,
    /// What the body carries: a merged request's written counts are
    /// shared out by them.
    pub counts: &'a Counts,
    pub encoded: bool,
}

/// How a tenant push ended, and what the upstream said it wrote (2.0
/// upstreams), if it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub outcome: TenantOutcome,
    pub written: Option<Written>,
}

/// How long a 2.0 refusal is remembered (`upstream.protocol: auto`) before
/// 2.0 is tried again.
const REMEMBER_V1: Duration = Duration::from_secs(300);

impl Forwarder {
    /// The deadline of one upstream request (`upstream.timeout`).
    /// Buffers for bodies made here (merged, compressed).
    pub(crate) fn pool(&self) -> &Arc<BufferPool> {
        &self.inner.pool
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// orgsplit's own upstream credentials (also sent by the read proxy).
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    /// Builds the client for pushes of `kinds` (every kind it may be
    /// handed, by [`PushKind::id`]). Must run inside the Tokio runtime
    /// (credential files are followed by a background task).
    pub fn new(
        cfg: &config::Upstream,
        signals: UpstreamSignals,
        kinds: &[&'static PushKind],
        pool: Arc<BufferPool>,
    ) -> Result<Self, ForwardError> {
        let mut headers = vec![Vec::new(); kinds.iter().map(|k| k.id + 1).max().unwrap_or(0)];
        for kind in kinds {
            headers[kind.id] = kind
                .outgoing_headers
                .iter()
                .map(|(name, value)| {
                    (
                        HeaderName::from_static(name),
                        HeaderValue::from_static(value),
                    )
                })
                .collect();
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: client::Client::new(cfg)?,
                headers,
                protocol: cfg.protocol,
                v1_until: std::sync::atomic::AtomicU64::new(0),
                epoch: Instant::now(),
                timeout: cfg.timeout,
                credentials: Credentials::start(cfg)?,
                slots: Semaphore::new(cfg.max_connections),
                failures: FailureLog::default(),
                signals,
                coalesce: cfg
                    .coalesce
                    .enabled
                    .then(|| coalesce::Lanes::new(&cfg.coalesce)),
                pool,
            }),
        })
    }

    /// Marks a push as being split until the guard drops: batches for
    /// tenants wait for it (within the coalescing window), since it may
    /// bring more for the same tenants.
    pub fn splitting(&self) -> SplitGuard {
        SplitGuard::enter(self.inner.coalesce.as_ref().map(|l| l.splitting()))
    }

    /// Sends the tenant requests of one push and returns how each ended,
    /// in order. Batches of a kind that concatenates are handed to the
    /// coalescer all at once (merged with other pushes' batches for the same
    /// kind and tenant while the upstream is busy with it); the rest go each
    /// on its own, at most `MAX_PARALLEL_PUSHES` at once, so a request
    /// split into thousands of tenants does not hold thousands of upstream
    /// requests' state. Never fails: every way a tenant request can end is
    /// an [`TenantOutcome`]. With each, how long it took from here (a
    /// merged request's time, for a coalesced batch).
    pub async fn push_all(&self, pushes: &[Push<'_>]) -> Vec<(Sent, Duration)> {
        use futures::StreamExt;
        let started = Instant::now();
        if let Some(lanes) = &self.inner.coalesce {
            // A sender's own body that its kind would merge decoded (a
            // push that went whole) goes on its own, as it is.
            if pushes
                .iter()
                .all(|p| joinable(p.kind) && !(p.kind.sent_decoded() && p.encoded))
            {
                let sent = lanes.push_all(self, pushes).await;
                let took = started.elapsed();
                return sent.into_iter().map(|sent| (sent, took)).collect();
            }
        }
        // By index: a closure taking `&Push` would make the future's
        // lifetime higher-ranked, which the handler's `Send` bound rejects.
        futures::stream::iter(0..pushes.len())
            .map(|i| async move {
                let p = pushes[i];
                let sent = self
                    .deliver(p.kind, p.tenant, p.body.clone(), p.encoded, 1)
                    .await;
                (sent, started.elapsed())
            })
            .buffered(MAX_PARALLEL_PUSHES)
            .collect()
            .await
    }

    /// Sends one upstream request carrying `batches` tenant batches of
    /// `kind` (one, or several merged): converted if the upstream needs
    /// it, compressed unless `encoded` (see [`Push::body`]).
    async fn deliver(
        &self,
        kind: &PushKind,
        tenant: &TenantId,
        body: Bytes,
        encoded: bool,
        batches: usize,
    ) -> Sent {
        if kind.downgrade.is_some() {
            return self
                .push_downgradable(kind, tenant, body, encoded, batches)
                .await;
        }
        let body = self.encoded(kind, body, encoded).await;
        let (outcome, written) = self.send_as(kind, tenant, body, batches).await;
        Sent {
            outcome,
            written: written.filter(|_| kind.reports_written),
        }
    }

    /// `body` in its kind's codec: compressed here when the kind's bodies
    /// come decoded ([`PushKind::merge`]), into a pooled buffer (a fresh
    /// allocation per request would be mapped and unmapped each time);
    /// large ones off the runtime.
    async fn encoded(&self, kind: &PushKind, body: Bytes, encoded: bool) -> Bytes {
        if encoded || !kind.sent_decoded() {
            return body;
        }
        let codec = kind.codec;
        let pool = self.inner.pool.clone();
        let small = body_is_small(&body);
        let run = move || crate::codec::compress(codec, &body, &pool).0;
        if small {
            return run();
        }
        match tokio::task::spawn_blocking(run).await {
            Ok(body) => body,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// A push of a kind that has a downgrade, sent as `upstream.protocol`
    /// says: as it is (`v2`), converted (`v1`), or (auto) as it is and again
    /// converted if the upstream did not take it.
    async fn push_downgradable(
        &self,
        kind: &PushKind,
        tenant: &TenantId,
        body: Bytes,
        encoded: bool,
        batches: usize,
    ) -> Sent {
        let inner = &*self.inner;
        let convert = match inner.protocol {
            Protocol::V1 => true,
            Protocol::V2 => false,
            Protocol::Auto => self.remembers_v1(),
        };
        if !convert {
            let sent = self.encoded(kind, body.clone(), encoded).await;
            let (outcome, written) = self.send_as(kind, tenant, sent, batches).await;
            // A receiver that does not look at the Content-Type reads a 2.0
            // body as an empty 1.0 request and says 2xx: without the
            // written-count headers, nothing is known to have been written.
            let unconfirmed =
                outcome == TenantOutcome::Accepted && kind.reports_written && written.is_none();
            let refused =
                unconfirmed || matches!(outcome, TenantOutcome::Status { status: 415, .. });
            if inner.protocol != Protocol::Auto || !refused {
                if unconfirmed {
                    return self.unconfirmed(outcome);
                }
                return Sent { outcome, written };
            }
            self.remember_v1(&outcome);
        }
        let Some(downgrade) = &kind.downgrade else {
            unreachable!("push_downgradable is called for kinds with a downgrade")
        };
        match self.downgrade(kind, body, encoded, downgrade.convert).await {
            Ok(body) => {
                let (outcome, written) = self.send_as(downgrade.to, tenant, body, batches).await;
                Sent { outcome, written }
            }
            Err(e) => Sent {
                outcome: TenantOutcome::Status {
                    status: 400,
                    retry_after: None,
                    message: format!("converting the push to {} failed: {e}", downgrade.to.name),
                },
                written: None,
            },
        }
    }

    /// A 2.0 push sent as 2.0 (`upstream.protocol: v2`) that the upstream
    /// answered 2xx without the written-count headers. The 2.0
    /// specification makes those headers the receiver's proof of what it
    /// wrote, and a 1.0-only receiver answers a 2.0 body 2xx having read
    /// it as empty: so this tenant's part counts as not written (zeros),
    /// which the sender's own check sees, and is counted here.
    fn unconfirmed(&self, outcome: TenantOutcome) -> Sent {
        self.inner.signals.unconfirmed.increment(1);
        static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if crate::telemetry::rate_limit(&LAST, Duration::from_secs(60)) {
            tracing::warn!(
                "upstream accepted a remote write 2.0 push without saying what it wrote; \
                 reported to the sender as not written (a 1.0-only upstream stores nothing of a 2.0 body: \
                 use upstream.protocol: auto or v1)"
            );
        }
        Sent {
            outcome,
            written: Some(Written::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn remembers_v1(&self) -> bool {
        self.inner
            .v1_until
            .load(std::sync::atomic::Ordering::Relaxed)
            > self.now_ms()
    }

    fn remember_v1(&self, outcome: &TenantOutcome) {
        let until = self.now_ms() + REMEMBER_V1.as_millis() as u64;
        let before = self
            .inner
            .v1_until
            .swap(until, std::sync::atomic::Ordering::Relaxed);
        if before <= self.now_ms() {
            let why = match outcome {
                TenantOutcome::Accepted => {
                    "accepted it without the written-count headers".to_string()
                }
                other => format!("answered {}", other.class()),
            };
            tracing::warn!(
                upstream_answer = %why,
                remember = ?REMEMBER_V1,
                "upstream does not take remote write 2.0; sending 2.0 pushes as 1.0 (upstream.protocol: auto)"
            );
        }
    }

    /// Converts a snappy body with its kind's downgrade into a snappy body
    /// of the other kind, counting what that one cannot carry. Large bodies
    /// are converted off the runtime.
    async fn downgrade(
        &self,
        kind: &PushKind,
        body: Bytes,
        encoded: bool,
        convert: crate::formats::kind::Convert,
    ) -> Result<Bytes, String> {
        let signals = self.inner.signals.clone();
        let sent_decoded = kind.sent_decoded() && !encoded;
        // Converting is heavier than compressing: off the runtime sooner.
        let small = body.len() < 64 << 10;
        let run = move || {
            let decoded = if sent_decoded {
                std::borrow::Cow::Borrowed(&body[..])
            } else {
                let decoded = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .map_err(|e| e.to_string())?;
                std::borrow::Cow::Owned(decoded)
            };
            let (converted, lost) = convert(&decoded)?;
            signals.downgraded.increment(1);
            for (counter, n) in signals.downgrade_lost.iter().zip(lost) {
                counter.increment(n);
            }
            snap::raw::Encoder::new()
                .compress_vec(&converted)
                .map(Bytes::from)
                .map_err(|e| e.to_string())
        };
        if small {
            return run();
        }
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| e.to_string())?
    }

    /// One upstream request of `kind` carrying `batches` tenant batches.
    /// Waiting for a slot counts against the deadline.
    async fn send_as(
        &self,
        kind: &PushKind,
        tenant: &TenantId,
        body: Bytes,
        batches: usize,
    ) -> (TenantOutcome, Option<Written>) {
        let inner = &*self.inner;
        let started = Instant::now();
        // One deadline for the slot and the exchange.
        let bounded = async {
            let _permit = inner.slots.acquire().await.ok()?;
            Some(self.exchange(kind, tenant, body).await)
        };
        let (outcome, written) = match tokio::time::timeout(inner.timeout, bounded).await {
            Ok(Some(sent)) => sent,
            _ => (TenantOutcome::Timeout, None),
        };
        inner.signals.requests(outcome.class()).increment(1);
        inner
            .signals
            .duration
            .record(started.elapsed().as_secs_f64());
        if batches > 1 {
            inner.signals.coalesced.increment(batches as u64);
        }
        if outcome != TenantOutcome::Accepted {
            inner.failures.log(tenant, &outcome);
        }
        (outcome, written)
    }

    async fn exchange(
        &self,
        kind: &PushKind,
        tenant: &TenantId,
        body: Bytes,
    ) -> (TenantOutcome, Option<Written>) {
        let inner = &*self.inner;
        // Validated tenant IDs are visible ASCII, so this never fails; the
        // bytes are shared, not copied.
        let Ok(tenant_value) = HeaderValue::from_maybe_shared(tenant.shared()) else {
            let refused = TenantOutcome::Status {
                status: 400,
                retry_after: None,
                message: "tenant ID is not a valid header value".into(),
            };
            return (refused, None);
        };
        let auth = inner.credentials.header().map(|a| (*a).clone());
        let headers = &inner.headers[kind.id];
        match inner.client.post(tenant_value, headers, auth, body).await {
            Ok(r) if (200..300).contains(&r.status) => (TenantOutcome::Accepted, r.written),
            Ok(r) => {
                let refused = TenantOutcome::Status {
                    status: r.status,
                    retry_after: r.retry_after,
                    message: String::from_utf8_lossy(&r.prefix).into_owned(),
                };
                (refused, r.written)
            }
            Err(reply::ExchangeFailure::Unreachable(e)) => (TenantOutcome::Unreachable(e), None),
        }
    }
}

/// Whether the bodies of `kind` may be merged: the kind has a merge of its
/// own (remote write 2.0), or its bodies concatenate and their codec joins
/// without recompressing (snappy, or none).
fn joinable(kind: &PushKind) -> bool {
    kind.merge.is_some() || (kind.concatenates && crate::codec::joins(kind.codec))
}

/// Whether codec work on `body` is done on the runtime (cheaper than a
/// hand-off to the blocking pool) rather than beside it.
fn body_is_small(body: &Bytes) -> bool {
    // Snappy takes well under a millisecond for this much; the hand-off
    // costs two context switches (which doubled the server's when merged
    // 2.0 bodies above 64 KiB went through it).
    body.len() < 256 << 10
}

/// Tenant requests (or, coalesced, batches) of one push in flight at once.
pub(crate) const MAX_PARALLEL_PUSHES: usize = 256;

pub use reply::MAX_ANSWER_BYTES;

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

    fn log(&self, tenant: &TenantId, outcome: &TenantOutcome) {
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
            TenantOutcome::Status {
                status, message, ..
            } => tracing::warn!(%tenant, status, message = %message.trim(), suppressed,
                "upstream rejected push"),
            TenantOutcome::Timeout => {
                tracing::warn!(%tenant, suppressed, "upstream push timed out")
            }
            TenantOutcome::Unreachable(e) => {
                tracing::warn!(%tenant, error = %e, suppressed, "upstream unreachable")
            }
            TenantOutcome::Accepted => {}
        }
    }
}
