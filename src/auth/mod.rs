//! Who is sending, and which organizations it may write.
//!
//! ```text
//!  request ─► Authorization: Bearer ─► jwt (HS256 secret | RS256/ES256 trust store, JWKS)
//!          ─► Authorization: Basic  ─► basic (users file: argon2 / bcrypt hash, allowance)
//!          ─► client certificate    ─► mtls (checked once per connection; name → allowance)
//!          ─► nothing               ─► anonymous (if enabled, with its allowance)
//!  ─► Principal { mode, name, allowance }  or  Failure { mode, reason } (counted, logged, 401)
//!  route ─► each series' organization must be in the allowance (403 or drop)
//! ```
//!
//! Invariants:
//! - the tenant a request may write comes only from what was verified here
//!   (a token's claims, the users file, the certificate's names, the
//!   anonymous allowance), never from a header the caller wrote;
//! - a sender hears only "401" for any failure; the reason goes to the
//!   failure counter and a rate-limited log line;
//! - keys, the secret, the users file and the client CA bundle are followed
//!   (see [`watch`]): a key added works at once, a key removed stops working
//!   at once.
//!
//! This module knows nothing of HTTP: the handler hands it the
//! `Authorization` header's bytes and the connection's [`PeerCert`].

pub mod basic;
pub mod jwt;
pub mod keys;
pub mod mtls;
pub mod revoked;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::sync::Semaphore;

use crate::config;
use crate::signals::AuthSignals;
use crate::tenant::Allowance;

pub use mtls::{ClientCa, PeerCert};

/// How a principal was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Anonymous,
    Jwt,
    Basic,
    Mtls,
}

impl AuthMode {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Anonymous => "anonymous",
            AuthMode::Jwt => "jwt",
            AuthMode::Basic => "basic",
            AuthMode::Mtls => "mtls",
        }
    }
}

/// An authenticated sender.
#[derive(Debug, Clone)]
pub struct Principal {
    pub mode: AuthMode,
    /// The token subject, user or certificate name (for logs).
    pub name: Arc<str>,
    /// The organizations it may write.
    pub allowance: Arc<Allowance>,
    /// The organizations it may read (queries, rules, alerts, logs).
    pub read: Arc<Allowance>,
    /// Whether it may change rules and alertmanager state (silences,
    /// configuration) of the organizations it may read.
    pub rules: bool,
}

impl Principal {
    /// The anonymous principal with allowance `*` (tools and tests that
    /// have no authentication).
    pub fn anyone() -> Self {
        Self {
            mode: AuthMode::Anonymous,
            name: "anonymous".into(),
            allowance: Arc::new(Allowance::Any),
            read: Arc::new(Allowance::Any),
            rules: true,
        }
    }
}

/// Why a request was not authenticated (the labels of
/// `orgsplit_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub mode: AuthMode,
    pub reason: &'static str,
}

/// The configured authentication modes.
pub struct Authenticator {
    anonymous: Option<Principal>,
    jwt: Option<jwt::Verifier>,
    basic: Option<Arc<watch::Watched<basic::Users>>>,
    mtls: Option<(ClientCa, HashMap<String, Arc<Allowance>>)>,
    /// Slow password hashes running at once: one per core.
    hashing: Arc<Semaphore>,
    challenges: Vec<&'static str>,
    signals: AuthSignals,
}

