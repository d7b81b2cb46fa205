//! OTLP JSON (the protobuf JSON mapping, as OTLP/HTTP specifies it): the
//! same walk as `super::proto`, over borrowed raw JSON values.
//!
//! ```text
//!  body ─► each level's object read once: its fields into (key, raw value) entries,
//!          its list (resources, scopes, items) walked element by element as it is read
//!          (counted as they come, never collected)
//!       ─► items: raw JSON values, routed like the protobuf ones
//!  tenant ─► {"resourceX":[ whole resources as they came | levels re-opened around items ]}
//! ```
//!
//! Field names are read in lowerCamelCase and in the proto's snake_case
//! (protobuf JSON parsers accept both); each tenant's request is written
//! in lowerCamelCase for the levels orgsplit opens and exactly as it came
//! for everything inside them. Unknown fields are kept. A namespace
//! attribute's string value is borrowed as it is written: one written with
//! JSON escapes is compared escaped (no namespace name needs one). Values
//! nest at most [`MAX_VALUE_DEPTH`] deep, checked on the raw text before
//! anything parses them; serde_json's own limit (128) bounds the rest.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::proto::MAX_VALUE_DEPTH;
use super::{describe, OtlpSignal};
use crate::formats::{Format, PushItem};
use crate::request_limits::{LimitedItem, RequestLimits};
use crate::signals::Counts;
use crate::wire::{count, Hit, LabelQuery, WireError};

/// OTLP JSON of one signal.
#[derive(Debug, Clone, Copy)]
pub struct OtlpJson(pub OtlpSignal);

/// Where a JSON item sits (see [`super::Context`]): sequence numbers and
/// the raw objects of its resource, scope, metric and data wrapper (with
/// the key the wrapper was under, as written).
#[derive(Debug, Clone, Copy)]
pub struct JsonContext<'a> {
    resource: (u32, &'a RawValue),
    scope: (u32, &'a RawValue),
    metric: (u32, Option<&'a RawValue>),
    data: (u32, &'a str, Option<&'a RawValue>),
}

/// A whole resource (`at: None`) or one item, as raw JSON.
#[derive(Debug, Clone, Copy)]
pub struct JsonItem<'a> {
    signal: OtlpSignal,
    raw: &'a RawValue,
    at: Option<JsonContext<'a>>,
    hit: Option<Hit<'a>>,
    counts: Counts,
}

/// A tenant's JSON request being built.
#[derive(Debug, Default)]
pub struct JsonNest {
    started: bool,
    /// Whether the top-level list has an element yet.
    any: bool,
    /// Per open level: its sequence number and whether its list of
    /// children has an element yet.
    open: [Option<(u32, bool)>; 4],
}

impl Format for OtlpJson {
    type Series<'a> = JsonItem<'a>;
    type Extra<'a> = Infallible;
    type Batch = JsonNest;
    type Index<'a> = &'a [u8];
    const CONCATENATES: bool = false;

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
        let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
        let mut walk = JsonWalk {
            signal: self.0,
            names: Names::of(self.0),
            query,
            limits,
            tally: [0; 8],
            seq: 0,
        };
        walk.request(text, &mut |item| visit(PushItem::Series(item)))
    }

    fn key<'a>(item: &Self::Series<'a>) -> Option<Hit<'a>> {
        item.hit
    }

    fn family<'a>(_: &Self::Series<'a>) -> Option<&'a str> {
        None
    }

    fn counts(item: &JsonItem<'_>) -> Counts {
        item.counts
    }

    fn describe(item: &JsonItem<'_>) -> String {
        describe(item.at.is_none(), item.hit.map(|h| h.value))
    }

    fn extra_family<'a>(extra: &Infallible) -> &'a str {
        match *extra {}
    }

    fn append_series(
        batch: &mut JsonNest,
        out: &mut Vec<u8>,
        item: &JsonItem<'_>,
        _: Option<Hit<'_>>,
    ) {
        batch.append(out, item);
    }

    fn append_extra(_: &mut JsonNest, _: &mut Vec<u8>, extra: &Infallible) {
        match *extra {}
    }

    fn finish(_: &Self::Index<'_>, batch: JsonNest, out: &mut Vec<u8>) {
        batch.finish(out);
    }
}

