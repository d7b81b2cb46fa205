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
//!              ─► Pipeline::run: decompress into a pooled buffer (Lent; uncompressed: read in place)
//!                  ─► Router::split(format) (zero-copy, batches in pooled buffers)
//!                  ─► compress each batch (in parallel on several cores) ─► Output
//!                     · all of it to one tenant, unchanged: the sender's own body instead
//!                     · a compressed kind with a merge (2.0, gzip OTLP, compressed
//!                       Loki JSON): batches left decoded, the forwarder merges
//!                       and compresses them
//! ```
//!
//! The push handler, the benches, the fuzzers, the load test and `inspect`
//! all run this same code. The decoded buffer goes back to the pool by a
//! guard ([`crate::codec::Lent`]), however a run ends. The codec work itself
//! (measure, decompress, compress) is [`crate::codec`]'s.

use bytes::Bytes;
use rayon::prelude::*;

use std::sync::Arc;

use crate::formats::otlp::{json::OtlpJson, OtlpProto, OtlpSignal, KINDS as OTLP};
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
    /// Tenant bodies leave decoded, for the forwarder to merge and
    /// compress ([`PushKind::merge`]).
    decoded_out: bool,
}

use crate::codec::decompress;
pub use crate::codec::{Codec, DecodeError};

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
    /// The router of formats whose items carry attributes rather than
    /// labels (OTLP): the same table and policies, `otlp.namespace_attributes`
    /// as the keys.
    pub attribute_router: &'a Router,
    /// Most pairs and bytes of the metric-family index of a kind that
    /// routes metadata by family (remote write 1.0); the others get none.
    pub family_index: (usize, usize),
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
pub static REGISTRY: [Registered; 18] = [
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
    register(&OTLP[0], |p| {
        by_attributes(OtlpProto(OtlpSignal::Metrics), &OTLP[0], p)
    }),
    register(&OTLP[1], |p| {
        by_attributes(OtlpProto(OtlpSignal::Metrics), &OTLP[1], p)
    }),
    register(&OTLP[2], |p| {
        by_attributes(OtlpJson(OtlpSignal::Metrics), &OTLP[2], p)
    }),
    register(&OTLP[3], |p| {
        by_attributes(OtlpJson(OtlpSignal::Metrics), &OTLP[3], p)
    }),
    register(&OTLP[4], |p| {
        by_attributes(OtlpProto(OtlpSignal::Logs), &OTLP[4], p)
    }),
    register(&OTLP[5], |p| {
        by_attributes(OtlpProto(OtlpSignal::Logs), &OTLP[5], p)
    }),
    register(&OTLP[6], |p| {
        by_attributes(OtlpJson(OtlpSignal::Logs), &OTLP[6], p)
    }),
    register(&OTLP[7], |p| {
        by_attributes(OtlpJson(OtlpSignal::Logs), &OTLP[7], p)
    }),
    register(&OTLP[8], |p| {
        by_attributes(OtlpProto(OtlpSignal::Traces), &OTLP[8], p)
    }),
    register(&OTLP[9], |p| {
        by_attributes(OtlpProto(OtlpSignal::Traces), &OTLP[9], p)
    }),
    register(&OTLP[10], |p| {
        by_attributes(OtlpJson(OtlpSignal::Traces), &OTLP[10], p)
    }),
    register(&OTLP[11], |p| {
        by_attributes(OtlpJson(OtlpSignal::Traces), &OTLP[11], p)
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
        FamilyIndex::new(parts.family_index.0, parts.family_index.1),
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
    with_router(format, kind, parts.router, parts)
}

/// A pipeline routed by item attributes (OTLP), in its kind's codec.
fn by_attributes<F: Format + Send + 'static>(
    format: F,
    kind: &'static PushKind,
    parts: &PipelineParts<'_>,
) -> Box<dyn PushPipeline> {
    with_router(format, kind, parts.attribute_router, parts)
}

fn with_router<F: Format + Send + 'static>(
    format: F,
    kind: &'static PushKind,
    router: &Router,
    parts: &PipelineParts<'_>,
) -> Box<dyn PushPipeline> {
    Box::new(
        Pipeline::new(
            format,
            router.clone(),
            FamilyIndex::new(0, 0),
            parts.pool.clone(),
            parts.max_decoded,
        )
        .with_codec(kind.codec)
        .sending_decoded(kind.sent_decoded()),
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
            decoded_out: false,
        }
    }

    /// The same pipeline for bodies compressed with `codec` (snappy unless
    /// set).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The same pipeline, leaving tenant bodies decoded when `decoded`
    /// (for a kind with [`PushKind::merge`]: the forwarder compresses).
    pub fn sending_decoded(mut self, decoded: bool) -> Self {
        self.decoded_out = decoded;
        self
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The first phase: the decoded size `compressed` declares, checked
    /// against the limit before anything is allocated.
    pub fn measure(&self, compressed: &[u8]) -> Result<usize, DecodeError> {
        crate::codec::declared_len(self.codec, compressed, self.max_decoded)
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
        let Split { mut batches, stats } = self.router.split(
            &self.format,
            &decoded,
            table,
            &self.families,
            &self.pool,
            allowance,
        )?;
        let decoded_len = decoded.len();
        drop(decoded);
        if self.goes_whole(&batches, &stats, decoded_len) {
            // Everything to one tenant, unchanged: the sender's own body,
            // not a recompressed copy of it (one Prometheus per namespace,
            // a sidecar, an agent per team). Copying the compressed bytes
            // costs a fraction of compressing them again.
            let batch = batches.pop().expect("one batch");
            self.pool.give(batch.body);
            return Ok(Output {
                outgoing: vec![Outgoing {
                    tenant: batch.tenant,
                    body: Bytes::copy_from_slice(compressed),
                    decoded_len,
                    counts: batch.counts,
                    held: compressed.len(),
                    encoded: true,
                }],
                stats,
            });
        }
        let codec = if self.decoded_out {
            Codec::Identity
        } else {
            self.codec
        };
        Ok(Output {
            outgoing: compress(codec, batches, &self.pool, !self.decoded_out),
            stats,
        })
    }

    /// Whether a split pushes the sender's body as it came: it went to one
    /// tenant with every item (nothing dropped, defaulted elsewhere or
    /// outside the allowance, since the one batch holds all the request
    /// held), nothing rewritten, and the body carries little the rebuilt
    /// one does not (at most a sixteenth more: a JSON body padded with
    /// whitespace, or a 2.0 table of unused symbols, is sent rebuilt, as
    /// before). What it saves is compressing the rebuilt body: not for
    /// uncompressed kinds (the rebuilt body is sent as it is).
    fn goes_whole(&self, batches: &[Batch], stats: &SplitCounts, decoded_len: usize) -> bool {
        self.codec != Codec::Identity
            && !self.router.rewrites()
            && matches!(batches, [one] if one.counts == stats.received
                && decoded_len <= one.body.len() + one.body.len() / 16)
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
                encoded: true,
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

/// One tenant's push, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant: TenantId,
    /// The request: in its kind's codec when `encoded`, else decoded.
    pub body: Bytes,
    /// Bytes `body` decompresses to.
    pub decoded_len: usize,
    pub counts: Counts,
    /// Bytes of memory `body` holds (its buffer is sized for the worst
    /// case of compression), for the memory budget.
    pub held: usize,
    /// Whether `body` is in its kind's codec. Always, but for the rebuilt
    /// bodies of a kind with [`PushKind::merge`], which leave decoded for
    /// the forwarder to merge and compress; a push that goes whole is its
    /// sender's own bytes, encoded.
    pub encoded: bool,
}

/// Batches larger than this (in total) are compressed in parallel when the
/// process may use more than one core.
const PARALLEL_BYTES: usize = 256 << 10;

/// Compresses each batch and gives its buffer back to `pool`; the
/// compressed bodies come from `pool` too and return to it when the HTTP
/// client drops them.
/// `encoded` says whether the bodies are then in their kind's codec (not
/// when a kind's bodies leave decoded: `codec` is then `Identity`).
fn compress(
    codec: Codec,
    batches: Vec<Batch>,
    pool: &Arc<BufferPool>,
    encoded: bool,
) -> Vec<Outgoing> {
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
                encoded,
            };
        }
        let (body, held) = crate::codec::compress(codec, &b.body, pool);
        let out = Outgoing {
            tenant: b.tenant,
            body,
            decoded_len: b.body.len(),
            held,
            counts: b.counts,
            encoded,
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
    use super::*;
    use crate::pool::BufferPool;

    use crate::config::{Routing, RoutingMode, UnmappedPolicy};
    use crate::testing::{self, Shape};
    use crate::wire::RequestLimits;

    fn pipeline(routing: Routing) -> Pipeline<rw1::Rw1> {
        Pipeline::new(
            rw1::Rw1,
            Router::new(&routing, RequestLimits::default()),
            FamilyIndex::new(1000, 100_000),
            Arc::new(BufferPool::default()),
            64 << 20,
        )
    }

    /// `ns-0` .. `ns-19`, all of `org-0` but `ns-5` (`org-1`); `ns-9` has none.
    fn table() -> Snapshot {
        let mut pairs = testing::table_pairs(20, 1);
        pairs[5].1 = "org-1".into();
        pairs.remove(9);
        Snapshot::from_pairs(pairs)
    }

    fn push(namespaces: &[&str]) -> Vec<u8> {
        let mut req = testing::request(&Shape {
            series: 300,
            ..Default::default()
        });
        for (i, s) in req.timeseries.iter_mut().enumerate() {
            for l in s.labels.iter_mut().filter(|l| l.name == "namespace") {
                l.value = namespaces[i % namespaces.len()].into();
            }
        }
        testing::compress(&req)
    }

    fn drop_unmapped() -> Routing {
        Routing {
            unmapped: UnmappedPolicy::Drop,
            ..Default::default()
        }
    }

    #[test]
    fn a_push_all_for_one_tenant_goes_upstream_as_the_sender_sent_it() {
        let body = push(&["ns-0", "ns-1", "ns-2"]);
        let out = pipeline(drop_unmapped()).process(&body, &table()).unwrap();
        assert_eq!(out.outgoing.len(), 1);
        let one = &out.outgoing[0];
        assert_eq!(one.tenant.as_str(), "org-0");
        assert_eq!(one.body[..], body[..], "the sender's own bytes");
        assert_eq!(one.counts, out.stats.received);
        assert_eq!(one.counts.series, 300);
        assert_eq!(one.decoded_len, snap::raw::decompress_len(&body).unwrap());
    }

    #[test]
    fn a_push_that_loses_or_changes_anything_is_rebuilt() {
        let table = table();
        // One series' namespace has no organization: dropped.
        let dropped = push(&["ns-0", "ns-1", "ns-9"]);
        let out = pipeline(drop_unmapped()).process(&dropped, &table).unwrap();
        assert_eq!(out.outgoing.len(), 1);
        assert_ne!(out.outgoing[0].body[..], dropped[..]);
        let sent = testing::decompress(&out.outgoing[0].body).unwrap();
        assert_eq!(sent.timeseries.len(), 200);
        // Two tenants.
        let two = push(&["ns-0", "ns-5"]);
        assert_eq!(
            pipeline(drop_unmapped())
                .process(&two, &table)
                .unwrap()
                .outgoing
                .len(),
            2
        );
        // A body carrying more than its items (a large field no schema
        // knows): what goes upstream is rebuilt from the items.
        let mut padded = snap::raw::Decoder::new()
            .decompress_vec(&push(&["ns-0"]))
            .unwrap();
        let items = padded.len();
        crate::wire::encode::put_bytes_field(&mut padded, 15, &vec![b' '; 64 << 10]);
        let padded = snap::raw::Encoder::new().compress_vec(&padded).unwrap();
        let out = pipeline(drop_unmapped()).process(&padded, &table).unwrap();
        assert_eq!(out.outgoing[0].counts.series, 300);
        assert_eq!(out.outgoing[0].decoded_len, items);
        // Label mode removing the tenant label rewrites every series.
        let label = Routing {
            mode: RoutingMode::Label,
            tenant_label: "namespace".into(),
            remove_tenant_label: true,
            ..drop_unmapped()
        };
        let out = pipeline(label).process(&push(&["acme"]), &table).unwrap();
        let sent = testing::decompress(&out.outgoing[0].body).unwrap();
        assert!(sent.timeseries[0]
            .labels
            .iter()
            .all(|l| l.name != "namespace"));
    }

    #[test]
    fn each_kind_sits_at_its_id() {
        for (i, r) in REGISTRY.iter().enumerate() {
            assert_eq!(r.kind.id, i, "{}", r.kind.name);
        }
    }
}
