//! Hostile forwarding headers behind a trusted proxy (issue 14, findings 2
//! and 3), against the real binary: `trusted_proxies = ["127.0.0.1/32"]`,
//! so the test client plays the proxy; 3 requests a minute, blocked after
//! one violation. A client blocked as 203.0.113.9 must stay blocked
//! whatever else the header (or another header) says.

use std::path::Path;

mod common;
use common::{admin_json, get_with as get, Server};

const CLIENT: &str = "203.0.113.9";

fn start(db: &Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "3"),
        ("PORTCULLIS_REQUESTS__WINDOW", "60s"),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "0"),
    ];
    env.extend_from_slice(extra);
    Server::start(db, &env)
}

/// Four requests as `client` through header `name`: 200 200 200 429.
async fn block(s: &Server, name: &str, value: &str) {
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(get(s, &[(name, value)]).await);
    }
    assert_eq!(got, [200, 200, 200, 429], "{name}: {value}");
}

/// The addresses `/admin/bans` lists.
async fn banned(s: &Server) -> Vec<String> {
    admin_json(s, "/admin/bans")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ip"].as_str().unwrap().to_string())
        .collect()
}

/// A server where 203.0.113.9 (behind the trusted proxy) is blocked.
async fn blocked(d: &Path) -> Server {
    let s = start(&d.join("p.db"), &[]);
    block(&s, "x-forwarded-for", CLIENT).await;
    assert_eq!(banned(&s).await, [CLIENT]);
    s
}

#[tokio::test]
async fn finding_2_garbage_in_x_forwarded_for_does_not_unblock() {
    let d = tempfile::tempdir().unwrap();
    let s = blocked(d.path()).await;

    // Finding 2: a malformed entry left of the proxy-appended address.
    for xff in [
        "garbage, 203.0.113.9",
        "unknown, 203.0.113.9",
        "_hidden, 203.0.113.9",
        "198.51.100.1, not an ip, 203.0.113.9",
        ",, 203.0.113.9 ,",
        "203.0.113.9:5555",
        "[::ffff:203.0.113.9]:5555",
    ] {
        assert_eq!(get(&s, &[("x-forwarded-for", xff)]).await, 429, "{xff}");
    }
    // ... or on a line of its own before the proxy's line.
    let r = reqwest::Client::new()
        .get(s.url("/"))
        .header("x-forwarded-for", "garbage")
        .header("x-forwarded-for", CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn finding_3_a_client_sent_forwarded_does_not_override_x_forwarded_for() {
    let d = tempfile::tempdir().unwrap();
    let s = blocked(d.path()).await;

    // Finding 3: a client-sent Forwarded does not override X-Forwarded-For.
    assert_eq!(
        get(
            &s,
            &[
                ("x-forwarded-for", CLIENT),
                ("forwarded", "for=198.51.100.77")
            ]
        )
        .await,
        429
    );
    assert_eq!(
        get(
            &s,
            &[
                ("forwarded", "for=198.51.100.77"),
                ("x-forwarded-for", CLIENT)
            ]
        )
        .await,
        429
    );
    assert_eq!(banned(&s).await, [CLIENT]);
}

#[tokio::test]
async fn a_malformed_entry_where_the_client_should_be_is_never_the_proxy() {
    let d = tempfile::tempdir().unwrap();
    let s = blocked(d.path()).await;

    // A malformed entry where the client should be: the fixed unidentified
    // key, never the proxy's own address (which stays clean).
    for _ in 0..4 {
        get(&s, &[("x-forwarded-for", "203.0.113.9, garbage")]).await;
    }
    let mut b = banned(&s).await;
    b.sort();
    assert_eq!(b, ["100::", CLIENT]);
    assert_eq!(get(&s, &[]).await, 200, "127.0.0.1 itself is not blocked");
}

#[tokio::test]
async fn ipv6_and_forwarded_when_configured() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        &d.path().join("p.db"),
        &[("PORTCULLIS_SERVER__CLIENT_IP_HEADER", "Forwarded")],
    );
    // An IPv6 client with a port, quoted as RFC 7239 asks.
    block(&s, "forwarded", "for=\"[2001:db8::1]:443\"").await;
    // IPv6 clients are keyed by their /64.
    assert_eq!(banned(&s).await, ["2001:db8::"]);
    for fwd in [
        "for=\"[2001:db8::1]\"",
        "for=garbage, for=\"[2001:db8::1]:80\"",
        "for=\", for=\"[2001:db8::1]:80\"",
        "for=198.51.100.1;proto=http, for=\"[2001:db8::1]:1\";proto=https",
    ] {
        assert_eq!(get(&s, &[("forwarded", fwd)]).await, 429, "{fwd}");
    }
    // Now X-Forwarded-For is the header a client cannot use.
    assert_eq!(
        get(
            &s,
            &[
                ("forwarded", "for=\"[2001:db8::1]:443\""),
                ("x-forwarded-for", "198.51.100.77")
            ]
        )
        .await,
        429
    );
    // A port-suffixed IPv4 client is its address.
    block(&s, "forwarded", "for=\"198.51.100.8:5555\"").await;
    assert_eq!(get(&s, &[("forwarded", "for=198.51.100.8")]).await, 429);
}

#[test]
fn a_bad_client_ip_header_is_refused_naming_the_key() {
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .env_clear()
        .env("PORTCULLIS_SERVER__CLIENT_IP_HEADER", "X Real IP")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config error: server.client_ip_header: \"X Real IP\" is not a header name"),
        "{err}"
    );
}
