//! Revoked tokens: the `jti` claims listed in `auth.jwt.revoked_file`,
//! followed like the trust store, so one token can be refused at once
//! without rotating the key that signed every other.
//!
//! ```text
//!  revoked_file: one jti per line (# comments, blank lines) ─► Revoked (a set)
//!  verified token ─► its jti in the set? ─► refused, reason "revoked"
//! ```
//!
//! A file that does not load (missing, not UTF-8, a line that is not a
//! jti) keeps the last good list and is counted as a reload error, so
//! deleting or breaking the file never brings a revoked token back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Longest `jti` accepted in the file (`orgsplit token create` writes 32
/// hex digits).
pub const MAX_JTI_BYTES: usize = 256;

/// The revoked `jti`s.
#[derive(Debug, Default)]
pub struct Revoked {
    ids: HashSet<String>,
}

impl Revoked {
    /// Whether a token with this `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.ids.contains(jti)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Reads the file (the `Watched` loader).
    pub fn load(paths: &[PathBuf]) -> Result<Revoked, String> {
        let path = &paths[0];
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Revoked, String> {
        let mut ids = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            check(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            ids.insert(line.to_string());
        }
        Ok(Revoked { ids })
    }
}

/// Whether `jti` can stand on a line of the file.
pub fn check(jti: &str) -> Result<(), String> {
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(format!("a jti is 1 to {MAX_JTI_BYTES} bytes"));
    }
    if jti
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(format!(
            "{jti:?} is not a jti (no spaces, control characters or #)"
        ));
    }
    Ok(())
}

/// Appends `jti` to the file at `path` (created if missing), unless it is
/// listed already; whether it was added.
pub fn append(path: &Path, jti: &str, note: &str) -> Result<bool, String> {
    use std::io::Write;
    check(jti)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Revoked::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Revoked::default(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if existing.contains(jti) {
        return Ok(false);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let note = note.replace(['\n', '\r'], " ");
    writeln!(file, "{jti}  # {note}").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_bad_entries() {
        let r = Revoked::parse("# revoked\n0a1b  # leaked in CI\n\n  ff00\n").unwrap();
        assert!(r.contains("0a1b") && r.contains("ff00") && !r.contains("#"));
        assert_eq!(r.len(), 2);
        assert!(Revoked::parse("a b\n").is_err());
        assert!(Revoked::parse(&"x".repeat(MAX_JTI_BYTES + 1)).is_err());
    }

    #[test]
    fn append_creates_the_file_and_does_not_repeat_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        assert!(append(&path, "abc", "ci runner").unwrap());
        assert!(!append(&path, "abc", "again").unwrap());
        assert!(append(&path, "def", "two\nlines").unwrap());
        let r = Revoked::load(&[path]).unwrap();
        assert!(r.contains("abc") && r.contains("def"));
        assert_eq!(r.len(), 2);
    }
}
