//! Issue 14, finding 1: a brute-force attacker gets no more than the
//! configured guesses, however many it sends at once. Every attempt is
//! reserved (counted as a failure) before its password is checked, in the
//! local limiter and in Redis alike; here against the real server over
//! real sockets. A `401` is a password that was checked and wrong; a `429`
//! was refused before anything was checked.

use std::time::Duration;

mod common;
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use common::{metric, Server};
use redis_server::RedisServer;

/// Small penalties so the test is quick; the lockout is the default
/// (10 failures per 5 minutes per (user, ip) and per ip).
const FAST: [(&str, &str); 2] = [
    ("PORTCULLIS_PENALTY__BASE", "10ms"),
    ("PORTCULLIS_PENALTY__MAX", "50ms"),
];

/// Fire `n` wrong guesses for `demo` at once, spread over `servers`;
/// returns the statuses.
async fn fire(servers: &[&Server], n: usize) -> Vec<u16> {
    let client = reqwest::Client::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = servers[i % servers.len()].url("/login");
            let (client, barrier) = (client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .post(url)
                    .json(&serde_json::json!({"username": "demo", "password": format!("guess{i}")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn tally(statuses: &[u16]) -> (usize, usize) {
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(checked + refused, statuses.len(), "{statuses:?}");
    (checked, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_guesses_get_exactly_max_failures_checks() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &FAST);
    let statuses = fire(&[&s], 50).await;
    assert_eq!(tally(&statuses), (10, 40), "{statuses:?}");
    assert_eq!(metric(&s, "portcullis_login_failures_total").await, 10);
    // The pair is locked now: even the right password is not checked.
    let r = reqwest::Client::new()
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": "demo", "password": "demo-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

/// A client that hangs up before its answer cannot cut the penalty short or
/// leave its attempt unsettled: sequential guesses, each abandoned after
/// 20 ms, still get at most `max_failures` password checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_early_buys_no_extra_guesses() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        &d.path().join("h.db"),
        &[
            ("PORTCULLIS_PENALTY__BASE", "300ms"),
            ("PORTCULLIS_PENALTY__MAX", "300ms"),
        ],
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    for i in 0..30 {
        let _ = impatient
            .post(s.url("/login"))
            .json(&serde_json::json!({"username": "demo", "password": format!("g{i}")}))
            .send()
            .await;
    }
    // Let the abandoned attempts settle (password check + penalty).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let checked = metric(&s, "portcullis_login_failures_total").await;
    assert!(
        checked <= 10,
        "{checked} password checks for 30 abandoned guesses"
    );
    let r = reqwest::Client::new()
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": "demo", "password": "demo-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "locked after the abandoned guesses");
}

/// The same through Redis: two servers of one fleet, 50 guesses split
/// between them, exactly `max_failures` checks fleet-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_guesses_across_a_fleet() {
    let Some(redis) = RedisServer::start_or_skip("fifty_parallel_guesses_across_a_fleet") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.push(("PORTCULLIS_STORE__KIND", "redis"));
    env.push(("PORTCULLIS_STORE__REDIS_URL", &url));
    // A debug build under 50 parallel logins can take longer than the
    // default 50 ms; a timeout would (by design) fall back to local limits.
    env.push(("PORTCULLIS_STORE__REDIS_TIMEOUT", "5s"));
    let a = Server::start(&d.path().join("a.db"), &env);
    let b = Server::start(&d.path().join("b.db"), &env);
    let statuses = fire(&[&a, &b], 50).await;
    assert_eq!(tally(&statuses), (10, 40), "{statuses:?}");
    let checked = metric(&a, "portcullis_login_failures_total").await
        + metric(&b, "portcullis_login_failures_total").await;
    assert_eq!(checked, 10);
    assert_eq!(
        metric(&a, "portcullis_fallbacks_total").await
            + metric(&b, "portcullis_fallbacks_total").await,
        0,
        "decided in Redis, not by a local fallback"
    );
}
