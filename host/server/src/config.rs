//! The server's configuration: a TOML file plus `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides (merged into the file's table), deserialized with
//! serde into sections that refuse unknown keys, then checked. Durations
//! are humantime strings; growth factors may be fractional. Every error
//! names the key (`requests.window`) and the reason, in one line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use portcullis_core::{Cidr, Config, ConfigError};

use portcullis::client_ip::ForwardingHeader;
use toml::{Table, Value};

/// Where state lives.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite file (the default).
    Sqlite,
    /// Memory only.
    Memory,
    /// Redis for fleets.
    Redis,
}

/// A login the demo service accepts.
#[derive(Clone, Debug)]
pub struct User {
    /// Username (normalised like the core: trim, ASCII lowercase).
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// Everything `portcullis serve` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address \[127.0.0.1:8080\].
    pub listen: SocketAddr,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header naming the client behind a trusted proxy \[X-Forwarded-For\].
    pub client_ip_header: ForwardingHeader,
    /// Keys held by each `/admin` and `/metrics` table \[10 000\].
    pub admin_max_entries: usize,
    /// Bearer token for `/admin` (none: admin API off).
    pub admin_token: Option<String>,
    /// Store kind \[sqlite\].
    pub store: StoreKind,
    /// SQLite path \[./portcullis.db\].
    pub path: PathBuf,
    /// Redis URL \[redis://127.0.0.1:6379/\].
    pub redis_url: String,
    /// Redis Cluster node URLs (empty: one Redis at `redis_url`).
    pub redis_cluster: Vec<String>,
    /// Deny instead of falling back when Redis is down \[false\].
    pub fail_closed: bool,
    /// Per-decision Redis timeout \[50ms\].
    pub redis_timeout: StdDuration,
    /// Keys the Redis backend's local cache of standing denials holds
    /// \[10 000\]; 0 turns it off.
    pub denial_cache: usize,
    /// Keys held by the main table \[1 000 000\].
    pub max_entries: usize,
    /// The rules.
    pub rules: Config,
    /// Shadow mode for the service's request policy (`requests.shadow`)
    /// \[false\]: denials are recorded, counted and logged, not enforced.
    pub shadow: bool,
    /// Users (empty: the demo user).
    pub users: Vec<User>,
    /// Connection limits and timeouts of the listener.
    pub conn: ConnLimits,
    /// Password checking: concurrency, queue and argon2 parameters.
    pub hashing: Hashing,
    /// The forward-auth decision endpoint and the login-result API.
    pub forward_auth: ForwardAuth,
    /// Answer a locked (username, address) pair or address with 429
    /// \[true\]; `false` answers it exactly like a wrong password (401,
    /// same body, the penalty delay of the next failure), so an attacker
    /// cannot tell a lock from a miss (`login.reveal_lock`).
    pub reveal_lock: bool,
    /// `[[policies]]`: per-prefix request quotas.
    pub policies: Vec<crate::policies::PolicyConfig>,
    /// `[upstream]`: proxy mode (none: the demo routes).
    pub upstream: Option<crate::proxy::Upstream>,
    /// `[[login_routes]]` (proxy mode).
    pub login_routes: Vec<crate::proxy::LoginRoute>,
}

/// Forward-auth mode (`[forward_auth]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Serve the decision endpoint \[true\].
    pub enabled: bool,
    /// Path of the decision endpoint \[/check\].
    pub path: String,
    /// Bearer token of `POST /v1/login-result` (none: that API is off).
    pub report_token: Option<String>,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        ForwardAuth {
            enabled: true,
            path: crate::forward_auth::DEFAULT_CHECK_PATH.to_string(),
            report_token: None,
        }
    }
}

/// Connection limits and timeouts (`[server]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request head must be complete this long after the connection
    /// opens or the next request's first byte arrives \[10s\].
    pub header_read_timeout: StdDuration,
    /// A request body must be complete this long after its head \[30s\].
    pub body_read_timeout: StdDuration,
    /// A keep-alive connection with no request is closed after this \[60s\].
    pub idle_timeout: StdDuration,
    /// Open connections at most \[4096\] (capped at start-up by the fd limit).
    pub max_connections: u32,
    /// Open connections per client address (IPv6: per /64) at most \[64\].
    pub max_connections_per_ip: u32,
    /// SIGTERM: in-flight requests get this long before they are dropped \[10s\].
    pub shutdown_grace: StdDuration,
    /// Worker threads, each with its own runtime and listening socket
    /// \[None: one per core\].
    pub workers: Option<usize>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: StdDuration::from_secs(10),
            body_read_timeout: StdDuration::from_secs(30),
            idle_timeout: StdDuration::from_secs(60),
            max_connections: 4096,
            max_connections_per_ip: 64,
            shutdown_grace: StdDuration::from_secs(10),
            workers: None,
        }
    }
}

/// Largest argon2 memory cost (KiB) a configured or stored hash may ask
/// for: 256 MiB.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;

