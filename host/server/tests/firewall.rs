//! `[firewall] kind = "nftables"` against the real kernel, each test in
//! network namespaces it creates (never the host's own ruleset): a held
//! address gets no SYN-ACK while its neighbour connects, an unban restores
//! it, a manual `/16` and an IPv6 `/64` are enforced, 10 000 bans go in as
//! one nft transaction, the sets match the store after `kill -9` and a
//! restart and after a reload, and a ban on one fleet server reaches the
//! other's kernel through Redis. Needs root, `ip` and `nft` (see
//! `common::netns`: skipped outside CI without them).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::netns::{connects, Netns};
use common::raw::{Answer, Raw};
use common::TOKEN;

const PORT: u16 = 8080;
const PROBE: Duration = Duration::from_millis(1500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Rules that block an address on its third request in a window.
fn env(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("PORTCULLIS_FIREWALL__KIND", "nftables".into()),
        ("PORTCULLIS_REQUESTS__MAX_REQUESTS", "2".into()),
        ("PORTCULLIS_REQUESTS__BLOCK_AFTER", "1".into()),
    ];
    for (k, x) in extra {
        let k: &'static str = Box::leak(k.to_string().into_boxed_str());
        v.push((k, x.to_string()));
    }
    v
}

/// Poll `f` until it holds (10 s at most: a generous bound, not a timing
/// claim); how long it took.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Three requests from `from` (inside the namespace): allowed, allowed,
/// refused with 429, which blocks it.
fn get_blocked(from: IpAddr, to: SocketAddr) {
    let got: Vec<u16> = (0..3)
        .map(|_| Raw::get("/").send(from, to).unwrap().status)
        .collect();
    assert_eq!(got, [200, 200, 429], "{from}");
}

