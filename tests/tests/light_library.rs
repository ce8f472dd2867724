//! The library stays light: `portcullis` without its default features (the
//! sharded limiter, `Guard`, the tower layer, the cleanup task) pulls at
//! most [`BOUND`] lines of
//! `cargo tree -p portcullis --no-default-features -e normal --prefix none | sort -u`,
//! and none of the crates its features exist to leave out, nor any of
//! the embedded crates a std user has no use for (the core's time types
//! are its own, its fixed vectors too; embassy-time's types come only
//! with the core's `embassy` feature).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The most lines the library's normal dependency tree may have (21 when
/// this bound was set, down from 39 with embassy-time and heapless).
const BOUND: usize = 25;

/// Crates only a feature (or the server) may bring.
const FEATURE_ONLY: &[&str] = &[
    "axum",
    "rusqlite",
    "redis",
    "serde_json",
    "thiserror",
    "reqwest",
    "hyper",
];

/// Crates of embedded stacks that a std build must not compile at all.
const EMBEDDED_ONLY: &[&str] = &[
    "embassy-time",
    "embassy-time-driver",
    "embedded-hal",
    "embedded-hal-async",
    "nb",
    "void",
    "hash32",
    "heapless",
];

#[test]
fn the_library_without_features_has_at_most_25_dependency_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "tree",
            "-p",
            "portcullis",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo tree failed:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: BTreeSet<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    let list = lines.iter().copied().collect::<Vec<_>>().join("\n");
    assert!(
        lines.len() <= BOUND,
        "{} lines, more than {BOUND}:\n{list}",
        lines.len()
    );
    for name in FEATURE_ONLY.iter().chain(EMBEDDED_ONLY) {
        assert!(
            !lines.iter().any(|l| l.split(' ').next() == Some(*name)),
            "{name} is in the featureless tree:\n{list}"
        );
    }
    // The tree is the library's own, not an empty answer.
    assert!(
        lines.iter().any(|l| l.starts_with("portcullis-core ")),
        "{list}"
    );
}
