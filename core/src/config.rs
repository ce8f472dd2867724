//! Every rule's knobs, with the defaults of `docs/rules.md`, and their checks.

use crate::lists::Lists;
use crate::Duration;

/// Rule 1: the sliding request window.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestRules {
    /// Allowed requests per window \[50\]. Must not exceed the log capacity `W`.
    pub max_requests: u32,
    /// Window length \[60 s\].
    pub window: Duration,
}

/// Rules 2–4: violations, escalating blocks, permanent bans.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockRules {
    /// Violations (windows with a denial) since the last block that start a block \[3\].
    pub block_after: u32,
    /// How long violations and block escalation are remembered \[24 h\].
    pub violation_memory: Duration,
    /// First block length \[15 min\].
    pub block_for: Duration,
    /// Each further block within the memory lasts this many times longer
    /// \[2\]; fractional factors such as 1.5 are fine (see [`Growth`]).
    pub block_growth: Growth,
    /// Longest block \[24 h\].
    pub max_block: Duration,
    /// Violations within `ban_lookback` that ban for good \[Some(10)\]; `None` disables bans.
    pub ban_after: Option<u32>,
    /// Ban lookback \[24 h\].
    pub ban_lookback: Duration,
    /// Random extra of up to this much on each block \[0: none\]
    /// (fail2ban's `bantime.rndtime`), so a scripted client cannot time
    /// its return to the second. The core has no RNG: the caller passes
    /// the random part as a [`Jitter`] to
    /// [`check_request_with`](crate::Limiter::check_request_with).
    pub block_jitter: Duration,
}

/// The random part of a block's jitter, chosen by the caller: the fraction
/// `j / 65536` of `blocks.block_jitter`. [`Jitter::NONE`] adds nothing.
///
/// **Rounding**, the one definition the Redis script and the reference
/// model follow: the extra for a jitter of `d` ticks is
/// `⌊d / 65536⌋ × j + ⌊(d mod 65536) × j / 65536⌋` (= `⌊d × j / 65536⌋`,
/// computed without a wider integer), added to the block's length after
/// escalation and `max_block` (see [`Jitter::extra`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Jitter(pub u16);

impl Jitter {
    /// No extra.
    pub const NONE: Jitter = Jitter(0);

    /// The extra ticks this jitter adds to a block when the configured
    /// jitter is `d` ticks: `⌊d × j / 65536⌋`, always less than `d`
    /// (or 0).
    pub fn extra(self, d: u64) -> u64 {
        let j = u64::from(self.0);
        let whole = (d >> 16).saturating_mul(j); // < 2^48 × 2^16: never saturates
        let part = ((d & 0xFFFF).saturating_mul(j)) >> 16;
        whole.saturating_add(part)
    }
}

/// Rules 5 and 8: login lockout and account throttle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LoginRules {
    /// Failures per (user, ip) pair that lock the pair \[10\].
    pub max_failures: u32,
    /// Failures per ip, across usernames, that lock the ip \[Some(10)\];
    /// `None`: the ip's own count never locks it (with
    /// `lock_ip_on_account_lock = false` the lockout is pair-only).
    pub ip_max_failures: Option<u32>,
    /// Failure window \[5 min\].
    pub failure_window: Duration,
    /// Lock length \[5 min\].
    pub lock_for: Duration,
    /// A (user, ip) lock also locks the ip \[true\].
    pub lock_ip_on_account_lock: bool,
    /// Failures per username from all addresses that switch on the
    /// full penalty for further failures \[Some(50)\]; `None` disables it.
    pub account_max_failures: Option<u32>,
    /// Account throttle window \[1 h\].
    pub account_window: Duration,
}

/// Rule 6: penalty back-off `min(base × multiplier^k, max)`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PenaltyRules {
    /// First delay \[1 s\].
    pub base: Duration,
    /// Growth per earlier failure in the window \[2\]; fractional factors
    /// such as 1.5 are fine (see [`Growth`]).
    pub multiplier: Growth,
    /// Longest delay \[30 s\].
    pub max: Duration,
}

