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
//!
//! An unknown user name pays it too: its password is checked against a
//! decoy, the hash of one of the file's own users (of the kind most of them
//! use, so of the same cost), and the result is thrown away. So a caller
//! cannot tell from the time of a 401 whether the name exists.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Clone)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
}

impl Hash {
    /// The slow check.
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Hash::Argon2(hash) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(hash).is_ok_and(|h| {
                    argon2::Argon2::default()
                        .verify_password(password, &h)
                        .is_ok()
                })
            }
            Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
}

/// The users file, as loaded.
pub struct Users {
    users: HashMap<String, Arc<User>>,
    /// What an unknown name's password is checked against (see the module
    /// doc); `None` for an empty file, where no name is known and a
    /// default argon2 hash stands in.
    decoy: Option<Hash>,
    /// Slow hash checks run (known and unknown names alike).
    hash_checks: AtomicU64,
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
        let decoy = decoy(&users);
        Ok(Self {
            users,
            decoy,
            hash_checks: AtomicU64::new(0),
        })
    }

    /// Every user, by name (sorted).
    pub fn all(&self) -> Vec<(&str, &User)> {
        let mut users: Vec<(&str, &User)> =
            self.users.iter().map(|(n, u)| (n.as_str(), &**u)).collect();
        users.sort_unstable_by_key(|(n, _)| *n);
        users
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// The full, slow check of `name`'s password: the user when it is
    /// right. An unknown name costs the same as a wrong password.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        self.hash_checks.fetch_add(1, Ordering::Relaxed);
        match self.users.get(name) {
            Some(user) => user.verify(password).then(|| user.clone()),
            None => {
                let decoy = self.decoy.as_ref().unwrap_or_else(|| default_decoy());
                // Whatever it says, an unknown name is refused.
                let _ = std::hint::black_box(decoy.matches(password));
                None
            }
        }
    }

    /// How many slow hash checks ran against this file's users and decoy.
    pub fn hash_checks(&self) -> u64 {
        self.hash_checks.load(Ordering::Relaxed)
    }
}

/// The decoy: the hash of the first user (by name) of the kind most users
/// have, so that it costs what their hashes cost.
fn decoy(users: &HashMap<String, Arc<User>>) -> Option<Hash> {
    let argon2 = users
        .values()
        .filter(|u| matches!(u.hash, Hash::Argon2(_)))
        .count();
    let want_argon2 = argon2 * 2 >= users.len();
    users
        .iter()
        .filter(|(_, u)| matches!(u.hash, Hash::Argon2(_)) == want_argon2)
        .min_by(|a, b| a.0.cmp(b.0))
        .map(|(_, u)| u.hash.clone())
}

/// The decoy of an empty users file: an argon2id hash with the default
/// parameters (what `orgsplit users hash` makes), made once.
fn default_decoy() -> &'static Hash {
    static DECOY: std::sync::OnceLock<Hash> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        Hash::Argon2(hash("orgsplit decoy, never a password").expect("argon2 with defaults"))
    })
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
    fn verify(&self, password: &[u8]) -> bool {
        let ok = self.hash.matches(password);
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
        assert!(users.verify("alice", b"wrong").is_none());
        assert!(users.verify("alice", b"s3cret").is_some());
        assert!(alice.remembered(b"s3cret"));
        assert!(!alice.remembered(b"s3cret2"));
        assert!(alice.allowance.allows("acme"));
        let bob = users.get("bob").unwrap();
        assert!(users.verify("bob", b"hunter2").is_some());
        assert!(users.verify("bob", b"hunter3").is_none());
        assert!(bob.allowance.allows("shop-prod"));
        // An unknown name runs a hash check too, and is refused even with
        // a user's password.
        let before = users.hash_checks();
        assert!(users.verify("mallory", b"s3cret").is_none());
        assert_eq!(users.hash_checks(), before + 1);

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

    #[test]
    fn the_decoy_is_of_the_kind_most_users_have() {
        let argon = hash("a").unwrap();
        let bcrypt = bcrypt::hash("b", 4).unwrap();
        let users = Users::parse(&format!(
            "x: {{password_hash: '{bcrypt}'}}\ny: {{password_hash: '{bcrypt}'}}\nz: {{password_hash: '{argon}'}}\n"
        ))
        .unwrap();
        assert!(matches!(&users.decoy, Some(Hash::Bcrypt(h)) if *h == bcrypt));
        let users = Users::parse(&format!("z: {{password_hash: '{argon}'}}\n")).unwrap();
        assert!(matches!(&users.decoy, Some(Hash::Argon2(h)) if *h == argon));
        // An empty file: unknown names still pay an argon2 check.
        let empty = Users::parse("{}").unwrap();
        assert!(empty.decoy.is_none());
        assert!(empty.verify("anyone", b"x").is_none());
        assert_eq!(empty.hash_checks(), 1);
    }
}
