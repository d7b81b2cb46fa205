//! Public keys for RS256 / ES256 tokens: a trust store directory of PEM
//! files, a JWKS file, a fallback key; and the `kid` of a PEM key.
//!
//! ```text
//!  trust_store/*.pem ─► kid = hex SHA-1 of the trimmed PEM text ─┐
//!  jwks_file {"keys": [...]} ─► kid as the JWK says ──────────────┼─► KeySet: kid → (algorithm, key)
//!  fallback_key ─► the key for tokens without a kid ─────────────┘
//! ```
//!
//! Each key carries the one algorithm it may verify (RSA → RS256, P-256 →
//! ES256), fixed by the key, never by the token: a token cannot make an RSA
//! public key serve as an HMAC secret.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey};

/// A public key and the algorithm it verifies.
#[derive(Clone)]
pub struct Key {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// Where it came from, for logs and `token inspect`.
    pub source: String,
}

/// The public keys tokens may be signed with.
#[derive(Default, Clone)]
pub struct KeySet {
    by_kid: HashMap<String, Key>,
    fallback: Option<Key>,
}

impl KeySet {
    /// The key a token names (by `kid`), or the fallback for one that names
    /// none.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.fallback.as_ref(),
        }
    }

    /// Every key with its `kid` (`None`: the fallback key), sorted by `kid`.
    pub fn entries(&self) -> Vec<(Option<&str>, &Key)> {
        let mut keys: Vec<(Option<&str>, &Key)> = self
            .by_kid
            .iter()
            .map(|(kid, key)| (Some(kid.as_str()), key))
            .collect();
        keys.sort_unstable_by_key(|(kid, _)| *kid);
        keys.extend(self.fallback.as_ref().map(|k| (None, k)));
        keys
    }

    /// The `kid`s held, sorted (for `token inspect`).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// Where the key set is read from; `None`s are left out.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub trust_store: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub fallback_key: Option<PathBuf>,
}

impl Sources {
    /// The paths, in a fixed order, for [`super::watch::Watched`]; a
    /// missing source is an empty path (which never exists).
    pub fn paths(&self) -> Vec<PathBuf> {
        [&self.trust_store, &self.jwks_file, &self.fallback_key]
            .iter()
            .map(|p| (*p).clone().unwrap_or_default())
            .collect()
    }

    /// Loads the key set from [`Sources::paths`].
    pub fn load(paths: &[PathBuf]) -> Result<KeySet, String> {
        let given = |i: usize| paths.get(i).filter(|p| !p.as_os_str().is_empty());
        let mut set = KeySet::default();
        if let Some(dir) = given(0) {
            load_dir(dir, &mut set.by_kid)?;
        }
        if let Some(file) = given(1) {
            load_jwks(file, &mut set.by_kid)?;
        }
        if let Some(file) = given(2) {
            let text = read(file)?;
            set.fallback = Some(
                pem_key(&text, file.display().to_string())
                    .map_err(|e| format!("{}: {e}", file.display()))?,
            );
        }
        Ok(set)
    }
}

/// The `kid` of a PEM public key as Opstrace computes it: the hex SHA-1 of
/// the PEM text with surrounding whitespace trimmed.
pub fn kid(pem_text: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        pem_text.trim().as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a PEM public key (SubjectPublicKeyInfo, RSA or EC P-256).
pub fn pem_key(text: &str, source: String) -> Result<Key, String> {
    let bytes = text.trim().as_bytes();
    if !text.contains("PUBLIC KEY-----") {
        return Err("not a PEM public key (-----BEGIN PUBLIC KEY-----)".into());
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok(Key {
            algorithm: Algorithm::RS256,
            key,
            source,
        });
    }
    match DecodingKey::from_ec_pem(bytes) {
        Ok(key) => Ok(Key {
            algorithm: Algorithm::ES256,
            key,
            source,
        }),
        Err(e) => Err(format!("not an RSA or EC public key: {e}")),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every PEM file of `dir` (names starting with `.` are skipped: they are
/// Kubernetes' `..data` links). A file that is not a public key is skipped
/// with a warning, so one bad file does not revoke every other key.
fn load_dir(dir: &Path, into: &mut HashMap<String, Key>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !path.is_file() {
            continue;
        }
        let Ok(text) = read(&path) else { continue };
        match pem_key(&text, path.display().to_string()) {
            Ok(key) => {
                into.insert(kid(&text), key);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "trust store: skipping file")
            }
        }
    }
    Ok(())
}

/// The RSA and EC keys of a JWKS file. Keys without a `kid`, symmetric
/// keys and keys for other algorithms are skipped.
fn load_jwks(file: &Path, into: &mut HashMap<String, Key>) -> Result<(), String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
    let text = read(file)?;
    let set: JwkSet =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", file.display()))?;
    for jwk in set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            _ => None,
        };
        let declared = match jwk.common.key_algorithm {
            None => by_type,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(_) => None,
        };
        let (Some(algorithm), true) = (declared, declared == by_type) else {
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                into.insert(
                    kid.clone(),
                    Key {
                        algorithm,
                        key,
                        source: format!("{} (kid {kid})", file.display()),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), %kid, error = %e, "JWKS: skipping key")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_sha1_of_the_trimmed_pem() {
        // sha1("abc") — whitespace around the text does not change it.
        assert_eq!(kid("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(kid("\n  abc \n\n"), kid("abc"));
    }

    #[test]
    fn non_keys_are_refused() {
        assert!(pem_key("hello", "x".into()).is_err());
        assert!(pem_key(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "x".into()
        )
        .is_err());
    }
}
