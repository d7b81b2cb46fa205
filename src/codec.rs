//! How push bodies are compressed, and the operations on them that do not
//! depend on a format: inflating an HTTP `Content-Encoding` layer, and
//! joining snappy blocks.
//!
//! ```text
//!  request ─► Content-Encoding layer (gzip / deflate around a snappy body) ─► inflate_layer
//!          ─► the body's own codec (snappy, gzip, deflate, none): declared_len (413 before
//!             allocating) ─► decompress ─► … ─► compress each tenant's body
//!  tenant bodies of one kind and tenant ─► join_snappy ─► one upstream request (coalescing)
//! ```
//!
//! Bodies are measured before anything is allocated ([`declared_len`]),
//! decompressed into and compressed from buffers of the pool
//! ([`decompress`], [`compress`]); the pipeline decides when.

use std::sync::Arc;

use bytes::Bytes;

use crate::pool::{BufferPool, Pooled};

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
pub fn join_snappy(bodies: &[Bytes], out: &mut Vec<u8>) {
    let mut total = 0u64;
    let mut starts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let (len, header) = read_varint(body);
        total += len;
        starts.push(header);
    }
    out.reserve(10 + bodies.iter().map(Bytes::len).sum::<usize>());
    crate::wire::encode::put_varint(out, total);
    for (body, start) in bodies.iter().zip(starts) {
        out.extend_from_slice(&body[start..]);
    }
}

/// Whether bodies of `codec` can be joined into one body of the same
/// codec without recompressing ([`join`]): snappy blocks, and bodies with
/// no compression. Gzip is not: concatenated gzip members are one valid
/// stream only to readers that read every member, and a reader that stops
/// after the first would lose the rest silently.
pub fn joins(codec: Codec) -> bool {
    matches!(codec, Codec::Snappy | Codec::Identity)
}

/// Appends `bodies` as one body of `codec` to `out` (see [`joins`]):
/// snappy blocks joined, uncompressed bodies one after the other. The
/// caller checks [`joins`], and gives a pooled buffer: joined bodies are
/// large and made for every merged request.
pub fn join(codec: Codec, bodies: &[Bytes], out: &mut Vec<u8>) {
    match codec {
        Codec::Snappy => join_snappy(bodies, out),
        _ => {
            out.reserve(bodies.iter().map(Bytes::len).sum());
            for body in bodies {
                out.extend_from_slice(body);
            }
        }
    }
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

/// The decoded size `compressed` declares, checked against `limit` before
/// anything is allocated: snappy's header, gzip's trailer (a lying trailer
/// is caught while decompressing), the most deflate can expand to, or the
/// body itself.
pub fn declared_len(codec: Codec, compressed: &[u8], limit: usize) -> Result<usize, DecodeError> {
    let size = match codec {
        Codec::Snappy => return decoded_len(compressed, limit),
        Codec::Identity => compressed.len(),
        // The trailer's size (mod 2^32; bodies here are far smaller).
        Codec::Gzip => match compressed.len().checked_sub(4) {
            Some(at) if compressed.len() >= 18 => {
                let mut isize = [0u8; 4];
                isize.copy_from_slice(&compressed[at..]);
                u32::from_le_bytes(isize) as usize
            }
            _ => {
                return Err(DecodeError::Corrupt {
                    codec: "gzip",
                    error: "too short to be gzip".into(),
                })
            }
        },
        Codec::Deflate => limit.min(compressed.len().saturating_mul(DEFLATE_MAX_RATIO)),
    };
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    if size == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(size)
}

/// Compresses `body` with `codec` (snappy, gzip or deflate; uncompressed,
/// a copy) into a pooled buffer: the body, and the bytes its buffer holds.
pub fn compress(codec: Codec, body: &[u8], pool: &Arc<BufferPool>) -> (Bytes, usize) {
    match codec {
        Codec::Snappy => compress_one(body, pool),
        Codec::Identity => {
            let mut out = pool.take(body.len());
            out.extend_from_slice(body);
            let held = out.capacity();
            (Pooled::new(out, pool.clone()).into_bytes(), held)
        }
        Codec::Gzip | Codec::Deflate => deflate_one(codec, body, pool),
    }
}

/// Why a body cannot be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not snappy block-compressed: {0}")]
    NotSnappy(snap::Error),
    #[error(
        "decompressed body would be {size} bytes, more than limits.max_decoded_bytes ({limit})"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("empty request")]
    Empty,
    #[error("body is not valid {codec}: {error}")]
    Corrupt { codec: &'static str, error: String },
}

