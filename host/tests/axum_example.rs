//! `examples/axum_login.rs` run on a real socket: its [`app`] is compiled
//! into this test as it stands and served over loopback; each scenario
//! talks from its own address (127.0.0.x) as a separate client.

#[allow(dead_code)] // its `main` is not called here
#[path = "../examples/axum_login.rs"]
mod axum_login;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use portcullis::Config;
use portcullis::{Guard, Limiter, LimiterOptions};
use serde_json::json;

fn guard(f: impl FnOnce(&mut Config)) -> Guard {
    let mut c = Config::default();
    f(&mut c);
    let opts = LimiterOptions {
        max_entries: 1000,
        shards: 4,
        seed: None,
    };
    Guard::new(Arc::new(Limiter::new(c, opts).unwrap()), None)
}

/// The example's app: 3 requests a minute on `/`; 8 on `/login`, where 3
/// failures lock and penalties are short (10, 20, 40 ms) to keep this fast.
async fn serve() -> String {
    let global = guard(|c| c.requests.max_requests = 3);
    let login = guard(|c| {
        c.requests.max_requests = 8;
        c.login.max_failures = 3;
        c.login.ip_max_failures = Some(3);
        c.penalty.base = portcullis::Duration::from_millis(10);
    });
    let app = axum_login::app(global, login);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A client whose connections come from `127.0.0.<n>`.
fn client(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POST /login: status, `Retry-After`, body.
async fn login(c: &reqwest::Client, base: &str, password: &str) -> (u16, String, String) {
    let r = c
        .post(format!("{base}/login"))
        .json(&json!({ "username": "alice", "password": password }))
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), retry, r.text().await.unwrap())
}

#[tokio::test]
async fn global_quota_then_429_with_retry_after() {
    let base = serve().await;
    let c = client(2);
    for left in [2, 1, 0] {
        let r = c.get(&base).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"global\";q=3;w=60");
        let state = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(
            state.starts_with(&format!("\"global\";r={left};")),
            "{state}"
        );
        assert_eq!(r.text().await.unwrap(), "hello\n");
    }
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    // Another address has its own quota.
    assert_eq!(client(3).get(&base).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn login_has_its_own_stricter_quota() {
    let base = serve().await;
    let c = client(4);
    for _ in 0..8 {
        // A GET is not a login (405), but the layer counts it.
        let r = c.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["ratelimit-policy"], "\"login\";q=8;w=60");
    }
    let r = c.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-portcullis-reason"], "rate_limited");
    // `/` is under the global policy, untouched by the login quota.
    assert_eq!(c.get(&base).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn wrong_passwords_lock_the_pair_and_a_locked_pair_is_not_checked() {
    let base = serve().await;
    let c = client(5);
    for _ in 0..3 {
        assert_eq!(login(&c, &base, "guess").await.0, 401);
    }
    // The right password now: refused unchecked, the pair is locked for
    // `lock_for` (5 minutes).
    let (status, retry, body) = login(&c, &base, "wonderland").await;
    assert_eq!(
        (status, retry.as_str(), body.as_str()),
        (429, "300", "pair_locked")
    );
    // Someone else logs in as alice from elsewhere.
    assert_eq!(login(&client(6), &base, "wonderland").await.0, 200);
}

#[tokio::test]
async fn success_clears_the_pair() {
    let base = serve().await;
    let c = client(7);
    assert_eq!(login(&c, &base, "guess").await.0, 401);
    assert_eq!(login(&c, &base, "guess").await.0, 401);
    let (status, _, body) = login(&c, &base, "wonderland").await;
    assert_eq!((status, body.as_str()), (200, "welcome\n"));
    // A third failure from this address locks the address (its count is
    // kept), but not the pair: the success cleared alice's two failures,
    // so the lock is `ip_locked`, not `pair_locked` as above.
    assert_eq!(login(&c, &base, "guess").await.0, 401);
    let (status, retry, body) = login(&c, &base, "wonderland").await;
    assert_eq!(
        (status, retry.as_str(), body.as_str()),
        (429, "300", "ip_locked")
    );
}
