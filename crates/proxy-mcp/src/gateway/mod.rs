//! The MCP adapter's side of the request pipeline: classify, forward, mask, relay.
//!
//! The HTTP front door (`server.rs`) hands every parsed message to [`Gateway`]. The shared
//! phases (identify, decide, hold, record) are the guard's ([`portcullis_guard`]); this
//! module turns MCP messages into [`Action`]s, opens an exchange with the guard per request,
//! enforces the verdict on the wire and renders refusals as JSON-RPC errors
//! ([`render`]). Every request ends in exactly one audit event, made durable before the
//! answer is released: an answer whose event cannot be written is withheld (fail closed).

mod answer;
mod decide;
mod hold;
mod links;
mod pins;
mod relay;
mod render;
mod request;
mod sessions;
mod tape;

use answer::*;
use decide::*;
use hold::*;
use pins::*;
pub use render::render;
use request::*;
use sessions::*;
use tape::*;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_config::{Config, McpUpstream, TargetSpec};
use portcullis_guard::{Guard, Origin, Refusal, summary};
use portcullis_model::{AuditEvent, EventType, Identity, Outcome};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::era::{RequestFacts, UpstreamEra};
use crate::link::{Link, UpstreamSpec};
use crate::pins::Pins;

pub use request::Pump;
pub use sessions::Session;

/// Gateway-wide limits and names, from `[gateway]`. (The OIDC issuers the
/// protected-resource metadata names are the guard's, as a configuration reload leaves them.)
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway_id: String,
    pub max_bytes: usize,
    pub request_timeout: Duration,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub public_url: String,
}

impl Settings {
    /// The adapter's settings from a configuration.
    pub fn of(config: &Config) -> Settings {
        Settings {
            gateway_id: config.gateway.id.clone(),
            max_bytes: config.gateway.max_message_bytes,
            request_timeout: config.gateway.request_timeout,
            max_sessions: config.gateway.max_sessions,
            idle_timeout: config.gateway.session_idle_timeout,
            allowed_origins: config.gateway.allowed_origins.clone(),
            public_url: config.gateway.public_url(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "target {target}: upstream_auth.env names {var}, which is not set in the gateway's environment"
    )]
    MissingUpstreamSecret { target: String, var: String },
    #[error("target {target}: upstream_auth: {message}")]
    BadUpstreamAuth { target: String, message: String },
}

/// An authenticated caller and where it connected from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    pub source: String,
}

pub struct TargetRuntime {
    pub name: Arc<str>,
    spec: UpstreamSpec,
    slots: Arc<Semaphore>,
    max_processes: usize,
    /// The most sessions one identity may hold on this target (`max_sessions_per_identity`).
    max_sessions_per_identity: usize,
    /// How long a session must be idle before its owner's new session may end it
    /// (`session_reclaim_after`).
    session_reclaim_after: Duration,
    shared: tokio::sync::Mutex<Option<(Arc<Link>, UpstreamEra)>>,
}

/// An answer the front door sends instead of a stream: an HTTP status and a JSON-RPC
/// error body.
#[derive(Debug)]
pub struct Rejection {
    pub status: http::StatusCode,
    pub body: String,
}

impl Rejection {
    /// The wire form of a guard's refusal of message `id` (event `event`, if recorded).
    pub fn of(refusal: &Refusal, id: Option<&str>, event: Option<&str>) -> Rejection {
        let (status, body) = render(refusal, id, event);
        Rejection { status, body }
    }
}

pub struct Gateway {
    pub settings: Settings,
    /// The shared phases: identity, decisions, holds, masks, the audit log.
    pub guard: Arc<Guard>,
    pub pins: Arc<Pins>,
    /// Requests waiting for approval, by (owner, JSON-RPC id): a `notifications/cancelled`
    /// for one ends its wait, since no upstream has seen it to cancel.
    held: Mutex<HashMap<(String, String), tokio::sync::oneshot::Sender<()>>>,
    pub targets: HashMap<String, Arc<TargetRuntime>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    http: reqwest::Client,
}

/// A request as the front door parsed it.
pub struct IncomingRequest<'a> {
    pub id: &'a RawValue,
    pub method: &'a str,
    pub params: Option<&'a RawValue>,
    pub facts: RequestFacts,
    /// Whether the caller takes an SSE stream: messages before the answer (progress, logs)
    /// reach it only then, so only then are they sent and recorded.
    pub streams: bool,
}

