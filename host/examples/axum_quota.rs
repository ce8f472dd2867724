//! The README's quick start: one request quota (50 per address per
//! minute) in front of a whole axum app. `axum_login.rs` adds a stricter
//! `/login` policy and login lockout.
//!
//! ```sh
//! cargo run -p portcullis --example axum_quota
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{routing::get, Router};
use portcullis::Config;
use portcullis::RateLimitLayer;
use portcullis::{Guard, Limiter, LimiterOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default(); // every rule at its default: docs/rules.md
    config.requests.max_requests = 50; // per address per minute
    let limiter = Limiter::new(config, LimiterOptions::default())?;
    let guard = Guard::new(Arc::new(limiter), None); // no store: memory only

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(RateLimitLayer::new("requests", guard)); // 429 + Retry-After, RateLimit fields

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    // The layer keys clients by the peer address axum's ConnectInfo carries.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}
