//! Remote write 2.0 (`io.prometheus.write.v2.Request`) as a [`Format`]:
//! walked without copying, each tenant's request re-indexed onto a symbol
//! table of its own.
//!
//! ```text
//!  body ─► Symbols::read: every `symbols` entry (UTF-8, within limits, "" first)
//!       ─► walk: each `timeseries` ─► label refs resolved (routing key, __name__: what
//!                                     an entry is as a label name is asked once per request),
//!                                     every ref of labels, exemplars and metadata range-checked
//!  tenant batch ─► append_series: label, exemplar and metadata refs rewritten onto the
//!                  tenant's own table (one index into the input's per-entry slots, or,
//!                  for an entry another tenant took first, into the tenant's own array);
//!                  samples, histograms, timestamps and unknown fields copied as they
//!                  arrived, in one piece for a series with no exemplar or metadata
//!               ─► finish: the tenant's table ("" first, then its symbols in first-use
//!                  order, copied from the input once) before its series
//! ```
//!
//! Invariants:
//! - a tenant's request holds only the symbols its own series, exemplars and
//!   metadata use, so no string of another organization's series travels
//!   with it;
//! - every ref handed to a tenant's request indexes its own table, and means
//!   the same string it meant in the input;
//! - the walk range-checks every ref and validates every field it will copy,
//!   so a malformed request is refused whole (400) before anything is sent;
//! - a tenant batch takes series of one request only: the slots that say
//!   which batch took an input symbol first, and the batch ids, are that
//!   request's ([`Symbols`]).
//!
//! Unlike 1.0, two tenant requests one after the other are not one request
//! (their symbol tables would merge and the refs of the second would point
//! into the first's), so a busy tenant's batches are merged upstream by
//! [`merge`], which builds one table for them all.
//!
//! [`to_v1`] turns a (tenant's) 2.0 request into a 1.0 `WriteRequest` for
//! upstreams that only speak 1.0.

use std::cell::Cell;

use hashbrown::{HashMap, HashSet};

use super::kind::{Downgrade, PushKind};
use super::rw1::walk::histogram;
use super::{Format, PushItem};
use crate::codec::Codec;
use crate::signals::{Counts, Signal};
use crate::wire::encode::{put_bytes_field, put_varint, put_varint_at, varint_len};
use crate::wire::{all_ascii, check_field, check_message, count, FieldKind};
use crate::wire::{
    read_key, read_len, read_varint, skip_value, wt, Hit, LabelQuery, LimitedItem as Limited,
    RequestLimits, WireError,
};

/// Prost types generated from `proto/write_v2.proto`: the reference
/// decoder and encoder, used by tests, `inspect` and the fixtures.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
}

/// Remote write 2.0.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rw2;

/// The `Content-Type` of a 2.0 request.
pub const CONTENT_TYPE: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// The remote write 2.0 push kind (negotiated on the remote write
/// endpoint, [`super::remote_write::ENDPOINT`]).
pub static KIND: PushKind = PushKind {
    name: "remote write 2.0",
    id: 1,
    signal: Signal::Metrics,
    codec: Codec::Snappy,
    outgoing_headers: &[
        ("content-encoding", "snappy"),
        ("content-type", CONTENT_TYPE),
        ("x-prometheus-remote-write-version", "2.0.0"),
    ],
    concatenates: <Rw2 as Format>::CONCATENATES,
    reports_written: true,
    downgrade: Some(Downgrade {
        to: &super::rw1::KIND,
        convert: downgrade,
    }),
    merge: Some(merge),
};

/// [`to_v1`] for a body orgsplit made itself (already within the limits):
/// the 1.0 body, and what 1.0 could not carry.
fn downgrade(decoded: &[u8]) -> Result<(Vec<u8>, [u64; 3]), String> {
    let mut v1 = Vec::with_capacity(decoded.len() + decoded.len() / 2);
    let limits = RequestLimits {
        max_symbols: usize::MAX,
        max_symbol_bytes: usize::MAX,
        ..Default::default()
    };
    let lost = to_v1(decoded, limits, &mut v1).map_err(|e| e.to_string())?;
    Ok((
        v1,
        [
            lost.start_timestamps,
            lost.classic_buckets,
            lost.unknown_fields,
        ],
    ))
}

/// The symbol table of a request: every entry of its `symbols` field,
/// borrowed from the body, and what the split learns about each entry as it
/// goes (what it is as a label name, which tenant request took it first).
///
/// The per-entry state lives here, in arrays indexed by the input ref, so
/// that the walk asks the routing query about a label name once per
/// request rather than once per series, and a tenant's request finds the
/// ref it gave an input symbol with one index rather than a hash lookup.
/// It is in `Cell`s because the walk only borrows the table; the table
/// lives for one request's split and is not shared between threads.
#[derive(Debug)]
pub struct Symbols<'a> {
    body: &'a [u8],
    strs: Vec<&'a str>,
    /// Bytes of the longest entry: when it is within the label bound, no
    /// label needs its length checked.
    longest: usize,
    /// Where the first `timeseries` field starts: every field before it
    /// was read and checked with the table.
    series_from: usize,
    /// Per entry, what it is as a label name ([`NameClass`]), learnt the
    /// first time a series uses it as one.
    names: Vec<Cell<u8>>,
    /// Per entry, the first tenant request that took it and the ref it has
    /// there ([`Table::remap`]).
    slots: Vec<Cell<Slot>>,
    /// Tenant requests built from this table so far (their ids are 1..).
    batches: Cell<u32>,
    /// Entries more than one tenant request took so far.
    shared: Cell<u32>,
}

/// The first tenant request that took an input symbol (0: none yet), the
/// symbol's ref in that request, and, once a second request takes it, its
/// number among the symbols several requests share (from 1).
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    batch: u32,
    new: u32,
    shared: u32,
}

/// Shared symbols numbered up to this are found in a tenant request's
/// dense array ([`Table::dense`], at most 4 KiB per request); the rest in
/// its hash map. Label names and the values many organizations repeat are
/// few and come first.
const DENSE_SHARED: u32 = 1024;

