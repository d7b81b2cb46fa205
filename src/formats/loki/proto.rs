//! Loki's protobuf push (`logproto.PushRequest`, snappy) as a [`Format`].
//!
//! ```text
//!  PushRequest { streams = 1: StreamAdapter { labels = 1, entries = 2, hash = 3 }, format = 2 }
//!  walk ─► each StreamAdapter: labels (UTF-8, within limits) ─► labels::scan
//!                             entries: plain_entry (timestamp, line: the common layout) ─ yes ─► counted
//!                                                                                       └─ no ──► every field checked
//!  append_series ─► field 1 with the StreamAdapter as it came
//! ```
//!
//! Invariant: `plain_entry` takes nothing that the field-by-field check
//! (`check_entry_fields`) refuses; it is only a faster yes for the
//! layout every client writes (property-tested below).
//!
//! A tenant's request is its streams' fields one after another, so two
//! tenant requests concatenated are one valid request (`CONCATENATES`).
//! The top-level `format` field (set by Loki itself, never by clients) is
//! not forwarded.

use bumpalo::Bump;

use super::{label_error, labels, Stream};
use crate::formats::{Format, PushItem};
use crate::signals::Counts;
use crate::wire::count;
use crate::wire::encode::put_bytes_field;
use crate::wire::{
    read_key, read_len, read_varint, skip_value, varint_end, wt, Hit, LabelQuery,
    LimitedItem as Limited, RequestLimits, WireError,
};

/// Loki's protobuf push.
#[derive(Debug, Default, Clone, Copy)]
pub struct LokiProto;

/// The `Content-Type` of a protobuf push.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The body, and room for the few routing values that had to be unescaped.
pub struct ProtoIndex<'a> {
    body: &'a [u8],
    arena: Bump,
}

impl Format for LokiProto {
    type Series<'a> = Stream<'a>;
    type Extra<'a> = std::convert::Infallible;
    type Batch = ();
    type Index<'a> = ProtoIndex<'a>;
    const CONCATENATES: bool = true;

    fn index<'a>(&self, body: &'a [u8], _: RequestLimits) -> Result<ProtoIndex<'a>, WireError> {
        Ok(ProtoIndex {
            body,
            arena: Bump::new(),
        })
    }

    fn walk<'a, E: From<WireError>>(
        &self,
        index: &'a ProtoIndex<'_>,
        query: &LabelQuery,
        limits: RequestLimits,
        mut visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        let body: &'a [u8] = index.body;
        let (mut streams, mut entries) = (0, 0);
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "PushRequest")?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    let msg = read_len(body, &mut pos, "stream")?;
                    count(&mut streams, limits.max_streams, Limited::Streams)?;
                    let s = stream(msg, query, limits, &mut entries, &index.arena)?;
                    visit(PushItem::Series(s))?;
                }
                (2, wt::LEN) => {
                    read_len(body, &mut pos, "format")?;
                }
                (1 | 2, _) => {
                    return Err(WireError::WireType {
                        message: "PushRequest",
                        field,
                        wire_type,
                    }
                    .into())
                }
                _ => skip_value(body, &mut pos, wire_type, "PushRequest", field)?,
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn key<'a>(s: &Self::Series<'a>) -> Option<Hit<'a>> {
        s.hit
    }

    #[inline(always)]
    fn family<'a>(_: &Self::Series<'a>) -> Option<&'a str> {
        None
    }

    #[inline(always)]
    fn counts(s: &Stream<'_>) -> Counts {
        s.counts()
    }

    fn describe(s: &Stream<'_>) -> String {
        describe_label_string(s.labels)
    }

    fn extra_family<'a>(extra: &Self::Extra<'a>) -> &'a str {
        match *extra {}
    }

    fn append_series(_: &mut (), out: &mut Vec<u8>, s: &Stream<'_>, without: Option<Hit<'_>>) {
        match without {
            None => put_bytes_field(out, 1, s.raw),
            Some(hit) => {
                // Label mode's remove_tenant_label: the stream with its
                // labels rewritten, every other field as it came.
                let labels = labels::without(s.labels, hit.field);
                let mut msg = Vec::with_capacity(s.raw.len());
                put_bytes_field(&mut msg, 1, labels.as_bytes());
                let mut pos = 0;
                while pos < s.raw.len() {
                    let start = pos;
                    // Validated by the walk.
                    let Ok((field, wire_type)) = read_key(s.raw, &mut pos, "stream") else {
                        break;
                    };
                    if skip_value(s.raw, &mut pos, wire_type, "stream", field).is_err() {
                        break;
                    }
                    if field != 1 {
                        msg.extend_from_slice(&s.raw[start..pos]);
                    }
                }
                put_bytes_field(out, 1, &msg);
            }
        }
    }

    fn append_extra(_: &mut (), _: &mut Vec<u8>, extra: &Self::Extra<'_>) {
        match *extra {}
    }

    fn finish(_: &Self::Index<'_>, (): (), _: &mut Vec<u8>) {}
}

