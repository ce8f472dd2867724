//! What the QEMU firmware tests share: whether the tools are there, and
//! the no_std build recipe (Debian's rustc with `-Zbuild-std=core`,
//! linked by the toolchain's rust-lld) for an image crate outside the
//! workspace (`firmware-example/`, `firmware-m0-tests/`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether qemu-system-arm and Debian's rustc are there; outside CI a
/// missing tool skips `test` (printed), under `CI=true` it fails.
pub fn tools_present(test: &str) -> bool {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let rustc = Path::new("/usr/bin/rustc").exists();
    if qemu && rustc {
        return true;
    }
    let msg = format!(
        "{test}: qemu-system-arm present: {qemu}, /usr/bin/rustc present: {rustc}; \
         install qemu-system-arm rustc-web rust-web-src"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: not skipping)");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// Build the image crate in `dir` for `target` in release; the ELF of
/// its binary `bin`. `what` names the image in failures.
pub fn build_image(dir: &Path, target: &str, bin: &str, what: &str) -> PathBuf {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    assert!(sysroot.status.success(), "rustc --print sysroot failed");
    let sysroot = String::from_utf8(sysroot.stdout).expect("utf-8 sysroot");
    let lld = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld");
    assert!(lld.exists(), "rust-lld not found at {}", lld.display());
    let target_dir = dir.join("target");
    let linker = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    );
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(["build", "--release", "--target", target, "-Zbuild-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(linker, &lld)
        // Settings of the outer build that must not leak into this one.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elf = target_dir.join(target).join("release").join(bin);
    assert!(elf.exists(), "no image at {}", elf.display());
    elf
}