impl Authenticator {
    /// Loads the configured key material (an unreadable or invalid file is
    /// an error). The config was validated.
    pub fn new(cfg: &config::Auth, signals: AuthSignals) -> Result<Self, String> {
        let anonymous = cfg.anonymous.enabled.then(|| Principal {
            mode: AuthMode::Anonymous,
            name: "anonymous".into(),
            allowance: Arc::new(
                Allowance::parse(&cfg.anonymous.allowance).unwrap_or_else(|_| Allowance::none()),
            ),
            read: Arc::new(
                Allowance::parse(&cfg.anonymous.read_allowance)
                    .unwrap_or_else(|_| Allowance::none()),
            ),
            rules: false,
        });
        let jwt = match &cfg.jwt {
            Some(j) => Some(jwt::Verifier::new(j, signals.reload_errors.clone())?),
            None => None,
        };
        let basic = match &cfg.basic {
            Some(b) => {
                let errors = signals.reload_errors.clone();
                Some(Arc::new(
                    watch::Watched::new(
                        "auth.basic.users_file",
                        vec![b.users_file.clone()],
                        basic::Users::load,
                    )?
                    .on_error(move || errors.increment(1)),
                ))
            }
            None => None,
        };
        let mtls = match &cfg.mtls {
            Some(m) => {
                let errors = signals.reload_errors.clone();
                let ca = ClientCa::load(&m.client_ca_file, move || errors.increment(1))?;
                let mut principals = HashMap::new();
                for (name, entries) in &m.principals {
                    let allowance = Allowance::parse(entries)
                        .map_err(|e| format!("auth.mtls.principals.{name}: {e}"))?;
                    principals.insert(name.clone(), Arc::new(allowance));
                }
                Some((ca, principals))
            }
            None => None,
        };
        let mut challenges = Vec::new();
        if jwt.is_some() {
            challenges.push("Bearer realm=\"orgsplit\"");
        }
        if basic.is_some() {
            challenges.push("Basic realm=\"orgsplit\", charset=\"UTF-8\"");
        }
        if challenges.is_empty() {
            // Only client certificates (or nothing) would do.
            challenges.push("Certificate realm=\"orgsplit\"");
        }
        Ok(Self {
            anonymous,
            jwt,
            basic,
            mtls,
            hashing: Arc::new(Semaphore::new(crate::limits::cores())),
            challenges,
            signals,
        })
    }

    /// Starts following the key files (must run inside the runtime).
    pub fn follow(&self) {
        if let Some(j) = &self.jwt {
            j.follow();
        }
        if let Some(b) = &self.basic {
            watch::follow(b);
        }
        if let Some((ca, _)) = &self.mtls {
            ca.follow();
        }
    }

    /// The client CA, when client certificates are configured.
    pub fn client_ca(&self) -> Option<&ClientCa> {
        self.mtls.as_ref().map(|(ca, _)| ca)
    }

    /// The `WWW-Authenticate` challenges of a 401.
    pub fn challenges(&self) -> &[&'static str] {
        &self.challenges
    }

