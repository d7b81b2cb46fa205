//! What the operator page ([`crate::ui`]) shows of the traffic, kept
//! bounded: per organization, the last 15 minutes of items, bytes, upstream
//! refusals and the last upstream answer; the keys (namespaces) whose data
//! had no organization; recent authentication failures.
//!
//! ```text
//!  push handler ─► Activity::request (one lock per request: its totals, its
//!                  unmapped keys if any, every tenant push of it)
//!  auth         ─► Activity::auth_failure
//!  ui           ─► Activity::view ─► ActivityView (serde; HTML and JSON alike)
//! ```
//!
//! Invariants:
//! - Memory is fixed by constants, not by input: at most [`MAX_TENANTS`]
//!   organizations and [`MAX_UNMAPPED`] unmapped keys are tracked, each with
//!   a ring of [`WINDOW_MINUTES`] one-minute slots; the last
//!   [`MAX_AUTH_EVENTS`] authentication failures. An organization or key
//!   that finds the table full is counted in an `others` total, and the
//!   ones not heard of for the whole window are forgotten (checked at most
//!   once a minute), so a burst of made-up keys neither grows memory nor
//!   hides the real ones for longer than the window.
//! - The push path takes one short lock per request (never per item or
//!   per tenant push); the org table is never locked.
//! - Like [`crate::metrics`], this module is told what happened and
//!   imports no stage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use serde::Serialize;

use crate::signals::{Counts, Signal, SplitCounts, Unmapped, AUTH_REASONS, UPSTREAM_CLASSES};

/// Minutes of history kept (and shown) per organization and key.
pub const WINDOW_MINUTES: usize = 15;
/// Most organizations tracked at once.
pub const MAX_TENANTS: usize = 1000;
/// Most unmapped keys (namespaces, tenant-label values) tracked at once.
pub const MAX_UNMAPPED: usize = 200;
/// Authentication failures kept, newest first.
pub const MAX_AUTH_EVENTS: usize = 50;

const SIGNALS: usize = Signal::ALL.len();

/// One tenant push, as the page counts it.
pub struct TenantPush<'a> {
    pub tenant: &'a str,
    pub counts: &'a Counts,
    /// The body's decoded bytes (the same measure for every format, and
    /// for bodies the forwarder compresses or merges).
    pub bytes: usize,
    /// The upstream's status, `None` when it gave none (timeout, unreachable).
    pub status: Option<u16>,
    /// One of [`UPSTREAM_CLASSES`].
    pub class: &'static str,
    /// From sending to the answer.
    pub took: Duration,
}

/// A ring of per-minute slots: slot `m % N` holds minute `m`; a slot
/// still holding an older minute reads as empty.
#[derive(Clone)]
struct Window<T: Copy + Default> {
    minutes: [u64; WINDOW_MINUTES],
    slots: [T; WINDOW_MINUTES],
}

impl<T: Copy + Default> Default for Window<T> {
    fn default() -> Self {
        Self {
            minutes: [u64::MAX; WINDOW_MINUTES],
            slots: [T::default(); WINDOW_MINUTES],
        }
    }
}

impl<T: Copy + Default> Window<T> {
    /// The slot of `minute`, emptied if it held an older one.
    fn at(&mut self, minute: u64) -> &mut T {
        let i = (minute % WINDOW_MINUTES as u64) as usize;
        if self.minutes[i] != minute {
            self.minutes[i] = minute;
            self.slots[i] = T::default();
        }
        &mut self.slots[i]
    }

    /// The last [`WINDOW_MINUTES`] minutes up to `minute`, oldest first.
    fn trend(&self, minute: u64) -> [T; WINDOW_MINUTES] {
        std::array::from_fn(|k| {
            let m = minute.saturating_sub((WINDOW_MINUTES - 1 - k) as u64);
            let i = (m % WINDOW_MINUTES as u64) as usize;
            if self.minutes[i] == m {
                self.slots[i]
            } else {
                T::default()
            }
        })
    }
}

