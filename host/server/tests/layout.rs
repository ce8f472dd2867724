//! The server's layout (issue 22 item 9), checked from its source: the
//! modules' imports form no circle (`config` imports no feature module),
//! no function is longer than 80 lines, and the code cites no file outside
//! the repository. The graph is read from `crate::<module>` and
//! `super::<module>` paths, the only ways a module names another here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src`, with the top-level module it belongs to.
fn files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src()).unwrap();
                let top = rel.iter().next().unwrap().to_string_lossy();
                let top = top.trim_end_matches(".rs").to_string();
                out.push((top, p));
            }
        }
    }
    out
}

/// The identifiers following `prefix` in `text`.
fn named_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Module → the modules it names (top level; tests left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let all: BTreeSet<String> = files().into_iter().map(|(m, _)| m).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files() {
        if path.file_name().is_some_and(|f| f == "tests.rs") {
            continue; // a `#[cfg(test)] mod tests;` file
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let nested = path.parent() != Some(src().as_path());
        let mut named = named_after(code, "crate::");
        if !nested {
            // `super::` in a top-level file is the crate.
            named.extend(named_after(code, "super::"));
        }
        let deps = g.entry(module.clone()).or_default();
        for n in named {
            if n != module && all.contains(&n) {
                deps.insert(n);
            }
        }
    }
    g
}

#[test]
fn modules_import_no_circle() {
    let g = graph();
    // Depth-first search for a back edge, reporting the circle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import circle: {:?} -> {n}", &path[i..]);
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            visit(d, g, path, done);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut done = BTreeSet::new();
    for n in g.keys().filter(|n| *n != "lib" && *n != "main") {
        visit(n, &g, &mut Vec::new(), &mut done);
    }
    let config = &g["config"];
    assert!(
        config.iter().all(|d| d == "target"),
        "config imports feature modules: {config:?}"
    );
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for (_, path) in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "async fn ",
                "pub async fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p))
                && !t.ends_with(';');
            if !is_fn {
                continue;
            }
            let indent = l.len() - t.len();
            let close = " ".repeat(indent) + "}";
            let end = lines[i..]
                .iter()
                .position(|x| *x == close)
                .map_or(0, |e| e + 1);
            if end > 80 {
                long.push(format!("{}:{} ({end} lines)", path.display(), i + 1));
            }
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
}

#[test]
fn code_cites_only_files_in_the_repository() {
    for (_, path) in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        // The name is built so that this file does not cite it either.
        let outside = concat!("DESIGN", ".md");
        assert!(
            !text.contains(outside),
            "{} cites {outside}, a file outside the repository",
            path.display()
        );
        for cited in text.split('`').filter(|s| s.starts_with("docs/")) {
            let cited = cited.split([' ', ')', '#']).next().unwrap();
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(cited);
            assert!(
                file.exists(),
                "{} cites {cited}, which is not in the repository",
                path.display()
            );
        }
    }
}
