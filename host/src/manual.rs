//! Manual decisions (fail2ban's `banip`, CrowdSec's `cscli decisions add`):
//! an operator blocks an address or a CIDR range for a time, or bans it
//! until lifted, with a reason. Checked on every request before the rules,
//! through the core's [`RangeSet`] (prefix lengths and binary search, no
//! scan). Times are Unix milliseconds, so a restart keeps what is left.
//!
//! A manual decision applies to allowlisted addresses too (it is the
//! operator's explicit word, like the denylist).

use std::net::IpAddr;

use portcullis_core::Duration;
use portcullis_core::{Cidr, Decision, RangeError, RangeSet, Reason};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// One manual decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManualBan {
    /// The address (`/32`, `/128`) or range.
    pub range: Cidr,
    /// End of a block (Unix ms); `None`: banned until lifted.
    pub until_ms: Option<u64>,
    /// The operator's reason.
    pub reason: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
}

impl ManualBan {
    /// Whether it holds at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|u| u > now_ms)
    }

    /// Time left at `now_ms`; `None` for a ban.
    pub fn left(&self, now_ms: u64) -> Option<Duration> {
        self.until_ms
            .map(|u| Duration::from_millis(u.saturating_sub(now_ms)))
    }

    /// The decision it gives at `now_ms`: `banned` forever, or `blocked`
    /// with the time left.
    pub fn decision(&self, now_ms: u64) -> Decision {
        match self.left(now_ms) {
            None => Decision::Deny {
                reason: Reason::Banned,
                retry_after: Duration::MAX,
            },
            Some(left) => Decision::Deny {
                reason: Reason::Blocked,
                retry_after: left,
            },
        }
    }
}

/// A change to the manual bans, written through to a store
/// ([`Persist::write_manual`](crate::persist::Persist::write_manual)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualChange {
    /// Add or replace.
    Put(ManualBan),
    /// Lift exactly this range.
    Delete(Cidr),
}

/// What a set keeps per range.
#[derive(Clone, Debug)]
struct Held {
    until_ms: Option<u64>,
    reason: String,
    created_ms: u64,
}

/// Most manual decisions held at once.
pub const MAX_MANUAL: usize = 100_000;

/// Longest reason kept (bytes; longer ones are cut at a char boundary).
pub const MAX_REASON: usize = 256;

/// The manual decisions of one process.
#[derive(Debug, Default)]
pub struct ManualBans {
    set: RwLock<RangeSet<Vec<(Cidr, Held)>>>,
    /// Ranges held: requests skip the lock while there are none.
    count: AtomicUsize,
}

/// Why a manual decision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualError {
    /// The range is wider than allowed, or the set is full.
    Range(RangeError),
    /// A block that ends before it starts.
    Expired,
    /// This backend keeps no manual decisions.
    Unsupported,
    /// Applied on this server, but the fleet store did not take it (the
    /// other servers do not have it; try again).
    NotShared(String),
}

impl std::fmt::Display for ManualError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManualError::Range(e) => e.fmt(f),
            ManualError::Expired => f.write_str("the block has already ended"),
            ManualError::Unsupported => f.write_str("this backend keeps no manual bans"),
            ManualError::NotShared(e) => write!(
                f,
                "applied on this server only (until the fleet's set next changes), the fleet store did not take it: {e}; try again"
            ),
        }
    }
}

impl std::error::Error for ManualError {}

/// `reason` trimmed and cut to [`MAX_REASON`] bytes.
pub fn clean_reason(reason: &str) -> String {
    let r = reason.trim();
    let mut end = r.len().min(MAX_REASON);
    while !r.is_char_boundary(end) {
        end -= 1;
    }
    r[..end].chars().filter(|c| !c.is_control()).collect()
}

impl ManualBans {
    fn read(&self) -> RwLockReadGuard<'_, RangeSet<Vec<(Cidr, Held)>>> {
        // A panic under the lock leaves a consistent set (each change is
        // one call): go on with it.
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RangeSet<Vec<(Cidr, Held)>>> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the set under the write lock, then publish its size.
    fn change<T>(&self, f: impl FnOnce(&mut RangeSet<Vec<(Cidr, Held)>>) -> T) -> T {
        let mut set = self.write();
        let out = f(&mut set);
        self.count.store(set.len(), Ordering::Release);
        out
    }

    /// An empty set.
    pub fn new() -> ManualBans {
        ManualBans::default()
    }

    /// The decision for `ip` at `now_ms`, if a live manual decision holds
    /// it (the most specific one).
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Option<Decision> {
        if self.is_empty() {
            return None;
        }
        let set = self.read();
        if set.is_empty() {
            return None;
        }
        set.find(ip, |h| h.until_ms.is_none_or(|u| u > now_ms))
            .map(|(c, h)| to_ban(c, h).decision(now_ms))
    }

    /// Add or replace a decision; the one it replaced.
    pub fn add(&self, ban: ManualBan) -> Result<Option<ManualBan>, ManualError> {
        if self.read().len() >= MAX_MANUAL && self.get(&ban.range).is_none() {
            return Err(ManualError::Range(RangeError::Full));
        }
        let range = ban.range;
        let held = Held {
            until_ms: ban.until_ms,
            reason: clean_reason(&ban.reason),
            created_ms: ban.created_ms,
        };
        self.change(|set| set.insert(range, held))
            .map(|old| old.map(|h| to_ban(&range, &h)))
            .map_err(ManualError::Range)
    }

