//! Proxy mode against the real binary and a real upstream (an HTTP server
//! this test starts on a loopback port): forwarding, streaming, forwarded
//! headers, hop-by-hop headers, 502/504 and their metrics, the admin
//! prefix, Upgrade refused, `[[policies]]` (proxy and demo mode), and a
//! brute-force run (THC-Hydra `http-post-form`, plus a scripted one)
//! against an HTML login form through a `[[login_routes]]` entry.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

mod common;
use common::{Server, TOKEN};

const PASSWORD: &str = "correct-horse";

#[derive(Default)]
struct Seen {
    /// Requests the upstream answered.
    requests: AtomicU64,
    /// Login posts the upstream checked.
    logins: AtomicU64,
    /// Headers of the last `/hello`.
    last: Mutex<Vec<(String, String)>>,
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_page() -> Html<&'static str> {
    Html(
        "<form method=post action=/login><input name=username><input name=password type=password></form>",
    )
}

async fn login(State(s): State<Arc<Seen>>, Form(f): Form<LoginForm>) -> Response {
    s.logins.fetch_add(1, SeqCst);
    if f.username == "alice" && f.password == PASSWORD {
        Html("<h1>Welcome alice</h1>").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, Html("<p>Wrong password</p>")).into_response()
    }
}

/// The upstream: counts what it sees.
async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/hello",
            get(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                *s.last.lock().unwrap() = h
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                (
                    [("x-upstream", "yes"), ("keep-alive", "timeout=99")],
                    "hello",
                )
            }),
        )
        .route("/login", get(login_page).post(login))
        .route(
            "/echo",
            post(|body: Bytes| async move { format!("{}", body.len()) }),
        )
        .route(
            "/big",
            get(|| async {
                let chunks =
                    (0..64u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 65536])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .fallback(
            |State(s): State<Arc<Seen>>, req: axum::extract::Request| async move {
                let _ = s;
                (
                    StatusCode::NOT_FOUND,
                    format!("upstream 404 {}", req.uri().path()),
                )
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            |State(s): State<Arc<Seen>>,
             req: axum::extract::Request,
             next: axum::middleware::Next| async move {
                s.requests.fetch_add(1, SeqCst);
                next.run(req).await
            },
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, seen)
}

fn start(dir: &Path, toml: &str) -> Server {
    let cfg = dir.join("p.toml");
    std::fs::write(&cfg, toml).unwrap();
    Server::start_with(&dir.join("p.db"), &[], Some(&cfg))
}

fn proxy_toml(up: SocketAddr, extra: &str) -> String {
    format!(
        "[upstream]\nurl = \"http://{up}\"\nconnect_timeout = \"2s\"\nresponse_timeout = \"1s\"\n\n\
         [requests]\nmax_requests = 60\n\n{extra}"
    )
}

async fn metrics(s: &Server) -> String {
    reqwest::get(s.url("/.portcullis/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn forwards_streams_and_sets_forwarded_headers() {
    let (up, seen) = upstream().await;
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &proxy_toml(up, ""));
    // No demo route is served in proxy mode, so no demo user is announced.
    assert!(!s.logs().iter().any(|l| l.contains("demo user")));
    let c = reqwest::Client::new();
    let r = c
        .get(s.url("/hello?x=1"))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert!(
        r.headers().get("keep-alive").is_none(),
        "hop-by-hop from upstream"
    );
    assert!(r.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .starts_with("\"requests\";q=60"));
    assert_eq!(r.text().await.unwrap(), "hello");
    let h = seen.last.lock().unwrap().clone();
    let get = |k: &str| {
        h.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    // Not a trusted proxy: the client's own claims are replaced.
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    let host = s.base.trim_start_matches("http://").to_string();
    assert_eq!(get("x-forwarded-host"), std::slice::from_ref(&host));
    assert_eq!(get("host"), [host]);
    assert!(
        get("x-private").is_empty(),
        "header named by Connection dropped: {h:?}"
    );

    // 4 MiB up (chunked, streamed), 4 MiB down.
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![7u8; 65536]));
    let r = c
        .post(s.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), (64 * 65536).to_string());
    let big = c
        .get(s.url("/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(big.len(), 64 * 65536);
    assert!(big
        .chunks(65536)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));

    // Upgrade is refused clearly, and never reaches the upstream.
    let before = seen.requests.load(SeqCst);
    let r = c
        .get(s.url("/hello"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert!(r.text().await.unwrap().contains("WebSocket"));
    assert_eq!(seen.requests.load(SeqCst), before);

    // portcullis's own routes live under the prefix; the app's /admin is the app's.
    let r = c
        .get(s.url("/.portcullis/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(s.url("/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "upstream 404 /admin/status");

    // The dashboard works under the prefix: its links, redirect and cookie carry it.
    let page = c
        .get(s.url("/.portcullis/admin/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("href=\"/.portcullis/admin/ui/app.css"),
        "{page}"
    );
    assert!(
        page.contains("action=\"/.portcullis/admin/ui/login\""),
        "{page}"
    );
    let nofollow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = nofollow
        .post(s.url("/.portcullis/admin/ui/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/.portcullis/admin/ui");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("Path=/.portcullis/admin;"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let r = c
        .get(s.url("/.portcullis/admin/ui/data"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let js = c
        .get(s.url("/.portcullis/admin/ui/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(js.contains("const BASE"));
}

#[tokio::test]
async fn upstream_down_is_502_too_slow_is_504_both_counted() {
    let (up, _seen) = upstream().await;
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &proxy_toml(up, ""));
    let r = reqwest::get(s.url("/slow")).await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("timed out"));
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "portcullis_upstream_errors_total{status=\"504\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "portcullis_upstream_errors_total{status=\"502\"}"),
        0.0
    );
    drop(s);

    // Nothing listens on the upstream port.
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &proxy_toml(dead, ""));
    for _ in 0..2 {
        let r = reqwest::get(s.url("/hello")).await.unwrap();
        assert_eq!(r.status(), 502);
        assert!(r.text().await.unwrap().contains("unreachable"));
    }
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "portcullis_upstream_errors_total{status=\"502\"}"),
        2.0
    );
}

#[tokio::test]
async fn policies_apply_in_proxy_mode_longest_prefix_and_method() {
    let (up, seen) = upstream().await;
    let d = tempfile::tempdir().unwrap();
    let extra = "[[policies]]\nname = \"api\"\nprefix = \"/api/\"\n[policies.requests]\nmax_requests = 2\n\n\
                 [[policies]]\nname = \"api-write\"\nprefix = \"/api/\"\nmethods = [\"post\"]\n[policies.requests]\nmax_requests = 1\n\n\
                 [[policies]]\nname = \"api-free\"\nprefix = \"/api/free/\"\n[policies.requests]\nmax_requests = 50\n";
    let s = start(d.path(), &proxy_toml(up, extra));
    let c = reqwest::Client::new();
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = c.get(s.url("/api/x")).send().await.unwrap();
        got.push((
            r.status().as_u16(),
            r.headers()["ratelimit"].to_str().unwrap().to_string(),
        ));
    }
    assert_eq!(got[0].0, 404, "allowed, answered by the upstream");
    assert!(got[0].1.starts_with("\"api\";r=1"), "{got:?}");
    assert_eq!(got[2].0, 429, "{got:?}");
    assert!(got[2].1.starts_with("\"api\";r=0"), "{got:?}");
    let before = seen.requests.load(SeqCst);
    // POST has its own (stricter) policy; a longer prefix its own too.
    let p: Vec<u16> = futures_util::future::join_all((0..2).map(|_| async {
        c.post(s.url("/api/x"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    let mut p = p;
    p.sort();
    assert_eq!(p, [404, 429]);
    let r = c.get(s.url("/api/free/y")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .starts_with("\"api-free\";q=50"));
    // The default policy is untouched.
    let r = c.get(s.url("/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"requests\";r=59"));
    assert_eq!(
        seen.requests.load(SeqCst),
        before + 3,
        "refused requests never reach the upstream"
    );
    let m = metrics(&s).await;
    assert!(m.contains("policy=\"api\""), "{m}");
    assert!(m.contains("policy=\"api-write\""), "{m}");
}

#[tokio::test]
async fn policies_apply_in_demo_mode() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        "[[policies]]\nname = \"root-get\"\nprefix = \"/\"\nmethods = [\"GET\"]\n[policies.requests]\nmax_requests = 1\n",
    );
    let c = reqwest::Client::new();
    let a = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(a.status(), 200);
    assert!(a.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .starts_with("\"root-get\";q=1;"));
    let b = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(b.status(), 429);
    assert!(b.headers().contains_key("retry-after"));
    // POST /login is not GET: the default policy.
    let l = c
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": "demo", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(l.status(), 401);
    assert!(l.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .starts_with("\"requests\""));
    let m = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("policy=\"root-get\""), "{m}");
}

const MAX_FAILURES: u64 = 3;

fn login_toml(up: SocketAddr) -> String {
    proxy_toml(
        up,
        &format!(
            "[login]\nmax_failures = {MAX_FAILURES}\nfailure_window = \"10m\"\nlock_for = \"10m\"\n\n\
             [penalty]\nbase = \"50ms\"\nmultiplier = 2\nmax = \"200ms\"\n\n\
             [[login_routes]]\nmethod = \"POST\"\npath = \"/login\"\nusername = \"username\"\nmax_body = 1024\n"
        ),
    )
}

async fn try_login(c: &reqwest::Client, s: &Server, user: &str, pw: &str) -> reqwest::Response {
    c.post(s.url("/login"))
        .form(&[("username", user), ("password", pw)])
        .send()
        .await
        .unwrap()
}

/// A client whose connections come from `ip` (another loopback address).
fn from(ip: [u8; 4]) -> reqwest::Client {
    common::client_from(&std::net::IpAddr::from(ip).to_string())
}

#[tokio::test]
async fn scripted_brute_force_through_login_route() {
    let (up, seen) = upstream().await;
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &login_toml(up));
    let c = from([127, 0, 0, 1]);
    // The form page itself is proxied.
    let page = c
        .get(s.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<form"));
    // A wrong password's 401 waits for the penalty (base 50 ms) first.
    let t = std::time::Instant::now();
    let r = try_login(&from([127, 0, 0, 6]), &s, "carol", "nope").await;
    assert_eq!(r.status(), 401);
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(seen.logins.load(SeqCst), 1);
    seen.logins.store(0, SeqCst);
    // 12 guesses, 4 at a time: at most MAX_FAILURES reach the upstream.
    let mut statuses = Vec::new();
    for round in 0..3 {
        let batch = futures_util::future::join_all((0..4).map(|i| {
            let c = c.clone();
            let s = &s;
            async move {
                let r = try_login(&c, s, "alice", &format!("guess-{round}-{i}")).await;
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            }
        }))
        .await;
        statuses.extend(batch);
    }
    let failed = statuses.iter().filter(|(s, _)| *s == 401).count() as u64;
    assert_eq!(failed, MAX_FAILURES, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, r)| *s == 401 || (*s == 429 && *r)),
        "{statuses:?}"
    );
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES);
    // Locked: even the right password from here is refused, unseen.
    let r = try_login(&c, &s, "alice", PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES);
    // Spellings of the path an application may read as /login are the login route too.
    for path in ["//Login/", "/%6cogin", "/x/../login", "/login;jsessionid=1"] {
        let r = c
            .post(format!("{}{path}", s.base))
            .form(&[("username", "alice"), ("password", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{path}");
    }
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES);
    // From another address the right password works.
    let r = try_login(&from([127, 0, 0, 2]), &s, "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Welcome"));
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES + 1);
    // Too large a login body: 413, unseen; no username: forwarded, counted against the ip.
    let r = from([127, 0, 0, 3])
        .post(s.url("/login"))
        .form(&[("username", "bob"), ("password", &"x".repeat(2000))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES + 1);
    let c4 = from([127, 0, 0, 4]);
    let mut nouser = Vec::new();
    for _ in 0..MAX_FAILURES + 1 {
        let r = c4
            .post(s.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("password=x")
            .send()
            .await
            .unwrap();
        nouser.push(r.status().as_u16());
    }
    // The upstream's form extractor rejects the body (422): neither success
    // nor failure, counted as a failure.
    assert_eq!(
        nouser[..MAX_FAILURES as usize],
        [422; MAX_FAILURES as usize]
    );
    assert_eq!(nouser[MAX_FAILURES as usize], 429, "{nouser:?}");
}

#[tokio::test]
async fn hydra_http_post_form_through_login_route() {
    let hydra = std::process::Command::new("hydra").arg("-h").output();
    if hydra.is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "hydra is missing under CI=true"
        );
        eprintln!("SKIP: hydra not installed");
        return;
    }
    let (up, seen) = upstream().await;
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &login_toml(up));
    let port = s.base.rsplit(':').next().unwrap().to_string();
    // The right password is 9th of 12: far past the lock.
    let mut words: Vec<String> = (0..12).map(|i| format!("wrong-{i}")).collect();
    words[8] = PASSWORD.to_string();
    let list = d.path().join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").unwrap();
    let out_file = d.path().join("found.txt");
    let out = tokio::process::Command::new("hydra")
        .args(["-l", "alice", "-P"])
        .arg(&list)
        .args(["-t", "4", "-s", &port, "-o"])
        .arg(&out_file)
        .args([
            "127.0.0.1",
            "http-post-form",
            "/login:username=^USER^&password=^PASS^:S=Welcome",
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 valid password"),
        "hydra found a password:\n{stdout}"
    );
    assert!(
        seen.logins.load(SeqCst) <= MAX_FAILURES,
        "upstream saw {} logins",
        seen.logins.load(SeqCst)
    );
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES);
    let m = metrics(&s).await;
    assert!(m.contains("portcullis_upstream_errors_total"), "{m}");
    let r = try_login(&from([127, 0, 0, 5]), &s, "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert_eq!(seen.logins.load(SeqCst), MAX_FAILURES + 1);
}
