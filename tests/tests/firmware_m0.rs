//! The core's rules on a Cortex-M0: build `firmware-m0-tests/` for
//! `thumbv6m-none-eabi` (ARMv6-M, no compare-and-swap), boot it in
//! `qemu-system-arm -M microbit` (nRF51822: 16 KiB RAM, 256 KiB flash),
//! and check that every rule check in the image passed, by name, and that
//! the image exited QEMU with status 0.
//!
//! Needs `qemu-system-arm`, Debian's `rustc-web` (`/usr/bin/rustc`, with
//! `rust-web-src` for `-Zbuild-std=core`) and rustup's `rust-lld`, as
//! `firmware_qemu.rs`. Without them the test prints why and passes, except
//! under `CI=true`, where it fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The checks `firmware-m0-tests/src/checks.rs` runs, in order.
const CHECKS: &[&str] = &[
    "request_window_slides",
    "three_violations_block_15_min",
    "ten_violations_ban_until_lifted",
    "login_lockout_pair_and_ip",
    "penalty_backoff_doubles_to_cap",
    "allow_and_deny_lists",
    "export_import_round_trip",
];

/// A hang guard, not a performance bound: the image runs in well under a
/// second; a wedged QEMU is killed after this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-m0-tests")
}

fn tools_present() -> bool {
    portcullis_tests::firmware::tools_present("firmware_m0")
}

/// Build the image with `firmware-m0-tests/build.sh`'s recipe; its ELF.
fn build_image() -> PathBuf {
    portcullis_tests::firmware::build_image(
        &image_dir(),
        "thumbv6m-none-eabi",
        "portcullis-m0-tests",
        "the M0 image",
    )
}

/// Run the image to its semihosting exit; its exit status and output.
fn run(elf: &Path) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("portcullis-m0-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create log dir");
    let (out, err) = (dir.join("stdout.log"), dir.join("stderr.log"));
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            "microbit",
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-kernel",
        ])
        .arg(elf)
        .stdin(Stdio::null())
        // Semihosting output (one line per check) goes to stdout.
        .stdout(File::create(&out).expect("create stdout log"))
        .stderr(File::create(&err).expect("create stderr log"))
        .spawn()
        .expect("start qemu-system-arm");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for qemu") {
            break s.code();
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let (stdout, stderr) = (read(&out), read(&err));
    let _ = std::fs::remove_dir_all(&dir);
    (status, stdout, stderr)
}

#[test]
fn core_rules_pass_on_a_cortex_m0_in_qemu() {
    if !tools_present() {
        return;
    }
    let elf = build_image();
    let (status, out, err) = run(&elf);
    let shown = format!("exit status {status:?}\n--- stdout\n{out}--- stderr\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    // The image says what it runs on.
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("portcullis-m0-tests: FixedLimiter<16, 16> is ")),
        "{shown}"
    );
    for name in CHECKS {
        assert!(
            lines.contains(&format!("PASS {name}").as_str()),
            "check {name} did not pass:\n{shown}"
        );
    }
    assert!(!out.contains("FAIL") && !out.contains("PANIC"), "{shown}");
    let done = format!("DONE {} checks, 0 failed", CHECKS.len());
    assert!(lines.contains(&done.as_str()), "{shown}");
    assert_eq!(status, Some(0), "{shown}");
}
