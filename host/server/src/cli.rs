//! The admin CLI: `bans`, `ban`, `unban`, `status` against a running server
//! (`--url`, `--token`) or directly on a store file (`--db`, when no server
//! runs), human tables by default and `--json` for scripts.

use std::net::IpAddr;
use std::path::Path;

use portcullis::Addr;
use serde_json::{json, Value};

use portcullis::sqlite;

/// Where a CLI command goes.
pub enum Target<'a> {
    /// A running server.
    Url {
        /// Base URL.
        url: &'a str,
        /// Admin token.
        token: Option<&'a str>,
    },
    /// A store file.
    Db(&'a Path),
}

/// A failed CLI command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// HTTP trouble.
    #[error("{url}: {reason}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] sqlite::StoreError),
    /// A server holds the store file: ask it over HTTP instead.
    #[error("{0}; ask it with --url instead")]
    InUse(sqlite::StoreError),
    /// Bad argument.
    #[error("{0}")]
    Usage(String),
}

async fn call(
    method: reqwest::Method,
    url: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Value, CliError> {
    call_with(method, url, path, token, None).await
}

async fn call_with(
    method: reqwest::Method,
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Value, CliError> {
    let full = format!("{}{path}", url.trim_end_matches('/'));
    let err = |reason: String| CliError::Http {
        url: full.clone(),
        reason,
    };
    let mut req = reqwest::Client::new().request(method, &full);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body.get("error").and_then(Value::as_str).unwrap_or("");
        // A refused reload names the key and the reason.
        let why = match (
            body.get("key").and_then(Value::as_str),
            body.get("reason").and_then(Value::as_str),
        ) {
            (Some(k), Some(r)) => format!(": {k}: {r}"),
            _ => String::new(),
        };
        return Err(err(format!("{status} {msg}{why}")));
    }
    Ok(body)
}

fn now_ms() -> u64 {
    portcullis::clock::unix_ms()
}

/// Exclusive use of a store file for one command: refused while a server
/// (or another `--db` command) has it.
fn lock(path: &Path) -> Result<sqlite::StoreLock, CliError> {
    if !path.exists() {
        return Err(sqlite::StoreError::Missing {
            path: path.to_path_buf(),
        }
        .into());
    }
    sqlite::StoreLock::acquire(path).map_err(|e| match e {
        sqlite::StoreError::Locked { .. } => CliError::InUse(e),
        e => CliError::Store(e),
    })
}

/// The ban list from a store file, in the admin API's JSON shape.
fn db_bans(path: &Path) -> Result<Value, CliError> {
    let lock = lock(path)?;
    Ok(bans_of(&sqlite::read_only(&lock)?))
}

fn bans_of(loaded: &sqlite::Loaded) -> Value {
    let now = now_ms();
    let mut rows: Vec<Value> = loaded
        .records
        .iter()
        .filter_map(|r| r.hold(now))
        .map(|h| {
            json!({
                "ip": h.addr.ip().to_string(),
                "kind": h.kind.as_str(),
                "reason": h.reason.as_str(),
                "seconds_left": h.left.map(|d| d.as_millis().div_ceil(1000)),
            })
        })
        .collect();
    let manual: Vec<_> = loaded
        .manual
        .iter()
        .filter(|b| b.live(now))
        .cloned()
        .collect();
    rows.extend(
        crate::manual_api::rows(&manual, now)
            .into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("ms_left");
                }
                r
            }),
    );
    Value::Array(rows)
}

