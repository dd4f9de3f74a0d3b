//! Access: a person asks for time-boxed access to a target (a just-in-time grant), sees the
//! requests of theirs still waiting, and the grants they hold or may revoke, with a revoke
//! form for each one still running.
//!
//! Asking goes through the same function as the admin API's `POST /api/v1/grants`
//! ([`crate::ask_for_grant`]): the policy says which rule the grant falls under (and so who
//! approves it and for how long at most), the approvals service records it. Who may revoke a
//! grant is the approvals service's rule, checked on every POST. Others' grant requests
//! that this person may decide are approvals, so they are decided in the Approvals inbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_approvals::{Approval, ApprovalError, ApprovalKind, Grant};
use serde::Deserialize;

use super::Web;
use super::auth::{self, Viewer};
use super::page::{self, Section, csrf_field, notice, page, time};
use crate::{GrantBody, GrantRefused};

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/access", get(show))
        .route("/access/request", post(request))
        .route("/access/{grant}/revoke", post(revoke))
}

/// The request form's fields, as typed (kept when the request is refused).
#[derive(Deserialize, Default)]
struct AskForm {
    csrf: Option<String>,
    #[serde(default)]
    target: String,
    #[serde(default)]
    tools: String,
    #[serde(default)]
    tables: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct ShowQuery {
    done: Option<String>,
    id: Option<String>,
}

async fn show(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(query): Query<ShowQuery>,
) -> Response {
    let id = query.id.unwrap_or_default();
    // Said only when the record bears it out: a link cannot make the page claim either.
    let approvals = &web.admin.approvals;
    let message = match query.done.as_deref() {
        Some("requested")
            if approvals
                .get(&viewer.identity, &id)
                .await
                .is_ok_and(|a| a.requester.is(&viewer.identity)) =>
        {
            Some(notice(
                "ok",
                &format!(
                    "Asked for access ({id}). It is waiting for an approver; you will find it below until it is decided."
                ),
            ))
        }
        Some("revoked")
            if approvals
                .grants(&viewer.identity, 200)
                .await
                .is_ok_and(|grants| {
                    grants.iter().any(|g| g.id == id && g.revoked_at.is_some())
                }) =>
        {
            Some(notice(
                "ok",
                &format!("Grant {id} is revoked: it no longer lets anyone in."),
            ))
        }
        _ => None,
    };
    let form = AskForm {
        duration: "1h".into(),
        ..AskForm::default()
    };
    render(&web, &viewer, &form, message, StatusCode::OK).await
}

/// The page: the request form (filled with `form`), the viewer's waiting requests, the grants.
async fn render(
    web: &Web,
    viewer: &Viewer,
    form: &AskForm,
    message: Option<Markup>,
    status: StatusCode,
) -> Response {
    let approvals = &web.admin.approvals;
    let waiting: Vec<Approval> = match approvals.list(&viewer.identity, true, 200).await {
        Ok(list) => list
            .into_iter()
            .filter(|a| a.kind == ApprovalKind::Grant && a.requester.is(&viewer.identity))
            .collect(),
        Err(e) => return store_problem(viewer, &e),
    };
    let grants = match approvals.grants(&viewer.identity, 200).await {
        Ok(grants) => grants,
        Err(e) => return store_problem(viewer, &e),
    };
    let policy = web.admin.policy();
    let targets = policy.targets();
    let body = html! {
        @if let Some(m) = message { (m) }
        p.lede {
            "Ask for time-boxed access to a target. An approver named by the rule the access falls under decides; you never approve your own. "
            "Requests from others that you may decide are in the "
            a href="/console/approvals" { "Approvals inbox" } "."
        }
        section aria-labelledby="ask" {
            h2 #ask { "Ask for access" }
            form.ask method="post" action="/console/access/request" {
                (csrf_field(viewer))
                label for="target" { "Target" }
                select #target name="target" required {
                    @for t in &targets {
                        @if *t == form.target {
                            option value=(t) selected { (t) }
                        } @else {
                            option value=(t) { (t) }
                        }
                    }
                }
                label for="tools" { "Tools (comma separated, a prefix may end in *; empty: the whole target)" }
                input #tools type="text" name="tools" value=(form.tools) maxlength="2000";
                label for="tables" { "Tables (comma separated; empty: all)" }
                input #tables type="text" name="tables" value=(form.tables) maxlength="2000";
                label for="duration" { "For how long (like 30m or 2h)" }
                input #duration type="text" name="duration" value=(form.duration) required maxlength="40";
                label for="ask-reason" { "Reason (shown to the approvers and recorded in the audit log)" }
                textarea #ask-reason name="reason" required rows="3" maxlength="1000" { (form.reason) }
                div.actions {
                    button.primary type="submit" { "Ask for access" }
                }
            }
        }
        section aria-labelledby="waiting" {
            h2 #waiting { "Your requests, waiting for a decision" }
            @if waiting.is_empty() {
                p.empty { "None waiting." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Request" }
                        th scope="col" { "Target" }
                        th scope="col" { "Access" }
                        th scope="col" { "Approvers" }
                        th scope="col" { "Asked" }
                        th scope="col" { "Deadline" }
                    } }
                    tbody {
                        @for a in &waiting {
                            tr data-approval=(a.id) {
                                td { a href={ "/console/approvals/" (a.id) } { code { (a.id) } } }
                                td { (a.target) }
                                td { (asked(a)) }
                                td { (a.approvers.join(", ")) }
                                td { (time(&a.created_at)) }
                                td { (time(&a.expires_at)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="grants" {
            h2 #grants { "Grants you hold or may revoke" }
            @if grants.is_empty() {
                p.empty { "No grants." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Grant" }
                        th scope="col" { "Holder" }
                        th scope="col" { "Target" }
                        th scope="col" { "Tools" }
                        th scope="col" { "Tables" }
                        th scope="col" { "Issued" }
                        th scope="col" { "Ends" }
                        th scope="col" { "State" }
                    } }
                    tbody {
                        @for g in &grants {
                            tr data-grant=(g.id) {
                                td { code { (g.id) } }
                                td { (g.holder.name()) }
                                td { (g.target) }
                                td { (list_or_all(&g.tools)) }
                                td { (list_or_all(&g.tables)) }
                                td { (time(&g.issued_at)) }
                                td { (time(&g.expires_at)) }
                                td { (state(viewer, g)) }
                            }
                        }
                    }
                }
            }
        }
    };
    (status, page("Access", Some(viewer), Section::Access, body)).into_response()
}

/// `tools a, b · tables c · 2h`.
fn asked(a: &Approval) -> String {
    match &a.grant {
        Some(g) => format!(
            "tools {} · tables {} · {}",
            list_or_all(&g.tools),
            list_or_all(&g.tables),
            humantime::format_duration(Duration::from_secs(g.duration_secs))
        ),
        None => String::new(),
    }
}

fn list_or_all(names: &[String]) -> String {
    if names.is_empty() {
        "all".into()
    } else {
        names.join(", ")
    }
}

/// Whether a grant still runs: not revoked, and its end is in the future.
fn running(g: &Grant) -> bool {
    g.revoked_at.is_none()
        && chrono::DateTime::parse_from_rfc3339(&g.expires_at)
            .is_ok_and(|end| end > chrono::Utc::now())
}

/// A grant's state, with the revoke form when it still runs.
fn state(viewer: &Viewer, g: &Grant) -> Markup {
    if let Some(at) = &g.revoked_at {
        let by = g.revoked_by.as_ref().map(|p| p.name()).unwrap_or("someone");
        return html! {
            span.status.revoked { "revoked" } " by " (by) " at " (time(at))
            @if let Some(why) = &g.revoke_reason { ": " (why) }
        };
    }
    if !running(g) {
        return html! { span.status.expired { "expired" } };
    }
    let field = format!("revoke-reason-{}", g.id);
    html! {
        span.status.active { "active" }
        form.revoke method="post" action={ "/console/access/" (g.id) "/revoke" } {
            (csrf_field(viewer))
            label for=(field) { "Reason for revoking" }
            input id=(field) type="text" name="reason" required maxlength="1000";
            button.danger type="submit" { "Revoke" }
        }
    }
}

/// A comma-separated field as names.
fn names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /console/access/request`.
async fn request(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    headers: HeaderMap,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(form): Form<AskForm>,
) -> Response {
    if let Err(refused) = auth::check_form(&web, &viewer, &headers, form.csrf.as_deref()) {
        return refused;
    }
    let asked = GrantBody {
        target: form.target.trim().to_string(),
        tools: names(&form.tools),
        tables: names(&form.tables),
        duration: form.duration.clone(),
        reason: form.reason.clone(),
    };
    let refusal = match crate::ask_for_grant(
        &web.admin,
        viewer.identity.clone(),
        Some(addr.to_string()),
        asked,
    )
    .await
    {
        Ok(approval) => {
            return Redirect::to(&format!(
                "/console/access?done=requested&id={}",
                auth::encode(&approval.id)
            ))
            .into_response();
        }
        Err(GrantRefused::Duration(why)) => (
            StatusCode::BAD_REQUEST,
            format!("Nothing was asked: {why}. Correct it and send again."),
        ),
        Err(GrantRefused::NoRule(why)) => (
            StatusCode::FORBIDDEN,
            format!(
                "Nothing was asked: no rule lets you ask for this access ({why}). Ask for other tools or another target, or ask an administrator which rule allows grants."
            ),
        ),
        Err(GrantRefused::Approvals(e)) => (
            crate::status_of(&e),
            match e {
                ApprovalError::Audit(_) => format!(
                    "Nothing was asked: the audit log cannot record the request right now ({e}). Try again later."
                ),
                e => format!("Nothing was asked: {e}. Correct it and send again."),
            },
        ),
    };
    let (status, text) = refusal;
    render(&web, &viewer, &form, Some(notice("error", &text)), status).await
}

#[derive(Deserialize)]
struct RevokeForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /console/access/{grant}/revoke`.
async fn revoke(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(grant): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Err(refused) = auth::check_form(&web, &viewer, &headers, form.csrf.as_deref()) {
        return refused;
    }
    match web
        .admin
        .approvals
        .revoke(&viewer.identity, &grant, &form.reason)
        .await
    {
        Ok(g) => Redirect::to(&format!(
            "/console/access?done=revoked&id={}",
            auth::encode(&g.id)
        ))
        .into_response(),
        Err(e) => {
            let status = crate::status_of(&e);
            let (title, text) = match &e {
                ApprovalError::GrantNotFound(_) => (
                    "No such grant",
                    format!("There is no grant {grant} that you may revoke."),
                ),
                ApprovalError::Audit(_) => (
                    "Not revoked",
                    format!(
                        "The grant was not revoked: the audit log cannot record it right now ({e}). Try again later."
                    ),
                ),
                _ => ("Not revoked", format!("The grant was not revoked: {e}.")),
            };
            page::problem(status, title, &text, Some(&viewer))
        }
    }
}

fn store_problem(viewer: &Viewer, e: &ApprovalError) -> Response {
    tracing::error!("console: access: {e}");
    page::problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Access unavailable",
        &format!("The approvals store cannot be read: {e}"),
        Some(viewer),
    )
}