/// The decompressed size a snappy body declares, checked against `limit`
/// before anything is allocated.
fn decoded_len(compressed: &[u8], limit: usize) -> Result<usize, DecodeError> {
    let size = match snap::raw::decompress_len(compressed) {
        Ok(n) => n,
        // A declared length beyond what snappy itself allows (4 GiB).
        Err(snap::Error::TooBig { given, .. }) => usize::try_from(given).unwrap_or(usize::MAX),
        Err(e) => return Err(DecodeError::NotSnappy(e)),
    };
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    if size == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(size)
}

/// A decoded body: a buffer that goes back to its pool when dropped,
/// however the code that holds it ends, or an uncompressed body read where
/// it is.
pub struct Lent<'p> {
    buf: Vec<u8>,
    /// The decoded bytes are the buffer's first `len`.
    len: usize,
    pool: &'p BufferPool,
    /// The body itself, when it was not compressed (`buf` is then empty).
    borrowed: Option<&'p [u8]>,
}

impl std::ops::Deref for Lent<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self.borrowed {
            Some(body) => body,
            None => &self.buf[..self.len],
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Decompresses `compressed` (whose declared size `measure` already
/// checked) into a buffer from `pool`; an uncompressed body is not copied.
pub fn decompress<'p>(
    codec: Codec,
    compressed: &'p [u8],
    size: usize,
    pool: &'p BufferPool,
) -> Result<Lent<'p>, DecodeError> {
    match codec {
        Codec::Snappy => {}
        Codec::Identity => {
            return Ok(Lent {
                buf: Vec::new(),
                len: 0,
                pool,
                borrowed: Some(compressed),
            })
        }
        Codec::Gzip | Codec::Deflate => return inflate(codec, compressed, size, pool),
    }
    // snap writes into an initialised slice; a reused buffer is not zeroed
    // again, decompression overwrites it.
    let mut buf = Lent {
        buf: pool.take_filled(size),
        len: 0,
        pool,
        borrowed: None,
    };
    buf.len = snap::raw::Decoder::new()
        .decompress(compressed, &mut buf.buf[..size])
        .map_err(DecodeError::NotSnappy)?;
    Ok(buf)
}

/// Inflates a gzip or deflate body into at most `size` bytes (the gzip
/// trailer's claim, or `limits.max_decoded_bytes` for deflate): a body that
/// holds more is refused, never read further.
fn inflate<'p>(
    codec: Codec,
    compressed: &[u8],
    size: usize,
    pool: &'p BufferPool,
) -> Result<Lent<'p>, DecodeError> {
    use std::io::Read;
    let name = if codec == Codec::Gzip {
        "gzip"
    } else {
        "deflate"
    };
    let corrupt = |error: String| DecodeError::Corrupt { codec: name, error };
    let mut buf = Lent {
        buf: pool.take_filled(size + 1),
        len: 0,
        pool,
        borrowed: None,
    };
    let mut input = compressed;
    let fill = |reader: &mut dyn Read, buf: &mut Lent<'_>| -> Result<(), DecodeError> {
        loop {
            if buf.len > size {
                return Err(match codec {
                    Codec::Gzip => corrupt("it decodes to more than its trailer declares".into()),
                    _ => DecodeError::TooLarge {
                        size: buf.len,
                        limit: size,
                    },
                });
            }
            match reader.read(&mut buf.buf[buf.len..=size]) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
    };
    if codec == Codec::Gzip {
        let mut reader = flate2::bufread::GzDecoder::new(&mut input);
        fill(&mut reader, &mut buf)?;
        drop(reader);
        if !input.is_empty() {
            return Err(corrupt(
                "data after the first gzip member (send one member)".into(),
            ));
        }
    } else {
        let mut reader = flate2::bufread::DeflateDecoder::new(&mut input);
        fill(&mut reader, &mut buf)?;
    }
    if buf.len == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(buf)
}

