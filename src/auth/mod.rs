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
use serde::Serialize;

use crate::activity::Activity;
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

/// What the authenticator trusts, for the operator page: names, files
/// and allowances; never a secret, a password hash or a key.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The anonymous principal's allowances, when it is on.
    pub anonymous: Option<GrantHolder>,
    pub jwt: Option<JwtInventory>,
    pub users_file: Option<String>,
    pub users: Vec<GrantHolder>,
    pub certificate_principals: Vec<GrantHolder>,
}

/// A principal the configuration names, and what it may do.
#[derive(Debug, Clone, Serialize)]
pub struct GrantHolder {
    pub name: String,
    /// Organizations it may write (`*`, names, `prefix*`).
    pub writes: String,
    /// Organizations it may read.
    pub reads: String,
    /// May change rules and alertmanager state.
    pub rules: bool,
}

/// The token keys and checks.
#[derive(Debug, Clone, Serialize)]
pub struct JwtInventory {
    pub keys: Vec<TrustedKey>,
    pub audience: Vec<String>,
    pub issuer: Option<String>,
    pub revoked_file: Option<String>,
    /// Token IDs on the revocation list now.
    pub revoked: usize,
}

/// One key tokens may be signed with.
#[derive(Debug, Clone, Serialize)]
pub struct TrustedKey {
    /// The `kid`; `hs256` for the shared secret, `fallback` for the key
    /// of tokens that name none.
    pub kid: String,
    pub algorithm: String,
    /// The file it was read from.
    pub source: String,
    /// `auth.jwt.key_allowances`: what its tokens may grant at most
    /// (`None`: not capped).
    pub may_grant: Option<String>,
}

/// A failure and, when it reveals one safely, the name it was for (a
/// known user with a wrong password, a certificate no principal has).
struct Refused {
    failure: Failure,
    who: Option<String>,
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Self {
        Self { failure, who: None }
    }
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
    /// Where failures are recorded for the operator page.
    activity: Option<Arc<Activity>>,
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
            activity: None,
        })
    }

    /// Records failures (with a safe name, when there is one) in
    /// `activity` too, for the operator page.
    pub fn recording_to(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
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

    /// What is trusted now (see [`Inventory`]).
    pub fn inventory(&self) -> Inventory {
        let holder = |name: &str, writes: &Allowance, reads: &Allowance, rules| GrantHolder {
            name: name.to_owned(),
            writes: writes.to_string(),
            reads: reads.to_string(),
            rules,
        };
        let mut certificate_principals: Vec<GrantHolder> = self
            .mtls
            .iter()
            .flat_map(|(_, p)| p.iter())
            .map(|(name, a)| holder(name, a, a, false))
            .collect();
        certificate_principals.sort_by(|a, b| a.name.cmp(&b.name));
        Inventory {
            anonymous: self
                .anonymous
                .as_ref()
                .map(|p| holder(&p.name, &p.allowance, &p.read, p.rules)),
            jwt: self.jwt.as_ref().map(jwt::Verifier::inventory),
            users_file: self.basic.as_ref().map(|b| {
                b.paths()
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            }),
            users: self
                .basic
                .as_ref()
                .map(|b| {
                    b.get()
                        .all()
                        .into_iter()
                        .map(|(name, u)| holder(name, &u.allowance, &u.read, u.rules))
                        .collect()
                })
                .unwrap_or_default(),
            certificate_principals,
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
        let result = result.map_err(|r| {
            if let Some(activity) = &self.activity {
                activity.auth_failure(r.failure.mode.as_str(), r.failure.reason, r.who.as_deref());
            }
            r.failure
        });
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
    ) -> Result<Principal, Refused> {
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
            }
            .into());
        }
        match peer {
            Some(PeerCert::Trusted(names)) => return self.certificate(names),
            Some(PeerCert::Untrusted(why)) => {
                tracing::debug!(error = %why, "client certificate refused");
                return Err(Failure {
                    mode: AuthMode::Mtls,
                    reason: "untrusted_certificate",
                }
                .into());
            }
            Some(PeerCert::None) | None => {}
        }
        self.anonymous.clone().ok_or(
            Failure {
                mode: AuthMode::Anonymous,
                reason: "missing",
            }
            .into(),
        )
    }

    fn bearer(&self, token: &[u8]) -> Result<Principal, Refused> {
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

    async fn basic(&self, encoded: &[u8]) -> Result<Principal, Refused> {
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
            // A known user's name is no secret; an unknown "name" may be
            // a password typed in the wrong field, so it is not kept.
            None => Err(Refused {
                failure: fail(reason),
                who: known.is_some().then(|| name.to_owned()),
            }),
        }
    }

    fn certificate(&self, names: &[String]) -> Result<Principal, Refused> {
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
            .ok_or_else(|| Refused {
                failure: fail("unknown_principal"),
                who: names.first().cloned(),
            })
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
