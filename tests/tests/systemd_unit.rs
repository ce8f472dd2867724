//! `contrib/systemd/portcullis.service` is a unit systemd accepts, with the
//! sandboxing `docs/operations.md` promises.
//!
//! `systemd-analyze verify` checks every directive's syntax and value and
//! that `ExecStart`'s binary exists. The unit names
//! `/usr/local/bin/portcullis`, which a test machine need not have, and
//! Cargo gives no path to another crate's binary (`CARGO_BIN_EXE_*` is
//! only set for the crate's own bins), so the test verifies a copy whose
//! `ExecStart` binary is `/bin/true`, every other line unchanged.
//! `systemd-analyze` comes with Debian's `systemd` package: outside CI a
//! machine without it skips with a note; with `CI=true` it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/portcullis.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn the_unit_has_the_sandboxing_the_docs_promise() {
    let text = unit_text();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "ExecStart=/usr/local/bin/portcullis serve --config /etc/portcullis/portcullis.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=portcullis",
        "WorkingDirectory=/var/lib/portcullis",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "LimitNOFILE=65536",
    ] {
        assert!(lines.contains(&want), "unit lacks `{want}`");
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = systemd_analyze() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have systemd-analyze (apt package systemd)"
        );
        eprintln!("SKIP: systemd-analyze missing; install the systemd package");
        return;
    };
    let text = unit_text();
    let exec = "ExecStart=/usr/local/bin/portcullis ";
    assert_eq!(text.matches(exec).count(), 1, "one ExecStart expected");
    let copy = text.replace(exec, "ExecStart=/bin/true ");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("portcullis.service");
    std::fs::write(&unit, copy).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys and bad values are warnings ("…, ignoring") with a zero
    // exit status: any line about the unit fails the test.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("portcullis.service"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{stderr}");
}
