//! What a guard counts, exported through the [`metrics`](https://docs.rs/metrics)
//! facade so whichever recorder the application installs (Prometheus,
//! StatsD, OpenTelemetry…) sees it, plus what the dashboard draws: a
//! per-second [`History`] of decisions by outcome and reason over the last
//! [`HISTORY_SECS`] seconds, and the top [`Offenders`] by client address.
//!
//! Several limiters in one process: give each extra one
//! [`Metrics::for_policy`] (its series carry `policy="<name>"`) or
//! [`Metrics::unexported`] (counted in process only), through
//! `Guard::with_metrics`, so the main series keep meaning one thing.
//!
//! Names and labels:
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `portcullis_decisions_total` | counter | `outcome` (`allow`/`deny`), `reason` (`""` for allow) |
//! | `portcullis_login_failures_total`, `portcullis_login_successes_total` | counter | |
//! | `portcullis_store_errors_total` | counter | store reads/writes that failed |
//! | `portcullis_fallbacks_total`, `portcullis_fail_closed_total` | counter | fleet store down: decided locally / denied |
//! | `portcullis_fallback_active` | gauge | 1 while the fleet store is unavailable (fleet only; a cluster: while any master is down) |
//! | `portcullis_reconciled_total` | counter | fleet: keys the fallback banned, blocked or locked, written to Redis after an outage (`fleet::reconcile`) |
//! | `portcullis_reconcile_queued`, `portcullis_denial_cache_entries` | gauge | fleet: keys queued for Redis / held in the denial cache |
//! | `portcullis_denial_cache_hits_total` | counter | fleet: decisions answered from the cache of standing denials (`fleet::denials`) |
//! | `portcullis_redis_node_up`, `portcullis_redis_node_outages_total` | gauge, counter | `node` (`host:port`): a Redis Cluster master's health and outages (`fleet::cluster`) |
//! | `portcullis_table_entries`, `portcullis_table_capacity` | gauge | |
//! | `portcullis_evictions_total` | counter | `kind`: `dead` (state that could no longer affect a decision, reclaimed) or `live` (evicted from a table full of live keys: the only evictions that can change a decision); their sum is every eviction |
//! | `portcullis_table_full_total` | counter | |
//! | `portcullis_shadow_denials_total` | counter | `reason`: denials a shadow policy let through |
//!
//! Counters are recorded as they happen, through handles registered with
//! the recorder once (the main series when a [`Metrics`] is made, a
//! policy's when each first happens): a decision is an atomic add on its
//! handle and never allocates. So install the recorder before making the
//! guards that record to it. The table gauges are read from
//! the limiter, so they are published by [`Metrics::record_table`]: the
//! cleanup task does so on each run, and a `/metrics` handler should
//! just before it renders (`Guard::record_table_metrics`).
//!
//! Totals are also kept in process (atomics, [`History`], [`Offenders`])
//! for status pages and the dashboard, which need recent per-second
//! series and top offenders that a metrics recorder does not hand back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, SharedString};
use portcullis_core::{Decision, Reason};

/// Seconds of per-second decision history kept (10 minutes).
pub const HISTORY_SECS: usize = 600;

/// Number of history series: `allow`, then one per [`Reason::ALL`].
pub const SERIES: usize = 1 + Reason::ALL.len();

/// Addresses the offender table remembers at most.
pub const OFFENDER_CAPACITY: usize = 512;

