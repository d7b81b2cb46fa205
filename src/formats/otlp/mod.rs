//! OpenTelemetry (OTLP/HTTP) metrics, logs and traces as [`Format`]s:
//! each resource, or each item of it, goes to the organization of the
//! namespace its attributes name.
//!
//! ```text
//!  POST /v1/{metrics,logs,traces}, /otlp/v1/{metrics,logs}
//!    ─► negotiate: protobuf or JSON, plain or gzip (415 otherwise)
//!    ─► walk (proto.rs, json.rs): a resource whose attributes name a namespace ─► routed whole
//!                                 otherwise each data point, log record, span ─► by its own attributes
//!    ─► per tenant (batch.rs): whole resources copied; items inside copies of their
//!       resource, scope (and metric) headers
//!    ─► reply.rs: 200 + Export…ServiceResponse (partial_success when a policy dropped
//!       items), or a google.rpc.Status with the error status
//! ```
//!
//! The attribute keys are `otlp.namespace_attributes` (default
//! `k8s.namespace.name`, then `namespace`) in namespace mode, and
//! `routing.tenant_label` in label mode; the first key a resource carries
//! decides for all of it (the Collector's `k8sattributes` case), else each
//! item's own attributes do (the Prometheus receiver keeps `namespace` on
//! each data point). Only string values count.
//!
//! Protobuf is walked without decoding: resources and items go out as the
//! bytes they came in, unknown fields included. Two tenant requests
//! concatenated are one request (`resource_*` is the only field), so
//! concurrent pushes coalesce. JSON is parsed with borrowed raw values
//! (json.rs) and each tenant's request is written as JSON again.

use std::convert::Infallible;

use super::kind::{
    content_encoding, media_type, Destination, Endpoint, Negotiated, PushKind, RequestHeaders,
    Unsupported,
};
use super::{Format, PushItem};
use crate::codec::Codec;
use crate::signals::{Counts, Signal};
use crate::wire::{Hit, LabelQuery, RequestLimits, WireError};

mod batch;
pub mod json;
mod proto;
pub mod reply;
mod schema;

pub use batch::Nest;
pub use proto::MAX_VALUE_DEPTH;

/// Which OTLP signal a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpSignal {
    Metrics,
    Logs,
    Traces,
}

impl OtlpSignal {
    /// The OTLP signal of a push signal.
    pub fn of(signal: Signal) -> OtlpSignal {
        match signal {
            Signal::Metrics => OtlpSignal::Metrics,
            Signal::Logs => OtlpSignal::Logs,
            Signal::Traces => OtlpSignal::Traces,
        }
    }

    fn request_name(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "ExportMetricsServiceRequest",
            OtlpSignal::Logs => "ExportLogsServiceRequest",
            OtlpSignal::Traces => "ExportTraceServiceRequest",
        }
    }

    fn resource_name(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "ResourceMetrics",
            OtlpSignal::Logs => "ResourceLogs",
            OtlpSignal::Traces => "ResourceSpans",
        }
    }

    fn scope_name(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "ScopeMetrics",
            OtlpSignal::Logs => "ScopeLogs",
            OtlpSignal::Traces => "ScopeSpans",
        }
    }

    /// What one item is called in messages.
    pub fn item_noun(self) -> &'static str {
        match self {
            OtlpSignal::Metrics => "data point",
            OtlpSignal::Logs => "log record",
            OtlpSignal::Traces => "span",
        }
    }
}

