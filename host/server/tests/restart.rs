//! Restarts keep time (issue 14, finding 7), end to end: the real binary,
//! a real SQLite file, SIGTERM and a restart whose clock starts at zero.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::Server;

/// A client whose requests come from `ip` (any 127/8 address is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().unwrap();
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, s: &Server) -> reqwest::Response {
    c.get(s.url("/")).send().await.unwrap()
}

fn hdr(r: &reqwest::Response, k: &str) -> String {
    r.headers()
        .get(k)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("portcullis.db");
    (d, p)
}

/// The finding: a 2 s window, three requests, 2.6 s, SIGTERM, restart: the
/// next request used to be blocked (its three requests restored as if made
/// at the restart). Beside it, a client blocked before the restart keeps
/// what is left of its block, not a fresh one.
#[tokio::test]
async fn a_restart_keeps_the_age_of_saved_history() {
    let (_d, db) = tmp();
    let env = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
        ("PORTCULLIS_REQUESTS__WINDOW", "2s"),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BLOCK_FOR", "10s"),
    ];
    let s = Server::start(&db, &env);
    let (quiet, noisy) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    for _ in 0..3 {
        assert_eq!(get(&quiet, &s).await.status(), 200);
        assert_eq!(get(&noisy, &s).await.status(), 200);
    }
    let r = get(&noisy, &s).await;
    let blocked_at = Instant::now();
    assert_eq!(r.status(), 429);
    assert_eq!(hdr(&r, "x-portcullis-reason"), "blocked");
    assert_eq!(hdr(&r, "retry-after"), "10");

    // The quiet client's requests leave the window before the restart.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(s.stop().success(), "exit 0 after SIGTERM");
    let s = Server::start(&db, &env);

    let r = get(&quiet, &s).await;
    assert_eq!(
        r.status(),
        200,
        "a client that never exceeded its limit is refused after a restart: {} {:?}",
        hdr(&r, "x-portcullis-reason"),
        hdr(&r, "retry-after")
    );
    assert!(
        hdr(&r, "ratelimit").starts_with("\"requests\";r=2;"),
        "a full window again: {}",
        hdr(&r, "ratelimit")
    );

    let r = get(&noisy, &s).await;
    assert_eq!(r.status(), 429);
    assert_eq!(hdr(&r, "x-portcullis-reason"), "blocked");
    let left: f64 = hdr(&r, "retry-after").parse().unwrap();
    let expected = 10.0 - blocked_at.elapsed().as_secs_f64();
    assert!(
        (left - expected).abs() <= 1.0,
        "block keeps its remaining time: Retry-After {left}, expected {expected:.1} ± 1"
    );
    assert!(!s.logs().iter().any(|l| l.contains("panicked")));
}

/// A lookback longer than the limiter can place saved history is a config
/// error naming the key.
#[test]
fn a_lookback_beyond_3650_days_is_a_config_error() {
    let d = tempfile::tempdir().unwrap();
    let run = |v: &str| {
        let out = std::process::Command::new(common::BIN)
            .arg("serve")
            .env_clear()
            .env("PORTCULLIS_STORE__PATH", d.path().join("x.db"))
            .env("PORTCULLIS_REQUESTS__BAN_LOOKBACK", v)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    let (code, err) = run("87601h");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("config error: requests.ban_lookback: must be at most 3650 days"),
        "{err:?}"
    );
}
