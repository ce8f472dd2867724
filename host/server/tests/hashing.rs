//! Bounded password checking against the real binary (issue 14, finding
//! 6): 200 concurrent logins from 200 addresses keep the server's peak
//! memory under a stated bound, and a small queue answers 503.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use common::Server;

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.db");
    (d, p)
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

const CONCURRENT: u64 = 2;
/// argon2's default memory cost, 19 MiB, in KiB.
const ARGON2_KIB: u64 = 19 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_logins_stay_under_the_memory_bound() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_LOGIN__MAX_CONCURRENT_HASHES", "2"),
            ("PORTCULLIS_LOGIN__HASH_QUEUE", "8"),
            ("PORTCULLIS_PENALTY__BASE", "100ms"),
        ],
    );
    let pid = s.child.id();
    let before = peak_kib(pid);
    let url = s.url("/login");
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let from = IpAddr::V4(Ipv4Addr::new(127, 2, (i / 200) as u8, (i % 200 + 1) as u8));
            let client = reqwest::Client::builder()
                .local_address(from)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let url = url.clone();
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .json(&serde_json::json!({"username": format!("user{i}"), "password": "guess"}))
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::<u16, u32>::new();
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        if status == 503 {
            assert_eq!(retry.as_deref(), Some("1"), "503 carries Retry-After: 1");
        }
    }
    let after = peak_kib(pid);
    let bound = CONCURRENT * ARGON2_KIB * 2 + 64 * 1024;
    assert!(
        after.saturating_sub(before) < bound,
        "peak RSS grew {} KiB (from {before} to {after}), bound {bound} KiB",
        after.saturating_sub(before)
    );
    let checked = by_status.get(&401).copied().unwrap_or(0);
    let busy = by_status.get(&503).copied().unwrap_or(0);
    assert!(
        busy > 0,
        "a queue of 8 turns some of 200 away: {by_status:?}"
    );
    assert!(
        checked >= 10,
        "the running and queued ones were checked: {by_status:?}"
    );
    assert_eq!(checked + busy, 200, "{by_status:?}");
    let m = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u32 = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_password_checks_busy_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(counted, busy, "503s counted in /metrics");
}

#[test]
fn a_user_hash_asking_for_too_much_memory_is_refused_at_start() {
    let (_d, db) = tmp();
    let dir = db.parent().unwrap();
    let cfg = dir.join("c.toml");
    // m = 4 GiB: every login with this user would allocate 4 GiB.
    std::fs::write(
        &cfg,
        "[[users]]\nname = \"big\"\npassword_hash = \"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("PORTCULLIS_STORE__PATH", &db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("config error: users[0].password_hash: m=4194304 KiB"),
        "{err}"
    );
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .env_clear()
        .env("PORTCULLIS_STORE__PATH", &db)
        .env("PORTCULLIS_LOGIN__ARGON2_PARALLELISM", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("config error: login.argon2_parallelism:")
    );
}
