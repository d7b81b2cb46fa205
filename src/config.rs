//! Configuration: one YAML file, overridden by `ORGSPLIT_*` environment
//! variables, overridden by command-line flags.
//!
//! ```text
//!  --config FILE (YAML) ─► ORGSPLIT_<SECTION>_<KEY> env ─► flags ─► Config::validate ─► Config
//! ```
//!
//! Every key has a default except `upstream.url`. Unknown keys are an error
//! that names the key and where it came from (file or variable), because a
//! misspelt key silently taking its default is how tenants get mixed up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::table::kube::KubeLookup;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP listener (push, metrics, health).
    pub listen: SocketAddr,
    /// Optional second listener for `/metrics` and the health endpoints
    /// only (they stay on `listen` too).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS for the listener(s); plain HTTP when unset.
    pub tls: Option<ServerTls>,
    pub upstream: Upstream,
    /// Where Loki pushes go (`/loki/api/v1/push` is served when
    /// `loki.upstream.url` is set).
    pub loki: Loki,
    /// OpenTelemetry (OTLP/HTTP) pushes: where each signal goes, and the
    /// attributes that name an item's namespace.
    pub otlp: Otlp,
    /// Who may send, and which organizations each sender may write.
    pub auth: Auth,
    /// The read path: query, rules, alerts and logs APIs (see `read`).
    pub read: Read,
    pub routing: Routing,
    pub lookup: Lookup,
    pub limits: Limits,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
    pub log: Log,
    /// The operator page (`/ui/`) and its JSON (`/ui/api/tenants`).
    pub ui: Ui,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: None,
            tls: None,
            upstream: Upstream::default(),
            loki: Loki::default(),
            otlp: Otlp::default(),
            auth: Auth::default(),
            read: Read::default(),
            routing: Routing::default(),
            lookup: Lookup::default(),
            limits: Limits::default(),
            shutdown: Shutdown::default(),
            metrics: Metrics::default(),
            log: Log::default(),
            ui: Ui::default(),
        }
    }
}

/// Certificate and key (PEM) the listener serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// TLS towards the upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// CA bundle (PEM) to verify the upstream with, in addition to the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Do not verify the upstream's certificate. Logged loudly at startup.
    pub insecure_skip_verify: bool,
}

/// HTTP basic auth towards the upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// File holding the password (re-read when it changes).
    pub password_file: PathBuf,
}

/// Graceful shutdown on SIGTERM / SIGINT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long to keep serving pushes after `/readyz` turned 503, so that
    /// load balancers and Service endpoints stop sending first.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Count series and samples per tenant (`tenant` label). Off by default:
    /// the number of tenants is unbounded.
    pub per_tenant: bool,
}

/// Who may see the operator page, and what it shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ui {
    /// Serve `/ui/` and `/ui/api/tenants` (on `listen` and `metrics_listen`).
    pub enabled: bool,
    /// A caller on a loopback address that sends no credential may see
    /// the page (`kubectl port-forward` arrives on loopback). Turn off when
    /// a proxy on the same host forwards outside callers to orgsplit.
    pub loopback: bool,
    /// Principals that may see the page from anywhere, by name (token
    /// subject, basic-auth user, certificate principal), or as
    /// `jwt:NAME`, `basic:NAME`, `mtls:NAME` to name one mode's only. Any
    /// other credential is refused (403), and no credential from elsewhere
    /// than loopback is asked for one (401).
    pub admins: Vec<String>,
    /// Rows per table (busiest first); the JSON has the same.
    pub top: usize,
    /// How often the page reloads itself.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for Ui {
    fn default() -> Self {
        Self {
            enabled: true,
            loopback: true,
            admins: Vec::new(),
            top: 100,
            refresh: Duration::from_secs(15),
        }
    }
}

impl Ui {
    fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.top) {
            return Err(format!("ui.top must be 1 to 1000, not {}", self.top));
        }
        if self.refresh < Duration::from_secs(1) {
            return Err("ui.refresh must be at least 1s".into());
        }
        for admin in &self.admins {
            let name = match admin.split_once(':') {
                Some((mode, name)) if ["jwt", "basic", "mtls"].contains(&mode) => name,
                Some(("anonymous", _)) => {
                    return Err(format!(
                        "ui.admins {admin:?}: the anonymous principal cannot be an admin"
                    ))
                }
                _ => admin.as_str(),
            };
            if name.is_empty() || name == "anonymous" {
                return Err(format!(
                    "ui.admins {admin:?}: name a token subject, user or certificate principal"
                ));
            }
        }
        Ok(())
    }
}

/// Where tenant pushes go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Push URL of the Mimir / Cortex distributor, e.g.
    /// `http://mimir-distributor:8080/api/v1/push`.
    pub url: String,
    /// Header that carries the tenant ID.
    pub tenant_header: String,
    /// Deadline of one tenant push (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Idle keep-alive connections kept per upstream host.
    pub max_idle_per_host: usize,
    /// Most tenant pushes in flight to the upstream at once; further pushes
    /// wait (within `timeout`) for a free slot.
    pub max_connections: usize,
    pub basic_auth: Option<BasicAuth>,
    /// File holding a bearer token (re-read when it changes).
    pub bearer_token_file: Option<PathBuf>,
    pub tls: ClientTls,
    pub coalesce: Coalesce,
    /// Which remote write version tenant pushes of 2.0 senders are sent in
    /// (1.0 senders' pushes always go as 1.0).
    pub protocol: Protocol,
}

