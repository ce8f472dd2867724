//! What the kernel should hold: [`Element`]s (a set and an address or
//! prefix) with the Unix millisecond their hold ends (`None`: until
//! lifted), computed from the store's holds ([`Hold`]) and manual
//! decisions ([`ManualBan`]), and the difference between two such states.
//!
//! Four sets, so no set ever holds overlapping intervals (nft refuses an
//! element that overlaps another in an interval set): single IPv4
//! addresses; IPv6 holds, each its aggregated prefix (`/64` by default,
//! all of one length, so disjoint); and the manual ranges of each family,
//! of which only the widest are kept ([`ranges`]): a range inside another
//! waits, outside the kernel, until the wider one goes.

use std::collections::HashMap;
use std::net::IpAddr;

use portcullis::Hold;
use portcullis::ManualBan;
use portcullis::{Cidr, Reason};

/// Which of portcullis's four sets an element belongs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    /// Single IPv4 addresses (holds of the rules).
    Addr4,
    /// IPv6 prefixes of the rules' aggregation length.
    Addr6,
    /// Manual IPv4 ranges.
    Range4,
    /// Manual IPv6 ranges.
    Range6,
}

impl SetKind {
    /// All four, in the order the rules are written.
    pub const ALL: [SetKind; 4] = [
        SetKind::Addr4,
        SetKind::Addr6,
        SetKind::Range4,
        SetKind::Range6,
    ];

    /// Whether the set holds IPv4 addresses.
    pub fn v4(self) -> bool {
        matches!(self, SetKind::Addr4 | SetKind::Range4)
    }

    /// Whether the set holds manual ranges.
    pub fn ranges(self) -> bool {
        matches!(self, SetKind::Range4 | SetKind::Range6)
    }

    /// Whether the set is an interval set (prefixes as elements).
    pub fn interval(self) -> bool {
        self != SetKind::Addr4
    }
}

/// One set element: an address (`/32`) or a prefix, in its set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// Its set.
    pub set: SetKind,
    /// The network address (host bits clear).
    pub ip: IpAddr,
    /// The prefix length in its own family.
    pub len: u8,
}

impl Element {
    /// A manual range's element.
    pub fn range(c: &Cidr) -> Element {
        let ip = c.addr();
        Element {
            set: if ip.is_ipv4() {
                SetKind::Range4
            } else {
                SetKind::Range6
            },
            ip,
            len: c.prefix(),
        }
    }

    /// A rule's hold on `ip` (already aggregated by the store, or not:
    /// IPv6 is cut to `v6_prefix` here).
    pub fn hold(ip: IpAddr, v6_prefix: u8) -> Element {
        // An IPv4-mapped client of a dual-stack listener is an IPv4 packet
        // to the kernel: its element is the IPv4 address, not `::/64`.
        let ip = ip.to_canonical();
        match ip {
            IpAddr::V4(_) => Element {
                set: SetKind::Addr4,
                ip,
                len: 32,
            },
            IpAddr::V6(_) => {
                let (ip, len) = match Cidr::new(ip, v6_prefix.min(128)) {
                    Ok(c) => (c.addr(), c.prefix()),
                    Err(_) => (ip, 128),
                };
                Element {
                    set: SetKind::Addr6,
                    ip,
                    len,
                }
            }
        }
    }
}

/// When a hold ends (Unix ms); `None`: until lifted.
pub type Until = Option<u64>;

/// The longer of two holds on one element.
pub fn longer(a: Until, b: Until) -> Until {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        _ => None,
    }
}

/// A state of the sets: each element with the end of its hold.
pub type State = HashMap<Element, Until>;

/// Whether a hold of `reason` is mirrored (`locks`: address locks too).
pub fn mirrored(reason: Reason, locks: bool) -> bool {
    match reason {
        Reason::Banned | Reason::Blocked => true,
        Reason::IpLocked => locks,
        _ => false,
    }
}

