//! Signing in and out.
//!
//! **OIDC** (the way in): the authorization code flow with PKCE (RFC 7636, S256), driven by
//! the `oauth2` crate. A sign-in starts a *flow*, kept on the server and named by a short-lived
//! `__Host-` cookie: the PKCE verifier, the `state` sent to the IdP, the `nonce` the ID token
//! must carry, and where to go afterwards. The callback accepts only the flow's own `state`
//! (constant-time), exchanges the code with the verifier at the token endpoint, and hands the
//! ID token to the identity crate, which verifies it with the issuer's keys, for our client id
//! and nonce, and names the person with the same groups claim as API callers. A flow is used
//! once and lives ten minutes.
//!
//! **API key** (for the demo, when `console.api_key_sign_in` allows it): a human identity's
//! key pasted into a form, checked like a bearer credential, throttled per source like the
//! front door. Agents and services never sign in to the console.
//!
//! Each sign-in, refused sign-in and sign-out is an audit event.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::html;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use portcullis_model::{EventType, Identity, IdentityKind, Outcome};
use serde::{Deserialize, Serialize};

use super::Web;
use super::auth::{self, KeptDecision, MaybeViewer, Method, Viewer, random_token, same};
use super::page::{self, Section, notice, page};

/// The flow cookie: names a sign-in in progress.
const FLOW_COOKIE: &str = "__Host-portcullis-sign-in";
/// How long a sign-in may take, from the sign-in page to the callback.
const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The most sign-ins in progress kept at once (anyone can start one); the oldest goes first.
const MAX_FLOWS: usize = 10_000;
/// The most sign-ins in progress from one address (a network, for IPv6: see
/// `portcullis_limits::source_of`); past it, that address's oldest goes.
const MAX_FLOWS_PER_SOURCE: usize = 32;
/// The largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// A sign-in in progress.
struct Flow {
    /// The `state` sent to the IdP, or the API key form's hidden field.
    state: String,
    nonce: String,
    /// The PKCE verifier, once the browser was sent to the IdP.
    verifier: Option<String>,
    /// A console path to return to.
    next: String,
    kept: Option<KeptDecision>,
    created: Instant,
    /// Who started it: one address cannot crowd out everyone else's sign-ins.
    source: IpAddr,
}

/// Sign-ins in progress, by the flow cookie's value.
#[derive(Default)]
pub(crate) struct Flows {
    table: Mutex<HashMap<String, Flow>>,
}

impl Flows {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a flow for a browser at `source`; returns its cookie value and its `state`.
    fn start(&self, source: IpAddr, next: String, kept: Option<KeptDecision>) -> (String, String) {
        let id = random_token();
        let state = random_token();
        let source = portcullis_limits::source_of(source);
        let mut table = self.table();
        table.retain(|_, f| f.created.elapsed() < FLOW_LIFETIME);
        // An address starting sign-ins without end replaces its own, never others'.
        if table.values().filter(|f| f.source == source).count() >= MAX_FLOWS_PER_SOURCE
            && let Some(oldest) = table
                .iter()
                .filter(|(_, f)| f.source == source)
                .min_by_key(|(_, f)| f.created)
                .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
        if table.len() >= MAX_FLOWS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, f)| f.created)
                .map(|(k, _)| k.clone())
        {
            table.remove(&oldest);
        }
        table.insert(
            id.clone(),
            Flow {
                state: state.clone(),
                nonce: random_token(),
                verifier: None,
                next,
                kept,
                created: Instant::now(),
                source,
            },
        );
        (id, state)
    }

    /// Takes the flow (a flow is used once), if it is still alive.
    fn take(&self, id: &str) -> Option<Flow> {
        self.table()
            .remove(id)
            .filter(|f| f.created.elapsed() < FLOW_LIFETIME)
    }

    /// Runs `f` on a live flow.
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Flow) -> T) -> Option<T> {
        let mut table = self.table();
        table
            .get_mut(id)
            .filter(|flow| flow.created.elapsed() < FLOW_LIFETIME)
            .map(f)
    }
}

fn flow_cookie(value: String) -> Cookie<'static> {
    Cookie::build((FLOW_COOKIE, value))
        .path("/")
        .secure(true)
        .http_only(true)
        // Lax: the IdP's redirect back is a top-level GET navigation from another site.
        .same_site(SameSite::Lax)
        .build()
}

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/sign-in", get(sign_in_page))
        .route("/auth/oidc", get(start_oidc))
        .route("/auth/callback", get(callback))
        .route("/auth/api-key", post(api_key_sign_in))
        .route("/sign-out", post(sign_out))
}

