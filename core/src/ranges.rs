//! Range decisions: a set of address ranges (an operator's manual bans of
//! an address or a CIDR range), each with a value, looked up on every
//! request without a scan.
//!
//! The ranges are kept sorted by (family, prefix length, network), with a
//! bitmask of the prefix lengths present. A lookup masks the address to
//! each present length, longest first, and binary-searches for that exact
//! range: `O(L · log n)` for `L` distinct lengths (at most 25 for IPv4,
//! 97 for IPv6; a handful in practice), never `O(n)`.
//!
//! Storage is a [`RangeStore`]: a fixed-capacity [`FixedVec`] (no
//! allocator, firmware) or, with feature `alloc`, a `Vec`.
//!
//! ```
//! use portcullis_core::{Cidr, FixedVec, RangeSet};
//! let mut bans: RangeSet<FixedVec<(Cidr, u32), 8>> = RangeSet::default();
//! bans.insert("203.0.113.0/24".parse().unwrap(), 1).unwrap();
//! bans.insert("203.0.113.9".parse().unwrap(), 2).unwrap();
//! let ip = "203.0.113.9".parse().unwrap();
//! // The most specific range first.
//! assert_eq!(bans.find(ip, |_| true).map(|(c, v)| (c.to_string(), *v)), Some(("203.0.113.9/32".into(), 2)));
//! assert_eq!(bans.find(ip, |&v| v != 2).map(|(_, v)| *v), Some(1));
//! assert!(bans.find("203.0.114.1".parse().unwrap(), |_| true).is_none());
//! ```

use core::cmp::Ordering;
use core::net::IpAddr;

use crate::fixed_vec::{Blank, FixedVec};
use crate::key::{mask, Addr};
use crate::lists::Cidr;

/// Shortest IPv4 prefix a manual range may have (`/8`).
pub const MIN_V4_PREFIX: u8 = 8;
/// Shortest IPv6 prefix a manual range may have (`/32`).
pub const MIN_V6_PREFIX: u8 = 32;

/// Why a range cannot be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RangeError {
    /// Wider than [`MIN_V4_PREFIX`] / [`MIN_V6_PREFIX`] allow.
    TooWide,
    /// The set is full.
    Full,
}

impl core::fmt::Display for RangeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RangeError::TooWide => "range too wide (IPv4 /8 to /32, IPv6 /32 to /128)",
            RangeError::Full => "too many ranges",
        })
    }
}

impl core::error::Error for RangeError {}

/// Where a [`RangeSet`] keeps its sorted ranges.
pub trait RangeStore {
    /// The value of each range.
    type Value;
    /// The ranges, sorted.
    fn slice(&self) -> &[(Cidr, Self::Value)];
    /// The ranges, sorted, for changing values in place.
    fn slice_mut(&mut self) -> &mut [(Cidr, Self::Value)];
    /// Insert at `i` (`i <= len`), or give the element back when full.
    fn insert_at(&mut self, i: usize, e: (Cidr, Self::Value)) -> Result<(), (Cidr, Self::Value)>;
    /// Remove and return the element at `i` (`i < len`).
    fn remove_at(&mut self, i: usize) -> Option<(Cidr, Self::Value)>;
}

impl<T: Blank, const N: usize> RangeStore for FixedVec<(Cidr, T), N> {
    type Value = T;
    fn slice(&self) -> &[(Cidr, T)] {
        self.as_slice()
    }
    fn slice_mut(&mut self) -> &mut [(Cidr, T)] {
        self.as_mut_slice()
    }
    fn insert_at(&mut self, i: usize, e: (Cidr, T)) -> Result<(), (Cidr, T)> {
        if i > self.len() {
            return Err(e);
        }
        self.insert(i, e)
    }
    fn remove_at(&mut self, i: usize) -> Option<(Cidr, T)> {
        self.remove(i)
    }
}

