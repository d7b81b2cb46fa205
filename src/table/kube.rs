//! Feeds the table from the Kubernetes API: list, then watch, Namespaces.
//!
//! ```text
//!  kube::runtime::watcher (list + watch, bookmarks, relist on 410)
//!     │  Init / InitApply* / InitDone   → build a fresh table, swap it in whole
//!     │  Apply / Delete                 → update one namespace, swap in a copy
//!     │  error                          → keep the last good table, back off, retry
//!     ▼
//!  OrgTable (readers never wait for this task)
//! ```
//!
//! Events that arrive together are applied as one swap, so a burst of
//! namespace changes costs one table copy. Until the first `InitDone` the
//! table is not synced and `/readyz` answers 503; after that the table is
//! never emptied by an API failure.

use std::path::PathBuf;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::{OrgTable, Snapshot};

/// `lookup.kubernetes`: where the organization of a namespace is found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct KubeLookup {
    /// Namespace label whose value is the organization, e.g.
    /// `appuio.io/organization`.
    pub org_label: String,
    /// Namespace annotation holding the organization, used when the label is
    /// not configured or not present on the namespace.
    pub org_annotation: String,
    /// Only watch namespaces matching this label selector.
    pub label_selector: String,
    /// Path of a kubeconfig; otherwise in-cluster credentials, then
    /// `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

impl KubeLookup {
    /// The organization of a namespace: the label if set, else the annotation.
    pub fn org_of<'a>(&self, ns: &'a Namespace) -> Option<&'a str> {
        let meta = &ns.metadata;
        let label = (!self.org_label.is_empty())
            .then(|| meta.labels.as_ref()?.get(&self.org_label))
            .flatten();
        let annotation = || {
            (!self.org_annotation.is_empty())
                .then(|| meta.annotations.as_ref()?.get(&self.org_annotation))
                .flatten()
        };
        label.or_else(annotation).map(String::as_str)
    }
}

/// Errors setting up the Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes credentials: not in a cluster and no usable kubeconfig: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Builds a client: an explicit kubeconfig, else in-cluster, else the
/// default kubeconfig.
pub async fn client(cfg: &KubeLookup) -> Result<Client, KubeError> {
    let mut config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(_) => kube::Config::infer().await?,
        },
    };
    // kube-client retries 429/503/504 itself, up to 15 times with delays
    // growing towards minutes. That hides an outage from the watcher (no
    // error to count or log) and delays recovery; the watcher's own backoff
    // (`Retry`) is the one retry loop we want.
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// Starts following the Namespaces. Returns once the client is built; the
/// table becomes synced after the first complete list.
pub async fn start(cfg: KubeLookup, table: OrgTable) -> Result<(), KubeError> {
    let client = client(&cfg).await?;
    tracing::info!(
        org_label = %cfg.org_label,
        org_annotation = %cfg.org_annotation,
        label_selector = %cfg.label_selector,
        "watching namespaces"
    );
    tokio::spawn(follow(client, cfg, table));
    Ok(())
}

