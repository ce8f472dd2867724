//! Reload without restart: `SIGHUP`, `POST /admin/reload` and
//! `portcullis reload` re-read the config file and the environment.
//!
//! Three outcomes:
//! * **applied**: a new running configuration ([`crate::running`]) is
//!   built and swapped in whole; the next request sees every key that can
//!   change live: the rules (quotas, windows, blocks, login, penalty,
//!   slots, lists; swapped in place on every table, so every key's state,
//!   block, ban and lock stays, and a running penalty delay completes),
//!   shadow switches, `[[policies]]` (added, removed, moved, retuned),
//!   `[[login_routes]]`, `[upstream]`, `[forward_auth]`, the admin,
//!   metrics and report tokens, trusted proxies and the client address
//!   header, `login.reveal_lock`;
//! * **refused**: a config that fails to parse or validate changes
//!   nothing; it is logged with the key and reason and counted as
//!   `portcullis_config_reload_errors_total`;
//! * **needs restart**: keys that cannot change live ([`RESTART_ONLY`]:
//!   the listen address, the store, table sizes, listener limits, users
//!   and password hashing, `[[jails]]`) are reported by key and keep their running
//!   value; the rest of the reload still applies.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis::Engine;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{BadConfig, ServerConfig};
use crate::running::{Live, Running};

/// Reload errors counter.
pub const RELOAD_ERRORS: &str = "portcullis_config_reload_errors_total";

/// What a successful reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    /// Whether the rules changed.
    pub rules_changed: bool,
    /// The shadow switch now.
    pub shadow: bool,
    /// Keys whose new value waits for a restart (ignored until then).
    pub needs_restart: Vec<String>,
}

/// The keys a reload cannot apply, each with how to carry the running
/// value over to a new config (`keep(old, new)`) and whether it changed.
type Keep = fn(&ServerConfig, &mut ServerConfig) -> bool;

macro_rules! keep {
    ($($key:literal => $($field:ident).+),* $(,)?) => {
        &[$(($key, |old: &ServerConfig, new: &mut ServerConfig| {
            let changed = old.$($field).+ != new.$($field).+;
            new.$($field).+ = old.$($field).+.clone();
            changed
        })),*]
    };
}

/// Keys that need a restart (see the module doc).
pub const RESTART_ONLY: &[(&str, Keep)] = keep![
    "server.listen" => listen,
    "store.kind" => store,
    "store.path" => path,
    "store.redis_url" => redis_url,
    "store.redis_cluster" => redis_cluster,
    "store.fail_closed" => fail_closed,
    "store.redis_timeout" => redis_timeout,
    "store.denial_cache" => denial_cache,
    "store.max_entries" => max_entries,
    "server.admin_max_entries" => admin_max_entries,
    "server.header_read_timeout" => conn.header_read_timeout,
    "server.body_read_timeout" => conn.body_read_timeout,
    "server.idle_timeout" => conn.idle_timeout,
    "server.max_connections" => conn.max_connections,
    "server.max_connections_per_ip" => conn.max_connections_per_ip,
    "server.shutdown_grace" => conn.shutdown_grace,
    "users" => users,
    "login.max_concurrent_hashes" => hashing.max_concurrent,
    "login.hash_queue" => hashing.queue,
    "login.argon2_memory_kib" => hashing.memory_kib,
    "login.argon2_iterations" => hashing.iterations,
    "login.argon2_parallelism" => hashing.parallelism,
    "firewall.kind" => firewall.kind,
    "firewall.table" => firewall.table,
    "firewall.set_v4" => firewall.set_v4,
    "firewall.set_v6" => firewall.set_v6,
    "firewall.ranges_v4" => firewall.ranges_v4,
    "firewall.ranges_v6" => firewall.ranges_v6,
    "firewall.reconcile_interval" => firewall.reconcile_interval,
    "firewall.locks" => firewall.locks,
    "firewall.nft" => firewall.nft,
    "jails" => jails,
];

/// The tables a reload gives new rules besides the policies': the
/// service's, and portcullis's own (`/admin`, `/metrics`, report-token
/// guesses).
pub struct Tables {
    /// The service's backend.
    pub service: Arc<dyn Engine>,
    /// `/admin` and `/metrics` (their quota fixed, the rest the service's).
    pub own: Vec<Arc<dyn Engine>>,
    /// Report-token guesses (the service's login rules).
    pub guesses: Arc<dyn Engine>,
    /// The kernel mirror, rebuilt from the store after each reload.
    pub firewall: Option<Arc<crate::firewall::tap::Tap>>,
}

