//! The read path: query, rules, alerts and logs APIs, proxied with the
//! tenant taken from the credential.
//!
//! ```text
//!  request ─► path::canonical (no dot segment, encoded separator, empty
//!             segment or control byte at any decoding depth) ─► 404, never proxied
//!          ─► classify (method, path) ─► not a read route: 404, never proxied
//!          ─► authenticate (401) ─► may read? may change rules? (403)
//!          ─► tenant: the principal's only one | X-Scope-OrgID if allowed | a|b (read.federation)
//!          ─► upstream (query-frontend | ruler | alertmanager | Loki): the client's
//!             X-Scope-OrgID, Authorization, Cookie and hop-by-hop headers removed,
//!             orgsplit's tenant header set ─► response streamed back as it arrives
//!  Loki tail (WebSocket) ─► upgrade on both sides ─► bytes copied both ways
//! ```
//!
//! Invariants:
//! - the tenant header the upstream sees is always the one set here, from
//!   what the principal may read; nothing the client wrote in a tenant
//!   header reaches an upstream unless it names organizations the principal
//!   may read;
//! - the path the upstream sees is the one that was classified, and it
//!   cannot mean another path to anything that decodes or normalises it
//!   (see [`path`]).

pub mod path;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::TokioIo;

use crate::auth::{AuthMode, Authenticator, PeerCert, Principal};
use crate::config;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::tenant::{Allowance, TenantId};
use path::PathRefusal;

/// Where a read request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRoute {
    /// `/prometheus/api/v1/...` queries → query-frontend.
    Query,
    /// Rules and alerts → ruler.
    Ruler,
    /// `/alertmanager/...`, `/api/v1/alerts` → alertmanager.
    Alertmanager,
    /// Loki's read API.
    Loki,
}

impl ReadRoute {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadRoute::Query => "query",
            ReadRoute::Ruler => "ruler",
            ReadRoute::Alertmanager => "alertmanager",
            ReadRoute::Loki => "loki",
        }
    }
}

/// A request's route, and whether it changes state (rules, silences,
/// alertmanager configuration) rather than reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub route: ReadRoute,
    pub changes: bool,
}

/// The Prometheus API endpoints served by the query-frontend (after
/// `/prometheus/api/v1/`).
const QUERY_ENDPOINTS: [&str; 12] = [
    "query",
    "parse_query",
    "query_range",
    "query_exemplars",
    "series",
    "labels",
    "metadata",
    "read",
    "status/buildinfo",
    "format_query",
    "cardinality/label_names",
    "cardinality/label_values",
];

/// Loki read endpoints (after `/loki/api/v1/`).
const LOKI_ENDPOINTS: [&str; 13] = [
    "detected_labels",
    "detected_fields",
    "patterns",
    "format_query",
    "query",
    "query_range",
    "labels",
    "series",
    "tail",
    "index/stats",
    "index/volume",
    "index/volume_range",
    "status/buildinfo",
];

/// The route of a request, or `None`: not a read route (404).
pub fn classify(method: &Method, path: &str) -> Option<Classified> {
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let query_method = reading || *method == Method::POST;
    let read = |route| {
        Some(Classified {
            route,
            changes: false,
        })
    };
    if let Some(rest) = path.strip_prefix("/prometheus/api/v1/") {
        if matches!(rest, "rules" | "alerts") {
            return if reading {
                read(ReadRoute::Ruler)
            } else {
                None
            };
        }
        let known = QUERY_ENDPOINTS.contains(&rest)
            || label_values(rest)
            || rest == "cardinality/active_series";
        return (known && query_method).then_some(Classified {
            route: ReadRoute::Query,
            changes: false,
        });
    }
    if path == "/prometheus/config/v1/rules" || path.starts_with("/prometheus/config/v1/rules/") {
        return match *method {
            Method::GET | Method::HEAD => read(ReadRoute::Ruler),
            Method::POST | Method::DELETE => Some(Classified {
                route: ReadRoute::Ruler,
                changes: true,
            }),
            _ => None,
        };
    }
    if path == "/alertmanager" || path.starts_with("/alertmanager/") || path == "/api/v1/alerts" {
        return Some(Classified {
            route: ReadRoute::Alertmanager,
            changes: !reading,
        });
    }
    if let Some(rest) = path.strip_prefix("/loki/api/v1/") {
        let known = LOKI_ENDPOINTS.contains(&rest) || label_values(rest);
        return (known && query_method).then_some(Classified {
            route: ReadRoute::Loki,
            changes: false,
        });
    }
    None
}

