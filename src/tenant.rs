//! Tenant IDs and the rules Mimir and Cortex apply to them.
//!
//! A tenant ID ends up in the `X-Scope-OrgID` header and, inside Mimir, in
//! object-store paths, so an organization value that breaks these rules must
//! never be forwarded: it is treated as unmapped instead.

/// Longest tenant ID Mimir accepts, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 150;

/// Why a string is not a valid tenant ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenant {
    #[error("tenant ID is empty")]
    Empty,
    #[error("tenant ID is {0} bytes long, more than {MAX_TENANT_ID_LEN}")]
    TooLong(usize),
    #[error("tenant ID contains {0:?}, which Mimir does not allow")]
    BadChar(char),
    #[error("tenant ID must not be \".\" or \"..\"")]
    PathSegment,
    #[error("tenant ID \"__mimir_cluster\" is reserved")]
    Reserved,
}

/// Checks `id` against Mimir's tenant ID rules: 1 to 150 bytes of
/// `[a-zA-Z0-9!-_.*'()]`, not `.` or `..`, not the reserved `__mimir_cluster`.
pub fn validate(id: &str) -> Result<(), InvalidTenant> {
    if id.is_empty() {
        return Err(InvalidTenant::Empty);
    }
    if id.len() > MAX_TENANT_ID_LEN {
        return Err(InvalidTenant::TooLong(id.len()));
    }
    if let Some(c) = id.chars().find(|&c| !allowed(c)) {
        return Err(InvalidTenant::BadChar(c));
    }
    if id == "." || id == ".." {
        return Err(InvalidTenant::PathSegment);
    }
    if id == "__mimir_cluster" {
        return Err(InvalidTenant::Reserved);
    }
    Ok(())
}

/// A tenant ID that passed [`validate`]. Cloning it costs one atomic
/// increment, not an allocation: the table, batches, outgoing pushes and the
/// upstream header all share the one copy made when the ID was read.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TenantId(bytes::Bytes);

/// Hashes as the `str` it is, so maps keyed by `TenantId` can be looked up
/// by `&str` (`Borrow<str>` requires equal hashes).
impl std::hash::Hash for TenantId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl TenantId {
    /// Validates `id` and keeps a copy of it.
    pub fn new(id: &str) -> Result<Self, InvalidTenant> {
        validate(id)?;
        Ok(Self(bytes::Bytes::copy_from_slice(id.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        // Validated as a subset of ASCII on construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The ID's bytes, shared (for a header value without a copy).
    pub fn shared(&self) -> bytes::Bytes {
        self.0.clone()
    }
}

impl std::ops::Deref for TenantId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which organizations (tenant IDs) a principal may write: any, or a list
/// of exact IDs and prefixes.
///
/// Written in config and token claims as a list of strings: `*` allows
/// every tenant, an entry ending in `*` allows the tenants that start with
/// what comes before it (`acme-*`), any other entry is one exact tenant ID.
/// (Mimir allows `*` inside a tenant ID; an allowance cannot name such a
/// tenant exactly when the `*` is its last character.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowance {
    Any,
    Only {
        exact: Box<[TenantId]>,
        prefixes: Box<[Box<str>]>,
    },
}

/// Why an allowance entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowance entry {entry:?}: {reason}")]
pub struct InvalidAllowance {
    pub entry: String,
    pub reason: String,
}

impl Allowance {
    /// Nothing at all.
    pub fn none() -> Self {
        Allowance::Only {
            exact: Box::new([]),
            prefixes: Box::new([]),
        }
    }

    /// Exactly one tenant.
    pub fn one(tenant: TenantId) -> Self {
        Allowance::Only {
            exact: Box::new([tenant]),
            prefixes: Box::new([]),
        }
    }

    /// Parses a list of entries (see the type's doc).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidAllowance> {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |reason: String| InvalidAllowance {
                entry: entry.to_string(),
                reason,
            };
            if entry == "*" {
                return Ok(Allowance::Any);
            }
            if let Some(prefix) = entry.strip_suffix('*') {
                // A prefix must itself be made of tenant ID characters.
                if let Some(c) = prefix.chars().find(|&c| !allowed(c)) {
                    return Err(bad(format!("contains {c:?}, which Mimir does not allow")));
                }
                if prefix.len() >= MAX_TENANT_ID_LEN {
                    return Err(bad("prefix is longer than any tenant ID".into()));
                }
                prefixes.push(prefix.into());
            } else {
                exact.push(TenantId::new(entry).map_err(|e| bad(e.to_string()))?);
            }
        }
        exact.sort();
        exact.dedup();
        Ok(Allowance::Only {
            exact: exact.into(),
            prefixes: prefixes.into(),
        })
    }

