//! Loki log pushes as [`Format`](super::Format)s: the protobuf
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

use crate::signals::Counts;
use crate::wire::{Hit, WireError};

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
