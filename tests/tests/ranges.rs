//! Issue 17, item 3: the range-ban lookup (core `RangeSet`, prefix lengths
//! and binary search) answers exactly what a naive scan of every range
//! answers: the most specific live range holding the address, on random
//! sets of IPv4 and IPv6 ranges (clustered so that ranges nest and
//! addresses hit), random inserts, replacements, removals and expiry, over
//! both storages (fixed `FixedVec` and growable `Vec`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portcullis_core::{Cidr, RangeSet, RangeStore};
use portcullis_tests::gen::cases;
use proptest::prelude::*;

/// Addresses from a small neighbourhood so ranges overlap and nest.
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..2, 0u8..4, any::<u8>()).prop_map(|(a, b, c)| IpAddr::V4(Ipv4Addr::new(
            10 + a,
            0,
            b,
            c
        ))),
        (0u16..2, 0u16..4, any::<u16>()).prop_map(|(a, b, c)| IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8 + a,
            0,
            b,
            0,
            0,
            0,
            c
        ))),
    ]
}

fn range() -> impl Strategy<Value = Cidr> {
    (ip(), any::<u8>()).prop_map(|(ip, p)| {
        let prefix = match ip {
            IpAddr::V4(_) => 8 + p % 25,
            IpAddr::V6(_) => 32 + p % 97,
        };
        Cidr::new(ip, prefix).unwrap()
    })
}

#[derive(Clone, Debug)]
enum Op {
    /// A range with its expiry.
    Insert(Cidr, u8),
    Remove(Cidr),
    /// Forget ranges that expired by this time.
    Expire(u8),
    /// Look an address up at a time: ranges expiring at or before it are dead.
    Find(IpAddr, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (range(), any::<u8>()).prop_map(|(c, t)| Op::Insert(c, t)),
        1 => range().prop_map(Op::Remove),
        1 => any::<u8>().prop_map(Op::Expire),
        8 => (ip(), any::<u8>()).prop_map(|(i, t)| Op::Find(i, t)),
    ]
}

/// The naive reference: every range, scanned.
fn naive(all: &[(Cidr, u8)], ip: IpAddr, now: u8) -> Option<(Cidr, u8)> {
    all.iter()
        .filter(|(c, t)| c.contains(ip) && c.is_ipv4() == ip.is_ipv4() && *t > now)
        .max_by_key(|(c, _)| c.bits())
        .copied()
}

fn run<S: RangeStore<Value = u8> + Default>(ops: &[Op], cap: usize) -> Result<(), TestCaseError> {
    let mut set: RangeSet<S> = RangeSet::default();
    let mut all: Vec<(Cidr, u8)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Insert(c, t) => {
                let old = all.iter().position(|(x, _)| *x == c);
                let r = set.insert(c, t);
                match old {
                    Some(j) => {
                        prop_assert_eq!(r, Ok(Some(all[j].1)), "op {}", i);
                        all[j].1 = t;
                    }
                    None if all.len() >= cap => {
                        prop_assert!(r.is_err(), "op {}: full", i)
                    }
                    None => {
                        prop_assert_eq!(r, Ok(None), "op {}", i);
                        all.push((c, t));
                    }
                }
            }
            Op::Remove(c) => {
                let want = all
                    .iter()
                    .position(|(x, _)| *x == c)
                    .map(|j| all.remove(j).1);
                prop_assert_eq!(set.remove(&c), want, "op {}", i);
            }
            Op::Expire(now) => {
                let before = all.len();
                all.retain(|(_, t)| *t > now);
                prop_assert_eq!(set.retain(|_, t| *t > now), before - all.len(), "op {}", i);
            }
            Op::Find(ip, now) => {
                let got = set.find(ip, |t| *t > now).copied();
                let want = naive(&all, ip, now);
                // Equal most-specific length; at one length only one range
                // can hold the address.
                prop_assert_eq!(got, want, "op {}: {} at {}", i, ip, now);
            }
        }
        prop_assert_eq!(set.len(), all.len());
    }
    let mut sorted: Vec<_> = set.iter().copied().collect();
    let listed = sorted.len();
    sorted.sort_by_key(|(c, _)| (!c.is_ipv4(), c.bits(), c.network()));
    sorted.dedup();
    prop_assert_eq!(sorted.len(), listed, "kept sorted and unique");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn fixed_lookup_agrees_with_a_naive_scan(ops in proptest::collection::vec(op(), 1..200)) {
        run::<portcullis_core::FixedVec<(Cidr, u8), 48>>(&ops, 48)?;
    }

    #[test]
    fn growable_lookup_agrees_with_a_naive_scan(ops in proptest::collection::vec(op(), 1..200)) {
        run::<Vec<(Cidr, u8)>>(&ops, usize::MAX)?;
    }
}
