//! Series → tenant, and one output request per tenant, for any [`Format`].
//!
//! ```text
//!  decoded body ─► Format::walk ─► series ─► Format::key (namespace | tenant label)
//!        key ─► per-request cache ─(miss)─► table snapshot / label rules ─► Outcome
//!        Outcome::Group(i) ─► Format::append_series into batches[i]
//!        Outcome::Unmapped ─► policy: default tenant | drop (counted) | reject (400)
//!  extras (RW1 metadata) ─► tenants that have series of that family ─► Format::append_extra
//! ```
//!
//! Invariants:
//! - every series of the input ends in exactly one batch, or is counted in
//!   [`SplitCounts::dropped`], or the whole request is rejected;
//! - a series is only ever put into the batch of the tenant its own labels
//!   resolve to (or the configured default tenant);
//! - nothing here allocates per series: keys and tenants are borrowed from the
//!   body or the table snapshot, and a namespace is hashed at most once per
//!   series (not at all when it repeats the previous series').

use hashbrown::{HashMap, HashSet};

use crate::config::{OutsideAllowance, Routing, RoutingMode, UnmappedPolicy};
use crate::formats::{Format, PushItem};
use crate::pool::BufferPool;
use crate::signals::{Counts, RouteSignals};
use crate::table::{Org, Snapshot};
use crate::tenant::{self, Allowance, InvalidTenant, TenantId};
use crate::wire::{LabelQuery, RequestLimits, WireError};

pub mod family;
#[cfg(any(test, feature = "test-util"))]
pub mod reference;

pub use crate::signals::{SplitCounts, Unmapped, UnmappedKey, MAX_UNMAPPED_KEYS};
pub use family::FamilyIndex;

/// Why a request cannot be split.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("body is not a valid push request: {0}")]
    Wire(#[from] WireError),
    #[error("series {series} has no tenant ({reason}) and routing.unmapped is reject")]
    Rejected { series: String, reason: String },
    #[error("request has series of more than {0} tenants (limits.max_tenants_per_request)")]
    TooManyTenants(usize),
    #[error("series {series} belongs to organization {tenant:?}, which this sender may not write")]
    Forbidden { tenant: String, series: String },
}

/// The series and metadata for one tenant, encoded as one request of the
/// input's format.
#[derive(Debug)]
pub struct Batch {
    pub tenant: TenantId,
    /// The encoded (uncompressed) request.
    pub body: Vec<u8>,
    pub counts: Counts,
}

/// A request split by tenant.
#[derive(Debug)]
pub struct Split {
    pub batches: Vec<Batch>,
    pub stats: SplitCounts,
}

/// The routing rules, compiled from [`Routing`] once at startup.
#[derive(Debug, Clone)]
pub struct Router {
    mode: RoutingMode,
    query: LabelQuery,
    /// The label names the router looks for, in priority order (the
    /// namespace labels, or the tenant label).
    names: Vec<String>,
    remove_tenant_label: bool,
    tenant_prefix: String,
    default_tenant: Option<TenantId>,
    policy: UnmappedPolicy,
    /// What happens to series of organizations the sender may not write.
    outside: OutsideAllowance,
    limits: RequestLimits,
    signals: RouteSignals,
    /// Sizes seen in the last request split, to size the next one's maps
    /// and batches up front (hints only: requests race to set them, and any
    /// value is safe).
    hints: std::sync::Arc<Hints>,
}

/// What the last split held: tenants, distinct routing keys, distinct
/// (metric family, tenant) pairs. A map that grows to 200 tenants from
/// empty rehashes seven times; sized from the last request it rarely does.
#[derive(Debug, Default)]
struct Hints {
    tenants: std::sync::atomic::AtomicUsize,
    keys: std::sync::atomic::AtomicUsize,
    families: std::sync::atomic::AtomicUsize,
}

impl Hints {
    /// Caps what one odd request can make the next ones reserve.
    const MAX: usize = 4096;

