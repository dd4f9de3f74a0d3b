//! The admin API: approvals and just-in-time grants as JSON over HTTP.
//!
//! Served on `gateway.admin_listen`, apart from the front door, so that it can be firewalled
//! to the people who decide. Callers authenticate exactly as they do at the front door (an
//! API key or an OIDC token as a bearer credential): an approver is a named identity, and
//! every decision in the audit log carries it. The API only asks the approvals service;
//! who may decide what is the service's rule, and which rule a grant falls under is the
//! policy's. The CLI (`portcullis approvals`, `portcullis access`) is a client of this API,
//! and the web console will be another.
//!
//! Errors are `{"error": {"code", "message"}}` with a status that says what kind of problem
//! it is: 401 who are you, 403 you may not, 404 no such thing (or not yours to see), 409 it
//! is no longer in a state where that is possible, 400 the request is wrong, 503 the audit
//! log cannot record the step.
#![forbid(unsafe_code)]
// Handlers return early with a ready `Response` as the error; boxing it would only move the
// allocation, on a path that runs when a person clicks a button.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_approvals::{ApprovalError, Approvals, GrantRequest, GrantSpec};
use portcullis_audit::AuditLog;
use portcullis_guard::LiveRules;
use portcullis_identity::Authenticator;
use portcullis_model::{EventType, Identity, Outcome};
use portcullis_policy::Policy;
use serde::Deserialize;
use serde_json::json;

mod evidence;
pub mod readiness;
mod sessions;
pub mod web;

pub use web::{ConsoleSettings, OidcClient, PendingPin, PinFuture, ToolPins};

/// `GET /api/v1/sinks`: each audit sink's delivery state and lag, for the people who may
/// read the audit trail (the same rule as recorded sessions).
async fn sinks_status(State(admin): State<Arc<Admin>>, Caller(identity): Caller) -> Response {
    if let Err(refused) = sessions::may_read(&admin, &identity) {
        return refused;
    }
    Json(json!({ "sinks": admin.sinks.get() })).into_response()
}

/// The largest request body: a reason and a digest, or a grant request.
const MAX_BODY: usize = 64 * 1024;
/// The most records one list returns.
const MAX_LIST: usize = 1000;

/// What the admin API needs from the running gateway.
#[derive(Clone)]
pub struct Admin {
    /// The identities and policy in force (and who may read recordings), which a
    /// configuration reload replaces; each request reads them once.
    pub rules: LiveRules,
    pub approvals: Approvals,
    pub audit: AuditLog,
    /// The data directory, where recorded sessions are read from.
    pub data_dir: PathBuf,
    /// The audit sinks' delivery state (empty when none is configured).
    pub sinks: portcullis_sinks::SinkStatuses,
    /// The OpenMetrics text served at `/metrics` (brought up to date when called).
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The targets' upstreams, checked for `/readyz`.
    pub upstreams: Option<Arc<readiness::UpstreamProbe>>,
    /// The shared control state (`[state] backend = "postgres"`), checked for `/readyz`.
    pub shared_state: Option<portcullis_state::Shared>,
}

impl Admin {
    /// Who the callers may be, as configured now.
    pub fn auth(&self) -> Arc<Authenticator> {
        self.rules.load().auth.clone()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.rules.load().policy.clone()
    }

    /// The groups whose members may read recorded sessions: the approvers named by any
    /// rule, and the break-glass groups. Empty: nobody may (fail closed).
    pub fn recording_readers(&self) -> Vec<String> {
        self.rules.load().recording_readers.clone()
    }
}

/// The admin API's routes, and the web console under `/console` when `console` is given.
/// Serve with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(admin: Admin, console: Option<ConsoleSettings>) -> Result<Router, String> {
    let admin = Arc::new(admin);
    let api = api_router(admin.clone());
    Ok(match console {
        // Nested, the console's "/" answers at `/console` only; `/console/` (the address the
        // demo and the docs give) is routed here, or the admin API would answer it with 404.
        Some(settings) => api
            .nest("/console", web::router(admin, settings)?)
            .route("/console/", get(web::to_inbox)),
        None => api,
    })
}

fn api_router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/approvals", get(list_approvals))
        .route("/api/v1/approvals/{id}", get(show_approval))
        .route("/api/v1/approvals/{id}/approve", post(approve))
        .route("/api/v1/approvals/{id}/deny", post(deny))
        .route("/api/v1/grants", get(list_grants).post(request_grant))
        .route("/api/v1/grants/{id}/revoke", post(revoke_grant))
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/{id}", get(sessions::show))
        .route("/api/v1/sessions/{id}/export", get(sessions::export))
        .route("/api/v1/evidence/sign-offs", post(evidence::sign_off))
        .route("/api/v1/sinks", get(sinks_status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/approvals.md for the admin API",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
}

/// Liveness: the process answers. No credential (probes have none), nothing revealed.
async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response()
}

