//! The operator page: which organizations exist and which namespaces feed
//! each, what each tenant sent in the last 15 minutes and how the upstream
//! answered, which namespaces have no organization, what authentication
//! trusts and who failed it. Server-rendered HTML that needs no
//! JavaScript and reloads itself, and the same data as JSON for scripts.
//!
//! ```text
//!  GET /ui/             ─► may see? ─► page::PageData ─► html::render
//!  GET /ui/api/tenants  ─► may see? ─► page::PageData ─► JSON
//!  may see?  credential given ─► authenticate (401) ─► in ui.admins? (else 403)
//!            none ─► loopback peer and ui.loopback? (else 401)
//! ```
//!
//! It has its own state ([`OperatorPage`]): the org table, the
//! [`Activity`] the push path and authentication record into, and the
//! authenticator, all shared, read only. Nothing here is on the push path.
//! Only these two exact paths are served; anything else under `/ui` (a
//! dot segment, an empty segment, an escape) is not a route and falls to
//! the read path, which refuses it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;

mod html;
pub mod page;

use crate::activity::Activity;
use crate::auth::{AuthMode, Authenticator, PeerCert, Principal};
use crate::config::{self, Config, RoutingMode};
use crate::table::OrgTable;

pub use page::PageData;

/// The page's state.
pub struct OperatorPage {
    settings: config::Ui,
    table: OrgTable,
    activity: Arc<Activity>,
    auth: Arc<Authenticator>,
    /// Where the table comes from, in words.
    source: String,
    routing: page::RoutingView,
}

impl OperatorPage {
    pub fn new(
        config: &Config,
        table: OrgTable,
        activity: Arc<Activity>,
        auth: Arc<Authenticator>,
    ) -> Self {
        let r = &config.routing;
        let source = match (&config.lookup.file, &config.lookup.kubernetes, r.mode) {
            (_, _, RoutingMode::Label) => {
                format!(
                    "none: routing.mode is label (tenant from {:?})",
                    r.tenant_label
                )
            }
            (_, _, RoutingMode::Principal) => {
                "none: routing.mode is principal (tenant from the credential)".into()
            }
            (Some(file), _, _) => format!("file {}", file.display()),
            (None, Some(k), _) => {
                let mut from = Vec::new();
                if !k.org_label.is_empty() {
                    from.push(format!("label {}", k.org_label));
                }
                if !k.org_annotation.is_empty() {
                    from.push(format!("annotation {}", k.org_annotation));
                }
                if !k.label_selector.is_empty() {
                    from.push(format!("selector {}", k.label_selector));
                }
                format!("kubernetes namespaces ({})", from.join(", "))
            }
            (None, None, _) => "none".into(),
        };
        let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
        Self {
            settings: config.ui.clone(),
            table,
            activity,
            auth,
            source,
            routing: page::RoutingView {
                mode: lower(&r.mode),
                unmapped: lower(&r.unmapped),
                default_tenant: Some(r.default_tenant.clone()).filter(|t| !t.is_empty()),
                outside_allowance: lower(&config.auth.outside_allowance),
            },
        }
    }

    /// Whether a principal is one of `ui.admins`.
    fn is_admin(&self, p: &Principal) -> bool {
        p.mode != AuthMode::Anonymous
            && self
                .settings
                .admins
                .iter()
                .any(|a| match a.split_once(':') {
                    Some((mode, name)) if ["jwt", "basic", "mtls"].contains(&mode) => {
                        mode == p.mode.as_str() && name == &*p.name
                    }
                    _ => a == &*p.name,
                })
    }

    /// May this request see the page? The refusal otherwise.
    async fn admit(
        &self,
        peer: Option<SocketAddr>,
        cert: Option<&PeerCert>,
        headers: &HeaderMap,
    ) -> Result<(), Response> {
        let authorization = headers.get(header::AUTHORIZATION);
        let presented = authorization.is_some() || matches!(cert, Some(PeerCert::Trusted(_)));
        if !presented {
            let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
            if self.settings.loopback && loopback {
                return Ok(());
            }
            return Err(self.unauthorized());
        }
        match self
            .auth
            .authenticate(authorization.map(HeaderValue::as_bytes), cert)
            .await
        {
            Ok(p) if self.is_admin(&p) => Ok(()),
            Ok(p) if p.mode == AuthMode::Anonymous => Err(self.unauthorized()),
            Ok(p) => Err(plain(
                StatusCode::FORBIDDEN,
                format!("{:?} may not see the operator page (ui.admins)\n", &*p.name),
            )),
            Err(_) => Err(self.unauthorized()),
        }
    }

    fn unauthorized(&self) -> Response {
        let mut response = plain(
            StatusCode::UNAUTHORIZED,
            "the operator page needs an admin credential (ui.admins), or a loopback caller (ui.loopback)\n".into(),
        );
        for challenge in self.auth.challenges() {
            response.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut response = (status, message).into_response();
    secure(response.headers_mut());
    response
}

/// Headers every answer of the page carries: not cached, not framed, no
/// script or outside resource may load (the page has none).
fn secure(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The page's routes (exact paths only), with its state.
pub fn routes(page: Arc<OperatorPage>) -> axum::Router {
    if !page.settings.enabled {
        return axum::Router::new();
    }
    axum::Router::new()
        .route("/ui", get(|| async { redirect_to_page() }))
        .route("/ui/", get(serve_html))
        .route("/ui/api/tenants", get(serve_json))
        .with_state(page)
}

fn redirect_to_page() -> Response {
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    response
}

/// The caller's address, which the server adds to `/ui` requests.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;
type Cert = Option<Extension<Arc<PeerCert>>>;

async fn serve_html(
    State(page): State<Arc<OperatorPage>>,
    peer: Peer,
    cert: Cert,
    headers: HeaderMap,
) -> Response {
    serve(
        &page,
        peer,
        cert,
        &headers,
        "text/html; charset=utf-8",
        |data| html::render(data, page.settings.refresh).into_bytes(),
    )
    .await
}

async fn serve_json(
    State(page): State<Arc<OperatorPage>>,
    peer: Peer,
    cert: Cert,
    headers: HeaderMap,
) -> Response {
    serve(&page, peer, cert, &headers, "application/json", |data| {
        serde_json::to_vec(data).unwrap_or_default()
    })
    .await
}

/// The page's data in one form, to a caller that may see it.
async fn serve(
    page: &OperatorPage,
    peer: Peer,
    cert: Cert,
    headers: &HeaderMap,
    content_type: &'static str,
    render: impl FnOnce(&PageData) -> Vec<u8>,
) -> Response {
    if let Err(refused) = page
        .admit(peer.map(|c| c.0 .0), cert.as_deref().map(|c| &**c), headers)
        .await
    {
        return refused;
    }
    let mut response = Response::new(Body::from(render(&page.data())));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    response
}