#[cfg(feature = "alloc")]
impl<T> RangeStore for alloc::vec::Vec<(Cidr, T)> {
    type Value = T;
    fn slice(&self) -> &[(Cidr, T)] {
        self.as_slice()
    }
    fn slice_mut(&mut self) -> &mut [(Cidr, T)] {
        self.as_mut_slice()
    }
    fn insert_at(&mut self, i: usize, e: (Cidr, T)) -> Result<(), (Cidr, T)> {
        if i > self.len() {
            return Err(e);
        }
        self.insert(i, e);
        Ok(())
    }
    fn remove_at(&mut self, i: usize) -> Option<(Cidr, T)> {
        (i < self.len()).then(|| self.remove(i))
    }
}

/// The sort key of a range: IPv4 first, then prefix length, then network.
fn order(a: &Cidr, b: &Cidr) -> Ordering {
    (!a.is_ipv4(), a.bits(), a.network()).cmp(&(!b.is_ipv4(), b.bits(), b.network()))
}

/// Prefix lengths (0–128, in the 128-bit space) present in a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lengths([u64; 3]);

impl Lengths {
    fn word(bits: u8) -> (usize, u64) {
        (usize::from(bits / 64), 1u64 << (bits % 64))
    }
    fn set(&mut self, bits: u8, on: bool) {
        let (w, m) = Self::word(bits);
        if let Some(x) = self.0.get_mut(w) {
            if on {
                *x |= m;
            } else {
                *x &= !m;
            }
        }
    }
    /// Present lengths, longest first.
    fn iter(self) -> impl Iterator<Item = u8> {
        (0..=128u8).rev().filter(move |&b| {
            let (w, m) = Self::word(b);
            self.0.get(w).is_some_and(|x| x & m != 0)
        })
    }
}

/// A sorted set of address ranges with a value each; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct RangeSet<S> {
    entries: S,
    v4: Lengths,
    v6: Lengths,
}

impl<S: RangeStore> RangeSet<S> {
    /// Whether `c` may be a manual range: IPv4 /8–/32, IPv6 /32–/128.
    pub fn allowed(c: &Cidr) -> bool {
        c.prefix()
            >= if c.is_ipv4() {
                MIN_V4_PREFIX
            } else {
                MIN_V6_PREFIX
            }
    }

    /// An empty set over `entries` (which must be empty).
    pub fn new(entries: S) -> Self {
        let mut s = RangeSet {
            entries,
            v4: Lengths::default(),
            v6: Lengths::default(),
        };
        s.relength();
        s
    }

    fn relength(&mut self) {
        self.v4 = Lengths::default();
        self.v6 = Lengths::default();
        for (c, _) in self.entries.slice() {
            let l = if c.is_ipv4() {
                &mut self.v4
            } else {
                &mut self.v6
            };
            l.set(c.bits(), true);
        }
    }

    fn position(&self, c: &Cidr) -> Result<usize, usize> {
        self.entries.slice().binary_search_by(|(x, _)| order(x, c))
    }

    /// Add `range` with `value`, or replace the value of that exact range
    /// (returning the old value).
    pub fn insert(&mut self, range: Cidr, value: S::Value) -> Result<Option<S::Value>, RangeError> {
        if !Self::allowed(&range) {
            return Err(RangeError::TooWide);
        }
        match self.position(&range) {
            Ok(i) => {
                let slot = self
                    .entries
                    .slice_mut()
                    .get_mut(i)
                    .ok_or(RangeError::Full)?;
                Ok(Some(core::mem::replace(&mut slot.1, value)))
            }
            Err(i) => {
                self.entries
                    .insert_at(i, (range, value))
                    .map_err(|_| RangeError::Full)?;
                let l = if range.is_ipv4() {
                    &mut self.v4
                } else {
                    &mut self.v6
                };
                l.set(range.bits(), true);
                Ok(None)
            }
        }
    }

    /// Remove exactly `range`; its value if it was there.
    pub fn remove(&mut self, range: &Cidr) -> Option<S::Value> {
        let i = self.position(range).ok()?;
        let (_, v) = self.entries.remove_at(i)?;
        let same = |c: &Cidr| c.is_ipv4() == range.is_ipv4() && c.bits() == range.bits();
        let s = self.entries.slice();
        let left = i
            .checked_sub(1)
            .and_then(|j| s.get(j))
            .is_some_and(|(c, _)| same(c));
        let right = s.get(i).is_some_and(|(c, _)| same(c));
        if !left && !right {
            let l = if range.is_ipv4() {
                &mut self.v4
            } else {
                &mut self.v6
            };
            l.set(range.bits(), false);
        }
        Some(v)
    }

