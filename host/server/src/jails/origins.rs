//! Which jail locked an address: a small side table keyed by address
//! (IPv6 by its /64, as the rules aggregate it by default), so
//! `/admin/bans` and the dashboard can name the jail behind a lock. It
//! lives in memory: after a restart a lock restored from the store shows
//! no jail. The last jail to lock an address names it, for as long as the
//! lock it set lasts (`login.lock_for` when it was set).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Addresses remembered at most (then the table starts over).
const MAX: usize = 100_000;

type Table = HashMap<IpAddr, (String, u64)>;

fn table() -> &'static Mutex<Table> {
    static T: OnceLock<Mutex<Table>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Jail `jail` locked `ip` until `until_ms` (Unix ms).
pub fn note(ip: IpAddr, jail: &str, until_ms: u64) {
    let now = portcullis::clock::unix_ms();
    let mut t = table().lock().unwrap_or_else(PoisonError::into_inner);
    if t.len() >= MAX {
        t.retain(|_, (_, until)| *until > now);
    }
    if t.len() >= MAX {
        t.clear();
    }
    t.insert(key(ip), (jail.to_string(), until_ms));
}

/// The jail whose lock on `ip` still lasts, if one does.
pub fn of(ip: IpAddr) -> Option<String> {
    let now = portcullis::clock::unix_ms();
    let t = table().lock().unwrap_or_else(PoisonError::into_inner);
    t.get(&key(ip))
        .filter(|(_, until)| *until > now)
        .map(|(j, _)| j.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_named_by_its_64() {
        let until = portcullis::clock::unix_ms() + 60_000;
        note(
            "2001:db8:1:2::7".parse().unwrap(),
            "ssh-test-origins",
            until,
        );
        note("10.9.9.9".parse().unwrap(), "ended", 1);
        assert_eq!(of("10.9.9.9".parse().unwrap()), None);
        assert_eq!(
            of("2001:db8:1:2::99".parse().unwrap()).as_deref(),
            Some("ssh-test-origins")
        );
        assert_eq!(of("2001:db8:1:3::7".parse().unwrap()), None);
    }
}
