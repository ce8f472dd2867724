//! The `portcullis` binary's pieces: configuration (`config`), the one
//! request pipeline every request goes through (`pipeline`, on the
//! canonical `target` and the `running` configuration), what it dispatches
//! to (`routes`: the admin API, `/metrics`, the dashboard, demo mode;
//! `proxy`; `forward_auth`; `login`), the listener and the admin CLI. The
//! pipeline is described in `docs/pipeline.md`. Beside it, the log jails
//! (`jails`, `docs/jails.md`) feed other services' failed logins to the
//! same rules.
//!
//! ## Features
//!
//! Generated from `Cargo.toml` (`document-features`). Whatever is listed,
//! the server builds its library `portcullis` with `sqlite`, `redis` and
//! `axum`.
//!
#![doc = document_features::document_features!()]

pub mod admin_api;
pub mod admin_auth;
mod armed;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exporter;
pub mod firewall;
pub mod forward_auth;
mod forwarding;
mod h1;
pub mod jail_series;
pub mod jails;
pub mod listener;
pub mod lock_reveal;
pub mod login;
pub mod manual_api;
pub mod passwords;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod running;
pub mod target;
pub mod ui;
pub mod upstream;
pub mod usernames;
pub mod views;
pub mod workers;

use std::sync::Arc;

