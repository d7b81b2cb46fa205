//! OTLP over gRPC: the `Export` methods of the metrics, logs and trace
//! services, on `otlp.grpc.listen`, into the same push path as OTLP/HTTP.
//!
//! ```text
//!  h2 POST /opentelemetry.proto.collector.{metrics,logs,trace}.v1.*Service/Export
//!   ─► tonic's Grpc: framing, grpc-encoding gzip, message size (before it is buffered)
//!   ─► Export::call: credentials from metadata (authorization) and the client
//!      certificate ─► push::handle as an OTLP protobuf push (the same pipeline,
//!      policies, limits, counters, upstreams)
//!   ─► OK + Export…ServiceResponse (partial_success), or a status with RetryInfo
//! ```
//!
//! The messages are never decoded here: a codec of raw bytes hands the
//! request to the same zero-copy walk as OTLP/HTTP. A client's
//! `x-scope-orgid` metadata is ignored like any other header.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, UnaryService};
use tonic::{Code, Status};

use super::handle;
use crate::answer::Answer;
use crate::app::App;
use crate::auth::PeerCert;
use crate::formats::kind::ReplyTo;
use crate::formats::otlp::{kind_of, OtlpSignal, PROTOBUF};
use crate::formats::{Endpoint, Negotiated};
use crate::wire::encode::{put_bytes_field, put_varint};

/// The gRPC method paths and the endpoint each serves.
pub fn methods() -> [(&'static str, &'static Endpoint); 3] {
    use crate::formats::otlp::{LOGS, METRICS, TRACES};
    [
        (
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &METRICS,
        ),
        (
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            &LOGS,
        ),
        (
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            &TRACES,
        ),
    ]
}

/// Serves one `Export` call.
pub async fn serve(
    endpoint: &'static Endpoint,
    State(app): State<Arc<App>>,
    peer: Option<Extension<Arc<PeerCert>>>,
    request: Request,
) -> Response {
    let limit = app.limits().max_body_bytes;
    let mut grpc = Grpc::new(Raw)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| grpc_timeout(v.as_bytes()));
    // The message is charged to the byte budget as its frames arrive,
    // before tonic has buffered it whole, and must arrive within
    // `limits.body_timeout`.
    let body_timeout = app.limits().body_timeout;
    let request = request.map(|body| {
        Body::new(Charged {
            inner: body,
            charge: app.budget().charge(),
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
        })
    });
    let started = Instant::now();
    let metrics = app.metrics().signal(endpoint.signal);
    let counted = Arc::new(AtomicBool::new(false));
    let export = Export {
        app,
        endpoint,
        peer: peer.map(|Extension(p)| p),
        deadline,
        counted: counted.clone(),
    };
    let response = grpc.unary(export, request).await;
    // A call tonic refused before it reached `Export` (a message too large
    // or cut off, a bad frame, the budget full as it arrived) is counted
    // here, by the status it got.
    if !counted.load(Ordering::Relaxed) {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(Code::Unknown as i32);
        let (status, reason) = match Code::from(code) {
            Code::Unavailable => (503, None),
            Code::OutOfRange | Code::ResourceExhausted => (413, Some("body_too_large")),
            _ => (400, Some("malformed")),
        };
        match reason {
            Some(reason) => metrics.rejected(reason),
            None => metrics.overloaded("bytes"),
        }
        metrics.answered(status, started.elapsed());
    }
    response.map(Body::new).into_response()
}

/// A request body whose frames are charged to the memory budget as they
/// arrive, and which must arrive within `limits.body_timeout`; past
/// either, the call fails `UNAVAILABLE` with `RetryInfo` (tonic passes a
/// `Status` in a body error on as it is).
struct Charged {
    inner: Body,
    charge: crate::limits::Charge,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

fn unavailable(message: &str) -> axum::BoxError {
    Box::new(Status::with_details(
        Code::Unavailable,
        message,
        retry_info(Code::Unavailable, message, 1),
    ))
}

impl http_body::Body for Charged {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        use std::task::Poll;
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if !self.charge.try_grow(len) {
                    return Poll::Ready(Some(Err(unavailable(
                        "orgsplit is overloaded (too many bytes in flight as the message arrived); retry later",
                    ))));
                }
            }
            Poll::Pending if self.deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Some(Err(unavailable(
                    "the message did not arrive within limits.body_timeout",
                ))));
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Anything else on the gRPC listener: `UNIMPLEMENTED`.
pub async fn unimplemented() -> Response {
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(Code::Unimplemented as i32));
    h.insert(
        "grpc-message",
        HeaderValue::from_static("only%20the%20OTLP%20Export%20methods%20are%20served%20here"),
    );
    response
}

