//! Forward-auth mode (issue 16, items 3 and 4) against the real binary:
//! the decision endpoint `/check` called directly (as a trusted proxy and as
//! anybody else), the login-result API, and the real peers: Debian's nginx
//! (`auth_request`) and Caddy (`forward_auth`), each started on free
//! loopback ports with the snippet shipped in `docs/forward-auth/`, in front
//! of the recording upstream (all from `tests/common`). Clients use distinct loopback
//! source addresses (127.0.0.2, .3, .4) so the proxies see distinct clients.
//! A missing nginx or caddy skips its test, except under `CI=true`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::peers::{self, peer_binary};
use common::upstream::Upstream;
use common::{client_from as client, header, Server};

const QUOTA: usize = 3;
const DENIED: &str = "127.0.0.3";

fn env_for(header: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
        ("PORTCULLIS_LISTS__DENY", "127.0.0.3/32, 198.51.100.0/24"),
    ];
    if let Some(h) = header {
        env.push(("PORTCULLIS_SERVER__CLIENT_IP_HEADER", h));
    }
    env
}

// ---------------------------------------------------------------- direct

#[tokio::test]
async fn check_from_a_trusted_proxy_judges_the_forwarded_client() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &env_for(None));
    let proxy = client("127.0.0.1");
    let check = |xff: &'static str| {
        proxy
            .get(s.url("/check"))
            .header("x-forwarded-for", xff)
            .header("x-original-method", "POST")
            .header("x-original-uri", "/app/login?next=/")
            .send()
    };
    for i in 0..QUOTA {
        let r = check("203.0.113.9").await.unwrap();
        assert_eq!(r.status(), 204, "request {i}");
        assert_eq!(
            header(&r, "ratelimit-policy").as_deref(),
            Some("\"requests\";q=3;w=60")
        );
        let left = QUOTA - 1 - i;
        assert!(
            header(&r, "ratelimit")
                .unwrap()
                .starts_with(&format!("\"requests\";r={left};t=")),
            "{:?}",
            header(&r, "ratelimit")
        );
    }
    let r = check("203.0.113.9").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-portcullis-status").as_deref(), Some("429"));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(header(&r, "ratelimit")
        .unwrap()
        .starts_with("\"requests\";r=0;t="));
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("rate_limited; retry after "));
    // Another forwarded client is unaffected; a denylisted one gets 403.
    assert_eq!(check("203.0.113.10").await.unwrap().status(), 204);
    let r = check("198.51.100.7").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "x-portcullis-status").as_deref(), Some("403"));
    assert_eq!(header(&r, "retry-after"), None);
    // The decisions are counted like the service's own.
    let m = proxy
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "portcullis_decisions_total{outcome=\"allow\",reason=\"\"} 4",
        "portcullis_decisions_total{outcome=\"deny\",reason=\"rate_limited\"} 1",
        "portcullis_decisions_total{outcome=\"deny\",reason=\"denylisted\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    // The decisions were about the forwarded clients, not the proxy: the
    // proxy's own quota on the service is untouched.
    for _ in 0..QUOTA {
        assert_eq!(proxy.get(s.url("/")).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn check_from_anybody_else_ignores_forwarding_headers() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &env_for(None));
    let c = client("127.0.0.2");
    let mut got = Vec::new();
    for i in 0..=QUOTA {
        // A new forwarded address each time: it must not buy a new quota.
        let r = c
            .get(s.url("/check"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        got.push(r.status().as_u16());
    }
    assert_eq!(got, [204, 204, 204, 429]);
    // A denylisted forwarded address changes nothing for it either.
    let r = c
        .get(s.url("/check"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // The denylist applies to the caller itself.
    let r = client(DENIED).get(s.url("/check")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // The operator is told, once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let warned = s
        .logs()
        .iter()
        .filter(|l| l.contains("outside server.trusted_proxies"))
        .count();
    assert_eq!(warned, 1);
}

#[tokio::test]
async fn the_sample_config_serves_check_and_the_book_ships_the_tested_snippets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = tempfile::tempdir().unwrap();
    let s = common::Server::start_with(
        &d.path().join("p.db"),
        &[],
        Some(&root.join("portcullis.example.toml")),
    );
    let r = client("127.0.0.1")
        .get(s.url("/check"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"requests\";q=50;w=60")
    );
    // The book shows the files the tests run, included whole by mdbook.
    let modes = std::fs::read_to_string(root.join("docs/modes.md")).unwrap();
    for f in ["nginx.conf", "Caddyfile"] {
        assert!(root.join("docs/forward-auth").join(f).exists());
        let include = format!("{{{{#include forward-auth/{f}}}}}");
        assert!(modes.contains(&include), "docs/modes.md lacks {include}");
    }
}

#[tokio::test]
async fn x_real_ip_names_the_client_when_configured() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &env_for(Some("X-Real-IP")));
    let proxy = client("127.0.0.1");
    let r = proxy
        .get(s.url("/check"))
        .header("x-real-ip", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // X-Forwarded-For is not the configured header: ignored.
    let r = proxy
        .get(s.url("/check"))
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn check_path_is_configurable_and_bad_paths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut env = env_for(None);
    env.push(("PORTCULLIS_FORWARD_AUTH__PATH", "/_auth/decide"));
    let s = Server::start(&d.path().join("p.db"), &env);
    let proxy = client("127.0.0.1");
    let r = proxy
        .get(s.url("/_auth/decide"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // `/check` is no longer special: the service's 404, behind its layer.
    let r = proxy.get(s.url("/check")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "ratelimit").is_some());
    // Demo routes are still served.
    assert_eq!(proxy.get(s.url("/")).send().await.unwrap().status(), 200);

    for (path, why) in [
        ("check", "is not an absolute path"),
        ("/", "is not an absolute path"),
        ("/admin/check", "is taken by portcullis (/admin)"),
        ("/metrics", "is taken by portcullis (/metrics)"),
        ("/a b", "is not an absolute path"),
    ] {
        let out = Command::new(common::BIN)
            .arg("serve")
            .env_clear()
            .env("PORTCULLIS_FORWARD_AUTH__PATH", path)
            .env("PORTCULLIS_STORE__KIND", "memory")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("forward_auth.path") && err.contains(why),
            "{path}: {err}"
        );
    }
}

// ------------------------------------------------------------ login result

const REPORT: &str = "report-token-0123456789abcdef";

async fn report(s: &Server, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client("127.0.0.1")
        .post(s.url("/v1/login-result"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn login_env() -> Vec<(&'static str, &'static str)> {
    let mut env = env_for(None);
    env.extend([
        ("PORTCULLIS_FORWARD_AUTH__REPORT_TOKEN", REPORT),
        ("PORTCULLIS_LOGIN__MAX_FAILURES", "3"),
        ("PORTCULLIS_LOGIN__FAILURE_WINDOW", "5m"),
        ("PORTCULLIS_LOGIN__LOCK_FOR", "5m"),
        ("PORTCULLIS_PENALTY__BASE", "100ms"),
        ("PORTCULLIS_PENALTY__MULTIPLIER", "2"),
        ("PORTCULLIS_PENALTY__MAX", "10s"),
    ]);
    env
}

#[tokio::test]
async fn login_results_run_the_core_lockout_and_answer_the_penalty() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &login_env());
    let fail = serde_json::json!({"ip": "203.0.113.9", "username": "Alice", "ok": false});
    let mut delays = Vec::new();
    let mut locked = Vec::new();
    for _ in 0..3 {
        let (st, v) = report(&s, REPORT, fail.clone()).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["recorded"], true, "{v}");
        delays.push(v["delay_ms"].as_u64().unwrap());
        locked.push(v["locked"].as_bool().unwrap());
    }
    // The penalty back-off of the core: base × multiplier^k.
    assert_eq!(delays, [100, 200, 400]);
    // The third failure locks the pair.
    assert_eq!(locked, [false, false, true]);
    // Now the reservation is refused: nothing recorded, the app must refuse
    // even the right password, and is told for how long.
    for ok in [false, true] {
        let (st, v) = report(
            &s,
            REPORT,
            serde_json::json!({"ip": "203.0.113.9", "username": " alice ", "ok": ok}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["recorded"], false, "{v}");
        assert_eq!(v["locked"], true, "{v}");
        assert!(
            ["pair_locked", "ip_locked"].contains(&v["reason"].as_str().unwrap()),
            "{v}"
        );
        let retry = v["retry_after"].as_u64().unwrap();
        assert!((250..=300).contains(&retry), "{v}");
    }
    // The lock shows in the admin API like any other.
    let bans = common::admin_json(&s, "/admin/bans").await;
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|b| b["ip"] == "203.0.113.9"),
        "{bans}"
    );
    // The same user from another address: a success is recorded and clears
    // nothing it should not; no delay for a success.
    let (st, v) = report(
        &s,
        REPORT,
        serde_json::json!({"ip": "203.0.113.10", "username": "alice", "ok": true}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            v["recorded"].clone(),
            v["locked"].clone(),
            v["delay_ms"].clone()
        ),
        (true.into(), false.into(), 0.into()),
        "{v}"
    );
    // A denylisted address is refused as such.
    let (_, v) = report(
        &s,
        REPORT,
        serde_json::json!({"ip": "198.51.100.7", "username": "bob", "ok": false}),
    )
    .await;
    assert_eq!(
        (v["recorded"].clone(), v["reason"].clone()),
        (false.into(), "denylisted".into()),
        "{v}"
    );
    // Bad bodies.
    for body in [
        serde_json::json!({"ip": "nope", "username": "a", "ok": false}),
        serde_json::json!({"ip": "203.0.113.1", "username": "  ", "ok": false}),
        serde_json::json!({"ip": "203.0.113.1", "username": "a"}),
        serde_json::json!({"ip": "203.0.113.1", "username": "a", "ok": false, "x": 1}),
    ] {
        assert_eq!(report(&s, REPORT, body.clone()).await.0, 400, "{body}");
    }
}

#[tokio::test]
async fn login_result_needs_the_token_and_guessing_it_locks_the_guesser() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("p.db"), &login_env());
    let body = serde_json::json!({"ip": "203.0.113.9", "username": "alice", "ok": false});
    // No token at all, then wrong ones: 401 until the guesser (this
    // caller) is locked by the login rules (3 failures), then 429 even with
    // the right token.
    let r = client("127.0.0.1")
        .post(s.url("/v1/login-result"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for t in ["wrong", &REPORT[..REPORT.len() - 1]] {
        assert_eq!(report(&s, t, body.clone()).await.0, 401, "{t}");
    }
    let r = client("127.0.0.1")
        .post(s.url("/v1/login-result"))
        .bearer_auth(REPORT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_some());
    // Nothing was recorded for alice by any of these.
    let bans = common::admin_json(&s, "/admin/bans").await;
    assert!(
        !bans
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["ip"] == "203.0.113.9"),
        "{bans}"
    );
    // Another caller with the right token is served.
    let r = client("127.0.0.2")
        .post(s.url("/v1/login-result"))
        .bearer_auth(REPORT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Without a report token the API is off: the path is the service's
    // (its 404, behind its layer).
    let s2 = Server::start(&d.path().join("q.db"), &env_for(None));
    let r = client("127.0.0.1")
        .post(s2.url("/v1/login-result"))
        .bearer_auth(REPORT)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(header(&r, "ratelimit").is_some());
}

#[tokio::test]
async fn forward_auth_can_be_switched_off() {
    let d = tempfile::tempdir().unwrap();
    let mut env = env_for(None);
    env.push(("PORTCULLIS_FORWARD_AUTH__ENABLED", "false"));
    let s = Server::start(&d.path().join("p.db"), &env);
    let r = client("127.0.0.1")
        .get(s.url("/check"))
        .header("x-original-uri", "/app")
        .send()
        .await
        .unwrap();
    // The service's own 404 for the proxy itself, not a decision.
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-portcullis-status"), None);
    assert!(header(&r, "ratelimit").is_some());
}

// ------------------------------------------------------------- real peers

/// The same checks through either proxy at `base`.
async fn through_proxy(pc: &Server, base: &str, up: &Upstream, spoof_header: &str) {
    let a = client("127.0.0.2");
    for i in 0..QUOTA {
        let r = a
            .get(format!("{base}/app/page?i={i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "upstream ok");
    }
    assert_eq!(up.count(), QUOTA);
    // Quota + 1: 429 with Retry-After and the fields, through the proxy.
    let r = a.get(format!("{base}/app/page")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .starts_with("\"requests\";r=0;t="),
        "{:?}",
        r.headers()
    );
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"requests\";q=3;w=60")
    );
    // A POST is judged too (its body never reaches portcullis or the app).
    let r = a
        .post(format!("{base}/app/login"))
        .body("user=a&pass=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // The proxy named the original method and path, and portcullis read them
    // (they choose the route's policy).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = pc.logs();
    assert!(
        logs.iter().any(|l| l.contains("forward-auth denied")
            && l.contains("POST")
            && l.contains("\"/app/login\"")
            && l.contains("127.0.0.2")),
        "{logs:#?}"
    );
    // The denylisted address: 403, whatever forwarding header it sends.
    let b = client(DENIED);
    let r = b
        .get(format!("{base}/app/page"))
        .header(spoof_header, "127.0.0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A third client is served.
    let c = client("127.0.0.4");
    let r = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The upstream never saw the refused requests.
    assert_eq!(up.count(), QUOTA + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request() {
    let Some(nginx) = peer_binary("nginx", "nginx_auth_request") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    // A strict policy for /app/strict, spelled any way, raw bytes included.
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[policies]]\nname = \"strict\"\nprefix = \"/app/strict\"\n[policies.requests]\nmax_requests = 1\n",
    )
    .unwrap();
    let pc = Server::start_with(
        &d.path().join("p.db"),
        &env_for(Some("X-Real-IP")),
        Some(&cfg),
    );
    let pc_addr = pc.base.trim_start_matches("http://").to_string();
    let front = peers::nginx(&nginx, d.path(), &pc_addr, up.addr);
    let base = front.base();
    through_proxy(&pc, &base, &up, "x-real-ip").await;
    // nginx passes `$request_uri` raw: `<`, `"` and 0xFF in the query, a
    // spelling of the path; the strict policy applies all the same.
    let before = up.count();
    let from: std::net::IpAddr = "127.0.0.6".parse().unwrap();
    let mut statuses = Vec::new();
    for target in [&b"//App/./strict?q=<\"\xff"[..], b"/app/x/../STRICT?q=\"<"] {
        let a = common::raw::Raw::new("GET", target)
            .send(from, front.addr)
            .unwrap();
        statuses.push(a.status);
    }
    // The first passes portcullis (what the app makes of its bytes is the
    // app's affair); the second is the strict policy's second request.
    assert!(
        statuses[0] != 429 && statuses[1] == 429,
        "through nginx: {statuses:?}"
    );
    let after = up.count();
    assert!(after - before <= 1, "{before} {after}");
    // portcullis gone: nginx fails closed (500), the app sees nothing.
    pc.kill9();
    let r = client("127.0.0.4")
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(up.count(), after);
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth() {
    let Some(caddy) = peer_binary("caddy", "caddy_forward_auth") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let up = Upstream::start();
    // Caddy sets X-Forwarded-Method/-Uri and passes a client's own
    // X-Original-* on: `proxy = "caddy"` reads only the former. A strict
    // policy for POST /app/secure shows which was read.
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[forward_auth]\nproxy = \"caddy\"\n[[policies]]\nname = \"secure\"\nprefix = \"/app/secure\"\nmethods = [\"POST\"]\n[policies.requests]\nmax_requests = 1\n",
    )
    .unwrap();
    let pc = Server::start_with(&d.path().join("p.db"), &env_for(None), Some(&cfg));
    let pc_addr = pc.base.trim_start_matches("http://").to_string();
    let front = peers::caddy(&caddy, d.path(), &pc_addr, up.addr);
    let base = front.base();
    through_proxy(&pc, &base, &up, "x-forwarded-for").await;
    // A client claiming `GET /` in X-Original-* still gets the POST
    // /app/secure policy (1 a minute): the second is refused by it.
    let spoof = client("127.0.0.5");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = spoof
            .post(format!("{base}/app/secure"))
            .header("x-original-uri", "/")
            .header("x-original-method", "GET")
            .send()
            .await
            .unwrap();
        seen.push((r.status().as_u16(), header(&r, "ratelimit-policy")));
    }
    assert_eq!(seen[0].0, 200, "{seen:?}");
    assert_eq!(seen[1].0, 429, "{seen:?}");
    assert_eq!(
        seen[1].1.as_deref(),
        Some("\"secure\";q=1;w=60"),
        "{seen:?}"
    );
    pc.kill9();
    let r = client("127.0.0.4")
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(up.count(), QUOTA + 2);
}
