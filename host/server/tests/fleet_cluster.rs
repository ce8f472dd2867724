//! `portcullis serve` processes on a real three-master Redis Cluster
//! (`[store] redis_cluster`): they share one limit exactly, on every
//! master; killing one master's process makes the keys of its slots fall
//! back to each server's local limiter (or 503 with `fail_closed`),
//! counted, logged once per node and shown per node in `/admin/status`,
//! while keys on the other masters keep one fleet limit; the master
//! restarted with its cluster config file is seen healthy again.

use std::net::IpAddr;
use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use common::{admin_json, hit, metric, metrics_text, Server};
use portcullis::Addr;
use redis_server::RedisCluster;

const QUOTA: usize = 5;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// The fleet's request key of `ip` (the layout `fleet/mod.rs` documents,
/// namespace `portcullis`, IPv6 /64).
fn request_key(ip: &str) -> String {
    let ip: IpAddr = ip.parse().unwrap();
    let hex: String = Addr::from_ip(ip, 64)
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("portcullis:{{a:{hex}}}:req")
}

/// `count` addresses `198.51.<n>.x` whose keys live on node `node`.
fn addrs_on(cluster: &RedisCluster, node: usize, n: u8, count: usize) -> Vec<String> {
    (1..=255u8)
        .map(|i| format!("198.51.{n}.{i}"))
        .filter(|ip| cluster.node_of(&request_key(ip)) == node)
        .take(count)
        .collect()
}

fn start(cluster: &RedisCluster, extra: &[(&str, &str)]) -> Server {
    let nodes = format!(
        "[{}]",
        cluster
            .urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let quota = QUOTA.to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("PORTCULLIS_STORE__KIND", "redis"),
        ("PORTCULLIS_STORE__REDIS_CLUSTER", &nodes),
        ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", &quota),
        ("PORTCULLIS_REQUESTS__WINDOW", "10m"),
        // Generous for a loaded machine: a live master's slow answer must
        // not count as its outage here. A dead master is refused at once.
        ("PORTCULLIS_STORE__REDIS_TIMEOUT", "1s"),
    ];
    env.extend_from_slice(extra);
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(&d.path().join("unused.db"), &env);
    std::mem::forget(d);
    s
}