/// A `grpc-timeout` value (`<digits><unit>`), as a duration.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The messages as bytes, in and out: the walk reads them itself.
#[derive(Debug, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One `Export` call's service: the endpoint it serves, and who called.
struct Export {
    app: Arc<App>,
    endpoint: &'static Endpoint,
    peer: Option<Arc<PeerCert>>,
    deadline: Option<Duration>,
    /// Set once the call is counted in the push metrics.
    counted: Arc<AtomicBool>,
}

type Answered = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = Answered;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Answered {
        let app = self.app.clone();
        let endpoint = self.endpoint;
        let peer = self.peer.clone();
        let deadline = self.deadline;
        self.counted.store(true, Ordering::Relaxed);
        Box::pin(async move {
            let started = Instant::now();
            let metrics = app.metrics().signal(endpoint.signal);
            let _inflight = metrics.inflight();
            let (metadata, _, message) = request.into_parts();
            let metadata = metadata.into_headers();
            let authorization = metadata
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            let principal = match app
                .auth()
                .authenticate(authorization, peer.as_deref())
                .await
            {
                Ok(p) => p,
                Err(_) => {
                    metrics.rejected("unauthorized");
                    metrics.answered(401, started.elapsed());
                    return Err(Status::unauthenticated("unauthorized"));
                }
            };
            // The message as an OTLP/HTTP protobuf push of its signal
            // (tonic undid any grpc-encoding).
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(message.len()));
            let negotiated = Negotiated {
                kind: kind_of(OtlpSignal::of(endpoint.signal), false, false),
                layer: None,
            };
            let handled = handle(
                &app,
                endpoint,
                Ok(negotiated),
                &principal,
                &headers,
                Body::from(message),
            );
            let answer = match deadline {
                Some(d) => match tokio::time::timeout(d, handled).await {
                    Ok(done) => done,
                    Err(_) => {
                        metrics.answered(504, started.elapsed());
                        return Err(Status::deadline_exceeded(
                            "the call's deadline passed before every tenant answered",
                        ));
                    }
                },
                None => handled.await,
            };
            let answer = match answer {
                Ok((answer, _)) => answer,
                Err(refusal) => refusal.answer(&app, &metrics),
            };
            metrics.answered(answer.status.as_u16(), started.elapsed());
            reply(endpoint, answer)
        })
    }
}

/// The answer as OTLP's gRPC mapping says: `OK` with the response message
/// (and `partial_success`), else the status for the HTTP status, with
/// `RetryInfo` where retrying helps.
fn reply(endpoint: &Endpoint, answer: Answer) -> Result<tonic::Response<Bytes>, Status> {
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        let (rejected, why) = answer.dropped.unwrap_or_default();
        let body = match endpoint.reply {
            Some(reply) => {
                reply(&ReplyTo {
                    status,
                    message: &why,
                    rejected,
                    content_type: Some(PROTOBUF.as_bytes()),
                })
                .body
            }
            None => Vec::new(),
        };
        return Ok(tonic::Response::new(Bytes::from(body)));
    }
    let message = answer.body.trim().to_string();
    let code = match status {
        400 | 413 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 => Code::ResourceExhausted,
        500 | 502..=504 => Code::Unavailable,
        _ => Code::Internal,
    };
    if matches!(code, Code::ResourceExhausted | Code::Unavailable) {
        let delay = answer.retry_after.unwrap_or(1);
        return Err(Status::with_details(
            code,
            message.clone(),
            retry_info(code, &message, delay),
        ));
    }
    Err(Status::new(code, message))
}

/// A `google.rpc.Status` carrying a `google.rpc.RetryInfo` of `seconds`
/// (the `grpc-status-details-bin` a client reads the delay from).
fn retry_info(code: Code, message: &str, seconds: u64) -> Bytes {
    // google.protobuf.Duration { int64 seconds = 1; }
    let mut duration = Vec::new();
    put_varint(&mut duration, 1 << 3);
    put_varint(&mut duration, seconds);
    // google.rpc.RetryInfo { Duration retry_delay = 1; }
    let mut info = Vec::new();
    put_bytes_field(&mut info, 1, &duration);
    // google.protobuf.Any { string type_url = 1; bytes value = 2; }
    let mut any = Vec::new();
    put_bytes_field(&mut any, 1, b"type.googleapis.com/google.rpc.RetryInfo");
    put_bytes_field(&mut any, 2, &info);
    // google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; }
    let mut status = Vec::new();
    put_varint(&mut status, 1 << 3);
    put_varint(&mut status, code as u64);
    put_bytes_field(&mut status, 2, message.as_bytes());
    put_bytes_field(&mut status, 3, &any);
    Bytes::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_nonsense_is_none() {
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        for bad in [&b""[..], b"S", b"5", b"123456789S", b"-1S", b"5x"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
