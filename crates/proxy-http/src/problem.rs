//! Refusals on the wire: RFC 9457 problem details, one status per refusal kind.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use portcullis_guard::{Guard, Refusal, RefusalKind};
use serde_json::json;

/// The status a refusal is answered with; `status` overrides it where the adapter knows
/// better (413 for a body over the cap, 504 for an upstream that did not answer in time).
pub(crate) fn status_of(refusal: &Refusal, status: Option<u16>) -> StatusCode {
    if let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
        return status;
    }
    match refusal.kind {
        RefusalKind::Malformed | RefusalKind::UnknownOperation | RefusalKind::OutOfOrder => {
            StatusCode::BAD_REQUEST
        }
        RefusalKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        RefusalKind::Throttled | RefusalKind::OverQuota => StatusCode::TOO_MANY_REQUESTS,
        RefusalKind::Denied
        | RefusalKind::Unsafe
        | RefusalKind::ToolChanged
        | RefusalKind::HeldDenied
        | RefusalKind::HeldExpired => StatusCode::FORBIDDEN,
        // "Send the reason and try again": the request itself was fine.
        RefusalKind::ReasonRequired => StatusCode::PRECONDITION_REQUIRED,
        RefusalKind::HoldUnavailable | RefusalKind::OverLimit | RefusalKind::AuditUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // The wait ended without a decision: the caller's own bound, or the gateway stopping.
        RefusalKind::HeldCancelled => StatusCode::GATEWAY_TIMEOUT,
        RefusalKind::UpstreamFailed => StatusCode::BAD_GATEWAY,
        RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A problem document for a refusal: the message, the kind, the rule and policy that
/// decided, the approval a held request went through (and where to see it).
pub(crate) fn refusal_response(guard: &Guard, refusal: &Refusal, status: Option<u16>) -> Response {
    let status = status_of(refusal, status);
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Refused"),
        "status": status.as_u16(),
        "detail": refusal.message,
        "refusal": refusal.kind.label(),
    });
    if let Some(rule) = &refusal.rule {
        body["rule"] = json!(rule);
    }
    if let Some(version) = &refusal.policy_version {
        body["policy_version"] = json!(version);
    }
    if let Some(approval) = &refusal.approval {
        body["approval"] = json!({
            "id": approval.id,
            "status": approval.status.as_str(),
            "url": guard.decision_url(&approval.id),
        });
    }
    let mut response = problem_body(status, body.to_string());
    let headers = response.headers_mut();
    if let Some(approval) = &refusal.approval
        && let Ok(id) = HeaderValue::from_str(&approval.id)
    {
        headers.insert("portcullis-approval", id);
    }
    match refusal.kind {
        RefusalKind::Unauthenticated => {
            let description = refusal.message.replace(['"', '\\'], "'");
            let value =
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\"")),
            );
        }
        RefusalKind::Throttled => {
            let seconds = refusal.retry_after.map_or(1, |d| d.as_secs().max(1));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        _ => {}
    }
    response
}

/// 401 without a credential: a challenge naming the scheme.
pub(crate) fn unauthenticated(message: &str) -> Response {
    let status = StatusCode::UNAUTHORIZED;
    let body = json!({
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": message,
        "refusal": RefusalKind::Unauthenticated.label(),
    });
    let mut response = problem_body(status, body.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portcullis\""),
    );
    response
}

/// A problem that is not a refusal of a request's (an unknown target).
pub(crate) fn problem(status: StatusCode, message: &str, label: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": message,
        "refusal": label,
    });
    problem_body(status, body.to_string())
}

fn problem_body(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_kind_has_a_status() {
        for kind in RefusalKind::ALL {
            let status = status_of(&Refusal::new(kind, "x"), None);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{kind}"
            );
        }
        let held = Refusal::new(RefusalKind::HeldDenied, "no");
        assert_eq!(status_of(&held, None), StatusCode::FORBIDDEN);
        assert_eq!(status_of(&held, Some(413)), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
