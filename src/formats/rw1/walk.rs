//! The zero-copy walk over a decompressed remote write 1.0 `WriteRequest`.
//!
//! ```text
//!  decompressed body ──► Request::fields() ──► Field::Series(SeriesView) ─┐
//!                                          └─► Field::Metadata(MetadataView)
//!  SeriesView { raw bytes, labels we asked for, counts } ──► encode::append_series
//! ```
//!
//! A `WriteRequest` is a flat list of length-delimited fields: `timeseries`
//! (field 1) and `metadata` (field 3). Splitting a request by tenant only needs
//! a few labels of each series, so instead of decoding every series into owned
//! objects (as prost would) the walk reads the bytes, borrows the label
//! values it is asked for, and hands back the series' encoded bytes so the
//! output for a tenant is built by copying them as they are. This is the hot
//! path; the prost types in [`super::pb`] are the reference implementation
//! that tests compare it against.
//!
//! Invariant: every byte of a series or metadata field is bounds-checked and
//! its wire structure validated (tags, wire types, nested lengths, UTF-8 of
//! label names and values) before it is handed out, so a malformed request is
//! rejected whole and nothing of it is forwarded.

use crate::request_limits::{LimitedItem, RequestLimits};
use crate::wire::{
    all_ascii, check_field, check_message, count, or_bytes, read_key, read_len, same, skip_value,
    wt, FieldKind, Hit, LabelQuery, WireError,
};

/// Items counted so far in one request, against [`RequestLimits`].
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    series: usize,
    metadata: usize,
    samples: usize,
    exemplars: usize,
}

/// One series, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    /// The whole `timeseries` field as it was on the wire: key, length, body.
    pub raw: &'a [u8],
    /// The `TimeSeries` message body.
    pub body: &'a [u8],
    /// The best match of the [`LabelQuery`], if any.
    pub hit: Option<Hit<'a>>,
    /// The value of `__name__`, if present.
    pub metric_name: Option<&'a str>,
    pub labels: u32,
    pub samples: u32,
    pub exemplars: u32,
    pub histograms: u32,
}

/// One metadata entry, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct MetadataView<'a> {
    /// The whole `metadata` field as it was on the wire.
    pub raw: &'a [u8],
    pub family: &'a str,
}

/// A top-level field of a `WriteRequest`.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Series(SeriesView<'a>),
    Metadata(MetadataView<'a>),
}

/// A decompressed `WriteRequest`, walked lazily.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    buf: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Iterates over the series and metadata of the request, validating each
    /// as it goes. The first error ends the walk.
    pub fn fields<'q>(&self, query: &'q LabelQuery, limits: RequestLimits) -> Fields<'a, 'q> {
        Fields {
            buf: self.buf,
            pos: 0,
            query,
            limits,
            counts: Counts::default(),
            failed: false,
        }
    }
}

/// Iterator returned by [`Request::fields`].
pub struct Fields<'a, 'q> {
    buf: &'a [u8],
    pos: usize,
    query: &'q LabelQuery,
    limits: RequestLimits,
    counts: Counts,
    failed: bool,
}

