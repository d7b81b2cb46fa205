//! Checking a protobuf message against a small schema without decoding it,
//! and counting repeated items against their limit as a walk meets them.

use super::{read_key, read_len, read_varint, skip_value, wt, WireError};
use crate::request_limits::LimitedItem;

#[inline(always)]
pub(crate) fn count(n: &mut usize, limit: usize, item: LimitedItem) -> Result<(), WireError> {
    *n += 1;
    if *n > limit {
        return Err(WireError::TooMany { item, limit });
    }
    Ok(())
}

/// What one field of a scalar-only message may look like.
#[derive(Clone, Copy)]
pub(crate) enum FieldKind {
    Varint,
    Fixed64,
    Fixed32,
    /// A message (checked separately) or a string.
    Len,
    PackedVarint,
    PackedFixed64,
}

/// Field number → kind, indexed by field number (index 0 unused).
pub(crate) type Schema = [Option<FieldKind>];

pub(crate) fn check_message(body: &[u8], schema: &Schema) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire_type) = read_key(body, &mut pos, "message")?;
        check_field(body, &mut pos, field, wire_type, schema)?;
    }
    Ok(())
}

/// Checks (and skips) one field against its expected kind. Unknown fields
/// are skipped; a known field with the wrong wire type is an error, as it is
/// for prost and for Mimir. Returns how many values the field held (more
/// than one for a packed field).
#[inline]
pub(crate) fn check_field(
    body: &[u8],
    pos: &mut usize,
    field: u32,
    wire_type: u8,
    schema: &Schema,
) -> Result<usize, WireError> {
    let kind = schema.get(field as usize).copied().flatten();
    let ok = match (kind, wire_type) {
        (None, _) => true,
        (Some(FieldKind::Varint | FieldKind::PackedVarint), wt::VARINT) => true,
        (Some(FieldKind::Fixed64 | FieldKind::PackedFixed64), wt::I64) => true,
        (Some(FieldKind::Fixed32), wt::I32) => true,
        (Some(FieldKind::Len), wt::LEN) => true,
        (Some(FieldKind::PackedVarint), wt::LEN) => {
            let packed = read_len(body, pos, "packed varints")?;
            let (mut p, mut values) = (0, 0);
            while p < packed.len() {
                read_varint(packed, &mut p)?;
                values += 1;
            }
            return Ok(values);
        }
        (Some(FieldKind::PackedFixed64), wt::LEN) => {
            let packed = read_len(body, pos, "packed doubles")?;
            if packed.len() % 8 != 0 {
                return Err(WireError::Truncated("packed doubles"));
            }
            return Ok(packed.len() / 8);
        }
        _ => false,
    };
    if !ok {
        return Err(WireError::WireType {
            message: "series field",
            field,
            wire_type,
        });
    }
    skip_value(body, pos, wire_type, "message", field).map(|()| 1)
}
