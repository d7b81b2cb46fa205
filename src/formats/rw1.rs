//! Remote write 1.0 (`prometheus.WriteRequest`) as a [`Format`]: the
//! zero-copy walk and encoder of [`crate::wire`].
//!
//! A tenant's request is its series' and metadata's fields copied as they
//! arrived, one after another, so two such requests concatenated are one
//! valid request (`CONCATENATES`).

use super::{Format, Item};
use crate::signals::Counts;
use crate::wire::{
    encode, Field, Hit, LabelQuery, Limits, MetadataView, Request, SeriesView, WireError,
};

/// Remote write 1.0.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rw1;

impl Format for Rw1 {
    type Series<'a> = SeriesView<'a>;
    type Extra<'a> = MetadataView<'a>;
    type Batch = ();
    const CONCATENATES: bool = true;

    #[inline]
    fn walk<'a, E: From<WireError>>(
        &self,
        body: &'a [u8],
        query: &LabelQuery,
        limits: Limits,
        mut visit: impl FnMut(Item<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E> {
        for field in Request::new(body).fields(query, limits) {
            match field? {
                Field::Series(s) => visit(Item::Series(s))?,
                Field::Metadata(m) => visit(Item::Extra(m))?,
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
        crate::wire::describe_series_labels(series.body, 12)
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
    fn finish((): (), _: &mut Vec<u8>) {}
}
