//! `/metrics`: the library records through the `metrics` facade; the server
//! installs `metrics-exporter-prometheus` as the process's recorder (a
//! handle to render from, no HTTP listener of its own) and renders the
//! Prometheus text from it. The connection and password-check figures the
//! server keeps itself ([`ServerMetrics`]) are published to the same
//! recorder just before each render.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What the listener and the password checker count (the library's
/// guards count the rest, through the facade).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections closed at accept: `max_connections` reached.
    pub refused_max_connections: AtomicU64,
    /// Connections closed at accept: `max_connections_per_ip` reached.
    pub refused_per_ip: AtomicU64,
    /// Waiting connections closed to make room at `max_connections`.
    pub evicted: AtomicU64,
    /// Connections closed for an incomplete request head.
    pub header_timeouts: AtomicU64,
    /// Keep-alive connections closed for idleness.
    pub idle_timeouts: AtomicU64,
    /// Failed `accept` calls (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Password checks running now.
    pub hashes_running: AtomicU64,
    /// Logins waiting for a password check now.
    pub hashes_waiting: AtomicU64,
    /// Logins answered `503` because the password-check queue was full.
    pub hash_busy: AtomicU64,
    /// Connections each worker thread serves now (by worker number); set
    /// once when the workers start.
    pub worker_connections: OnceLock<Box<[AtomicU64]>>,
    /// Connections a worker accepted and handed to a less busy worker.
    pub handed_over: AtomicU64,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder (once per process; later calls return
/// the same handle). Call it before any guard is built, so the library's
/// series are registered with it from the start.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Another recorder is in place (a process embedding the
            // server): everything goes to it, and `/metrics` stays empty.
            tracing::warn!("a metrics recorder is already installed; /metrics will be empty");
        }
        describe();
        portcullis::metrics::describe();
        handle
    })
}

const CONNECTIONS_OPEN: &str = "portcullis_connections_open";
const ACCEPT_ERRORS: &str = "portcullis_accept_errors_total";
const CHECKS_RUNNING: &str = "portcullis_password_checks_running";
const CHECKS_WAITING: &str = "portcullis_password_checks_waiting";
const CHECKS_BUSY: &str = "portcullis_password_checks_busy_total";
const REFUSED: &str = "portcullis_connections_refused_total";
const TIMED_OUT: &str = "portcullis_connections_timed_out_total";
const WORKER_CONNECTIONS: &str = "portcullis_worker_connections";
const HANDED_OVER: &str = "portcullis_connections_handed_over_total";

fn describe() {
    describe_gauge!(CONNECTIONS_OPEN, "Connections open now.");
    describe_counter!(
        ACCEPT_ERRORS,
        "Failed accept calls (e.g. out of file descriptors)."
    );
    describe_gauge!(CHECKS_RUNNING, "Password checks running now.");
    describe_gauge!(CHECKS_WAITING, "Logins waiting for a password check now.");
    describe_counter!(
        CHECKS_BUSY,
        "Logins answered 503 because the password-check queue was full."
    );
    describe_counter!(REFUSED, "Connections closed at accept, by the cap reached.");
    describe_counter!(
        TIMED_OUT,
        "Connections closed while waiting: read timeout (header, idle) or evicted at max_connections."
    );
    describe_gauge!(
        WORKER_CONNECTIONS,
        "Connections each worker thread serves now."
    );
    describe_counter!(
        HANDED_OVER,
        "Connections a worker accepted and handed to a less busy worker."
    );
}

