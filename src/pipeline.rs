//! The CPU work of one push, for every format, without I/O: measure →
//! (admit) → decompress → split → compress.
//!
//! A pipeline has one [`Codec`]: snappy (remote write, Loki protobuf), or
//! gzip, deflate or none (Loki JSON). Tenant requests go out in the codec
//! the push came in.
//!
//! ```text
//!  body ─► Pipeline::measure: declared decoded size (snappy header, gzip trailer), checked (413)
//!              ── the caller admits that much against its memory budget ──
//!              ─► Pipeline::run: decompress into a pooled buffer (Lent)
//!                  ─► Router::split(format) (zero-copy, batches in pooled buffers)
//!                  ─► compress each batch (in parallel on several cores) ─► Output
//! ```
//!
//! The push handler, the benches, the fuzzers, the load test and `inspect`
//! all run this same code. The decoded buffer goes back to the pool by a
//! guard ([`Lent`]), however a run ends.

use bytes::Bytes;
use rayon::prelude::*;

use std::sync::Arc;

use crate::formats::{loki, rw1, rw2, Format, PushKind};
use crate::pool::{BufferPool, Pooled};
use crate::route::{Batch, FamilyIndex, RouteError, Router, Split, SplitCounts};
use crate::signals::Counts;
use crate::table::Snapshot;
use crate::tenant::{Allowance, TenantId};

/// The CPU path of one format: its router, the metric-family index that
/// routes metadata, and the buffer pool.
pub struct Pipeline<F> {
    format: F,
    router: Router,
    families: FamilyIndex,
    pool: Arc<BufferPool>,
    max_decoded: usize,
    codec: Codec,
}

pub use crate::codec::Codec;

/// A pipeline as the push handler holds it: one per [`PushKind`], behind
/// one interface whatever the format (one virtual call per push).
pub trait PushPipeline: Send + Sync {
    /// See [`Pipeline::measure`].
    fn measure(&self, compressed: &[u8]) -> Result<usize, DecodeError>;
    /// See [`Pipeline::run`].
    fn run(
        &self,
        compressed: &[u8],
        size: usize,
        table: &Snapshot,
        allowance: &Allowance,
    ) -> Result<Output, ProcessError>;
    /// See [`Pipeline::whole`].
    fn whole(
        &self,
        compressed: Bytes,
        size: usize,
        tenant: &TenantId,
    ) -> Result<Output, ProcessError>;
    /// The metric-family index that routes its metadata.
    fn families(&self) -> &FamilyIndex;
}

impl<F: Format + Send + 'static> PushPipeline for Pipeline<F> {
    fn measure(&self, compressed: &[u8]) -> Result<usize, DecodeError> {
        Pipeline::measure(self, compressed)
    }

    fn run(
        &self,
        compressed: &[u8],
        size: usize,
        table: &Snapshot,
        allowance: &Allowance,
    ) -> Result<Output, ProcessError> {
        Pipeline::run(self, compressed, size, table, allowance)
    }

    fn whole(
        &self,
        compressed: Bytes,
        size: usize,
        tenant: &TenantId,
    ) -> Result<Output, ProcessError> {
        Pipeline::whole(self, compressed, size, tenant)
    }

    fn families(&self) -> &FamilyIndex {
        &self.families
    }
}

/// What every pipeline is built from.
pub struct PipelineParts<'a> {
    pub router: &'a Router,
    /// The metric-family index, for the kinds that route metadata by
    /// family (remote write 1.0); the others get an empty one.
    pub families: &'a dyn Fn() -> FamilyIndex,
    pub pool: &'a Arc<BufferPool>,
    pub max_decoded: usize,
}

