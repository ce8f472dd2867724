//! Counters, rendered in the Prometheus text format, plus what the
//! dashboard draws: a per-second [`History`] of decisions by outcome and
//! reason over the last [`HISTORY_SECS`] seconds, and the top
//! [`Offenders`] by client address.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};

use parking_lot::Mutex;
use portcullis_core::{Decision, Reason};

/// Seconds of per-second decision history kept (10 minutes).
pub const HISTORY_SECS: usize = 600;

/// Number of history series: `allow`, then one per [`Reason::ALL`].
pub const SERIES: usize = 1 + Reason::ALL.len();

/// Addresses the offender table remembers at most.
pub const OFFENDER_CAPACITY: usize = 512;

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
    /// Decisions per second, last [`HISTORY_SECS`] seconds.
    pub history: History,
    /// Addresses denied most, last [`HISTORY_SECS`] seconds.
    pub offenders: Offenders,
}

fn index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// The history series a decision belongs to (`0` = allow).
pub fn series(d: &Decision) -> usize {
    match d {
        Decision::Allow { .. } => 0,
        Decision::Deny { reason, .. } => 1 + index(*reason),
    }
}

/// Names of the history series, in order: `allow`, then the reasons.
pub fn series_names() -> [&'static str; SERIES] {
    let mut names = ["allow"; SERIES];
    for (i, r) in Reason::ALL.iter().enumerate() {
        names[i + 1] = r.as_str();
    }
    names
}

impl Metrics {
    /// Count one decision (totals and the per-second history).
    pub fn count(&self, d: &Decision) {
        match d {
            Decision::Allow { .. } => self.allowed.fetch_add(1, Relaxed),
            Decision::Deny { reason, .. } => self.denied[index(*reason)].fetch_add(1, Relaxed),
        };
        self.history.record(self.history.now(), series(d));
    }

    /// Count one decision about `ip`; a denial also counts against `ip` in
    /// the offender table.
    pub fn count_from(&self, ip: IpAddr, d: &Decision) {
        self.count(d);
        if let Decision::Deny { reason, .. } = d {
            self.offenders.record(ip, *reason, self.history.now());
        }
    }