/// The JSON names of one signal's levels: (lowerCamelCase, snake_case).
struct Names {
    resources: (&'static str, &'static str),
    scopes: (&'static str, &'static str),
    items: (&'static str, &'static str),
}

impl Names {
    fn of(signal: OtlpSignal) -> Names {
        match signal {
            OtlpSignal::Metrics => Names {
                resources: ("resourceMetrics", "resource_metrics"),
                scopes: ("scopeMetrics", "scope_metrics"),
                items: ("metrics", "metrics"),
            },
            OtlpSignal::Logs => Names {
                resources: ("resourceLogs", "resource_logs"),
                scopes: ("scopeLogs", "scope_logs"),
                items: ("logRecords", "log_records"),
            },
            OtlpSignal::Traces => Names {
                resources: ("resourceSpans", "resource_spans"),
                scopes: ("scopeSpans", "scope_spans"),
                items: ("spans", "spans"),
            },
        }
    }
}

/// The metric data wrappers, as (camelCase, snake_case, carries
/// exemplars, a float point).
const DATA: [(&str, &str, bool); 5] = [
    ("gauge", "gauge", true),
    ("sum", "sum", true),
    ("histogram", "histogram", false),
    ("exponentialHistogram", "exponential_histogram", false),
    ("summary", "summary", false),
];

fn bad(message: impl Into<String>) -> WireError {
    WireError::OtlpJson(message.into())
}

type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// An object key, borrowed from the body unless it was written with
/// escapes (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The entries of a JSON object, or an error if it is not one (at most
/// `limit` of them).
fn object<'a>(raw: &'a RawValue, what: &str, limit: usize) -> Result<Entries<'a>, WireError> {
    struct Obj(usize);
    impl<'de> Visitor<'de> for Obj {
        type Value = Entries<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
            let mut entries = Vec::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if entries.len() == self.0 {
                    return Err(de::Error::custom(format!(
                        "an object with more than {} fields",
                        self.0
                    )));
                }
                entries.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de::Deserializer::deserialize_map(&mut de, Obj(limit)).map_err(|e| bad(format!("{what}: {e}")))
}

/// The value under `name` (either spelling), `null` being absent.
///
/// A field given twice (in either spelling) is refused: JSON decoders
/// disagree on which one counts, and orgsplit must read the namespace
/// the upstream will.
fn get<'a>(
    entries: &Entries<'a>,
    (camel, snake): (&str, &str),
) -> Result<Option<&'a RawValue>, WireError> {
    let mut found = entries.iter().filter(|(k, _)| k == camel || k == snake);
    let first = found.next().map(|(_, v)| *v);
    if found.next().is_some() {
        return Err(bad(format!("field {camel:?} appears twice in one object")));
    }
    Ok(first.filter(|v| v.get() != "null"))
}