/// One organization's minute.
#[derive(Clone, Copy, Default)]
struct TenantMinute {
    /// Items accepted upstream, by signal: samples (and histogram
    /// samples), log lines, spans.
    items: [u64; SIGNALS],
    bytes: u64,
    pushes: u32,
    /// Tenant pushes the upstream did not accept, by [`UPSTREAM_CLASSES`].
    refused: [u32; UPSTREAM_CLASSES.len()],
    refused_items: u64,
}

struct TenantActivity {
    window: Window<TenantMinute>,
    /// Unix seconds of the last accepted push (0: none in this process).
    last_accepted: u64,
    last_at: u64,
    last_status: Option<u16>,
    last_class: &'static str,
    last_took: Duration,
}

/// One unmapped key's minute.
#[derive(Clone, Copy, Default)]
struct UnmappedMinute {
    series: u64,
    defaulted_items: u64,
    dropped_items: u64,
}

struct UnmappedActivity {
    reason: Unmapped,
    signal: Signal,
    window: Window<UnmappedMinute>,
    last_at: u64,
}

/// Everything's minute.
#[derive(Clone, Copy, Default)]
struct TotalMinute {
    received: [u64; SIGNALS],
    defaulted: [u64; 3],
    dropped: [u64; 3],
    forbidden: u64,
    /// Items of organizations or keys that found their table full.
    others: u64,
}

#[derive(Default)]
struct Traffic {
    tenants: HashMap<Box<str>, TenantActivity>,
    unmapped: HashMap<Option<Box<str>>, UnmappedActivity>,
    totals: Window<TotalMinute>,
    /// The minute the tables were last swept for entries not heard of in
    /// the window.
    swept: u64,
}

#[derive(Default)]
struct AuthLog {
    recent: VecDeque<AuthFailureView>,
    /// Failures per minute, by [`AUTH_REASONS`] index.
    window: Window<[u32; AUTH_REASONS.len()]>,
}

/// The bounded record behind the operator page (see the module doc).
pub struct Activity {
    started: u64,
    traffic: Mutex<Traffic>,
    auth: Mutex<AuthLog>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Items as the page counts them: samples and histogram samples, log
/// lines, spans (what [`Counts::samples`] holds for logs and traces).
fn items(c: &Counts) -> u64 {
    c.samples + c.histograms
}

impl Activity {
    pub fn new() -> Self {
        Self::starting_at(unix_now())
    }

    /// A record whose process started at `unix_seconds` (tests).
    pub fn starting_at(unix_seconds: u64) -> Self {
        Self {
            started: unix_seconds,
            traffic: Mutex::new(Traffic::default()),
            auth: Mutex::new(AuthLog::default()),
        }
    }

    fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        // A panic while holding it leaves counters, never broken invariants.
        self.traffic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request: what it held and what the unmapped policy and
    /// the allowance did with it, and how each of its tenant pushes ended.
    /// One short lock for all of it.
    pub fn request<'a>(
        &self,
        signal: Signal,
        stats: &SplitCounts,
        pushes: impl IntoIterator<Item = TenantPush<'a>>,
    ) {
        let now = unix_now();
        let mut traffic = self.traffic();
        split(&mut traffic, now, signal, stats);
        tenant_pushes(&mut traffic, now, signal, pushes);
    }