/// Re-reads and applies the configuration; one reload at a time.
pub struct Reloader {
    path: Option<PathBuf>,
    one: Mutex<()>,
    live: Arc<Live>,
    tables: Tables,
}

impl Reloader {
    /// A reloader of the file at `path` (none: the environment only) for
    /// the configuration in `live` and its `tables`.
    pub fn new(path: Option<PathBuf>, live: Arc<Live>, tables: Tables) -> Self {
        metrics::describe_counter!(RELOAD_ERRORS, "Configuration reloads refused.");
        // Present (at 0) from the start, so a dashboard can alert on rate.
        metrics::counter!(RELOAD_ERRORS).increment(0);
        Reloader {
            path,
            one: Mutex::new(()),
            live,
            tables,
        }
    }

    /// Re-read the file and environment and apply what can change live.
    pub async fn reload(&self) -> Result<Reloaded, BadConfig> {
        let _one = self.one.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || ServerConfig::load(path.as_deref()))
            .await
            .unwrap_or_else(|e| Err(BadConfig::new("reload", e.to_string())));
        let new = loaded.map_err(refuse)?;
        self.apply(new).map_err(refuse)
    }

    /// Apply `new` (already checked) over the running configuration.
    pub fn apply(&self, mut new: ServerConfig) -> Result<Reloaded, BadConfig> {
        let old = self.live.load();
        let mut needs_restart: Vec<String> = RESTART_ONLY
            .iter()
            .filter(|(_, keep)| keep(&old.cfg, &mut new))
            .map(|(k, _)| (*k).to_string())
            .collect();
        for p in &mut new.policies {
            if let Some(size) = self.live.carry.table_size(&p.name) {
                if size != p.max_entries {
                    needs_restart.push(format!("policies.{}.max_entries", p.name));
                    p.max_entries = size;
                }
            }
        }
        let mut rules_changed = new.rules != old.cfg.rules;
        if rules_changed {
            self.set_rules(&new.rules)?;
        }
        rules_changed |= new.policies.iter().any(|p| {
            old.cfg
                .policies
                .iter()
                .find(|o| o.name == p.name)
                .is_some_and(|o| o.rules != p.rules)
        });
        let shadow = new.shadow;
        if let Some(tap) = &self.tables.firewall {
            tap.set_shadow(shadow);
        }
        let running = Running::build(new, &self.live.carry)
            .map_err(|e| BadConfig::new("policies", e.to_string()))?;
        self.live.swap(running);
        if let Some(tap) = &self.tables.firewall {
            tap.rebuild();
        }
        tracing::info!(rules_changed, shadow, needs_restart = ?needs_restart, "config reloaded");
        for key in &needs_restart {
            tracing::warn!(key, "config reload: this setting needs a restart; ignored");
        }
        Ok(Reloaded {
            rules_changed,
            shadow,
            needs_restart,
        })
    }

    /// The service's new rules on every table that follows them.
    fn set_rules(&self, rules: &portcullis::Config) -> Result<(), BadConfig> {
        let bad = |e: portcullis::ConfigError| BadConfig::new(config_key(&e), e.to_string());
        self.tables.service.set_rules(rules.clone()).map_err(bad)?;
        let own = crate::pipeline::own_rules(rules);
        for t in &self.tables.own {
            t.set_rules(own.clone()).map_err(bad)?;
        }
        self.tables.guesses.set_rules(rules.clone()).map_err(bad)
    }
}

/// The dotted key a core [`ConfigError`](portcullis::ConfigError) names.
fn config_key(e: &portcullis::ConfigError) -> String {
    e.to_string()
        .split(':')
        .next()
        .unwrap_or("rules")
        .to_string()
}

fn refuse(e: BadConfig) -> BadConfig {
    metrics::counter!(RELOAD_ERRORS).increment(1);
    tracing::error!(key = %e.key, reason = %e.reason, "config reload refused; the running config stays");
    e
}

/// Reload on every `SIGHUP` until the process ends (unix only).
pub fn on_sighup(reloader: Arc<Reloader>) {
    // Registered here, before the server says it is listening: a SIGHUP
    // that arrives early must reload, not kill (the default action).
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // Outcomes are logged by `reload`.
                    let _ = reloader.reload().await;
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload via the admin API only");
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

#[cfg(test)]
mod tests;
