//! The scalar and bytes fields of each OTLP message, by field number, so
//! the walk checks every field's wire type as prost (and Mimir's, Loki's
//! and Tempo's decoders) would, and which fields are strings (UTF-8).
//! Fields the walk descends into (attributes, exemplars, events, links,
//! log bodies, the levels) are `L` here and handled by the walk.

use crate::wire::{FieldKind, Schema};

const V: Option<FieldKind> = Some(FieldKind::Varint);
const F64: Option<FieldKind> = Some(FieldKind::Fixed64);
const F32: Option<FieldKind> = Some(FieldKind::Fixed32);
const L: Option<FieldKind> = Some(FieldKind::Len);
const PV: Option<FieldKind> = Some(FieldKind::PackedVarint);
const PF64: Option<FieldKind> = Some(FieldKind::PackedFixed64);
const NO: Option<FieldKind> = None;

pub(super) static NUMBER_POINT: &Schema = &[NO, NO, F64, F64, F64, L, F64, L, V];
pub(super) static HISTOGRAM_POINT: &Schema =
    &[NO, NO, F64, F64, F64, F64, PF64, PF64, L, L, V, F64, F64];
pub(super) static EXP_HISTOGRAM_POINT: &Schema =
    &[NO, L, F64, F64, F64, F64, V, F64, L, L, V, L, F64, F64, F64];
pub(super) static BUCKETS: &Schema = &[NO, V, PV];
pub(super) static SUMMARY_POINT: &Schema = &[NO, NO, F64, F64, F64, F64, L, L, V];
pub(super) static VALUE_AT_QUANTILE: &Schema = &[NO, F64, F64];
pub(super) static EXEMPLAR: &Schema = &[NO, NO, F64, F64, L, L, F64, L];
pub(super) static LOG_RECORD: &Schema = &[NO, F64, V, L, NO, L, L, V, F32, L, L, F64, L];
pub(super) static SPAN: &Schema = &[NO, L, L, L, L, L, V, F64, F64, L, V, L, V, L, V, L, F32];
pub(super) static EVENT: &Schema = &[NO, F64, L, L, V];
pub(super) static LINK: &Schema = &[NO, L, L, L, L, V, F32];
pub(super) static STATUS: &Schema = &[NO, NO, L, V];
pub(super) static RESOURCE: &Schema = &[NO, L, V, L];
pub(super) static SCOPE: &Schema = &[NO, L, L, L, V];
pub(super) static METRIC_DATA: &Schema = &[NO, L, V, V];