    /// Records tenant pushes at `now` (unix seconds).
    pub fn pushes_at<'a>(
        &self,
        now: u64,
        signal: Signal,
        pushes: impl IntoIterator<Item = TenantPush<'a>>,
    ) {
        tenant_pushes(&mut self.traffic(), now, signal, pushes);
    }

    /// Records a request's [`SplitCounts`] at `now` (unix seconds).
    pub fn split_at(&self, now: u64, signal: Signal, stats: &SplitCounts) {
        split(&mut self.traffic(), now, signal, stats);
    }

    /// Records an authentication failure. `who` is a name the failure
    /// reveals safely (a known user, a certificate's name), never a token
    /// or a password.
    pub fn auth_failure(&self, mode: &'static str, reason: &'static str, who: Option<&str>) {
        self.auth_failure_at(unix_now(), mode, reason, who);
    }

    pub fn auth_failure_at(
        &self,
        now: u64,
        mode: &'static str,
        reason: &'static str,
        who: Option<&str>,
    ) {
        let mut log = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = AUTH_REASONS.iter().position(|r| *r == reason) {
            log.window.at(now / 60)[i] += 1;
        }
        if log.recent.len() >= MAX_AUTH_EVENTS {
            log.recent.pop_back();
        }
        log.recent.push_front(AuthFailureView {
            at: now,
            mode,
            reason,
            // Bounded, printable: it came with the request.
            who: who.map(|w| w.chars().take(64).filter(|c| !c.is_control()).collect()),
        });
    }

    /// What the page shows, now.
    pub fn view(&self, top: usize) -> ActivityView {
        self.view_at(unix_now(), top)
    }

    /// What the page shows at `now` (unix seconds): the `top` busiest
    /// organizations and unmapped keys, every rate over the window (or the
    /// time since start, if shorter).
    pub fn view_at(&self, now: u64, top: usize) -> ActivityView {
        let minute = now / 60;
        // The window: the full minutes before this one and this one so far.
        let span = ((WINDOW_MINUTES as u64 - 1) * 60 + now % 60)
            .min(now.saturating_sub(self.started))
            .max(1) as f64;
        let traffic = self.traffic();
        let mut tenants: Vec<TenantView> = traffic
            .tenants
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.last_at) < (WINDOW_MINUTES as u64) * 60)
            .map(|(name, a)| tenant_view(name, a, minute, span))
            .collect();
        let tenants_total = tenants.len();
        tenants.sort_by(|a, b| {
            b.items_total
                .cmp(&a.items_total)
                .then(b.refused_pushes.cmp(&a.refused_pushes))
                .then(a.tenant.cmp(&b.tenant))
        });
        tenants.truncate(top);
        let mut unmapped: Vec<UnmappedView> = traffic
            .unmapped
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.last_at) < (WINDOW_MINUTES as u64) * 60)
            .map(|(key, a)| {
                let trend = a.window.trend(minute);
                let series = trend.iter().map(|m| m.series).sum();
                let defaulted: u64 = trend.iter().map(|m| m.defaulted_items).sum();
                let dropped: u64 = trend.iter().map(|m| m.dropped_items).sum();
                UnmappedView {
                    key: key.as_deref().map(String::from),
                    reason: a.reason.as_str(),
                    signal: a.signal.as_str(),
                    series,
                    items_defaulted: defaulted,
                    items_dropped: dropped,
                    items_per_second: (defaulted + dropped) as f64 / span,
                    last_seen: a.last_at,
                    trend: trend
                        .iter()
                        .map(|m| m.defaulted_items + m.dropped_items)
                        .collect(),
                }
            })
            .collect();
        let unmapped_total = unmapped.len();
        unmapped.sort_by(|a, b| {
            (b.items_defaulted + b.items_dropped)
                .cmp(&(a.items_defaulted + a.items_dropped))
                .then(a.key.cmp(&b.key))
        });
        unmapped.truncate(top);
        let totals = traffic.totals.trend(minute);
        drop(traffic);
        let sum = |f: &dyn Fn(&TotalMinute) -> u64| totals.iter().map(f).sum::<u64>();
        let by_reason = |f: &dyn Fn(&TotalMinute, usize) -> u64| {
            Unmapped::ALL
                .iter()
                .map(|r| (r.as_str(), sum(&|m| f(m, r.index()))))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let totals = TotalsView {
            received_per_second: Signal::ALL
                .iter()
                .map(|s| (s.as_str(), sum(&|m| m.received[*s as usize]) as f64 / span))
                .collect(),
            series_defaulted: by_reason(&|m, i| m.defaulted[i]),
            series_dropped: by_reason(&|m, i| m.dropped[i]),
            series_forbidden: sum(&|m| m.forbidden),
            items_untracked: sum(&|m| m.others),
        };
        let log = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        let by_minute = log.window.trend(minute);
        let auth = AuthView {
            failures_by_reason: AUTH_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, by_minute.iter().map(|m| m[i] as u64).sum::<u64>()))
                .filter(|(_, n)| *n > 0)
                .collect(),
            trend: by_minute
                .iter()
                .map(|m| m.iter().map(|n| *n as u64).sum())
                .collect(),
            recent: log.recent.iter().cloned().collect(),
        };
        ActivityView {
            now,
            window_seconds: span as u64,
            tenants_total,
            tenants,
            unmapped_total,
            unmapped,
            totals,
            auth,
        }
    }
}

