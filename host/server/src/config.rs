//! The server's configuration: a TOML file plus `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides, checked key by key. Every error names the key
//! (`requests.window`) and the reason, in one line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use embassy_time::Duration;
use portcullis_core::{Cidr, Config, ConfigError};

use portcullis::client_ip::ForwardingHeader;
use toml::{Table, Value};

/// Where state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Listen address [127.0.0.1:8080].
    pub listen: SocketAddr,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header naming the client behind a trusted proxy [X-Forwarded-For].
    pub client_ip_header: ForwardingHeader,
    /// Keys held by each `/admin` and `/metrics` table [10 000].
    pub admin_max_entries: usize,
    /// Bearer token for `/admin` (none: admin API off).
    pub admin_token: Option<String>,
    /// Store kind \[sqlite\].
    pub store: StoreKind,
    /// SQLite path [./portcullis.db].
    pub path: PathBuf,
    /// Redis URL [redis://127.0.0.1:6379/].
    pub redis_url: String,
    /// Deny instead of falling back when Redis is down [false].
    pub fail_closed: bool,
    /// Per-decision Redis timeout \[50ms\].
    pub redis_timeout: StdDuration,
    /// Keys held by the main table [1 000 000].
    pub max_entries: usize,
    /// The rules.
    pub rules: Config,
    /// Users (empty: the demo user).
    pub users: Vec<User>,
    /// Connection limits and timeouts of the listener.
    pub conn: ConnLimits,
    /// Password checking: concurrency, queue and argon2 parameters.
    pub hashing: Hashing,
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
        }
    }
}

/// Largest argon2 memory cost (KiB) a configured or stored hash may ask
/// for: 256 MiB.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;

/// Password checking (`[login]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashing {
    /// argon2 verifications running at once at most [number of cores].
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

/// Most keys each admin table may hold: the same bound for its 4 shards.
pub const MAX_ADMIN_ENTRIES: u32 = 60_000_000;

fn bad(key: impl Into<String>, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key: key.into(),
        reason: reason.into(),
    }
}

/// `"90s"`, `"15m"`, `"24h"`, `"1h30m"`, `"250ms"`, `"2d"`.
pub fn parse_duration(s: &str) -> Result<StdDuration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{s:?} is not a duration like \"60s\", \"15m\", \"24h\""
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{s:?}: missing unit (ms, s, m, h, d)")),
            u => return Err(format!("{s:?}: unknown unit {u:?} (ms, s, m, h, d)")),
        };
        total = total.saturating_add(n.saturating_mul(ms));
        rest = &rest[unit_len..];
    }
    let ms = u64::try_from(total).map_err(|_| format!("{s:?}: too long"))?;
    Ok(StdDuration::from_millis(ms))
}

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "trusted_proxies",
            "client_ip_header",
            "admin_token",
            "admin_max_entries",
            "header_read_timeout",
            "body_read_timeout",
            "idle_timeout",
            "max_connections",
            "max_connections_per_ip",
            "shutdown_grace",
        ],
    ),
    (
        "store",
        &[
            "kind",
            "path",
            "redis_url",
            "fail_closed",
            "redis_timeout",
            "max_entries",
        ],
    ),
    (
        "requests",
        &[
            "max_requests",
            "window",
            "violation_memory",
            "block_after",
            "block_for",
            "block_growth",
            "max_block",
            "ban_after",
            "ban_lookback",
        ],
    ),
    (
        "login",
        &[
            "max_failures",
            "failure_window",
            "lock_for",
            "lock_ip_on_account_lock",
            "account_max_failures",
            "account_window",
            "max_concurrent_hashes",
            "hash_queue",
            "argon2_memory_kib",
            "argon2_iterations",
            "argon2_parallelism",
        ],
    ),
    ("penalty", &["base", "multiplier", "max"]),
    ("slots", &["per_key", "ttl"]),
    ("lists", &["allow", "deny"]),
];

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