impl<'a> Iterator for Fields<'a, '_> {
    type Item = Result<Field<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && self.pos < self.buf.len() {
            let result = self.next_field();
            match result {
                Ok(Some(field)) => return Some(Ok(field)),
                Ok(None) => continue,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl<'a> Fields<'a, '_> {
    fn next_field(&mut self) -> Result<Option<Field<'a>>, WireError> {
        let buf = self.buf;
        let start = self.pos;
        let (field, wire_type) = read_key(buf, &mut self.pos, "WriteRequest")?;
        match (field, wire_type) {
            (1, wt::LEN) => {
                let body = read_len(buf, &mut self.pos, "timeseries")?;
                let raw = &buf[start..self.pos];
                count(
                    &mut self.counts.series,
                    self.limits.max_series,
                    LimitedItem::Series,
                )?;
                series(raw, body, self.query, self.limits, &mut self.counts)
                    .map(|s| Some(Field::Series(s)))
            }
            (3, wt::LEN) => {
                let body = read_len(buf, &mut self.pos, "metadata")?;
                let raw = &buf[start..self.pos];
                count(
                    &mut self.counts.metadata,
                    self.limits.max_metadata,
                    LimitedItem::Metadata,
                )?;
                let family = metadata(body)?;
                Ok(Some(Field::Metadata(MetadataView { raw, family })))
            }
            (1 | 3, _) => Err(WireError::WireType {
                message: "WriteRequest",
                field,
                wire_type,
            }),
            // Unknown fields are skipped, as protobuf requires; they are not
            // forwarded (Mimir would ignore them too).
            _ => skip_value(buf, &mut self.pos, wire_type, "WriteRequest", field).map(|()| None),
        }
    }
}

fn series<'a>(
    raw: &'a [u8],
    body: &'a [u8],
    query: &LabelQuery,
    limits: RequestLimits,
    counts: &mut Counts,
) -> Result<SeriesView<'a>, WireError> {
    let mut view = SeriesView {
        raw,
        body,
        hit: None,
        metric_name: None,
        labels: 0,
        samples: 0,
        exemplars: 0,
        histograms: 0,
    };
    let mut found = Found::default();
    let mut pos = short_labels(body, query, limits, &mut view, &mut found);
    while pos < body.len() {
        let field_start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "TimeSeries")?;
        if (1..=4).contains(&field) && wire_type != wt::LEN {
            return Err(WireError::WireType {
                message: "TimeSeries",
                field,
                wire_type,
            });
        }
        match field {
            1 => {
                let label = read_len(body, &mut pos, "label")?;
                view.labels += 1;
                if view.labels as usize > limits.max_labels {
                    return Err(WireError::TooManyLabels {
                        count: count_labels(body),
                        limit: limits.max_labels,
                    });
                }
                let (name, value) = label_pair(label, limits)?;
                found.note(query, name, value.as_bytes(), (field_start, pos));
            }
            2 => {
                let sample = read_len(body, &mut pos, "sample")?;
                // Fast path: value (0x09, 8 bytes) then timestamp (0x10,
                // varint), as every encoder writes a sample with both set.
                let canonical = sample.len() >= 11
                    && sample[0] == 0x09
                    && sample[9] == 0x10
                    && sample[sample.len() - 1] < 0x80
                    && sample.len() <= 20
                    && sample[10..sample.len() - 1].iter().all(|&b| b >= 0x80);
                if !canonical {
                    check_message(sample, &SAMPLE)?;
                }
                count(
                    &mut counts.samples,
                    limits.max_samples,
                    LimitedItem::Samples,
                )?;
                view.samples += 1;
            }
            3 => {
                count(
                    &mut counts.exemplars,
                    limits.max_exemplars,
                    LimitedItem::Exemplars,
                )?;
                exemplar(read_len(body, &mut pos, "exemplar")?, limits)?;
                view.exemplars += 1;
            }
            4 => {
                count(
                    &mut counts.samples,
                    limits.max_samples,
                    LimitedItem::Samples,
                )?;
                histogram(read_len(body, &mut pos, "histogram")?, limits)?;
                view.histograms += 1;
            }
            _ => skip_value(body, &mut pos, wire_type, "TimeSeries", field)?,
        }
    }
    if view.labels == 0 {
        return Err(WireError::NoLabels);
    }
    // SAFETY: `found` holds only values checked as UTF-8: ASCII runs of
    // `short_labels` (kept only when the whole run passed), or values
    // `label_pair` returned as `&str`.
    let text = |v: &'a [u8]| unsafe { std::str::from_utf8_unchecked(v) };
    view.metric_name = found.metric_name.map(text);
    view.hit = found.hit.map(|(rank, value, field)| Hit {
        rank,
        value: text(value),
        field,
    });
    Ok(view)
}