/// Readiness: whether requests can be taken now. The audit log must be able to record (a
/// request whose event cannot be written is refused, so a gateway that cannot write is not
/// ready: 503). Each target's upstream is checked too, but an unreachable one only makes
/// the answer `degraded`, still 200: every replica shares the upstream, and a load
/// balancer pulling them all would take the healthy targets down with it. (A configured
/// signing key that cannot be loaded fails the start, so it needs no check here.) The
/// answer names the failing check, never its cause (a path, an error text): probes carry
/// no credential, and the cause is in the gateway's own log. It also names the policy
/// version in force (a digest of the rules, nothing of their content), so a deployment can
/// see that a configuration reload took effect.
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let audit_ok = admin.audit.unavailable().is_none();
    let upstreams = match &admin.upstreams {
        Some(probe) => probe.check().await,
        None => Arc::from(Vec::new()),
    };
    // Shared state that cannot be heard is a degradation, not unreadiness: allowed requests
    // go on; holds and grants fail closed until it is back.
    let state_ok = admin
        .shared_state
        .as_ref()
        .map(portcullis_state::Shared::listening);
    let status = match readiness::verdict(!audit_ok, &upstreams) {
        "ready" if state_ok == Some(false) => "degraded",
        status => status,
    };
    let mut checks = json!({
        "audit_log": if audit_ok { "ok" } else { "failing" },
        "checkpoint_signing": if admin.audit.signing().is_some() { "ok" } else { "off" },
        "upstreams": upstreams
            .iter()
            .map(|r| (r.target.clone(), json!({ "kind": r.kind, "status": r.status })))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(ok) = state_ok {
        checks["shared_state"] = json!(if ok { "ok" } else { "reconnecting" });
    }
    let code = if audit_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let policy_version = admin.policy().version().to_string();
    let body = json!({
        "ready": audit_ok,
        "status": status,
        "checks": checks,
        "policy_version": policy_version,
    });
    (code, Json(body)).into_response()
}

/// Prometheus metrics, in the OpenMetrics text format. Without a credential, like the
/// probes: scrapers seldom carry one, and the metrics hold counts by target name, never a
/// caller's identity or a request's content.
async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    match &admin.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "metrics are not served"),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn refused(e: ApprovalError) -> Response {
    let status = status_of(&e);
    error(status, e.code(), &e.to_string())
}

/// The HTTP status that says what kind of refusal an approvals error is.
pub(crate) fn status_of(e: &ApprovalError) -> StatusCode {
    match e {
        ApprovalError::NotFound(_) | ApprovalError::GrantNotFound(_) => StatusCode::NOT_FOUND,
        ApprovalError::NotApprover { .. }
        | ApprovalError::SelfApproval { .. }
        | ApprovalError::NotRevoker { .. } => StatusCode::FORBIDDEN,
        ApprovalError::Decided { .. }
        | ApprovalError::Expired { .. }
        | ApprovalError::AlreadyVoted { .. }
        | ApprovalError::DigestMismatch { .. }
        | ApprovalError::GrantEnded { .. }
        | ApprovalError::AlreadyForwarded(_) => StatusCode::CONFLICT,
        ApprovalError::Invalid(_) => StatusCode::BAD_REQUEST,
        ApprovalError::Audit(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApprovalError::Store(_) | ApprovalError::Notify(_) => {
            tracing::error!("admin API: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// A JSON body, or a 400/413/415 in the API's error shape.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    parsed.map(|Json(t)| t).map_err(|rejection| {
        let status = rejection.status();
        error(status, "invalid", &rejection.body_text())
    })
}

/// The caller, authenticated as at the front door: every handler takes one, so no route
/// answers an unauthenticated request. A failure is recorded like one at the front door.
struct Caller(Identity);

impl FromRequestParts<Arc<Admin>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Caller, Response> {
        let addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string());
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(portcullis_identity::bearer_credential);
        let Some(credential) = credential else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "authentication required: send Authorization: Bearer <API key or OIDC token>",
            ));
        };
        match admin.auth().authenticate(credential).await {
            Ok(identity) => Ok(Caller(identity)),
            Err(e) => {
                let mut ev = admin.audit.event(EventType::AuthFailure, Outcome::Rejected);
                ev.source = addr;
                ev.target = Some("admin-api".into());
                ev.detail = Some(format!("{}: {e}", e.code()));
                if let Err(audit) = admin.audit.record(ev).await {
                    tracing::error!("cannot record an authentication failure: {audit}");
                }
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    &format!("invalid credentials: {e}"),
                ))
            }
        }
    }
}

