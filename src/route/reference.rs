//! The reference splitter: decode everything with prost, group owned series,
//! re-encode. Slow but obviously right; tests check that [`super::Router`]'s
//! zero-copy output matches it.

use std::collections::BTreeMap;

use prost::Message;

use super::{Router, Unmapped};
use crate::config::UnmappedPolicy;
use crate::formats::rw1::pb;
use crate::table::Snapshot;

/// What the reference splitter produced: tenant → request, and drops.
#[derive(Debug, Default, PartialEq)]
pub struct Reference {
    pub tenants: BTreeMap<String, pb::WriteRequest>,
    pub dropped: u64,
}

/// The tenant a series resolves to by its own labels, or why it has none
/// (before the unmapped policy applies).
pub fn tenant_of(
    router: &Router,
    series: &pb::TimeSeries,
    table: &Snapshot,
) -> Result<String, Unmapped> {
    router.tenant_of(
        series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str())),
        table,
    )
}

/// Splits `body` the slow way. Returns `None` where the zero-copy path
/// rejects the request (undecodable, or unmapped with policy `reject`).
/// Metadata is routed by the families of this request's series only.
pub fn split(router: &Router, body: &[u8], table: &Snapshot) -> Option<Reference> {
    let request = pb::WriteRequest::decode(body).ok()?;
    let mut out = Reference::default();
    let mut families: Vec<(String, String)> = Vec::new();
    for mut series in request.timeseries {
        let tenant = match tenant_of(router, &series, table) {
            Ok(t) => {
                if router.remove_tenant_label {
                    let name = &router.query_names()[0];
                    if let Some(i) = series.labels.iter().position(|l| l.name == *name) {
                        series.labels.remove(i);
                    }
                }
                t
            }
            Err(_) => match router.policy {
                UnmappedPolicy::Default => router.default_tenant()?.to_string(),
                UnmappedPolicy::Drop => {
                    out.dropped += 1;
                    continue;
                }
                UnmappedPolicy::Reject => return None,
            },
        };
        if let Some(name) = series.labels.iter().find(|l| l.name == "__name__") {
            families.push((name.value.clone(), tenant.clone()));
        }
        out.tenants
            .entry(tenant)
            .or_default()
            .timeseries
            .push(series);
    }
    for m in request.metadata {
        let mut targets: Vec<String> = families
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(m.metric_family_name.as_str())
                    .is_some_and(|rest| super::family::SUFFIXES.contains(&rest))
            })
            .map(|(_, t)| t.clone())
            .collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            targets.extend(router.default_tenant().map(str::to_string));
        }
        for t in targets {
            out.tenants.entry(t).or_default().metadata.push(m.clone());
        }
    }
    Some(out)
}