/// Only a console path is a place to return to: never another site (`//evil`, `https:`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic())
                && n.len() < 2048 =>
        {
            n.to_string()
        }
        _ => "/console/approvals".to_string(),
    }
}

#[derive(Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
    expired: Option<String>,
    signed_out: Option<String>,
}

async fn sign_in_page(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    MaybeViewer(viewer): MaybeViewer,
    jar: CookieJar,
    Query(query): Query<SignInQuery>,
) -> Response {
    if viewer.is_ok() {
        // Already signed in: nothing to do here.
        return Redirect::to(&safe_next(query.next.as_deref())).into_response();
    }
    let message = if query.expired.is_some() {
        Some((
            "warning",
            "Your session ended (it timed out). Sign in again to go on.",
        ))
    } else if query.signed_out.is_some() {
        Some((
            "ok",
            "You are signed out of the console. Your identity provider may still have you signed in: sign out there too on a shared computer.",
        ))
    } else {
        None
    };
    sign_in_response(
        &web,
        peer.ip(),
        jar,
        safe_next(query.next.as_deref()),
        None,
        message,
        StatusCode::OK,
    )
}

/// The sign-in page, with a new flow (and its cookie). `kept` is a decision to show again
/// after sign-in.
pub(crate) fn sign_in_response(
    web: &Web,
    peer: IpAddr,
    jar: CookieJar,
    next: String,
    kept: Option<KeptDecision>,
    message: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    let kept_reason = kept.as_ref().map(|k| k.reason.clone());
    let (flow, state) = web.flows.start(peer, next, kept);
    let jar = jar.add(flow_cookie(flow));
    let settings = &web.settings;
    let body = html! {
        @if let Some((kind, text)) = message { (notice(kind, text)) }
        @if let Some(reason) = &kept_reason {
            div.notice.warning role="status" data-testid="kept-reason" {
                p { "Your session ended before your decision was recorded: nothing was decided. After you sign in, the approval opens again with the reason you typed, for you to submit:" }
                blockquote { (reason) }
            }
        }
        @if let Some(oidc) = &settings.oidc {
            section aria-labelledby="sso" {
                h2 #sso { "Company sign-in" }
                p { "Sign in with your identity provider (" (oidc.issuer) ")." }
                p { a.button.primary href="/console/auth/oidc" data-testid="sign-in-oidc" { "Sign in with your identity provider" } }
            }
        }
        @if settings.api_key_sign_in {
            section aria-labelledby="apikey" {
                h2 #apikey { "API key" }
                p { "For people with a human identity's API key (the demo's finance lead). Agents and services cannot sign in here." }
                form method="post" action="/console/auth/api-key" {
                    input type="hidden" name="state" value=(state);
                    label for="api_key" { "API key" }
                    input #api_key type="password" name="api_key" autocomplete="off" required spellcheck="false";
                    button.primary type="submit" { "Sign in" }
                }
            }
        }
    };
    (status, jar, page("Sign in", None, Section::None, body)).into_response()
}