/// A growth factor of at least 1 in fixed point: thousandths, so 1.5 is
/// `Growth::from_thousandths(1500)` and 2 is `Growth::times(2)`. The
/// core never uses floats.
///
/// **Rounding**, the one definition that the Redis script and the
/// reference model follow: growing a length `d` (in ticks) by the factor
/// `g` thousandths gives `⌊d × g / 1000⌋`, saturating at `u64::MAX`, so an
/// integral factor is exact and a fractional one rounds down to the tick.
/// Escalation repeats that step: the length after `n` steps is
/// `d₀ = min(first, max)`, `dᵢ₊₁ = min(⌊dᵢ × g / 1000⌋, max)`
/// (see [`Growth::grow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Growth(u32);

impl Growth {
    /// The factor 1: no growth.
    pub const ONE: Growth = Growth(1000);

    /// The factor `t / 1000`.
    pub const fn from_thousandths(t: u32) -> Growth {
        Growth(t)
    }

    /// The integral factor `n`, saturating at the largest factor
    /// (4 294 967.295).
    pub const fn times(n: u32) -> Growth {
        Growth(n.saturating_mul(1000))
    }

    /// The factor in thousandths.
    pub const fn thousandths(self) -> u32 {
        self.0
    }

    /// `⌊d × self⌋` (see the rounding above), saturating; computed as
    /// `(d / 1000) × g + ⌊(d mod 1000) × g / 1000⌋`, which needs no
    /// integer wider than 64 bits.
    pub fn grow(self, d: u64) -> u64 {
        let g = u64::from(self.0);
        let whole = (d / 1000).saturating_mul(g);
        let part = (d % 1000).saturating_mul(g) / 1000; // < 1000 × 2^32: never saturates
        whole.saturating_add(part)
    }
}

impl core::fmt::Display for Growth {
    /// `2`, `1.5`, `1.125`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let mut frac = frac;
            let mut width: usize = 3;
            while frac % 10 == 0 {
                frac /= 10;
                width = width.saturating_sub(1);
            }
            write!(f, "{whole}.{frac:0width$}")
        }
    }
}

/// What a failure gets when its key has no free slot (rule 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NoSlot {
    /// Cap the delay to `penalty.base` (the seed's behaviour) \[default\].
    CapToBase,
    /// Refuse the attempt.
    Refuse,
}

/// Rule 7: concurrency slots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SlotRules {
    /// Slots per key \[3\], at most [`MAX_SLOTS`](crate::MAX_SLOTS).
    pub slots: u32,
    /// A slot older than this is reclaimed \[60 s\].
    pub slot_ttl: Duration,
    /// Policy without a free slot \[CapToBase\].
    pub when_full: NoSlot,
}

/// What a new key gets when the table is full and nothing is evictable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OnFull {
    /// Deny with [`Reason::TableFull`](crate::Reason::TableFull) \[default\].
    Deny,
    /// Allow without keeping state (fail-open for new keys only).
    Allow,
}

/// All rules. `Config::default()` is the defaults listed in `docs/rules.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Rule 1.
    pub requests: RequestRules,
    /// Rules 2–4.
    pub blocks: BlockRules,
    /// Rules 5 and 8.
    pub login: LoginRules,
    /// Rule 6.
    pub penalty: PenaltyRules,
    /// Rule 7.
    pub slots: SlotRules,
    /// Rule 9.
    pub lists: Lists,
    /// IPv6 addresses are aggregated to this prefix \[64\].
    pub ipv6_prefix: u8,
    /// New key, full table \[Deny\].
    pub on_full: OnFull,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            requests: RequestRules {
                max_requests: 50,
                window: secs(60),
            },
            blocks: BlockRules {
                block_after: 3,
                violation_memory: secs(24 * 3600),
                block_for: secs(15 * 60),
                block_growth: Growth::times(2),
                max_block: secs(24 * 3600),
                ban_after: Some(10),
                ban_lookback: secs(24 * 3600),
                block_jitter: secs(0),
            },
            login: LoginRules {
                max_failures: 10,
                ip_max_failures: Some(10),
                failure_window: secs(5 * 60),
                lock_for: secs(5 * 60),
                lock_ip_on_account_lock: true,
                account_max_failures: Some(50),
                account_window: secs(3600),
            },
            penalty: PenaltyRules {
                base: secs(1),
                multiplier: Growth::times(2),
                max: secs(30),
            },
            slots: SlotRules {
                slots: 3,
                slot_ttl: secs(60),
                when_full: NoSlot::CapToBase,
            },
            lists: Lists::new(),
            ipv6_prefix: 64,
            on_full: OnFull::Deny,
        }
    }
}

