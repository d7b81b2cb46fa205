//! `orgsplit inspect`: how a captured push would be split, without sending
//! anything. Operators use it to debug routing.
//!
//! ```text
//!  capture (snappy or raw protobuf) ─► Pipeline::process (the server's own) ─► per-tenant table
//!                                   └► prost decode ─► Router::tenant_of ─► unmapped examples
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message;

use std::path::Path;

use crate::config::{Config, UnmappedPolicy};
use crate::formats::rw1::Rw1;
use crate::pipeline::{Pipeline, ProcessError};
use crate::route::{FamilyIndex, Router, Unmapped};
use crate::table::{self, OrgTable, Snapshot};
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

/// Reads the capture at `path` (`-`: standard input), loads the table as
/// the config says, and renders the split.
pub fn run(config: &Config, path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut capture = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut capture)?;
    } else {
        capture =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    }
    let snapshot = load_table_once(config)?;
    let router = Router::new(&config.routing, config.limits.wire());
    Ok(report(&router, &snapshot, &capture)?)
}

/// The table as it is now: the file, or one complete list of the
/// Namespaces (waiting at most 30 s for the API).
fn load_table_once(config: &Config) -> anyhow::Result<Snapshot> {
    if let Some(file) = &config.lookup.file {
        return Ok(table::file::load(file)?);
    }
    let Some(kube) = &config.lookup.kubernetes else {
        return Ok(Snapshot::default());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let table = OrgTable::new();
        table::kube::start(kube.clone(), table.clone()).await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !table.is_synced() {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the Kubernetes API did not list the namespaces within 30 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(std::sync::Arc::unwrap_or_clone(table.snapshot()))
    })
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
    // The server's own pipeline, on the capture as the server would get it.
    let snappy = if compressed {
        capture.to_vec()
    } else {
        snap::raw::Encoder::new()
            .compress_vec(&body)
            .map_err(|e| InspectError::Decode(e.to_string()))?
    };
    let pipeline = Pipeline::new(
        Rw1,
        router.clone(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    );
    let split = match pipeline.process(&snappy, table) {
        Ok(s) => s,
        Err(ProcessError::Route(e)) => {
            let _ = writeln!(out, "orgsplit would answer 400: {e}");
            return Ok(out);
        }
        Err(ProcessError::Decode(e)) => return Err(InspectError::Decode(e.to_string())),
    };
    let st = &split.stats;
    let r = &st.received;
    let _ = writeln!(
        out,
        "request: {} series, {} samples, {} histograms, {} exemplars, {} metadata\n",
        r.series, r.samples, r.histograms, r.exemplars, r.metadata
    );
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>9} {:>10} {:>9} {:>8}",
        "tenant", "series", "samples", "histograms", "exemplars", "metadata"
    );
    let mut batches: Vec<_> = split.outgoing.iter().collect();
    batches.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    for b in batches {
        let c = &b.counts;
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>9} {:>10} {:>9} {:>8}",
            b.tenant.as_str(),
            c.series,
            c.samples,
            c.histograms,
            c.exemplars,
            c.metadata
        );
    }

    // Why each unmapped series has no tenant, with examples.
    let decoded = pb::WriteRequest::decode(body.as_slice())
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    let mut unmapped: BTreeMap<&'static str, (u64, Vec<String>)> = BTreeMap::new();
    for series in &decoded.timeseries {
        let labels = series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()));
        if let Err(reason) = router.tenant_of(labels, table) {
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
