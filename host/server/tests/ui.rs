//! The operator dashboard (`/admin/ui`): its HTTP contract (sign-in,
//! cookie, CSRF guard, data endpoint) with plain requests, and an
//! end-to-end run in a real headless chromium driven by playwright-core
//! (`tests/ui/dashboard.mjs`): sign in, see the blocked address and its
//! countdown, a manual range ban with its reason, click Unban on each, and
//! the address is allowed again.
//!
//! The browser part needs `node`, `/usr/bin/chromium` and
//! `tests/ui/node_modules` (`npm ci` in `tests/ui`; `scripts/test` does it).
//! Without them it fails under `CI=true` and prints SKIP otherwise. The
//! screenshot goes to a temporary directory; with `UPDATE_SCREENSHOT=1` it
//! also replaces `docs/dashboard.png` (the picture in `docs/operations.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{admin_json, Server, TOKEN};

/// The real binary: SQLite in `db`, the admin token, 3 requests a minute,
/// blocked (15 min) after one violation.
fn start(db: &Path) -> Server {
    Server::start(
        db,
        &[
            ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
            ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
            ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
            ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
        ],
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hdr(r: &reqwest::Response, k: &str) -> String {
    r.headers()
        .get_all(k)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Requests to `/` until 127.0.0.1 is blocked; checks the admin API sees it.
async fn provoke_block(s: &Server) {
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(c.get(s.url("/")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let bans: Value = admin_json(s, "/admin/bans").await;
    let row = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("127.0.0.1 not in {bans}"));
    assert_eq!(row["reason"], "blocked");
    assert!(row["seconds_left"].as_u64().unwrap() > 800);
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .to_path_buf()
}

#[tokio::test]
async fn dashboard_http_contract() {
    let d = tempfile::tempdir().unwrap();
    let s = start(&d.path().join("portcullis.db"));
    provoke_block(&s).await;
    let c = client();

    // Signed out: the sign-in form only, no data, framing forbidden.
    let r = c.get(s.url("/admin/ui")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "x-frame-options"), "DENY");
    assert!(hdr(&r, "content-security-policy").contains("script-src 'self'"));
    assert_eq!(hdr(&r, "cache-control"), "no-store");
    let body = r.text().await.unwrap();
    assert!(body.contains("id=\"signin\""));
    assert!(!body.contains("id=\"dashboard\"") && !body.contains("127.0.0.1"));
    assert_eq!(
        c.get(s.url("/admin/ui/data"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong_cookie = c
        .get(s.url("/admin/ui/data"))
        .header("cookie", "portcullis_admin=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_cookie.status(), 401);

    // Assets are embedded and public (they hold no data).
    for (p, ty) in [
        ("/admin/ui/app.js", "javascript"),
        ("/admin/ui/app.css", "css"),
    ] {
        let r = c.get(s.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert!(hdr(&r, "content-type").contains(ty), "{p}");
        assert!(r.text().await.unwrap().len() > 1000, "{p}");
    }

    // Sign-in: a wrong token is refused, the right one sets the cookie.
    let r = c
        .post(s.url("/admin/ui/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(hdr(&r, "set-cookie"), "");
    assert!(r.text().await.unwrap().contains("Wrong token"));
    let r = c
        .post(s.url("/admin/ui/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(hdr(&r, "location"), "/admin/ui");
    let set = hdr(&r, "set-cookie");
    // The cookie holds a random session id, never the token.
    let id = set
        .strip_prefix("portcullis_admin=")
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("{set}"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{set}"
    );
    assert!(!set.contains(TOKEN), "{set}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = format!("portcullis_admin={id}");

    // Signed in: the dashboard page and its data.
    let r = c
        .get(s.url("/admin/ui"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("id=\"dashboard\"") && !body.contains("id=\"signin\""));
    let data: Value = c
        .get(s.url("/admin/ui/data"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ban = &data["bans"][0];
    assert_eq!(ban["ip"], "127.0.0.1");
    assert_eq!(ban["reason"], "blocked");
    assert!(ban["ms_left"].as_u64().unwrap() > 800_000);
    assert_eq!(data["history"]["len"], 600);
    assert_eq!(data["history"]["names"][0], "allow");
    assert_eq!(data["offenders"][0]["ip"], "127.0.0.1");
    assert_eq!(data["offenders"][0]["denials"], 2);
    assert_eq!(data["table"]["entries"], 1);
    assert!(data["table"]["capacity"].as_u64().unwrap() >= 1);
    assert_eq!(data["table"]["evictions"], 0);
    assert_eq!(data["store"]["kind"], "sqlite");
    assert_eq!(data["store"]["fallback_active"], Value::Null);
    // Bearer works for the data endpoint as for the rest of /admin.
    let r = c
        .get(s.url("/admin/ui/data"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A second later the decisions of the block show up in the history.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let data: Value = admin_json(&s, "/admin/ui/data").await;
    assert_eq!(
        data["history"]["totals"]["allow"], 3,
        "{}",
        data["history"]["totals"]
    );
    let denied: u64 = ["rate_limited", "blocked"]
        .iter()
        .map(|k| data["history"]["totals"][k].as_u64().unwrap())
        .sum();
    assert_eq!(denied, 2);
    assert_eq!(
        data["history"]["series"]["allow"].as_array().unwrap().len(),
        600
    );

    // The cookie alone cannot unban (CSRF guard); with the header it can.
    let del = |with_header: bool| {
        let mut rb = c
            .delete(s.url("/admin/bans/127.0.0.1"))
            .header("cookie", &cookie);
        if with_header {
            rb = rb.header("x-requested-with", "portcullis");
        }
        rb.send()
    };
    assert_eq!(del(false).await.unwrap().status(), 403);
    assert_eq!(c.get(s.url("/")).send().await.unwrap().status(), 429);
    assert_eq!(del(true).await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/")).send().await.unwrap().status(), 200);

    // Sign-out needs the header too, and clears the cookie.
    let out = c
        .post(s.url("/admin/ui/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 403);
    let out = c
        .post(s.url("/admin/ui/logout"))
        .header("cookie", &cookie)
        .header("x-requested-with", "portcullis")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(hdr(&out, "set-cookie").contains("portcullis_admin=;"));
    assert!(hdr(&out, "set-cookie").contains("Max-Age=0"));
    // The session is over on the server too: the old cookie is refused.
    let r = c
        .get(s.url("/admin/ui/data"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn dashboard_in_headless_chromium() {
    if !common::browser_or_skip("dashboard_in_headless_chromium") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let s = start(&d.path().join("portcullis.db"));
    provoke_block(&s).await;
    let c = client();
    // A manual range ban with its reason (issue 17): the page lists it
    // and its Unban lifts exactly that range.
    let r = c
        .post(s.url("/admin/bans"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"ip": "203.0.113.0/24", "reason": "scanner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let shot = d.path().join("dashboard.png");
    common::run_ui_script(
        "dashboard.mjs",
        vec![s.base.clone().into(), TOKEN.into(), shot.clone().into()],
        Duration::from_secs(180),
    )
    .await;

    // The page's Unban lifted the block for real, and the manual range.
    let r = c.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "127.0.0.1 is allowed again after Unban");
    let bans = admin_json(&s, "/admin/bans").await;
    assert_eq!(bans, serde_json::json!([]), "the manual range is lifted");
    let png = std::fs::read(&shot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let phone = d.path().join("dashboard-phone.png");
    assert!(std::fs::read(&phone)
        .expect("phone screenshot saved")
        .starts_with(b"\x89PNG"));
    if let Ok(dir) = std::env::var("UI_SCREENSHOT_DIR") {
        for f in [&shot, &phone] {
            std::fs::copy(f, Path::new(&dir).join(f.file_name().unwrap())).unwrap();
        }
    }
    if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = repo_root().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &png).unwrap();
        println!("updated {}", docs.join("dashboard.png").display());
    }
}