fn tenant_view(name: &str, a: &TenantActivity, minute: u64, span: f64) -> TenantView {
    let trend = a.window.trend(minute);
    let per_signal = |s: Signal| trend.iter().map(|m| m.items[s as usize]).sum::<u64>();
    let refused_by = |i: usize| trend.iter().map(|m| m.refused[i] as u64).sum::<u64>();
    let refused = UPSTREAM_CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, refused_by(i)))
        .filter(|(_, n)| *n > 0)
        .collect::<Vec<_>>();
    let items_total = Signal::ALL.iter().map(|s| per_signal(*s)).sum();
    TenantView {
        tenant: name.to_owned(),
        samples_per_second: per_signal(Signal::Metrics) as f64 / span,
        lines_per_second: per_signal(Signal::Logs) as f64 / span,
        spans_per_second: per_signal(Signal::Traces) as f64 / span,
        bytes_per_second: trend.iter().map(|m| m.bytes).sum::<u64>() as f64 / span,
        items_total,
        pushes: trend.iter().map(|m| m.pushes as u64).sum(),
        refused_pushes: refused.iter().map(|(_, n)| n).sum(),
        refused_items: trend.iter().map(|m| m.refused_items).sum(),
        refused,
        last_accepted: (a.last_accepted > 0).then_some(a.last_accepted),
        last_push: a.last_at,
        last_status: match a.last_status {
            Some(s) => s.to_string(),
            None => a.last_class.to_owned(),
        },
        last_latency_ms: a.last_took.as_secs_f64() * 1e3,
        trend: trend.iter().map(|m| m.items.iter().sum()).collect(),
    }
}

/// How each tenant push of a request ended (see [`Activity::request`]).
fn tenant_pushes<'a>(
    t: &mut Traffic,
    now: u64,
    signal: Signal,
    pushes: impl IntoIterator<Item = TenantPush<'a>>,
) {
    let minute = now / 60;
    for p in pushes {
        let accepted = p.class == "2xx";
        let n = items(p.counts);
        let entry = match t.tenants.get_mut(p.tenant) {
            Some(e) => e,
            None => {
                if t.tenants.len() >= MAX_TENANTS {
                    sweep(t, minute);
                }
                if t.tenants.len() >= MAX_TENANTS {
                    t.totals.at(minute).others += n;
                    continue;
                }
                t.tenants
                    .entry(Box::from(p.tenant))
                    .or_insert_with(|| TenantActivity {
                        window: Window::default(),
                        last_accepted: 0,
                        last_at: now,
                        last_status: None,
                        last_class: "",
                        last_took: Duration::ZERO,
                    })
            }
        };
        let slot = entry.window.at(minute);
        slot.pushes += 1;
        if accepted {
            slot.items[signal as usize] += n;
            slot.bytes += p.bytes as u64;
            entry.last_accepted = now;
        } else {
            let class = UPSTREAM_CLASSES
                .iter()
                .position(|c| *c == p.class)
                .unwrap_or(UPSTREAM_CLASSES.len() - 1);
            slot.refused[class] += 1;
            slot.refused_items += n;
        }
        entry.last_at = now;
        entry.last_status = p.status;
        entry.last_class = p.class;
        entry.last_took = p.took;
    }
}

/// What a request held, and what became of its unmapped series.
fn split(t: &mut Traffic, now: u64, signal: Signal, stats: &SplitCounts) {
    let minute = now / 60;
    let total = t.totals.at(minute);
    total.received[signal as usize] += items(&stats.received);
    for r in Unmapped::ALL {
        total.defaulted[r.index()] += stats.defaulted(r);
        total.dropped[r.index()] += stats.dropped(r);
    }
    total.forbidden += stats.forbidden;
    for u in &stats.unmapped {
        let n = items(&u.counts);
        let entry = match t.unmapped.get_mut(&u.key) {
            Some(e) => e,
            None => {
                if t.unmapped.len() >= MAX_UNMAPPED {
                    sweep(t, minute);
                }
                if t.unmapped.len() >= MAX_UNMAPPED {
                    t.totals.at(minute).others += n;
                    continue;
                }
                t.unmapped
                    .entry(u.key.clone())
                    .or_insert_with(|| UnmappedActivity {
                        reason: u.reason,
                        signal,
                        window: Window::default(),
                        last_at: now,
                    })
            }
        };
        entry.reason = u.reason;
        entry.signal = signal;
        entry.last_at = now;
        let slot = entry.window.at(minute);
        slot.series += u.counts.series;
        if u.defaulted {
            slot.defaulted_items += n;
        } else {
            slot.dropped_items += n;
        }
    }
}