/// Checks one `StreamAdapter` and finds its routing label.
fn stream<'a>(
    msg: &'a [u8],
    query: &LabelQuery,
    limits: RequestLimits,
    entries: &mut usize,
    arena: &'a Bump,
) -> Result<Stream<'a>, WireError> {
    let mut labels: Option<&'a str> = None;
    let mut own_entries = 0u32;
    let mut pos = 0;
    while pos < msg.len() {
        let (field, wire_type) = read_key(msg, &mut pos, "StreamAdapter")?;
        match (field, wire_type) {
            (1, wt::LEN) => {
                let bytes = read_len(msg, &mut pos, "stream labels")?;
                if labels.is_some() {
                    // Protobuf keeps the last; refuse rather than guess.
                    return Err(WireError::TwiceInStream("the labels field"));
                }
                if bytes.len() > limits.max_label_string_bytes {
                    return Err(WireError::LabelStringTooLong {
                        len: bytes.len(),
                        limit: limits.max_label_string_bytes,
                    });
                }
                labels = Some(std::str::from_utf8(bytes).map_err(|_| WireError::Utf8("string"))?);
            }
            (2, wt::LEN) => {
                let entry = read_len(msg, &mut pos, "entry")?;
                count(entries, limits.max_entries, Limited::Entries)?;
                check_entry(entry, limits)?;
                own_entries += 1;
            }
            (3, wt::VARINT) => {
                read_varint(msg, &mut pos)?;
            }
            (1..=3, _) => {
                return Err(WireError::WireType {
                    message: "StreamAdapter",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(msg, &mut pos, wire_type, "StreamAdapter", field)?,
        }
    }
    let labels = labels.unwrap_or("");
    if labels.is_empty() {
        return Err(WireError::StreamLabels("stream has no labels".into()));
    }
    let scan = labels::scan(labels, query, limits.max_labels).map_err(label_error)?;
    let hit = scan.best.map(|found| Hit {
        rank: found.rank,
        value: match found.value {
            std::borrow::Cow::Borrowed(v) => v,
            std::borrow::Cow::Owned(v) => arena.alloc_str(&v),
        },
        field: found.span,
    });
    Ok(Stream {
        raw: msg,
        hit,
        hit_name: "",
        labels,
        entries: own_entries,
    })
}

/// Checks one `EntryAdapter`: timestamp, line, structured metadata.
#[inline(always)]
fn check_entry(entry: &[u8], limits: RequestLimits) -> Result<(), WireError> {
    if plain_entry(entry, limits.max_line_bytes) {
        return Ok(());
    }
    check_entry_fields(entry, limits)
}

/// Whether `entry` is the layout every Loki client writes, and valid: a
/// timestamp of one-byte length holding `seconds` then `nanos` (either
/// may be absent), then the line within `max_line`, and nothing else.
///
/// The hand-written shortcut for the one thing every line pays: a bool,
/// no error values, each varint's end found with one load. Whatever it
/// does not take (structured metadata, fields in another order, anything
/// malformed) goes through [`check_entry_fields`], which says what is
/// wrong; so it can only be faster, never more lenient.
#[inline(always)]
fn plain_entry(entry: &[u8], max_line: usize) -> bool {
    let [0x0a, ts_len, ..] = *entry else {
        return false;
    };
    let ts_end = 2 + usize::from(ts_len);
    if ts_len >= 0x80 || ts_end > entry.len() {
        return false;
    }
    let mut pos = 2;
    for key in [0x08, 0x10] {
        if pos < ts_end && entry[pos] == key {
            let Some(end) = varint_end(entry, pos + 1) else {
                return false;
            };
            pos = end;
        }
    }
    // A varint that ran past the timestamp's end leaves `pos` beyond it.
    if pos != ts_end || entry.get(pos) != Some(&0x12) {
        return false;
    }
    let mut pos = pos + 1;
    let Ok(line) = read_varint(entry, &mut pos) else {
        return false;
    };
    line <= max_line as u64 && entry.len() - pos == line as usize
}

/// [`check_entry`]'s general path: any field order, structured metadata,
/// and the error that says what is wrong.
fn check_entry_fields(entry: &[u8], limits: RequestLimits) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < entry.len() {
        let (field, wire_type) = read_key(entry, &mut pos, "EntryAdapter")?;
        match (field, wire_type) {
            (1, wt::LEN) => check_scalars(read_len(entry, &mut pos, "timestamp")?, "Timestamp")?,
            (2, wt::LEN) => {
                let line = read_len(entry, &mut pos, "line")?;
                if line.len() > limits.max_line_bytes {
                    return Err(WireError::LineTooLong {
                        len: line.len(),
                        limit: limits.max_line_bytes,
                    });
                }
            }
            (3 | 4, wt::LEN) => check_pair(read_len(entry, &mut pos, "structured metadata")?)?,
            (1..=4, _) => {
                return Err(WireError::WireType {
                    message: "EntryAdapter",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(entry, &mut pos, wire_type, "EntryAdapter", field)?,
        }
    }
    Ok(())
}

/// A `Timestamp`: varints 1 and 2.
fn check_scalars(msg: &[u8], name: &'static str) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < msg.len() {
        let (field, wire_type) = read_key(msg, &mut pos, name)?;
        match (field, wire_type) {
            (1 | 2, wt::VARINT) => {
                read_varint(msg, &mut pos)?;
            }
            (1 | 2, _) => {
                return Err(WireError::WireType {
                    message: name,
                    field,
                    wire_type,
                })
            }
            _ => skip_value(msg, &mut pos, wire_type, name, field)?,
        }
    }
    Ok(())
}

/// A `LabelPairAdapter`: strings 1 and 2.
fn check_pair(msg: &[u8]) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < msg.len() {
        let (field, wire_type) = read_key(msg, &mut pos, "LabelPairAdapter")?;
        match (field, wire_type) {
            (1 | 2, wt::LEN) => {
                read_len(msg, &mut pos, "structured metadata")?;
            }
            (1 | 2, _) => {
                return Err(WireError::WireType {
                    message: "LabelPairAdapter",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(msg, &mut pos, wire_type, "LabelPairAdapter", field)?,
        }
    }
    Ok(())
}

/// A label string shortened for error messages.
pub(crate) fn describe_label_string(labels: &str) -> String {
    const MAX: usize = 200;
    if labels.len() <= MAX {
        return labels.to_string();
    }
    let mut end = MAX;
    while !labels.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &labels[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::loki::pb;
    use proptest::prelude::*;
    use prost::Message;

    const MAX_LINE: usize = 64;

    fn entry(seconds: i64, nanos: i32, line: &[u8], metadata: bool) -> Vec<u8> {
        let pair = |n: &str| pb::LabelPairAdapter {
            name: n.into(),
            value: b"v".to_vec(),
        };
        pb::EntryAdapter {
            timestamp: Some(pb::Timestamp { seconds, nanos }),
            line: line.to_vec(),
            structured_metadata: if metadata {
                vec![pair("trace_id")]
            } else {
                vec![]
            },
            parsed: vec![],
        }
        .encode_to_vec()
    }

    fn limits() -> RequestLimits {
        RequestLimits {
            max_line_bytes: MAX_LINE,
            ..RequestLimits::default()
        }
    }

    /// What clients send takes the shortcut, and the line limit holds on
    /// it to the byte: at the limit taken, one past it refused.
    #[test]
    fn entries_as_clients_write_them_take_the_shortcut_within_the_line_limit() {
        for (seconds, nanos) in [(1_700_000_000, 999_999_999), (0, 0), (1, 1), (1 << 40, 7)] {
            for len in [1, 2, MAX_LINE - 1, MAX_LINE] {
                let e = entry(seconds, nanos, &vec![b'x'; len], false);
                assert!(plain_entry(&e, MAX_LINE), "{seconds}.{nanos}, line {len}");
                assert_eq!(check_entry(&e, limits()), Ok(()));
            }
            // An empty line is no field at all: the general path takes it.
            let e = entry(seconds, nanos, b"", false);
            assert!(!plain_entry(&e, MAX_LINE));
            assert_eq!(check_entry(&e, limits()), Ok(()));
            let e = entry(seconds, nanos, &[b'x'; MAX_LINE + 1], false);
            assert!(!plain_entry(&e, MAX_LINE));
            assert_eq!(
                check_entry(&e, limits()),
                Err(WireError::LineTooLong {
                    len: MAX_LINE + 1,
                    limit: MAX_LINE
                })
            );
        }
        // Structured metadata and negative seconds (ten-byte varints) take
        // the general path, and are accepted there.
        for e in [
            entry(1_700_000_000, 5, b"line", true),
            entry(-1, 5, b"line", false),
        ] {
            assert!(!plain_entry(&e, MAX_LINE));
            assert_eq!(check_entry(&e, limits()), Ok(()));
        }
    }

    /// Entries that look like the plain layout but are not valid are left
    /// to the general path, which refuses them.
    #[test]
    fn malformed_entries_that_look_plain_are_refused() {
        let cases: &[&[u8]] = &[
            // seconds' varint runs past the end of the timestamp
            &[0x0a, 0x02, 0x08, 0x80, 0x01, 0x12, 0x01, b'x', 0, 0, 0, 0],
            // timestamp longer than the entry
            &[0x0a, 0x20, 0x08, 0x01],
            // line longer than what is left
            &[0x0a, 0x02, 0x08, 0x01, 0x12, 0x05, b'x'],
            // a field 0 after the line
            &[0x0a, 0x00, 0x12, 0x01, b'x', 0x00],
            // nanos with the wrong wire type
            &[
                0x0a, 0x02, 0x11, 0x01, 0x12, 0x01, b'x', 0, 0, 0, 0, 0, 0, 0,
            ],
        ];
        for &e in cases {
            assert!(!plain_entry(e, MAX_LINE), "{e:?}");
            assert!(check_entry(e, limits()).is_err(), "{e:?}");
        }
    }

    proptest! {
        /// The shortcut is never more lenient than the general path, on
        /// any bytes, and on valid entries with a byte changed or cut off.
        #[test]
        fn the_shortcut_takes_nothing_the_general_path_refuses(
            seconds in any::<i64>(),
            nanos in any::<i32>(),
            line in proptest::collection::vec(any::<u8>(), 0..80),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            noise in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut changed = entry(seconds, nanos, &line, false);
            let i = at.index(changed.len());
            changed[i] = byte;
            let valid = entry(seconds, nanos, &line, false);
            let short = &valid[..cut.index(valid.len())];
            for e in [&valid[..], &changed[..], short, &noise[..]] {
                if plain_entry(e, MAX_LINE) {
                    prop_assert_eq!(check_entry_fields(e, limits()), Ok(()), "{:?}", e);
                }
            }
            prop_assert_eq!(check_entry(&valid, limits()).is_ok(), line.len() <= MAX_LINE);
        }
    }
}