/// What the walk has found so far among a series' labels (by
/// [`short_labels`], then the general parser). Every value in it is valid
/// UTF-8 by the time [`series`] reads it.
#[derive(Default)]
struct Found<'a> {
    metric_name: Option<&'a [u8]>,
    /// Rank, value and field range of the best key so far.
    hit: Option<(usize, &'a [u8], (usize, usize))>,
    /// Both the metric name and the best possible key (rank 0) are found:
    /// the remaining labels are only checked, not compared. In sorted label
    /// sets both come early, so most labels skip the comparisons.
    done: bool,
}

impl<'a> Found<'a> {
    /// Notes one label; the first occurrence of a name wins.
    #[inline(always)]
    fn note(&mut self, query: &LabelQuery, name: &[u8], value: &'a [u8], field: (usize, usize)) {
        if self.done {
            return;
        }
        if self.metric_name.is_none() && same(name, b"__name__") {
            self.metric_name = Some(value);
        }
        if let Some(rank) = query.rank(name) {
            if self.hit.is_none_or(|(r, _, _)| rank < r) {
                self.hit = Some((rank, value, field));
            }
        }
        self.done = self.metric_name.is_some() && matches!(self.hit, Some((0, _, _)));
    }
}

/// The fast path for the labels at the start of a series, in the layout
/// every encoder writes: `0x0a <len> 0x0a <n> name 0x12 <m> value`, the
/// name under 128 bytes, the other lengths in one or two varint bytes.
/// When all three lengths are under 128, the key and length bytes are
/// ASCII themselves, so a run of such labels is valid exactly when it is
/// all ASCII: one vectorized check over a few hundred bytes instead of one
/// per label, whose setup cost more than the bytes (this halved the walk
/// on the random corpus). A longer label has its name and value checked on
/// their own.
///
/// Returns where the general parser goes on: after the labels it took
/// (counted into `view`, noted into `out`), else 0 with `view` and `out`
/// untouched, leaving every label to the general
/// parser and its errors (so a non-ASCII label, a label over the limits or
/// too many labels are found and reported there).
#[inline(always)]
fn short_labels<'a>(
    body: &'a [u8],
    query: &LabelQuery,
    limits: RequestLimits,
    view: &mut SeriesView<'a>,
    out: &mut Found<'a>,
) -> usize {
    /// A length of one or two (canonical) varint bytes, and their count.
    #[inline(always)]
    fn length(bytes: &[u8]) -> Option<(usize, usize)> {
        match *bytes {
            [b0, ..] if b0 < 0x80 => Some((usize::from(b0), 1)),
            [b0, b1, ..] if (1..0x80).contains(&b1) => {
                Some((usize::from(b0 & 0x7f) | usize::from(b1) << 7, 2))
            }
            _ => None,
        }
    }
    let mut pos = 0;
    let mut labels = 0u32;
    let mut found = Found::default();
    // OR of the bytes checked so far, and where the unchecked run starts.
    let mut seen = 0u8;
    let mut run = 0;
    loop {
        // Labels with every length under 128: the tight loop.
        while let [0x0a, len, 0x0a, n, ..] = body[pos..] {
            let (len, n) = (usize::from(len), usize::from(n));
            let end = pos + 2 + len;
            if len >= 0x80 || n >= 0x80 || end > body.len() || len < n + 4 {
                break;
            }
            let (name, rest) = body[pos + 4..end].split_at(n);
            let [0x12, m, ref value @ ..] = *rest else {
                break;
            };
            if usize::from(m) != value.len() || n.max(value.len()) > limits.max_label_bytes {
                break;
            }
            labels += 1;
            if labels as usize > limits.max_labels {
                return 0;
            }
            found.note(query, name, value, (pos, end));
            pos = end;
        }
        // One longer label (a length in two varint bytes), checked on its
        // own, or the end of the labels this path takes.
        if body.get(pos) != Some(&0x0a) {
            break;
        }
        let Some((len, len_bytes)) = length(&body[pos + 1..]) else {
            break;
        };
        let end = pos + 1 + len_bytes + len;
        if end > body.len() {
            break;
        }
        let [0x0a, n, ref label @ ..] = body[pos + 1 + len_bytes..end] else {
            break;
        };
        let n = usize::from(n);
        if n >= 0x80 || label.len() < n + 2 || label[n] != 0x12 {
            break;
        }
        let name = &label[..n];
        let Some((m, m_bytes)) = length(&label[n + 1..]) else {
            break;
        };
        if n + 1 + m_bytes + m != label.len() || n.max(m) > limits.max_label_bytes {
            break;
        }
        let value = &label[n + 1 + m_bytes..];
        labels += 1;
        if labels as usize > limits.max_labels {
            return 0;
        }
        seen |= or_bytes(&body[run..pos]) | or_bytes(name) | or_bytes(value);
        run = end;
        found.note(query, name, value, (pos, end));
        pos = end;
    }
    seen |= or_bytes(&body[run..pos]);
    if labels == 0 || seen >= 0x80 {
        return 0;
    }
    // Every value noted is ASCII (checked above, within its run or on its
    // own), so the caller may take them as text.
    view.labels = labels;
    *out = found;
    pos
}

