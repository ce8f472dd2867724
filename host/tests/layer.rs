//! The tower layer in front of a real axum app on a real socket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{routing::get, Router};
use portcullis::Config;
use portcullis::TrustedProxies;
use portcullis::{ClientIp, RateLimitLayer, NO_PEER_ADDRESS};
use portcullis::{Guard, Limiter, LimiterOptions};

fn guard(max: u32, f: impl FnOnce(&mut Config)) -> Guard {
    let mut c = Config::default();
    c.requests.max_requests = max;
    f(&mut c);
    let opts = LimiterOptions {
        max_entries: 1000,
        shards: 4,
        seed: None,
    };
    Guard::new(Arc::new(Limiter::new(c, opts).unwrap()), None)
}

async fn serve(layer: RateLimitLayer) -> String {
    let app = Router::new()
        .route(
            "/",
            get(|ip: axum::Extension<ClientIp>| async move { format!("ok {}", ip.0 .0) }),
        )
        .route("/login", get(|| async { "login" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

fn h<'a>(r: &'a reqwest::Response, k: &str) -> &'a str {
    r.headers()
        .get(k)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn limits_with_429_retry_after_and_structured_fields() {
    let base = serve(RateLimitLayer::new("requests", guard(3, |_| {}))).await;
    let c = reqwest::Client::new();
    for left in [2, 1, 0] {
        let r = c.get(&base).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "ratelimit-policy"), "\"requests\";q=3;w=60");
        assert!(
            h(&r, "ratelimit").starts_with(&format!("\"requests\";r={left};t=")),
            "{}",
            h(&r, "ratelimit")
        );
        assert_eq!(r.text().await.unwrap(), "ok 127.0.0.1");
    }
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = h(&r, "retry-after").parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert_eq!(h(&r, "ratelimit"), format!("\"requests\";r=0;t={retry}"));
    assert_eq!(h(&r, "ratelimit-policy"), "\"requests\";q=3;w=60");
}

#[tokio::test]
async fn bans_and_denylist_get_403() {
    let g = guard(3, |c| {
        c.lists.deny.push("127.0.0.2/32".parse().unwrap()).unwrap()
    });
    g.ban("127.0.0.1".parse().unwrap()).await;
    let base = serve(RateLimitLayer::new("requests", g)).await;
    let r = reqwest::get(&base).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "retry-after"), "");
    assert_eq!(h(&r, "ratelimit"), "\"requests\";r=0");
    // 127.0.0.2 is denylisted: connect from it.
    let c = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "x-portcullis-reason"), "denylisted");
}

#[tokio::test]
async fn per_route_policy_for_login() {
    let layer = RateLimitLayer::new("requests", guard(50, |_| {})).route(
        "/login",
        "login",
        guard(2, |_| {}),
    );
    let base = serve(layer).await;
    let c = reqwest::Client::new();
    for _ in 0..2 {
        let r = c.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h(&r, "ratelimit-policy"), "\"login\";q=2;w=60");
    }
    assert_eq!(
        c.get(format!("{base}/login"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 200, "the default policy is separate");
    assert_eq!(h(&r, "ratelimit-policy"), "\"requests\";q=50;w=60");
}

#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let layer = RateLimitLayer::new("requests", guard(2, |_| {}))
        .trusted_proxies(TrustedProxies::parse(&["10.0.0.0/8"]).unwrap());
    let base = serve(layer).await;
    let c = reqwest::Client::new();
    for i in 0..2 {
        let r = c
            .get(&base)
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "ok 127.0.0.1");
    }
    // Rotating the header does not buy a fresh quota.
    let r = c
        .get(&base)
        .header("x-forwarded-for", "198.51.100.99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn trusted_proxy_headers_name_the_client_and_malformed_ones_are_unidentified() {
    let layer = RateLimitLayer::new("requests", guard(5, |_| {}))
        .trusted_proxies(TrustedProxies::parse(&["127.0.0.0/8"]).unwrap());
    let base = serve(layer).await;
    let c = reqwest::Client::new();
    let r = c
        .get(&base)
        .header("x-forwarded-for", "203.0.113.5, 127.0.0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok 203.0.113.5");
    let r = c
        .get(&base)
        .header("x-forwarded-for", "[2001:db8::1]:443")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok 2001:db8::1");
    // Only the configured header (X-Forwarded-For by default) counts.
    let r = c
        .get(&base)
        .header("forwarded", "for=198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok 127.0.0.1");
    // Not an address where the client should be: one fixed key, not the proxy.
    let r = c
        .get(&base)
        .header("x-forwarded-for", "not-an-ip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok 100::");
}