/// Snappy compresses its input in independent blocks of this many bytes.
const SNAPPY_BLOCK: usize = 1 << 16;

/// Compresses `body` into a pooled buffer of the compressed size.
///
/// Each 64 KiB block is compressed into a small per-thread scratch buffer
/// (hot in cache, zeroed once per thread) and its elements copied into the
/// output, under one length header for the whole body: byte for byte what
/// snap writes compressing `body` at once, since snap too compresses each
/// block on its own. Compressing straight into a pooled buffer would need
/// one of `max_compress_len` bytes, initialised: zeroing it cost about as
/// much as a tenth of the compression whenever the pool had no initialised
/// buffer to give, and it stayed that large while the body was in flight
/// (a body of 5:1 data held six times its size).
fn compress_one(body: &[u8], pool: &Arc<BufferPool>) -> (Bytes, usize) {
    thread_local! {
        // snap's encoder keeps a hash table; reuse it, and the scratch
        // buffer (room for one compressed block), per thread.
        static ENCODER: std::cell::RefCell<(snap::raw::Encoder, Vec<u8>)> =
            std::cell::RefCell::new((snap::raw::Encoder::new(), Vec::new()));
    }
    let out = ENCODER.with(|cell| {
        let (encoder, scratch) = &mut *cell.borrow_mut();
        if scratch.is_empty() {
            scratch.resize(snap::raw::max_compress_len(SNAPPY_BLOCK), 0);
        }
        // Compressing at most one block into a buffer of its
        // max_compress_len cannot fail.
        let mut block =
            |chunk: &[u8], scratch: &mut [u8]| encoder.compress(chunk, scratch).unwrap_or(0);
        if body.len() <= SNAPPY_BLOCK {
            let n = block(body, scratch);
            let mut out = pool.take(n);
            out.extend_from_slice(&scratch[..n]);
            return out;
        }
        // Several blocks: one header for all, then each block's elements
        // (its compressed form without its own header).
        let mut out = pool.take(body.len() / 3 + 16);
        crate::wire::encode::put_varint(&mut out, body.len() as u64);
        for chunk in body.chunks(SNAPPY_BLOCK) {
            let n = block(chunk, scratch);
            let header = crate::wire::encode::varint_len(chunk.len() as u64);
            out.extend_from_slice(&scratch[header..n]);
        }
        out
    });
    let held = out.capacity();
    (Pooled::new(out, pool.clone()).into_bytes(), held)
}

