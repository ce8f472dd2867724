//! Issue 17, item 3: manual decisions. `POST /admin/bans` and
//! `portcullis ban` block (for a time) or ban (until lifted) an address or
//! a CIDR range, IPv4 and IPv6; checked on every request; listed with the
//! operator's reason; persisted (a restart keeps them, a version 1 store
//! is migrated); lifted by `unban` (the address, or exactly the range);
//! `--db` works on a stopped server's file and is refused while one runs.
//! The real binary over loopback, clients named by X-Forwarded-For from a
//! trusted proxy (the test itself).

use std::process::{Command, Output};

use serde_json::{json, Value};

mod common;

use common::{admin_json, get_as, Server, BIN, TOKEN};

const PROXY: [(&str, &str); 1] = [("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")];

async fn status_as(s: &Server, who: &str) -> u16 {
    get_as(s, who).await.status().as_u16()
}

async fn post_ban(s: &Server, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url("/admin/bans"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn delete(s: &Server, what: &str) -> Value {
    reqwest::Client::new()
        .delete(s.url(&format!("/admin/bans/{what}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn manual_rows(bans: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = bans
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "manual")
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
            (s("ip"), s("reason"), s("note"))
        })
        .collect();
    v.sort();
    v
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_clear().output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_bans_addresses_and_ranges_until_lifted_and_keeps_them_across_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("m.db");
    let s = Server::start(&db, &PROXY);

    // Before: everyone is allowed.
    for who in ["203.0.113.77", "198.51.100.7", "2001:db8:1::5"] {
        assert_eq!(status_as(&s, who).await, 200, "{who}");
    }
    let (st, v) = post_ban(&s, json!({"ip": "203.0.113.0/24", "reason": "scanner"})).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["reason"], "banned");
    let (st, v) = post_ban(
        &s,
        json!({"ip": "198.51.100.7", "for": "1h", "reason": "abuse"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["seconds_left"], 3600);
    let (st, _) = post_ban(&s, json!({"ip": "2001:db8::/32", "for": null})).await;
    assert_eq!(st, 201);

    // Refused: too wide, a zero time, not an address, unknown fields.
    for bad in [
        json!({"ip": "10.0.0.0/7"}),
        json!({"ip": "2001:db8::/31"}),
        json!({"ip": "203.0.113.9", "for": "0s"}),
        json!({"ip": "example.com"}),
        json!({"ip": "203.0.113.9", "until": "1h"}),
    ] {
        let (st, v) = post_ban(&s, bad.clone()).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }

    // Every address of the range, the blocked address, the IPv6 range.
    for who in [
        "203.0.113.0",
        "203.0.113.77",
        "203.0.113.255",
        "2001:db8:1::5",
    ] {
        let r = get_as(&s, who).await;
        assert_eq!(r.status(), 403, "{who}");
    }
    let r = get_as(&s, "198.51.100.7").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    // Neighbours are not.
    for who in ["203.0.114.1", "198.51.100.8", "2001:db9::1"] {
        assert_eq!(status_as(&s, who).await, 200, "{who}");
    }
    let want = vec![
        (
            "198.51.100.7".to_string(),
            "blocked".to_string(),
            "abuse".to_string(),
        ),
        (
            "2001:db8::/32".to_string(),
            "banned".to_string(),
            String::new(),
        ),
        (
            "203.0.113.0/24".to_string(),
            "banned".to_string(),
            "scanner".to_string(),
        ),
    ];
    assert_eq!(manual_rows(&admin_json(&s, "/admin/bans").await), want);
    // The dashboard's data shows them with their reason.
    let ui = admin_json(&s, "/admin/ui/data").await;
    assert_eq!(manual_rows(&ui["bans"]), want, "{ui}");

    // A restart keeps every manual decision.
    assert!(s.stop().success());
    let s = Server::start(&db, &PROXY);
    assert_eq!(manual_rows(&admin_json(&s, "/admin/bans").await), want);
    assert_eq!(status_as(&s, "203.0.113.5").await, 403);
    assert_eq!(status_as(&s, "198.51.100.7").await, 429);

    // Lifted: exactly the range (a narrower one is not there), the address.
    assert_eq!(delete(&s, "203.0.113.0%2F25").await["lifted"], 0);
    assert_eq!(status_as(&s, "203.0.113.5").await, 403);
    assert_eq!(delete(&s, "203.0.113.0%2F24").await["lifted"], 1);
    assert_eq!(delete(&s, "198.51.100.7").await["lifted"], 1);
    assert_eq!(status_as(&s, "203.0.113.5").await, 200);
    assert_eq!(status_as(&s, "198.51.100.7").await, 200);
    assert_eq!(manual_rows(&admin_json(&s, "/admin/bans").await).len(), 1);
    // And stays lifted after a restart.
    assert!(s.stop().success());
    let s = Server::start(&db, &PROXY);
    assert_eq!(status_as(&s, "203.0.113.5").await, 200);
    assert_eq!(status_as(&s, "2001:db8:ffff::1").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_bans_over_http_and_on_a_stopped_servers_file() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("c.db");
    let s = Server::start(&db, &PROXY);
    let url = s.base.clone();
    let out = cli(&[
        "ban",
        "192.0.2.0/24",
        "--for",
        "2h",
        "--reason",
        "credential stuffing",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["seconds_left"], 7200);
    assert_eq!(status_as(&s, "192.0.2.44").await, 429);
    let table = cli(&["bans", "--url", &url, "--token", TOKEN]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("192.0.2.0/24")
            && l.contains("manual")
            && l.ends_with("credential stuffing")),
        "{table}"
    );
    // A too-wide range is refused by the server, named.
    let out = cli(&["ban", "10.0.0.0/4", "--url", &url, "--token", TOKEN]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too wide"),
        "{out:?}"
    );
    // `--db` while the server holds the file is refused.
    let out = cli(&["ban", "198.18.0.0/15", "--db", db.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--url"),
        "{out:?}"
    );
    let out = cli(&[
        "unban",
        "192.0.2.0/24",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--json",
    ]);
    assert!(out.status.success());
    assert_eq!(status_as(&s, "192.0.2.44").await, 200);
    assert!(s.stop().success());

    // Offline: ban on the file, the next start enforces it at once.
    let p = db.to_str().unwrap();
    let out = cli(&[
        "ban",
        "198.18.0.0/15",
        "--reason",
        "lab",
        "--db",
        p,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cli(&["bans", "--db", p, "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        manual_rows(&listed),
        vec![("198.18.0.0/15".into(), "banned".into(), "lab".into())]
    );
    let s = Server::start(&db, &PROXY);
    assert_eq!(status_as(&s, "198.19.255.1").await, 403);
    assert!(s.stop().success());
    let out = cli(&["unban", "198.18.0.0/15", "--db", p, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lifted"], 1);
    let s = Server::start(&db, &PROXY);
    assert_eq!(status_as(&s, "198.19.255.1").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_is_migrated_and_keeps_its_bans() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("v1.db");
    {
        // Version 1 exactly as earlier builds wrote it, with a ban of
        // 203.0.113.50 (request key, kind 0).
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA application_id = 1346587731;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE entries (
                 kind INTEGER NOT NULL, addr BLOB NOT NULL, user INTEGER NOT NULL,
                 log TEXT NOT NULL, violations TEXT NOT NULL, block_until INTEGER,
                 block_level INTEGER NOT NULL, last_block_start INTEGER,
                 banned INTEGER NOT NULL, lock_until INTEGER,
                 PRIMARY KEY (kind, addr, user)
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;
             INSERT INTO entries VALUES (0, X'00000000000000000000FFFFCB007132', 0, '[]', '[]', NULL, 0, NULL, 1, NULL);",
        )
        .unwrap();
    }
    let p = db.to_str().unwrap();
    // The read-only listing of a version 1 file works and changes nothing.
    let listed = cli(&["bans", "--db", p, "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let version = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(), 1);
    // The first write migrates it.
    let out = cli(&["ban", "192.0.2.7", "--db", p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(version(), portcullis::sqlite::SCHEMA_VERSION);
    let s = Server::start(&db, &PROXY);
    assert_eq!(status_as(&s, "203.0.113.50").await, 403, "the old ban");
    assert_eq!(status_as(&s, "192.0.2.7").await, 403, "the manual ban");
    assert_eq!(status_as(&s, "192.0.2.8").await, 200);
    assert!(s.stop().success());

    // A server opening a version 1 store migrates it too.
    let db2 = d.path().join("v1b.db");
    std::fs::copy(&db, &db2).unwrap();
    let c = rusqlite::Connection::open(&db2).unwrap();
    c.execute_batch(
        "DROP TABLE manual_bans; DROP TABLE journal; DROP TABLE jail_positions; PRAGMA user_version = 1;",
    )
        .unwrap();
    drop(c);
    let s = Server::start(&db2, &PROXY);
    assert_eq!(status_as(&s, "203.0.113.50").await, 403);
    let (st, _) = post_ban(&s, json!({"ip": "192.0.2.9"})).await;
    assert_eq!(st, 201);
    assert!(s.stop().success());
    let v: i64 = rusqlite::Connection::open(&db2)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, portcullis::sqlite::SCHEMA_VERSION);
}

/// A manual decision is the operator's explicit word: it holds for an
/// allowlisted address too (like the denylist), and only while it lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_ban_holds_over_the_allowlist_and_a_block_ends() {
    let d = tempfile::tempdir().unwrap();
    let mut env = PROXY.to_vec();
    env.push(("PORTCULLIS_LISTS__ALLOW", "[\"198.18.0.0/15\"]"));
    let s = Server::start(&d.path().join("a.db"), &env);
    assert_eq!(status_as(&s, "198.18.0.5").await, 200);
    let (st, _) = post_ban(&s, json!({"ip": "198.18.0.5", "reason": "stolen key"})).await;
    assert_eq!(st, 201);
    assert_eq!(status_as(&s, "198.18.0.5").await, 403);
    assert_eq!(
        status_as(&s, "198.18.0.6").await,
        200,
        "the rest of the allowlist"
    );
    // A one-second block ends by itself.
    let (st, _) = post_ban(&s, json!({"ip": "198.18.0.6", "for": "1s"})).await;
    assert_eq!(st, 201);
    assert_eq!(status_as(&s, "198.18.0.6").await, 429);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(status_as(&s, "198.18.0.6").await, 200);
    assert_eq!(
        manual_rows(&admin_json(&s, "/admin/bans").await),
        vec![("198.18.0.5".into(), "banned".into(), "stolen key".into())]
    );
    assert_eq!(admin_json(&s, "/admin/status").await["manual_bans"], 1);
}
