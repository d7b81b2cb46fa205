//! Prometheus metrics, kept apart from the logic that counts them.
//!
//! ```text
//!  Metrics::new ─► its own registry (no process-global recorder) ─► every
//!                  metric registered once, as handles
//!  stages ◄── TableSignals / RouteSignals / UpstreamSignals (handles)
//!  push handler ─► Metrics::split / forwarded / answered / rejected ...
//!  GET /metrics ─► Metrics::render
//! ```
//!
//! Each server instance owns its registry, so two servers in one process
//! (tests) count apart. Nothing here looks a metric up by name on the hot
//! path: handles are registered once; only the opt-in per-tenant counters
//! and rejection reasons are registered on first use.
//!
//! Every series that is not forwarded shows up here by reason, so that
//! nothing is lost silently. Label values are bounded: status codes, status
//! classes, reasons, and at most [`MAX_TENANT_LABELS`] tenant names.
//!
//! This module imports no stage: what it is told comes in the types of
//! [`crate::signals`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashbrown::HashMap;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::signals::{
    AuthSignals, Counts, RouteSignals, Signal, SplitCounts, TableSignals, Unmapped,
    UpstreamSignals, AUTH_MODES, AUTH_REASONS, DOWNGRADE_LOSSES, UPSTREAM_CLASSES,
};

/// How many signals the per-signal handles are kept for.
const SIGNALS: usize = Signal::ALL.len();

/// Most distinct `tenant` label values of the per-tenant counters; the
/// tenants seen after that are counted as `tenant="__other__"`.
pub const MAX_TENANT_LABELS: usize = 1000;