fn admin(method: &str, path: &str, body: Option<serde_json::Value>, to: SocketAddr) -> Answer {
    let mut r = Raw::new(method, path.as_bytes()).bearer(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send(ip("127.0.0.1"), to).unwrap()
}

/// The timeout nft lists for `elem` in `listing` (`nft list set`), in
/// seconds; none for an element without one.
fn timeout_of(listing: &str, elem: &str) -> Option<u64> {
    let rest = listing.split(&format!("{elem} timeout ")).nth(1)?;
    let t = rest.split([' ', ',', '}']).next()?;
    Some(humantime::parse_duration(t).ok()?.as_secs())
}

/// Whether `elem` holds in `listing` for about `secs` (its end is rounded
/// up to whole seconds when it goes in, and a little time passes first).
fn holds_for(listing: &str, elem: &str, secs: u64) -> bool {
    timeout_of(listing, elem).is_some_and(|t| t <= secs && t + 30 >= secs)
}

/// The value of counter `name` on `/metrics`.
fn metric(to: SocketAddr, name: &str) -> u64 {
    let text = admin("GET", "/metrics", None, to).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn held_addresses_get_no_syn_ack_until_lifted() {
    let Some(ns) = Netns::create_or_skip("held_addresses_get_no_syn_ack_until_lifted") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    // Table and set names are the operator's.
    let env = env(&[
        ("PORTCULLIS_FIREWALL__TABLE", "guard"),
        ("PORTCULLIS_FIREWALL__SET_V4", "bad4"),
    ]);
    let s = ns.serve(
        sock(&format!("127.0.0.1:{PORT}")),
        &d.path().join("pc.db"),
        &env,
    );
    let v4 = sock(&format!("127.0.0.1:{PORT}"));
    let listed = ns.nft(&["list", "table", "inet", "guard"]);
    println!("{listed}");
    assert!(listed.contains("ip saddr @bad4 counter"), "{listed}");

    // A block by the rules: dropped in the kernel, its neighbour is not.
    ns.run(|| get_blocked(ip("127.0.0.2"), v4));
    wait_for("127.0.0.2 in bad4", || {
        ns.elements("guard", "bad4") == ["127.0.0.2"]
    });
    let set = ns.nft(&["list", "set", "inet", "guard", "bad4"]);
    assert!(
        holds_for(&set, "127.0.0.2", 900),
        "the block's time left: {set}"
    );
    ns.run(|| {
        assert!(
            !connects(ip("127.0.0.2"), v4, PROBE),
            "no SYN-ACK for 127.0.0.2"
        );
        assert!(
            connects(ip("127.0.0.3"), v4, PROBE),
            "the neighbour connects"
        );
    });

    // Unban through the admin API: the kernel lets it in again.
    let a = ns.run(|| admin("DELETE", "/admin/bans/127.0.0.2", None, v4));
    assert_eq!(a.status, 200, "{}", a.text());
    wait_for("bad4 empty", || ns.elements("guard", "bad4").is_empty());
    ns.run(|| assert!(connects(ip("127.0.0.2"), v4, PROBE)));

    // A manual /16.
    let a = ns.run(|| {
        admin(
            "POST",
            "/admin/bans",
            Some(serde_json::json!({"ip": "127.5.0.0/16", "reason": "scanner"})),
            v4,
        )
    });
    assert_eq!(a.status, 201, "{}", a.text());
    wait_for("the /16 in range4", || {
        ns.elements("guard", "range4") == ["127.5.0.0/16"]
    });
    ns.run(|| {
        assert!(!connects(ip("127.5.200.1"), v4, PROBE), "inside the /16");
        assert!(connects(ip("127.6.0.1"), v4, PROBE), "outside it");
    });

    ns.run(|| {
        assert!(metric(v4, "portcullis_firewall_reconciles_total") >= 1);
        assert_eq!(metric(v4, "portcullis_firewall_errors_total"), 0);
    });
    println!("{}", ns.nft(&["list", "table", "inet", "guard"]));
    drop(s);
}

#[test]
fn an_ipv6_block_is_dropped_for_its_whole_64() {
    let Some(ns) = Netns::create_or_skip("an_ipv6_block_is_dropped_for_its_whole_64") else {
        return;
    };
    for a in ["fd00:1:2:3::1/64", "fd00:1:2:3::2/64", "fd00:1:2:4::1/64"] {
        ns.ip(&["addr", "add", a, "dev", "lo", "nodad"]).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let s = ns.serve(
        sock(&format!("[::1]:{PORT}")),
        &d.path().join("pc.db"),
        &env(&[]),
    );
    // Not an address of the /64 about to be blocked: on loopback the
    // server's answers pass the input hook too.
    let v6 = sock(&format!("[::1]:{PORT}"));
    // IPv6: a block of one address is its /64's.
    ns.run(|| get_blocked(ip("fd00:1:2:3::1"), v6));
    wait_for("the /64 in addr6", || {
        ns.elements("portcullis", "addr6") == ["fd00:1:2:3::/64"]
    });
    ns.run(|| {
        assert!(!connects(ip("fd00:1:2:3::2"), v6, PROBE), "same /64");
        assert!(connects(ip("fd00:1:2:4::1"), v6, PROBE), "another /64");
    });
    ns.run(|| {
        let a = Raw::new("DELETE", b"/admin/bans/fd00:1:2:3::1")
            .bearer(TOKEN)
            .send(ip("::1"), v6)
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
    });
    wait_for("addr6 empty", || {
        ns.elements("portcullis", "addr6").is_empty()
    });
    ns.run(|| assert!(connects(ip("fd00:1:2:3::2"), v6, PROBE)));
    drop(s);
}

#[test]
fn sets_match_the_store_after_kill_9_and_after_a_reload() {
    let Some(ns) = Netns::create_or_skip("sets_match_the_store_after_kill_9") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("pc.db");
    let env = env(&[]);
    let to = sock(&format!("127.0.0.1:{PORT}"));
    let s = ns.serve(to, &db, &env);
    ns.run(|| get_blocked(ip("127.0.0.2"), to));
    let a = ns.run(|| {
        admin(
            "POST",
            "/admin/bans",
            Some(serde_json::json!({"ip": "10.1.0.0/16", "reason": "x"})),
            to,
        )
    });
    assert_eq!(a.status, 201, "{}", a.text());
    wait_for("both held in the kernel", || {
        ns.elements("portcullis", "addr4") == ["127.0.0.2"]
            && ns.elements("portcullis", "range4") == ["10.1.0.0/16"]
    });
    s.kill9();
    // While it is down the kernel's sets are changed behind its back.
    ns.nft(&[
        "add",
        "element",
        "inet",
        "portcullis",
        "addr4",
        "{ 127.9.9.9 }",
    ]);
    ns.nft(&[
        "delete",
        "element",
        "inet",
        "portcullis",
        "range4",
        "{ 10.1.0.0/16 }",
    ]);
    let s = ns.serve(to, &db, &env);
    // Rebuilt before it listens.
    assert_eq!(ns.elements("portcullis", "addr4"), ["127.0.0.2"]);
    assert_eq!(ns.elements("portcullis", "range4"), ["10.1.0.0/16"]);
    let drift = ns.run(|| metric(to, "portcullis_firewall_drift_total"));
    assert_eq!(drift, 2, "one stray, one missing");

    // A reload rebuilds them too.
    ns.nft(&[
        "add",
        "element",
        "inet",
        "portcullis",
        "addr4",
        "{ 127.9.9.8 }",
    ]);
    let a = ns.run(|| admin("POST", "/admin/reload", None, to));
    assert_eq!(a.status, 200, "{}", a.text());
    wait_for("the stray gone", || {
        ns.elements("portcullis", "addr4") == ["127.0.0.2"]
    });
    assert!(ns.run(|| metric(to, "portcullis_firewall_reconciles_total")) >= 2);
    drop(s);
}

/// A store holding `n` bans (10.0.0.0/8 addresses), written through the
/// library as a server would.
async fn store_with_bans(db: &Path, n: u32) {
    use portcullis::{Guard, Limiter, LimiterOptions};
    let (store, loaded) = portcullis::sqlite::SqliteStore::open(db).unwrap();
    let limiter = Limiter::new(
        portcullis::Config::default(),
        LimiterOptions {
            seed: Some(loaded.seed),
            ..LimiterOptions::default()
        },
    )
    .unwrap();
    let store = std::sync::Arc::new(store);
    let guard = Guard::new(std::sync::Arc::new(limiter), Some(store.clone()));
    let now = portcullis::clock::read();
    for i in 0..n {
        let o = guard.limiter().ban_at(
            IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            now,
        );
        assert!(o.decision);
    }
    guard.try_snapshot().await.unwrap();
    store.close().unwrap();
}

#[tokio::test]
async fn ten_thousand_bans_go_in_as_one_transaction() {
    let Some(ns) = Netns::create_or_skip("ten_thousand_bans_go_in_as_one_transaction") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("pc.db");
    store_with_bans(&db, 10_000).await;
    // nft through a wrapper that notes each call.
    let calls = d.path().join("calls");
    let wrapper = d.path().join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec nft \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .unwrap();
    let wrapper = wrapper.display().to_string();
    let env = env(&[("PORTCULLIS_FIREWALL__NFT", &wrapper)]);
    let s = ns.serve(sock(&format!("127.0.0.1:{PORT}")), &db, &env);
    assert_eq!(ns.elements("portcullis", "addr4").len(), 10_000);
    let log = std::fs::read_to_string(&calls).unwrap();
    let batches: Vec<&str> = log.lines().filter(|l| l.contains("-f -")).collect();
    // One to create the table, one with the 10 000 elements.
    assert_eq!(batches.len(), 2, "{log}");
    let rebuilt = s
        .early
        .iter()
        .find(|l| l.contains("sets rebuilt from the store"))
        .expect("the rebuild is logged");
    assert!(rebuilt.contains("put=10000"), "{rebuilt}");
    let ms = rebuilt
        .split("ms=")
        .nth(1)
        .and_then(|r| r.split(' ').next());
    println!(
        "10 000 bans in one nft transaction: {} ms (whole call, JSON included)",
        ms.unwrap_or("?")
    );
    drop(s);
}

/// `redis-server` in a namespace, on `bind`.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_in(ns: &Netns, bind: &str, port: u16) -> Option<Redis> {
    let child = Command::new("/usr/sbin/ip")
        .args(["netns", "exec", &ns.name, "redis-server"])
        .args(["--bind", bind, "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Redis(child);
    let to = sock(&format!("{bind}:{port}"));
    wait_for("redis answers", || {
        ns.run(|| std::net::TcpStream::connect_timeout(&to, PROBE).is_ok())
    });
    Some(r)
}

#[test]
fn a_ban_on_one_fleet_server_reaches_the_others_kernel() {
    let test = "a_ban_on_one_fleet_server_reaches_the_others_kernel";
    let Some(a) = Netns::create_or_skip(test) else {
        return;
    };
    let b = Netns::create_or_skip(test).unwrap();
    if common::peers::peer_binary("redis-server", test).is_none() {
        return;
    }
    // A veth between the two: A 10.77.0.1 (and the attacker's .3), B .2.
    common::netns::link(&a, &["10.77.0.1/24", "10.77.0.3/24"], &b, &["10.77.0.2/24"]);
    let _redis = redis_in(&a, "10.77.0.1", 6379).expect("redis-server runs");
    let d = tempfile::tempdir().unwrap();
    let env = env(&[
        ("PORTCULLIS_STORE__KIND", "redis"),
        ("PORTCULLIS_STORE__REDIS_URL", "redis://10.77.0.1:6379/"),
        // Only the push path can be this quick.
        ("PORTCULLIS_FIREWALL__RECONCILE_INTERVAL", "10m"),
    ]);
    let (ta, tb) = (sock("10.77.0.1:8080"), sock("10.77.0.2:8080"));
    let sa = a.serve(ta, &d.path().join("a.db"), &env);
    let sb = b.serve(tb, &d.path().join("b.db"), &env);

    // Blocked by A's rules: in B's kernel at once.
    a.run(|| get_blocked(ip("10.77.0.3"), ta));
    let took = wait_for("10.77.0.3 in B's set", || {
        b.elements("portcullis", "addr4") == ["10.77.0.3"]
    });
    // Measured, not asserted (tests make no timing claims); with the
    // reconcile 10 minutes away only the fleet channel can have done it.
    println!(
        "a block on A reached B's kernel set in {} ms",
        took.as_millis()
    );
    a.run(|| {
        assert!(
            !connects(ip("10.77.0.3"), tb, PROBE),
            "B drops the attacker"
        );
        assert!(
            connects(ip("10.77.0.1"), tb, PROBE),
            "and lets its neighbour in"
        );
    });

    // Lifted on A: lifted in B's kernel.
    let r = a.run(|| {
        admin(
            "DELETE",
            "/admin/bans/10.77.0.3",
            None,
            sock("10.77.0.1:8080"),
        )
    });
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("B's set empty", || {
        b.elements("portcullis", "addr4").is_empty()
    });
    a.run(|| assert!(connects(ip("10.77.0.3"), tb, PROBE)));

    // A manual range on B reaches A's kernel.
    let r = b.run(|| {
        Raw::new("POST", b"/admin/bans")
            .bearer(TOKEN)
            .json(&serde_json::json!({"ip": "10.78.0.0/16", "reason": "fleet"}))
            .send(ip("10.77.0.2"), tb)
            .unwrap()
    });
    assert_eq!(r.status, 201, "{}", r.text());
    let took = wait_for("the range in A's set", || {
        a.elements("portcullis", "range4") == ["10.78.0.0/16"]
    });
    println!(
        "a manual range on B reached A's kernel set in {} ms",
        took.as_millis()
    );
    drop((sa, sb));
}

/// `portcullis serve` with `env` until it exits (it must not start): its
/// exit status and standard error.
fn refused(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_nft_or_its_permission_the_server_does_not_start() {
    let d = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let serve = |db: &str| {
        let mut c = Command::new(common::BIN);
        c.arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("PORTCULLIS_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("PORTCULLIS_STORE__PATH", d.path().join(db))
            .env("PORTCULLIS_FIREWALL__KIND", "nftables");
        c
    };
    let (status, err) = refused(serve("a.db").env("PORTCULLIS_FIREWALL__NFT", "/nonexistent/nft"));
    assert!(!status.success());
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(
            "portcullis: firewall.kind = \"nftables\": cannot run \"/nonexistent/nft\""
        ),
        "{err}"
    );
    // Without CAP_NET_ADMIN (as nobody): one line naming the setting. Only
    // root can switch to nobody to show it.
    if !Netns::is_root()
        || !Path::new("/usr/bin/setpriv").exists()
        || Command::new("nft").arg("--version").output().is_err()
    {
        eprintln!("SKIP the permission half: needs root, setpriv and nft");
        return;
    }
    Command::new("chmod")
        .arg("777")
        .arg(d.path())
        .status()
        .unwrap();
    let c = serve("b.db");
    let args: Vec<String> = std::iter::once(c.get_program().to_string_lossy().into_owned())
        .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let envs: Vec<(String, String)> = c
        .get_envs()
        .filter_map(|(k, v)| {
            Some((
                k.to_string_lossy().into_owned(),
                v?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    let mut c = Command::new("/usr/bin/setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(&args)
        .env_clear()
        .envs(envs);
    let (status, err) = refused(&mut c);
    assert!(!status.success());
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("portcullis: firewall.kind = \"nftables\": creating the table: nft: ")
            && last.contains("Operation not permitted")
            && last.ends_with(
                "(nft needs CAP_NET_ADMIN: run portcullis as root or give it that capability)"
            ),
        "{err}"
    );
}

#[test]
fn shadow_mode_mirrors_manual_decisions_only() {
    let Some(ns) = Netns::create_or_skip("shadow_mode_mirrors_manual_decisions_only") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let to = sock(&format!("127.0.0.1:{PORT}"));
    let s = ns.serve(
        to,
        &d.path().join("pc.db"),
        &env(&[("PORTCULLIS_REQUESTS__SHADOW", "true")]),
    );
    ns.run(|| {
        for _ in 0..3 {
            // Would be blocked on the third: shadow lets it through.
            assert_eq!(Raw::get("/").send(ip("127.0.0.2"), to).unwrap().status, 200);
        }
        let a = admin(
            "POST",
            "/admin/bans",
            Some(serde_json::json!({"ip": "127.5.0.0/16", "reason": "x"})),
            to,
        );
        assert_eq!(a.status, 201, "{}", a.text());
    });
    // The range was noted after the shadowed block: once it is in, the
    // block would be too.
    wait_for("the range in range4", || {
        ns.elements("portcullis", "range4") == ["127.5.0.0/16"]
    });
    assert!(ns.elements("portcullis", "addr4").is_empty());
    ns.run(|| assert!(connects(ip("127.0.0.2"), to, PROBE)));
    drop(s);
}

#[test]
fn an_address_locked_by_login_failures_is_dropped() {
    let Some(ns) = Netns::create_or_skip("an_address_locked_by_login_failures_is_dropped") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let to = sock(&format!("127.0.0.1:{PORT}"));
    let env = env(&[
        ("PORTCULLIS_LOGIN__MAX_FAILURES", "2"),
        ("PORTCULLIS_LOGIN__LOCK_FOR", "2m"),
        ("PORTCULLIS_PENALTY__BASE", "10ms"),
        ("PORTCULLIS_PENALTY__MAX", "10ms"),
    ]);
    let s = ns.serve(to, &d.path().join("pc.db"), &env);
    let wrong = serde_json::json!({"username": "demo", "password": "wrong"});
    ns.run(|| {
        for _ in 0..2 {
            let a = Raw::new("POST", b"/login")
                .json(&wrong)
                .send(ip("127.0.0.4"), to)
                .unwrap();
            assert_eq!(a.status, 401, "{}", a.text());
        }
    });
    // The failure that locked it puts it in the kernel, with the lock's
    // time left.
    wait_for("127.0.0.4 in addr4", || {
        ns.elements("portcullis", "addr4") == ["127.0.0.4"]
    });
    let set = ns.nft(&["list", "set", "inet", "portcullis", "addr4"]);
    assert!(holds_for(&set, "127.0.0.4", 120), "{set}");
    ns.run(|| {
        assert!(!connects(ip("127.0.0.4"), to, PROBE));
        assert!(connects(ip("127.0.0.5"), to, PROBE));
    });
    drop(s);
}

#[test]
fn a_range_inside_a_lifted_one_takes_its_place() {
    let Some(ns) = Netns::create_or_skip("a_range_inside_a_lifted_one_takes_its_place") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let to = sock(&format!("127.0.0.1:{PORT}"));
    let s = ns.serve(to, &d.path().join("pc.db"), &env(&[]));
    ns.run(|| {
        for (range, time) in [("127.5.0.0/16", None), ("127.5.3.0/24", Some("10m"))] {
            let body = serde_json::json!({"ip": range, "reason": "x", "for": time});
            let a = admin("POST", "/admin/bans", Some(body), to);
            assert_eq!(a.status, 201, "{}", a.text());
        }
    });
    // nft refuses overlapping intervals: only the wider range goes in.
    wait_for("the /16 alone", || {
        ns.elements("portcullis", "range4") == ["127.5.0.0/16"]
    });
    let a = ns.run(|| admin("DELETE", "/admin/bans/127.5.0.0%2F16", None, to));
    assert_eq!(a.status, 200, "{}", a.text());
    wait_for("the /24 in its place", || {
        ns.elements("portcullis", "range4") == ["127.5.3.0/24"]
    });
    let set = ns.nft(&["list", "set", "inet", "portcullis", "range4"]);
    assert!(holds_for(&set, "127.5.3.0/24", 600), "{set}");
    ns.run(|| {
        assert!(!connects(ip("127.5.3.1"), to, PROBE));
        assert!(connects(ip("127.5.4.1"), to, PROBE));
        assert_eq!(metric(to, "portcullis_firewall_errors_total"), 0);
    });
    drop(s);
}
