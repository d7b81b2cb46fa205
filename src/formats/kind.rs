//! What a push kind is, to the layers above and below the walk: one
//! descriptor per kind, and one per endpoint that takes pushes.
//!
//! ```text
//!  POST <Endpoint::paths> ─► Endpoint::negotiate(headers) ─► Negotiated { kind, layer }
//!    (415 when no kind matches)                                   │
//!  push handler: undo `layer` ─► the kind's pipeline (by PushKind::id) ─► tenant bodies
//!  forward: PushKind::outgoing_headers, ::concatenates and ::merge (coalescing), ::downgrade,
//!           ::reports_written ─► upstream
//! ```
//!
//! Everything that differs between kinds is data here, so the handler,
//! the application state and the transport dispatch on a descriptor and
//! never name a format. No HTTP types: headers are bytes and strings.

use crate::codec::Codec;
use crate::signals::Signal;

/// One push kind: a format in one encoding.
#[derive(Debug)]
pub struct PushKind {
    /// For messages ("remote write 1.0", "Loki JSON, gzip").
    pub name: &'static str,
    /// Its place in `pipeline::REGISTRY` (the index of its pipeline).
    pub id: usize,
    /// Where its pushes go: Mimir (metrics) or Loki (logs).
    pub signal: Signal,
    /// How its bodies are compressed, as they arrive (inside any
    /// `Content-Encoding` layer) and as each tenant's goes upstream.
    pub codec: Codec,
    /// Headers of every upstream request of this kind, besides the
    /// tenant's and orgsplit's credentials.
    pub outgoing_headers: &'static [(&'static str, &'static str)],
    /// Whether two tenant bodies of this kind, joined by their codec, make
    /// one valid request holding both: the forwarder then merges the
    /// batches of concurrent pushes for one tenant.
    pub concatenates: bool,
    /// Whether the sender is told what was written (remote write 2.0's
    /// written-count headers), and an upstream's 2xx without them means
    /// nothing is known to be written.
    pub reports_written: bool,
    /// How to convert it for an upstream that does not take it.
    pub downgrade: Option<Downgrade>,
    /// How to merge tenant bodies of this kind that do not join as they
    /// are (remote write 2.0: each has its own symbol table; gzip OTLP:
    /// gzip members do not join safely; Loki JSON: two documents are not
    /// one), so the forwarder can still send a busy tenant's batches of
    /// concurrent pushes as one request.
    ///
    /// Invariant: the tenant bodies of a compressed kind with `merge` leave the
    /// pipeline *decoded* (unless a push goes whole: then they are the
    /// sender's own bytes, marked encoded), and the forwarder applies
    /// [`PushKind::codec`] when it sends, once per upstream request:
    /// merging compressed bodies would mean decompressing and compressing
    /// them all again.
    pub merge: Option<Merge>,
}

impl PushKind {
    /// Whether this kind's rebuilt tenant bodies reach the forwarder
    /// decoded (see [`PushKind::merge`]).
    pub fn sent_decoded(&self) -> bool {
        // An uncompressed kind's bodies are the same either way.
        self.merge.is_some() && self.codec != Codec::Identity
    }
}

impl PartialEq for PushKind {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for PushKind {}

/// A conversion to another kind (remote write 2.0 → 1.0), for upstreams
/// that do not take the kind (`upstream.protocol`).
#[derive(Debug)]
pub struct Downgrade {
    pub to: &'static PushKind,
    /// Converts a decoded body into a decoded body of `to`, and counts what
    /// `to` cannot carry (in the order of `signals::DOWNGRADE_LOSSES`).
    pub convert: Convert,
}

/// A downgrade's conversion: a decoded body in, the converted decoded body
/// and the counts of what was lost out.
pub type Convert = fn(&[u8]) -> Result<(Vec<u8>, [u64; 3]), String>;

/// Merges decoded tenant bodies of one kind into one decoded body.
pub type Merge = fn(&[&[u8]], &mut Vec<u8>) -> Result<(), crate::wire::WireError>;

/// A test on a request's headers.
pub type HeaderTest = fn(&RequestHeaders<'_>) -> bool;

/// What negotiation reads of a push request.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHeaders<'a> {
    pub content_type: Option<&'a [u8]>,
    pub content_encoding: Option<&'a [u8]>,
    /// Whether `X-Prometheus-Remote-Write-Version` was sent.
    pub remote_write_version: bool,
}

/// The kind of a request, and the `Content-Encoding` layer around its body
/// to undo first (gzip around Loki's snappy protobuf), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub kind: &'static PushKind,
    pub layer: Option<Codec>,
}

