//! The page as HTML: one document, inline CSS and SVG, no script. maud
//! escapes every value, so a namespace or a name that came in a push
//! cannot become markup.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::activity::{TenantView, UnmappedView};
use crate::auth::GrantHolder;

use super::page::{OrganizationRow, PageData};

const STYLE: &str = "
:root{color-scheme:light dark;--muted:#6b7280;--line:#d1d5db;--bad:#b91c1c;--warn:#b45309;--ok:#047857}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;padding:12px;max-width:1400px}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:22px 0 6px}
header p,.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:8px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px}
.card b{display:block;font-size:18px}
.card span{overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;min-width:12em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:var(--bad)}.warn{color:var(--warn)}.ok{color:var(--ok)}
code{font-size:12px;overflow-wrap:anywhere}
svg{vertical-align:middle}
@media (max-width:640px){body{padding:6px}th,td{padding:3px 4px}}
";

/// The whole document.
pub fn render(data: &PageData, refresh: Duration) -> String {
    let a = &data.activity;
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(refresh.as_secs().max(1));
                title { "orgsplit: tenants" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "orgsplit: tenants" }
                    p {
                        "Last " (minutes(a.window_seconds)) ", as of " (time(data.generated_at))
                        "; reloads every " (refresh.as_secs().max(1)) " s. orgsplit " (data.version)
                        ". Same data as JSON: " a href="/ui/api/tenants" { "/ui/api/tenants" } "."
                    }
                }
                (summary(data))
                (unmapped(data))
                (organizations(data))
                (credentials(data))
            }
        }
    };
    doc.into_string()
}

fn summary(data: &PageData) -> Markup {
    let t = &data.table;
    let a = &data.activity;
    let rate = |signal: &str| {
        a.totals
            .received_per_second
            .iter()
            .find(|(s, _)| *s == signal)
            .map_or(0.0, |(_, r)| *r)
    };
    let defaulted: u64 = a.totals.series_defaulted.iter().map(|(_, n)| n).sum();
    let dropped: u64 = a.totals.series_dropped.iter().map(|(_, n)| n).sum();
    let failures: u64 = a.auth.failures_by_reason.iter().map(|(_, n)| n).sum();
    html! {
        section.cards id="summary" {
            div.card { "Organizations" b { (t.organizations) } span.muted { (t.namespaces) " namespaces" } }
            div.card {
                "Table"
                b class=(if t.synced { "ok" } else { "bad" }) { (if t.synced { "synced" } else { "not synced" }) }
                span.muted { (t.source) }
                @if let Some(at) = t.last_sync { br; span.muted title=(time(at)) { "last sync " (ago(data.generated_at, at)) } }
            }
            div.card { "Samples received" b { (per_second(rate("metrics"))) } span.muted { "lines " (per_second(rate("logs"))) ", spans " (per_second(rate("traces"))) } }
            div.card {
                "Series with no organization"
                b class=(if defaulted + dropped > 0 { "warn" } else { "ok" }) { (count(defaulted + dropped)) }
                span.muted { (count(defaulted)) " to the default tenant, " (count(dropped)) " dropped (routing.unmapped: " (data.routing.unmapped) ")" }
            }
            div.card {
                "Outside the sender's allowance"
                b class=(if a.totals.series_forbidden > 0 { "warn" } else { "ok" }) { (count(a.totals.series_forbidden)) }
                span.muted { "series dropped (auth.outside_allowance: " (data.routing.outside_allowance) ")" }
            }
            div.card {
                "Authentication failures"
                b class=(if failures > 0 { "warn" } else { "ok" }) { (count(failures)) " " (spark(&a.auth.trend)) }
            }
            @if a.totals.items_untracked > 0 {
                div.card { "Not tracked here" b.warn { (count(a.totals.items_untracked)) } span.muted { "items of organizations or namespaces past the page's bounds; the metrics count them" } }
            }
        }
    }
}

fn unmapped(data: &PageData) -> Markup {
    let a = &data.activity;
    html! {
        section id="unmapped" {
            h2 { "Namespaces with no organization" }
            @if a.unmapped.is_empty() {
                p.ok { "None in the last " (minutes(a.window_seconds)) ": every series and stream had an organization." }
            } @else {
                p.muted {
                    "Data from these namespaces had no organization. routing.unmapped is "
                    b { (data.routing.unmapped) }
                    @if let Some(t) = &data.routing.default_tenant { " (default tenant " code { (t) } ")" }
                    ". Give each namespace an organization to route it to its own tenant."
                    @if a.unmapped_total > a.unmapped.len() { " Showing " (a.unmapped.len()) " of " (a.unmapped_total) "." }
                }
                div.scroll { table {
                    thead { tr {
                        th { "Namespace" } th { "Why" } th { "Signal" } th { "What happened" }
                        th.n { "Series" } th.n { "Items/s" } th { "Trend" } th { "Last seen" }
                    } }
                    tbody { @for u in &a.unmapped { (unmapped_row(data, u)) } }
                } }
            }
        }
    }
}

