//! Loki log pushes as [`Format`]s: the protobuf
//! `logproto.PushRequest` ([`LokiProto`], snappy) and the JSON push
//! ([`LokiJson`], plain, gzip or deflate).
//!
//! ```text
//!  proto body ─► walk: each `streams` entry ─► labels string ─► labels::scan (routing key)
//!                                          └► entries checked and counted (lines, metadata)
//!  JSON body  ─► index: the `streams` array, each stream object borrowed whole
//!             ─► walk: each stream's "stream" map (routing key) and "values" checked and counted
//!  tenant batch ─► the streams as they came, byte for byte (JSON: inside {"streams":[…]})
//! ```
//!
//! A stream is the unit that is routed: all its entries go where its labels
//! say. Its bytes are forwarded as they arrived, so timestamps, lines and
//! structured metadata reach Loki exactly as the sender wrote them; only
//! label mode's `remove_tenant_label` rewrites a stream's labels.
//!
//! Invariants:
//! - the routing label is read as Loki reads it (the label string by
//!   [`labels::scan`], JSON strings unescaped by a JSON parser), a label
//!   the router asks for that appears twice is refused, and so is a key
//!   (`streams`, `stream`, `values`) that Loki would read differently from
//!   orgsplit (twice, or in another letter case);
//! - every stream, entry and line is checked and counted against the limits
//!   before anything is forwarded.

pub mod json;
pub mod labels;
pub mod proto;

pub use json::LokiJson;
pub use proto::LokiProto;

use super::kind::{
    content_encoding, media_type, Destination, Endpoint, Negotiated, PushKind, RequestHeaders,
    Unsupported,
};
use super::Format;
use crate::codec::Codec;
use crate::signals::{Counts, Signal};
use crate::wire::{Hit, WireError};

/// Loki protobuf (snappy; Loki reads a protobuf body as snappy without
/// being told).
pub static PROTO: PushKind = PushKind {
    name: "Loki protobuf",
    id: 2,
    signal: Signal::Logs,
    codec: Codec::Snappy,
    outgoing_headers: &[("content-type", proto::CONTENT_TYPE)],
    concatenates: <LokiProto as Format>::CONCATENATES,
    reports_written: false,
    downgrade: None,
    merge: None,
};

/// Loki JSON, plain.
pub static JSON: PushKind = json_kind(
    "Loki JSON",
    3,
    Codec::Identity,
    &[("content-type", json::CONTENT_TYPE)],
);

/// Loki JSON, gzip.
pub static JSON_GZIP: PushKind = json_kind(
    "Loki JSON, gzip",
    4,
    Codec::Gzip,
    &[
        ("content-type", json::CONTENT_TYPE),
        ("content-encoding", "gzip"),
    ],
);

/// Loki JSON, deflate.
pub static JSON_DEFLATE: PushKind = json_kind(
    "Loki JSON, deflate",
    5,
    Codec::Deflate,
    &[
        ("content-type", json::CONTENT_TYPE),
        ("content-encoding", "deflate"),
    ],
);

const fn json_kind(
    name: &'static str,
    id: usize,
    codec: Codec,
    outgoing_headers: &'static [(&'static str, &'static str)],
) -> PushKind {
    PushKind {
        name,
        id,
        signal: Signal::Logs,
        codec,
        outgoing_headers,
        concatenates: <LokiJson as Format>::CONCATENATES,
        reports_written: false,
        downgrade: None,
        // Two JSON documents are not one: batches are merged into one
        // `streams` array (compressed, if at all, once per request).
        merge: Some(super::json_batch::merge),
    }
}

/// Loki's push endpoint (and Cortex's old `/api/prom/push`, where a remote
/// write sender, known by its version header, is served as one).
pub static ENDPOINT: Endpoint = Endpoint {
    paths: &["/loki/api/v1/push", "/api/prom/push"],
    signal: Signal::Logs,
    destination: Destination::Loki,
    negotiate,
    also: Some((|h| h.remote_write_version, &super::remote_write::ENDPOINT)),
    reply: None,
};

/// The kind of a Loki push, read as Loki reads it: JSON when the
/// `Content-Type` says `application/json` (plain, gzip or deflate), else
/// snappy protobuf, possibly inside a gzip or deflate `Content-Encoding`
/// (Loki undoes the HTTP encoding first: the layer). Refused with 415:
/// snappy around JSON, and other encodings.
pub fn negotiate(headers: &RequestHeaders<'_>) -> Result<Negotiated, Unsupported> {
    let encoding = content_encoding(headers);
    let json = media_type(headers.content_type) == json::CONTENT_TYPE;
    let unsupported = |what: String| Unsupported {
        reason: "encoding",
        message: format!("unsupported Content-Encoding {what}"),
    };
    let kind = |kind, layer| Ok(Negotiated { kind, layer });
    match (json, encoding.as_str()) {
        (true, "" | "identity") => kind(&JSON, None),
        (true, "gzip") => kind(&JSON_GZIP, None),
        (true, "deflate") => kind(&JSON_DEFLATE, None),
        (false, "" | "snappy") => kind(&PROTO, None),
        (false, "gzip") => kind(&PROTO, Some(Codec::Gzip)),
        (false, "deflate") => kind(&PROTO, Some(Codec::Deflate)),
        (true, other) => Err(unsupported(format!(
            "{other:?} for a JSON push: send it plain, gzip or deflate"
        ))),
        (false, other) => Err(unsupported(format!(
            "{other:?} for a protobuf push: send it snappy-compressed, optionally inside gzip or deflate"
        ))),
    }
}

/// Prost types generated from `proto/loki_push.proto`: the reference
/// decoder and encoder, used by tests, `inspect` and the fixtures.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/logproto.rs"));
}

/// One stream of a push, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    /// What is forwarded: the `StreamAdapter` message body (proto) or the
    /// stream object's text (JSON).
    pub raw: &'a [u8],
    /// The best match of the routing query.
    pub hit: Option<Hit<'a>>,
    /// The name of the matched label as it appeared (JSON), to leave it out.
    pub hit_name: &'a str,
    /// The label string (proto); empty for JSON.
    pub labels: &'a str,
    pub entries: u32,
}

impl Stream<'_> {
    fn counts(&self) -> Counts {
        Counts {
            series: 1,
            samples: u64::from(self.entries),
            ..Counts::default()
        }
    }
}

fn label_error(e: labels::LabelError) -> WireError {
    match e {
        labels::LabelError::TooMany { count, limit } => WireError::TooManyLabels { count, limit },
        other => WireError::StreamLabels(other.to_string()),
    }
}