async fn whoami(Caller(identity): Caller) -> Response {
    Json(json!({ "identity": identity })).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    /// `pending` (default) or `all`.
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_approvals(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "query: status=pending|all, limit=N",
        );
    };
    let pending_only = match query.status.as_deref() {
        None | Some("pending") => true,
        Some("all") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("status={other}: use pending or all"),
            );
        }
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST);
    match admin.approvals.list(&identity, pending_only, limit).await {
        Ok(list) => Json(json!({ "approvals": list })).into_response(),
        Err(e) => refused(e),
    }
}

async fn show_approval(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Response {
    match admin.approvals.get(&identity, &id).await {
        Ok(approval) => Json(approval).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: String,
    /// The approval's `digest`, as the approver was shown it.
    digest: String,
}

async fn decide(
    admin: Arc<Admin>,
    identity: Identity,
    id: String,
    parsed: Result<Json<DecisionBody>, JsonRejection>,
    approve: bool,
) -> Response {
    let decision = match body(parsed) {
        Ok(d) => d,
        Err(r) => return r,
    };
    match admin
        .approvals
        .decide(&identity, &id, approve, &decision.reason, &decision.digest)
        .await
    {
        Ok(approval) => Json(approval).into_response(),
        Err(e) => refused(e),
    }
}

async fn approve(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    parsed: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(admin, identity, id, parsed, true).await
}

async fn deny(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    parsed: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    decide(admin, identity, id, parsed, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    pub(crate) target: String,
    #[serde(default)]
    pub(crate) tools: Vec<String>,
    #[serde(default)]
    pub(crate) tables: Vec<String>,
    /// `30m`, `2h`.
    pub(crate) duration: String,
    pub(crate) reason: String,
}

/// Why a grant request was not taken.
pub(crate) enum GrantRefused {
    /// The duration is not one (`30m`, `2h`).
    Duration(String),
    /// No rule lets this person ask for a grant on that target (and those tools).
    NoRule(String),
    /// The approvals service refused it (bad length, bad names, the log unavailable).
    Approvals(ApprovalError),
}

/// Asks for a time-boxed grant: which rule the grant would be used under decides who
/// approves it and for how long; the approvals service records the request. The admin API
/// and the console's Access page both come here.
pub(crate) async fn ask_for_grant(
    admin: &Admin,
    identity: Identity,
    source: Option<String>,
    asked: GrantBody,
) -> Result<portcullis_approvals::Approval, GrantRefused> {
    let duration: Duration = humantime::parse_duration(asked.duration.trim()).map_err(|e| {
        GrantRefused::Duration(format!(
            "duration {:?} is not a duration like \"30m\" or \"2h\": {e}",
            asked.duration
        ))
    })?;
    // One policy for the rule and the version named: a reload may land meanwhile.
    let policy = admin.policy();
    let (rule, requirement) = policy
        .grant_requirement(&identity, &asked.target, &asked.tools)
        .map_err(GrantRefused::NoRule)?;
    let request = GrantRequest {
        requester: identity,
        source,
        target: asked.target,
        spec: GrantSpec {
            tools: asked.tools,
            tables: asked.tables,
            duration_secs: duration.as_secs(),
        },
        reason: asked.reason,
        rule: rule.to_string(),
        policy_version: policy.version().to_string(),
        requirement,
    };
    admin
        .approvals
        .request_grant(request)
        .await
        .map_err(GrantRefused::Approvals)
}

async fn request_grant(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Caller(identity): Caller,
    parsed: Result<Json<GrantBody>, JsonRejection>,
) -> Response {
    let asked = match body(parsed) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match ask_for_grant(&admin, identity, Some(addr.to_string()), asked).await {
        Ok(approval) => (StatusCode::CREATED, Json(approval)).into_response(),
        Err(GrantRefused::Duration(why)) => error(StatusCode::BAD_REQUEST, "invalid", &why),
        Err(GrantRefused::NoRule(why)) => error(StatusCode::FORBIDDEN, "no_grant_rule", &why),
        Err(GrantRefused::Approvals(e)) => refused(e),
    }
}

async fn list_grants(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = query
        .ok()
        .and_then(|Query(q)| q.limit)
        .unwrap_or(100)
        .clamp(1, MAX_LIST);
    match admin.approvals.grants(&identity, limit).await {
        Ok(list) => Json(json!({ "grants": list })).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

async fn revoke_grant(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    parsed: Result<Json<RevokeBody>, JsonRejection>,
) -> Response {
    let revoke = match body(parsed) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match admin.approvals.revoke(&identity, &id, &revoke.reason).await {
        Ok(grant) => Json(grant).into_response(),
        Err(e) => refused(e),
    }
}
