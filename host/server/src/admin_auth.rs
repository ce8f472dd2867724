//! Admin authentication, shared by the admin API, `/metrics` (its token)
//! and the dashboard's sessions.
//!
//! A valid `Authorization: Bearer <token>` (scheme in any case) is enough
//! for every admin call; otherwise a live session cookie is, and then
//! state-changing calls also need `X-Requested-With: portcullis`, whatever
//! other headers are present. The cookie holds a random 128-bit session
//! id, never the token; sessions live server-side for 12 h, at most
//! [`MAX_SESSIONS`] at once, and sign-out ends them. Tokens and session ids
//! are compared as keyed SipHash-2-4 128-bit digests (random key per
//! process) in constant time, so the time taken says nothing about the
//! token, its length included.

use std::collections::HashMap;
use std::hash::Hasher;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// How long a sign-in lasts.
pub const SESSION_SECS: u64 = 12 * 3600;

/// The admin API's answer when it is off (no admin token).
pub fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "admin API is off (no server.admin_token)" })),
    )
        .into_response()
}

/// Name of the admin session cookie (`HttpOnly; SameSite=Strict`).
pub const COOKIE: &str = "portcullis_admin";

/// Sessions held at once; signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

/// A fixed-size keyed digest.
type Digest = [u8; 16];

/// Constant-time comparison of two digests.
fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a request proved it may use the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A valid `Authorization: Bearer` token.
    Bearer,
    /// A live dashboard session cookie (CSRF guard applies).
    Session,
}

/// The admin token (as a digest only) and the dashboard sessions.
pub struct AdminAuth {
    key: (u64, u64),
    token: Digest,
    sessions: parking_lot::Mutex<HashMap<Digest, Instant>>,
    pub(crate) lifetime: Duration,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// For `token`, with a fresh random digest key.
    pub fn new(token: &str) -> Result<AdminAuth, getrandom::Error> {
        let mut k = [0u8; 16];
        getrandom::getrandom(&mut k)?;
        let (a, b) = k.split_at(8);
        let mut w = [0u8; 8];
        w.copy_from_slice(a);
        let k0 = u64::from_le_bytes(w);
        w.copy_from_slice(b);
        let k1 = u64::from_le_bytes(w);
        let mut auth = AdminAuth {
            key: (k0, k1),
            token: [0; 16],
            sessions: parking_lot::Mutex::new(HashMap::new()),
            lifetime: Duration::from_secs(SESSION_SECS),
        };
        auth.token = auth.digest(token.as_bytes());
        Ok(auth)
    }

    fn digest(&self, bytes: &[u8]) -> Digest {
        use siphasher::sip128::Hasher128;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(self.key.0, self.key.1);
        h.write(bytes);
        h.finish128().as_bytes()
    }

    /// Whether `given` is the admin token (constant time in the token).
    pub fn token_ok(&self, given: &str) -> bool {
        same(&self.digest(given.as_bytes()), &self.token)
    }

    /// Whether `Authorization` carries the token with the `Bearer` scheme
    /// (any case).
    pub fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.trim().split_once(' '))
            .any(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && self.token_ok(t.trim()))
    }

    /// Session ids (as digests) in the request's `portcullis_admin` cookies.
    fn cookie_digests<'a>(&'a self, headers: &'a HeaderMap) -> impl Iterator<Item = Digest> + 'a {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, _)| *k == COOKIE)
            .map(|(_, v)| self.digest(v.as_bytes()))
    }

    /// Whether the request carries the cookie of a live session.
    pub fn session_ok(&self, headers: &HeaderMap) -> bool {
        let now = Instant::now();
        let sessions = self.sessions.lock();
        let mut ok = false;
        for d in self.cookie_digests(headers) {
            // Every candidate is looked up: no early exit.
            ok |= sessions
                .iter()
                .fold(false, |acc, (k, exp)| acc | (same(k, &d) && *exp > now));
        }
        ok
    }

    /// A new session: its id for the cookie (32 hex digits, 128 random bits).
    pub fn start_session(&self) -> Result<String, getrandom::Error> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id)?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, exp| *exp > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(self.digest(id.as_bytes()), now + self.lifetime);
        Ok(id)
    }

    /// End the sessions whose cookies the request carries.
    pub fn end_sessions(&self, headers: &HeaderMap) -> usize {
        let ds: Vec<Digest> = self.cookie_digests(headers).collect();
        let mut sessions = self.sessions.lock();
        ds.iter().filter(|d| sessions.remove(*d).is_some()).count()
    }

    /// Sessions held now (expired ones included until the next sign-in).
    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Who the request is: bearer first, else a session, else nobody.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Auth> {
        if self.bearer_ok(headers) {
            Some(Auth::Bearer)
        } else if self.session_ok(headers) {
            Some(Auth::Session)
        } else {
            None
        }
    }
}

/// The admin API's gate: 404 when it is off, 401 without a valid token or
/// session, and for `changes_state` calls on a session, 403 without
/// `X-Requested-With: portcullis` ([`csrf_ok`]).
#[allow(clippy::result_large_err)]
pub fn authorize(
    admin: Option<&AdminAuth>,
    headers: &HeaderMap,
    changes_state: bool,
) -> Result<Auth, Response> {
    let Some(admin) = admin else {
        return Err(off());
    };
    match admin.authenticate(headers) {
        None => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "bad or missing admin token" })),
        )
            .into_response()),
        Some(Auth::Session) if changes_state => csrf_ok(headers).map(|()| Auth::Session),
        Some(a) => Ok(a),
    }
}

/// State-changing admin calls authenticated by the session cookie must also
/// carry `X-Requested-With: portcullis`: a cross-site page cannot add that
/// header without a CORS preflight, which this server never grants. Other
/// headers (an `Authorization` that is not the right bearer token, say)
/// change nothing.
#[allow(clippy::result_large_err)]
pub fn csrf_ok(headers: &HeaderMap) -> Result<(), Response> {
    match headers
        .get("x-requested-with")
        .and_then(|v| v.to_str().ok())
    {
        Some("portcullis") => Ok(()),
        _ => Err((
            StatusCode::FORBIDDEN,
            "missing X-Requested-With: portcullis (CSRF guard)",
        )
            .into_response()),
    }
}
