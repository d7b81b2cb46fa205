//! Every push endpoint ([`crate::formats::ENDPOINTS`]): receive → admit →
//! decode → route → forward → answer, the same for every push kind.
//!
//! ```text
//!  headers ─► Endpoint::negotiate: the PushKind (and a Content-Encoding layer)
//!          ─► authenticate (401) ─► principal mode: one organization? (403)
//!          ─► ready? (503) ─► no kind matched (415) ─► Content-Length (413)
//!  body frames ─► charged to the byte budget as they arrive (503 when full),
//!                 within limits.body_timeout (503), at most max_body_bytes (413)
//!  ─► request slot (503) ─► declared decoded size (413) ─► budget for 3× it (503)
//!  ─► pipeline::run on a blocking thread: decompress (400) → split (400/413)
//!       → authorize each organization against the principal's allowance (403) → compress
//!     (principal mode: pipeline::whole checks and counts, the body goes as it came)
//!  ─► forward::Forwarder::push × tenants ─► answer::combine ─► status to the sender
//! ```
//!
//! Nothing is forwarded until the whole request has been decoded and routed,
//! so a malformed or rejected request reaches no tenant at all.
//!
//! A request takes one of the `limits.max_inflight_requests` slots only once
//! its body has arrived: a sender that opens a request and then stalls holds
//! nothing but its connection and the bytes it sent (charged to the budget),
//! and is cut off at `limits.body_timeout`.
//!
//! By job: this file orchestrates (negotiate, authenticate, admit, run the
//! pipeline, forward, answer); `intake` receives the body; `refusal`
//! turns each way a push fails into what the sender hears.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

pub mod grpc;
mod intake;
mod refusal;

use intake::{receive, undo_content_encoding, ROOM_WAIT};
use refusal::{decode_error, reject, route_error, too_large_body, Refusal};

use crate::activity::TenantPush;
use crate::answer::{self, Answer, Written};
use crate::app::App;
use crate::auth::{PeerCert, Principal};
use crate::formats::kind::ReplyTo;
use crate::formats::{Endpoint, Negotiated, PushKind, RequestHeaders, Unsupported};
use crate::forward::{Push, Sent};
use crate::limits::Charge;
use crate::pipeline::{self, Output, ProcessError};

/// Requests whose decoded body is at least this large are split on a
/// blocking thread, so they cannot delay other requests' I/O, `/readyz` or
/// `/metrics` on the same runtime worker; smaller ones take well under the
/// ~100 µs between awaits that async code should keep to.
const BLOCKING_BYTES: usize = 32 << 10;

