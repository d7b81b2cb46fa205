//! The `Authorization` header for upstream pushes, from files that are
//! re-read when they change (rotated Kubernetes Secrets, projected tokens).
//!
//! ```text
//!  password_file / bearer_token_file ─(poll every 5 s)─► ArcSwap<HeaderValue> ─► each push
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::config::Upstream;

/// Errors reading a credential file at startup.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} does not make a valid Authorization header")]
    Invalid(PathBuf),
}

#[derive(Clone)]
enum Kind {
    Basic { username: String },
    Bearer,
}

/// The current `Authorization` header value, if any.
#[derive(Clone, Default)]
pub struct Credentials {
    current: Arc<ArcSwapOption<HeaderValue>>,
}

impl Credentials {
    /// Reads the configured file (an error is fatal at startup) and keeps
    /// following it.
    pub fn start(cfg: &Upstream) -> Result<Self, CredentialError> {
        let creds = Self::default();
        let (path, kind) = match (&cfg.basic_auth, &cfg.bearer_token_file) {
            (Some(b), _) => (
                b.password_file.clone(),
                Kind::Basic {
                    username: b.username.clone(),
                },
            ),
            (None, Some(p)) => (p.clone(), Kind::Bearer),
            (None, None) => return Ok(creds),
        };
        let value = header(&path, &kind)?;
        creds.current.store(Some(Arc::new(value)));
        let follower = creds.clone();
        tokio::spawn(async move { follower.follow(path, kind).await });
        Ok(creds)
    }

    /// The header to send, if any. Lock-free.
    #[inline]
    pub fn header(&self) -> Option<Arc<HeaderValue>> {
        self.current.load_full()
    }

    async fn follow(self, path: PathBuf, kind: Kind) {
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match header(&path, &kind) {
                Ok(v) => {
                    tracing::info!(path = %path.display(), "upstream credentials reloaded");
                    self.current.store(Some(Arc::new(v)));
                }
                Err(e) => tracing::error!(error = %e, "keeping the previous upstream credentials"),
            }
        }
    }
}

fn header(path: &Path, kind: &Kind) -> Result<HeaderValue, CredentialError> {
    use base64::Engine;
    let secret = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
        path: path.to_owned(),
        source,
    })?;
    // Secrets mounted from files usually end with a newline.
    let secret = secret.trim_end_matches(['\n', '\r']);
    let text = match kind {
        Kind::Bearer => format!("Bearer {}", secret.trim()),
        Kind::Basic { username } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"))
        ),
    };
    let mut value =
        HeaderValue::from_str(&text).map_err(|_| CredentialError::Invalid(path.to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cret\n").unwrap();
        let basic = header(
            &p,
            &Kind::Basic {
                username: "user".into(),
            },
        )
        .unwrap();
        // base64("user:s3cret")
        assert_eq!(basic, "Basic dXNlcjpzM2NyZXQ=");
        let bearer = header(&p, &Kind::Bearer).unwrap();
        assert_eq!(bearer, "Bearer s3cret");
        assert!(bearer.is_sensitive());
        std::fs::write(&p, "bad\u{7f}token").unwrap();
        assert!(header(&p, &Kind::Bearer).is_err());
    }
}