/// Decisions by outcome and reason.
pub const DECISIONS: &str = "portcullis_decisions_total";
/// Failed logins.
pub const LOGIN_FAILURES: &str = "portcullis_login_failures_total";
/// Successful logins.
pub const LOGIN_SUCCESSES: &str = "portcullis_login_successes_total";
/// Store reads/writes that failed.
pub const STORE_ERRORS: &str = "portcullis_store_errors_total";
/// Decisions made locally because the fleet store was down.
pub const FALLBACKS: &str = "portcullis_fallbacks_total";
/// Decisions denied because the fleet store was down.
pub const FAIL_CLOSED: &str = "portcullis_fail_closed_total";
/// 1 while the fleet store is unavailable.
pub const FALLBACK_ACTIVE: &str = "portcullis_fallback_active";
/// Denials a shadow policy recorded but did not enforce.
pub const SHADOW_DENIALS: &str = "portcullis_shadow_denials_total";
/// Keys held.
pub const TABLE_ENTRIES: &str = "portcullis_table_entries";
/// Keys held at most.
pub const TABLE_CAPACITY: &str = "portcullis_table_capacity";
/// Entries evicted to make room, labelled `kind` = `dead` | `live`.
pub const EVICTIONS: &str = "portcullis_evictions_total";
/// New keys refused for lack of room.
pub const TABLE_FULL: &str = "portcullis_table_full_total";

/// Give the installed recorder the help text of every metric above
/// (idempotent; [`Metrics`] calls it when made).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(DECISIONS, "Decisions by outcome and reason.");
    describe_counter!(LOGIN_FAILURES, "Failed logins.");
    describe_counter!(LOGIN_SUCCESSES, "Successful logins.");
    describe_counter!(STORE_ERRORS, "Store reads/writes that failed.");
    describe_counter!(
        FALLBACKS,
        "Decisions made locally because the fleet store was down."
    );
    describe_counter!(
        FAIL_CLOSED,
        "Decisions denied because the fleet store was down."
    );
    describe_gauge!(FALLBACK_ACTIVE, "1 while the fleet store is unavailable.");
    describe_gauge!(TABLE_ENTRIES, "Keys held.");
    describe_gauge!(TABLE_CAPACITY, "Keys held at most.");
    describe_counter!(
        EVICTIONS,
        "Entries evicted to make room, by kind: dead (could no longer affect a decision) or live."
    );
    describe_counter!(
        SHADOW_DENIALS,
        "Denials a shadow policy recorded but did not enforce, by reason."
    );
    describe_counter!(TABLE_FULL, "New keys refused for lack of room.");
}

/// Metadata of every series recorded here.
static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One series: its key, and the recorder's handle for it, registered on
/// first use (or at construction, [`Series::register`]) and kept, so that
/// recording is one call on the handle (an atomic add for the usual
/// recorders). Registering again per event would cost a registry lookup
/// and, for recorders that retain the key (`metrics-util`'s registry,
/// `metrics-exporter-prometheus`), a copy of its labels on the heap.
///
/// The handle belongs to the recorder in force when it was registered: a
/// recorder must be installed before the [`Metrics`] that records to it is
/// made (the series of a policy, before its first event).
#[derive(Debug)]
struct Series<H> {
    key: Key,
    handle: OnceLock<H>,
}

impl<H> Series<H> {
    fn new(key: Key) -> Series<H> {
        Series {
            key,
            handle: OnceLock::new(),
        }
    }
}

impl Series<Counter> {
    fn counter(&self) -> &Counter {
        self.handle
            .get_or_init(|| metrics::with_recorder(|r| r.register_counter(&self.key, &META)))
    }
}

impl Series<Gauge> {
    fn gauge(&self) -> &Gauge {
        self.handle
            .get_or_init(|| metrics::with_recorder(|r| r.register_gauge(&self.key, &META)))
    }
}

/// The series of one [`Metrics`], keys built once when it is made.
#[derive(Debug)]
struct Keys {
    /// By [`series`]: allow, then each reason.
    decisions: [Series<Counter>; SERIES],
    login_failures: Series<Counter>,
    login_successes: Series<Counter>,
    store_errors: Series<Counter>,
    fallbacks: Series<Counter>,
    fail_closed: Series<Counter>,
    fallback_active: Series<Gauge>,
    table_entries: Series<Gauge>,
    table_capacity: Series<Gauge>,
    evicted_dead: Series<Counter>,
    evicted_live: Series<Counter>,
    table_full: Series<Counter>,
}

