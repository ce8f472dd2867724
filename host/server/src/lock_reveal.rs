//! `login.reveal_lock = false` (Keycloak's behaviour): a login refused
//! because its (username, address) pair or its address is locked is
//! answered exactly like a wrong password, so an attacker cannot tell the
//! lock from a miss. Same status (401), same body, the password is still
//! checked (its cost is part of a miss's timing; its result is ignored),
//! and the same penalty delay: the one the core gives the next failure of
//! a pair that has just reached `max_failures` (rule 6), served in a
//! concurrency slot like a failure's (rule 7: without a free slot it is
//! capped to `base`, or refused with the same answer a failure gets).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis::Duration;
use portcullis::{Config, Decision, Reason};
use serde_json::json;

use crate::passwords::Admitted;
use portcullis::Engine;
use portcullis::{Penalty, Serve, SlotGuard};

/// The body and status of a wrong password: the one definition both the
/// login handler and a hidden lock answer with.
pub fn wrong_password() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "invalid credentials" })),
    )
        .into_response()
}

/// The answer to a failure refused for want of a slot
/// (`slots.when_full = "refuse"`), before any password check.
pub fn too_many_in_flight() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "too many penalised attempts in flight" })),
    )
        .into_response()
}

/// Whether `d` is a lock that `reveal_lock = false` hides.
pub fn hides(reveal_lock: bool, d: &Decision) -> bool {
    !reveal_lock && matches!(d.reason(), Some(Reason::PairLocked | Reason::IpLocked))
}

/// The penalty delay a wrong password gets once its pair has failed
/// `max_failures` times in the window: what a locked attempt waits.
pub fn hidden_lock_delay(rules: &Config) -> Duration {
    rules.penalty.delay(rules.login.max_failures)
}

/// The penalty a hidden lock serves: the one the backend gives it, else
/// `delay` without a slot.
pub(crate) async fn hidden_penalty(
    engine: &dyn Engine,
    ip: std::net::IpAddr,
    delay: Duration,
) -> Penalty<SlotGuard> {
    engine
        .hidden_lock_penalty(ip)
        .await
        .unwrap_or(Penalty::<SlotGuard> {
            delay,
            slot: None,
            refused: false,
            throttled: false,
            locked: false,
        })
}

/// Answer a locked login like a wrong password: the penalty the backend
/// gives a hidden lock (else `delay`, without a slot); refused like a
/// failure without a slot, or: check the password (result ignored), wait
/// the delay in the slot, answer 401. Runs in a task of its own, so a
/// client that hangs up cannot cut it short.
pub async fn answer(
    engine: &dyn Engine,
    ip: std::net::IpAddr,
    admitted: Admitted,
    username: String,
    password: String,
    delay: Duration,
) -> Response {
    let penalty = hidden_penalty(engine, ip, delay).await;
    if penalty.refused {
        return too_many_in_flight();
    }
    let task = tokio::spawn(async move {
        let _ = admitted.check(&username, &password).await;
        penalty.serve().await;
        wrong_password()
    });
    task.await.unwrap_or_else(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "login check failed" })),
        )
            .into_response()
    })
}
