//! # portcullis
//!
//! The std runtime around [`portcullis_core`]: the same rules, shared by
//! many threads, persisted in SQLite, shared by a fleet through Redis, in
//! front of any tower service, and the `portcullis` server binary.
//!
//! | module | holds |
//! | --- | --- |
//! | [`limiter`] | [`Limiter`]: sharded core tables, exact under contention |
//! | [`guard`] | async helpers: write-through, RAII slot guard, penalty sleep |
//! | [`engine`] | the [`engine::Engine`] trait: local or fleet backend |
//! | [`cleanup`] | the tokio purge/snapshot task |
//! | [`sqlite`] | SQLite persistence (WAL, versioned schema, writer thread) |
//! | [`layer`] | the tower `Layer`: 429/403, RateLimit headers, per-route policies |
//! | [`client_ip`] | client address from the peer or trusted proxies |
//! | [`fleet`] | Redis backend for fleets |
//! | [`server`] | the `portcullis` binary: config, HTTP service, admin CLI |
//! | [`clock`] | monotonic and wall-clock time |
//! | [`metrics`] | counters in Prometheus text |
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cleanup;
pub mod client_ip;
pub mod clock;
pub mod engine;
pub mod fleet;
pub mod fleet_engine;
pub mod guard;
pub mod held;
pub mod layer;
pub mod limiter;
pub mod metrics;
pub mod server;
pub mod sqlite;

pub use guard::{Guard, SlotGuard};
pub use limiter::{Limiter, LimiterOptions};
pub use portcullis_core as core_rules;
