//! End-to-end: the real `portcullis` binary on a free loopback port,
//! checked line by line against the contract in `docs/modes.md` and
//! `docs/operations.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Server, BIN, TOKEN};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get(s: &Server, p: &str) -> reqwest::Response {
    client().get(s.url(p)).send().await.unwrap()
}

async fn admin(s: &Server, m: reqwest::Method, p: &str) -> reqwest::Response {
    client()
        .request(m, s.url(p))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

async fn login(s: &Server, user: &str, pw: &str) -> reqwest::Response {
    client()
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": user, "password": pw}))
        .send()
        .await
        .unwrap()
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

#[tokio::test]
async fn root_is_limited_then_blocked_then_banned() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
            ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
            ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "2"),
            ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
        ],
    );
    for left in [2, 1, 0] {
        let r = get(&s, "/").await;
        assert_eq!(r.status(), 200);
        assert_eq!(hdr(&r, "ratelimit-policy"), "\"requests\";q=3;w=60");
        assert!(hdr(&r, "ratelimit").starts_with(&format!("\"requests\";r={left};t=")));
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    let r = get(&s, "/").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = hdr(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Every response carries the fields, including metrics and errors.
    let m = get(&s, "/metrics").await;
    assert!(!hdr(&m, "ratelimit").is_empty());
    let text = m.text().await.unwrap_or_default();
    assert!(
        text.contains("portcullis_decisions_total{outcome=\"deny\",reason=\"rate_limited\"} 1"),
        "{text}"
    );
    assert!(!s.logs().iter().any(|l| l.contains("panicked")));
}

#[tokio::test]
async fn banned_and_denylisted_get_403_and_ban_survives_restarts() {
    let (_d, db) = tmp();
    let env = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "2"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let s = Server::start(&db, &env);
    get(&s, "/").await;
    get(&s, "/").await;
    let r = get(&s, "/").await;
    assert_eq!(r.status(), 403, "first violation bans with ban_after = 1");
    assert_eq!(hdr(&r, "retry-after"), "");
    // Graceful stop exits 0; the ban is there after a restart…
    assert!(s.stop().success());
    let s = Server::start(&db, &env);
    assert_eq!(get(&s, "/").await.status(), 403);
    // …and after a SIGKILL too.
    s.kill9();
    let s = Server::start(&db, &env);
    assert_eq!(get(&s, "/").await.status(), 403);
    drop(s);
    let s = Server::start(&db, &[("PORTCULLIS_LISTS__DENY", "[\"127.0.0.0/8\"]")]);
    let r = get(&s, "/").await;
    assert_eq!(r.status(), 403);
    assert_eq!(hdr(&r, "x-portcullis-reason"), "denylisted");
}

#[tokio::test]
async fn login_contract() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_LOGIN__MAX_FAILURES", "3"),
            ("PORTCULLIS_LOGIN__LOCK_FOR", "2m"),
            ("PORTCULLIS_PENALTY__BASE", "300ms"),
            ("PORTCULLIS_PENALTY__MAX", "1s"),
        ],
    );
    let r = login(&s, "demo", "demo-password").await;
    assert_eq!(r.status(), 200);
    assert!(!hdr(&r, "ratelimit").is_empty());
    // Malformed or missing bodies: 400, no state change.
    for body in ["", "{", "{\"username\": \"demo\"}", "[1,2]"] {
        let r = client()
            .post(s.url("/login"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body:?}");
    }
    // Wrong passwords: 401 after the penalty (300 ms, 600 ms), then the third locks.
    for expect_ms in [300u64, 600] {
        let t = Instant::now();
        let r = login(&s, "Demo", "wrong").await;
        assert_eq!(r.status(), 401);
        assert!(
            t.elapsed() >= Duration::from_millis(expect_ms),
            "{:?} < {expect_ms} ms",
            t.elapsed()
        );
    }
    assert_eq!(login(&s, "demo", "wrong").await.status(), 401);
    // Locked: 429 with Retry-After, and the right password is not even checked.
    let t = Instant::now();
    let r = login(&s, "demo", "demo-password").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = hdr(&r, "retry-after").parse().unwrap();
    assert!((110..=120).contains(&retry), "{retry}");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "no password work while locked"
    );
    // The ip is locked too: another user from this address.
    assert_eq!(login(&s, "someone", "x").await.status(), 429);
    // Admin lifts the lock.
    let r = admin(&s, reqwest::Method::DELETE, "/admin/bans/127.0.0.1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(login(&s, "demo", "demo-password").await.status(), 200);
}

