//! orgsplit: a Prometheus `remote_write` target that splits each push by the
//! organization that owns each series' namespace, and forwards one push per
//! organization to Mimir / Cortex with that organization's `X-Scope-OrgID`.
//!
//! The modules follow the data flow of one push:
//!
//! ```text
//!  server ─► push ─► wire (zero-copy walk) ─► route (series → tenant, uses table, tenant)
//!                                              └─► batches ─► forward ─► answer ─► sender
//!  table::file (YAML) ──► table (lock-free snapshot read by route)
//! ```
//!
//! - [`wire`]: the remote-write protobuf format, walked without copying; prost
//!   types as the reference.
//! - [`tenant`]: tenant ID rules (Mimir's).
//! - [`table`]: the namespace → organization table and what feeds it.
//! - [`route`]: resolving each series' tenant and building per-tenant batches,
//!   with the unmapped policy.
//! - [`forward`]: compressing and pushing batches upstream in parallel.
//! - [`answer`]: many upstream answers → one answer (the retry contract).
//! - [`pipeline`]: the CPU part of a push (decompress → split → compress),
//!   shared by the handler, the benches and the load test; [`pool`] reuses
//!   its buffers.
//! - [`push`]: the HTTP handler tying the stages together: receives the
//!   body against the memory budget of [`limits`], runs the pipeline on a
//!   blocking thread when it is large, forwards, answers.
//! - [`server`], [`connections`] (the connection limit), [`health`],
//!   [`shutdown`], [`metrics`], [`telemetry`], [`config`]: the service
//!   around the data path.
//!
//! Lower modules never import higher ones: `wire`, `tenant` and `table` know
//! nothing of HTTP, and `route` knows nothing of the network.

pub mod answer;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod forward;
pub mod health;
pub mod inspect;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod push;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod table;
pub mod telemetry;
pub mod tenant;
#[doc(hidden)]
pub mod testing;
pub mod wire;