/// What an entry of the table is as a label name, cached per entry in
/// [`Symbols::names`]: not yet known, a name the walk has no use for,
/// `__name__`, a name of the routing query (`RANK + its rank`), or
/// something the cache cannot hold (asked again each time).
#[allow(non_snake_case)]
mod NameClass {
    pub const UNKNOWN: u8 = 0;
    pub const ORDINARY: u8 = 1;
    pub const METRIC_NAME: u8 = 2;
    pub const UNCACHED: u8 = 3;
    pub const RANK: u8 = 4;
}

impl<'a> Symbols<'a> {
    /// Reads the table, wherever in the body its entries are: checks each
    /// is UTF-8 and within `limits.max_symbol_bytes`, that there are at most
    /// `limits.max_symbols`, and that the first is `""`.
    pub fn read(body: &'a [u8], limits: RequestLimits) -> Result<Self, WireError> {
        let mut strs = Vec::new();
        let mut longest = 0;
        let mut series_from = None;
        let mut pos = 0;
        while pos < body.len() {
            let start = pos;
            let (field, wire_type) = read_key(body, &mut pos, "Request")?;
            match (field, wire_type) {
                (4, wt::LEN) => {
                    let bytes = read_len(body, &mut pos, "symbol")?;
                    let index = strs.len();
                    if index >= limits.max_symbols {
                        return Err(WireError::TooMany {
                            item: Limited::Symbols,
                            limit: limits.max_symbols,
                        });
                    }
                    if bytes.len() > limits.max_symbol_bytes {
                        return Err(WireError::SymbolTooLong {
                            index,
                            len: bytes.len(),
                            limit: limits.max_symbol_bytes,
                        });
                    }
                    let text = if all_ascii(bytes) {
                        // SAFETY: ASCII is valid UTF-8.
                        unsafe { std::str::from_utf8_unchecked(bytes) }
                    } else {
                        std::str::from_utf8(bytes).map_err(|_| WireError::SymbolUtf8(index))?
                    };
                    if index == 0 && !text.is_empty() {
                        return Err(WireError::FirstSymbol);
                    }
                    longest = longest.max(text.len());
                    strs.push(text);
                }
                (1..=3, _) => return Err(WireError::V1InV2(field)),
                (5, wt::LEN) => {
                    series_from.get_or_insert(start);
                    read_len(body, &mut pos, "timeseries")?;
                }
                (4 | 5, _) => {
                    return Err(WireError::WireType {
                        message: "Request",
                        field,
                        wire_type,
                    })
                }
                _ => skip_value(body, &mut pos, wire_type, "Request", field)?,
            }
        }
        let n = strs.len();
        Ok(Self {
            body,
            strs,
            longest,
            series_from: series_from.unwrap_or(body.len()),
            names: vec![Cell::new(NameClass::UNKNOWN); n],
            slots: vec![Cell::new(Slot::default()); n],
            batches: Cell::new(0),
            shared: Cell::new(0),
        })
    }

    /// The entries, in order.
    pub fn as_slice(&self) -> &[&'a str] {
        &self.strs
    }

    /// What entry `i` (in range) is as a label name, asking `query` only
    /// the first time.
    #[inline(always)]
    fn name_class(&self, i: usize, query: &LabelQuery) -> u8 {
        let cell = &self.names[i];
        match cell.get() {
            NameClass::UNKNOWN => {
                let name = self.strs[i];
                let class = match (query.rank(name.as_bytes()), name == "__name__") {
                    (None, false) => NameClass::ORDINARY,
                    (None, true) => NameClass::METRIC_NAME,
                    (Some(rank), false) if rank < usize::from(u8::MAX - NameClass::RANK) => {
                        NameClass::RANK + rank as u8
                    }
                    (Some(_), _) => NameClass::UNCACHED,
                };
                cell.set(class);
                class
            }
            class => class,
        }
    }

    /// A new id for a tenant request built from this table.
    fn next_batch(&self) -> u32 {
        let id = self.batches.get() + 1;
        self.batches.set(id);
        id
    }

    /// The number of a symbol a second tenant request takes.
    fn next_shared(&self) -> u32 {
        let n = self.shared.get() + 1;
        self.shared.set(n);
        n
    }
}

/// One series, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'a> {
    /// The `TimeSeries` message body.
    pub body: &'a [u8],
    /// The request's symbol table.
    pub symbols: &'a Symbols<'a>,
    /// The best match of the routing query. `field.0` is the index of the
    /// label pair (not a byte range, as in 1.0).
    pub hit: Option<Hit<'a>>,
    /// The value of `__name__`, if present.
    pub metric_name: Option<&'a str>,
    pub labels: u32,
    pub samples: u32,
    pub histograms: u32,
    pub exemplars: u32,
    pub metadata: bool,
    /// Where the series' one packed `labels_refs` field is (key to end),
    /// when it has one and no exemplar or metadata: such a series is
    /// re-indexed without being read again (`Batch::append`).
    pub plain: Option<(usize, usize)>,
}

/// Where a sample's, exemplar's or metadata's fields may be (field number →
/// kind; refs are checked apart).
const SAMPLE: [Option<FieldKind>; 4] = [
    None,
    Some(FieldKind::Fixed64),
    Some(FieldKind::Varint),
    Some(FieldKind::Varint),
];

