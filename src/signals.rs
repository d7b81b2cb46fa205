//! What the stages report, in types that both the stages and [`crate::metrics`]
//! know, so that neither imports the other.
//!
//! ```text
//!  route / pipeline ─► Counts, SplitCounts ─► push handler ─► metrics (tells the registry)
//!  table feeds     ─► TableSignals (handles) ─┐
//!  forward         ─► UpstreamSignals        ─┼─ registered once by metrics::Metrics
//!  route           ─► RouteSignals           ─┘
//! ```
//!
//! The handle bundles hold `metrics` crate handles registered once, at
//! startup, with the server's own registry; their `Default` is a no-op (tests
//! and tools that have no registry). No stage looks a metric up by name on
//! the hot path.

use metrics::{Counter, Gauge, Histogram};

/// What a push carries: metrics (remote write) or logs (Loki). The
/// `signal` label of the push metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Metrics = 0,
    Logs = 1,
    /// OpenTelemetry spans (OTLP), for Tempo.
    Traces = 2,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }
}

/// What one request, batch or tenant push carries. One type for route
/// stats, batches, outgoing requests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Series (remote write) or streams (Loki).
    pub series: u64,
    /// Float samples (remote write) or log entries (Loki).
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    pub metadata: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.series += other.series;
        self.samples += other.samples;
        self.histograms += other.histograms;
        self.exemplars += other.exemplars;
        self.metadata += other.metadata;
    }
}

/// Why a series has no tenant of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unmapped {
    /// None of the namespace labels (or the tenant label) is on the series.
    NoLabel,
    /// The namespace is not in the table, or has no organization.
    NoOrganization,
    /// The organization (or tenant label value) is not a valid tenant ID.
    InvalidTenant,
}

impl Unmapped {
    pub const ALL: [Unmapped; 3] = [
        Unmapped::NoLabel,
        Unmapped::NoOrganization,
        Unmapped::InvalidTenant,
    ];

    /// Metric label value for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Unmapped::NoLabel => "no_label",
            Unmapped::NoOrganization => "no_organization",
            Unmapped::InvalidTenant => "invalid_tenant",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What happened to a request's content: what it held, and what the
/// unmapped policy did with what had no tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SplitCounts {
    /// Everything the request held.
    pub received: Counts,
    /// Series sent to the default tenant, by [`Unmapped`] reason.
    pub defaulted: [u64; 3],
    /// Series dropped by the `drop` policy, by [`Unmapped`] reason.
    pub dropped: [u64; 3],
    /// Samples (and histogram samples) in the dropped series.
    pub dropped_samples: u64,
    /// Series of organizations outside the sender's allowance, dropped by
    /// `auth.outside_allowance: drop`.
    pub forbidden: u64,
    /// Samples (and histogram samples) in those series.
    pub forbidden_samples: u64,
    /// Metadata entries whose family no tenant has series of, with no default tenant.
    pub metadata_dropped: u64,
    /// Metadata entries whose family no tenant has series of (or whose
    /// tenants were forgotten), sent to the default tenant.
    pub metadata_defaulted: u64,
    /// The keys (namespaces, or tenant-label values) whose series had no
    /// tenant of their own, with what they held: the first
    /// [`MAX_UNMAPPED_KEYS`] distinct ones of the request (the totals above
    /// count them all). Empty, and never allocated, when every series
    /// had a tenant.
    pub unmapped: Vec<UnmappedKey>,
}

/// Most distinct unmapped keys one request reports in
/// [`SplitCounts::unmapped`].
pub const MAX_UNMAPPED_KEYS: usize = 32;

/// Longest unmapped key kept, in bytes (a Kubernetes namespace has at most
/// 63): a longer one, which only a made-up label value can be, is cut at a
/// character boundary, so what the record holds does not grow with
/// `limits.max_label_bytes`.
pub const MAX_UNMAPPED_KEY_BYTES: usize = 128;

/// `key` cut to at most [`MAX_UNMAPPED_KEY_BYTES`] at a character boundary.
pub fn shortened_key(key: &str) -> &str {
    if key.len() <= MAX_UNMAPPED_KEY_BYTES {
        return key;
    }
    let mut end = MAX_UNMAPPED_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// A key whose series had no tenant of their own, in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmappedKey {
    /// The namespace (or tenant-label value); `None` for series that carry
    /// no such label at all.
    pub key: Option<Box<str>>,
    pub reason: Unmapped,
    /// Whether the unmapped policy sent them to the default tenant (else
    /// they were dropped).
    pub defaulted: bool,
    /// What those series held.
    pub counts: Counts,
}

impl SplitCounts {
    pub fn defaulted(&self, reason: Unmapped) -> u64 {
        self.defaulted[reason.index()]
    }
    pub fn dropped(&self, reason: Unmapped) -> u64 {
        self.dropped[reason.index()]
    }
}

