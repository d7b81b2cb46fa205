//! A push refused before anything was forwarded, and the status, reason
//! label and message the sender hears for each way a push can fail.
//!
//! ```text
//!  DecodeError / RouteError / body intake / admission ─► Refusal ─► Answer (+ counted by reason)
//! ```

use axum::http::StatusCode;

use crate::answer::Answer;
use crate::app::App;
use crate::metrics::Metrics;
use crate::pipeline::DecodeError;
use crate::route::RouteError;
use crate::wire::{LimitedItem, WireError};

/// A push refused before anything was forwarded.
pub(super) enum Refusal {
    /// A 4xx or 503 with a reason label for `orgsplit_requests_rejected_total`.
    Rejected {
        status: StatusCode,
        reason: &'static str,
        message: String,
        retry_after: Option<u64>,
    },
    /// Too many requests or bytes in flight.
    Overloaded(&'static str),
}

impl Refusal {
    pub(super) fn answer(self, app: &App, metrics: &Metrics) -> Answer {
        match self {
            Refusal::Rejected {
                status,
                reason,
                mut message,
                retry_after,
            } => {
                metrics.rejected(reason);
                message.push('\n');
                Answer {
                    status,
                    retry_after,
                    body: message,
                    dropped: None,
                }
            }
            Refusal::Overloaded(what) => {
                metrics.overloaded(what);
                let status = StatusCode::from_u16(app.limits().overload_status)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                Answer {
                    status,
                    retry_after: Some(1),
                    body: format!(
                        "orgsplit is overloaded (too many {what} in flight); retry later\n"
                    ),
                    dropped: None,
                }
            }
        }
    }

    pub(super) fn retry_after(mut self, secs: u64) -> Self {
        if let Refusal::Rejected { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }
}

pub(super) fn reject(
    status: StatusCode,
    reason: &'static str,
    message: impl Into<String>,
) -> Refusal {
    Refusal::Rejected {
        status,
        reason,
        message: message.into(),
        retry_after: None,
    }
}

/// The answer to a sender whose body stalled while others needed the
/// memory it held: retryable.
pub(super) fn stalled_under_pressure() -> Refusal {
    reject(
        StatusCode::SERVICE_UNAVAILABLE,
        "body_stalled",
        "the request body stalled while orgsplit's memory budget was needed by others; retry",
    )
    .retry_after(1)
}

/// The answer to a sender whose body did not arrive in time: retryable
/// (a 408 would make Prometheus drop the batch).
pub(super) fn too_slow(limit: std::time::Duration) -> Refusal {
    reject(
        StatusCode::SERVICE_UNAVAILABLE,
        "body_timeout",
        format!(
            "the request body did not arrive within limits.body_timeout ({}); retry",
            humantime::format_duration(limit)
        ),
    )
    .retry_after(1)
}

pub(super) fn too_large_body(limit: usize) -> Refusal {
    reject(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than limits.max_body_bytes ({limit})"),
    )
}

pub(super) fn decode_error(e: DecodeError) -> Refusal {
    let (status, reason) = match e {
        DecodeError::NotSnappy(_) => (StatusCode::BAD_REQUEST, "not_snappy"),
        DecodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "decoded_too_large"),
        DecodeError::Empty => (StatusCode::BAD_REQUEST, "empty"),
        DecodeError::Corrupt { .. } => (StatusCode::BAD_REQUEST, "bad_encoding"),
    };
    reject(status, reason, e.to_string())
}

pub(super) fn route_error(e: RouteError) -> Refusal {
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
        RouteError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
    };
    reject(status, reason, e.to_string())
}

/// The `reason` label of a request refused for too many of `item`.
fn too_many(item: LimitedItem) -> &'static str {
    match item {
        LimitedItem::Series => "too_many_series",
        LimitedItem::Metadata => "too_many_metadata",
        LimitedItem::Samples => "too_many_samples",
        LimitedItem::Exemplars => "too_many_exemplars",
        LimitedItem::Buckets => "too_many_buckets",
        LimitedItem::Symbols => "too_many_symbols",
        LimitedItem::Streams => "too_many_streams",
        LimitedItem::Entries => "too_many_entries",
        LimitedItem::Resources => "too_many_resources",
        LimitedItem::Scopes => "too_many_scopes",
        LimitedItem::Metrics => "too_many_metrics",
        LimitedItem::DataPoints => "too_many_data_points",
        LimitedItem::LogRecords => "too_many_log_records",
        LimitedItem::Spans => "too_many_spans",
        LimitedItem::EventsAndLinks => "too_many_events_and_links",
        LimitedItem::Attributes => "too_many_attributes",
    }
}