/// Counts the label fields of a series that was already found too large, for
/// the error message. Stops quietly at malformed bytes.
fn count_labels(body: &[u8]) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while pos < body.len() {
        let Ok((field, wire_type)) = read_key(body, &mut pos, "TimeSeries") else {
            break;
        };
        if field == 1 {
            count += 1;
        }
        if skip_value(body, &mut pos, wire_type, "TimeSeries", field).is_err() {
            break;
        }
    }
    count
}

/// Parses a `Label` message into its name and value.
#[inline(always)]
fn label_pair(label: &[u8], limits: RequestLimits) -> Result<(&[u8], &str), WireError> {
    // Fast path for the layout every encoder produces for short labels:
    // 0x0a <n> name 0x12 <m> value, with n, m < 128. Then the whole message
    // is ASCII exactly when name and value are, and one word-at-a-time
    // `is_ascii` over it replaces two UTF-8 validations.
    if let [0x0a, n, rest @ ..] = label {
        let n = usize::from(*n);
        if n < 0x80 && rest.len() >= n + 2 && rest[n] == 0x12 {
            let m = usize::from(rest[n + 1]);
            if m < 0x80 && rest.len() == n + 2 + m {
                let name = &rest[..n];
                let value = &rest[n + 2..];
                if n.max(m) <= limits.max_label_bytes && all_ascii(label) {
                    // SAFETY: `value` is part of `label`, which is all ASCII,
                    // and ASCII is valid UTF-8.
                    let value = unsafe { std::str::from_utf8_unchecked(value) };
                    return Ok((name, value));
                }
            }
        }
    }
    label_pair_slow(label, limits)
}