/// A push kind and how its pipeline is built.
pub struct Registered {
    pub kind: &'static PushKind,
    pub build: fn(&PipelineParts<'_>) -> Box<dyn PushPipeline>,
}

/// Every push kind orgsplit takes, in [`PushKind::id`] order: adding a
/// format is its folder under `formats/` plus one line here.
pub static REGISTRY: [Registered; 6] = [
    register(&rw1::KIND, |p| with_families(rw1::Rw1, p)),
    register(&rw2::KIND, |p| plain(rw2::Rw2, &rw2::KIND, p)),
    register(&loki::PROTO, |p| plain(loki::LokiProto, &loki::PROTO, p)),
    register(&loki::JSON, |p| plain(loki::LokiJson, &loki::JSON, p)),
    register(&loki::JSON_GZIP, |p| {
        plain(loki::LokiJson, &loki::JSON_GZIP, p)
    }),
    register(&loki::JSON_DEFLATE, |p| {
        plain(loki::LokiJson, &loki::JSON_DEFLATE, p)
    }),
];

const fn register(
    kind: &'static PushKind,
    build: fn(&PipelineParts<'_>) -> Box<dyn PushPipeline>,
) -> Registered {
    Registered { kind, build }
}

/// A pipeline whose metadata follows its series' families (snappy).
fn with_families<F: Format + Send + 'static>(
    format: F,
    parts: &PipelineParts<'_>,
) -> Box<dyn PushPipeline> {
    Box::new(Pipeline::new(
        format,
        parts.router.clone(),
        (parts.families)(),
        parts.pool.clone(),
        parts.max_decoded,
    ))
}

/// A pipeline with no family index, in its kind's codec.
fn plain<F: Format + Send + 'static>(
    format: F,
    kind: &'static PushKind,
    parts: &PipelineParts<'_>,
) -> Box<dyn PushPipeline> {
    Box::new(
        Pipeline::new(
            format,
            parts.router.clone(),
            FamilyIndex::new(0, 0),
            parts.pool.clone(),
            parts.max_decoded,
        )
        .with_codec(kind.codec),
    )
}

/// What a run produced: one compressed request per tenant, and what the
/// request held and what the unmapped policy did.
#[derive(Debug)]
pub struct Output {
    pub outgoing: Vec<Outgoing>,
    pub stats: SplitCounts,
}

impl<F: Format> Pipeline<F> {
    /// A pipeline for `format` that refuses bodies declaring more than
    /// `max_decoded` bytes.
    pub fn new(
        format: F,
        router: Router,
        families: FamilyIndex,
        pool: Arc<BufferPool>,
        max_decoded: usize,
    ) -> Self {
        Self {
            format,
            router,
            families,
            pool,
            max_decoded,
            codec: Codec::Snappy,
        }
    }

    /// The same pipeline for bodies compressed with `codec` (snappy unless
    /// set).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The first phase: the decoded size `compressed` declares, checked
    /// against the limit before anything is allocated.
    pub fn measure(&self, compressed: &[u8]) -> Result<usize, DecodeError> {
        let limit = self.max_decoded;
        let size = match self.codec {
            Codec::Snappy => return decoded_len(compressed, limit),
            Codec::Identity => compressed.len(),
            // The trailer's size (mod 2^32; bodies here are far smaller).
            // A lying trailer is caught while decompressing.
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
            Codec::Deflate => limit.min(compressed.len().saturating_mul(1032)),
        };
        if size > limit {
            return Err(DecodeError::TooLarge { size, limit });
        }
        if size == 0 {
            return Err(DecodeError::Empty);
        }
        Ok(size)
    }

    /// The second phase: decompress `compressed` (declaring `size` bytes, as
    /// [`Pipeline::measure`] said), split it into the organizations
    /// `allowance` admits, compress each tenant's request.
    pub fn run(
        &self,
        compressed: &[u8],
        size: usize,
        table: &Snapshot,
        allowance: &Allowance,
    ) -> Result<Output, ProcessError> {
        let decoded = decompress(self.codec, compressed, size, &self.pool)?;
        let Split { batches, stats } = self.router.split(
            &self.format,
            &decoded,
            table,
            &self.families,
            &self.pool,
            allowance,
        )?;
        drop(decoded);
        Ok(Output {
            outgoing: compress(self.codec, batches, &self.pool),
            stats,
        })
    }

    /// Both phases in one call, with no admission between them (benches,
    /// fuzzers, `inspect`).
    pub fn process(&self, compressed: &[u8], table: &Snapshot) -> Result<Output, ProcessError> {
        let size = self.measure(compressed)?;
        self.run(compressed, size, table, &Allowance::Any)
    }

