//! Rules 2–4: violations, escalating temporary blocks, permanent bans.
//!
//! A *violation* is a window in which a key was denied at least once: a
//! denial records a violation only if the previous one is at least one
//! window old, so ten fast retries are one violation, not ten.
//! `block_after` violations since the last block (within
//! `violation_memory`) block the key; each further block within the memory
//! lasts `block_growth` times longer (a [`Growth`](crate::Growth), possibly
//! fractional, rounded down to the tick at each step), up to `max_block`. `ban_after`
//! violations within `ban_lookback` ban it until an operator lifts it.

use crate::config::{BlockRules, Jitter};
use crate::entry::{Cold, EntryMut, EntryRef};
use crate::time::{age, grown, within, OptTick, Tick};
use crate::window::TimeLog;

/// What a denial did to the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Escalation {
    /// Nothing beyond the denial.
    None,
    /// Blocked until the tick given.
    Blocked(Tick),
    /// Banned for good.
    Banned,
}

/// Length of the block at `level` (0 for the first within the memory).
pub(crate) fn block_length(rules: &BlockRules, level: u8) -> u64 {
    grown(
        rules.block_for.as_ticks(),
        rules.block_growth,
        u32::from(level),
        rules.max_block.as_ticks(),
    )
}

/// Whether a denial at `now` is a new violation: none yet, or the last
/// one at least a window old.
pub(crate) fn is_new_violation<V: TimeLog>(c: &Cold<V>, window: u64, now: Tick) -> bool {
    match c.newest_violation() {
        Some(last) => age(now, last) >= window,
        None => true,
    }
}

/// Record a rate-limit denial at `now` for a key with request window
/// `window` (ticks) and escalate as the rules say; a block lasts its
/// escalated length plus `jitter`'s share of `block_jitter`.
pub(crate) fn on_denial(
    e: &mut impl EntryMut,
    rules: &BlockRules,
    window: u64,
    now: Tick,
    jitter: Jitter,
) -> Escalation {
    if !is_new_violation(e.cold(), window, now) {
        return Escalation::None;
    }
    let e = e.cold_make().request_mut();
    e.violations.push(now);
    if let Some(ban_after) = rules.ban_after {
        if e.violations.count(now, rules.ban_lookback.as_ticks()) >= ban_after {
            e.banned = true;
            return Escalation::Banned;
        }
    }
    let memory = rules.violation_memory.as_ticks();
    let since_block = e
        .violations
        .iter()
        .filter(|&t| within(now, t, memory))
        .filter(|&t| match e.last_block_start.get() {
            Some(s) => t > s,
            None => true,
        })
        .count();
    if since_block < usize::try_from(rules.block_after).unwrap_or(usize::MAX) {
        return Escalation::None;
    }
    let level = match e.last_block_start.get() {
        Some(s) if within(now, s, memory) => e.block_level,
        _ => 0,
    };
    let extra = jitter.extra(rules.block_jitter.as_ticks());
    let until = now.saturating_add(block_length(rules, level).saturating_add(extra));
    e.block_until = OptTick::some(until);
    e.block_level = level.saturating_add(1);
    e.last_block_start = OptTick::some(now);
    Escalation::Blocked(until)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn blocks_double_up_to_a_day() {
        let rules = Config::default().blocks;
        let mins: [u64; 8] = core::array::from_fn(|l| {
            crate::Duration::from_ticks(block_length(&rules, l as u8)).as_secs() / 60
        });
        assert_eq!(mins, [15, 30, 60, 120, 240, 480, 960, 1440]);
        assert_eq!(block_length(&rules, u8::MAX), rules.max_block.as_ticks());
    }

    #[test]
    fn a_fractional_growth_escalates_by_its_factor() {
        let mut rules = Config::default().blocks;
        rules.block_growth = crate::Growth::from_thousandths(1500);
        let secs: [u64; 10] = core::array::from_fn(|l| {
            crate::Duration::from_ticks(block_length(&rules, l as u8)).as_secs()
        });
        // 900 s × 1.5^level, up to a day.
        assert_eq!(
            secs,
            [900, 1350, 2025, 3037, 4556, 6834, 10251, 15377, 23066, 34599]
        );
        assert_eq!(block_length(&rules, u8::MAX), rules.max_block.as_ticks());
    }

    #[test]
    fn jitter_extra_is_the_exact_fraction_rounded_down() {
        use crate::Jitter;
        for d in [
            0u64,
            1,
            999,
            65_535,
            65_536,
            1_000_000,
            900_000_000,
            u64::MAX / 3,
            u64::MAX,
        ] {
            for j in [0u16, 1, 2, 32_768, 65_534, 65_535] {
                let want = (u128::from(d) * u128::from(j)) >> 16;
                assert_eq!(u128::from(Jitter(j).extra(d)), want, "{d} × {j}");
                assert!(Jitter(j).extra(d) <= d);
            }
        }
    }

    #[test]
    fn a_block_lasts_its_length_plus_the_jitter_share() {
        use crate::{Duration, Instant};
        use crate::{FixedLimiter, Jitter, Limiter, Seed};
        use core::net::{IpAddr, Ipv4Addr};
        let mut c = Config::default();
        c.requests.max_requests = 1;
        c.blocks.block_after = 1;
        c.blocks.block_jitter = Duration::from_secs(64);
        c.clamp_lookbacks(crate::FIXED_MAX_SPAN);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for (j, extra) in [(0u16, 0u64), (32_768, 32), (65_535, 63)] {
            let mut l: FixedLimiter<8, 64> = Limiter::new(c.clone(), Seed::new([1; 16])).unwrap();
            let t = Instant::from_secs(10);
            assert!(l.check_request_with(ip, t, Jitter(j)).is_allowed());
            let d = l.check_request_with(ip, t, Jitter(j));
            let want = c.blocks.block_for + Duration::from_ticks(Jitter(j).extra(64_000_000));
            assert_eq!(
                d,
                crate::Decision::Deny {
                    reason: crate::Reason::Blocked,
                    retry_after: want
                }
            );
            assert!(want.as_secs() >= 900 + extra && want.as_secs() < 900 + extra + 1);
        }
    }
}
