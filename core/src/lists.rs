//! Rule 9: CIDR allowlist (never limited) and denylist (always refused).
//!
//! Loopback is *not* exempt unless listed: exempting it would exempt
//! everyone behind a local reverse proxy. When an address is on both lists
//! the denylist wins.

use core::net::IpAddr;
use core::str::FromStr;

use crate::Duration;

use crate::decision::{Decision, Reason};
use crate::fixed_vec::{Blank, FixedVec};
use crate::key::{mask, Addr};

/// Most entries per list.
pub const MAX_LIST: usize = 32;

/// An address range, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cidr {
    /// Network in the 16-byte form (IPv4 mapped).
    net: [u8; 16],
    /// Prefix length in the 128-bit space (IPv4 /n is 96 + n).
    bits: u8,
}

/// A [`FixedVec`]'s filler: `::/0`, never read as an element.
impl Blank for Cidr {
    const BLANK: Self = Cidr {
        net: [0; 16],
        bits: 0,
    };
}

/// A CIDR that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IP address.
    BadAddress,
    /// The prefix is not a number in range (0–32 for IPv4, 0–128 for IPv6).
    BadPrefix,
}

impl core::fmt::Display for CidrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CidrError::BadAddress => "not an IP address",
            CidrError::BadPrefix => "prefix length out of range (0-32 for IPv4, 0-128 for IPv6)",
        })
    }
}

impl Cidr {
    /// `ip/prefix`; host bits are cleared.
    pub fn new(ip: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let (limit, offset) = match ip {
            IpAddr::V4(_) => (32u8, 96u8),
            IpAddr::V6(_) => (128, 0),
        };
        if prefix > limit {
            return Err(CidrError::BadPrefix);
        }
        let bits = prefix.saturating_add(offset);
        let addr = Addr::from_ip(ip, 128).octets();
        Ok(Cidr {
            net: mask(addr, bits),
            bits,
        })
    }

    /// Whether this is an IPv4 range (held as `::ffff:a.b.c.d/96+n`).
    pub fn is_ipv4(&self) -> bool {
        self.bits >= 96 && matches!(self.net, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ..])
    }

    /// The prefix length in its own family: `/24` for `192.0.2.0/24`.
    pub fn prefix(&self) -> u8 {
        if self.is_ipv4() {
            self.bits.saturating_sub(96)
        } else {
            self.bits
        }
    }

    /// The prefix length in the 128-bit space (IPv4 `/n` is `96 + n`).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The network, 16 bytes (IPv4 mapped), host bits clear.
    pub fn network(&self) -> [u8; 16] {
        self.net
    }

    /// The network address: `192.0.2.0` for `192.0.2.0/24`.
    pub fn addr(&self) -> IpAddr {
        Addr::from_octets(self.net).ip()
    }

    /// Whether the range holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        mask(Addr::from_ip(ip, 128).octets(), self.bits) == self.net
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip = IpAddr::from_str(a).map_err(|_| CidrError::BadAddress)?;
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| CidrError::BadPrefix)?,
            None if ip.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(ip, prefix)
    }
}

impl core::fmt::Display for Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix())
    }
}

/// The allow- and denylist, fixed capacity [`MAX_LIST`] each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Lists {
    /// Never limited.
    pub allow: FixedVec<Cidr, MAX_LIST>,
    /// Always refused.
    pub deny: FixedVec<Cidr, MAX_LIST>,
}

/// What the lists say about an address ([`Lists::lookup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Listed {
    /// On the allowlist (and not the denylist): never limited.
    Allow,
    /// On the denylist: always refused.
    Deny,
    /// On neither: the other rules decide.
    Neither,
}

impl Listed {
    /// The decision a listed address gets without counting anything: a
    /// denial forever for [`Deny`](Listed::Deny), for
    /// [`Allow`](Listed::Allow) an allowance with `remaining` (the full
    /// quota of the rule asked: `max_requests` or `max_failures`);
    /// `None` for [`Neither`](Listed::Neither).
    pub fn decision(self, remaining: u32) -> Option<Decision> {
        match self {
            Listed::Deny => Some(Decision::Deny {
                reason: Reason::Denylisted,
                retry_after: Duration::MAX,
            }),
            Listed::Allow => Some(Decision::Allow {
                remaining,
                reset_after: Duration::from_ticks(0),
            }),
            Listed::Neither => None,
        }
    }
}

impl Lists {
    /// Empty lists.
    pub const fn new() -> Lists {
        Lists {
            allow: FixedVec::new(),
            deny: FixedVec::new(),
        }
    }

    /// What the lists say about `ip`: deny first, then allow (rule 9).
    /// Empty lists (the common case) cost two length checks. Hosts that
    /// decide elsewhere (the Redis fleet) apply this before asking.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Listed {
        if self.deny.is_empty() && self.allow.is_empty() {
            return Listed::Neither;
        }
        self.search(&ip)
    }

    // By reference: the caller's address is not copied for a call that
    // empty lists never make.
    #[inline(never)]
    fn search(&self, ip: &IpAddr) -> Listed {
        let ip = *ip;
        if self.deny.iter().any(|c| c.contains(ip)) {
            Listed::Deny
        } else if self.allow.iter().any(|c| c.contains(ip)) {
            Listed::Allow
        } else {
            Listed::Neither
        }
    }
}

impl core::error::Error for CidrError {}
