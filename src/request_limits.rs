//! The limits every push is walked against, and what they count: each
//! repeated item of a request is counted as the walk meets it, before
//! anything is kept or forwarded, so no input can make orgsplit build a list
//! longer than a limit. `config::Limits` (the operator's settings) makes
//! these; the walks of every format check them (`wire::WireError::TooMany`
//! past one).

/// Limits checked during the walk, as each item is met and before anything
/// is kept or forwarded: every repeated item of a request is counted, so no
/// input can make the walk (or whatever consumes its output) build a list
/// longer than a limit.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most labels one series (or exemplar) may carry.
    pub max_labels: usize,
    /// Most bytes of one label name or value.
    pub max_label_bytes: usize,
    /// Most series in one request.
    pub max_series: usize,
    /// Most metadata entries in one request.
    pub max_metadata: usize,
    /// Most samples in one request, float and histogram samples together.
    pub max_samples: usize,
    /// Most exemplars in one request.
    pub max_exemplars: usize,
    /// Most spans, buckets and custom values in one native histogram.
    pub max_buckets: usize,
    /// Most tenants one request is split into (each an upstream push of
    /// its own); checked by the router as it meets new tenants.
    pub max_tenants: usize,
    /// Most entries in a remote write 2.0 symbol table.
    pub max_symbols: usize,
    /// Longest remote write 2.0 symbol (a label name or value, help text,
    /// unit), in bytes.
    pub max_symbol_bytes: usize,
    /// Most streams in one Loki push.
    pub max_streams: usize,
    /// Most log entries in one Loki push.
    pub max_entries: usize,
    /// Longest log line, in bytes.
    pub max_line_bytes: usize,
    /// Longest stream label string (`{name="value", ...}`), in bytes.
    pub max_label_string_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_labels: 1024,
            max_label_bytes: 64 * 1024,
            max_series: 100_000,
            max_metadata: 100_000,
            max_samples: 2_000_000,
            max_exemplars: 100_000,
            max_buckets: 16_384,
            max_tenants: 20_000,
            max_symbols: 1_000_000,
            max_symbol_bytes: 64 * 1024,
            max_streams: 100_000,
            max_entries: 2_000_000,
            max_line_bytes: 256 * 1024,
            max_label_string_bytes: 64 * 1024,
        }
    }
}

/// A repeated item of a request that has a count limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedItem {
    Series,
    Metadata,
    Samples,
    Exemplars,
    /// Spans, buckets and custom values of one histogram.
    Buckets,
    /// Entries of a remote write 2.0 symbol table.
    Symbols,
    /// Streams of a Loki push.
    Streams,
    /// Log entries of a Loki push.
    Entries,
    /// OTLP resources (counted against `max_series`).
    Resources,
    /// OTLP instrumentation scopes (against `max_series`).
    Scopes,
    /// OTLP metrics (against `max_series`).
    Metrics,
    /// OTLP data points (against `max_samples`).
    DataPoints,
    /// OTLP log records (against `max_entries`).
    LogRecords,
    /// OTLP spans (against `max_samples`).
    Spans,
    /// OTLP span events and links (against `max_exemplars`).
    EventsAndLinks,
    /// Attributes of one OTLP resource, scope or item (against `max_labels`).
    Attributes,
}

impl LimitedItem {
    /// What the item is called in messages ("request has more than 10 ...").
    pub fn noun(self) -> &'static str {
        match self {
            LimitedItem::Series => "series",
            LimitedItem::Metadata => "metadata entries",
            LimitedItem::Samples => "samples",
            LimitedItem::Exemplars => "exemplars",
            LimitedItem::Buckets => "spans and buckets in one native histogram",
            LimitedItem::Symbols => "symbols",
            LimitedItem::Streams => "streams",
            LimitedItem::Entries => "log entries",
            LimitedItem::Resources => "resources",
            LimitedItem::Scopes => "instrumentation scopes",
            LimitedItem::Metrics => "metrics",
            LimitedItem::DataPoints => "data points",
            LimitedItem::LogRecords => "log records",
            LimitedItem::Spans => "spans",
            LimitedItem::EventsAndLinks => "span events and links",
            LimitedItem::Attributes => "attributes on one resource, scope or item",
        }
    }
}