    /// Lift exactly `range`; what it was.
    pub fn remove(&self, range: &Cidr) -> Option<ManualBan> {
        self.change(|set| set.remove(range))
            .map(|h| to_ban(range, &h))
    }

    /// Exactly `range`'s decision.
    pub fn get(&self, range: &Cidr) -> Option<ManualBan> {
        self.read().get(range).map(|h| to_ban(range, h))
    }

    /// Every decision live at `now_ms`, most general first.
    pub fn list(&self, now_ms: u64) -> Vec<ManualBan> {
        self.read()
            .iter()
            .map(|(c, h)| to_ban(c, h))
            .filter(|b| b.live(now_ms))
            .collect()
    }

    /// Replace every decision with `bans` at once (a fleet server taking
    /// the fleet's set); how many were refused (too wide, too many).
    pub fn replace(&self, bans: impl IntoIterator<Item = ManualBan>) -> usize {
        let mut fresh: RangeSet<Vec<(Cidr, Held)>> = RangeSet::default();
        let mut refused = 0usize;
        for b in bans {
            let held = Held {
                until_ms: b.until_ms,
                reason: clean_reason(&b.reason),
                created_ms: b.created_ms,
            };
            if fresh.len() >= MAX_MANUAL || fresh.insert(b.range, held).is_err() {
                refused += 1;
            }
        }
        self.change(|set| *set = fresh);
        refused
    }

    /// Forget decisions that ended by `now_ms`; the ranges that went.
    pub fn purge(&self, now_ms: u64) -> Vec<Cidr> {
        let mut gone = Vec::new();
        self.change(|set| {
            set.retain(|c, h| {
                let keep = h.until_ms.is_none_or(|u| u > now_ms);
                if !keep {
                    gone.push(*c);
                }
                keep
            })
        });
        gone
    }

    /// Decisions held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether none is held (no lock taken: the request path's test).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }
}

fn to_ban(c: &Cidr, h: &Held) -> ManualBan {
    ManualBan {
        range: *c,
        until_ms: h.until_ms,
        reason: h.reason.clone(),
        created_ms: h.created_ms,
    }
}

/// Why [`parse_range`] refused its input (which each variant keeps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeParseError {
    /// Not an address or `addr/prefix`.
    Syntax {
        /// The input.
        input: String,
        /// What the core's parser said.
        source: portcullis_core::CidrError,
    },
    /// Wider than a manual decision may be (IPv4 /8, IPv6 /32).
    TooWide {
        /// The input.
        input: String,
    },
}

impl std::fmt::Display for RangeParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeParseError::Syntax { input, source } => write!(f, "{input:?}: {source}"),
            RangeParseError::TooWide { input } => write!(f, "{input:?}: {}", RangeError::TooWide),
        }
    }
}

impl std::error::Error for RangeParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RangeParseError::Syntax { source, .. } => Some(source),
            RangeParseError::TooWide { .. } => None,
        }
    }
}

/// `s` as a manual range: an address (`/32` or `/128`) or `addr/prefix`
/// within the manual limits (IPv4 /8–/32, IPv6 /32–/128). An IPv6 address
/// is taken whole (`/128`), not aggregated.
pub fn parse_range(s: &str) -> Result<Cidr, RangeParseError> {
    let c: Cidr = s.trim().parse().map_err(|source| RangeParseError::Syntax {
        input: s.to_string(),
        source,
    })?;
    if !RangeSet::<Vec<(Cidr, ())>>::allowed(&c) {
        return Err(RangeParseError::TooWide {
            input: s.to_string(),
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(range: &str, until_ms: Option<u64>, reason: &str) -> ManualBan {
        ManualBan {
            range: parse_range(range).unwrap(),
            until_ms,
            reason: reason.into(),
            created_ms: 0,
        }
    }

    #[test]
    fn ranges_and_addresses_block_and_ban_until_lifted_or_ended() {
        let m = ManualBans::new();
        m.add(ban("203.0.113.0/24", None, "scanner")).unwrap();
        m.add(ban("198.51.100.7", Some(10_000), "abuse")).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            m.check(ip("203.0.113.200"), 5).map(|d| d.reason()),
            Some(Some(Reason::Banned))
        );
        assert_eq!(
            m.check(ip("198.51.100.7"), 4_000),
            Some(Decision::Deny {
                reason: Reason::Blocked,
                retry_after: Duration::from_secs(6)
            })
        );
        assert_eq!(m.check(ip("198.51.100.7"), 10_000), None, "ended");
        assert_eq!(m.check(ip("198.51.100.8"), 0), None);
        assert_eq!(m.list(20_000).len(), 1);
        assert_eq!(m.purge(20_000), vec![parse_range("198.51.100.7").unwrap()]);
        assert_eq!(
            m.remove(&parse_range("203.0.113.0/24").unwrap())
                .map(|b| b.reason),
            Some("scanner".to_string())
        );
        assert_eq!(m.check(ip("203.0.113.200"), 5), None, "lifted");
    }

    #[test]
    fn limits_and_reasons_are_enforced() {
        assert!(parse_range("10.0.0.0/7").is_err());
        assert!(parse_range("2001:db8::/31").is_err());
        assert!(parse_range("10.0.0.0/8").is_ok());
        assert!(parse_range("not an address").is_err());
        let long = "é".repeat(300);
        assert!(clean_reason(&long).len() <= MAX_REASON);
        assert_eq!(clean_reason(" a\nb\u{7} "), "ab");
    }
}