/// Loki pushes: split like remote write, sent to a Loki distributor (or
/// gateway) with settings of their own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Loki {
    /// Push URL of the Loki distributor, e.g.
    /// `http://loki-distributor:3100/loki/api/v1/push`; empty: Loki pushes
    /// are answered 404. Same keys as `upstream` (timeout, credentials,
    /// TLS); `protocol` does not apply, and `coalesce` (on, as for
    /// remote write) merges protobuf pushes only.
    pub upstream: Upstream,
}

impl Loki {
    /// Whether Loki pushes are served.
    pub fn enabled(&self) -> bool {
        !self.upstream.url.is_empty()
    }
}

/// OpenTelemetry pushes (`/v1/metrics`, `/v1/logs`, `/v1/traces`, and
/// Mimir's and Loki's `/otlp/v1/...`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// Attribute keys that name an item's namespace (namespace mode),
    /// tried in order, first on the resource, then on each data point, log
    /// record or span. From the environment, a comma-separated list.
    #[serde(deserialize_with = "string_or_list")]
    pub namespace_attributes: Vec<String>,
    pub metrics: OtlpSignal,
    pub logs: OtlpSignal,
    pub traces: OtlpSignal,
    pub grpc: OtlpGrpc,
}

impl Default for Otlp {
    fn default() -> Self {
        Self {
            namespace_attributes: vec!["k8s.namespace.name".into(), "namespace".into()],
            metrics: OtlpSignal::default(),
            logs: OtlpSignal::default(),
            traces: OtlpSignal::default(),
            grpc: OtlpGrpc::default(),
        }
    }
}

/// OTLP over gRPC: a listener of its own (TLS and client certificates as
/// the HTTP listener has them), off unless configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpGrpc {
    /// Serve gRPC on `listen` (also on when `listen` is set).
    pub enabled: bool,
    /// Address of the gRPC listener; `0.0.0.0:4317` when only `enabled`.
    pub listen: Option<SocketAddr>,
}

impl OtlpGrpc {
    /// Where the gRPC listener listens, if it is on.
    pub fn address(&self) -> Option<SocketAddr> {
        match (self.enabled, self.listen) {
            (_, Some(addr)) => Some(addr),
            (true, None) => Some(SocketAddr::from(([0, 0, 0, 0], 4317))),
            (false, None) => None,
        }
    }
}

/// Where one OTLP signal goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSignal {
    /// A URL (the other settings as `upstream`'s, or `loki.upstream`'s for
    /// logs), or the same keys as `upstream`; an empty URL turns the
    /// signal off (404). Unset: metrics go to Mimir's OTLP endpoint (the
    /// remote write URL with `/api/v1/push` made `/otlp/v1/metrics`), logs
    /// to Loki's (when `loki.upstream.url` is set), traces nowhere.
    pub upstream: Option<OtlpUpstream>,
}

/// `otlp.<signal>.upstream`: a URL, or a whole upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OtlpUpstream {
    Url(String),
    Full(Box<Upstream>),
}

impl Config {
    /// The routing of items that carry attributes rather than labels
    /// (OTLP): `routing` with `otlp.namespace_attributes` as the
    /// namespace keys.
    pub fn attribute_routing(&self) -> Routing {
        Routing {
            namespace_labels: self.otlp.namespace_attributes.clone(),
            ..self.routing.clone()
        }
    }

    /// The upstream the OTLP pushes of `signal` go to, if they are served:
    /// see [`OtlpSignal::upstream`].
    pub fn otlp_upstream(&self, signal: crate::signals::Signal) -> Option<Upstream> {
        use crate::signals::Signal;
        let (set, inherit, default_path) = match signal {
            Signal::Metrics => (
                &self.otlp.metrics.upstream,
                Some(&self.upstream),
                Some(("/api/v1/push", "/otlp/v1/metrics")),
            ),
            Signal::Logs => (
                &self.otlp.logs.upstream,
                self.loki.enabled().then_some(&self.loki.upstream),
                Some(("/loki/api/v1/push", "/otlp/v1/logs")),
            ),
            Signal::Traces => (&self.otlp.traces.upstream, None, None),
        };
        let upstream = match set {
            Some(OtlpUpstream::Full(u)) => (**u).clone(),
            Some(OtlpUpstream::Url(url)) => Upstream {
                url: url.clone(),
                ..inherit.cloned().unwrap_or_default()
            },
            None => {
                let (base, (push, otlp)) = inherit.zip(default_path)?;
                Upstream {
                    url: otlp_url(&base.url, push, otlp),
                    ..base.clone()
                }
            }
        };
        (!upstream.url.is_empty()).then_some(upstream)
    }
}

/// `url` with its push path `push` made `otlp`, or its origin with `otlp`
/// appended when it does not end in `push`.
fn otlp_url(url: &str, push: &str, otlp: &str) -> String {
    if let Some(base) = url.strip_suffix(push) {
        return format!("{base}{otlp}");
    }
    match url.parse::<http::Uri>() {
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{otlp}"),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// `upstream.protocol`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Convert 2.0 pushes to 1.0 (Mimir before 2.17, Cortex, Prometheus 2).
    V1,
    /// Send 2.0 pushes as 2.0, whatever the upstream answers.
    V2,
    /// Send 2.0; when the upstream refuses it (415) or accepts it without
    /// saying what it wrote (a 1.0 receiver that ignored the Content-Type),
    /// send that push again as 1.0 and keep sending 1.0 for a while.
    #[default]
    Auto,
}

/// Merging concurrent pushes' batches for one tenant into one upstream
/// request (see `forward::coalesce`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Coalesce {
    /// Merge batches for a tenant while its previous request is out.
    pub enabled: bool,
    /// Longest a batch waits for the tenant's previous request before it is
    /// sent anyway (with whatever joined it).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Most decoded bytes of one merged request. A single push larger than
    /// this is sent as it is, never cut.
    pub max_bytes: usize,
}

