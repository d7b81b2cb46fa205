//! Prometheus metrics, kept apart from the logic that counts them.
//!
//! Every series that is not forwarded shows up here by reason, so that
//! nothing is lost silently. Label values are bounded: status codes, status
//! classes, reasons; no tenant or namespace names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::pipeline::Outgoing;
use crate::route::{Stats, Unmapped};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process) and returns the handle
/// that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then
            // this handle renders an empty page, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "orgsplit_requests_total",
        "Push requests answered, by status code."
    );
    describe_histogram!(
        "orgsplit_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a push to answering it."
    );
    describe_counter!("orgsplit_received_series_total", "Series received.");
    describe_counter!("orgsplit_received_samples_total", "Float samples received.");
    describe_counter!(
        "orgsplit_received_histograms_total",
        "Native histogram samples received."
    );
    describe_counter!("orgsplit_received_exemplars_total", "Exemplars received.");
    describe_counter!(
        "orgsplit_received_metadata_total",
        "Metadata entries received."
    );
    describe_counter!(
        "orgsplit_forwarded_series_total",
        "Series accepted by the upstream (2xx)."
    );
    describe_counter!(
        "orgsplit_forwarded_samples_total",
        "Float samples accepted by the upstream."
    );
    describe_counter!(
        "orgsplit_forwarded_histograms_total",
        "Native histogram samples accepted by the upstream."
    );
    describe_counter!(
        "orgsplit_forwarded_exemplars_total",
        "Exemplars accepted by the upstream."
    );
    describe_counter!(
        "orgsplit_forwarded_metadata_total",
        "Metadata entries accepted by the upstream."
    );
    describe_counter!(
        "orgsplit_tenant_series_total",
        "Series accepted by the upstream, per tenant (metrics.per_tenant)."
    );
    describe_counter!(
        "orgsplit_tenant_samples_total",
        "Samples accepted by the upstream, per tenant (metrics.per_tenant)."
    );
    describe_counter!(
        "orgsplit_requests_overloaded_total",
        "Pushes refused because too many requests or bytes were in flight."
    );
    describe_counter!(
        "orgsplit_series_defaulted_total",
        "Series sent to the default tenant, by reason."
    );
    describe_counter!(
        "orgsplit_series_dropped_total",
        "Series dropped by the unmapped policy, by reason."
    );
    describe_counter!(
        "orgsplit_samples_dropped_total",
        "Samples in series dropped by the unmapped policy."
    );
    describe_counter!(
        "orgsplit_requests_rejected_total",
        "Requests rejected before forwarding, by reason."
    );
    describe_counter!(
        "orgsplit_metadata_dropped_total",
        "Metadata entries whose family no tenant owns, with no default tenant."
    );
    describe_counter!(
        "orgsplit_metadata_defaulted_total",
        "Metadata entries whose family no tenant owns (or whose owners were forgotten), sent to the default tenant."
    );
    describe_gauge!(
        "orgsplit_family_index_pairs",
        "(metric family, tenant) pairs the metadata routing index holds."
    );
    describe_gauge!(
        "orgsplit_family_index_bytes",
        "Bytes of names the metadata routing index holds."
    );
    describe_counter!(
        "orgsplit_family_index_rotations_total",
        "Times the metadata routing index forgot its older half (it was full)."
    );
    describe_counter!(
        "orgsplit_upstream_requests_total",
        "Pushes to the upstream, by status class (2xx, 4xx, 429, 5xx, timeout, error)."
    );
    describe_histogram!(
        "orgsplit_upstream_request_duration_seconds",
        Unit::Seconds,
        "Duration of one tenant push to the upstream."
    );
    describe_gauge!("orgsplit_inflight_requests", "Push requests being handled.");
    describe_gauge!(
        "orgsplit_inflight_bytes",
        "Bytes of requests in flight charged to limits.max_inflight_bytes."
    );
    describe_counter!(
        "orgsplit_connections_refused_total",
        "Connections closed on accept because limits.max_connections was reached."
    );
    describe_gauge!("orgsplit_table_namespaces", "Namespaces in the org table.");
    describe_gauge!(
        "orgsplit_table_last_sync_timestamp_seconds",
        "Unix time of the last successful org table load."
    );
    describe_counter!(
        "orgsplit_table_sync_errors_total",
        "Failed org table loads."
    );
    describe_counter!(
        "orgsplit_invalid_tenant_total",
        "Label-mode tenant values that are not valid tenant IDs."
    );
}

pub fn table_synced(namespaces: usize, unix_seconds: u64) {
    gauge!("orgsplit_table_namespaces").set(namespaces as f64);
    gauge!("orgsplit_table_last_sync_timestamp_seconds").set(unix_seconds as f64);
}

/// Whether the table's source (file, Kubernetes API) answered last time.
pub fn table_source_up(up: bool) {
    gauge!("orgsplit_table_source_up").set(if up { 1.0 } else { 0.0 });
}

pub fn table_sync_error() {
    counter!("orgsplit_table_sync_errors_total").increment(1);
}

/// Counts a label-mode tenant value that is not a valid tenant ID, and logs it
/// at most once a minute.
pub fn invalid_tenant_label(value: &str, error: &crate::tenant::InvalidTenant) {
    counter!("orgsplit_invalid_tenant_total").increment(1);
    static LAST: AtomicU64 = AtomicU64::new(0);
    if rate_limit(&LAST, Duration::from_secs(60)) {
        tracing::warn!(value = %value.escape_debug(), %error, "tenant label value is not a valid tenant ID; series is unmapped");
    }
}

