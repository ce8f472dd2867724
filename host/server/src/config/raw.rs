//! The configuration as written, file and environment merged: every key
//! optional (absent: the default), unknown sections and keys refused.
//! [`super::ServerConfig::from_str_env`] checks the values and builds the rest.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use portcullis::{Cidr, Growth};
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

use super::StoreKind;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct File {
    pub server: Server,
    pub store: Store,
    pub requests: Requests,
    pub login: Login,
    pub penalty: Penalty,
    pub slots: Slots,
    pub lists: Lists,
    pub users: Vec<User>,
    pub forward_auth: ForwardAuth,
    pub policies: Vec<super::policies::RawPolicy>,
    pub upstream: Option<super::proxy::RawUpstream>,
    pub login_routes: Vec<super::proxy::RawLoginRoute>,
    pub jails: Vec<super::jails::RawJail>,
    pub firewall: Firewall,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Firewall {
    pub kind: Option<String>,
    pub table: Option<String>,
    pub set_v4: Option<String>,
    pub set_v6: Option<String>,
    pub ranges_v4: Option<String>,
    pub ranges_v6: Option<String>,
    pub reconcile_interval: Option<Dur>,
    pub locks: Option<bool>,
    pub nft: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct ForwardAuth {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub report_token: Option<String>,
    pub proxy: Option<String>,
    pub method_header: Option<String>,
    pub uri_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Server {
    pub listen: Option<Parsed<SocketAddr>>,
    pub trusted_proxies: Option<Cidrs>,
    pub client_ip_header: Option<String>,
    pub admin_token: Option<String>,
    pub metrics_token: Option<String>,
    pub admin_max_entries: Option<Uint>,
    pub header_read_timeout: Option<Dur>,
    pub body_read_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub max_connections: Option<Uint>,
    pub max_connections_per_ip: Option<Uint>,
    pub shutdown_grace: Option<Dur>,
    pub workers: Option<Uint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Store {
    pub kind: Option<StoreKind>,
    pub path: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub redis_cluster: Option<Vec<String>>,
    pub fail_closed: Option<bool>,
    pub redis_timeout: Option<Dur>,
    pub max_entries: Option<Uint>,
    pub denial_cache: Option<Uint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Requests {
    pub max_requests: Option<Uint>,
    pub window: Option<Dur>,
    pub violation_memory: Option<Dur>,
    pub block_after: Option<Uint>,
    pub block_for: Option<Dur>,
    pub block_growth: Option<Factor>,
    pub max_block: Option<Dur>,
    pub ban_after: Option<Uint>,
    pub ban_lookback: Option<Dur>,
    pub shadow: Option<bool>,
    pub block_jitter: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Login {
    pub max_failures: Option<Uint>,
    pub ip_max_failures: Option<Uint>,
    pub failure_window: Option<Dur>,
    pub lock_for: Option<Dur>,
    pub lock_ip_on_account_lock: Option<bool>,
    pub account_max_failures: Option<Uint>,
    pub account_window: Option<Dur>,
    pub max_concurrent_hashes: Option<Uint>,
    pub hash_queue: Option<Uint>,
    pub argon2_memory_kib: Option<Uint>,
    pub argon2_iterations: Option<Uint>,
    pub argon2_parallelism: Option<Uint>,
    pub reveal_lock: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Penalty {
    pub base: Option<Dur>,
    pub multiplier: Option<Factor>,
    pub max: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Slots {
    pub per_key: Option<Uint>,
    pub ttl: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct Lists {
    pub allow: Option<Cidrs>,
    pub deny: Option<Cidrs>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with name and password_hash")]
pub struct User {
    pub name: String,
    pub password_hash: String,
}

/// An integer from 0 to `u32::MAX`.
#[derive(Debug, Clone, Copy)]
pub struct Uint(pub u32);

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Uint;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Uint, E> {
                u32::try_from(v).map(Uint).map_err(|_| out_of_range(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Uint, E> {
                u32::try_from(v).map(Uint).map_err(|_| out_of_range(v))
            }
        }
        fn out_of_range<E: de::Error>(v: impl fmt::Display) -> E {
            E::custom(format!("{v} is out of range (0 to {})", u32::MAX))
        }
        d.deserialize_any(V)
    }
}

/// A duration string (see [`super::parse_duration`]), kept to the
/// microsecond (the core's tick).
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub StdDuration);

impl Dur {
    /// The core's duration.
    pub fn ticks(self) -> portcullis::Duration {
        portcullis::Duration::from_micros(u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX))
    }

    /// Whole microseconds, as the core would keep it.
    pub fn std(self) -> StdDuration {
        StdDuration::from_micros(self.ticks().as_micros())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string like \"60s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                super::parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A growth factor of at least 1, integral or with at most three
/// decimals (`2`, `1.5`, `1.125`): kept in thousandths.
#[derive(Debug, Clone, Copy)]
pub struct Factor(pub Growth);

/// The largest factor: `u32::MAX` thousandths.
const MAX_FACTOR: f64 = u32::MAX as f64 / 1000.0;

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Factor;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number like 2 or 1.5")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Factor, E> {
                match u32::try_from(v) {
                    Err(_) if v < 0 => Err(E::custom("must be at least 1")),
                    Ok(n) if n <= u32::MAX / 1000 => Ok(Factor(Growth::times(n))),
                    _ => Err(E::custom(format!("must be at most {MAX_FACTOR}"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Factor, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Factor, E> {
                if v.is_nan() {
                    return Err(E::invalid_value(Unexpected::Float(v), &self));
                }
                if v < 0.0 {
                    return Err(E::custom("must be at least 1"));
                }
                if v > MAX_FACTOR {
                    return Err(E::custom(format!("must be at most {MAX_FACTOR}")));
                }
                let t = (v * 1000.0).round();
                if (v * 1000.0 - t).abs() > 1e-6 {
                    return Err(E::custom(format!(
                        "{v} has more than three decimals (factors are kept in thousandths)"
                    )));
                }
                // In range and integral: the cast is exact.
                Ok(Factor(Growth::from_thousandths(t as u32)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string parsed with `FromStr`; errors quote the string.
#[derive(Debug, Clone)]
pub struct Parsed<T>(pub T);

impl<'de, T: FromStr> Deserialize<'de> for Parsed<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: FromStr> Visitor<'_> for V<T>
        where
            T::Err: fmt::Display,
        {
            type Value = Parsed<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Parsed<T>, E> {
                s.parse()
                    .map(Parsed)
                    .map_err(|e| E::custom(format!("{s:?}: {e}")))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// CIDRs: a list of strings, or (from the environment) one string of
/// comma-separated ones.
#[derive(Debug, Clone, Default)]
pub struct Cidrs(pub Vec<Cidr>);

impl<'de> Deserialize<'de> for Cidrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cidrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of CIDRs")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Cidrs, E> {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Parsed::<Cidr>::deserialize(de::value::StrDeserializer::new(p)))
                    .map(|r| r.map(|c| c.0))
                    .collect::<Result<_, _>>()
                    .map(Cidrs)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cidrs, A::Error> {
                let mut v = Vec::new();
                while let Some(Parsed(c)) = seq.next_element::<Parsed<Cidr>>()? {
                    v.push(c);
                }
                Ok(Cidrs(v))
            }
        }
        d.deserialize_any(V)
    }
}
