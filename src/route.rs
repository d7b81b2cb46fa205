//! Series → tenant, and one output request per tenant.
//!
//! ```text
//!  decompressed body ─► wire::Request::fields ─► SeriesView ─► key (namespace | tenant label)
//!        key ─► per-request cache ─(miss)─► table snapshot / label rules ─► Outcome
//!        Outcome::Group(i) ─► copy the series' bytes into batches[i]
//!        Outcome::Unmapped ─► policy: default tenant | drop (counted) | reject (400)
//!  metadata ─► tenants that have series of that family ─► copied into their batches
//! ```
//!
//! Invariants:
//! - every series of the input ends in exactly one batch, or is counted in
//!   [`Stats::dropped`], or the whole request is rejected;
//! - a series is only ever put into the batch of the tenant its own labels
//!   resolve to (or the configured default tenant);
//! - nothing here allocates per series: keys and tenants are borrowed from the
//!   body or the table snapshot, and a namespace is hashed at most once per
//!   series (not at all when it repeats the previous series').

use std::borrow::Cow;

use hashbrown::{HashMap, HashSet};

use crate::config::{Mode, Routing, UnmappedPolicy};
use crate::pool::BufferPool;
use crate::table::{Org, Snapshot};
use crate::tenant::{self, InvalidTenant};
use crate::wire::{encode, Field, LabelQuery, Limits, Request, SeriesView, WireError};

pub mod family;
pub mod reference;

pub use family::FamilyIndex;

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

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a request cannot be split.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("body is not a valid remote-write WriteRequest: {0}")]
    Wire(#[from] WireError),
    #[error("series {series} has no tenant ({reason}) and routing.unmapped is reject")]
    Rejected { series: String, reason: String },
    #[error("request has series of more than {0} tenants (limits.max_tenants_per_request)")]
    TooManyTenants(usize),
}

/// The series and metadata for one tenant, encoded as a `WriteRequest`.
#[derive(Debug)]
pub struct Batch<'a> {
    pub tenant: Cow<'a, str>,
    /// Encoded (uncompressed) `WriteRequest`.
    pub body: Vec<u8>,
    pub series: u64,
    pub samples: u64,
    pub exemplars: u64,
    pub histograms: u64,
    pub metadata: u64,
}

/// What happened to a request's content, for metrics and `inspect`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub series: u64,
    pub samples: u64,
    pub exemplars: u64,
    pub histograms: u64,
    pub metadata: u64,
    /// Series sent to the default tenant, by [`Unmapped`] reason.
    pub defaulted: [u64; 3],
    /// Series dropped by the `drop` policy, by [`Unmapped`] reason.
    pub dropped: [u64; 3],
    /// Samples (and histogram samples) in the dropped series.
    pub dropped_samples: u64,
    /// Metadata entries whose family no tenant has series of, with no default tenant.
    pub metadata_dropped: u64,
    /// Metadata entries whose family no tenant has series of (or whose
    /// tenants were forgotten), sent to the default tenant.
    pub metadata_defaulted: u64,
}

impl Stats {
    pub fn defaulted(&self, reason: Unmapped) -> u64 {
        self.defaulted[reason.index()]
    }
    pub fn dropped(&self, reason: Unmapped) -> u64 {
        self.dropped[reason.index()]
    }
}

/// A request split by tenant.
#[derive(Debug)]
pub struct Split<'a> {
    pub batches: Vec<Batch<'a>>,
    pub stats: Stats,
}

/// The routing rules, compiled from [`Routing`] once at startup.
#[derive(Debug, Clone)]
pub struct Router {
    mode: Mode,
    query: LabelQuery,
    /// The label names the router looks for, in priority order (the
    /// namespace labels, or the tenant label).
    names: Vec<String>,
    remove_tenant_label: bool,
    tenant_prefix: String,
    default_tenant: Option<String>,
    policy: UnmappedPolicy,
    limits: Limits,
}

/// Where a key (namespace or tenant label value) sends its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Group(u32),
    Unmapped(Unmapped),
}

impl Router {
    /// Compiles the routing section. `default_tenant` must already be
    /// validated (see `config`).
    pub fn new(routing: &Routing, limits: Limits) -> Self {
        let names = match routing.mode {
            Mode::Namespace => routing.namespace_labels.clone(),
            Mode::Label => vec![routing.tenant_label.clone()],
        };
        let query = LabelQuery::new(&names);
        Self {
            mode: routing.mode,
            query,
            names,
            remove_tenant_label: routing.remove_tenant_label && routing.mode == Mode::Label,
            tenant_prefix: routing.tenant_prefix.clone(),
            default_tenant: Some(routing.default_tenant.clone()).filter(|t| !t.is_empty()),
            policy: routing.unmapped,
            limits,
        }
    }

    /// What happens to unmapped series.
    pub fn policy(&self) -> UnmappedPolicy {
        self.policy
    }

    /// The default tenant, if one is configured.
    pub fn default_tenant(&self) -> Option<&str> {
        self.default_tenant.as_deref()
    }

    /// The label names the router looks for, in priority order.
    pub fn query_names(&self) -> &[String] {
        &self.names
    }