    fn get(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::Relaxed).min(Self::MAX)
    }

    fn set(n: &std::sync::atomic::AtomicUsize, value: usize) {
        n.store(value, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An unmapped key with no entry of its own in [`State::unmapped`].
const NO_SLOT: u8 = u8::MAX;
const _: () = assert!(MAX_UNMAPPED_KEYS < NO_SLOT as usize);

/// Where a key (namespace or tenant label value) sends its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Group(u32),
    /// No tenant, and the key's entry in [`State::unmapped`] (or
    /// [`NO_SLOT`] past [`MAX_UNMAPPED_KEYS`]).
    Unmapped(Unmapped, u8),
    /// An organization outside the sender's allowance, with
    /// `auth.outside_allowance: drop`.
    Forbidden,
}

impl Router {
    /// Whether a tenant's request can differ from the items it was given
    /// (label mode with `remove_tenant_label` re-encodes each series).
    pub fn rewrites(&self) -> bool {
        self.remove_tenant_label
    }

    /// Compiles the routing section. `default_tenant` must already be
    /// validated (see `config`).
    pub fn new(routing: &Routing, limits: RequestLimits) -> Self {
        let names = match routing.mode {
            RoutingMode::Namespace => routing.namespace_labels.clone(),
            RoutingMode::Label => vec![routing.tenant_label.clone()],
            // Principal mode does not route by labels; the names are only
            // used by `inspect`.
            RoutingMode::Principal => routing.namespace_labels.clone(),
        };
        let query = LabelQuery::new(&names);
        Self {
            mode: routing.mode,
            query,
            names,
            remove_tenant_label: routing.remove_tenant_label && routing.mode == RoutingMode::Label,
            tenant_prefix: routing.tenant_prefix.clone(),
            // `config` validated it; an invalid one would be refused there.
            default_tenant: TenantId::new(&routing.default_tenant).ok(),
            policy: routing.unmapped,
            outside: OutsideAllowance::Reject,
            limits,
            signals: RouteSignals::default(),
            hints: Default::default(),
        }
    }

    /// Reports what the router notices (invalid tenant label values) to
    /// `signals`.
    pub fn with_signals(mut self, signals: RouteSignals) -> Self {
        self.signals = signals;
        self
    }

    /// What happens to series of organizations outside the sender's
    /// allowance (`auth.outside_allowance`); `reject` unless set.
    pub fn with_outside_allowance(mut self, outside: OutsideAllowance) -> Self {
        self.outside = outside;
        self
    }

    /// What happens to unmapped series.
    pub fn policy(&self) -> UnmappedPolicy {
        self.policy
    }

    /// The default tenant, if one is configured.
    pub fn default_tenant(&self) -> Option<&str> {
        self.default_tenant.as_ref().map(TenantId::as_str)
    }

    /// The label names the router looks for, in priority order.
    pub fn query_names(&self) -> &[String] {
        &self.names
    }

    /// The tenant a series with `labels` resolves to, or why it has none
    /// (before the unmapped policy applies). The slow, allocating path, for
    /// `inspect` and the reference splitter.
    pub fn tenant_of<'l>(
        &self,
        labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
        table: &Snapshot,
    ) -> Result<String, Unmapped> {
        let key = self
            .names
            .iter()
            .find_map(|name| labels.clone().find(|(n, _)| n == name).map(|(_, v)| v));
        match (key, self.mode) {
            (None, _) => Err(Unmapped::NoLabel),
            (Some(ns), RoutingMode::Namespace | RoutingMode::Principal) => match table.get(ns) {
                Some(Org::Tenant(t)) => Ok(t.to_string()),
                Some(Org::Invalid(_)) => Err(Unmapped::InvalidTenant),
                None => Err(Unmapped::NoOrganization),
            },
            (Some(v), RoutingMode::Label) => {
                let t = format!("{}{v}", self.tenant_prefix);
                tenant::validate(&t)
                    .map(|()| t)
                    .map_err(|_| Unmapped::InvalidTenant)
            }
        }
    }

    /// Splits a decompressed remote write 1.0 `WriteRequest` into one
    /// batch per tenant, with unpooled buffers (tests only: the pipeline
    /// calls [`Router::split`] with its format).
    ///
    /// `families` remembers which tenants have series of which metric, so that
    /// metadata (which carries no labels) goes only to tenants that own that
    /// metric.
    #[cfg(any(test, feature = "test-util"))]
    pub fn split_rw1(
        &self,
        body: &[u8],
        table: &Snapshot,
        families: &FamilyIndex,
    ) -> Result<Split, RouteError> {
        static NO_POOL: BufferPool = BufferPool::disabled();
        self.split(
            &crate::formats::rw1::Rw1,
            body,
            table,
            families,
            &NO_POOL,
            &Allowance::Any,
        )
    }

    /// Walks a decoded request of `format` without splitting it: checks it
    /// is well-formed and within the limits, and counts what it holds (a
    /// push that goes whole to one tenant).
    pub fn tally<F: Format>(&self, format: &F, body: &[u8]) -> Result<SplitCounts, RouteError> {
        let mut stats = SplitCounts::default();
        let index = format.index(body, self.limits)?;
        format.walk(&index, &self.query, self.limits, |item| {
            match item {
                PushItem::Series(series) => stats.received.add(&F::counts(&series)),
                PushItem::Extra(_) => stats.received.metadata += 1,
            }
            Ok::<(), RouteError>(())
        })?;
        Ok(stats)
    }

    /// Splits a decoded request of `format` into one batch per tenant, with
    /// batch buffers taken from `pool`, into the organizations `allowance`
    /// admits only: a series of any other organization (or the default
    /// tenant) is refused or dropped as `auth.outside_allowance` says, and
    /// metadata goes only to admitted tenants.
    pub fn split<F: Format>(
        &self,
        format: &F,
        body: &[u8],
        table: &Snapshot,
        families: &FamilyIndex,
        pool: &BufferPool,
        allowance: &Allowance,
    ) -> Result<Split, RouteError> {
        let index = format.index(body, self.limits)?;
        let mut state = State::<F> {
            pool,
            router: self,
            allowance,
            table,
            cache: HashMap::with_capacity(Hints::get(&self.hints.keys)),
            last: None,
            batches: Vec::with_capacity(Hints::get(&self.hints.tenants)),
            by_tenant: HashMap::with_capacity(Hints::get(&self.hints.tenants)),
            stats: SplitCounts::default(),
            seen: HashSet::with_capacity(Hints::get(&self.hints.families)),
            last_seen: None,
            size_hint: body.len(),
            tenants_hint: Hints::get(&self.hints.tenants).max(1),
            unmapped: Vec::new(),
            no_label: None,
        };
        // Bounded by `limits.max_metadata` (the walk counts them).
        let mut extras = Vec::new();
        format.walk(&index, &self.query, self.limits, |item| {
            match item {
                PushItem::Series(series) => state.series(series)?,
                PushItem::Extra(m) => extras.push(m),
            }
            Ok::<(), RouteError>(())
        })?;
        state.learn(families);
        Hints::set(&self.hints.tenants, state.batches.len());
        Hints::set(&self.hints.keys, state.cache.len());
        Hints::set(&self.hints.families, state.seen.len());
        let mut scratch = String::new();
        for m in extras {
            state.stats.received.metadata += 1;
            let mut routed = false;
            families.try_for_each_tenant(F::extra_family(&m), &mut scratch, |tenant| {
                // Metadata carries no organization of its own: it only
                // follows series, and only into tenants this sender may
                // write.
                if !allowance.allows(tenant) {
                    return Ok(());
                }
                let group = state.group_of(tenant)?;
                state.batches[group as usize].append_extra(&m);
                routed = true;
                Ok::<(), RouteError>(())
            })?;
            if !routed {
                if let Some(default) = self.default_tenant.as_ref().filter(|d| allowance.allows(d))
                {
                    let group = state.group(default)?;
                    state.batches[group as usize].append_extra(&m);
                    state.stats.metadata_defaulted += 1;
                } else {
                    state.stats.metadata_dropped += 1;
                }
            }
        }
        let batches = state
            .batches
            .into_iter()
            .map(|b| {
                let mut body = b.body;
                F::finish(&index, b.state, &mut body);
                Batch {
                    tenant: b.tenant,
                    body,
                    counts: b.counts,
                }
            })
            .collect();
        let mut stats = state.stats;
        // The policy is the same for every series of the request (a
        // default tenant outside the allowance counts as forbidden, not here).
        let defaulted = self.policy == UnmappedPolicy::Default;
        stats.unmapped = state
            .unmapped
            .into_iter()
            .filter(|(_, _, counts)| counts.series > 0)
            .map(|(key, reason, counts)| UnmappedKey {
                key: key.map(|k| Box::from(crate::signals::shortened_key(k))),
                reason,
                defaulted,
                counts,
            })
            .collect();
        Ok(Split { batches, stats })
    }
}

