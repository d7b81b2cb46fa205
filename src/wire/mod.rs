//! Protobuf read and written without copying: the helpers every format's
//! walk uses (varints, keys, lengths, [`WireError`]), checking a message
//! against a small schema, counting repeated items as they are met, and
//! picking a few labels out of an item ([`LabelQuery`], [`Hit`]). No format
//! lives here: each walk is in `formats::<format>`. The limits a walk counts
//! against live in [`crate::request_limits`].
//!
//! Invariant: every helper bounds-checks before it reads, so a walk built on
//! them never reads past a message or panics on hostile bytes; it returns a
//! [`WireError`] instead.

pub mod encode;
mod query;
mod schema;

pub use crate::request_limits::{LimitedItem, RequestLimits};
pub(crate) use query::{all_ascii, or_bytes, same};
pub use query::{Hit, LabelQuery};
pub(crate) use schema::{check_field, check_message, count, FieldKind, Schema};

/// Why a body is not a well-formed remote write request (1.0 or 2.0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated protobuf: {0} runs past the end of the message")]
    Truncated(&'static str),
    #[error("malformed varint")]
    BadVarint,
    #[error("invalid wire type {wire_type} for field {field} of {message}")]
    WireType {
        message: &'static str,
        field: u32,
        wire_type: u8,
    },
    #[error("invalid field number 0 in {0}")]
    FieldZero(&'static str),
    #[error("label {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("series has {count} labels, more than the limit of {limit}")]
    TooManyLabels { count: usize, limit: usize },
    #[error("label {which} is {len} bytes, more than the limit of {limit}")]
    LabelTooLong {
        which: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("series has no labels")]
    NoLabels,
    #[error("request has more than {limit} {}", item.noun())]
    TooMany { item: LimitedItem, limit: usize },
    #[error("{what} refers to symbol {index}, but the symbol table has {len} entries")]
    SymbolRef {
        what: &'static str,
        index: u64,
        len: usize,
    },
    #[error("the symbol table does not start with the empty string")]
    FirstSymbol,
    #[error("symbol {index} is {len} bytes, more than limits.max_symbol_bytes ({limit})")]
    SymbolTooLong {
        index: usize,
        len: usize,
        limit: usize,
    },
    #[error("symbol {0} is not valid UTF-8")]
    SymbolUtf8(usize),
    #[error("{0} has an odd number of label refs (they come in name, value pairs)")]
    OddLabelRefs(&'static str),
    #[error("field {0} is not part of io.prometheus.write.v2.Request: is this a remote write 1.0 body sent with Content-Type proto=io.prometheus.write.v2.Request?")]
    V1InV2(u32),
    #[error("{0}")]
    StreamLabels(String),
    #[error(
        "stream label string is {len} bytes, more than limits.max_label_string_bytes ({limit})"
    )]
    LabelStringTooLong { len: usize, limit: usize },
    #[error("log line is {len} bytes, more than limits.max_line_bytes ({limit})")]
    LineTooLong { len: usize, limit: usize },
    #[error("{0} appears twice in one stream")]
    TwiceInStream(&'static str),
    #[error("body is not a valid Loki JSON push: {0}")]
    Json(String),
    #[error("the body holds no remote write 1.0 series or metadata but a field {0}: is this a remote write 2.0 body sent without Content-Type proto=io.prometheus.write.v2.Request?")]
    V2InV1(u32),
    #[error("{what} nests values more than {limit} deep")]
    TooDeep { what: &'static str, limit: usize },
    #[error("body is not a valid OTLP JSON request: {0}")]
    OtlpJson(String),
}

/// Protobuf wire types.
pub(crate) mod wt {
    pub const VARINT: u8 = 0;
    pub const I64: u8 = 1;
    pub const LEN: u8 = 2;
    pub const I32: u8 = 5;
}

/// Reads a base-128 varint at `*pos`, advancing it.
#[inline(always)]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    // Field keys and most lengths in a WriteRequest fit in one byte, series
    // lengths in two.
    match buf.get(*pos..*pos + 2) {
        Some(&[b0, _]) if b0 < 0x80 => {
            *pos += 1;
            Ok(u64::from(b0))
        }
        Some(&[b0, b1]) if b1 < 0x80 => {
            *pos += 2;
            Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
        }
        _ => read_varint_slow(buf, pos),
    }
}

/// Varints of three bytes or more: timestamps, nanoseconds, sample
/// values' bit patterns, large lengths. Where eight bytes remain, one load
/// finds the last byte (the first without its high bit) and the seven-bit
/// groups are gathered without a branch per byte; longer varints and the
/// end of the buffer take the byte loop.
#[inline(never)]
fn read_varint_slow(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    if let Some(word) = word_at(buf, *pos) {
        if let Some(last) = last_varint_byte(word) {
            let word = word & (u64::MAX >> (56 - 8 * last));
            let mut value = 0;
            for i in 0..8 {
                value |= ((word >> (8 * i)) & 0x7f) << (7 * i);
            }
            *pos += last + 1;
            return Ok(value);
        }
    }
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&byte) = buf.get(*pos) else {
            return Err(WireError::Truncated("varint"));
        };
        *pos += 1;
        if shift == 63 && byte > 1 {
            return Err(WireError::BadVarint);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            return Err(WireError::BadVarint);
        }
    }
}

/// The eight bytes at `pos`, little-endian, if eight remain.
#[inline(always)]
fn word_at(buf: &[u8], pos: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*buf.get(pos..)?.first_chunk::<8>()?))
}

