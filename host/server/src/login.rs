//! Login settlement, the pipeline's step for a login (the demo
//! `POST /login` and proxy mode's `[[login_routes]]`): reserve the attempt
//! (`Engine::begin_login`: it counts as a failure from now on, so N
//! parallel guesses get at most `max_failures` checks, `docs/rules.md`
//! rule 5), refuse if the rules say so (or, for a lock that
//! `login.reveal_lock = false` hides, answer as a wrong password is
//! answered), else run the check (the password check, or the upstream's
//! answer), settle the attempt with its result, and on a failure serve the
//! penalty delay before the response goes out.
//!
//! A proxy login route's wrong-password answer is the upstream's: the
//! most recent failure response of each route is kept ([`Replays`]) so a
//! hidden lock can answer with it after the penalty delay (a plain `401`
//! until one was seen).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis::BoxFuture;
use portcullis::Decision;
use portcullis::Engine;
use portcullis::{Attempt, AttemptId, Penalty, Serve, SlotGuard};
use serde_json::json;

/// What answers a lock that `login.reveal_lock = false` hides.
pub type Hidden = Box<dyn FnOnce(Decision) -> BoxFuture<'static, Response> + Send>;

/// 429 (or 403, 503) for a login refused before the password is looked
/// at: problem details naming the `login` policy (or a short HTML page
/// for a browser), `Retry-After` when the refusal ends.
fn refused(d: &Decision, headers: &HeaderMap) -> Response {
    portcullis::problem::deny_response(d, &["login"], headers)
        .map(Body::from)
        .into_response()
}

fn failed() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "error": "login check failed" })),
    )
        .into_response()
}

/// Reserve an attempt for every name in `users` (`Err`: the first
/// refusal; the ones already reserved are settled as failures: the request
/// was an attempt on them too).
async fn reserve(
    engine: &dyn Engine,
    users: &[String],
    ip: IpAddr,
) -> Result<Vec<Attempt<AttemptId, SlotGuard>>, Decision> {
    let mut held: Vec<Attempt<AttemptId, SlotGuard>> = Vec::with_capacity(users.len());
    for user in users {
        match engine.begin_login(user, ip).await {
            Ok(a) => held.push(a),
            Err(d) => {
                for (a, u) in held.into_iter().zip(users) {
                    engine.finish_login(u, ip, a.id, false).await;
                }
                return Err(d);
            }
        }
    }
    Ok(held)
}

/// Reserve, check, settle (see the module doc) for every username the
/// request carries (`users`, at least one). `hidden` answers a lock that
/// `reveal_lock = false` hides; `None`: locks are refused openly.
pub async fn guarded<F>(
    engine: Arc<dyn Engine>,
    users: Vec<String>,
    ip: IpAddr,
    headers: &HeaderMap,
    hidden: Option<Hidden>,
    check: F,
) -> Response
where
    F: std::future::Future<Output = (bool, Response)> + Send + 'static,
{
    let attempts = match reserve(engine.as_ref(), &users, ip).await {
        Ok(a) => a,
        Err(d) => match hidden {
            Some(answer) if crate::lock_reveal::hides(false, &d) => {
                tracing::info!(%ip, decision = ?d, "login refused: locked, answered as a wrong password");
                return answer(d).await;
            }
            _ => {
                tracing::info!(%ip, decision = ?d, "login refused before password check");
                return refused(&d, headers);
            }
        },
    };
    if attempts.iter().any(|a| a.penalty.refused) {
        // No slot for the penalty and the policy refuses: nothing is
        // checked; the reservations stay failures.
        for (a, u) in attempts.into_iter().zip(&users) {
            engine.finish_login(u, ip, a.id, false).await;
        }
        return crate::lock_reveal::too_many_in_flight();
    }
    // The check, the settlement and the penalty run in a task of their own:
    // a client that hangs up cannot cut the penalty short, free its slot
    // early or leave the attempt unsettled.
    let task = tokio::spawn(async move {
        let (ok, response) = check.await;
        let mut penalties = Vec::with_capacity(attempts.len());
        let mut locked = false;
        for (a, u) in attempts.into_iter().zip(&users) {
            locked |= engine.finish_login(u, ip, a.id, ok).await;
            penalties.push(a.penalty);
        }
        if ok {
            drop(penalties);
            return response;
        }
        let delay_ms = penalties.iter().map(|p| p.delay.as_millis()).max();
        tracing::info!(%ip, delay_ms, users = users.len(), locked, "login failed");
        futures_util::future::join_all(penalties.into_iter().map(Penalty::serve)).await;
        response
    });
    task.await.unwrap_or_else(|_| failed())
}

/// Largest failure body kept for a replay.
pub const MAX_REPLAY: usize = 64 * 1024;

/// One upstream failure answer, kept to be replayed.
#[derive(Clone)]
struct Replay {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// Each login route's most recent upstream failure answer.
#[derive(Default)]
pub struct Replays(Mutex<HashMap<String, Replay>>);

impl Replays {
    /// Keep a copy of `resp` (a failure of route `route`) and hand back
    /// one to send. Its body is read whole (up to [`MAX_REPLAY`]; a larger
    /// one is sent as read so far and not kept).
    pub async fn keep(&self, route: &str, resp: Response) -> Response {
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_REPLAY).await {
            Ok(b) => b,
            Err(_) => {
                return crate::proxy::text(
                    StatusCode::BAD_GATEWAY,
                    "portcullis: upstream answer too large\n",
                )
            }
        };
        let r = Replay {
            status: parts.status,
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body: bytes.clone(),
        };
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(route.to_string(), r);
        Response::from_parts(parts, Body::from(bytes))
    }

    /// The answer of a hidden lock on `route`: its last failure replayed,
    /// or a plain `401`.
    pub fn answer(&self, route: &str) -> Response {
        let r = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .cloned();
        let Some(r) = r else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let mut resp = Response::new(Body::from(r.body));
        *resp.status_mut() = r.status;
        if let Some(ct) = r.content_type {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp
    }
}

/// A hidden lock on proxy login route `route`: the penalty a wrong
/// password would get (served in a slot like a failure's, refused like
/// one without a slot), then the route's last failure answer. Runs in a
/// task of its own, so a client that hangs up cannot cut it short.
pub fn hidden_replay(
    engine: Arc<dyn Engine>,
    replays: Arc<Replays>,
    route: String,
    ip: IpAddr,
    delay: portcullis::Duration,
) -> Hidden {
    Box::new(move |_d: Decision| -> BoxFuture<'static, Response> {
        Box::pin(async move {
            let penalty = crate::lock_reveal::hidden_penalty(engine.as_ref(), ip, delay).await;
            if penalty.refused {
                return crate::lock_reveal::too_many_in_flight();
            }
            let task = tokio::spawn(async move {
                penalty.serve().await;
                replays.answer(&route)
            });
            task.await.unwrap_or_else(|_| failed())
        })
    })
}
