//! The approvals inbox: the held requests and grant requests this person may decide (never
//! their own), each with what was asked (masked), the rule, the requester, its age and its
//! deadline; a decision with a reason; the recent history. The list refreshes by itself when
//! any approval changes (server-sent events, then a fetch of the list).
//!
//! Whether a person may decide is the approvals service's rule, applied on every POST: the
//! page not offering a button to a requester is a courtesy, not the control.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use futures_util::Stream;
use maud::{Markup, html};
use portcullis_approvals::{Approval, ApprovalError, ApprovalKind, Status};
use serde::Deserialize;

use super::Web;
use super::auth::{self, KeptDecision, MaybeViewer, Viewer};
use super::page::{self, Section, csrf_field, json_block, notice, page, time};

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/approvals", get(inbox))
        .route("/approvals/list", get(list_fragment))
        .route("/approvals/events", get(events))
        .route("/approvals/{id}", get(detail))
        .route("/approvals/{id}/decide", post(decide))
}

/// What the inbox shows: to decide, the viewer's own, recently closed.
struct Lists {
    to_decide: Vec<Approval>,
    mine: Vec<Approval>,
    history: Vec<Approval>,
}

async fn lists(web: &Web, viewer: &Viewer) -> Result<Lists, ApprovalError> {
    let approvals = &web.admin.approvals;
    let pending = approvals.list(&viewer.identity, true, 200).await?;
    let (mine, to_decide) = pending
        .into_iter()
        .partition(|a| a.requester.is(&viewer.identity));
    let history = approvals
        .list(&viewer.identity, false, 100)
        .await?
        .into_iter()
        .filter(|a| a.status != Status::Pending)
        .take(25)
        .collect();
    Ok(Lists {
        to_decide,
        mine,
        history,
    })
}

async fn inbox(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    match lists(&web, &viewer).await {
        Ok(lists) => {
            let body = html! {
                p.lede { "Requests held at the gateway until someone in an approver group decides. You never decide your own." }
                p #live-status .sr-only role="status" aria-live="polite" {}
                div #approvals-live data-live="/console/approvals/list" data-events="/console/approvals/events" data-status="live-status" {
                    (render_lists(&lists))
                }
            };
            page("Approvals", Some(&viewer), Section::Approvals, body).into_response()
        }
        Err(e) => store_problem(&viewer, &e),
    }
}

/// The inbox's lists alone, for the live refresh. Without a session: 401 and a line saying
/// so (the script shows it instead of the stale list).
async fn list_fragment(State(web): State<Arc<Web>>, MaybeViewer(viewer): MaybeViewer) -> Response {
    let Ok(viewer) = viewer else {
        return (
            StatusCode::UNAUTHORIZED,
            notice(
                "warning",
                "Your session ended: reload the page to sign in again.",
            ),
        )
            .into_response();
    };
    match lists(&web, &viewer).await {
        Ok(lists) => render_lists(&lists).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            notice("error", &e.to_string()),
        )
            .into_response(),
    }
}

/// Server-sent events: one `changed` event each time any approval changes. Carries no data
/// (what this person may see is fetched, with their session, from the list). The stream ends
/// when the session does (checked on each change and every 30 s).
async fn events(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = web.admin.approvals.watch_changes();
    let stream = futures_util::stream::unfold(
        (changes, web, viewer),
        |(mut changes, web, viewer)| async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() || !web.sessions.is_live(&viewer).await {
                            return None;
                        }
                        let n = *changes.borrow_and_update();
                        let event = Event::default().event("changed").data(n.to_string());
                        return Some((Ok(event), (changes, web, viewer)));
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {
                        if !web.sessions.is_live(&viewer).await {
                            return None;
                        }
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn render_lists(lists: &Lists) -> Markup {
    html! {
        section aria-labelledby="to-decide" {
            h2 #to-decide { "Waiting for your decision " span.count data-testid="pending-count" { (lists.to_decide.len()) } }
            @if lists.to_decide.is_empty() {
                p.empty { "Nothing waits for you." }
            } @else {
                (table(&lists.to_decide, true))
            }
        }
        @if !lists.mine.is_empty() {
            section aria-labelledby="mine" {
                h2 #mine { "Your requests, waiting for others" }
                (table(&lists.mine, true))
            }
        }
        section aria-labelledby="history" {
            h2 #history { "Recently closed" }
            @if lists.history.is_empty() {
                p.empty { "Nothing closed yet." }
            } @else {
                (table(&lists.history, false))
            }
        }
    }
}

fn table(approvals: &[Approval], pending: bool) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Request" }
                th scope="col" { "Requester" }
                th scope="col" { "Rule" }
                th scope="col" { "Asked" }
                @if pending { th scope="col" { "Deadline" } } @else { th scope="col" { "Outcome" } }
            } }
            tbody {
                @for a in approvals {
                    tr data-approval=(a.id) {
                        td { a href={ "/console/approvals/" (a.id) } { (summary(a)) } }
                        td { (a.requester.name()) }
                        td { (a.rule) }
                        td { (time(&a.created_at)) " " span.age { "(" (age(&a.created_at)) ")" } }
                        @if pending {
                            td { (time(&a.expires_at)) }
                        } @else {
                            td { span.status.(a.status.as_str()) { (a.status.as_str()) } " " (closed_by(a)) }
                        }
                    }
                }
            }
        }
    }
}