/// `portcullis ban` arguments.
pub struct BanArgs {
    /// Address or range.
    pub ip: String,
    /// Duration (humantime); `None`: until lifted.
    pub for_: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// A manual ban straight into a store file (the store lock held, as for
/// `unban --db`); a version 1 store is migrated first.
fn db_ban(path: &Path, args: &BanArgs) -> Result<Value, CliError> {
    let req = crate::manual_api::BanRequest {
        ip: args.ip.clone(),
        for_: args.for_.clone(),
        reason: args.reason.clone(),
    };
    let now = now_ms();
    let ban = crate::manual_api::decide(&req, now).map_err(|e| CliError::Usage(e.to_string()))?;
    let lock = lock(path)?;
    sqlite::apply_manual(&lock, &portcullis::ManualChange::Put(ban.clone()))?;
    Ok(json!({
        "ip": crate::manual_api::range_text(&ban),
        "kind": "manual",
        "reason": if ban.until_ms.is_some() { "blocked" } else { "banned" },
        "note": ban.reason,
        "seconds_left": ban.left(now).map(|d| d.as_millis().div_ceil(1000)),
    }))
}

/// `portcullis ban <ip|cidr> [--for D] [--reason R]`.
pub async fn ban(t: &Target<'_>, args: &BanArgs) -> Result<Value, CliError> {
    match t {
        Target::Url { url, token } => {
            let body = json!({ "ip": args.ip, "for": args.for_, "reason": args.reason });
            call_with(
                reqwest::Method::POST,
                url,
                "/admin/bans",
                *token,
                Some(&body),
            )
            .await
        }
        Target::Db(p) => db_ban(p, args),
    }
}

/// Lift exactly the manual ban of `range` in a store file.
fn db_unban_range(path: &Path, range: portcullis::Cidr) -> Result<Value, CliError> {
    let lock = lock(path)?;
    let loaded = sqlite::read_only(&lock)?;
    let had = loaded.manual.iter().any(|b| b.range == range);
    if had {
        sqlite::apply_manual(&lock, &portcullis::ManualChange::Delete(range))?;
    }
    Ok(json!({ "ip": range.to_string(), "lifted": usize::from(had) }))
}

/// Lift everything on `ip` in a store file: every record of the address
/// holding a ban, block or lock now gets the core's [`Record::lift`]
/// (`portcullis::Record::lift`), as a running server's unban would.
fn db_unban(path: &Path, ip: IpAddr, v6_prefix: u8) -> Result<Value, CliError> {
    let lock = lock(path)?;
    let loaded = sqlite::read_only(&lock)?;
    let addr = Addr::from_ip(ip, v6_prefix);
    let now = now_ms();
    let mut changed = Vec::new();
    for mut r in loaded.records {
        if r.key.addr() == addr && r.hold(now).is_some() && r.lift() {
            changed.push(r);
        }
    }
    let mut n = changed.len();
    sqlite::apply(&lock, &changed)?;
    // A manual ban of exactly this address goes too, as on a server.
    let host = portcullis::Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 });
    if let Ok(host) = host {
        if loaded.manual.iter().any(|b| b.range == host) {
            sqlite::apply_manual(&lock, &portcullis::ManualChange::Delete(host))?;
            n += 1;
        }
    }
    Ok(json!({ "ip": ip.to_string(), "lifted": n }))
}

fn db_status(path: &Path) -> Result<Value, CliError> {
    let lock = lock(path)?;
    let loaded = sqlite::read_only(&lock)?;
    let bans = bans_of(&loaded);
    Ok(json!({
        "backend": "file",
        "store": path.display().to_string(),
        "entries": loaded.records.len(),
        "bans": bans.as_array().map_or(0, Vec::len),
        "schema_version": sqlite::SCHEMA_VERSION,
    }))
}

/// `portcullis bans`.
pub async fn bans(t: &Target<'_>) -> Result<Value, CliError> {
    match t {
        Target::Url { url, token } => call(reqwest::Method::GET, url, "/admin/bans", *token).await,
        Target::Db(p) => db_bans(p),
    }
}

/// `portcullis unban <ip|cidr>`: an address lifts everything on it; a
/// range lifts exactly that manual ban.
pub async fn unban(t: &Target<'_>, ip: &str, v6_prefix: u8) -> Result<Value, CliError> {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        let range = portcullis::parse_range(ip).map_err(|e| {
            CliError::Usage(format!("{ip:?} is not an IP address or CIDR range ({e})"))
        })?;
        return match t {
            Target::Url { url, token } => {
                let enc = range.to_string().replace('/', "%2F");
                call(
                    reqwest::Method::DELETE,
                    url,
                    &format!("/admin/bans/{enc}"),
                    *token,
                )
                .await
            }
            Target::Db(p) => db_unban_range(p, range),
        };
    };
    match t {
        Target::Url { url, token } => {
            call(
                reqwest::Method::DELETE,
                url,
                &format!("/admin/bans/{ip}"),
                *token,
            )
            .await
        }
        Target::Db(p) => db_unban(p, ip, v6_prefix),
    }
}

