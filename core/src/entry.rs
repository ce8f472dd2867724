//! The state kept per key: a hot sliding log, and a cold part most keys
//! never use.
//!
//! Every key has a log; only keys that were denied, blocked, banned, locked
//! or hold slots need the rest. [`Entry`] therefore keeps that rest in a
//! [`ColdPart`]: inline ([`Cold`], the fixed tables: no allocator) or boxed
//! on first use ([`BoxedCold`], feature `alloc`: a million quiet keys cost
//! one pointer each instead of the whole record). An absent cold part and a
//! default one mean the same thing.

use crate::slots::Slots;
use crate::time::{running, within, OptTick, Tick};
use crate::window::{CompactLog, Events, EventsMut, Log, TimeLog};

/// Violation timestamps kept per key; `block_after` and `ban_after` are
/// at most this.
pub const VIOLATION_LOG: usize = 16;

/// The rarely used part of an entry. A key uses one of two halves, never
/// both, by its [`KeyKind`](crate::KeyKind): a request key its violations,
/// block and ban; a login key its lock and (ip keys) slots. So the halves
/// share their bytes, as one enum sized to the larger (the request half),
/// behind accessors: a half not held reads as empty. `V` is the violation
/// log: [`Log`] in the growable table's boxed part, [`CompactLog`] inline
/// in the fixed tables.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cold<V = Log<VIOLATION_LOG>> {
    part: Part<V>,
}

/// The half of a [`Cold`] part a key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Part<V> {
    /// Violations, block and ban (request keys).
    Request(RequestCold<V>),
    /// Lock and slots (login keys).
    Login(LoginCold),
}

impl<V: Default> Default for Part<V> {
    fn default() -> Self {
        Part::Request(RequestCold::default())
    }
}

/// A request key's half of a [`Cold`] part: rules 2–4.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct RequestCold<V> {
    pub(crate) violations: V,
    pub(crate) block_until: OptTick,
    pub(crate) last_block_start: OptTick,
    pub(crate) block_level: u8,
    pub(crate) banned: bool,
}

/// A login key's half of a [`Cold`] part: rules 5, 7 and 8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct LoginCold {
    pub(crate) lock_until: OptTick,
    pub(crate) slots: Slots,
}

impl<V: TimeLog> RequestCold<V> {
    /// Nothing recorded.
    fn is_empty(&self) -> bool {
        self.violations.is_empty()
            && !self.block_until.is_some()
            && !self.last_block_start.is_some()
            && self.block_level == 0
            && !self.banned
    }
}

impl LoginCold {
    /// Nothing recorded.
    fn is_empty(&self) -> bool {
        *self == LoginCold::default()
    }
}

impl<V: TimeLog> PartialEq for Cold<V> {
    /// Equal when every field reads alike (a half not held reads as empty).
    fn eq(&self, other: &Self) -> bool {
        match (&self.part, &other.part) {
            (Part::Request(a), Part::Request(b)) => a == b,
            (Part::Login(a), Part::Login(b)) => a == b,
            (Part::Request(r), Part::Login(l)) | (Part::Login(l), Part::Request(r)) => {
                r.is_empty() && l.is_empty()
            }
        }
    }
}

impl<V: TimeLog> Eq for Cold<V> {}

impl<V: TimeLog> Cold<V> {
    /// The request half, if held.
    pub(crate) fn request(&self) -> Option<&RequestCold<V>> {
        match &self.part {
            Part::Request(r) => Some(r),
            Part::Login(_) => None,
        }
    }

    /// The login half, if held.
    pub(crate) fn login(&self) -> Option<&LoginCold> {
        match &self.part {
            Part::Login(l) => Some(l),
            Part::Request(_) => None,
        }
    }

    /// The request half mutably, if held.
    pub(crate) fn request_if_held(&mut self) -> Option<&mut RequestCold<V>> {
        match &mut self.part {
            Part::Request(r) => Some(r),
            Part::Login(_) => None,
        }
    }