/// The owner key of a stateless caller's requests on a shared link.
fn caller_key(identity: &Identity) -> String {
    format!("{} {}", identity.issuer, identity.subject)
}

fn audit_refusal(id: &str, cause: &str) -> Rejection {
    Rejection::of(&Refusal::audit_unavailable(cause), Some(id), None)
}

/// A JSON value as raw JSON text.
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value serialises")
}

impl Gateway {
    /// The MCP adapter for the `mcp` targets among `targets`, with the gateway-wide
    /// `settings`; decisions, holds, masks and events go through `guard`.
    pub fn new(
        settings: Settings,
        targets: &BTreeMap<String, TargetSpec>,
        guard: Arc<Guard>,
        pins: Arc<Pins>,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let specs = targets;
        let mut targets = HashMap::new();
        for (name, target) in specs {
            let Some(target) = target.as_mcp() else {
                continue;
            };
            let spec = match &target.upstream {
                McpUpstream::Stdio { command, env, cwd } => UpstreamSpec::Stdio {
                    command: command.clone(),
                    env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    cwd: cwd.clone(),
                },
                McpUpstream::Http { url, auth } => {
                    let auth = match auth {
                        None => None,
                        Some(a) => {
                            let secret = std::env::var(&a.env).map_err(|_| {
                                GatewayError::MissingUpstreamSecret {
                                    target: name.clone(),
                                    var: a.env.clone(),
                                }
                            })?;
                            let header = http::HeaderName::from_bytes(a.header.as_bytes())
                                .map_err(|e| GatewayError::BadUpstreamAuth {
                                    target: name.clone(),
                                    message: format!("header {:?}: {e}", a.header),
                                })?;
                            let mut value =
                                http::HeaderValue::from_str(&format!("{}{secret}", a.prefix))
                                    .map_err(|_| GatewayError::BadUpstreamAuth {
                                        target: name.clone(),
                                        message: format!(
                                            "the value of {} is not a valid header value",
                                            a.env
                                        ),
                                    })?;
                            value.set_sensitive(true);
                            Some((header, value))
                        }
                    };
                    UpstreamSpec::Http {
                        url: url.clone(),
                        auth,
                    }
                }
            };
            targets.insert(
                name.clone(),
                Arc::new(TargetRuntime {
                    name: Arc::from(name.as_str()),
                    spec,
                    slots: Arc::new(Semaphore::new(target.max_processes)),
                    max_processes: target.max_processes,
                    max_sessions_per_identity: target.max_sessions_per_identity,
                    session_reclaim_after: target.session_reclaim_after,
                    shared: tokio::sync::Mutex::new(None),
                }),
            );
        }
        // No redirects: a gateway passes its upstream's answer on rather than following it
        // elsewhere with the caller's request (as the HTTP adapter and every other client
        // here do); following also parsed URLs on every call.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .expect("TLS backend initialises");
        Ok(Arc::new(Gateway {
            settings,
            guard,
            pins,
            held: Mutex::new(HashMap::new()),
            targets,
            sessions: Mutex::new(HashMap::new()),
            http,
        }))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().expect("lock").len()
    }

    /// An audit event with the caller's facts filled in.
    pub fn event(
        &self,
        event_type: EventType,
        outcome: Outcome,
        caller: Option<&Caller>,
        target: &str,
    ) -> AuditEvent {
        let mut ev = self.guard.event(event_type, outcome);
        if let Some(c) = caller {
            ev.identity = Some((*c.identity).clone());
            ev.source = Some(c.source.clone());
        }
        ev.target = Some(target.to_string());
        ev
    }

    /// Refuses, before anything reaches an upstream (a process spawned, a handshake, a
    /// notification, a client's answer), while the audit log could not record it: the store
    /// has failed or its file system is below `audit.space_reserve`. Requests are checked in
    /// [`Gateway::request`]; this covers what reaches the upstream outside them.
    pub(super) fn refuse_unrecordable(&self, id: &str) -> Result<(), Rejection> {
        match self.guard.audit_unavailable() {
            Some(cause) => Err(audit_refusal(id, &cause)),
            None => Ok(()),
        }
    }

    /// The guard's view of a caller's request on a target.
    pub fn origin(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        session: Option<&Arc<Session>>,
    ) -> Origin {
        Origin {
            identity: caller.identity.clone(),
            source: caller.source.clone(),
            target: target.name.clone(),
            kind: portcullis_model::TargetKind::Mcp,
            session: session.map(|s| s.id.clone()),
        }
    }
}