impl Default for Coalesce {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_millis(50),
            max_bytes: 4 << 20,
        }
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            url: String::new(),
            tenant_header: "X-Scope-OrgID".into(),
            timeout: Duration::from_secs(10),
            max_idle_per_host: 256,
            max_connections: 512,
            basic_auth: None,
            bearer_token_file: None,
            tls: ClientTls::default(),
            coalesce: Coalesce::default(),
            protocol: Protocol::Auto,
        }
    }
}

/// Where the read proxy sends each route, and its limits. Mimir's parts
/// default to the origin (scheme and host) of `upstream.url`, which is
/// right for a monolithic Mimir or one behind its gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Read {
    /// Base URL of the query-frontend (`/prometheus/api/v1/...` is appended).
    pub query_frontend: Option<String>,
    /// Base URL of the ruler (rules, alerts, rule configuration).
    pub ruler: Option<String>,
    /// Base URL of the alertmanager (`/alertmanager/...`, `/api/v1/alerts`).
    pub alertmanager: Option<String>,
    /// Base URL of Loki's query path (`/loki/api/v1/...`); Loki reads are
    /// 404 when unset.
    pub loki: Option<String>,
    /// Allow `X-Scope-OrgID: a|b` (Mimir tenant federation) when the
    /// principal may read every member.
    pub federation: bool,
    /// Longest wait for each route's upstream to send its response headers
    /// (the body then streams for as long as it takes).
    pub timeouts: ReadTimeouts,
    /// Largest request body (remote read, rule groups, silences).
    pub max_body_bytes: usize,
}

impl Default for Read {
    fn default() -> Self {
        Self {
            query_frontend: None,
            ruler: None,
            alertmanager: None,
            loki: None,
            federation: false,
            timeouts: ReadTimeouts::default(),
            max_body_bytes: 1 << 20,
        }
    }
}

/// Per-route response-header timeouts of the read proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadTimeouts {
    #[serde(with = "humantime_serde")]
    pub query: Duration,
    #[serde(with = "humantime_serde")]
    pub ruler: Duration,
    #[serde(with = "humantime_serde")]
    pub alertmanager: Duration,
    #[serde(with = "humantime_serde")]
    pub loki: Duration,
}

impl Default for ReadTimeouts {
    fn default() -> Self {
        Self {
            query: Duration::from_secs(120),
            ruler: Duration::from_secs(30),
            alertmanager: Duration::from_secs(30),
            loki: Duration::from_secs(120),
        }
    }
}

/// Authentication of senders: any combination of the modes below. A
/// request is tried against the credential it carries (a bearer token, a
/// basic-auth user, a client certificate); one with none is anonymous.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub anonymous: Anonymous,
    pub jwt: Option<Jwt>,
    pub basic: Option<BasicUsers>,
    pub mtls: Option<Mtls>,
    /// What happens to series of organizations a sender may not write:
    /// `reject` the request (403, nothing forwarded) or `drop` them (counted).
    pub outside_allowance: OutsideAllowance,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            anonymous: Anonymous::default(),
            jwt: None,
            basic: None,
            mtls: None,
            outside_allowance: OutsideAllowance::Reject,
        }
    }
}

/// Requests that carry no credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Anonymous {
    /// Whether they are served at all (401 otherwise).
    pub enabled: bool,
    /// The organizations they may write: `*`, tenant IDs, or prefixes
    /// ending in `*`.
    #[serde(deserialize_with = "string_or_list")]
    pub allowance: Vec<String>,
    /// The organizations they may read through the read proxy; none by
    /// default (reading needs a credential).
    #[serde(deserialize_with = "string_or_list")]
    pub read_allowance: Vec<String>,
}

impl Default for Anonymous {
    fn default() -> Self {
        Self {
            enabled: true,
            allowance: vec!["*".into()],
            read_allowance: Vec::new(),
        }
    }
}

