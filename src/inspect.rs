//! `orgsplit inspect`: how a captured push would be split, without sending
//! anything. Operators use it to debug routing.
//!
//! ```text
//!  capture (snappy or raw protobuf, remote write 1.0 or 2.0) ─► Pipeline::process (the server's own) ─► per-tenant table
//!                                   └► prost decode ─► Router::tenant_of ─► unmapped examples
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost::Message;

use std::path::Path;

use crate::config::{Config, UnmappedPolicy};
use crate::formats::rw1::pb;
use crate::formats::rw1::Rw1;
use crate::formats::rw2::{pb as v2, Rw2};
use crate::pipeline::{Pipeline, ProcessError};
use crate::route::{FamilyIndex, Router, Unmapped};
use crate::table::{self, OrgTable, Snapshot};

/// Examples of unmapped series shown per reason.
const EXAMPLES: usize = 3;

/// Errors reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "capture is neither a snappy-compressed nor a raw remote write request (1.0 or 2.0): {0}"
    )]
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
    let attributes = Router::new(&config.attribute_routing(), config.limits.wire());
    if let Some(report) = otlp_report(&attributes, &snapshot, &capture) {
        return Ok(report);
    }
    let router = Router::new(&config.routing, config.limits.wire());
    Ok(report(&router, &snapshot, &capture)?)
}

/// An OTLP capture (protobuf or JSON, plain or gzip; metrics, logs or
/// traces, tried in that order), split by the server's own pipeline with
/// `router` (the attribute router). `None` when it is not one.
pub fn otlp_report(router: &Router, table: &Snapshot, capture: &[u8]) -> Option<String> {
    use crate::formats::otlp::{json::OtlpJson, kind_of, OtlpProto, OtlpSignal};
    use crate::pipeline::Codec;
    let gzip = capture.starts_with(&[0x1f, 0x8b]);
    let codec = if gzip { Codec::Gzip } else { Codec::Identity };
    let plain = if gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(capture), &mut out).ok()?;
        out
    } else {
        capture.to_vec()
    };
    let json = plain.first() == Some(&b'{');
    for signal in [OtlpSignal::Metrics, OtlpSignal::Logs, OtlpSignal::Traces] {
        let processed = if json {
            pipeline(OtlpJson(signal), router)
                .with_codec(codec)
                .process(capture, table)
        } else {
            pipeline(OtlpProto(signal), router)
                .with_codec(codec)
                .process(capture, table)
        };
        let split = match processed {
            Ok(split) => split,
            // Well-formed, but refused as a whole (the reject policy, too
            // many tenants).
            Err(ProcessError::Route(e)) if !matches!(e, crate::route::RouteError::Wire(_)) => {
                return Some(format!(
                    "capture: {} bytes, {}\norgsplit would answer 400: {e}\n",
                    capture.len(),
                    kind_of(signal, json, gzip).name
                ));
            }
            Err(_) => continue,
        };
        let st = &split.stats;
        if st.received.series == 0 {
            continue;
        }
        let noun = signal.item_noun();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "capture: {} bytes, {} bytes decoded, {}",
            capture.len(),
            plain.len(),
            kind_of(signal, json, gzip).name
        );
        let items = |c: &crate::signals::Counts| c.samples + c.histograms;
        let _ = writeln!(out, "request: {} {noun}s\n", items(&st.received));
        let _ = writeln!(out, "{:<40} {:>12}", "tenant", format!("{noun}s"));
        let mut batches: Vec<_> = split.outgoing.iter().collect();
        batches.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        for b in batches {
            let _ = writeln!(out, "{:<40} {:>12}", b.tenant.as_str(), items(&b.counts));
        }
        let mut any = false;
        for reason in Unmapped::ALL {
            let (defaulted, dropped) = (st.defaulted(reason), st.dropped(reason));
            if defaulted + dropped == 0 {
                continue;
            }
            if !any {
                let _ = writeln!(out, "\nunmapped ({:?} policy):", router.policy());
                any = true;
            }
            let _ = writeln!(
                out,
                "  {} ({}): {} resources or {noun}s {}",
                reason.as_str(),
                explain(reason.as_str()),
                defaulted + dropped,
                if dropped > 0 {
                    "dropped"
                } else {
                    "sent to the default tenant"
                }
            );
        }
        if !any {
            let _ = writeln!(out, "\nevery {noun} has a tenant");
        }
        return Some(out);
    }
    None
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

