//! Demo mode's service (no `[upstream]`): `GET /` and `POST /login`
//! against the configured `[[users]]`. The pipeline has already judged the
//! request (`docs/pipeline.md`); the login runs the login settlement step
//! ([`crate::login::guarded`]).

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use portcullis::BoxFuture;
use portcullis::ClientIp;
use portcullis::Decision;
use serde::Deserialize;
use serde_json::json;

use crate::admin_api::{error, App, Run};
use crate::login::Hidden;
use crate::passwords::Admitted;

/// The demo routes.
pub fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(|| async { crate::pipeline::demo_root() }))
        .route("/login", post(login))
        .with_state(app)
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

type Held = Arc<Mutex<Option<(Admitted, String)>>>;

/// The password and the check's place, taken by whichever runs: the check,
/// or (a hidden lock) the answer that looks like a wrong password.
fn take(h: &Held) -> Option<(Admitted, String)> {
    h.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A hidden lock's answer: the password still checked (its cost is part
/// of a miss's timing), the penalty delay, a wrong password's answer.
fn hidden(app: &App, run: &Run, ip: std::net::IpAddr, held: &Held, user: &str) -> Option<Hidden> {
    if run.cfg.reveal_lock {
        return None;
    }
    let (engine, held, user) = (app.engine.clone(), held.clone(), user.to_string());
    let delay = crate::lock_reveal::hidden_lock_delay(&run.cfg.rules);
    Some(Box::new(
        move |_d: Decision| -> BoxFuture<'static, Response> {
            Box::pin(async move {
                match take(&held) {
                    Some((admitted, password)) => {
                        crate::lock_reveal::answer(
                            engine.as_ref(),
                            ip,
                            admitted,
                            user,
                            password,
                            delay,
                        )
                        .await
                    }
                    None => crate::lock_reveal::wrong_password(),
                }
            })
        },
    ))
}

async fn login(
    State(app): State<App>,
    run: Run,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(LoginBody { username, password }) = serde_json::from_slice::<LoginBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"username\": \"...\", \"password\": \"...\"}",
        );
    };
    if username.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "username is empty");
    }
    // A place among the password checks first: a busy server answers 503
    // without counting the attempt against anybody.
    let admitted = match app.users.admit() {
        Ok(a) => a,
        Err(busy) => {
            tracing::warn!(%ip, "login refused: password checks busy");
            return busy.into_response();
        }
    };
    let held: Held = Arc::new(Mutex::new(Some((admitted, password))));
    let hide = hidden(&app, &run, ip, &held, &username);
    let user = username.clone();
    crate::login::guarded(
        app.engine.clone(),
        vec![user],
        ip,
        &headers,
        hide,
        async move {
            let Some((admitted, password)) = take(&held) else {
                return (false, crate::lock_reveal::wrong_password());
            };
            if admitted.check(&username, &password).await {
                let ok = Json(json!({ "ok": true, "user": username.trim().to_ascii_lowercase() }));
                (true, (StatusCode::OK, ok).into_response())
            } else {
                (false, crate::lock_reveal::wrong_password())
            }
        },
    )
    .await
}
