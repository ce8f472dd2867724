//! The configuration as the binary reads it: fractional growth factors
//! from a TOML file reach the rules, and bad values exit 2 with one line
//! naming the key.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{Server, BIN};

/// `portcullis serve` with `file` as its config and `env`: exit code and
/// stderr, for configs that must not start.
fn refused(file: Option<&str>, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN);
    c.arg("serve")
        .env_clear()
        .env("PORTCULLIS_STORE__PATH", d.path().join("x.db"));
    if let Some(text) = file {
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        c.arg("--config").arg(p);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(!d.path().join("x.db").exists(), "nothing created");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test]
async fn a_fractional_multiplier_from_the_file_sets_the_penalty() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        "[penalty]\nbase = \"100ms\"\nmultiplier = 1.5\nmax = \"1s\"\n\
         [requests]\nblock_growth = 1.25\n",
    )
    .unwrap();
    let s = Server::start_with(&d.path().join("p.db"), &[], Some(&cfg));
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let r = client
            .post(s.url("/login"))
            .json(&serde_json::json!({"username": "demo", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // 100 ms × 1.5^k, rounded down to the microsecond at each step.
    let mut delays = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delays.len() < 4 && Instant::now() < deadline {
        for l in s.logs() {
            if l.contains("login failed") {
                let ms = l.split("delay_ms=").nth(1).and_then(|r| {
                    r.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                });
                delays.push(ms.expect("delay_ms in the log line"));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(delays, [100, 150, 225, 337]);
}

/// A config file (if any), environment variables, the expected error line.
type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_growth_factors_exit_2_naming_the_key() {
    let cases: [Case; 6] = [
        (
            Some("[penalty]\nmultiplier = 0.5\n"),
            &[],
            "config error: penalty.multiplier: must be at least 1",
        ),
        (
            Some("[requests]\nblock_growth = 1.0005\n"),
            &[],
            "config error: requests.block_growth: 1.0005 has more than three decimals",
        ),
        (
            None,
            &[("PORTCULLIS_REQUESTS__BLOCK_GROWTH", "fast")],
            "config error: requests.block_growth: expected a number like 2 or 1.5, got string \"fast\"",
        ),
        (
            Some("[penalty]\nmultiplier = 1.5\nfactor = 2\n"),
            &[],
            "config error: penalty.factor: unknown key (known: base, multiplier, max)",
        ),
        (
            None,
            &[("PORTCULLIS_BOGUS__X", "1")],
            "config error: bogus: unknown section",
        ),
        (
            Some("[login]\nlock_for = \"5 fortnights\"\n"),
            &[],
            "config error: login.lock_for: \"5 fortnights\" is not a duration",
        ),
    ];
    for (file, env, want) in cases {
        let (code, err) = refused(file, env);
        assert_eq!(code, Some(2), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
    }
}