    /// Whether it admits no tenant at all.
    pub fn is_empty(&self) -> bool {
        matches!(self, Allowance::Only { exact, prefixes } if exact.is_empty() && prefixes.is_empty())
    }

    /// Whether `tenant` may be written.
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Allowance::Any => true,
            Allowance::Only { exact, prefixes } => {
                exact.iter().any(|t| t.as_str() == tenant)
                    || prefixes.iter().any(|p| tenant.starts_with(&**p))
            }
        }
    }

    /// Whether everything this allowance admits, `cap` admits too.
    pub fn within(&self, cap: &Allowance) -> bool {
        match (self, cap) {
            (_, Allowance::Any) => true,
            (Allowance::Any, Allowance::Only { .. }) => false,
            (
                Allowance::Only { exact, prefixes },
                Allowance::Only {
                    prefixes: cap_prefixes,
                    ..
                },
            ) => {
                exact.iter().all(|t| cap.allows(t))
                    && prefixes
                        .iter()
                        .all(|p| cap_prefixes.iter().any(|q| p.starts_with(&**q)))
            }
        }
    }

    /// The one tenant this allowance names, when it names exactly one and
    /// no prefix (what `routing.mode: principal` needs).
    pub fn single(&self) -> Option<&TenantId> {
        match self {
            Allowance::Only { exact, prefixes } if exact.len() == 1 && prefixes.is_empty() => {
                exact.first()
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowance::Any => f.write_str("*"),
            Allowance::Only { exact, prefixes } => {
                let mut first = true;
                for e in exact
                    .iter()
                    .map(|t| t.as_str().to_string())
                    .chain(prefixes.iter().map(|p| format!("{p}*")))
                {
                    if !first {
                        f.write_str(",")?;
                    }
                    first = false;
                    f.write_str(&e)?;
                }
                if first {
                    f.write_str("(nothing)")?;
                }
                Ok(())
            }
        }
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimir_rules() {
        for ok in ["acme", "a.b", "A-Z_0-9", "x!*'()", &"a".repeat(150)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate(""), Err(InvalidTenant::Empty));
        assert_eq!(validate(&"a".repeat(151)), Err(InvalidTenant::TooLong(151)));
        assert_eq!(validate("../x"), Err(InvalidTenant::BadChar('/')));
        assert_eq!(validate("a|b"), Err(InvalidTenant::BadChar('|')));
        assert_eq!(validate("a b"), Err(InvalidTenant::BadChar(' ')));
        assert_eq!(validate("ünï"), Err(InvalidTenant::BadChar('ü')));
        assert_eq!(validate("."), Err(InvalidTenant::PathSegment));
        assert_eq!(validate(".."), Err(InvalidTenant::PathSegment));
        assert_eq!(validate("__mimir_cluster"), Err(InvalidTenant::Reserved));
    }

    #[test]
    fn allowances() {
        let a = Allowance::parse(&["acme", "shop-*"]).unwrap();
        assert!(a.allows("acme"));
        assert!(!a.allows("acme2"));
        assert!(!a.allows("acm"));
        assert!(a.allows("shop-prod"));
        assert!(a.allows("shop-"));
        assert!(!a.allows("shop"));
        assert_eq!(a.single(), None);
        assert_eq!(a.to_string(), "acme,shop-*");
        let one = Allowance::parse(&["acme"]).unwrap();
        assert_eq!(one.single().map(|t| t.as_str()), Some("acme"));
        assert_eq!(Allowance::parse(&["x", "*"]).unwrap(), Allowance::Any);
        assert!(Allowance::Any.allows("anything"));
        assert_eq!(Allowance::Any.single(), None);
        let none = Allowance::parse::<&str>(&[]).unwrap();
        assert!(!none.allows("acme"));
        assert_eq!(none, Allowance::none());
        assert!(none.is_empty() && !a.is_empty() && !Allowance::Any.is_empty());
        assert!(Allowance::parse(&["a/b"]).is_err());
        assert!(Allowance::parse(&["a b*"]).is_err());
        assert!(Allowance::parse(&[""]).is_err());
        let cap = Allowance::parse(&["acme", "shop-*"]).unwrap();
        for (inside, want) in [
            (vec!["acme"], true),
            (vec!["shop-1", "shop-dev-*"], true),
            (vec!["shop-*"], true),
            (vec!["sho*"], false),
            (vec!["acme", "globex"], false),
            (vec!["*"], false),
            (vec![], true),
        ] {
            let a = Allowance::parse(&inside).unwrap();
            assert_eq!(a.within(&cap), want, "{inside:?}");
        }
        assert!(Allowance::Any.within(&Allowance::Any));
    }
}
