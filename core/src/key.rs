//! Keys: what a limit is counted against, and the keyed hash behind them.
//!
//! An address key is an IPv4 address or an IPv6 address cut to a prefix
//! (default /64, since one host owns a whole /64). IPv4-mapped IPv6
//! addresses count as the IPv4 address. A username is trimmed, ASCII
//! lowercased and reduced to a 64-bit SipHash under a secret seed: the text
//! is never stored.

use core::hash::Hasher as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use siphasher::sip::SipHasher13;

/// A 128-bit secret from the platform's RNG that keys every hash.
///
/// Anyone who knows the seed can craft colliding keys, so it must be
/// random per deployment (and kept, if exported state is to be re-imported:
/// username hashes depend on it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed([u8; 16]);

impl Seed {
    /// A seed from 16 random bytes.
    pub const fn new(bytes: [u8; 16]) -> Self {
        Seed(bytes)
    }

    /// The raw bytes (for persisting alongside exported state).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Two 64-bit SipHash keys derived from the seed for one purpose.
    pub(crate) fn sip_keys(self, domain: u64) -> (u64, u64) {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = self.0;
        let k0 = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let k1 = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        (k0 ^ domain, k1.rotate_left(17) ^ domain)
    }
}

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(..)")
    }
}

/// Domain separators so table hashes and username hashes never coincide.
pub(crate) const DOMAIN_TABLE: u64 = 0x7461_626c_6500_0001;
pub(crate) const DOMAIN_USER: u64 = 0x7573_6572_0000_0002;

/// Keyed SipHash-1-3 hasher for usernames.
#[derive(Clone, Copy, Debug)]
pub struct UserHasher {
    k0: u64,
    k1: u64,
}

impl UserHasher {
    /// A hasher keyed by `seed`.
    pub fn new(seed: Seed) -> Self {
        let (k0, k1) = seed.sip_keys(DOMAIN_USER);
        UserHasher { k0, k1 }
    }

    /// The keyed hash of a username after normalisation (trim, ASCII
    /// lowercase). Two spellings that normalise alike hash alike.
    pub fn hash(&self, username: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        for b in username.trim().bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.write_u8(0xff);
        h.finish()
    }
}

/// Which rule a key is counted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum KeyKind {
    /// Requests from an address (rules 1–4).
    Request = 0,
    /// Login failures from an address (rule 5, the ip side) and its slots.
    LoginIp = 1,
    /// Login failures for a (username, address) pair (rule 5).
    LoginUser = 2,
    /// Login failures for a username across all addresses (rule 8).
    Account = 3,
}

impl KeyKind {
    /// All kinds, in tag order.
    pub const ALL: [KeyKind; 4] = [
        KeyKind::Request,
        KeyKind::LoginIp,
        KeyKind::LoginUser,
        KeyKind::Account,
    ];

    /// The numeric tag used in exported records.
    pub const fn tag(self) -> u8 {
        self as u8
    }

    /// The kind for a numeric tag.
    pub fn from_tag(tag: u8) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// A short stable name (`request`, `login_ip`, `login_user`, `account`).
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::Request => "request",
            KeyKind::LoginIp => "login_ip",
            KeyKind::LoginUser => "login_user",
            KeyKind::Account => "account",
        }
    }
}

/// An address after aggregation, as 16 bytes (IPv4 in the IPv4-mapped form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Addr([u8; 16]);

impl Addr {
    /// The unspecified address, used by keys that carry no address.
    pub const NONE: Addr = Addr([0; 16]);

    /// Aggregate `ip`: IPv4 (and IPv4-mapped IPv6) kept whole, other IPv6
    /// cut to its first `v6_prefix` bits.
    #[inline]
    pub fn from_ip(ip: IpAddr, v6_prefix: u8) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::mapped(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Addr::mapped(v4),
                None => Addr(mask(v6.octets(), v6_prefix)),
            },
        }
    }

    /// [`from_ip`](Self::from_ip) with the IPv6 branch out of line, for
    /// the request path: inlined, the IPv4 path reads only its four bytes.
    /// `ip` by value and never borrowed, so the caller's copy of it folds
    /// away (borrowed, it was copied to the stack first); both branches
    /// give a number, which comes back in registers (an `Addr` from the
    /// out-of-line branch came back through memory).
    #[inline]
    pub(crate) fn from_ip_split(ip: IpAddr, v6_prefix: u8) -> Addr {
        let a = match ip {
            IpAddr::V4(v4) => Addr::mapped_word(v4),
            IpAddr::V6(v6) => Addr::from_v6(&v6, v6_prefix),
        };
        Addr(a.to_be_bytes())
    }

    #[inline(never)]
    fn from_v6(v6: &Ipv6Addr, v6_prefix: u8) -> u128 {
        u128::from_be_bytes(Addr::from_ip(IpAddr::V6(*v6), v6_prefix).0)
    }

    /// `::ffff:a.b.c.d` (as one 128-bit word: the byte-wise
    /// `to_ipv6_mapped` costs four times the instructions on the hot path).
    #[inline]
    fn mapped(v4: Ipv4Addr) -> Addr {
        Addr(Addr::mapped_word(v4).to_be_bytes())
    }

    /// [`mapped`](Self::mapped) as the number it spells.
    #[inline]
    fn mapped_word(v4: Ipv4Addr) -> u128 {
        0xffff_u128 << 32 | u128::from(u32::from(v4))
    }

    /// The address as its high and low 64-bit halves (big-endian, as
    /// the number it spells): the growable table's compact key.
    #[cfg(feature = "alloc")]
    #[inline]
    pub(crate) fn halves(&self) -> (u64, u64) {
        let (hi, lo) = self.0.split_at(8);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        (word(hi), word(lo))
    }

    /// The raw 16 bytes.
    pub const fn octets(self) -> [u8; 16] {
        self.0
    }

    /// From raw bytes (as exported).
    pub const fn from_octets(o: [u8; 16]) -> Addr {
        Addr(o)
    }

    /// Back to an address: IPv4 for mapped addresses, else the IPv6 prefix.
    pub fn ip(self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

/// Keep the first `bits` bits of `o`.
pub(crate) fn mask(o: [u8; 16], bits: u8) -> [u8; 16] {
    let keep = u128::from_be_bytes(o);
    let bits = u32::from(bits.min(128));
    let m = u128::MAX
        .checked_shl(128u32.saturating_sub(bits))
        .unwrap_or(0);
    (keep & m).to_be_bytes()
}

/// A table key: a kind, an aggregated address and a username hash.
///
/// 25 bytes with alignment 1 (the hash is kept as big-endian bytes, which
/// order like the number), so a table node does not pay for padding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Key {
    kind: KeyKind,
    addr: Addr,
    user: [u8; 8],
}

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("user", &self.user())
            .finish()
    }
}

