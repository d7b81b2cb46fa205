//! What an OTLP/HTTP sender is answered, as the specification says:
//!
//! | outcome                               | status      | body                                  |
//! |---------------------------------------|-------------|---------------------------------------|
//! | every tenant accepted                 | 200         | `Export…ServiceResponse`              |
//! | … and a policy dropped some items     | 200         | with `partial_success` (count, why)   |
//! | malformed, too large, forbidden, …    | 4xx as is   | `google.rpc.Status` (not retryable)   |
//! | an upstream throttled or is down      | 429/502/503/504, `Retry-After` | `google.rpc.Status` |
//!
//! in the request's encoding (protobuf, or JSON when it came as JSON).

use super::{JSON, PROTOBUF};
use crate::formats::kind::{media_type, Replied, ReplyTo};
use crate::wire::encode::{put_bytes_field, put_varint};

/// The answer to an OTLP metrics push.
pub fn metrics(to: &ReplyTo<'_>) -> Replied {
    reply(to, "rejectedDataPoints")
}

/// The answer to an OTLP logs push.
pub fn logs(to: &ReplyTo<'_>) -> Replied {
    reply(to, "rejectedLogRecords")
}

/// The answer to an OTLP traces push.
pub fn traces(to: &ReplyTo<'_>) -> Replied {
    reply(to, "rejectedSpans")
}

fn reply(to: &ReplyTo<'_>, rejected_name: &str) -> Replied {
    let json = media_type(to.content_type) == JSON;
    let content_type = if json { JSON } else { PROTOBUF };
    let message = to.message.trim();
    if (200..300).contains(&to.status) {
        let body = if to.rejected == 0 {
            if json {
                b"{}".to_vec()
            } else {
                Vec::new()
            }
        } else if json {
            // int64 is a string in protobuf's JSON mapping.
            serde_json::json!({
                "partialSuccess": {
                    rejected_name: to.rejected.to_string(),
                    "errorMessage": message,
                }
            })
            .to_string()
            .into_bytes()
        } else {
            // ExportPartialSuccess { rejected_* = 1; error_message = 2 }
            let mut partial = Vec::new();
            put_varint(&mut partial, 1 << 3);
            put_varint(&mut partial, to.rejected);
            put_bytes_field(&mut partial, 2, message.as_bytes());
            let mut body = Vec::new();
            put_bytes_field(&mut body, 1, &partial);
            body
        };
        return Replied {
            status: 200,
            content_type,
            body,
        };
    }
    let code = grpc_code(to.status);
    let body = if json {
        serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes()
    } else {
        // google.rpc.Status { int32 code = 1; string message = 2 }
        let mut body = Vec::new();
        put_varint(&mut body, 1 << 3);
        put_varint(&mut body, u64::from(code));
        put_bytes_field(&mut body, 2, message.as_bytes());
        body
    };
    Replied {
        status: to.status,
        content_type,
        body,
    }
}

/// The gRPC status code that goes with an HTTP status in a
/// `google.rpc.Status`.
fn grpc_code(status: u16) -> u32 {
    match status {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 5,             // NOT_FOUND
        429 => 8,             // RESOURCE_EXHAUSTED
        502..=504 => 14,      // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(status: u16, rejected: u64, json: bool) -> ReplyTo<'static> {
        ReplyTo {
            status,
            message: "3 data points dropped\n",
            rejected,
            content_type: Some(if json {
                b"application/json"
            } else {
                b"application/x-protobuf"
            }),
        }
    }

    #[test]
    fn success_is_200_with_partial_success_only_when_something_was_dropped() {
        let r = metrics(&to(204, 0, false));
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = metrics(&to(204, 0, true));
        assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        let r = metrics(&to(204, 3, true));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "3");
        assert_eq!(v["partialSuccess"]["errorMessage"], "3 data points dropped");
        let r = traces(&to(204, 3, false));
        // partial_success { rejected_spans: 3, error_message: ... }
        assert_eq!(&r.body[..4], &[0x0a, 2 + 2 + 21, 0x08, 3]);
    }

    #[test]
    fn errors_keep_their_status_with_a_status_body() {
        let r = logs(&to(400, 0, true));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, v["code"].as_u64()), (400, Some(3)));
        let r = logs(&to(503, 0, false));
        assert_eq!((r.status, &r.body[..2]), (503, &[0x08, 14][..]));
        assert_eq!(r.content_type, PROTOBUF);
    }
}
