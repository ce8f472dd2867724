//! The no_std proof that can fail: build `portcullis-core` for
//! `thumbv7m-none-eabi` with only `core` available (`-Zbuild-std=core`), for
//! the default features, `defmt`, `critical-section` and `embassy`. If `std` or
//! `alloc` sneaks in, the build breaks. `alloc` is built separately with
//! `-Zbuild-std=core,alloc`.
//!
//! The same for the two smallest targets the core claims: `thumbv6m-none-eabi`
//! (Cortex-M0/M0+: atomic loads and stores but no compare-and-swap) and
//! `riscv32imc-unknown-none-elf` (no atomic extension at all). The core uses
//! no atomics; a dependency that needed compare-and-swap (a `heapless` pool,
//! an `Arc` in `alloc`) would fail here. The core's rules themselves run on a
//! Cortex-M0 in `firmware_m0.rs`.
//!
//! Recipe (as in `firmware-example/build.sh`): Debian's rustc (rustc-web + rust-web-src) with
//! rustup's rust-lld. Outside CI a machine without them skips with a note;
//! with `CI=true` a missing toolchain fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn lld() -> Option<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    let p = Path::new(root.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    p.exists().then_some(p)
}

fn build(features: &str, std_crates: &str) {
    build_for("thumbv7m-none-eabi", features, std_crates);
}

fn build_for(target: &str, features: &str, std_crates: &str) {
    let debian_rustc = Path::new("/usr/bin/rustc");
    let Some(lld) = lld().filter(|_| debian_rustc.exists()) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have /usr/bin/rustc (rustc-web, rust-web-src) and rust-lld"
        );
        eprintln!("SKIP: /usr/bin/rustc or rust-lld missing; install rustc-web rust-web-src");
        return;
    };
    let root = workspace();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root.join("core"))
        .env("RUSTC", debian_rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_THUMBV7M_NONE_EABI_LINKER", lld)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "--target", target])
        .arg(format!("-Zbuild-std={std_crates}"))
        .arg("--target-dir")
        .arg(root.join(if target == "thumbv7m-none-eabi" {
            "target/thumbv7m"
        } else {
            "target/nostd-small"
        }));
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "{target} build with features [{features}] failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn core_builds_for_thumbv7m_without_std_or_alloc() {
    build("", "core");
    build("defmt", "core");
    build("critical-section", "core");
    build("defmt,critical-section", "core");
    build("embassy", "core");
    build("defmt,critical-section,embassy", "core");
}

#[test]
fn core_alloc_feature_builds_for_thumbv7m_with_only_alloc() {
    build("alloc", "core,alloc");
}

#[test]
fn core_builds_for_cortex_m0_without_compare_and_swap() {
    build_for("thumbv6m-none-eabi", "", "core");
    build_for(
        "thumbv6m-none-eabi",
        "defmt,critical-section,embassy",
        "core",
    );
    build_for("thumbv6m-none-eabi", "alloc", "core,alloc");
}

#[test]
fn core_builds_for_riscv32imc_without_atomics() {
    build_for("riscv32imc-unknown-none-elf", "", "core");
    build_for(
        "riscv32imc-unknown-none-elf",
        "defmt,critical-section,embassy",
        "core",
    );
    build_for("riscv32imc-unknown-none-elf", "alloc", "core,alloc");
}
