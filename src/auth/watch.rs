//! Key material that follows its files: a trust store, a JWKS file, an
//! HS256 secret, a users file.
//!
//! ```text
//!  each request ─► stat the configured paths (one syscall each) ─┐
//!  every second ─► stat the paths and every file in directories ─┴─► changed? ─► reload
//!                                                   reload ok ─► swap in (lock-free read)
//!                                                   reload fails ─► keep last good, log, count
//! ```
//!
//! Adding or removing a file in a directory changes the directory's own
//! mtime, and a Kubernetes Secret update swaps a `..data` symlink in the
//! mounted directory, so the per-request check sees a key added or revoked
//! at once; a key file edited in place inside a directory is seen within a
//! second. A request never waits for another's reload: whoever finds the
//! change reloads, the others go on with what was loaded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

/// How often the deep check runs.
const DEEP_EVERY: Duration = Duration::from_secs(1);

/// What identifies a version of the files: (inode, size, mtime) of each.
type Fingerprint = Vec<(u64, u64, i64, i64)>;

/// A value loaded from some files, reloaded when they change.
pub struct Watched<T> {
    paths: Vec<PathBuf>,
    load: fn(&[PathBuf]) -> Result<T, String>,
    current: ArcSwap<Loaded<T>>,
    reloading: Mutex<()>,
    what: &'static str,
    /// Called with each failed reload (a counter).
    on_error: Box<dyn Fn() + Send + Sync>,
}

struct Loaded<T> {
    shallow: Fingerprint,
    deep: Fingerprint,
    value: Arc<T>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Loads the value from `paths` (an error here is fatal: the server
    /// does not start on unreadable key material).
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: fn(&[PathBuf]) -> Result<T, String>,
    ) -> Result<Self, String> {
        let (shallow, deep) = (fingerprint(&paths, false), fingerprint(&paths, true));
        let value = load(&paths).map_err(|e| format!("{what}: {e}"))?;
        Ok(Self {
            paths,
            load,
            current: ArcSwap::from_pointee(Loaded {
                shallow,
                deep,
                value: Arc::new(value),
            }),
            reloading: Mutex::new(()),
            what,
            on_error: Box::new(|| {}),
        })
    }

    /// Calls `f` on every failed reload.
    pub fn on_error(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_error = Box::new(f);
        self
    }

    /// The files it follows.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The current value, reloaded first if a configured path changed.
    pub fn get(&self) -> Arc<T> {
        let loaded = self.current.load();
        let changed = self
            .paths
            .iter()
            .zip(&loaded.shallow)
            .any(|(path, seen)| stat(path) != *seen);
        if changed {
            self.reload();
            return self.current.load().value.clone();
        }
        loaded.value.clone()
    }

    /// The deep check: reloads if any file changed, inside directories too.
    pub fn check(&self) {
        if fingerprint(&self.paths, true) != self.current.load().deep {
            self.reload();
        }
    }

    fn reload(&self) {
        // Someone else is reloading: use what is loaded until they are done.
        let Ok(_guard) = self.reloading.try_lock() else {
            return;
        };
        let (shallow, deep) = (
            fingerprint(&self.paths, false),
            fingerprint(&self.paths, true),
        );
        if deep == self.current.load().deep {
            return;
        }
        match (self.load)(&self.paths) {
            Ok(value) => {
                tracing::info!(what = self.what, "reloaded");
                self.current.store(Arc::new(Loaded {
                    shallow,
                    deep,
                    value: Arc::new(value),
                }));
            }
            Err(error) => {
                (self.on_error)();
                tracing::warn!(what = self.what, %error, "reload failed; keeping the last good version");
                // Remember the broken version so it is not re-read on every
                // request; the next change is tried again.
                let value = self.current.load().value.clone();
                self.current.store(Arc::new(Loaded {
                    shallow,
                    deep,
                    value,
                }));
            }
        }
    }
}

/// Runs the deep check of `watched` every second, for as long as it lives.
pub fn follow<T: Send + Sync + 'static>(watched: &Arc<Watched<T>>) {
    let weak = Arc::downgrade(watched);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(DEEP_EVERY).await;
                let Some(w) = weak.upgrade() else { return };
                // Directory listings and small reads: off the async workers.
                let _ = tokio::task::spawn_blocking(move || w.check()).await;
            }
        });
    }
}

fn fingerprint(paths: &[PathBuf], deep: bool) -> Fingerprint {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(stat(path));
        if deep && path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            out.extend(entries.iter().map(|p| stat(p)));
        }
    }
    out
}

/// (inode, size, mtime) of `path`, following symlinks; zeros if missing.
fn stat(path: &Path) -> (u64, u64, i64, i64) {
    std::fs::metadata(path)
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(paths: &[PathBuf]) -> Result<String, String> {
        let text = std::fs::read_to_string(&paths[0]).map_err(|e| e.to_string())?;
        if text.contains("bad") {
            return Err("bad".into());
        }
        Ok(text)
    }

    #[test]
    fn follows_replacements_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "one").unwrap();
        let w = Watched::new("test", vec![file.clone()], load).unwrap();
        assert_eq!(*w.get(), "one");
        // Replaced by rename (as editors and Kubernetes do): seen at once.
        std::fs::write(dir.path().join("tmp"), "two!").unwrap();
        std::fs::rename(dir.path().join("tmp"), &file).unwrap();
        assert_eq!(*w.get(), "two!");
        std::fs::write(dir.path().join("tmp"), "bad").unwrap();
        std::fs::rename(dir.path().join("tmp"), &file).unwrap();
        assert_eq!(*w.get(), "two!");
        assert!(Watched::new("test", vec![dir.path().join("none")], load).is_err());
    }
}
