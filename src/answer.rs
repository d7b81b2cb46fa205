//! Many upstream answers → one answer to the sender (the retry contract).
//!
//! ```text
//!  [tenant a: 204] [tenant b: 503] [tenant c: 400]  ──combine──►  503 (retry)
//! ```
//!
//! Prometheus retries 5xx and 429 and drops the batch on any other 4xx. So:
//! - 2xx only when every tenant push was accepted;
//! - any retryable failure (5xx, 429, timeout, connection error) makes the
//!   whole answer retryable, because Mimir ignores the identical samples the
//!   retry re-sends to tenants that already accepted them; 429 is passed on
//!   only when every failure was a 429, with the largest `Retry-After`;
//! - otherwise a 4xx from the upstream is passed back, naming the tenant(s).

use std::fmt::Write;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// How one tenant push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantOutcome {
    /// 2xx.
    Accepted,
    /// Any other HTTP status.
    Status {
        status: u16,
        retry_after: Option<u64>,
        message: String,
    },
    /// No answer within `upstream.timeout`.
    Timeout,
    /// Connection refused, reset, DNS failure, ...
    Unreachable(String),
}

impl TenantOutcome {
    /// Whether Prometheus should retry a request that met this outcome.
    pub fn is_retryable(&self) -> bool {
        match self {
            TenantOutcome::Accepted => false,
            TenantOutcome::Status { status, .. } => !(400..500).contains(status) || *status == 429,
            TenantOutcome::Timeout | TenantOutcome::Unreachable(_) => true,
        }
    }

    /// Label for `orgsplit_upstream_requests_total`.
    pub fn class(&self) -> &'static str {
        match self {
            TenantOutcome::Accepted => "2xx",
            TenantOutcome::Status { status: 429, .. } => "429",
            TenantOutcome::Status { status, .. } if (400..500).contains(status) => "4xx",
            TenantOutcome::Status { status, .. } if (500..600).contains(status) => "5xx",
            TenantOutcome::Status { .. } => "other",
            TenantOutcome::Timeout => "timeout",
            TenantOutcome::Unreachable(_) => "error",
        }
    }
}

/// What a remote write 2.0 receiver says it wrote, in the
/// `X-Prometheus-Remote-Write-*-Written` headers. Prometheus counts a 2xx
/// whose headers say nothing was written as a failure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

impl Written {
    /// The header names, in the order of the fields.
    pub const HEADERS: [&'static str; 3] = [
        "x-prometheus-remote-write-samples-written",
        "x-prometheus-remote-write-histograms-written",
        "x-prometheus-remote-write-exemplars-written",
    ];

    /// What a push carrying `counts` wrote when all of it was accepted.
    pub fn of(counts: &crate::signals::Counts) -> Self {
        Self {
            samples: counts.samples,
            histograms: counts.histograms,
            exemplars: counts.exemplars,
        }
    }

    pub fn add(&mut self, other: &Written) {
        self.samples += other.samples;
        self.histograms += other.histograms;
        self.exemplars += other.exemplars;
    }

    /// The counts in header order.
    pub fn values(&self) -> [u64; 3] {
        [self.samples, self.histograms, self.exemplars]
    }

    /// Reads the headers through `get`; `None` when none of them is there
    /// (a 1.0 receiver), a missing or unreadable one counting as 0.
    pub fn from_headers<'h>(get: impl Fn(&str) -> Option<&'h [u8]>) -> Option<Self> {
        let mut any = false;
        let [samples, histograms, exemplars] = Self::HEADERS.map(|name| {
            get(name).map_or(0, |v| {
                any = true;
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            })
        });
        any.then_some(Self {
            samples,
            histograms,
            exemplars,
        })
    }
}

/// The answer to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// Seconds, for a `Retry-After` header.
    pub retry_after: Option<u64>,
    pub body: String,
    /// Items of an accepted request that a policy the operator chose
    /// dropped, and why (OTLP answers them as `partial_success`).
    pub dropped: Option<(u64, String)>,
}

impl Answer {
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            retry_after: None,
            body: body.into(),
            dropped: None,
        }
    }
}

/// Longest upstream message quoted per tenant.
const MAX_MESSAGE: usize = 512;