/// Publish the listener's and the password checker's figures, kept in
/// `m`, to the recorder.
fn publish_server(m: &ServerMetrics) {
    let get = |a: &AtomicU64| a.load(Relaxed);
    gauge!(CONNECTIONS_OPEN).set(get(&m.connections_open) as f64);
    counter!(ACCEPT_ERRORS).absolute(get(&m.accept_errors));
    gauge!(CHECKS_RUNNING).set(get(&m.hashes_running) as f64);
    gauge!(CHECKS_WAITING).set(get(&m.hashes_waiting) as f64);
    counter!(CHECKS_BUSY).absolute(get(&m.hash_busy));
    counter!(REFUSED, "reason" => "max_connections").absolute(get(&m.refused_max_connections));
    counter!(REFUSED, "reason" => "per_ip").absolute(get(&m.refused_per_ip));
    counter!(TIMED_OUT, "phase" => "header").absolute(get(&m.header_timeouts));
    counter!(TIMED_OUT, "phase" => "idle").absolute(get(&m.idle_timeouts));
    counter!(TIMED_OUT, "phase" => "evicted").absolute(get(&m.evicted));
    counter!(HANDED_OVER).absolute(get(&m.handed_over));
    for (i, n) in m.worker_connections.get().into_iter().flatten().enumerate() {
        gauge!(WORKER_CONNECTIONS, "worker" => i.to_string()).set(get(n) as f64);
    }
}

/// The Prometheus text: everything recorded, after publishing the
/// server's own figures from `m`. The caller asks the engine for its
/// status first, which publishes the table gauges.
pub fn render(m: &ServerMetrics) -> String {
    let handle = install();
    publish_server(m);
    handle.render()
}

/// Lock denials shown as what they look like with `login.reveal_lock =
/// false`: wrong passwords. The open `/metrics` must not tell a lock from
/// a miss, so the service's `portcullis_decisions_total` samples for
/// `pair_locked` and `ip_locked` are left out and counted as what a
/// miss counts: an allowed attempt (`outcome="allow"`) and a failed login
/// (`portcullis_login_failures_total`). A policy's series
/// (`policy="..."`) are left as they are (request quotas never lock). The
/// log jails' lock counts go too ([`crate::jail_series::hide_locks`]). The
/// true figures are shown to a scrape with the metrics or admin token.
pub fn hide_locks(text: &str) -> String {
    const DECISIONS: &str = "portcullis_decisions_total{";
    let locked = |l: &str| {
        l.starts_with(DECISIONS)
            && !l.contains("policy=")
            && (l.contains("reason=\"pair_locked\"") || l.contains("reason=\"ip_locked\""))
    };
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let hidden: f64 = text.lines().filter(|l| locked(l)).filter_map(value).sum();
    let mut out = String::with_capacity(text.len());
    for line in text.lines().filter(|l| !locked(l)) {
        let allow = line.starts_with(DECISIONS)
            && !line.contains("policy=")
            && line.contains("outcome=\"allow\"");
        let failures = line.starts_with("portcullis_login_failures_total ");
        match (allow || failures, line.rsplit_once(' ')) {
            (true, Some((head, v))) => {
                let v = v.parse::<f64>().unwrap_or(0.0) + hidden;
                out.push_str(&format!("{head} {v}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    crate::jail_series::hide_locks(&out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn locks_are_shown_as_misses() {
        let text = "# TYPE portcullis_decisions_total counter\n\
portcullis_decisions_total{outcome=\"allow\",reason=\"\"} 5\n\
portcullis_decisions_total{outcome=\"deny\",reason=\"pair_locked\"} 2\n\
portcullis_decisions_total{outcome=\"deny\",reason=\"ip_locked\"} 1\n\
portcullis_decisions_total{outcome=\"deny\",reason=\"rate_limited\"} 4\n\
portcullis_decisions_total{outcome=\"deny\",reason=\"ip_locked\",policy=\"api\"} 0\n\
portcullis_login_failures_total 3\n";
        let out = super::hide_locks(text);
        assert!(!out.contains("pair_locked"), "{out}");
        assert!(!out.contains("ip_locked\"} "), "{out}");
        assert!(out.contains("reason=\"\"} 8\n"), "{out}");
        assert!(out.contains("portcullis_login_failures_total 6\n"), "{out}");
        assert!(out.contains("rate_limited\"} 4\n"), "{out}");
    }
}
