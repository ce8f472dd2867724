//! Issue 22's reported bypasses, against the real binary: every request
//! goes through one pipeline (`docs/pipeline.md`), so manual decisions and
//! lists hold on every path, policies are chosen on the canonical target,
//! reload applies security keys live, hidden locks stay hidden and the
//! application sees no client-chosen forwarding header. Requests are sent
//! on raw sockets so that their targets reach the server as written.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{Server, TOKEN};

/// What the upstream saw: method, path as sent, headers.
#[derive(Default)]
struct Seen(Mutex<Vec<(String, String, HeaderMap)>>);

impl Seen {
    fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|r| r.1.clone()).collect()
    }
    fn last(&self) -> (String, String, HeaderMap) {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Any path: `200 app`; `/login` (any method case, like Flask): a form
/// login, `401` HTML for a wrong password.
async fn app(State(seen): State<Arc<Seen>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 16)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let path = parts.uri.path().to_string();
    seen.0
        .lock()
        .unwrap()
        .push((parts.method.to_string(), path.clone(), parts.headers));
    if path.to_ascii_lowercase().starts_with("/login")
        && parts.method.as_str().eq_ignore_ascii_case("POST")
    {
        if body.as_ref() == b"username=alice&password=right" {
            return (StatusCode::OK, "welcome").into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "text/html; charset=utf-8")],
            "<p>Wrong password</p>",
        )
            .into_response();
    }
    (StatusCode::OK, "app").into_response()
}

