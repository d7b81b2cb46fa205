//! The upstream HTTP client: for `http://` upstreams the hand-written
//! HTTP/1.1 client of [`super::h1`]; for `https://` ones hyper's pooled
//! client with rustls, and nothing else on the way.
//!
//! Why not reqwest: per request it parses and clones a `Url`, builds a
//! fresh header map, boxes its futures and wraps the response; with one
//! upstream request per tenant per push, that was a large part of
//! orgsplit's CPU above the snappy floor. Here each request is a handful of
//! shared-bytes clones (URI, header values, the tenant ID) and hyper's pool
//! checkout. TLS upstreams speak HTTP/2 when they offer it (ALPN); plain
//! ones HTTP/1.1 with keep-alive.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reply::{ExchangeFailure as Failure, UpstreamReply, MAX_ANSWER_BYTES};
use super::ForwardError;
use crate::config;

/// The pooled client and the parts of every request that never change.
pub(super) struct Client {
    /// Plain-HTTP upstreams.
    lean: Option<super::h1::Http1Client>,
    /// TLS upstreams (HTTP/2 when offered).
    pool: Pool<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    tenant_header: HeaderName,
}

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("orgsplit/", env!("CARGO_PKG_VERSION")));

impl Client {
    pub fn new(cfg: &config::Upstream) -> Result<Self, ForwardError> {
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ForwardError::Url(e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(ForwardError::Url(format!(
                    "{}: not an http(s) URL",
                    cfg.url
                )))
            }
        }
        let tenant_header = HeaderName::from_bytes(cfg.tenant_header.as_bytes())
            .map_err(|e| ForwardError::Header(e.to_string()))?;
        let pool = pool(cfg)?;
        let lean = (uri.scheme_str() == Some("http")).then(|| {
            super::h1::Http1Client::new(
                &uri,
                tenant_header.clone(),
                &USER_AGENT,
                connect_timeout(cfg),
                cfg.max_idle_per_host,
            )
        });
        Ok(Self {
            lean,
            pool,
            uri,
            tenant_header,
        })
    }

    /// POSTs `body` for `tenant` and reads a prefix of the answer. The
    /// caller bounds the time (dropping the future closes the connection).
    pub async fn post(
        &self,
        tenant: HeaderValue,
        headers: &[(HeaderName, HeaderValue)],
        authorization: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<UpstreamReply, Failure> {
        if let Some(lean) = &self.lean {
            return lean
                .post(tenant.as_bytes(), headers, authorization.as_ref(), &body)
                .await;
        }
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let h = request.headers_mut();
        h.reserve(headers.len() + 3);
        h.insert(self.tenant_header.clone(), tenant);
        h.insert(http::header::USER_AGENT, USER_AGENT.clone());
        for (name, value) in headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(auth) = authorization {
            h.insert(http::header::AUTHORIZATION, auth);
        }
        {
            let response = self
                .pool
                .request(request)
                .await
                .map_err(|e| Failure::Unreachable(error_chain(&e)))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let written = crate::answer::Written::from_headers(|name| {
                response.headers().get(name).map(HeaderValue::as_bytes)
            });
            // Read at most a small prefix of the answer, whatever its status
            // or length: an upstream (or something posing as one) must not
            // be able to make orgsplit buffer a large body. A longer body is
            // not drained; dropping it closes its connection instead.
            let mut body = response.into_body();
            let mut prefix = Vec::new();
            while prefix.len() < MAX_ANSWER_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = MAX_ANSWER_BYTES - prefix.len();
                            prefix.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(e)) if !status.is_success() => {
                        prefix.extend_from_slice(error_chain(&e).as_bytes());
                        break;
                    }
                    // The push was accepted; only the (ignored) body failed.
                    Some(Err(_)) | None => break,
                }
            }
            Ok(UpstreamReply {
                status: status.as_u16(),
                retry_after,
                prefix,
                written,
            })
        }
    }
}

/// A pooled hyper client over rustls for requests with bodies of type `B`,
/// configured from `upstream` (TLS, timeouts, idle connections): the push
/// forwarder's and the read proxy's.
pub(crate) fn pool<B>(
    cfg: &config::Upstream,
) -> Result<Pool<HttpsConnector<HttpConnector>, B>, ForwardError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout(cfg)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(&cfg.tls, &cfg.url)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Pool::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(cfg.max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// How long a new upstream connection may take: the request timeout, but
/// at most 5 s.
fn connect_timeout(cfg: &config::Upstream) -> Duration {
    cfg.timeout.min(Duration::from_secs(5))
}

/// rustls settings for the upstream: the bundled web PKI roots plus
/// `tls.ca_file`, an optional client certificate, and (loudly) no
/// verification at all when asked.
fn tls_config(tls: &config::ClientTls, url: &str) -> Result<rustls::ClientConfig, ForwardError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &tls.ca_file {
        let certs = pem_certs(ca)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ForwardError::Tls(format!("{}: {e}", ca.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ForwardError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = pem_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ForwardError::Tls(format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                ForwardError::Tls(format!("{} / {}: {e}", cert.display(), key.display()))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    if tls.insecure_skip_verify {
        tracing::warn!(
            upstream = %url,
            "upstream.tls.insecure_skip_verify is set: the upstream's certificate is NOT \
             verified, so anyone on the path can read and alter every tenant's data"
        );
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NoVerify(provider)));
    }
    return Ok(config);

    fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ForwardError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect())
            .map_err(|e| ForwardError::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ForwardError::Tls(format!(
                "{}: no certificate",
                path.display()
            )));
        }
        Ok(certs)
    }
}

/// Accepts any server certificate (`insecure_skip_verify`), but still checks
/// the handshake signatures, so the connection is at least consistent.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The error and its causes on one line ("client error (Connect): tcp
/// connect error: Connection refused"), since the top-level message alone
/// is vague.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