/// Retry delays after API errors: 250 ms doubling to 5 s, reset by the next
/// success. Shorter than client-go's (800 ms to 30 s) because a stale routing
/// table is worse for orgsplit than a few extra requests to the API server.
struct Retry {
    next: Duration,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for Retry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(d)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// The watch loop. Runs until the process ends.
async fn follow(client: Client, cfg: KubeLookup, table: OrgTable) {
    let api: Api<Namespace> = Api::all(client);
    let mut wc = watcher::Config::default();
    if !cfg.label_selector.is_empty() {
        wc = wc.labels(&cfg.label_selector);
    }
    let mut events = watcher(api, wc)
        .backoff(Retry { next: Retry::FIRST })
        .boxed();
    let mut feed = Feed {
        cfg,
        current: Snapshot::default(),
        building: None,
        healthy: true,
        sync_errors: table.signals().sync_errors.clone(),
    };
    while let Some(first) = events.next().await {
        let mut changed = feed.apply(first);
        // Apply everything that is already waiting as one swap.
        while let Some(Some(more)) = events.next().now_or_never() {
            changed |= feed.apply(more);
        }
        if changed {
            table.replace(feed.current.clone());
        } else if feed.healthy && table.is_synced() {
            table.touch();
        }
        table
            .signals()
            .source_up
            .set(if feed.healthy { 1.0 } else { 0.0 });
    }
    tracing::error!("namespace watch ended; keeping the last table");
}

/// Turns watcher events into table contents.
struct Feed {
    cfg: KubeLookup,
    /// The complete table as last synced.
    current: Snapshot,
    /// A relist in progress (between `Init` and `InitDone`).
    building: Option<Snapshot>,
    healthy: bool,
    sync_errors: metrics::Counter,
}

impl Feed {
    /// Applies one event; returns true when `current` changed (or was
    /// completed for the first time) and must be published.
    fn apply(&mut self, event: Result<watcher::Event<Namespace>, watcher::Error>) -> bool {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                self.healthy = false;
                self.sync_errors.increment(1);
                tracing::warn!(error = %e, "Kubernetes API error; routing with the last good namespace table");
                return false;
            }
        };
        if !self.healthy {
            tracing::info!("Kubernetes API reachable again");
            self.healthy = true;
        }
        match event {
            watcher::Event::Init => {
                self.building = Some(Snapshot::default());
                false
            }
            watcher::Event::InitApply(ns) => {
                let org = self.cfg.org_of(&ns).map(str::to_owned);
                if let (Some(b), Some(name)) = (&mut self.building, ns.metadata.name) {
                    b.set(name.into(), org.as_deref());
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(b) = self.building.take() {
                    tracing::info!(namespaces = b.len(), "namespace list complete");
                    self.current = b;
                }
                true
            }
            watcher::Event::Apply(ns) => {
                let org = self.cfg.org_of(&ns).map(str::to_owned);
                match ns.metadata.name {
                    Some(name) => {
                        tracing::debug!(namespace = %name, organization = ?org, "namespace changed");
                        self.current.set(name.into(), org.as_deref())
                    }
                    None => false,
                }
            }
            watcher::Event::Delete(ns) => match ns.metadata.name {
                Some(name) => {
                    tracing::debug!(namespace = %name, "namespace deleted");
                    self.current.set(name.into(), None)
                }
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ns(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Namespace {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn feed() -> Feed {
        Feed {
            cfg: KubeLookup {
                org_label: "appuio.io/organization".into(),
                org_annotation: "example.com/org".into(),
                ..Default::default()
            },
            current: Snapshot::default(),
            sync_errors: metrics::Counter::noop(),
            building: None,
            healthy: true,
        }
    }

    #[test]
    fn label_wins_over_annotation() {
        let f = feed();
        let both = ns(
            "a",
            &[("appuio.io/organization", "acme")],
            &[("example.com/org", "x")],
        );
        assert_eq!(f.cfg.org_of(&both), Some("acme"));
        let ann = ns("b", &[], &[("example.com/org", "globex")]);
        assert_eq!(f.cfg.org_of(&ann), Some("globex"));
        assert_eq!(f.cfg.org_of(&ns("c", &[("other", "v")], &[])), None);
    }

    #[test]
    fn relist_replaces_whole_and_events_update() {
        use crate::table::Org;
        let mut f = feed();
        let label = |org| [("appuio.io/organization", org)];
        assert!(!f.apply(Ok(watcher::Event::Init)));
        assert!(!f.apply(Ok(watcher::Event::InitApply(ns("a", &label("acme"), &[])))));
        assert!(f.current.is_empty(), "not published before InitDone");
        assert!(f.apply(Ok(watcher::Event::InitDone)));
        assert_eq!(f.current.get("a"), Some(&Org::tenant("acme")));

        assert!(f.apply(Ok(watcher::Event::Apply(ns("b", &label("globex"), &[])))));
        assert!(
            !f.apply(Ok(watcher::Event::Apply(ns("b", &label("globex"), &[])))),
            "no change"
        );
        assert!(
            f.apply(Ok(watcher::Event::Apply(ns("b", &[], &[])))),
            "org removed"
        );
        assert_eq!(f.current.get("b"), None);
        assert!(f.apply(Ok(watcher::Event::Delete(ns("a", &[], &[])))));
        assert!(f.current.is_empty());

        // a relist that lacks a namespace removes it at InitDone, not before
        f.apply(Ok(watcher::Event::Apply(ns("c", &label("acme"), &[]))));
        f.apply(Ok(watcher::Event::Init));
        f.apply(Ok(watcher::Event::InitApply(ns("d", &label("acme"), &[]))));
        assert!(f.current.get("c").is_some());
        f.apply(Ok(watcher::Event::InitDone));
        assert!(f.current.get("c").is_none() && f.current.get("d").is_some());
    }

    #[test]
    fn retry_backs_off_and_resets() {
        let mut r = Retry { next: Retry::FIRST };
        let delays: Vec<_> = (&mut r).take(6).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[5], Duration::from_secs(5));
        r.reset();
        assert_eq!(r.next(), Some(Duration::from_millis(250)));
    }
}