/// `refund_payment on billing`, `grant on billing-db (2h)`.
fn summary(a: &Approval) -> String {
    match a.kind {
        ApprovalKind::Request => format!(
            "{} {} on {}",
            a.action,
            a.resource.as_deref().unwrap_or(""),
            a.target
        ),
        ApprovalKind::Grant => {
            let hours = a
                .grant
                .as_ref()
                .map(|g| {
                    humantime::format_duration(Duration::from_secs(g.duration_secs)).to_string()
                })
                .unwrap_or_default();
            format!("grant on {} ({hours})", a.target)
        }
    }
}

fn closed_by(a: &Approval) -> String {
    match a.votes.last() {
        Some(v) => format!("by {}", v.approver.name()),
        None => a.closed_because.clone().unwrap_or_default(),
    }
}

/// How long ago an RFC 3339 time was, in words.
fn age(rfc3339: &str) -> String {
    let Ok(then) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return String::new();
    };
    let secs = (chrono::Utc::now() - then.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0) as u64;
    let rounded = if secs < 60 { secs } else { secs - secs % 60 };
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(rounded))
    )
}

fn store_problem(viewer: &Viewer, e: &ApprovalError) -> Response {
    tracing::error!("console: approvals: {e}");
    page::problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Approvals unavailable",
        &format!("The approvals store cannot be read: {e}"),
        Some(viewer),
    )
}

#[derive(Deserialize)]
struct DetailQuery {
    done: Option<String>,
}