/// The rules' holds as elements, at `now_ms`.
pub fn holds(bans: &[Hold], now_ms: u64, v6_prefix: u8, locks: bool) -> State {
    let mut out = State::new();
    for b in bans.iter().filter(|b| mirrored(b.reason, locks)) {
        let until = b
            .left
            .map(|l| now_ms.saturating_add(l.as_millis()))
            .filter(|_| b.reason != Reason::Banned);
        let e = Element::hold(b.addr.ip(), v6_prefix);
        let merged = match out.get(&e) {
            Some(old) => longer(*old, until),
            None => until,
        };
        out.insert(e, merged);
    }
    out
}

/// The manual decisions live at `now_ms`, the widest of each family only,
/// and the earliest end among the wide ones that hide a narrower one (when
/// the narrower must be put in the kernel).
pub fn ranges(manual: &[ManualBan], now_ms: u64) -> (State, Option<u64>) {
    let mut live: Vec<&ManualBan> = manual.iter().filter(|b| b.live(now_ms)).collect();
    // Widest first, so a range is kept only if no kept one holds it.
    live.sort_by_key(|b| (b.range.bits(), b.range.network()));
    let mut kept: Vec<(Cidr, Until)> = Vec::new();
    let mut wake: Option<u64> = None;
    let mut lens: Vec<u8> = Vec::new();
    let mut by_net: HashMap<(u8, [u8; 16]), usize> = HashMap::new();
    for b in live {
        let r = b.range;
        let outer = lens.iter().find_map(|&bits| {
            let c = Cidr::new(Element::range(&r).ip, bits_in_family(&r, bits)?).ok()?;
            by_net.get(&(bits, c.network())).copied()
        });
        match outer {
            Some(i) => {
                let (_, end) = kept[i];
                if let Some(end) = end {
                    wake = Some(wake.map_or(end, |w| w.min(end)));
                }
            }
            None => {
                if !lens.contains(&r.bits()) {
                    lens.push(r.bits());
                }
                by_net.insert((r.bits(), r.network()), kept.len());
                kept.push((r, b.until_ms));
            }
        }
    }
    let state = kept
        .iter()
        .map(|(c, until)| (Element::range(c), *until))
        .collect();
    (state, wake)
}

/// A 128-bit prefix length `bits` as a length in `r`'s own family, if it
/// is no longer than `r`'s (and of its family).
fn bits_in_family(r: &Cidr, bits: u8) -> Option<u8> {
    if bits > r.bits() {
        return None;
    }
    if r.is_ipv4() {
        bits.checked_sub(96)
    } else {
        Some(bits)
    }
}

/// How far apart two ends may be before the kernel's is fixed (the kernel
/// keeps whole seconds; the store milliseconds).
pub const SLACK_MS: u64 = 2_000;

/// Whether a kernel element ending at `have` serves a hold ending at `want`.
pub fn agrees(have: Until, want: Until) -> bool {
    match (have, want) {
        (None, None) => true,
        (Some(h), Some(w)) => h.abs_diff(w) <= SLACK_MS,
        _ => false,
    }
}

/// What turns `have` into `want` at `now_ms`: elements to put (new, or
/// with another end) and elements to take out. Elements of `have` that
/// ended by `now_ms` are gone from the kernel already.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Put in with this end; `replace`: it is there with another end.
    pub put: Vec<(Element, Until, bool)>,
    /// Take out.
    pub remove: Vec<Element>,
}

impl Diff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }

    /// Elements it changes.
    pub fn len(&self) -> usize {
        self.put.len() + self.remove.len()
    }
}

