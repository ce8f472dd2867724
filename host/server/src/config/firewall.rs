//! `[firewall]`, checked: whether holds are mirrored into the kernel
//! (nftables) and the names of the table and sets portcullis owns there.
//! How the mirror works: `docs/firewall.md`.

use std::time::Duration as StdDuration;

use super::{bad, raw, BadConfig};

/// Where holds are enforced besides portcullis itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FirewallKind {
    /// Nowhere else (the default).
    #[default]
    Off,
    /// nftables sets in a table of portcullis's own (`nft` must run).
    Nftables,
}

/// `[firewall]`: the kernel mirror of bans, blocks, locks and manual
/// decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    /// `firewall.kind` \[off\].
    pub kind: FirewallKind,
    /// The `inet` table portcullis creates and owns \[portcullis\].
    pub table: String,
    /// Single IPv4 addresses (bans, blocks, locks) \[addr4\].
    pub set_v4: String,
    /// IPv6 holds, one element per aggregated prefix (`/64`) \[addr6\].
    pub set_v6: String,
    /// Manual IPv4 ranges \[range4\].
    pub ranges_v4: String,
    /// Manual IPv6 ranges \[range6\].
    pub ranges_v6: String,
    /// How often the sets are compared with the store \[30s\].
    pub reconcile_interval: StdDuration,
    /// Mirror login locks of an address (`ip_locked`) too \[true\].
    pub locks: bool,
    /// The `nft` program \[nft, found on `PATH`\].
    pub nft: String,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            kind: FirewallKind::Off,
            table: "portcullis".into(),
            set_v4: "addr4".into(),
            set_v6: "addr6".into(),
            ranges_v4: "range4".into(),
            ranges_v6: "range6".into(),
            reconcile_interval: StdDuration::from_secs(30),
            locks: true,
            nft: "nft".into(),
        }
    }
}

impl Firewall {
    /// Whether holds go to the kernel.
    pub fn enabled(&self) -> bool {
        self.kind != FirewallKind::Off
    }
}

/// An nftables table, chain or set name portcullis accepts: a letter, then
/// letters, digits and `_`, at most 64 bytes (nft's own limit is 255; this
/// keeps names that need no quoting in `nft` commands).
fn name(key: &str, v: Option<String>, default: &str) -> Result<String, BadConfig> {
    let Some(v) = v else {
        return Ok(default.to_string());
    };
    let ok = v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(bad(
            key,
            format!("{v:?}: a letter, then letters, digits or _ (64 at most)"),
        ));
    }
    Ok(v)
}

/// `[firewall]` checked.
pub(crate) fn check(f: raw::Firewall) -> Result<Firewall, BadConfig> {
    let d = Firewall::default();
    let kind = match f.kind.as_deref().map(str::trim) {
        None | Some("off") => FirewallKind::Off,
        Some("nftables") => FirewallKind::Nftables,
        Some(other) => {
            return Err(bad(
                "firewall.kind",
                format!("{other:?}: \"off\" or \"nftables\""),
            ))
        }
    };
    let out = Firewall {
        kind,
        table: name("firewall.table", f.table, &d.table)?,
        set_v4: name("firewall.set_v4", f.set_v4, &d.set_v4)?,
        set_v6: name("firewall.set_v6", f.set_v6, &d.set_v6)?,
        ranges_v4: name("firewall.ranges_v4", f.ranges_v4, &d.ranges_v4)?,
        ranges_v6: name("firewall.ranges_v6", f.ranges_v6, &d.ranges_v6)?,
        reconcile_interval: match f.reconcile_interval {
            Some(i) if i.std() < StdDuration::from_secs(1) => {
                return Err(bad("firewall.reconcile_interval", "must be at least 1s"))
            }
            Some(i) => i.std(),
            None => d.reconcile_interval,
        },
        locks: f.locks.unwrap_or(d.locks),
        nft: match f.nft {
            Some(p) if p.trim().is_empty() => {
                return Err(bad("firewall.nft", "must name a program"))
            }
            Some(p) => p,
            None => d.nft,
        },
    };
    let sets = [
        ("firewall.set_v4", &out.set_v4),
        ("firewall.set_v6", &out.set_v6),
        ("firewall.ranges_v4", &out.ranges_v4),
        ("firewall.ranges_v6", &out.ranges_v6),
    ];
    for (i, (key, a)) in sets.iter().enumerate() {
        if sets.iter().skip(i + 1).any(|(_, b)| a == b) {
            return Err(bad(*key, format!("{a:?}: the four set names must differ")));
        }
    }
    Ok(out)
}