/// Forgets organizations and keys not heard of for the whole window, at
/// most once a minute (the tables are full when this runs).
fn sweep(t: &mut Traffic, minute: u64) {
    if t.swept == minute {
        return;
    }
    t.swept = minute;
    let horizon = (minute + 1).saturating_sub(WINDOW_MINUTES as u64) * 60;
    t.tenants.retain(|_, a| a.last_at >= horizon);
    t.unmapped.retain(|_, a| a.last_at >= horizon);
}

/// The traffic part of the operator page.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityView {
    /// Unix seconds the view was taken at.
    pub now: u64,
    /// Seconds the rates are averaged over.
    pub window_seconds: u64,
    /// Organizations heard of in the window (`tenants` holds the busiest).
    pub tenants_total: usize,
    pub tenants: Vec<TenantView>,
    pub unmapped_total: usize,
    pub unmapped: Vec<UnmappedView>,
    pub totals: TotalsView,
    pub auth: AuthView,
}

/// One organization over the window.
#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub tenant: String,
    /// Accepted by the upstream, per second.
    pub samples_per_second: f64,
    pub lines_per_second: f64,
    pub spans_per_second: f64,
    /// Decoded bytes accepted by the upstream, per second.
    pub bytes_per_second: f64,
    /// Items accepted in the window, every signal.
    pub items_total: u64,
    /// Tenant pushes sent upstream in the window.
    pub pushes: u64,
    /// Of those, the ones the upstream did not accept.
    pub refused_pushes: u64,
    /// Items in them (the sender was told to retry, or of the refusal).
    pub refused_items: u64,
    /// Refused pushes by status class (4xx, 429, 5xx, timeout, error).
    pub refused: Vec<(&'static str, u64)>,
    /// Unix seconds of the last push the upstream accepted.
    pub last_accepted: Option<u64>,
    /// Unix seconds of the last push sent upstream.
    pub last_push: u64,
    /// The upstream's last answer: a status code, or `timeout` / `error`.
    pub last_status: String,
    pub last_latency_ms: f64,
    /// Items accepted per minute, oldest first.
    pub trend: Vec<u64>,
}

/// One key (namespace, or tenant-label value) whose data had no organization.
#[derive(Debug, Clone, Serialize)]
pub struct UnmappedView {
    /// `None`: series with no namespace label at all.
    pub key: Option<String>,
    /// `no_organization`, `invalid_tenant` or `no_label`.
    pub reason: &'static str,
    pub signal: &'static str,
    pub series: u64,
    /// Items sent to the default tenant (`routing.unmapped: default`).
    pub items_defaulted: u64,
    /// Items dropped (`routing.unmapped: drop`).
    pub items_dropped: u64,
    pub items_per_second: f64,
    pub last_seen: u64,
    pub trend: Vec<u64>,
}

