//! Refusals as problem details (RFC 9457, `application/problem+json`)
//! with the problem types of the IETF RateLimit-fields draft
//! (draft-ietf-httpapi-ratelimit-headers, "Problem Types"):
//!
//! | reason | status | problem type |
//! | --- | --- | --- |
//! | rate limited | `429` | `quota-exceeded` |
//! | blocked, banned, denylisted, account or ip locked | `429`/`403` | `abnormal-usage-detected` |
//! | fail-closed (`unavailable`), table full | `503`/`429` | `temporary-reduced-capacity` |
//!
//! Each body names the policies it violated (`violated-policies`, the
//! names in the `RateLimit` field), and `Retry-After` (whole seconds,
//! rounded up) is the same number as the `RateLimit` field's `t`, so never
//! earlier. A ban (no end) sends neither. A client whose `Accept` asks for
//! `text/html` (and not JSON first) gets a short human page instead.
//!
//! ```
//! use portcullis::problem::{problem, ProblemType};
//! use portcullis::{Decision, Reason};
//! use portcullis::Duration;
//!
//! let d = Decision::Deny { reason: Reason::RateLimited, retry_after: Duration::from_secs(7) };
//! let p = problem(&d, &["requests"]).unwrap();
//! assert_eq!(p.kind, ProblemType::QuotaExceeded);
//! assert_eq!(p.status, 429);
//! assert_eq!(p.retry_after, Some(7));
//! ```

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use portcullis_core::Duration;
use portcullis_core::{Decision, Reason};

use crate::layer::ceil_secs;

/// Media type of a problem details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The problem types of the RateLimit-fields draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemType {
    /// A quota was used up.
    QuotaExceeded,
    /// The client was blocked, banned, locked or is denylisted.
    AbnormalUsageDetected,
    /// The service refuses for lack of capacity (fail-closed, table full).
    TemporaryReducedCapacity,
}

impl ProblemType {
    /// The draft's short name.
    pub fn name(self) -> &'static str {
        match self {
            ProblemType::QuotaExceeded => "quota-exceeded",
            ProblemType::AbnormalUsageDetected => "abnormal-usage-detected",
            ProblemType::TemporaryReducedCapacity => "temporary-reduced-capacity",
        }
    }

    /// The type URI (the IANA HTTP problem types registry the draft
    /// registers them in).
    pub fn uri(self) -> String {
        format!(
            "https://iana.org/assignments/http-problem-types#{}",
            self.name()
        )
    }

    /// A short title.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::QuotaExceeded => "Request quota exceeded",
            ProblemType::AbnormalUsageDetected => "Abnormal usage detected",
            ProblemType::TemporaryReducedCapacity => "Temporarily reduced capacity",
        }
    }

    /// The type of a denial's reason.
    pub fn of(reason: Reason) -> ProblemType {
        match reason {
            Reason::RateLimited => ProblemType::QuotaExceeded,
            Reason::Unavailable | Reason::TableFull => ProblemType::TemporaryReducedCapacity,
            _ => ProblemType::AbnormalUsageDetected,
        }
    }
}

/// One refusal, ready to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Its type.
    pub kind: ProblemType,
    /// HTTP status: `403` (banned, denylisted), `503` (fail-closed) or `429`.
    pub status: u16,
    /// The portcullis reason (`rate_limited`, `blocked`, …).
    pub reason: Reason,
    /// Whole seconds until a retry can succeed (`None`: not before an
    /// operator lifts a ban, or a `403`).
    pub retry_after: Option<u64>,
    /// The policies violated.
    pub violated: Vec<String>,
}

/// The status of a denial: `403` for bans and the denylist, `503` when
/// failing closed, `429` otherwise.
pub fn status_of(reason: Reason) -> StatusCode {
    if reason.is_forbidden() {
        StatusCode::FORBIDDEN
    } else if reason == Reason::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::TOO_MANY_REQUESTS
    }
}