/// `label/<name>/values`.
fn label_values(rest: &str) -> bool {
    rest.strip_prefix("label/")
        .and_then(|r| r.strip_suffix("/values"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// An upstream's base: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
struct Target {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
}

impl Target {
    fn parse(what: &str, url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{what} {url:?}: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(format!("{what} {url:?}: not an absolute http(s) URL"));
        };
        Ok(Self {
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The upstream URI of a request: this target's prefix, the path that
    /// was classified, and the query as the client sent it.
    fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut path_and_query = String::with_capacity(
            self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        path_and_query.push_str(&self.prefix);
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// The read path's own state: who may read, a pooled client and the
/// upstream of each route. Shares the authenticator and the metrics with
/// the push path; nothing else.
pub struct ReadProxy {
    auth: Arc<Authenticator>,
    metrics: Metrics,
    /// `limits.body_timeout`: the time a request body has to arrive.
    body_timeout: Duration,
    client: Pool<HttpsConnector<HttpConnector>, Body>,
    /// orgsplit's own upstream credentials, if any (the client's never pass).
    credentials: Credentials,
    targets: [Option<Target>; 4],
    tenant_header: HeaderName,
    federation: bool,
    /// Response-header timeout of each route, in [`ReadRoute`] order.
    timeouts: [Duration; 4],
    max_body_bytes: usize,
}

impl ReadProxy {
    /// Builds the proxy from `read` (the Mimir parts default to the origin
    /// of `upstream.url`, as a monolithic Mimir or its gateway serves them).
    /// `read.loki` defaults to the origin of `loki_push_url` (the Loki the
    /// pushes go to), if set.
    pub fn new(
        config: &config::Config,
        auth: Arc<Authenticator>,
        metrics: Metrics,
        credentials: Credentials,
    ) -> Result<Self, String> {
        let (read, upstream, loki_push_url) =
            (&config.read, &config.upstream, &config.loki.upstream.url);
        let origin = Target::parse("upstream.url", &upstream.url)?;
        let origin = Target {
            prefix: String::new(),
            ..origin
        };
        let target = |what: &str, url: &Option<String>, default: Option<&Target>| match url {
            Some(u) if !u.is_empty() => Target::parse(what, u).map(Some),
            _ => Ok(default.cloned()),
        };
        let targets = [
            target("read.query_frontend", &read.query_frontend, Some(&origin))?,
            target("read.ruler", &read.ruler, Some(&origin))?,
            target("read.alertmanager", &read.alertmanager, Some(&origin))?,
            target(
                "read.loki",
                &read.loki,
                (!loki_push_url.is_empty())
                    .then(|| Target::parse("loki.upstream.url", loki_push_url))
                    .transpose()?
                    .map(|t| Target {
                        prefix: String::new(),
                        ..t
                    })
                    .as_ref(),
            )?,
        ];
        let client = crate::forward::client::pool::<Body>(upstream).map_err(|e| e.to_string())?;
        Ok(Self {
            auth,
            metrics,
            body_timeout: config.limits.body_timeout,
            client,
            credentials,
            targets,
            tenant_header: HeaderName::from_bytes(upstream.tenant_header.as_bytes())
                .map_err(|e| e.to_string())?,
            federation: read.federation,
            timeouts: [
                read.timeouts.query,
                read.timeouts.ruler,
                read.timeouts.alertmanager,
                read.timeouts.loki,
            ],
            max_body_bytes: read.max_body_bytes,
        })
    }

    fn target(&self, route: ReadRoute) -> Option<&Target> {
        self.targets[route as usize].as_ref()
    }
}

/// Every request that is not a push, health or metrics request.
pub async fn handle(
    State(proxy): State<Arc<ReadProxy>>,
    peer: Option<Extension<Arc<PeerCert>>>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let uri = request.uri().clone();
    let classified = path::canonical(uri.path()).and_then(|path| {
        classify(request.method(), path)
            .map(|class| (path, class))
            .ok_or(PathRefusal::NotARoute)
    });
    let (path, class) = match classified {
        Ok(c) => c,
        Err(why) => {
            proxy.metrics.read_refused(why.as_str());
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    };
    let to = Forward {
        class,
        path,
        query: uri.query(),
    };
    let response = forward(&proxy, peer.as_ref().map(|Extension(p)| &**p), to, request).await;
    proxy.metrics.read(
        class.route.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Where a classified request goes: its route, and the path and query the
/// upstream receives.
struct Forward<'a> {
    class: Classified,
    path: &'a str,
    query: Option<&'a str>,
}

async fn forward(
    proxy: &ReadProxy,
    peer: Option<&PeerCert>,
    to: Forward<'_>,
    mut request: Request,
) -> Response {
    let class = to.class;
    let Some(target) = proxy.target(class.route) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no upstream for {} reads (read.{})",
                class.route.as_str(),
                class.route.as_str()
            ),
        );
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let principal = match proxy.auth.authenticate(authorization, peer).await {
        Ok(p) => p,
        Err(_) => return crate::answer::unauthorized(proxy.auth.challenges()),
    };
    if let Err(refusal) = authorize(&principal, class) {
        return match refusal {
            // An anonymous caller that may read nothing is asked for a
            // credential (Grafana then shows its login fields).
            None => crate::answer::unauthorized(proxy.auth.challenges()),
            Some(message) => refuse(StatusCode::FORBIDDEN, message),
        };
    }
    let tenant = match select_tenant(
        &principal.read,
        request.headers().get(&proxy.tenant_header),
        proxy.federation,
    ) {
        Ok(t) => t,
        Err((status, message)) => return refuse(status, message),
    };

    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > proxy.max_body_bytes as u64) {
        return too_large_body(proxy.max_body_bytes);
    }
    let upgrade = is_upgrade(request.headers()) && class.route == ReadRoute::Loki;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    let (parts, body) = request.into_parts();
    let Ok(uri) = target.uri(to.path, to.query) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "cannot build the upstream URL".into(),
        );
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade);
    for name in [header::HOST, header::AUTHORIZATION, header::COOKIE] {
        headers.remove(name);
    }
    headers.remove(&proxy.tenant_header);
    headers.insert(proxy.tenant_header.clone(), tenant);
    if let Some(auth) = proxy.credentials.header() {
        headers.insert(header::AUTHORIZATION, (*auth).clone());
    }
    // Request bodies (rule groups, silences, remote-read and form queries)
    // are small: they are read whole, within the limit and the body
    // timeout, before anything is sent, so an oversized one reaches no
    // upstream. Answers are streamed.
    let body = if upgrade {
        Body::empty()
    } else {
        let limited = http_body_util::Limited::new(body, proxy.max_body_bytes);
        let collect = http_body_util::BodyExt::collect(limited);
        match tokio::time::timeout(proxy.body_timeout, collect).await {
            Ok(Ok(collected)) => Body::from(collected.to_bytes()),
            Ok(Err(e)) if too_large(&*e) => return too_large_body(proxy.max_body_bytes),
            Ok(Err(_)) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "reading the request body failed".into(),
                )
            }
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive within limits.body_timeout".into(),
                )
            }
        }
    };
    let mut upstream_request = http::Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = headers;

    let mut response = match tokio::time::timeout(
        proxy.timeouts[class.route as usize],
        proxy.client.request(upstream_request),
    )
    .await
    {
        Err(_) => {
            return refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the {0} upstream did not answer within read.timeouts.{0}",
                    class.route.as_str()
                ),
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(route = class.route.as_str(), error = %e, "read upstream unreachable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("the {} upstream is unreachable", class.route.as_str()),
            );
        }
        Ok(Ok(r)) => r,
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            });
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // Streamed: each chunk reaches the client as the upstream sends it.
    Response::from_parts(parts, Body::new(body))
}

