//! Writing protobuf: varints and length-delimited fields, the little every
//! format's encoder needs beyond copying bytes it was given.

/// Appends `value` as a base-128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes `value` as a base-128 varint into `out` at `at`, for a caller
/// that sized `out` beforehand (with [`varint_len`]), and returns the
/// position after it. Panics if `out` is too short.
#[inline]
pub fn put_varint_at(out: &mut [u8], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// How many bytes `value` takes as a base-128 varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a length-delimited field (wire type 2).
#[inline]
pub fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both writers give prost's bytes, at every length boundary, and
    /// `varint_len` says how many.
    #[test]
    fn varints_match_prost_at_every_length_boundary() {
        let mut values = vec![0, u64::MAX];
        for bits in (7..64).step_by(7) {
            values.extend([(1u64 << bits) - 1, 1u64 << bits]);
        }
        for value in values {
            let mut want = Vec::new();
            prost::encoding::encode_varint(value, &mut want);
            let mut appended = vec![0xaa];
            put_varint(&mut appended, value);
            assert_eq!(appended[1..], want[..], "put_varint({value})");
            let mut placed = vec![0xaa; want.len() + 2];
            let end = put_varint_at(&mut placed, 1, value);
            assert_eq!(end, 1 + want.len(), "put_varint_at({value}) end");
            assert_eq!(placed[1..end], want[..], "put_varint_at({value})");
            assert_eq!(
                placed[end], 0xaa,
                "put_varint_at({value}) wrote past its end"
            );
            assert_eq!(varint_len(value), want.len(), "varint_len({value})");
        }
    }
}