/// The problem for a denial (`None` for an allow).
pub fn problem(d: &Decision, violated: &[&str]) -> Option<Problem> {
    let Decision::Deny {
        reason,
        retry_after,
    } = d
    else {
        return None;
    };
    let status = status_of(*reason);
    let retry_after = (status != StatusCode::FORBIDDEN && *retry_after != Duration::MAX)
        .then(|| ceil_secs(*retry_after));
    Some(Problem {
        kind: ProblemType::of(*reason),
        status: status.as_u16(),
        reason: *reason,
        retry_after,
        violated: violated.iter().map(|s| s.to_string()).collect(),
    })
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl Problem {
    /// A sentence for people.
    pub fn detail(&self) -> String {
        let what = match self.reason {
            Reason::RateLimited => "Too many requests from your address",
            Reason::Blocked => "Your address is temporarily blocked after repeated excess requests",
            Reason::Banned => "Your address is banned",
            Reason::PairLocked => "Too many failed logins for this account from your address",
            Reason::IpLocked => "Too many failed logins from your address",
            Reason::Denylisted => "Your address is not allowed",
            Reason::TableFull => "The service is busy",
            Reason::Unavailable => "The service cannot decide right now",
            _ => "Request refused",
        };
        match self.retry_after {
            Some(s) => format!("{what}; retry in {s} s."),
            None => format!("{what}."),
        }
    }

    /// The `application/problem+json` body: `type`, `title`, `status`,
    /// `detail`, `violated-policies`, and the extensions `reason` and
    /// `retry_after` (seconds, when there is an end).
    pub fn to_json(&self) -> String {
        let violated = self
            .violated
            .iter()
            .map(|v| json_str(v))
            .collect::<Vec<_>>()
            .join(",");
        let retry = self
            .retry_after
            .map(|s| format!(",\"retry_after\":{s}"))
            .unwrap_or_default();
        format!(
            "{{\"type\":{},\"title\":{},\"status\":{},\"detail\":{},\"violated-policies\":[{}],\"reason\":{}{}}}",
            json_str(&self.kind.uri()),
            json_str(self.kind.title()),
            self.status,
            json_str(&self.detail()),
            violated,
            json_str(self.reason.as_str()),
            retry,
        )
    }

    /// A short human page.
    pub fn to_html(&self) -> String {
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {title}</title></head>\n<body><h1>{title}</h1>\n<p>{detail}</p></body></html>\n",
            status = self.status,
            title = html_escape(self.kind.title()),
            detail = html_escape(&self.detail()),
        )
    }

    /// The response: status, `Retry-After` (when there is an end), and the
    /// JSON body, or the HTML page when `accept` prefers `text/html`.
    pub fn response(&self, accept: Option<&HeaderValue>) -> Response<String> {
        let html = prefers_html(accept);
        let (ctype, body) = if html {
            ("text/html; charset=utf-8", self.to_html())
        } else {
            (PROBLEM_JSON, self.to_json())
        };
        let mut r = Response::new(body);
        *r.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// Whether an `Accept` header asks for HTML before JSON: `text/html` is
/// listed (with a non-zero q) and no JSON type is listed before it with at
/// least its q. Browsers send `text/html,…`; API clients send JSON or `*/*`.
pub fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(a) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let mut best_json: Option<f32> = None;
    for part in a.split(',') {
        let mut it = part.split(';');
        let media = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        if media.ends_with("/json") || media.ends_with("+json") {
            best_json = Some(best_json.map_or(q, |b| b.max(q)));
        } else if media == "text/html" && q > 0.0 {
            return best_json.is_none_or(|b| b < q);
        }
    }
    false
}

/// The default refusal for `d` under the policies `violated`, answering
/// `request_headers`' `Accept` (the layer adds the `RateLimit` fields).
pub fn deny_response(
    d: &Decision,
    violated: &[&str],
    request_headers: &HeaderMap,
) -> Response<String> {
    match problem(d, violated) {
        Some(p) => p.response(request_headers.get(http::header::ACCEPT)),
        None => {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(reason: Reason, s: u64) -> Decision {
        Decision::Deny {
            reason,
            retry_after: Duration::from_millis(s),
        }
    }

    #[test]
    fn each_reason_has_its_draft_type_and_status() {
        let cases = [
            (Reason::RateLimited, ProblemType::QuotaExceeded, 429),
            (Reason::Blocked, ProblemType::AbnormalUsageDetected, 429),
            (Reason::Banned, ProblemType::AbnormalUsageDetected, 403),
            (Reason::Denylisted, ProblemType::AbnormalUsageDetected, 403),
            (Reason::IpLocked, ProblemType::AbnormalUsageDetected, 429),
            (Reason::PairLocked, ProblemType::AbnormalUsageDetected, 429),
            (
                Reason::Unavailable,
                ProblemType::TemporaryReducedCapacity,
                503,
            ),
            (
                Reason::TableFull,
                ProblemType::TemporaryReducedCapacity,
                429,
            ),
        ];
        for (reason, kind, status) in cases {
            let p = problem(&deny(reason, 1500), &["requests"]).expect("a denial");
            assert_eq!((p.kind, p.status), (kind, status), "{reason:?}");
            let v: serde_json::Value = serde_json::from_str(&p.to_json()).expect("json");
            assert_eq!(v["type"], kind.uri());
            assert_eq!(v["status"], status);
            assert_eq!(v["violated-policies"], serde_json::json!(["requests"]));
            if status == 403 {
                assert!(v.get("retry_after").is_none());
            } else {
                // 1.5 s rounds up: never earlier than the RateLimit `t`.
                assert_eq!(v["retry_after"], 2);
            }
        }
    }

    #[test]
    fn accept_picks_html_only_when_html_comes_first() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(prefers_html(h("text/html").as_ref()));
        assert!(prefers_html(
            h("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8").as_ref()
        ));
        assert!(!prefers_html(h("application/json, text/html").as_ref()));
        assert!(!prefers_html(h("application/problem+json").as_ref()));
        assert!(!prefers_html(h("*/*").as_ref()));
        assert!(!prefers_html(h("text/html;q=0").as_ref()));
        assert!(!prefers_html(None));
        let r = deny_response(&deny(Reason::RateLimited, 3000), &["a<b"], &{
            let mut m = HeaderMap::new();
            m.insert(http::header::ACCEPT, HeaderValue::from_static("text/html"));
            m
        });
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(r.headers()["retry-after"], "3");
        assert!(r.body().contains("Request quota exceeded"));
        assert!(!r.body().contains("a<b"));
    }
}