/// Renders the split of `capture` (remote write 1.0 or 2.0) as text.
pub fn report(router: &Router, table: &Snapshot, capture: &[u8]) -> Result<String, InspectError> {
    if let Some(report) = loki_report(router, table, capture)? {
        return Ok(report);
    }
    let decompressed = snap::raw::Decoder::new().decompress_vec(capture).ok();
    let (body, compressed, version) =
        match decompressed
            .as_deref()
            .and_then(version)
            .map(|v| (decompressed.clone().unwrap_or_default(), true, v))
        {
            Some(found) => found,
            None => match version(capture) {
                Some(v) => (capture.to_vec(), false, v),
                None => return Err(InspectError::Decode(
                    "no series or metadata of remote write 1.0 or 2.0, and no Loki streams, in it"
                        .into(),
                )),
            },
        };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capture: {} bytes{}, {} bytes decoded, remote write {}",
        capture.len(),
        if compressed {
            " (snappy)"
        } else {
            " (uncompressed)"
        },
        body.len(),
        match version {
            Version::V1 => "1.0",
            Version::V2 => "2.0",
        }
    );
    // The server's own pipeline, on the capture as the server would get it.
    let snappy = if compressed {
        capture.to_vec()
    } else {
        snap::raw::Encoder::new()
            .compress_vec(&body)
            .map_err(|e| InspectError::Decode(e.to_string()))?
    };
    let processed = match version {
        Version::V1 => pipeline(Rw1, router).process(&snappy, table),
        Version::V2 => pipeline(Rw2, router).process(&snappy, table),
    };
    let split = match processed {
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
    let mut unmapped: BTreeMap<&'static str, (u64, Vec<String>)> = BTreeMap::new();
    for labels in series_labels(&body, version)? {
        let pairs = labels.iter().map(|l| (l.name.as_str(), l.value.as_str()));
        if let Err(reason) = router.tenant_of(pairs, table) {
            let entry = unmapped.entry(reason.as_str()).or_default();
            entry.0 += 1;
            if entry.1.len() < EXAMPLES {
                entry
                    .1
                    .push(crate::formats::rw1::describe_labels(&labels, 8));
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

/// A Loki push capture: protobuf (snappy, or snappy inside gzip) or JSON
/// (plain or gzip), reported like a remote write one. `None` when it is
/// not one.
fn loki_report(
    router: &Router,
    table: &Snapshot,
    capture: &[u8],
) -> Result<Option<String>, InspectError> {
    use crate::formats::loki::{labels, pb as lp, LokiJson, LokiProto};
    use crate::pipeline::Codec;
    // Every gzip member, as the server reads protobuf inside gzip (a JSON
    // body is then run through the pipeline, which holds its own rule).
    let gunzipped = || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(capture), &mut out)
            .ok()
            .map(|_| out)
    };
    let json_streams = |body: &[u8]| -> Option<Vec<serde_json::Value>> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("streams")?.as_array().cloned()
    };
    // (what it is, the decoded body, each stream's label text and labels)
    type Streams = Vec<(String, Vec<(String, String)>)>;
    let (kind, decoded, streams): (&str, Vec<u8>, Streams) = if capture.starts_with(&[0x1f, 0x8b]) {
        let Some(body) = gunzipped() else {
            return Ok(None);
        };
        let Some(list) = json_streams(&body) else {
            // Loki also reads snappy protobuf inside gzip, and so does the
            // server (which forwards it as plain snappy). One layer only:
            // the body is neither gzip nor JSON, so the inner report can
            // only be that of a protobuf push.
            if body.starts_with(&[0x1f, 0x8b]) {
                return Ok(None);
            }
            return Ok(loki_report(router, table, &body)?.map(|r| {
                format!(
                    "capture: {} bytes of gzip around {}",
                    capture.len(),
                    r.trim_start_matches("capture: ")
                )
            }));
        };
        ("Loki JSON (gzip)", body, json_labels(&list))
    } else if let Some(list) = json_streams(capture) {
        ("Loki JSON", capture.to_vec(), json_labels(&list))
    } else {
        let Ok(body) = snap::raw::Decoder::new().decompress_vec(capture) else {
            return Ok(None);
        };
        match lp::PushRequest::decode(body.as_slice()) {
            Ok(r) if r.streams.first().is_some_and(|s| s.labels.contains('{')) => {
                let query = crate::wire::LabelQuery::new(router.query_names());
                let streams = r
                    .streams
                    .iter()
                    .map(|s| {
                        let found = labels::scan(&s.labels, &query, usize::MAX)
                            .ok()
                            .and_then(|scan| scan.best)
                            .map(|f| (router.query_names()[f.rank].clone(), f.value.into_owned()));
                        (s.labels.clone(), found.into_iter().collect())
                    })
                    .collect();
                ("Loki protobuf (snappy)", body, streams)
            }
            _ => return Ok(None),
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capture: {} bytes, {} bytes decoded, {kind}",
        capture.len(),
        decoded.len()
    );
    let processed = if kind.starts_with("Loki protobuf") {
        pipeline(LokiProto, router).process(capture, table)
    } else if kind.ends_with("(gzip)") {
        pipeline(LokiJson, router)
            .with_codec(Codec::Gzip)
            .process(capture, table)
    } else {
        pipeline(LokiJson, router)
            .with_codec(Codec::Identity)
            .process(capture, table)
    };
    let split = match processed {
        Ok(s) => s,
        Err(ProcessError::Route(e)) => {
            let _ = writeln!(out, "orgsplit would answer 400: {e}");
            return Ok(Some(out));
        }
        Err(ProcessError::Decode(e)) => return Err(InspectError::Decode(e.to_string())),
    };
    let r = &split.stats.received;
    let _ = writeln!(out, "push: {} streams, {} entries\n", r.series, r.samples);
    let _ = writeln!(out, "{:<40} {:>8} {:>9}", "tenant", "streams", "entries");
    let mut batches: Vec<_> = split.outgoing.iter().collect();
    batches.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    for b in batches {
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>9}",
            b.tenant.as_str(),
            b.counts.series,
            b.counts.samples
        );
    }
    let mut unmapped: BTreeMap<&'static str, (u64, Vec<String>)> = BTreeMap::new();
    for (text, pairs) in &streams {
        let pairs = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        if let Err(reason) = router.tenant_of(pairs, table) {
            let entry = unmapped.entry(reason.as_str()).or_default();
            entry.0 += 1;
            if entry.1.len() < EXAMPLES {
                entry
                    .1
                    .push(crate::formats::loki::proto::describe_label_string(text));
            }
        }
    }
    if unmapped.is_empty() {
        let _ = writeln!(out, "\nevery stream has a tenant");
    } else {
        let _ = writeln!(out, "\nunmapped streams ({:?} policy):", router.policy());
        for (reason, (count, examples)) in unmapped {
            let _ = writeln!(out, "  {reason} ({}): {count} streams", explain(reason));
            for e in examples {
                let _ = writeln!(out, "    e.g. {e}");
            }
        }
    }
    Ok(Some(out))
}

