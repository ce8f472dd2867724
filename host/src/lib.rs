//! # portcullis
//!
//! The std runtime around `portcullis-core`: the same rules, shared by
//! many threads, persisted (SQLite, feature `sqlite`), shared by a fleet
//! through Redis (feature `redis`), in front of any tower service. The
//! `portcullis` server binary is a separate crate (`portcullis-server`)
//! built on this library.
//!
//! With `--no-default-features` the crate is the sharded limiter,
//! [`Guard`], the tower layer and the cleanup task; the features add the
//! rest.
//!
//! Everything a user of the layer or of [`Guard`] needs is here, including
//! the core's rules and decisions ([`Config`], [`Decision`], [`Reason`], …)
//! and its time types ([`Instant`], [`Duration`]): depending on
//! `portcullis` alone is enough. Each type has one path.
//!
//! ## Contents
//!
//! | layer | items |
//! | --- | --- |
//! | rules (from the core) | [`Config`] and its parts ([`RequestRules`], [`BlockRules`], [`LoginRules`], [`PenaltyRules`], [`SlotRules`], [`Growth`], [`Jitter`], [`NoSlot`], [`OnFull`]), [`ConfigError`], [`Lists`], [`Cidr`], [`Listed`] |
//! | decisions | [`Decision`], [`Reason`], [`Penalty`] (in a [`SlotGuard`]; [`Serve`] sleeps it), [`Attempt`] (named by an [`AttemptId`]), [`StandingDenial`], [`Stats`]; keys: [`Key`], [`KeyKind`], [`Addr`], [`Seed`]; time: [`Instant`], [`Duration`] |
//! | the limiter | [`Limiter`]: sharded core tables, exact under contention ([`LimiterOptions`], [`LimiterError`], [`Outcome`], [`PurgeReport`], [`LOG_CAPACITY`]) |
//! | async face | [`Guard`]: write-through, penalties served with `tokio::time::sleep` in an RAII [`SlotGuard`], logins reserved before the password is checked |
//! | backends | the [`Engine`] trait ([`Status`], [`FleetStatus`]): local ([`Guard`]) or `fleet` (feature `redis`: Redis, with local fallback) |
//! | persistence | the [`Persist`] trait and the fallback journal ([`Journal`], [`JournalRow`], [`JournalKey`], [`JournalChange`], [`Imposed`]); `sqlite` (feature `sqlite`: WAL, versioned schema, writer thread); the [`Cleanup`] task |
//! | records | [`Record`] (one key's state, wall-clock times), [`Hold`] (a ban, block or lock as listed), [`WallClock`] |
//! | manual decisions | [`ManualBan`], [`ManualBans`], [`ManualChange`], [`ManualError`], [`parse_range`] ([`RangeParseError`]) |
//! | tower layer | [`RateLimitLayer`], [`RateLimit`]: 429/403, RateLimit headers ([`header_values`], [`set_ratelimit_fields`]), per-route [`Policy`]s, [`Shadow`] mode, [`DenyHook`]; [`ClientIp`] |
//! | client address | [`PeerAddr`], [`TrustedProxies`], [`ForwardingHeader`], [`client_ip`] |
//! | usernames | [`fold_username`]: NFKC, case fold, accents, before the core hashes them |
//! | namespaces | [`clock`] (monotonic and wall-clock time), [`metrics`] (counters through the `metrics` facade; the dashboard's history and offenders), [`problem`] (refusals as RFC 9457 problem details or a short HTML page), `sqlite`, `fleet` |
//!
//! ## Features
//!
//! Generated from `Cargo.toml` (`document-features`):
//!
#![doc = document_features::document_features!()]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cleanup;
mod client_ip;
pub mod clock;
mod engine;
#[cfg(feature = "redis")]
pub mod fleet;
mod guard;
mod held;
mod jitter;
mod layer;
mod limiter;
mod manual;
pub mod metrics;
mod persist;
pub mod problem;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod username;

// The core's rules, decisions, keys and time types.
pub use portcullis_core::{
    Addr, Attempt, BlockRules, Cidr, CidrError, Config, ConfigError, Decision, Growth, Hold,
    ImportError, Jitter, Key, KeyKind, Listed, Lists, LoginRules, NoSlot, OnFull, Penalty,
    PenaltyRules, Reason, RequestRules, Seed, SlotRules, StandingDenial, Stats, WallClock,
};
pub use portcullis_core::{Duration, Instant};

// The limiter and its async face.
pub use guard::Guard;
pub use limiter::{
    Limiter, LimiterError, LimiterOptions, Outcome, PurgeReport, Record, LOG_CAPACITY,
};

// Backends, and the types they speak besides the core's.
pub use engine::{AttemptId, Checked, Engine, FleetStatus, Serve, SlotGuard, Status};

// Persistence and the cleanup task.
pub use cleanup::{Cleanup, ShutdownError};
pub use persist::{Imposed, Journal, JournalChange, JournalKey, JournalRow, Persist, PersistError};

// Manual decisions.
pub use manual::{
    clean_reason, parse_range, ManualBan, ManualBans, ManualChange, ManualError, RangeParseError,
    MAX_MANUAL, MAX_REASON,
};

// The tower layer and the client's address.
pub use client_ip::{client_ip, ForwardingHeader, PeerAddr, TrustedProxies, UNIDENTIFIED};
pub use layer::{
    bare_deny_response, ceil_secs, header_values, select_policy, set_ratelimit_fields, ClientIp,
    Denial, DenyHook, Policy, RateLimit, RateLimitLayer, Shadow, NO_PEER_ADDRESS, RATELIMIT,
    RATELIMIT_POLICY, REASON_HEADER,
};

// Usernames.
pub use username::fold as fold_username;

/// The traits whose methods a user of the layer or of [`Guard`] calls:
/// `use portcullis::prelude::*;` (the only second path of any item).
pub mod prelude {
    pub use crate::{Engine, Serve};
}

/// A boxed, `Send` future borrowing for `'a`: what [`Engine`],
/// [`Persist`] and the layer hand back (the same shape as
/// `futures::future::BoxFuture`, without the dependency).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
