//! [`HeldDenial`]: one shard's standing denial, readable without the
//! shard's lock.
//!
//! A client hammering one address is refused the same way, counting down,
//! until its block ends, its window frees up, its next violation is due,
//! or anything else changes the shard; the core finds that denial and how
//! long it holds ([`MapLimiter::standing_denial`]). A shard keeps the last
//! one here, in atomics behind a sequence number (a seqlock), so requests
//! from that address are answered with a few loads of a line only this
//! cell writes, instead of taking the shard's lock, whose line every core
//! would pass around. Every exclusive lock of the shard clears it before
//! anything changes, so an answer read here is one the limiter would have
//! given just before that write.
//!
//! [`MapLimiter::standing_denial`]: portcullis_core::Limiter::standing_denial
//!
//! The cell is keyed by the whole address (its 16 bytes as two words), not
//! by a hash of it: two addresses never share an answer.
//!
//! ```text
//! // (crate-private: the unit tests below run this)
//! use crate::held::HeldDenial;
//! let cell = HeldDenial::default();
//! let addr = Addr::from_ip("192.0.2.1".parse().unwrap(), 64);
//! assert!(cell.get(addr).is_none()); // nothing held
//! cell.clear();
//! assert!(cell.get(addr).is_none());
//! ```

use std::sync::atomic::{fence, AtomicU64, Ordering};

use portcullis_core::{Addr, StandingDenial};

/// A seqlock cell holding one address's [`StandingDenial`] (on a cache line
/// of its own).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct HeldDenial {
    /// Even: stable; odd: being written.
    seq: AtomicU64,
    /// 1 while a denial is held.
    present: AtomicU64,
    /// The address it is for, as two words.
    addr: [AtomicU64; 2],
    words: [AtomicU64; 4],
}

/// An address as two words (a bijection of its 16 bytes).
#[inline]
pub(crate) fn words_of(addr: Addr) -> [u64; 2] {
    let o = addr.octets();
    let (hi, lo) = o.split_at(8);
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    [word(hi), word(lo)]
}

impl HeldDenial {
    /// The denial held for `addr`, if any.
    #[inline]
    pub fn get(&self, addr: Addr) -> Option<StandingDenial> {
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 != 0 {
            return None;
        }
        let present = self.present.load(Ordering::Relaxed);
        let held = [0, 1].map(|i| self.addr[i].load(Ordering::Relaxed));
        let words = [0, 1, 2, 3].map(|i| self.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before || present != 1 || held != words_of(addr) {
            return None;
        }
        StandingDenial::from_words(words)
    }

    /// Hold `denial` for `addr`. Call with the shard locked (shared is
    /// enough): nothing may have changed since the core found `denial`.
    /// Two callers at once: one wins, the other skips.
    pub fn set(&self, addr: Addr, denial: &StandingDenial) {
        self.write(|cell| {
            for (w, v) in cell.words.iter().zip(denial.to_words()) {
                w.store(v, Ordering::Relaxed);
            }
            for (w, v) in cell.addr.iter().zip(words_of(addr)) {
                w.store(v, Ordering::Relaxed);
            }
            cell.present.store(1, Ordering::Relaxed);
        });
    }

    /// Forget the denial held. Call with the shard locked exclusively,
    /// before changing it.
    pub fn clear(&self) {
        // Under the exclusive lock nobody else writes: a plain load tells
        // whether there is anything to clear (the common case is not).
        if self.present.load(Ordering::Relaxed) != 0 {
            self.write(|cell| cell.present.store(0, Ordering::Relaxed));
        }
    }

    /// Run `f` as the one writer, if no other is at it.
    fn write(&self, f: impl FnOnce(&Self)) {
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 != 0
            || self
                .seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        f(self);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::Instant;
    use portcullis_core::{Config, FixedLimiter, Seed};

    fn addr(s: &str) -> Addr {
        Addr::from_ip(s.parse().unwrap(), 64)
    }
    use std::net::IpAddr;

    fn denial() -> StandingDenial {
        let mut c = Config::default();
        c.requests.max_requests = 1;
        c.clamp_lookbacks(portcullis_core::FIXED_MAX_SPAN);
        let mut l: FixedLimiter<8, 64> = FixedLimiter::new(c, Seed::new([1; 16])).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::from_secs(100);
        assert!(l.check_request(ip, t).is_allowed());
        assert!(!l.check_request(ip, t).is_allowed()); // first violation
        l.standing_denial(ip, t).expect("a standing denial")
    }

    #[test]
    fn holds_one_address_until_cleared() {
        let cell = HeldDenial::default();
        let d = denial();
        let (a, b) = (addr("192.0.2.1"), addr("192.0.2.2"));
        cell.set(a, &d);
        assert_eq!(cell.get(a), Some(d));
        assert_eq!(cell.get(b), None);
        cell.clear();
        assert_eq!(cell.get(a), None);
    }

    /// Addresses whose 64-bit folds agree (the host's denial hint) are
    /// still told apart: /64 prefixes that differ in one bit of the high
    /// word, which `(lo ^ hi.rotate_left(32)) | 1` maps to one value.
    #[test]
    fn addresses_with_one_hint_do_not_share_a_denial() {
        let cell = HeldDenial::default();
        let d = denial();
        let (a, b) = (addr("2001:db8::1"), addr("2001:db8:100::1"));
        let fold = |x: Addr| {
            let [hi, lo] = words_of(x);
            (lo ^ hi.rotate_left(32)) | 1
        };
        assert_ne!(words_of(a), words_of(b));
        if cfg!(target_endian = "little") {
            assert_eq!(fold(a), fold(b), "the example should collide");
        }
        cell.set(a, &d);
        assert_eq!(cell.get(a), Some(d));
        assert_eq!(cell.get(b), None);
    }

    /// Readers racing a writer see either a whole denial for their mark or
    /// nothing, never a mix of two.
    #[test]
    fn readers_never_see_a_torn_write() {
        let cell = HeldDenial::default();
        let d = denial();
        let mut other = d.to_words();
        other[2] = other[2].wrapping_add(12_345);
        let e = StandingDenial::from_words(other).unwrap();
        let nine = addr("192.0.2.9");
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200_000u64 {
                    if i % 3 == 0 {
                        cell.clear();
                    } else {
                        cell.set(nine, if i % 2 == 0 { &d } else { &e });
                    }
                }
            });
            s.spawn(|| {
                let mut seen = 0u32;
                for _ in 0..200_000 {
                    if let Some(x) = cell.get(nine) {
                        assert!(x == d || x == e, "torn: {x:?}");
                        seen += 1;
                    }
                }
                // Not asserted > 0: the writer may finish before the reader starts.
                let _ = seen;
            });
        });
    }
}
