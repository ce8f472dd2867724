//! An axum app guarded by portcullis: a global quota on every path, a
//! stricter policy on `/login`, and login lockout in the handler.
//!
//! * [`RateLimitLayer`] answers `429` + `Retry-After` (limited, blocked) or
//!   `403` (banned) before a handler runs, and adds the `RateLimit` fields.
//!   `/login` has a policy of its own; its [`Guard`] also holds the lockout.
//! * The handler reserves the attempt with [`Guard::begin_login`] before the
//!   password is looked at (it counts as a failure from then on, so parallel
//!   guesses get at most `max_failures` checks): a locked (user, address)
//!   pair or address gets `429` + `Retry-After`, unchecked.
//! * [`Guard::finish_login`] settles it: a right password clears the pair,
//!   a wrong one may lock; the wrong one's penalty delay (1, 2, 4 … 30 s) is
//!   served with [`Serve::serve`](portcullis::Serve::serve)
//!   before the `401`, in a task of its own so a client that hangs up
//!   cannot cut it short.
//!
//! ```sh
//! cargo run -p portcullis --example axum_login
//! curl -si localhost:3000/login -H 'content-type: application/json' \
//!      -d '{"username":"alice","password":"guess"}'
//! ```
//!
//! `host/tests/axum_example.rs` runs [`app`] on a real socket.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header::RETRY_AFTER, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use portcullis::Cleanup;
use portcullis::{ceil_secs, ClientIp, RateLimitLayer};
use portcullis::{Config, Decision};
use portcullis::{Guard, Limiter, LimiterOptions, Serve};
use serde::Deserialize;

/// The app: `global` limits every path, `login` limits `/login` and
/// keeps its failures and locks.
pub fn app(global: Guard, login: Guard) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/login", post(login_handler))
        .with_state(login.clone())
        .layer(RateLimitLayer::new("global", global).route("/login", "login", login))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login_handler(
    State(guard): State<Guard>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Json(Credentials { username, password }): Json<Credentials>,
) -> Response {
    let attempt = match guard.begin_login(&username, ip).await {
        Ok(a) => a,
        Err(denied) => return refused(&denied),
    };
    if attempt.penalty.refused {
        // No slot to serve a penalty in (policy `Refuse`): not checked.
        guard.finish_login(&username, ip, attempt.id, false).await;
        return (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, "1")]).into_response();
    }
    let task = tokio::spawn(async move {
        let ok = password_ok(&username, &password);
        guard.finish_login(&username, ip, attempt.id, ok).await;
        if ok {
            return (StatusCode::OK, "welcome\n").into_response(); // the slot is released
        }
        attempt.penalty.serve().await;
        (StatusCode::UNAUTHORIZED, "invalid credentials\n").into_response()
    });
    task.await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `429` + `Retry-After` (locked), `403` (denylisted); the body names why.
fn refused(d: &Decision) -> Response {
    match *d {
        Decision::Deny { reason, .. } if reason.is_forbidden() => {
            (StatusCode::FORBIDDEN, reason.as_str()).into_response()
        }
        Decision::Deny {
            reason,
            retry_after,
        } => {
            let secs = ceil_secs(retry_after).to_string();
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(RETRY_AFTER, secs)],
                reason.as_str(),
            )
                .into_response()
        }
        Decision::Allow { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Stands in for the user store. A real app verifies an argon2id hash
/// (the `argon2` crate; see the server's `passwords.rs`).
fn password_ok(user: &str, password: &str) -> bool {
    user.trim().eq_ignore_ascii_case("alice") && password == "wonderland"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = |max_requests| -> Result<Guard, portcullis::LimiterError> {
        let mut c = Config::default(); // the rules' defaults: docs/rules.md
        c.requests.max_requests = max_requests;
        let limiter = Limiter::new(c, LimiterOptions::default())?;
        Ok(Guard::new(Arc::new(limiter), None)) // no store: memory only
    };
    let (global, login) = (guard(50)?, guard(5)?);
    // Purge stale entries every 30 minutes (keep the handles alive).
    let _cleanup = [&global, &login].map(|g| Cleanup::start(g.clone(), Cleanup::DEFAULT_INTERVAL));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = app(global, login).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}
