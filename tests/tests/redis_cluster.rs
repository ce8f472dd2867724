//! The Redis fleet backend on a real three-master Redis Cluster
//! ([`RedisCluster`]): every call of the limiter works through the cluster
//! client (scripts, plain commands, the manual-bans hash, `SCAN` for
//! `lift` and `bans`), each call's keys live on the node of their hash tag,
//! the script is loaded again per node after `SCRIPT FLUSH` (even with
//! another master dead), and a dead master takes down only the keys of its
//! own slots, seen per node in [`RedisLimiter::nodes`] and back once it is
//! restarted. Without redis-server/redis-cli: SKIP, or a failure under
//! `CI=true`.

use std::net::IpAddr;
use std::time::{Duration as StdDuration, Instant};

use portcullis::fleet::{Endpoint, FleetError, RedisLimiter};
use portcullis::{parse_range, ManualBan};
use portcullis_core::{Config, Decision, Reason, Seed};
use portcullis_tests::redis_server::RedisCluster;

const SEED: Seed = Seed::new([5; 16]);
const T0: u64 = 1_714_000_000_000_000;
const SEC: u64 = 1_000_000;

async fn limiter(cluster: &RedisCluster, config: Config, ns: &str) -> RedisLimiter {
    match RedisLimiter::connect_to(
        &Endpoint::Cluster(cluster.urls()),
        config,
        SEED,
        ns,
        StdDuration::from_millis(500),
    )
    .await
    {
        Ok(l) => l.with_ttl_slack(StdDuration::from_secs(3600)),
        Err(e) => panic!("connect: {e}"),
    }
}

