//! The seam between the pipeline and a push format.
//!
//! ```text
//!  decoded body ─► Format::index (RW2: the symbol table) ─► Format::walk
//!       ─► PushItem::Series (routing key, family, counts) ─► router
//!       └► PushItem::Extra  (follows a family: RW1 metadata)
//!  router ─► Format::append_series / append_extra / finish ─► one request body per tenant
//! ```
//!
//! The pipeline (admit, decompress, route, authorize, compress, forward,
//! answer) knows nothing of a format beyond this trait: remote write 1.0
//! ([`rw1`]), remote write 2.0 ([`rw2`]), Loki's protobuf and JSON
//! pushes ([`loki`]) and OpenTelemetry's metrics, logs and traces
//! ([`otlp`]) implement it. A format walks the decoded body without copying,
//! validates every byte it hands out (so a malformed request is rejected
//! whole, before anything is forwarded), counts every repeated item against
//! the request limits, and builds each tenant's request from borrowed pieces
//! of the input.

pub mod json_batch;
pub mod kind;
pub mod loki;
pub mod otlp;
pub mod remote_write;
pub mod rw1;
pub mod rw2;

pub use kind::{Destination, Endpoint, Negotiated, PushKind, RequestHeaders, Unsupported};

/// The endpoints that take pushes (the server registers their paths).
pub static ENDPOINTS: [&Endpoint; 5] = [
    &remote_write::ENDPOINT,
    &loki::ENDPOINT,
    &otlp::METRICS,
    &otlp::LOGS,
    &otlp::TRACES,
];

use crate::signals::Counts;
use crate::wire::{Hit, LabelQuery, RequestLimits, WireError};

/// One top-level item of a push.
pub enum PushItem<'a, F: Format + ?Sized> {
    /// A series (or stream): routed by its own labels.
    Series(F::Series<'a>),
    /// An item with no labels of its own that goes wherever the series of
    /// its metric family went (remote write 1.0 metadata).
    Extra(F::Extra<'a>),
}

/// A push format: how to walk a decoded request and build one per tenant.
pub trait Format: Sync {
    /// A series or stream, borrowed from the decoded body.
    type Series<'a>: Copy;
    /// A family-routed item, borrowed from the decoded body.
    type Extra<'a>: Copy;
    /// Per-tenant encoding state (a symbol table, say); `()` when a tenant's
    /// request is just its items' bytes one after another.
    type Batch: Default;
    /// What the format reads from the whole body before the walk, and items
    /// borrow from: the body itself (1.0), or the body and its symbol
    /// table (2.0, whose series refer to symbols that may come later).
    type Index<'a>;

    /// Whether the encoded bodies of two requests, one after the other,
    /// make one valid request holding both (protobuf messages whose items
    /// are repeated fields do). The forwarder merges the batches of
    /// concurrent pushes for one tenant only when this holds.
    const CONCATENATES: bool;

    /// Reads what the walk needs from the whole of `body` (the symbol table,
    /// validated and within the limits).
    fn index<'a>(
        &self,
        body: &'a [u8],
        limits: RequestLimits,
    ) -> Result<Self::Index<'a>, WireError>;

    /// Walks the indexed body in order, handing each item to `visit`; the
    /// first error (malformed input, a limit exceeded, or `visit`'s own)
    /// ends the walk.
    fn walk<'a, E: From<WireError>>(
        &self,
        index: &'a Self::Index<'_>,
        query: &LabelQuery,
        limits: RequestLimits,
        visit: impl FnMut(PushItem<'a, Self>) -> Result<(), E>,
    ) -> Result<(), E>;

    /// The best match of the routing query among the series' labels.
    fn key<'a>(series: &Self::Series<'a>) -> Option<Hit<'a>>;
    /// The metric family of the series, for routing extras.
    fn family<'a>(series: &Self::Series<'a>) -> Option<&'a str>;
    /// What the series carries.
    fn counts(series: &Self::Series<'_>) -> Counts;
    /// A short human-readable form of the series' labels, for errors.
    fn describe(series: &Self::Series<'_>) -> String;
    /// The metric family an extra belongs to.
    fn extra_family<'a>(extra: &Self::Extra<'a>) -> &'a str;

    /// Appends the series to a tenant's request, leaving out the label
    /// `without` if given (label mode's `remove_tenant_label`).
    fn append_series(
        batch: &mut Self::Batch,
        out: &mut Vec<u8>,
        series: &Self::Series<'_>,
        without: Option<Hit<'_>>,
    );
    /// Appends an extra to a tenant's request.
    fn append_extra(batch: &mut Self::Batch, out: &mut Vec<u8>, extra: &Self::Extra<'_>);
    /// Completes a tenant's request once everything is appended. `index`
    /// is the input's, which the batch's items were taken from (2.0's
    /// tables are written from the input's symbols here).
    fn finish(index: &Self::Index<'_>, batch: Self::Batch, out: &mut Vec<u8>);
}