/// Not only axum: any `Service<http::Request<B>>` whose response body is
/// `Default` (hyper, tonic, plain tower) takes the layer; the peer comes
/// from the `PeerAddr` extension the server inserts.
#[tokio::test]
async fn plain_tower_service_with_peer_addr_extension() {
    use portcullis::PeerAddr;
    use tower::{Layer, Service, ServiceExt};

    let layer = RateLimitLayer::new("requests", guard(1, |_| {}));
    let mut svc = layer.layer(tower::service_fn(|req: http::Request<()>| async move {
        let ip = req
            .extensions()
            .get::<ClientIp>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(http::Response::new(ip))
    }));
    let req = || {
        let mut r = http::Request::new(());
        r.extensions_mut()
            .insert(PeerAddr("192.0.2.7:5555".parse().unwrap()));
        r
    };
    let r = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body(), "192.0.2.7");
    assert_eq!(r.headers()["ratelimit"], "\"requests\";r=0;t=60");
    let r = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
    // Without any peer address the layer refuses to guess.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.body(), &format!("{NO_PEER_ADDRESS}\n"));
}

/// A plain tower service without `PeerAddr` (and without axum's
/// `ConnectInfo`): every request gets a 500 whose text body names the
/// missing extension.
async fn two_requests_without_peer_addr() {
    use tower::{Layer, Service, ServiceExt};

    let layer = RateLimitLayer::new("requests", guard(5, |_| {}));
    let mut svc = layer.layer(tower::service_fn(|_: http::Request<()>| async move {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::from("reached")))
    }));
    for _ in 0..2 {
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let body = r.body();
        assert!(body.contains("PeerAddr"), "{body}");
        assert!(
            body.contains("into_make_service_with_connect_info"),
            "{body}"
        );
        assert_ne!(body, "reached");
    }
}

/// The child half of the test below: a no-op unless its parent set the
/// variable.
#[tokio::test]
async fn child_without_peer_addr() {
    if std::env::var_os("PORTCULLIS_NO_PEER_CHILD").is_some() {
        two_requests_without_peer_addr().await;
    }
}

/// Without a tracing subscriber the missing extension is still said, on
/// stderr, once per process (two refused requests, one line). Runs this
/// test binary again as a child so its stderr can be read.
#[test]
fn without_peer_addr_the_layer_answers_500_and_says_why_on_stderr() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_without_peer_addr",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PORTCULLIS_NO_PEER_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert_eq!(
        stderr.matches(NO_PEER_ADDRESS).count(),
        1,
        "stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn a_ban_is_an_abnormal_usage_problem_without_retry_after() {
    let g = guard(3, |_| {});
    g.ban("127.0.0.1".parse().unwrap()).await;
    let base = serve(RateLimitLayer::new("requests", g)).await;
    let r = reqwest::get(&base).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h(&r, "content-type"), "application/problem+json");
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(h(&r, "ratelimit"), "\"requests\";r=0");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["type"],
        "https://iana.org/assignments/http-problem-types#abnormal-usage-detected"
    );
    assert_eq!(v["status"], 403);
    assert_eq!(v["reason"], "banned");
    assert_eq!(v["violated-policies"], serde_json::json!(["requests"]));
}

#[tokio::test]
async fn a_deny_response_hook_answers_and_the_layer_adds_the_fields() {
    let layer = RateLimitLayer::new("requests", guard(1, |_| {})).deny_response(|d| {
        let mut r = http::Response::new(format!(
            "go away {} ({}, {})",
            d.ip,
            d.policy,
            d.decision.reason().map(|r| r.as_str()).unwrap_or("")
        ));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r
    });
    let base = serve(layer).await;
    let c = reqwest::Client::new();
    assert_eq!(c.get(&base).send().await.unwrap().status(), 200);
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(h(&r, "ratelimit").starts_with("\"requests\";r=0;t="));
    assert_eq!(h(&r, "ratelimit-policy"), "\"requests\";q=1;w=60");
    assert_eq!(
        r.text().await.unwrap(),
        "go away 127.0.0.1 (requests, rate_limited)"
    );
}

#[tokio::test]
async fn a_shadow_policy_records_but_lets_through_until_switched_off() {
    use portcullis::Shadow;
    let login = guard(2, |_| {});
    let shadow = Shadow::new(true);
    let layer = RateLimitLayer::new("requests", guard(50, |_| {}))
        .route("/login", "login", login.clone())
        .shadow_policy("login", shadow.clone());
    let base = serve(layer).await;
    let c = reqwest::Client::new();
    for i in 0..5 {
        let r = c.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        if i >= 2 {
            assert!(h(&r, "ratelimit").starts_with("\"login\";r=0;t="));
        }
    }
    // Recorded as usual: the guard counted three denials.
    assert_eq!(login.metrics().denied(portcullis::Reason::RateLimited), 3);
    assert_eq!(login.metrics().allowed(), 2);
    shadow.set(false);
    let r = c.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // The other policy never shadowed and is untouched.
    assert_eq!(c.get(&base).send().await.unwrap().status(), 200);
}