/// Checks the histogram fields 2.0 added after 1.0's (start timestamp, 17;
/// classic buckets, 18); the rest are checked as for 1.0.
fn classic_buckets(body: &[u8]) -> Result<(), WireError> {
    const BUCKET: [Option<FieldKind>; 3] =
        [None, Some(FieldKind::Fixed64), Some(FieldKind::Fixed64)];
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Histogram")?;
        match (field, wire_type) {
            (17, wt::VARINT) => {
                read_varint(body, &mut pos)?;
            }
            (18, wt::LEN) => check_message(read_len(body, &mut pos, "classic bucket")?, &BUCKET)?,
            (17 | 18, _) => {
                return Err(WireError::WireType {
                    message: "Histogram",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(body, &mut pos, wire_type, "Histogram", field)?,
        }
    }
    Ok(())
}

/// An exemplar's value and timestamp (its refs are checked apart).
const EXEMPLAR_SCALARS: [Option<FieldKind>; 4] = [
    None,
    None,
    Some(FieldKind::Fixed64),
    Some(FieldKind::Varint),
];
/// A metadata's type (its refs are checked apart).
const METADATA_TYPE: [Option<FieldKind>; 2] = [None, Some(FieldKind::Varint)];

impl Format for Rw2 {
    type Series<'a> = SeriesRef<'a>;
    type Extra<'a> = std::convert::Infallible;
    type Batch = Batch;
    type Index<'a> = Symbols<'a>;
    const CONCATENATES: bool = false;

    fn index<'a>(&self, body: &'a [u8], limits: RequestLimits) -> Result<Symbols<'a>, WireError> {
        Symbols::read(body, limits)
    }

    fn walk<'a, E: From<WireError>>(
        &self,
        index: &'a Symbols<'_>,
        query: &LabelQuery,
        limits: RequestLimits,
        mut visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        let body: &'a [u8] = index.body;
        let mut totals = Totals::default();
        // The table read checked every field before the first series.
        let mut pos = index.series_from;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "Request")?;
            if field == 5 && wire_type == wt::LEN {
                let series_body = read_len(body, &mut pos, "timeseries")?;
                count(&mut totals.series, limits.max_series, Limited::Series)?;
                let series = walk_series(series_body, index, query, limits, &mut totals)?;
                visit(PushItem::Series(series))?;
            } else {
                // The table read already checked these fields.
                skip_value(body, &mut pos, wire_type, "Request", field)?;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn key<'a>(series: &Self::Series<'a>) -> Option<Hit<'a>> {
        series.hit
    }

    /// None: 2.0 metadata rides on its series, so there are no extras to
    /// route by family, and the family index is not taught.
    #[inline(always)]
    fn family<'a>(_: &Self::Series<'a>) -> Option<&'a str> {
        None
    }

    #[inline(always)]
    fn counts(series: &SeriesRef<'_>) -> Counts {
        Counts {
            series: 1,
            samples: u64::from(series.samples),
            histograms: u64::from(series.histograms),
            exemplars: u64::from(series.exemplars),
            metadata: u64::from(series.metadata),
        }
    }

    fn describe(series: &SeriesRef<'_>) -> String {
        const MAX: usize = 12;
        let refs = label_refs(series.body);
        let pairs: Vec<String> = refs
            .chunks_exact(2)
            .take(MAX)
            .map(|p| {
                let s = |r: u32| series.symbols.strs.get(r as usize).copied().unwrap_or("?");
                format!("{}={:?}", s(p[0]), s(p[1]))
            })
            .collect();
        match (refs.len() / 2).saturating_sub(MAX) {
            0 => format!("{{{}}}", pairs.join(", ")),
            more => format!("{{{}, +{more} more}}", pairs.join(", ")),
        }
    }

    fn extra_family<'a>(extra: &std::convert::Infallible) -> &'a str {
        match *extra {}
    }

    fn append_series(
        batch: &mut Batch,
        out: &mut Vec<u8>,
        series: &SeriesRef<'_>,
        without: Option<Hit<'_>>,
    ) {
        batch.append(out, series, without.map(|h| h.field.0));
    }

    fn append_extra(_: &mut Batch, _: &mut Vec<u8>, extra: &std::convert::Infallible) {
        match *extra {}
    }

    /// Puts the tenant's symbol table in front of its series: `""`, then
    /// the input's symbols the batch took, in the order it took them,
    /// written once, straight into place.
    fn finish(index: &Symbols<'_>, batch: Batch, out: &mut Vec<u8>) {
        let order = &batch.table.order;
        let strs = index.as_slice();
        let entry = |old: &u32| {
            let len = strs[*old as usize].len();
            1 + varint_len(len as u64) + len
        };
        let table_len = 2 + order.iter().map(entry).sum::<usize>();
        let len = out.len();
        out.resize(len + table_len, 0);
        out.copy_within(..len, table_len);
        let table = &mut out[..table_len];
        table[..2].copy_from_slice(&[(4 << 3) | wt::LEN, 0]);
        let mut at = 2;
        for &old in order {
            let text = strs[old as usize].as_bytes();
            table[at] = (4 << 3) | wt::LEN;
            at = put_varint_at(table, at + 1, text.len() as u64);
            table[at..at + text.len()].copy_from_slice(text);
            at += text.len();
        }
    }
}

/// Items counted so far in one request, against [`RequestLimits`].
#[derive(Default)]
struct Totals {
    series: usize,
    samples: usize,
    exemplars: usize,
}

/// Checks a ref against the table.
#[inline(always)]
fn symbol<'a>(symbols: &[&'a str], index: u64, what: &'static str) -> Result<&'a str, WireError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| symbols.get(i).copied())
        .ok_or(WireError::SymbolRef {
            what,
            index,
            len: symbols.len(),
        })
}

/// Calls `each` with every ref of a `labels_refs` field (packed, or one
/// unpacked value), after checking its wire type. `each` is called from
/// one place, so that it is inlined into the loop (the walk's closure is
/// called for every ref of every series).
#[inline(always)]
fn for_each_ref(
    buf: &[u8],
    pos: &mut usize,
    wire_type: u8,
    message: &'static str,
    mut each: impl FnMut(u64) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let (packed, mut single) = match wire_type {
        wt::LEN => (read_len(buf, pos, "labels_refs")?, None),
        wt::VARINT => (&[][..], Some(read_varint(buf, pos)?)),
        _ => {
            return Err(WireError::WireType {
                message,
                field: 1,
                wire_type,
            })
        }
    };
    let mut p = 0;
    loop {
        let r = match single.take() {
            Some(r) => r,
            None if p < packed.len() => read_varint(packed, &mut p)?,
            None => return Ok(()),
        };
        each(r)?;
    }
}

