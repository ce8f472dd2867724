//! Reload without restart: `SIGHUP`, `POST /admin/reload` and
//! `portcullis reload` re-read the config file and the environment.
//!
//! Three outcomes:
//! * **applied**: the new rules (quotas, windows, blocks, login, penalty,
//!   slots, lists) and the shadow switch take effect on the next decision;
//!   every key's state, block, ban and lock stays (the limiter swaps its
//!   rules in place on every shard, [`portcullis::Limiter::set_config`]),
//!   and a running penalty delay completes;
//! * **refused**: a config that fails to parse or validate changes
//!   nothing; it is logged with the key and reason and counted as
//!   `portcullis_config_reload_errors_total`;
//! * **needs restart**: settings that cannot change live (listen address,
//!   store kind, path and sizing, Redis connection, listener limits, admin
//!   token, proxies, users, password hashing) are reported by key and
//!   otherwise ignored; the rest of the reload still applies.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis::layer::Shadow;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{BadConfig, ServerConfig};

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
    pub needs_restart: Vec<&'static str>,
}

/// Re-reads and applies the configuration; one reload at a time.
pub struct Reloader {
    path: Option<PathBuf>,
    running: Mutex<ServerConfig>,
    engine: std::sync::Arc<dyn portcullis::engine::Engine>,
    shadow: Shadow,
    policies: crate::policies::Registry,
}

impl Reloader {
    /// A reloader of the file at `path` (none: the environment only) for a
    /// server started with `running`, whose limiter is `local`'s and whose
    /// layer shadows while `shadow` is on.
    pub fn new(
        path: Option<PathBuf>,
        running: ServerConfig,
        engine: std::sync::Arc<dyn portcullis::engine::Engine>,
        shadow: Shadow,
        policies: crate::policies::Registry,
    ) -> Self {
        metrics::describe_counter!(RELOAD_ERRORS, "Configuration reloads refused.");
        // Present (at 0) from the start, so a dashboard can alert on rate.
        metrics::counter!(RELOAD_ERRORS).increment(0);
        Reloader {
            path,
            running: Mutex::new(running),
            engine,
            shadow,
            policies,
        }
    }

    /// Re-read the file and environment and apply what can change live.
    pub async fn reload(&self) -> Result<Reloaded, BadConfig> {
        let mut running = self.running.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || ServerConfig::load(path.as_deref()))
            .await
            .unwrap_or_else(|e| {
                Err(BadConfig {
                    key: "reload".into(),
                    reason: e.to_string(),
                })
            });
        let new = match loaded {
            Ok(c) => c,
            Err(e) => return Err(refuse(e)),
        };
        let mut needs_restart = needs_restart(&running, &new);
        let rules_changed = new.rules != running.rules;
        if rules_changed {
            if let Err(e) = self.engine.set_rules(new.rules.clone()) {
                return Err(refuse(BadConfig {
                    key: config_key(&e),
                    reason: e.to_string(),
                }));
            }
            running.rules = new.rules;
        }
        // `[[policies]]`: each running policy takes its new rules and shadow
        // switch (checked first: one refusal changes nothing); adding,
        // removing or moving one needs a restart (its table is built then).
        let handles = self.policies.handles();
        let mut moved = handles.len() != new.policies.len();
        let mut updates = Vec::new();
        for h in &handles {
            match new.policies.iter().find(|p| p.name == h.name) {
                Some(p) if (p.prefix.clone(), p.methods.clone()) == h.route => {
                    updates.push((h.clone(), p.clone()))
                }
                _ => moved = true,
            }
        }
        let mut policies_changed = false;
        for (h, p) in &updates {
            let old = running.policies.iter().find(|o| o.name == h.name);
            if old.map(|o| &o.rules) != Some(&p.rules) {
                if let Err(e) = h.engine.set_rules(p.rules.clone()) {
                    return Err(refuse(BadConfig {
                        key: format!("policies.{}.{}", h.name, config_key(&e)),
                        reason: e.to_string(),
                    }));
                }
                policies_changed = true;
            }
            h.shadow.set(p.shadow);
        }
        self.shadow.set(new.shadow);
        running.shadow = new.shadow;
        if moved {
            needs_restart.push("policies (added, removed or moved)");
        } else {
            running.policies = new.policies.clone();
        }
        let rules_changed = rules_changed || policies_changed;
        tracing::info!(
            rules_changed,
            shadow = new.shadow,
            needs_restart = ?needs_restart,
            "config reloaded"
        );
        for key in &needs_restart {
            tracing::warn!(key, "config reload: this setting needs a restart; ignored");
        }
        Ok(Reloaded {
            rules_changed,
            shadow: new.shadow,
            needs_restart,
        })
    }
}

/// The dotted key a core [`ConfigError`](portcullis_core::ConfigError) names.
fn config_key(e: &portcullis_core::ConfigError) -> String {
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

/// The keys whose value differs and cannot change live.
fn needs_restart(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            out.push(key);
        }
    };
    // Debug forms compare the types without PartialEq; nothing is logged.
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    check("server.listen", old.listen != new.listen);
    check("store.kind", old.store != new.store);
    check("store.path", old.path != new.path);
    check("store.redis_url", old.redis_url != new.redis_url);
    check(
        "store.redis_cluster",
        old.redis_cluster != new.redis_cluster,
    );
    check("store.fail_closed", old.fail_closed != new.fail_closed);
    check(
        "store.redis_timeout",
        old.redis_timeout != new.redis_timeout,
    );
    check("store.max_entries", old.max_entries != new.max_entries);
    check(
        "server.admin_max_entries",
        old.admin_max_entries != new.admin_max_entries,
    );
    check("server.admin_token", old.admin_token != new.admin_token);
    check(
        "server.trusted_proxies",
        dbg(&old.trusted_proxies) != dbg(&new.trusted_proxies),
    );
    check(
        "server.client_ip_header",
        dbg(&old.client_ip_header) != dbg(&new.client_ip_header),
    );
    check(
        "server (connection limits)",
        dbg(&old.conn) != dbg(&new.conn),
    );
    check("users", dbg(&old.users) != dbg(&new.users));
    check(
        "login (password hashing)",
        dbg(&old.hashing) != dbg(&new.hashing),
    );
    out
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
