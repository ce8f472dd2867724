//! Issue 17, item 5: `login.reveal_lock = false` answers a locked
//! (username, address) pair exactly like a wrong password: same status,
//! same body, same headers, and at least the penalty delay the next wrong
//! password would get. The default still answers a lock with 429. Real
//! binary over loopback.

use std::time::{Duration, Instant};

mod common;

use common::{admin_json, Server};

/// max_failures 3; delays 100, 200, 400 ms, then 400 ms (capped).
const RULES: [(&str, &str); 5] = [
    ("PORTCULLIS_LOGIN__MAX_FAILURES", "3"),
    ("PORTCULLIS_PENALTY__BASE", "100ms"),
    ("PORTCULLIS_PENALTY__MULTIPLIER", "2"),
    ("PORTCULLIS_PENALTY__MAX", "400ms"),
    ("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "64"),
];

struct Answer {
    status: u16,
    body: String,
    headers: Vec<String>,
    took: Duration,
}

async fn login(s: &Server, password: &str) -> Answer {
    let t = Instant::now();
    let r = reqwest::Client::new()
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": "demo", "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut headers: Vec<String> = r
        .headers()
        .iter()
        // Values that differ between any two answers (the clock, the quota
        // left) are compared by name only.
        .map(|(k, v)| match k.as_str() {
            "date" | "ratelimit" | "content-length" => k.to_string(),
            _ => format!("{k}: {}", v.to_str().unwrap_or("?")),
        })
        .collect();
    headers.sort();
    let body = r.text().await.unwrap();
    Answer {
        status,
        body,
        headers,
        took: t.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_lock_answers_like_a_wrong_password() {
    let d = tempfile::tempdir().unwrap();
    let mut env = RULES.to_vec();
    env.push(("PORTCULLIS_LOGIN__REVEAL_LOCK", "false"));
    let s = Server::start(&d.path().join("p.db"), &env);

    let mut misses = Vec::new();
    for want_ms in [100, 200, 400] {
        let a = login(&s, "wrong").await;
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(a.took >= Duration::from_millis(want_ms), "{:?}", a.took);
        misses.push(a);
    }
    // Now the pair (and the address) is locked.
    let bans = admin_json(&s, "/admin/bans").await;
    let reasons: Vec<&str> = bans
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"ip_locked"), "{bans}");

    let miss = misses.last().unwrap();
    for password in ["wrong", "demo-password"] {
        let a = login(&s, password).await;
        assert_eq!(a.status, miss.status, "{password}: {}", a.body);
        assert_eq!(a.body, miss.body, "{password}");
        assert_eq!(a.headers, miss.headers, "{password}");
        // The delay the next wrong password would get: 100 ms × 2^3,
        // capped at 400 ms.
        assert!(
            a.took >= Duration::from_millis(400),
            "{password}: {:?}",
            a.took
        );
    }
    let logs = s.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("locked, answered as a wrong password")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_lock_is_a_429() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &RULES);
    for _ in 0..3 {
        assert_eq!(login(&s, "wrong").await.status, 401);
    }
    let a = login(&s, "wrong").await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.body.contains("locked"), "{}", a.body);
    assert!(
        a.headers.iter().any(|h| h.starts_with("retry-after")),
        "{:?}",
        a.headers
    );
}
