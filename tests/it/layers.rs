//! The layering of `src/`: a module may use only modules of lower layers,
//! and the files of one folder module do not use each other in a circle.
//! Adding an import that goes up (say `route` using `push`) fails here,
//! naming the file and the import. The layers are the crate doc's map
//! (`src/lib.rs`).
//!
//! What counts as a use: `crate::<module>` in code, outside comments and
//! outside test code (`tests.rs` files and `#[cfg(test)] mod tests`
//! blocks), which may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use the modules of the layers below its own.
const LAYERS: &[&[&str]] = &[
    // Data types and resources every stage shares.
    &[
        "tenant",
        "signals",
        "request_limits",
        "pool",
        "limits",
        "connections",
    ],
    // Protobuf helpers and the remote write 1.0 walk.
    &["wire"],
    // Compression, for every format.
    &["codec"],
    // What a push is, the org table, metrics and answers: no HTTP, no config.
    &["formats", "table", "metrics", "answer", "activity"],
    &["config"],
    &["telemetry", "credentials", "shutdown"],
    // Routing and identity: no HTTP.
    &["route", "auth"],
    &["pipeline"],
    // Transport.
    &["forward"],
    // The read path, beside (not under) the push path.
    &["read", "app", "inspect", "ui"],
    &["push", "health"],
    &["server"],
    &["cli"],
];

/// Modules outside the layering: test helpers (test-util only).
const OUTSIDE: &[&str] = &["testing"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and test code.
fn code(path: &Path) -> String {
    without_comments_and_tests(&std::fs::read_to_string(path).unwrap())
}

fn without_comments_and_tests(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find(" // ") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names after each `prefix` in `code` (`crate::` → `route`, ...).
fn uses<'a>(code: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    code.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The top-level module a file belongs to (`src/forward/h1.rs` → `forward`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_uses_a_module_of_its_own_layer_or_above() {
    let layer: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut wrong = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for path in &all {
        let module = module_of(path);
        if ["lib", "main", "bin"].contains(&module.as_str())
            || OUTSIDE.contains(&module.as_str())
            || path.file_name().is_some_and(|f| f == "tests.rs")
        {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some(&own) = layer.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module {module} is in no layer",
                path.display()
            ));
            continue;
        };
        for used in uses(&code(path), "crate::") {
            if used == module {
                continue;
            }
            match layer.get(used) {
                Some(&theirs) if theirs < own => {}
                Some(_) => wrong.push(format!(
                    "{}: {module} (layer {own}) uses crate::{used} (layer {})",
                    path.display(),
                    layer[used]
                )),
                None if OUTSIDE.contains(&used) => {}
                None => wrong.push(format!(
                    "{}: uses crate::{used}, which is in no layer",
                    path.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    // The table names only modules that exist.
    for module in layer.keys() {
        assert!(seen_modules.contains(*module), "no module {module} in src/");
    }
}

#[test]
fn the_files_of_a_folder_module_do_not_use_each_other_in_a_circle() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    // folder → file stem → the sibling files it uses through `super::`.
    let mut graphs: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in &all {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if stem == "mod" || stem == "tests" {
            continue;
        }
        let folder = path.parent().unwrap().to_path_buf();
        if folder == src() {
            continue;
        }
        let siblings: BTreeSet<String> = uses(&code(path), "super::")
            .into_iter()
            .map(str::to_string)
            .collect();
        graphs.entry(folder).or_default().insert(stem, siblings);
    }
    for (folder, graph) in &graphs {
        // Depth-first search for a cycle among the folder's files.
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|n| n == node) {
                let mut cycle = path[i..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                if graph.contains_key(next) {
                    if let Some(c) = visit(next, graph, path, done) {
                        return Some(c);
                    }
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for node in graph.keys() {
            if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
                panic!("{}: {}", folder.display(), cycle.join(" → "));
            }
        }
    }
}

#[test]
fn the_checks_see_uses_and_skip_comments() {
    let code = "use crate::route::Router;\n// crate::push is only named here\nlet x = crate::pool::X; // crate::app\n#[cfg(test)]\nmod tests { use crate::server; }\n";
    let cleaned = without_comments_and_tests(code);
    assert_eq!(
        uses(&cleaned, "crate::").into_iter().collect::<Vec<_>>(),
        ["pool", "route"]
    );
}