/// Password checking (`[login]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashing {
    /// argon2 verifications running at once at most \[number of cores\].
    pub max_concurrent: u32,
    /// Logins waiting for a verification at most; more get `503` \[64\].
    pub queue: u32,
    /// argon2id memory cost in KiB \[19456\] for new hashes and the dummy hash.
    pub memory_kib: u32,
    /// argon2id iterations \[2\].
    pub iterations: u32,
    /// argon2id lanes \[1\].
    pub parallelism: u32,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            max_concurrent: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .unwrap_or(1),
            queue: 64,
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl Hashing {
    /// The argon2 parameters (checked at load).
    pub fn params(&self) -> Result<argon2::Params, argon2::Error> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub struct BadConfig {
    /// Dotted key, or the file.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config error: {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for BadConfig {}

/// Most keys the main table may be configured to hold: the limiter spreads
/// keys over 64 shards with 10 % headroom each, and one shard's store
/// addresses at most 16 777 214 keys (`MapStore::new`), so 64 x 15 000 000
/// fits (a test checks the built limiter's capacity covers it).
pub const MAX_TABLE_ENTRIES: u32 = 960_000_000;

/// Most keys the Redis backend's denial cache may be configured to hold.
pub const MAX_DENIAL_CACHE: u32 = 10_000_000;

/// Most keys each admin table may hold: the same bound for its 4 shards.
pub const MAX_ADMIN_ENTRIES: u32 = 60_000_000;

fn bad(key: impl Into<String>, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A duration in humantime's format: `"60s"`, `"15m"`, `"24h"`, `"1h30m"`,
/// `"250ms"`, `"2d"`, also `"1h 30m"` or `"2days"`. A unit is required.
pub fn parse_duration(s: &str) -> Result<StdDuration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"60s\", \"15m\", \"24h\" ({e})"))
}

/// The configuration as written, file and environment merged: every key
/// optional (absent: the default), unknown sections and keys refused.
/// [`ServerConfig::from_str_env`] checks the values and builds the rest.
pub(crate) mod raw {
    use std::fmt;
    use std::marker::PhantomData;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::str::FromStr;
    use std::time::Duration as StdDuration;

    use portcullis_core::{Cidr, Growth};
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
        pub policies: Vec<crate::policies::RawPolicy>,
        pub upstream: Option<crate::proxy::RawUpstream>,
        pub login_routes: Vec<crate::proxy::RawLoginRoute>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields, expecting = "a table")]
    pub struct ForwardAuth {
        pub enabled: Option<bool>,
        pub path: Option<String>,
        pub report_token: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields, expecting = "a table")]
    pub struct Server {
        pub listen: Option<Parsed<SocketAddr>>,
        pub trusted_proxies: Option<Cidrs>,
        pub client_ip_header: Option<String>,
        pub admin_token: Option<String>,
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
        pub fn ticks(self) -> embassy_time::Duration {
            embassy_time::Duration::from_micros(
                u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX),
            )
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
}

/// An env value: TOML if it parses as a value (`5`, `true`, `["a"]`,
/// `"x"`), else the raw string.
fn env_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.into())),
        Err(_) => Value::String(raw.into()),
    }
}

/// Apply `PORTCULLIS_<SECTION>__<KEY>` variables onto `doc`.
fn apply_env(
    doc: &mut Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), BadConfig> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("PORTCULLIS_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            if rest == "CONFIG" || rest == "LOG" {
                continue;
            }
            return Err(bad(name, "expected PORTCULLIS_<SECTION>__<KEY>"));
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let entry = doc
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(t) = entry else {
            return Err(bad(section, "is not a table"));
        };
        t.insert(key, env_value(&raw));
    }
    Ok(())
}

/// One line from a serde error at `path`: the dotted key and a reason in
/// this file's words ("unknown key (known: …)", "expected …, got …").
fn from_serde(e: serde_path_to_error::Error<toml::de::Error>, file: &str) -> BadConfig {
    let path = e.path().to_string();
    let msg = e.inner().message().trim().to_string();
    let at = |field: &str| match path.as_str() {
        "." => field.to_string(),
        p if p.rsplit('.').next() == Some(field) => p.to_string(),
        p => format!("{p}.{field}"),
    };
    if let Some((field, rest)) = msg
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
    {
        let key = at(field);
        let what = if key == field {
            "unknown section"
        } else {
            "unknown key"
        };
        let known = rest
            .strip_prefix(", expected one of ")
            .or_else(|| rest.strip_prefix(", expected "))
            .map(|k| k.replace("` or `", ", ").replace('`', ""));
        return match known {
            Some(k) => bad(key, format!("{what} (known: {k})")),
            None => bad(key, what),
        };
    }
    if let Some((field, _)) = msg
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
    {
        return bad(at(field), "missing");
    }
    let key = if path == "." { file.to_string() } else { path };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, want)) = msg
            .strip_prefix(prefix)
            .and_then(|m| m.rsplit_once(", expected "))
        {
            return bad(key, format!("expected {want}, got {got}"));
        }
    }
    bad(key, msg)
}