/// The handler of every push endpoint ([`crate::formats::ENDPOINTS`]).
pub async fn serve(
    endpoint: &'static Endpoint,
    State(app): State<Arc<App>>,
    peer: Option<Extension<Arc<PeerCert>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request = RequestHeaders {
        content_type: headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
        content_encoding: headers
            .get(header::CONTENT_ENCODING)
            .map(HeaderValue::as_bytes),
        remote_write_version: headers.contains_key("x-prometheus-remote-write-version"),
    };
    let endpoint = endpoint.serving(&request);
    let signal = endpoint.signal;
    let content_type = request.content_type;
    let negotiated = (endpoint.negotiate)(&request);
    // A 2.0 sender is told what was written whatever the status: its
    // Content-Type says it is one, whatever else was wrong (negotiated
    // again without the encoding only when negotiation failed).
    let reports_written = match &negotiated {
        Ok(n) => n.kind.reports_written,
        Err(_) => (endpoint.negotiate)(&RequestHeaders {
            content_encoding: None,
            ..request
        })
        .is_ok_and(|n| n.kind.reports_written),
    };
    let metrics = app.metrics().signal(signal);
    // A guard, so the gauge is right even when the sender hangs up and the
    // handler is dropped mid-way.
    let _inflight = metrics.inflight();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let peer = peer.as_ref().map(|Extension(p)| &**p);
    let principal = match app.auth().authenticate(authorization, peer).await {
        Ok(p) => p,
        Err(_) => {
            metrics.rejected("unauthorized");
            metrics.answered(401, started.elapsed());
            return answer::unauthorized(app.auth().challenges());
        }
    };
    let (answer, written) =
        match handle(&app, endpoint, negotiated, &principal, &headers, body).await {
            Ok(done) => done,
            Err(refusal) => (refusal.answer(&app, &metrics), Written::default()),
        };
    let mut response = match endpoint.reply {
        Some(reply) => {
            let (rejected, why) = answer.dropped.clone().unwrap_or_default();
            let replied = reply(&ReplyTo {
                status: answer.status.as_u16(),
                message: if answer.status.is_success() {
                    &why
                } else {
                    &answer.body
                },
                rejected,
                content_type,
            });
            let mut response = Response::new(Body::from(replied.body));
            *response.status_mut() =
                StatusCode::from_u16(replied.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(replied.content_type),
            );
            if let Some(secs) = answer.retry_after {
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        None => answer.into_http(),
    };
    metrics.answered(response.status().as_u16(), started.elapsed());
    if reports_written {
        let h = response.headers_mut();
        for (name, n) in Written::HEADERS.iter().zip(written.values()) {
            h.insert(*name, HeaderValue::from(n));
        }
    }
    response
}

async fn handle(
    app: &Arc<App>,
    endpoint: &'static Endpoint,
    negotiated: Result<Negotiated, Unsupported>,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Answer, Written), Refusal> {
    let limits = app.limits();
    if app.forwarder_for(endpoint.destination).is_none() {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "not_enabled",
            format!(
                "pushes to {} are not enabled here: set {}",
                endpoint.paths[0],
                endpoint.destination.setting()
            ),
        ));
    }
    if app.principal_mode() && principal.allowance.single().is_none() {
        return Err(reject(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "routing.mode is principal, but the credential of {:?} is not bound to exactly one organization (it allows {})",
                &*principal.name, principal.allowance
            ),
        ));
    }
    if !app.table().is_synced() {
        // Routing now would send every series to the unmapped policy.
        return Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "namespace table not loaded yet; retry",
        )
        .retry_after(1));
    }
    let Negotiated { kind, layer } =
        negotiated.map_err(|u| reject(StatusCode::UNSUPPORTED_MEDIA_TYPE, u.reason, u.message))?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return Err(too_large_body(limits.max_body_bytes));
    }

    let mut charge = app.budget().charge();
    let compressed = receive(app, body, &mut charge).await?;
    if compressed.is_empty() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "empty",
            "empty request body",
        ));
    }
    let compressed = match layer {
        Some(codec) => undo_content_encoding(app, codec, compressed, &mut charge).await?,
        None => compressed,
    };

    // Admission: bounded work in flight, the rest is told to come back.
    let Some(_request_permit) = app.request_slot() else {
        return Err(Refusal::Overloaded("requests"));
    };
    let via = Via {
        principal,
        endpoint,
        kind,
    };
    forward(app, via, compressed, charge).await
}

/// Who sent a push, what it is, and how it came.
#[derive(Clone, Copy)]
struct Via<'a> {
    principal: &'a Principal,
    endpoint: &'static Endpoint,
    kind: &'static PushKind,
}

