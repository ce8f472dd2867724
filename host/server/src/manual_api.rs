//! Manual decisions over the admin API (issue 17, item 3):
//! `POST /admin/bans` `{"ip": "203.0.113.9" | "203.0.113.0/24",
//! "for": "1h" | null, "reason": "…"}` blocks an address or range for a
//! time, or (no `for`) bans it until lifted; `DELETE /admin/bans/<ip>`
//! (the range percent-encoded: `203.0.113.0%2F24`) lifts it. Listed in
//! `GET /admin/bans` and on the dashboard as kind `manual` with the
//! operator's reason (`note`).

use std::time::Duration as StdDuration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis::ceil_secs;
use portcullis::Engine;
use portcullis::{parse_range, ManualBan, ManualError};
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of `POST /admin/bans`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// An address or a CIDR range.
    pub ip: String,
    /// How long (humantime: `"1h"`, `"30m"`); absent or null: until lifted.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// Why (kept, listed; at most 256 bytes).
    #[serde(default)]
    pub reason: Option<String>,
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// A manual range as the listings show it: a bare address for `/32` and
/// `/128`, else `addr/prefix`.
pub fn range_text(b: &ManualBan) -> String {
    let c = b.range;
    let host = if c.is_ipv4() { 32 } else { 128 };
    if c.prefix() == host {
        c.addr().to_string()
    } else {
        c.to_string()
    }
}

/// The listing rows of manual decisions: `{ip, kind: "manual", reason
/// ("banned" | "blocked"), note, seconds_left, ms_left}`.
pub fn rows(bans: &[ManualBan], now_ms: u64) -> Vec<Value> {
    bans.iter()
        .map(|b| {
            let left = b.left(now_ms);
            json!({
                "ip": range_text(b),
                "kind": "manual",
                "reason": if b.until_ms.is_some() { "blocked" } else { "banned" },
                "note": b.reason,
                "seconds_left": left.map(ceil_secs),
                "ms_left": left.map(|d| d.as_millis()),
            })
        })
        .collect()
}

/// Why a ban request makes no decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// `ip` is not an address or a CIDR range.
    #[error("{0}")]
    Range(#[source] portcullis::RangeParseError),
    /// `for` is not a duration.
    #[error("for: {0}")]
    For(#[source] crate::config::DurationError),
    /// `for` is zero: the ban would have ended already.
    #[error("for: {}", ManualError::Expired)]
    Expired,
}

/// Parse a ban request into the decision it makes at `now_ms`.
pub fn decide(req: &BanRequest, now_ms: u64) -> Result<ManualBan, DecideError> {
    let range = parse_range(&req.ip).map_err(DecideError::Range)?;
    let until_ms = match req.for_.as_deref() {
        None => None,
        Some(s) => {
            let d: StdDuration = crate::config::parse_duration(s).map_err(DecideError::For)?;
            if d.is_zero() {
                return Err(DecideError::Expired);
            }
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            Some(now_ms.saturating_add(ms))
        }
    };
    Ok(ManualBan {
        range,
        until_ms,
        reason: portcullis::clean_reason(req.reason.as_deref().unwrap_or("")),
        created_ms: now_ms,
    })
}

/// `POST /admin/bans`.
pub async fn post(engine: &dyn Engine, body: &[u8]) -> Response {
    let req: BanRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected JSON {{\"ip\": \"...\", \"for\": \"1h\" | null, \"reason\": \"...\"}}: {e}"),
            )
        }
    };
    let now_ms = portcullis::clock::unix_ms();
    let ban = match decide(&req, now_ms) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match engine.ban_range(ban.clone()).await {
        Ok(old) => (
            StatusCode::CREATED,
            Json(json!({
                "ip": range_text(&ban),
                "kind": "manual",
                "reason": if ban.until_ms.is_some() { "blocked" } else { "banned" },
                "note": ban.reason,
                "seconds_left": ban.left(now_ms).map(ceil_secs),
                "replaced": old.is_some(),
            })),
        )
            .into_response(),
        Err(ManualError::Unsupported) => error(
            StatusCode::NOT_IMPLEMENTED,
            &ManualError::Unsupported.to_string(),
        ),
        Err(e @ ManualError::NotShared(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ip: &str, for_: Option<&str>) -> BanRequest {
        BanRequest {
            ip: ip.into(),
            for_: for_.map(Into::into),
            reason: Some(" scanner ".into()),
        }
    }

    #[test]
    fn requests_become_decisions() {
        let b = decide(&req("203.0.113.0/24", Some("1h")), 1_000).unwrap();
        assert_eq!(b.until_ms, Some(3_601_000));
        assert_eq!(b.reason, "scanner");
        assert_eq!(range_text(&b), "203.0.113.0/24");
        let b = decide(&req("2001:db8::1", None), 1_000).unwrap();
        assert_eq!(b.until_ms, None);
        assert_eq!(range_text(&b), "2001:db8::1");
        assert!(decide(&req("10.0.0.0/7", None), 0).is_err());
        assert!(decide(&req("203.0.113.9", Some("0s")), 0).is_err());
        assert!(decide(&req("203.0.113.9", Some("soon")), 0)
            .unwrap_err()
            .to_string()
            .starts_with("for: "));
    }
}