impl Keys {
    fn new(policy: Option<&SharedString>) -> Keys {
        let key = |name: &'static str, labels: &[(&'static str, &'static str)]| {
            let mut l: Vec<Label> = labels
                .iter()
                .map(|(k, v)| Label::from_static_parts(k, v))
                .collect();
            if let Some(p) = policy {
                l.push(Label::new("policy", p.clone()));
            }
            Key::from_parts(name, l)
        };
        let c = |name, labels: &[_]| Series::<Counter>::new(key(name, labels));
        let g = |name| Series::<Gauge>::new(key(name, &[]));
        let decisions = std::array::from_fn(|i| match i.checked_sub(1) {
            None => c(DECISIONS, &[("outcome", "allow"), ("reason", "")]),
            Some(r) => c(
                DECISIONS,
                &[
                    ("outcome", "deny"),
                    ("reason", Reason::ALL.get(r).map_or("", |r| r.as_str())),
                ],
            ),
        });
        Keys {
            decisions,
            login_failures: c(LOGIN_FAILURES, &[]),
            login_successes: c(LOGIN_SUCCESSES, &[]),
            store_errors: c(STORE_ERRORS, &[]),
            fallbacks: c(FALLBACKS, &[]),
            fail_closed: c(FAIL_CLOSED, &[]),
            fallback_active: g(FALLBACK_ACTIVE),
            table_entries: g(TABLE_ENTRIES),
            table_capacity: g(TABLE_CAPACITY),
            evicted_dead: c(EVICTIONS, &[("kind", "dead")]),
            evicted_live: c(EVICTIONS, &[("kind", "live")]),
            table_full: c(TABLE_FULL, &[]),
        }
    }
}