/// Runs `pipeline` on a received body and forwards what it produced: the
/// part of a push that is the same for every format.
async fn forward(
    app: &Arc<App>,
    via: Via<'_>,
    compressed: Bytes,
    mut charge: Charge,
) -> Result<(Answer, Written), Refusal> {
    let Via {
        principal,
        endpoint,
        kind,
    } = via;
    let metrics = app.metrics().signal(endpoint.signal);
    // `handle` checked that the destination has one.
    let Some(forwarder) = app.forwarder_for(endpoint.destination) else {
        return Err(Refusal::Overloaded("requests"));
    };
    let size = app
        .pipeline(kind)
        .measure(&compressed)
        .map_err(decode_error)?;
    // The decompressed body, the tenant batches built from it and their
    // compressed bodies: at most about three times the decoded size.
    charge.expect(compressed.len().saturating_add(size.saturating_mul(3)));
    if !charge.grow(size.saturating_mul(3), true, ROOM_WAIT).await {
        return Err(Refusal::Overloaded("bytes"));
    }

    let splitting = forwarder.splitting();
    let Output { outgoing, stats } = match split(app, principal, kind, compressed, size).await {
        Ok(done) => done,
        Err(ProcessError::Decode(e)) => return Err(decode_error(e)),
        Err(ProcessError::Route(e)) => return Err(route_error(e)),
    };
    drop(splitting);
    metrics.split(&stats);
    // From here on the request holds only its tenants' bodies
    // (and, while a merged request is built, a copy of them).
    charge.shrink_to(
        pipeline::held_bytes(&outgoing)
            * if kind.concatenates || kind.merge.is_some() {
                2
            } else {
                1
            },
    );

    let pushes: Vec<Push<'_>> = outgoing
        .iter()
        .map(|o| Push {
            tenant: &o.tenant,
            body: &o.body,
            decoded_len: o.decoded_len,
            kind,
            counts: &o.counts,
            encoded: o.encoded,
        })
        .collect();
    let outcomes = forwarder.push_all(&pushes).await;
    drop(pushes);
    app.activity().request(
        endpoint.signal,
        &stats,
        outgoing
            .iter()
            .zip(&outcomes)
            .map(|(out, (sent, took))| TenantPush {
                tenant: out.tenant.as_str(),
                counts: &out.counts,
                bytes: out.decoded_len,
                // A 2xx is shown as its class: which one it was is not kept.
                status: match &sent.outcome {
                    answer::TenantOutcome::Status { status, .. } => Some(*status),
                    _ => None,
                },
                class: sent.outcome.class(),
                took: *took,
            }),
    );

    let mut results = Vec::with_capacity(outcomes.len());
    // What the accepted tenant pushes wrote: the upstream's own count when
    // it gives one, else everything the push carried (a 1.0 upstream's 2xx;
    // a 2.0 upstream that gives none was already counted as writing nothing).
    let mut written = Written::default();
    for (
        out,
        (
            Sent {
                outcome,
                written: said,
            },
            _,
        ),
    ) in outgoing.iter().zip(outcomes)
    {
        if outcome == answer::TenantOutcome::Accepted {
            written.add(&said.unwrap_or_else(|| Written::of(&out.counts)));
            metrics.forwarded(&out.counts);
            if app.per_tenant_metrics() {
                metrics.forwarded_tenant(&out.tenant, &out.counts);
            }
        }
        results.push((out.tenant.as_str(), outcome));
    }
    let mut answer = answer::combine(&results);
    let dropped = stats.dropped_samples + stats.forbidden_samples;
    if dropped > 0 {
        answer.dropped = Some((dropped, dropped_why(&stats)));
    }
    Ok((answer, written))
}

/// Why items of an accepted push were dropped, in words.
fn dropped_why(stats: &crate::signals::SplitCounts) -> String {
    let mut why = Vec::new();
    if stats.dropped_samples > 0 {
        why.push(format!(
            "{} items had no organization and routing.unmapped is drop",
            stats.dropped_samples
        ));
    }
    if stats.forbidden > 0 {
        why.push(format!(
            "{} items belong to organizations outside the sender's allowance and auth.outside_allowance is drop",
            stats.forbidden_samples
        ));
    }
    why.join("; ")
}

/// Runs the CPU part of the push, on a blocking thread when it is large:
/// split into the principal's organizations, or (principal mode) checked
/// and sent whole to its one tenant.
async fn split(
    app: &Arc<App>,
    principal: &Principal,
    kind: &'static PushKind,
    compressed: Bytes,
    size: usize,
) -> Result<Output, ProcessError> {
    let table = app.table().snapshot();
    let whole = app
        .principal_mode()
        .then(|| principal.allowance.single().cloned())
        .flatten();
    let allowance = principal.allowance.clone();
    let run = move |app: &App| match &whole {
        Some(tenant) => app.pipeline(kind).whole(compressed, size, tenant),
        None => app
            .pipeline(kind)
            .run(&compressed, size, &table, &allowance),
    };
    if size < BLOCKING_BYTES {
        return run(app);
    }
    // At most as many splits at once as there are cores: the rest wait here
    // (holding their admitted budget) instead of crowding the blocking pool.
    let _cpu = app.core().await;
    let app = app.clone();
    match tokio::task::spawn_blocking(move || run(&app)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
