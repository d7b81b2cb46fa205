//! Arbitrary valid requests and routing rules: the zero-copy split and the
//! prost reference must produce the same tenants, series and metadata.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use orgsplit::config::{Routing, RoutingMode, UnmappedPolicy};
use orgsplit::route::Router;
use orgsplit::table::Snapshot;
use orgsplit::formats::rw1::pb;
use prost::Message;

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Any(String),
}

impl Text {
    fn get(&self, known: &[&str]) -> String {
        match self {
            Text::Known(i) => known[*i as usize % known.len()].to_string(),
            Text::Any(s) => s.clone(),
        }
    }
}

const NAMES: [&str; 5] = ["__name__", "namespace", "exported_namespace", "tenant", "job"];
const VALUES: [&str; 7] = ["a", "b", "c", "up", "x|y", "", "acme"];

#[derive(Arbitrary, Debug)]
struct Series {
    labels: Vec<(Text, Text)>,
    samples: Vec<(f64, i64)>,
    histogram: Option<(u64, f64, i32)>,
    exemplar: Option<(f64, i64)>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    label_mode: bool,
    remove: bool,
    policy: u8,
    series: Vec<Series>,
    metadata: Vec<Text>,
}

fuzz_target!(|input: Input| {
    let req = pb::WriteRequest {
        timeseries: input
            .series
            .iter()
            .filter(|s| !s.labels.is_empty())
            .map(|s| pb::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(n, v)| pb::Label {
                        name: n.get(&NAMES),
                        value: v.get(&VALUES),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|&(value, timestamp)| pb::Sample { value, timestamp })
                    .collect(),
                histograms: s
                    .histogram
                    .map(|(n, sum, schema)| pb::Histogram {
                        count: Some(pb::histogram::Count::CountInt(n)),
                        sum,
                        schema,
                        positive_spans: vec![pb::BucketSpan { offset: schema, length: 1 }],
                        positive_deltas: vec![n as i64],
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                exemplars: s
                    .exemplar
                    .map(|(value, timestamp)| pb::Exemplar {
                        labels: vec![pb::Label { name: "trace_id".into(), value: "t".into() }],
                        value,
                        timestamp,
                    })
                    .into_iter()
                    .collect(),
            })
            .collect(),
        metadata: input
            .metadata
            .iter()
            .map(|f| pb::MetricMetadata {
                r#type: 1,
                metric_family_name: f.get(&VALUES),
                help: "h".into(),
                unit: String::new(),
            })
            .collect(),
    };
    let router = Router::new(
        &Routing {
            mode: if input.label_mode { RoutingMode::Label } else { RoutingMode::Namespace },
            remove_tenant_label: input.remove,
            namespace_labels: vec!["namespace".into(), "exported_namespace".into()],
            default_tenant: "fallback".into(),
            unmapped: match input.policy % 3 {
                0 => UnmappedPolicy::Default,
                1 => UnmappedPolicy::Drop,
                _ => UnmappedPolicy::Reject,
            },
            ..Default::default()
        },
        Default::default(),
    );
    let table = Snapshot::from_pairs([("a", "acme"), ("b", "globex"), ("c", "x|y")]);
    if let Err(e) = orgsplit::testing::agreement(&router, &req.encode_to_vec(), &table) {
        panic!("{e}\n{req:?}");
    }
});
