//! The running configuration: one immutable value built from a checked
//! [`ServerConfig`] (its tokens' checkers, trusted proxies, the
//! `[[policies]]` with their tables, the proxy client), swapped whole by a
//! reload ([`Live::swap`]) and read once per request ([`Live::load`]). A
//! request sees one configuration from its first step to its answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use portcullis::metrics::Metrics;
use portcullis::Cleanup;
use portcullis::Config;
use portcullis::Engine;
use portcullis::TrustedProxies;
use portcullis::{Guard, Limiter, LimiterOptions};

use crate::admin_auth::AdminAuth;
use crate::config::policies::PolicyConfig;
use crate::config::ServerConfig;
use crate::proxy::Proxy;

/// A `[[policies]]` entry with its table.
#[derive(Clone)]
pub struct RunPolicy {
    /// The checked entry (canonical prefix, methods, rules, shadow).
    pub cfg: PolicyConfig,
    /// Its table.
    pub engine: Arc<dyn Engine>,
}

/// The running configuration (see the module doc).
pub struct Running {
    /// The configuration as loaded (keys that need a restart keep the
    /// values the server started with).
    pub cfg: ServerConfig,
    /// Whose forwarding headers are believed, and which header names the
    /// client.
    pub proxies: TrustedProxies,
    /// `server.admin_token`'s checker and the dashboard sessions (none:
    /// the admin API is off).
    pub admin: Option<Arc<AdminAuth>>,
    /// `forward_auth.report_token`'s checker (none: login-result API off).
    pub report: Option<Arc<AdminAuth>>,
    /// `server.metrics_token`'s checker (none: `/metrics` is open).
    pub metrics: Option<Arc<AdminAuth>>,
    /// The `[[policies]]`, with their tables.
    pub policies: Vec<RunPolicy>,
    /// Proxy mode's upstream client (none: the demo routes).
    pub proxy: Option<Arc<Proxy>>,
    /// Where portcullis's own routes are (the canonical key of
    /// `upstream.admin_prefix`; empty: the root).
    pub base: String,
    /// [`base`](Self::base) as written (for links the dashboard makes).
    pub base_written: String,
    /// The forward-auth endpoint's canonical key (none: switched off).
    pub check: Option<String>,
    /// A request's decisions read the coarse clock ([`Running::now`]):
    /// every window the rules count requests or failures in is at least
    /// [`COARSE_MIN_WINDOW`].
    pub coarse: bool,
}

/// The shortest window a decision on the coarse clock is taken for. The
/// coarse clock moves in timer ticks (1–10 ms, the kernel's `HZ`), and all
/// the requests of a tick share its time: a window of a second or more is
/// off by under 1 % of its length, while one of microseconds (a benchmark's
/// never-denying quota) would count a whole tick's burst in it, so it
/// keeps the precise clock.
pub const COARSE_MIN_WINDOW: portcullis::Duration = portcullis::Duration::from_secs(1);

/// Whether `rules`' windows all allow the coarse clock.
fn coarse_enough(rules: &Config) -> bool {
    rules.requests.window >= COARSE_MIN_WINDOW && rules.login.failure_window >= COARSE_MIN_WINDOW
}

/// A policy's table: the rules and size it has, and its engine.
type Table = (Config, usize, Arc<dyn Engine>);

