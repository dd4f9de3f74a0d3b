//! Console sessions: the server keeps who is signed in; the browser keeps a random key.
//!
//! The cookie holds 32 random bytes (base64url); the server stores only their SHA-256, so the
//! session table cannot be turned back into working cookies. A session ends when signed out,
//! after `idle_timeout` without a request, or `absolute_timeout` after sign-in, whichever is
//! first; an ended key is removed and never works again. Each session has its own CSRF token,
//! which every form carries and every POST must quote, and POSTs must also come from the
//! console's own origin.
//!
//! One gateway keeps its sessions in memory (a restart signs everyone out); replicas sharing
//! state (`[state] backend = "postgres"`) keep them in the shared database, so a browser
//! signed in through one replica is signed in on all (see [`super::shared_sessions`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_model::{EventType, Identity, Outcome};
use portcullis_state::Shared;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::Web;
use super::page;
use super::shared_sessions::{NewSession, SharedSessions};

/// The session cookie. `__Host-`: only set by this host, over a secure context, for path
/// `/`, so no sibling domain or path can plant or shadow it.
pub(crate) const SESSION_COOKIE: &str = "__Host-portcullis-console";

/// The most sessions kept at once; signing in past it ends the oldest.
const MAX_SESSIONS: usize = 10_000;
/// The most sessions one person has at once (browsers, devices); past it their oldest ends.
const MAX_SESSIONS_PER_PERSON: usize = 16;

/// Sent by the console's script on its background refreshes, which do not count as the
/// person being active.
pub(crate) const BACKGROUND_HEADER: &str = "x-portcullis-background";

/// A random token: 32 bytes, base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Equal, in time that does not depend on where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// How someone signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Oidc,
    ApiKey,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Oidc => "oidc",
            Method::ApiKey => "api-key",
        }
    }
}

/// A decision someone had typed when their session ended: kept through sign-in so the reason
/// is not lost, and shown again for them to submit (never submitted for them).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptDecision {
    pub(crate) approval: String,
    pub(crate) approve: bool,
    pub(crate) reason: String,
}

#[derive(Clone)]
struct Session {
    identity: Identity,
    csrf: String,
    /// A short public name for the session in audit events (never the cookie).
    handle: String,
    method: Method,
    created: Instant,
    last_seen: Instant,
    kept: Option<KeptDecision>,
}

/// The signed-in person on a request.
#[derive(Clone)]
pub(crate) struct Viewer {
    pub(crate) identity: Identity,
    pub(crate) csrf: String,
    pub(crate) handle: String,
    pub(crate) is_admin: bool,
    /// The hash of the cookie, to end or update this session.
    key: [u8; 32],
}

/// Why a cookie did not find a session.
pub(crate) enum Ended {
    /// No cookie, or one we never issued or already ended.
    Unknown,
    /// The session timed out just now (idle or absolute); who it was, for the audit event.
    TimedOut {
        identity: Identity,
        handle: String,
        why: &'static str,
    },
}

pub(crate) struct Sessions {
    store: Store,
    idle: Duration,
    absolute: Duration,
}

enum Store {
    Memory(Mutex<HashMap<[u8; 32], Session>>),
    Shared(SharedSessions),
}

impl Sessions {
    /// Sessions in memory, or in the shared state when given.
    pub(crate) fn new(idle: Duration, absolute: Duration, shared: Option<Shared>) -> Sessions {
        Sessions {
            store: match shared {
                Some(shared) => Store::Shared(SharedSessions::new(shared, idle, absolute)),
                None => Store::Memory(Mutex::new(HashMap::new())),
            },
            idle,
            absolute,
        }
    }

    fn table(&self) -> Option<std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>>> {
        match &self.store {
            Store::Memory(table) => Some(table.lock().unwrap_or_else(|e| e.into_inner())),
            Store::Shared(_) => None,
        }
    }