/// Where an item sits: its resource, scope, and (metrics) metric and data
/// wrapper, each as a sequence number from the walk and its message body.
/// A level that does not apply has number 0.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub resource: (u32, &'a [u8]),
    pub scope: (u32, &'a [u8]),
    pub metric: (u32, &'a [u8]),
    /// Sequence number, field number in `Metric` (which data type), body.
    pub data: (u32, u32, &'a [u8]),
}

/// What the walk routes: a whole resource (`at: None`), or one data point,
/// log record or span in its [`Context`].
#[derive(Debug, Clone, Copy)]
pub struct OtlpItem<'a> {
    /// The field as it came (key, length, body): copied into the tenant's
    /// request as it is.
    pub raw: &'a [u8],
    pub at: Option<Context<'a>>,
    /// The routing attribute found (on the resource, or on the item).
    pub hit: Option<Hit<'a>>,
    /// `samples`: number data points, log records or spans;
    /// `histograms`: histogram and summary points; `series`: 1.
    pub counts: Counts,
}

/// OTLP protobuf of one signal.
#[derive(Debug, Clone, Copy)]
pub struct OtlpProto(pub OtlpSignal);

impl Format for OtlpProto {
    type Series<'a> = OtlpItem<'a>;
    type Extra<'a> = Infallible;
    type Batch = Nest;
    type Index<'a> = &'a [u8];
    const CONCATENATES: bool = true;

    fn index<'a>(&self, body: &'a [u8], _: RequestLimits) -> Result<&'a [u8], WireError> {
        Ok(body)
    }

    fn walk<'a, E: From<WireError>>(
        &self,
        body: &'a &[u8],
        query: &LabelQuery,
        limits: RequestLimits,
        mut visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        let body: &'a [u8] = body;
        proto::Walk::new(self.0, query, limits)
            .request(body, &mut |item| visit(PushItem::Series(item)))
    }

    fn key<'a>(item: &Self::Series<'a>) -> Option<Hit<'a>> {
        item.hit
    }

    fn family<'a>(_: &Self::Series<'a>) -> Option<&'a str> {
        None
    }

    fn counts(item: &OtlpItem<'_>) -> Counts {
        item.counts
    }

    fn describe(item: &OtlpItem<'_>) -> String {
        describe(item.at.is_none(), item.hit.map(|h| h.value))
    }

    fn extra_family<'a>(extra: &Infallible) -> &'a str {
        match *extra {}
    }

    fn append_series(batch: &mut Nest, out: &mut Vec<u8>, item: &OtlpItem<'_>, _: Option<Hit<'_>>) {
        batch.append(out, item);
    }

    fn append_extra(_: &mut Nest, _: &mut Vec<u8>, extra: &Infallible) {
        match *extra {}
    }

    fn finish(_: &Self::Index<'_>, batch: Nest, out: &mut Vec<u8>) {
        batch.finish(out);
    }
}

/// An item for error messages: what it is and the attribute it was routed
/// by.
pub(crate) fn describe(whole: bool, value: Option<&str>) -> String {
    let what = if whole { "resource" } else { "item" };
    match value {
        Some(v) => format!("{what} with namespace attribute {v:?}"),
        None => format!("{what} with no namespace attribute"),
    }
}

/// The protobuf media type of OTLP/HTTP.
pub const PROTOBUF: &str = "application/x-protobuf";
/// The JSON media type of OTLP/HTTP.
pub const JSON: &str = "application/json";

const fn kind(
    name: &'static str,
    id: usize,
    signal: Signal,
    codec: Codec,
    outgoing_headers: &'static [(&'static str, &'static str)],
    concatenates: bool,
) -> PushKind {
    PushKind {
        name,
        id,
        signal,
        codec,
        outgoing_headers,
        concatenates,
        reports_written: false,
        downgrade: None,
        // Gzip bodies do not join (see `codec::joins`); their decoded
        // protobuf does, so the forwarder merges them decoded and
        // compresses once per upstream request. JSON documents do not
        // concatenate; their top-level arrays merge.
        merge: match (concatenates, codec) {
            (true, Codec::Gzip) => Some(concatenate),
            (true, _) => None,
            (false, _) => Some(crate::formats::json_batch::merge),
        },
    }
}

/// Merges decoded OTLP protobuf requests: one after the other they are one
/// request (repeated top-level fields append).
fn concatenate(bodies: &[&[u8]], out: &mut Vec<u8>) -> Result<(), crate::wire::WireError> {
    for body in bodies {
        out.extend_from_slice(body);
    }
    Ok(())
}

const PROTO_PLAIN: &[(&str, &str)] = &[("content-type", PROTOBUF)];
const PROTO_GZIP: &[(&str, &str)] = &[("content-type", PROTOBUF), ("content-encoding", "gzip")];
const JSON_PLAIN: &[(&str, &str)] = &[("content-type", JSON)];
const JSON_GZIP: &[(&str, &str)] = &[("content-type", JSON), ("content-encoding", "gzip")];
const PROTO_JOINS: bool = <OtlpProto as Format>::CONCATENATES;
const JSON_JOINS: bool = <json::OtlpJson as Format>::CONCATENATES;

