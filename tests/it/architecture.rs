//! The library's import directions, checked on its source: data walks one way, so a
//! module may use only modules on lower floors, and no two sibling files use each other.
//! A new import that breaks either fails here with the file and the path it used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest floor first. A module may import modules on
/// floors below its own, never on its floor or above.
const FLOORS: &[&[&str]] = &[
    &["identity", "tls"],
    &["delta", "events", "file_watch"],
    &["filter"],
    &["store", "policy"],
    &["admission"],
    &["node"],
    &["federation"],
    &["http", "config"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every identifier that follows `prefix` in `text` (`crate::` -> `store`, `node`, ...).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            // `prefix` starts a path, not the tail of a longer one (`super::super::`).
            !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A file's text without its unit tests: a test beside the code may use whatever it
/// needs to set up, which is not a dependency of the code.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a readable file");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn is_test_file(path: &Path) -> bool {
    path.file_stem().is_some_and(|s| s == "tests")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

#[test]
fn modules_import_only_lower_floors() {
    let src = src();
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&src).expect("src/") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if matches!(name, "lib" | "bin") {
            continue;
        }
        let floor = floor_of(name).unwrap_or_else(|| {
            panic!("src/{name} is not on any floor: add it to FLOORS in this test")
        });
        let files = if path.is_dir() {
            rust_files(&path)
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable file");
            for used in names_after(&text, "crate::") {
                if used == name {
                    continue;
                }
                match floor_of(used) {
                    Some(f) if f < floor => {}
                    _ => wrong.push(format!(
                        "{} uses crate::{used} (src/{name} may use only lower floors)",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the floors:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_sibling_files_use_each_other() {
    let src = src();
    let mut pairs = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        if dir.ends_with("bin") {
            continue;
        }
        // Each child of `dir` (a file, or a directory with its files) and its text.
        let mut children: BTreeMap<String, (bool, String)> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("a directory") {
            let path = entry.expect("an entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if stem == "tests" {
                    continue;
                }
                dirs.push(path.clone());
                let text: String = rust_files(&path)
                    .iter()
                    .filter(|f| !is_test_file(f.strip_prefix(&src).unwrap_or(f)))
                    .map(|f| code_of(f))
                    .collect();
                children.entry(stem.to_owned()).or_default().1 += &text;
            } else if path.extension().is_some_and(|e| e == "rs")
                && !matches!(stem, "mod" | "lib" | "main" | "tests")
            {
                let text = code_of(&path);
                let child = children.entry(stem.to_owned()).or_default();
                child.0 = true;
                child.1 += &text;
            }
        }
        let module_path: Vec<String> = dir
            .strip_prefix(&src)
            .expect("under src/")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let crate_prefix = if module_path.is_empty() {
            "crate::".to_owned()
        } else {
            format!("crate::{}::", module_path.join("::"))
        };
        let uses: BTreeMap<&String, BTreeSet<&str>> = children
            .iter()
            .map(|(name, (is_file, text))| {
                let sibling = if *is_file {
                    "super::"
                } else {
                    "super::super::"
                };
                let used = names_after(text, &crate_prefix)
                    .into_iter()
                    .chain(names_after(text, sibling))
                    .filter(|n| *n != name.as_str() && children.contains_key(*n))
                    .collect();
                (name, used)
            })
            .collect();
        for (a, used) in &uses {
            for b in used {
                let back = uses
                    .get(&b.to_string())
                    .is_some_and(|u| u.contains(a.as_str()));
                if back && a.as_str() < *b {
                    let at = dir
                        .strip_prefix(src.parent().unwrap_or(&src))
                        .unwrap_or(&dir);
                    pairs.push(format!("{}: {a} <-> {b}", at.display()));
                }
            }
        }
    }
    assert!(
        pairs.is_empty(),
        "sibling files that use each other:\n{}",
        pairs.join("\n")
    );
}

#[test]
fn the_checks_see_imports() {
    assert_eq!(
        names_after("use crate::store::Seq; crate::node::Node", "crate::"),
        ["store", "node"]
    );
    assert_eq!(names_after("super::super::engine", "super::"), ["super"]);
    assert_eq!(names_after("x::super::a", "super::"), Vec::<&str>::new());
}
