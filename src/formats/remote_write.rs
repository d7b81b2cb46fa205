//! The remote write endpoint: which version (1.0, [`super::rw1`], or 2.0,
//! [`super::rw2`]) a push on Prometheus' and Mimir's paths is.

use super::kind::{media_type, Destination, Endpoint, Negotiated, RequestHeaders, Unsupported};
use super::{rw1, rw2};
use crate::signals::Signal;

/// The remote write endpoint: 1.0 and 2.0 on Prometheus' and Mimir's paths.
pub static ENDPOINT: Endpoint = Endpoint {
    paths: &["/api/v1/push", "/push"],
    signal: Signal::Metrics,
    destination: Destination::RemoteWrite,
    negotiate,
    also: None,
    reply: None,
};

/// The remote write version a request asks for, per the 2.0 spec:
/// `application/x-protobuf` alone or with `proto=prometheus.WriteRequest`
/// is 1.0, `proto=io.prometheus.write.v2.Request` is 2.0, anything else is
/// 415 (so a 2.x sender may fall back). No `Content-Type` at all is 1.0, as
/// old senders send none. The body must be snappy.
pub fn negotiate(headers: &RequestHeaders<'_>) -> Result<Negotiated, Unsupported> {
    if let Some(encoding) = headers.content_encoding {
        if !encoding.eq_ignore_ascii_case(b"snappy") {
            return Err(Unsupported {
                reason: "encoding",
                message: format!(
                    "unsupported Content-Encoding {:?}: remote write bodies are snappy-compressed",
                    String::from_utf8_lossy(encoding)
                ),
            });
        }
    }
    let whole = |kind| Ok(Negotiated { kind, layer: None });
    let Some(value) = headers.content_type else {
        return whole(&rw1::KIND);
    };
    let unsupported = |what: &str| {
        Unsupported {
        reason: "content_type",
        message: format!(
            "unsupported Content-Type {what}: send application/x-protobuf with proto=prometheus.WriteRequest (remote write 1.0) or proto=io.prometheus.write.v2.Request (2.0)"
        ),
    }
    };
    let Ok(text) = std::str::from_utf8(value) else {
        return Err(unsupported("(not ASCII)"));
    };
    if media_type(Some(value)) != "application/x-protobuf" {
        return Err(unsupported(&format!("{text:?}")));
    }
    let mut kind = &rw1::KIND;
    for param in text.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("proto") {
            continue;
        }
        kind = match value.trim().trim_matches('"') {
            "prometheus.WriteRequest" => &rw1::KIND,
            "io.prometheus.write.v2.Request" => &rw2::KIND,
            _ => return Err(unsupported(&format!("{text:?}"))),
        };
    }
    whole(kind)
}