use config::{ServerConfig, StoreKind};
use portcullis::sqlite::SqliteStore;
use portcullis::Cleanup;
use portcullis::Engine;
use portcullis::Guard;
use portcullis::{Limiter, LimiterOptions};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Store trouble (names the file).
    #[error(transparent)]
    Store(#[from] portcullis::sqlite::StoreError),
    /// Rules or sizing.
    #[error(transparent)]
    Limiter(#[from] portcullis::LimiterError),
    /// Saved state the rules refuse.
    #[error("{path}: saved state refused: {source}")]
    Import {
        /// The file.
        path: String,
        /// Why.
        source: portcullis::ImportError,
    },
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The running configuration could not be built.
    #[error(transparent)]
    Running(#[from] running::BuildError),
    /// Redis backend trouble.
    #[error("redis: {0}")]
    Fleet(#[source] portcullis::fleet::FleetError),
    /// The store's opening task failed (panicked or was cancelled).
    #[error("store task: {0}")]
    StoreTask(#[source] tokio::task::JoinError),
    /// The HTTP server failed.
    #[error("http: {0}")]
    Http(std::io::Error),
    /// `[firewall]` could not start (names `firewall.kind`).
    #[error(transparent)]
    Firewall(#[from] firewall::FirewallError),
    /// The final snapshot at shutdown was not saved.
    #[error(transparent)]
    Shutdown(#[from] portcullis::ShutdownError),
}

/// Everything a running server holds.
pub struct Backend {
    /// The decision engine the layer and handlers use.
    pub engine: Arc<dyn Engine>,
    /// Local guard (also the fallback of a fleet backend).
    pub local: Guard,
    /// Running cleanup task.
    pub cleanup: Option<Cleanup>,
    /// Store kind label.
    pub kind: &'static str,
    /// The SQLite store, closed at shutdown.
    pub sqlite: Option<Arc<SqliteStore>>,
    /// The kernel mirror's tap (`[firewall]` on).
    pub firewall: Option<Arc<firewall::tap::Tap>>,
}

/// Build the backend the config asks for.
pub async fn backend(cfg: &ServerConfig) -> Result<Backend, ServeError> {
    match cfg.store {
        StoreKind::Sqlite => sqlite_backend(cfg).await,
        StoreKind::Memory => {
            let guard = Guard::new(
                Arc::new(Limiter::new(cfg.rules.clone(), options(cfg, None))?),
                None,
            );
            let cleanup = Cleanup::start(guard.clone(), Cleanup::DEFAULT_INTERVAL);
            Ok(Backend {
                engine: Arc::new(guard.clone()),
                local: guard,
                cleanup: Some(cleanup),
                kind: "memory",
                sqlite: None,
                firewall: None,
            })
        }
        StoreKind::Redis => redis_backend(cfg).await,
    }
}

/// The limiter's options for the service table.
fn options(cfg: &ServerConfig, seed: Option<portcullis::Seed>) -> LimiterOptions {
    LimiterOptions {
        seed,
        max_entries: cfg.max_entries,
        ..LimiterOptions::default()
    }
}

/// Open `store.path` on a blocking thread (it may migrate or check the file).
async fn open_store(
    cfg: &ServerConfig,
) -> Result<(SqliteStore, portcullis::sqlite::Loaded), ServeError> {
    let path = cfg.path.clone();
    Ok(
        tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(ServeError::StoreTask)??,
    )
}

/// The SQLite default: the saved records and live manual bans loaded, every
/// hold written through.
async fn sqlite_backend(cfg: &ServerConfig) -> Result<Backend, ServeError> {
    let (store, loaded) = open_store(cfg).await?;
    let limiter = Limiter::new(cfg.rules.clone(), options(cfg, Some(loaded.seed)))?;
    let n = limiter
        .import(portcullis::clock::wall(), &loaded.records)
        .map_err(|source| ServeError::Import {
            path: cfg.path.display().to_string(),
            source,
        })?;
    let now_ms = portcullis::clock::unix_ms();
    let mut manual = 0usize;
    for b in loaded.manual.into_iter().filter(|b| b.live(now_ms)) {
        if let Err(e) = limiter.manual().add(b.clone()) {
            tracing::error!(range = %b.range, error = %e, "saved manual ban refused");
        } else {
            manual += 1;
        }
    }
    tracing::info!(path = %cfg.path.display(), records = n, manual, "sqlite store loaded");
    let store = Arc::new(store);
    let guard = Guard::new(Arc::new(limiter), Some(store.clone()));
    let cleanup = Cleanup::start(guard.clone(), Cleanup::DEFAULT_INTERVAL);
    Ok(Backend {
        engine: Arc::new(guard.clone()),
        local: guard,
        cleanup: Some(cleanup),
        kind: "sqlite",
        sqlite: Some(store),
        firewall: None,
    })
}

/// A fleet on Redis, the local limiter as its fallback, and `store.path` as
/// the outage journal (`portcullis::fleet::journal`).
async fn redis_backend(cfg: &ServerConfig) -> Result<Backend, ServeError> {
    let (journal, loaded) = open_store(cfg).await?;
    let journal = Arc::new(journal);
    let restored = portcullis::fleet::journal::Restored::new(journal.clone(), loaded.journal);
    let guard = Guard::new(
        Arc::new(Limiter::new(cfg.rules.clone(), options(cfg, None))?),
        None,
    );
    let cleanup = Cleanup::start(guard.clone(), Cleanup::DEFAULT_INTERVAL);
    let fleet = portcullis::fleet::FleetOptions {
        redis_url: cfg.redis_url.clone(),
        redis_cluster: cfg.redis_cluster.clone(),
        redis_timeout: cfg.redis_timeout,
        fail_closed: cfg.fail_closed,
        rules: cfg.rules.clone(),
        denial_cache: cfg.denial_cache,
    };
    let engine = portcullis::fleet::connect_with_journal(&fleet, guard.clone(), restored)
        .await
        .map_err(ServeError::Fleet)?;
    Ok(Backend {
        engine,
        local: guard,
        cleanup: Some(cleanup),
        kind: "redis",
        sqlite: Some(journal),
        firewall: None,
    })
}

/// Run `portcullis serve` until SIGINT/SIGTERM, then shut down: stop
/// accepting, give in-flight requests `server.shutdown_grace`, drop the
/// rest, save the snapshot (an error if that fails).
pub async fn serve(cfg: ServerConfig) -> Result<(), ServeError> {
    serve_from(cfg, None).await
}

/// [`serve`] a config read from `path` (and the environment), which
/// `SIGHUP` and `POST /admin/reload` read again ([`reload`]).
pub async fn serve_from(
    cfg: ServerConfig,
    path: Option<std::path::PathBuf>,
) -> Result<(), ServeError> {
    // Before any guard registers its series.
    exporter::install();
    let mut backend = backend(&cfg).await?;
    if let Some(fw) = firewall::start(&cfg, backend.engine.clone(), backend.local.clone()).await? {
        backend.engine = fw.engine;
        backend.firewall = Some(fw.tap);
    }
    let server_metrics = Arc::new(exporter::ServerMetrics::default());
    let users = passwords::Users::new(&cfg.users, &cfg.hashing, server_metrics.clone());
    // The demo user answers the demo's own `/login`; in proxy mode the
    // upstream checks passwords and no demo route is served.
    if cfg.users.is_empty() && cfg.upstream.is_none() {
        tracing::warn!(
            "no [[users]] configured: demo user `demo` with password `demo-password` is active"
        );
    }
    let n_workers = cfg.conn.workers.unwrap_or_else(workers::default_workers);
    let listeners = workers::bind(cfg.listen, n_workers).map_err(|source| ServeError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let addr = listeners[0].local_addr().map_err(ServeError::Http)?;
    log_front_proxy(&cfg);
    // Before "listening": a log that appears from now on is read whole.
    let lock_for = std::time::Duration::from_micros(cfg.rules.login.lock_for.as_micros());
    let jails = jails::Jails::start(
        &cfg.jails,
        backend.engine.clone(),
        lock_for,
        backend.sqlite.clone(),
    )
    .await;
    let app = service(&cfg, &backend, users, server_metrics.clone(), path)?;
    let stop = shutdown_signal();
    tracing::info!(%addr, store = backend.kind, admin = cfg.admin_token.is_some(), workers = n_workers, "portcullis listening on http://{addr}");
    let served = workers::run(listeners, app, cfg.conn.clone(), server_metrics, stop).await;
    tracing::info!("shutting down");
    jails.stop().await;
    let last = match backend.cleanup {
        Some(c) => c.shutdown().await,
        None => Ok(()),
    };
    // Closing reports the last snapshot's failure again, and a failed
    // final checkpoint; the cleanup's own error comes first.
    let closed = match &backend.sqlite {
        Some(store) => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.close())
                .await
                .unwrap_or(Ok(()))
        }
        None => Ok(()),
    };
    served.map_err(ServeError::Http)?;
    last?;
    closed?;
    tracing::info!("bye");
    Ok(())
}

/// Which headers the forward-auth endpoint reads, said once when the
/// default is in force behind a trusted proxy.
fn log_front_proxy(cfg: &ServerConfig) {
    let fa = &cfg.forward_auth;
    if fa.enabled && !fa.proxy_given && !cfg.trusted_proxies.is_empty() {
        tracing::info!(
            "forward_auth.proxy not set: the original request is read from X-Original-Method / X-Original-URI only (nginx); set proxy = \"caddy\" or \"traefik\" behind those"
        );
    }
}

/// The whole service: the pipeline every request goes to
/// ([`pipeline::Pipeline::serve`]); SIGHUP and `/admin/reload` reload
/// the file at `path`.
pub fn service(
    cfg: &ServerConfig,
    backend: &Backend,
    users: passwords::Users,
    server_metrics: Arc<exporter::ServerMetrics>,
    path: Option<std::path::PathBuf>,
) -> Result<Arc<pipeline::Pipeline>, ServeError> {
    let live = Arc::new(running::Live::new(cfg.clone())?);
    let own = pipeline::OwnTables::new(cfg)?;
    let reloader = Arc::new(reload::Reloader::new(
        path,
        live.clone(),
        reload::Tables {
            service: backend.engine.clone(),
            own: vec![own.admin.clone(), own.metrics.clone()],
            guesses: own.guesses.clone(),
            firewall: backend.firewall.clone(),
        },
    ));
    reload::on_sighup(reloader.clone());
    let app = admin_api::App {
        engine: backend.engine.clone(),
        users,
        started: std::time::Instant::now(),
        kind: backend.kind,
        server_metrics,
        reloader: Some(reloader),
    };
    let ui = ui::UiContext {
        engine: backend.engine.clone(),
        metrics: backend.local.metrics().clone(),
        kind: backend.kind,
    };
    Ok(Arc::new(pipeline::Pipeline::new(
        live,
        backend.engine.clone(),
        backend.local.clone(),
        own,
        routes::own(app.clone(), ui),
        routes::demo(app),
    )))
}

/// SIGINT or SIGTERM. The handlers are registered when this is called, not
/// when the future is first polled: the accept loop may not poll it before
/// serving the first request, and a SIGTERM in that gap would kill the
/// process without its final snapshot.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for a stop signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