    /// The second phase for a push that goes whole to one tenant
    /// (`routing.mode: principal`): decompress and walk it (so a malformed
    /// or oversized request is refused like any other, and what it holds is
    /// counted), then send the sender's own compressed body unchanged.
    pub fn whole(
        &self,
        compressed: Bytes,
        size: usize,
        tenant: &TenantId,
    ) -> Result<Output, ProcessError> {
        let decoded = decompress(self.codec, &compressed, size, &self.pool)?;
        let stats = self.router.tally(&self.format, &decoded)?;
        let decoded_len = decoded.len();
        drop(decoded);
        Ok(Output {
            outgoing: vec![Outgoing {
                tenant: tenant.clone(),
                held: compressed.len(),
                body: compressed,
                decoded_len,
                counts: stats.received,
            }],
            stats,
        })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn families(&self) -> &FamilyIndex {
        &self.families
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

/// A buffer that goes back to its pool when dropped, however the code that
/// holds it ends.
struct Lent<'p> {
    buf: Vec<u8>,
    /// The decoded bytes are the buffer's first `len`.
    len: usize,
    pool: &'p BufferPool,
}

impl std::ops::Deref for Lent<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Decompresses `compressed` (whose declared size `measure` already
/// checked) into a buffer from `pool`.
fn decompress<'p>(
    codec: Codec,
    compressed: &[u8],
    size: usize,
    pool: &'p BufferPool,
) -> Result<Lent<'p>, DecodeError> {
    match codec {
        Codec::Snappy => {}
        Codec::Identity => {
            // A copy, so the one decoded-buffer type serves every codec; it
            // costs a fraction of parsing the JSON.
            let mut buf = Lent {
                buf: pool.take(size),
                len: size,
                pool,
            };
            buf.buf.extend_from_slice(compressed);
            return Ok(buf);
        }
        Codec::Gzip | Codec::Deflate => return inflate(codec, compressed, size, pool),
    }
    // snap writes into an initialised slice; a reused buffer is not zeroed
    // again, decompression overwrites it.
    let mut buf = Lent {
        buf: pool.take_filled(size),
        len: 0,
        pool,
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

/// One tenant's push, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant: TenantId,
    /// The snappy-compressed request.
    pub body: Bytes,
    /// Bytes `body` decompresses to.
    pub decoded_len: usize,
    pub counts: Counts,
    /// Bytes of memory `body` holds (its buffer is sized for the worst
    /// case of compression), for the memory budget.
    pub held: usize,
}

/// Batches larger than this (in total) are compressed in parallel when the
/// process may use more than one core.
const PARALLEL_BYTES: usize = 256 << 10;

/// Compresses each batch and gives its buffer back to `pool`; the
/// compressed bodies come from `pool` too and return to it when the HTTP
/// client drops them.
fn compress(codec: Codec, batches: Vec<Batch>, pool: &Arc<BufferPool>) -> Vec<Outgoing> {
    let total: usize = batches.iter().map(|b| b.body.len()).sum();
    let parallel = batches.len() > 1 && total >= PARALLEL_BYTES && crate::limits::cores() > 1;
    let one = |b: Batch| {
        if codec == Codec::Identity {
            let decoded_len = b.body.len();
            let held = b.body.capacity();
            return Outgoing {
                tenant: b.tenant,
                body: Pooled::new(b.body, pool.clone()).into_bytes(),
                decoded_len,
                held,
                counts: b.counts,
            };
        }
        let (body, held) = match codec {
            Codec::Snappy => compress_one(&b.body, pool),
            _ => deflate_one(codec, &b.body, pool),
        };
        let out = Outgoing {
            tenant: b.tenant,
            body,
            decoded_len: b.body.len(),
            held,
            counts: b.counts,
        };
        pool.give(b.body);
        out
    };
    if parallel {
        batches.into_par_iter().map(one).collect()
    } else {
        batches.into_iter().map(one).collect()
    }
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

/// Errors of a pipeline run.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Bytes the outgoing requests hold until they are sent: their buffers,
/// and a little for each request's own state.
pub fn held_bytes(outgoing: &[Outgoing]) -> usize {
    outgoing.iter().map(|o| o.held + 512).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_kind_sits_at_its_id() {
        for (i, r) in REGISTRY.iter().enumerate() {
            assert_eq!(r.kind.id, i, "{}", r.kind.name);
        }
    }

    use super::*;

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
