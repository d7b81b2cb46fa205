//! Loki's JSON push as a [`Format`]:
//! `{"streams":[{"stream":{"name":"value",…},"values":[["<ns>","<line>",{…}],…]},…]}`.
//!
//! ```text
//!  index ─► the top-level object: its "streams" array, each stream object borrowed as text
//!  walk  ─► each stream: "stream" (routing label, label count and bytes),
//!           "values" (timestamp an integer, line within limits, structured metadata strings)
//!  batch ─► {"streams":[ stream text, stream text, … ]}
//! ```
//!
//! Parsing is serde_json's (a full, strict JSON parser) driven by visitors
//! that keep nothing but counts and the routing value: a string is copied
//! only when it had escapes and is the routing value (into the index's
//! arena), so a push costs no allocation per stream or entry.
//!
//! Loki reads this format with a case-insensitive decoder that keeps the
//! last of repeated keys; so that orgsplit and Loki cannot read different
//! streams or labels from one body, a key `streams`, `stream` or `values`
//! that appears twice (in any letter case) is refused, as is a routing label
//! that appears twice. The legacy form (`labels`/`entries`, the old
//! `/api/prom/push` JSON) is refused with a clear message.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use bumpalo::Bump;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Stream;
use crate::formats::{Format, PushItem};
use crate::signals::Counts;
use crate::wire::{Hit, LabelQuery, LimitedItem as Limited, RequestLimits, WireError};

/// Loki's JSON push.
#[derive(Debug, Default, Clone, Copy)]
pub struct LokiJson;

/// The `Content-Type` of a JSON push.
pub const CONTENT_TYPE: &str = "application/json";

/// The stream objects of a push, and room for routing values that had to
/// be unescaped.
pub struct JsonIndex<'a> {
    streams: Vec<&'a RawValue>,
    arena: Bump,
}

impl Format for LokiJson {
    type Series<'a> = Stream<'a>;
    type Extra<'a> = std::convert::Infallible;
    type Batch = ();
    type Index<'a> = JsonIndex<'a>;
    /// Two JSON documents one after the other are not one document.
    const CONCATENATES: bool = false;

    fn index<'a>(&self, body: &'a [u8], limits: RequestLimits) -> Result<JsonIndex<'a>, WireError> {
        let over = Cell::new(None);
        let mut streams = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(body);
        let top = Top {
            streams: &mut streams,
            limit: limits.max_streams,
            over: &over,
        };
        top.deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                over.take()
                    .unwrap_or_else(|| WireError::Json(e.to_string()))
            })?;
        Ok(JsonIndex {
            streams,
            arena: Bump::new(),
        })
    }

    fn walk<'a, E: From<WireError>>(
        &self,
        index: &'a JsonIndex<'_>,
        query: &LabelQuery,
        limits: RequestLimits,
        mut visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ctx = Ctx {
            query,
            limits,
            entries: Cell::new(0),
            over: Cell::new(None),
            arena: &index.arena,
        };
        for raw in &index.streams {
            let text: &'a str = raw.get();
            let mut found = Found::default();
            let mut de = serde_json::Deserializer::from_str(text);
            StreamSeed {
                ctx: &ctx,
                out: &mut found,
            }
            .deserialize(&mut de)
            .map_err(|e| {
                ctx.over
                    .take()
                    .unwrap_or_else(|| WireError::Json(e.to_string()))
            })?;
            if found.labels == 0 {
                return Err(WireError::StreamLabels("stream has no labels".into()).into());
            }
            visit(PushItem::Series(Stream {
                raw: text.as_bytes(),
                hit: found.best.map(|(rank, value, _)| Hit {
                    rank,
                    value,
                    field: (0, 0),
                }),
                hit_name: found.best.map_or("", |(_, _, name)| name),
                labels: "",
                entries: found.entries,
            }))?;
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
        let labels = std::str::from_utf8(s.raw)
            .ok()
            .and_then(|t| serde_json::from_str::<BTreeMap<String, &RawValue>>(t).ok())
            .and_then(|o| {
                o.into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("stream"))
                    .map(|(_, v)| v.get().to_string())
            })
            .unwrap_or_default();
        super::proto::describe_label_string(&labels)
    }

    fn extra_family<'a>(extra: &Self::Extra<'a>) -> &'a str {
        match *extra {}
    }

    fn append_series(_: &mut (), out: &mut Vec<u8>, s: &Stream<'_>, without: Option<Hit<'_>>) {
        out.extend_from_slice(if out.is_empty() { OPEN } else { b"," });
        match without {
            None => out.extend_from_slice(s.raw),
            Some(_) => rewrite_without(out, s.raw, s.hit_name),
        }
    }

    fn append_extra(_: &mut (), _: &mut Vec<u8>, extra: &Self::Extra<'_>) {
        match *extra {}
    }

    fn finish(_: &Self::Index<'_>, (): (), out: &mut Vec<u8>) {
        if out.is_empty() {
            out.extend_from_slice(OPEN);
        }
        out.extend_from_slice(CLOSE);
    }
}