    /// A new session for `identity`: the cookie value to set, and the session's public
    /// handle; or why the shared state could not store it.
    pub(crate) async fn create(
        &self,
        identity: Identity,
        method: Method,
        kept: Option<KeptDecision>,
    ) -> Result<(String, String), String> {
        let cookie = random_token();
        let handle = format!("cs_{}", &hex::encode(key_of(&cookie))[..16]);
        let Some(mut table) = self.table() else {
            let Store::Shared(shared) = &self.store else {
                unreachable!("not in memory");
            };
            let new = NewSession {
                key: key_of(&cookie),
                handle: &handle,
                identity: &identity,
                csrf: &random_token(),
                method,
                kept: kept.as_ref(),
            };
            shared
                .create(new, (MAX_SESSIONS_PER_PERSON, MAX_SESSIONS))
                .await?;
            return Ok((cookie, handle));
        };
        let now = Instant::now();
        table.retain(|_, s| self.alive(s, now).is_ok());
        // One person signing in again and again ends their own oldest sessions, not others'.
        let same_person = |s: &Session| {
            s.identity.issuer == identity.issuer && s.identity.subject == identity.subject
        };
        if table.values().filter(|s| same_person(s)).count() >= MAX_SESSIONS_PER_PERSON
            && let Some(oldest) = table
                .iter()
                .filter(|(_, s)| same_person(s))
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
        {
            table.remove(&oldest);
        }
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            table.remove(&oldest);
        }
        table.insert(
            key_of(&cookie),
            Session {
                identity,
                csrf: random_token(),
                handle: handle.clone(),
                method,
                created: now,
                last_seen: now,
                kept,
            },
        );
        Ok((cookie, handle))
    }

    fn alive(&self, session: &Session, now: Instant) -> Result<(), &'static str> {
        if now.duration_since(session.created) >= self.absolute {
            Err("the session reached its absolute lifetime")
        } else if now.duration_since(session.last_seen) >= self.idle {
            Err("the session was idle too long")
        } else {
            Ok(())
        }
    }

    /// The session of `cookie`, or why there is none. `touch`: a person's request, which
    /// restarts the idle clock (a page's own background refresh does not).
    pub(crate) async fn get(&self, cookie: &str, web: &Web, touch: bool) -> Result<Viewer, Ended> {
        let key = key_of(cookie);
        let Some(mut table) = self.table() else {
            let Store::Shared(shared) = &self.store else {
                unreachable!("not in memory");
            };
            let live = shared.get(key, touch).await?;
            return Ok(Viewer {
                is_admin: web.is_admin(&live.identity),
                identity: live.identity,
                csrf: live.csrf,
                handle: live.handle,
                key,
            });
        };
        let now = Instant::now();
        let Some(session) = table.get_mut(&key) else {
            return Err(Ended::Unknown);
        };
        if let Err(why) = self.alive(session, now) {
            let session = table.remove(&key).expect("present");
            return Err(Ended::TimedOut {
                identity: session.identity,
                handle: session.handle,
                why,
            });
        }
        if touch {
            session.last_seen = now;
        }
        Ok(Viewer {
            is_admin: web.is_admin(&session.identity),
            identity: session.identity.clone(),
            csrf: session.csrf.clone(),
            handle: session.handle.clone(),
            key,
        })
    }

    /// Whether the viewer's session is still alive (without counting as activity).
    pub(crate) async fn is_live(&self, viewer: &Viewer) -> bool {
        match &self.store {
            Store::Memory(_) => {
                let now = Instant::now();
                self.table()
                    .expect("in memory")
                    .get(&viewer.key)
                    .is_some_and(|s| self.alive(s, now).is_ok())
            }
            Store::Shared(shared) => shared.is_live(viewer.key).await,
        }
    }

    /// Ends the session (on every replica, with shared state); returns how it had signed
    /// in, if it existed, or why the shared state could not end it.
    pub(crate) async fn end(&self, viewer: &Viewer) -> Result<Option<Method>, String> {
        match &self.store {
            Store::Memory(_) => Ok(self
                .table()
                .expect("in memory")
                .remove(&viewer.key)
                .map(|s| s.method)),
            Store::Shared(shared) => shared.end(viewer.key).await,
        }
    }

    /// The decision kept through sign-in for this session, once.
    pub(crate) async fn take_kept(&self, viewer: &Viewer) -> Option<KeptDecision> {
        match &self.store {
            Store::Memory(_) => self
                .table()
                .expect("in memory")
                .get_mut(&viewer.key)
                .and_then(|s| s.kept.take()),
            Store::Shared(shared) => shared.take_kept(viewer.key).await,
        }
    }
}

/// The cookie that carries a session key: `__Host-`, `Secure`, `HttpOnly`, `SameSite=Lax`,
/// path `/`, a session cookie (no `Max-Age`: the server's timeouts are what count).
pub(crate) fn session_cookie(value: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build()
}