/// Everything, over the window.
#[derive(Debug, Clone, Serialize)]
pub struct TotalsView {
    /// Items received per second, by signal.
    pub received_per_second: Vec<(&'static str, f64)>,
    /// Series sent to the default tenant, by reason.
    pub series_defaulted: Vec<(&'static str, u64)>,
    /// Series dropped by the unmapped policy, by reason.
    pub series_dropped: Vec<(&'static str, u64)>,
    /// Series of organizations outside their sender's allowance, dropped.
    pub series_forbidden: u64,
    /// Items of organizations or keys the page could not track (tables full).
    pub items_untracked: u64,
}

/// Authentication failures.
#[derive(Debug, Clone, Serialize)]
pub struct AuthView {
    /// In the window, by reason.
    pub failures_by_reason: Vec<(&'static str, u64)>,
    /// Failures per minute, oldest first.
    pub trend: Vec<u64>,
    /// The last [`MAX_AUTH_EVENTS`], newest first.
    pub recent: Vec<AuthFailureView>,
}

/// One authentication failure.
#[derive(Debug, Clone, Serialize)]
pub struct AuthFailureView {
    pub at: u64,
    pub mode: &'static str,
    pub reason: &'static str,
    /// A known user or a certificate name, when the failure reveals one.
    pub who: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::UnmappedKey;

    const T0: u64 = 1_800_000_000;

    fn counts(samples: u64) -> Counts {
        Counts {
            series: 1,
            samples,
            ..Default::default()
        }
    }

    fn push<'a>(tenant: &'a str, c: &'a Counts, class: &'static str) -> TenantPush<'a> {
        TenantPush {
            tenant,
            counts: c,
            bytes: 100,
            status: match class {
                "2xx" => Some(204),
                "5xx" => Some(503),
                _ => None,
            },
            class,
            took: Duration::from_millis(7),
        }
    }

    #[test]
    fn rates_are_per_organization_and_refusals_are_apart() {
        let a = Activity::starting_at(T0 - 3600);
        let c = counts(600);
        for m in 0..3 {
            a.pushes_at(
                T0 + m * 60,
                Signal::Metrics,
                [push("acme", &c, "2xx"), push("globex", &c, "5xx")],
            );
        }
        a.pushes_at(T0 + 150, Signal::Logs, [push("acme", &c, "2xx")]);
        let v = a.view_at(T0 + 150, 10);
        assert_eq!(v.tenants_total, 2);
        let acme = &v.tenants[0];
        assert_eq!(acme.tenant, "acme");
        assert_eq!(acme.items_total, 2400);
        let span = v.window_seconds as f64;
        assert!((acme.samples_per_second - 1800.0 / span).abs() < 1e-9);
        assert!((acme.lines_per_second - 600.0 / span).abs() < 1e-9);
        assert_eq!(acme.refused_pushes, 0);
        assert_eq!(acme.last_accepted, Some(T0 + 150));
        assert_eq!(acme.last_status, "204");
        let globex = &v.tenants[1];
        assert_eq!(globex.items_total, 0);
        assert_eq!(globex.refused_pushes, 3);
        assert_eq!(globex.refused_items, 1800);
        assert_eq!(globex.refused, vec![("5xx", 3)]);
        assert_eq!(globex.last_accepted, None);
        assert_eq!(globex.trend.len(), WINDOW_MINUTES);
        assert_eq!(globex.trend.iter().sum::<u64>(), 0);
        assert_eq!(acme.trend.iter().sum::<u64>(), 2400);
    }

    #[test]
    fn old_minutes_leave_the_window() {
        let a = Activity::starting_at(T0 - 3600);
        let c = counts(100);
        a.pushes_at(T0, Signal::Metrics, [push("acme", &c, "2xx")]);
        let later = T0 + 14 * 60;
        a.pushes_at(later, Signal::Metrics, [push("acme", &c, "2xx")]);
        assert_eq!(a.view_at(later, 10).tenants[0].items_total, 200);
        // 15 minutes on, the first minute is out of the window.
        assert_eq!(a.view_at(T0 + 15 * 60, 10).tenants[0].items_total, 100);
        // Nothing heard for the window: not shown.
        assert_eq!(a.view_at(later + 15 * 60, 10).tenants_total, 0);
    }

    #[test]
    fn tables_are_bounded_and_forget_what_went_quiet() {
        let a = Activity::starting_at(T0 - 3600);
        let c = counts(1);
        let names: Vec<String> = (0..MAX_TENANTS + 10).map(|i| format!("t{i}")).collect();
        a.pushes_at(
            T0,
            Signal::Metrics,
            names.iter().map(|n| push(n, &c, "2xx")),
        );
        let v = a.view_at(T0, usize::MAX);
        assert_eq!(v.tenants_total, MAX_TENANTS);
        assert_eq!(v.totals.items_untracked, 10);
        // Twenty minutes later a new organization finds the old ones swept.
        a.pushes_at(T0 + 1200, Signal::Metrics, [push("fresh", &c, "2xx")]);
        let v = a.view_at(T0 + 1200, usize::MAX);
        assert_eq!(v.tenants_total, 1);
        assert_eq!(v.tenants[0].tenant, "fresh");
        assert_eq!(a.traffic().tenants.len(), 1);
    }

    #[test]
    fn unmapped_keys_show_what_the_policy_did() {
        let a = Activity::starting_at(T0 - 3600);
        let key = |k: Option<&str>, defaulted, samples| UnmappedKey {
            key: k.map(Box::from),
            reason: if k.is_some() {
                Unmapped::NoOrganization
            } else {
                Unmapped::NoLabel
            },
            defaulted,
            counts: counts(samples),
        };
        let stats = SplitCounts {
            received: counts(90),
            dropped: [1, 2, 0],
            unmapped: vec![key(Some("orphan"), false, 30), key(None, false, 10)],
            ..Default::default()
        };
        a.split_at(T0, Signal::Metrics, &stats);
        let stats = SplitCounts {
            unmapped: vec![key(Some("orphan"), true, 5)],
            defaulted: [0, 1, 0],
            ..Default::default()
        };
        a.split_at(T0 + 1, Signal::Metrics, &stats);
        let v = a.view_at(T0 + 1, 10);
        assert_eq!(v.unmapped_total, 2);
        let orphan = &v.unmapped[0];
        assert_eq!(orphan.key.as_deref(), Some("orphan"));
        assert_eq!(orphan.reason, "no_organization");
        assert_eq!((orphan.items_dropped, orphan.items_defaulted), (30, 5));
        assert_eq!(orphan.series, 2);
        assert_eq!(v.unmapped[1].key, None);
        assert_eq!(
            v.totals.series_dropped,
            vec![("no_label", 1), ("no_organization", 2)]
        );
        assert_eq!(v.totals.series_defaulted, vec![("no_organization", 1)]);
    }

    #[test]
    fn unmapped_keys_are_bounded_and_the_rest_counted() {
        let a = Activity::starting_at(T0 - 3600);
        let stats = SplitCounts {
            unmapped: (0..MAX_UNMAPPED + 5)
                .map(|i| UnmappedKey {
                    key: Some(format!("stray-{i}").into()),
                    reason: Unmapped::NoOrganization,
                    defaulted: false,
                    counts: counts(3),
                })
                .collect(),
            ..Default::default()
        };
        a.split_at(T0, Signal::Logs, &stats);
        let v = a.view_at(T0, usize::MAX);
        assert_eq!(v.unmapped_total, MAX_UNMAPPED);
        assert_eq!(v.totals.items_untracked, 15);
        // A key already tracked keeps counting when the record is full.
        a.split_at(T0 + 1, Signal::Logs, &stats);
        let v = a.view_at(T0 + 1, usize::MAX);
        let first = v
            .unmapped
            .iter()
            .find(|u| u.key.as_deref() == Some("stray-0"))
            .unwrap();
        assert_eq!(first.items_dropped, 6);
        assert_eq!(v.totals.items_untracked, 30);
    }

    #[test]
    fn auth_failures_keep_the_last_few_and_count_all() {
        let a = Activity::starting_at(T0 - 3600);
        for i in 0..(MAX_AUTH_EVENTS as u64 + 5) {
            a.auth_failure_at(T0 + i, "jwt", "expired", None);
        }
        a.auth_failure_at(T0 + 100, "basic", "bad_password", Some("alice\u{1b}[31m"));
        let v = a.view_at(T0 + 100, 10).auth;
        assert_eq!(v.recent.len(), MAX_AUTH_EVENTS);
        assert_eq!(v.recent[0].reason, "bad_password");
        assert_eq!(v.recent[0].who.as_deref(), Some("alice[31m"));
        assert_eq!(
            v.failures_by_reason,
            vec![("expired", MAX_AUTH_EVENTS as u64 + 5), ("bad_password", 1)]
        );
        // A name is kept to 64 characters.
        a.auth_failure_at(
            T0 + 101,
            "mtls",
            "unknown_principal",
            Some(&"n".repeat(500)),
        );
        let v = a.view_at(T0 + 101, 10).auth;
        assert_eq!(v.recent[0].who.as_deref().map(str::len), Some(64));
    }
}
