//! # portcullis
//!
//! The std runtime around [`portcullis_core`]: the same rules, shared by
//! many threads, persisted (SQLite, feature `sqlite`), shared by a fleet
//! through Redis (feature `redis`), in front of any tower service. The
//! `portcullis` server binary is a separate crate (`portcullis-server`)
//! built on this library.
//!
//! With `--no-default-features` the crate is the sharded limiter,
//! [`Guard`], the tower layer and the cleanup task; the features add the
//! rest.
//!
//! | module | holds |
//! | --- | --- |
//! | [`limiter`] | [`Limiter`]: sharded core tables, exact under contention |
//! | [`guard`] | async helpers: write-through, RAII slot guard, penalty sleep |
//! | [`engine`] | the [`engine::Engine`] trait: local or fleet backend |
//! | [`cleanup`] | the tokio purge/snapshot task |
//! | [`persist`] | the [`persist::Persist`] trait: where write-through goes |
//! | `sqlite` | SQLite persistence (feature `sqlite`: WAL, versioned schema, writer thread) |
//! | [`layer`] | the tower `Layer`: 429/403, RateLimit headers, per-route policies, shadow mode |
//! | [`problem`] | refusals as RFC 9457 problem details (or a short HTML page) |
//! | [`client_ip`] | client address from the peer or trusted proxies |
//! | `fleet`, `fleet_engine` | Redis backend for fleets, with local fallback (feature `redis`) |
//! | [`clock`] | monotonic and wall-clock time |
//! | [`metrics`] | counters through the `metrics` facade; the dashboard's history and offenders |
//! | [`username`] | usernames folded to one account key (NFKC, case fold, accents) before the core hashes them |
//!
//! ## Features
//!
//! Generated from `Cargo.toml` (`document-features`):
//!
#![doc = document_features::document_features!()]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cleanup;
pub mod client_ip;
pub mod clock;
pub mod engine;
#[cfg(feature = "redis")]
pub mod fleet;
#[cfg(feature = "redis")]
pub mod fleet_engine;
pub mod guard;
pub mod held;
pub mod jitter;
pub mod layer;
pub mod limiter;
pub mod manual;
pub mod metrics;
pub mod persist;
pub mod problem;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod username;

pub use guard::{Guard, SlotGuard};

/// A boxed, `Send` future borrowing for `'a`: what [`engine::Engine`],
/// [`persist::Persist`] and the layer hand back (the same shape as
/// `futures::future::BoxFuture`, without the dependency).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
pub use limiter::{Limiter, LimiterOptions};
pub use portcullis_core as core_rules;
/// The core's time types: every `now` the library takes and every delay it
/// returns (microsecond ticks; [`clock::now`] reads one).
pub use portcullis_core::{Duration, Instant};
