//! HTTP basic auth against a users file of argon2 or bcrypt hashes.
//!
//! ```text
//!  users_file (YAML, followed) ─► name → (hash, allowance)
//!  Authorization: Basic ─► user ─► same password as last verified? (keyed digest, constant time)
//!                                  └─ no ─► argon2 / bcrypt verify (blocking thread, one per core)
//! ```
//!
//! A password hash is made to be slow (tens of milliseconds), and a sender
//! presents its password on every push, so a verified password is
//! remembered per user as a keyed SHA-256 digest (the key is random per
//! process, the memory is one digest per user, and a reload of the file
//! forgets them all). A wrong password always pays the full hash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::Deserialize;

use crate::tenant::Allowance;

/// One user of the file.
pub struct User {
    hash: Hash,
    pub allowance: Allowance,
    /// `read_allowance`, or the write allowance when not given.
    pub read: Allowance,
    /// May change rules and alertmanager state.
    pub rules: bool,
    /// Digest of the password last verified for this user.
    verified: ArcSwapOption<[u8; 32]>,
}

enum Hash {
    Argon2(String),
    Bcrypt(String),
}

/// The users file, as loaded.
pub struct Users {
    users: HashMap<String, Arc<User>>,
}

/// One entry of the users file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    password_hash: Option<String>,
    /// Present only to refuse it with a clear message.
    password: Option<serde_yaml::Value>,
    #[serde(default)]
    allowance: Vec<String>,
    read_allowance: Option<Vec<String>>,
    #[serde(default)]
    rules: bool,
}

impl Users {
    /// Reads and checks the users file (a plaintext password is refused).
    pub fn load(paths: &[PathBuf]) -> Result<Self, String> {
        let path = &paths[0];
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses `name: {password_hash: ..., allowance: [...]}` YAML.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries: HashMap<String, Entry> =
            serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = HashMap::with_capacity(entries.len());
        for (name, entry) in entries {
            if entry.password.is_some() {
                return Err(format!(
                    "user {name:?}: plaintext passwords are refused; store an argon2 or bcrypt \
                     hash in password_hash (orgsplit users hash)"
                ));
            }
            let Some(hash) = entry.password_hash else {
                return Err(format!("user {name:?}: password_hash is missing"));
            };
            let hash = if hash.starts_with("$argon2") {
                let parsed = argon2::PasswordHash::new(&hash)
                    .map_err(|e| format!("user {name:?}: password_hash: {e}"))?;
                if parsed.salt.is_none() || parsed.hash.is_none() {
                    return Err(format!(
                        "user {name:?}: password_hash is not a complete argon2 hash (no salt or hash)"
                    ));
                }
                Hash::Argon2(hash)
            } else if ["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p))
                && hash.len() == 60
            {
                Hash::Bcrypt(hash)
            } else {
                return Err(format!(
                    "user {name:?}: password_hash is not an argon2 or bcrypt hash \
                     (plaintext passwords are refused)"
                ));
            };
            let allowance =
                Allowance::parse(&entry.allowance).map_err(|e| format!("user {name:?}: {e}"))?;
            let read = match &entry.read_allowance {
                Some(r) => Allowance::parse(r).map_err(|e| format!("user {name:?}: {e}"))?,
                None => allowance.clone(),
            };
            if name.contains(':') {
                return Err(format!(
                    "user {name:?}: a basic-auth user name cannot contain ':'"
                ));
            }
            users.insert(
                name,
                Arc::new(User {
                    hash,
                    allowance,
                    read,
                    rules: entry.rules,
                    verified: ArcSwapOption::empty(),
                }),
            );
        }
        Ok(Self { users })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }
}

impl User {
    /// Whether `password` was the one verified last (cheap).
    pub fn remembered(&self, password: &[u8]) -> bool {
        match &*self.verified.load() {
            // ring's HMAC verification compares in constant time.
            Some(known) => ring::hmac::verify(key(), password, &known[..]).is_ok(),
            None => false,
        }
    }

    /// The full, slow check; remembers the password when it is right.
    pub fn verify(&self, password: &[u8]) -> bool {
        let ok = match &self.hash {
            Hash::Argon2(hash) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(hash).is_ok_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password, &h)
                        .is_ok()
                })
            }
            Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        };
        if ok {
            self.verified.store(Some(Arc::new(digest(password))));
        }
        ok
    }
}

/// The key of the remembered digests, made once per process.
fn key() -> &'static ring::hmac::Key {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).expect("system randomness")
    })
}

/// HMAC-SHA-256 of `password` under [`key`].
fn digest(password: &[u8]) -> [u8; 32] {
    let tag = ring::hmac::sign(key(), password);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// An argon2id hash of `password` with a random salt (`orgsplit users hash`).
pub fn hash(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plaintext_is_refused() {
        let argon = hash("s3cret").unwrap();
        let bcrypt = bcrypt::hash("hunter2", 4).unwrap();
        let users = Users::parse(&format!(
            "alice: {{password_hash: '{argon}', allowance: [acme]}}\n\
             bob: {{password_hash: '{bcrypt}', allowance: ['shop-*']}}\n"
        ))
        .unwrap();
        let alice = users.get("alice").unwrap();
        assert!(!alice.remembered(b"s3cret"));
        assert!(!alice.verify(b"wrong"));
        assert!(alice.verify(b"s3cret"));
        assert!(alice.remembered(b"s3cret"));
        assert!(!alice.remembered(b"s3cret2"));
        assert!(alice.allowance.allows("acme"));
        let bob = users.get("bob").unwrap();
        assert!(bob.verify(b"hunter2"));
        assert!(!bob.verify(b"hunter3"));
        assert!(bob.allowance.allows("shop-prod"));

        for bad in [
            "carol: {password: hunter2}",
            "carol: {password_hash: hunter2}",
            "carol: {password_hash: '$2b$short'}",
            "carol: {}",
            "carol: {password_hash: '$argon2id$nonsense'}",
        ] {
            let err = Users::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} loaded"));
            assert!(err.contains("carol"), "{err}");
        }
        let err = Users::parse("carol: {password: hunter2}").err().unwrap();
        assert!(err.contains("plaintext"), "{err}");
    }
}