    /// The login half mutably, if held.
    pub(crate) fn login_if_held(&mut self) -> Option<&mut LoginCold> {
        match &mut self.part {
            Part::Login(l) => Some(l),
            Part::Request(_) => None,
        }
    }

    /// The request half for writing. Only request keys write it and only
    /// login keys write the other half, so the other half is empty here;
    /// it is replaced (were it not empty, its state would be lost:
    /// [`Record`](crate::Record) imports refuse records holding both).
    pub(crate) fn request_mut(&mut self) -> &mut RequestCold<V> {
        self.part.request_mut()
    }

    /// The login half for writing (the mirror of
    /// [`request_mut`](Self::request_mut)).
    pub(crate) fn login_mut(&mut self) -> &mut LoginCold {
        self.part.login_mut()
    }

    /// Permanently banned.
    pub(crate) fn banned(&self) -> bool {
        self.request().is_some_and(|r| r.banned)
    }

    /// End of the current or last block.
    pub(crate) fn block_until(&self) -> OptTick {
        self.request().map_or(OptTick::NONE, |r| r.block_until)
    }

    /// Start of the last block.
    pub(crate) fn last_block_start(&self) -> OptTick {
        self.request().map_or(OptTick::NONE, |r| r.last_block_start)
    }

    /// Blocks so far within the memory.
    pub(crate) fn block_level(&self) -> u8 {
        self.request().map_or(0, |r| r.block_level)
    }

    /// The violation log, if the request half is held (none: empty).
    pub(crate) fn violations(&self) -> Option<&V> {
        self.request().map(|r| &r.violations)
    }

    /// Newest violation.
    pub(crate) fn newest_violation(&self) -> Option<Tick> {
        self.violations().and_then(TimeLog::newest)
    }

    /// Violations within `window` of `now`.
    pub(crate) fn violation_count(&self, now: Tick, window: u64) -> u32 {
        self.violations().map_or(0, |v| v.count(now, window))
    }

    /// End of the current or last lock.
    pub(crate) fn lock_until(&self) -> OptTick {
        self.login().map_or(OptTick::NONE, |l| l.lock_until)
    }

    /// Slots live at `now`.
    pub(crate) fn live_slots(&self, now: Tick, ttl: u64) -> u32 {
        self.login().map_or(0, |l| l.slots.live(now, ttl))
    }
}

impl<V: Default> Part<V> {
    /// The request half, made the held one if it was not.
    fn request_mut(&mut self) -> &mut RequestCold<V> {
        if let Part::Login(_) = self {
            *self = Part::Request(RequestCold::default());
        }
        match self {
            Part::Request(r) => r,
            // Not reached (set just above); a recursion ends at once, and
            // no panic path is compiled in.
            Part::Login(_) => self.request_mut(),
        }
    }

    /// The login half, made the held one if it was not.
    fn login_mut(&mut self) -> &mut LoginCold {
        if let Part::Request(_) = self {
            *self = Part::Login(LoginCold::default());
        }
        match self {
            Part::Login(l) => l,
            Part::Request(_) => self.login_mut(),
        }
    }
}

/// The fixed tables' cold part: inline, violations in a [`CompactLog`].
pub type CompactCold = Cold<CompactLog<VIOLATION_LOG>>;

/// The cold part with nothing in it.
static EMPTY: Cold = Cold {
    part: Part::Request(RequestCold {
        violations: Log::new(),
        block_until: OptTick::NONE,
        last_block_start: OptTick::NONE,
        block_level: 0,
        banned: false,
    }),
};

/// The compact cold part with nothing in it.
static EMPTY_COMPACT: CompactCold = Cold {
    part: Part::Request(RequestCold {
        violations: CompactLog::new(),
        block_until: OptTick::NONE,
        last_block_start: OptTick::NONE,
        block_level: 0,
        banned: false,
    }),
};

#[cfg(feature = "alloc")]
impl Cold {
    /// Whether it holds nothing (what an absent cold part means).
    fn is_empty(&self) -> bool {
        *self == EMPTY
    }
}

