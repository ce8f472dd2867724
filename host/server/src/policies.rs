//! `[[policies]]`: named request quotas for path prefixes (and optionally
//! methods), each overriding any `[requests]` keys of the defaults:
//!
//! ```toml
//! [[policies]]
//! name = "api"
//! prefix = "/api/"
//! methods = ["POST", "PUT"]     # optional: every method when absent
//! max_entries = 100000          # optional: keys its table holds
//! [policies.requests]
//! max_requests = 20
//! window = "60s"
//! ```
//!
//! The longest matching prefix wins; at the same prefix a policy naming the
//! method beats one for every method; no match: the default policy
//! `requests` (the `[requests]` section). Each policy has its own in-memory
//! table (its counts are its own), its name in the `RateLimit` fields and a
//! `policy="<name>"` label on its metrics. The same selection serves demo
//! mode, proxy mode and a decision endpoint that learns the original method
//! and URI from headers ([`select`]).

use std::sync::Arc;

use http::Method;
use portcullis::cleanup::{Cleanup, DEFAULT_INTERVAL};
use portcullis::engine::Engine;
use portcullis::layer::Policy;
use portcullis::metrics::Metrics;
use portcullis::{Guard, Limiter, LimiterOptions};
use portcullis_core::Config;
use serde::Deserialize;

use crate::config::{raw, BadConfig};

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
    /// Path prefix (starts with `/`).
    pub prefix: String,
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

/// A running policy's handles a reload works through: its engine (new
/// rules) and its shadow switch.
#[derive(Clone)]
pub struct PolicyHandle {
    /// The policy's name.
    pub name: String,
    /// Its prefix and methods, as built (a reload that moves them needs a
    /// restart).
    pub route: (String, Vec<Method>),
    /// Its engine.
    pub engine: Arc<dyn Engine>,
    /// Its shadow switch.
    pub shadow: portcullis::layer::Shadow,
}

/// The running policies, filled when the router is built, read by a
/// reload.
#[derive(Clone, Default)]
pub struct Registry(Arc<std::sync::Mutex<Vec<PolicyHandle>>>);

impl Registry {
    /// The handles registered so far.
    pub fn handles(&self) -> Vec<PolicyHandle> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn push(&self, h: PolicyHandle) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(h);
    }
}

fn bad(key: String, reason: impl Into<String>) -> BadConfig {
    BadConfig {
        key,
        reason: reason.into(),
    }
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
        if !r.prefix.starts_with('/') {
            return Err(bad(at("prefix"), "expected a path starting with /"));
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
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
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        if out
            .iter()
            .any(|p| p.prefix == r.prefix && p.methods == methods)
        {
            return Err(bad(
                at("prefix"),
                format!("{:?} with the same methods is already a policy", r.prefix),
            ));
        }
        let mut rules = base.clone();
        crate::config::apply_requests(&r.requests, &mut rules);
        rules.validate(portcullis::limiter::W).map_err(|e| {
            let (k, reason) = crate::config::core_key(&e);
            bad(format!("policies[{i}].{k}"), reason)
        })?;
        let max_entries = match r.max_entries {
            None => DEFAULT_POLICY_ENTRIES,
            Some(raw::Uint(0)) => return Err(bad(at("max_entries"), "must be greater than zero")),
            Some(raw::Uint(n)) if n > crate::config::MAX_TABLE_ENTRIES => {
                return Err(bad(
                    at("max_entries"),
                    format!("must be at most {}", crate::config::MAX_TABLE_ENTRIES),
                ))
            }
            Some(raw::Uint(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        out.push(PolicyConfig {
            name: r.name,
            prefix: r.prefix,
            methods,
            rules,
            max_entries,
            shadow: r.shadow,
        });
    }
    Ok(out)
}

/// The layer's policies for the configured entries: each its own
/// in-memory guard (purged every [`DEFAULT_INTERVAL`] while the process
/// runs), its metrics labelled with its name.
pub fn build(
    cfgs: &[PolicyConfig],
    registry: &Registry,
) -> Result<Vec<Policy>, portcullis::limiter::LimiterError> {
    let mut out = Vec::new();
    let mut cleanups: Vec<Cleanup> = Vec::new();
    for c in cfgs {
        let limiter = Limiter::new(
            c.rules.clone(),
            LimiterOptions {
                max_entries: c.max_entries,
                ..LimiterOptions::default()
            },
        )?;
        let guard =
            Guard::new(Arc::new(limiter), None).with_metrics(Metrics::for_policy(c.name.clone()));
        if tokio::runtime::Handle::try_current().is_ok() {
            cleanups.push(Cleanup::start(guard.clone(), DEFAULT_INTERVAL));
        }
        let engine = Arc::new(guard) as Arc<dyn Engine>;
        registry.push(PolicyHandle {
            name: c.name.clone(),
            route: (c.prefix.clone(), c.methods.clone()),
            engine: engine.clone(),
            shadow: portcullis::layer::Shadow::new(c.shadow),
        });
        out.push(Policy {
            name: c.name.clone(),
            prefix: c.prefix.clone(),
            methods: c.methods.clone(),
            engine,
        });
    }
    if !cleanups.is_empty() {
        // A dropped `Cleanup` stops its task: keep them for the process.
        tokio::spawn(async move {
            let _keep = cleanups;
            std::future::pending::<()>().await
        });
    }
    Ok(out)
}

/// The policy for `method` and `path` among `policies` (the layer's list,
/// [`portcullis::layer::RateLimitLayer::policies`]): see
/// [`portcullis::layer::select`].
pub fn select<'a>(policies: &'a [Policy], method: &Method, path: &str) -> Option<&'a Policy> {
    portcullis::layer::select(policies, method, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, prefix: &str, methods: &[Method]) -> PolicyConfig {
        PolicyConfig {
            name: name.into(),
            prefix: prefix.into(),
            methods: methods.to_vec(),
            rules: Config::default(),
            max_entries: 64,
            shadow: false,
        }
    }

    #[tokio::test]
    async fn longest_prefix_wins_then_the_method() {
        let ps = build(
            &[
                policy("api", "/api/", &[]),
                policy("api-post", "/api/", &[Method::POST]),
                policy("api-v2", "/api/v2/", &[]),
                policy("root-get", "/", &[Method::GET]),
            ],
            &Registry::default(),
        )
        .unwrap();
        let name = |m: Method, p: &str| select(&ps, &m, p).map(|p| p.name.as_str());
        assert_eq!(name(Method::GET, "/api/x"), Some("api"));
        assert_eq!(name(Method::POST, "/api/x"), Some("api-post"));
        assert_eq!(name(Method::POST, "/api/v2/x"), Some("api-v2"));
        assert_eq!(name(Method::GET, "/other"), Some("root-get"));
        assert_eq!(name(Method::PUT, "/other"), None);
        assert_eq!(name(Method::GET, "/ap"), Some("root-get"));
    }
}
