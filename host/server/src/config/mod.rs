//! The server's configuration: a TOML file plus `PORTCULLIS_<SECTION>__<KEY>`
//! environment overrides (merged into the file's table), deserialized with
//! serde into sections that refuse unknown keys, then checked. Durations
//! are humantime strings; growth factors may be fractional. Every error
//! names the key (`requests.window`) and the reason, in one line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use portcullis::{Cidr, Config, ConfigError};

use portcullis::ForwardingHeader;
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// Bearer token `/metrics` asks for (the admin token works too); none:
    /// `/metrics` is open.
    pub metrics_token: Option<String>,
    /// Store kind \[sqlite\].
    pub store: StoreKind,
    /// SQLite path \[./portcullis.db\]; with `kind = "redis"`, the outage journal (`portcullis::fleet::journal`).
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
    pub policies: Vec<policies::PolicyConfig>,
    /// `[upstream]`: proxy mode (none: the demo routes).
    pub upstream: Option<proxy::Upstream>,
    /// `[[login_routes]]` (proxy mode).
    pub login_routes: Vec<proxy::LoginRoute>,
    /// `[[jails]]`: log sources whose lines count as logins.
    pub jails: Vec<jails::JailConfig>,
    /// `[firewall]`: holds mirrored into the kernel (nftables).
    pub firewall: Firewall,
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

impl BadConfig {
    /// A refusal of `key` for `reason`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> BadConfig {
        bad(key, reason)
    }
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

/// Shards of each of portcullis's own tables (`/admin`, `/metrics`,
/// report-token guesses).
pub const ADMIN_SHARDS: usize = 4;

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
pub fn parse_duration(s: &str) -> Result<StdDuration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|source| DurationError {
        text: s.to_string(),
        source,
    })
}

/// A value that is not a duration in humantime's format.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{text:?} is not a duration like \"60s\", \"15m\", \"24h\" ({source})")]
pub struct DurationError {
    /// The value as written.
    pub text: String,
    /// humantime's reason.
    #[source]
    pub source: humantime::DurationError,
}

pub mod filter;
pub mod firewall;
pub mod forward_auth;
pub mod jails;
pub mod policies;
pub mod proxy;
pub(crate) mod raw;

pub use firewall::{Firewall, FirewallKind};
pub use forward_auth::{ForwardAuth, FrontProxy};
#[cfg(test)]
mod tests;

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
        build(file)
    }
}

/// The checked configuration of a parsed file.
fn build(file: raw::File) -> Result<ServerConfig, BadConfig> {
    let raw::File {
        server,
        store,
        requests,
        login,
        penalty,
        slots,
        lists,
        users,
        forward_auth,
        policies,
        upstream,
        login_routes,
        jails,
        firewall,
    } = file;
    let jails = jails::check(jails)?;
    let rules = rules(&requests, &login, &penalty, &slots, lists)?;
    let policies = policies::check(policies, &rules)?;
    let (upstream, login_routes) = proxy::check(upstream, login_routes)?;
    let forward_auth = forward_auth::check(forward_auth)?;
    let firewall = firewall::check(firewall)?;
    if upstream.is_none() && !forward_auth.enabled && !login_routes.is_empty() {
        return Err(bad(
            "login_routes",
            "needs [upstream] (proxy mode) or the forward-auth endpoint",
        ));
    }
    let st = stores(store)?;
    Ok(ServerConfig {
        listen: server
            .listen
            .as_ref()
            .map(|a| a.0)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        trusted_proxies: server
            .trusted_proxies
            .clone()
            .map(|v| v.0)
            .unwrap_or_default(),
        client_ip_header: match &server.client_ip_header {
            Some(h) => h.parse().map_err(|e| bad("server.client_ip_header", e))?,
            None => ForwardingHeader::default(),
        },
        admin_max_entries: table_size(
            "server.admin_max_entries",
            server.admin_max_entries,
            MAX_ADMIN_ENTRIES,
            10_000,
        )?,
        admin_token: server.admin_token.clone().filter(|s| !s.is_empty()),
        metrics_token: server.metrics_token.clone().filter(|s| !s.is_empty()),
        store: st.kind,
        path: st.path,
        redis_url: st.redis_url,
        redis_cluster: st.redis_cluster,
        fail_closed: st.fail_closed,
        redis_timeout: st.redis_timeout,
        denial_cache: st.denial_cache,
        max_entries: st.max_entries,
        rules,
        shadow: requests.shadow.unwrap_or(false),
        users: check_users(users)?,
        conn: conn_limits(&server)?,
        hashing: hashing(&login)?,
        forward_auth,
        reveal_lock: login.reveal_lock.unwrap_or(true),
        policies,
        upstream,
        login_routes,
        jails,
        firewall,
    })
}

/// `[store]`, checked.
struct Stores {
    kind: StoreKind,
    path: PathBuf,
    redis_url: String,
    redis_cluster: Vec<String>,
    fail_closed: bool,
    redis_timeout: StdDuration,
    denial_cache: usize,
    max_entries: usize,
}

