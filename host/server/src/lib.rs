//! The `portcullis` binary's pieces: configuration, the HTTP service (demo
//! page, login, metrics, admin API) and the admin CLI.

pub mod cli;
pub mod config;
pub mod exporter;
pub mod forward_auth;
pub mod http;
pub mod listener;
pub mod lock_reveal;
pub mod manual_api;
pub mod passwords;
pub mod policies;
pub mod proxy;
pub mod reload;
pub mod ui;
pub mod upstream;
pub mod workers;

use std::sync::Arc;

use config::{ServerConfig, StoreKind};
use portcullis::cleanup::{Cleanup, DEFAULT_INTERVAL};
use portcullis::engine::Engine;
use portcullis::guard::Guard;
use portcullis::limiter::{Limiter, LimiterOptions};
use portcullis::sqlite::SqliteStore;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Store trouble (names the file).
    #[error(transparent)]
    Store(#[from] portcullis::sqlite::StoreError),
    /// Rules or sizing.
    #[error(transparent)]
    Limiter(#[from] portcullis::limiter::LimiterError),
    /// Saved state the rules refuse.
    #[error("{path}: saved state refused: {source}")]
    Import {
        /// The file.
        path: String,
        /// Why.
        source: portcullis_core::ImportError,
    },
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Redis backend trouble.
    #[error("redis: {0}")]
    Fleet(String),
    /// The HTTP server failed.
    #[error("http: {0}")]
    Http(std::io::Error),
    /// The final snapshot at shutdown was not saved.
    #[error(transparent)]
    Shutdown(#[from] portcullis::cleanup::ShutdownError),
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
}

/// Build the backend the config asks for.
pub async fn backend(cfg: &ServerConfig) -> Result<Backend, ServeError> {
    let opts = |seed| LimiterOptions {
        seed,
        max_entries: cfg.max_entries,
        ..LimiterOptions::default()
    };
    match cfg.store {
        StoreKind::Sqlite => {
            let path = cfg.path.clone();
            let (store, loaded) = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| ServeError::Fleet(e.to_string()))??;
            let limiter = Limiter::new(cfg.rules.clone(), opts(Some(loaded.seed)))?;
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
            let cleanup = Cleanup::start(guard.clone(), DEFAULT_INTERVAL);
            Ok(Backend {
                engine: Arc::new(guard.clone()),
                local: guard,
                cleanup: Some(cleanup),
                kind: "sqlite",
                sqlite: Some(store),
            })
        }
        StoreKind::Memory => {
            let guard = Guard::new(Arc::new(Limiter::new(cfg.rules.clone(), opts(None))?), None);
            let cleanup = Cleanup::start(guard.clone(), DEFAULT_INTERVAL);
            Ok(Backend {
                engine: Arc::new(guard.clone()),
                local: guard,
                cleanup: Some(cleanup),
                kind: "memory",
                sqlite: None,
            })
        }
        StoreKind::Redis => {
            let guard = Guard::new(Arc::new(Limiter::new(cfg.rules.clone(), opts(None))?), None);
            let cleanup = Cleanup::start(guard.clone(), DEFAULT_INTERVAL);
            let fleet = portcullis::fleet_engine::FleetOptions {
                redis_url: cfg.redis_url.clone(),
                redis_cluster: cfg.redis_cluster.clone(),
                redis_timeout: cfg.redis_timeout,
                fail_closed: cfg.fail_closed,
                rules: cfg.rules.clone(),
                denial_cache: cfg.denial_cache,
            };
            let engine = portcullis::fleet_engine::connect(&fleet, guard.clone())
                .await
                .map_err(ServeError::Fleet)?;
            Ok(Backend {
                engine,
                local: guard,
                cleanup: Some(cleanup),
                kind: "redis",
                sqlite: None,
            })
        }
    }
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
    let backend = backend(&cfg).await?;
    let server_metrics = Arc::new(exporter::ServerMetrics::default());
    let users = passwords::Users::new(&cfg.users, &cfg.hashing, server_metrics.clone());
    if cfg.users.is_empty() {
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
    let shadow = portcullis::layer::Shadow::new(cfg.shadow);
    let registry = policies::Registry::default();
    let reloader = Arc::new(reload::Reloader::new(
        path,
        cfg.clone(),
        backend.engine.clone(),
        shadow.clone(),
        registry.clone(),
    ));
    reload::on_sighup(reloader.clone());
    let app = http::router_with(
        &cfg,
        backend.engine.clone(),
        users,
        backend.kind,
        backend.local.metrics().clone(),
        server_metrics.clone(),
        &http::Live {
            shadow,
            policies: registry,
        },
    )
    .layer(axum::Extension(reloader));
    let stop = shutdown_signal();
    tracing::info!(%addr, store = backend.kind, admin = cfg.admin_token.is_some(), workers = n_workers, "portcullis listening on http://{addr}");
    let served = workers::run(listeners, app, cfg.conn.clone(), server_metrics, stop).await;
    tracing::info!("shutting down");
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