/// A configuration value that cannot work, naming the key and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// The value must be at least 1.
    Zero {
        /// Dotted key, e.g. `requests.max_requests`.
        key: &'static str,
    },
    /// The value exceeds what the chosen capacity can hold.
    TooLarge {
        /// Dotted key.
        key: &'static str,
        /// Largest accepted value.
        max: u32,
    },
    /// A lookback longer than the table's logs answer exactly (the fixed
    /// tables keep 32-bit tick offsets: see
    /// the table's `MAX_SPAN`).
    Span {
        /// Dotted key.
        key: &'static str,
        /// Longest accepted lookback, in ticks.
        max_ticks: u64,
        /// The tick rate, in ticks per second.
        tick_hz: u64,
    },
    /// The value is out of its range.
    OutOfRange {
        /// Dotted key.
        key: &'static str,
        /// What the range is.
        expected: &'static str,
    },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Zero { key } => write!(f, "{key}: must be greater than zero"),
            ConfigError::TooLarge { key, max } => {
                write!(f, "{key}: must be at most {max} (table log capacity)")
            }
            ConfigError::Span {
                key,
                max_ticks,
                tick_hz,
            } => write!(
                f,
                "{key}: must be at most {max_ticks} ticks ({} s at {tick_hz} ticks per second) \
                 in a fixed table (its logs keep 32-bit tick offsets)",
                max_ticks.checked_div(*tick_hz).unwrap_or(0)
            ),
            ConfigError::OutOfRange { key, expected } => write!(f, "{key}: must be {expected}"),
        }
    }
}

fn nonzero_count(key: &'static str, v: u32, max: usize) -> Result<(), ConfigError> {
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    if v == 0 {
        Err(ConfigError::Zero { key })
    } else if v > max {
        Err(ConfigError::TooLarge { key, max })
    } else {
        Ok(())
    }
}

fn nonzero_time(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.as_ticks() == 0 {
        Err(ConfigError::Zero { key })
    } else {
        Ok(())
    }
}

/// A growth factor: at least 1 (a factor below 1 would shrink).
fn at_least_one(key: &'static str, g: Growth) -> Result<(), ConfigError> {
    if g < Growth::ONE {
        return Err(ConfigError::OutOfRange {
            key,
            expected: "at least 1",
        });
    }
    Ok(())
}

/// A lookback: nonzero and at most [`MAX_LOOKBACK`](crate::MAX_LOOKBACK),
/// so that restored history older than the clock's zero is representable
/// (see the `time` rule in [`record`](crate::record)).
fn lookback(key: &'static str, d: Duration) -> Result<(), ConfigError> {
    nonzero_time(key, d)?;
    if d > crate::MAX_LOOKBACK {
        return Err(ConfigError::OutOfRange {
            key,
            expected: "at most 3650 days",
        });
    }
    Ok(())
}

