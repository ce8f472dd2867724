//! `/metrics` rendered by the Prometheus recorder the server installs: the
//! library's series under today's names, the `/admin` and `/metrics`
//! tables out of them (the series count only the service, as before), and
//! the status JSON rendered from the typed `Status`.

mod common;

use std::collections::BTreeSet;

use common::{admin_json, Server, TOKEN};

async fn metrics_text(s: &Server) -> String {
    let r = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    r.text().await.unwrap()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_keep_their_names_and_count_only_the_service() {
    let d = tempfile::tempdir().unwrap();
    let s = Server::start(
        &d.path().join("p.db"),
        &[
            ("PORTCULLIS_PENALTY__BASE", "10ms"),
            ("PORTCULLIS_PENALTY__MAX", "50ms"),
        ],
    );
    let client = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(s.url("/")).send().await.unwrap().status(), 200);
    }
    for _ in 0..2 {
        let r = client
            .get(s.url("/admin/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = metrics_text(&s).await;
    let allow = "portcullis_decisions_total{outcome=\"allow\",reason=\"\"}";
    assert_eq!(sample(&m, allow), Some(3.0), "only the service's:\n{m}");
    assert!(!m.contains("policy="), "no side-table series:\n{m}");
    assert_eq!(
        m.lines()
            .filter(|l| l.starts_with("portcullis_decisions_total{"))
            .count(),
        9,
        "allow and each of the 8 reasons, once:\n{m}"
    );
    for line in [
        "# TYPE portcullis_decisions_total counter",
        "# HELP portcullis_decisions_total Decisions by outcome and reason.",
        "# TYPE portcullis_table_entries gauge",
        "# TYPE portcullis_connections_open gauge",
        "portcullis_decisions_total{outcome=\"deny\",reason=\"banned\"} 0",
        "portcullis_login_failures_total 0",
        "portcullis_store_errors_total 0",
        "portcullis_fail_closed_total 0",
        "portcullis_evictions_total{kind=\"dead\"} 0",
        "portcullis_evictions_total{kind=\"live\"} 0",
        "portcullis_password_checks_busy_total 0",
        "portcullis_connections_refused_total{reason=\"per_ip\"} 0",
        "portcullis_connections_timed_out_total{phase=\"idle\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line:?} missing:\n{m}");
    }
    assert!(
        !m.contains("portcullis_fallback_active"),
        "fleet only:\n{m}"
    );
    let status = admin_json(&s, "/admin/status").await;
    let entries = status["entries"].as_u64().unwrap();
    assert!(entries >= 1);
    assert_eq!(
        sample(&m, "portcullis_table_entries"),
        Some(entries as f64),
        "{m}"
    );
    assert_eq!(
        sample(&m, "portcullis_table_capacity"),
        status["capacity"].as_f64(),
        "{m}"
    );

    // A wrong password counts once, in the main series.
    let r = client
        .post(s.url("/login"))
        .json(&serde_json::json!({"username": "demo", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let m = metrics_text(&s).await;
    assert_eq!(
        sample(&m, "portcullis_login_failures_total"),
        Some(1.0),
        "{m}"
    );

    // The status JSON keeps its fields, rendered from the typed status.
    let status = admin_json(&s, "/admin/status").await;
    let keys: BTreeSet<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let want: BTreeSet<&str> = [
        "admin_max_entries",
        "backend",
        "bans",
        "capacity",
        "entries",
        "evictions",
        "manual_bans",
        "max_entries",
        "purged",
        "store",
        "store_errors",
        "store_kind",
        "table_full",
        "uptime_s",
        "version",
    ]
    .into();
    assert_eq!(keys, want);
    assert_eq!(status["backend"], "local");
    assert!(status["store"].as_str().unwrap().ends_with("p.db"));
    let ui = admin_json(&s, "/admin/ui/data").await;
    assert_eq!(ui["store"]["backend"], "local");
    assert!(ui["store"]["fallback_active"].is_null());
    assert_eq!(ui["store"]["errors"], 0);
    assert_eq!(ui["table"]["capacity"], status["capacity"]);
    assert!(ui["table"]["entries"].as_u64().unwrap() >= 1);
}