/// `portcullis status`.
pub async fn status(t: &Target<'_>) -> Result<Value, CliError> {
    match t {
        Target::Url { url, token } => {
            call(reqwest::Method::GET, url, "/admin/status", *token).await
        }
        Target::Db(p) => db_status(p),
    }
}

/// `portcullis reload`: the server re-reads its config file and
/// environment (as on `SIGHUP`); only a running server can.
pub async fn reload(t: &Target<'_>) -> Result<Value, CliError> {
    match t {
        Target::Url { url, token } => {
            call(reqwest::Method::POST, url, "/admin/reload", *token).await
        }
        Target::Db(_) => Err(CliError::Usage(
            "reload asks a running server; use --url, not --db".into(),
        )),
    }
}

/// A ban list as an aligned table.
pub fn bans_table(v: &Value) -> String {
    let mut out = format!(
        "{:<40} {:<11} {:<15} {:<12} {}\n",
        "ADDRESS", "KIND", "REASON", "TIME LEFT", "NOTE"
    );
    let rows = v.as_array().cloned().unwrap_or_default();
    for b in &rows {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let left = match b.get("seconds_left").and_then(Value::as_u64) {
            Some(n) => format!("{}m{:02}s", n / 60, n % 60),
            None => "permanent".into(),
        };
        out.push_str(
            format!(
                "{:<40} {:<11} {:<15} {:<12} {}",
                s("ip"),
                s("kind"),
                s("reason"),
                left,
                s("note")
            )
            .trim_end(),
        );
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no bans, blocks or locks)\n");
    }
    out
}

/// A flat JSON object as `key: value` lines.
pub fn kv_table(v: &Value) -> String {
    match v.as_object() {
        Some(o) => o.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect(),
        None => format!("{v}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis::Record;
    use portcullis::{Key, Seed};

    /// The file listing is the core's `Record::hold`: bans, running blocks
    /// and locks of every kind, in the admin API's shape; expired ones and
    /// account keys are not listed.
    #[test]
    fn file_listing_shows_what_holds_now() {
        let now = now_ms();
        let addr = |s: &str| Addr::from_ip(s.parse().unwrap(), 64);
        let rec = |key: Key, f: &dyn Fn(&mut Record)| {
            let mut r = Record::empty(key);
            f(&mut r);
            r
        };
        let block = |until: u64| {
            move |r: &mut Record| {
                r.block_until = Some(until);
                r.last_block_start = Some(until - 1);
            }
        };
        let records = vec![
            rec(Key::request(addr("192.0.2.1")), &|r| r.banned = true),
            rec(Key::request(addr("192.0.2.2")), &block(now + 90_500)),
            rec(Key::request(addr("192.0.2.3")), &block(now - 1)),
            rec(Key::login_ip(addr("192.0.2.4")), &|r| {
                r.lock_until = Some(now + 1_000)
            }),
            rec(Key::login_user(7, addr("192.0.2.5")), &|r| {
                r.lock_until = Some(now + 2_000)
            }),
            rec(Key::account(7), &|r| r.lock_until = Some(now + 2_000)),
        ];
        let v = bans_of(&sqlite::Loaded {
            seed: Seed::new([0; 16]),
            records,
            manual: Vec::new(),
            journal: Vec::new(),
        });
        let rows: Vec<(String, String, String, Value)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_string();
                (s("ip"), s("kind"), s("reason"), r["seconds_left"].clone())
            })
            .collect();
        let row = |ip: &str, kind: &str, reason: &str, left: Value| {
            (ip.to_string(), kind.to_string(), reason.to_string(), left)
        };
        assert_eq!(
            rows,
            vec![
                row("192.0.2.1", "request", "banned", Value::Null),
                row("192.0.2.2", "request", "blocked", json!(91)),
                row("192.0.2.4", "login_ip", "ip_locked", json!(1)),
                row("192.0.2.5", "login_user", "pair_locked", json!(2)),
            ]
        );
    }
}
