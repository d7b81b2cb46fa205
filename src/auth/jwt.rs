//! Bearer JSON Web Tokens: HS256 (cortex-gateway), RS256 and ES256 with a
//! trust store (Opstrace).
//!
//! ```text
//!  token ─► size bound ─► header: alg, kid
//!    HS256 ─► the HS256 secret            ┐
//!    RS256 / ES256 ─► key by kid (or the  ├─► the key's own algorithm must be the token's
//!                     fallback key)       ┘
//!  ─► signature, exp / nbf (with leeway), aud, iss (jsonwebtoken)
//!  ─► jti not in auth.jwt.revoked_file
//!  ─► allowance: organizations claim | tenant_id | sub = "tenant-<name>"
//! ```
//!
//! The algorithm is the key's, never the token's choice: `none` and every
//! algorithm not configured are refused before any key is touched, and a
//! token cannot get an RSA public key used as an HMAC secret. HMAC
//! signatures are compared in constant time (jsonwebtoken compares with
//! `ring::constant_time`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::keys::{KeySet, Sources};
use super::revoked::Revoked;
use super::watch::Watched;
use crate::config::Jwt;
use crate::tenant::{Allowance, TenantId};

/// A verified token: who it names and what it may write.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: String,
    pub allowance: Allowance,
    /// `read_organizations` if the token has it, else the write allowance.
    pub read: Allowance,
    /// The `rules` claim: may change rules and alertmanager state.
    pub rules: bool,
}

/// Verifies tokens against the configured keys, following their files.
pub struct Verifier {
    secret: Option<Arc<Watched<DecodingKey>>>,
    keys: Option<Arc<Watched<KeySet>>>,
    /// `auth.jwt.revoked_file`: token IDs refused however they verify.
    revoked: Option<Arc<Watched<Revoked>>>,
    /// `auth.jwt.key_allowances`, parsed.
    caps: HashMap<String, Allowance>,
    config: Jwt,
}

impl Verifier {
    /// Loads the secret and the keys (an unreadable file is an error);
    /// later reloads that fail count in `reload_errors`.
    pub fn new(config: &Jwt, reload_errors: metrics::Counter) -> Result<Self, String> {
        let secret = match &config.hs256_secret_file {
            Some(path) => Some(counted(
                Watched::new(
                    "auth.jwt.hs256_secret_file",
                    vec![path.clone()],
                    load_secret,
                )?,
                &reload_errors,
            )),
            None => None,
        };
        let sources = Sources {
            trust_store: config.trust_store.clone(),
            jwks_file: config.jwks_file.clone(),
            fallback_key: config.fallback_key.clone(),
        };
        let keys = if sources.paths().iter().any(|p| !p.as_os_str().is_empty()) {
            Some(counted(
                Watched::new("auth.jwt trust store", sources.paths(), Sources::load)?,
                &reload_errors,
            ))
        } else {
            None
        };
        let revoked = match &config.revoked_file {
            Some(path) => Some(counted(
                Watched::new("auth.jwt.revoked_file", vec![path.clone()], Revoked::load)?,
                &reload_errors,
            )),
            None => None,
        };
        let mut caps = HashMap::new();
        for (kid, entries) in &config.key_allowances {
            let cap = Allowance::parse(entries)
                .map_err(|e| format!("auth.jwt.key_allowances.{kid}: {e}"))?;
            caps.insert(kid.clone(), cap);
        }
        Ok(Self {
            secret,
            keys,
            revoked,
            caps,
            config: config.clone(),
        })
    }

    /// Follows the files from now on (deep checks every second).
    pub fn follow(&self) {
        if let Some(w) = &self.secret {
            super::watch::follow(w);
        }
        if let Some(w) = &self.keys {
            super::watch::follow(w);
        }
        if let Some(w) = &self.revoked {
            super::watch::follow(w);
        }
    }

    /// What the verifier trusts now, for the operator page: each key's
    /// `kid`, file, algorithm and cap; never a key or the secret.
    pub fn inventory(&self) -> super::JwtInventory {
        let cap = |kid: &str| self.caps.get(kid).map(ToString::to_string);
        let mut keys = Vec::new();
        if let (Some(_), Some(path)) = (&self.secret, &self.config.hs256_secret_file) {
            keys.push(super::TrustedKey {
                kid: "hs256".into(),
                algorithm: "HS256".into(),
                source: path.display().to_string(),
                may_grant: cap("hs256"),
            });
        }
        if let Some(set) = self.key_set() {
            for (kid, key) in set.entries() {
                let kid = kid.unwrap_or("fallback");
                keys.push(super::TrustedKey {
                    kid: kid.into(),
                    algorithm: format!("{:?}", key.algorithm),
                    source: key.source.clone(),
                    may_grant: cap(kid),
                });
            }
        }
        super::JwtInventory {
            keys,
            audience: self.config.audience.clone(),
            issuer: self.config.issuer.clone(),
            revoked_file: self
                .config
                .revoked_file
                .as_ref()
                .map(|p| p.display().to_string()),
            revoked: self.revoked.as_ref().map_or(0, |r| r.get().len()),
        }
    }