/// Checkers and tables a new [`Running`] takes over from the one before
/// when their keys did not change (sessions survive a reload that does not
/// rotate the admin token; a policy's counts survive a change of its
/// rules).
#[derive(Default)]
pub struct Carry {
    tokens: Mutex<HashMap<(&'static str, String), Arc<AdminAuth>>>,
    tables: Mutex<HashMap<String, Table>>,
    /// The policy tables' cleanups, kept for the process.
    cleanups: Mutex<Vec<Cleanup>>,
    proxy: Mutex<Option<Arc<Proxy>>>,
}

/// Why a [`Running`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A policy's table.
    #[error("policies.{name}: {source}")]
    Table {
        /// The policy.
        name: String,
        /// Why.
        source: portcullis::LimiterError,
    },
    /// A policy's new rules.
    #[error("policies.{name}: {source}")]
    Rules {
        /// The policy.
        name: String,
        /// Why.
        source: portcullis::ConfigError,
    },
    /// No randomness for a token's checker.
    #[error("{0}: no randomness for its checker")]
    Random(&'static str),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Carry {
    /// The checker of `token` for `what`, the same one as before if the
    /// token did not change.
    fn token(
        &self,
        what: &'static str,
        token: Option<&str>,
    ) -> Result<Option<Arc<AdminAuth>>, BuildError> {
        let mut held = lock(&self.tokens);
        let Some(t) = token else {
            held.retain(|(w, _), _| *w != what);
            return Ok(None);
        };
        if let Some(a) = held.get(&(what, t.to_string())) {
            return Ok(Some(a.clone()));
        }
        let a = Arc::new(AdminAuth::new(t).map_err(|_| BuildError::Random(what))?);
        held.retain(|(w, _), _| *w != what);
        held.insert((what, t.to_string()), a.clone());
        Ok(Some(a))
    }

    /// The table of policy `p`: the one it had (its rules swapped in if
    /// they changed), or a new one. A changed `max_entries` keeps the old
    /// table (reported as needing a restart by the reload).
    fn table(&self, p: &PolicyConfig) -> Result<Arc<dyn Engine>, BuildError> {
        let mut tables = lock(&self.tables);
        if let Some((rules, size, engine)) = tables.get_mut(&p.name) {
            if *rules != p.rules {
                engine
                    .set_rules(p.rules.clone())
                    .map_err(|source| BuildError::Rules {
                        name: p.name.clone(),
                        source,
                    })?;
                *rules = p.rules.clone();
            }
            let _ = size;
            return Ok(engine.clone());
        }
        let opts = LimiterOptions {
            max_entries: p.max_entries,
            ..LimiterOptions::default()
        };
        let limiter = Limiter::new(p.rules.clone(), opts).map_err(|source| BuildError::Table {
            name: p.name.clone(),
            source,
        })?;
        let guard =
            Guard::new(Arc::new(limiter), None).with_metrics(Metrics::for_policy(p.name.clone()));
        if tokio::runtime::Handle::try_current().is_ok() {
            lock(&self.cleanups).push(Cleanup::start(guard.clone(), Cleanup::DEFAULT_INTERVAL));
        }
        let engine = Arc::new(guard) as Arc<dyn Engine>;
        tables.insert(
            p.name.clone(),
            (p.rules.clone(), p.max_entries, engine.clone()),
        );
        Ok(engine)
    }

    /// The `max_entries` the running table of policy `name` was built with.
    pub fn table_size(&self, name: &str) -> Option<usize> {
        lock(&self.tables).get(name).map(|t| t.1)
    }

    fn proxy(&self, cfg: &ServerConfig) -> Option<Arc<Proxy>> {
        let mut held = lock(&self.proxy);
        let up = cfg.upstream.as_ref()?;
        if let Some(p) = held.as_ref().filter(|p| p.upstream() == up) {
            return Some(p.clone());
        }
        let p = Arc::new(Proxy::new(up.clone()));
        *held = Some(p.clone());
        Some(p)
    }
}

impl Running {
    /// The running form of `cfg`, taking over from `carry` what did not
    /// change.
    pub fn build(cfg: ServerConfig, carry: &Carry) -> Result<Running, BuildError> {
        let policies = cfg
            .policies
            .iter()
            .map(|p| {
                Ok(RunPolicy {
                    cfg: p.clone(),
                    engine: carry.table(p)?,
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let base_written = cfg
            .upstream
            .as_ref()
            .map(|u| u.admin_prefix.clone())
            .unwrap_or_default();
        let base = if base_written.is_empty() {
            String::new()
        } else {
            crate::target::key_of(&base_written)
        };
        Ok(Running {
            proxies: TrustedProxies::new(cfg.trusted_proxies.clone())
                .header(cfg.client_ip_header.clone()),
            admin: carry.token("server.admin_token", cfg.admin_token.as_deref())?,
            report: carry.token(
                "forward_auth.report_token",
                cfg.forward_auth.report_token.as_deref(),
            )?,
            metrics: carry.token("server.metrics_token", cfg.metrics_token.as_deref())?,
            policies,
            proxy: carry.proxy(&cfg),
            base,
            base_written,
            check: cfg
                .forward_auth
                .enabled
                .then(|| crate::target::key_of(&cfg.forward_auth.path)),
            coarse: coarse_enough(&cfg.rules)
                && cfg.policies.iter().all(|p| coarse_enough(&p.rules)),
            cfg,
        })
    }

    /// The time of a request, read once at its start for all of its
    /// decisions: the coarse clock (no time-stamp counter read) when
    /// [`coarse`](Self::coarse), else the precise one.
    pub fn now(&self) -> portcullis::clock::Now {
        if self.coarse {
            portcullis::clock::read_coarse()
        } else {
            portcullis::clock::read()
        }
    }
}

/// The running configuration, swapped whole.
pub struct Live {
    now: ArcSwap<Running>,
    /// What the next configuration takes over.
    pub carry: Carry,
}

impl Live {
    /// Start with `cfg`.
    pub fn new(cfg: ServerConfig) -> Result<Live, BuildError> {
        let carry = Carry::default();
        let running = Running::build(cfg, &carry)?;
        Ok(Live {
            now: ArcSwap::from_pointee(running),
            carry,
        })
    }

    /// The configuration now (read once per request).
    pub fn load(&self) -> Arc<Running> {
        self.now.load_full()
    }

    /// Make `running` the configuration of every later request.
    pub fn swap(&self, running: Running) {
        self.now.store(Arc::new(running));
    }
}