impl Config {
    /// Only rule 1, the request window: at most `max_requests` requests
    /// per `window` per address, nothing else that a request-only caller
    /// would trip over.
    ///
    /// - **Escalation off**: a violation is recorded at most once per
    ///   window and `violation_memory` is one window, so no two violations
    ///   are ever remembered together and `block_after = 2` is never
    ///   reached; bans are off (`ban_after = None`).
    /// - **Login lockout and account throttle off**: the account throttle
    ///   is disabled (`account_max_failures = None`); the login lockout
    ///   (rule 5) only acts on failures the caller reports, and a
    ///   request-only caller reports none. Its threshold is `max_requests`
    ///   so that it fits every log that holds the request window.
    /// - **Every lookback is `window`**, so the configuration fits any
    ///   table whose log capacity `W` is at least `max_requests`, and a
    ///   fixed table whenever `window` itself fits
    ///   [`FIXED_MAX_SPAN`](crate::FIXED_MAX_SPAN) ticks (71.6 minutes at
    ///   a 1 MHz tick rate, 49.7 days at 1 kHz). Nothing needs
    ///   [`clamp_lookbacks`](Config::clamp_lookbacks).
    ///
    /// A `max_requests` of 0, a zero `window`, or a `max_requests` above
    /// the table's `W` is refused by the limiter's constructor with the
    /// usual [`ConfigError`].
    ///
    /// ```
    /// use portcullis_core::Duration;
    /// use portcullis_core::{Config, FixedLimiter, Seed};
    ///
    /// let seed = Seed::new([7; 16]); // from your RNG
    /// let limiter = FixedLimiter::<16, 4>::new(Config::requests_only(4, Duration::from_secs(1)), seed);
    /// assert!(limiter.is_ok());
    /// ```
    pub fn requests_only(max_requests: u32, window: Duration) -> Config {
        let d = Config::default();
        Config {
            requests: RequestRules {
                max_requests,
                window,
            },
            blocks: BlockRules {
                block_after: 2,
                violation_memory: window,
                ban_after: None,
                ban_lookback: window,
                ..d.blocks
            },
            login: LoginRules {
                max_failures: max_requests,
                ip_max_failures: Some(max_requests),
                failure_window: window,
                lock_for: window,
                lock_ip_on_account_lock: false,
                account_max_failures: None,
                account_window: window,
            },
            ..d
        }
    }

    /// Check every lookback that reads a log against `max_ticks`, the
    /// longest a store's logs answer exactly
    /// (the table's `MAX_SPAN`): the request
    /// window, the violation memory, the ban lookback (when bans are on),
    /// the failure window and the account window (when accounts are
    /// counted).
    pub fn validate_span(&self, max_ticks: u64) -> Result<(), ConfigError> {
        let checks = [
            ("requests.window", Some(self.requests.window)),
            (
                "blocks.violation_memory",
                Some(self.blocks.violation_memory),
            ),
            (
                "blocks.ban_lookback",
                self.blocks.ban_after.map(|_| self.blocks.ban_lookback),
            ),
            ("login.failure_window", Some(self.login.failure_window)),
            (
                "login.account_window",
                self.login
                    .account_max_failures
                    .map(|_| self.login.account_window),
            ),
        ];
        for (key, d) in checks {
            if d.is_some_and(|d| d.as_ticks() > max_ticks) {
                return Err(ConfigError::Span {
                    key,
                    max_ticks,
                    tick_hz: crate::TICK_HZ,
                });
            }
        }
        Ok(())
    }

    /// Shorten every lookback that reads a log to at most `max_ticks` (a
    /// configuration written for the growable table, run on a fixed table
    /// at a tick rate where its lookbacks exceed
    /// the table's `MAX_SPAN`: tests and
    /// benchmarks on a 1 MHz host clock). What it changes is what it says:
    /// events older than the shortened lookbacks stop counting.
    pub fn clamp_lookbacks(&mut self, max_ticks: u64) {
        let max = crate::Duration::from_ticks(max_ticks);
        for d in [
            &mut self.requests.window,
            &mut self.blocks.violation_memory,
            &mut self.blocks.ban_lookback,
            &mut self.login.failure_window,
            &mut self.login.account_window,
        ] {
            *d = (*d).min(max);
        }
    }