/// How a tenant batch begins and ends: `{"streams":[` stream, stream, … `]}`
/// (which [`crate::formats::json_batch::merge`] relies on).
const OPEN: &[u8] = br#"{"streams":["#;
const CLOSE: &[u8] = b"]}";

/// Label mode's `remove_tenant_label`: the stream object again, without
/// the label `name` (the slow path, taken only in that mode). The values
/// stay as they came.
fn rewrite_without(out: &mut Vec<u8>, raw: &[u8], name: &str) {
    let Ok(mut object) = serde_json::from_slice::<BTreeMap<String, &RawValue>>(raw) else {
        out.extend_from_slice(raw);
        return;
    };
    let labels_key = object
        .keys()
        .find(|k| k.eq_ignore_ascii_case("stream"))
        .cloned();
    let rewritten = labels_key.as_ref().and_then(|key| {
        let mut labels: BTreeMap<String, String> = serde_json::from_str(object[key].get()).ok()?;
        labels.remove(name);
        serde_json::value::to_raw_value(&labels).ok()
    });
    if let (Some(key), Some(labels)) = (labels_key, rewritten.as_deref()) {
        object.insert(key, labels);
    }
    // Serialising a map of strings and raw values cannot fail.
    let _ = serde_json::to_writer(out, &object);
}

/// What the walk keeps while reading a stream.
#[derive(Default)]
struct Found<'a> {
    /// Rank, value and label name of the best routing label.
    best: Option<(usize, &'a str, &'a str)>,
    labels: usize,
    entries: u32,
}

/// What every visitor of one walk shares.
struct Ctx<'q, 'a> {
    query: &'q LabelQuery,
    limits: RequestLimits,
    /// Entries so far in the request.
    entries: Cell<usize>,
    /// A limit that was exceeded (serde errors carry only text).
    over: Cell<Option<WireError>>,
    arena: &'a Bump,
}

impl Ctx<'_, '_> {
    fn exceed<E: de::Error>(&self, e: WireError) -> E {
        let text = e.to_string();
        self.over.set(Some(e));
        E::custom(text)
    }
}

/// A JSON string, borrowed from the body unless it had escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON string, measured (in bytes, unescaped) and not kept.
struct StrLen;