/// A cookie that removes `name` (same attributes, so the browser matches it).
pub(crate) fn removal(name: &'static str) -> Cookie<'static> {
    let mut cookie = Cookie::build((name, ""))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .build();
    cookie.make_removal();
    cookie
}

/// Records a `console.sign_out` event: `why` is "signed out" or the timeout.
pub(crate) async fn record_sign_out(web: &Web, identity: Identity, handle: &str, why: &str) {
    let mut ev = web
        .admin
        .audit
        .event(EventType::ConsoleSignOut, Outcome::Info);
    ev.identity = Some(identity);
    ev.target = Some("console".into());
    ev.resource = Some(handle.to_string());
    ev.detail = Some(format!("console session {handle} ended: {why}"));
    if let Err(e) = web.admin.audit.record(ev).await {
        tracing::error!("cannot record the end of a console session: {e}");
    }
}

/// Where a request without a session is sent: the sign-in page, coming back here after.
fn to_sign_in(parts: &Parts, expired: bool) -> Response {
    // Nested under /console, the request's own URI has lost that prefix; the original has it.
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let here = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/console/");
    // A form's target is no page to come back to (it answers POST only): the page the form
    // was on is, when the browser says which (same origin only).
    let next = if parts.method == axum::http::Method::GET {
        here.to_string()
    } else {
        parts
            .headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| reqwest::Url::parse(r).ok())
            .filter(|r| r.path().starts_with("/console/"))
            .map(|r| match r.query() {
                Some(q) => format!("{}?{q}", r.path()),
                None => r.path().to_string(),
            })
            .unwrap_or_else(|| "/console/approvals".to_string())
    };
    let next = next.as_str();
    let mut url = format!("/console/sign-in?next={}", encode(next));
    if expired || parts.method != axum::http::Method::GET {
        url.push_str("&expired=1");
    }
    Redirect::to(&url).into_response()
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Looks up the session of a request; a timed-out one is recorded as ended.
pub(crate) async fn session_of(web: &Web, headers: &HeaderMap) -> Result<Viewer, bool> {
    let jar = CookieJar::from_headers(headers);
    let Some(cookie) = jar.get(SESSION_COOKIE) else {
        return Err(false);
    };
    let touch = !headers.contains_key(BACKGROUND_HEADER);
    match web.sessions.get(cookie.value(), web, touch).await {
        Ok(viewer) => Ok(viewer),
        Err(Ended::Unknown) => Err(false),
        Err(Ended::TimedOut {
            identity,
            handle,
            why,
        }) => {
            record_sign_out(web, identity, &handle, why).await;
            Err(true)
        }
    }
}

/// A page for a signed-in person: without a session, the browser is sent to sign in and
/// brought back.
impl FromRequestParts<Arc<Web>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Viewer, Response> {
        match session_of(web, &parts.headers).await {
            Ok(viewer) => Ok(viewer),
            Err(expired) => Err(to_sign_in(parts, expired)),
        }
    }
}

/// The signed-in person, if any (for pages that work either way, and POSTs that must not
/// lose what was typed when the session has ended).
pub(crate) struct MaybeViewer(pub(crate) Result<Viewer, bool>);

impl FromRequestParts<Arc<Web>> for MaybeViewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &Arc<Web>,
    ) -> Result<MaybeViewer, std::convert::Infallible> {
        Ok(MaybeViewer(session_of(web, &parts.headers).await))
    }
}

/// The checks on every state-changing request: it comes from the console's own origin, and
/// quotes the session's CSRF token. Either failing is a 403 page saying which. (A form
/// without a session, the API-key sign-in, has only `check_origin` and its flow's `state`.)
pub(crate) fn check_form(
    web: &Web,
    viewer: &Viewer,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<(), Response> {
    check_origin(web, headers, Some(viewer))?;
    if !csrf.is_some_and(|token| same(token, &viewer.csrf)) {
        return Err(page::problem(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form's CSRF token is missing or does not belong to your session, so nothing was changed. Reload the page and try again.",
            Some(viewer),
        ));
    }
    Ok(())
}

/// `Origin` must be the console's own. Browsers send it on every POST; a request without one
/// did not come from a console page and is refused.
pub(crate) fn check_origin(
    web: &Web,
    headers: &HeaderMap,
    viewer: Option<&Viewer>,
) -> Result<(), Response> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_some_and(|o| o == web.origin) {
        return Ok(());
    }
    Err(page::problem(
        StatusCode::FORBIDDEN,
        "Form refused",
        &format!(
            "This request did not come from a console page (its Origin is {}, the console's is {}), so nothing was changed.",
            origin.unwrap_or("missing"),
            web.origin
        ),
        viewer,
    ))
}

/// The signed-in person on a page whose reading is itself recorded in the audit log under
/// their name (a recording, an export, a proof, an evidence document). Such a GET must be the
/// person's own doing: a link or redirect from another site (`Sec-Fetch-Site: cross-site` or
/// `same-site`) could otherwise make their browser leave reads in the log, and files on their
/// disk, that they never chose. Opened from the console or typed in, it goes through.
pub(crate) struct RecordedRead(pub(crate) Viewer);

impl FromRequestParts<Arc<Web>> for RecordedRead {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &Arc<Web>,
    ) -> Result<RecordedRead, Response> {
        let viewer = Viewer::from_request_parts(parts, web).await?;
        let site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        match site {
            None | Some("same-origin") | Some("none") => Ok(RecordedRead(viewer)),
            Some(other) => Err(page::problem(
                StatusCode::FORBIDDEN,
                "Opened from another site",
                &format!(
                    "Reading this is recorded in the audit log under your name, so it opens only from the console itself (or typed into the address bar), not from a link on another site (Sec-Fetch-Site: {other}). Nothing was read or recorded. Open it from the console."
                ),
                Some(&viewer),
            )),
        }
    }
}