/// How an [`Entry`] holds its [`Cold`] part.
pub trait ColdPart: Default + Clone + core::fmt::Debug {
    /// The violation log of its cold part.
    type Violations: TimeLog + 'static;
    /// The cold part, if one is held.
    fn get(&self) -> Option<&Cold<Self::Violations>>;
    /// The cold part mutably, if one is held.
    fn get_mut(&mut self) -> Option<&mut Cold<Self::Violations>>;
    /// The cold part, created empty if absent.
    fn make(&mut self) -> &mut Cold<Self::Violations>;
    /// Give the storage back if the cold part holds nothing.
    fn shrink(&mut self);
    /// An empty cold part (what an absent one reads as).
    fn empty() -> &'static Cold<Self::Violations>;
}

/// An inline cold part over the violation log `$v`, empty as `$empty`.
macro_rules! inline_cold {
    ($v:ty, $empty:ident) => {
        impl ColdPart for Cold<$v> {
            type Violations = $v;
            fn get(&self) -> Option<&Cold<$v>> {
                Some(self)
            }
            fn get_mut(&mut self) -> Option<&mut Cold<$v>> {
                Some(self)
            }
            fn make(&mut self) -> &mut Cold<$v> {
                self
            }
            fn shrink(&mut self) {}
            fn empty() -> &'static Cold<$v> {
                &$empty
            }
        }
    };
}

inline_cold!(Log<VIOLATION_LOG>, EMPTY);
inline_cold!(CompactLog<VIOLATION_LOG>, EMPTY_COMPACT);

/// A cold part allocated on first use (feature `alloc`). The growable
/// table also keeps here the full key of a key it cannot hold in its
/// 8-byte slot word (a (username, address) pair, an IPv6 key longer than
/// /64): such a key always has its box, which an empty cold part then
/// does not free.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct BoxedCold(Option<alloc::boxed::Box<ColdRecord>>);

/// What a [`BoxedCold`] points at.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
struct ColdRecord {
    cold: Cold,
    /// The full key, for keys the table holds by a fingerprint.
    key: Option<crate::Key>,
}

#[cfg(feature = "alloc")]
impl BoxedCold {
    /// The full key kept for the table, if any.
    pub(crate) fn full_key(&self) -> Option<&crate::Key> {
        self.0.as_deref().and_then(|r| r.key.as_ref())
    }

    /// Keep `key` as the full key (allocating the box if absent).
    pub(crate) fn set_full_key(&mut self, key: crate::Key) {
        self.0.get_or_insert_with(Default::default).key = Some(key);
    }
}

#[cfg(feature = "alloc")]
impl ColdPart for BoxedCold {
    type Violations = Log<VIOLATION_LOG>;
    fn get(&self) -> Option<&Cold> {
        self.0.as_deref().map(|r| &r.cold)
    }
    fn get_mut(&mut self) -> Option<&mut Cold> {
        self.0.as_deref_mut().map(|r| &mut r.cold)
    }
    fn make(&mut self) -> &mut Cold {
        &mut self.0.get_or_insert_with(Default::default).cold
    }
    fn shrink(&mut self) {
        if self
            .0
            .as_deref()
            .is_some_and(|r| r.key.is_none() && r.cold.is_empty())
        {
            self.0 = None;
        }
    }
    fn empty() -> &'static Cold {
        &EMPTY
    }
}

#[cfg(all(feature = "alloc", feature = "defmt"))]
impl defmt::Format for BoxedCold {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=?}", self.0.as_deref().map(|r| &r.cold));
    }
}

/// Everything one key remembers. Which parts are used depends on the key's
/// [`KeyKind`](crate::KeyKind): request keys use the log for requests and the
/// violation/block/ban parts; login keys use the log for failures, the lock
/// and (ip keys) the slots.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry<const W: usize, C: ColdPart = Cold, L: TimeLog = Log<W>> {
    pub(crate) log: L,
    pub(crate) cold: C,
}