fn walk_series<'a>(
    body: &'a [u8],
    index: &'a Symbols<'a>,
    query: &LabelQuery,
    limits: RequestLimits,
    totals: &mut Totals,
) -> Result<SeriesRef<'a>, WireError> {
    let symbols: &'a [&'a str] = &index.strs;
    let mut view = SeriesRef {
        body,
        symbols: index,
        hit: None,
        metric_name: None,
        labels: 0,
        samples: 0,
        histograms: 0,
        exemplars: 0,
        metadata: false,
        plain: None,
    };
    // Whether labels need their lengths checked: not when no entry of the
    // table is longer than a label may be.
    let check_lengths = index.longest > limits.max_label_bytes;
    // Refs come in (name, value) pairs, possibly spread over several
    // fields; the name waits here for its value.
    let mut name: Option<usize> = None;
    // The one packed labels field so far, and whether the series can still
    // be re-indexed without being read again (see `SeriesRef::plain`).
    let mut labels_field = None;
    let mut plain = true;
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "TimeSeries")?;
        if (2..=5).contains(&field) && wire_type != wt::LEN {
            return Err(WireError::WireType {
                message: "TimeSeries",
                field,
                wire_type,
            });
        }
        match field {
            1 => {
                for_each_ref(body, &mut pos, wire_type, "TimeSeries", |r| {
                    let i = usize::try_from(r)
                        .ok()
                        .filter(|&i| i < symbols.len())
                        .ok_or(WireError::SymbolRef {
                            what: "a series label",
                            index: r,
                            len: symbols.len(),
                        })?;
                    let Some(n) = name.take() else {
                        name = Some(i);
                        return Ok(());
                    };
                    let pair = view.labels as usize;
                    view.labels += 1;
                    if view.labels as usize > limits.max_labels {
                        return Err(WireError::TooManyLabels {
                            count: label_refs(body).len() / 2,
                            limit: limits.max_labels,
                        });
                    }
                    if check_lengths {
                        for (which, s) in [("name", symbols[n]), ("value", symbols[i])] {
                            if s.len() > limits.max_label_bytes {
                                return Err(WireError::LabelTooLong {
                                    which,
                                    len: s.len(),
                                    limit: limits.max_label_bytes,
                                });
                            }
                        }
                    }
                    let (rank, metric_name) = match index.name_class(n, query) {
                        NameClass::ORDINARY => return Ok(()),
                        NameClass::METRIC_NAME => (None, true),
                        NameClass::UNCACHED => {
                            (query.rank(symbols[n].as_bytes()), symbols[n] == "__name__")
                        }
                        class => (Some(usize::from(class - NameClass::RANK)), false),
                    };
                    if metric_name && view.metric_name.is_none() {
                        view.metric_name = Some(symbols[i]);
                    }
                    if let Some(rank) = rank {
                        if view.hit.is_none_or(|h| rank < h.rank) {
                            view.hit = Some(Hit {
                                rank,
                                value: symbols[i],
                                field: (pair, 0),
                            });
                        }
                    }
                    Ok(())
                })?;
                if wire_type == wt::LEN && labels_field.is_none() {
                    labels_field = Some((start, pos));
                } else {
                    plain = false;
                }
            }
            2 => {
                check_message(read_len(body, &mut pos, "sample")?, &SAMPLE)?;
                count(&mut totals.samples, limits.max_samples, Limited::Samples)?;
                view.samples += 1;
            }
            3 => {
                let h = read_len(body, &mut pos, "histogram")?;
                histogram(h, limits)?;
                classic_buckets(h)?;
                count(&mut totals.samples, limits.max_samples, Limited::Samples)?;
                view.histograms += 1;
            }
            4 => {
                count(
                    &mut totals.exemplars,
                    limits.max_exemplars,
                    Limited::Exemplars,
                )?;
                exemplar(read_len(body, &mut pos, "exemplar")?, symbols, limits)?;
                view.exemplars += 1;
                plain = false;
            }
            5 => {
                metadata(read_len(body, &mut pos, "metadata")?, symbols)?;
                view.metadata = true;
                plain = false;
            }
            6 if wire_type != wt::VARINT => {
                return Err(WireError::WireType {
                    message: "TimeSeries",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(body, &mut pos, wire_type, "TimeSeries", field)?,
        }
    }
    if name.is_some() {
        return Err(WireError::OddLabelRefs("a series"));
    }
    if view.labels == 0 {
        return Err(WireError::NoLabels);
    }
    if plain {
        view.plain = labels_field;
    }
    Ok(view)
}

fn exemplar(body: &[u8], symbols: &[&str], limits: RequestLimits) -> Result<(), WireError> {
    let mut refs = 0usize;
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Exemplar")?;
        match field {
            1 => for_each_ref(body, &mut pos, wire_type, "Exemplar", |r| {
                let text = symbol(symbols, r, "an exemplar label")?;
                refs += 1;
                if refs / 2 > limits.max_labels {
                    return Err(WireError::TooManyLabels {
                        count: refs / 2,
                        limit: limits.max_labels,
                    });
                }
                if text.len() > limits.max_label_bytes {
                    return Err(WireError::LabelTooLong {
                        which: if refs % 2 == 1 { "name" } else { "value" },
                        len: text.len(),
                        limit: limits.max_label_bytes,
                    });
                }
                Ok(())
            })?,
            2 | 3 => {
                check_field(body, &mut pos, field, wire_type, &EXEMPLAR_SCALARS)?;
            }
            _ => skip_value(body, &mut pos, wire_type, "Exemplar", field)?,
        }
    }
    if refs % 2 == 1 {
        return Err(WireError::OddLabelRefs("an exemplar"));
    }
    Ok(())
}

