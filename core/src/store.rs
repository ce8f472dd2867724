//! The storage trait behind a limiter: a map from [`Key`] to [`Entry`] that
//! also chooses which entry gives way when it is full.
//!
//! Two backends: [`FixedStore`](crate::internals::FixedStore) (fixed array, no
//! allocator, the default) and, with the `alloc` feature,
//! [`MapStore`](crate::internals::MapStore) (grows up to a run-time cap).
//! Both run the same tests.
//!
//! # Eviction
//!
//! No recency order is kept. Each entry has a reference bit, set when it is
//! touched, and the store has a CLOCK hand over its slots. A new key in a
//! full store makes the hand sweep; the caller's classifier says of each
//! entry it meets whether it is [`Pinned`](Class::Pinned) (never evicted),
//! [`Dead`](Class::Dead) (its state can no longer affect a decision) or
//! [`Live`](Class::Live):
//!
//! 1. the first dead entry among the next [`SCAN`] entries from the hand
//!    is reclaimed (counted as [`Victim::Dead`]);
//! 2. only if all of those are pinned or live is a live entry evicted
//!    ([`Victim::Live`]): the first of them whose reference bit was already
//!    clear (CLOCK's second chance: the hand clears the bits of the live
//!    entries it passes before that one); if every one had its bit set,
//!    the hand goes on (clearing bits, still reclaiming any dead entry
//!    first) until it finds one, at most two turns;
//! 3. if every entry is pinned, nothing is evicted: [`Upsert::Full`].
//!
//! So a live entry is evicted only when no dead one lies within [`SCAN`]
//! entries of the hand and it was not touched for a whole turn of the hand;
//! a store of at most [`SCAN`] entries always reclaims a dead entry before
//! any live one. Why CLOCK rather than a random sample: the hand walks the
//! slots in memory order (sequential reads the prefetcher follows, where a
//! sample costs one cache miss per candidate), it needs no random source
//! in `no_std`, every slot is met once per turn so no dead entry is missed
//! for longer than a turn, and a touch is one bit set in the line the
//! lookup already read (the exact LRU list it replaces dirtied two
//! neighbours, or appended to a queue that needed compaction).

use crate::config::Config;
use crate::entry::{ColdPart, Entry, EntryMut, EntryRef};
use crate::key::Key;
use crate::window::TimeLog;

/// A stride near `n` / φ that is coprime with `n` (1 for `n` ≤ 2): a
/// hand stepping by it meets every one of `n` positions once per turn.
pub(crate) const fn coprime_stride(n: usize) -> usize {
    if n <= 2 {
        return 1;
    }
    // n * 0.618, without overflow for any n.
    let whole = (n / 1000).saturating_mul(618);
    let part = (n % 1000).wrapping_mul(618) / 1000;
    let mut s = whole.saturating_add(part);
    if s == 0 {
        s = 1;
    }
    while s > 1 && gcd(s, n) != 1 {
        s = s.wrapping_sub(1);
    }
    s
}

const fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let r = match a.checked_rem(b) {
            Some(r) => r,
            None => 0,
        };
        a = b;
        b = r;
    }
    a
}

/// Entries examined for a dead one before a live one may be evicted.
pub const SCAN: usize = 32;

/// What an entry is to eviction (the limiter's classifier decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Holds a ban, block, lock or live slot: never evicted.
    Pinned,
    /// Its state can no longer affect any decision: reclaimed first.
    Dead,
    /// Anything else: evicted only when no dead entry is found.
    Live,
}

/// Which kind of entry gave way to a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Victim {
    /// A dead entry was reclaimed (changes no decision).
    Dead,
    /// A live entry was evicted (may change a later decision).
    Live,
}