impl<const W: usize, C: ColdPart, L: TimeLog> PartialEq for Entry<W, C, L> {
    fn eq(&self, other: &Self) -> bool {
        self.log == other.log && self.cold() == other.cold()
    }
}

impl<const W: usize, C: ColdPart, L: TimeLog> Eq for Entry<W, C, L> {}

impl<const W: usize, C: ColdPart, L: TimeLog> Entry<W, C, L> {
    /// A fresh entry.
    pub fn new() -> Self {
        Entry::default()
    }
}

/// Read access to one key's state, as a [`Store`](crate::internals::Store)
/// hands it out: an [`Entry`] itself (both tables today), or a view of an
/// entry a store keeps in pieces. What the rules
/// read of an entry, and the questions built on that.
pub trait EntryRef {
    /// The violation log of the cold part.
    type Violations: TimeLog + 'static;
    /// The log (requests or failures, by the key's kind).
    fn log(&self) -> impl Events + '_;
    /// The cold part, if one is held.
    fn cold_held(&self) -> Option<&Cold<Self::Violations>>;
    /// The cold part (empty if none is held).
    fn cold(&self) -> &Cold<Self::Violations>;

    /// Permanently banned.
    fn is_banned(&self) -> bool {
        self.cold().banned()
    }

    /// End of the current or last temporary block.
    fn block_deadline(&self) -> Option<crate::Instant> {
        self.cold().block_until().get().map(crate::time::instant)
    }

    /// End of the current or last login lock.
    fn lock_deadline(&self) -> Option<crate::Instant> {
        self.cold().lock_until().get().map(crate::time::instant)
    }

    /// Ban, block end and lock end: what persistence must not lose (ends
    /// in the limiter's internal ticks, for comparing; see
    /// [`block_deadline`](Self::block_deadline) for instants).
    fn pin_state(&self) -> (bool, Option<u64>, Option<u64>) {
        let c = self.cold();
        (c.banned(), c.block_until().get(), c.lock_until().get())
    }

    /// What holds `key` at `now`, if anything (see [`Hold::of`](crate::Hold::of)).
    fn hold(&self, key: &crate::Key, now: Tick) -> Option<crate::Hold> {
        let c = self.cold_held()?;
        let left = |u: OptTick| {
            u.get()
                .filter(|&u| running(u, now))
                .map(|u| crate::time::until(now, u))
        };
        crate::Hold::of(key, c.banned(), left(c.block_until()), left(c.lock_until()))
    }

    /// Holds a ban, block, lock or live slot: never evicted.
    fn pinned(&self, now: Tick, slot_ttl: u64) -> bool {
        let Some(c) = self.cold_held() else {
            return false;
        };
        c.banned()
            || matches!(c.block_until().get(), Some(u) if running(u, now))
            || matches!(c.lock_until().get(), Some(u) if running(u, now))
            || c.live_slots(now, slot_ttl) > 0
    }

    /// Nothing left that could change a decision at or after `now`, given
    /// the window of its log and the block memory.
    fn idle(&self, now: Tick, log_window: u64, memory: u64, slot_ttl: u64) -> bool {
        if self.log().count(now, log_window) != 0 || self.pinned(now, slot_ttl) {
            return false;
        }
        let c = self.cold();
        c.violation_count(now, memory) == 0
            && !matches!(c.last_block_start().get(), Some(s) if within(now, s, memory))
    }
}

/// Write access to one key's state (see [`EntryRef`]).
pub trait EntryMut: EntryRef {
    /// The log, for writing.
    fn log_mut(&mut self) -> impl EventsMut + '_;
    /// The cold part mutably, if one is held.
    fn cold_held_mut(&mut self) -> Option<&mut Cold<Self::Violations>>;
    /// The cold part, created empty if absent.
    fn cold_make(&mut self) -> &mut Cold<Self::Violations>;
    /// Give the cold part's storage back if it holds nothing.
    fn cold_shrink(&mut self);