fn metadata(body: &[u8], symbols: &[&str]) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Metadata")?;
        match (field, wire_type) {
            (3 | 4, wt::VARINT) => {
                let what = if field == 3 { "help_ref" } else { "unit_ref" };
                symbol(symbols, read_varint(body, &mut pos)?, what)?;
            }
            (1, _) => {
                check_field(body, &mut pos, field, wire_type, &METADATA_TYPE)?;
            }
            (3 | 4, _) => {
                return Err(WireError::WireType {
                    message: "Metadata",
                    field,
                    wire_type,
                })
            }
            _ => skip_value(body, &mut pos, wire_type, "Metadata", field)?,
        }
    }
    Ok(())
}

/// The label refs of an (already validated) series or exemplar body, in
/// order; for error messages and descriptions.
fn label_refs(body: &[u8]) -> Vec<u32> {
    let mut refs = Vec::new();
    collect_refs(body, &mut refs);
    refs
}

/// Appends the refs of field 1 (`labels_refs`, in series and exemplars
/// alike) of an already validated message to `refs`, in order.
fn collect_refs(body: &[u8], refs: &mut Vec<u32>) {
    let mut pos = 0;
    while pos < body.len() {
        let Ok((field, wire_type)) = read_key(body, &mut pos, "message") else {
            break;
        };
        let ok = if field == 1 {
            for_each_ref(body, &mut pos, wire_type, "message", |r| {
                refs.push(r as u32);
                Ok(())
            })
        } else {
            skip_value(body, &mut pos, wire_type, "message", field)
        };
        if ok.is_err() {
            break;
        }
    }
}

/// A tenant's request while it is built: its own symbol table, and where
/// each input symbol went in it.
///
/// A batch is built from the series of one request: its id is handed out
/// by that request's [`Symbols`] on its first series, and the table's
/// per-entry slots it reads are that request's.
#[derive(Default)]
pub struct Batch {
    /// This request's id in the input's [`Symbols`] (0 until its first
    /// series).
    id: u32,
    table: Table,
    scratch: Scratch,
}

/// A request's symbol table while it is built.
#[derive(Default)]
struct Table {
    /// The input refs of this request's symbols, in the order it took them:
    /// its table is `""` then these ([`Format::finish`] writes it), so the
    /// ref it gives `order[i]` is `i + 1`.
    order: Vec<u32>,
    /// This request's ref (0: none yet) of the symbols another tenant's
    /// request took first (the ref in the request that took a symbol first
    /// is in the input's [`Symbols::slots`]), by their shared number, up to
    /// [`DENSE_SHARED`]. Label names and the values common to many
    /// organizations land here; most values do not.
    dense: Vec<u32>,
    /// The same for shared numbers beyond [`DENSE_SHARED`].
    shared: HashMap<u32, u32>,
}

/// Buffers reused while series are re-encoded.
#[derive(Default)]
struct Scratch {
    /// A series' body while it is re-encoded.
    series: Vec<u8>,
    /// An exemplar's or metadata's body while it is re-encoded.
    inner: Vec<u8>,
    /// Label refs of the series being re-encoded.
    refs: Vec<u32>,
}

impl Table {
    /// This request's ref for input symbol `old` (a ref the walk checked),
    /// taking the symbol on first use. `id` is this request's id in
    /// `index`.
    #[inline(always)]
    fn remap(&mut self, index: &Symbols<'_>, id: u32, old: u32) -> u32 {
        // Every table starts with "" (the input's entry 0, checked when it
        // was read), so 0 keeps meaning "".
        if old == 0 {
            return 0;
        }
        let slot = &index.slots[old as usize];
        let taken = slot.get();
        if taken.batch == id {
            return taken.new;
        }
        if taken.batch == 0 {
            let new = self.take(old);
            slot.set(Slot {
                batch: id,
                new,
                shared: 0,
            });
            return new;
        }
        self.remap_shared(index, slot, old)
    }

    /// [`Table::remap`] for a symbol another tenant's request took first.
    #[inline(never)]
    fn remap_shared(&mut self, index: &Symbols<'_>, slot: &Cell<Slot>, old: u32) -> u32 {
        let mut taken = slot.get();
        if taken.shared == 0 {
            taken.shared = index.next_shared();
            slot.set(taken);
        }
        if taken.shared <= DENSE_SHARED {
            let i = taken.shared as usize - 1;
            if i >= self.dense.len() {
                // At least as many as are shared so far: most requests
                // share the same few (label names), and take them early.
                let shared = index.shared.get().min(DENSE_SHARED) as usize;
                self.dense.resize((i + 1).max(shared).max(32), 0);
            }
            if self.dense[i] != 0 {
                return self.dense[i];
            }
            let new = self.take(old);
            self.dense[i] = new;
            return new;
        }
        if let Some(&new) = self.shared.get(&taken.shared) {
            return new;
        }
        let new = self.take(old);
        self.shared.insert(taken.shared, new);
        new
    }

    /// Takes input symbol `old` as this request's next entry, and returns
    /// its ref.
    #[inline]
    fn take(&mut self, old: u32) -> u32 {
        if self.order.capacity() == 0 {
            // Most tables hold more than a few entries: skip the smallest
            // sizes of the doubling.
            self.order.reserve(1 << 8);
        }
        self.order.push(old);
        self.order.len() as u32
    }
}

impl Batch {
    /// Appends `series` to `out` with its refs rewritten, leaving out label
    /// pair `without` if given.
    fn append(&mut self, out: &mut Vec<u8>, s: &SeriesRef<'_>, without: Option<usize>) {
        let index = s.symbols;
        if self.id == 0 {
            self.id = index.next_batch();
        }
        let Self { id, table, scratch } = self;
        let id = *id;
        // Never fails: remapping a checked ref always has an answer.
        let _ = match s.plain {
            Some(field) => append_plain(
                s.body,
                field,
                without,
                out,
                &mut scratch.series,
                &mut |old| Ok(table.remap(index, id, old)),
            ),
            None => rewrite_series(s.body, without, out, scratch, &mut |old| {
                Ok(table.remap(index, id, old))
            }),
        };
    }
}

