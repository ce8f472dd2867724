//! The firewall task: takes what the [`Tap`] noted, brings the kernel's
//! sets to the store's holds with one nft transaction per round, and
//! every `reconcile_interval` (and after a reload, and at start) rebuilds
//! the wanted state from the store itself, reads the sets back and fixes
//! what differs (counted as drift). Ends of blocks need no work: each
//! element carries its hold's time left as its nft timeout.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use portcullis::clock::read;
use portcullis::Engine;

use super::desired::{self, diff, Element, State, Until};
use super::fleet::FleetLink;
use super::nft::{Nft, NftError};
use super::tap::{Noted, Tap};
use super::{DRIFT, ELEMENTS, ERRORS, RECONCILES, UPDATES};

/// How often manual decisions are read again on a fleet server (its copy
/// of the fleet's follows Redis by polling, not through the tap).
const MANUAL_TICK: StdDuration = StdDuration::from_secs(1);

/// How soon a full reconcile follows a failed update.
const RETRY: StdDuration = StdDuration::from_secs(1);

/// The task's state.
pub struct Sync {
    nft: Nft,
    tap: Arc<Tap>,
    engine: Arc<dyn Engine>,
    interval: StdDuration,
    fleet: Option<Arc<FleetLink>>,
    /// The rules' holds known (from the tap, the fleet, the last rebuild).
    holds: State,
    /// The manual ranges to put in, and when a hidden one comes due.
    ranges: State,
    range_wake: Option<u64>,
    /// What the kernel holds, as far as this task knows.
    applied: State,
}

impl Sync {
    /// A task for `nft`, fed by `tap`, rebuilding from `engine` (the
    /// service's, unwrapped) every `interval`.
    pub fn new(
        nft: Nft,
        tap: Arc<Tap>,
        engine: Arc<dyn Engine>,
        interval: StdDuration,
        fleet: Option<Arc<FleetLink>>,
    ) -> Sync {
        Sync {
            nft,
            tap,
            engine,
            interval,
            fleet,
            holds: State::new(),
            ranges: State::new(),
            range_wake: None,
            applied: State::new(),
        }
    }