/// `apr_` and hex digits: anything else names no approval (and never reaches a redirect).
fn is_approval_id(id: &str) -> bool {
    id.strip_prefix("apr_").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

async fn detail(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let approval = match web.admin.approvals.get(&viewer.identity, &id).await {
        Ok(a) => a,
        Err(ApprovalError::NotFound(_)) => {
            return page::problem(
                StatusCode::NOT_FOUND,
                "No such approval",
                &format!("There is no approval {id} that you may see."),
                Some(&viewer),
            );
        }
        Err(e) => return store_problem(&viewer, &e),
    };
    // A decision kept through a sign-in comes back here once, for the person to submit.
    let kept = web
        .sessions
        .take_kept(&viewer)
        .await
        .filter(|k| k.approval == approval.id);
    // Said only when the record bears it out: a link cannot make the page claim a decision.
    let voted = |approve: bool| {
        approval
            .votes
            .iter()
            .any(|v| v.approve == approve && v.approver.is(&viewer.identity))
    };
    let message = match query.done.as_deref() {
        Some("approved") if voted(true) => Some(notice(
            "ok",
            if approval.status == Status::Approved {
                "Approved. The waiting request goes on."
            } else {
                "Your approval is recorded; more approvals are needed."
            },
        )),
        Some("denied") if voted(false) => Some(notice("ok", "Denied. The requester is told why.")),
        _ => kept.as_ref().map(|k| {
            notice("warning", &format!(
                "Your earlier decision ({}) was not recorded because your session had ended. Your reason is filled in below: check it and submit again.",
                if k.approve { "approve" } else { "deny" }
            ))
        }),
    };
    render_detail(&viewer, &approval, message, kept.as_ref(), StatusCode::OK)
}

fn render_detail(
    viewer: &Viewer,
    a: &Approval,
    message: Option<Markup>,
    kept: Option<&KeptDecision>,
    status: StatusCode,
) -> Response {
    let own = a.requester.is(&viewer.identity);
    let body = html! {
        @if let Some(m) = message { (m) }
        dl.facts {
            dt { "Status" } dd { span.status.(a.status.as_str()) data-testid="approval-status" { (a.status.as_str()) } }
            dt { "What" } dd { (summary(a)) }
            dt { "Requester" } dd { (a.requester.name()) " (" (a.requester.kind) ")" @if let Some(s) = &a.source { " from " (s) } }
            @if let Some(reason) = &a.reason { dt { "Their reason" } dd { (reason) } }
            dt { "Rule" } dd { (a.rule) " (policy " (a.policy_version) ")" }
            dt { "Approvers" } dd { (a.approvers.join(", ")) @if a.min_approvals > 1 { " · " (a.min_approvals) " approvals needed" } }
            dt { "Asked" } dd { (time(&a.created_at)) " (" (age(&a.created_at)) ")" }
            dt { "Deadline" } dd { (time(&a.expires_at)) }
            @if let Some(event) = &a.request_event { dt { "Request event" } dd { a href={ "/console/audit/" (event) } { code { (event) } } } }
        }
        @if let Some(grant) = &a.grant {
            h2 { "Access asked for" }
            dl.facts {
                dt { "Tools" } dd { @if grant.tools.is_empty() { "all" } @else { (grant.tools.join(", ")) } }
                dt { "Tables" } dd { @if grant.tables.is_empty() { "all" } @else { (grant.tables.join(", ")) } }
                dt { "For" } dd { (humantime::format_duration(Duration::from_secs(grant.duration_secs))) }
            }
        }
        @if let Some(arguments) = &a.arguments {
            h2 { "Arguments (masked)" }
            (json_block(arguments))
        }
        @if !a.votes.is_empty() {
            h2 { "Decisions" }
            ul.votes {
                @for v in &a.votes {
                    li {
                        strong { (if v.approve { "Approved" } else { "Denied" }) }
                        " by " (v.approver.name()) " at " (time(&v.time))
                        @if v.break_glass { " (break-glass)" }
                        ": " (v.reason)
                    }
                }
            }
        }
        @if let Some(why) = &a.closed_because { p { "Closed: " (why) } }
        @if a.status == Status::Pending {
            @if own {
                p.notice.info { "You asked for this; someone else in " (a.approvers.join(", ")) " decides." }
            } @else {
                h2 { "Decide" }
                form.decide method="post" action={ "/console/approvals/" (a.id) "/decide" } {
                    (csrf_field(viewer))
                    input type="hidden" name="digest" value=(a.digest);
                    label for="reason" { "Reason (recorded in the audit log and shown to the requester)" }
                    textarea #reason name="reason" required rows="3" maxlength="1000" { @if let Some(k) = kept { (k.reason) } }
                    div.actions {
                        button.primary type="submit" name="decision" value="approve" { "Approve" }
                        button.danger type="submit" name="decision" value="deny" { "Deny" }
                    }
                }
            }
        }
        p { a href="/console/approvals" { "Back to the inbox" } }
    };
    let title = format!("Approval {}", a.id);
    (status, page(&title, Some(viewer), Section::Approvals, body)).into_response()
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: Option<String>,
    digest: String,
    decision: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/approvals/{id}/decide`.
async fn decide(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
    jar: CookieJar,
    Path(id): Path<String>,
    Form(form): Form<DecideForm>,
) -> Response {
    if !is_approval_id(&id) {
        return page::problem(
            StatusCode::NOT_FOUND,
            "No such approval",
            "That is not an approval id (apr_ and hex digits).",
            viewer.as_ref().ok(),
        );
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return page::problem(
                StatusCode::BAD_REQUEST,
                "Unknown decision",
                &format!("{other:?} is not a decision: approve or deny."),
                viewer.as_ref().ok(),
            );
        }
    };
    let viewer = match viewer {
        Ok(viewer) => viewer,
        Err(_) => {
            // The session ended while the person was typing. Nothing is decided (there is
            // nobody to decide as, and no session to check the CSRF token against); the reason
            // is kept through sign-in and offered again.
            if let Err(refused) = auth::check_origin(&web, &headers, None) {
                return refused;
            }
            let kept = KeptDecision {
                approval: id.clone(),
                approve,
                reason: form.reason.chars().take(1000).collect(),
            };
            return super::signin::sign_in_response(
                &web,
                peer.ip(),
                jar,
                format!("/console/approvals/{id}"),
                Some(kept),
                Some((
                    "warning",
                    "Your session ended before your decision was recorded.",
                )),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    if let Err(refused) = auth::check_form(&web, &viewer, &headers, form.csrf.as_deref()) {
        return refused;
    }
    let result = web
        .admin
        .approvals
        .decide(&viewer.identity, &id, approve, &form.reason, &form.digest)
        .await;
    match result {
        Ok(_) => Redirect::to(&format!(
            "/console/approvals/{id}?done={}",
            if approve { "approved" } else { "denied" }
        ))
        .into_response(),
        Err(e) => {
            let status = match &e {
                ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
                ApprovalError::NotApprover { .. } | ApprovalError::SelfApproval { .. } => {
                    StatusCode::FORBIDDEN
                }
                ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
                ApprovalError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
                ApprovalError::Store(_) | ApprovalError::Notify(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::CONFLICT,
            };
            let message = notice("error", &format!("Not recorded: {e}."));
            match web.admin.approvals.get(&viewer.identity, &id).await {
                Ok(approval) => {
                    let kept = KeptDecision {
                        approval: id,
                        approve,
                        reason: form.reason,
                    };
                    render_detail(&viewer, &approval, Some(message), Some(&kept), status)
                }
                Err(_) => page::problem(status, "Not recorded", &e.to_string(), Some(&viewer)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_approval_id;

    #[test]
    fn approval_ids_are_apr_and_hex() {
        assert!(is_approval_id("apr_0123456789abcdef0123"));
        for bad in [
            "",
            "apr_",
            "apr_xyz",
            "apr_12/..",
            "apr_12\n",
            "grant_12",
            "APR_12",
        ] {
            assert!(!is_approval_id(bad), "{bad:?}");
        }
    }
}