/// One address whose keys live on each node (index = node).
fn ips_per_node(cluster: &RedisCluster, lim: &RedisLimiter) -> Vec<IpAddr> {
    let mut found: Vec<Option<IpAddr>> = vec![None; 3];
    for i in 1..=255u8 {
        let ip = IpAddr::from([10, 9, 0, i]);
        let n = cluster.node_of(&lim.request_key(ip));
        if found[n].is_none() {
            found[n] = Some(ip);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|f| f.expect("an address per node"))
        .collect()
}

fn exists_on(cluster: &RedisCluster, node: usize, key: &str) -> bool {
    cluster
        .node(node)
        .inline(&format!("EXISTS {key}"))
        .is_some_and(|r| r.starts_with(":1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_on_a_cluster_and_each_address_stays_on_its_node() {
    let Some(cluster) = RedisCluster::start_or_skip("every_call_works_on_a_cluster") else {
        return;
    };
    let mut c = Config::default();
    c.requests.max_requests = 2;
    c.login.max_failures = 2;
    c.login.ip_max_failures = Some(2);
    c.login.account_max_failures = Some(100);
    let lim = limiter(&cluster, c, "cl").await;
    assert!(lim.is_cluster());
    let nodes = lim.nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n.up), "{nodes:?}");
    for (i, n) in nodes.iter().enumerate() {
        let want: Vec<(u16, u16)> = cluster.slots_of(i).to_vec();
        let port = cluster.node(i).port();
        assert!(
            nodes
                .iter()
                .any(|m| m.addr.ends_with(&format!(":{port}")) && m.slots == want),
            "node {i} ({n:?}) vs {want:?}"
        );
    }

    let ips = ips_per_node(&cluster, &lim);
    for (node, &ip) in ips.iter().enumerate() {
        // Requests: quota of 2, then rate limited (a MOVED on the first
        // call would have failed a single-node client).
        for k in 0..2 {
            assert!(lim
                .check_request(ip, T0 + k)
                .await
                .expect("req")
                .is_allowed());
        }
        assert_eq!(
            lim.check_request(ip, T0 + 2).await.expect("req").reason(),
            Some(Reason::RateLimited)
        );
        // A right password settles a reservation.
        let b = lim.begin_login("bob", ip, T0).await.expect("begin bob");
        let b = b.expect("bob reserved");
        lim.login_attempt_succeeded("bob", ip, b.id, T0)
            .await
            .expect("bob settles");
        // A login locked through reservations and failures.
        let a = lim.begin_login("alice", ip, T0).await.expect("begin");
        let a = a.expect("reserved");
        assert!(!lim
            .login_attempt_failed("alice", ip, a.id, T0)
            .await
            .expect("settle"));
        let p = lim.login_failed("alice", ip, T0 + 1).await.expect("fail");
        assert!(p.locked, "second failure locks");
        if let Some(s) = p.slot {
            assert!(lim.release_slot(s).await.expect("release"));
        }
        assert_eq!(
            lim.check_login("alice", ip, T0 + 2)
                .await
                .expect("check")
                .reason(),
            Some(Reason::PairLocked)
        );
        // A denied reservation hands the account failure back; peeks and
        // slots.
        let denied = lim.begin_login("alice", ip, T0 + 2).await.expect("begin");
        assert_eq!(
            denied.err().and_then(|d| d.reason()),
            Some(Reason::PairLocked)
        );
        assert_eq!(
            lim.peek_request(ip, T0 + 2).await.expect("peek").reason(),
            Some(Reason::RateLimited)
        );
        let slot = lim.acquire_slot(ip, T0 + 2).await.expect("acquire");
        assert!(lim
            .release_slot(slot.expect("a free slot"))
            .await
            .expect("release"));
        // Every key of the address on the node of its slot.
        for key in [
            lim.request_key(ip),
            lim.login_ip_key(ip),
            lim.login_user_key("alice", ip),
        ] {
            assert!(exists_on(&cluster, node, &key), "{key} on node {node}");
        }
        let acct = lim.account_key("alice");
        assert!(exists_on(&cluster, cluster.node_of(&acct), &acct));
    }
    // A hand ban on one node, the holds of all three listed by `bans`
    // (SCAN over every master).
    assert!(lim.ban(ips[1], T0 + 3).await.expect("ban"));
    let holds = lim.bans(T0 + 3).await.expect("bans");
    for (i, &ip) in ips.iter().enumerate() {
        let addr = lim.addr(ip);
        assert!(
            holds.iter().any(|h| h.addr == addr),
            "node {i}'s address in {holds:?}"
        );
    }
    assert_eq!(
        lim.check_request(ips[1], T0 + 4).await.expect("req"),
        Decision::Deny {
            reason: Reason::Banned,
            retry_after: portcullis_core::Duration::MAX
        }
    );
    // `lift` scans the node of the address's slot and lifts all its keys.
    for &ip in &ips {
        assert!(lim.lift(ip, T0 + 5).await.expect("lift") >= 1);
        assert!(lim
            .check_request(ip, T0 + 5)
            .await
            .expect("req")
            .is_allowed());
        assert!(lim
            .check_login("alice", ip, T0 + 5)
            .await
            .expect("login")
            .is_allowed());
    }
    // The manual-bans hash: MULTI/EXEC pipelines and plain reads.
    let ban = ManualBan {
        range: parse_range("203.0.113.0/24").expect("range"),
        until_ms: None,
        reason: "cluster".into(),
        created_ms: 1,
    };
    let v0 = lim.manual_version().await.expect("version");
    lim.manual_put(&ban).await.expect("put");
    let (v1, all) = lim.manual_all().await.expect("all");
    assert_eq!(all, vec![ban.clone()]);
    assert!(v1 > v0);
    assert!(lim.manual_delete(&ban.range).await.expect("delete"));
    assert!(lim.manual_all().await.expect("all").1.is_empty());
    assert!(lim.login_succeeded("alice", ips[0], T0 + 6).await.is_ok());
    // Corrupt state in one key is that key's error, not its node's outage.
    let junk = lim.request_key(ips[2]);
    assert!(cluster
        .node(2)
        .inline(&format!("SET {junk} garbage"))
        .is_some_and(|r| r.starts_with("+OK")));
    assert!(matches!(
        lim.check_request(ips[2], T0 + 7).await,
        Err(FleetError::Redis(_))
    ));
    assert!(
        lim.nodes().iter().all(|n| n.up && n.outages == 0),
        "{:?}",
        lim.nodes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_is_reloaded_per_node_after_script_flush() {
    let Some(mut cluster) = RedisCluster::start_or_skip("script_is_reloaded_per_node") else {
        return;
    };
    let mut c = Config::default();
    c.requests.max_requests = 3;
    let lim = limiter(&cluster, c, "flush").await;
    let ips = ips_per_node(&cluster, &lim);
    for &ip in &ips {
        assert!(lim.check_request(ip, T0).await.expect("first").is_allowed());
    }
    assert!(cluster.each("SCRIPT FLUSH"), "SCRIPT FLUSH on every node");
    // NOSCRIPT → EVAL on each node; the state is still there.
    for &ip in &ips {
        assert_eq!(
            lim.check_request(ip, T0).await.expect("after flush"),
            Decision::Allow {
                remaining: 1,
                reset_after: portcullis_core::Duration::from_secs(60)
            }
        );
    }
    // With node 0 dead, a flushed node 1 still gets the script (the
    // loading goes to that node alone, not to every master).
    cluster.stop(0);
    assert!(cluster
        .node(1)
        .inline("SCRIPT FLUSH")
        .is_some_and(|r| r.starts_with("+OK")));
    assert_eq!(
        lim.check_request(ips[1], T0 + SEC)
            .await
            .expect("node 1")
            .reason(),
        None
    );
    assert_eq!(
        lim.check_request(ips[1], T0 + SEC)
            .await
            .expect("node 1")
            .reason(),
        Some(Reason::RateLimited)
    );
    assert!(lim.check_request(ips[2], T0 + SEC).await.is_ok(), "node 2");
    let r = lim.check_request(ips[0], T0 + SEC).await;
    assert!(
        matches!(r, Err(FleetError::Timeout(_) | FleetError::Redis(_))),
        "node 0 is dead: {r:?}"
    );
    let health = lim.nodes();
    let port0 = cluster.node(0).port();
    for n in &health {
        let dead = n.addr.ends_with(&format!(":{port0}"));
        assert_eq!(n.up, !dead, "{health:?}");
        assert_eq!(n.outages, u64::from(dead), "{health:?}");
    }
    assert!(lim.any_node_down());
    assert!(lim.on_down_node(ips[0]) && !lim.on_down_node(ips[1]));
    // The holds of the live masters are still listed.
    assert!(lim.ban(ips[2], T0 + SEC).await.expect("ban on node 2"));
    let holds = lim.bans(T0 + SEC).await.expect("bans without node 0");
    assert_eq!(
        holds.iter().map(|h| h.addr).collect::<Vec<_>>(),
        vec![lim.addr(ips[2])],
        "{holds:?}"
    );
    // Back with its cluster config file (empty: persistence is off).
    cluster.restart(0).expect("restart node 0");
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while lim.any_node_down() {
        assert!(
            Instant::now() < deadline,
            "node 0 not back: {:?}",
            lim.nodes()
        );
        let _ = lim.refresh_nodes().await;
        lim.probe_nodes().await;
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert!(lim
        .check_request(ips[0], T0 + 2 * SEC)
        .await
        .expect("back")
        .is_allowed());
    assert!(lim.nodes().iter().all(|n| n.up), "{:?}", lim.nodes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_with_a_master_already_dead() {
    let Some(mut cluster) = RedisCluster::start_or_skip("connects_with_a_master_already_dead")
    else {
        return;
    };
    let probe = limiter(&cluster, Config::default(), "late").await;
    let ips = ips_per_node(&cluster, &probe);
    drop(probe);
    cluster.stop(2);
    // Every node's URL given, one of them dead: the others are enough.
    let lim = limiter(&cluster, Config::default(), "late").await;
    assert_eq!(lim.nodes().len(), 3, "{:?}", lim.nodes());
    assert!(lim
        .check_request(ips[0], T0)
        .await
        .expect("node 0")
        .is_allowed());
    assert!(lim
        .check_request(ips[1], T0)
        .await
        .expect("node 1")
        .is_allowed());
    assert!(
        lim.check_request(ips[2], T0).await.is_err(),
        "node 2 is dead"
    );
    let port2 = cluster.node(2).port();
    let down: Vec<String> = lim
        .nodes()
        .into_iter()
        .filter(|n| !n.up)
        .map(|n| n.addr)
        .collect();
    assert_eq!(down, vec![format!("127.0.0.1:{port2}")]);
    cluster.restart(2).expect("restart node 2");
    let deadline = Instant::now() + StdDuration::from_secs(30);
    loop {
        lim.probe_nodes().await;
        if !lim.any_node_down() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 not back: {:?}",
            lim.nodes()
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert!(lim
        .check_request(ips[2], T0)
        .await
        .expect("node 2 back")
        .is_allowed());
}