/// Hashes the key's 25 bytes in one write (the derive would feed 40 bytes
/// in four writes).
impl core::hash::Hash for Key {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        h.write(&self.bytes());
    }
}

impl Key {
    /// Requests from an address.
    pub const fn request(addr: Addr) -> Key {
        Key {
            kind: KeyKind::Request,
            addr,
            user: [0; 8],
        }
    }

    /// Login failures from an address.
    pub const fn login_ip(addr: Addr) -> Key {
        Key {
            kind: KeyKind::LoginIp,
            addr,
            user: [0; 8],
        }
    }

    /// Login failures for (username hash, address).
    pub const fn login_user(user: u64, addr: Addr) -> Key {
        Key {
            kind: KeyKind::LoginUser,
            addr,
            user: user.to_be_bytes(),
        }
    }

    /// Login failures for a username hash from anywhere.
    pub const fn account(user: u64) -> Key {
        Key {
            kind: KeyKind::Account,
            addr: Addr::NONE,
            user: user.to_be_bytes(),
        }
    }

    /// Rebuild a key from exported parts, refusing combinations no
    /// constructor makes.
    pub fn from_parts(kind: KeyKind, addr: Addr, user: u64) -> Option<Key> {
        let ok = match kind {
            KeyKind::Request | KeyKind::LoginIp => user == 0,
            KeyKind::LoginUser => true,
            KeyKind::Account => addr == Addr::NONE,
        };
        ok.then_some(Key {
            kind,
            addr,
            user: user.to_be_bytes(),
        })
    }

    /// The rule this key is counted for.
    pub const fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The aggregated address ([`Addr::NONE`] for account keys).
    pub const fn addr(&self) -> Addr {
        self.addr
    }

    /// The key as 25 bytes: address, username hash, kind tag.
    pub fn bytes(&self) -> [u8; 25] {
        let mut b = [0u8; 25];
        if let Some((addr, rest)) = b.split_first_chunk_mut::<16>() {
            *addr = self.addr.0;
            if let Some((user, rest)) = rest.split_first_chunk_mut::<8>() {
                *user = self.user;
                if let Some(tag) = rest.first_mut() {
                    *tag = self.kind.tag();
                }
            }
        }
        b
    }

    /// The username hash (0 for address-only keys).
    pub const fn user(&self) -> u64 {
        u64::from_be_bytes(self.user)
    }
}

/// Keyed SipHash over keys, for the tables.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    /// A hasher keyed by `seed`.
    pub fn new(seed: Seed) -> Self {
        let (k0, k1) = seed.sip_keys(DOMAIN_TABLE);
        KeyHasher { k0, k1 }
    }

    /// The keyed hash of `key`.
    pub fn hash(&self, key: &Key) -> u64 {
        // The one-shot form: no streaming buffer bookkeeping.
        SipHasher13::new_with_keys(self.k0, self.k1).hash(&key.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise mapping equals the standard library's, both ways.
    #[test]
    fn ipv4_maps_as_std_does() {
        for v in [0u32, 1, 0x0a09_0909, 0xc000_0201, u32::MAX] {
            let v4 = Ipv4Addr::from(v);
            let want = v4.to_ipv6_mapped().octets();
            assert_eq!(Addr::from_ip(IpAddr::V4(v4), 64).octets(), want);
            let via_v6 = IpAddr::V6(v4.to_ipv6_mapped());
            assert_eq!(Addr::from_ip(via_v6, 64).octets(), want);
            assert_eq!(Addr::from_ip(IpAddr::V4(v4), 64).ip(), IpAddr::V4(v4));
        }
    }

    /// The request path's address (`from_ip_split`) is the one every other
    /// lookup builds (`from_ip`): a ban recorded under one is found under
    /// the other, for IPv4, IPv4-mapped IPv6 and IPv6 at every prefix.
    #[test]
    fn the_request_paths_address_is_from_ips() {
        let v6: [Ipv6Addr; 4] = [
            Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xaaaa, 0xbbbb, 0xcccc, 0xdddd),
            Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
            Ipv6Addr::UNSPECIFIED,
            Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(),
        ];
        let v4 = [
            Ipv4Addr::new(192, 0, 2, 7),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
        ];
        let ips = v6
            .iter()
            .map(|a| IpAddr::V6(*a))
            .chain(v4.iter().map(|a| IpAddr::V4(*a)));
        for ip in ips {
            for prefix in 0..=128u8 {
                assert_eq!(
                    Addr::from_ip_split(ip, prefix),
                    Addr::from_ip(ip, prefix),
                    "{ip} /{prefix}"
                );
            }
        }
    }
}