fn unmapped_row(data: &PageData, u: &UnmappedView) -> Markup {
    let happened = match (u.items_defaulted, u.items_dropped) {
        (d, 0) => format!(
            "{} items to the default tenant {}",
            count(d),
            data.routing.default_tenant.as_deref().unwrap_or("")
        ),
        (0, x) => format!("{} items dropped", count(x)),
        (d, x) => format!("{} to the default tenant, {} dropped", count(d), count(x)),
    };
    html! {
        tr.unmapped {
            td { @match &u.key { Some(k) => code.namespace { (k) }, None => i { "(no namespace label)" } } }
            td { (u.reason) }
            td { (u.signal) }
            td class=(if u.items_dropped > 0 { "bad" } else { "warn" }) { (happened) }
            td.n { (count(u.series)) }
            td.n { (per_second(u.items_per_second)) }
            td { (spark(&u.trend)) }
            td title=(time(u.last_seen)) { (ago(data.generated_at, u.last_seen)) }
        }
    }
}

fn organizations(data: &PageData) -> Markup {
    html! {
        section id="organizations" {
            h2 { "Organizations" }
            p.muted {
                "Rates are what the upstream accepted. "
                @if data.organizations_total > data.organizations.len() {
                    "Showing the busiest " (data.organizations.len()) " of " (data.organizations_total) " (ui.top)."
                }
            }
            div.scroll { table {
                thead { tr {
                    th { "Organization" } th { "Namespaces" }
                    th.n { "Samples/s" } th.n { "Lines/s" } th.n { "Spans/s" } th.n title="decoded" { "Bytes/s" }
                    th { "Trend" } th.n { "Refused" } th { "Last accepted" } th { "Last upstream answer" }
                } }
                tbody { @for o in &data.organizations { (organization_row(data, o)) } }
            } }
        }
    }
}

fn organization_row(data: &PageData, o: &OrganizationRow) -> Markup {
    let now = data.generated_at;
    html! {
        tr.organization {
            td { code.org { (o.organization) } @if !o.in_table { br; span.muted { "not in the table" } } }
            td.wrap {
                @for (i, ns) in o.namespaces.iter().enumerate() { @if i > 0 { ", " } code.namespace { (ns) } }
                @if o.namespaces_total > o.namespaces.len() { " and " (o.namespaces_total - o.namespaces.len()) " more" }
            }
            @match &o.traffic {
                Some(t) => (traffic_cells(now, t)),
                None => td.muted colspan="8" { "nothing in the last 15 minutes" },
            }
        }
    }
}

fn traffic_cells(now: u64, t: &TenantView) -> Markup {
    let refused = t
        .refused
        .iter()
        .map(|(class, n)| format!("{n} {class}"))
        .collect::<Vec<_>>()
        .join(", ");
    let answer_class = match t.last_status.as_str() {
        "2xx" => "ok",
        "429" => "warn",
        _ => "bad",
    };
    html! {
        td.n.samples { (per_second(t.samples_per_second)) }
        td.n.lines { (per_second(t.lines_per_second)) }
        td.n.spans { (per_second(t.spans_per_second)) }
        td.n { (bytes(t.bytes_per_second)) }
        td { (spark(&t.trend)) }
        td.n class=(if t.refused_pushes > 0 { "bad" } else { "" }) title=(refused) {
            @if t.refused_pushes > 0 { (t.refused_pushes) " pushes (" (count(t.refused_items)) " items): " (refused) } @else { "0" }
        }
        td { @match t.last_accepted { Some(at) => span title=(time(at)) { (ago(now, at)) }, None => span.bad { "none" } } }
        td class=(answer_class) { (t.last_status) " in " (format!("{:.1}", t.last_latency_ms)) " ms, " (ago(now, t.last_push)) }
    }
}