    /// The `n` addresses denied most in the last [`HISTORY_SECS`] seconds.
    pub fn top_offenders(&self, n: usize) -> Vec<Offender> {
        self.offenders.top(n, self.history.now())
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
        let conn = [
            (
                "portcullis_connections_open",
                "Connections open now.",
                self.connections_open.load(Relaxed),
                "gauge",
            ),
            (
                "portcullis_accept_errors_total",
                "Failed accept calls (e.g. out of file descriptors).",
                self.accept_errors.load(Relaxed),
                "counter",
            ),
            (
                "portcullis_password_checks_running",
                "Password checks running now.",
                self.hashes_running.load(Relaxed),
                "gauge",
            ),
            (
                "portcullis_password_checks_waiting",
                "Logins waiting for a password check now.",
                self.hashes_waiting.load(Relaxed),
                "gauge",
            ),
            (
                "portcullis_password_checks_busy_total",
                "Logins answered 503 because the password-check queue was full.",
                self.hash_busy.load(Relaxed),
                "counter",
            ),
        ];
        for (name, help, v, kind) in conn {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let labelled = [
            (
                "portcullis_connections_refused_total",
                "Connections closed at accept, by the cap reached.",
                "reason",
                vec![
                    ("max_connections", &self.refused_max_connections),
                    ("per_ip", &self.refused_per_ip),
                ],
            ),
            (
                "portcullis_connections_timed_out_total",
                "Connections closed while waiting: read timeout (header, idle) or evicted at max_connections.",
                "phase",
                vec![
                    ("header", &self.header_timeouts),
                    ("idle", &self.idle_timeouts),
                    ("evicted", &self.evicted),
                ],
            ),
        ];
        for (name, help, label, values) in labelled {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (v, n) in values {
                let _ = writeln!(s, "{name}{{{label}=\"{v}\"}} {}", n.load(Relaxed));
            }
        }
        for (name, help, v) in extra {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}

const EMPTY: u64 = 0;
const RESETTING: u64 = u64::MAX;

/// One second of history: its tag (`second + 1`; 0 = never used,
/// `u64::MAX` = being reset) and one counter per series.
struct Slot {
    tag: AtomicU64,
    n: [AtomicU64; SERIES],
}

/// Decisions per second by series over the last [`HISTORY_SECS`] seconds:
/// a ring of per-second slots, lock-free on the decision path (one load
/// and one `fetch_add` in the common case; the first decision of a new
/// second resets that second's slot).
///
/// Seconds count from the creation of the history on the monotonic clock.
pub struct History {
    epoch: std::time::Instant,
    slots: Box<[Slot]>,
}

impl Default for History {
    fn default() -> Self {
        History {
            epoch: std::time::Instant::now(),
            slots: (0..HISTORY_SECS)
                .map(|_| Slot {
                    tag: AtomicU64::new(EMPTY),
                    n: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
        }
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("seconds", &HISTORY_SECS)
            .finish_non_exhaustive()
    }
}

impl History {
    /// The current second (since this history was created).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Count one decision of `series` in second `sec`. A count for a second
    /// older than what its slot already holds is dropped.
    pub fn record(&self, sec: u64, series: usize) {
        let Some(slot) = self.slots.get((sec % HISTORY_SECS as u64) as usize) else {
            return;
        };
        let Some(counter) = slot.n.get(series) else {
            return;
        };
        let tag = sec.saturating_add(1).min(RESETTING - 1);
        // A reset is a handful of stores; a resetting thread that was
        // preempted is waited for by yielding. Bounded all the same.
        for spins in 0u32..100_000 {
            let cur = slot.tag.load(Ordering::Acquire);
            if cur == tag {
                counter.fetch_add(1, Relaxed);
                return;
            }
            if cur == RESETTING {
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if cur > tag {
                return; // a newer second owns the slot
            }
            if slot
                .tag
                .compare_exchange(cur, RESETTING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for c in &slot.n {
                    c.store(0, Relaxed);
                }
                counter.store(1, Relaxed);
                slot.tag.store(tag, Ordering::Release);
                return;
            }
        }
    }

    /// The counts of the [`HISTORY_SECS`] seconds ending with `last`
    /// (inclusive), oldest first; seconds without decisions (or before
    /// second 0) are zeros.
    pub fn window(&self, last: u64) -> Vec<[u64; SERIES]> {
        (0..HISTORY_SECS as u64)
            .rev()
            .map(|back| {
                let mut out = [0u64; SERIES];
                let Some(sec) = last.checked_sub(back) else {
                    return out;
                };
                let Some(slot) = self.slots.get((sec % HISTORY_SECS as u64) as usize) else {
                    return out;
                };
                let tag = sec.saturating_add(1);
                if slot.tag.load(Ordering::Acquire) != tag {
                    return out;
                }
                for (o, c) in out.iter_mut().zip(&slot.n) {
                    *o = c.load(Relaxed);
                }
                // Reset under our feet: the second is gone.
                if slot.tag.load(Ordering::Acquire) != tag {
                    out = [0; SERIES];
                }
                out
            })
            .collect()
    }
}

/// One row of the offender table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offender {
    /// The client address.
    pub ip: IpAddr,
    /// Denials since it was first denied (in its current run of denials:
    /// the count restarts after [`HISTORY_SECS`] seconds without one).
    pub denials: u64,
    /// Reason of the latest denial.
    pub last_reason: Reason,
    /// Seconds since the latest denial.
    pub last_seen_secs_ago: u64,
}

#[derive(Clone, Copy)]
struct OffenderEntry {
    denials: u64,
    last: u64,
    reason: Reason,
}

/// Denials per client address, bounded to [`OFFENDER_CAPACITY`] addresses:
/// when full, an address idle for [`HISTORY_SECS`] seconds, else the one
/// with the fewest denials, makes room. Only denials take its lock.
#[derive(Default)]
pub struct Offenders {
    map: Mutex<HashMap<IpAddr, OffenderEntry>>,
}

impl std::fmt::Debug for Offenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offenders")
            .field("addresses", &self.map.lock().len())
            .finish()
    }
}

fn stale(last: u64, now: u64) -> bool {
    now.saturating_sub(last) >= HISTORY_SECS as u64
}

impl Offenders {
    /// Count a denial of `ip` for `reason` at second `now`.
    pub fn record(&self, ip: IpAddr, reason: Reason, now: u64) {
        let mut map = self.map.lock();
        if let Some(e) = map.get_mut(&ip) {
            if stale(e.last, now) {
                e.denials = 0;
            }
            e.denials = e.denials.saturating_add(1);
            e.last = e.last.max(now);
            e.reason = reason;
            return;
        }
        if map.len() >= OFFENDER_CAPACITY {
            let victim = map
                .iter()
                .find(|(_, e)| stale(e.last, now))
                .or_else(|| map.iter().min_by_key(|(_, e)| (e.denials, e.last)))
                .map(|(ip, _)| *ip);
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        map.insert(
            ip,
            OffenderEntry {
                denials: 1,
                last: now,
                reason,
            },
        );
    }

    /// The `n` addresses with the most denials denied within the last
    /// [`HISTORY_SECS`] seconds before `now`, most first.
    pub fn top(&self, n: usize, now: u64) -> Vec<Offender> {
        let map = self.map.lock();
        let mut out: Vec<Offender> = map
            .iter()
            .filter(|(_, e)| !stale(e.last, now))
            .map(|(ip, e)| Offender {
                ip: *ip,
                denials: e.denials,
                last_reason: e.reason,
                last_seen_secs_ago: now.saturating_sub(e.last),
            })
            .collect();
        drop(map);
        out.sort_by(|a, b| {
            b.denials
                .cmp(&a.denials)
                .then(a.last_seen_secs_ago.cmp(&b.last_seen_secs_ago))
                .then(a.ip.cmp(&b.ip))
        });
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_time::Duration;

    fn deny(reason: Reason) -> Decision {
        Decision::Deny {
            reason,
            retry_after: Duration::from_secs(1),
        }
    }

    #[test]
    fn history_counts_per_second_and_forgets_after_ten_minutes() {
        let h = History::default();
        let blocked = series(&deny(Reason::Blocked));
        assert_eq!(series_names()[blocked], "blocked");
        assert_eq!(series_names()[0], "allow");
        h.record(5, 0);
        h.record(5, 0);
        h.record(5, blocked);
        h.record(7, 0);
        let w = h.window(9);
        assert_eq!(w.len(), HISTORY_SECS);
        let at = |sec: u64| w[HISTORY_SECS - 1 - (9 - sec) as usize];
        assert_eq!(at(5)[0], 2);
        assert_eq!(at(5)[blocked], 1);
        assert_eq!(at(6), [0; SERIES]);
        assert_eq!(at(7)[0], 1);
        // The same slot, ten minutes later: old counts are gone.
        let later = 5 + HISTORY_SECS as u64;
        h.record(later, blocked);
        let w = h.window(later);
        assert_eq!(w[HISTORY_SECS - 1][0], 0);
        assert_eq!(w[HISTORY_SECS - 1][blocked], 1);
        assert_eq!(w.iter().map(|s| s[0]).sum::<u64>(), 1, "second 7 remains");
        // A late count for the overwritten second is dropped.
        h.record(5, 0);
        assert_eq!(h.window(later)[HISTORY_SECS - 1][0], 0);
        // Early in the run the window is still HISTORY_SECS long.
        assert_eq!(History::default().window(0).len(), HISTORY_SECS);
    }

    #[test]
    fn history_is_exact_under_contention() {
        let h = std::sync::Arc::new(History::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record(100 + i / 5_000, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let w = h.window(101);
        assert_eq!(w[HISTORY_SECS - 2][1], 20_000);
        assert_eq!(w[HISTORY_SECS - 1][1], 20_000);
    }

    #[test]
    fn metrics_feed_history_and_offenders() {
        let m = Metrics::default();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let allow = Decision::Allow {
            remaining: 1,
            reset_after: Duration::from_secs(1),
        };
        m.count_from(a, &allow);
        m.count_from(a, &deny(Reason::RateLimited));
        m.count_from(a, &deny(Reason::Blocked));
        m.count_from(b, &deny(Reason::Banned));
        assert_eq!(m.allowed(), 1);
        let w = m.history.window(m.history.now());
        let total: u64 = w.iter().flatten().sum();
        assert_eq!(total, 4);
        let top = m.top_offenders(10);
        assert_eq!(top.len(), 2, "allowed decisions make no offender");
        assert_eq!(top[0].ip, a);
        assert_eq!(top[0].denials, 2);
        assert_eq!(top[0].last_reason, Reason::Blocked);
        assert_eq!(top[1].ip, b);
        assert_eq!(m.top_offenders(1).len(), 1);
    }

    #[test]
    fn offenders_are_bounded_and_forget_idle_addresses() {
        let o = Offenders::default();
        let heavy: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..50 {
            o.record(heavy, Reason::Blocked, 10);
        }
        for i in 0..(OFFENDER_CAPACITY as u32 * 3) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            o.record(ip, Reason::RateLimited, 20);
        }
        assert_eq!(o.map.lock().len(), OFFENDER_CAPACITY);
        let top = o.top(3, 20);
        assert_eq!(
            top[0].ip, heavy,
            "the heavy hitter is never the one evicted"
        );
        assert_eq!(top[0].denials, 50);
        assert_eq!(top[0].last_seen_secs_ago, 10);
        // Ten minutes of silence: gone from the top, and counting restarts.
        let later = 10 + HISTORY_SECS as u64;
        assert!(o.top(3, later + 10).iter().all(|x| x.ip != heavy));
        o.record(heavy, Reason::Banned, later + 10);
        let top = o.top(1, later + 10);
        assert_eq!((top[0].ip, top[0].denials), (heavy, 1));
        assert_eq!(top[0].last_reason, Reason::Banned);
    }
}
