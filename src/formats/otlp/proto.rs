//! The zero-copy walk over a decoded OTLP export request (protobuf):
//! `Export{Metrics,Logs,Trace}ServiceRequest`.
//!
//! ```text
//!  request ─► ResourceX (field 1) ─► Resource attributes: the query? ─ yes ─► one whole item
//!                  │                                                   (its bytes as they came)
//!                  └─ no ─► ScopeX (field 2) ─► [Metric ─► data ─►] point | record | span
//!                                  each item: its own attributes ─► one item with its Context
//! ```
//!
//! All three signals have the same three outer levels (request → resource
//! → scope → items); metrics have two more (metric → its data wrapper →
//! data points). Every repeated message is counted against its limit as it
//! is met, every attribute is checked (key and string values UTF-8, keys no
//! longer than `max_label_bytes`), and nested `AnyValue`s (arrays and
//! key-value lists) recurse at most [`MAX_VALUE_DEPTH`] deep, so no body
//! can exhaust the stack. Fields the walk has no business with are skipped
//! with their framing checked, and go upstream byte for byte.

use std::cell::Cell;

use super::schema;
use super::{Context, OtlpItem, OtlpSignal};
use crate::request_limits::{LimitedItem, RequestLimits};
use crate::signals::Counts;
use crate::wire::{
    all_ascii, check_field, check_message, count, read_key, read_len, skip_value, wt, FieldKind,
    Hit, LabelQuery, Schema, WireError,
};

/// Shorthands for the schemas of the levels.
const NONE: Option<FieldKind> = None;
const L: Option<FieldKind> = Some(FieldKind::Len);

/// Deepest nesting of `AnyValue` arrays and key-value lists. The
/// OpenTelemetry SDKs produce one or two levels; Go's protobuf decoder
/// stops at 100.
pub const MAX_VALUE_DEPTH: usize = 32;

/// The metric data fields (`gauge`, `sum`, `histogram`,
/// `exponential_histogram`, `summary`): a oneof, so a metric has one.
pub(super) fn is_data_field(field: u32) -> bool {
    matches!(field, 5 | 7 | 9 | 10 | 11)
}

/// Repeated items met so far, against [`RequestLimits`].
#[derive(Default)]
struct Tally {
    resources: Cell<usize>,
    scopes: Cell<usize>,
    metrics: Cell<usize>,
    points: Cell<usize>,
    records: Cell<usize>,
    spans: Cell<usize>,
    events_links: Cell<usize>,
    exemplars: Cell<usize>,
}

/// Counts one more item against `limit`.
fn bump(n: &Cell<usize>, limit: usize, item: LimitedItem) -> Result<(), WireError> {
    let mut v = n.get();
    count(&mut v, limit, item)?;
    n.set(v);
    Ok(())
}

/// One walk over one request.
pub(super) struct Walk<'q> {
    signal: OtlpSignal,
    query: &'q LabelQuery,
    limits: RequestLimits,
    tally: Tally,
    /// Numbers each resource, scope, metric and data wrapper as it is met,
    /// so a tenant's batch can tell when an item's context changed.
    seq: Cell<u32>,
}

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, WireError> {
    if all_ascii(bytes) {
        // SAFETY: ASCII is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).map_err(|_| WireError::Utf8(what))
}

/// Checks one field the walk does not descend into: a string of `strings`
/// (UTF-8), or a field of `schema` (its wire type; unknown fields skipped).
fn plain_field(
    body: &[u8],
    pos: &mut usize,
    (field, wire_type): (u32, u8),
    schema: &Schema,
    strings: &[u32],
    message: &'static str,
) -> Result<(), WireError> {
    if strings.contains(&field) {
        if wire_type != wt::LEN {
            return Err(wrong_type(message, field, wire_type));
        }
        utf8(read_len(body, pos, "string")?, "string field")?;
        return Ok(());
    }
    check_field(body, pos, field, wire_type, schema).map(drop)
}

/// A message of strings only (a resource's `EntityRef`).
fn strings_only(body: &[u8], message: &'static str) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < body.len() {
        let key = read_key(body, &mut pos, message)?;
        plain_field(body, &mut pos, key, &[], &[1, 2, 3, 4], message)?;
    }
    Ok(())
}