    /// Check every value against itself and a log capacity of `w` timestamps.
    pub fn validate(&self, w: usize) -> Result<(), ConfigError> {
        let v = crate::VIOLATION_LOG;
        nonzero_count("requests.max_requests", self.requests.max_requests, w)?;
        lookback("requests.window", self.requests.window)?;
        nonzero_count("blocks.block_after", self.blocks.block_after, v)?;
        lookback("blocks.violation_memory", self.blocks.violation_memory)?;
        nonzero_time("blocks.block_for", self.blocks.block_for)?;
        at_least_one("blocks.block_growth", self.blocks.block_growth)?;
        if self.blocks.max_block < self.blocks.block_for {
            return Err(ConfigError::OutOfRange {
                key: "blocks.max_block",
                expected: "at least blocks.block_for",
            });
        }
        if let Some(n) = self.blocks.ban_after {
            nonzero_count("blocks.ban_after", n, v)?;
        }
        lookback("blocks.ban_lookback", self.blocks.ban_lookback)?;
        nonzero_count("login.max_failures", self.login.max_failures, w)?;
        if let Some(n) = self.login.ip_max_failures {
            nonzero_count("login.ip_max_failures", n, w)?;
        }
        lookback("login.failure_window", self.login.failure_window)?;
        nonzero_time("login.lock_for", self.login.lock_for)?;
        if let Some(n) = self.login.account_max_failures {
            nonzero_count("login.account_max_failures", n, w)?;
        }
        lookback("login.account_window", self.login.account_window)?;
        at_least_one("penalty.multiplier", self.penalty.multiplier)?;
        if self.penalty.max < self.penalty.base {
            return Err(ConfigError::OutOfRange {
                key: "penalty.max",
                expected: "at least penalty.base",
            });
        }
        nonzero_count("slots.slots", self.slots.slots, crate::MAX_SLOTS)?;
        nonzero_time("slots.slot_ttl", self.slots.slot_ttl)?;
        if self.ipv6_prefix > 128 {
            return Err(ConfigError::OutOfRange {
                key: "ipv6_prefix",
                expected: "0..=128",
            });
        }
        Ok(())
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Instant;
    use crate::{Decision, FixedLimiter, Reason, Seed};
    use core::net::{IpAddr, Ipv4Addr};

    const SEED: Seed = Seed::new([9; 16]);

    #[test]
    fn requests_only_is_accepted_by_every_fixed_table_with_w_at_least_max() {
        let c = || Config::requests_only(4, Duration::from_secs(1));
        assert!(FixedLimiter::<16, 4>::new(c(), SEED).is_ok());
        assert!(FixedLimiter::<16, 8>::new(c(), SEED).is_ok());
        assert!(FixedLimiter::<64, 16>::new(c(), SEED).is_ok());
        // The longest window a fixed table takes at 1 MHz: FIXED_MAX_SPAN ticks.
        let longest = Duration::from_ticks(crate::FIXED_MAX_SPAN);
        assert!(FixedLimiter::<16, 4>::new(Config::requests_only(4, longest), SEED).is_ok());
        assert_eq!(c().validate_span(crate::FIXED_MAX_SPAN), Ok(()));
    }

    #[test]
    fn requests_only_with_w_below_max_is_refused_with_the_usual_error() {
        let r = FixedLimiter::<16, 4>::new(Config::requests_only(5, Duration::from_secs(1)), SEED);
        assert_eq!(
            r.err(),
            Some(ConfigError::TooLarge {
                key: "requests.max_requests",
                max: 4
            })
        );
        let r = FixedLimiter::<16, 4>::new(Config::requests_only(0, Duration::from_secs(1)), SEED);
        assert_eq!(
            r.err(),
            Some(ConfigError::Zero {
                key: "requests.max_requests"
            })
        );
    }

    #[test]
    fn requests_only_never_escalates_past_the_window() {
        let mut l =
            FixedLimiter::<16, 4>::new(Config::requests_only(2, Duration::from_secs(1)), SEED)
                .unwrap();
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        // Twenty windows of flooding: each allows 2, then denies as
        // RateLimited (never Blocked or Banned).
        for w in 0..20u64 {
            let t = Instant::from_secs(100 + w);
            for _ in 0..2 {
                assert!(l.check_request(ip, t).is_allowed(), "window {w}");
            }
            for _ in 0..5 {
                assert!(
                    matches!(
                        l.check_request(ip, t),
                        Decision::Deny {
                            reason: Reason::RateLimited,
                            ..
                        }
                    ),
                    "window {w}"
                );
            }
        }
    }
}