/// Where the one packed `labels_refs` field of an (already validated)
/// series is, if it has one and no exemplar or metadata (which hold refs
/// too): what [`append_plain`] needs.
fn plain_labels(body: &[u8]) -> Option<(usize, usize)> {
    let mut labels = None;
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "TimeSeries").ok()?;
        skip_value(body, &mut pos, wire_type, "TimeSeries", field).ok()?;
        match (field, wire_type) {
            (1, wt::LEN) if labels.is_none() => labels = Some((start, pos)),
            (1 | 4 | 5, _) => return None,
            _ => {}
        }
    }
    labels
}

/// Appends a series whose only refs are its one packed `labels_refs` field
/// at `field` (see [`plain_labels`]) to `out` as a `timeseries` field: the
/// refs passed through `map`, leaving out label pair `without` if given,
/// then the series' other fields in one piece each side of the labels. The
/// same bytes [`rewrite_series`] writes, without reading the series twice
/// or building it in a scratch buffer first. Nothing is written when `map`
/// fails.
#[inline(always)]
fn append_plain(
    body: &[u8],
    (start, end): (usize, usize),
    without: Option<usize>,
    out: &mut Vec<u8>,
    packed_refs: &mut Vec<u8>,
    map: &mut impl FnMut(u32) -> Result<u32, WireError>,
) -> Result<(), WireError> {
    let mut pos = start;
    // The key and length were read when the field was found.
    let packed = read_key(body, &mut pos, "TimeSeries")
        .and_then(|_| read_len(body, &mut pos, "labels_refs"))
        .unwrap_or_default();
    let skip = without.map(|pair| 2 * pair);
    // The rewritten refs, encoded: every old ref takes a byte at least and
    // a new one five at most.
    packed_refs.clear();
    packed_refs.reserve(5 * packed.len());
    let (mut p, mut i) = (0, 0);
    while p < packed.len() {
        let Ok(old) = read_varint(packed, &mut p) else {
            break;
        };
        if skip.is_none_or(|s| i != s && i != s + 1) {
            put_varint(packed_refs, u64::from(map(old as u32)?));
        }
        i += 1;
    }
    let packed_len = packed_refs.len();
    let labels_len = if packed_len == 0 {
        0
    } else {
        1 + varint_len(packed_len as u64) + packed_len
    };
    let series_len = labels_len + body.len() - (end - start);
    out.reserve(1 + varint_len(series_len as u64) + series_len);
    put_varint(out, (5 << 3) | u64::from(wt::LEN));
    put_varint(out, series_len as u64);
    if packed_len > 0 {
        put_varint(out, (1 << 3) | u64::from(wt::LEN));
        put_varint(out, packed_len as u64);
        out.extend_from_slice(packed_refs);
    }
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&body[end..]);
    Ok(())
}

/// Appends series `body` to `out` as a `timeseries` field with every ref
/// (labels, exemplar labels, metadata help and unit) passed through `map`,
/// leaving out label pair `without` if given. Labels go first, as one
/// packed field; every other field follows in its order, as it arrived
/// unless it holds refs.
fn rewrite_series(
    body: &[u8],
    without: Option<usize>,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    map: &mut impl FnMut(u32) -> Result<u32, WireError>,
) -> Result<(), WireError> {
    let Scratch {
        series,
        inner,
        refs,
    } = scratch;
    series.clear();
    refs.clear();
    collect_refs(body, refs);
    if let Some(pair) = without.filter(|p| 2 * p + 1 < refs.len()) {
        refs.drain(2 * pair..2 * pair + 2);
    }
    for r in refs.iter_mut() {
        *r = map(*r)?;
    }
    put_packed(series, 1, refs);
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "TimeSeries")?;
        match (field, wire_type) {
            (1, _) => skip_value(body, &mut pos, wire_type, "TimeSeries", field)?,
            (4, wt::LEN) => {
                let ex = read_len(body, &mut pos, "exemplar")?;
                inner.clear();
                rewrite_exemplar(ex, inner, refs, map)?;
                put_bytes_field(series, 4, inner);
            }
            (5, wt::LEN) => {
                let md = read_len(body, &mut pos, "metadata")?;
                inner.clear();
                rewrite_metadata(md, inner, map)?;
                put_bytes_field(series, 5, inner);
            }
            _ => {
                skip_value(body, &mut pos, wire_type, "TimeSeries", field)?;
                series.extend_from_slice(&body[start..pos]);
            }
        }
    }
    put_bytes_field(out, 5, series);
    Ok(())
}

/// Re-encodes an exemplar: its label refs rewritten (first, packed), its
/// value, timestamp and unknown fields as they arrived.
fn rewrite_exemplar(
    body: &[u8],
    out: &mut Vec<u8>,
    refs: &mut Vec<u32>,
    map: &mut impl FnMut(u32) -> Result<u32, WireError>,
) -> Result<(), WireError> {
    refs.clear();
    collect_refs(body, refs);
    for r in refs.iter_mut() {
        *r = map(*r)?;
    }
    put_packed(out, 1, refs);
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "Exemplar")?;
        skip_value(body, &mut pos, wire_type, "Exemplar", field)?;
        if field != 1 {
            out.extend_from_slice(&body[start..pos]);
        }
    }
    Ok(())
}

/// Re-encodes a metadata: its help and unit refs rewritten, the rest as it
/// arrived.
fn rewrite_metadata(
    body: &[u8],
    out: &mut Vec<u8>,
    map: &mut impl FnMut(u32) -> Result<u32, WireError>,
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "Metadata")?;
        if (field == 3 || field == 4) && wire_type == wt::VARINT {
            let old = read_varint(body, &mut pos)?;
            let old = u32::try_from(old).map_err(|_| WireError::SymbolRef {
                what: "metadata",
                index: old,
                len: u32::MAX as usize,
            })?;
            put_varint(out, u64::from(field << 3));
            put_varint(out, u64::from(map(old)?));
        } else {
            skip_value(body, &mut pos, wire_type, "Metadata", field)?;
            out.extend_from_slice(&body[start..pos]);
        }
    }
    Ok(())
}