/// Bearer JSON Web Tokens: HS256 with a shared secret (cortex-gateway),
/// RS256 / ES256 with public keys (Opstrace).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Jwt {
    /// File holding the HS256 secret (surrounding whitespace is trimmed).
    pub hs256_secret_file: Option<PathBuf>,
    /// Directory of PEM public keys (SubjectPublicKeyInfo, RSA or P-256);
    /// a key's `kid` is the hex SHA-1 of its trimmed PEM text.
    pub trust_store: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`); keys are found by their `kid`.
    pub jwks_file: Option<PathBuf>,
    /// PEM public key for RS256 / ES256 tokens that carry no `kid`.
    pub fallback_key: Option<PathBuf>,
    /// Accepted `aud` values; when set, a token must name one of them.
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens without `exp` (cortex-gateway tokens often have none).
    pub require_expiry: bool,
    /// Claim holding a list of organizations (or prefixes ending in `*`);
    /// tried before `tenant_id` and `sub` (`tenant-<name>`).
    pub organizations_claim: String,
    /// Claim holding the organizations the token may read (default: those
    /// it may write).
    pub read_organizations_claim: String,
    /// Boolean claim: may change rules and alertmanager state.
    pub rules_claim: String,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// File of revoked token IDs (`jti`), one per line; followed like the
    /// trust store (`orgsplit token revoke` adds one).
    pub revoked_file: Option<PathBuf>,
    /// Caps per signing key: a token signed by the key with this `kid`
    /// (`hs256` for the secret, `fallback` for the fallback key) may grant
    /// only organizations inside the listed allowance, for writing and
    /// reading; one that claims more is refused. Keys not listed are not
    /// capped.
    pub key_allowances: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for Jwt {
    fn default() -> Self {
        Self {
            hs256_secret_file: None,
            trust_store: None,
            jwks_file: None,
            fallback_key: None,
            audience: Vec::new(),
            issuer: None,
            leeway: Duration::from_secs(30),
            require_expiry: false,
            organizations_claim: "organizations".into(),
            read_organizations_claim: "read_organizations".into(),
            rules_claim: "rules".into(),
            max_token_bytes: 8 << 10,
            revoked_file: None,
            key_allowances: Default::default(),
        }
    }
}

/// HTTP basic auth against a users file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicUsers {
    /// YAML: `name: {password_hash: <argon2 or bcrypt>, allowance: [...]}`,
    /// re-read when it changes.
    pub users_file: PathBuf,
}

/// Client certificates on the TLS listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mtls {
    /// CA bundle (PEM) that client certificates must chain to.
    pub client_ca_file: PathBuf,
    /// Certificate name (a DNS, URI or email SAN, or the subject CN) →
    /// allowance. A certificate none of whose names is listed is refused.
    #[serde(default)]
    pub principals: std::collections::BTreeMap<String, Vec<String>>,
}

/// What happens to series of organizations outside a sender's allowance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutsideAllowance {
    /// 403 naming the organization; nothing of the request is forwarded.
    #[default]
    Reject,
    /// Drop those series and count them
    /// (`orgsplit_series_dropped_total{reason="forbidden"}`).
    Drop,
}

/// How a series' tenant is found.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Tenant = organization of the series' namespace (from the lookup table).
    #[default]
    Namespace,
    /// Tenant = value of a label (cortex-tenant compatible).
    Label,
    /// The whole push goes, unsplit, to the one organization the sender's
    /// credential is bound to (cortex-gateway / Opstrace style).
    Principal,
}

/// What happens to a series that resolves to no tenant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnmappedPolicy {
    /// Send it to `routing.default_tenant`.
    #[default]
    Default,
    /// Drop it and count it in `orgsplit_series_dropped_total`.
    Drop,
    /// Reject the whole request with 400 (Prometheus drops the batch).
    Reject,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    pub mode: RoutingMode,
    /// Namespace label names, tried in order; the first present one counts.
    /// From the environment, a comma-separated list.
    #[serde(deserialize_with = "string_or_list")]
    pub namespace_labels: Vec<String>,
    /// Label mode: the label whose value is the tenant.
    pub tenant_label: String,
    /// Label mode: remove `tenant_label` from the series before forwarding.
    pub remove_tenant_label: bool,
    /// Label mode: prepended to the label value to form the tenant ID.
    pub tenant_prefix: String,
    /// Tenant for unmapped series (policy `default`) and for metadata of
    /// families no tenant has series of.
    pub default_tenant: String,
    pub unmapped: UnmappedPolicy,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            mode: RoutingMode::Namespace,
            namespace_labels: vec!["namespace".into()],
            tenant_label: "tenant".into(),
            remove_tenant_label: false,
            tenant_prefix: String::new(),
            default_tenant: String::new(),
            unmapped: UnmappedPolicy::Default,
        }
    }
}

/// Where the namespace → organization table comes from: a file or the
/// Kubernetes API (exactly one, in namespace mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Lookup {
    /// YAML file of `namespace: organization`, re-read when it changes.
    pub file: Option<PathBuf>,
    /// Namespaces from the Kubernetes API (list + watch).
    pub kubernetes: Option<KubeLookup>,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest compressed body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest decompressed body, checked against snappy's declared length
    /// before decompressing (413 beyond).
    pub max_decoded_bytes: usize,
    /// Most series in one request (413 beyond); 0 for no limit.
    pub max_series_per_request: usize,
    /// Most metadata entries in one request (413 beyond); 0 for no limit.
    pub max_metadata_per_request: usize,
    /// Most samples (float and native histogram) in one request (413
    /// beyond); 0 for no limit.
    pub max_samples_per_request: usize,
    /// Most exemplars in one request (413 beyond); 0 for no limit.
    pub max_exemplars_per_request: usize,
    /// Most spans, buckets and custom values in one native histogram (413
    /// beyond); 0 for no limit.
    pub max_buckets_per_histogram: usize,
    /// Most tenants one request is split into, each an upstream push of its
    /// own (413 beyond); 0 for no limit.
    pub max_tenants_per_request: usize,
    /// Most entries in a remote write 2.0 request's symbol table (413
    /// beyond); 0 for no limit.
    pub max_symbols_per_request: usize,
    /// Longest remote write 2.0 symbol (label name or value, help, unit)
    /// in bytes (400 beyond).
    pub max_symbol_bytes: usize,
    /// Most streams in one Loki push (413 beyond); 0 for no limit.
    pub max_streams_per_request: usize,
    /// Most log entries in one Loki push (413 beyond); 0 for no limit.
    pub max_entries_per_request: usize,
    /// Longest log line in bytes (400 beyond; Loki's own default
    /// `max_line_size` is the same 256 KiB); 0 for no limit.
    pub max_line_bytes: usize,
    /// Longest stream label string `{name="value", ...}` in bytes (400
    /// beyond).
    pub max_label_string_bytes: usize,
    /// Most labels on one series or stream (400 beyond).
    pub max_labels_per_series: usize,
    /// Longest label name or value in bytes (400 beyond).
    pub max_label_bytes: usize,
    /// Most push requests processed and forwarded at once (counted from
    /// when a request's body has arrived); beyond it the sender is told to
    /// back off (`overload_status` with `Retry-After`).
    pub max_inflight_requests: usize,
    /// Memory budget of all requests in flight: compressed bytes as they
    /// arrive, then three times the decoded size while a request is split,
    /// then its compressed tenant bodies until the upstream answered (same
    /// answer beyond it). Must be at least twice `max_decoded_bytes`.
    pub max_inflight_bytes: usize,
    /// Time a sender has to deliver the whole body once its headers
    /// arrived; a slower one gets a retryable 503.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Time a connection may take to send a request's headers (also how
    /// long an idle keep-alive connection is kept); then it is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most client connections open at once; further ones are closed as
    /// they are accepted, until some close.
    pub max_connections: usize,
    /// `(metric family, tenant)` pairs remembered for routing metadata, in
    /// each of the index's two generations (the older is forgotten when
    /// the newer is full; a forgotten family's metadata follows the
    /// default-tenant rule until its series are seen again).
    pub max_metadata_index_pairs: usize,
    /// Status for "too much in flight": 503 (default; every Prometheus
    /// retries it) or 429 (Prometheus retries it only with
    /// `retry_on_http_429: true`, and drops the batch otherwise).
    pub overload_status: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 32 << 20,
            max_series_per_request: 100_000,
            max_metadata_per_request: 100_000,
            max_samples_per_request: 2_000_000,
            max_exemplars_per_request: 100_000,
            max_buckets_per_histogram: 16_384,
            max_tenants_per_request: 20_000,
            max_symbols_per_request: 1_000_000,
            max_symbol_bytes: 64 << 10,
            max_streams_per_request: 100_000,
            max_entries_per_request: 2_000_000,
            max_line_bytes: 256 << 10,
            max_label_string_bytes: 64 << 10,
            max_labels_per_series: 1024,
            max_label_bytes: 64 << 10,
            max_inflight_requests: 256,
            max_inflight_bytes: 128 << 20,
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_metadata_index_pairs: 100_000,
            overload_status: 503,
        }
    }
}

impl Limits {
    /// The limits the wire walk checks (0, "no limit", becomes `usize::MAX`).
    pub fn wire(&self) -> crate::request_limits::RequestLimits {
        let or_max = |n: usize| if n == 0 { usize::MAX } else { n };
        crate::request_limits::RequestLimits {
            max_labels: self.max_labels_per_series,
            max_label_bytes: self.max_label_bytes,
            max_series: or_max(self.max_series_per_request),
            max_metadata: or_max(self.max_metadata_per_request),
            max_samples: or_max(self.max_samples_per_request),
            max_exemplars: or_max(self.max_exemplars_per_request),
            max_buckets: or_max(self.max_buckets_per_histogram),
            max_tenants: or_max(self.max_tenants_per_request),
            max_symbols: or_max(self.max_symbols_per_request),
            max_symbol_bytes: self.max_symbol_bytes,
            max_streams: or_max(self.max_streams_per_request),
            max_entries: or_max(self.max_entries_per_request),
            max_line_bytes: or_max(self.max_line_bytes),
            max_label_string_bytes: self.max_label_string_bytes,
        }
    }

    /// The config key of the limit on `item`, for error messages.
    pub fn key(item: crate::request_limits::LimitedItem) -> &'static str {
        use crate::request_limits::LimitedItem;
        match item {
            LimitedItem::Series => "limits.max_series_per_request",
            LimitedItem::Metadata => "limits.max_metadata_per_request",
            LimitedItem::Samples => "limits.max_samples_per_request",
            LimitedItem::Exemplars => "limits.max_exemplars_per_request",
            LimitedItem::Buckets => "limits.max_buckets_per_histogram",
            LimitedItem::Symbols => "limits.max_symbols_per_request",
            LimitedItem::Streams => "limits.max_streams_per_request",
            LimitedItem::Entries => "limits.max_entries_per_request",
            LimitedItem::Resources | LimitedItem::Scopes | LimitedItem::Metrics => {
                "limits.max_series_per_request"
            }
            LimitedItem::DataPoints | LimitedItem::Spans => "limits.max_samples_per_request",
            LimitedItem::LogRecords => "limits.max_entries_per_request",
            LimitedItem::EventsAndLinks => "limits.max_exemplars_per_request",
            LimitedItem::Attributes => "limits.max_labels_per_series",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `orgsplit=debug`; `RUST_LOG`
    /// overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Flag values that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub upstream_url: Option<String>,
    pub lookup_file: Option<PathBuf>,
}

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{}", load_message(.0))]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// figment's message, plus a hint when a YAML or environment value was read
/// as a number, boolean or null where text is expected: such a value is
/// refused, never turned into text (`0x1f` would become `31`).
fn load_message(e: &figment::Error) -> String {
    use figment::error::Kind;
    let mut out = e.to_string();
    if matches!(&e.kind, Kind::InvalidType(_, expected) if expected.contains("string")) {
        out.push_str(
            " (numbers, booleans and null are not read as text: quote the value, e.g. \"0x1f\")",
        );
    }
    out
}

/// Sections whose keys an `ORGSPLIT_<SECTION>_<KEY>` variable can set.
const SECTIONS: [&str; 11] = [
    "upstream", "loki", "routing", "lookup", "limits", "log", "shutdown", "metrics", "tls", "auth",
    "read",
];

/// Variables that are read by the CLI, not by the config.
const NOT_CONFIG: [&str; 1] = ["config"];

/// Maps `upstream_tenant_header` to `upstream.tenant_header`.
fn env_key(key: &str) -> Option<String> {
    let key = key.to_ascii_lowercase();
    if NOT_CONFIG.contains(&key.as_str()) {
        return None;
    }
    // loki_upstream_tls_ca_file → loki.upstream.tls.ca_file
    if let Some(rest) = key.strip_prefix("loki_") {
        if rest.starts_with("upstream_") {
            return env_key(rest).map(|k| format!("loki.{k}"));
        }
    }
    for nested in [
        "lookup_kubernetes",
        "upstream_tls",
        "upstream_basic_auth",
        "upstream_coalesce",
        "auth_anonymous",
        "auth_jwt",
        "auth_basic",
        "auth_mtls",
        "read_timeouts",
    ] {
        if let Some(rest) = key.strip_prefix(nested).and_then(|r| r.strip_prefix('_')) {
            return Some(format!("{}.{rest}", nested.replacen('_', ".", 1)));
        }
    }
    if key == "metrics_listen" {
        return Some(key);
    }
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return Some(format!("{section}.{rest}"));
        }
    }
    Some(key)
}

impl Config {
    /// Loads the file (if any), then the environment, then `overrides`, and
    /// validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::figment(file, overrides)?
            .extract::<Config>()
            .map_err(|e| ConfigError::Load(Box::new(e)))
            .and_then(|c| c.validate())
    }

    fn figment(file: Option<&Path>, overrides: &Overrides) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Missing(file.to_owned()));
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        figment = figment
            .merge(Env::prefixed("ORGSPLIT_").filter_map(|k| env_key(k.as_str()).map(Into::into)));
        if let Some(listen) = overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(url) = &overrides.upstream_url {
            figment = figment.merge(Serialized::default("upstream.url", url));
        }
        if let Some(path) = &overrides.lookup_file {
            figment = figment.merge(Serialized::default("lookup.file", path));
        }
        Ok(figment)
    }

    /// Checks what serde cannot: required keys and combinations.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.upstream.url.is_empty() {
            return bad("upstream.url is required (the Mimir/Cortex push URL)".into());
        }
        self.upstream
            .validate("upstream")
            .map_err(ConfigError::Invalid)?;
        if self.loki.enabled() {
            self.loki
                .upstream
                .validate("loki.upstream")
                .map_err(ConfigError::Invalid)?;
        }
        for signal in crate::signals::Signal::ALL {
            if let Some(u) = self.otlp_upstream(signal) {
                u.validate(&format!("otlp.{}.upstream", signal.as_str()))
                    .map_err(ConfigError::Invalid)?;
            }
        }
        self.ui.validate().map_err(ConfigError::Invalid)?;
        if self.otlp.namespace_attributes.is_empty() {
            return bad("otlp.namespace_attributes must name at least one attribute".into());
        }
        let r = &self.routing;
        if r.mode == RoutingMode::Namespace && r.namespace_labels.is_empty() {
            return bad("routing.namespace_labels must name at least one label".into());
        }
        if r.mode == RoutingMode::Label && r.tenant_label.is_empty() {
            return bad("routing.tenant_label must be set in label mode".into());
        }
        if !r.default_tenant.is_empty() {
            if let Err(e) = crate::tenant::validate(&r.default_tenant) {
                return bad(format!(
                    "routing.default_tenant {:?}: {e}",
                    r.default_tenant
                ));
            }
        } else if r.unmapped == UnmappedPolicy::Default {
            return bad(
                "routing.unmapped is `default` but routing.default_tenant is empty: \
                 set a default tenant, or set routing.unmapped to `drop` or `reject`"
                    .into(),
            );
        }
        if r.mode == RoutingMode::Namespace {
            match (&self.lookup.file, &self.lookup.kubernetes) {
                (None, None) => {
                    return bad(
                        "namespace mode needs a lookup: set lookup.file or lookup.kubernetes".into(),
                    )
                }
                (Some(_), Some(_)) => {
                    return bad("set only one of lookup.file and lookup.kubernetes".into())
                }
                (None, Some(k)) if k.org_label.is_empty() && k.org_annotation.is_empty() => {
                    return bad(
                        "lookup.kubernetes needs org_label or org_annotation (where the organization is)"
                            .into(),
                    )
                }
                _ => {}
            }
        }
        let l = &self.limits;
        if l.max_body_bytes == 0 || l.max_decoded_bytes == 0 {
            return bad("limits.max_body_bytes and limits.max_decoded_bytes must be > 0".into());
        }
        if l.max_labels_per_series == 0 || l.max_label_bytes == 0 {
            return bad(
                "limits.max_labels_per_series and limits.max_label_bytes must be > 0".into(),
            );
        }
        if l.max_inflight_requests == 0 || l.max_connections == 0 {
            return bad(
                "limits.max_inflight_requests and limits.max_connections must be > 0".into(),
            );
        }
        if l.body_timeout.is_zero() || l.header_timeout.is_zero() {
            return bad("limits.body_timeout and limits.header_timeout must be more than 0".into());
        }
        if l.max_metadata_index_pairs == 0 {
            return bad("limits.max_metadata_index_pairs must be > 0".into());
        }
        // A request holds its decompressed body and the batches built
        // from it: twice its decoded size.
        if l.max_inflight_bytes < 2 * l.max_decoded_bytes {
            return bad(format!(
                "limits.max_inflight_bytes ({}) must be at least twice limits.max_decoded_bytes ({})",
                l.max_inflight_bytes, l.max_decoded_bytes
            ));
        }
        if l.overload_status != 503 && l.overload_status != 429 {
            return bad("limits.overload_status must be 503 or 429".into());
        }
        if l.max_label_string_bytes == 0 {
            return bad("limits.max_label_string_bytes must be > 0".into());
        }
        self.auth
            .validate(self.tls.is_some())
            .map_err(ConfigError::Invalid)?;
        Ok(self)
    }

    /// The effective configuration as YAML, for `check-config`.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

impl Upstream {
    /// Checks an upstream section (`upstream`, `loki.upstream`) whose URL
    /// is set; `at` names it in messages.
    fn validate(&self, at: &str) -> Result<(), String> {
        match self.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            Ok(u) => {
                return Err(format!(
                    "{at}.url {:?}: unsupported scheme {:?} (use http:// or https://)",
                    self.url,
                    u.scheme_str().unwrap_or("")
                ))
            }
            Err(e) => return Err(format!("{at}.url {:?}: {e}", self.url)),
        }
        if self.coalesce.max_bytes == 0 {
            return Err(format!("{at}.coalesce.max_bytes must be more than 0"));
        }
        if http::HeaderName::from_bytes(self.tenant_header.as_bytes()).is_err() {
            return Err(format!(
                "{at}.tenant_header {:?} is not a valid HTTP header name",
                self.tenant_header
            ));
        }
        if self.timeout.is_zero() {
            return Err(format!("{at}.timeout must be more than 0"));
        }
        if self.max_connections == 0 {
            return Err(format!("{at}.max_connections must be > 0"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(format!(
                "{at}.tls.cert_file and {at}.tls.key_file go together"
            ));
        }
        if self.basic_auth.is_some() && self.bearer_token_file.is_some() {
            return Err(format!(
                "set only one of {at}.basic_auth and {at}.bearer_token_file"
            ));
        }
        Ok(())
    }
}

impl Auth {
    fn validate(&self, tls: bool) -> Result<(), String> {
        use crate::tenant::Allowance;
        let allowance = |what: &str, entries: &[String]| {
            Allowance::parse(entries)
                .map(drop)
                .map_err(|e| format!("{what}: {e}"))
        };
        allowance("auth.anonymous.allowance", &self.anonymous.allowance)?;
        allowance(
            "auth.anonymous.read_allowance",
            &self.anonymous.read_allowance,
        )?;
        if !self.anonymous.enabled
            && self.jwt.is_none()
            && self.basic.is_none()
            && self.mtls.is_none()
        {
            return Err(
                "auth: anonymous is disabled and no other mode is configured \
                        (set auth.jwt, auth.basic or auth.mtls)"
                    .into(),
            );
        }
        if let Some(j) = &self.jwt {
            if j.hs256_secret_file.is_none()
                && j.trust_store.is_none()
                && j.jwks_file.is_none()
                && j.fallback_key.is_none()
            {
                return Err("auth.jwt needs a key: hs256_secret_file, trust_store, \
                            jwks_file or fallback_key"
                    .into());
            }
            if j.max_token_bytes == 0 {
                return Err("auth.jwt.max_token_bytes must be > 0".into());
            }
            for (kid, entries) in &j.key_allowances {
                allowance(&format!("auth.jwt.key_allowances.{kid}"), entries)?;
            }
            if j.organizations_claim.is_empty() {
                return Err("auth.jwt.organizations_claim must not be empty".into());
            }
        }
        if let Some(m) = &self.mtls {
            if !tls {
                return Err(
                    "auth.mtls needs the TLS listener: set tls.cert_file and tls.key_file".into(),
                );
            }
            for (name, entries) in &m.principals {
                allowance(&format!("auth.mtls.principals.{name}"), entries)?;
            }
        }
        Ok(())
    }
}

/// Accepts `[a, b]` or `"a,b"` (the form an environment variable takes).
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

#[cfg(test)]
// figment's Jail API returns its large error type from test closures.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const MINIMAL: &str = "
upstream:
  url: http://mimir:8080/api/v1/push
routing:
  default_tenant: fallback
lookup:
  file: /etc/orgsplit/namespaces.yaml
";

    fn load(jail: &Jail, text: &str) -> Result<Config, ConfigError> {
        jail.create_file("c.yaml", text).unwrap();
        Config::load(Some(Path::new("c.yaml")), &Overrides::default())
    }

    #[test]
    fn defaults_fill_in() {
        Jail::expect_with(|jail| {
            let c = load(jail, MINIMAL).unwrap();
            assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
            assert_eq!(c.upstream.tenant_header, "X-Scope-OrgID");
            assert_eq!(c.upstream.timeout, Duration::from_secs(10));
            assert_eq!(c.routing.namespace_labels, ["namespace"]);
            assert_eq!(c.routing.unmapped, UnmappedPolicy::Default);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            let err = load(jail, &format!("{MINIMAL}\nupstream_url: x\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("upstream_url"), "{err}");
            assert!(err.contains("c.yaml"), "{err}");
            let err = load(jail, &MINIMAL.replace("  url:", "  ur1:"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("ur1"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("ORGSPLIT_UPSTREAM_TENANT_HEADER", "X-Tenant");
            jail.set_env("ORGSPLIT_UPSTREAM_TIMEOUT", "2s");
            jail.set_env(
                "ORGSPLIT_ROUTING_NAMESPACE_LABELS",
                "namespace, exported_namespace",
            );
            jail.set_env("ORGSPLIT_ROUTING_UNMAPPED", "drop");
            jail.set_env("ORGSPLIT_UPSTREAM_URL", "http://env/push");
            jail.set_env("ORGSPLIT_CONFIG", "ignored.yaml");
            let c = load(jail, MINIMAL).unwrap();
            assert_eq!(c.upstream.tenant_header, "X-Tenant");
            assert_eq!(c.upstream.timeout, Duration::from_secs(2));
            assert_eq!(c.upstream.url, "http://env/push");
            assert_eq!(
                c.routing.namespace_labels,
                ["namespace", "exported_namespace"]
            );
            assert_eq!(c.routing.unmapped, UnmappedPolicy::Drop);
            let flags = Overrides {
                upstream_url: Some("http://flag/push".into()),
                ..Default::default()
            };
            let c = Config::load(Some(Path::new("c.yaml")), &flags).unwrap();
            assert_eq!(c.upstream.url, "http://flag/push");

            jail.set_env("ORGSPLIT_UPSTREAM_TYPO", "1");
            let err = load(jail, MINIMAL).unwrap_err().to_string();
            assert!(err.contains("typo") && err.contains("ORGSPLIT_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_combinations_are_explained() {
        Jail::expect_with(|jail| {
            let err = load(
                jail,
                &MINIMAL.replace("default_tenant: fallback", "unmapped: default"),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("default_tenant is empty"), "{err}");
            let err = load(jail, &MINIMAL.replace("fallback", "a/b"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("default_tenant"), "{err}");
            let err = load(jail, "routing: {unmapped: drop}\nlookup: {file: x}\n")
                .unwrap_err()
                .to_string();
            assert!(err.contains("upstream.url is required"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn operator_page_settings_are_checked_at_their_bounds() {
        Jail::expect_with(|jail| {
            let with = |ui: &str| load(jail, &format!("{MINIMAL}ui: {ui}\n"));
            assert_eq!(with("{top: 1000}").unwrap().ui.top, 1000);
            assert_eq!(with("{top: 1}").unwrap().ui.top, 1);
            for (bad, says) in [
                ("{top: 0}", "ui.top"),
                ("{top: 1001}", "ui.top"),
                ("{refresh: 500ms}", "ui.refresh"),
                ("{admins: [anonymous]}", "name a token subject"),
                ("{admins: ['anonymous:x']}", "cannot be an admin"),
                ("{admins: ['jwt:']}", "name a token subject"),
                ("{admins: ['']}", "name a token subject"),
            ] {
                let err = with(bad).unwrap_err().to_string();
                assert!(err.contains(says), "{bad}: {err}");
            }
            let ok = with("{admins: [ops, 'mtls:grafana', 'basic:alice']}").unwrap();
            assert_eq!(ok.ui.admins.len(), 3);
            Ok(())
        });
    }

    #[test]
    fn tenant_values_are_literal_text_or_refused() {
        // A YAML value that is a number, boolean or null to YAML is refused
        // with a hint, never coerced (0x1f would become the tenant "31").
        for v in ["0x1f", "1e3", "0o17", "true", "null", "~", ".inf"] {
            Jail::expect_with(|jail| {
                let text =
                    MINIMAL.replace("default_tenant: fallback", &format!("default_tenant: {v}"));
                let err = load(jail, &text).unwrap_err().to_string();
                assert!(
                    err.contains("default_tenant") && err.contains("quote"),
                    "{v}: {err}"
                );
                let text =
                    MINIMAL.replace("routing:\n", &format!("routing:\n  tenant_prefix: {v}\n"));
                let err = load(jail, &text).unwrap_err().to_string();
                assert!(
                    err.contains("tenant_prefix") && err.contains("quote"),
                    "{v}: {err}"
                );
                Ok(())
            });
        }
        // Quoted, or as text YAML does not resolve, the characters are kept.
        Jail::expect_with(|jail| {
            let c = load(jail, &MINIMAL.replace("fallback", "'0x1F'")).unwrap();
            assert_eq!(c.routing.default_tenant, "0x1F");
            let c = load(jail, &MINIMAL.replace("fallback", "017")).unwrap();
            assert_eq!(c.routing.default_tenant, "017");
            // From the environment, what figment cannot read as a number is
            // kept as written; what it can is refused the same way.
            jail.set_env("ORGSPLIT_ROUTING_DEFAULT_TENANT", "0x1f");
            jail.set_env("ORGSPLIT_ROUTING_TENANT_PREFIX", "1e3-");
            let c = load(jail, MINIMAL).unwrap();
            assert_eq!(c.routing.default_tenant, "0x1f");
            assert_eq!(c.routing.tenant_prefix, "1e3-");
            jail.set_env("ORGSPLIT_ROUTING_DEFAULT_TENANT", "017");
            let err = load(jail, MINIMAL).unwrap_err().to_string();
            assert!(err.contains("quote"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn effective_config_round_trips() {
        Jail::expect_with(|jail| {
            let c = load(jail, MINIMAL).unwrap();
            let printed = c.to_yaml();
            assert!(printed.contains("timeout: 10s"), "{printed}");
            let again = load(jail, &printed).unwrap();
            assert_eq!(c, again);
            Ok(())
        });
    }
}