/// The general `Label` parser: any field order, unknown fields, long or
/// non-ASCII strings.
#[inline(never)]
fn label_pair_slow(label: &[u8], limits: RequestLimits) -> Result<(&[u8], &str), WireError> {
    let mut name: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut pos = 0;
    while pos < label.len() {
        let (field, wire_type) = read_key(label, &mut pos, "Label")?;
        match (field, wire_type) {
            (1, wt::LEN) => name = read_len(label, &mut pos, "label name")?,
            (2, wt::LEN) => value = read_len(label, &mut pos, "label value")?,
            (1 | 2, _) => {
                return Err(WireError::WireType {
                    message: "Label",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(label, &mut pos, wire_type, "Label", field)?,
        }
    }
    for (which, bytes) in [("name", name), ("value", value)] {
        if bytes.len() > limits.max_label_bytes {
            return Err(WireError::LabelTooLong {
                which,
                len: bytes.len(),
                limit: limits.max_label_bytes,
            });
        }
    }
    std::str::from_utf8(name).map_err(|_| WireError::Utf8("name"))?;
    let value = std::str::from_utf8(value).map_err(|_| WireError::Utf8("value"))?;
    Ok((name, value))
}

fn exemplar(body: &[u8], limits: RequestLimits) -> Result<(), WireError> {
    let mut pos = 0;
    let mut labels = 0usize;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Exemplar")?;
        if field == 1 && wire_type == wt::LEN {
            labels += 1;
            if labels > limits.max_labels {
                return Err(WireError::TooManyLabels {
                    count: labels,
                    limit: limits.max_labels,
                });
            }
            label_pair(read_len(body, &mut pos, "exemplar label")?, limits)?;
        } else {
            check_field(body, &mut pos, field, wire_type, &EXEMPLAR)?;
        }
    }
    Ok(())
}

pub(crate) fn histogram(body: &[u8], limits: RequestLimits) -> Result<(), WireError> {
    let mut pos = 0;
    // Spans, bucket values and custom values, packed or not.
    let mut buckets = 0usize;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Histogram")?;
        let items = if (field == 8 || field == 11) && wire_type == wt::LEN {
            check_message(read_len(body, &mut pos, "bucket span")?, &BUCKET_SPAN)?;
            1
        } else {
            let values = check_field(body, &mut pos, field, wire_type, &HISTOGRAM)?;
            // Bucket deltas and counts (both sides) and custom values.
            if matches!(field, 9 | 10 | 12 | 13 | 16) {
                values
            } else {
                0
            }
        };
        buckets += items;
        if buckets > limits.max_buckets {
            return Err(WireError::TooMany {
                item: LimitedItem::Buckets,
                limit: limits.max_buckets,
            });
        }
    }
    Ok(())
}

/// Parses a `MetricMetadata` message, returning its family name.
fn metadata(body: &[u8]) -> Result<&str, WireError> {
    let mut pos = 0;
    let mut family: &[u8] = &[];
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "MetricMetadata")?;
        match (field, wire_type) {
            (2 | 4 | 5, wt::LEN) => {
                let text = read_len(body, &mut pos, "metadata string")?;
                std::str::from_utf8(text).map_err(|_| WireError::Utf8("metadata"))?;
                if field == 2 {
                    family = text;
                }
            }
            _ => {
                check_field(body, &mut pos, field, wire_type, &METADATA)?;
            }
        }
    }
    // Checked just above.
    Ok(std::str::from_utf8(family).unwrap_or_default())
}

const SAMPLE: [Option<FieldKind>; 3] = [None, Some(FieldKind::Fixed64), Some(FieldKind::Varint)];
const EXEMPLAR: [Option<FieldKind>; 4] = [
    None,
    Some(FieldKind::Len),
    Some(FieldKind::Fixed64),
    Some(FieldKind::Varint),
];
const BUCKET_SPAN: [Option<FieldKind>; 3] =
    [None, Some(FieldKind::Varint), Some(FieldKind::Varint)];
const METADATA: [Option<FieldKind>; 6] = [
    None,
    Some(FieldKind::Varint),
    Some(FieldKind::Len),
    None,
    Some(FieldKind::Len),
    Some(FieldKind::Len),
];
const HISTOGRAM: [Option<FieldKind>; 17] = [
    None,
    Some(FieldKind::Varint),        // count_int
    Some(FieldKind::Fixed64),       // count_float
    Some(FieldKind::Fixed64),       // sum
    Some(FieldKind::Varint),        // schema
    Some(FieldKind::Fixed64),       // zero_threshold
    Some(FieldKind::Varint),        // zero_count_int
    Some(FieldKind::Fixed64),       // zero_count_float
    Some(FieldKind::Len),           // negative_spans
    Some(FieldKind::PackedVarint),  // negative_deltas
    Some(FieldKind::PackedFixed64), // negative_counts
    Some(FieldKind::Len),           // positive_spans
    Some(FieldKind::PackedVarint),  // positive_deltas
    Some(FieldKind::PackedFixed64), // positive_counts
    Some(FieldKind::Varint),        // reset_hint
    Some(FieldKind::Varint),        // timestamp
    Some(FieldKind::PackedFixed64), // custom_values
];