    /// Authenticates a request from its `Authorization` header and its
    /// connection's client certificate. A failure is counted and logged
    /// here; the caller answers 401.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerCert>,
    ) -> Result<Principal, Failure> {
        let result = self.identify(authorization, peer).await;
        if let Err(f) = &result {
            self.signals.failure(f.mode.as_str(), f.reason).increment(1);
            static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if crate::telemetry::rate_limit(&LAST, Duration::from_secs(10)) {
                tracing::warn!(mode = f.mode.as_str(), reason = f.reason,
                    "request refused: authentication failed (further failures for 10 s are only counted)");
            }
        }
        result
    }

    async fn identify(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerCert>,
    ) -> Result<Principal, Failure> {
        if let Some(header) = authorization {
            let (scheme, rest) = split_scheme(header);
            if scheme.eq_ignore_ascii_case(b"bearer") {
                return self.bearer(rest);
            }
            if scheme.eq_ignore_ascii_case(b"basic") {
                return self.basic(rest).await;
            }
            return Err(Failure {
                mode: AuthMode::Anonymous,
                reason: "scheme",
            });
        }
        match peer {
            Some(PeerCert::Trusted(names)) => return self.certificate(names),
            Some(PeerCert::Untrusted(why)) => {
                tracing::debug!(error = %why, "client certificate refused");
                return Err(Failure {
                    mode: AuthMode::Mtls,
                    reason: "untrusted_certificate",
                });
            }
            Some(PeerCert::None) | None => {}
        }
        self.anonymous.clone().ok_or(Failure {
            mode: AuthMode::Anonymous,
            reason: "missing",
        })
    }

    fn bearer(&self, token: &[u8]) -> Result<Principal, Failure> {
        let fail = |reason| Failure {
            mode: AuthMode::Jwt,
            reason,
        };
        let verifier = self.jwt.as_ref().ok_or(fail("disabled"))?;
        let token = std::str::from_utf8(token).map_err(|_| fail("malformed"))?;
        let verified = verifier.verify(token.trim()).map_err(fail)?;
        Ok(Principal {
            mode: AuthMode::Jwt,
            name: verified.subject.into(),
            allowance: Arc::new(verified.allowance),
            read: Arc::new(verified.read),
            rules: verified.rules,
        })
    }

    async fn basic(&self, encoded: &[u8]) -> Result<Principal, Failure> {
        let fail = |reason| Failure {
            mode: AuthMode::Basic,
            reason,
        };
        let users = self.basic.as_ref().ok_or(fail("disabled"))?.get();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| fail("malformed"))?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(fail("malformed"))?;
        let (name, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let name = std::str::from_utf8(name).map_err(|_| fail("malformed"))?;
        let principal = |user: &basic::User| Principal {
            mode: AuthMode::Basic,
            name: name.into(),
            allowance: Arc::new(user.allowance.clone()),
            read: Arc::new(user.read.clone()),
            rules: user.rules,
        };
        let known = users.get(name);
        if let Some(user) = known.filter(|u| u.remembered(password)) {
            return Ok(principal(user));
        }
        // The slow hash, off the async workers, a core's worth at a time;
        // an unknown name pays it too (against a decoy), so that the time
        // of a 401 does not tell which names exist.
        let reason = if known.is_some() {
            "bad_password"
        } else {
            "unknown_user"
        };
        let _permit = self.hashing.acquire().await.map_err(|_| fail(reason))?;
        let (password, owned_name) = (password.to_vec(), name.to_owned());
        let checked = users.clone();
        let user = tokio::task::spawn_blocking(move || checked.verify(&owned_name, &password))
            .await
            .ok()
            .flatten();
        match user {
            Some(user) => Ok(principal(&user)),
            None => Err(fail(reason)),
        }
    }

    fn certificate(&self, names: &[String]) -> Result<Principal, Failure> {
        let fail = |reason| Failure {
            mode: AuthMode::Mtls,
            reason,
        };
        let (_, principals) = self.mtls.as_ref().ok_or(fail("disabled"))?;
        names
            .iter()
            .find_map(|n| {
                principals.get(n).map(|allowance| Principal {
                    mode: AuthMode::Mtls,
                    name: n.as_str().into(),
                    allowance: allowance.clone(),
                    read: allowance.clone(),
                    rules: false,
                })
            })
            .ok_or(fail("unknown_principal"))
    }
}

/// `Scheme rest` → (scheme, rest), the rest without leading spaces.
fn split_scheme(header: &[u8]) -> (&[u8], &[u8]) {
    let header = header.trim_ascii();
    match header.iter().position(|&b| b == b' ') {
        Some(i) => (&header[..i], header[i + 1..].trim_ascii_start()),
        None => (header, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_header(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_hash_check_as_a_wrong_password_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.yaml");
        let hash = basic::hash("s3cret").unwrap();
        std::fs::write(
            &file,
            format!("alice: {{password_hash: '{hash}', allowance: [acme]}}\n"),
        )
        .unwrap();
        let cfg = config::Auth {
            basic: Some(config::BasicUsers { users_file: file }),
            ..Default::default()
        };
        let auth = Authenticator::new(&cfg, AuthSignals::default()).unwrap();
        let checks = || auth.basic.as_ref().unwrap().get().hash_checks();
        let try_as = |user: &str, password: &str| {
            let header = basic_header(user, password);
            let auth = &auth;
            async move { auth.authenticate(Some(&header), None).await }
        };

        let refused = try_as("mallory", "s3cret").await.unwrap_err();
        assert_eq!(refused.reason, "unknown_user");
        assert_eq!(checks(), 1, "an unknown name ran the hash check");
        let refused = try_as("alice", "wrong").await.unwrap_err();
        assert_eq!(refused.reason, "bad_password");
        assert_eq!(checks(), 2, "a wrong password ran the hash check");
        let alice = try_as("alice", "s3cret").await.unwrap();
        assert!(alice.allowance.allows("acme"));
        assert_eq!(checks(), 3);
        // Remembered: no second hash check for the same right password.
        try_as("alice", "s3cret").await.unwrap();
        assert_eq!(checks(), 3);
        // A remembered password does not let an unknown name through.
        try_as("mallory", "s3cret").await.unwrap_err();
        assert_eq!(checks(), 4);
    }
}