#[tokio::test]
async fn metrics_admin_api_and_auth() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "2"),
            ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ],
    );
    // Wrong or missing token: 401.
    let r = client()
        .get(s.url("/admin/status"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(get(&s, "/admin/bans").await.status(), 401);
    let st: Value = admin(&s, reqwest::Method::GET, "/admin/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(st["store_kind"], "sqlite");
    // Blocked after one violation (block_after = 1).
    get(&s, "/").await;
    get(&s, "/").await;
    let r = get(&s, "/").await;
    assert_eq!(r.status(), 429);
    let bans: Value = admin(&s, reqwest::Method::GET, "/admin/bans")
        .await
        .json()
        .await
        .unwrap();
    let row = &bans.as_array().unwrap()[0];
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["reason"], "blocked");
    let left = row["seconds_left"].as_u64().unwrap();
    assert!((890..=900).contains(&left), "{left}");
    let m = admin(&s, reqwest::Method::GET, "/metrics").await;
    assert_eq!(m.status(), 200, "monitoring has its own quota");
    assert_eq!(hdr(&m, "ratelimit-policy"), "\"metrics\";q=60;w=60");
    let r = admin(&s, reqwest::Method::GET, "/admin/status").await;
    assert_eq!(r.status(), 200, "the admin API has its own quota");
    assert_eq!(hdr(&r, "ratelimit-policy"), "\"admin\";q=60;w=60");
    // Lift: takes effect at once.
    let r = admin(&s, reqwest::Method::DELETE, "/admin/bans/127.0.0.1").await;
    assert_eq!(r.status(), 200);
    let m = get(&s, "/metrics").await.text().await.unwrap();
    assert!(m.contains("portcullis_decisions_total{outcome=\"allow\",reason=\"\"}"));
    assert!(m.contains("portcullis_decisions_total{outcome=\"deny\",reason=\"blocked\"}"));
    assert!(m.contains("portcullis_table_entries"));
    assert!(m.contains("portcullis_store_errors_total 0"));
    let bans: Value = admin(&s, reqwest::Method::GET, "/admin/bans")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bans, serde_json::json!([]));
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let (_d, db) = tmp();
    let s = Server::start(&db, &[("PORTCULLIS_SERVER__ADMIN_TOKEN", "")]);
    assert_eq!(
        admin(&s, reqwest::Method::GET, "/admin/bans")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn spoofed_forwarded_for_changes_nothing() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "2"),
            ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
        ],
    );
    for i in 0..2 {
        let r = client()
            .get(s.url("/"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client()
        .get(s.url("/"))
        .header("x-forwarded-for", "203.0.113.99")
        .header("forwarded", "for=198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_clear().output().unwrap()
}

#[tokio::test]
async fn cli_bans_and_unban_over_http_and_on_the_file() {
    let (_d, db) = tmp();
    let env = [
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let s = Server::start(&db, &env);
    get(&s, "/").await;
    assert_eq!(get(&s, "/").await.status(), 403);
    let url = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(&["bans", "--url", &url, "--token", TOKEN, "--json"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["reason"], "banned");
    assert_eq!(v[0]["seconds_left"], Value::Null);
    let url = s.base.clone();
    let out = tokio::task::spawn_blocking(move || cli(&["bans", "--url", &url, "--token", TOKEN]))
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("127.0.0.1") && table.contains("permanent"),
        "{table}"
    );
    // Wrong token: an error and a non-zero exit.
    let url = s.base.clone();
    let out = tokio::task::spawn_blocking(move || cli(&["bans", "--url", &url, "--token", "bad"]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let url = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(&[
            "unban",
            "127.0.0.1",
            "--url",
            &url,
            "--token",
            TOKEN,
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        get(&s, "/").await.status(),
        200,
        "unban through the CLI took effect at once"
    );
    // Ban again, stop the server, and work on the file.
    assert_eq!(get(&s, "/").await.status(), 403);
    assert!(s.stop().success());
    let dbs = db.to_str().unwrap().to_string();
    let out = cli(&["bans", "--db", &dbs, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let out = cli(&["status", "--db", &dbs]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("entries"));
    let out = cli(&["unban", "127.0.0.1", "--db", &dbs]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&cli(&["bans", "--db", &dbs, "--json"]).stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));
    let s = Server::start(&db, &env);
    assert_eq!(
        get(&s, "/").await.status(),
        200,
        "the file unban holds after restart"
    );
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)], file: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("serve")
            .env_clear()
            .env("PORTCULLIS_STORE__PATH", d.path().join("x.db"));
        if let Some(text) = file {
            let p = d.path().join("c.toml");
            std::fs::write(&p, text).unwrap();
            c.arg("--config").arg(p);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![],
            Some("[requests]\nmax_request = 5\n"),
            "requests.max_request: unknown key",
        ),
        (
            vec![],
            Some("[requests]\nwindow = \"0s\"\n"),
            "requests.window: must be greater than zero",
        ),
        (
            vec![("PORTCULLIS_PENALTY__MULTIPLIER", "0")],
            None,
            "penalty.multiplier: must be at least 1",
        ),
        (
            vec![("PORTCULLIS_REQUESTS__MAX_REQUESTS", "lots")],
            None,
            "requests.max_requests: expected an integer",
        ),
        (
            vec![],
            Some("[store]\nkind = \"redis\"\nredis_url = \"nope://\"\n"),
            "store.redis_url:",
        ),
        (
            vec![],
            Some("[login]\nlock_for = 5\n"),
            "login.lock_for: expected a duration",
        ),
        (vec![], Some("not toml at all ["), "c.toml"),
    ];
    for (env, file, want) in cases {
        let (code, err) = run(&env, file);
        assert_eq!(code, Some(2), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(want), "{err:?} should name {want:?}");
    }
    assert!(
        !d.path().join("x.db").exists(),
        "nothing created on a bad config"
    );
}

#[tokio::test]
async fn users_from_hash_password_and_the_sample_config() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        hash.starts_with("$argon2id$"),
        "{hash:?}, {}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (d, db) = tmp();
    let cfg = d.path().join("users.toml");
    std::fs::write(
        &cfg,
        format!("[[users]]\nname = \"Ops\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let s = Server::start_with(&db, &[], Some(&cfg));
    assert!(!s.logs().iter().any(|l| l.contains("demo user")));
    assert_eq!(login(&s, "ops", "correct horse").await.status(), 200);
    assert_eq!(login(&s, "demo", "demo-password").await.status(), 401);
    drop(s);
    // The sample config (`portcullis.example.toml`) starts a server as documented.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../portcullis.example.toml");
    let s = Server::start_with(&db, &[], Some(&sample));
    assert_eq!(get(&s, "/").await.status(), 200);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_saves_the_snapshot() {
    let (_d, db) = tmp();
    let s = Server::start(
        &db,
        &[
            ("PORTCULLIS_PENALTY__BASE", "1500ms"),
            ("PORTCULLIS_PENALTY__MAX", "2s"),
        ],
    );
    for _ in 0..3 {
        get(&s, "/").await;
    }
    // A wrong password: the 401 waits 1.5 s. Stop the server meanwhile.
    let url = s.url("/login");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&serde_json::json!({"username": "demo", "password": "nope"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let r = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(r.status(), 401);
    assert!(s.stop().success(), "exit 0 after SIGTERM");
    // The snapshot holds the request log: three requests from 127.0.0.1.
    let c = rusqlite::Connection::open(&db).unwrap();
    let log: String = c
        .query_row("SELECT log FROM entries WHERE kind = 0", [], |r| r.get(0))
        .unwrap();
    let n = serde_json::from_str::<Vec<u64>>(&log).unwrap().len();
    assert_eq!(n, 4, "three GETs and the POST were counted and saved");
}