/// Every OTLP push kind: metrics, logs, traces × protobuf, JSON × plain,
/// gzip, in that order (see [`kind_of`]); their ids follow the kinds
/// registered before them.
pub static KINDS: [PushKind; 12] = [
    kind(
        "OTLP metrics, protobuf",
        6,
        Signal::Metrics,
        Codec::Identity,
        PROTO_PLAIN,
        PROTO_JOINS,
    ),
    kind(
        "OTLP metrics, protobuf, gzip",
        7,
        Signal::Metrics,
        Codec::Gzip,
        PROTO_GZIP,
        PROTO_JOINS,
    ),
    kind(
        "OTLP metrics, JSON",
        8,
        Signal::Metrics,
        Codec::Identity,
        JSON_PLAIN,
        JSON_JOINS,
    ),
    kind(
        "OTLP metrics, JSON, gzip",
        9,
        Signal::Metrics,
        Codec::Gzip,
        JSON_GZIP,
        JSON_JOINS,
    ),
    kind(
        "OTLP logs, protobuf",
        10,
        Signal::Logs,
        Codec::Identity,
        PROTO_PLAIN,
        PROTO_JOINS,
    ),
    kind(
        "OTLP logs, protobuf, gzip",
        11,
        Signal::Logs,
        Codec::Gzip,
        PROTO_GZIP,
        PROTO_JOINS,
    ),
    kind(
        "OTLP logs, JSON",
        12,
        Signal::Logs,
        Codec::Identity,
        JSON_PLAIN,
        JSON_JOINS,
    ),
    kind(
        "OTLP logs, JSON, gzip",
        13,
        Signal::Logs,
        Codec::Gzip,
        JSON_GZIP,
        JSON_JOINS,
    ),
    kind(
        "OTLP traces, protobuf",
        14,
        Signal::Traces,
        Codec::Identity,
        PROTO_PLAIN,
        PROTO_JOINS,
    ),
    kind(
        "OTLP traces, protobuf, gzip",
        15,
        Signal::Traces,
        Codec::Gzip,
        PROTO_GZIP,
        PROTO_JOINS,
    ),
    kind(
        "OTLP traces, JSON",
        16,
        Signal::Traces,
        Codec::Identity,
        JSON_PLAIN,
        JSON_JOINS,
    ),
    kind(
        "OTLP traces, JSON, gzip",
        17,
        Signal::Traces,
        Codec::Gzip,
        JSON_GZIP,
        JSON_JOINS,
    ),
];

/// The kind of a push of `signal`, in JSON or not, gzip or not.
pub fn kind_of(signal: OtlpSignal, json: bool, gzip: bool) -> &'static PushKind {
    let signal = match signal {
        OtlpSignal::Metrics => 0,
        OtlpSignal::Logs => 1,
        OtlpSignal::Traces => 2,
    };
    &KINDS[signal * 4 + usize::from(json) * 2 + usize::from(gzip)]
}

/// OTLP metrics: the exporters' default path, and Mimir's.
pub static METRICS: Endpoint = Endpoint {
    paths: &["/v1/metrics", "/otlp/v1/metrics"],
    signal: Signal::Metrics,
    destination: Destination::OtlpMetrics,
    negotiate: |h| negotiate(OtlpSignal::Metrics, h),
    also: None,
    reply: Some(reply::metrics),
};

/// OTLP logs: the exporters' default path, and Loki's.
pub static LOGS: Endpoint = Endpoint {
    paths: &["/v1/logs", "/otlp/v1/logs"],
    signal: Signal::Logs,
    destination: Destination::OtlpLogs,
    negotiate: |h| negotiate(OtlpSignal::Logs, h),
    also: None,
    reply: Some(reply::logs),
};

/// OTLP traces: the exporters' default path (Tempo's too), and the same
/// under `/otlp` for symmetry with the others.
pub static TRACES: Endpoint = Endpoint {
    paths: &["/v1/traces", "/otlp/v1/traces"],
    signal: Signal::Traces,
    destination: Destination::OtlpTraces,
    negotiate: |h| negotiate(OtlpSignal::Traces, h),
    also: None,
    reply: Some(reply::traces),
};

/// The kind of an OTLP/HTTP request, as the specification lists them:
/// `application/x-protobuf` or `application/json`, plain or
/// `Content-Encoding: gzip`. Anything else is 415.
pub fn negotiate(
    signal: OtlpSignal,
    headers: &RequestHeaders<'_>,
) -> Result<Negotiated, Unsupported> {
    let json = match media_type(headers.content_type).as_str() {
        PROTOBUF => false,
        JSON => true,
        other => {
            return Err(Unsupported {
                reason: "content_type",
                message: format!(
                    "unsupported Content-Type {other:?}: OTLP/HTTP takes {PROTOBUF} or {JSON}"
                ),
            })
        }
    };
    let encoding = content_encoding(headers);
    let gzip = match encoding.as_str() {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            return Err(Unsupported {
                reason: "encoding",
                message: format!(
                    "unsupported Content-Encoding {other:?}: OTLP/HTTP takes gzip or none"
                ),
            })
        }
    };
    Ok(Negotiated {
        kind: kind_of(signal, json, gzip),
        layer: None,
    })
}

#[cfg(test)]
mod tests;