/// A server's metrics: its registry and the handles registered in it,
/// seen for one [`Signal`] (the `signal` label of the push metrics).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
    signal: Signal,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The push metrics, one set per [`Signal`].
    received: [CountHandles; SIGNALS],
    forwarded: [CountHandles; SIGNALS],
    defaulted: [[Counter; 3]; SIGNALS],
    dropped: [[Counter; 3]; SIGNALS],
    /// Series outside the sender's allowance (`auth.outside_allowance: drop`).
    forbidden: [Counter; SIGNALS],
    dropped_samples: [Counter; SIGNALS],
    metadata_dropped: Counter,
    metadata_defaulted: Counter,
    /// By signal and status label (see [`status_label`]), registered on first use.
    answered: Mutex<HashMap<(Signal, &'static str), Counter>>,
    duration: [Histogram; SIGNALS],
    /// By signal and reason, registered on first use (a fixed set of static strings).
    rejected: Mutex<HashMap<(Signal, &'static str), Counter>>,
    overloaded: Mutex<HashMap<(Signal, &'static str), Counter>>,
    inflight: Gauge,
    inflight_bytes: Gauge,
    connections_refused: Counter,
    family_pairs: Gauge,
    family_bytes: Gauge,
    family_rotations: Counter,
    per_tenant: Mutex<HashMap<(Signal, String), (Counter, Counter)>>,
    /// Read proxy requests by (route, status), registered on first use.
    read: Mutex<HashMap<(&'static str, &'static str), Counter>>,
    read_duration: Mutex<HashMap<&'static str, Histogram>>,
    /// Read requests refused before routing, by reason.
    read_refused: Mutex<HashMap<&'static str, Counter>>,
    table: TableSignals,
    route: RouteSignals,
    upstream: [UpstreamSignals; SIGNALS],
    auth: AuthSignals,
}

/// One counter per field of [`Counts`].
struct CountHandles {
    series: Counter,
    samples: Counter,
    histograms: Counter,
    exemplars: Counter,
    metadata: Counter,
}

impl CountHandles {
    fn add(&self, c: &Counts) {
        self.series.increment(c.series);
        self.samples.increment(c.samples);
        self.histograms.increment(c.histograms);
        self.exemplars.increment(c.exemplars);
        self.metadata.increment(c.metadata);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric described and registered.
    pub fn new() -> Self {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let r = Reg(&recorder);
        let counts = |what: &str, whom: &str| {
            let kinds = [
                ("series", "Series (logs: streams)"),
                ("samples", "Float samples (logs: entries)"),
                ("histograms", "Native histogram samples"),
                ("exemplars", "Exemplars"),
                ("metadata", "Metadata entries"),
            ];
            for (kind, noun) in kinds {
                r.describe_counter(
                    &format!("orgsplit_{what}_{kind}_total"),
                    &format!("{noun} {whom}, by signal."),
                );
            }
            Signal::ALL.map(|signal| {
                let c =
                    |kind: &str| r.signal_counter(&format!("orgsplit_{what}_{kind}_total"), signal);
                CountHandles {
                    series: c("series"),
                    samples: c("samples"),
                    histograms: c("histograms"),
                    exemplars: c("exemplars"),
                    metadata: c("metadata"),
                }
            })
        };
        let received = counts("received", "received");
        let forwarded = counts("forwarded", "accepted by the upstream (2xx)");
        let by_reason = |name: &str, help: &str| {
            r.describe_counter(name, help);
            Signal::ALL.map(|signal| {
                Unmapped::ALL.map(|u| {
                    r.labelled_counter_2(name, ("signal", signal.as_str()), ("reason", u.as_str()))
                })
            })
        };
        let defaulted = by_reason(
            "orgsplit_series_defaulted_total",
            "Series sent to the default tenant, by reason.",
        );
        let dropped = by_reason(
            "orgsplit_series_dropped_total",
            "Series dropped, by reason: the unmapped policy's reasons, or forbidden (outside the sender's allowance).",
        );
        r.describe_counter(
            "orgsplit_requests_total",
            "Push requests answered, by status code.",
        );
        r.describe_counter(
            "orgsplit_requests_rejected_total",
            "Requests rejected before forwarding, by reason.",
        );
        r.describe_counter(
            "orgsplit_requests_overloaded_total",
            "Pushes refused because too many requests or bytes were in flight.",
        );
        r.describe_counter(
            "orgsplit_tenant_series_total",
            "Series accepted by the upstream, per tenant (metrics.per_tenant).",
        );
        r.describe_counter(
            "orgsplit_tenant_samples_total",
            "Samples accepted by the upstream, per tenant (metrics.per_tenant).",
        );
        r.describe_counter(
            "orgsplit_upstream_requests_total",
            "Pushes to the upstream, by status class (2xx, 4xx, 429, 5xx, timeout, error).",
        );
        r.describe_histogram(
            "orgsplit_upstream_request_duration_seconds",
            "Duration of one upstream request (a tenant push, or several pushes' batches merged), by signal.",
        );
        r.describe_counter(
            "orgsplit_upstream_coalesced_batches_total",
            "Tenant batches that were sent merged with other pushes' batches for the same tenant.",
        );
        r.describe_counter(
            "orgsplit_upstream_downgraded_requests_total",
            "Remote write 2.0 tenant pushes converted to 1.0 for an upstream that does not take 2.0 (upstream.protocol).",
        );
        r.describe_counter(
            "orgsplit_downgrade_lost_total",
            "Items of remote write 2.0 pushes that 1.0 cannot carry, dropped when converting, by field.",
        );
        r.describe_counter(
            "orgsplit_upstream_unconfirmed_requests_total",
            "Remote write 2.0 tenant pushes (upstream.protocol: v2) the upstream answered 2xx without the written-count headers; the sender is told nothing of them was written.",
        );
        let upstream = Signal::ALL.map(|signal| {
            let s = ("signal", signal.as_str());
            UpstreamSignals {
                requests: UPSTREAM_CLASSES.map(|class| {
                    r.labelled_counter_2("orgsplit_upstream_requests_total", s, ("status", class))
                }),
                duration: r.signal_histogram("orgsplit_upstream_request_duration_seconds", signal),
                coalesced: r.signal_counter("orgsplit_upstream_coalesced_batches_total", signal),
                downgraded: r.signal_counter("orgsplit_upstream_downgraded_requests_total", signal),
                downgrade_lost: DOWNGRADE_LOSSES.map(|f| {
                    r.labelled_counter_2("orgsplit_downgrade_lost_total", s, ("field", f))
                }),
                unconfirmed: r
                    .signal_counter("orgsplit_upstream_unconfirmed_requests_total", signal),
            }
        });
        let table = TableSignals {
            namespaces: r.gauge("orgsplit_table_namespaces", "Namespaces in the org table."),
            last_sync: r.gauge(
                "orgsplit_table_last_sync_timestamp_seconds",
                "Unix time of the last successful org table load.",
            ),
            sync_errors: r.counter(
                "orgsplit_table_sync_errors_total",
                "Failed org table loads.",
            ),
            source_up: r.gauge(
                "orgsplit_table_source_up",
                "Whether the org table's source (file, Kubernetes API) answered last time.",
            ),
        };
        let route = RouteSignals {
            invalid_tenant: r.counter(
                "orgsplit_invalid_tenant_total",
                "Label-mode tenant values that are not valid tenant IDs.",
            ),
        };
        r.describe_counter(
            "orgsplit_read_requests_total",
            "Read proxy requests (queries, rules, alerts, logs), by route and status.",
        );
        recorder.describe_histogram(
            KeyName::from("orgsplit_read_request_duration_seconds"),
            Some(Unit::Seconds),
            "Read proxy requests: time until the upstream's response headers were passed on."
                .into(),
        );
        r.describe_counter(
            "orgsplit_read_refused_total",
            "Requests answered 404 and never proxied: paths that are not read routes, or that could mean another path upstream (dot segments, encoded separators, empty segments, control bytes), by reason.",
        );
        r.describe_counter(
            "orgsplit_auth_failures_total",
            "Requests refused with 401, by authentication mode and reason.",
        );
        let auth = AuthSignals {
            failures: AUTH_MODES
                .iter()
                .flat_map(|mode| {
                    AUTH_REASONS.iter().map(|reason| {
                        r.labelled_counter_2(
                            "orgsplit_auth_failures_total",
                            ("mode", mode),
                            ("reason", reason),
                        )
                    })
                })
                .collect(),
            reload_errors: r.counter(
                "orgsplit_auth_reload_errors_total",
                "Key, secret, users or client CA files that changed but could not be loaded (the last good version stays).",
            ),
        };
        let inner = Inner {
            received,
            forwarded,
            defaulted,
            forbidden: Signal::ALL.map(|signal| {
                r.labelled_counter_2(
                    "orgsplit_series_dropped_total",
                    ("signal", signal.as_str()),
                    ("reason", "forbidden"),
                )
            }),
            dropped,
            dropped_samples: {
                r.describe_counter(
                    "orgsplit_samples_dropped_total",
                    "Samples (logs: entries) in dropped series (by the unmapped policy, or outside the sender's allowance).",
                );
                Signal::ALL.map(|signal| r.signal_counter("orgsplit_samples_dropped_total", signal))
            },
            metadata_dropped: r.counter(
                "orgsplit_metadata_dropped_total",
                "Metadata entries whose family no tenant owns, with no default tenant.",
            ),
            metadata_defaulted: r.counter(
                "orgsplit_metadata_defaulted_total",
                "Metadata entries whose family no tenant owns (or whose owners were forgotten), sent to the default tenant.",
            ),
            answered: Mutex::default(),
            duration: {
                r.describe_histogram(
                    "orgsplit_request_duration_seconds",
                    "Time from receiving a push to answering it, by signal.",
                );
                Signal::ALL.map(|signal| r.signal_histogram("orgsplit_request_duration_seconds", signal))
            },
            rejected: Mutex::default(),
            overloaded: Mutex::default(),
            inflight: r.gauge("orgsplit_inflight_requests", "Push requests being handled."),
            inflight_bytes: r.gauge(
                "orgsplit_inflight_bytes",
                "Bytes of requests in flight charged to limits.max_inflight_bytes.",
            ),
            connections_refused: r.counter(
                "orgsplit_connections_refused_total",
                "Connections closed on accept because limits.max_connections was reached.",
            ),
            family_pairs: r.gauge(
                "orgsplit_family_index_pairs",
                "(metric family, tenant) pairs the metadata routing index holds.",
            ),
            family_bytes: r.gauge(
                "orgsplit_family_index_bytes",
                "Bytes of names the metadata routing index holds.",
            ),
            family_rotations: r.counter(
                "orgsplit_family_index_rotations_total",
                "Times the metadata routing index forgot its older half (it was full).",
            ),
            per_tenant: Mutex::default(),
            read: Mutex::default(),
            read_duration: Mutex::default(),
            read_refused: Mutex::default(),
            table,
            route,
            upstream,
            auth,
            recorder,
            handle,
        };
        Self {
            inner: Arc::new(inner),
            signal: Signal::Metrics,
        }
    }

    /// The same registry, counting pushes of `signal`.
    pub fn signal(&self, signal: Signal) -> Metrics {
        Metrics {
            inner: self.inner.clone(),
            signal,
        }
    }

    /// The page `/metrics` serves.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Folds recorded histogram values into their buckets. Run it every few
    /// seconds: without it, histograms keep every value until the next scrape.
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Handles for the org table and its feeds.
    pub fn table(&self) -> TableSignals {
        self.inner.table.clone()
    }

    /// Handles for the router.
    pub fn route(&self) -> RouteSignals {
        self.inner.route.clone()
    }

    /// Handles for authentication.
    pub fn auth(&self) -> AuthSignals {
        self.inner.auth.clone()
    }

    /// Handles for the forwarder of this signal's pushes.
    pub fn upstream(&self) -> UpstreamSignals {
        self.inner.upstream[self.signal as usize].clone()
    }

    /// Counts what a split request contained and what the policy did with it.
    pub fn split(&self, stats: &SplitCounts) {
        let m = &*self.inner;
        let s = self.signal as usize;
        m.received[s].add(&stats.received);
        for reason in Unmapped::ALL {
            let i = reason as usize;
            if stats.defaulted[i] > 0 {
                m.defaulted[s][i].increment(stats.defaulted[i]);
            }
            if stats.dropped[i] > 0 {
                m.dropped[s][i].increment(stats.dropped[i]);
            }
        }
        m.dropped_samples[s].increment(stats.dropped_samples);
        m.forbidden[s].increment(stats.forbidden);
        m.dropped_samples[s].increment(stats.forbidden_samples);
        m.metadata_dropped.increment(stats.metadata_dropped);
        m.metadata_defaulted.increment(stats.metadata_defaulted);
    }

    /// Counts what an upstream accepted for one tenant.
    pub fn forwarded(&self, counts: &Counts) {
        self.inner.forwarded[self.signal as usize].add(counts);
    }

    /// Per-tenant counters (`metrics.per_tenant`, opt-in): the first
    /// [`MAX_TENANT_LABELS`] tenants by name, the rest as `__other__`, so that
    /// label mode (where senders make up tenants) cannot grow the registry
    /// without bound.
    pub fn forwarded_tenant(&self, tenant: &str, counts: &Counts) {
        let mut map = lock(&self.inner.per_tenant);
        let signal = self.signal;
        let known = |t: &str| map.contains_key(&(signal, t.to_owned()));
        let key = if known(tenant) || map.len() < MAX_TENANT_LABELS {
            tenant
        } else {
            "__other__"
        };
        let key = (signal, key.to_owned());
        if !map.contains_key(&key) {
            let r = Reg(&self.inner.recorder);
            let s = ("signal", signal.as_str());
            let handles = (
                r.labelled_counter_2("orgsplit_tenant_series_total", s, ("tenant", &key.1)),
                r.labelled_counter_2("orgsplit_tenant_samples_total", s, ("tenant", &key.1)),
            );
            map.insert(key.clone(), handles);
        }
        if let Some((series, samples)) = map.get(&key) {
            series.increment(counts.series);
            samples.increment(counts.samples + counts.histograms);
        }
    }

    /// A read-proxy request on `route` was answered with `status` (its
    /// headers; the body may still be streaming) after `elapsed`.
    pub fn read(&self, route: &'static str, status: u16, elapsed: Duration) {
        let code = status_label(status);
        let r = Reg(&self.inner.recorder);
        lock(&self.inner.read)
            .entry((route, code))
            .or_insert_with(|| {
                let key = Key::from_parts(
                    "orgsplit_read_requests_total",
                    vec![Label::new("route", route), Label::new("code", code)],
                );
                r.0.register_counter(&key, &METADATA)
            })
            .increment(1);
        lock(&self.inner.read_duration)
            .entry(route)
            .or_insert_with(|| {
                let key = Key::from_parts(
                    "orgsplit_read_request_duration_seconds",
                    vec![Label::new("route", route)],
                );
                r.0.register_histogram(&key, &METADATA)
            })
            .record(elapsed.as_secs_f64());
    }

    /// A request that was neither a push nor served here was answered 404
    /// without being proxied, for `reason` (a fixed set of values).
    pub fn read_refused(&self, reason: &'static str) {
        lock(&self.inner.read_refused)
            .entry(reason)
            .or_insert_with(|| {
                let key = Key::from_parts(
                    "orgsplit_read_refused_total",
                    vec![Label::new("reason", reason)],
                );
                Reg(&self.inner.recorder)
                    .0
                    .register_counter(&key, &METADATA)
            })
            .increment(1);
    }

    /// A push was answered with `status` after `elapsed`.
    pub fn answered(&self, status: u16, elapsed: Duration) {
        self.labelled(
            &self.inner.answered,
            "orgsplit_requests_total",
            "code",
            status_label(status),
        )
        .increment(1);
        self.inner.duration[self.signal as usize].record(elapsed.as_secs_f64());
    }

    /// A push was refused before forwarding, for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.labelled(
            &self.inner.rejected,
            "orgsplit_requests_rejected_total",
            "reason",
            reason,
        )
        .increment(1);
    }

    /// A push was refused because too many `what` (requests, bytes) were in flight.
    pub fn overloaded(&self, what: &'static str) {
        self.labelled(
            &self.inner.overloaded,
            "orgsplit_requests_overloaded_total",
            "limit",
            what,
        )
        .increment(1);
    }

    /// A connection was closed on accept because `limits.max_connections` was reached.
    pub fn connection_refused(&self) {
        self.inner.connections_refused.increment(1);
    }

    /// Counts a push in `orgsplit_inflight_requests` while the guard lives.
    pub fn inflight(&self) -> Inflight {
        self.inner.inflight.increment(1.0);
        Inflight(self.inner.inflight.clone())
    }

    /// Gauges read at scrape time: bytes charged to the memory budget, and
    /// the metric-family index's size.
    pub fn at_scrape(&self, inflight_bytes: usize, family: crate::signals::FamilyIndexSize) {
        let m = &*self.inner;
        m.inflight_bytes.set(inflight_bytes as f64);
        m.family_pairs.set(family.pairs as f64);
        m.family_bytes.set(family.bytes as f64);
        m.family_rotations.absolute(family.rotations);
    }

    fn labelled(
        &self,
        map: &Mutex<HashMap<(Signal, &'static str), Counter>>,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Counter {
        let signal = self.signal;
        lock(map)
            .entry((signal, value))
            .or_insert_with(|| {
                Reg(&self.inner.recorder).labelled_counter_2(
                    name,
                    ("signal", signal.as_str()),
                    (label, value),
                )
            })
            .clone()
    }
}

/// Decrements `orgsplit_inflight_requests` when dropped.
pub struct Inflight(Gauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registration helpers over the recorder.
struct Reg<'r>(&'r PrometheusRecorder);

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Reg<'_> {
    fn describe_counter(&self, name: &str, help: &str) {
        self.0
            .describe_counter(KeyName::from(name.to_owned()), None, help.to_owned().into());
    }

    fn counter(&self, name: &str, help: &str) -> Counter {
        self.describe_counter(name, help);
        self.0
            .register_counter(&Key::from_name(name.to_owned()), &METADATA)
    }

    fn labelled_counter(&self, name: &str, label: &'static str, value: &str) -> Counter {
        let key = Key::from_parts(name.to_owned(), vec![Label::new(label, value.to_owned())]);
        self.0.register_counter(&key, &METADATA)
    }

    fn labelled_counter_2(
        &self,
        name: &str,
        (l1, v1): (&'static str, &str),
        (l2, v2): (&'static str, &str),
    ) -> Counter {
        let labels = vec![Label::new(l1, v1.to_owned()), Label::new(l2, v2.to_owned())];
        self.0
            .register_counter(&Key::from_parts(name.to_owned(), labels), &METADATA)
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.0
            .describe_gauge(KeyName::from(name.to_owned()), None, help.to_owned().into());
        self.0
            .register_gauge(&Key::from_name(name.to_owned()), &METADATA)
    }

    fn describe_histogram(&self, name: &str, help: &str) {
        self.0.describe_histogram(
            KeyName::from(name.to_owned()),
            Some(Unit::Seconds),
            help.to_owned().into(),
        );
    }

    /// A counter labelled with `signal` (described apart).
    fn signal_counter(&self, name: &str, signal: Signal) -> Counter {
        self.labelled_counter(name, "signal", signal.as_str())
    }

    /// A histogram labelled with `signal` (described apart).
    fn signal_histogram(&self, name: &str, signal: Signal) -> Histogram {
        let key = Key::from_parts(name.to_owned(), vec![Label::new("signal", signal.as_str())]);
        self.0.register_histogram(&key, &METADATA)
    }
}

/// Status codes as static strings, so the hot path does not format them.
#[allow(clippy::match_overlapping_arm)]
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        201..=299 => "2xx",
        402..=499 => "4xx",
        501..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_registries_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.rejected("unmapped");
        a.forwarded(&Counts {
            series: 3,
            ..Default::default()
        });
        assert!(a.render().contains(
            "orgsplit_requests_rejected_total{signal=\"metrics\",reason=\"unmapped\"} 1"
        ));
        assert!(a
            .render()
            .contains("orgsplit_forwarded_series_total{signal=\"metrics\"} 3"));
        assert!(!b.render().contains("orgsplit_requests_rejected_total{"));
        assert!(b
            .render()
            .contains("orgsplit_forwarded_series_total{signal=\"metrics\"} 0"));
    }

    #[test]
    fn signals_count_apart() {
        let m = Metrics::new();
        let one = Counts {
            series: 1,
            samples: 7,
            ..Default::default()
        };
        m.signal(Signal::Logs).forwarded(&one);
        m.signal(Signal::Logs).rejected("malformed");
        let page = m.render();
        assert!(
            page.contains("orgsplit_forwarded_samples_total{signal=\"logs\"} 7"),
            "{page}"
        );
        assert!(page.contains("orgsplit_forwarded_samples_total{signal=\"metrics\"} 0"));
        assert!(page
            .contains("orgsplit_requests_rejected_total{signal=\"logs\",reason=\"malformed\"} 1"));
    }

    #[test]
    fn tenant_labels_are_bounded() {
        let m = Metrics::new();
        let one = Counts {
            series: 1,
            samples: 1,
            ..Default::default()
        };
        for i in 0..MAX_TENANT_LABELS + 5 {
            m.forwarded_tenant(&format!("t{i}"), &one);
        }
        let page = m.render();
        assert!(page
            .contains("orgsplit_tenant_series_total{signal=\"metrics\",tenant=\"__other__\"} 5"));
        assert_eq!(
            page.matches("orgsplit_tenant_series_total{").count(),
            MAX_TENANT_LABELS + 1
        );
    }
}