#[cfg(test)]
mod tests {
    use super::super::pb;
    use super::*;
    use prost::Message;

    fn label(name: &str, value: &str) -> pb::Label {
        pb::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn request() -> pb::WriteRequest {
        pb::WriteRequest {
            timeseries: vec![
                pb::TimeSeries {
                    labels: vec![
                        label("__name__", "up"),
                        label("exported_namespace", "other"),
                        label("namespace", "shop"),
                    ],
                    samples: vec![pb::Sample {
                        value: 1.5,
                        timestamp: 1000,
                    }],
                    ..Default::default()
                },
                pb::TimeSeries {
                    labels: vec![label("__name__", "x"), label("exported_namespace", "b")],
                    samples: vec![
                        pb::Sample {
                            value: f64::NAN,
                            timestamp: 1,
                        },
                        pb::Sample {
                            value: 2.0,
                            timestamp: 2,
                        },
                    ],
                    histograms: vec![pb::Histogram {
                        positive_spans: vec![pb::BucketSpan {
                            offset: -2,
                            length: 3,
                        }],
                        positive_deltas: vec![1, -1, 4],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            metadata: vec![pb::MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        }
    }

    #[test]
    fn walk_finds_labels_by_priority_and_counts() {
        let bytes = request().encode_to_vec();
        let query = LabelQuery::new(["namespace", "exported_namespace"]);
        let fields: Vec<_> = Request::new(&bytes)
            .fields(&query, RequestLimits::default())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(fields.len(), 3);
        let Field::Series(a) = fields[0] else {
            panic!()
        };
        assert_eq!(a.hit.unwrap().value, "shop");
        assert_eq!(a.hit.unwrap().rank, 0);
        assert_eq!(a.metric_name, Some("up"));
        assert_eq!((a.labels, a.samples), (3, 1));
        let Field::Series(b) = fields[1] else {
            panic!()
        };
        assert_eq!(b.hit.unwrap().value, "b");
        assert_eq!((b.samples, b.histograms), (2, 1));
        // the raw bytes decode back to the same series
        let decoded = pb::WriteRequest::decode(b.raw).unwrap();
        assert_eq!(
            decoded.timeseries[0].encode_to_vec(),
            request().timeseries[1].encode_to_vec()
        );
        let Field::Metadata(m) = fields[2] else {
            panic!()
        };
        assert_eq!(m.family, "up");
    }

    #[test]
    fn first_duplicate_label_wins() {
        let req = pb::WriteRequest {
            timeseries: vec![pb::TimeSeries {
                labels: vec![label("namespace", "first"), label("namespace", "second")],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let bytes = req.encode_to_vec();
        let query = LabelQuery::new(["namespace"]);
        let mut it = Request::new(&bytes).fields(&query, RequestLimits::default());
        let Some(Ok(Field::Series(s))) = it.next() else {
            panic!()
        };
        assert_eq!(s.hit.unwrap().value, "first");

        // Once the name and the best key are found, later labels are not
        // compared (duplicates, lower-ranked keys) but are still checked.
        let series = |last: &str| pb::WriteRequest {
            timeseries: vec![pb::TimeSeries {
                labels: vec![
                    label("__name__", "up"),
                    label("namespace", "first"),
                    label("__name__", "down"),
                    label("exported_namespace", "lower"),
                    label("namespace", "second"),
                    label("zone", last),
                ],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let query = LabelQuery::new(["namespace", "exported_namespace"]);
        let bytes = series("a").encode_to_vec();
        let Some(Ok(Field::Series(s))) = Request::new(&bytes)
            .fields(&query, RequestLimits::default())
            .next()
        else {
            panic!()
        };
        assert_eq!(
            (s.metric_name, s.hit.unwrap().value, s.labels),
            (Some("up"), "first", 6)
        );
        let mut bytes = series("é").encode_to_vec();
        let at = bytes.len() - 1;
        bytes[at] = 0xff; // the last label's value, no longer UTF-8
        assert!(matches!(
            Request::new(&bytes)
                .fields(&query, RequestLimits::default())
                .next(),
            Some(Err(WireError::Utf8("value")))
        ));
    }

    #[test]
    fn limits_and_utf8_are_enforced() {
        let query = LabelQuery::new(["namespace"]);
        let many = pb::WriteRequest {
            timeseries: vec![pb::TimeSeries {
                labels: (0..50).map(|i| label(&format!("l{i}"), "v")).collect(),
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec();
        let limits = RequestLimits {
            max_labels: 10,
            max_label_bytes: 4,
            ..RequestLimits::default()
        };
        let err = Request::new(&many).fields(&query, limits).next().unwrap();
        assert_eq!(
            err.unwrap_err(),
            WireError::TooManyLabels {
                count: 50,
                limit: 10
            }
        );

        let long = pb::WriteRequest {
            timeseries: vec![pb::TimeSeries {
                labels: vec![label("namespace", "toolong")],
                ..Default::default()
            }],
            metadata: vec![],
        }
        .encode_to_vec();
        let err = Request::new(&long).fields(&query, limits).next().unwrap();
        assert!(matches!(err, Err(WireError::LabelTooLong { .. })));

        // a label value with an invalid UTF-8 byte, written by hand
        let mut label_bytes = Vec::new();
        crate::wire::encode::put_bytes_field(&mut label_bytes, 1, b"ns");
        crate::wire::encode::put_bytes_field(&mut label_bytes, 2, &[0xff, 0xfe]);
        let mut series = Vec::new();
        crate::wire::encode::put_bytes_field(&mut series, 1, &label_bytes);
        let mut req = Vec::new();
        crate::wire::encode::put_bytes_field(&mut req, 1, &series);
        let err = Request::new(&req)
            .fields(&query, RequestLimits::default())
            .next()
            .unwrap();
        assert_eq!(err.unwrap_err(), WireError::Utf8("value"));
    }

    /// One request of one series made of `fields`: `Ok((name, value))` a
    /// label, `Err(())` a sample; values as raw bytes.
    fn series_of(fields: &[Result<(&str, &[u8]), ()>]) -> Vec<u8> {
        use crate::wire::encode::put_bytes_field;
        let mut series = Vec::new();
        for field in fields {
            match field {
                Ok((name, value)) => {
                    let mut label = Vec::new();
                    put_bytes_field(&mut label, 1, name.as_bytes());
                    put_bytes_field(&mut label, 2, value);
                    put_bytes_field(&mut series, 1, &label);
                }
                Err(()) => put_bytes_field(
                    &mut series,
                    2,
                    &pb::Sample {
                        value: 1.0,
                        timestamp: 5,
                    }
                    .encode_to_vec(),
                ),
            }
        }
        let mut req = Vec::new();
        put_bytes_field(&mut req, 1, &series);
        req
    }

    fn walk_one(req: &[u8], limits: RequestLimits) -> Result<SeriesView<'_>, WireError> {
        let query = LabelQuery::new(["namespace"]);
        match Request::new(req).fields(&query, limits).next().unwrap()? {
            Field::Series(s) => Ok(s),
            Field::Metadata(_) => panic!("metadata"),
        }
    }

    #[test]
    fn labels_long_short_and_non_ascii_are_read_and_checked_alike() {
        let long_c = "c".repeat(200);
        let long_p = "p".repeat(130);
        let accents = "é".repeat(100);
        // Short and long (two-byte length) labels mixed, ASCII or not, and
        // a label after a sample: every label is seen, the hit's field is
        // exactly its label.
        for (fields, hit, labels) in [
            (
                vec![
                    Ok(("__name__", &b"up"[..])),
                    Ok(("container", long_c.as_bytes())),
                    Ok(("namespace", b"shop")),
                    Ok(("pod", long_p.as_bytes())),
                    Err(()),
                ],
                "shop",
                4,
            ),
            (
                vec![
                    Ok(("__name__", &b"up"[..])),
                    Ok(("namespace", "shöp".as_bytes())),
                    Ok(("x", accents.as_bytes())),
                    Err(()),
                ],
                "shöp",
                3,
            ),
            (
                vec![
                    Ok(("__name__", &b"up"[..])),
                    Ok(("x", accents.as_bytes())),
                    Ok(("namespace", b"shop")),
                ],
                "shop",
                3,
            ),
            (
                vec![
                    Ok(("__name__", &b"up"[..])),
                    Err(()),
                    Ok(("pod", long_p.as_bytes())),
                    Ok(("namespace", b"late")),
                ],
                "late",
                3,
            ),
        ] {
            let req = series_of(&fields);
            let s = walk_one(&req, RequestLimits::default()).unwrap();
            assert_eq!((s.metric_name, s.labels), (Some("up"), labels));
            let h = s.hit.unwrap();
            assert_eq!(h.value, hit);
            let only = pb::TimeSeries::decode(&s.body[h.field.0..h.field.1]).unwrap();
            assert_eq!(only.labels, [label("namespace", hit)]);
        }

        // Invalid UTF-8 anywhere, before or after a long label.
        for fields in [
            vec![
                Ok(("a", &b"ok"[..])),
                Ok(("b", long_c.as_bytes())),
                Ok(("c", b"\xff")),
            ],
            vec![Ok(("a", &b"\xff"[..])), Ok(("b", long_c.as_bytes()))],
            vec![
                Ok(("a", &b"ok"[..])),
                Ok(("b", &[b'x'; 140][..])),
                Ok(("c", &[0xc3; 140][..])),
            ],
        ] {
            let err = walk_one(&series_of(&fields), RequestLimits::default()).unwrap_err();
            assert_eq!(err, WireError::Utf8("value"), "{fields:?}");
        }

        // The byte limit on a long label, at and one over.
        let limits = RequestLimits {
            max_label_bytes: 150,
            ..RequestLimits::default()
        };
        let at = "v".repeat(150);
        let over = "v".repeat(151);
        let req = series_of(&[Ok(("a", b"x")), Ok(("namespace", at.as_bytes()))]);
        assert_eq!(walk_one(&req, limits).unwrap().hit.unwrap().value, at);
        let req = series_of(&[Ok(("a", b"x")), Ok(("namespace", over.as_bytes()))]);
        assert!(matches!(
            walk_one(&req, limits),
            Err(WireError::LabelTooLong { len: 151, .. })
        ));

        // The label count limit, counting long labels too.
        let limits = RequestLimits {
            max_labels: 3,
            ..RequestLimits::default()
        };
        let fields: Vec<_> = (0..4).map(|_| Ok(("l", long_p.as_bytes()))).collect();
        assert_eq!(
            walk_one(&series_of(&fields), limits).unwrap_err(),
            WireError::TooManyLabels { count: 4, limit: 3 }
        );
        assert_eq!(
            walk_one(&series_of(&fields[..3]), limits).unwrap().labels,
            3
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let query = LabelQuery::new(["namespace"]);
        for bytes in [
            &b"\x0a\xff\xff\xff\xff\x0f"[..],
            b"\x0b",
            b"\x0a\x02\x0a\x05",
            b"\x08\x01",
            b"hello world",
        ] {
            let results: Vec<_> = Request::new(bytes)
                .fields(&query, RequestLimits::default())
                .collect();
            assert!(results.iter().any(|r| r.is_err()), "{bytes:?} accepted");
        }
    }
}