    /// Run until the process ends.
    pub async fn run(mut self) {
        let mut next_full = Instant::now() + self.interval;
        let mut next_manual = Instant::now() + MANUAL_TICK;
        loop {
            let mut wake = next_full;
            if self.fleet.is_some() {
                wake = wake.min(next_manual);
            }
            if let Some(at) = self.range_wake {
                let now_ms = read().unix_ms();
                let ms = at.saturating_sub(now_ms).saturating_add(1);
                wake = wake.min(Instant::now() + StdDuration::from_millis(ms));
            }
            tokio::select! {
                _ = self.tap.woken() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            // A burst of denials is one transaction.
            tokio::time::sleep(StdDuration::from_millis(5)).await;
            let noted = self.tap.take();
            let now = Instant::now();
            if noted.rebuild || now >= next_full {
                // The store has what was noted; the fleet is still told.
                let fresh: Vec<(Element, Until)> = noted.holds.into_iter().collect();
                self.tell(fresh, noted.lifted);
                let ok = self.full().await.is_ok();
                next_full = now + if ok { self.interval } else { RETRY };
                continue;
            }
            let manual_due = self.fleet.is_some() && now >= next_manual;
            if manual_due {
                next_manual = now + MANUAL_TICK;
            }
            if self.round(noted, manual_due).await.is_err() {
                next_full = now + RETRY;
            }
        }
    }

    /// Rebuild the wanted state from the store, read the kernel's, fix
    /// the difference. Counted; the difference found is drift.
    pub async fn full(&mut self) -> Result<(), NftError> {
        let now_ms = read().unix_ms();
        self.holds = if self.tap.shadow() {
            State::new()
        } else {
            let bans = self.engine.bans().await;
            desired::holds(&bans, now_ms, self.tap.v6_prefix(), self.tap.locks())
        };
        self.read_ranges(now_ms).await;
        let have = match self.nft.list(now_ms).await {
            Ok(s) => s,
            Err(e) => {
                // The table went (deleted by hand?): make it again.
                tracing::warn!(error = %e, "firewall: cannot read the sets; creating them again");
                self.nft.setup().await.inspect_err(failed)?;
                State::new()
            }
        };
        let want = self.wanted();
        let d = diff(&have, &want, now_ms);
        metrics::counter!(RECONCILES).increment(1);
        metrics::counter!(DRIFT).increment(d.len() as u64);
        let started = Instant::now();
        self.nft.apply(&d, now_ms).await.inspect_err(failed)?;
        if !d.is_empty() {
            tracing::info!(
                table = self.nft.table(),
                put = d.put.len(),
                removed = d.remove.len(),
                ms = started.elapsed().as_millis() as u64,
                "firewall: sets rebuilt from the store"
            );
        }
        metrics::counter!(UPDATES).increment(d.len() as u64);
        self.applied = want;
        metrics::gauge!(ELEMENTS).set(self.applied.len() as f64);
        Ok(())
    }

    /// One round of noted changes: only the elements they touch are
    /// compared (no walk over every hold).
    async fn round(&mut self, noted: Noted, manual_due: bool) -> Result<(), NftError> {
        let now_ms = read().unix_ms();
        let Noted {
            holds,
            lifted,
            manual,
            rebuild: _,
            heard,
        } = noted;
        let mut touched: Vec<Element> = Vec::new();
        let mut fresh: Vec<(Element, Until)> = Vec::new();
        for (e, until) in holds {
            if self.merge(e, until) {
                fresh.push((e, until));
                touched.push(e);
            }
        }
        let shadow = self.tap.shadow();
        for (e, until) in heard.holds.into_iter().filter(|_| !shadow) {
            if self.merge(e, until) {
                touched.push(e);
            }
        }
        for ip in lifted.iter().chain(heard.lifted.iter()) {
            let e = Element::hold(*ip, self.tap.v6_prefix());
            self.holds.remove(&e);
            touched.push(e);
        }
        // Told before the kernel here is asked: a failure here is no
        // reason for the others to wait.
        self.tell(fresh, lifted);
        if manual || manual_due || !heard.lifted.is_empty() || self.range_due(now_ms) {
            let old = std::mem::take(&mut self.ranges);
            self.read_ranges(now_ms).await;
            touched.extend(old.keys().chain(self.ranges.keys()).copied());
        }
        touched.sort();
        touched.dedup();
        let pick = |s: &State| -> State {
            touched
                .iter()
                .filter_map(|e| s.get(e).map(|u| (*e, *u)))
                .collect()
        };
        let have = pick(&self.applied);
        let mut want = pick(&self.holds);
        want.extend(pick(&self.ranges));
        let d = diff(&have, &want, now_ms);
        if !d.is_empty() {
            self.nft.apply(&d, now_ms).await.inspect_err(failed)?;
            metrics::counter!(UPDATES).increment(d.len() as u64);
            tracing::debug!(
                put = d.put.len(),
                removed = d.remove.len(),
                "firewall: sets updated"
            );
        }
        for e in &touched {
            match want.get(e) {
                Some(u) => self.applied.insert(*e, *u),
                None => self.applied.remove(e),
            };
        }
        metrics::gauge!(ELEMENTS).set(self.applied.len() as f64);
        Ok(())
    }

    /// Tell the fleet (if any) about holds imposed and lifts made here,
    /// without waiting for Redis.
    fn tell(&self, fresh: Vec<(Element, Until)>, lifted: Vec<std::net::IpAddr>) {
        if let Some(f) = &self.fleet {
            if !fresh.is_empty() || !lifted.is_empty() {
                let f = f.clone();
                tokio::spawn(async move { f.publish(&fresh, &lifted).await });
            }
        }
    }

    /// Take a hold in; whether it is new or longer.
    fn merge(&mut self, e: Element, until: Until) -> bool {
        match self.holds.get(&e) {
            // Not longer by more than the kernel's slack: nothing to send
            // (a block's end read again a millisecond later is the same).
            Some(old) if desired::agrees(*old, desired::longer(*old, until)) => false,
            Some(old) => {
                let l = desired::longer(*old, until);
                self.holds.insert(e, l);
                true
            }
            None => {
                self.holds.insert(e, until);
                true
            }
        }
    }

    fn range_due(&self, now_ms: u64) -> bool {
        self.range_wake.is_some_and(|w| w <= now_ms)
    }

    async fn read_ranges(&mut self, now_ms: u64) {
        let manual = self.engine.manual_bans().await;
        let (ranges, wake) = desired::ranges(&manual, now_ms);
        self.ranges = ranges;
        self.range_wake = wake;
    }

    /// The rules' holds and the manual ranges together.
    fn wanted(&self) -> State {
        let mut want = self.holds.clone();
        want.extend(self.ranges.iter().map(|(e, u)| (*e, *u)));
        want
    }
}

/// Log and count a failed nft call.
fn failed(e: &NftError) {
    metrics::counter!(ERRORS).increment(1);
    tracing::error!(error = %e, "firewall: nft failed; the next reconcile tries again");
}