/// Why no kind matched: a 415 with a reason label and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// `encoding` or `content_type` (`orgsplit_requests_rejected_total`).
    pub reason: &'static str,
    pub message: String,
}

/// Which configured upstream an endpoint's tenant requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `upstream`: Mimir's remote write endpoint.
    RemoteWrite = 0,
    /// `loki.upstream`.
    Loki = 1,
    /// `otlp.metrics.upstream` (Mimir's OTLP endpoint).
    OtlpMetrics = 2,
    /// `otlp.logs.upstream` (Loki's OTLP endpoint).
    OtlpLogs = 3,
    /// `otlp.traces.upstream` (Tempo).
    OtlpTraces = 4,
}

impl Destination {
    pub const ALL: [Destination; 5] = [
        Destination::RemoteWrite,
        Destination::Loki,
        Destination::OtlpMetrics,
        Destination::OtlpLogs,
        Destination::OtlpTraces,
    ];

    /// The setting that names it (for "not enabled" answers).
    pub fn setting(self) -> &'static str {
        match self {
            Destination::RemoteWrite => "upstream.url",
            Destination::Loki => "loki.upstream.url",
            Destination::OtlpMetrics => "otlp.metrics.upstream",
            Destination::OtlpLogs => "otlp.logs.upstream",
            Destination::OtlpTraces => "otlp.traces.upstream",
        }
    }
}

/// What an endpoint's own answer format is given: the answer the push
/// handler reached, and what it counted.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo<'a> {
    pub status: u16,
    /// Why, in words (empty on success).
    pub message: &'a str,
    /// Items a policy dropped (unmapped, outside the allowance) from a
    /// request that was otherwise accepted.
    pub rejected: u64,
    /// The request's `Content-Type` (answers come in its encoding).
    pub content_type: Option<&'a [u8]>,
}

/// An answer in an endpoint's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replied {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// An endpoint's answer format (OTLP's response messages); plain text when
/// an endpoint has none.
pub type Reply = fn(&ReplyTo<'_>) -> Replied;

/// An endpoint that takes pushes: its paths and how it tells which kind a
/// request is.
#[derive(Debug)]
pub struct Endpoint {
    pub paths: &'static [&'static str],
    /// The signal of what it takes.
    pub signal: Signal,
    /// Where its tenants' requests go.
    pub destination: Destination,
    /// Reads the headers: which kind, or 415.
    pub negotiate: fn(&RequestHeaders<'_>) -> Result<Negotiated, Unsupported>,
    /// Another endpoint that serves a request here that its headers say is
    /// for it (Cortex's old `/api/prom/push`: remote write senders too).
    pub also: Option<(HeaderTest, &'static Endpoint)>,
    /// How its answers are written, when not as plain text.
    pub reply: Option<Reply>,
}

impl Endpoint {
    /// The endpoint that serves a request with these headers: this one, or
    /// the one [`Endpoint::also`] names when its test holds.
    pub fn serving(&'static self, headers: &RequestHeaders<'_>) -> &'static Endpoint {
        match self.also {
            Some((test, other)) if test(headers) => other,
            _ => self,
        }
    }
}

/// The `Content-Encoding` of a request, trimmed and lower case; empty when
/// absent, `?` when not text.
pub fn content_encoding(headers: &RequestHeaders<'_>) -> String {
    headers
        .content_encoding
        .map(|v| {
            std::str::from_utf8(v)
                .unwrap_or("?")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The media type of a `Content-Type` value, lower case, without
/// parameters; empty when absent or not text.
pub fn media_type(content_type: Option<&[u8]>) -> String {
    content_type
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}