/// Whether `principal` may make this request: `Err(None)` when it is an
/// anonymous caller that may read nothing (ask for a credential),
/// `Err(Some(why))` otherwise.
fn authorize(principal: &Principal, class: Classified) -> Result<(), Option<String>> {
    if principal.read.is_empty() {
        return Err((principal.mode != AuthMode::Anonymous)
            .then(|| format!("{:?} may not read any organization", &*principal.name)));
    }
    if class.changes && !principal.rules {
        return Err(Some(format!(
            "{:?} may read but not change rules or alertmanager state",
            &*principal.name
        )));
    }
    Ok(())
}

/// The tenant header value for the upstream: the principal's only tenant
/// (whatever the client wrote), or the tenant(s) the client names if the
/// principal may read them all.
pub fn select_tenant(
    read: &Allowance,
    asked: Option<&HeaderValue>,
    federation: bool,
) -> Result<HeaderValue, (StatusCode, String)> {
    if let Some(only) = read.single() {
        return Ok(
            HeaderValue::from_maybe_shared(only.shared()).expect("tenant IDs are header-safe")
        );
    }
    let Some(asked) = asked else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("this credential may read several organizations ({read}); name one in X-Scope-OrgID"),
        ));
    };
    let asked_text = asked.to_str().map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            "X-Scope-OrgID is not text".to_string(),
        )
    })?;
    let members: Vec<&str> = asked_text.split('|').collect();
    if members.len() > 1 && !federation {
        return Err((
            StatusCode::FORBIDDEN,
            "querying several organizations at once is off (read.federation)".into(),
        ));
    }
    for member in &members {
        TenantId::new(member).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("X-Scope-OrgID {member:?}: {e}"),
            )
        })?;
        if !read.allows(member) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("this credential may not read organization {member:?}"),
            ));
        }
    }
    Ok(asked.clone())
}