/// Each JSON stream's `stream` map, as text and as label pairs.
fn json_labels(streams: &[serde_json::Value]) -> Vec<(String, Vec<(String, String)>)> {
    streams
        .iter()
        .map(|s| {
            let map = s.get("stream").and_then(|m| m.as_object());
            let pairs = map
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .filter(|(_, v)| !v.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let text = s.get("stream").map(|m| m.to_string()).unwrap_or_default();
            (text, pairs)
        })
        .collect()
}

/// The remote write versions a capture may be.
#[derive(Clone, Copy)]
enum Version {
    V1,
    V2,
}

/// Which version `body` is: each version's fields are unknown (skipped) to
/// the other's schema, so it is the one under which it holds something.
fn version(body: &[u8]) -> Option<Version> {
    match pb::WriteRequest::decode(body) {
        Ok(r) if !(r.timeseries.is_empty() && r.metadata.is_empty()) => return Some(Version::V1),
        _ => {}
    }
    match v2::Request::decode(body) {
        Ok(r) if !(r.timeseries.is_empty() && r.symbols.is_empty()) => Some(Version::V2),
        _ => None,
    }
}

fn pipeline<F: crate::formats::Format>(format: F, router: &Router) -> Pipeline<F> {
    Pipeline::new(
        format,
        router.clone(),
        FamilyIndex::default(),
        Default::default(),
        usize::MAX,
    )
}

/// Every series' labels (2.0 refs resolved), for the unmapped examples.
fn series_labels(body: &[u8], version: Version) -> Result<Vec<Vec<pb::Label>>, InspectError> {
    let bad = |e: prost::DecodeError| InspectError::Decode(e.to_string());
    Ok(match version {
        Version::V1 => pb::WriteRequest::decode(body)
            .map_err(bad)?
            .timeseries
            .into_iter()
            .map(|t| t.labels)
            .collect(),
        Version::V2 => {
            let r = v2::Request::decode(body).map_err(bad)?;
            let symbol = |i: u32| r.symbols.get(i as usize).cloned().unwrap_or_default();
            r.timeseries
                .iter()
                .map(|t| {
                    t.labels_refs
                        .chunks_exact(2)
                        .map(|p| pb::Label {
                            name: symbol(p[0]),
                            value: symbol(p[1]),
                        })
                        .collect()
                })
                .collect()
        }
    })
}

fn explain(reason: &str) -> &'static str {
    match reason {
        r if r == Unmapped::NoLabel.as_str() => "no namespace / tenant label",
        r if r == Unmapped::NoOrganization.as_str() => "namespace has no organization",
        _ => "organization is not a valid tenant ID",
    }
}