/// Calls `each` for every element of a JSON array as it is read, counting
/// them with `count` first; the array is never collected.
fn for_each<'a, E: From<WireError>>(
    raw: &'a RawValue,
    what: &str,
    mut each: impl FnMut(&'a RawValue) -> Result<(), E>,
) -> Result<(), E> {
    struct Each<'f, F, E> {
        each: &'f mut F,
        failed: &'f mut Option<E>,
    }
    impl<'de, F, E> Visitor<'de> for Each<'_, F, E>
    where
        F: FnMut(&'de RawValue) -> Result<(), E>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                if let Err(e) = (self.each)(element) {
                    *self.failed = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    impl<'de, F, E> DeserializeSeed<'de> for Each<'_, F, E>
    where
        F: FnMut(&'de RawValue) -> Result<(), E>,
    {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let result = Each {
        each: &mut each,
        failed: &mut failed,
    }
    .deserialize(&mut de);
    match (result, failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(bad(format!("{what}: {e}")).into()),
        (Ok(()), None) => Ok(()),
    }
}

/// [`object`] and [`for_each`] in one pass: the object `text` is read into
/// entries, except that the elements of its list under `list` (either
/// spelling) are handed to `each`, with the entries read so far, as the
/// object is read, once `ready` holds for those entries (so a level is read
/// once, not once for its fields and again for its list). A list that
/// comes before the fields `ready` waits for is kept as an entry instead,
/// and the second value returned is `false`: the caller walks it after.
///
/// The list under both spellings, or twice, is refused like any field
/// given twice ([`get`]); `null` is an absent list.
fn object_walking<'a, E: From<WireError>>(
    text: &'a str,
    what: &str,
    list: (&str, &str),
    ready: impl Fn(&Entries<'a>) -> bool,
    mut each: impl FnMut(&Entries<'a>, &'a RawValue) -> Result<(), E>,
) -> Result<(Entries<'a>, bool), E> {
    struct Obj<'f, 'a, R, F, E> {
        list: (&'f str, &'f str),
        ready: &'f R,
        each: &'f mut F,
        entries: &'f mut Entries<'a>,
        walked: &'f mut bool,
        failed: &'f mut Option<E>,
    }
    impl<'a, R, F, E> Visitor<'a> for Obj<'_, 'a, R, F, E>
    where
        R: Fn(&Entries<'a>) -> bool,
        F: FnMut(&Entries<'a>, &'a RawValue) -> Result<(), E>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = false;
            while let Some(Key(key)) = map.next_key::<Key<'a>>()? {
                if self.entries.len() == MAX_FIELDS {
                    return Err(de::Error::custom(format!(
                        "an object with more than {MAX_FIELDS} fields"
                    )));
                }
                let is_list = key == self.list.0 || key == self.list.1;
                if is_list {
                    if seen {
                        return Err(de::Error::custom(format!(
                            "field {:?} appears twice in one object",
                            self.list.0
                        )));
                    }
                    seen = true;
                    if (self.ready)(self.entries) {
                        *self.walked = true;
                        let entries: &Entries<'a> = self.entries;
                        let each = &mut *self.each;
                        let failed = &mut *self.failed;
                        map.next_value_seed(Elements(|element| {
                            each(entries, element).map_err(|e| {
                                *failed = Some(e);
                                "stopped"
                            })
                        }))?;
                        continue;
                    }
                }
                self.entries.push((key, map.next_value::<&'a RawValue>()?));
            }
            Ok(())
        }
    }
    /// A list's elements, each handed over as it is read (`null`: none).
    struct Elements<F>(F);
    impl<'a, F: FnMut(&'a RawValue) -> Result<(), &'static str>> Visitor<'a> for Elements<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_unit<X: de::Error>(self) -> Result<(), X> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'a>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(element) = seq.next_element::<&'a RawValue>()? {
                (self.0)(element).map_err(de::Error::custom)?;
            }
            Ok(())
        }
    }
    impl<'a, F: FnMut(&'a RawValue) -> Result<(), &'static str>> DeserializeSeed<'a> for Elements<F> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let (mut entries, mut walked, mut failed) = (Vec::new(), false, None);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de::Deserializer::deserialize_map(
        &mut de,
        Obj {
            list,
            ready: &ready,
            each: &mut each,
            entries: &mut entries,
            walked: &mut walked,
            failed: &mut failed,
        },
    )
    .and_then(|()| de.end());
    match (result, failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(bad(format!("{what}: {e}")).into()),
        (Ok(()), None) => Ok((entries, walked)),
    }
}

/// A resource's own field (one spelling in both forms).
const RESOURCE: (&str, &str) = ("resource", "resource");

