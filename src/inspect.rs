//! `orgsplit inspect`: how a captured push would be split, without sending
//! anything. Operators use it to debug routing.
//!
//! ```text
//!  capture (snappy or raw protobuf) ─► Router::split ─► per-tenant table
//!                                   └► reference::tenant_of ─► unmapped examples
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message;

use crate::config::UnmappedPolicy;
use crate::route::{reference, FamilyIndex, Router, Unmapped};
use crate::table::Snapshot;
use crate::wire::pb;

/// Examples of unmapped series shown per reason.
const EXAMPLES: usize = 3;

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("capture is neither a snappy-compressed nor a raw WriteRequest: {0}")]
    Decode(String),
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
}

/// Renders the split of `capture` as text.
pub fn report(router: &Router, table: &Snapshot, capture: &[u8]) -> Result<String, InspectError> {
    let (body, compressed) = match snap::raw::Decoder::new().decompress_vec(capture) {
        Ok(b) if pb::WriteRequest::decode(b.as_slice()).is_ok() => (b, true),
        _ => match pb::WriteRequest::decode(capture) {
            Ok(_) => (capture.to_vec(), false),
            Err(e) => return Err(InspectError::Decode(e.to_string())),
        },
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capture: {} bytes{}, {} bytes decoded",
        capture.len(),
        if compressed {
            " (snappy)"
        } else {
            " (uncompressed)"
        },
        body.len()
    );
    let split = match router.split(&body, table, &FamilyIndex::default()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "orgsplit would answer 400: {e}");
            return Ok(out);
        }
    };
    let st = &split.stats;
    let _ = writeln!(
        out,
        "request: {} series, {} samples, {} histograms, {} exemplars, {} metadata\n",
        st.series, st.samples, st.histograms, st.exemplars, st.metadata
    );
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>9} {:>10} {:>9} {:>8}",
        "tenant", "series", "samples", "histograms", "exemplars", "metadata"
    );
    let mut batches: Vec<_> = split.batches.iter().collect();
    batches.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    for b in batches {
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>9} {:>10} {:>9} {:>8}",
            b.tenant, b.series, b.samples, b.histograms, b.exemplars, b.metadata
        );
    }

    // Why each unmapped series has no tenant, with examples.
    let decoded = pb::WriteRequest::decode(body.as_slice())
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    let mut unmapped: BTreeMap<&'static str, (u64, Vec<String>)> = BTreeMap::new();
    for series in &decoded.timeseries {
        if let Err(reason) = reference::tenant_of(router, series, table) {
            let entry = unmapped.entry(reason.as_str()).or_default();
            entry.0 += 1;
            if entry.1.len() < EXAMPLES {
                entry
                    .1
                    .push(crate::wire::describe_labels(&series.labels, 8));
            }
        }
    }
    if unmapped.is_empty() {
        let _ = writeln!(out, "\nevery series has a tenant");
    } else {
        let action = match router.policy() {
            UnmappedPolicy::Default => format!(
                "sent to default tenant {:?}",
                router.default_tenant().unwrap_or_default()
            ),
            UnmappedPolicy::Drop => "dropped (counted)".into(),
            UnmappedPolicy::Reject => "request rejected with 400".into(),
        };
        let _ = writeln!(out, "\nunmapped series: {action}");
        for (reason, (count, examples)) in unmapped {
            let _ = writeln!(out, "  {reason} ({}): {count} series", explain(reason));
            for e in examples {
                let _ = writeln!(out, "    e.g. {e}");
            }
        }
    }
    if st.metadata_dropped > 0 {
        let _ = writeln!(
            out,
            "\n{} metadata entries belong to no tenant's series and would be dropped",
            st.metadata_dropped
        );
    }
    Ok(out)
}

fn explain(reason: &str) -> &'static str {
    match reason {
        r if r == Unmapped::NoLabel.as_str() => "no namespace / tenant label",
        r if r == Unmapped::NoOrganization.as_str() => "namespace has no organization",
        _ => "organization is not a valid tenant ID",
    }
}