fn wrong_type(message: &'static str, field: u32, wire_type: u8) -> WireError {
    WireError::WireType {
        message,
        field,
        wire_type,
    }
}

/// A field the caller of [`Walk::fields`] handles itself: its (number,
/// wire type), the message body and the position after its key; returns
/// whether it was handled (and read).
type Nested<'f> = &'f mut dyn FnMut((u32, u8), &[u8], &mut usize) -> Result<bool, WireError>;

impl<'q> Walk<'q> {
    pub(super) fn new(signal: OtlpSignal, query: &'q LabelQuery, limits: RequestLimits) -> Self {
        Self {
            signal,
            query,
            limits,
            tally: Tally::default(),
            seq: Cell::new(0),
        }
    }

    fn next_seq(&self) -> u32 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }

    /// Walks a whole request, handing each routed item to `visit`.
    pub(super) fn request<'a, E: From<WireError>>(
        &self,
        body: &'a [u8],
        visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let message = self.signal.request_name();
        let mut pos = 0;
        while pos < body.len() {
            let start = pos;
            let (field, wire_type) = read_key(body, &mut pos, message)?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    let resource = read_len(body, &mut pos, "resource")?;
                    self.resource(&body[start..pos], resource, visit)?;
                }
                (1, _) => return Err(wrong_type(message, field, wire_type).into()),
                // Unknown fields of the request itself are not forwarded
                // (there are none in OTLP today).
                _ => skip_value(body, &mut pos, wire_type, message, field)?,
            }
        }
        Ok(())
    }

    fn resource<'a, E: From<WireError>>(
        &self,
        raw: &'a [u8],
        body: &'a [u8],
        visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        bump(
            &self.tally.resources,
            self.limits.max_series,
            LimitedItem::Resources,
        )?;
        let id = self.next_seq();
        let message = self.signal.resource_name();
        // First the resource's own attributes, wherever the field is.
        let mut hit = None;
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, message)?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    let resource = read_len(body, &mut pos, "Resource")?;
                    self.fields(
                        resource,
                        1,
                        "Resource",
                        schema::RESOURCE,
                        &[],
                        &mut hit,
                        &mut |f, b, p| {
                            if f == (3, wt::LEN) {
                                strings_only(read_len(b, p, "EntityRef")?, "EntityRef")?;
                                return Ok(true);
                            }
                            Ok(false)
                        },
                    )?;
                }
                (2, wt::LEN) => skip_value(body, &mut pos, wire_type, message, field)?,
                key => plain_field(body, &mut pos, key, &[NONE, L, L, L], &[3], message)?,
            }
        }
        // Then its scopes and their items.
        let whole = hit.is_some();
        let mut total = Counts::default();
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, message)?;
            if (field, wire_type) == (2, wt::LEN) {
                let scope = read_len(body, &mut pos, "scope")?;
                let at = Context {
                    resource: (id, body),
                    scope: (0, &[]),
                    metric: (0, &[]),
                    data: (0, 0, &[]),
                };
                self.scope(at, scope, whole, &mut total, visit)?;
            } else {
                skip_value(body, &mut pos, wire_type, message, field)?;
            }
        }
        if let Some(hit) = hit {
            total.series = 1;
            visit(OtlpItem {
                raw,
                at: None,
                hit: Some(hit),
                counts: total,
            })?;
        }
        Ok(())
    }

    fn scope<'a, E: From<WireError>>(
        &self,
        mut at: Context<'a>,
        body: &'a [u8],
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        bump(
            &self.tally.scopes,
            self.limits.max_series,
            LimitedItem::Scopes,
        )?;
        at.scope = (self.next_seq(), body);
        let message = self.signal.scope_name();
        let mut pos = 0;
        while pos < body.len() {
            let start = pos;
            let (field, wire_type) = read_key(body, &mut pos, message)?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    let scope = read_len(body, &mut pos, "InstrumentationScope")?;
                    self.fields(
                        scope,
                        3,
                        "InstrumentationScope",
                        schema::SCOPE,
                        &[1, 2],
                        &mut None,
                        &mut |_, _, _| Ok(false),
                    )?;
                }
                (2, wt::LEN) => {
                    let item = read_len(body, &mut pos, "item")?;
                    let raw = &body[start..pos];
                    match self.signal {
                        OtlpSignal::Metrics => self.metric(at, item, whole, total, visit)?,
                        OtlpSignal::Logs => {
                            let (hit, counts) = self.log_record(item)?;
                            emit(raw, at, hit, counts, whole, total, visit)?;
                        }
                        OtlpSignal::Traces => {
                            let (hit, counts) = self.span(item)?;
                            emit(raw, at, hit, counts, whole, total, visit)?;
                        }
                    }
                }
                key => plain_field(body, &mut pos, key, &[NONE, L, L, L], &[3], message)?,
            }
        }
        Ok(())
    }

    fn metric<'a, E: From<WireError>>(
        &self,
        mut at: Context<'a>,
        body: &'a [u8],
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        bump(
            &self.tally.metrics,
            self.limits.max_series,
            LimitedItem::Metrics,
        )?;
        at.metric = (self.next_seq(), body);
        let mut pos = 0;
        let mut metadata = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "Metric")?;
            match (field, wire_type) {
                (f, wt::LEN) if is_data_field(f) => {
                    let data = read_len(body, &mut pos, "metric data")?;
                    at.data = (self.next_seq(), field, data);
                    self.data(at, data, whole, total, visit)?;
                }
                (12, wt::LEN) => {
                    let kv = read_len(body, &mut pos, "metadata")?;
                    self.attribute(kv, &mut metadata, &mut None)?;
                }
                (5 | 7 | 9..=12, _) => return Err(wrong_type("Metric", field, wire_type).into()),
                key => plain_field(body, &mut pos, key, &[], &[1, 2, 3], "Metric")?,
            }
        }
        Ok(())
    }

    /// A metric's `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or
    /// `Summary`: its data points (field 1), and scalars.
    fn data<'a, E: From<WireError>>(
        &self,
        at: Context<'a>,
        body: &'a [u8],
        whole: bool,
        total: &mut Counts,
        visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let kind = at.data.1;
        let mut pos = 0;
        while pos < body.len() {
            let start = pos;
            let (field, wire_type) = read_key(body, &mut pos, "metric data")?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    let point = read_len(body, &mut pos, "data point")?;
                    bump(
                        &self.tally.points,
                        self.limits.max_samples,
                        LimitedItem::DataPoints,
                    )?;
                    let (hit, counts) = self.point(kind, point)?;
                    emit(&body[start..pos], at, hit, counts, whole, total, visit)?;
                }
                key => plain_field(body, &mut pos, key, schema::METRIC_DATA, &[], "metric data")?,
            }
        }
        Ok(())
    }

    /// One data point of a metric whose data field is `kind`.
    fn point<'a>(&self, kind: u32, body: &'a [u8]) -> Result<(Option<Hit<'a>>, Counts), WireError> {
        // (attributes, exemplars) field numbers by point type.
        let (attributes, exemplars, message, schema): (u32, u32, _, &Schema) = match kind {
            5 | 7 => (7, 5, "NumberDataPoint", schema::NUMBER_POINT),
            9 => (9, 8, "HistogramDataPoint", schema::HISTOGRAM_POINT),
            10 => (
                1,
                11,
                "ExponentialHistogramDataPoint",
                schema::EXP_HISTOGRAM_POINT,
            ),
            _ => (7, 0, "SummaryDataPoint", schema::SUMMARY_POINT),
        };
        let mut counts = Counts {
            series: 1,
            ..Counts::default()
        };
        if matches!(kind, 5 | 7) {
            counts.samples = 1;
        } else {
            counts.histograms = 1;
        }
        let mut hit = None;
        let mut n = 0;
        self.fields(
            body,
            attributes,
            message,
            schema,
            &[],
            &mut hit,
            &mut |f, b, p| {
                if f == (exemplars, wt::LEN) {
                    let exemplar = read_len(b, p, "exemplar")?;
                    bump(
                        &self.tally.exemplars,
                        self.limits.max_exemplars,
                        LimitedItem::Exemplars,
                    )?;
                    n += 1;
                    self.fields(
                        exemplar,
                        7,
                        "Exemplar",
                        schema::EXEMPLAR,
                        &[],
                        &mut None,
                        &mut |_, _, _| Ok(false),
                    )?;
                } else if kind == 10 && (f == (8, wt::LEN) || f == (9, wt::LEN)) {
                    check_message(read_len(b, p, "buckets")?, schema::BUCKETS)?;
                } else if kind == 11 && f == (6, wt::LEN) {
                    check_message(read_len(b, p, "quantile")?, schema::VALUE_AT_QUANTILE)?;
                } else {
                    return Ok(false);
                }
                Ok(true)
            },
        )?;
        counts.exemplars = n;
        Ok((hit, counts))
    }

    fn log_record<'a>(&self, body: &'a [u8]) -> Result<(Option<Hit<'a>>, Counts), WireError> {
        bump(
            &self.tally.records,
            self.limits.max_entries,
            LimitedItem::LogRecords,
        )?;
        let mut hit = None;
        self.fields(
            body,
            6,
            "LogRecord",
            schema::LOG_RECORD,
            &[3, 12],
            &mut hit,
            &mut |f, b, p| {
                if f == (5, wt::LEN) {
                    self.any_value(read_len(b, p, "log body")?, 0)?;
                    return Ok(true);
                }
                Ok(false)
            },
        )?;
        let counts = Counts {
            series: 1,
            samples: 1,
            ..Counts::default()
        };
        Ok((hit, counts))
    }

    fn span<'a>(&self, body: &'a [u8]) -> Result<(Option<Hit<'a>>, Counts), WireError> {
        bump(
            &self.tally.spans,
            self.limits.max_samples,
            LimitedItem::Spans,
        )?;
        let mut hit = None;
        self.fields(
            body,
            9,
            "Span",
            schema::SPAN,
            &[3, 5],
            &mut hit,
            &mut |f, b, p| {
                let (attributes, message, schema, strings): (u32, _, &Schema, &[u32]) = match f {
                    (11, wt::LEN) => (3, "Span.Event", schema::EVENT, &[2]),
                    (13, wt::LEN) => (4, "Span.Link", schema::LINK, &[3]),
                    (15, wt::LEN) => {
                        let status = read_len(b, p, "Status")?;
                        let mut pos = 0;
                        while pos < status.len() {
                            let key = read_key(status, &mut pos, "Status")?;
                            plain_field(status, &mut pos, key, schema::STATUS, &[2], "Status")?;
                        }
                        return Ok(true);
                    }
                    _ => return Ok(false),
                };
                let inner = read_len(b, p, "span event or link")?;
                bump(
                    &self.tally.events_links,
                    self.limits.max_exemplars,
                    LimitedItem::EventsAndLinks,
                )?;
                self.fields(
                    inner,
                    attributes,
                    message,
                    schema,
                    strings,
                    &mut None,
                    &mut |_, _, _| Ok(false),
                )?;
                Ok(true)
            },
        )?;
        let counts = Counts {
            series: 1,
            samples: 1,
            ..Counts::default()
        };
        Ok((hit, counts))
    }

    /// Walks a message: its attributes (field `attributes`) counted,
    /// checked and offered to the query when `hit` is asked for; fields
    /// `nested` handles; strings (`strings`) and scalars (`schema`)
    /// checked.
    #[allow(clippy::too_many_arguments)]
    fn fields<'a>(
        &self,
        body: &'a [u8],
        attributes: u32,
        message: &'static str,
        schema: &Schema,
        strings: &[u32],
        hit: &mut Option<Hit<'a>>,
        nested: Nested<'_>,
    ) -> Result<(), WireError> {
        let mut n = 0;
        let mut pos = 0;
        while pos < body.len() {
            let key = read_key(body, &mut pos, message)?;
            if key == (attributes, wt::LEN) {
                let kv = read_len(body, &mut pos, "attribute")?;
                self.attribute(kv, &mut n, hit)?;
            } else if !nested(key, body, &mut pos)? {
                plain_field(body, &mut pos, key, schema, strings, message)?;
            }
        }
        Ok(())
    }

    /// One `KeyValue` attribute, counted and checked; a string value under
    /// a key of the query is a [`Hit`] (the earliest-listed key wins).
    fn attribute<'a>(
        &self,
        kv: &'a [u8],
        attributes: &mut usize,
        hit: &mut Option<Hit<'a>>,
    ) -> Result<(), WireError> {
        count(attributes, self.limits.max_labels, LimitedItem::Attributes)?;
        let (key, value) = self.key_value(kv, 0)?;
        if let (Some(value), Some(rank)) = (value, self.query.rank(key.as_bytes())) {
            if hit.is_none_or(|h| rank < h.rank) {
                *hit = Some(Hit {
                    rank,
                    value,
                    field: (0, 0),
                });
            }
        }
        Ok(())
    }

    /// A `KeyValue`: its key, and its value if that is a string.
    fn key_value<'a>(
        &self,
        kv: &'a [u8],
        depth: usize,
    ) -> Result<(&'a str, Option<&'a str>), WireError> {
        let mut key: &[u8] = &[];
        let mut value = None;
        let mut pos = 0;
        while pos < kv.len() {
            let (field, wire_type) = read_key(kv, &mut pos, "KeyValue")?;
            match (field, wire_type) {
                // Every occurrence is checked: a decoder reads each.
                (1, wt::LEN) => {
                    key = read_len(kv, &mut pos, "attribute key")?;
                    utf8(key, "attribute key")?;
                }
                (2, wt::LEN) => value = self.any_value(read_len(kv, &mut pos, "value")?, depth)?,
                // key_strindex (profiles' string table).
                (3, wt::VARINT) => skip_value(kv, &mut pos, wire_type, "KeyValue", field)?,
                (1..=3, _) => return Err(wrong_type("KeyValue", field, wire_type)),
                _ => skip_value(kv, &mut pos, wire_type, "KeyValue", field)?,
            }
        }
        if key.len() > self.limits.max_label_bytes {
            return Err(WireError::LabelTooLong {
                which: "attribute key",
                len: key.len(),
                limit: self.limits.max_label_bytes,
            });
        }
        Ok((utf8(key, "attribute key")?, value))
    }

    /// Checks an `AnyValue`; its string, if it is one.
    fn any_value<'a>(&self, body: &'a [u8], depth: usize) -> Result<Option<&'a str>, WireError> {
        let mut string = None;
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "AnyValue")?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    string = Some(utf8(read_len(body, &mut pos, "string value")?, "value")?);
                }
                (5 | 6, wt::LEN) => {
                    if depth >= MAX_VALUE_DEPTH {
                        return Err(WireError::TooDeep {
                            what: "an attribute or log body",
                            limit: MAX_VALUE_DEPTH,
                        });
                    }
                    let list = read_len(body, &mut pos, "array or key-value list")?;
                    self.list(list, field == 6, depth + 1)?;
                    string = None;
                }
                // bool, int, double, bytes, string_value_strindex.
                (2 | 3 | 8, wt::VARINT) | (4, wt::I64) | (7, wt::LEN) => {
                    skip_value(body, &mut pos, wire_type, "AnyValue", field)?;
                    string = None;
                }
                (1..=8, _) => return Err(wrong_type("AnyValue", field, wire_type)),
                _ => skip_value(body, &mut pos, wire_type, "AnyValue", field)?,
            }
        }
        Ok(string)
    }

    /// An `ArrayValue` (of `AnyValue`s) or `KeyValueList` (of `KeyValue`s):
    /// its entries counted as attributes.
    fn list(&self, body: &[u8], key_values: bool, depth: usize) -> Result<(), WireError> {
        let mut entries = 0;
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "ArrayValue")?;
            match (field, wire_type) {
                (1, wt::LEN) => {
                    count(
                        &mut entries,
                        self.limits.max_labels,
                        LimitedItem::Attributes,
                    )?;
                    let entry = read_len(body, &mut pos, "list entry")?;
                    if key_values {
                        self.key_value(entry, depth)?;
                    } else {
                        self.any_value(entry, depth)?;
                    }
                }
                (1, _) => return Err(wrong_type("ArrayValue", field, wire_type)),
                _ => skip_value(body, &mut pos, wire_type, "ArrayValue", field)?,
            }
        }
        Ok(())
    }
}

/// Hands an item on, or (its resource going whole) adds it to the
/// resource's counts.
fn emit<'a, E: From<WireError>>(
    raw: &'a [u8],
    at: Context<'a>,
    hit: Option<Hit<'a>>,
    counts: Counts,
    whole: bool,
    total: &mut Counts,
    visit: &mut impl FnMut(OtlpItem<'a>) -> Result<(), E>,
) -> Result<(), E> {
    if whole {
        total.add(&counts);
        return Ok(());
    }
    visit(OtlpItem {
        raw,
        at: Some(at),
        hit,
        counts,
    })
}
