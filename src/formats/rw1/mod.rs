//! Remote write 1.0 (`prometheus.WriteRequest`) as a [`Format`]: the
//! zero-copy [`walk`] over a request and the [`encode`]r that copies a
//! tenant's series out of it; [`pb`] is the prost reference both are
//! checked against.
//!
//! A tenant's request is its series' and metadata's fields copied as they
//! arrived, one after another, so two such requests concatenated are one
//! valid request (`CONCATENATES`).

use super::kind::PushKind;
use super::{Format, PushItem};
use crate::codec::Codec;
use crate::signals::{Counts, Signal};
use crate::wire::{Hit, LabelQuery, RequestLimits, WireError};

mod describe;
pub mod encode;
pub mod walk;

pub use describe::{describe_labels, describe_series_labels};
pub use walk::{Field, MetadataView, Request, SeriesView};

/// Prost types generated from `proto/remote.proto`: the reference decoder and
/// encoder, used by tests, `inspect` and the fallback path.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Remote write 1.0.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rw1;

/// The remote write 1.0 push kind.
pub static KIND: PushKind = PushKind {
    name: "remote write 1.0",
    id: 0,
    signal: Signal::Metrics,
    codec: Codec::Snappy,
    outgoing_headers: &[
        ("content-encoding", "snappy"),
        ("content-type", "application/x-protobuf"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ],
    concatenates: <Rw1 as Format>::CONCATENATES,
    reports_written: false,
    downgrade: None,
    merge: None,
};

impl Format for Rw1 {
    type Series<'a> = SeriesView<'a>;
    type Extra<'a> = MetadataView<'a>;
    type Batch = ();
    type Index<'a> = &'a [u8];
    const CONCATENATES: bool = true;

    #[inline]
    fn index<'a>(&self, body: &'a [u8], _: RequestLimits) -> Result<&'a [u8], WireError> {
        Ok(body)
    }

    #[inline]
    fn walk<'a, E: From<WireError>>(
        &self,
        body: &'a &[u8],
        query: &LabelQuery,
        limits: RequestLimits,
        mut visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        let body: &'a [u8] = body;
        let mut any = false;
        for field in Request::new(body).fields(query, limits) {
            any = true;
            match field? {
                Field::Series(s) => visit(PushItem::Series(s))?,
                Field::Metadata(m) => visit(PushItem::Extra(m))?,
            }
        }
        if !any {
            // Nothing 1.0 in it: a 2.0 body whose sender did not say so
            // would otherwise be answered 2xx with nothing written.
            if let Some(field) = rw2_fields(body) {
                return Err(WireError::V2InV1(field).into());
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn key<'a>(series: &Self::Series<'a>) -> Option<Hit<'a>> {
        series.hit
    }

    #[inline(always)]
    fn family<'a>(series: &Self::Series<'a>) -> Option<&'a str> {
        series.metric_name
    }

    #[inline(always)]
    fn counts(series: &SeriesView<'_>) -> Counts {
        Counts {
            series: 1,
            samples: u64::from(series.samples),
            histograms: u64::from(series.histograms),
            exemplars: u64::from(series.exemplars),
            metadata: 0,
        }
    }

    fn describe(series: &SeriesView<'_>) -> String {
        // Reads only the labels (a series may carry millions of samples).
        describe_series_labels(series.body, 12)
    }

    #[inline(always)]
    fn extra_family<'a>(extra: &Self::Extra<'a>) -> &'a str {
        extra.family
    }

    #[inline]
    fn append_series(
        _: &mut (),
        out: &mut Vec<u8>,
        series: &SeriesView<'_>,
        without: Option<Hit<'_>>,
    ) {
        match without {
            Some(hit) => encode::append_series_without(out, series, hit.field),
            None => encode::append_series(out, series),
        }
    }

    #[inline]
    fn append_extra(_: &mut (), out: &mut Vec<u8>, extra: &MetadataView<'_>) {
        out.extend_from_slice(extra.raw);
    }

    #[inline]
    fn finish(_: &Self::Index<'_>, (): (), _: &mut Vec<u8>) {}
}

/// The first top-level field of `body` that only a remote write 2.0
/// request has (symbols, 4, or timeseries, 5), if its fields parse.
fn rw2_fields(body: &[u8]) -> Option<u32> {
    use crate::wire::{read_key, skip_value, wt};
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "WriteRequest").ok()?;
        if (field == 4 || field == 5) && wire_type == wt::LEN {
            return Some(field);
        }
        skip_value(body, &mut pos, wire_type, "WriteRequest", field).ok()?;
    }
    None
}
