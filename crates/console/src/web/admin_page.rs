//! Admin: what the people who run the gateway need at a glance, for members of
//! `console.admins` only. Tool pins waiting for acceptance (a tool whose definition changed
//! is withheld until someone accepts it), the targets and rules as `portcullis check-config`
//! explains them (read-only: the configuration file stays the one place they change), and
//! the audit sinks' delivery state and lag.
//!
//! Accepting a pin is checked on the server (admin, Origin, CSRF) whatever the page showed,
//! and binds to the fingerprint the admin was shown: a tool that changed again since the page
//! was rendered is not accepted unseen. The acceptance is recorded as `tool.pin_accepted`
//! (the person's identity, the old and new fingerprints) before the pin changes; should the
//! change then not take, a second event says so.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use portcullis_model::{EventType, Outcome};
use serde::Deserialize;

use super::auth::{self, Viewer};
use super::page::{self, Section, csrf_field, notice, page, time};
use super::{PendingPin, Web};

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/admin", get(show))
        .route("/admin/pins/accept", post(accept))
}

/// The tools waiting for acceptance.
async fn pending_pins(web: &Web) -> Result<Vec<PendingPin>, String> {
    web.settings.pins.pending().await
}

/// The 403 page for someone who is not a console admin.
fn not_admin(web: &Web, viewer: &Viewer) -> Response {
    page::problem(
        StatusCode::FORBIDDEN,
        "Admins only",
        &format!(
            "This part of the console is for console admins: members of {} (console.admins in the gateway's configuration). Nothing was shown or changed.",
            if web.settings.admins.is_empty() {
                "no group: console.admins is empty".to_string()
            } else {
                web.settings.admins.join(", ")
            }
        ),
        Some(viewer),
    )
}