/// `QUOTA + 1` requests for `who` at once, alternating between `a` and
/// `b`: how many were allowed.
async fn concurrent(a: &Server, b: &Server, who: &str) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..=QUOTA {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        let who = who.to_string();
        set.spawn(async move {
            client()
                .get(url)
                .header("x-forwarded-for", who)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut ok = 0;
    while let Some(code) = set.join_next().await {
        if code.unwrap() == 200 {
            ok += 1;
        }
    }
    ok
}

/// The labelled samples `name{node="…"} v` of `/metrics`, by node.
async fn node_metric(s: &Server, name: &str) -> Vec<(String, u64)> {
    let text = metrics_text(s).await;
    let prefix = format!("{name}{{node=\"");
    let mut out: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (node, v) = rest.split_once("\"}")?;
            Some((node.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    out.sort();
    out
}

/// `/admin/status`'s `nodes`: (port, up, outages) by port.
async fn status_nodes(s: &Server) -> Vec<(u16, bool, u64)> {
    let st = admin_json(s, "/admin/status").await;
    let mut v: Vec<(u16, bool, u64)> = st["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {st}"))
        .iter()
        .map(|n| {
            let port = n["node"].as_str().unwrap().rsplit_once(':').unwrap().1;
            (
                port.parse().unwrap(),
                n["up"].as_bool().unwrap(),
                n["outages"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_limit_through_a_cluster_exactly() {
    let Some(cluster) = RedisCluster::start_or_skip("two_servers_share_one_limit_cluster") else {
        return;
    };
    let a = start(&cluster, &[]);
    let b = start(&cluster, &[]);
    // One address per master, QUOTA + 1 at once from two servers:
    // exactly QUOTA through, each time.
    for node in 0..3 {
        for who in addrs_on(&cluster, node, 10, 3) {
            assert_eq!(
                concurrent(&a, &b, &who).await,
                QUOTA,
                "{who} on node {node}"
            );
            assert_eq!(hit(&a, &who).await, 429);
            assert_eq!(hit(&b, &who).await, 429);
        }
    }
    assert_eq!(metric(&a, "portcullis_fallbacks_total").await, 0);
    assert_eq!(metric(&b, "portcullis_fallbacks_total").await, 0);
    let st = admin_json(&a, "/admin/status").await;
    assert_eq!(st["backend"], "redis");
    assert_eq!(st["fallback_active"], false, "{st}");
    let mut ports: Vec<u16> = (0..3).map(|i| cluster.node(i).port()).collect();
    ports.sort_unstable();
    assert_eq!(
        status_nodes(&a).await,
        ports.iter().map(|&p| (p, true, 0)).collect::<Vec<_>>()
    );
    // The dashboard's data carries the same nodes.
    let ui = admin_json(&a, "/admin/ui/data").await;
    assert_eq!(
        ui["store"]["nodes"].as_array().map(Vec::len),
        Some(3),
        "{ui}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_takes_down_only_its_slots_and_comes_back() {
    let Some(mut cluster) = RedisCluster::start_or_skip("a_dead_master_takes_down_only_its_slots")
    else {
        return;
    };
    // Blocked at the first violation: the holds listed below.
    let block = ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1");
    let a = start(&cluster, &[block]);
    let b = start(&cluster, &[block]);
    let closed = start(
        &cluster,
        &[block, ("PORTCULLIS_STORE__FAIL_CLOSED", "true")],
    );
    let dead = 0;
    let dead_port = cluster.node(dead).port();
    let on_dead = addrs_on(&cluster, dead, 20, 3);
    let on_live: Vec<String> = addrs_on(&cluster, 1, 21, 2)
        .into_iter()
        .chain(addrs_on(&cluster, 2, 21, 2))
        .collect();
    assert_eq!(hit(&a, &on_live[0]).await, 200);

    cluster.stop(dead);
    // Keys of the dead master's slots: each server decides alone, with its
    // own table: QUOTA on A *and* QUOTA on B.
    let who = &on_dead[0];
    let mut ok = 0;
    for s in [&a, &b] {
        for _ in 0..QUOTA {
            if hit(s, who).await == 200 {
                ok += 1;
            }
        }
        assert_eq!(hit(s, who).await, 429, "the local limiter limits");
    }
    assert_eq!(ok, 2 * QUOTA, "decided locally on each server");
    let fa = metric(&a, "portcullis_fallbacks_total").await;
    assert!(fa > QUOTA as u64, "fallbacks counted: {fa}");
    assert!(metric(&b, "portcullis_fallbacks_total").await > QUOTA as u64);
    assert_eq!(metric(&a, "portcullis_fallback_active").await, 1);
    // Keys of the other masters: still one fleet limit, exactly.
    let before = metric(&a, "portcullis_fallbacks_total").await;
    for who in &on_live[1..] {
        assert_eq!(concurrent(&a, &b, who).await, QUOTA, "{who} shared");
    }
    assert_eq!(
        metric(&a, "portcullis_fallbacks_total").await,
        before,
        "the live masters' keys never fell back"
    );
    // The holds: the live masters' blocks from Redis, the dead master's
    // addresses from this server's own fallback.
    let bans = admin_json(&a, "/admin/bans").await;
    let blocked = |ip: &str| {
        bans.as_array()
            .unwrap()
            .iter()
            .any(|r| r["ip"] == ip && r["reason"] == "blocked")
    };
    assert!(blocked(who), "local hold of the dead slots: {bans}");
    for ip in &on_live[1..] {
        assert!(blocked(ip), "fleet hold of {ip}: {bans}");
    }
    // Fail closed: 503 for the dead slots only.
    assert_eq!(hit(&closed, &on_dead[1]).await, 503);
    assert_eq!(hit(&closed, &on_live[0]).await, 200);
    // Per node: in /admin/status and in /metrics.
    for s in [&a, &b, &closed] {
        for (port, up, outages) in status_nodes(s).await {
            assert_eq!(up, port != dead_port, "node {port}");
            assert_eq!(outages, u64::from(port == dead_port), "node {port}");
        }
        assert_eq!(
            admin_json(s, "/admin/status").await["fallback_active"],
            true
        );
    }
    let up = node_metric(&a, "portcullis_redis_node_up").await;
    assert_eq!(up.len(), 3, "{up:?}");
    for (node, v) in &up {
        assert_eq!(
            *v,
            u64::from(!node.ends_with(&format!(":{dead_port}"))),
            "{node}"
        );
    }
    let outages = node_metric(&a, "portcullis_redis_node_outages_total").await;
    assert_eq!(
        outages,
        vec![(format!("127.0.0.1:{dead_port}"), 1)],
        "one outage, of the dead node"
    );
    // The dashboard's Store tile lists the masters, the dead one marked.
    dashboard_shows_nodes(&a, dead_port).await;
    // More traffic to the dead slots: still one outage, one log line.
    for who in &on_dead {
        hit(&a, who).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = a.logs();
    let down_lines: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("redis cluster node unavailable"))
        .collect();
    assert_eq!(down_lines.len(), 1, "{logs:#?}");
    assert!(
        down_lines[0].contains(&dead_port.to_string()),
        "{down_lines:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("redis unavailable")),
        "no global outage: {logs:#?}"
    );

    // Back on its port with its cluster config file: healthy again (the
    // probe sees it without any request for its keys), and its keys are
    // decided in the cluster again, shared.
    cluster.restart(dead).expect("restart the dead master");
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_nodes(&a).await.iter().any(|n| !n.1) || status_nodes(&b).await.iter().any(|n| !n.1)
    {
        assert!(Instant::now() < deadline, "{:?}", status_nodes(&a).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&a, "portcullis_fallback_active").await, 0);
    let back = addrs_on(&cluster, dead, 22, 1);
    let before = metric(&a, "portcullis_fallbacks_total").await;
    assert_eq!(concurrent(&a, &b, &back[0]).await, QUOTA, "shared again");
    assert_eq!(metric(&a, "portcullis_fallbacks_total").await, before);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hit(&closed, &on_dead[2]).await != 200 {
        assert!(
            Instant::now() < deadline,
            "fail-closed server did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a
        .logs()
        .iter()
        .any(|l| l.contains("redis cluster node is back") && l.contains(&dead_port.to_string()))
    {
        assert!(Instant::now() < deadline, "no \"node is back\" log line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tests/ui/cluster_nodes.mjs` in headless chromium against `s` (SKIP
/// without node, chromium or `tests/ui/node_modules`; a failure under
/// `CI=true`).
async fn dashboard_shows_nodes(s: &Server, dead_port: u16) {
    if !common::browser_or_skip("dashboard node list") {
        return;
    }
    common::run_ui_script(
        "cluster_nodes.mjs",
        vec![
            s.base.clone().into(),
            common::TOKEN.into(),
            dead_port.to_string().into(),
        ],
        Duration::from_secs(150),
    )
    .await;
}

#[test]
fn redis_url_and_redis_cluster_are_exclusive() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[store]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:1/\"\nredis_cluster = [\"redis://127.0.0.1:2/\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.redis_cluster"), "{err}");
}

/// Issue 19 items 1 + 2 together: a ban that server A's fallback made for
/// an address of a dead master's slots is written to that master when it
/// is back, so server B — which never saw the address — refuses it too;
/// meanwhile the other masters' keys never waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_while_its_master_was_dead_reaches_the_fleet() {
    let Some(mut cluster) = RedisCluster::start_or_skip("ban_while_master_dead_reaches_fleet")
    else {
        return;
    };
    // Banned at the first violation.
    let rules = [
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1"),
        ("PORTCULLIS_REQUESTS__BAN_AFTER", "1"),
    ];
    let a = start(&cluster, &rules);
    let b = start(&cluster, &rules);
    let dead = 2;
    let on_dead = addrs_on(&cluster, dead, 30, 12);
    let (attacker, witness) = (&on_dead[0], &on_dead[1]);
    // One fresh address of the dead master's slots per probe of B below.
    let mut probes = on_dead[2..].iter();
    let on_live = addrs_on(&cluster, 0, 31, 1);
    assert_eq!(hit(&a, witness).await, 200);
    assert_eq!(metric(&a, "portcullis_reconciled_total").await, 0);

    cluster.stop(dead);
    let mut last = 0;
    for _ in 0..=QUOTA + 1 {
        last = hit(&a, attacker).await;
    }
    assert_eq!(last, 403, "A's fallback banned {attacker}");
    // A live master's key is still decided in Redis while the ban waits.
    let before = metric(&a, "portcullis_fallbacks_total").await;
    assert_eq!(hit(&a, &on_live[0]).await, 200);
    assert_eq!(metric(&a, "portcullis_fallbacks_total").await, before);
    assert_eq!(metric(&a, "portcullis_reconcile_queued").await, 1);

    cluster.restart(dead).expect("restart the master");
    cluster
        .wait_ok(Duration::from_secs(20))
        .expect("cluster ok again");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&a, "portcullis_reconcile_queued").await != 0 {
        assert!(
            Instant::now() < deadline,
            "A never wrote its ban to the master: {:?}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&a, "portcullis_reconciled_total").await >= 1);
    // B: back on that master (a fresh address of its slots is decided in
    // Redis again, not by B's fallback), then the attacker, whom B never
    // saw: only the reconciled ban can refuse a first request.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before = metric(&b, "portcullis_fallbacks_total").await;
        let probe = probes.next().expect("B back within the probes");
        assert_eq!(hit(&b, probe).await, 200);
        if metric(&b, "portcullis_fallbacks_total").await == before {
            break;
        }
        assert!(Instant::now() < deadline, "B never got the master back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(hit(&b, attacker).await, 403, "B refuses A's reconciled ban");
}
