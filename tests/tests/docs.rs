//! The README and the book (`docs/`, built with mdBook) hold together:
//!
//! - every code fence is closed and names its language, so no section
//!   renders as code by accident (the README's "Ban jitter" fence once
//!   swallowed everything after it);
//! - no Rust fence is `ignore`d: the README's and `docs/library.md`'s
//!   snippets run as doctests of `portcullis-tests` (`src/lib.rs`), and each
//!   README snippet is the example file it names, line for line, so the
//!   front page and `cargo build --examples` cannot drift apart;
//! - every key of `portcullis.example.toml` is in the configuration
//!   chapter's grouped list;
//! - relative links in the markdown name files that exist (and headings
//!   that exist, for `.md#anchor`), and in the built book every relative
//!   `href`/`src` and `#anchor` resolves. The book is built where
//!   `mdbook build docs` puts it, `docs/book/` (gitignored; a build
//!   elsewhere would copy an old `docs/book/` into itself, since the
//!   book's sources are all of `docs/`), with `mdbook` (`.ci/run` installs
//!   it): without it that test fails under `CI=true` and prints SKIPPED
//!   otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The README and every markdown file of the book's folder.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let docs = root().join("docs");
    for e in std::fs::read_dir(&docs).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// A fenced code block: its info string, the line it opens on (1-based)
/// and its lines.
struct Fence {
    info: String,
    line: usize,
    body: Vec<String>,
}

/// The fences of a markdown text (backtick fences of three or more, at
/// most three spaces in, as CommonMark has them); `Err` names an unclosed
/// one.
fn fences(text: &str) -> Result<Vec<Fence>, String> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Fence)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        let fence = line.len() - trimmed.len() <= 3 && ticks >= 3;
        match open.take() {
            None if fence => {
                let f = Fence {
                    info: trimmed[ticks..].trim().to_string(),
                    line: i + 1,
                    body: Vec::new(),
                };
                open = Some((ticks, f));
            }
            None => {}
            Some((n, f)) if fence && ticks >= n && trimmed[ticks..].trim().is_empty() => {
                out.push(f);
            }
            Some((n, mut f)) => {
                f.body.push(line.to_string());
                open = Some((n, f));
            }
        }
    }
    match open {
        Some((_, f)) => Err(format!(
            "the fence opened on line {} is never closed",
            f.line
        )),
        None => Ok(out),
    }
}

#[test]
fn every_fence_is_closed_and_names_its_language() {
    for p in markdown_files() {
        let fs = fences(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for f in fs {
            assert!(
                !f.info.is_empty(),
                "{}:{}: a fence without a language (```text for plain text)",
                p.display(),
                f.line
            );
            let rust = f.info.split(',').any(|w| w == "rust");
            assert!(
                !(rust && f.info.contains("ignore")),
                "{}:{}: an ignored Rust snippet (make it compile: a doctest)",
                p.display(),
                f.line
            );
        }
    }
}

/// The `host/examples/*.rs` or `core/examples/*.rs` path named last in
/// `text`.
fn last_example_named(text: &str) -> Option<String> {
    let mut found = None;
    for start in ["host/examples/", "core/examples/"] {
        if let Some(i) = text.rfind(start) {
            let rest = &text[i..];
            let end = rest.find(".rs").map(|e| e + 3)?;
            if found.as_ref().is_none_or(|(j, _)| i > *j) {
                found = Some((i, rest[..end].to_string()));
            }
        }
    }
    found.map(|(_, p)| p)
}

/// An example file without its leading `//!` doc comment.
fn example_code(path: &Path) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| !l.starts_with("//!") && !l.is_empty())
        .unwrap_or(lines.len());
    lines[first..].join("\n")
}

#[test]
fn readme_rust_snippets_are_the_examples_they_name() {
    let readme = read(&root().join("README.md"));
    let lines: Vec<&str> = readme.lines().collect();
    let mut checked = 0;
    let mut prose_from = 0;
    for f in fences(&readme).unwrap() {
        let prose = lines[prose_from..f.line - 1].join("\n");
        prose_from = f.line + f.body.len() + 1;
        if !f.info.split(',').any(|w| w == "rust") {
            continue;
        }
        let example = last_example_named(&prose).unwrap_or_else(|| {
            panic!("README.md:{}: the text before a Rust snippet names no host/examples/ or core/examples/ file", f.line)
        });
        let want = example_code(&root().join(&example));
        assert_eq!(
            f.body.join("\n"),
            want,
            "README.md:{}: the snippet is not {example} (without its //! header)",
            f.line
        );
        checked += 1;
    }
    assert!(checked >= 2, "the README's quick starts have Rust snippets");
}

/// `key = ...` lines of the example config, commented out or not.
fn example_config_keys() -> BTreeSet<String> {
    let text = read(&root().join("portcullis.example.toml"));
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(k.to_string());
        }
    }
    keys
}