struct Reader<'a> {
    section: &'a str,
    table: Option<&'a Table>,
}

impl<'a> Reader<'a> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.section)
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.table.and_then(|t| t.get(k))
    }

    fn uint(&self, k: &str) -> Result<Option<u32>, BadConfig> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Integer(i)) => u32::try_from(*i).map(Some).map_err(|_| {
                bad(
                    self.key(k),
                    format!("{i} is out of range (0 to {})", u32::MAX),
                )
            }),
            Some(v) => Err(bad(
                self.key(k),
                format!("expected an integer, got {}", v.type_str()),
            )),
        }
    }

    /// A table size: 1 to `max`.
    fn entries(&self, k: &str, max: u32) -> Result<Option<usize>, BadConfig> {
        match self.uint(k)? {
            None => Ok(None),
            Some(0) => Err(bad(self.key(k), "must be greater than zero")),
            Some(n) if n > max => Err(bad(self.key(k), format!("must be at most {max}"))),
            Some(n) => usize::try_from(n)
                .map(Some)
                .map_err(|_| bad(self.key(k), "too large for this platform")),
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>, BadConfig> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(bad(
                self.key(k),
                format!("expected true or false, got {}", v.type_str()),
            )),
        }
    }

    fn string(&self, k: &str) -> Result<Option<&'a str>, BadConfig> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad(
                self.key(k),
                format!("expected a string, got {}", v.type_str()),
            )),
        }
    }

    fn duration(&self, k: &str) -> Result<Option<Duration>, BadConfig> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => {
                let d = parse_duration(s).map_err(|e| bad(self.key(k), e))?;
                Ok(Some(Duration::from_micros(
                    u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
                )))
            }
            Some(v) => Err(bad(
                self.key(k),
                format!(
                    "expected a duration string like \"60s\", got {}",
                    v.type_str()
                ),
            )),
        }
    }

    fn std_duration(&self, k: &str, nonzero: bool) -> Result<Option<StdDuration>, BadConfig> {
        match self.duration(k)? {
            Some(d) if nonzero && d.as_ticks() == 0 => {
                Err(bad(self.key(k), "must be greater than zero"))
            }
            Some(d) => Ok(Some(StdDuration::from_micros(d.as_micros()))),
            None => Ok(None),
        }
    }

    fn positive(&self, k: &str) -> Result<Option<u32>, BadConfig> {
        match self.uint(k)? {
            Some(0) => Err(bad(self.key(k), "must be greater than zero")),
            v => Ok(v),
        }
    }

    fn cidrs(&self, k: &str) -> Result<Option<Vec<Cidr>>, BadConfig> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s
                        .parse::<Cidr>()
                        .map_err(|e| bad(self.key(k), format!("{s:?}: {e}"))),
                    v => Err(bad(
                        self.key(k),
                        format!("expected CIDR strings, got {}", v.type_str()),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    p.parse::<Cidr>()
                        .map_err(|e| bad(self.key(k), format!("{p:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(bad(
                self.key(k),
                format!("expected a list of CIDRs, got {}", v.type_str()),
            )),
        }
    }
}