/// Combines the outcomes of all tenant pushes of one request.
pub fn combine<T: AsRef<str>>(results: &[(T, TenantOutcome)]) -> Answer {
    let failed: Vec<&(T, TenantOutcome)> = results
        .iter()
        .filter(|(_, u)| *u != TenantOutcome::Accepted)
        .collect();
    if failed.is_empty() {
        return Answer::new(StatusCode::NO_CONTENT, "");
    }
    let retryable: Vec<&(T, TenantOutcome)> = failed
        .iter()
        .copied()
        .filter(|(_, u)| u.is_retryable())
        .collect();
    let chosen = if retryable.is_empty() {
        &failed
    } else {
        &retryable
    };
    let retry_after = chosen
        .iter()
        .filter_map(|(_, u)| match u {
            TenantOutcome::Status { retry_after, .. } => *retry_after,
            _ => None,
        })
        .max();

    let status = if retryable.is_empty() {
        // Only non-retryable 4xx (or odd statuses) failed: pass the first
        // 4xx back so Prometheus drops the batch and logs why.
        first_status(chosen, |s| (400..500).contains(&s)).unwrap_or(StatusCode::BAD_GATEWAY)
    } else if retryable
        .iter()
        .all(|(_, u)| matches!(u, TenantOutcome::Status { status: 429, .. }))
    {
        StatusCode::TOO_MANY_REQUESTS
    } else if let Some(s) = first_status(chosen, |s| (500..600).contains(&s)) {
        s
    } else if retryable.iter().any(|(_, u)| *u == TenantOutcome::Timeout) {
        StatusCode::GATEWAY_TIMEOUT
    } else if retryable
        .iter()
        .any(|(_, u)| matches!(u, TenantOutcome::Unreachable(_)))
    {
        StatusCode::BAD_GATEWAY
    } else {
        // Retryable 429s mixed with other statuses: ask for a retry without
        // claiming the whole request was rate limited.
        StatusCode::SERVICE_UNAVAILABLE
    };

    let mut body = String::new();
    let _ = write!(
        body,
        "{} of {} tenant pushes failed",
        failed.len(),
        results.len()
    );
    if !retryable.is_empty() {
        body.push_str(" (retryable)");
    }
    body.push(':');
    for (tenant, outcome) in chosen.iter().map(|(t, u)| (t.as_ref(), u)) {
        let _ = match outcome {
            TenantOutcome::Status {
                status, message, ..
            } => write!(
                body,
                "\ntenant {tenant}: upstream answered {status}: {}",
                truncate(message)
            ),
            TenantOutcome::Timeout => write!(body, "\ntenant {tenant}: upstream timed out"),
            TenantOutcome::Unreachable(e) => write!(
                body,
                "\ntenant {tenant}: upstream unreachable: {}",
                truncate(e)
            ),
            TenantOutcome::Accepted => Ok(()),
        };
    }
    body.push('\n');
    Answer {
        status,
        retry_after,
        body,
        dropped: None,
    }
}

fn first_status<T>(
    results: &[&(T, TenantOutcome)],
    want: impl Fn(u16) -> bool,
) -> Option<StatusCode> {
    results.iter().find_map(|(_, u)| match u {
        TenantOutcome::Status { status, .. } if want(*status) => StatusCode::from_u16(*status).ok(),
        _ => None,
    })
}

fn truncate(s: &str) -> &str {
    let s = s.trim();
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Answer {
    /// The HTTP response: the status, the body, and `Retry-After` when set.
    pub fn into_http(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// 401, with a `WWW-Authenticate` challenge per configured mode; the reason
/// stays in the log and `orgsplit_auth_failures_total` (push and read
/// paths alike).
pub fn unauthorized(challenges: &[&'static str]) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    for challenge in challenges {
        response.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> TenantOutcome {
        TenantOutcome::Status {
            status: code,
            retry_after: None,
            message: format!("msg {code}"),
        }
    }

    fn with_retry(code: u16, secs: u64) -> TenantOutcome {
        TenantOutcome::Status {
            status: code,
            retry_after: Some(secs),
            message: String::new(),
        }
    }

    #[test]
    fn all_accepted_or_nothing_to_send_is_204() {
        assert_eq!(combine::<&str>(&[]).status, StatusCode::NO_CONTENT);
        let a = combine(&[
            ("a", TenantOutcome::Accepted),
            ("b", TenantOutcome::Accepted),
        ]);
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }

    #[test]
    fn any_retryable_failure_wins_over_4xx() {
        let a = combine(&[
            ("a", TenantOutcome::Accepted),
            ("b", status(400)),
            ("c", status(500)),
        ]);
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            a.body.contains("tenant c") && !a.body.contains("tenant b"),
            "{}",
            a.body
        );
        let a = combine(&[("b", status(400)), ("c", TenantOutcome::Timeout)]);
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
        let a = combine(&[("c", TenantOutcome::Unreachable("refused".into()))]);
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        assert!(a.body.contains("refused"));
    }

    #[test]
    fn only_429s_pass_429_with_the_largest_retry_after() {
        let a = combine(&[
            ("a", with_retry(429, 3)),
            ("b", with_retry(429, 10)),
            ("c", TenantOutcome::Accepted),
        ]);
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.retry_after, Some(10));
        // 429 mixed with a 5xx: 5xx
        let a = combine(&[("a", with_retry(429, 3)), ("b", status(503))]);
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        // 429 mixed with a timeout: retryable, not 429
        let a = combine(&[("a", with_retry(429, 3)), ("b", TenantOutcome::Timeout)]);
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn plain_4xx_passes_back_naming_the_tenants() {
        let a = combine(&[
            ("acme", status(400)),
            ("globex", status(413)),
            ("ok", TenantOutcome::Accepted),
        ]);
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.body
                .contains("tenant acme: upstream answered 400: msg 400"),
            "{}",
            a.body
        );
        assert!(a.body.contains("tenant globex"), "{}", a.body);
        assert!(!a.body.contains("tenant ok"));
        assert!(!TenantOutcome::Status {
            status: 400,
            retry_after: None,
            message: String::new()
        }
        .is_retryable());
    }

    #[test]
    fn long_messages_are_cut() {
        let long = TenantOutcome::Status {
            status: 400,
            retry_after: None,
            message: "é".repeat(2000),
        };
        let a = combine(&[("a", long)]);
        assert!(a.body.len() < 700);
    }
}