/// `GET /console/auth/oidc`: sends the browser to the IdP, with PKCE, `state` and `nonce`.
async fn start_oidc(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Query(query): Query<SignInQuery>,
) -> Response {
    let Some(oidc) = web.settings.oidc.clone() else {
        return page::problem(
            StatusCode::NOT_FOUND,
            "Not configured",
            "Sign-in with an identity provider is not configured ([console.oidc]).",
            None,
        );
    };
    let endpoints = match web.admin.auth().sign_in_endpoints(&oidc.issuer).await {
        Ok(endpoints) => endpoints,
        Err(why) => {
            tracing::warn!(issuer = %oidc.issuer, "console sign-in: {why}");
            return idp_down(&oidc.issuer, &why);
        }
    };
    let client = match client(&web, &oidc, &endpoints.authorization, &endpoints.token) {
        Ok(client) => client,
        Err(why) => return idp_down(&oidc.issuer, &why),
    };
    // Reuse the flow the sign-in page started (it may keep a decision), or start one.
    let existing = jar.get(FLOW_COOKIE).map(|c| c.value().to_string());
    let (flow_id, jar) = match existing.filter(|id| web.flows.with(id, |_| ()).is_some()) {
        Some(id) => (id, jar),
        None => {
            let (id, _) = web
                .flows
                .start(peer.ip(), safe_next(query.next.as_deref()), None);
            let jar = jar.add(flow_cookie(id.clone()));
            (id, jar)
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state = random_token();
    let Some(nonce) = web.flows.with(&flow_id, |flow| {
        flow.state = state.clone();
        flow.verifier = Some(verifier.secret().clone());
        flow.nonce.clone()
    }) else {
        return page::problem(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in took too long. Start again.",
            None,
        );
    };
    let mut request = client
        .authorize_url(|| CsrfToken::new(state))
        .add_extra_param("nonce", nonce)
        .set_pkce_challenge(challenge);
    for scope in &oidc.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, _) = request.url();
    (jar, Redirect::to(url.as_str())).into_response()
}

fn idp_down(issuer: &str, why: &str) -> Response {
    page::problem(
        StatusCode::BAD_GATEWAY,
        "Identity provider unavailable",
        &format!(
            "The identity provider {issuer} cannot be reached or answered wrongly, so you cannot sign in with it right now ({why}). Nothing else is affected: held requests keep waiting, and the gateway keeps running. Try again in a moment."
        ),
        None,
    )
}

/// The ID token in a token endpoint answer (OIDC Core 3.1.3.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default)]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OidcCodeClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(
    web: &Web,
    oidc: &super::OidcClient,
    authorization: &str,
    token: &str,
) -> Result<OidcCodeClient, String> {
    let mut client = oauth2::Client::new(ClientId::new(oidc.client_id.clone()))
        .set_auth_uri(AuthUrl::new(authorization.to_string()).map_err(|e| e.to_string())?)
        .set_token_uri(TokenUrl::new(token.to_string()).map_err(|e| e.to_string())?)
        .set_redirect_uri(
            RedirectUrl::new(web.url("/console/auth/callback")).map_err(|e| e.to_string())?,
        );
    if let Some(secret) = &oidc.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.clone()));
    }
    Ok(client)
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/auth/callback`: the IdP sends the browser back with a code (or an error).
async fn callback(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let jar_without_flow = jar.clone().remove(auth::removal(FLOW_COOKIE));
    let Some(oidc) = web.settings.oidc.clone() else {
        return page::problem(
            StatusCode::NOT_FOUND,
            "Not configured",
            "Sign-in with an identity provider is not configured.",
            None,
        );
    };
    let flow = jar
        .get(FLOW_COOKIE)
        .and_then(|cookie| web.flows.take(cookie.value()));
    let refuse = |why: &str| {
        let web = web.clone();
        let why = why.to_string();
        let jar = jar_without_flow.clone();
        async move {
            record_refusal(&web, peer, "oidc", &why).await;
            (
                jar,
                page::problem(
                    StatusCode::BAD_REQUEST,
                    "Sign-in refused",
                    &format!("{why} Nothing was signed in. Start again from the sign-in page."),
                    None,
                ),
            )
                .into_response()
        }
    };
    let Some(flow) = flow else {
        return refuse(
            "This sign-in was not started from this browser, or took longer than ten minutes.",
        )
        .await;
    };
    let (Some(verifier), Some(state)) = (flow.verifier.clone(), query.state.as_deref()) else {
        return refuse(
            "The answer from the identity provider has no state, or the sign-in never went there.",
        )
        .await;
    };
    // The state proves the answer is to this browser's request, not one an attacker
    // started and had this browser finish.
    if !same(state, &flow.state) {
        return refuse(
            "The answer's state does not match this browser's sign-in request (state mismatch).",
        )
        .await;
    }
    if let Some(error) = &query.error {
        let description = query
            .error_description
            .as_deref()
            .unwrap_or("no description");
        return refuse(&format!(
            "The identity provider refused the sign-in: {error} ({description})."
        ))
        .await;
    }
    let Some(code) = query.code.clone() else {
        return refuse("The answer from the identity provider has no authorization code.").await;
    };
    let endpoints = match web.admin.auth().sign_in_endpoints(&oidc.issuer).await {
        Ok(endpoints) => endpoints,
        Err(why) => return idp_down(&oidc.issuer, &why),
    };
    let client = match client(&web, &oidc, &endpoints.authorization, &endpoints.token) {
        Ok(client) => client,
        Err(why) => return idp_down(&oidc.issuer, &why),
    };
    let http = web.http.clone();
    let send = move |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move { send_bounded(&http, request).await }
    };
    let tokens = match client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&send)
        .await
    {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(issuer = %oidc.issuer, "console sign-in: token exchange failed: {e}");
            return refuse(&format!(
                "The identity provider did not exchange the code for tokens ({}).",
                describe_token_error(&e)
            ))
            .await;
        }
    };
    let Some(id_token) = tokens.extra_fields().id_token.as_deref() else {
        return refuse(
            "The identity provider returned no ID token (is \"openid\" among the scopes?).",
        )
        .await;
    };
    let identity = match web
        .admin
        .auth()
        .authenticate_id_token(id_token, &oidc.issuer, &oidc.client_id, &flow.nonce)
        .await
    {
        Ok(identity) => identity,
        Err(e) => return refuse(&format!("The ID token was refused: {e}.")).await,
    };
    if identity.kind != IdentityKind::Human {
        return refuse(
            "The identity provider names a non-human identity; the console is for people.",
        )
        .await;
    }
    signed_in(
        &web,
        jar_without_flow,
        identity,
        Method::Oidc,
        flow.next,
        flow.kept,
    )
    .await
}

/// A token endpoint error without the response body (which may echo the code).
fn describe_token_error<RE: std::error::Error + 'static>(
    e: &oauth2::RequestTokenError<RE, BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(answer) => format!("{}", answer.error()),
        oauth2::RequestTokenError::Request(e) => format!("request failed: {e}"),
        oauth2::RequestTokenError::Parse(e, _) => format!("unreadable answer: {e}"),
        oauth2::RequestTokenError::Other(e) => e.clone(),
    }
}

/// The token request, through the console's client (no redirects, bounded time and size).
async fn send_bounded(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TokenHttpError> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(TokenHttpError::Http)?;
    let mut out = oauth2::HttpResponse::new(Vec::new());
    *out.status_mut() = response.status();
    *out.headers_mut() = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(TokenHttpError::Http)? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(TokenHttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    *out.body_mut() = body;
    Ok(out)
}

#[derive(Debug)]
enum TokenHttpError {
    Http(reqwest::Error),
    TooLarge,
}

impl std::fmt::Display for TokenHttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenHttpError::Http(e) => write!(f, "{e}"),
            TokenHttpError::TooLarge => {
                write!(f, "the answer is larger than {MAX_TOKEN_RESPONSE} bytes")
            }
        }
    }
}

impl std::error::Error for TokenHttpError {}

#[derive(Deserialize)]
struct ApiKeyForm {
    state: Option<String>,
    api_key: String,
}

/// `POST /console/auth/api-key`.
async fn api_key_sign_in(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<ApiKeyForm>,
) -> Response {
    if let Err(refused) = auth::check_origin(&web, &headers, None) {
        return refused;
    }
    if !web.settings.api_key_sign_in {
        return page::problem(
            StatusCode::NOT_FOUND,
            "Not configured",
            "Sign-in with an API key is not enabled (console.api_key_sign_in).",
            None,
        );
    }
    let flow = jar
        .get(FLOW_COOKIE)
        .and_then(|cookie| web.flows.take(cookie.value()));
    let jar = jar.remove(auth::removal(FLOW_COOKIE));
    let Some(flow) = flow.filter(|f| form.state.as_deref().is_some_and(|s| same(s, &f.state)))
    else {
        record_refusal(
            &web,
            peer,
            "api-key",
            "the sign-in form was not this browser's, or is older than ten minutes",
        )
        .await;
        return sign_in_response(
            &web,
            peer.ip(),
            jar,
            "/console/approvals".into(),
            None,
            Some((
                "error",
                "This sign-in form expired or was not opened in this browser. Try again.",
            )),
            StatusCode::BAD_REQUEST,
        );
    };
    // Each refusal: what the log records, what the person is told, and the status.
    let auth = web.admin.auth();
    let throttle = auth.failures();
    let checked = if let portcullis_limits::Admission::Throttled { retry_after } =
        throttle.admit(peer.ip())
    {
        Err((
            "too many failed sign-ins from this address".to_string(),
            format!(
                "Too many failed sign-ins from your address; try again in {} seconds.",
                retry_after.as_secs().max(1)
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ))
    } else {
        match auth.authenticate(form.api_key.trim()).await {
            Ok(identity) if identity.kind == IdentityKind::Human => Ok(identity),
            Ok(identity) => Err((
                format!("{} is not a human identity", identity.subject),
                "That key belongs to an agent or a service; the console is for people.".into(),
                StatusCode::FORBIDDEN,
            )),
            Err(e) => {
                throttle.failed(peer.ip());
                Err((
                    format!("{}: {e}", e.code()),
                    "Sign-in refused: that is not a valid API key of this gateway.".into(),
                    StatusCode::UNAUTHORIZED,
                ))
            }
        }
    };
    match checked {
        Ok(identity) => signed_in(&web, jar, identity, Method::ApiKey, flow.next, flow.kept).await,
        Err((why, told, status)) => {
            record_refusal(&web, peer, "api-key", &why).await;
            sign_in_response(
                &web,
                peer.ip(),
                jar,
                flow.next,
                flow.kept,
                Some(("error", &told)),
                status,
            )
        }
    }
}

async fn record_refusal(web: &Web, peer: SocketAddr, method: &str, why: &str) {
    let mut ev = web
        .admin
        .audit
        .event(EventType::ConsoleSignIn, Outcome::Rejected);
    ev.source = Some(peer.to_string());
    ev.target = Some("console".into());
    ev.action = Some(format!("sign-in {method}"));
    ev.detail = Some(format!("console sign-in refused: {why}"));
    if let Err(e) = web.admin.audit.record(ev).await {
        tracing::error!("cannot record a refused console sign-in: {e}");
    }
}

/// Starts the session: recorded first (no session the log does not know of), then the cookie.
async fn signed_in(
    web: &Web,
    jar: CookieJar,
    identity: Identity,
    method: Method,
    next: String,
    kept: Option<KeptDecision>,
) -> Response {
    let back_to = match &kept {
        Some(k) => format!("/console/approvals/{}", k.approval),
        None => next,
    };
    let (cookie, handle) = match web.sessions.create(identity.clone(), method, kept).await {
        Ok(created) => created,
        Err(e) => {
            tracing::error!("cannot store a console session: {e}");
            return page::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in not stored",
                &format!(
                    "Your session could not be stored, so you are not signed in: {e}. Try again later."
                ),
                None,
            );
        }
    };
    let mut ev = web
        .admin
        .audit
        .event(EventType::ConsoleSignIn, Outcome::Success);
    ev.identity = Some(identity);
    ev.target = Some("console".into());
    ev.action = Some(format!("sign-in {}", method.as_str()));
    ev.resource = Some(handle.clone());
    ev.detail = Some(format!(
        "signed in to the console with {} (session {handle})",
        method.as_str()
    ));
    if let Err(e) = web.admin.audit.record(ev).await {
        tracing::error!("cannot record a console sign-in: {e}");
        return page::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Audit log unavailable",
            &format!("The audit log cannot record your sign-in, so you are not signed in: {e}"),
            None,
        );
    }
    (
        jar.add(auth::session_cookie(cookie)),
        Redirect::to(&back_to),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignOutForm {
    csrf: Option<String>,
}

/// `POST /console/sign-out`: ends the session on the server; the cookie no longer works,
/// even if a copy of it is replayed.
async fn sign_out(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SignOutForm>,
) -> Response {
    if let Err(refused) = auth::check_form(&web, &viewer, &headers, form.csrf.as_deref()) {
        return refused;
    }
    if let Err(e) = web.sessions.end(&viewer).await {
        // The session may still work through other replicas: do not claim it ended.
        tracing::error!("cannot end a console session: {e}");
        return page::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not signed out",
            &format!("Your session could not be ended ({e}), so it may still work. Try again."),
            Some(&viewer),
        );
    }
    auth::record_sign_out(&web, viewer.identity.clone(), &viewer.handle, "signed out").await;
    (
        jar.remove(auth::removal(auth::SESSION_COOKIE)),
        Redirect::to("/console/sign-in?signed_out=1"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(
            safe_next(Some("/console/sessions?who=dana")),
            "/console/sessions?who=dana"
        );
        for bad in [
            None,
            Some("//evil.example/console/"),
            Some("https://evil.example/console/"),
            Some("/console\\..\\evil"),
            Some("/console/x\r\nSet-Cookie: a=b"),
            Some("/console/\u{7f}"),
            Some("/console/é"),
            Some("/api/v1/approvals"),
        ] {
            assert_eq!(safe_next(bad), "/console/approvals", "{bad:?}");
        }
    }
}
