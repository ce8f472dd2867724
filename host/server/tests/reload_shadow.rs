//! Issue 17 items 1, 2 and 4 against the real binary over loopback:
//! shadow mode, reload without restart (SIGHUP and `portcullis reload`)
//! with requests in flight, and refusals as problem details.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;
use common::{admin_json, get_as, Server, BIN, TOKEN};

/// Clients behind the trusted loopback proxy, named by X-Forwarded-For.
const PROXY: &str = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";

async fn metrics_text(s: &Server) -> String {
    reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of every sample of `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait for a log line containing `needle`.
fn wait_log(s: &Server, seen: &mut Vec<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        seen.extend(s.logs());
        if let Some(l) = seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(s: &Server) {
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

/// `portcullis reload --url … --token …`: (success, stdout, stderr).
fn cli_reload(s: &Server) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["reload", "--json", "--url", &s.base, "--token", TOKEN])
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `t` of a `RateLimit` field value.
fn t_of(field: &str) -> Option<u64> {
    field
        .split(';')
        .find_map(|p| p.trim().strip_prefix("t="))
        .and_then(|t| t.parse().ok())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn shadow_lets_quota_plus_10_through_then_a_reload_enforces_at_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    let rules =
        "[requests]\nmax_requests = 5\nwindow = \"60s\"\nblock_after = 1\nblock_for = \"10m\"\n";
    write(&cfg, &format!("{PROXY}{rules}shadow = true\n"));
    let s = Server::start_with(&d.path().join("p.db"), &[], Some(&cfg));
    let ip = "198.51.100.7";
    for i in 0..15 {
        let r = get_as(&s, ip).await;
        assert_eq!(r.status(), 200, "request {i} proceeds in shadow mode");
        let rl = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(rl.starts_with("\"requests\";r="), "{rl}");
        if i >= 5 {
            assert!(
                rl.contains("r=0"),
                "a would-be denial still sends the fields: {rl}"
            );
        }
    }
    let m = metrics_text(&s).await;
    assert_eq!(total(&m, "portcullis_shadow_denials_total"), 10.0, "{m}");
    // Recorded exactly as usual.
    // (block_after = 1: the first denial already blocks.)
    assert!(
        m.contains("portcullis_shadow_denials_total{reason=\"blocked\"} 10"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_decisions_total{outcome=\"deny\",reason=\"blocked\"} 10"),
        "{m}"
    );
    let mut seen = Vec::new();
    let line = wait_log(&s, &mut seen, "shadow: would deny");
    assert!(line.contains(ip) && line.contains("blocked"), "{line}");
    // The block the shadow policy imposed is listed, marked shadow.
    let bans = admin_json(&s, "/admin/bans").await;
    let row = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == ip)
        .unwrap_or_else(|| panic!("{bans}"));
    assert_eq!(row["reason"], "blocked");
    assert_eq!(row["shadow"], true);
    let ui = reqwest::Client::new()
        .get(s.url("/admin/ui/data"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    let v: serde_json::Value = ui.json().await.unwrap();
    assert_eq!(v["bans"][0]["ip"], ip, "{v}");
    assert_eq!(v["bans"][0]["shadow"], true, "{v}");

    // Enforce: the block recorded in shadow mode applies at once.
    write(&cfg, &format!("{PROXY}{rules}shadow = false\n"));
    sighup(&s);
    wait_log(&s, &mut seen, "config reloaded");
    let r = get_as(&s, ip).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-portcullis-reason"], "blocked");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let t = t_of(r.headers()["ratelimit"].to_str().unwrap()).unwrap();
    assert!(
        retry >= t && retry > 500,
        "the 10 min block: Retry-After {retry}, t={t}"
    );
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("#abnormal-usage-detected"),
        "{v}"
    );
    assert_eq!(v["violated-policies"], serde_json::json!(["requests"]));
    let bans = admin_json(&s, "/admin/bans").await;
    assert_eq!(bans[0]["shadow"], false, "{bans}");
    // A fresh client is limited at the quota now.
    for _ in 0..5 {
        assert_eq!(get_as(&s, "198.51.100.8").await.status(), 200);
    }
    assert_eq!(get_as(&s, "198.51.100.8").await.status(), 429);
    let m = metrics_text(&s).await;
    assert_eq!(total(&m, "portcullis_shadow_denials_total"), 10.0);
}

#[tokio::test]
async fn reload_applies_keeps_state_refuses_and_reports_restarts_with_requests_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    let v1 = format!(
        "{PROXY}[requests]\nmax_requests = 3\n[login]\nmax_failures = 2\n[penalty]\nbase = \"1500ms\"\nmax = \"2s\"\n"
    );
    write(&cfg, &v1);
    let s = Server::start_with(&d.path().join("p.db"), &[], Some(&cfg));
    let client = reqwest::Client::new();
    let login = |ip: &'static str| {
        client
            .post(s.url("/login"))
            .header("x-forwarded-for", ip)
            .json(&serde_json::json!({"username": "demo", "password": "wrong"}))
            .send()
    };
    // State before: a used-up quota and a locked pair.
    for _ in 0..3 {
        assert_eq!(get_as(&s, "198.51.100.1").await.status(), 200);
    }
    assert_eq!(get_as(&s, "198.51.100.1").await.status(), 429);
    let (a, b) = tokio::join!(login("198.51.100.2"), login("198.51.100.2"));
    assert_eq!(
        (a.unwrap().status().as_u16(), b.unwrap().status().as_u16()),
        (401, 401)
    );
    assert_eq!(login("198.51.100.2").await.unwrap().status(), 429);

    // In flight during the reloads: a penalty delay and a stream of requests.
    let started = Instant::now();
    let penalty = tokio::spawn(login("198.51.100.3"));
    let base = s.base.clone();
    let stream = tokio::spawn(async move {
        let c = reqwest::Client::new();
        let mut codes = Vec::new();
        for i in 0..60u32 {
            let r = c
                .get(format!("{base}/"))
                .header("x-forwarded-for", format!("203.0.113.{}", i % 20))
                .send()
                .await
                .unwrap();
            codes.push(r.status().as_u16());
        }
        codes
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 1. Applied (through the CLI and the admin API), with settings that
    // need a restart reported and ignored.
    write(
        &cfg,
        &format!("{v1}[store]\nkind = \"memory\"\nmax_entries = 5000\n")
            .replace("max_requests = 3", "max_requests = 6"),
    );
    let (ok, out, err) = cli_reload(&s);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["reloaded"], true);
    assert_eq!(v["rules_changed"], true);
    assert_eq!(
        v["needs_restart"],
        serde_json::json!(["store.kind", "store.max_entries"])
    );
    let st = admin_json(&s, "/admin/status").await;
    assert_eq!(
        st["store_kind"], "sqlite",
        "the store stays until a restart"
    );
    // 6 − the 3 logged: exactly 3 more for the used-up client.
    for _ in 0..3 {
        assert_eq!(get_as(&s, "198.51.100.1").await.status(), 200);
    }
    assert_eq!(get_as(&s, "198.51.100.1").await.status(), 429);
    // The lock stays.
    let r = login("198.51.100.2").await.unwrap();
    assert_eq!(r.status(), 429);

    // 2. Refused: logged with the key, counted, the running config stays.
    write(&cfg, &v1.replace("max_requests = 3", "max_requests = 0"));
    let (ok, _, err) = cli_reload(&s);
    assert!(!ok);
    assert!(err.contains("requests.max_requests"), "{err}");
    let mut seen = Vec::new();
    let line = wait_log(&s, &mut seen, "config reload refused");
    assert!(line.contains("requests.max_requests"), "{line}");
    seen.clear();
    write(
        &cfg,
        &v1.replace("max_requests = 3", "max_requests = 3\nwindoww = \"1s\""),
    );
    sighup(&s);
    let line = wait_log(&s, &mut seen, "requests.windoww");
    assert!(line.contains("config reload refused"), "{line}");
    let m = metrics_text(&s).await;
    assert_eq!(
        total(&m, "portcullis_config_reload_errors_total"),
        2.0,
        "{m}"
    );
    // Still quota 6.
    for _ in 0..6 {
        assert_eq!(get_as(&s, "198.51.100.4").await.status(), 200);
    }
    assert_eq!(get_as(&s, "198.51.100.4").await.status(), 429);

    // The penalty delay that ran across the reloads completed.
    let r = penalty.await.unwrap().unwrap();
    assert_eq!(r.status(), 401);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // Every request in flight got an answer from the rules (old or new).
    let codes = stream.await.unwrap();
    assert_eq!(codes.len(), 60);
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(codes.contains(&200));
}

#[tokio::test]
async fn refusals_are_problem_details_or_a_page_for_browsers() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    write(
        &cfg,
        &format!("{PROXY}[requests]\nmax_requests = 2\nblock_after = 2\n[login]\nmax_failures = 1\n[penalty]\nbase = \"10ms\"\n"),
    );
    let s = Server::start_with(&d.path().join("p.db"), &[], Some(&cfg));
    let ip = "192.0.2.10";
    for _ in 0..2 {
        assert_eq!(get_as(&s, ip).await.status(), 200);
    }
    // Rate limited: quota-exceeded.
    let r = get_as(&s, ip).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let t = t_of(r.headers()["ratelimit"].to_str().unwrap()).unwrap();
    assert!(retry >= t, "Retry-After {retry} never earlier than t={t}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["type"].as_str().unwrap().ends_with("#quota-exceeded"),
        "{v}"
    );
    assert_eq!(v["status"], 429);
    assert_eq!(v["violated-policies"], serde_json::json!(["requests"]));
    assert!(v["title"].is_string() && v["detail"].is_string());

    // A browser gets a page.
    let r = reqwest::Client::new()
        .get(s.url("/"))
        .header("x-forwarded-for", ip)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers().contains_key("retry-after"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<h1>") && page.contains("retry in"), "{page}");

    // A locked login: abnormal-usage-detected, for the login policy.
    let c = reqwest::Client::new();
    let login = || {
        c.post(s.url("/login"))
            .header("x-forwarded-for", "192.0.2.20")
            .json(&serde_json::json!({"username": "demo", "password": "wrong"}))
            .send()
    };
    assert_eq!(login().await.unwrap().status(), 401);
    let r = login().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .ends_with("#abnormal-usage-detected"),
        "{v}"
    );
    assert_eq!(v["violated-policies"], serde_json::json!(["login"]));

    // A second violation window blocks the address: abnormal-usage-detected
    // is checked through the library layer test (windows last 60 s here).
}

/// A fleet server reloads its rules too: the Redis script takes them with
/// every call, so a new quota decides in Redis at once (no fallback), and
/// a client's count there is kept.
#[tokio::test]
async fn a_fleet_server_reloads_its_rules_in_redis() {
    let Some(redis) = redis_server::RedisServer::start_or_skip("a_fleet_server_reloads") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("f.toml");
    let store = format!(
        "[store]\nkind = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"5s\"\n",
        redis.url()
    );
    write(
        &cfg,
        &format!("{PROXY}{store}[requests]\nmax_requests = 3\nblock_after = 16\n"),
    );
    let s = Server::start_with(&d.path().join("f.db"), &[], Some(&cfg));
    let mut seen = Vec::new();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(get_as(&s, "203.0.113.77").await.status().as_u16());
    }
    assert_eq!(got, [200, 200, 200, 429]);
    write(
        &cfg,
        &format!("{PROXY}{store}[requests]\nmax_requests = 6\nblock_after = 16\n"),
    );
    sighup(&s);
    wait_log(&s, &mut seen, "config reloaded");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(get_as(&s, "203.0.113.77").await.status().as_u16());
    }
    assert_eq!(got, [200, 200, 200, 429], "3 more under the new quota of 6");
    let text = metrics_text(&s).await;
    assert_eq!(
        total(&text, "portcullis_fallbacks_total"),
        0.0,
        "decided in Redis"
    );
    assert!(
        !seen.iter().any(|l| l.contains("needs a restart")),
        "{seen:#?}"
    );
}

/// A `[[policies]]` entry in shadow mode: quota + 10 requests proceed and
/// 10 would-be denials are counted; a reload switches it to enforcing
/// (denied at once) and then swaps its quota (the client's count kept).
#[tokio::test]
async fn a_shadow_route_policy_switches_to_enforcing_and_takes_new_rules_on_reload() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    let policy = |shadow: bool, q: u32| {
        format!(
            "{PROXY}[[policies]]\nname = \"api\"\nprefix = \"/api/\"\nshadow = {shadow}\n\
             [policies.requests]\nmax_requests = {q}\nblock_after = 1\nblock_for = \"10m\"\n"
        )
    };
    write(&cfg, &policy(true, 3));
    let s = Server::start_with(&d.path().join("p.db"), &[], Some(&cfg));
    let client = reqwest::Client::new();
    let hit_as = |who: &'static str| {
        let req = client.get(s.url("/api/x")).header("x-forwarded-for", who);
        async move { req.send().await.unwrap() }
    };
    let hit = || hit_as("203.0.113.50");
    for i in 0..13 {
        let r = hit().await;
        assert_ne!(r.status(), 429, "request {i} proceeds in shadow mode");
        assert!(
            r.headers()
                .get("ratelimit-policy")
                .is_some_and(|v| v.to_str().unwrap().contains("\"api\"")),
            "{:?}",
            r.headers()
        );
    }
    let text = metrics_text(&s).await;
    assert_eq!(
        total(&text, "portcullis_shadow_denials_total"),
        10.0,
        "{text}"
    );
    let mut seen = Vec::new();
    write(&cfg, &policy(false, 3));
    sighup(&s);
    wait_log(&s, &mut seen, "config reloaded");
    assert_eq!(hit().await.status(), 429, "enforcing at once");
    write(&cfg, &policy(false, 20));
    sighup(&s);
    seen.clear();
    wait_log(&s, &mut seen, "config reloaded");
    for i in 0..20 {
        assert_ne!(
            hit_as("203.0.113.51").await.status(),
            429,
            "request {i}: quota 20"
        );
    }
    assert_eq!(hit_as("203.0.113.51").await.status(), 429, "the 21st");
    let bans = admin_json(&s, "/admin/bans").await;
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .any(|b| b["ip"] == "203.0.113.50" && b["policy"] == "api" && b["shadow"] == false),
        "{bans}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("needs a restart")),
        "{seen:#?}"
    );
}
