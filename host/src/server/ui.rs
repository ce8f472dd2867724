//! Admin authentication helpers shared by the admin API and the dashboard.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// Name of the admin session cookie (`HttpOnly; SameSite=Strict`).
pub const COOKIE: &str = "portcullis_admin";

/// Constant-time byte comparison.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the admin cookie with the right token.
pub fn cookie_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && same(v.as_bytes(), expected.as_bytes()))
}

/// State-changing admin calls authenticated by cookie must also carry
/// `X-Requested-With: portcullis`: a cross-site page cannot add that header
/// without a CORS preflight, which this server never grants. Bearer-token
/// calls are not sent by browsers on their own and pass.
#[allow(clippy::result_large_err)]
pub fn csrf_ok(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key("authorization") {
        return Ok(());
    }
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

/// What the dashboard reads.
#[derive(Clone)]
pub struct UiContext {
    /// The decision backend (bans, lift, status).
    pub engine: std::sync::Arc<dyn crate::engine::Engine>,
    /// The admin token (none: dashboard off).
    pub admin_token: Option<std::sync::Arc<String>>,
    /// The counters of the main guard.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Store kind label.
    pub kind: &'static str,
}

/// Dashboard routes (none yet).
pub fn routes<S: Clone + Send + Sync + 'static>(ctx: UiContext) -> Router<S> {
    let _ = ctx;
    Router::new()
}