/// Where a limiter over a store reads the values every request reads
/// besides the store (`requests.max_requests`, `requests.window`,
/// `ipv6_prefix`, whether `lists` are set) and whether its set of
/// changed keys holds anything: a copy beside its clock ([`HotCopy`], 16
/// bytes: the growable table, where the configuration's lines are more
/// cache misses per decision) or the configuration and the set
/// themselves ([`HotInConfig`], no bytes: the fixed tables, whose size is
/// their budget).
pub trait HotRules: Copy + core::fmt::Debug {
    /// What to keep of `c`, nothing changed.
    fn of(c: &Config) -> Self;
    /// `(max_requests, window in ticks)` under `c` (the configuration
    /// this was made of).
    fn requests(&self, c: &Config) -> (u32, u64);
    /// `ipv6_prefix` under `c`.
    fn ipv6_prefix(&self, c: &Config) -> u8;
    /// Whether `c`'s lists hold anything.
    fn lists(&self, c: &Config) -> bool;
    /// Whether the changed set holds anything, if kept here (`None`: ask
    /// the set).
    fn dirty(&self) -> Option<bool>;
    /// Note whether the changed set holds anything.
    fn set_dirty(&mut self, dirty: bool);
}

/// The hot values read from the configuration (no copy).
#[derive(Clone, Copy, Debug)]
pub struct HotInConfig;

impl HotRules for HotInConfig {
    fn of(_: &Config) -> Self {
        HotInConfig
    }
    fn requests(&self, c: &Config) -> (u32, u64) {
        (c.requests.max_requests, c.requests.window.as_ticks())
    }
    fn ipv6_prefix(&self, c: &Config) -> u8 {
        c.ipv6_prefix
    }
    fn lists(&self, c: &Config) -> bool {
        !(c.lists.deny.is_empty() && c.lists.allow.is_empty())
    }
    fn dirty(&self) -> Option<bool> {
        None
    }
    fn set_dirty(&mut self, _: bool) {}
}

/// The hot values copied beside the limiter's clock.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub struct HotCopy {
    window: u64,
    max_requests: u32,
    ipv6_prefix: u8,
    lists: bool,
    dirty: bool,
}

impl HotRules for HotCopy {
    fn of(c: &Config) -> Self {
        HotCopy {
            window: c.requests.window.as_ticks(),
            max_requests: c.requests.max_requests,
            ipv6_prefix: c.ipv6_prefix,
            lists: HotInConfig.lists(c),
            dirty: false,
        }
    }
    fn requests(&self, _: &Config) -> (u32, u64) {
        (self.max_requests, self.window)
    }
    fn ipv6_prefix(&self, _: &Config) -> u8 {
        self.ipv6_prefix
    }
    fn lists(&self, _: &Config) -> bool {
        self.lists
    }
    fn dirty(&self) -> Option<bool> {
        Some(self.dirty)
    }
    fn set_dirty(&mut self, dirty: bool) {
        self.dirty = dirty;
    }
}

/// The entry type of store `S`.
pub type EntryOf<S, const W: usize> = Entry<W, <S as Store<W>>::Cold, <S as Store<W>>::Log>;

/// What [`Store::upsert`] found.
#[derive(Debug)]
pub enum Upsert<M> {
    /// The entry (new or old); `evicted` names the key that made room
    /// for it, if one had to.
    Found {
        /// The entry, touched.
        entry: M,
        /// The key evicted to make room, and what it was.
        evicted: Option<(Key, Victim)>,
    },
    /// No room: the store is full of entries that may not be evicted.
    Full,
}