/// The server-facing key for a core validation error.
pub(crate) fn core_key(e: &ConfigError) -> (String, String) {
    let (key, reason) = match e {
        ConfigError::Zero { key } => (*key, "must be greater than zero".to_string()),
        ConfigError::TooLarge { key, max } => (*key, format!("must be at most {max}")),
        ConfigError::OutOfRange { key, expected } => (*key, format!("must be {expected}")),
        _ => ("config", e.to_string()),
    };
    let key = match key {
        "slots.slots" => "slots.per_key".to_string(),
        "slots.slot_ttl" => "slots.ttl".to_string(),
        k => match k.strip_prefix("blocks.") {
            Some(rest) => format!("requests.{rest}"),
            None => k.to_string(),
        },
    };
    (key, reason)
}

impl ServerConfig {
    /// Read `file` (if any) and the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<ServerConfig, BadConfig> {
        let text = match file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| bad(p.display().to_string(), e.to_string()))?,
            None => String::new(),
        };
        let name = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        Self::from_str_env(&text, &name, std::env::vars())
    }

    /// Parse TOML `text` with environment `vars` applied over it.
    pub fn from_str_env(
        text: &str,
        name: &str,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<ServerConfig, BadConfig> {
        let mut doc: Table = text
            .parse()
            .map_err(|e: toml::de::Error| bad(name, e.message().trim().to_string()))?;
        apply_env(&mut doc, vars)?;
        let file: raw::File =
            serde_path_to_error::deserialize(Value::Table(doc)).map_err(|e| from_serde(e, name))?;
        let raw::File {
            server,
            store,
            requests: req,
            login,
            penalty: pen,
            slots,
            lists,
            users: raw_users,
            forward_auth: raw_fa,
            policies: raw_policies,
            upstream: raw_upstream,
            login_routes: raw_login_routes,
        } = file;

        let kind = store.kind.unwrap_or(StoreKind::Sqlite);
        let redis_cluster =
            match store.redis_cluster {
                Some(_) if store.redis_url.is_some() => return Err(bad(
                    "store.redis_cluster",
                    "set either redis_url (one Redis) or redis_cluster (a Redis Cluster), not both",
                )),
                Some(nodes) if nodes.is_empty() => {
                    return Err(bad("store.redis_cluster", "needs at least one node URL"))
                }
                Some(nodes) => nodes,
                None => Vec::new(),
            };
        let redis_url = store
            .redis_url
            .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
        if kind == StoreKind::Redis {
            redis::Client::open(redis_url.as_str())
                .map_err(|e| bad("store.redis_url", format!("{redis_url:?}: {e}")))?;
            for (i, u) in redis_cluster.iter().enumerate() {
                redis::Client::open(u.as_str())
                    .map_err(|e| bad(format!("store.redis_cluster[{i}]"), format!("{u:?}: {e}")))?;
            }
        }
        let redis_timeout = match store.redis_timeout {
            Some(d) if d.ticks().as_ticks() == 0 => {
                return Err(bad("store.redis_timeout", "must be greater than zero"))
            }
            Some(d) => d.std(),
            None => StdDuration::from_millis(50),
        };

        let mut c = Config::default();
        macro_rules! set {
            ($v:expr => $field:expr) => {
                if let Some(v) = $v {
                    $field = v;
                }
            };
        }
        let uint = |v: Option<raw::Uint>| v.map(|u| u.0);
        let ticks = |v: Option<raw::Dur>| v.map(raw::Dur::ticks);
        apply_requests(&req, &mut c);
        set!(uint(login.max_failures) => c.login.max_failures);
        set!(ticks(login.failure_window) => c.login.failure_window);
        set!(ticks(login.lock_for) => c.login.lock_for);
        set!(login.lock_ip_on_account_lock => c.login.lock_ip_on_account_lock);
        if let Some(n) = uint(login.account_max_failures) {
            c.login.account_max_failures = (n > 0).then_some(n);
        }
        set!(ticks(login.account_window) => c.login.account_window);
        set!(ticks(pen.base) => c.penalty.base);
        set!(pen.multiplier.map(|f| f.0) => c.penalty.multiplier);
        set!(ticks(pen.max) => c.penalty.max);
        set!(uint(slots.per_key) => c.slots.slots);
        set!(ticks(slots.ttl) => c.slots.slot_ttl);
        for (k, list, v) in [
            ("allow", &mut c.lists.allow, lists.allow),
            ("deny", &mut c.lists.deny, lists.deny),
        ] {
            let cap = list.capacity();
            for cidr in v.map(|v| v.0).unwrap_or_default() {
                list.push(cidr)
                    .map_err(|_| bad(format!("lists.{k}"), format!("more than {cap} entries")))?;
            }
        }
        c.validate(portcullis::limiter::W).map_err(|e| {
            let (k, r) = core_key(&e);
            bad(k, r)
        })?;
        let policies = crate::policies::check(raw_policies, &c)?;
        let (upstream, login_routes) = crate::proxy::check(raw_upstream, raw_login_routes)?;

        let mut conn = ConnLimits::default();
        let nonzero = |key: &str, v: Option<raw::Dur>| match v {
            Some(d) if d.ticks().as_ticks() == 0 => {
                Err(bad(format!("server.{key}"), "must be greater than zero"))
            }
            v => Ok(v.map(raw::Dur::std)),
        };
        let positive = |key: &str, v: Option<raw::Uint>| match v {
            Some(raw::Uint(0)) => Err(bad(key, "must be greater than zero")),
            v => Ok(v.map(|u| u.0)),
        };
        set!(nonzero("header_read_timeout", server.header_read_timeout)? => conn.header_read_timeout);
        set!(nonzero("body_read_timeout", server.body_read_timeout)? => conn.body_read_timeout);
        set!(nonzero("idle_timeout", server.idle_timeout)? => conn.idle_timeout);
        set!(server.shutdown_grace.map(raw::Dur::std) => conn.shutdown_grace);
        set!(positive("server.max_connections", server.max_connections)? => conn.max_connections);
        if let Some(n) = positive("server.workers", server.workers)? {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= 1024)
                .ok_or_else(|| bad("server.workers", "must be at most 1024"))?;
            conn.workers = Some(n);
        }
        set!(
            positive("server.max_connections_per_ip", server.max_connections_per_ip)?
                => conn.max_connections_per_ip
        );
        let mut hashing = Hashing::default();
        set!(
            positive("login.max_concurrent_hashes", login.max_concurrent_hashes)?
                => hashing.max_concurrent
        );
        set!(uint(login.hash_queue) => hashing.queue);
        set!(uint(login.argon2_memory_kib) => hashing.memory_kib);
        set!(uint(login.argon2_iterations) => hashing.iterations);
        set!(uint(login.argon2_parallelism) => hashing.parallelism);
        if hashing.memory_kib > MAX_ARGON2_MEMORY_KIB {
            return Err(bad(
                "login.argon2_memory_kib",
                format!("must be at most {MAX_ARGON2_MEMORY_KIB} (256 MiB)"),
            ));
        }
        hashing.params().map_err(|e| {
            let key = match e {
                argon2::Error::TimeTooSmall => "login.argon2_iterations",
                argon2::Error::ThreadsTooFew | argon2::Error::ThreadsTooMany => {
                    "login.argon2_parallelism"
                }
                _ => "login.argon2_memory_kib",
            };
            let reason = match e {
                argon2::Error::MemoryTooLittle => format!(
                    "{e}: at least 8 KiB per lane ({} KiB for argon2_parallelism = {})",
                    8 * u64::from(hashing.parallelism),
                    hashing.parallelism
                ),
                e => e.to_string(),
            };
            bad(key, reason)
        })?;

        let mut users = Vec::new();
        for (i, u) in raw_users.into_iter().enumerate() {
            let name = u.name.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(bad(
                    format!("users[{i}].name"),
                    "expected a non-empty string",
                ));
            }
            let hash = u.password_hash;
            let phc = argon2::PasswordHash::new(&hash).map_err(|e| {
                bad(
                    format!("users[{i}].password_hash"),
                    format!("not a PHC string: {e}"),
                )
            })?;
            // Verification uses the hash's own parameters: bound
            // them so one entry cannot make every login allocate
            // gigabytes.
            let m = argon2::Params::try_from(&phc)
                .map(|p| p.m_cost())
                .map_err(|e| {
                    bad(
                        format!("users[{i}].password_hash"),
                        format!("bad argon2 parameters: {e}"),
                    )
                })?;
            if m > MAX_ARGON2_MEMORY_KIB {
                return Err(bad(
                    format!("users[{i}].password_hash"),
                    format!(
                        "m={m} KiB is more than {MAX_ARGON2_MEMORY_KIB} KiB (256 MiB) per check"
                    ),
                ));
            }
            users.push(User {
                name,
                password_hash: hash,
            });
        }

        let table_size = |key: &str, v: Option<raw::Uint>, max: u32, default: usize| match v {
            None => Ok(default),
            Some(raw::Uint(0)) => Err(bad(key, "must be greater than zero")),
            Some(raw::Uint(n)) if n > max => Err(bad(key, format!("must be at most {max}"))),
            Some(raw::Uint(n)) => {
                usize::try_from(n).map_err(|_| bad(key, "too large for this platform"))
            }
        };
        Ok(ServerConfig {
            listen: server
                .listen
                .map(|a| a.0)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            trusted_proxies: server.trusted_proxies.map(|v| v.0).unwrap_or_default(),
            client_ip_header: match server.client_ip_header {
                Some(h) => h.parse().map_err(|e| bad("server.client_ip_header", e))?,
                None => ForwardingHeader::default(),
            },
            admin_max_entries: table_size(
                "server.admin_max_entries",
                server.admin_max_entries,
                MAX_ADMIN_ENTRIES,
                10_000,
            )?,
            admin_token: server.admin_token.filter(|s| !s.is_empty()),
            store: kind,
            path: store
                .path
                .unwrap_or_else(|| PathBuf::from("./portcullis.db")),
            redis_url,
            redis_cluster,
            fail_closed: store.fail_closed.unwrap_or(false),
            redis_timeout,
            denial_cache: match store.denial_cache {
                None => portcullis::fleet::denials::DEFAULT_CAPACITY,
                Some(raw::Uint(n)) if n > MAX_DENIAL_CACHE => {
                    return Err(bad(
                        "store.denial_cache",
                        format!("must be at most {MAX_DENIAL_CACHE}"),
                    ))
                }
                Some(raw::Uint(n)) => usize::try_from(n)
                    .map_err(|_| bad("store.denial_cache", "too large for this platform"))?,
            },
            max_entries: table_size(
                "store.max_entries",
                store.max_entries,
                MAX_TABLE_ENTRIES,
                1_000_000,
            )?,
            rules: c,
            shadow: req.shadow.unwrap_or(false),
            users,
            conn,
            hashing,
            forward_auth: forward_auth(raw_fa)?,
            reveal_lock: login.reveal_lock.unwrap_or(true),
            policies,
            upstream,
            login_routes,
        })
    }
}

