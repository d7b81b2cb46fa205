//! `POST /api/v1/push`: limits → decode → route → forward → answer.
//!
//! ```text
//!  body ─► size limit (413) ─► snappy declared length (413) ─► decompress (400)
//!       ─► route::Router::split (400 / 413) ─► forward::Forwarder::push × tenants
//!       ─► answer::combine ─► status to the sender
//! ```
//!
//! Nothing is forwarded until the whole request has been decoded and routed,
//! so a malformed or rejected request reaches no tenant at all.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::answer::{self, Answer};
use crate::pipeline::{self, DecodeError};
use crate::route::RouteError;
use crate::server::App;
use crate::wire::{Item, WireError};

/// The push handler.
pub async fn push(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // A guard, so the gauge is right even when the sender hangs up and the
    // handler is dropped mid-way.
    let _inflight = crate::metrics::Inflight::enter();
    let answer = handle(&app, &headers, body).await;
    crate::metrics::answered(answer.status.as_u16(), started.elapsed());
    respond(answer)
}

fn respond(answer: Answer) -> Response {
    let mut response = (answer.status, answer.body).into_response();
    if let Some(secs) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn reject(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Answer {
    crate::metrics::rejected(reason);
    let mut body = message.into();
    body.push('\n');
    Answer::new(status, body)
}

async fn handle(app: &App, headers: &HeaderMap, body: Body) -> Answer {
    let limits = &app.limits;
    // Admission: bounded work in flight, the rest is told to come back.
    let Ok(_request_permit) = app.inflight_requests.try_acquire() else {
        return overloaded(app, "requests");
    };
    if !app.table.is_synced() {
        // Routing now would send every series to the unmapped policy.
        let mut answer = reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "namespace table not loaded yet; retry",
        );
        answer.retry_after = Some(1);
        return answer;
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"snappy") {
            return reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "encoding",
                format!("unsupported Content-Encoding {encoding:?}: remote write bodies are snappy-compressed"),
            );
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        if ct
            .to_str()
            .is_ok_and(|ct| ct.contains("io.prometheus.write.v2"))
        {
            return reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                "remote write 2.0 is not supported; send prometheus.WriteRequest (remote write 1.0)",
            );
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return too_large_body(limits.max_body_bytes);
    }
    let compressed = match axum::body::to_bytes(body, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large_body(limits.max_body_bytes),
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "read",
                format!("reading the request body failed: {e}"),
            )
        }
    };
    if compressed.is_empty() {
        return reject(StatusCode::BAD_REQUEST, "empty", "empty request body");
    }
    let size = match pipeline::decoded_len(&compressed, limits.max_decoded_bytes) {
        Ok(n) => n,
        Err(e) => return decode_error(e),
    };
    // The decompressed body plus the tenant batches built from it.
    let kib = u32::try_from((2 * size).div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(_bytes_permit) = app.inflight_kib.try_acquire_many(kib) else {
        return overloaded(app, "bytes");
    };
    let decoded = match pipeline::decompress(&compressed, size, &app.pool) {
        Ok(d) => d,
        Err(e) => return decode_error(e),
    };
    drop(compressed);

    let table = app.table.snapshot();
    let split = app
        .router
        .split_with(&decoded, &table, &app.families, &app.pool);
    let outgoing = match split {
        Ok(split) => {
            crate::metrics::split(&split.stats);
            pipeline::compress(split.batches, &app.pool)
        }
        Err(e) => {
            app.pool.give(decoded);
            return route_error(e);
        }
    };
    app.pool.give(decoded);

    let pushes = outgoing
        .iter()
        .map(|o| app.forwarder.push(&o.tenant, o.body.clone()));
    let outcomes = futures::future::join_all(pushes).await;

    let mut results = Vec::with_capacity(outcomes.len());
    for (out, outcome) in outgoing.iter().zip(outcomes) {
        if outcome == answer::Upstream::Accepted {
            crate::metrics::forwarded(out);
            if app.per_tenant_metrics {
                crate::metrics::forwarded_tenant(out);
            }
        }
        results.push((out.tenant.as_str(), outcome));
    }
    answer::combine(&results)
}

/// The answer when too much is in flight: retryable, with `Retry-After`.
fn overloaded(app: &App, what: &'static str) -> Answer {
    crate::metrics::overloaded(what);
    let status =
        StatusCode::from_u16(app.limits.overload_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Answer {
        status,
        retry_after: Some(1),
        body: format!("orgsplit is overloaded (too many {what} in flight); retry later\n"),
    }
}

fn too_large_body(limit: usize) -> Answer {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than limits.max_body_bytes ({limit})"),
    )
}

fn decode_error(e: DecodeError) -> Answer {
    let (status, reason) = match e {
        DecodeError::NotSnappy(_) => (StatusCode::BAD_REQUEST, "not_snappy"),
        DecodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "decoded_too_large"),
        DecodeError::Empty => (StatusCode::BAD_REQUEST, "empty"),
    };
    reject(status, reason, e.to_string())
}

fn route_error(e: RouteError) -> Answer {
    let (status, reason) = match &e {
        RouteError::Wire(WireError::TooMany { item, limit }) => {
            let message = format!(
                "request has more than {limit} {} ({})",
                item.noun(),
                crate::config::Limits::key(*item)
            );
            return reject(StatusCode::PAYLOAD_TOO_LARGE, too_many(*item), message);
        }
        RouteError::Wire(_) => (StatusCode::BAD_REQUEST, "malformed"),
        RouteError::Rejected { .. } => (StatusCode::BAD_REQUEST, "unmapped"),
        RouteError::TooManyTenants(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_tenants"),
    };
    reject(status, reason, e.to_string())
}

/// The `reason` label of a request refused for too many of `item`.
fn too_many(item: Item) -> &'static str {
    match item {
        Item::Series => "too_many_series",
        Item::Metadata => "too_many_metadata",
        Item::Samples => "too_many_samples",
        Item::Exemplars => "too_many_exemplars",
        Item::Buckets => "too_many_buckets",
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