    /// The keys loaded now (for `token inspect`).
    pub fn key_set(&self) -> Option<Arc<KeySet>> {
        self.keys.as_ref().map(|w| w.get())
    }

    /// Verifies `token`; the error is the failure reason (a metric label).
    pub fn verify(&self, token: &str) -> Result<Verified, &'static str> {
        if token.len() > self.config.max_token_bytes {
            return Err("too_large");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed")?;
        type Claims = serde_json::Value;
        // Which key signed it, for `key_allowances`.
        let signer = match (header.alg, header.kid.as_deref()) {
            (Algorithm::HS256, _) => "hs256",
            (_, Some(kid)) => kid,
            (_, None) => "fallback",
        }
        .to_string();
        let decoded = match header.alg {
            Algorithm::HS256 => {
                let secret = self.secret.as_ref().ok_or("algorithm")?.get();
                jsonwebtoken::decode::<Claims>(token, &secret, &self.validation(Algorithm::HS256))
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let keys = self.keys.as_ref().ok_or("algorithm")?.get();
                let key = keys.find(header.kid.as_deref()).ok_or("unknown_key")?;
                if key.algorithm != header.alg {
                    return Err("algorithm");
                }
                jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm))
            }
            _ => return Err("algorithm"),
        }
        .map_err(|e| reason(e.kind()))?;
        if let Some(revoked) = &self.revoked {
            let jti = decoded.claims.get("jti").and_then(|v| v.as_str());
            if jti.is_some_and(|jti| revoked.get().contains(jti)) {
                return Err("revoked");
            }
        }
        let verified = self.allowance(&decoded.claims)?;
        if let Some(cap) = self.caps.get(&signer) {
            if !verified.allowance.within(cap) || !verified.read.within(cap) {
                return Err("key_allowance");
            }
        }
        Ok(verified)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.config.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        if self.config.require_expiry {
            v.required_spec_claims.insert("exp".into());
        }
        if self.config.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.config.audience);
        }
        if let Some(iss) = &self.config.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    /// The allowance a verified token's claims grant.
    fn allowance(&self, claims: &serde_json::Value) -> Result<Verified, &'static str> {
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        let allowance = match claims.get(&self.config.organizations_claim) {
            Some(list) => list_claim(list)?,
            None => {
                let tenant = match (claims.get("tenant_id"), subject.strip_prefix("tenant-")) {
                    (Some(serde_json::Value::String(t)), _) => t.as_str(),
                    (Some(_), _) => return Err("bad_tenant"),
                    (None, Some(t)) => t,
                    (None, None) => return Err("no_tenant"),
                };
                Allowance::one(TenantId::new(tenant).map_err(|_| "bad_tenant")?)
            }
        };
        let read = match claims.get(&self.config.read_organizations_claim) {
            Some(list) => list_claim(list)?,
            None => allowance.clone(),
        };
        let rules = claims
            .get(&self.config.rules_claim)
            .is_some_and(|v| v.as_bool() == Some(true));
        Ok(Verified {
            subject,
            allowance,
            read,
            rules,
        })
    }
}

/// An allowance claim: a list of strings, or one comma-separated string.
fn list_claim(list: &serde_json::Value) -> Result<Allowance, &'static str> {
    let entries: Vec<&str> = match list {
        serde_json::Value::String(s) => s.split(',').map(str::trim).collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().ok_or("bad_tenant"))
            .collect::<Result<_, _>>()?,
        _ => return Err("bad_tenant"),
    };
    Allowance::parse(&entries).map_err(|_| "bad_tenant")
}

/// `w`, counting its failed reloads in `errors`.
fn counted<T: Send + Sync + 'static>(w: Watched<T>, errors: &metrics::Counter) -> Arc<Watched<T>> {
    let errors = errors.clone();
    Arc::new(w.on_error(move || errors.increment(1)))
}

/// The HS256 secret: the file's bytes with surrounding whitespace trimmed.
fn load_secret(paths: &[PathBuf]) -> Result<DecodingKey, String> {
    let path = &paths[0];
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(DecodingKey::from_secret(secret))
}

/// The failure reason (metric label) of a jsonwebtoken error.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not_yet_valid",
        ErrorKind::InvalidAudience => "audience",
        ErrorKind::InvalidIssuer => "issuer",
        ErrorKind::InvalidSignature => "bad_signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm",
        ErrorKind::MissingRequiredClaim(_) => "missing_claim",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_of_exactly_max_token_bytes_is_read_one_more_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret").unwrap();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"tenant_id": "acme"}),
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let verifier = |max| {
            let config = Jwt {
                hs256_secret_file: Some(secret.clone()),
                max_token_bytes: max,
                ..Default::default()
            };
            Verifier::new(&config, metrics::Counter::noop()).unwrap()
        };
        let ok = verifier(token.len()).verify(&token).unwrap();
        assert_eq!(ok.allowance.single().map(|t| t.as_str()), Some("acme"));
        assert_eq!(
            verifier(token.len() - 1).verify(&token).unwrap_err(),
            "too_large"
        );
    }
}
