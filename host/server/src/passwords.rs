//! Password checks for the demo login (argon2id), off the async executor,
//! with the same work for unknown users so timing does not tell them apart.
//! At most `login.max_concurrent_hashes` checks run at once (each holds
//! argon2's memory, 19 MiB by default) and at most `login.hash_queue`
//! wait; further logins get [`Busy`] (`503`, `Retry-After: 1`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::config::{Hashing, User};
use crate::exporter::ServerMetrics;

/// Usernames (normalised) to PHC hashes.
#[derive(Clone)]
pub struct Users {
    hashes: Arc<HashMap<String, String>>,
    dummy: Arc<String>,
    /// Permits for checks running or waiting (`max_concurrent + queue`).
    admission: Arc<Semaphore>,
    /// Permits for checks running (`max_concurrent`).
    running: Arc<Semaphore>,
    /// The checking threads: `max_concurrent` of them, so argon2's memory
    /// is reused by the same few threads (allocator arenas) instead of
    /// being left behind on every thread of tokio's blocking pool.
    pool: std::sync::mpsc::Sender<Job>,
    metrics: Arc<ServerMetrics>,
}

type Job = Box<dyn FnOnce() + Send>;

/// `n` threads running jobs from one queue.
fn pool(n: usize) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(parking_lot::Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("password-check-{i}"))
            .spawn(move || loop {
                let job = rx.lock().recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => break,
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password-check thread");
        }
    }
    tx
}

/// No room to check a password now: too many checks running and waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks in progress; retry shortly")]
pub struct Busy;

impl IntoResponse for Busy {
    /// `503` with `Retry-After: 1` and a JSON error.
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "busy", "retry_after": 1 })),
        )
            .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        r
    }
}

/// A gauge held up while this lives.
struct Held(Arc<ServerMetrics>, fn(&ServerMetrics) -> &AtomicU64);

impl Held {
    fn new(m: Arc<ServerMetrics>, gauge: fn(&ServerMetrics) -> &AtomicU64) -> Self {
        gauge(&m).fetch_add(1, Relaxed);
        Held(m, gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Relaxed);
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The system gave no randomness for the salt.
    #[error("no randomness for the salt: {0}")]
    Rng(#[source] getrandom::Error),
    /// argon2 refused the salt, the parameters or the input.
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// An argon2id PHC string for `password` with the OWASP-recommended
/// default parameters (m = 19 MiB, t = 2, p = 1).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    hash_password_with(password, &Params::default())
}

/// An argon2id PHC string for `password` with `params`.
pub fn hash_password_with(password: &str, params: &Params) -> Result<String, HashError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(HashError::Rng)?;
    let salt = SaltString::encode_b64(&bytes).map_err(HashError::Argon2)?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

thread_local! {
    /// argon2's working memory, kept by each checking thread (grown to the
    /// largest `m` it has met, at most 256 MiB by config) so the allocator
    /// never holds several freed copies.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verify `password` against the PHC string `hash` with the hash's own
/// parameters, in this thread's reused memory; the comparison is constant
/// time.
fn verify(hash: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(alg), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(h.algorithm),
        Params::try_from(&h),
        h.salt,
        h.hash,
    ) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    let mut out = vec![0u8; expected.len()];
    let hashed = MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < blocks {
            m.resize(blocks, argon2::Block::default());
        }
        Argon2::new(alg, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut m[..blocks],
        )
    });
    hashed.is_ok() && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

impl Users {
    /// From config with the default limits; no users → the demo user
    /// `demo` / `demo-password`.
    pub fn from_config(users: &[User]) -> Users {
        Users::new(
            users,
            &Hashing::default(),
            Arc::new(ServerMetrics::default()),
        )
    }

    /// From config: the users (none → the demo user `demo` /
    /// `demo-password`), the check limits and argon2 parameters of
    /// `hashing` (the demo user's and the dummy hash use them), counted in
    /// `metrics`.
    pub fn new(users: &[User], hashing: &Hashing, metrics: Arc<ServerMetrics>) -> Users {
        let params = hashing.params().unwrap_or_default();
        let mut hashes = HashMap::new();
        for u in users {
            hashes.insert(u.name.clone(), u.password_hash.clone());
        }
        if hashes.is_empty() {
            hashes.insert(
                "demo".into(),
                hash_password_with("demo-password", &params).unwrap_or_default(),
            );
        }
        let dummy = hash_password_with("not a real password", &params).unwrap_or_default();
        let running = hashing.max_concurrent.max(1) as usize;
        let admitted = running.saturating_add(hashing.queue as usize);
        Users {
            hashes: Arc::new(hashes),
            dummy: Arc::new(dummy),
            admission: Arc::new(Semaphore::new(admitted.min(Semaphore::MAX_PERMITS))),
            running: Arc::new(Semaphore::new(running.min(Semaphore::MAX_PERMITS))),
            pool: pool(running.min(1024)),
            metrics,
        }
    }

    /// Check a password on the checking threads, at most
    /// `max_concurrent_hashes` at once; [`Busy`] (nothing checked) when
    /// `hash_queue` logins are already waiting. The permits go with the
    /// check, so a client that hangs up does not free its slot before
    /// argon2 is done.
    pub async fn check_bounded(&self, username: &str, password: &str) -> Result<bool, Busy> {
        Ok(self.admit()?.check(username, password).await)
    }

    /// A place among the checks running or waiting, or [`Busy`]. Take it
    /// before reserving a login attempt, so a busy server refuses a login
    /// without counting it against anybody.
    pub fn admit(&self) -> Result<Admitted, Busy> {
        match self.admission.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admitted {
                permit,
                users: self.clone(),
            }),
            Err(_) => {
                self.metrics.hash_busy.fetch_add(1, Relaxed);
                Err(Busy)
            }
        }
    }

    /// Check a password (blocking; call from `spawn_blocking`).
    pub fn check(&self, username: &str, password: &str) -> bool {
        let name = username.trim().to_ascii_lowercase();
        match self.hashes.get(&name) {
            Some(h) => verify(h, password),
            None => {
                let _ = verify(&self.dummy, password);
                false
            }
        }
    }
}

/// A login admitted to the password checks ([`Users::admit`]).
pub struct Admitted {
    permit: tokio::sync::OwnedSemaphorePermit,
    users: Users,
}

impl Admitted {
    /// Wait for a checking thread and check the password there.
    pub async fn check(self, username: &str, password: &str) -> bool {
        let Admitted { permit, users } = self;
        let waiting = Held::new(users.metrics.clone(), |m| &m.hashes_waiting);
        let Ok(run) = users.running.clone().acquire_owned().await else {
            return false;
        };
        drop(waiting);
        let running = Held::new(users.metrics.clone(), |m| &m.hashes_running);
        let checker = users.clone();
        let (u, p) = (username.to_string(), password.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let ok = checker.check(&u, &p);
            drop((run, permit, running));
            let _ = tx.send(ok);
        });
        if users.pool.send(job).is_err() {
            tracing::error!("password-check threads are gone");
            return false;
        }
        rx.await.unwrap_or(false)
    }
}