    /// Splits a decompressed `WriteRequest` into one batch per tenant.
    ///
    /// `families` remembers which tenants have series of which metric, so that
    /// metadata (which carries no labels) goes only to tenants that own that
    /// metric.
    pub fn split<'a>(
        &'a self,
        body: &'a [u8],
        table: &'a Snapshot,
        families: &FamilyIndex,
    ) -> Result<Split<'a>, RouteError> {
        static NO_POOL: BufferPool = BufferPool::disabled();
        self.split_with(body, table, families, &NO_POOL)
    }

    /// [`Router::split`], with batch buffers taken from `pool`.
    pub fn split_with<'a>(
        &'a self,
        body: &'a [u8],
        table: &'a Snapshot,
        families: &FamilyIndex,
        pool: &'a BufferPool,
    ) -> Result<Split<'a>, RouteError> {
        let mut state = State {
            pool,
            router: self,
            table,
            cache: HashMap::new(),
            last: None,
            batches: Vec::new(),
            by_tenant: HashMap::new(),
            stats: Stats::default(),
            seen: HashSet::new(),
            last_seen: None,
            size_hint: body.len(),
        };
        // Bounded by `limits.max_metadata` (the walk counts them).
        let mut metadata = Vec::new();
        for field in Request::new(body).fields(&self.query, self.limits) {
            match field? {
                Field::Series(series) => state.series(series)?,
                Field::Metadata(m) => metadata.push(m),
            }
        }
        state.learn(families);
        let mut scratch = String::new();
        for m in metadata {
            state.stats.metadata += 1;
            let mut routed = false;
            families.try_for_each_tenant(m.family, &mut scratch, |tenant| {
                let group = state.group_of(tenant)?;
                let batch = &mut state.batches[group as usize];
                batch.body.extend_from_slice(m.raw);
                batch.metadata += 1;
                routed = true;
                Ok::<(), RouteError>(())
            })?;
            if !routed {
                if let Some(default) = &self.default_tenant {
                    let group = state.group(Cow::Borrowed(default.as_str()))?;
                    let batch = &mut state.batches[group as usize];
                    batch.body.extend_from_slice(m.raw);
                    batch.metadata += 1;
                    state.stats.metadata_defaulted += 1;
                } else {
                    state.stats.metadata_dropped += 1;
                }
            }
        }
        Ok(Split {
            batches: state.batches,
            stats: state.stats,
        })
    }
}