fn credentials(data: &PageData) -> Markup {
    let c = &data.credentials;
    let a = &data.activity.auth;
    html! {
        section id="credentials" {
            h2 { "Credentials" }
            @if let Some(j) = &c.jwt {
                h3 { "Token keys" }
                p.muted {
                    (j.keys.len()) " keys"
                    @if !j.audience.is_empty() { "; audience " (j.audience.join(", ")) }
                    @if let Some(i) = &j.issuer { "; issuer " (i) }
                    @if let Some(f) = &j.revoked_file { "; " (j.revoked) " token IDs revoked in " code { (f) } }
                }
                div.scroll { table {
                    thead { tr { th { "kid" } th { "Algorithm" } th { "File" } th { "May grant" } } }
                    tbody { @for k in &j.keys { tr.key {
                        td { code { (k.kid) } } td { (k.algorithm) } td { code { (k.source) } }
                        td { @match &k.may_grant { Some(g) => (g), None => span.muted { "any (not capped)" } } }
                    } } }
                } }
            }
            @if let Some(f) = &c.users_file {
                h3 { "Users" }
                p.muted { code { (f) } }
                (holders(&c.users))
            }
            @if !c.certificate_principals.is_empty() {
                h3 { "Certificate principals" }
                (holders(&c.certificate_principals))
            }
            @if let Some(anon) = &c.anonymous {
                h3 { "Anonymous" }
                p { "Callers without a credential may write " code { (anon.writes) } " and read " code { (anon.reads) } "." }
            }
            h3 { "Authentication failures" }
            @if a.recent.is_empty() {
                p.ok { "None in the last 15 minutes." }
            } @else {
                p { @for (i, (reason, n)) in a.failures_by_reason.iter().enumerate() { @if i > 0 { ", " } b { (reason) } " " (n) } }
                div.scroll { table {
                    thead { tr { th { "When" } th { "Mode" } th { "Reason" } th { "Who" } } }
                    tbody { @for f in &a.recent { tr.failure {
                        td title=(time(f.at)) { (ago(data.generated_at, f.at)) } td { (f.mode) } td { (f.reason) }
                        td { @match &f.who { Some(w) => code { (w) }, None => span.muted { "unknown" } } }
                    } } }
                } }
            }
        }
    }
}

fn holders(list: &[GrantHolder]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Name" } th { "Writes" } th { "Reads" } th { "Rules" } } }
            tbody { @for h in list { tr {
                td { code { (h.name) } } td { code { (h.writes) } } td { code { (h.reads) } }
                td { (if h.rules { "yes" } else { "no" }) }
            } } }
        } }
    }
}

/// A small line chart of per-minute values, oldest first.
fn spark(values: &[u64]) -> Markup {
    const W: f64 = 90.0;
    const H: f64 = 18.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = W / (values.len().max(2) - 1) as f64;
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                H - 1.0 - (*v as f64 / max) * (H - 2.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        svg.spark width="90" height="18" viewBox="0 0 90 18" role="img" aria-label="per minute, last 15 minutes" {
            polyline points=(points) fill="none" stroke="currentColor" stroke-width="1.5" {}
        }
    }
}

fn per_second(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2} M/s", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k/s", x / 1e3),
        x if x >= 10.0 => format!("{x:.0}/s"),
        x if x > 0.0 => format!("{x:.2}/s"),
        _ => "0".into(),
    }
}

fn bytes(x: f64) -> String {
    match x {
        x if x >= (1 << 20) as f64 => format!("{:.1} MiB/s", x / (1 << 20) as f64),
        x if x >= 1024.0 => format!("{:.1} KiB/s", x / 1024.0),
        x if x > 0.0 => format!("{x:.0} B/s"),
        _ => "0".into(),
    }
}

fn count(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.0} M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn minutes(seconds: u64) -> String {
    if seconds >= 120 {
        format!("{} minutes", seconds / 60)
    } else {
        format!("{seconds} seconds")
    }
}

fn ago(now: u64, at: u64) -> String {
    let s = now.saturating_sub(at);
    match s {
        0..=1 => "just now".into(),
        2..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(per_second(0.0), "0");
        assert_eq!(per_second(0.5), "0.50/s");
        assert_eq!(per_second(1234.0), "1.2 k/s");
        assert_eq!(bytes(2048.0), "2.0 KiB/s");
        assert_eq!(ago(100, 40), "60 s ago");
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_sparkline_spans_its_box() {
        let svg = spark(&[0, 5, 10]).into_string();
        assert!(
            svg.contains("points=\"0.0,17.0 45.0,9.0 90.0,1.0\""),
            "{svg}"
        );
    }
}