    /// The value of exactly `range`.
    pub fn get(&self, range: &Cidr) -> Option<&S::Value> {
        let i = self.position(range).ok()?;
        self.entries.slice().get(i).map(|(_, v)| v)
    }

    /// The most specific range holding `ip` whose value `keep` accepts
    /// (e.g. one not yet expired), without a scan.
    pub fn find(
        &self,
        ip: IpAddr,
        mut keep: impl FnMut(&S::Value) -> bool,
    ) -> Option<&(Cidr, S::Value)> {
        if self.entries.slice().is_empty() {
            return None;
        }
        let a = Addr::from_ip(ip, 128);
        let v4 = a.ip().is_ipv4();
        let lengths = if v4 { self.v4 } else { self.v6 };
        let octets = a.octets();
        let s = self.entries.slice();
        for bits in lengths.iter() {
            let net = mask(octets, bits);
            let hit = s.binary_search_by(|(x, _)| {
                (!x.is_ipv4(), x.bits(), x.network()).cmp(&(!v4, bits, net))
            });
            if let Some(e @ (_, v)) = hit.ok().and_then(|i| s.get(i)) {
                if keep(v) {
                    return Some(e);
                }
            }
        }
        None
    }

    /// Every range and value, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &(Cidr, S::Value)> {
        self.entries.slice().iter()
    }

    /// Remove every range whose value `keep` refuses (e.g. expired ones);
    /// how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Cidr, &S::Value) -> bool) -> usize {
        let mut removed = 0usize;
        let mut i = 0usize;
        while let Some((c, v)) = self.entries.slice().get(i) {
            if keep(c, v) {
                i = i.saturating_add(1);
            } else if self.entries.remove_at(i).is_some() {
                removed = removed.saturating_add(1);
            } else {
                break;
            }
        }
        if removed > 0 {
            self.relength();
        }
        removed
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.entries.slice().len()
    }

    /// Whether no range is held.
    pub fn is_empty(&self) -> bool {
        self.entries.slice().is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    type Set = RangeSet<FixedVec<(Cidr, u8), 16>>;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn widths_outside_the_manual_limits_are_refused() {
        let mut s = Set::default();
        assert_eq!(s.insert(c("10.0.0.0/7"), 0), Err(RangeError::TooWide));
        assert_eq!(s.insert(c("2001:db8::/31"), 0), Err(RangeError::TooWide));
        assert_eq!(s.insert(c("10.0.0.0/8"), 0), Ok(None));
        assert_eq!(s.insert(c("2001:db8::/32"), 0), Ok(None));
        assert_eq!(s.insert(c("10.0.0.0/8"), 1), Ok(Some(0)), "replaced");
    }

    #[test]
    fn a_v6_range_never_holds_an_ipv4_address() {
        let mut s = Set::default();
        // ::/32 holds ::ffff:a.b.c.d in the 128-bit space; not as a family.
        s.insert(c("::/32"), 1).unwrap();
        assert!(s.find("192.0.2.1".parse().unwrap(), |_| true).is_none());
        assert!(s.find("::1".parse().unwrap(), |_| true).is_some());
    }

    #[test]
    fn removing_the_last_range_of_a_length_stops_looking_there() {
        let mut s = Set::default();
        s.insert(c("192.0.2.0/24"), 1).unwrap();
        s.insert(c("198.51.100.0/24"), 2).unwrap();
        assert_eq!(s.remove(&c("192.0.2.0/24")), Some(1));
        assert!(s.v4.iter().eq([120u8]));
        assert_eq!(s.remove(&c("198.51.100.0/24")), Some(2));
        assert_eq!(s.v4.iter().count(), 0);
        assert_eq!(s.remove(&c("198.51.100.0/24")), None);
    }

    #[test]
    fn a_full_set_says_so() {
        let mut s: RangeSet<FixedVec<(Cidr, u8), 1>> = RangeSet::default();
        s.insert(c("192.0.2.0/24"), 1).unwrap();
        assert_eq!(s.insert(c("192.0.3.0/24"), 1), Err(RangeError::Full));
    }
}
