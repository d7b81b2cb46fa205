//! Building one tenant's OTLP export request (protobuf) from borrowed
//! pieces of the input.
//!
//! ```text
//!  whole resource ─► its field, copied as it came
//!  item with Context ─► (re)open what differs: resource ─► scope ─► [metric ─► data]
//!                       each opened level: key, a length to patch, its fields but the children
//!                   ─► the item's field, copied as it came
//!  next context / finish ─► close the open levels innermost first, patching lengths
//! ```
//!
//! Items reach a tenant's batch in the order of the walk, so the items of
//! one scope (and one metric) that go to one tenant are consecutive in its
//! batch, and each level is opened once per run of them. A level's own
//! fields (the `Resource`, the scope, the metric's name, unit and
//! temporality, and any field orgsplit does not know) are copied byte for
//! byte; only the lengths of the levels around a tenant's items are new.
//!
//! The length of an open level is unknown until it closes, so one byte is
//! reserved for it and the level's bytes are moved up when the length
//! needs more (a `memmove` of the level, rarely more than a few KiB).

use super::proto::is_data_field;
use super::{Context, OtlpItem};
use crate::wire::encode::{put_varint, varint_len};
use crate::wire::{read_key, skip_value};

/// Whether a field of a level's message is one of its children.
type IsChild = fn(u32) -> bool;

/// How deep a level is: resource, scope, metric, metric data.
const LEVELS: usize = 4;

/// One tenant's request being built: the levels open at the end of it.
#[derive(Debug, Default)]
pub struct Nest {
    /// For each open level: the sequence number of what it holds (from
    /// the walk) and where its reserved length byte is.
    open: [Option<(u32, usize)>; LEVELS],
}

impl Nest {
    /// Appends one item (or a whole resource) to `out`.
    pub(super) fn append(&mut self, out: &mut Vec<u8>, item: &OtlpItem<'_>) {
        let Some(at) = item.at else {
            self.close_from(0, out);
            out.extend_from_slice(item.raw);
            return;
        };
        let levels = if at.metric.0 == 0 { 2 } else { LEVELS };
        let ids = [at.resource.0, at.scope.0, at.metric.0, at.data.0];
        if let Some(first) = (0..levels).find(|&l| self.open[l].map(|o| o.0) != Some(ids[l])) {
            self.close_from(first, out);
            for level in first..levels {
                self.open_level(level, &at, out);
            }
        }
        out.extend_from_slice(item.raw);
    }

    /// Closes every open level.
    pub(super) fn finish(mut self, out: &mut Vec<u8>) {
        self.close_from(0, out);
    }

    fn open_level(&mut self, level: usize, at: &Context<'_>, out: &mut Vec<u8>) {
        // The field the level is in its parent, its body, and the fields of
        // that body that are its children (left out: the tenant's own
        // children follow).
        let (field, id, body, children): (u32, u32, &[u8], IsChild) = match level {
            0 => (1, at.resource.0, at.resource.1, |f| f == 2),
            1 => (2, at.scope.0, at.scope.1, |f| f == 2),
            2 => (2, at.metric.0, at.metric.1, is_data_field),
            _ => (at.data.1, at.data.0, at.data.2, |f| f == 1),
        };
        put_varint(out, (u64::from(field) << 3) | 2);
        let length_at = out.len();
        out.push(0);
        copy_fields_except(out, body, children);
        self.open[level] = Some((id, length_at));
    }

    /// Closes `level` and every level inside it, innermost first (so the
    /// positions of the outer ones stay valid).
    fn close_from(&mut self, level: usize, out: &mut Vec<u8>) {
        for open in self.open[level..].iter_mut().rev() {
            if let Some((_, at)) = open.take() {
                patch_length(out, at);
            }
        }
    }
}

/// Writes the length of the level whose reserved byte is at `at` (its body
/// is everything after it), moving the body up if the length needs more
/// than one byte.
fn patch_length(out: &mut Vec<u8>, at: usize) {
    let end = out.len();
    let len = (end - at - 1) as u64;
    let need = varint_len(len);
    if need > 1 {
        out.resize(end + need - 1, 0);
        out.copy_within(at + 1..end, at + need);
    }
    let mut prefix = Vec::with_capacity(need);
    put_varint(&mut prefix, len);
    out[at..at + need].copy_from_slice(&prefix);
}

/// Copies the fields of an (already validated) message body, but those
/// `skip` names, keeping runs of kept fields in one copy.
fn copy_fields_except(out: &mut Vec<u8>, body: &[u8], skip: fn(u32) -> bool) {
    let mut pos = 0;
    let mut run = 0;
    while pos < body.len() {
        let start = pos;
        let Ok((field, wire_type)) = read_key(body, &mut pos, "message") else {
            break;
        };
        if skip_value(body, &mut pos, wire_type, "message", field).is_err() {
            break;
        }
        if skip(field) {
            out.extend_from_slice(&body[run..start]);
            run = pos;
        }
    }
    out.extend_from_slice(&body[run..pos.min(body.len())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_any_size_are_patched_in_place() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut out = vec![0xAA, 0x0a];
            let at = out.len();
            out.push(0);
            out.extend(std::iter::repeat_n(7u8, len));
            patch_length(&mut out, at);
            let mut expected = vec![0xAA, 0x0a];
            put_varint(&mut expected, len as u64);
            expected.extend(std::iter::repeat_n(7u8, len));
            assert_eq!(out, expected, "length {len}");
        }
    }

    #[test]
    fn fields_but_the_children_are_copied_as_they_came() {
        // field 1 "ab", field 2 "xyz", field 3 varint 5, field 2 "q"
        let body = [
            0x0a, 2, b'a', b'b', 0x12, 3, b'x', b'y', b'z', 0x18, 5, 0x12, 1, b'q',
        ];
        let mut out = Vec::new();
        copy_fields_except(&mut out, &body, |f| f == 2);
        assert_eq!(out, [0x0a, 2, b'a', b'b', 0x18, 5]);
    }
}