/// What the metric-family index (metadata routing) holds, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FamilyIndexSize {
    /// `(family, tenant)` pairs held, both generations.
    pub pairs: usize,
    /// Bytes of names held, both generations.
    pub bytes: usize,
    /// Times the older generation was forgotten.
    pub rotations: u64,
}

/// What the org table's feeds report.
#[derive(Clone)]
pub struct TableSignals {
    pub namespaces: Gauge,
    pub last_sync: Gauge,
    pub sync_errors: Counter,
    pub source_up: Gauge,
}

impl Default for TableSignals {
    fn default() -> Self {
        Self {
            namespaces: Gauge::noop(),
            last_sync: Gauge::noop(),
            sync_errors: Counter::noop(),
            source_up: Gauge::noop(),
        }
    }
}

/// What the router reports besides a request's counts.
#[derive(Clone)]
pub struct RouteSignals {
    /// Label-mode tenant values that are not valid tenant IDs.
    pub invalid_tenant: Counter,
}

impl std::fmt::Debug for RouteSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSignals").finish_non_exhaustive()
    }
}

impl Default for RouteSignals {
    fn default() -> Self {
        Self {
            invalid_tenant: Counter::noop(),
        }
    }
}

/// Authentication modes, as `orgsplit_auth_failures_total` labels them.
pub const AUTH_MODES: [&str; 4] = ["anonymous", "jwt", "basic", "mtls"];

/// Every reason an authentication fails, as the same counter labels them.
pub const AUTH_REASONS: [&str; 21] = [
    "missing",
    "scheme",
    "disabled",
    "malformed",
    "too_large",
    "algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "audience",
    "issuer",
    "missing_claim",
    "no_tenant",
    "bad_tenant",
    "key_allowance",
    "revoked",
    "unknown_user",
    "bad_password",
    "untrusted_certificate",
    "unknown_principal",
];

/// What authentication reports.
#[derive(Clone)]
pub struct AuthSignals {
    /// One counter per (mode, reason): [`AUTH_MODES`] × [`AUTH_REASONS`].
    pub failures: std::sync::Arc<[Counter]>,
    /// Key, secret or users files that changed but could not be loaded.
    pub reload_errors: Counter,
}

impl AuthSignals {
    /// The failure counter of `mode` and `reason` (an unknown pair counts
    /// as the last reason of the last mode, never panics).
    pub fn failure(&self, mode: &str, reason: &str) -> &Counter {
        let m = AUTH_MODES.iter().position(|x| *x == mode);
        let r = AUTH_REASONS.iter().position(|x| *x == reason);
        let i = match (m, r) {
            (Some(m), Some(r)) => m * AUTH_REASONS.len() + r,
            _ => self.failures.len() - 1,
        };
        &self.failures[i]
    }
}

impl Default for AuthSignals {
    fn default() -> Self {
        Self {
            failures: (0..AUTH_MODES.len() * AUTH_REASONS.len())
                .map(|_| Counter::noop())
                .collect(),
            reload_errors: Counter::noop(),
        }
    }
}

/// Status classes of upstream pushes, as `orgsplit_upstream_requests_total`
/// labels them.
pub const UPSTREAM_CLASSES: [&str; 7] = ["2xx", "4xx", "429", "5xx", "timeout", "error", "other"];

/// What the forwarder reports about each upstream request.
#[derive(Clone)]
pub struct UpstreamSignals {
    /// One counter per [`UPSTREAM_CLASSES`] entry, in that order.
    pub requests: [Counter; 7],
    pub duration: Histogram,
    /// Tenant pushes carried by upstream requests that merged several
    /// pushes' batches (see `forward::coalesce`).
    pub coalesced: Counter,
    /// Remote write 2.0 tenant pushes sent as 1.0 (`upstream.protocol`).
    pub downgraded: Counter,
    /// What those conversions could not carry, one counter per
    /// [`DOWNGRADE_LOSSES`] entry, in that order.
    pub downgrade_lost: [Counter; 3],
    /// Remote write 2.0 tenant pushes (`upstream.protocol: v2`) that the
    /// upstream answered 2xx without saying what it wrote: reported to the
    /// sender as nothing written.
    pub unconfirmed: Counter,
}

/// What a 2.0 → 1.0 conversion cannot carry (`field` label of
/// `orgsplit_downgrade_lost_total`).
pub const DOWNGRADE_LOSSES: [&str; 3] = ["start_timestamp", "classic_buckets", "unknown_field"];

impl UpstreamSignals {
    /// The counter of `class` (one of [`UPSTREAM_CLASSES`]).
    pub fn requests(&self, class: &str) -> &Counter {
        let i = UPSTREAM_CLASSES
            .iter()
            .position(|c| *c == class)
            .unwrap_or(UPSTREAM_CLASSES.len() - 1);
        &self.requests[i]
    }
}

impl Default for UpstreamSignals {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| Counter::noop()),
            duration: Histogram::noop(),
            coalesced: Counter::noop(),
            downgraded: Counter::noop(),
            downgrade_lost: std::array::from_fn(|_| Counter::noop()),
            unconfirmed: Counter::noop(),
        }
    }
}
