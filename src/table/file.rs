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

/// Parses `namespace: organization` YAML.
///
/// Every key and value is taken as the exact characters written: YAML's
/// type resolution is never applied, so `0x1f`, `1e3`, `017`, `true`, `no`,
/// `null` or `2024-01-01` are the namespace or organization of that name,
/// not a number, boolean, null or date (Kubernetes allows namespaces called
/// `1e3` or `null`; reading `0x1f` as 31 would send one namespace's series
/// to another's tenant). A namespace with an empty value is listed without
/// an organization and stays unmapped.
///
/// Not a table, so an error (the caller keeps the last good table): a file
/// with no YAML content at all (empty, whitespace or comments only, as a
/// truncated write leaves it; `{}` is the explicit empty table), anything
/// but a map, a list or map as a value, and a namespace listed twice.
pub fn parse(text: &str) -> Result<Snapshot, String> {
    if is_blank(text) {
        return Err("the file is empty (no YAML content); write `{}` for an empty table".into());
    }
    let table: LiteralTable = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    Ok(Snapshot::from_pairs(
        table.0.into_iter().filter(|(_, org)| !org.is_empty()),
    ))
}

/// True when `text` holds no YAML node: only whitespace, comments and
/// document markers.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---" || line == "...")
}

/// The table as literal `(namespace, organization)` text pairs.
///
/// Deserialized by hand rather than through `serde_yaml::Value`, which
/// resolves plain scalars to numbers and booleans (and would even call the
/// keys `0x1f` and `31` duplicates). `deserialize_str` hands back a scalar's
/// characters as written, whatever they look like.
struct LiteralTable(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for LiteralTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TableVisitor)
    }
}

struct TableVisitor;

impl<'de> serde::de::Visitor<'de> for TableVisitor {
    type Value = LiteralTable;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of namespace: organization")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
        let mut seen = std::collections::HashSet::new();
        while let Some(Text(namespace)) = map.next_key::<Text>()? {
            let Text(org) = map.next_value::<Text>().map_err(|e| {
                serde::de::Error::custom(format_args!("organization of {namespace:?}: {e}"))
            })?;
            if !seen.insert(namespace.clone()) {
                return Err(serde::de::Error::custom(format_args!(
                    "namespace {namespace:?} is listed twice"
                )));
            }
            pairs.push((namespace, org));
        }
        Ok(LiteralTable(pairs))
    }
}

/// One scalar, as the characters written.
struct Text(String);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
        }
        d.deserialize_str(V)
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
    table.signals().source_up.set(1.0);
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
                table.signals().source_up.set(1.0);
            }
            Err(e) => {
                table.signals().source_up.set(0.0);
                table.signals().sync_errors.increment(1);
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
    fn parses_the_map_and_skips_empty_values() {
        let s = parse("shop-prod: acme\nbilling: 1234\nkube-system:\nquoted: ''\n").unwrap();
        assert_eq!(s.get("shop-prod"), Some(&Org::tenant("acme")));
        assert_eq!(s.get("billing"), Some(&Org::tenant("1234")));
        assert_eq!(s.get("kube-system"), None);
        assert_eq!(s.get("quoted"), None);
        assert_eq!(s.len(), 2);
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn every_key_and_value_is_the_text_written() {
        // Each of these is a number, boolean, null or date to a YAML 1.1/1.2
        // reader; here each is a namespace and an organization of its own.
        let words = [
            "0x1f",
            "31",
            "1e3",
            "1000",
            "0o17",
            "017",
            "15",
            "true",
            "no",
            "on",
            "yes",
            "off",
            "null",
            "Null",
            "~",
            ".inf",
            "-.inf",
            ".nan",
            "2024-01-01",
            "1_000",
            "0b11",
            "+1",
        ];
        let text: String = words.iter().map(|w| format!("{w}: {w}\n")).collect();
        let s = parse(&text).unwrap();
        assert_eq!(s.len(), words.len(), "no two keys merged");
        for w in words {
            assert_eq!(s.get(w), Some(&Org::tenant(w)), "{w}");
        }
        let s = parse("31: acme\n0x1f: globex\nshop: 0x1F\nlogs: 1e3\n").unwrap();
        assert_eq!(s.get("31"), Some(&Org::tenant("acme")));
        assert_eq!(s.get("0x1f"), Some(&Org::tenant("globex")));
        assert_eq!(s.get("shop"), Some(&Org::tenant("0x1F")));
        assert_eq!(s.get("logs"), Some(&Org::tenant("1e3")));
        // quoting and block styles give the same text
        let s = parse("'0x1f': \"1e3\"\nb: |-\n  acme\n").unwrap();
        assert_eq!(s.get("0x1f"), Some(&Org::tenant("1e3")));
        assert_eq!(s.get("b"), Some(&Org::tenant("acme")));
    }

    #[test]
    fn a_truncated_or_ambiguous_file_is_not_a_table() {
        for blank in [
            "",
            "   ",
            "\n\n",
            "# only a comment\n",
            "---\n",
            "\t\n  # x\n",
        ] {
            let e = parse(blank).unwrap_err();
            assert!(e.contains("empty"), "{blank:?}: {e}");
        }
        let e = parse("a: x\nb: y\na: z\n").unwrap_err();
        assert!(e.contains("\"a\" is listed twice"), "{e}");
        assert!(parse("null").unwrap_err().contains("map"));
        assert!(parse("a: x\n---\nb: y\n").is_err(), "two documents");
    }

    #[test]
    fn rejects_what_is_not_a_map() {
        assert!(parse("- a\n- b\n").unwrap_err().contains("expected a map"));
        let e = parse("a: x\nb: [x]\n").unwrap_err();
        assert!(
            e.contains("organization of \"b\"") && e.contains("line 2"),
            "{e}"
        );
        assert!(parse("a: b: c").is_err());
    }
}