impl<'de> DeserializeSeed<'de> for StrLen {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            // serde_json hands escaped strings over in its own reused
            // buffer: measuring them allocates nothing.
            fn visit_str<E>(self, v: &str) -> Result<usize, E> {
                Ok(v.len())
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level object: its `streams` array.
struct Top<'s, 'de> {
    streams: &'s mut Vec<&'de RawValue>,
    limit: usize,
    over: &'s Cell<Option<WireError>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"streams": [...]}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(Str(key)) = map.next_key()? {
            if key.eq_ignore_ascii_case("streams") {
                if seen {
                    return Err(de::Error::custom(r#"key "streams" appears twice"#));
                }
                seen = true;
                map.next_value_seed(Streams {
                    out: &mut *self.streams,
                    limit: self.limit,
                    over: self.over,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `streams` array: each stream object kept as text.
struct Streams<'s, 'de> {
    out: &'s mut Vec<&'de RawValue>,
    limit: usize,
    over: &'s Cell<Option<WireError>>,
}

impl<'de> DeserializeSeed<'de> for Streams<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Streams<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of streams")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if self.out.len() >= self.limit {
                let e = WireError::TooMany {
                    item: Limited::Streams,
                    limit: self.limit,
                };
                let text = e.to_string();
                self.over.set(Some(e));
                return Err(de::Error::custom(text));
            }
            if !raw.get().starts_with('{') {
                return Err(de::Error::custom("a stream is not an object"));
            }
            self.out.push(raw);
        }
        Ok(())
    }
}

/// One stream object.
struct StreamSeed<'c, 'q, 'a> {
    ctx: &'c Ctx<'q, 'a>,
    out: &'c mut Found<'a>,
}

impl<'a> DeserializeSeed<'a> for StreamSeed<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for StreamSeed<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"a stream object {"stream": {...}, "values": [...]}"#)
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut labels, mut values) = (false, false);
        while let Some(Str(key)) = map.next_key()? {
            if key.eq_ignore_ascii_case("stream") {
                if std::mem::replace(&mut labels, true) {
                    return Err(self.ctx.exceed(WireError::TwiceInStream(r#"key "stream""#)));
                }
                map.next_value_seed(Labels {
                    ctx: self.ctx,
                    out: &mut *self.out,
                })?;
            } else if key.eq_ignore_ascii_case("values") {
                if std::mem::replace(&mut values, true) {
                    return Err(self.ctx.exceed(WireError::TwiceInStream(r#"key "values""#)));
                }
                map.next_value_seed(Values {
                    ctx: self.ctx,
                    out: &mut *self.out,
                })?;
            } else if key.eq_ignore_ascii_case("labels") || key.eq_ignore_ascii_case("entries") {
                return Err(de::Error::custom(
                    r#"the legacy JSON push ("labels"/"entries") is not supported; send {"streams":[{"stream":{...},"values":[[...]]}]}"#,
                ));
            } else {
                // Forwarded with the stream, so held to the same strict
                // JSON as the rest of it (serde's `IgnoredAny` would let a
                // lone surrogate escape through to Loki).
                map.next_value::<Strict>()?;
            }
        }
        Ok(())
    }
}

/// Any JSON value, checked as strictly as the values orgsplit reads (every
/// string's escapes decoded) and not kept: what an unknown key of a stream
/// holds, which travels to Loki with the stream.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Strict;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// A stream's `stream` map: counted, and searched for the routing label.
struct Labels<'c, 'q, 'a> {
    ctx: &'c Ctx<'q, 'a>,
    out: &'c mut Found<'a>,
}

impl<'a> DeserializeSeed<'a> for Labels<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for Labels<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of label names and string values")
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let limits = ctx.limits;
        let (mut bytes, mut seen) = (0usize, 0u64);
        while let Some(Str(name)) = map.next_key()? {
            let Str(value) = map.next_value()?;
            self.out.labels += 1;
            if self.out.labels > limits.max_labels {
                return Err(ctx.exceed(WireError::TooManyLabels {
                    count: self.out.labels,
                    limit: limits.max_labels,
                }));
            }
            // As long as the label string Loki makes of them: {name="value", }
            bytes += name.len() + value.len() + 5;
            if bytes > limits.max_label_string_bytes {
                return Err(ctx.exceed(WireError::LabelStringTooLong {
                    len: bytes,
                    limit: limits.max_label_string_bytes,
                }));
            }
            let Some(rank) = ctx.query.rank(name.as_bytes()) else {
                continue;
            };
            let bit = 1u64.checked_shl(rank as u32).unwrap_or(0);
            if seen & bit != 0 {
                return Err(ctx.exceed(WireError::StreamLabels(format!(
                    "stream has label {name:?} twice"
                ))));
            }
            seen |= bit;
            if !value.is_empty() && self.out.best.is_none_or(|(r, _, _)| rank < r) {
                let keep = |s: Cow<'a, str>| -> &'a str {
                    match s {
                        Cow::Borrowed(s) => s,
                        Cow::Owned(s) => ctx.arena.alloc_str(&s),
                    }
                };
                self.out.best = Some((rank, keep(value), keep(name)));
            }
        }
        Ok(())
    }
}

/// A stream's `values`: each entry checked and counted.
struct Values<'c, 'q, 'a> {
    ctx: &'c Ctx<'q, 'a>,
    out: &'c mut Found<'a>,
}

impl<'a> DeserializeSeed<'a> for Values<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Values<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of entries")
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(()) = seq.next_element_seed(Entry { ctx })? {
            let n = ctx.entries.get() + 1;
            if n > ctx.limits.max_entries {
                return Err(ctx.exceed(WireError::TooMany {
                    item: Limited::Entries,
                    limit: ctx.limits.max_entries,
                }));
            }
            ctx.entries.set(n);
            self.out.entries += 1;
        }
        Ok(())
    }
}

/// One entry: `["<unix ns>", "<line>"]` or `["<unix ns>", "<line>", {structured metadata}]`.
struct Entry<'c, 'q, 'a> {
    ctx: &'c Ctx<'q, 'a>,
}

impl<'a> DeserializeSeed<'a> for Entry<'_, '_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> Visitor<'a> for Entry<'_, '_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an entry ["<unix epoch in nanoseconds>", "<log line>"]"#)
    }
    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(Str(ts)) = seq.next_element()? else {
            return Err(de::Error::custom("an entry has no timestamp"));
        };
        if ts.parse::<i64>().is_err() {
            return Err(de::Error::custom(format!(
                "entry timestamp {ts:?} is not an integer of nanoseconds"
            )));
        }
        let Some(len) = seq.next_element_seed(StrLen)? else {
            return Err(de::Error::custom("an entry has no line"));
        };
        let limit = self.ctx.limits.max_line_bytes;
        if len > limit {
            return Err(self.ctx.exceed(WireError::LineTooLong { len, limit }));
        }
        if seq.next_element_seed(Metadata)?.is_some() && seq.next_element::<IgnoredAny>()?.is_some()
        {
            return Err(de::Error::custom("an entry has more than three elements"));
        }
        Ok(())
    }
}

/// An entry's structured metadata: an object of strings.
struct Metadata;

impl<'de> DeserializeSeed<'de> for Metadata {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Metadata {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("structured metadata: an object of string values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(StrLen)?.is_some() {
            map.next_value_seed(StrLen)?;
        }
        Ok(())
    }
}