/// Joins decoded 2.0 requests (orgsplit's tenant requests, or a sender's
/// whole request) into one: one symbol table holding each string once,
/// then every request's series with its refs rewritten into that table.
/// The forwarder merges one tenant's batches of concurrent pushes with it
/// ([`PushKind::merge`]): unlike 1.0, two 2.0 bodies one after the other
/// are not one request, since the second one's refs would index the first
/// one's symbols.
///
/// Each request's strings are hashed once; refs are rewritten through a
/// dense array per request, so the per-ref cost is an index, and the first
/// request's series (whose table is already the start of the merged one)
/// are copied unchanged. Refs are checked where they are rewritten; the
/// inputs are bodies orgsplit made, or walked whole, so the unchanged
/// ones were checked before.
pub fn merge(bodies: &[&[u8]], out: &mut Vec<u8>) -> Result<(), WireError> {
    // Every request's entries first, so that the index is sized once: its
    // growth was a third of a merge. One list for all requests' entries,
    // and request `i`'s are `entries[ends[i - 1]..ends[i]]`.
    let mut entries: Vec<&[u8]> = Vec::new();
    let mut ends = Vec::with_capacity(bodies.len());
    for body in bodies {
        let mut pos = 0;
        while pos < body.len() {
            let (field, wire_type) = read_key(body, &mut pos, "Request")?;
            if (field, wire_type) == (4, wt::LEN) {
                entries.push(read_len(body, &mut pos, "symbol")?);
            } else {
                skip_value(body, &mut pos, wire_type, "Request", field)?;
            }
        }
        ends.push(entries.len());
    }
    out.reserve(bodies.iter().map(|b| b.len()).sum());
    let mut index: HashMap<&[u8], u32> = HashMap::with_capacity(entries.len() + 1);
    index.insert(b"", 0);
    put_bytes_field(out, 4, b"");
    // Each entry's merged ref, in the same order as `entries`.
    let merged: Vec<u32> = entries
        .iter()
        .map(|&text| {
            let next = index.len() as u32;
            *index.entry(text).or_insert_with(|| {
                put_bytes_field(out, 4, text);
                next
            })
        })
        .collect();
    let maps = ends.iter().scan(0, |start, &end| {
        Some(&merged[std::mem::replace(start, end)..end])
    });
    let mut scratch = Scratch::default();
    for (body, map) in bodies.iter().zip(maps) {
        let same = map.iter().enumerate().all(|(i, &m)| i as u32 == m);
        let mut pos = 0;
        while pos < body.len() {
            let start = pos;
            let (field, wire_type) = read_key(body, &mut pos, "Request")?;
            match (field, wire_type) {
                (4, wt::LEN) => skip_value(body, &mut pos, wire_type, "Request", field)?,
                (5, wt::LEN) if !same => {
                    let series = read_len(body, &mut pos, "timeseries")?;
                    let mut remap = |old: u32| {
                        map.get(old as usize).copied().ok_or(WireError::SymbolRef {
                            what: "series",
                            index: u64::from(old),
                            len: map.len(),
                        })
                    };
                    match plain_labels(series) {
                        Some(field) => {
                            append_plain(series, field, None, out, &mut scratch.series, &mut remap)?
                        }
                        None => rewrite_series(series, None, out, &mut scratch, &mut remap)?,
                    }
                }
                _ => {
                    // Series whose refs keep their meaning, and fields
                    // orgsplit does not know, as they came.
                    skip_value(body, &mut pos, wire_type, "Request", field)?;
                    out.extend_from_slice(&body[start..pos]);
                }
            }
        }
    }
    Ok(())
}

/// Appends `values` as a packed repeated varint field (nothing when empty).
fn put_packed(out: &mut Vec<u8>, field: u32, values: &[u32]) {
    if values.is_empty() {
        return;
    }
    let len: usize = values.iter().map(|&v| varint_len(u64::from(v))).sum();
    put_varint(out, (u64::from(field) << 3) | u64::from(wt::LEN));
    put_varint(out, len as u64);
    for &v in values {
        put_varint(out, u64::from(v));
    }
}

/// What a 2.0 request carried that a 1.0 `WriteRequest` cannot, counted by
/// [`to_v1`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Start ("created") timestamps of series, samples and histograms.
    pub start_timestamps: u64,
    /// Classic buckets carried inside native histograms.
    pub classic_buckets: u64,
    /// Fields neither format knows.
    pub unknown_fields: u64,
}

impl Lost {
    pub fn is_empty(&self) -> bool {
        *self == Lost::default()
    }
}

