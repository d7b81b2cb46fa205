//! Feeds the table from a YAML file of `namespace: organization` pairs.
//!
//! ```text
//!  notify event on the file's directory ─┐
//!  poll of (inode, size, mtime) every 2s ┴─► reload ─► parse ─► OrgTable::replace
//!                                                        └─ error: keep last good, log
//! ```
//!
//! The directory is watched rather than the file, because a Kubernetes
//! ConfigMap mount updates by swapping a `..data` symlink beside the file: the
//! file itself is never written in place. The poll is a safety net for
//! filesystems that deliver no events.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use serde_yaml::Value;

use super::{OrgTable, Snapshot};

/// Why a table file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a YAML map of namespace: organization: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Reads and parses the table file.
pub fn load(path: &Path) -> Result<Snapshot, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| FileError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses `namespace: organization` YAML. A namespace whose value is null is
/// listed without an organization and so stays unmapped; numbers and booleans
/// are taken as their text.
pub fn parse(text: &str) -> Result<Snapshot, String> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let map = match value {
        Value::Mapping(map) => map,
        Value::Null => Default::default(),
        other => return Err(format!("expected a map, found {}", kind(&other))),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (key, value) in map {
        let namespace = scalar(&key)
            .ok_or_else(|| format!("namespace keys must be strings, found {}", kind(&key)))?;
        match value {
            Value::Null => continue,
            ref v => {
                let org = scalar(v).ok_or_else(|| {
                    format!(
                        "organization of {namespace:?} must be a string, found {}",
                        kind(v)
                    )
                })?;
                pairs.push((namespace, org));
            }
        }
    }
    Ok(Snapshot::from_pairs(pairs))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Identity of the file's current content, cheap to read: a ConfigMap swap
/// changes the inode, an in-place edit the size or modification time.
fn fingerprint(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Loads the file once (an error here is fatal: there is no last good table
/// yet) and then keeps `table` in step with it until the process ends.
pub fn start(path: PathBuf, table: OrgTable) -> Result<(), FileError> {
    let snapshot = load(&path)?;
    tracing::info!(path = %path.display(), namespaces = snapshot.len(), "loaded namespace table");
    table.replace(snapshot);
    tokio::spawn(follow(path, table));
    Ok(())
}

async fn follow(path: PathBuf, table: OrgTable) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    // Keep the watcher alive for as long as this task runs.
    let _watcher = watch_dir(&path, tx);
    let mut seen = fingerprint(&path);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            Some(()) = rx.recv() => {
                // Let a burst of events (write, chmod, rename) settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
        }
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&path) {
            Ok(snapshot) => {
                tracing::info!(path = %path.display(), namespaces = snapshot.len(), "reloaded namespace table");
                table.replace(snapshot);
                crate::metrics::table_source_up(true);
            }
            Err(e) => {
                crate::metrics::table_source_up(false);
                crate::metrics::table_sync_error();
                tracing::error!(error = %e, "keeping the last good namespace table");
            }
        }
    }
}

fn watch_dir(path: &Path, tx: tokio::sync::mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    });
    match watcher {
        Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; polling only");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Org;

    #[test]
    fn parses_the_map_and_skips_nulls() {
        let s = parse("shop-prod: acme\nbilling: 1234\nkube-system:\n").unwrap();
        assert_eq!(s.get("shop-prod"), Some(&Org::Tenant("acme".into())));
        assert_eq!(s.get("billing"), Some(&Org::Tenant("1234".into())));
        assert_eq!(s.get("kube-system"), None);
        assert_eq!(s.len(), 2);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_map() {
        assert!(parse("- a\n- b\n").unwrap_err().contains("expected a map"));
        assert!(parse("a: [x]").unwrap_err().contains("must be a string"));
        assert!(parse("a: b: c").is_err());
    }
}