/// Which of `word`'s bytes ends a varint that starts at its first byte
/// (the lowest without its high bit), if one of the eight does.
#[inline(always)]
fn last_varint_byte(word: u64) -> Option<usize> {
    let ends = !word & 0x8080_8080_8080_8080;
    (ends != 0).then(|| ends.trailing_zeros() as usize / 8)
}

/// The position after the varint at `pos`, without decoding it, or `None`
/// where it is malformed or longer than eight bytes (for a caller that
/// has a general path to fall back on, which says what is wrong).
#[inline(always)]
pub(crate) fn varint_end(buf: &[u8], pos: usize) -> Option<usize> {
    match word_at(buf, pos) {
        Some(word) => last_varint_byte(word).map(|last| pos + last + 1),
        None => {
            let mut end = pos;
            read_varint(buf, &mut end).ok().map(|_| end)
        }
    }
}

/// Reads a field key, returning `(field number, wire type)`.
#[inline(always)]
pub(crate) fn read_key(
    buf: &[u8],
    pos: &mut usize,
    message: &'static str,
) -> Result<(u32, u8), WireError> {
    let key = read_varint(buf, pos)?;
    let field = key >> 3;
    if field == 0 {
        return Err(WireError::FieldZero(message));
    }
    if field > u64::from(u32::MAX >> 3) {
        return Err(WireError::BadVarint);
    }
    Ok((field as u32, (key & 7) as u8))
}

/// Reads a length prefix and returns the bytes it covers.
#[inline(always)]
pub(crate) fn read_len<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    what: &'static str,
) -> Result<&'a [u8], WireError> {
    let len = read_varint(buf, pos)?;
    let start = *pos;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= buf.len())
        .ok_or(WireError::Truncated(what))?;
    *pos = end;
    Ok(&buf[start..end])
}

/// Skips the value of a field of wire type `wire_type`.
#[inline]
pub(crate) fn skip_value(
    buf: &[u8],
    pos: &mut usize,
    wire_type: u8,
    message: &'static str,
    field: u32,
) -> Result<(), WireError> {
    match wire_type {
        wt::VARINT => {
            read_varint(buf, pos)?;
        }
        wt::I64 => advance(buf, pos, 8, "fixed64")?,
        wt::LEN => {
            read_len(buf, pos, "length-delimited field")?;
        }
        wt::I32 => advance(buf, pos, 4, "fixed32")?,
        // Groups (3, 4) were never used by remote write; 6 and 7 do not exist.
        _ => {
            return Err(WireError::WireType {
                message,
                field,
                wire_type,
            })
        }
    }
    Ok(())
}

#[inline]
fn advance(buf: &[u8], pos: &mut usize, n: usize, what: &'static str) -> Result<(), WireError> {
    if buf.len() - *pos < n {
        return Err(WireError::Truncated(what));
    }
    *pos += n;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overlong() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            65_536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            encode::put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos).unwrap(), v);
            assert_eq!(pos, buf.len());
            assert_eq!(encode::varint_len(v), buf.len(), "varint_len({v})");
        }
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0xff; 11], &mut pos),
            Err(WireError::BadVarint)
        );
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0x80, 0x80], &mut pos),
            Err(WireError::Truncated("varint"))
        );
    }

    /// Whatever follows a varint (nothing, a few bytes, more than eight,
    /// with or without high bits), it reads as prost reads it and ends
    /// where it ends: the one-load path and the byte loop agree.
    #[test]
    fn varints_read_alike_whatever_follows_them() {
        let mut values = vec![0, u64::MAX, 1_700_000_000, 999_999_999];
        for bits in (7..64).step_by(7) {
            values.extend([(1u64 << bits) - 1, 1u64 << bits]);
        }
        for value in values {
            for tail in 0..12 {
                for fill in [0x00, 0xff] {
                    let mut buf = vec![0x01];
                    encode::put_varint(&mut buf, value);
                    let end = buf.len();
                    buf.resize(end + tail, fill);
                    let mut pos = 1;
                    assert_eq!(read_varint(&buf, &mut pos), Ok(value), "{value} + {tail}");
                    assert_eq!(pos, end, "{value} + {tail}: where it ends");
                    match varint_end(&buf, 1) {
                        Some(e) => assert_eq!(e, end, "varint_end({value} + {tail})"),
                        None => assert!(end - 1 > 8, "varint_end({value} + {tail}) gave up"),
                    }
                    let mut rest = &buf[1..];
                    assert_eq!(prost::encoding::decode_varint(&mut rest).unwrap(), value);
                }
            }
        }
        // Nine and ten bytes with no end, followed by more: overlong.
        let mut pos = 0;
        let mut buf = vec![0x80; 10];
        buf.extend([0x01; 8]);
        assert_eq!(read_varint(&buf, &mut pos), Err(WireError::BadVarint));
    }

    #[test]
    fn length_prefix_past_the_end_is_truncated() {
        // length 5 but only 2 bytes follow
        let buf = [5u8, 1, 2];
        let mut pos = 0;
        assert!(matches!(
            read_len(&buf, &mut pos, "x"),
            Err(WireError::Truncated("x"))
        ));
        // a gigantic length must not overflow
        let mut buf = Vec::new();
        encode::put_varint(&mut buf, u64::MAX);
        let mut pos = 0;
        assert!(read_len(&buf, &mut pos, "x").is_err());
    }
}