/// The server-facing key for a core validation error.
fn core_key(e: &ConfigError) -> (String, String) {
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
    let reason = match (key.as_str(), e) {
        ("penalty.multiplier", ConfigError::Zero { .. }) => "must be at least 1".to_string(),
        (_, _) => reason,
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
            .map_err(|e: toml::de::Error| bad(name, e.message().to_string()))?;
        apply_env(&mut doc, vars)?;
        for (k, v) in &doc {
            if k == "users" {
                continue;
            }
            let Some((_, keys)) = SECTIONS.iter().find(|(s, _)| s == k) else {
                return Err(bad(k.clone(), "unknown section"));
            };
            let Value::Table(t) = v else {
                return Err(bad(k.clone(), "expected a table"));
            };
            for key in t.keys() {
                if !keys.contains(&key.as_str()) {
                    return Err(bad(
                        format!("{k}.{key}"),
                        format!("unknown key (known: {})", keys.join(", ")),
                    ));
                }
            }
        }
        let section = |s: &'static str| Reader {
            section: s,
            table: doc.get(s).and_then(Value::as_table),
        };
        let server = section("server");
        let store = section("store");
        let req = section("requests");
        let login = section("login");
        let pen = section("penalty");
        let slots = section("slots");
        let lists = section("lists");

        let listen = match server.string("listen")? {
            Some(s) => s
                .parse()
                .map_err(|e| bad("server.listen", format!("{s:?}: {e}")))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let kind = match store.string("kind")?.unwrap_or("sqlite") {
            "sqlite" => StoreKind::Sqlite,
            "memory" => StoreKind::Memory,
            "redis" => StoreKind::Redis,
            other => {
                return Err(bad(
                    "store.kind",
                    format!("{other:?} is not one of \"sqlite\", \"memory\", \"redis\""),
                ))
            }
        };
        let redis_url = store
            .string("redis_url")?
            .unwrap_or("redis://127.0.0.1:6379/")
            .to_string();
        if kind == StoreKind::Redis {
            redis::Client::open(redis_url.as_str())
                .map_err(|e| bad("store.redis_url", format!("{redis_url:?}: {e}")))?;
        }
        let redis_timeout = match store.duration("redis_timeout")? {
            Some(d) if d.as_ticks() == 0 => {
                return Err(bad("store.redis_timeout", "must be greater than zero"))
            }
            Some(d) => StdDuration::from_micros(d.as_micros()),
            None => StdDuration::from_millis(50),
        };

        let mut c = Config::default();
        macro_rules! set {
            ($r:expr, $k:literal, $m:ident, $field:expr) => {
                if let Some(v) = $r.$m($k)? {
                    $field = v;
                }
            };
        }
        set!(req, "max_requests", uint, c.requests.max_requests);
        set!(req, "window", duration, c.requests.window);
        set!(req, "violation_memory", duration, c.blocks.violation_memory);
        set!(req, "block_after", uint, c.blocks.block_after);
        set!(req, "block_for", duration, c.blocks.block_for);
        set!(req, "block_growth", uint, c.blocks.block_growth);
        set!(req, "max_block", duration, c.blocks.max_block);
        if let Some(n) = req.uint("ban_after")? {
            c.blocks.ban_after = (n > 0).then_some(n);
        }
        set!(req, "ban_lookback", duration, c.blocks.ban_lookback);
        set!(login, "max_failures", uint, c.login.max_failures);
        set!(login, "failure_window", duration, c.login.failure_window);
        set!(login, "lock_for", duration, c.login.lock_for);
        set!(
            login,
            "lock_ip_on_account_lock",
            boolean,
            c.login.lock_ip_on_account_lock
        );
        if let Some(n) = login.uint("account_max_failures")? {
            c.login.account_max_failures = (n > 0).then_some(n);
        }
        set!(login, "account_window", duration, c.login.account_window);
        set!(pen, "base", duration, c.penalty.base);
        set!(pen, "multiplier", uint, c.penalty.multiplier);
        set!(pen, "max", duration, c.penalty.max);
        set!(slots, "per_key", uint, c.slots.slots);
        set!(slots, "ttl", duration, c.slots.slot_ttl);
        for (k, list) in [("allow", &mut c.lists.allow), ("deny", &mut c.lists.deny)] {
            if let Some(v) = lists.cidrs(k)? {
                let cap = list.capacity();
                for cidr in v {
                    list.push(cidr).map_err(|_| {
                        bad(format!("lists.{k}"), format!("more than {cap} entries"))
                    })?;
                }
            }
        }
        c.validate(portcullis::limiter::W).map_err(|e| {
            let (k, r) = core_key(&e);
            bad(k, r)
        })?;

        let mut conn = ConnLimits::default();
        if let Some(d) = server.std_duration("header_read_timeout", true)? {
            conn.header_read_timeout = d;
        }
        if let Some(d) = server.std_duration("body_read_timeout", true)? {
            conn.body_read_timeout = d;
        }
        if let Some(d) = server.std_duration("idle_timeout", true)? {
            conn.idle_timeout = d;
        }
        if let Some(d) = server.std_duration("shutdown_grace", false)? {
            conn.shutdown_grace = d;
        }
        set!(server, "max_connections", positive, conn.max_connections);
        set!(
            server,
            "max_connections_per_ip",
            positive,
            conn.max_connections_per_ip
        );
        let mut hashing = Hashing::default();
        set!(
            login,
            "max_concurrent_hashes",
            positive,
            hashing.max_concurrent
        );
        set!(login, "hash_queue", uint, hashing.queue);
        set!(login, "argon2_memory_kib", uint, hashing.memory_kib);
        set!(login, "argon2_iterations", uint, hashing.iterations);
        set!(login, "argon2_parallelism", uint, hashing.parallelism);
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
        match doc.get("users") {
            None => {}
            Some(Value::Array(arr)) => {
                for (i, u) in arr.iter().enumerate() {
                    let Value::Table(t) = u else {
                        return Err(bad(
                            format!("users[{i}]"),
                            "expected a table with name and password_hash",
                        ));
                    };
                    for k in t.keys() {
                        if k != "name" && k != "password_hash" {
                            return Err(bad(
                                format!("users[{i}].{k}"),
                                "unknown key (known: name, password_hash)",
                            ));
                        }
                    }
                    let name = match t.get("name") {
                        Some(Value::String(s)) if !s.trim().is_empty() => {
                            s.trim().to_ascii_lowercase()
                        }
                        _ => {
                            return Err(bad(
                                format!("users[{i}].name"),
                                "expected a non-empty string",
                            ))
                        }
                    };
                    let hash = match t.get("password_hash") {
                        Some(Value::String(s)) => s.clone(),
                        _ => {
                            return Err(bad(
                                format!("users[{i}].password_hash"),
                                "expected an argon2id PHC string",
                            ))
                        }
                    };
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
            }
            Some(_) => return Err(bad("users", "expected [[users]] tables")),
        }

        Ok(ServerConfig {
            listen,
            trusted_proxies: server.cidrs("trusted_proxies")?.unwrap_or_default(),
            client_ip_header: match server.string("client_ip_header")? {
                Some(h) => h.parse().map_err(|e| bad("server.client_ip_header", e))?,
                None => ForwardingHeader::default(),
            },
            admin_max_entries: server
                .entries("admin_max_entries", MAX_ADMIN_ENTRIES)?
                .unwrap_or(10_000),
            admin_token: server
                .string("admin_token")?
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            store: kind,
            path: PathBuf::from(store.string("path")?.unwrap_or("./portcullis.db")),
            redis_url,
            fail_closed: store.boolean("fail_closed")?.unwrap_or(false),
            redis_timeout,
            max_entries: store
                .entries("max_entries", MAX_TABLE_ENTRIES)?
                .unwrap_or(1_000_000),
            rules: c,
            users,
            conn,
            hashing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<ServerConfig, BadConfig> {
        ServerConfig::from_str_env(
            text,
            "test.toml",
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(StdDuration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(StdDuration::from_millis(250)));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("5y").is_err());
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
        assert!(e("[slots]\nper_key = 9\n", &[])
            .starts_with("config error: slots.per_key: must be at most 4"));
        assert!(e("[lists]\nallow = [\"10.0.0.0/33\"]\n", &[])
            .starts_with("config error: lists.allow:"));
        assert!(e("[bogus]\n", &[]).starts_with("config error: bogus: unknown section"));
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
