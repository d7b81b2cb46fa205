//! Client certificates: who a TLS peer is, and what it may write.
//!
//! ```text
//!  TLS handshake ─► DeferredVerifier: proof of the key checked, the chain not yet
//!  connection accepted ─► ClientCa::identify(chain): chain checked against
//!                         client_ca_file as it is now (re-read when it changes)
//!                           ├─ trusted ─► names: DNS / URI / email SANs, subject CN
//!                           └─ not     ─► Untrusted (every request on it: 401)
//!  request ─► first name listed in auth.mtls.principals ─► Principal
//! ```
//!
//! The chain is checked after the handshake rather than during it so that a
//! certificate from another CA gets an HTTP 401 (with a reason in the log
//! and the failure counter) instead of a TLS alert the sender's log
//! explains poorly. The handshake still proves that the peer holds the
//! certificate's private key; nothing about a peer is believed until its
//! chain is verified with the same webpki verifier rustls would use.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::watch::Watched;

/// What a TLS connection's client certificate says, checked once per
/// connection.
#[derive(Debug, Clone)]
pub enum PeerCert {
    /// No certificate was presented.
    None,
    /// A certificate that chains to the client CA, with its names (SANs
    /// first, then the subject CN).
    Trusted(Vec<String>),
    /// A certificate that does not: the reason, for the log.
    Untrusted(String),
}

/// The client CA bundle, followed: each new connection's chain is checked
/// against the bundle as it is now (cert-manager and similar rotate CAs in
/// place). A bundle that changed but does not load keeps the last good one
/// (counted in `orgsplit_auth_reload_errors_total`).
#[derive(Clone)]
pub struct ClientCa {
    roots: Arc<Watched<CaRoots>>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCa")
    }
}

/// One version of the bundle: webpki's verifier over its certificates.
struct CaRoots {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl CaRoots {
    fn load(paths: &[PathBuf]) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let path = &paths[0];
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate", path.display()));
        }
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { webpki })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClientCa {
    /// Reads the CA bundle (PEM); `on_error` is called for each later
    /// version that does not load.
    pub fn load(
        path: &std::path::Path,
        on_error: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let roots = Watched::new(
            "auth.mtls.client_ca_file",
            vec![path.to_owned()],
            CaRoots::load,
        )?
        .on_error(on_error);
        Ok(Self {
            roots: Arc::new(roots),
        })
    }

    /// Starts the once-a-second check of the bundle (inside the runtime);
    /// each new connection also checks it (one `stat`).
    pub fn follow(&self) {
        super::watch::follow(&self.roots);
    }

    /// The verifier for the listener's TLS config: asks for a certificate,
    /// does not require one, checks the handshake signature, and leaves the
    /// chain to [`ClientCa::identify`]. It names no acceptable CAs to the
    /// client (the bundle may change under a running listener); clients
    /// then offer the certificate they have.
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let provider = provider();
        Arc::new(DeferredVerifier {
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// Checks a connection's certificate chain (end entity first) against
    /// the bundle as it is now.
    pub fn identify(&self, chain: Option<&[CertificateDer<'_>]>) -> PeerCert {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerCert::None;
        };
        let roots = self.roots.get();
        if let Err(e) = roots
            .webpki
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            return PeerCert::Untrusted(e.to_string());
        }
        match names(leaf) {
            Ok(names) => PeerCert::Trusted(names),
            Err(e) => PeerCert::Untrusted(e),
        }
    }
}

/// SANs (DNS, URI, email) then the subject CN of a certificate.
fn names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => {
                    out.push(n.to_string())
                }
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            out.push(cn.to_string());
        }
    }
    Ok(out)
}

/// Asks for a client certificate and checks that the peer holds its key;
/// the chain is checked after the handshake (see the module doc).
#[derive(Debug)]
struct DeferredVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred to `ClientCa::identify`, before anything is trusted.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