/// True at most once per `every`, process-wide for the given slot.
pub fn rate_limit(slot: &AtomicU64, every: Duration) -> bool {
    static START: OnceLock<Instant> = OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = slot.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < every.as_millis() as u64 {
        return false;
    }
    slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// Counts what a split request contained and what the policy did with it.
pub fn split(stats: &Stats) {
    counter!("orgsplit_received_series_total").increment(stats.series);
    counter!("orgsplit_received_samples_total").increment(stats.samples);
    counter!("orgsplit_received_histograms_total").increment(stats.histograms);
    counter!("orgsplit_received_exemplars_total").increment(stats.exemplars);
    counter!("orgsplit_received_metadata_total").increment(stats.metadata);
    for reason in Unmapped::ALL {
        let d = stats.defaulted(reason);
        if d > 0 {
            counter!("orgsplit_series_defaulted_total", "reason" => reason.as_str()).increment(d);
        }
        let d = stats.dropped(reason);
        if d > 0 {
            counter!("orgsplit_series_dropped_total", "reason" => reason.as_str()).increment(d);
        }
    }
    if stats.dropped_samples > 0 {
        counter!("orgsplit_samples_dropped_total").increment(stats.dropped_samples);
    }
    if stats.metadata_dropped > 0 {
        counter!("orgsplit_metadata_dropped_total").increment(stats.metadata_dropped);
    }
    if stats.metadata_defaulted > 0 {
        counter!("orgsplit_metadata_defaulted_total").increment(stats.metadata_defaulted);
    }
}

/// The metric-family index (metadata routing), read at scrape time.
pub fn family_index(stats: crate::route::family::FamilyStats) {
    gauge!("orgsplit_family_index_pairs").set(stats.pairs as f64);
    gauge!("orgsplit_family_index_bytes").set(stats.bytes as f64);
    counter!("orgsplit_family_index_rotations_total").absolute(stats.rotations);
}

/// Bytes charged to the memory budget now, read at scrape time.
pub fn inflight_bytes(bytes: usize) {
    gauge!("orgsplit_inflight_bytes").set(bytes as f64);
}

/// A connection closed on accept because `limits.max_connections` was reached.
pub fn connection_refused() {
    counter!("orgsplit_connections_refused_total").increment(1);
}

pub fn overloaded(what: &'static str) {
    counter!("orgsplit_requests_overloaded_total", "limit" => what).increment(1);
}

pub fn rejected(reason: &'static str) {
    counter!("orgsplit_requests_rejected_total", "reason" => reason).increment(1);
}

/// Counts what an upstream accepted.
pub fn forwarded(batch: &Outgoing) {
    counter!("orgsplit_forwarded_series_total").increment(batch.series);
    counter!("orgsplit_forwarded_samples_total").increment(batch.samples);
    counter!("orgsplit_forwarded_histograms_total").increment(batch.histograms);
    counter!("orgsplit_forwarded_exemplars_total").increment(batch.exemplars);
    counter!("orgsplit_forwarded_metadata_total").increment(batch.metadata);
}

/// Most distinct `tenant` label values of the per-tenant counters; the
/// tenants seen after that are counted as `tenant="__other__"`.
pub const MAX_TENANT_LABELS: usize = 1000;

/// Per-tenant counters (`metrics.per_tenant`, opt-in): the first
/// [`MAX_TENANT_LABELS`] tenants by name, the rest as `__other__`, so that
/// label mode (where senders make up tenants) cannot grow the registry
/// without bound.
pub fn forwarded_tenant(batch: &Outgoing) {
    static LABELLED: std::sync::LazyLock<std::sync::RwLock<hashbrown::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let known = LABELLED.read().is_ok_and(|set| set.contains(&batch.tenant));
    let tenant = if known {
        batch.tenant.clone()
    } else {
        let mut set = LABELLED.write().unwrap_or_else(|e| e.into_inner());
        if set.len() < MAX_TENANT_LABELS {
            set.insert(batch.tenant.clone());
            batch.tenant.clone()
        } else {
            "__other__".to_string()
        }
    };
    counter!("orgsplit_tenant_series_total", "tenant" => tenant.clone()).increment(batch.series);
    counter!("orgsplit_tenant_samples_total", "tenant" => tenant)
        .increment(batch.samples + batch.histograms);
}

pub fn upstream(class: &'static str, elapsed: Duration) {
    counter!("orgsplit_upstream_requests_total", "status" => class).increment(1);
    histogram!("orgsplit_upstream_request_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn answered(status: u16, elapsed: Duration) {
    counter!("orgsplit_requests_total", "code" => status_label(status)).increment(1);
    histogram!("orgsplit_request_duration_seconds").record(elapsed.as_secs_f64());
}

/// Counts a push in `orgsplit_inflight_requests` while it lives.
pub struct Inflight(());

impl Inflight {
    pub fn enter() -> Self {
        gauge!("orgsplit_inflight_requests").increment(1.0);
        Self(())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        gauge!("orgsplit_inflight_requests").decrement(1.0);
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
