//! [`FixedVec`]: a vector of at most `N` `Copy` elements, in place, that
//! never panics, and the [`Blank`] value its unused places hold.
//!
//! The core used `heapless::Vec` (and `heapless::Deque` for [`Log`](crate::Log)),
//! which brings `hash32` and `byteorder` into every std build for what
//! the core needs of it: push that says "full" instead of growing, insert
//! and remove by index, a slice. This is that, in safe code: the places
//! past `len` hold a [`Blank`] value instead of uninitialised memory, so
//! the element type is `Copy` with a constant placeholder. It has the
//! same size as `heapless::Vec<T, N>` (`N` elements and a `usize`), so the
//! fixed tables that hold one (`Changed`, `Evicted`) keep their size.

use core::ops::{Deref, DerefMut};

use crate::decision::Reason;
use crate::key::{Addr, Key, KeyKind};
use crate::limiter::Hold;
use crate::store::Victim;

/// A constant value to fill a [`FixedVec`]'s unused places with. It is
/// never read as an element: any value of the type will do.
pub trait Blank: Copy {
    /// The filler.
    const BLANK: Self;
}

macro_rules! blank_zero {
    ($($t:ty),*) => {$(
        impl Blank for $t {
            const BLANK: Self = 0;
        }
    )*};
}
blank_zero!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl Blank for bool {
    const BLANK: Self = false;
}

impl Blank for () {
    const BLANK: Self = ();
}

impl<A: Blank, B: Blank> Blank for (A, B) {
    const BLANK: Self = (A::BLANK, B::BLANK);
}

impl<A: Blank, B: Blank, C: Blank> Blank for (A, B, C) {
    const BLANK: Self = (A::BLANK, B::BLANK, C::BLANK);
}

impl<A: Blank, B: Blank, C: Blank, D: Blank> Blank for (A, B, C, D) {
    const BLANK: Self = (A::BLANK, B::BLANK, C::BLANK, D::BLANK);
}

impl<T: Blank, const N: usize> Blank for [T; N] {
    const BLANK: Self = [T::BLANK; N];
}

impl<T: Copy> Blank for Option<T> {
    const BLANK: Self = None;
}

impl Blank for Key {
    const BLANK: Self = Key::request(Addr::NONE);
}

impl Blank for Victim {
    const BLANK: Self = Victim::Dead;
}

impl Blank for KeyKind {
    const BLANK: Self = KeyKind::Request;
}

impl Blank for Addr {
    const BLANK: Self = Addr::NONE;
}

impl Blank for Reason {
    const BLANK: Self = Reason::RateLimited;
}

impl Blank for Hold {
    const BLANK: Self = Hold {
        kind: KeyKind::BLANK,
        addr: Addr::NONE,
        reason: Reason::BLANK,
        left: None,
    };
}

/// At most `N` elements in place: `push` and `insert` give the element
/// back when full, `remove` and `pop` answer `None` out of range; it
/// derefs to the slice of its elements.
#[derive(Clone, Copy)]
pub struct FixedVec<T: Blank, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Blank, const N: usize> FixedVec<T, N> {
    /// Empty.
    pub const fn new() -> Self {
        FixedVec {
            items: [T::BLANK; N],
            len: 0,
        }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// The elements, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.items.get_mut(..self.len).unwrap_or(&mut [])
    }

    /// How many elements it holds.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds `N`.
    pub const fn is_full(&self) -> bool {
        self.len >= N
    }

    /// `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Append `t`, or give it back when full.
    pub fn push(&mut self, t: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(place) => {
                *place = t;
                self.len = self.len.saturating_add(1);
                Ok(())
            }
            None => Err(t),
        }
    }

    /// The last element, removed.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let t = self.items.get(last).copied();
        self.len = last;
        t
    }

    /// Insert `t` at `i`, shifting the rest up; give it back when full or
    /// when `i > len`.
    pub fn insert(&mut self, i: usize, t: T) -> Result<(), T> {
        if i > self.len || self.is_full() {
            return Err(t);
        }
        let end = self.len.saturating_add(1);
        if let Some(tail) = self.items.get_mut(i..end) {
            tail.rotate_right(1);
            if let Some(place) = tail.first_mut() {
                *place = t;
            }
        }
        self.len = end;
        Ok(())
    }

    /// Remove and return the element at `i`, shifting the rest down
    /// (`None` if `i >= len`).
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let tail = self.items.get_mut(i..self.len)?;
        let t = tail.first().copied()?;
        tail.rotate_left(1);
        self.len = self.len.saturating_sub(1);
        Some(t)
    }

    /// Keep the first `len` elements (no-op if it holds fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Remove every element.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Append elements of `items` while there is room; how many fit.
    pub fn extend_from_slice(&mut self, items: &[T]) -> usize {
        let mut n = 0usize;
        for &t in items {
            if self.push(t).is_err() {
                break;
            }
            n = n.saturating_add(1);
        }
        n
    }
}

impl<T: Blank, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Blank, const N: usize> Deref for FixedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Blank, const N: usize> DerefMut for FixedVec<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: Blank + PartialEq, const N: usize> PartialEq for FixedVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Blank + Eq, const N: usize> Eq for FixedVec<T, N> {}

impl<T: Blank + core::hash::Hash, const N: usize> core::hash::Hash for FixedVec<T, N> {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
}

impl<T: Blank + core::fmt::Debug, const N: usize> core::fmt::Debug for FixedVec<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[cfg(feature = "defmt")]
impl<T: Blank + defmt::Format, const N: usize> defmt::Format for FixedVec<T, N> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=[?]}", self.as_slice());
    }
}

impl<'a, T: Blank, const N: usize> IntoIterator for &'a FixedVec<T, N> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<T: Blank, const N: usize> FromIterator<T> for FixedVec<T, N> {
    /// The first `N` items; the rest are dropped.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Self::new();
        for t in iter.into_iter().take(N) {
            let _ = v.push(t);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_insert_remove_keep_order_and_refuse_past_capacity() {
        let mut v: FixedVec<u8, 3> = FixedVec::new();
        assert!(v.is_empty());
        assert_eq!(v.push(1), Ok(()));
        assert_eq!(v.push(3), Ok(()));
        assert_eq!(v.insert(1, 2), Ok(()));
        assert_eq!(v.as_slice(), &[1, 2, 3]);
        assert!(v.is_full());
        assert_eq!(v.push(4), Err(4));
        assert_eq!(v.insert(0, 4), Err(4));
        assert_eq!(v.remove(0), Some(1));
        assert_eq!(v.remove(2), None);
        assert_eq!(v.insert(3, 9), Err(9));
        assert_eq!(v.insert(2, 9), Ok(()));
        assert_eq!(&*v, &[2, 3, 9]);
        assert_eq!(v.pop(), Some(9));
        // Equality looks at the elements only, not at stale places.
        let w: FixedVec<u8, 3> = [2, 3].into_iter().collect();
        assert_eq!(v, w);
        v.truncate(0);
        assert_eq!(v.pop(), None);
        assert_eq!(v.extend_from_slice(&[5, 6, 7, 8]), 3);
        assert_eq!(v.len(), 3);
        v.clear();
        assert_eq!(v, FixedVec::default());
        let mut z: FixedVec<u8, 0> = FixedVec::new();
        assert_eq!(z.push(1), Err(1));
        assert_eq!(z.insert(0, 1), Err(1));
    }
}
