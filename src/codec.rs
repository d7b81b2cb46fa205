//! How push bodies are compressed, and the operations on them that do not
//! depend on a format: inflating an HTTP `Content-Encoding` layer, and
//! joining snappy blocks.
//!
//! ```text
//!  request ─► Content-Encoding layer (gzip / deflate around a snappy body) ─► inflate_layer
//!          ─► the body's own codec (snappy, gzip, deflate, none) ─► pipeline: measure, decompress, compress
//!  tenant bodies of one kind and tenant ─► join_snappy ─► one upstream request (coalescing)
//! ```
//!
//! Measuring, decompressing and compressing with pooled buffers live in
//! [`crate::pipeline`], beside the buffers they use.

use bytes::Bytes;

/// How request bodies (and the tenant requests made of them) are
/// compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Snappy block format (remote write, Loki protobuf).
    Snappy,
    /// `Content-Encoding: gzip`: one gzip member, whose trailer gives the
    /// decoded size up front.
    Gzip,
    /// `Content-Encoding: deflate` (raw deflate): no declared size, so the
    /// most deflate can expand to (1032 times) is admitted, within
    /// `limits.max_decoded_bytes`.
    Deflate,
    /// Not compressed.
    Identity,
}

impl Codec {
    /// The `Content-Encoding` header naming the codec, if it is sent as one.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Codec::Gzip => Some("gzip"),
            Codec::Deflate => Some("deflate"),
            Codec::Snappy | Codec::Identity => None,
        }
    }
}

/// The most a deflate stream can expand to, per input byte.
pub const DEFLATE_MAX_RATIO: usize = 1032;

/// Inflates a gzip (every member, as Go's reader reads them) or deflate
/// layer around a body, reading at most `most + 1` bytes of output so that
/// the caller sees when the layer expands past `most`.
pub fn inflate_layer(codec: Codec, body: &[u8], most: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        _ => Box::new(flate2::read::DeflateDecoder::new(body)),
    };
    let mut out = Vec::new();
    reader.take(most as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

/// Joins snappy blocks into one that decompresses to their contents one
/// after the other. A snappy block is a varint length and then elements
/// whose back-references are relative to the output position, so the
/// elements of two blocks one after the other, under a new length,
/// decompress to the two inputs one after the other: no recompression.
/// Every body was made by orgsplit's own compressor, so each starts with a
/// valid length varint.
pub fn join_snappy(bodies: &[Bytes]) -> Bytes {
    let mut total = 0u64;
    let mut starts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let (len, header) = read_varint(body);
        total += len;
        starts.push(header);
    }
    let mut out = Vec::with_capacity(10 + bodies.iter().map(Bytes::len).sum::<usize>());
    crate::wire::encode::put_varint(&mut out, total);
    for (body, start) in bodies.iter().zip(starts) {
        out.extend_from_slice(&body[start..]);
    }
    Bytes::from(out)
}

/// A snappy block's decoded length and the bytes its varint takes.
fn read_varint(buf: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, buf.len().min(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any inputs, including empty ones and ones snappy stores as
        /// literals: the joined block is their concatenation.
        #[test]
        fn joining_agrees_with_concatenation(
            parts in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..3000),
                1..6,
            )
        ) {
            let bodies: Vec<Bytes> = parts.iter().map(|p| compress(p)).collect();
            let out = snap::raw::Decoder::new().decompress_vec(&join_snappy(&bodies)).unwrap();
            prop_assert_eq!(out, parts.concat());
        }
    }

    fn compress(data: &[u8]) -> Bytes {
        Bytes::from(snap::raw::Encoder::new().compress_vec(data).unwrap())
    }

    #[test]
    fn joined_snappy_blocks_decompress_to_the_inputs_one_after_the_other() {
        // Repetitive inputs, so the blocks are full of back-references,
        // some of them across the 64 KiB blocks snappy works in.
        let a: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 977).to_le_bytes())
            .collect();
        let b = b"namespace=shop-prod namespace=shop-prod namespace=shop-prod".repeat(3000);
        let c = vec![7u8; 1];
        let joined = join_snappy(&[compress(&a), compress(&b), compress(&c)]);
        let out = snap::raw::Decoder::new().decompress_vec(&joined).unwrap();
        assert_eq!(out.len(), a.len() + b.len() + c.len());
        assert!(out[..a.len()] == a[..]);
        assert!(out[a.len()..a.len() + b.len()] == b[..]);
        assert_eq!(out[a.len() + b.len()..], c[..]);
    }
}
