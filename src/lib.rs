//! orgsplit: a Prometheus `remote_write`, Loki push and OpenTelemetry
//! (OTLP/HTTP and gRPC) target that splits each push by the organization
//! that owns each series' (or stream's, or item's) namespace, and forwards
//! one push per organization to Mimir / Cortex, Loki or Tempo with that
//! organization's `X-Scope-OrgID`.
//!
//! The modules follow the data flow of one push:
//!
//! ```text
//!  server ─► push (HTTP or OTLP gRPC: authenticate, receive, admit, answer)
//!              └─► auth (credential → Principal with an Allowance)
//!              └─► pipeline: decompress ─► formats (walk) ─► route (series → tenant; table, tenant)
//!                            ─► authorize (tenant in the allowance?) ─► formats (encode per tenant) ─► compress
//!              └─► forward (coalesce per tenant, upstream client) ─► answer ─► sender
//!  server ─► read (its own state: authenticate, tenant from the principal) ─► query-frontend / ruler / alertmanager / Loki
//!  table::file (YAML) / table::kube (watch) ──► table (lock-free snapshot read by route)
//!  every stage ─► signals (counts, metric handles) ◄── metrics (registers, renders)
//!  push handler, auth ─► activity (bounded, last 15 min) ◄── ui (/ui/: the operator page)
//! ```
//!
//! The data path:
//! - [`formats`]: what a push is. One descriptor per push kind
//!   ([`formats::PushKind`]: codec, outgoing headers, whether bodies
//!   concatenate or how they merge, downgrade) and per endpoint ([`formats::Endpoint`]: paths,
//!   negotiation), so the handler, the state and the transport never name a
//!   format; the `Format` seam the pipeline walks with; remote
//!   write 1.0 ([`formats::rw1`]: the zero-copy walk and its prost reference) and
//!   2.0 ([`formats::rw2`]: per-tenant symbol tables, conversion to 1.0),
//!   Loki protobuf and JSON pushes ([`formats::loki`]: label strings parsed
//!   as Loki does, streams forwarded byte for byte), OpenTelemetry
//!   metrics, logs and traces ([`formats::otlp`]: resources or items
//!   routed by their attributes, answers as OTLP says); the JSON formats'
//!   tenant batches merge by [`formats::json_batch`].
//! - [`wire`]: protobuf read and written without copying, for every
//!   format's walk: varints, keys, lengths, schema checks, item counting,
//!   [`wire::LabelQuery`]; no format lives here.
//! - [`codec`]: how bodies are compressed; inflating a `Content-Encoding`
//!   layer, joining snappy blocks.
//! - [`tenant`]: tenant ID rules (Mimir's), the shared [`tenant::TenantId`],
//!   and the [`tenant::Allowance`] of organizations a sender may write.
//! - [`auth`]: who is sending: JWT (HS256 secret, RS256/ES256 trust store
//!   and JWKS, followed while running), basic-auth users, client
//!   certificates, anonymous; each gives a [`auth::Principal`].
//! - [`table`]: the namespace → organization table and what feeds it.
//! - [`route`]: resolving each series' tenant and building per-tenant batches,
//!   with the unmapped policy and the sender's allowance; format-agnostic.
//! - [`pipeline`]: the CPU part of a push (measure → admit → decompress →
//!   split → compress, or the sender's body as it came when all of it goes
//!   to one tenant), the one piece the handler, the benches, the fuzzers
//!   and `inspect` all run; [`pool`] reuses its buffers. Its
//!   [`pipeline::REGISTRY`] lists every push kind with its pipeline: a new
//!   format is its folder under `formats/` plus one line there.
//! - [`forward`]: sending tenant requests upstream in parallel over a lean
//!   pooled client, merging concurrent pushes' batches per tenant (joined
//!   as they are, or, for a kind with a merge of its own, merged decoded
//!   and compressed once).
//! - [`answer`]: many upstream answers → one answer (the retry contract).
//! - [`push`]: the HTTP handler tying the stages together: receives the
//!   body against the memory budget of [`limits`], runs the pipeline on a
//!   blocking thread when it is large, forwards, answers; [`push::grpc`]
//!   is the OTLP gRPC front to the same path.
//!
//! The read path: [`read`] proxies the query, rules, alertmanager and
//! Loki read APIs with the tenant taken from the credential ([`auth`]), the
//! answers streamed. It has its own state (the authenticator and metrics it
//! shares with the push path, its client and upstreams) and sits beside
//! [`push`], not under it: neither uses the other.
//!
//! The operator page: [`ui`] serves `/ui/` (HTML, no script) and its JSON
//! from its own state: the org table, the authenticator's [`auth::Inventory`]
//! and [`activity`], the bounded record of the last 15 minutes that the
//! push handler and authentication tell what happened (as they tell
//! [`metrics`]).
//!
//! The service around it: [`server`] (listeners, routes, shutdown),
//! [`app`] (the push path's shared state), [`connections`] (the connection
//! limit), [`health`], [`shutdown`], [`signals`] and [`metrics`],
//! [`telemetry`], [`config`], [`credentials`] (orgsplit's own upstream
//! credentials), [`cli`] and [`inspect`] (the commands, with [`cli::keys`]
//! for keys and tokens).
//!
//! Layers, bottom to top; a module uses only modules of lower layers, and
//! the test `tests/it/layers.rs` fails when one uses its own layer or one
//! above (it also refuses circles among the files of a folder module):
//!
//! ```text
//!  cli
//!  server
//!  push, health
//!  read, app, inspect, ui
//!  forward
//!  pipeline
//!  route, auth                       (no HTTP)
//!  telemetry, credentials, shutdown
//!  config
//!  formats, table, metrics, answer, activity   (formats, table: no HTTP)
//!  codec
//!  tenant, signals, wire, pool, limits, connections
//! ```
//!
//! `metrics` imports no stage: stages report through the handles and counts
//! of `signals`, and the handlers tell `metrics` what happened.
//!
//! Test helpers (`testing`, the prost reference splitter) are built only
//! with the `test-util` feature.

pub mod activity;
pub mod answer;
pub mod app;
pub mod auth;
pub mod cli;
pub mod codec;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod formats;
pub mod forward;
pub mod health;
pub mod inspect;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod push;
pub mod read;
pub mod request_limits;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod table;
pub mod telemetry;
pub mod tenant;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod ui;
pub mod wire;
