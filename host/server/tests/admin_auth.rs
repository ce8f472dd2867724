//! Admin authentication against the real binary (issue 14, findings 10 and
//! 11): the CSRF guard holds whatever other headers a cookie request
//! carries, the cookie is a session id and not the token, the bearer scheme
//! is case-insensitive; and the table sizes are configuration, shown in
//! `/admin/status`.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{admin_json, Server, BIN, TOKEN};

fn start(db: &Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
    ];
    env.extend_from_slice(extra);
    Server::start(db, &env)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sign in on the dashboard: the `Cookie` header value to send back.
async fn sign_in(s: &Server) -> String {
    let r = client()
        .post(s.url("/admin/ui/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

async fn status_of(rb: reqwest::RequestBuilder) -> u16 {
    rb.send().await.unwrap().status().as_u16()
}

/// Block 127.0.0.1 on the service.
async fn provoke_block(s: &Server) {
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(status_of(client().get(s.url("/"))).await);
    }
    assert_eq!(got, [200, 200, 200, 429]);
}

#[tokio::test]
async fn cookie_requests_need_the_csrf_header_whatever_else_they_carry() {
    let d = tempfile::tempdir().unwrap();
    let s = start(&d.path().join("p.db"), &[]);
    let cookie = sign_in(&s).await;
    provoke_block(&s).await;
    let c = client();
    let del = |auth: Option<&str>, xrw: bool| {
        let mut rb = c
            .delete(s.url("/admin/bans/127.0.0.1"))
            .header("cookie", &cookie);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        if xrw {
            rb = rb.header("x-requested-with", "portcullis");
        }
        status_of(rb)
    };
    // Finding 10: cookie + any Authorization that is not the right bearer
    // token, no X-Requested-With: refused, and the block stays.
    for auth in [
        "Basic Zm9vOmJhcg==",
        "Bearer wrong-token",
        "Bearer",
        "Negotiate abc",
        "",
    ] {
        assert_eq!(del(Some(auth), false).await, 403, "{auth:?}");
    }
    assert_eq!(del(None, false).await, 403);
    assert_eq!(status_of(c.get(s.url("/"))).await, 429, "still blocked");
    // With the header the cookie may unban.
    assert_eq!(del(Some("Basic Zm9vOmJhcg=="), true).await, 200);
    assert_eq!(status_of(c.get(s.url("/"))).await, 200);
    // A valid bearer token needs no CSRF header (a browser never adds it).
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(status_of(c.get(s.url("/"))).await);
    }
    assert_eq!(got, [200, 200, 429], "blocked again");
    let r = c
        .delete(s.url("/admin/bans/127.0.0.1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(c.get(s.url("/"))).await, 200);
}

#[tokio::test]
async fn the_cookie_is_a_session_id_not_the_token() {
    let d = tempfile::tempdir().unwrap();
    let s = start(&d.path().join("p.db"), &[]);
    let c = client();
    let cookie = sign_in(&s).await;
    let id = cookie.strip_prefix("portcullis_admin=").unwrap();
    assert_ne!(id, TOKEN);
    assert!(!id.contains(TOKEN));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // A second sign-in is another session.
    assert_ne!(sign_in(&s).await, cookie);

    let get = |cookie: &str| {
        status_of(
            c.get(s.url("/admin/bans"))
                .header("cookie", cookie.to_string()),
        )
    };
    assert_eq!(get(&cookie).await, 200);
    // The token itself is no longer a cookie.
    assert_eq!(get(&format!("portcullis_admin={TOKEN}")).await, 401);
    assert_eq!(
        get("portcullis_admin=00000000000000000000000000000000").await,
        401
    );

    // Sign-out ends the session on the server.
    let r = c
        .post(s.url("/admin/ui/logout"))
        .header("cookie", &cookie)
        .header("x-requested-with", "portcullis")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(get(&cookie).await, 401);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let d = tempfile::tempdir().unwrap();
    let s = start(&d.path().join("p.db"), &[]);
    let c = client();
    // The scheme is case-insensitive; other schemes and near-tokens are not.
    for (auth, want) in [
        (format!("Bearer {TOKEN}"), 200),
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER {TOKEN}"), 200),
        (format!("Basic {TOKEN}"), 401),
        (format!("Bearer {TOKEN}x"), 401),
        (format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]), 401),
        ("Bearer ".to_string(), 401),
    ] {
        let got = status_of(c.get(s.url("/admin/status")).header("authorization", &auth)).await;
        assert_eq!(got, want, "{auth:?}");
    }
}

#[tokio::test]
async fn table_sizes_are_configuration_and_shown_in_status() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        &d.path().join("p.db"),
        &[
            ("PORTCULLIS_STORE__MAX_ENTRIES", "100"),
            ("PORTCULLIS_SERVER__ADMIN_MAX_ENTRIES", "50"),
        ],
    );
    let st: Value = admin_json(&s, "/admin/status").await;
    assert_eq!(st["max_entries"], 100, "{st}");
    assert_eq!(st["admin_max_entries"], 50, "{st}");
    // 64 shards, each 2 keys plus its headroom of 64: far below the default's.
    let cap = st["capacity"].as_u64().unwrap();
    assert!((100..1_000_000).contains(&cap), "{st}");

    let d2 = tempfile::tempdir().unwrap();
    let s2 = start(&d2.path().join("p.db"), &[]);
    let st: Value = admin_json(&s2, "/admin/status").await;
    assert_eq!(st["max_entries"], 1_000_000, "{st}");
    assert_eq!(st["admin_max_entries"], 10_000, "{st}");
    assert!(st["capacity"].as_u64().unwrap() >= 1_000_000);
}

#[test]
fn a_zero_table_size_is_refused_naming_the_key() {
    for (var, key) in [
        ("PORTCULLIS_STORE__MAX_ENTRIES", "store.max_entries"),
        (
            "PORTCULLIS_SERVER__ADMIN_MAX_ENTRIES",
            "server.admin_max_entries",
        ),
    ] {
        let out = std::process::Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env(var, "0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("config error: {key}: must be greater than zero")),
            "{err}"
        );
    }
}