    /// Forget any ban, block, escalation and violation history (the
    /// operator's unban); true if a ban or block was recorded.
    fn clear_block_and_ban(&mut self) -> bool {
        let Some(c) = self.cold_held_mut() else {
            return false;
        };
        let had = c.banned() || c.block_until().is_some();
        if let Some(r) = c.request_if_held() {
            *r = RequestCold::default();
        }
        self.cold_shrink();
        had
    }

    /// Lift a login lock; true if one was recorded.
    fn clear_lock(&mut self) -> bool {
        let had = self
            .cold_held_mut()
            .and_then(Cold::login_if_held)
            .is_some_and(|l| l.lock_until.take().is_some());
        self.cold_shrink();
        had
    }

    /// Lift everything on this key (the operator's "unban", one key of
    /// [`Limiter::lift`](crate::Limiter::lift)): ban, block, escalation,
    /// violation history, lock and the log, so it is allowed at once. True
    /// if a ban, block or lock was recorded (running or not).
    /// [`Record::lift`](crate::Record::lift) is the same rule on a record.
    fn lift(&mut self) -> bool {
        let locked = self.clear_lock();
        let held = self.clear_block_and_ban() || locked;
        self.log_mut().clear();
        held
    }
}

impl<const W: usize, C: ColdPart, L: TimeLog> EntryRef for Entry<W, C, L> {
    type Violations = C::Violations;
    #[inline]
    fn log(&self) -> impl Events + '_ {
        &self.log
    }
    #[inline]
    fn cold_held(&self) -> Option<&Cold<C::Violations>> {
        self.cold.get()
    }
    #[inline]
    fn cold(&self) -> &Cold<C::Violations> {
        self.cold.get().unwrap_or_else(|| C::empty())
    }
}

impl<const W: usize, C: ColdPart, L: TimeLog> EntryMut for Entry<W, C, L> {
    #[inline]
    fn log_mut(&mut self) -> impl EventsMut + '_ {
        &mut self.log
    }
    #[inline]
    fn cold_held_mut(&mut self) -> Option<&mut Cold<C::Violations>> {
        self.cold.get_mut()
    }
    #[inline]
    fn cold_make(&mut self) -> &mut Cold<C::Violations> {
        self.cold.make()
    }
    #[inline]
    fn cold_shrink(&mut self) {
        self.cold.shrink();
    }
}

/// An entry read through a shared or unique reference.
macro_rules! entry_by_ref {
    ($($r:tt)*) => {
        impl<T: EntryRef + ?Sized> EntryRef for $($r)* T {
            type Violations = T::Violations;
            #[inline]
            fn log(&self) -> impl Events + '_ {
                (**self).log()
            }
            #[inline]
            fn cold_held(&self) -> Option<&Cold<T::Violations>> {
                (**self).cold_held()
            }
            #[inline]
            fn cold(&self) -> &Cold<T::Violations> {
                (**self).cold()
            }
        }
    };
}

entry_by_ref!(&);
entry_by_ref!(&mut);

