//! The public API of `portcullis-core`, `portcullis` and
//! `portcullis-server` is the one committed in `tests/public-api/`, so a
//! change to it is a decision made in review, not an accident.
//!
//! Each crate's rustdoc JSON (`RUSTC_BOOTSTRAP=1 cargo rustdoc --lib --
//! -Zunstable-options --output-format json`, with the features of its
//! `[package.metadata.docs.rs]`, in `target/public-api/` so the outer test
//! run's build is not touched) is
//! listed one item per line (`portcullis_tests::public_api`) and compared
//! with `tests/public-api/<crate>.txt`, whose first line names the
//! workspace version it was recorded at.
//!
//! `UPDATE_PUBLIC_API=1` rewrites the listings. It refuses when an item
//! was removed or changed (a breaking change) while the version is still
//! the one recorded: bump `version` in the workspace `Cargo.toml` (0.x: the
//! minor, 0.1.0 to 0.2.0) in the same commit. Additions need only the
//! rewrite. `docs/api-changes.md` walks through both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_tests::public_api;

/// (package, library name, folder).
const CRATES: [(&str, &str, &str); 3] = [
    ("portcullis-core", "portcullis_core", "core"),
    ("portcullis", "portcullis", "host"),
    ("portcullis-server", "portcullis_server", "host/server"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `[workspace.package] version`.
fn workspace_version() -> String {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && line.starts_with("version") {
            if let Some((_, v)) = line.split_once('=') {
                return v.trim().trim_matches('"').to_string();
            }
        }
    }
    panic!("no [workspace.package] version in Cargo.toml");
}

/// The feature arguments docs.rs builds a crate with (its
/// `[package.metadata.docs.rs]`: `features = [...]` or `all-features`).
fn docs_rs_features(dir: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[package.metadata.docs.rs]";
        } else if in_section && line.replace(' ', "") == "all-features=true" {
            return vec!["--all-features".to_string()];
        } else if in_section && line.starts_with("features") {
            let list = line.split_once('=').map(|(_, v)| v).unwrap_or_default();
            let names: Vec<&str> = list
                .trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
                .split(',')
                .map(|f| f.trim().trim_matches('"'))
                .filter(|f| !f.is_empty())
                .collect();
            return vec!["--features".to_string(), names.join(",")];
        }
    }
    Vec::new()
}

fn rustdoc_json(package: &str, lib: &str, dir: &str) -> serde_json::Value {
    let target = root().join("target/public-api");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTDOCFLAGS")
        .args(["rustdoc", "--quiet", "--lib", "-p", package, "--target-dir"])
        .arg(&target);
    cmd.args(docs_rs_features(dir));
    cmd.args(["--", "-Zunstable-options", "--output-format", "json"]);
    let status = cmd.status().expect("run cargo rustdoc");
    assert!(status.success(), "cargo rustdoc -p {package} (JSON) failed");
    let path = target.join("doc").join(format!("{lib}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn header(package: &str, version: &str) -> String {
    format!(
        "# {package} {version}: public API, one item per line \
         (tests/tests/public_api.rs; UPDATE_PUBLIC_API=1 rewrites it)"
    )
}

/// The recorded version and items of a listing.
fn recorded(text: &str) -> (String, BTreeSet<String>) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let version = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .trim_end_matches(':');
    (version.to_string(), lines.map(str::to_string).collect())
}

/// Compare one crate with its listing (or rewrite it); `Err` says why not.
fn check(package: &str, lib: &str, dir: &str, version: &str) -> Result<(), String> {
    let now: BTreeSet<String> = public_api::list(&rustdoc_json(package, lib, dir))
        .into_iter()
        .collect();
    assert!(now.len() > 10, "{package}: only {} items listed", now.len());
    let file = root()
        .join("tests/public-api")
        .join(format!("{package}.txt"));
    let (was_version, was) = std::fs::read_to_string(&file)
        .map(|t| recorded(&t))
        .unwrap_or_default();
    let removed: Vec<&String> = was.difference(&now).collect();
    let added: Vec<&String> = now.difference(&was).collect();
    if removed.is_empty() && added.is_empty() && was_version == version {
        return Ok(());
    }
    let diff: Vec<String> = removed
        .iter()
        .map(|l| format!("- {l}"))
        .chain(added.iter().map(|l| format!("+ {l}")))
        .collect();
    let diff = diff.join("\n");
    let update = std::env::var("UPDATE_PUBLIC_API").is_ok_and(|v| v == "1");
    if !update {
        return Err(format!(
            "{package}: the public API differs from {} (recorded at {was_version}, now {version}):\n{diff}\n\
             A deliberate change: UPDATE_PUBLIC_API=1 cargo test -p portcullis-tests --test public_api \
             (a removal or change also needs a version bump; docs/api-changes.md)",
            file.display()
        ));
    }
    if !removed.is_empty() && was_version == version {
        return Err(format!(
            "{package}: items removed or changed, a breaking change, at the recorded version {version}:\n{diff}\n\
             Bump [workspace.package] version in Cargo.toml (0.x: the minor) and run again"
        ));
    }
    let mut text = header(package, version);
    for l in &now {
        text.push('\n');
        text.push_str(l);
    }
    text.push('\n');
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    eprintln!(
        "{package}: {} rewritten ({} removed, {} added)",
        file.display(),
        removed.len(),
        added.len()
    );
    Ok(())
}

#[test]
fn the_public_api_is_the_recorded_one() {
    let version = workspace_version();
    let failures: Vec<String> = CRATES
        .iter()
        .filter_map(|(package, lib, dir)| check(package, lib, dir, &version).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