fn too_large_body(limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than read.max_body_bytes ({limit})"),
    )
}

fn refuse(status: StatusCode, mut message: String) -> Response {
    message.push('\n');
    (status, message).into_response()
}

/// `Connection: upgrade` with an `Upgrade` header (a WebSocket handshake).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1), and those the
/// `Connection` header names; an upgrade keeps `Connection` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Whether a client error came from the request body limit.
fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_routes_are_proxied() {
        let c = |m: Method, p: &str| classify(&m, p);
        let q = Some(Classified {
            route: ReadRoute::Query,
            changes: false,
        });
        assert_eq!(c(Method::GET, "/prometheus/api/v1/query"), q);
        assert_eq!(c(Method::POST, "/prometheus/api/v1/query_range"), q);
        assert_eq!(c(Method::GET, "/prometheus/api/v1/label/job/values"), q);
        assert_eq!(c(Method::GET, "/prometheus/api/v1/status/buildinfo"), q);
        assert_eq!(c(Method::GET, "/prometheus/api/v1/label/a/b/values"), None);
        assert_eq!(c(Method::DELETE, "/prometheus/api/v1/query"), None);
        assert_eq!(
            c(Method::GET, "/prometheus/api/v1/admin/tsdb/delete_series"),
            None
        );
        assert_eq!(c(Method::GET, "/prometheus/api/v1/push"), None);
        assert_eq!(
            c(Method::GET, "/prometheus/api/v1/rules").map(|c| c.route),
            Some(ReadRoute::Ruler)
        );
        let change = c(Method::POST, "/prometheus/config/v1/rules/ns").unwrap();
        assert!(change.changes && change.route == ReadRoute::Ruler);
        assert!(
            !c(Method::GET, "/prometheus/config/v1/rules")
                .unwrap()
                .changes
        );
        assert!(
            c(Method::POST, "/alertmanager/api/v2/silences")
                .unwrap()
                .changes
        );
        assert!(
            !c(Method::GET, "/alertmanager/api/v2/alerts")
                .unwrap()
                .changes
        );
        assert!(c(Method::POST, "/api/v1/alerts").unwrap().changes);
        assert_eq!(
            c(Method::GET, "/loki/api/v1/tail").map(|c| c.route),
            Some(ReadRoute::Loki)
        );
        assert_eq!(c(Method::POST, "/loki/api/v1/push"), None);
        assert_eq!(c(Method::GET, "/"), None);
        assert_eq!(c(Method::GET, "/api/v1/query"), None);
    }

    #[test]
    fn the_tenant_comes_from_what_the_principal_may_read() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        let one = Allowance::parse(&["acme"]).unwrap();
        // The only tenant, whatever the client wrote.
        assert_eq!(
            select_tenant(&one, Some(&h("globex")), true).unwrap(),
            "acme"
        );
        assert_eq!(select_tenant(&one, None, false).unwrap(), "acme");
        let several = Allowance::parse(&["acme", "shop-*"]).unwrap();
        assert_eq!(
            select_tenant(&several, Some(&h("shop-1")), false).unwrap(),
            "shop-1"
        );
        assert_eq!(
            select_tenant(&several, Some(&h("globex")), false)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(select_tenant(&several, None, false).unwrap_err().0, 400);
        assert_eq!(
            select_tenant(&several, Some(&h("acme|shop-1")), false)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            select_tenant(&several, Some(&h("acme|shop-1")), true).unwrap(),
            "acme|shop-1"
        );
        assert_eq!(
            select_tenant(&several, Some(&h("acme|globex")), true)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            select_tenant(&several, Some(&h("acme|")), true)
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            select_tenant(&Allowance::Any, Some(&h("x")), false).unwrap(),
            "x"
        );
    }
}