/// How deep arrays and objects nest in a raw JSON value (strings skipped).
fn depth(raw: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in raw.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The text of a JSON string value as written (between the quotes), if it
/// is a string.
fn string_text(raw: &RawValue) -> Option<&str> {
    let text = raw.get();
    text.strip_prefix('"')?.strip_suffix('"')
}

struct JsonWalk<'q> {
    signal: OtlpSignal,
    names: Names,
    query: &'q LabelQuery,
    limits: RequestLimits,
    /// Resources, scopes, metrics, points, records, spans, events and
    /// links, exemplars.
    tally: [usize; 8],
    seq: u32,
}

/// Most fields of one JSON object orgsplit reads (OTLP's largest message
/// has 16).
const MAX_FIELDS: usize = 256;

impl<'q> JsonWalk<'q> {
    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn tally(&mut self, which: usize, item: LimitedItem) -> Result<(), WireError> {
        let limit = match item {
            LimitedItem::Resources | LimitedItem::Scopes | LimitedItem::Metrics => {
                self.limits.max_series
            }
            LimitedItem::DataPoints | LimitedItem::Spans => self.limits.max_samples,
            LimitedItem::LogRecords => self.limits.max_entries,
            _ => self.limits.max_exemplars,
        };
        count(&mut self.tally[which], limit, item)
    }