/// Compresses a JSON batch the way its push came (gzip or deflate, at
/// the fastest level: the upstream is near, the CPU is the cost).
///
/// Written against `flate2::Compress` rather than `GzEncoder`: an encoder
/// allocates and zeroes a few hundred KiB of match tables each time, once
/// per tenant per push, while one compressor per thread, reset between
/// bodies, allocates nothing. The gzip framing around it is RFC 1952's
/// fixed 10-byte header and its CRC-32 + size trailer.
fn deflate_one(codec: Codec, body: &[u8], pool: &Arc<BufferPool>) -> (Bytes, usize) {
    thread_local! {
        static DEFLATE: std::cell::RefCell<flate2::Compress> = std::cell::RefCell::new(
            flate2::Compress::new(flate2::Compression::fast(), false),
        );
    }
    /// Magic, method deflate, no flags, no mtime, no extra flags, OS unknown.
    const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut out = pool.take(body.len() / 2 + 64);
    if codec == Codec::Gzip {
        out.extend_from_slice(&GZIP_HEADER);
    }
    let done = DEFLATE.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut rest = body;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(4096));
            }
            let before = c.total_in();
            let status = c.compress_vec(rest, &mut out, flate2::FlushCompress::Finish);
            rest = &rest[(c.total_in() - before) as usize..];
            match status {
                Ok(flate2::Status::StreamEnd) => return true,
                Ok(_) => {}
                // Only bad parameters fail, and none are passed; should it
                // happen anyway, the compressor is replaced, not trusted.
                Err(_) => {
                    *c = flate2::Compress::new(flate2::Compression::fast(), false);
                    return false;
                }
            }
        }
    });
    if !done {
        use std::io::Write;
        out.clear();
        let mut e = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
        if codec == Codec::Gzip {
            let _ = e.get_mut().write_all(&GZIP_HEADER);
        }
        // Writing into a Vec cannot fail.
        let _ = e.write_all(body);
        out = e.finish().unwrap_or_default();
    }
    if codec == Codec::Gzip {
        let mut crc = flate2::Crc::new();
        crc.update(body);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE: the size mod 2^32.
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    }
    let held = out.capacity();
    let n = out.len();
    (Pooled::prefix(out, n, pool.clone()).into_bytes(), held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_uncompressed_body_is_read_where_it_is_and_takes_no_buffer() {
        let pool = BufferPool::default();
        let body = br#"{"streams":[]}"#.to_vec();
        let decoded = decompress(Codec::Identity, &body, body.len(), &pool).unwrap();
        assert_eq!(&decoded[..], &body[..]);
        assert_eq!(decoded.as_ptr(), body.as_ptr(), "not a copy");
        drop(decoded);
        assert!(pool.is_empty(), "nothing given back that was not taken");
    }

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
            let mut joined = Vec::new();
            join_snappy(&bodies, &mut joined);
            let out = snap::raw::Decoder::new().decompress_vec(&joined).unwrap();
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
        let mut joined = Vec::new();
        join_snappy(&[compress(&a), compress(&b), compress(&c)], &mut joined);
        let out = snap::raw::Decoder::new().decompress_vec(&joined).unwrap();
        assert_eq!(out.len(), a.len() + b.len() + c.len());
        assert!(out[..a.len()] == a[..]);
        assert!(out[a.len()..a.len() + b.len()] == b[..]);
        assert_eq!(out[a.len() + b.len()..], c[..]);
    }

    /// Bytes that compress a little (runs and repeats) and some that do not.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 300) % 2 == 0 {
                    b"container_cpu_usage_seconds_total"[i % 33]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn compressing_block_by_block_gives_what_snap_gives_for_the_whole() {
        // A pool that keeps nothing, so each output is a buffer of its own.
        let pool = Arc::new(BufferPool::disabled());
        let sizes = [
            0,
            1,
            14,
            15,
            16,
            1000,
            65_535,
            65_536,
            65_537,
            65_536 + 15,
            200_000,
            3 * 65_536,
        ];
        for (k, len) in sizes.into_iter().enumerate() {
            let body = mixed(len, k as u64 + 1);
            let (ours, held) = compress_one(&body, &pool);
            let snap = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            assert_eq!(ours[..], snap[..], "{len} bytes");
            assert!(held >= ours.len());
            assert_eq!(
                snap::raw::Decoder::new().decompress_vec(&ours).unwrap(),
                body
            );
            if len <= SNAPPY_BLOCK {
                // One block: a buffer of the compressed size, not of
                // max_compress_len, stays held while the body is in flight.
                assert_eq!(held, ours.len(), "{len} bytes");
            }
        }
    }
}
