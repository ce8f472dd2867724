//! Counters, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use portcullis_core::{Decision, Reason};

/// Counters a guard keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: [AtomicU64; Reason::ALL.len()],
    /// Store write failures.
    pub store_errors: AtomicU64,
    /// Decisions served by the local fallback while the fleet store was down.
    pub fallbacks: AtomicU64,
    /// Decisions denied because the fleet store was down and `fail_closed` is set.
    pub fail_closed: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
    /// Successful logins.
    pub login_successes: AtomicU64,
}

fn index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

impl Metrics {
    /// Count one decision.
    pub fn count(&self, d: &Decision) {
        match d {
            Decision::Allow { .. } => self.allowed.fetch_add(1, Relaxed),
            Decision::Deny { reason, .. } => self.denied[index(*reason)].fetch_add(1, Relaxed),
        };
    }

    /// Allowed decisions so far.
    pub fn allowed(&self) -> u64 {
        self.allowed.load(Relaxed)
    }

    /// Denied decisions so far for `reason`.
    pub fn denied(&self, reason: Reason) -> u64 {
        self.denied[index(reason)].load(Relaxed)
    }

    /// Prometheus text for these counters plus table gauges.
    pub fn render(
        &self,
        entries: usize,
        capacity: usize,
        evictions: u64,
        table_full: u64,
        extra: &[(&str, &str, u64)],
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP portcullis_decisions_total Decisions by outcome and reason."
        );
        let _ = writeln!(s, "# TYPE portcullis_decisions_total counter");
        let _ = writeln!(
            s,
            "portcullis_decisions_total{{outcome=\"allow\",reason=\"\"}} {}",
            self.allowed()
        );
        for r in Reason::ALL {
            let _ = writeln!(
                s,
                "portcullis_decisions_total{{outcome=\"deny\",reason=\"{}\"}} {}",
                r.as_str(),
                self.denied(r)
            );
        }
        let gauges = [
            (
                "portcullis_table_entries",
                "Keys held.",
                entries as u64,
                "gauge",
            ),
            (
                "portcullis_table_capacity",
                "Keys held at most.",
                capacity as u64,
                "gauge",
            ),
            (
                "portcullis_evictions_total",
                "Entries evicted to make room.",
                evictions,
                "counter",
            ),
            (
                "portcullis_table_full_total",
                "New keys refused for lack of room.",
                table_full,
                "counter",
            ),
            (
                "portcullis_store_errors_total",
                "Store reads/writes that failed.",
                self.store_errors.load(Relaxed),
                "counter",
            ),
            (
                "portcullis_fallbacks_total",
                "Decisions made locally because the fleet store was down.",
                self.fallbacks.load(Relaxed),
                "counter",
            ),
            (
                "portcullis_fail_closed_total",
                "Decisions denied because the fleet store was down.",
                self.fail_closed.load(Relaxed),
                "counter",
            ),
            (
                "portcullis_login_failures_total",
                "Failed logins.",
                self.login_failures.load(Relaxed),
                "counter",
            ),
            (
                "portcullis_login_successes_total",
                "Successful logins.",
                self.login_successes.load(Relaxed),
                "counter",
            ),
        ];
        for (name, help, v, kind) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        for (name, help, v) in extra {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}