impl<T: EntryMut + ?Sized> EntryMut for &mut T {
    #[inline]
    fn log_mut(&mut self) -> impl EventsMut + '_ {
        (**self).log_mut()
    }
    #[inline]
    fn cold_held_mut(&mut self) -> Option<&mut Cold<T::Violations>> {
        (**self).cold_held_mut()
    }
    #[inline]
    fn cold_make(&mut self) -> &mut Cold<T::Violations> {
        (**self).cold_make()
    }
    #[inline]
    fn cold_shrink(&mut self) {
        (**self).cold_shrink();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod halves {
    use super::*;
    use crate::table::FixedEntry;

    /// The two halves share their bytes: the cold part is the larger half
    /// (and its tag), not both.
    #[test]
    fn cold_part_is_the_larger_half_not_both() {
        let both = core::mem::size_of::<RequestCold<CompactLog<VIOLATION_LOG>>>()
            + core::mem::size_of::<LoginCold>();
        let cold = core::mem::size_of::<CompactCold>();
        assert!(cold < both, "{cold} B, halves side by side {both} B");
        assert!(
            cold <= core::mem::size_of::<RequestCold<CompactLog<VIOLATION_LOG>>>() + 4,
            "{cold} B"
        );
    }

    /// A half not held reads as empty; writing one half replaces an empty
    /// other half; empty halves compare equal whichever is held.
    #[test]
    fn halves_read_empty_and_switch_when_empty() {
        let mut e = FixedEntry::<4>::new();
        let r = e.cold.make().request_mut();
        r.banned = true;
        r.violations.push(3);
        r.block_until = OptTick::some(20);
        r.last_block_start = OptTick::some(3);
        r.block_level = 2;
        let c = e.cold();
        assert!(c.banned() && c.login().is_none());
        assert_eq!(c.lock_until(), OptTick::NONE);
        assert_eq!(c.live_slots(3, 10), 0);
        assert_eq!(c.newest_violation(), Some(3));
        assert_eq!((c.block_until().get(), c.block_level()), (Some(20), 2));
        assert_eq!(e.pin_state(), (true, Some(20), None));
        assert!(e.pinned(5, 10));
        assert!(e.clear_block_and_ban());
        assert_eq!(e, FixedEntry::<4>::new());

        // A login key: lock and slots, nothing of the request half.
        let l = e.cold.make().login_mut();
        l.lock_until = OptTick::some(40);
        assert!(l.slots.acquire(1, 5, 10, 2));
        let c = e.cold();
        assert!(!c.banned() && c.request().is_none());
        assert_eq!(c.violation_count(5, 100), 0);
        assert_eq!(c.newest_violation(), None);
        assert_eq!(
            (c.block_until(), c.last_block_start()),
            (OptTick::NONE, OptTick::NONE)
        );
        assert_eq!(c.block_level(), 0);
        assert_eq!(c.live_slots(6, 10), 1);
        assert_eq!(e.pin_state(), (false, None, Some(40)));
        assert!(!e.clear_block_and_ban(), "no ban or block on a login key");
        assert_eq!(e.cold().live_slots(6, 10), 1, "unban keeps its slots");
        assert!(e.clear_lock());
        assert_ne!(e, FixedEntry::<4>::new(), "a slot is still held");
        assert!(e
            .cold
            .get_mut()
            .and_then(Cold::login_if_held)
            .is_some_and(|l| l.slots.release(1)));
        // An empty login half equals an empty request half.
        assert!(e.cold().login().is_some());
        assert_eq!(e, FixedEntry::<4>::new());
        assert_eq!(FixedEntry::<4>::new(), e);
        // Writing the request half now replaces the (empty) login half.
        e.cold.make().request_mut().violations.push(9);
        assert_eq!(e.cold().newest_violation(), Some(9));
        assert!(e.cold().login().is_none());
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::window::GrowLog;

    type MapEntry = Entry<8, BoxedCold, GrowLog<8>>;

    /// The boxed cold part exists only while it holds something, and an
    /// empty one equals an absent one.
    #[test]
    fn boxed_cold_part_comes_and_goes() {
        let mut e = MapEntry::new();
        assert!(e.cold.get().is_none());
        assert!(!e.clear_block_and_ban() && !e.clear_lock());
        e.cold.make().request_mut().banned = true;
        assert!(e.is_banned() && e.pinned(0, 1));
        assert!(e.clear_block_and_ban());
        assert!(e.cold.get().is_none(), "unban frees the cold part");
        e.cold.make().login_mut().lock_until = OptTick::some(5);
        assert_eq!(e.pin_state(), (false, None, Some(5)));
        assert!(e.clear_lock());
        assert!(e.cold.get().is_none(), "lifting the lock frees it");
        let mut f = MapEntry::new();
        f.cold.make();
        assert_eq!(e, f);
        // Something left (a slot) keeps the part.
        let l = e.cold.make().login_mut();
        assert!(l.slots.acquire(7, 1, 10, 1));
        l.lock_until = OptTick::some(9);
        assert!(e.clear_lock());
        assert!(e.cold.get().is_some());
        assert_eq!(e.cold().live_slots(2, 10), 1);
    }
}
