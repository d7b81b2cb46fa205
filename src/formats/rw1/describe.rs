//! Remote write 1.0 as people read it: a short form of a series' labels
//! for error messages and `inspect`.

use super::pb;
use crate::wire::{read_key, read_len, skip_value, wt};

/// A short, human-readable form of a series' labels, for error messages
/// and `inspect`: `{__name__="up", job="x", +3 more}`.
pub fn describe_labels(labels: &[pb::Label], max: usize) -> String {
    let shown: Vec<String> = labels
        .iter()
        .take(max)
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    match labels.len().saturating_sub(max) {
        0 => format!("{{{}}}", shown.join(", ")),
        more => format!("{{{}, +{more} more}}", shown.join(", ")),
    }
}

/// [`describe_labels`] for an encoded (already validated) `TimeSeries`
/// body, reading its first `max` labels and nothing else.
pub fn describe_series_labels(series: &[u8], max: usize) -> String {
    use prost::Message;
    let mut labels = Vec::new();
    let mut more = 0;
    let mut pos = 0;
    while pos < series.len() {
        let Ok((field, wire_type)) = read_key(series, &mut pos, "TimeSeries") else {
            break;
        };
        if field == 1 && wire_type == wt::LEN {
            let Ok(label) = read_len(series, &mut pos, "label") else {
                break;
            };
            if labels.len() < max {
                labels.extend(pb::Label::decode(label));
            } else {
                more += 1;
            }
        } else if skip_value(series, &mut pos, wire_type, "TimeSeries", field).is_err() {
            break;
        }
    }
    let text = describe_labels(&labels, max);
    match more {
        0 => text,
        more => format!("{}, +{more} more}}", text.trim_end_matches('}')),
    }
}