    /// The whole body: its resources walked as it is read.
    fn request<'a, E: From<WireError>>(
        &mut self,
        text: &'a str,
        visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let list = self.names.resources;
        object_walking(
            text,
            "request",
            list,
            |_| true,
            |_, resource| self.resource(resource, visit),
        )?;
        Ok(())
    }

    fn resource<'a, E: From<WireError>>(
        &mut self,
        raw: &'a RawValue,
        visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.tally(0, LimitedItem::Resources)?;
        let id = self.next_seq();
        // Whether the resource goes whole depends on its attributes, so
        // its scopes are walked as the object is read only when they come
        // after its `resource` (as every SDK writes them).
        let mut hit = None;
        let mut read = false;
        let mut total = Counts::default();
        let scopes = self.names.scopes;
        let (entries, walked) = object_walking(
            raw.get(),
            self.names.resources.0,
            scopes,
            |entries| {
                entries
                    .iter()
                    .any(|(k, _)| k == RESOURCE.0 || k == RESOURCE.1)
            },
            |entries, scope| {
                if !read {
                    read = true;
                    hit = self.resource_hit(entries)?;
                }
                self.resource_scope(id, raw, scope, hit.is_some(), &mut total, visit)
            },
        )?;
        if read {
            // Read before the scopes: only a `resource` given again after
            // them is left to refuse.
            get(&entries, RESOURCE)?;
        } else {
            // No scopes, or scopes first: the attributes are read now.
            hit = self.resource_hit(&entries)?;
        }
        if !walked {
            if let Some(list) = get(&entries, scopes)? {
                let whole = hit.is_some();
                for_each(list, scopes.0, |scope| {
                    self.resource_scope(id, raw, scope, whole, &mut total, visit)
                })?;
            }
        }
        if let Some(hit) = hit {
            total.series = 1;
            visit(JsonItem {
                signal: self.signal,
                raw,
                at: None,
                hit: Some(hit),
                counts: total,
            })?;
        }
        Ok(())
    }

    /// The routing hit among a resource's attributes (checked and counted).
    fn resource_hit<'a>(&self, entries: &Entries<'a>) -> Result<Option<Hit<'a>>, WireError> {
        let mut hit = None;
        if let Some(resource) = get(entries, RESOURCE)? {
            let resource = object(resource, "resource", MAX_FIELDS)?;
            if let Some(attributes) = get(&resource, ("attributes", "attributes"))? {
                self.attributes(attributes, &mut hit)?;
            }
        }
        Ok(hit)
    }

    /// One scope of the resource `raw` (sequence number `id`).
    fn resource_scope<'a, E: From<WireError>>(
        &mut self,
        id: u32,
        raw: &'a RawValue,
        scope: &'a RawValue,
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = JsonContext {
            resource: (id, raw),
            scope: (0, scope),
            metric: (0, None),
            data: (0, "", None),
        };
        self.scope(at, scope, whole, total, visit)
    }

    fn scope<'a, E: From<WireError>>(
        &mut self,
        mut at: JsonContext<'a>,
        raw: &'a RawValue,
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.tally(1, LimitedItem::Scopes)?;
        at.scope = (self.next_seq(), raw);
        // Items do not depend on the scope's own fields: walked as read.
        let (entries, _) = object_walking(
            raw.get(),
            self.names.scopes.0,
            self.names.items,
            |_| true,
            |_, item| match self.signal {
                OtlpSignal::Metrics => self.metric(at, item, whole, total, visit),
                OtlpSignal::Logs | OtlpSignal::Traces => {
                    let (hit, counts) = self.record_or_span(item)?;
                    emit(self.signal, item, at, hit, counts, whole, total, visit)
                }
            },
        )?;
        if let Some(scope) = get(&entries, ("scope", "scope"))? {
            let scope = object(scope, "scope", MAX_FIELDS)?;
            if let Some(attributes) = get(&scope, ("attributes", "attributes"))? {
                self.attributes(attributes, &mut None)?;
            }
        }
        Ok(())
    }

    fn metric<'a, E: From<WireError>>(
        &mut self,
        mut at: JsonContext<'a>,
        raw: &'a RawValue,
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.tally(2, LimitedItem::Metrics)?;
        at.metric = (self.next_seq(), Some(raw));
        let entries = object(raw, "metric", MAX_FIELDS)?;
        for (key, value) in &entries {
            let Some(&(_, _, float)) = DATA.iter().find(|(c, s, _)| key == c || key == s) else {
                continue;
            };
            if value.get() == "null" {
                continue;
            }
            let Cow::Borrowed(key) = key else {
                return Err(bad("metric data key written with escapes").into());
            };
            at.data = (self.next_seq(), key, Some(value));
            object_walking(
                value.get(),
                key,
                ("dataPoints", "data_points"),
                |_| true,
                |_, point| {
                    self.tally(3, LimitedItem::DataPoints)?;
                    let (hit, mut counts) = self.point(point)?;
                    if float {
                        counts.samples = 1;
                    } else {
                        counts.histograms = 1;
                    }
                    emit(
                        OtlpSignal::Metrics,
                        point,
                        at,
                        hit,
                        counts,
                        whole,
                        total,
                        visit,
                    )
                },
            )?;
        }
        Ok(())
    }

    fn point<'a>(&mut self, raw: &'a RawValue) -> Result<(Option<Hit<'a>>, Counts), WireError> {
        let entries = object(raw, "data point", MAX_FIELDS)?;
        let mut hit = None;
        if let Some(attributes) = get(&entries, ("attributes", "attributes"))? {
            self.attributes(attributes, &mut hit)?;
        }
        let mut counts = Counts {
            series: 1,
            ..Counts::default()
        };
        if let Some(exemplars) = get(&entries, ("exemplars", "exemplars"))? {
            for_each(exemplars, "exemplars", |exemplar| {
                self.tally(7, LimitedItem::Exemplars)?;
                counts.exemplars += 1;
                let entries = object(exemplar, "exemplar", MAX_FIELDS)?;
                if let Some(a) = get(&entries, ("filteredAttributes", "filtered_attributes"))? {
                    self.attributes(a, &mut None)?;
                }
                Ok::<_, WireError>(())
            })?;
        }
        Ok((hit, counts))
    }

    fn record_or_span<'a>(
        &mut self,
        raw: &'a RawValue,
    ) -> Result<(Option<Hit<'a>>, Counts), WireError> {
        let logs = self.signal == OtlpSignal::Logs;
        if logs {
            self.tally(4, LimitedItem::LogRecords)?;
        } else {
            self.tally(5, LimitedItem::Spans)?;
        }
        let entries = object(raw, self.names.items.0, MAX_FIELDS)?;
        let mut hit = None;
        if let Some(attributes) = get(&entries, ("attributes", "attributes"))? {
            self.attributes(attributes, &mut hit)?;
        }
        if logs {
            if let Some(body) = get(&entries, ("body", "body"))? {
                self.value_depth(body)?;
            }
        } else {
            for name in ["events", "links"] {
                if let Some(list) = get(&entries, (name, name))? {
                    for_each(list, name, |inner| {
                        self.tally(6, LimitedItem::EventsAndLinks)?;
                        let entries = object(inner, name, MAX_FIELDS)?;
                        if let Some(a) = get(&entries, ("attributes", "attributes"))? {
                            self.attributes(a, &mut None)?;
                        }
                        Ok::<_, WireError>(())
                    })?;
                }
            }
        }
        let counts = Counts {
            series: 1,
            samples: 1,
            ..Counts::default()
        };
        Ok((hit, counts))
    }

    fn value_depth(&self, raw: &RawValue) -> Result<(), WireError> {
        // Counted in levels of JSON: an AnyValue is an object, and each
        // array inside adds three levels (its object, the ArrayValue
        // object, the `values` array), each key-value list four. So this
        // admits about 21 nested arrays or 16 lists: stricter than the
        // protobuf walk's 32, and far beyond the one or two levels the
        // SDKs send; a precise count would need a parse per value.
        let limit = 2 * MAX_VALUE_DEPTH + 1;
        // It nests no deeper than it has brackets (in strings or not):
        // counting them is a plain loop the compiler vectorises, and
        // spares the usual value (a log line in a `stringValue`) the
        // byte-by-byte walk of `depth`.
        let brackets = raw
            .get()
            .bytes()
            .filter(|&b| b == b'{' || b == b'[')
            .count();
        if brackets > limit && depth(raw.get()) > limit {
            return Err(WireError::TooDeep {
                what: "an attribute or log body",
                limit: MAX_VALUE_DEPTH,
            });
        }
        Ok(())
    }

    /// A list of `KeyValue`s: counted, checked, offered to the query.
    fn attributes<'a>(
        &self,
        raw: &'a RawValue,
        hit: &mut Option<Hit<'a>>,
    ) -> Result<(), WireError> {
        let mut n = 0;
        for_each(raw, "attributes", |kv| {
            count(&mut n, self.limits.max_labels, LimitedItem::Attributes)?;
            let entries = object(kv, "attribute", MAX_FIELDS)?;
            let key = get(&entries, ("key", "key"))?
                .and_then(string_text)
                .unwrap_or("");
            if key.len() > self.limits.max_label_bytes {
                return Err(WireError::LabelTooLong {
                    which: "attribute key",
                    len: key.len(),
                    limit: self.limits.max_label_bytes,
                });
            }
            let Some(value) = get(&entries, ("value", "value"))? else {
                return Ok(());
            };
            self.value_depth(value)?;
            let Some(rank) = self.query.rank(key.as_bytes()) else {
                return Ok(());
            };
            let value = object(value, "attribute value", MAX_FIELDS)?;
            let Some(string) = get(&value, ("stringValue", "string_value"))?.and_then(string_text)
            else {
                return Ok(());
            };
            if hit.is_none_or(|h| rank < h.rank) {
                *hit = Some(Hit {
                    rank,
                    value: string,
                    field: (0, 0),
                });
            }
            Ok(())
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn emit<'a, E: From<WireError>>(
    signal: OtlpSignal,
    raw: &'a RawValue,
    at: JsonContext<'a>,
    hit: Option<Hit<'a>>,
    counts: Counts,
    whole: bool,
    total: &mut Counts,
    visit: &mut impl FnMut(JsonItem<'a>) -> Result<(), E>,
) -> Result<(), E> {
    if whole {
        total.add(&counts);
        return Ok(());
    }
    visit(JsonItem {
        signal,
        raw,
        at: Some(at),
        hit,
        counts,
    })
}

impl JsonNest {
    fn append(&mut self, out: &mut Vec<u8>, item: &JsonItem<'_>) {
        let names = Names::of(item.signal);
        if !self.started {
            self.started = true;
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(names.resources.0.as_bytes());
            out.extend_from_slice(b"\":[");
        }
        let Some(at) = item.at else {
            self.close_from(0, out);
            self.separate_top(out);
            out.extend_from_slice(item.raw.get().as_bytes());
            return;
        };
        let levels = if at.metric.0 == 0 { 2 } else { 4 };
        let ids = [at.resource.0, at.scope.0, at.metric.0, at.data.0];
        if let Some(first) = (0..levels).find(|&l| self.open[l].map(|o| o.0) != Some(ids[l])) {
            self.close_from(first, out);
            for level in first..levels {
                self.open_level(level, &at, &names, out);
            }
        }
        let parent = &mut self.open[levels - 1];
        if let Some((_, any)) = parent {
            if *any {
                out.push(b',');
            }
            *any = true;
        }
        out.extend_from_slice(item.raw.get().as_bytes());
    }

    fn separate_top(&mut self, out: &mut Vec<u8>) {
        if self.any {
            out.push(b',');
        }
        self.any = true;
    }

    fn open_level(&mut self, level: usize, at: &JsonContext<'_>, names: &Names, out: &mut Vec<u8>) {
        match level {
            0 => self.separate_top(out),
            _ => {
                // The metric's data wrapper is a field of the metric object,
                // not an element of a list.
                if level != 3 {
                    if let Some((_, any)) = &mut self.open[level - 1] {
                        if *any {
                            out.push(b',');
                        }
                        *any = true;
                    }
                }
            }
        }
        let (id, body, child) = match level {
            0 => (
                at.resource.0,
                Some(at.resource.1),
                Child::List(names.scopes),
            ),
            1 => (at.scope.0, Some(at.scope.1), Child::List(names.items)),
            2 => (at.metric.0, at.metric.1, Child::Data),
            _ => (
                at.data.0,
                at.data.2,
                Child::List(("dataPoints", "data_points")),
            ),
        };
        if level == 3 {
            // `"gauge":{` after the metric's own fields.
            if let Some((_, any)) = &mut self.open[2] {
                if *any {
                    out.push(b',');
                }
                *any = true;
            }
            out.push(b'"');
            out.extend_from_slice(at.data.1.as_bytes());
            out.extend_from_slice(b"\":");
        }
        out.push(b'{');
        let mut wrote = false;
        if let Some(body) = body {
            // Validated by the walk: an object.
            if let Ok(entries) = object(body, "", usize::MAX) {
                for (key, value) in entries {
                    if child.holds(&key) {
                        continue;
                    }
                    if wrote {
                        out.push(b',');
                    }
                    wrote = true;
                    let _ = serde_json::to_writer(&mut *out, &key);
                    out.push(b':');
                    out.extend_from_slice(value.get().as_bytes());
                }
            }
        }
        match child {
            Child::List((key, _)) => {
                if wrote {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":[");
                self.open[level] = Some((id, false));
            }
            // The metric's children are its data wrapper's fields: a comma
            // goes before the wrapper when the metric had fields.
            Child::Data => self.open[level] = Some((id, wrote)),
        }
    }

    fn close_from(&mut self, level: usize, out: &mut Vec<u8>) {
        for l in (level..4).rev() {
            if self.open[l].take().is_some() {
                // Lists close with `]}`; the metric object with `}`.
                if l == 2 {
                    out.push(b'}');
                } else {
                    out.extend_from_slice(b"]}");
                }
            }
        }
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.close_from(0, out);
        if self.started {
            out.extend_from_slice(b"]}");
        }
    }
}

/// What a level's children are: a list under one of these keys, or (a
/// metric) its data wrapper.
#[derive(Clone, Copy)]
enum Child {
    List((&'static str, &'static str)),
    Data,
}

impl Child {
    fn holds(self, key: &str) -> bool {
        match self {
            Child::List((c, s)) => key == c || key == s,
            Child::Data => DATA.iter().any(|(c, s, _)| key == *c || key == *s),
        }
    }
}
