//! Building a tenant's `WriteRequest` from borrowed pieces of the input.
//!
//! A `WriteRequest` is nothing but its repeated fields one after another, so a
//! tenant's request is the concatenation of the raw `timeseries` and
//! `metadata` fields that belong to it. Only a series that loses a label
//! (label mode with `remove_tenant_label`) gets a new length prefix.

use super::walk::SeriesView;
use crate::wire::encode::put_varint;

/// Appends the series exactly as it arrived.
#[inline]
pub fn append_series(out: &mut Vec<u8>, series: &SeriesView<'_>) {
    out.extend_from_slice(series.raw);
}

/// Appends the series without the label field at `skip` (a byte range of the
/// series body, as reported in [`crate::wire::Hit::field`]).
pub fn append_series_without(out: &mut Vec<u8>, series: &SeriesView<'_>, skip: (usize, usize)) {
    let body = series.body;
    let (start, end) = skip;
    put_varint(out, (1 << 3) | 2);
    put_varint(out, (body.len() - (end - start)) as u64);
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&body[end..]);
}