/// The [`Diff`] from `have` to `want` at `now_ms`.
pub fn diff(have: &State, want: &State, now_ms: u64) -> Diff {
    let live = |u: &Until| u.is_none_or(|end| end > now_ms.saturating_add(SLACK_MS / 2));
    let mut d = Diff::default();
    for (e, w) in want.iter().filter(|(_, w)| live(w)) {
        match have.get(e) {
            Some(h) if agrees(*h, *w) => {}
            Some(h) => d.put.push((*e, *w, h.is_none_or(|end| end > now_ms))),
            None => d.put.push((*e, *w, false)),
        }
    }
    for (e, h) in have {
        if !want.contains_key(e) && h.is_none_or(|end| end > now_ms) {
            d.remove.push(*e);
        }
    }
    d.put.sort();
    d.remove.sort();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis::parse_range;
    use portcullis::Duration;
    use portcullis::KeyKind;

    fn ban(range: &str, until_ms: Option<u64>) -> ManualBan {
        ManualBan {
            range: parse_range(range).unwrap(),
            until_ms,
            reason: String::new(),
            created_ms: 0,
        }
    }

    #[test]
    fn holds_keep_the_ipv6_prefix_and_the_longer_end() {
        let info = |ip: &str, reason, left: Option<u64>| Hold {
            addr: portcullis::Addr::from_ip(ip.parse().unwrap(), 128),
            kind: KeyKind::Request,
            reason,
            left: left.map(Duration::from_secs),
        };
        let bans = [
            info("192.0.2.1", Reason::Blocked, Some(60)),
            info("192.0.2.1", Reason::IpLocked, Some(300)),
            info("2001:db8:1:2:3::9", Reason::Banned, None),
            info("192.0.2.9", Reason::PairLocked, Some(60)),
        ];
        let s = holds(&bans, 1_000, 64, true);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[&Element::hold("192.0.2.1".parse().unwrap(), 64)],
            Some(301_000)
        );
        let v6 = Element::hold("2001:db8:1:2::".parse().unwrap(), 64);
        assert_eq!((v6.set, v6.len), (SetKind::Addr6, 64));
        assert_eq!(s[&v6], None);
        // A mapped client of a dual-stack listener is its IPv4 address.
        let mapped = Element::hold("::ffff:192.0.2.1".parse().unwrap(), 64);
        assert_eq!(mapped, Element::hold("192.0.2.1".parse().unwrap(), 64));
        assert_eq!((mapped.set, mapped.len), (SetKind::Addr4, 32));
        let no_locks = holds(&bans, 1_000, 64, false);
        assert_eq!(
            no_locks[&Element::hold("192.0.2.1".parse().unwrap(), 64)],
            Some(61_000)
        );
    }

    #[test]
    fn only_the_widest_ranges_go_in_and_a_wake_up_when_one_ends() {
        let manual = [
            ban("10.1.2.0/24", None),
            ban("10.1.0.0/16", Some(50_000)),
            ban("10.2.0.0/16", None),
            ban("2001:db8::/48", None),
            ban("2001:db8::1", None),
            ban("10.9.9.9", Some(500)), // ended
        ];
        let (s, wake) = ranges(&manual, 1_000);
        let mut got: Vec<String> = s.keys().map(|e| format!("{}/{}", e.ip, e.len)).collect();
        got.sort();
        assert_eq!(got, ["10.1.0.0/16", "10.2.0.0/16", "2001:db8::/48"]);
        assert_eq!(wake, Some(50_000));
        let (s, _) = ranges(&manual, 60_000);
        assert!(s.contains_key(&Element::range(&parse_range("10.1.2.0/24").unwrap())));
    }

    #[test]
    fn diff_puts_removes_and_replaces() {
        let e = |s: &str| Element::hold(s.parse().unwrap(), 64);
        let have: State = [
            (e("192.0.2.1"), Some(10_000)),
            (e("192.0.2.2"), None),
            (e("192.0.2.3"), Some(500)),
        ]
        .into();
        let want: State = [(e("192.0.2.1"), None), (e("192.0.2.4"), Some(9_000))].into();
        let d = diff(&have, &want, 1_000);
        assert_eq!(
            d.put,
            vec![
                (e("192.0.2.1"), None, true),
                (e("192.0.2.4"), Some(9_000), false)
            ]
        );
        assert_eq!(
            d.remove,
            vec![e("192.0.2.2")],
            "192.0.2.3 ended in the kernel by itself"
        );
        assert!(diff(&want, &want, 1_000).is_empty());
    }
}