/// Converts a 2.0 request into a 1.0 `WriteRequest` appended to `out`:
/// labels and exemplar labels resolved, samples and native histograms as
/// they were, each metric family's metadata once as 1.0 metadata. What 1.0
/// cannot carry is counted in the returned [`Lost`].
pub fn to_v1(body: &[u8], limits: RequestLimits, out: &mut Vec<u8>) -> Result<Lost, WireError> {
    let symbols = Symbols::read(body, limits)?;
    let symbols = symbols.as_slice();
    let mut lost = Lost::default();
    let mut families: HashSet<&str> = HashSet::new();
    let mut metadata = Vec::new();
    let mut series = Vec::new();
    let mut inner = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "Request")?;
        if field != 5 || wire_type != wt::LEN {
            skip_value(body, &mut pos, wire_type, "Request", field)?;
            continue;
        }
        let ts = read_len(body, &mut pos, "timeseries")?;
        series.clear();
        let mut name = None;
        let mut meta = None;
        let mut p = 0;
        // Labels first.
        let refs = label_refs(ts);
        for pair in refs.chunks_exact(2) {
            let (n, v) = (
                symbol(symbols, pair[0].into(), "a series label")?,
                symbol(symbols, pair[1].into(), "a series label")?,
            );
            if n == "__name__" && name.is_none() {
                name = Some(v);
            }
            put_label(&mut series, &mut inner, n, v);
        }
        while p < ts.len() {
            let (f, w) = read_key(ts, &mut p, "TimeSeries")?;
            match (f, w) {
                (1, _) => skip_value(ts, &mut p, w, "TimeSeries", f)?,
                (2, wt::LEN) => {
                    let sample = read_len(ts, &mut p, "sample")?;
                    inner.clear();
                    copy_without(sample, &[3], &mut inner, &mut lost)?;
                    put_bytes_field(&mut series, 2, &inner);
                }
                (3, wt::LEN) => {
                    let h = read_len(ts, &mut p, "histogram")?;
                    inner.clear();
                    copy_without(h, &[17, 18], &mut inner, &mut lost)?;
                    put_bytes_field(&mut series, 4, &inner);
                }
                (4, wt::LEN) => {
                    let ex = read_len(ts, &mut p, "exemplar")?;
                    let mut v1 = Vec::new();
                    let mut label = Vec::new();
                    let ex_refs = label_refs(ex);
                    for pair in ex_refs.chunks_exact(2) {
                        put_label(
                            &mut v1,
                            &mut label,
                            symbol(symbols, pair[0].into(), "an exemplar label")?,
                            symbol(symbols, pair[1].into(), "an exemplar label")?,
                        );
                    }
                    let mut q = 0;
                    while q < ex.len() {
                        let s = q;
                        let (ef, ew) = read_key(ex, &mut q, "Exemplar")?;
                        skip_value(ex, &mut q, ew, "Exemplar", ef)?;
                        match ef {
                            1 => {}
                            2 | 3 => v1.extend_from_slice(&ex[s..q]),
                            _ => lost.unknown_fields += 1,
                        }
                    }
                    put_bytes_field(&mut series, 3, &v1);
                }
                (5, wt::LEN) => meta = Some(read_len(ts, &mut p, "metadata")?),
                (6, wt::VARINT) => {
                    if read_varint(ts, &mut p)? != 0 {
                        lost.start_timestamps += 1;
                    }
                }
                _ => {
                    skip_value(ts, &mut p, w, "TimeSeries", f)?;
                    lost.unknown_fields += 1;
                }
            }
        }
        put_bytes_field(out, 1, &series);
        if let (Some(meta), Some(name)) = (meta, name) {
            v1_metadata(meta, name, symbols, &mut families, &mut metadata)?;
        }
    }
    out.extend_from_slice(&metadata);
    Ok(lost)
}

/// Appends a 1.0 `Label` field.
fn put_label(out: &mut Vec<u8>, scratch: &mut Vec<u8>, name: &str, value: &str) {
    scratch.clear();
    put_bytes_field(scratch, 1, name.as_bytes());
    put_bytes_field(scratch, 2, value.as_bytes());
    put_bytes_field(out, 1, scratch);
}

/// Copies a message's fields except those in `drop`, counting the dropped
/// ones that were set.
fn copy_without(
    body: &[u8],
    drop: &[u32],
    out: &mut Vec<u8>,
    lost: &mut Lost,
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        let (field, wire_type) = read_key(body, &mut pos, "message")?;
        if !drop.contains(&field) {
            skip_value(body, &mut pos, wire_type, "message", field)?;
            out.extend_from_slice(&body[start..pos]);
        } else if field == 18 {
            skip_value(body, &mut pos, wire_type, "message", field)?;
            lost.classic_buckets += 1;
        } else if wire_type == wt::VARINT {
            // A start timestamp: lost only if it was set.
            if read_varint(body, &mut pos)? != 0 {
                lost.start_timestamps += 1;
            }
        } else {
            skip_value(body, &mut pos, wire_type, "message", field)?;
        }
    }
    Ok(())
}

/// Appends the 1.0 `MetricMetadata` of a series' 2.0 metadata, once per
/// family.
fn v1_metadata<'a>(
    meta: &[u8],
    name: &'a str,
    symbols: &[&str],
    families: &mut HashSet<&'a str>,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let (mut kind, mut help, mut unit) = (0u64, "", "");
    let mut pos = 0;
    while pos < meta.len() {
        let (field, wire_type) = read_key(meta, &mut pos, "Metadata")?;
        match (field, wire_type) {
            (1, wt::VARINT) => kind = read_varint(meta, &mut pos)?,
            (3, wt::VARINT) => help = symbol(symbols, read_varint(meta, &mut pos)?, "help_ref")?,
            (4, wt::VARINT) => unit = symbol(symbols, read_varint(meta, &mut pos)?, "unit_ref")?,
            _ => skip_value(meta, &mut pos, wire_type, "Metadata", field)?,
        }
    }
    if kind == 0 && help.is_empty() && unit.is_empty() {
        return Ok(());
    }
    let family = family_name(name, kind);
    if !families.insert(family) {
        return Ok(());
    }
    let mut m = Vec::new();
    if kind != 0 {
        put_varint(&mut m, 1 << 3);
        put_varint(&mut m, kind);
    }
    put_bytes_field(&mut m, 2, family.as_bytes());
    if !help.is_empty() {
        put_bytes_field(&mut m, 4, help.as_bytes());
    }
    if !unit.is_empty() {
        put_bytes_field(&mut m, 5, unit.as_bytes());
    }
    put_bytes_field(out, 3, &m);
    Ok(())
}

/// The metric family of a series named `name` of metric type `kind`: a
/// classic histogram's or summary's series carry suffixes their family
/// does not.
fn family_name(name: &str, kind: u64) -> &str {
    const HISTOGRAM: u64 = 3;
    const GAUGE_HISTOGRAM: u64 = 4;
    const SUMMARY: u64 = 5;
    let suffixes: &[&str] = match kind {
        HISTOGRAM | GAUGE_HISTOGRAM => &["_bucket", "_sum", "_count"],
        SUMMARY => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests;
