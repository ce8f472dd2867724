//! What a guard counts reaches the application's own `metrics` recorder,
//! under the names and labels `/metrics` has always used; a second guard
//! made with `Metrics::for_policy` carries its `policy` label and one made
//! with `Metrics::unexported` records nothing, both leaving the main series
//! alone; `Engine::status` is typed and publishes the
//! table gauges.

use std::net::IpAddr;
use std::sync::Arc;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use portcullis::metrics::Metrics;
use portcullis::Engine;
use portcullis::{Config, Decision};
use portcullis::{Guard, Limiter, LimiterOptions};

fn guard(c: Config) -> Guard {
    let opts = LimiterOptions {
        max_entries: 1000,
        shards: 4,
        seed: None,
    };
    Guard::new(Arc::new(Limiter::new(c, opts).unwrap()), None)
}

type Row = (String, Vec<(String, String)>, DebugValue);

fn rows(rec: &DebuggingRecorder) -> Vec<Row> {
    rec.snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let key = k.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.name().to_string(), labels, v)
        })
        .collect()
}

/// The value of `name{labels}` (labels in order), if recorded.
fn value(rows: &[Row], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    rows.iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && l.iter().zip(labels).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        })
        .map(|(_, _, v)| match v {
            DebugValue::Counter(c) => *c as f64,
            DebugValue::Gauge(g) => g.0,
            DebugValue::Histogram(_) => f64::NAN,
        })
}

#[test]
fn a_users_recorder_sees_decisions_logins_and_table_gauges() {
    let rec = DebuggingRecorder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Config::default();
    c.requests.max_requests = 2;
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let (denied, status) = metrics::with_local_recorder(&rec, || {
        rt.block_on(async {
            let g = guard(c.clone());
            let side = guard(c.clone()).with_metrics(Metrics::for_policy("admin"));
            let quiet = guard(c.clone()).with_metrics(Metrics::unexported());
            assert!(!quiet.metrics().exported());
            assert!(quiet.check_request(ip).await.is_allowed());
            drop(quiet.login_failed("carol", ip).await);
            quiet.record_table_metrics();
            assert_eq!(quiet.metrics().allowed(), 1, "counted in process");
            assert_eq!(quiet.metrics().login_failures(), 1);
            assert!(g.check_request(ip).await.is_allowed());
            assert!(g.check_request(ip).await.is_allowed());
            let Decision::Deny { reason, .. } = g.check_request(ip).await else {
                panic!("the third request is over the quota of 2");
            };
            drop(g.login_failed("alice", ip).await);
            g.login_succeeded("bob", ip).await;
            assert!(side.check_request(ip).await.is_allowed());
            assert_eq!(g.metrics().allowed(), 2, "in-process totals kept too");
            assert_eq!(side.metrics().policy(), Some("admin"));
            (reason, Engine::status(&g).await)
        })
    });
    let r = rows(&rec);
    let decisions = "portcullis_decisions_total";
    assert_eq!(
        value(&r, decisions, &[("outcome", "allow"), ("reason", "")]),
        Some(2.0),
        "the side guards' allows are not in the main series: {r:?}"
    );
    assert_eq!(
        value(
            &r,
            decisions,
            &[("outcome", "deny"), ("reason", denied.as_str())]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &r,
            decisions,
            &[("outcome", "allow"), ("reason", ""), ("policy", "admin")]
        ),
        Some(1.0)
    );
    // Every reason is registered at zero before it happens.
    assert_eq!(
        value(&r, decisions, &[("outcome", "deny"), ("reason", "banned")]),
        Some(0.0)
    );
    assert_eq!(
        value(&r, "portcullis_login_failures_total", &[]),
        Some(1.0),
        "the unexported guard's failure is not recorded"
    );
    assert_eq!(
        value(&r, "portcullis_login_successes_total", &[]),
        Some(1.0)
    );
    assert_eq!(value(&r, "portcullis_store_errors_total", &[]), Some(0.0));
    assert_eq!(value(&r, "portcullis_fallbacks_total", &[]), Some(0.0));
    assert_eq!(
        value(&r, "portcullis_fallbacks_total", &[("policy", "admin")]),
        None,
        "a policy's series appear only when they happen"
    );
    // The typed status, and the gauges it published.
    assert_eq!(status.backend, "local");
    assert_eq!(status.store, None);
    assert_eq!(status.fleet, None);
    assert_eq!(status.store_errors, 0);
    assert!(status.entries >= 1 && status.entries <= status.capacity);
    assert_eq!(
        value(&r, "portcullis_table_entries", &[]),
        Some(status.entries as f64)
    );
    assert_eq!(
        value(&r, "portcullis_table_capacity", &[]),
        Some(status.capacity as f64)
    );
    for kind in ["dead", "live"] {
        let v = value(&r, "portcullis_evictions_total", &[("kind", kind)]);
        assert_eq!(v, Some(0.0), "{kind}");
    }
    assert_eq!(value(&r, "portcullis_evictions_total", &[]), None);
    assert_eq!(value(&r, "portcullis_table_full_total", &[]), Some(0.0));
}

/// Evictions are published by kind: fresh addresses after the window
/// reclaim dead entries (`kind="dead"`), more fresh addresses in a table
/// full of live ones evict live entries (`kind="live"`); the two series of
/// `portcullis_evictions_total` sum to every eviction.
#[test]
fn evictions_are_published_dead_and_live_apart() {
    use portcullis::{Duration, Instant};
    let rec = DebuggingRecorder::new();
    let (stats, r) = metrics::with_local_recorder(&rec, || {
        let opts = LimiterOptions {
            max_entries: 200,
            shards: 1,
            seed: None,
        };
        let g = Guard::new(
            Arc::new(Limiter::new(Config::default(), opts).unwrap()),
            None,
        );
        let l = g.limiter();
        let cap = l.capacity() as u32;
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let t0 = Instant::from_secs(1000);
        for n in 0..cap {
            assert!(l.check_request_at(ip(n), t0).decision.is_allowed());
        }
        assert_eq!(l.stats().evictions, 0);
        // A window later every entry is dead: the next `cap` fresh
        // addresses reclaim them.
        let t1 = t0 + Duration::from_secs(61);
        for n in cap..2 * cap {
            assert!(l.check_request_at(ip(n), t1).decision.is_allowed());
        }
        let s = l.stats();
        assert_eq!((s.evicted_dead, s.evicted_live), (u64::from(cap), 0));
        // Now the table is full of live entries: each new key evicts one.
        for n in 2 * cap..2 * cap + 10 {
            assert!(l.check_request_at(ip(n), t1).decision.is_allowed());
        }
        g.record_table_metrics();
        (l.stats(), rows(&rec))
    });
    assert_eq!(stats.evicted_live, 10);
    assert_eq!(stats.evictions, stats.evicted_dead + stats.evicted_live);
    let by = |kind| value(&r, "portcullis_evictions_total", &[("kind", kind)]);
    assert_eq!(by("dead"), Some(stats.evicted_dead as f64));
    assert_eq!(by("live"), Some(10.0));
}