#[derive(Deserialize)]
struct ShowQuery {
    accepted: Option<String>,
    target: Option<String>,
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

async fn show(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Query(query): Query<ShowQuery>,
) -> Response {
    if !viewer.is_admin {
        return not_admin(&web, &viewer);
    }
    let pending = pending_pins(&web).await;
    // Said only when true: a link cannot make the page claim an acceptance that did not happen.
    let message = match (&query.accepted, &query.target, &pending) {
        (Some(tool), Some(target), Ok(list))
            if !list.iter().any(|p| &p.tool == tool && &p.target == target) =>
        {
            Some(notice(
                "ok",
                &format!(
                    "Accepted the new definition of {tool} on {target}: the gateway offers it again."
                ),
            ))
        }
        _ => None,
    };
    let sinks = web.admin.sinks.get();
    let body = html! {
        @if let Some(m) = message { (m) }
        section aria-labelledby="pins" {
            h2 #pins { "Tool pins awaiting acceptance" }
            p { "A tool whose description or schema changed since it was first seen is withheld from agents until someone accepts the new definition. Accept only a change you have checked: the tool.pin_mismatch event in the audit log names both fingerprints, and Accept takes exactly the definition shown here (if it changed again meanwhile, nothing is accepted)." }
            @match &pending {
                Err(e) => { (notice("error", &format!("The pin store cannot be read: {e}"))) }
                Ok(list) if list.is_empty() => { p.empty { "No changed tools wait." } }
                Ok(list) => {
                    table.list {
                        thead { tr {
                            th scope="col" { "Target" }
                            th scope="col" { "Tool" }
                            th scope="col" { "Pinned" }
                            th scope="col" { "Changed to" }
                            th scope="col" { "Action" }
                        } }
                        tbody {
                            @for pin in list {
                                tr data-pin={ (pin.target) "/" (pin.tool) } {
                                    td { (pin.target) }
                                    td { code { (pin.tool) } }
                                    td { code title=(pin.pinned) { (short(&pin.pinned)) "…" } }
                                    td { code title=(pin.pending) { (short(&pin.pending)) "…" } }
                                    td {
                                        form method="post" action="/console/admin/pins/accept" {
                                            (csrf_field(&viewer))
                                            input type="hidden" name="target" value=(pin.target);
                                            input type="hidden" name="tool" value=(pin.tool);
                                            input type="hidden" name="fingerprint" value=(pin.pending);
                                            button.primary type="submit" aria-label={ "Accept the new definition of " (pin.tool) " on " (pin.target) } { "Accept" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="sinks" {
            h2 #sinks { "Audit sinks" }
            @if sinks.is_empty() {
                p.empty { "No audit sinks are configured: the log stays on this machine only." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Sink" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Destination" }
                        th scope="col" { "State" }
                        th scope="col" { "Delivered" }
                        th scope="col" { "Lag" }
                        th scope="col" { "Last delivery" }
                        th scope="col" { "Last error" }
                        th scope="col" { "Rejected" }
                    } }
                    tbody {
                        @for s in &sinks {
                            tr data-sink=(s.name) {
                                td { (s.name) }
                                td { (s.kind) }
                                td { code { (s.destination) } }
                                td { span.status.(s.state.as_str()) { (s.state.as_str()) } }
                                td { (s.delivered) " of " (s.head) }
                                td { (s.lag_events) " events · " (format!("{:.1}", s.lag_seconds)) " s" }
                                td { @if let Some(t) = &s.delivered_at { (time(t)) } @else { "never" } }
                                td {
                                    @if let Some(e) = &s.last_error {
                                        (e) @if let Some(t) = &s.last_error_at { " (" (time(t)) ")" }
                                    } @else { "none" }
                                }
                                td { (s.rejected) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="config" {
            h2 #config { "Targets and rules" }
            p { "As " code { "portcullis check-config" } " explains the running configuration. Change them in the configuration file." }
            pre.config { (web.settings.explanation) }
        }
    };
    page("Admin", Some(&viewer), Section::Admin, body).into_response()
}

#[derive(Deserialize)]
struct AcceptForm {
    csrf: Option<String>,
    #[serde(default)]
    target: String,
    #[serde(default)]
    tool: String,
    /// The changed definition's fingerprint, as the page showed it.
    #[serde(default)]
    fingerprint: String,
}

/// `POST /console/admin/pins/accept`.
async fn accept(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> Response {
    if let Err(refused) = auth::check_form(&web, &viewer, &headers, form.csrf.as_deref()) {
        return refused;
    }
    if !viewer.is_admin {
        return not_admin(&web, &viewer);
    }
    if form.target.is_empty() || form.tool.is_empty() {
        return page::problem(
            StatusCode::BAD_REQUEST,
            "Nothing accepted",
            "Accepting a tool needs its target and its name: use the Accept button on the Admin page.",
            Some(&viewer),
        );
    }
    // Refuse before changing anything when the log is known to be down: the acceptance
    // must be on the record.
    if let Some(why) = web.admin.audit.unavailable() {
        return page::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Nothing accepted",
            &format!(
                "The audit log cannot record an acceptance right now ({why}), so the tool stays withheld. Try again later."
            ),
            Some(&viewer),
        );
    }
    if form.fingerprint.is_empty() {
        return page::problem(
            StatusCode::BAD_REQUEST,
            "Nothing accepted",
            "Accepting a tool needs the fingerprint of the definition you checked: use the Accept button on the Admin page.",
            Some(&viewer),
        );
    }
    // What is accepted is on the record before the pin changes.
    let pending = pending_pins(&web).await;
    let old = match pending {
        Ok(list) => match list
            .into_iter()
            .find(|p| p.target == form.target && p.tool == form.tool)
        {
            Some(p) if p.pending == form.fingerprint => p.pinned,
            Some(p) => {
                return page::problem(
                    StatusCode::CONFLICT,
                    "Nothing accepted",
                    &format!(
                        "The definition of {} on {} changed again since the page was shown (now {}…), so nothing was accepted. Reload the Admin page and check the new change.",
                        form.tool,
                        form.target,
                        short(&p.pending)
                    ),
                    Some(&viewer),
                );
            }
            None => {
                return page::problem(
                    StatusCode::CONFLICT,
                    "Nothing accepted",
                    &format!(
                        "No changed definition of {} on {} waits for acceptance (someone may have accepted it already). Reload the Admin page to see what waits.",
                        form.tool, form.target
                    ),
                    Some(&viewer),
                );
            }
        },
        Err(e) => {
            return page::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Nothing accepted",
                &format!("The pin store cannot be read: {e}"),
                Some(&viewer),
            );
        }
    };
    let who = viewer
        .identity
        .display_name
        .clone()
        .unwrap_or_else(|| viewer.identity.subject.clone());
    let new = form.fingerprint.clone();
    let mut ev = web
        .admin
        .audit
        .event(EventType::ToolPinAccepted, Outcome::Info);
    ev.identity = Some(viewer.identity.clone());
    ev.target = Some(form.target.clone());
    ev.resource = Some(form.tool.clone());
    ev.detail = Some(format!(
        "accepted by {who} in the web console (session {}): pin {old} replaced by {new}",
        viewer.handle
    ));
    if let Err(e) = web.admin.audit.record(ev).await {
        return page::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Nothing accepted",
            &format!(
                "The audit log cannot record the acceptance ({e}), so the tool stays withheld. Try again later."
            ),
            Some(&viewer),
        );
    }
    let accepted = web
        .settings
        .pins
        .accept(&form.target, &form.tool, &new)
        .await;
    if let Err(e) = accepted {
        // The acceptance is on the record but did not take (the tool changed in the moment
        // between): say so in the log too, so the record is not read as a change that happened.
        let mut ev = web
            .admin
            .audit
            .event(EventType::ToolPinAccepted, Outcome::Failed);
        ev.identity = Some(viewer.identity.clone());
        ev.target = Some(form.target.clone());
        ev.resource = Some(form.tool.clone());
        ev.detail = Some(format!(
            "the acceptance by {who} just recorded did not take: {e}; the tool stays withheld"
        ));
        if let Err(audit) = web.admin.audit.record(ev).await {
            tracing::error!("cannot record that a pin acceptance did not take: {audit}");
        }
        return page::problem(
            StatusCode::CONFLICT,
            "Nothing accepted",
            &format!("{e}. Reload the Admin page to see what waits."),
            Some(&viewer),
        );
    }
    Redirect::to(&format!(
        "/console/admin?accepted={}&target={}",
        auth::encode(&form.tool),
        auth::encode(&form.target)
    ))
    .into_response()
}
