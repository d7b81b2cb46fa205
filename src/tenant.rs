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
}