#[test]
fn the_configuration_chapter_lists_every_key() {
    let chapter = read(&root().join("docs/configuration.md"));
    let grouped = fences(&chapter)
        .unwrap()
        .into_iter()
        .find(|f| f.body.first().is_some_and(|l| l.starts_with("[server]")))
        .expect("docs/configuration.md has the grouped key list")
        .body
        .join("\n");
    let words: BTreeSet<&str> = grouped
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let keys = example_config_keys();
    assert!(keys.len() > 50, "keys found: {keys:?}");
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !words.contains(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}

/// A heading's anchor as mdBook and GitHub make it: lower case, spaces to
/// `-`, only letters, digits, `-` and `_` kept.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect::<String>()
        .to_lowercase()
}

fn md_anchors(text: &str) -> BTreeSet<String> {
    let in_code: BTreeSet<usize> = fences(text)
        .unwrap()
        .iter()
        .flat_map(|f| f.line..=f.line + f.body.len() + 1)
        .collect();
    text.lines()
        .enumerate()
        .filter(|(i, l)| l.starts_with('#') && !in_code.contains(&(i + 1)))
        .map(|(_, l)| slug(l.trim_start_matches('#')))
        .collect()
}

/// Targets of inline links and images, `](target)`, outside HTML
/// comments (SUMMARY.md keeps chapters to come in comments).
fn md_links(text: &str) -> Vec<String> {
    let mut shown = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        shown.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |e| &rest[i + e + 3..]);
    }
    shown.push_str(rest);
    let mut out = Vec::new();
    let mut rest = shown.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:") || target.starts_with("//")
}

#[test]
fn markdown_links_name_files_and_headings_that_exist() {
    for p in markdown_files() {
        let text = read(&p);
        let dir = p.parent().unwrap();
        for target in md_links(&text) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file_path = if file.is_empty() {
                p.clone()
            } else {
                dir.join(file)
            };
            assert!(
                file_path.exists(),
                "{}: link to {target}: no such file",
                p.display()
            );
            if !anchor.is_empty() && file_path.extension().is_some_and(|x| x == "md") {
                let anchors = md_anchors(&read(&file_path));
                assert!(
                    anchors.contains(anchor),
                    "{}: link to {target}: no such heading (have {anchors:?})",
                    p.display()
                );
            }
        }
    }
}

fn mdbook() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let mut candidates: Vec<PathBuf> = cargo_home
        .map(|h| h.join("bin/mdbook"))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("mdbook")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            html_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "html") {
            out.push(p);
        }
    }
}

/// The values of `attr="…"` in an HTML text.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pat = format!(" {attr}=\"");
    html.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = &html[i + pat.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn the_book_builds_and_its_links_resolve() {
    let Some(mdbook) = mdbook() else {
        let msg = "mdbook not found (cargo install mdbook --locked; .ci/run does)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg} (CI=true: not skipping)");
        }
        eprintln!("SKIPPED {msg}");
        return;
    };
    let status = Command::new(&mdbook)
        .arg("build")
        .arg(root().join("docs"))
        .status()
        .expect("run mdbook");
    assert!(status.success(), "mdbook build docs failed");
    let out = root().join("docs/book");
    let mut pages = Vec::new();
    html_files(&out, &mut pages);
    assert!(pages.iter().any(|p| p.ends_with("rules.html")));
    let mut broken = Vec::new();
    for page in &pages {
        // mdBook's 404 page resolves links against the site's root.
        if page.ends_with("404.html") {
            continue;
        }
        let html = read(page);
        let links = attr_values(&html, "href")
            .into_iter()
            .chain(attr_values(&html, "src"));
        for link in links {
            if is_external(link) || link.starts_with("javascript:") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let name = page.strip_prefix(&out).unwrap().display().to_string();
            if !target.is_file() {
                broken.push(format!("{name}: {link}: no such file"));
            } else if !anchor.is_empty() && target.extension().is_some_and(|x| x == "html") {
                let id = format!("id=\"{anchor}\"");
                if !read(&target).contains(&id) {
                    broken.push(format!("{name}: {link}: no such anchor"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the book:\n{}",
        broken.join("\n")
    );
}

/// The features of a `Cargo.toml` (not `default`), each with whether a
/// `## ` doc comment stands right above it.
fn features(manifest: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut in_features = false;
    let mut documented = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if !in_features {
            continue;
        }
        if line.starts_with("##") {
            documented = true;
        } else if let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if name != "default" {
                out.push((name.to_string(), documented));
            }
            documented = false;
        } else if !line.is_empty() && !line.starts_with('#') {
            documented = false;
        }
    }
    out
}

#[test]
fn every_feature_has_the_doc_comment_its_crate_docs_list() {
    for (crate_dir, lib) in [
        ("core", "core/src/lib.rs"),
        ("host", "host/src/lib.rs"),
        ("host/server", "host/server/src/lib.rs"),
    ] {
        let manifest = read(&root().join(crate_dir).join("Cargo.toml"));
        for (name, documented) in features(&manifest) {
            assert!(
                documented,
                "{crate_dir}/Cargo.toml: feature `{name}` has no `## ` comment"
            );
        }
        assert!(
            read(&root().join(lib)).contains("#![doc = document_features::document_features!()]"),
            "{lib}: the crate docs list the features from Cargo.toml"
        );
    }
    let host = features(&read(&root().join("host/Cargo.toml")));
    assert!(host.iter().any(|(n, _)| n == "sqlite"), "{host:?}");
}