/// `[forward_auth]`, checked: the path (checked even when switched off) is an absolute path of its own (not
/// `/`, not under the server's own `/admin`, `/metrics`, `/login`, `/v1/`).
fn forward_auth(raw: raw::ForwardAuth) -> Result<ForwardAuth, BadConfig> {
    let mut fa = ForwardAuth::default();
    if let Some(p) = raw.path {
        let key = "forward_auth.path";
        let ok_chars = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if !p.starts_with('/') || p.len() < 2 || !ok_chars || p.contains("//") {
            return Err(bad(
                key,
                format!("{p:?} is not an absolute path like \"/check\""),
            ));
        }
        let taken = ["/admin", "/metrics", "/login", "/v1"];
        if let Some(t) = taken
            .iter()
            .find(|t| p == **t || p.starts_with(&format!("{t}/")))
        {
            return Err(bad(key, format!("{p:?} is taken by portcullis ({t})")));
        }
        fa.path = p;
    }
    fa.enabled = raw.enabled.unwrap_or(true);
    fa.report_token = raw.report_token.filter(|t| !t.is_empty());
    Ok(fa)
}

/// Set the `[requests]` keys `req` has on `c` (the defaults, or a
/// policy's copy of them).
pub(crate) fn apply_requests(req: &raw::Requests, c: &mut Config) {
    let uint = |v: Option<raw::Uint>| v.map(|u| u.0);
    let ticks = |v: Option<raw::Dur>| v.map(raw::Dur::ticks);
    macro_rules! set {
        ($v:expr => $field:expr) => {
            if let Some(v) = $v {
                $field = v;
            }
        };
    }
    set!(uint(req.max_requests) => c.requests.max_requests);
    set!(ticks(req.window) => c.requests.window);
    set!(ticks(req.violation_memory) => c.blocks.violation_memory);
    set!(uint(req.block_after) => c.blocks.block_after);
    set!(ticks(req.block_for) => c.blocks.block_for);
    set!(req.block_growth.map(|f| f.0) => c.blocks.block_growth);
    set!(ticks(req.max_block) => c.blocks.max_block);
    if let Some(n) = uint(req.ban_after) {
        c.blocks.ban_after = (n > 0).then_some(n);
    }
    set!(ticks(req.ban_lookback) => c.blocks.ban_lookback);
    set!(ticks(req.block_jitter) => c.blocks.block_jitter);
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_time::Duration;
    use portcullis_core::Growth;

    pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(
            text,
            "test.toml",
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn block_jitter_and_reveal_lock() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.rules.blocks.block_jitter, Duration::from_secs(0));
        assert!(c.reveal_lock, "the default reveals a lock (429)");
        let c = load(
            "[requests]\nblock_jitter = \"5m\"\n[login]\nreveal_lock = false\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.blocks.block_jitter, Duration::from_secs(300));
        assert!(!c.reveal_lock);
        let e = load("[login]\nreveal_lock = \"no\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("login.reveal_lock"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(StdDuration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(StdDuration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(StdDuration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(StdDuration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(StdDuration::from_secs(172_800)));
        assert_eq!(parse_duration(" 90s "), Ok(StdDuration::from_secs(90)));
        // humantime's longer forms.
        assert_eq!(parse_duration("1h 30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("2days"), Ok(StdDuration::from_secs(172_800)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn defaults_env_and_errors_name_the_key() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, PathBuf::from("./portcullis.db"));
        assert_eq!(c.rules, Config::default());
        let c = load(
            "[requests]\nmax_requests = 7\n",
            &[("PORTCULLIS_REQUESTS__WINDOW", "30s")],
        )
        .unwrap();
        assert_eq!(c.rules.requests.max_requests, 7);
        assert_eq!(c.rules.requests.window, Duration::from_secs(30));
        let c = load("", &[("PORTCULLIS_REQUESTS__MAX_REQUESTS", "5")]).unwrap();
        assert_eq!(c.rules.requests.max_requests, 5);
        let e = |t: &str, env: &[(&str, &str)]| load(t, env).unwrap_err().to_string();
        assert_eq!(
            e("[requests]\nwindow = \"0s\"\n", &[]),
            "config error: requests.window: must be greater than zero"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 0\n", &[]),
            "config error: penalty.multiplier: must be at least 1"
        );
        assert!(e("[requests]\nwindoww = \"1s\"\n", &[])
            .starts_with("config error: requests.windoww: unknown key"));
        assert!(e("[requests]\nmax_requests = \"many\"\n", &[])
            .starts_with("config error: requests.max_requests: expected an integer"));
        assert!(e("", &[("PORTCULLIS_LOGIN__LOCK_FOR", "forever")])
            .starts_with("config error: login.lock_for:"));
        assert!(e("[store]\nkind = \"mongo\"\n", &[]).starts_with("config error: store.kind:"));
        assert!(
            e("[store]\nkind = \"redis\"\nredis_url = \"http://x\"\n", &[])
                .starts_with("config error: store.redis_url:")
        );
        assert!(
            e("[store]\nkind = \"redis\"\nredis_url = \"redis://a/\"\nredis_cluster = [\"redis://b/\"]\n", &[])
                .starts_with("config error: store.redis_cluster: set either")
        );
        assert!(e("[store]\nkind = \"redis\"\nredis_cluster = []\n", &[])
            .starts_with("config error: store.redis_cluster:"));
        assert!(e(
            "[store]\nkind = \"redis\"\nredis_cluster = [\"redis://a:1/\", \"nope://\"]\n",
            &[]
        )
        .starts_with("config error: store.redis_cluster[1]:"));
        assert!(e("[slots]\nper_key = 9\n", &[])
            .starts_with("config error: slots.per_key: must be at most 4"));
        assert!(e("[lists]\nallow = [\"10.0.0.0/33\"]\n", &[])
            .starts_with("config error: lists.allow[0]: \"10.0.0.0/33\": prefix length"));
        assert!(e("[bogus]\n", &[]).starts_with("config error: bogus: unknown section"));
    }

    #[test]
    fn fractional_growth_factors() {
        let c = load(
            "[penalty]\nmultiplier = 1.5\n[requests]\nblock_growth = 1.125\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::from_thousandths(1500));
        assert_eq!(c.rules.blocks.block_growth, Growth::from_thousandths(1125));
        // Integral ones as before; 1 is no growth; from the environment too.
        let c = load(
            "[penalty]\nmultiplier = 3\n[requests]\nblock_growth = 1\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::times(3));
        assert_eq!(c.rules.blocks.block_growth, Growth::ONE);
        let c = load(
            "",
            &[
                ("PORTCULLIS_PENALTY__MULTIPLIER", "1.5"),
                ("PORTCULLIS_REQUESTS__BLOCK_GROWTH", "2.25"),
            ],
        )
        .unwrap();
        assert_eq!(c.rules.penalty.multiplier, Growth::from_thousandths(1500));
        assert_eq!(c.rules.blocks.block_growth, Growth::from_thousandths(2250));
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[penalty]\nmultiplier = 0.5\n"),
            "config error: penalty.multiplier: must be at least 1"
        );
        assert_eq!(
            e("[requests]\nblock_growth = 0\n"),
            "config error: requests.block_growth: must be at least 1"
        );
        assert_eq!(
            e("[requests]\nblock_growth = -2\n"),
            "config error: requests.block_growth: must be at least 1"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 1.0005\n"),
            "config error: penalty.multiplier: 1.0005 has more than three decimals (factors are kept in thousandths)"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = 5000000\n"),
            "config error: penalty.multiplier: must be at most 4294967.295"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = nan\n"),
            "config error: penalty.multiplier: expected a number like 2 or 1.5, got floating point `NaN`"
        );
        assert_eq!(
            e("[penalty]\nmultiplier = \"2x\"\n"),
            "config error: penalty.multiplier: expected a number like 2 or 1.5, got string \"2x\""
        );
    }

    #[test]
    fn serde_errors_name_the_key_in_one_line() {
        let e = |t: &str, env: &[(&str, &str)]| load(t, env).unwrap_err().to_string();
        assert_eq!(
            e("[requests]\nmax_requests = \"many\"\n", &[]),
            "config error: requests.max_requests: expected an integer, got string \"many\""
        );
        assert_eq!(
            e("[store]\nmax_entries = -1\n", &[]),
            "config error: store.max_entries: -1 is out of range (0 to 4294967295)"
        );
        assert_eq!(
            e("[login]\nlock_for = 5\n", &[]),
            "config error: login.lock_for: expected a duration string like \"60s\", got integer `5`"
        );
        assert!(
            e("", &[("PORTCULLIS_LOGIN__LOCK_FOR", "forever")]).starts_with(
                "config error: login.lock_for: \"forever\" is not a duration like \"60s\""
            )
        );
        assert_eq!(
            e("[penalty]\nmax = \"5y\"\nbase = \"1s\"\nbogus = 1\n", &[]),
            "config error: penalty.bogus: unknown key (known: base, multiplier, max)"
        );
        assert!(e("[bogus]\n", &[]).starts_with(
            "config error: bogus: unknown section (known: server, store, requests, login, penalty, slots, lists, users, forward_auth, policies, upstream, login_routes)"
        ));
        assert!(e("", &[("PORTCULLIS_NOPE__X", "1")])
            .starts_with("config error: nope: unknown section"));
        assert_eq!(
            e("requests = 5\n", &[]),
            "config error: requests: expected a table, got integer `5`"
        );
        assert_eq!(
            e("[store]\nkind = \"mongo\"\n", &[]),
            "config error: store.kind: unknown variant `mongo`, expected one of `sqlite`, `memory`, `redis`"
        );
        assert_eq!(
            e("[store]\nfail_closed = \"yes\"\n", &[]),
            "config error: store.fail_closed: expected a boolean, got string \"yes\""
        );
        assert_eq!(
            e("[server]\nlisten = \"nowhere\"\n", &[]),
            "config error: server.listen: \"nowhere\": invalid socket address syntax"
        );
        assert_eq!(
            e("[lists]\ndeny = [\"10.0.0.0/8\", 7]\n", &[]),
            "config error: lists.deny[1]: expected a string, got integer `7`"
        );
        assert_eq!(
            e("", &[("PORTCULLIS_LISTS__ALLOW", "10.0.0.0/8, nope")]),
            "config error: lists.allow: \"nope\": not an IP address"
        );
        assert_eq!(
            e("[[users]]\nname = \"a\"\npassword = \"x\"\n", &[]),
            "config error: users[0].password: unknown key (known: name, password_hash)"
        );
        assert_eq!(
            e("[[users]]\nname = \"a\"\n", &[]),
            "config error: users[0].password_hash: missing"
        );
        assert_eq!(
            e("[[users]]\nname = \" \"\npassword_hash = \"x\"\n", &[]),
            "config error: users[0].name: expected a non-empty string"
        );
        assert!(e("x = [", &[]).starts_with("config error: test.toml: "));
        // Lists from the environment: TOML lists or comma-separated.
        let c = load(
            "",
            &[
                ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
                ("PORTCULLIS_LISTS__DENY", "10.0.0.0/8,192.0.2.0/24"),
            ],
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(c.rules.lists.deny.len(), 2);
    }

    #[test]
    fn denial_cache_size() {
        assert_eq!(load("", &[]).unwrap().denial_cache, 10_000);
        let c = load("[store]\ndenial_cache = 0\n", &[]).unwrap();
        assert_eq!(c.denial_cache, 0, "0 turns the cache off");
        let c = load("", &[("PORTCULLIS_STORE__DENIAL_CACHE", "250")]).unwrap();
        assert_eq!(c.denial_cache, 250);
        assert_eq!(
            load("[store]\ndenial_cache = 10000001\n", &[])
                .unwrap_err()
                .to_string(),
            "config error: store.denial_cache: must be at most 10000000"
        );
        assert!(load("[store]\ndenial_cache = -1\n", &[])
            .unwrap_err()
            .to_string()
            .starts_with("config error: store.denial_cache"));
    }

    #[test]
    fn table_sizes_and_client_ip_header() {
        let c = load("", &[]).unwrap();
        assert_eq!((c.max_entries, c.admin_max_entries), (1_000_000, 10_000));
        assert_eq!(c.client_ip_header, ForwardingHeader::XForwardedFor);
        let c = load(
            "[store]\nmax_entries = 500\n[server]\nadmin_max_entries = 7\nclient_ip_header = \"Forwarded\"\n",
            &[],
        )
        .unwrap();
        assert_eq!((c.max_entries, c.admin_max_entries), (500, 7));
        assert_eq!(c.client_ip_header, ForwardingHeader::Forwarded);
        let c = load("", &[("PORTCULLIS_SERVER__CLIENT_IP_HEADER", "X-Real-IP")]).unwrap();
        assert_eq!(c.client_ip_header.to_string(), "x-real-ip");
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[store]\nmax_entries = 0\n"),
            "config error: store.max_entries: must be greater than zero"
        );
        assert_eq!(
            e("[server]\nadmin_max_entries = 0\n"),
            "config error: server.admin_max_entries: must be greater than zero"
        );
        assert_eq!(
            e("[store]\nmax_entries = 960000001\n"),
            "config error: store.max_entries: must be at most 960000000"
        );
        assert!(e("[store]\nmax_entries = -1\n").starts_with("config error: store.max_entries:"));
        assert!(e("[server]\nclient_ip_header = \"X Real\"\n")
            .starts_with("config error: server.client_ip_header: "));
    }

    #[test]
    fn the_largest_table_fits_the_limiter() {
        let opts = portcullis::limiter::LimiterOptions {
            max_entries: MAX_TABLE_ENTRIES as usize,
            ..Default::default()
        };
        let l = portcullis::limiter::Limiter::new(Config::default(), opts).unwrap();
        assert!(
            l.capacity() >= MAX_TABLE_ENTRIES as usize,
            "{}",
            l.capacity()
        );
        let opts = portcullis::limiter::LimiterOptions {
            max_entries: MAX_ADMIN_ENTRIES as usize,
            shards: crate::http::ADMIN_SHARDS,
            seed: None,
        };
        let l = portcullis::limiter::Limiter::new(Config::default(), opts).unwrap();
        assert!(
            l.capacity() >= MAX_ADMIN_ENTRIES as usize,
            "{}",
            l.capacity()
        );
    }
}

#[cfg(test)]
mod forward_auth_tests {
    use super::tests::load;

    #[test]
    fn forward_auth_keys() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.forward_auth.path, "/check");
        assert!(c.forward_auth.enabled);
        assert_eq!(c.forward_auth.report_token, None);
        let c = load("", &[("PORTCULLIS_FORWARD_AUTH__ENABLED", "false")]).unwrap();
        assert!(!c.forward_auth.enabled);
        let c = load(
            "[forward_auth]\npath = \"/_auth/v1.check\"\nreport_token = \"t0k\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.forward_auth.path, "/_auth/v1.check");
        assert_eq!(c.forward_auth.report_token.as_deref(), Some("t0k"));
        let c = load("", &[("PORTCULLIS_FORWARD_AUTH__REPORT_TOKEN", "")]).unwrap();
        assert_eq!(c.forward_auth.report_token, None);
        let e = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert_eq!(
            e("[forward_auth]\npath = \"check\"\n"),
            "config error: forward_auth.path: \"check\" is not an absolute path like \"/check\""
        );
        for p in ["/", "/a?b", "/a b", "//x", "/é"] {
            assert!(
                e(&format!("[forward_auth]\npath = {p:?}\n"))
                    .starts_with("config error: forward_auth.path: "),
                "{p}"
            );
        }
        assert_eq!(
            e("[forward_auth]\npath = \"/admin/check\"\n"),
            "config error: forward_auth.path: \"/admin/check\" is taken by portcullis (/admin)"
        );
        assert_eq!(
            e("[forward_auth]\npath = \"/v1/login-result\"\n"),
            "config error: forward_auth.path: \"/v1/login-result\" is taken by portcullis (/v1)"
        );
        assert!(load("[forward_auth]\npath = \"/adminx\"\n", &[]).is_ok());
        assert_eq!(
            e("[forward_auth]\ntoken = \"x\"\n"),
            "config error: forward_auth.token: unknown key (known: enabled, path, report_token)"
        );
        assert_eq!(
            e("[forward_auth]\npath = 5\n"),
            "config error: forward_auth.path: expected a string, got integer `5`"
        );
    }
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(
            "",
            "test.toml",
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn connection_and_hashing_keys() {
        let c = load(&[]).unwrap();
        assert_eq!(c.conn, ConnLimits::default());
        assert_eq!(c.conn.header_read_timeout, StdDuration::from_secs(10));
        assert_eq!(c.hashing.memory_kib, 19456);
        assert!(c.hashing.max_concurrent >= 1);
        let c = load(&[
            ("PORTCULLIS_SERVER__IDLE_TIMEOUT", "5s"),
            ("PORTCULLIS_SERVER__SHUTDOWN_GRACE", "0s"),
            ("PORTCULLIS_LOGIN__HASH_QUEUE", "0"),
        ])
        .unwrap();
        assert_eq!(c.conn.idle_timeout, StdDuration::from_secs(5));
        assert_eq!(c.conn.shutdown_grace, StdDuration::ZERO);
        assert_eq!(c.hashing.queue, 0);
        let e = |env: &[(&str, &str)]| load(env).unwrap_err().to_string();
        assert_eq!(
            e(&[("PORTCULLIS_SERVER__HEADER_READ_TIMEOUT", "0s")]),
            "config error: server.header_read_timeout: must be greater than zero"
        );
        assert_eq!(
            e(&[("PORTCULLIS_SERVER__MAX_CONNECTIONS_PER_IP", "0")]),
            "config error: server.max_connections_per_ip: must be greater than zero"
        );
        assert_eq!(
            e(&[("PORTCULLIS_LOGIN__MAX_CONCURRENT_HASHES", "0")]),
            "config error: login.max_concurrent_hashes: must be greater than zero"
        );
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_ITERATIONS", "0")])
            .starts_with("config error: login.argon2_iterations:"));
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "4")])
            .starts_with("config error: login.argon2_memory_kib:"));
        assert!(e(&[("PORTCULLIS_LOGIN__ARGON2_MEMORY_KIB", "300000")])
            .starts_with("config error: login.argon2_memory_kib: must be at most 262144"));
    }
}
