//! `[[policies]]` as written and checked: named request quotas for path
//! prefixes (and optionally methods), each overriding any `[requests]`
//! keys of the defaults. Prefixes are canonicalised by the function
//! requests are ([`crate::target`]); see `docs/pipeline.md` for how a
//! policy is chosen.

use http::Method;
use portcullis::Config;
use serde::Deserialize;

use super::{raw, BadConfig};

/// Keys each policy's table holds unless it says otherwise.
pub const DEFAULT_POLICY_ENTRIES: usize = 100_000;

/// Names the server uses for its own tables.
const RESERVED: [&str; 3] = ["requests", "admin", "metrics"];

/// One `[[policies]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with name and prefix")]
pub struct RawPolicy {
    name: String,
    prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    max_entries: Option<raw::Uint>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    requests: raw::Requests,
}

/// A checked policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Name in the RateLimit fields and the metrics.
    pub name: String,
    /// Path prefix as written (starts with `/`).
    pub prefix: String,
    /// Its canonical key ([`crate::target::key_of`]).
    pub key: String,
    /// The prefix as written ends with `/`: it covers what is below it
    /// (and itself), not longer names (`/api/` is not `/apix`).
    pub dir: bool,
    /// Methods (empty: all).
    pub methods: Vec<Method>,
    /// The rules: the defaults with this policy's `[requests]` keys.
    pub rules: Config,
    /// Keys its table holds.
    pub max_entries: usize,
    /// Shadow mode for this policy \[false\]: its denials are recorded,
    /// counted and logged, not enforced (a reload switches it).
    pub shadow: bool,
}

fn bad(key: String, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key,
        reason: reason.into(),
    }
}

/// The `i`th entry's methods, upper case.
fn methods_of(i: usize, written: &[String]) -> Result<Vec<Method>, BadConfig> {
    let mut methods = Vec::new();
    for (j, m) in written.iter().enumerate() {
        let up = m.trim().to_ascii_uppercase();
        match Method::from_bytes(up.as_bytes()) {
            Ok(m) if !up.is_empty() => methods.push(m),
            _ => {
                return Err(bad(
                    format!("policies[{i}].methods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                ))
            }
        }
    }
    Ok(methods)
}

/// Check the entries against the default rules `base`.
pub(crate) fn check(raws: Vec<RawPolicy>, base: &Config) -> Result<Vec<PolicyConfig>, BadConfig> {
    let mut out: Vec<PolicyConfig> = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let at = |k: &str| format!("policies[{i}].{k}");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 64
            && r.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !name_ok {
            return Err(bad(
                at("name"),
                "expected 1 to 64 characters from A-Z a-z 0-9 _ - .",
            ));
        }
        if RESERVED.contains(&r.name.as_str()) || out.iter().any(|p| p.name == r.name) {
            return Err(bad(
                at("name"),
                format!("{:?} is taken (the server's tables: requests, admin, metrics; names are unique)", r.name),
            ));
        }
        if r.requests.shadow.is_some() {
            // Every key is applied or refused, never ignored: a policy's
            // switch sits on the policy itself.
            return Err(bad(
                at("requests.shadow"),
                format!("a policy's shadow switch is policies[{i}].shadow ([requests] shadow is the service policy's)"),
            ));
        }
        if !r.prefix.starts_with('/') {
            return Err(bad(at("prefix"), "expected a path starting with /"));
        }
        let mut methods = methods_of(i, &r.methods)?;
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        let canon = crate::target::key_of(&r.prefix);
        if out
            .iter()
            .any(|p| p.key == canon && p.dir == r.prefix.ends_with('/') && p.methods == methods)
        {
            return Err(bad(
                at("prefix"),
                format!("{:?} with the same methods is already a policy", r.prefix),
            ));
        }
        let mut rules = base.clone();
        super::apply_requests(&r.requests, &mut rules);
        rules.validate(portcullis::LOG_CAPACITY).map_err(|e| {
            let (k, reason) = super::core_key(&e);
            bad(format!("policies[{i}].{k}"), reason)
        })?;
        let max_entries = match r.max_entries {
            None => DEFAULT_POLICY_ENTRIES,
            Some(raw::Uint(0)) => return Err(bad(at("max_entries"), "must be greater than zero")),
            Some(raw::Uint(n)) if n > super::MAX_TABLE_ENTRIES => {
                return Err(bad(
                    at("max_entries"),
                    format!("must be at most {}", super::MAX_TABLE_ENTRIES),
                ))
            }
            Some(raw::Uint(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let key = crate::target::key_of(&r.prefix);
        let dir = r.prefix.ends_with('/') && key != "/";
        out.push(PolicyConfig {
            name: r.name,
            key,
            dir,
            prefix: r.prefix,
            methods,
            rules,
            max_entries,
            shadow: r.shadow,
        });
    }
    Ok(out)
}

impl PolicyConfig {
    /// Whether a request with canonical key `key` and method `method`
    /// falls under this policy.
    pub fn covers(&self, method: &Method, key: &str) -> bool {
        let path_ok = if self.dir {
            crate::target::under(key, &self.key)
        } else {
            key.starts_with(self.key.as_str())
        };
        path_ok && (self.methods.is_empty() || self.methods.contains(method))
    }

    /// How specific it is: the longer prefix first, then one naming
    /// methods before one for every method.
    pub fn rank(&self) -> (usize, bool, bool) {
        (self.key.len(), self.dir, !self.methods.is_empty())
    }
}