/// A tenant's batch while it is being built.
struct Building<F: Format> {
    tenant: TenantId,
    body: Vec<u8>,
    counts: Counts,
    state: F::Batch,
}

impl<F: Format> Building<F> {
    #[inline]
    fn append_extra(&mut self, extra: &F::Extra<'_>) {
        F::append_extra(&mut self.state, &mut self.body, extra);
        self.counts.metadata += 1;
    }
}

/// Per-request working state of [`Router::split`]. `'a` is the
/// request body's lifetime, `'t` the table snapshot's.
struct State<'a, 't, F: Format> {
    router: &'t Router,
    /// The organizations the sender may write.
    allowance: &'t Allowance,
    pool: &'t BufferPool,
    table: &'t Snapshot,
    /// Key → outcome, so each distinct namespace is resolved once per request.
    cache: HashMap<&'a str, Outcome>,
    /// The previous series' key and outcome: consecutive series usually share
    /// a namespace, and a byte compare is cheaper than a hash.
    last: Option<(&'a str, Outcome)>,
    batches: Vec<Building<F>>,
    by_tenant: HashMap<TenantId, u32>,
    stats: SplitCounts,
    /// Distinct (metric name, group) pairs of this request, to teach the
    /// [`FamilyIndex`]. A set rather than a sorted list: sorting would
    /// compare metric names thousands of times per request.
    seen: HashSet<(&'a str, u32)>,
    /// The last pair inserted into `seen`: runs of one metric skip the hash.
    last_seen: Option<(&'a str, u32)>,
    size_hint: usize,
    tenants_hint: usize,
    /// Keys whose series had no tenant, for [`SplitCounts::unmapped`]
    /// (at most [`MAX_UNMAPPED_KEYS`]): an entry is made when a key is
    /// resolved (once per request, as every key is) and its slot kept in
    /// the key's cached [`Outcome`], so counting a series is one index.
    unmapped: Vec<(Option<&'a str>, Unmapped, Counts)>,
    /// The outcome of series with no namespace (or tenant) label at all.
    no_label: Option<Outcome>,
}

impl<'a, 't, F: Format> State<'a, 't, F> {
    #[inline]
    fn series(&mut self, series: F::Series<'a>) -> Result<(), RouteError> {
        let counts = F::counts(&series);
        self.stats.received.add(&counts);
        let hit = F::key(&series);

        let outcome = match hit {
            None => match self.no_label {
                Some(o) => o,
                None => {
                    let o = self.unmapped_key(None, Unmapped::NoLabel);
                    self.no_label = Some(o);
                    o
                }
            },
            Some(hit) => match self.last {
                Some((key, outcome)) if crate::wire::same(key.as_bytes(), hit.value.as_bytes()) => {
                    outcome
                }
                _ => {
                    let outcome = match self.cache.get(hit.value) {
                        Some(&o) => o,
                        None => {
                            let o = self.resolve(hit.value, &series)?;
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
                let without = hit.filter(|_| self.router.remove_tenant_label);
                let b = &mut self.batches[group as usize];
                F::append_series(&mut b.state, &mut b.body, &series, without);
                group
            }
            Outcome::Forbidden => {
                self.forbidden(&counts);
                return Ok(());
            }
            Outcome::Unmapped(reason, slot) => match self.router.policy {
                UnmappedPolicy::Default => {
                    let group = match &self.router.default_tenant {
                        Some(default) => match self.admit(default, &series)? {
                            Outcome::Group(g) => g,
                            _ => {
                                self.forbidden(&counts);
                                return Ok(());
                            }
                        },
                        // `config` requires a default tenant for this policy.
                        None => {
                            return Err(RouteError::Rejected {
                                series: F::describe(&series),
                                reason: "no default tenant".into(),
                            })
                        }
                    };
                    self.stats.defaulted[reason.index()] += 1;
                    self.count_unmapped(slot, &counts);
                    let b = &mut self.batches[group as usize];
                    F::append_series(&mut b.state, &mut b.body, &series, None);
                    group
                }
                UnmappedPolicy::Drop => {
                    self.stats.dropped[reason.index()] += 1;
                    self.stats.dropped_samples += counts.samples + counts.histograms;
                    self.count_unmapped(slot, &counts);
                    return Ok(());
                }
                UnmappedPolicy::Reject => {
                    return Err(RouteError::Rejected {
                        series: F::describe(&series),
                        reason: self.explain(reason, hit.map(|h| h.value)),
                    })
                }
            },
        };
        self.batches[group as usize].counts.add(&counts);
        if let Some(name) = F::family(&series) {
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
    fn resolve(&mut self, key: &'a str, series: &F::Series<'a>) -> Result<Outcome, RouteError> {
        let table = self.table;
        Ok(match self.router.mode {
            // (Principal mode sends a request whole, without routing it.)
            RoutingMode::Namespace | RoutingMode::Principal => match table.get(key) {
                Some(Org::Tenant(t)) => self.admit(t, series)?,
                Some(Org::Invalid(_)) => self.unmapped_key(Some(key), Unmapped::InvalidTenant),
                None => self.unmapped_key(Some(key), Unmapped::NoOrganization),
            },
            RoutingMode::Label => {
                let id = if self.router.tenant_prefix.is_empty() {
                    TenantId::new(key)
                } else {
                    TenantId::new(&format!("{}{key}", self.router.tenant_prefix))
                };
                match id {
                    Ok(tenant) => self.admit(&tenant, series)?,
                    Err(e) => {
                        self.router.signals.invalid_tenant.increment(1);
                        log_invalid_tenant_label(key, &e);
                        self.unmapped_key(Some(key), Unmapped::InvalidTenant)
                    }
                }
            }
        })
    }

    /// The batch of `tenant` if the sender may write it; otherwise the
    /// request is refused (`auth.outside_allowance: reject`, naming the
    /// organization) or its series are dropped ([`Outcome::Forbidden`]).
    fn admit(&mut self, tenant: &TenantId, series: &F::Series<'_>) -> Result<Outcome, RouteError> {
        if let Some(&g) = self.by_tenant.get(tenant.as_str()) {
            return Ok(Outcome::Group(g));
        }
        if self.allowance.allows(tenant) {
            return Ok(Outcome::Group(self.group(tenant)?));
        }
        match self.router.outside {
            OutsideAllowance::Drop => Ok(Outcome::Forbidden),
            OutsideAllowance::Reject => Err(RouteError::Forbidden {
                tenant: tenant.to_string(),
                series: F::describe(series),
            }),
        }
    }

    /// The outcome of a key with no tenant, with an entry of its own in
    /// `unmapped` while there are fewer than [`MAX_UNMAPPED_KEYS`] (past
    /// that, only the totals count its series).
    fn unmapped_key(&mut self, key: Option<&'a str>, reason: Unmapped) -> Outcome {
        if self.unmapped.len() >= MAX_UNMAPPED_KEYS {
            return Outcome::Unmapped(reason, NO_SLOT);
        }
        self.unmapped.push((key, reason, Counts::default()));
        Outcome::Unmapped(reason, (self.unmapped.len() - 1) as u8)
    }

    /// Adds an unmapped series to its key's entry, if it has one.
    #[inline]
    fn count_unmapped(&mut self, slot: u8, counts: &Counts) {
        if let Some(entry) = self.unmapped.get_mut(slot as usize) {
            entry.2.add(counts);
        }
    }

    /// Counts a series dropped for being outside the sender's allowance.
    fn forbidden(&mut self, counts: &Counts) {
        self.stats.forbidden += 1;
        self.stats.forbidden_samples += counts.samples + counts.histograms;
    }

    /// [`State::group`] for a tenant known only by name (from the
    /// [`FamilyIndex`]); the ID is copied only when its batch is created.
    fn group_of(&mut self, tenant: &str) -> Result<u32, RouteError> {
        match self.by_tenant.get(tenant) {
            Some(&g) => Ok(g),
            None => match TenantId::new(tenant) {
                Ok(id) => self.group(&id),
                // The index only learns tenants of batches, which are valid.
                Err(e) => Err(RouteError::Rejected {
                    series: String::new(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// The batch index of `tenant`, creating the batch on first use.
    fn group(&mut self, tenant: &TenantId) -> Result<u32, RouteError> {
        if let Some(&g) = self.by_tenant.get(tenant.as_str()) {
            return Ok(g);
        }
        let max_tenants = self.router.limits.max_tenants;
        if self.batches.len() >= max_tenants {
            return Err(RouteError::TooManyTenants(max_tenants));
        }
        let g = self.batches.len() as u32;
        // Size batches from the input and the number of tenants the last
        // request had, a quarter over the even share, so they rarely grow
        // (each growth is a copy) and many tenants do not reserve many times
        // the input.
        let capacity = (self.size_hint / self.tenants_hint)
            .saturating_add(self.size_hint / self.tenants_hint / 4)
            .clamp(256, self.size_hint.max(256));
        self.batches.push(Building {
            tenant: tenant.clone(),
            body: self.pool.take(capacity),
            counts: Counts::default(),
            state: F::Batch::default(),
        });
        self.by_tenant.insert(tenant.clone(), g);
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
                .map(|&(name, g)| (name, batches[g as usize].tenant.as_str())),
        );
    }

    fn explain(&self, reason: Unmapped, key: Option<&str>) -> String {
        match (reason, key) {
            (Unmapped::NoLabel, _) => match self.router.mode {
                RoutingMode::Namespace | RoutingMode::Principal => "no namespace label".into(),
                RoutingMode::Label => "no tenant label".into(),
            },
            (Unmapped::NoOrganization, Some(ns)) => {
                format!("namespace {ns:?} has no organization")
            }
            (Unmapped::InvalidTenant, Some(k)) => {
                let id = match self.router.mode {
                    RoutingMode::Namespace | RoutingMode::Principal => match self.table.get(k) {
                        Some(Org::Invalid(e)) => return format!("namespace {k:?}: {e}"),
                        _ => k.to_string(),
                    },
                    RoutingMode::Label => format!("{}{k}", self.router.tenant_prefix),
                };
                let e = tenant::validate(&id).err().unwrap_or(InvalidTenant::Empty);
                format!("{id:?}: {e}")
            }
            (r, None) => r.as_str().into(),
        }
    }
}

/// Logs a label-mode tenant value that is not a valid tenant ID, at most
/// once a minute (the counter counts every one).
fn log_invalid_tenant_label(value: &str, error: &InvalidTenant) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if crate::telemetry::rate_limit(&LAST, std::time::Duration::from_secs(60)) {
        tracing::warn!(value = %value.escape_debug(), %error, "tenant label value is not a valid tenant ID; series is unmapped");
    }
}

#[cfg(test)]
mod tests;