/// Per-request working state of [`Router::split`].
struct State<'a> {
    router: &'a Router,
    pool: &'a BufferPool,
    table: &'a Snapshot,
    /// Key → outcome, so each distinct namespace is resolved once per request.
    cache: HashMap<&'a str, Outcome>,
    /// The previous series' key and outcome: consecutive series usually share
    /// a namespace, and a byte compare is cheaper than a hash.
    last: Option<(&'a str, Outcome)>,
    batches: Vec<Batch<'a>>,
    by_tenant: HashMap<Cow<'a, str>, u32>,
    stats: Stats,
    /// Distinct (metric name, group) pairs of this request, to teach the
    /// [`FamilyIndex`]. A set rather than a sorted list: sorting would
    /// compare metric names thousands of times per request.
    seen: HashSet<(&'a str, u32)>,
    /// The last pair inserted into `seen`: runs of one metric skip the hash.
    last_seen: Option<(&'a str, u32)>,
    size_hint: usize,
}

impl<'a> State<'a> {
    #[inline]
    fn series(&mut self, series: SeriesView<'a>) -> Result<(), RouteError> {
        let stats = &mut self.stats;
        stats.series += 1;
        stats.samples += u64::from(series.samples);
        stats.exemplars += u64::from(series.exemplars);
        stats.histograms += u64::from(series.histograms);

        let outcome = match series.hit {
            None => Outcome::Unmapped(Unmapped::NoLabel),
            Some(hit) => match self.last {
                Some((key, outcome)) if crate::wire::same(key.as_bytes(), hit.value.as_bytes()) => {
                    outcome
                }
                _ => {
                    let outcome = match self.cache.get(hit.value) {
                        Some(&o) => o,
                        None => {
                            let o = self.resolve(hit.value)?;
                            self.cache.insert(hit.value, o);
                            o
                        }
                    };
                    self.last = Some((hit.value, outcome));
                    outcome
                }
            },
        };

        let group = match outcome {
            Outcome::Group(group) => {
                let batch = &mut self.batches[group as usize];
                match (self.router.remove_tenant_label, series.hit) {
                    (true, Some(hit)) => {
                        encode::append_series_without(&mut batch.body, &series, hit.field)
                    }
                    _ => encode::append_series(&mut batch.body, &series),
                }
                group
            }
            Outcome::Unmapped(reason) => match self.router.policy {
                UnmappedPolicy::Default => {
                    let default = self.router.default_tenant.as_deref().unwrap_or_default();
                    let group = self.group(Cow::Borrowed(default))?;
                    self.stats.defaulted[reason.index()] += 1;
                    let batch = &mut self.batches[group as usize];
                    encode::append_series(&mut batch.body, &series);
                    group
                }
                UnmappedPolicy::Drop => {
                    self.stats.dropped[reason.index()] += 1;
                    self.stats.dropped_samples +=
                        u64::from(series.samples) + u64::from(series.histograms);
                    return Ok(());
                }
                UnmappedPolicy::Reject => {
                    return Err(RouteError::Rejected {
                        series: describe(&series),
                        reason: self.explain(reason, series.hit.map(|h| h.value)),
                    })
                }
            },
        };
        let batch = &mut self.batches[group as usize];
        batch.series += 1;
        batch.samples += u64::from(series.samples);
        batch.exemplars += u64::from(series.exemplars);
        batch.histograms += u64::from(series.histograms);
        if let Some(name) = series.metric_name {
            let fresh = match self.last_seen {
                Some((n, g)) => g != group || !crate::wire::same(n.as_bytes(), name.as_bytes()),
                None => true,
            };
            if fresh {
                self.seen.insert((name, group));
                self.last_seen = Some((name, group));
            }
        }
        Ok(())
    }

    /// Resolves a key that is not in the per-request cache.
    fn resolve(&mut self, key: &'a str) -> Result<Outcome, RouteError> {
        Ok(match self.router.mode {
            Mode::Namespace => match self.table.get(key) {
                Some(Org::Tenant(t)) => Outcome::Group(self.group(Cow::Borrowed(&**t))?),
                Some(Org::Invalid(_)) => Outcome::Unmapped(Unmapped::InvalidTenant),
                None => Outcome::Unmapped(Unmapped::NoOrganization),
            },
            Mode::Label => {
                let tenant: Cow<'a, str> = if self.router.tenant_prefix.is_empty() {
                    Cow::Borrowed(key)
                } else {
                    Cow::Owned(format!("{}{key}", self.router.tenant_prefix))
                };
                match tenant::validate(&tenant) {
                    Ok(()) => Outcome::Group(self.group(tenant)?),
                    Err(e) => {
                        crate::metrics::invalid_tenant_label(key, &e);
                        Outcome::Unmapped(Unmapped::InvalidTenant)
                    }
                }
            }
        })
    }

    /// [`State::group`] for a tenant name that does not live as long as the
    /// request (it is copied only when its batch is created).
    fn group_of(&mut self, tenant: &str) -> Result<u32, RouteError> {
        match self.by_tenant.get(tenant) {
            Some(&g) => Ok(g),
            None => self.group(Cow::Owned(tenant.to_owned())),
        }
    }

    /// The batch index of `tenant`, creating the batch on first use.
    fn group(&mut self, tenant: Cow<'a, str>) -> Result<u32, RouteError> {
        if let Some(&g) = self.by_tenant.get(&*tenant) {
            return Ok(g);
        }
        let max_tenants = self.router.limits.max_tenants;
        if self.batches.len() >= max_tenants {
            return Err(RouteError::TooManyTenants(max_tenants));
        }
        let g = self.batches.len() as u32;
        // Size the first batches from the input so they rarely grow: the
        // first tenant may well get everything, the next few a share. Past
        // those, batches start small and grow as needed, so that many
        // tenants do not reserve many times the input.
        let capacity = match g {
            0 => self.size_hint,
            1..8 => (self.size_hint / (g as usize + 1)).max(256),
            _ => 256,
        };
        self.batches.push(Batch {
            tenant: tenant.clone(),
            body: self.pool.take(capacity),
            series: 0,
            samples: 0,
            exemplars: 0,
            histograms: 0,
            metadata: 0,
        });
        self.by_tenant.insert(tenant, g);
        Ok(g)
    }

    fn learn(&mut self, families: &FamilyIndex) {
        if self.seen.is_empty() {
            return;
        }
        let batches = &self.batches;
        families.learn(
            self.seen
                .iter()
                .map(|&(name, g)| (name, &*batches[g as usize].tenant)),
        );
    }

    fn explain(&self, reason: Unmapped, key: Option<&str>) -> String {
        match (reason, key) {
            (Unmapped::NoLabel, _) => match self.router.mode {
                Mode::Namespace => "no namespace label".into(),
                Mode::Label => "no tenant label".into(),
            },
            (Unmapped::NoOrganization, Some(ns)) => {
                format!("namespace {ns:?} has no organization")
            }
            (Unmapped::InvalidTenant, Some(k)) => {
                let id = match self.router.mode {
                    Mode::Namespace => match self.table.get(k) {
                        Some(Org::Invalid(e)) => return format!("namespace {k:?}: {e}"),
                        _ => k.to_string(),
                    },
                    Mode::Label => format!("{}{k}", self.router.tenant_prefix),
                };
                let e = tenant::validate(&id).err().unwrap_or(InvalidTenant::Empty);
                format!("{id:?}: {e}")
            }
            (r, None) => r.as_str().into(),
        }
    }
}

/// A short, human-readable form of a series' labels for error messages.
/// Reads only the labels (a series may carry millions of samples).
fn describe(series: &SeriesView<'_>) -> String {
    crate::wire::describe_series_labels(series.body, 12)
}

#[cfg(test)]
mod tests;