async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let router = Router::new().fallback(app).with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    (addr, seen)
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send `method target` as written from local address `from`, with
/// `headers` and `body`, and read the answer (connection closed after).
async fn raw(
    s: &Server,
    from: &str,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let addr: SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = sock.connect(addr).await.unwrap();
    let mut req = format!("{method} ").into_bytes();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(format!("content-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    c.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn get(s: &Server, from: &str, target: &str) -> Answer {
    raw(s, from, "GET", target.as_bytes(), &[], "").await
}

async fn admin(s: &Server, method: &str, path: &str, body: &str) -> Answer {
    let auth = format!("Bearer {TOKEN}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    raw(s, "127.0.0.1", method, path.as_bytes(), &h, body).await
}

fn start(dir: &Path, config: &str) -> (Server, std::path::PathBuf) {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let s = Server::start_with(
        &dir.join("p.db"),
        &[("PORTCULLIS_STORE__KIND", "memory")],
        Some(&cfg),
    );
    (s, cfg)
}

const API_POLICY: &str = "[[policies]]\nname = \"api\"\nprefix = \"/api/\"\n[policies.requests]\nmax_requests = 2\nwindow = \"60s\"\n";

#[tokio::test]
async fn policies_are_chosen_on_the_canonical_target() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = start(d.path(), API_POLICY);
    let spellings = [
        "/api/items",
        "//api/items",
        "/API/items",
        "/%61pi/items",
        "/./api/items",
        "/x/../api/items",
        "/api;v=1/items",
        "/api/items/",
    ];
    for (i, p) in spellings.iter().enumerate() {
        let from = format!("127.20.0.{}", i + 1);
        let mut got = Vec::new();
        for _ in 0..3 {
            let a = get(&s, &from, p).await;
            got.push((a.status, a.header("ratelimit-policy").map(str::to_string)));
        }
        assert_eq!(got[2].0, 429, "{p}: {got:?}");
        assert_eq!(
            got[0].1.as_deref(),
            Some("\"api\";q=2;w=60"),
            "{p}: {got:?}"
        );
    }
}

#[tokio::test]
async fn a_manual_range_holds_on_every_path_even_in_shadow_mode() {
    let d = tempfile::tempdir().unwrap();
    let shadow =
        "[requests]\nshadow = true\nmax_requests = 2\n[lists]\ndeny = [\"127.12.0.0/16\"]\n";
    let policy = API_POLICY.replace("[policies.requests]", "shadow = true\n[policies.requests]");
    let (s, _) = start(d.path(), &format!("{shadow}{policy}"));
    let r = admin(&s, "POST", "/admin/bans", r#"{"ip":"127.11.0.0/16"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    for from in ["127.11.0.9", "127.12.0.9"] {
        for p in [
            "/",
            "/api/items",
            "//API/items",
            "/metrics",
            "/admin/status",
            "/check",
        ] {
            assert_eq!(get(&s, from, p).await.status, 403, "{from} {p}");
        }
        let auth = format!("Bearer {TOKEN}");
        let a = raw(
            &s,
            from,
            "GET",
            b"/admin/status",
            &[("authorization", &auth)],
            "",
        )
        .await;
        // The operator with the token passes a manual ban (to lift it),
        // never the denylist.
        let want = if from == "127.11.0.9" { 200 } else { 403 };
        assert_eq!(a.status, want, "{from}: /admin/status with the token");
    }
    // Shadow still lets the quota's own denials through.
    for _ in 0..4 {
        assert_eq!(get(&s, "127.13.0.1", "/api/items").await.status, 404);
    }
}

#[tokio::test]
async fn a_denylist_added_by_reload_holds_on_admin_and_metrics() {
    let d = tempfile::tempdir().unwrap();
    let (s, cfg) = start(d.path(), "");
    let auth = format!("Bearer {TOKEN}");
    let status = |from: &'static str| {
        let auth = auth.clone();
        let s = &s;
        async move {
            raw(
                s,
                from,
                "GET",
                b"/admin/status",
                &[("authorization", &auth)],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(status("127.14.0.1").await, 200);
    std::fs::write(&cfg, "[lists]\ndeny = [\"127.14.0.0/16\"]\n").unwrap();
    let r = admin(&s, "POST", "/admin/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"needs_restart\":[]"), "{}", r.body);
    assert_eq!(status("127.14.0.1").await, 403);
    assert_eq!(get(&s, "127.14.0.1", "/metrics").await.status, 403);
    assert_eq!(get(&s, "127.14.0.1", "/").await.status, 403);
    assert_eq!(status("127.15.0.1").await, 200, "others are untouched");
}

#[tokio::test]
async fn a_rotated_report_token_applies_at_once() {
    let d = tempfile::tempdir().unwrap();
    let (s, cfg) = start(d.path(), "[forward_auth]\nreport_token = \"old\"\n");
    let report = |token: &'static str| {
        let s = &s;
        async move {
            let auth = format!("Bearer {token}");
            let h = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            let body = r#"{"ip":"192.0.2.1","username":"bob","ok":true}"#;
            raw(s, "127.16.0.1", "POST", b"/v1/login-result", &h, body)
                .await
                .status
        }
    };
    assert_eq!(report("old").await, 200);
    assert_eq!(report("new").await, 401);
    std::fs::write(&cfg, "[forward_auth]\nreport_token = \"new\"\n").unwrap();
    assert_eq!(admin(&s, "POST", "/admin/reload", "").await.status, 200);
    assert_eq!(report("old").await, 401);
    assert_eq!(report("new").await, 200);
}

#[tokio::test]
async fn metrics_token_guards_metrics() {
    let d = tempfile::tempdir().unwrap();
    let (s, _) = start(d.path(), "[server]\nmetrics_token = \"m\"\n");
    assert_eq!(get(&s, "127.0.0.1", "/metrics").await.status, 401);
    let a = raw(
        &s,
        "127.0.0.1",
        "GET",
        b"/metrics",
        &[("authorization", "Bearer m")],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("portcullis_decisions_total"));
    assert_eq!(admin(&s, "GET", "/metrics", "").await.status, 200);
}

fn proxy_config(up: SocketAddr) -> String {
    format!(
        "[upstream]\nurl = \"http://{up}\"\n[login]\nmax_failures = 2\nreveal_lock = false\n\
         [penalty]\nbase = \"10ms\"\nmax = \"50ms\"\n\
         [[login_routes]]\npath = \"/login\"\nfailure_statuses = [401]\n"
    )
}

#[tokio::test]
async fn proxy_mode_judges_escapes_counts_any_spelling_and_hides_locks() {
    let d = tempfile::tempdir().unwrap();
    let (up, seen) = upstream().await;
    let (s, _) = start(d.path(), &proxy_config(up));
    // Under the admin prefix, out of it: the application's path, as sent.
    let escape = "/.portcullis/admin/../../secret";
    let a = get(&s, "127.17.0.1", escape).await;
    assert_eq!((a.status, a.body.as_str()), (200, "app"));
    assert_eq!(seen.last().1, escape);
    let r = admin(
        &s,
        "POST",
        "/.portcullis/admin/bans",
        r#"{"ip":"127.17.0.0/16"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let before = seen.count();
    assert_eq!(get(&s, "127.17.0.1", escape).await.status, 403);
    assert_eq!(
        get(&s, "127.17.0.1", "/.portcullis/metrics").await.status,
        403
    );
    assert_eq!(seen.count(), before, "the banned range reached the app");

    // `post` and `/login.json` are the login route: two misses lock.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = "username=alice&password=wrong";
    let from = "127.18.0.1";
    let a = raw(&s, from, "post", b"/login", &form, wrong).await;
    assert_eq!(a.status, 401);
    let a = raw(&s, from, "POST", b"/Login.json", &form, wrong).await;
    assert_eq!(a.status, 401);
    let checked = seen.count();
    // Locked: hidden, the app's last failure replayed, the app not asked.
    let right = "username=alice&password=right";
    let a = raw(&s, from, "POST", b"/login", &form, right).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.body, "<p>Wrong password</p>");
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(a.header("retry-after"), None);
    assert_eq!(seen.count(), checked, "a locked attempt reached the app");

    // Every username the app could read is an attempt: one request naming
    // two (max_failures = 2 per address) locks its address.
    let from = "127.18.1.1";
    let two = "username=carol&username=dave&password=wrong";
    assert_eq!(
        raw(&s, from, "POST", b"/login", &form, two).await.status,
        401
    );
    let asked = seen.count();
    let a = raw(&s, from, "POST", b"/login?username=erin", &form, right).await;
    assert_eq!(a.status, 401);
    assert_eq!(seen.count(), asked, "the locked address reached the app");

    // The open /metrics shows no lock; the admin token sees it.
    let open = get(&s, "127.0.0.1", "/.portcullis/metrics").await.body;
    assert!(!open.contains("pair_locked"), "{open}");
    assert!(!open.contains("reason=\"ip_locked\"}"), "{open}");
    let full = admin(&s, "GET", "/.portcullis/metrics", "").await.body;
    assert!(
        full.lines()
            .any(|l| l.contains("reason=\"pair_locked\"") && !l.ends_with(" 0")),
        "{full}"
    );
}

#[tokio::test]
async fn proxy_mode_strips_client_sent_forwarding_headers() {
    let d = tempfile::tempdir().unwrap();
    let (up, seen) = upstream().await;
    let (s, _) = start(d.path(), &proxy_config(up));
    let spoof = [
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-cluster-client-ip", "6.6.6.6"),
        ("cf-connecting-ip", "6.6.6.6"),
        ("fastly-client-ip", "6.6.6.6"),
        ("x-original-uri", "/admin"),
        ("x-forwarded-proto", "https"),
    ];
    let a = raw(&s, "127.19.0.7", "GET", b"/hello", &spoof, "").await;
    assert_eq!(a.status, 200);
    let (_, path, h) = seen.last();
    assert_eq!(path, "/hello");
    let v = |k: &str| h.get(k).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(v("x-forwarded-for").as_deref(), Some("127.19.0.7"));
    assert_eq!(v("forwarded").as_deref(), Some("for=127.19.0.7;proto=http"));
    assert_eq!(v("x-forwarded-proto").as_deref(), Some("http"));
    for (k, _) in spoof.iter().skip(2) {
        if *k != "x-forwarded-proto" {
            assert_eq!(v(k), None, "{k} reached the app");
        }
    }
    assert!(!seen.paths().is_empty());
}