/// What a guard counts: recorded through the `metrics` facade and kept in
/// process for status pages and the dashboard.
#[derive(Debug)]
pub struct Metrics {
    /// `policy` label on every series (`None`: no label).
    policy: Option<SharedString>,
    /// `None`: recorded in process only ([`Metrics::unexported`]).
    keys: Option<Keys>,
    allowed: AtomicU64,
    denied: [AtomicU64; Reason::ALL.len()],
    store_errors: AtomicU64,
    fallbacks: AtomicU64,
    fail_closed: AtomicU64,
    login_failures: AtomicU64,
    login_successes: AtomicU64,
    /// Decisions per second, last [`HISTORY_SECS`] seconds.
    pub history: History,
    /// Addresses denied most, last [`HISTORY_SECS`] seconds.
    pub offenders: Offenders,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::with_policy(None, true)
    }
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
    /// Metrics whose series all carry `policy="<policy>"`: for a second
    /// limiter in the same process (e.g. a stricter table in front of an
    /// admin API), so its counts do not add to the main ones.
    pub fn for_policy(policy: impl Into<SharedString>) -> Self {
        Metrics::with_policy(Some(policy.into()), true)
    }

    /// Metrics kept in process only, sent to no recorder: for a limiter
    /// whose counts would only blur the main series (the server's
    /// `/admin` and `/metrics` tables).
    pub fn unexported() -> Self {
        Metrics::with_policy(None, false)
    }

    fn with_policy(policy: Option<SharedString>, export: bool) -> Self {
        describe();
        let m = Metrics {
            keys: export.then(|| Keys::new(policy.as_ref())),
            policy,
            allowed: AtomicU64::new(0),
            denied: Default::default(),
            store_errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            fail_closed: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            login_successes: AtomicU64::new(0),
            history: History::default(),
            offenders: Offenders::default(),
        };
        // Register the main counters at zero, so an exporter shows each
        // series (e.g. `reason="banned"`) before its first event; a
        // policy's series appear as they happen.
        let Some(k) = m.keys.as_ref().filter(|_| m.policy.is_none()) else {
            return m;
        };
        for series in k.decisions.iter().chain([
            &k.login_failures,
            &k.login_successes,
            &k.store_errors,
            &k.fallbacks,
            &k.fail_closed,
        ]) {
            series.counter().increment(0);
        }
        m
    }

    fn inc(&self, series: fn(&Keys) -> &Series<Counter>) {
        if let Some(k) = &self.keys {
            series(k).counter().increment(1);
        }
    }

    /// Whether this records to the installed recorder.
    pub fn exported(&self) -> bool {
        self.keys.is_some()
    }

    /// The `policy` label, if any.
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// Count one decision (totals and the per-second history).
    pub fn count(&self, d: &Decision) {
        self.count_in(d, self.history.now());
    }

    /// [`count`](Self::count) in second `sec` of the history.
    fn count_in(&self, d: &Decision, sec: u64) {
        match d {
            Decision::Allow { .. } => self.allowed.fetch_add(1, Relaxed),
            Decision::Deny { reason, .. } => self.denied[index(*reason)].fetch_add(1, Relaxed),
        };
        let i = series(d);
        if let Some(k) = self.keys.as_ref().and_then(|k| k.decisions.get(i)) {
            k.counter().increment(1);
        }
        self.history.record(sec, i);
    }

    /// Count one decision about `ip`; a denial also counts against `ip` in
    /// the offender table (one clock read for both).
    pub fn count_from(&self, ip: IpAddr, d: &Decision) {
        let sec = self.history.now();
        self.count_in(d, sec);
        if let Decision::Deny { reason, .. } = d {
            self.offenders.record(ip, *reason, sec);
        }
    }

    /// Count a failed login.
    pub fn login_failure(&self) {
        self.login_failures.fetch_add(1, Relaxed);
        self.inc(|k| &k.login_failures);
    }

    /// Count a successful login.
    pub fn login_success(&self) {
        self.login_successes.fetch_add(1, Relaxed);
        self.inc(|k| &k.login_successes);
    }

    /// Count a failed store read or write.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
        self.inc(|k| &k.store_errors);
    }

    /// Count a decision made locally because the fleet store was down.
    pub fn fallback(&self) {
        self.fallbacks.fetch_add(1, Relaxed);
        self.inc(|k| &k.fallbacks);
    }

    /// Count a decision denied because the fleet store was down.
    pub fn fail_closed(&self) {
        self.fail_closed.fetch_add(1, Relaxed);
        self.inc(|k| &k.fail_closed);
    }

    /// Set `portcullis_fallback_active` (fleet backends).
    pub fn set_fallback_active(&self, active: bool) {
        if let Some(k) = &self.keys {
            k.fallback_active.gauge().set(f64::from(u8::from(active)));
        }
    }

    /// Publish the table gauges and counters read from a limiter
    /// (`Limiter::len`, `Limiter::capacity`, `Limiter::stats`).
    pub fn record_table(&self, entries: usize, capacity: usize, table_full: u64) {
        if let Some(k) = &self.keys {
            k.table_entries.gauge().set(entries as f64);
            k.table_capacity.gauge().set(capacity as f64);
            k.table_full.counter().absolute(table_full);
        }
    }

    /// Publish the evictions by kind read from a limiter
    /// (`Stats::evicted_dead`, `Stats::evicted_live`).
    pub fn record_evictions(&self, dead: u64, live: u64) {
        if let Some(k) = &self.keys {
            k.evicted_dead.counter().absolute(dead);
            k.evicted_live.counter().absolute(live);
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

    /// Failed logins so far.
    pub fn login_failures(&self) -> u64 {
        self.login_failures.load(Relaxed)
    }

    /// Successful logins so far.
    pub fn login_successes(&self) -> u64 {
        self.login_successes.load(Relaxed)
    }

    /// Failed store reads/writes so far.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Relaxed)
    }

    /// Decisions made locally while the fleet store was down, so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Relaxed)
    }

    /// Decisions denied while the fleet store was down, so far.
    pub fn fail_closed_count(&self) -> u64 {
        self.fail_closed.load(Relaxed)
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
            .field(
                "addresses",
                &self
                    .map
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .finish()
    }
}

fn stale(last: u64, now: u64) -> bool {
    now.saturating_sub(last) >= HISTORY_SECS as u64
}

impl Offenders {
    /// Count a denial of `ip` for `reason` at second `now`.
    pub fn record(&self, ip: IpAddr, reason: Reason, now: u64) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
    use portcullis_core::Duration;

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
        assert_eq!(o.map.lock().unwrap().len(), OFFENDER_CAPACITY);
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