fn stores(store: raw::Store) -> Result<Stores, BadConfig> {
    let kind = store.kind.unwrap_or(StoreKind::Sqlite);
    let redis_cluster = match store.redis_cluster {
        Some(_) if store.redis_url.is_some() => {
            return Err(bad(
                "store.redis_cluster",
                "set either redis_url (one Redis) or redis_cluster (a Redis Cluster), not both",
            ))
        }
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
    let denial_cache = match store.denial_cache {
        None => portcullis::fleet::denials::DEFAULT_CAPACITY,
        Some(raw::Uint(n)) if n > MAX_DENIAL_CACHE => {
            return Err(bad(
                "store.denial_cache",
                format!("must be at most {MAX_DENIAL_CACHE}"),
            ))
        }
        Some(raw::Uint(n)) => usize::try_from(n)
            .map_err(|_| bad("store.denial_cache", "too large for this platform"))?,
    };
    Ok(Stores {
        kind,
        path: store
            .path
            .unwrap_or_else(|| PathBuf::from("./portcullis.db")),
        redis_url,
        redis_cluster,
        fail_closed: store.fail_closed.unwrap_or(false),
        redis_timeout,
        denial_cache,
        max_entries: table_size(
            "store.max_entries",
            store.max_entries,
            MAX_TABLE_ENTRIES,
            1_000_000,
        )?,
    })
}

fn table_size(
    key: &str,
    v: Option<raw::Uint>,
    max: u32,
    default: usize,
) -> Result<usize, BadConfig> {
    match v {
        None => Ok(default),
        Some(raw::Uint(0)) => Err(bad(key, "must be greater than zero")),
        Some(raw::Uint(n)) if n > max => Err(bad(key, format!("must be at most {max}"))),
        Some(raw::Uint(n)) => {
            usize::try_from(n).map_err(|_| bad(key, "too large for this platform"))
        }
    }
}

macro_rules! set {
    ($v:expr => $field:expr) => {
        if let Some(v) = $v {
            $field = v;
        }
    };
}

/// The core's rules from `[requests]`, `[login]`, `[penalty]`, `[slots]`
/// and `[lists]`, validated.
fn rules(
    req: &raw::Requests,
    login: &raw::Login,
    pen: &raw::Penalty,
    slots: &raw::Slots,
    lists: raw::Lists,
) -> Result<Config, BadConfig> {
    let mut c = Config::default();
    let uint = |v: Option<raw::Uint>| v.map(|u| u.0);
    let ticks = |v: Option<raw::Dur>| v.map(raw::Dur::ticks);
    apply_requests(req, &mut c);
    set!(uint(login.max_failures) => c.login.max_failures);
    // Unset: the address locks at the pair's count, as before the key
    // existed; 0: the address's own count never locks it.
    c.login.ip_max_failures = match uint(login.ip_max_failures) {
        None => Some(c.login.max_failures),
        Some(0) => None,
        Some(n) => Some(n),
    };
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
    c.validate(portcullis::LOG_CAPACITY).map_err(|e| {
        let (k, r) = core_key(&e);
        bad(k, r)
    })?;
    Ok(c)
}

/// The listener's limits from `[server]`.
fn conn_limits(server: &raw::Server) -> Result<ConnLimits, BadConfig> {
    let mut conn = ConnLimits::default();
    let nonzero = |key: &str, v: Option<raw::Dur>| match v {
        Some(d) if d.ticks().as_ticks() == 0 => {
            Err(bad(format!("server.{key}"), "must be greater than zero"))
        }
        v => Ok(v.map(raw::Dur::std)),
    };
    set!(nonzero("header_read_timeout", server.header_read_timeout)? => conn.header_read_timeout);
    set!(nonzero("body_read_timeout", server.body_read_timeout)? => conn.body_read_timeout);
    set!(nonzero("idle_timeout", server.idle_timeout)? => conn.idle_timeout);
    set!(server.shutdown_grace.map(raw::Dur::std) => conn.shutdown_grace);
    set!(positive("server.max_connections", server.max_connections)? => conn.max_connections);
    set!(
        positive("server.max_connections_per_ip", server.max_connections_per_ip)?
            => conn.max_connections_per_ip
    );
    if let Some(n) = positive("server.workers", server.workers)? {
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= 1024)
            .ok_or_else(|| bad("server.workers", "must be at most 1024"))?;
        conn.workers = Some(n);
    }
    Ok(conn)
}

fn positive(key: &str, v: Option<raw::Uint>) -> Result<Option<u32>, BadConfig> {
    match v {
        Some(raw::Uint(0)) => Err(bad(key, "must be greater than zero")),
        v => Ok(v.map(|u| u.0)),
    }
}

/// Password checking from `[login]`.
fn hashing(login: &raw::Login) -> Result<Hashing, BadConfig> {
    let uint = |v: Option<raw::Uint>| v.map(|u| u.0);
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
    Ok(hashing)
}

/// `[[users]]`, checked: names normalised, hashes PHC strings whose memory
/// cost is bounded (verification uses the hash's own parameters, so one
/// entry could otherwise make every login allocate gigabytes).
fn check_users(raw_users: Vec<raw::User>) -> Result<Vec<User>, BadConfig> {
    let mut users = Vec::new();
    for (i, u) in raw_users.into_iter().enumerate() {
        let at = |k: &str| format!("users[{i}].{k}");
        let name = u.name.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad(at("name"), "expected a non-empty string"));
        }
        let hash = u.password_hash;
        let phc = argon2::PasswordHash::new(&hash)
            .map_err(|e| bad(at("password_hash"), format!("not a PHC string: {e}")))?;
        let m = argon2::Params::try_from(&phc)
            .map(|p| p.m_cost())
            .map_err(|e| bad(at("password_hash"), format!("bad argon2 parameters: {e}")))?;
        if m > MAX_ARGON2_MEMORY_KIB {
            return Err(bad(
                at("password_hash"),
                format!("m={m} KiB is more than {MAX_ARGON2_MEMORY_KIB} KiB (256 MiB) per check"),
            ));
        }
        users.push(User {
            name,
            password_hash: hash,
        });
    }
    Ok(users)
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