/// Key → entry storage with CLOCK eviction (see the module doc).
///
/// A store hands out views of its entries ([`Ref`](Self::Ref),
/// [`Mut`](Self::Mut): [`EntryRef`], [`EntryMut`]), not the entries
/// themselves, so it may keep an entry in pieces (a slot with the first
/// events inline, the rest of the log and the cold part elsewhere: the
/// 32-byte slot measured in `BENCHMARKS.md`, issue 24). Both tables today
/// hand out their entries whole. An owned [`EntryOf`] is what goes in
/// ([`insert`](Self::insert)) and comes out ([`remove`](Self::remove)).
pub trait Store<const W: usize>: 'static {
    /// How owned entries hold their cold part (inline or boxed).
    type Cold: ColdPart;
    /// How owned entries hold their log (inline or growing).
    type Log: TimeLog;
    /// An entry read in place.
    type Ref<'a>: EntryRef + Copy
    where
        Self: 'a;
    /// An entry written in place.
    type Mut<'a>: EntryMut
    where
        Self: 'a;
    /// Where a limiter over this store reads what every request reads.
    type Rules: HotRules;
    /// Longest lookback (ticks) the entries' logs answer exactly: a
    /// limiter over this store refuses a configuration with a longer
    /// `requests.window`, `blocks.violation_memory`, `blocks.ban_lookback`,
    /// `login.failure_window` or `login.account_window`
    /// ([`ConfigError::Span`](crate::ConfigError::Span)). Unbounded by
    /// default; the fixed tables' [`CompactLog`](crate::internals::CompactLog)s keep
    /// 32-bit offsets: `u32::MAX` ticks.
    const MAX_SPAN: u64 = u64::MAX;
    /// Most entries held at once.
    fn capacity(&self) -> usize;
    /// Entries held.
    fn len(&self) -> usize;
    /// Whether empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Look up without touching.
    fn get(&self, key: &Key) -> Option<Self::Ref<'_>>;
    /// Look up mutably without touching.
    fn get_mut(&mut self, key: &Key) -> Option<Self::Mut<'_>>;
    /// The entry for `key` if it is already marked touched (so touching it
    /// again would change nothing). `None` otherwise, and by default.
    fn get_if_touched(&self, key: &Key) -> Option<Self::Ref<'_>> {
        let _ = key;
        None
    }
    /// Mark `key` touched (set its reference bit).
    fn touch(&mut self, key: &Key);
    /// Mark `key` touched and return its entry (one lookup where the store
    /// can).
    fn touch_get_mut(&mut self, key: &Key) -> Option<Self::Mut<'_>> {
        self.touch(key);
        self.get_mut(key)
    }
    /// The entry for `key`, touched; when absent, a fresh one is inserted,
    /// first [evicting](Self::evict) one (as `classify` says) if the store
    /// is full.
    fn upsert(
        &mut self,
        key: Key,
        classify: &mut dyn FnMut(&Key, Self::Ref<'_>) -> Class,
    ) -> Upsert<Self::Mut<'_>>;
    /// Add a new key, touched; hands the entry back when full (so the
    /// caller keeps what it built, hence the large `Err`).
    #[allow(clippy::result_large_err)]
    fn insert(&mut self, key: Key, entry: EntryOf<Self, W>) -> Result<(), EntryOf<Self, W>>;
    /// Remove a key.
    fn remove(&mut self, key: &Key) -> Option<EntryOf<Self, W>>;
    /// Make room for one key by the CLOCK rule of the module doc: the first
    /// dead entry within [`SCAN`] of the hand, else a live one not touched
    /// since the hand last passed it. `None` if every entry is pinned.
    fn evict(
        &mut self,
        classify: &mut dyn FnMut(&Key, Self::Ref<'_>) -> Class,
    ) -> Option<(Key, Victim)>;
    /// Keep only entries for which `keep` holds; returns how many went.
    fn retain(&mut self, keep: &mut dyn FnMut(&Key, Self::Ref<'_>) -> bool) -> usize;
    /// Visit every entry (order unspecified).
    fn for_each(&self, f: &mut dyn FnMut(&Key, Self::Ref<'_>));
    /// Visit every entry mutably (order unspecified). O(capacity): for
    /// operator actions, not the hot path.
    fn for_each_mut(&mut self, f: &mut dyn FnMut(&Key, Self::Mut<'_>));
    /// Remove everything.
    fn clear(&mut self);
}

/// The CLOCK sweep both stores run (see the module doc), over `slots`
/// positions from `hand` in steps of `stride` (coprime with `slots`, so a
/// turn meets every position once), `len` of them occupied. `at(i, false)` is
/// `None` for an empty position, else the entry's class and reference
/// bit; `at(i, true)` clears that bit. Returns the victim's position and kind;
/// `None` if every entry is pinned.
pub(crate) fn sweep(
    slots: usize,
    hand: usize,
    len: usize,
    stride: usize,
    mut at: impl FnMut(usize, bool) -> Option<(Class, bool)>,
) -> Option<(usize, Victim)> {
    if slots == 0 || len == 0 {
        return None;
    }
    let stride = if stride == 0 || stride >= slots {
        1
    } else {
        stride
    };
    // i < slots and stride < slots: one subtraction wraps it.
    let next = |i: usize| {
        let j = i.wrapping_add(stride);
        if j >= slots {
            j.wrapping_sub(slots)
        } else {
            j
        }
    };
    let mut i = if hand >= slots { 0 } else { hand };
    // Step 1: the next SCAN entries; a dead one wins, else the first live
    // one whose bit was clear (bits of live ones before it are cleared).
    let window = SCAN.min(len);
    let mut seen = 0usize;
    let mut any_live = false;
    let mut first_clear = None;
    for _ in 0..slots {
        if seen >= window {
            break;
        }
        if let Some((class, referenced)) = at(i, false) {
            seen = seen.wrapping_add(1);
            match class {
                Class::Dead => return Some((i, Victim::Dead)),
                Class::Pinned => {}
                Class::Live => {
                    any_live = true;
                    if first_clear.is_none() {
                        if referenced {
                            at(i, true);
                        } else {
                            first_clear = Some(i);
                        }
                    }
                }
            }
        }
        i = next(i);
    }
    if let Some(v) = first_clear {
        return Some((v, Victim::Live));
    }
    // Step 2: every live entry met had its bit set (now clear): go on, at
    // most two turns (one clears every bit), a dead entry still first.
    for step in 0..slots.saturating_mul(2) {
        if step == slots && !any_live {
            return None;
        }
        if let Some((class, referenced)) = at(i, false) {
            match class {
                Class::Dead => return Some((i, Victim::Dead)),
                Class::Pinned => {}
                Class::Live if referenced => {
                    any_live = true;
                    at(i, true);
                }
                Class::Live => return Some((i, Victim::Live)),
            }
        }
        i = next(i);
    }
    None
}

/// A test harness both stores run: random operations against a plain
/// set, with the eviction rule checked at every eviction.
#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]
pub(crate) mod harness {
    use super::*;
    use crate::key::{Addr, KeyKind};
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    /// Key number `n`, of every kind in turn.
    pub(crate) fn key(n: u64) -> Key {
        let addr = Addr::from_octets((u128::from(n) + 1).to_be_bytes());
        match n % 4 {
            0 => Key::request(addr),
            1 => Key::login_ip(addr),
            2 => Key::login_user(n, addr),
            _ => Key::account(n),
        }
    }

    /// The number of a key made by [`key`].
    pub(crate) fn id(k: &Key) -> u64 {
        match k.kind() {
            KeyKind::LoginUser | KeyKind::Account => k.user(),
            _ => (u128::from_be_bytes(k.addr().octets()) - 1) as u64,
        }
    }

    /// SplitMix64.
    pub(crate) fn rng(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The keys a store holds, by number.
    pub(crate) fn keys<S: Store<W>, const W: usize>(s: &S) -> Vec<u64> {
        let mut v = Vec::new();
        s.for_each(&mut |k, _| v.push(id(k)));
        v.sort_unstable();
        v
    }

    /// The class the harness gives key `u` under `salt`.
    fn class(u: u64, salt: u64) -> Class {
        match (u ^ salt).wrapping_mul(0x9E37_79B9) % 7 {
            0 | 1 => Class::Pinned,
            2 | 3 => Class::Dead,
            _ => Class::Live,
        }
    }

    /// Random inserts, upserts, touches, lookups, removals, evictions,
    /// retains and clears of keys below `pool` in a store of `cap`: the
    /// key set matches a plain map's, and every eviction obeys the rule:
    /// never a pinned key; a dead key whenever one exists in a store of at
    /// most [`SCAN`] keys; `None` only when every key is pinned; the
    /// victim's kind is what the classifier said. Returns (dead, live)
    /// evictions.
    pub(crate) fn run<S: Store<W>, const W: usize>(
        s: &mut S,
        cap: usize,
        pool: u64,
        ops: usize,
        seed: u64,
    ) -> (usize, usize) {
        let mut m: BTreeMap<u64, ()> = keys(s).into_iter().map(|k| (k, ())).collect();
        let mut st = seed;
        let (mut dead, mut live) = (0, 0);
        for step in 0..ops {
            let r = rng(&mut st);
            let k = (r >> 8) % pool;
            let salt = r >> 40;
            let mut check_victim = |m: &mut BTreeMap<u64, ()>, got: Option<(Key, Victim)>| match got
            {
                None => assert!(
                    m.keys().all(|&u| class(u, salt) == Class::Pinned),
                    "nothing evicted at step {step}"
                ),
                Some((key, victim)) => {
                    let u = id(&key);
                    assert!(m.remove(&u).is_some(), "evicted an absent key");
                    let c = class(u, salt);
                    assert_ne!(c, Class::Pinned, "evicted a pinned key at step {step}");
                    match victim {
                        Victim::Dead => {
                            assert_eq!(c, Class::Dead);
                            dead += 1;
                        }
                        Victim::Live => {
                            assert_eq!(c, Class::Live);
                            live += 1;
                            if m.len() < SCAN {
                                let dead_left = m.keys().any(|&u| class(u, salt) == Class::Dead);
                                assert!(!dead_left, "live before dead at step {step}");
                            }
                        }
                    }
                }
            };
            match r % 100 {
                0..=24 => {
                    let present = m.contains_key(&k);
                    let full = m.len() >= cap;
                    match s.upsert(key(k), &mut |key, _| class(id(key), salt)) {
                        Upsert::Found { evicted, .. } => {
                            assert!(present || full || evicted.is_none());
                            if !present && full {
                                check_victim(&mut m, evicted);
                            }
                            m.insert(k, ());
                        }
                        Upsert::Full => {
                            assert!(!present && full, "upsert refused at step {step}");
                            check_victim(&mut m, None);
                        }
                    }
                }
                25..=34 => {
                    let res = s.insert(key(k), Entry::new());
                    if m.contains_key(&k) || m.len() < cap {
                        assert!(res.is_ok());
                        m.insert(k, ());
                    } else {
                        assert!(res.is_err());
                    }
                }
                35..=49 => s.touch(&key(k)),
                50..=59 => {
                    assert_eq!(s.touch_get_mut(&key(k)).is_some(), m.contains_key(&k));
                    assert!(m.contains_key(&k) == s.get_if_touched(&key(k)).is_some());
                }
                60..=69 => {
                    assert_eq!(s.get(&key(k)).is_some(), m.contains_key(&k));
                    assert_eq!(s.get_mut(&key(k)).is_some(), m.contains_key(&k));
                }
                70..=79 => {
                    assert_eq!(s.remove(&key(k)).is_some(), m.remove(&k).is_some());
                }
                80..=94 => {
                    if m.is_empty() {
                        assert!(s.evict(&mut |_, _| Class::Live).is_none());
                    } else {
                        let got = s.evict(&mut |key, _| class(id(key), salt));
                        check_victim(&mut m, got);
                    }
                }
                95..=97 => {
                    let keep = |u: u64| (u ^ salt) % 4 != 0;
                    let gone = s.retain(&mut |key, _| keep(id(key)));
                    let n = m.len();
                    m.retain(|&u, _| keep(u));
                    assert_eq!(gone, n - m.len());
                }
                _ => {
                    if r % 7 == 0 {
                        s.clear();
                        m.clear();
                    }
                }
            }
            assert_eq!(s.len(), m.len(), "len at step {step}");
            if step % 50 == 0 {
                assert_eq!(keys(s), m.keys().copied().collect::<Vec<_>>());
            }
        }
        assert_eq!(keys(s), m.keys().copied().collect::<Vec<_>>());
        (dead, live)
    }

    /// Every stride a store uses meets every slot once per turn.
    #[test]
    fn strides_are_coprime_and_near_the_golden_ratio() {
        for n in 1..3000usize {
            let s = coprime_stride(n);
            assert!(s >= 1 && (s < n || n == 1), "n {n} stride {s}");
            assert_eq!(gcd(s, n), 1, "n {n} stride {s}");
            if n > 100 {
                assert!(s * 2 > n, "n {n} stride {s}");
            }
        }
    }

    /// CLOCK's second chance: a key touched between evictions survives a
    /// stream of new keys many times the store's size, while keys never
    /// touched again go; a store of live keys evicts only live ones, and
    /// one with dead keys only dead ones while they last.
    pub(crate) fn second_chance<S: Store<W>, const W: usize>(s: &mut S) {
        let cap = s.capacity() as u64;
        let hot = 1_000_000;
        for u in 0..cap - 1 {
            s.insert(key(u), Entry::new()).unwrap();
        }
        s.insert(key(hot), Entry::new()).unwrap();
        let live = &mut |_: &Key, _: S::Ref<'_>| Class::Live;
        for u in cap..cap * 20 {
            s.touch(&key(hot));
            match s.upsert(key(u), live) {
                Upsert::Found { evicted, .. } => {
                    let (k, v) = evicted.unwrap();
                    assert_eq!(v, Victim::Live);
                    assert_ne!(id(&k), hot, "the hot key was evicted at {u}");
                }
                Upsert::Full => panic!("full"),
            }
        }
        assert!(s.get(&key(hot)).is_some());
        // Half the keys dead (odd numbers): only they go, until none is left.
        s.clear();
        for u in 0..cap {
            s.insert(key(u), Entry::new()).unwrap();
        }
        let odd_dead = &mut |k: &Key, _: S::Ref<'_>| {
            if id(k) % 2 == 1 && id(k) < cap {
                Class::Dead
            } else {
                Class::Live
            }
        };
        // Exactly in a store of at most SCAN keys; in a bigger one a live
        // key goes only when no dead one is within SCAN of the hand, rare
        // while many are dead.
        let dead_keys = cap / 2;
        let mut early_live = 0;
        for n in 0..dead_keys + 3 {
            match s.upsert(key(10 * cap + n), odd_dead) {
                Upsert::Found { evicted, .. } => {
                    let (k, v) = evicted.unwrap();
                    if v == Victim::Dead {
                        assert_eq!(id(&k) % 2, 1);
                    }
                    if cap as usize <= SCAN {
                        let want = if n < dead_keys {
                            Victim::Dead
                        } else {
                            Victim::Live
                        };
                        assert_eq!(v, want, "eviction {n}");
                    } else if n < dead_keys / 2 && v == Victim::Live {
                        early_live += 1;
                    }
                }
                Upsert::Full => panic!("full"),
            }
        }
        assert!(
            early_live <= dead_keys / 64,
            "{early_live} live evictions early"
        );
        // All pinned: refused.
        let pinned = &mut |_: &Key, _: S::Ref<'_>| Class::Pinned;
        assert!(matches!(s.upsert(key(u64::MAX / 8), pinned), Upsert::Full));
    }
}
