//! The per-request pipeline of the MCP adapter: identify, classify, decide, forward, record.
//!
//! The HTTP front door (`server.rs`) hands every parsed message to [`Gateway`]. Decisions are
//! the policy crate's; this module only turns MCP messages into [`Action`]s and enforces the
//! verdict on the wire. Every request ends in exactly one audit event, made durable before the
//! answer is released: an answer whose event cannot be written is withheld (fail closed).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_approvals::{Approval, Approvals, HoldRequest, Status};
use portcullis_audit::AuditLog;
use portcullis_config::Config;
use portcullis_identity::Authenticator;
use portcullis_mask::Report;
use portcullis_model::{
    Action, ApprovalRequirement, AuditEvent, Decision, EventType, Identity, McpKind, McpOperation,
    Operation, Outcome, TargetKind, Verdict,
};
use portcullis_policy::Policy;
use rand::RngCore as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::era::{self, ClientEra, MethodDecision, RequestFacts, UpstreamEra};
use crate::jsonrpc::{self, Message, ResponseBody, code};
use crate::link::{Driver, Inbound, Link, LinkError, Outgoing, UpstreamSpec};
use crate::masking::{self, MaskSet, Masks};
use crate::pins::{PinCheck, Pins, fingerprint};
use crate::stream::StreamBuf;

/// Gateway-wide limits and names, from `[gateway]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway_id: String,
    pub max_bytes: usize,
    pub request_timeout: Duration,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub public_url: String,
    pub issuers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "target {target}: upstream_auth.env names {var}, which is not set in the gateway's environment"
    )]
    MissingUpstreamSecret { target: String, var: String },
    #[error("target {target}: upstream_auth: {message}")]
    BadUpstreamAuth { target: String, message: String },
    /// A masking profile that does not compile, or its key is missing.
    #[error("{0}")]
    Mask(String),
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

/// How a session-based client reaches its upstream.
enum SessionRoute {
    /// A dedicated upstream session (a child process, or an HTTP session) that sees the
    /// client's own `initialize`.
    Dedicated,
    /// The upstream is stateless: the gateway answered `initialize` and adds the client's
    /// capabilities to every request's `_meta`.
    OverModern {
        client_caps: Value,
        client_info: Value,
    },
}

/// A session of a session-based (2025-era) client.
pub struct Session {
    pub id: String,
    pub target: Arc<TargetRuntime>,
    pub owner: Arc<Identity>,
    link: Arc<Link>,
    route: SessionRoute,
    /// The standalone stream (GET) carrying upstream messages not tied to a request.
    pub standalone: Arc<StreamBuf>,
    /// How far the standalone stream has been delivered, so a new GET continues there.
    pub standalone_cursor: AtomicU64,
    /// Recent per-request streams, for `Last-Event-ID` resumption.
    streams: Mutex<VecDeque<Arc<StreamBuf>>>,
    next_stream: AtomicU64,
    last_seen: Mutex<Instant>,
    started: Instant,
}

const KEPT_STREAMS: usize = 64;

impl Session {
    pub fn belongs_to(&self, identity: &Identity) -> bool {
        self.owner.issuer == identity.issuer && self.owner.subject == identity.subject
    }

    pub fn touch(&self) {
        *self.last_seen.lock().expect("lock") = Instant::now();
    }

    /// A new resumable stream for a request's answer.
    pub fn open_stream(&self) -> Arc<StreamBuf> {
        let buf = StreamBuf::new(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let mut streams = self.streams.lock().expect("lock");
        streams.push_back(buf.clone());
        while streams.len() > KEPT_STREAMS {
            streams.pop_front();
        }
        buf
    }

    pub fn find_stream(&self, id: u64) -> Option<Arc<StreamBuf>> {
        if id == self.standalone.id {
            return Some(self.standalone.clone());
        }
        self.streams
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }
}

/// Why the front door refuses a request before it reaches the pipeline.
#[derive(Debug)]
pub struct Refusal {
    pub status: http::StatusCode,
    pub body: String,
}

impl Refusal {
    fn new(status: http::StatusCode, id: Option<&str>, code: i64, message: &str) -> Refusal {
        Refusal {
            status,
            body: jsonrpc::error(id, code, message, None),
        }
    }
}

pub struct Gateway {
    pub settings: Settings,
    pub auth: Arc<Authenticator>,
    pub policy: Arc<Policy>,
    pub audit: AuditLog,
    pub pins: Arc<Pins>,
    pub masks: Masks,
    /// Held requests wait here for people; grants are looked up here.
    pub approvals: Approvals,
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
}

/// The rest of a forwarded request's work: relaying the upstream's messages, recording the
/// event, releasing the answer. Whoever waits for the answer polls it ([`Pump::run`]), which
/// saves a task hand-off per request; if it is dropped unfinished (the caller went away), the
/// rest runs as a task of its own, so every request still ends in its event.
pub struct Pump(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Pump {
    /// Drives the work to its end, then stays pending: meant as a `select!` branch beside
    /// the receiver of the request's messages.
    pub async fn run(&mut self) {
        if let Some(work) = self.0.as_mut() {
            work.await;
            self.0 = None;
        }
        std::future::pending::<()>().await
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(work);
        }
    }
}

/// Which list a result carries and how its items are named for policy.
#[derive(Clone, Copy)]
struct ListFilter {
    /// The result member holding the list.
    key: &'static str,
    /// The item member policy matches on.
    name: &'static str,
    /// The kind whose rules decide visibility.
    kind: McpKind,
}

impl ListFilter {
    fn of(method: &str) -> Option<ListFilter> {
        let (key, name, kind) = match method {
            "tools/list" => ("tools", "name", McpKind::Tool),
            "resources/list" => ("resources", "uri", McpKind::Resource),
            // A template is judged by its text against the resource rules (`*` spans an
            // expression such as `{id}`): one whose text no allowed glob matches, whose
            // expansions then lie outside what the caller may read, is hidden.
            "resources/templates/list" => ("resourceTemplates", "uriTemplate", McpKind::Resource),
            "prompts/list" => ("prompts", "name", McpKind::Prompt),
            _ => return None,
        };
        Some(ListFilter { key, name, kind })
    }
}

/// Why a request is refused before it reaches the upstream.
struct Refused {
    outcome: Outcome,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl Refused {
    fn rejected(code: i64, message: String) -> Refused {
        Refused {
            outcome: Outcome::Rejected,
            code,
            message,
            data: None,
        }
    }

    fn failed(code: i64, message: String) -> Refused {
        Refused {
            outcome: Outcome::Failed,
            code,
            message,
            data: None,
        }
    }
}

/// Where a decided request goes.
enum Forward {
    /// Answered by the gateway itself.
    Local(String),
    Upstream(Exchange),
}

/// A request in flight to its upstream.
struct Exchange {
    link: Arc<Link>,
    upstream: mpsc::Receiver<Inbound>,
    driver: Option<Driver>,
    owner: String,
    shape: Shape,
    /// The profiles masking what comes back (see [`Masks::for_caller`]).
    mask: MaskSet,
}

/// What post-processing an upstream answer needs before it is released.
#[derive(Clone, Copy)]
struct Shape {
    /// `tools/list`, `resources/list`, `prompts/list`: show only what the caller's rules
    /// allow or hold (and, for tools, what matches its pin).
    filter: Option<ListFilter>,
    modern_client: bool,
    /// A modern client needs `resultType` added (legacy upstream) or a private cache scope
    /// set (filtered, cacheable lists); otherwise the answer passes untouched.
    modernise: bool,
    legacy_client_over_modern: bool,
}

impl Gateway {
    pub fn new(
        config: &Config,
        auth: Arc<Authenticator>,
        policy: Arc<Policy>,
        audit: AuditLog,
        pins: Arc<Pins>,
        approvals: Approvals,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let mut targets = HashMap::new();
        for (name, target) in &config.targets {
            if target.kind != TargetKind::Mcp {
                continue;
            }
            let spec = match (&target.command, &target.url) {
                (Some(command), _) => UpstreamSpec::Stdio {
                    command: command.clone(),
                    env: target
                        .env
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    cwd: target.cwd.clone(),
                },
                (None, Some(url)) => {
                    let auth = match &target.upstream_auth {
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
                (None, None) => unreachable!("validated by the config crate"),
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .expect("TLS backend initialises");
        let settings = Settings {
            gateway_id: config.gateway.id.clone(),
            max_bytes: config.gateway.max_message_bytes,
            request_timeout: config.gateway.request_timeout,
            max_sessions: config.gateway.max_sessions,
            idle_timeout: config.gateway.session_idle_timeout,
            allowed_origins: config.gateway.allowed_origins.clone(),
            public_url: config.gateway.public_url(),
            issuers: config
                .identity
                .oidc
                .iter()
                .map(|o| o.issuer.clone())
                .collect(),
        };
        let masks = Masks::compile(config).map_err(GatewayError::Mask)?;
        Ok(Arc::new(Gateway {
            settings,
            auth,
            policy,
            audit,
            pins,
            masks,
            approvals,
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
        let mut ev = self.audit.event(event_type, outcome);
        if let Some(c) = caller {
            ev.identity = Some((*c.identity).clone());
            ev.source = Some(c.source.clone());
        }
        ev.target = Some(target.to_string());
        ev
    }

    /// The link shared by stateless callers of a target, and what the upstream is. Created on
    /// first use; re-created if the upstream went away.
    pub async fn shared_link(
        &self,
        target: &Arc<TargetRuntime>,
    ) -> Result<(Arc<Link>, UpstreamEra), LinkError> {
        let mut shared = target.shared.lock().await;
        if let Some((link, era)) = shared.as_ref()
            && !link.is_closed()
        {
            return Ok((link.clone(), era.clone()));
        }
        let (link, mut unsolicited) = self.open_link(target)?;
        let era = self.probe(target, &link).await?;
        // Stateless callers cannot be asked anything by the upstream: refuse its requests so
        // it does not wait forever, and drop its notifications.
        let answer = link.clone();
        tokio::spawn(async move {
            while let Some(text) = unsolicited.recv().await {
                if let Ok(Message::Request { id, .. }) = Message::parse(text.as_bytes(), usize::MAX)
                {
                    let reply = jsonrpc::error(
                        Some(id.get()),
                        code::METHOD_NOT_FOUND,
                        "the gateway does not relay server-to-client requests to stateless callers",
                        None,
                    );
                    let _ = answer.send(reply, "").await;
                }
            }
        });
        *shared = Some((link.clone(), era.clone()));
        Ok((link, era))
    }

    fn open_link(
        &self,
        target: &Arc<TargetRuntime>,
    ) -> Result<(Arc<Link>, mpsc::Receiver<String>), LinkError> {
        let permit = match &target.spec {
            UpstreamSpec::Stdio { .. } => Some(
                target
                    .slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| LinkError::TooManyProcesses(target.max_processes))?,
            ),
            UpstreamSpec::Http { .. } => None,
        };
        Link::open(
            target.name.clone(),
            &target.spec,
            permit,
            &self.http,
            self.settings.max_bytes,
        )
    }

    /// Finds out which era an upstream speaks: `server/discover` first (the stdio probe the
    /// 2026-07-28 revision recommends); if that fails, the session-based handshake.
    async fn probe(
        &self,
        target: &TargetRuntime,
        link: &Arc<Link>,
    ) -> Result<UpstreamEra, LinkError> {
        let meta = json!({ "_meta": self.own_meta() });
        let params = serde_json::value::to_raw_value(&meta).expect("serialises");
        link.set_protocol_version(era::MODERN);
        let discover = self.call(link, "server/discover", Some(&params)).await?;
        if let Ok(result) = discover
            && result["supportedVersions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v == era::MODERN))
        {
            return Ok(UpstreamEra::Modern { discover: result });
        }
        let init = json!({
            "protocolVersion": era::LEGACY[0],
            "capabilities": {},
            "clientInfo": { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
        });
        let params = serde_json::value::to_raw_value(&init).expect("serialises");
        link.set_protocol_version(era::LEGACY[0]);
        match self.call(link, "initialize", Some(&params)).await? {
            Ok(result) => {
                if let Some(v) = result["protocolVersion"].as_str() {
                    link.set_protocol_version(v);
                }
                link.send(
                    jsonrpc::notification("notifications/initialized", None),
                    "notifications/initialized",
                )
                .await?;
                Ok(UpstreamEra::Legacy { initialize: result })
            }
            Err(e) => Err(LinkError::Unreachable(format!(
                "{} answered neither server/discover nor initialize: {e}",
                target.name
            ))),
        }
    }

    /// A request of the gateway's own, awaited: Ok(Ok(result)) or Ok(Err(error text)).
    async fn call(
        &self,
        link: &Arc<Link>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Result<Value, String>, LinkError> {
        let mut rx = link.request(Outgoing {
            owner: "portcullis",
            client_id: "0",
            method,
            name: None,
            params,
            progress_token: None,
        })?;
        let deadline = tokio::time::sleep(self.settings.request_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Inbound::Final(text)) => return Ok(match Message::parse(text.as_bytes(), usize::MAX) {
                        Ok(Message::Response { body: ResponseBody::Result(r), .. }) => {
                            serde_json::from_str(r.get()).map_err(|e| e.to_string())
                        }
                        Ok(Message::Response { body: ResponseBody::Error(e), .. }) => Err(e.get().to_string()),
                        _ => Err("unexpected answer".into()),
                    }),
                    Some(Inbound::Interim(_)) => continue,
                    None => return Err(LinkError::Closed("no answer".into())),
                },
                _ = &mut deadline => {
                    link.cancel("portcullis", "0", "timed out").await;
                    return Err(LinkError::Unreachable(format!("{method} timed out")));
                }
            }
        }
    }

    /// Refuses, before anything reaches an upstream (a process spawned, a handshake, a
    /// notification, a client's answer), while the audit log could not record it: the store
    /// has failed or its file system is below `audit.space_reserve`. Requests are checked in
    /// [`Gateway::request`]; this covers what reaches the upstream outside them.
    fn refuse_unrecordable(&self, id: &str) -> Result<(), Refusal> {
        match self.audit.unavailable() {
            Some(cause) => Err(audit_refusal(id, &cause)),
            None => Ok(()),
        }
    }

    /// `initialize` from a session-based client: opens a gateway session.
    pub async fn initialize(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        id: &RawValue,
        params: Option<&RawValue>,
    ) -> Result<(Arc<Session>, String), Refusal> {
        let started = Instant::now();
        let refusal = match self.refuse_unrecordable(id.get()) {
            Err(refusal) => refusal,
            Ok(()) => match self.open_session(caller, target, id, params, started).await {
                Ok(opened) => return Ok(opened),
                Err(refusal) => refusal,
            },
        };
        // A session that could not be opened is an attempt all the same: record it.
        let mut ev = self.event(
            EventType::Request,
            Outcome::Failed,
            Some(caller),
            &target.name,
        );
        ev.action = Some("initialize".into());
        ev.request_id = Some(id.get().to_string());
        ev.arguments = params.map(|p| self.audit.digest(p.get().as_bytes()));
        ev.result = Some(self.audit.digest(refusal.body.as_bytes()));
        ev.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let error = serde_json::from_str::<Value>(&refusal.body)
            .map(|v| v["error"].clone())
            .unwrap_or(Value::Null);
        ev.detail = error["message"].as_str().map(str::to_string);
        if error["code"] == code::POLICY_DENIED {
            ev.outcome = Outcome::Denied;
            ev.decision = Some("deny".into());
        }
        match self.audit.record(ev).await {
            Ok(_) => Err(refusal),
            Err(e) => Err(audit_refusal(id.get(), &e.to_string())),
        }
    }

    async fn open_session(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        id: &RawValue,
        params: Option<&RawValue>,
        started: Instant,
    ) -> Result<(Arc<Session>, String), Refusal> {
        if self.session_count() >= self.settings.max_sessions {
            return Err(Refusal::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                Some(id.get()),
                code::INTERNAL_ERROR,
                &format!(
                    "the gateway has reached its limit of {} sessions; try again later",
                    self.settings.max_sessions
                ),
            ));
        }
        self.reclaim_idle_session(caller, target).await;
        self.admit_session(caller, target, id)?;
        let unreachable = |e: LinkError| {
            Refusal::new(
                http::StatusCode::OK,
                Some(id.get()),
                code::UPSTREAM_UNAVAILABLE,
                &format!("upstream {}: {e}", target.name),
            )
        };
        let init: Value = params
            .map(|p| serde_json::from_str(p.get()))
            .transpose()
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        // What the session carries back (the answer to `initialize`, the standalone stream)
        // answers no one decided call: masked with every profile of the caller's rules here.
        let masks = self.answer_masks(caller, target, None).map_err(|refused| {
            Refusal::new(
                http::StatusCode::OK,
                Some(id.get()),
                refused.code,
                &refused.message,
            )
        })?;
        let mut raw_id = [0u8; 16];
        rand::rng().fill_bytes(&mut raw_id);
        let session_id = hex::encode(raw_id);
        let (shared, upstream_era) = self.shared_link(target).await.map_err(unreachable)?;
        let (link, route, answer, unsolicited) = if upstream_era.is_modern() {
            let requested = init["protocolVersion"].as_str().unwrap_or(era::LEGACY[0]);
            let result = upstream_era.initialize_result(requested);
            let route = SessionRoute::OverModern {
                client_caps: init
                    .get("capabilities")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                client_info: init
                    .get("clientInfo")
                    .cloned()
                    .unwrap_or_else(|| json!({"name": "unknown"})),
            };
            (
                shared,
                route,
                jsonrpc::result(id.get(), &result.to_string()),
                None,
            )
        } else {
            let (link, unsolicited) = self.open_link(target).map_err(unreachable)?;
            let mut rx = link
                .request(Outgoing {
                    owner: &session_id,
                    client_id: id.get(),
                    method: "initialize",
                    name: None,
                    params,
                    progress_token: None,
                })
                .map_err(unreachable)?;
            let answer = loop {
                match tokio::time::timeout(self.settings.request_timeout, rx.recv()).await {
                    Ok(Some(Inbound::Final(text))) => break text,
                    Ok(Some(Inbound::Interim(_))) => continue,
                    Ok(None) | Err(_) => {
                        link.close().await;
                        return Err(unreachable(LinkError::Unreachable(
                            "no answer to initialize".into(),
                        )));
                    }
                }
            };
            let negotiated = match Message::parse(answer.as_bytes(), self.settings.max_bytes) {
                Ok(Message::Response {
                    body: ResponseBody::Result(r),
                    ..
                }) => serde_json::from_str::<Value>(r.get())
                    .ok()
                    .and_then(|v| v["protocolVersion"].as_str().map(str::to_string)),
                _ => None,
            };
            let Some(version) = negotiated else {
                // The upstream refused the handshake: pass its answer on, keep no session.
                link.close().await;
                return Err(Refusal {
                    status: http::StatusCode::OK,
                    body: answer,
                });
            };
            link.set_protocol_version(&version);
            link.listen();
            (link, SessionRoute::Dedicated, answer, Some(unsolicited))
        };
        let mut masked = Report::default();
        let Some(answer) = masks.mask_message(answer, &mut masked) else {
            // Unreachable (the answer was parsed above, or made here), but never unmasked.
            if matches!(route, SessionRoute::Dedicated) {
                link.close().await;
            }
            let message = format!(
                "upstream {} answered initialize with a message the masking profile cannot read",
                target.name
            );
            return Err(Refusal::new(
                http::StatusCode::OK,
                Some(id.get()),
                code::INTERNAL_ERROR,
                &message,
            ));
        };
        let session = Arc::new(Session {
            id: session_id,
            target: target.clone(),
            owner: caller.identity.clone(),
            link,
            route,
            standalone: StreamBuf::new(0),
            standalone_cursor: AtomicU64::new(0),
            streams: Mutex::new(VecDeque::new()),
            next_stream: AtomicU64::new(1),
            last_seen: Mutex::new(Instant::now()),
            started,
        });
        if let Some(mut unsolicited) = unsolicited {
            let standalone = session.standalone.clone();
            let masks = masks.clone();
            tokio::spawn(async move {
                while let Some(text) = unsolicited.recv().await {
                    // What no request's event records is not counted either.
                    if let Some(text) = masks.mask_message(text, &mut Report::default()) {
                        standalone.push(text);
                    }
                }
                standalone.finish();
            });
        }
        let mut ev = self.event(
            EventType::SessionStart,
            Outcome::Info,
            Some(caller),
            &target.name,
        );
        ev.session = Some(session.id.clone());
        ev.action = Some("initialize".into());
        ev.request_id = Some(id.get().to_string());
        ev.detail = init["clientInfo"]["name"].as_str().map(|name| {
            format!(
                "client {name}, protocol {}",
                init["protocolVersion"].as_str().unwrap_or("?")
            )
        });
        ev.masked = masking::summary(&masked);
        if let Err(e) = self.audit.record(ev).await {
            session.link.close().await;
            return Err(audit_refusal(id.get(), &e.to_string()));
        }
        {
            let mut sessions = self.sessions.lock().expect("lock");
            // Checked again here: concurrent initializes all passed the first check.
            let own = sessions_of(&sessions, &caller.identity, &target.name);
            if sessions.len() < self.settings.max_sessions && own < target.max_sessions_per_identity
            {
                sessions.insert(session.id.clone(), session.clone());
                drop(sessions);
                return Ok((session, answer));
            }
        }
        self.end_unregistered(&session, caller).await;
        // Lost the race for the last slot: the caller's own limit, or the gateway's.
        self.admit_session(caller, target, id)?;
        Err(Refusal::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Some(id.get()),
            code::INTERNAL_ERROR,
            &format!(
                "the gateway has reached its limit of {} sessions; try again later",
                self.settings.max_sessions
            ),
        ))
    }

    /// When the caller holds its limit of sessions on the target, ends its least recently
    /// used one if that has been idle for `session_reclaim_after`: a client that abandons
    /// its sessions (never sends DELETE) is not locked out until they expire, and since only
    /// the caller's own session is ended, no one else loses anything. While all of them are
    /// active, nothing is ended and [`Gateway::admit_session`] refuses.
    async fn reclaim_idle_session(&self, caller: &Caller, target: &TargetRuntime) {
        let reclaimable = {
            let sessions = self.sessions.lock().expect("lock");
            if sessions_of(&sessions, &caller.identity, &target.name)
                < target.max_sessions_per_identity
            {
                return;
            }
            own_sessions(&sessions, &caller.identity, &target.name)
                .map(|s| (*s.last_seen.lock().expect("lock"), s.id.clone()))
                .min()
                .filter(|(seen, _)| seen.elapsed() >= target.session_reclaim_after)
        };
        if let Some((seen, id)) = reclaimable {
            let why = format!(
                "ended to admit a new session of its owner, who held its limit (targets.{}.max_sessions_per_identity = {}); idle for {}s, past targets.{}.session_reclaim_after = {}s",
                target.name,
                target.max_sessions_per_identity,
                seen.elapsed().as_secs(),
                target.name,
                target.session_reclaim_after.as_secs()
            );
            self.end_session(&id, Some(caller), &why).await;
        }
    }

    /// Before anything is spawned for a session: some rule on the target must apply to the
    /// caller (otherwise it could do nothing there but hold a process), and the caller must
    /// be under its own limit of sessions on the target, so one key cannot take every
    /// process slot from the others.
    fn admit_session(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        id: &RawValue,
    ) -> Result<(), Refusal> {
        if !self.policy.any_rule_for(&caller.identity, &target.name) {
            return Err(Refusal::new(
                http::StatusCode::FORBIDDEN,
                Some(id.get()),
                code::POLICY_DENIED,
                &no_rule_message(&caller.identity, &target.name),
            ));
        }
        let own = sessions_of(
            &self.sessions.lock().expect("lock"),
            &caller.identity,
            &target.name,
        );
        if own >= target.max_sessions_per_identity {
            return Err(Refusal::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                Some(id.get()),
                code::UPSTREAM_UNAVAILABLE,
                &format!(
                    "{} holds {own} sessions on {}, its limit (targets.{}.max_sessions_per_identity = {}), all active within targets.{}.session_reclaim_after = {}s; end one (DELETE) or let one go idle first",
                    caller.identity.subject,
                    target.name,
                    target.name,
                    target.max_sessions_per_identity,
                    target.name,
                    target.session_reclaim_after.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// The session with this id, if it exists, belongs to this caller and is alive. A
    /// session whose upstream died is ended here, so the client is told (404) to start anew.
    pub async fn session(&self, id: &str, caller: &Caller, target: &str) -> Option<Arc<Session>> {
        let session = self.sessions.lock().expect("lock").get(id).cloned()?;
        if !session.belongs_to(&caller.identity) || &*session.target.name != target {
            return None;
        }
        if matches!(session.route, SessionRoute::Dedicated) && session.link.is_closed() {
            self.end_session(&session.id, Some(caller), "the upstream went away")
                .await;
            return None;
        }
        session.touch();
        Some(session)
    }

    /// Ends a session: closes its upstream and records the end.
    pub async fn end_session(&self, id: &str, caller: Option<&Caller>, why: &str) -> bool {
        let Some(session) = self.sessions.lock().expect("lock").remove(id) else {
            return false;
        };
        if matches!(session.route, SessionRoute::Dedicated) {
            session.link.close().await;
        }
        session.standalone.finish();
        let owner = Caller {
            identity: session.owner.clone(),
            source: caller.map(|c| c.source.clone()).unwrap_or_default(),
        };
        let mut ev = self.event(
            EventType::SessionEnd,
            Outcome::Info,
            Some(&owner),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.detail = Some(why.to_string());
        ev.duration_ms = Some(session.started.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!("cannot record the end of session {}: {e}", session.id);
        }
        true
    }

    /// Ends sessions idle for longer than the configured timeout. Run periodically.
    pub async fn sweep_idle(&self) {
        let idle: Vec<String> = self
            .sessions
            .lock()
            .expect("lock")
            .values()
            .filter(|s| s.last_seen.lock().expect("lock").elapsed() > self.settings.idle_timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            self.end_session(&id, None, "idle timeout").await;
        }
    }

    /// Undoes a session that lost the race for the last slot: closes its upstream and
    /// records its end, so its recorded start has a matching end.
    async fn end_unregistered(&self, session: &Arc<Session>, caller: &Caller) {
        if matches!(session.route, SessionRoute::Dedicated) {
            session.link.close().await;
        }
        let mut ev = self.event(
            EventType::SessionEnd,
            Outcome::Info,
            Some(caller),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.detail = Some("session limit reached".into());
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!("cannot record the end of session {}: {e}", session.id);
        }
    }

    /// Ends every session (shutdown).
    pub async fn end_all(&self) {
        let ids: Vec<String> = self
            .sessions
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.end_session(&id, None, "gateway shutdown").await;
        }
    }

    /// A request from a caller: decided, forwarded if allowed, recorded. The receiver yields
    /// interim messages and then the answer, which is released only after its event is
    /// durable.
    pub async fn request(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        incoming: IncomingRequest<'_>,
    ) -> (mpsc::Receiver<Inbound>, Pump) {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(64);
        let mut pump = Pump(None);
        let mut ev = self.event(
            EventType::Request,
            Outcome::Denied,
            Some(caller),
            &target.name,
        );
        ev.session = session.map(|s| s.id.clone());
        ev.action = Some(incoming.method.to_string());
        ev.resource = incoming.facts.name.clone();
        ev.request_id = Some(incoming.id.get().to_string());
        ev.arguments = incoming
            .params
            .map(|p| self.audit.digest(p.get().as_bytes()));
        ev.policy_version = Some(self.policy.version().to_string());

        let client_era = match session {
            Some(_) => ClientEra::Session,
            None => ClientEra::Stateless,
        };
        let planned = match self.decide(caller, target, &incoming, client_era, &mut ev) {
            Ok(Decided {
                mask,
                hold: Some(requirement),
            }) => {
                // The wait for people runs where the rest of a forwarded request runs: in
                // the pump, which survives the caller hanging up (and then cancels).
                let held = HeldCall {
                    id: incoming.id.to_owned(),
                    method: incoming.method.to_string(),
                    params: incoming.params.map(ToOwned::to_owned),
                    facts: incoming.facts,
                };
                let gateway = self.clone();
                let caller = caller.clone();
                let target = target.clone();
                let session = session.cloned();
                pump = Pump(Some(Box::pin(async move {
                    gateway
                        .hold_then_forward(
                            caller,
                            target,
                            session,
                            held,
                            requirement,
                            mask,
                            ev,
                            tx,
                            started,
                        )
                        .await
                })));
                return (rx, pump);
            }
            // A request whose event could not be written is refused before it can act
            // upstream, not only withheld afterwards.
            Ok(Decided { mask, hold: None }) => match self.audit.unavailable() {
                Some(cause) => Err(Refused::failed(
                    code::AUDIT_UNAVAILABLE,
                    format!("the audit log cannot record this request, so it is refused: {cause}"),
                )),
                None => self
                    .forward(caller, target, session, &incoming)
                    .await
                    .map(|forward| match forward {
                        Forward::Upstream(exchange) => {
                            Forward::Upstream(Exchange { mask, ..exchange })
                        }
                        Forward::Local(answer) => {
                            Forward::Local(mask_local(&mask, answer, incoming.id.get(), &mut ev))
                        }
                    }),
            },
            Err(refused) => Err(refused),
        };
        match planned {
            Ok(Forward::Local(answer)) => {
                // Methods a stateless upstream no longer has, or discovery synthesised from
                // a session-based upstream.
                ev.outcome = Outcome::Success;
                self.release(ev, answer, incoming.id.get(), started, &tx)
                    .await;
            }
            Ok(Forward::Upstream(exchange)) => {
                let gateway = self.clone();
                let caller = caller.clone();
                let target = target.clone();
                let method = incoming.method.to_string();
                let client_id = incoming.id.get().to_string();
                pump = Pump(Some(Box::pin(async move {
                    gateway
                        .pump(caller, target, exchange, tx, ev, method, client_id, started)
                        .await
                })));
            }
            Err(refused) => {
                self.refuse(ev, refused, incoming.id.get(), started, &tx)
                    .await;
            }
        }
        (rx, pump)
    }

    /// Classify and decide. Every method has a decision ([`era::method_decision`]): an
    /// unknown one is refused; methods that act on something are decided by policy (and a
    /// tool call by its pin); protocol methods (lists, ping, discovery ...) are open to any
    /// caller some rule on the target applies to, and lists are filtered on the way back.
    /// Returns the masking profile the allowing rule names, or what a hold needs.
    fn decide(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        incoming: &IncomingRequest<'_>,
        client_era: ClientEra,
        ev: &mut AuditEvent,
    ) -> Result<Decided, Refused> {
        let IncomingRequest { method, facts, .. } = incoming;
        let method = *method;
        let Some(how) = era::method_decision(client_era, method) else {
            return Err(Refused::rejected(
                code::METHOD_NOT_FOUND,
                format!(
                    "method {method:?} is not a {} MCP request method (names are case-sensitive); the gateway decides only methods it knows, so it is refused",
                    client_era.label()
                ),
            ));
        };
        match how {
            MethodDecision::Handshake => Err(Refused::rejected(
                code::INVALID_REQUEST,
                "this session is initialized already; a session has one initialize (start a new session without Mcp-Session-Id)".into(),
            )),
            MethodDecision::Protocol => {
                self.admit_protocol(caller, target)?;
                ev.decision = Some("allow".into());
                ev.rule = Some("protocol".into());
                // Lists, discovery and the rest answer for no one decided call: they are
                // masked with every profile of the caller's rules on the target.
                Ok(Decided {
                    mask: self.answer_masks(caller, target, None)?,
                    hold: None,
                })
            }
            MethodDecision::Named { kind } => {
                let Some(name) = facts.name.as_deref() else {
                    let field = era::target_field(method).unwrap_or("name");
                    return Err(Refused::rejected(
                        code::INVALID_PARAMS,
                        format!("{method} needs params.{field}"),
                    ));
                };
                self.decide_named(caller, target, kind, name, facts.arguments.as_ref(), ev)
            }
            MethodDecision::Completion => {
                let Some(reference) = &facts.completion else {
                    return Err(Refused::rejected(
                        code::INVALID_PARAMS,
                        "completion/complete needs params.ref: {\"type\": \"ref/prompt\", \"name\": ...} or {\"type\": \"ref/resource\", \"uri\": ...}".into(),
                    ));
                };
                ev.resource = Some(reference.name.clone());
                let decided =
                    self.decide_named(caller, target, reference.kind, &reference.name, None, ev)?;
                if decided.hold.is_some() {
                    let verb = reference.kind.method().unwrap_or_default();
                    return Err(not_held("completion/complete", verb, &reference.name, ev));
                }
                Ok(decided)
            }
            MethodDecision::Listen => {
                self.admit_protocol(caller, target)?;
                for uri in &facts.subscriptions {
                    // The event names the URI a refusal is about.
                    ev.resource = Some(uri.clone());
                    let decided =
                        self.decide_named(caller, target, McpKind::Resource, uri, None, ev)?;
                    if decided.hold.is_some() {
                        return Err(not_held("subscriptions/listen", "resources/read", uri, ev));
                    }
                }
                ev.resource = None;
                ev.decision = Some("allow".into());
                if facts.subscriptions.is_empty() {
                    ev.rule = Some("protocol".into());
                }
                Ok(Decided {
                    mask: self.answer_masks(caller, target, None)?,
                    hold: None,
                })
            }
        }
    }

    /// A protocol method acts on nothing named, but it still reaches the upstream (and may
    /// start it): only a caller some rule on the target applies to gets that far.
    fn admit_protocol(&self, caller: &Caller, target: &TargetRuntime) -> Result<(), Refused> {
        if self.policy.any_rule_for(&caller.identity, &target.name) {
            return Ok(());
        }
        Err(Refused {
            outcome: Outcome::Denied,
            code: code::POLICY_DENIED,
            message: no_rule_message(&caller.identity, &target.name),
            data: None,
        })
    }

    /// Decides acting on the tool, resource (URI) or prompt `name`: policy, then the tool's
    /// pin. Returns the allowing rule's masking profile, or what a hold needs.
    fn decide_named(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        kind: McpKind,
        name: &str,
        arguments: Option<&Value>,
        ev: &mut AuditEvent,
    ) -> Result<Decided, Refused> {
        // What the arguments carry (a card number, a secret) is an input of the decision.
        let findings = match arguments {
            Some(arguments) => {
                let report = self.masks.classify_arguments(arguments);
                ev.findings = masking::summary(&report);
                report.detectors()
            }
            None => Vec::new(),
        };
        // Grants are looked up only while someone holds one.
        let grants = if self.approvals.any_grants() {
            self.approvals.active_grants(&caller.identity, &target.name)
        } else {
            Vec::new()
        };
        let action = Action {
            target: &target.name,
            target_kind: TargetKind::Mcp,
            operation: Operation::Mcp(McpOperation::named(kind, name, arguments)),
            findings: &findings,
            grants: &grants,
        };
        let verdict = self.policy.decide(&caller.identity, &action);
        ev.decision = Some(verdict.decision.label().to_string());
        ev.rule = Some(verdict.rule_label().to_string());
        ev.grant = verdict.grant.as_deref().map(str::to_string);
        if let Some((code, message)) = refusal_of(&verdict, action.verb(), name) {
            let data = json!({
                "decision": verdict.decision.label(),
                "rule": verdict.rule_label(),
                "policy_version": &*verdict.policy_version,
                "event": &ev.id,
            });
            return Err(Refused {
                outcome: Outcome::Denied,
                code,
                message,
                data: Some(data),
            });
        }
        if kind == McpKind::Tool {
            match self.pins.is_withheld(&target.name, name) {
                Ok(false) => {}
                Ok(true) => {
                    let data = json!({ "event": &ev.id, "rule": "tool-pin" });
                    return Err(pin_withheld(&target.name, name, data));
                }
                Err(e) => return Err(pin_store_failed(e)),
            }
        }
        let rule_profile = match &verdict.decision {
            Decision::Allow { mask } => mask.as_deref(),
            _ => None,
        };
        Ok(Decided {
            mask: self.answer_masks(caller, target, rule_profile)?,
            hold: match &verdict.decision {
                Decision::Hold(requirement) => Some(requirement.clone()),
                _ => None,
            },
        })
    }

    /// The masking profiles for what comes back to this caller from this target: the
    /// deciding rule's, if any, and those of every allow rule of the caller's there.
    fn answer_masks(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        rule_profile: Option<&str>,
    ) -> Result<MaskSet, Refused> {
        self.masks
            .for_caller(&self.policy, &caller.identity, &target.name, rule_profile)
            // Configuration validation makes this unreachable; if it is reached anyway,
            // nothing unmasked may leave.
            .map_err(|why| Refused::failed(code::INTERNAL_ERROR, why))
    }

    /// The held path: ask people, keep the caller informed while they decide, then forward
    /// (approved) or refuse, naming the approval, the decision, who made it and why.
    #[allow(clippy::too_many_arguments)]
    async fn hold_then_forward(
        self: Arc<Self>,
        caller: Caller,
        target: Arc<TargetRuntime>,
        session: Option<Arc<Session>>,
        call: HeldCall,
        requirement: Arc<ApprovalRequirement>,
        mask: MaskSet,
        mut ev: AuditEvent,
        tx: mpsc::Sender<Inbound>,
        started: Instant,
    ) {
        let client_id = call.id.get().to_string();
        let what = format!(
            "{} {:?}",
            call.method,
            call.facts.name.as_deref().unwrap_or("")
        );
        // Approvers see the arguments, masked with the default profile: a card number or a
        // secret in them never reaches the approvals store or a notification.
        let arguments = call.facts.arguments.clone().map(|mut value| {
            if let Some(profile) = self.masks.profile(masking::DEFAULT_PROFILE) {
                profile.mask_json(&mut value, "$.arguments", &mut Report::default());
            }
            value
        });
        let request = HoldRequest {
            requester: (*caller.identity).clone(),
            source: Some(caller.source.clone()),
            target: target.name.to_string(),
            action: call.method.clone(),
            resource: call.facts.name.clone(),
            arguments,
            arguments_digest: ev.arguments.clone(),
            reason: call.facts.reason.clone(),
            rule: ev.rule.clone().unwrap_or_default(),
            policy_version: ev.policy_version.clone().unwrap_or_default(),
            requirement,
            request_event: ev.id.clone(),
        };
        let mut held = match self.approvals.hold(request).await {
            Ok(held) => held,
            Err(e) => {
                let (outcome, code) = match e {
                    portcullis_approvals::ApprovalError::Invalid(_) => {
                        (Outcome::Denied, code::POLICY_HOLD)
                    }
                    portcullis_approvals::ApprovalError::Audit(_) => {
                        (Outcome::Failed, code::AUDIT_UNAVAILABLE)
                    }
                    _ => (Outcome::Failed, code::INTERNAL_ERROR),
                };
                let refused = Refused {
                    outcome,
                    code,
                    message: format!("{what} is held for approval but cannot wait: {e}"),
                    data: Some(json!({ "rule": &ev.rule, "event": &ev.id })),
                };
                self.refuse(ev, refused, &client_id, started, &tx).await;
                return;
            }
        };
        let approval_id = held.id().to_string();
        ev.approval = Some(approval_id.clone());
        let waiting = awaiting_message(&held.approval, self.approvals.admin_url());
        let owner = match &session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let key = (owner, client_id.clone());
        let (cancel_tx, mut cancelled) = tokio::sync::oneshot::channel();
        self.held
            .lock()
            .expect("lock")
            .insert(key.clone(), cancel_tx);
        let outcome = {
            let wait = held.outcome();
            tokio::pin!(wait);
            // Progress notifications keep the caller's stream alive and say where the
            // request is; the spec wants the progress value to grow with each one.
            let mut ticker = tokio::time::interval(HOLD_PROGRESS_EVERY);
            let mut progress = 0u64;
            loop {
                tokio::select! {
                    approval = &mut wait => break Ok(approval),
                    () = tx.closed() => break Err("the caller went away"),
                    _ = &mut cancelled => break Err("the caller cancelled the request"),
                    _ = ticker.tick(), if call.facts.progress_token.is_some() => {
                        progress += 1;
                        // The token goes back as the caller sent it (string or number).
                        let token = call
                            .facts
                            .progress_token
                            .as_deref()
                            .and_then(|t| serde_json::from_str::<Value>(t).ok())
                            .unwrap_or(Value::Null);
                        let text = json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {
                                "progressToken": token,
                                "progress": progress,
                                "message": &waiting,
                            },
                        })
                        .to_string();
                        let _ = tx.send(Inbound::Interim(text)).await;
                    }
                }
            }
        };
        self.held.lock().expect("lock").remove(&key);
        let approval = match outcome {
            Ok(approval) => approval,
            Err(why) => {
                held.cancel(&format!("{why} while the request was held"))
                    .await;
                ev.outcome = Outcome::Failed;
                ev.detail = Some(format!("{why} while {approval_id} waited for approval"));
                ev.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                if let Err(e) = self.audit.record(ev).await {
                    tracing::error!("recording an abandoned held request: {e}");
                }
                return;
            }
        };
        if approval.status != Status::Approved {
            let (outcome, code, message) = hold_refusal(&what, &approval);
            let decided_by: Vec<Value> = approval
                .votes
                .iter()
                .map(|v| {
                    json!({
                        "subject": &v.approver.subject,
                        "decision": if v.approve { "approve" } else { "deny" },
                        "reason": &v.reason,
                        "time": &v.time,
                    })
                })
                .collect();
            let data = json!({
                "approval": &approval.id,
                "status": approval.status.as_str(),
                "decided_by": decided_by,
                "rule": &ev.rule,
                "event": &ev.id,
            });
            let refused = Refused {
                outcome,
                code,
                message,
                data: Some(data),
            };
            self.refuse(ev, refused, &client_id, started, &tx).await;
            return;
        }
        // Approved: the release is recorded before anything reaches the upstream.
        if let Err(e) = held.released(&ev.id).await {
            let refused = Refused::failed(
                code::AUDIT_UNAVAILABLE,
                format!("{what} was approved ({approval_id}) but {e}"),
            );
            self.refuse(ev, refused, &client_id, started, &tx).await;
            return;
        }
        let incoming = IncomingRequest {
            id: &call.id,
            method: &call.method,
            params: call.params.as_deref(),
            facts: call.facts,
        };
        match self
            .forward(&caller, &target, session.as_ref(), &incoming)
            .await
        {
            Ok(Forward::Upstream(exchange)) => {
                let exchange = Exchange { mask, ..exchange };
                self.clone()
                    .pump(
                        caller,
                        target,
                        exchange,
                        tx,
                        ev,
                        call.method,
                        client_id,
                        started,
                    )
                    .await;
            }
            Ok(Forward::Local(answer)) => {
                ev.outcome = Outcome::Success;
                let answer = mask_local(&mask, answer, &client_id, &mut ev);
                self.release(ev, answer, &client_id, started, &tx).await;
            }
            Err(refused) => self.refuse(ev, refused, &client_id, started, &tx).await,
        }
    }

    /// Chooses the upstream link, answers what the upstream's era has no method for, adds
    /// the `_meta` a stateless upstream needs, and sends the request.
    async fn forward(
        &self,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        incoming: &IncomingRequest<'_>,
    ) -> Result<Forward, Refused> {
        let IncomingRequest {
            id,
            method,
            params,
            facts,
        } = incoming;
        let (id, method, params) = (*id, *method, *params);
        let unavailable = |e: LinkError| {
            Refused::failed(
                code::UPSTREAM_UNAVAILABLE,
                format!("upstream {}: {e}", target.name),
            )
        };
        let over_modern = session.and_then(|s| match &s.route {
            SessionRoute::OverModern {
                client_caps,
                client_info,
            } => Some((client_caps, client_info)),
            SessionRoute::Dedicated => None,
        });
        let (link, upstream_era) = match session {
            Some(s) if matches!(s.route, SessionRoute::Dedicated) => (s.link.clone(), None),
            // Stateless callers, and sessions over a stateless upstream, use the target's
            // shared link as it is now: if the upstream died it has been re-created.
            _ => {
                let (link, era) = self.shared_link(target).await.map_err(unavailable)?;
                (link, Some(era))
            }
        };
        let upstream_modern =
            over_modern.is_some() || upstream_era.as_ref().is_some_and(UpstreamEra::is_modern);
        // Methods a modern upstream no longer has are answered here.
        if upstream_modern && matches!(method, "ping" | "logging/setLevel") {
            return Ok(Forward::Local(jsonrpc::result(id.get(), "{}")));
        }
        if method == "server/discover"
            && let Some(era) = upstream_era.as_ref().filter(|e| !e.is_modern())
        {
            let discover = era.discover_result().to_string();
            return Ok(Forward::Local(jsonrpc::result(id.get(), &discover)));
        }
        if method == "tools/call"
            && let Some(tool) = facts.name.as_deref()
        {
            self.ensure_pinned(caller, target, &link, upstream_modern, tool)
                .await?;
        }
        let translated = match over_modern {
            Some((caps, info)) => Some(
                era::add_modern_meta(params, caps, info)
                    .map_err(|e| Refused::rejected(code::INVALID_PARAMS, e))?,
            ),
            None => None,
        };
        let owner = match session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let (upstream, driver) = link
            .request_driven(Outgoing {
                owner: &owner,
                client_id: id.get(),
                method,
                name: facts.name.as_deref(),
                params: translated.as_deref().or(params),
                progress_token: facts.progress_token.clone(),
            })
            .map_err(unavailable)?;
        Ok(Forward::Upstream(Exchange {
            mask: MaskSet::default(),
            link,
            upstream,
            driver,
            owner,
            shape: Shape {
                filter: ListFilter::of(method),
                modern_client: session.is_none(),
                modernise: session.is_none() && (!upstream_modern || era::is_cacheable(method)),
                legacy_client_over_modern: over_modern.is_some(),
            },
        }))
    }

    /// A tool is callable only with a pin: one the gateway has never seen listed has no
    /// fingerprint vouching for it (and was never filtered by policy for anyone). Before the
    /// first call of an unpinned tool the gateway lists the upstream's tools itself and pins
    /// it; a tool the upstream does not list, or lists changed, is refused.
    async fn ensure_pinned(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        link: &Arc<Link>,
        upstream_modern: bool,
        tool: &str,
    ) -> Result<(), Refused> {
        if self
            .pins
            .is_pinned(&target.name, tool)
            .map_err(pin_store_failed)?
        {
            return Ok(());
        }
        let listed = self
            .find_listed_tool(link, upstream_modern, tool)
            .await
            .map_err(|why| {
                Refused::failed(
                    code::UPSTREAM_UNAVAILABLE,
                    format!(
                        "upstream {}: tool {tool:?} has no pin and listing the upstream's tools to pin it failed: {why}",
                        target.name
                    ),
                )
            })?;
        let Some(listed) = listed else {
            return Err(Refused::rejected(
                code::INVALID_PARAMS,
                format!(
                    "tool {tool:?} is not in the tools/list of {}: only a listed (and pinned) tool can be called",
                    target.name
                ),
            ));
        };
        if self.tool_pin_holds(caller, target, &listed, tool).await {
            return Ok(());
        }
        Err(pin_withheld(
            &target.name,
            tool,
            json!({ "rule": "tool-pin" }),
        ))
    }

    /// The upstream's listing of `tool`, read page by page (bounded), or `None` when it does
    /// not list it.
    async fn find_listed_tool(
        &self,
        link: &Arc<Link>,
        upstream_modern: bool,
        tool: &str,
    ) -> Result<Option<Value>, String> {
        const MAX_PAGES: usize = 32;
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = serde_json::Map::new();
            if let Some(c) = cursor.take() {
                params.insert("cursor".into(), Value::String(c));
            }
            if upstream_modern {
                params.insert("_meta".into(), self.own_meta());
            }
            let params = serde_json::value::to_raw_value(&params).expect("serialises");
            let result = self
                .call(link, "tools/list", Some(&params))
                .await
                .map_err(|e| e.to_string())??;
            let tools = result["tools"].as_array().ok_or("no tools in the answer")?;
            if let Some(found) = tools.iter().find(|t| t["name"] == tool) {
                return Ok(Some(found.clone()));
            }
            match result["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The `_meta` of the gateway's own requests to a 2026-07-28 upstream.
    fn own_meta(&self) -> Value {
        json!({
            era::META_VERSION: era::MODERN,
            era::META_CAPS: {},
            era::META_CLIENT: { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
        })
    }

    /// Answers a refused request with its JSON-RPC error, recorded with the refusal's outcome
    /// and message.
    async fn refuse(
        &self,
        mut ev: AuditEvent,
        refused: Refused,
        id: &str,
        started: Instant,
        tx: &mpsc::Sender<Inbound>,
    ) {
        let answer = jsonrpc::error(Some(id), refused.code, &refused.message, refused.data);
        ev.outcome = refused.outcome;
        ev.detail = Some(refused.message);
        self.release(ev, answer, id, started, tx).await;
    }

    /// Records a request's event and then releases its answer: the last step of every
    /// request. An answer whose event cannot be written is withheld (fail closed).
    async fn release(
        &self,
        mut ev: AuditEvent,
        answer: String,
        id: &str,
        started: Instant,
        tx: &mpsc::Sender<Inbound>,
    ) {
        ev.result = Some(self.audit.digest(answer.as_bytes()));
        ev.duration_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let answer = match self.audit.record(ev).await {
            Ok(_) => answer,
            Err(e) => audit_refusal(id, &e.to_string()).body,
        };
        let _ = tx.send(Inbound::Final(answer)).await;
    }

    /// Relays an upstream's interim messages and answer to the caller, post-processes the
    /// answer, records the event, then releases the answer.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        self: Arc<Self>,
        caller: Caller,
        target: Arc<TargetRuntime>,
        exchange: Exchange,
        tx: mpsc::Sender<Inbound>,
        mut ev: AuditEvent,
        method: String,
        client_id: String,
        started: Instant,
    ) {
        let Exchange {
            link,
            mut upstream,
            driver,
            owner,
            shape,
            mask,
        } = exchange;
        let mut masked = Report::default();
        // Interim messages of a masked request are masked one by one as they pass; one that
        // cannot be read cannot be masked, and is not relayed.
        let relay = async |text: String, masked: &mut Report| {
            if let Some(text) = mask.mask_message(text, masked) {
                let _ = tx.send(Inbound::Interim(text)).await;
            }
        };
        let deadline = tokio::time::sleep(self.settings.request_timeout);
        tokio::pin!(deadline);
        // The HTTP exchange runs inside this task; once done it parks forever so the
        // select below keeps reading what it delivered.
        let driver = async move {
            if let Some(driver) = driver {
                driver.await;
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(driver);
        let answer = loop {
            tokio::select! {
                () = &mut driver => unreachable!("the driver never completes"),
                msg = upstream.recv() => match msg {
                    Some(Inbound::Interim(text)) if shape.modern_client => {
                        // A stateless caller cannot answer a server-to-client request: refuse
                        // it for the caller, so the upstream does not wait forever.
                        match Message::parse(text.as_bytes(), usize::MAX) {
                            Ok(Message::Request { id, .. }) => {
                                let reply = jsonrpc::error(Some(id.get()), code::METHOD_NOT_FOUND, "the gateway does not relay server-to-client requests to stateless callers", None);
                                let _ = link.send(reply, "").await;
                            }
                            _ => relay(text, &mut masked).await,
                        }
                    }
                    Some(Inbound::Interim(text)) => relay(text, &mut masked).await,
                    Some(Inbound::Final(text)) => break Ok(text),
                    None => break Err("the request was cancelled".to_string()),
                },
                _ = &mut deadline => {
                    link.cancel(&owner, &client_id, "timed out at the gateway").await;
                    break Err(format!("no answer within {:?}", self.settings.request_timeout));
                }
            }
        };
        let answer = match answer {
            Ok(text) => {
                let (text, outcome, detail) = self
                    .shape_answer(&caller, &target, text, &method, shape, (&mask, &mut masked))
                    .await;
                ev.outcome = outcome;
                ev.detail = detail;
                ev.masked = masking::summary(&masked);
                text
            }
            Err(why) => {
                ev.outcome = Outcome::Failed;
                let message = format!("upstream {}: {why}", target.name);
                ev.detail = Some(message.clone());
                jsonrpc::error(Some(&client_id), code::UPSTREAM_UNAVAILABLE, &message, None)
            }
        };
        self.release(ev, answer, &client_id, started, &tx).await;
    }

    /// Filters and translates an upstream answer. Returns the text to release, the outcome
    /// and a detail for the event.
    async fn shape_answer(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        text: String,
        method: &str,
        shape: Shape,
        // The profiles masking the answer, and where to count what they mask.
        (mask, masked): (&MaskSet, &mut Report),
    ) -> (String, Outcome, Option<String>) {
        let Ok(Message::Response { id, body }) =
            Message::parse(text.as_bytes(), self.settings.max_bytes)
        else {
            return (
                text,
                Outcome::UpstreamError,
                Some("malformed answer from upstream".into()),
            );
        };
        let result = match body {
            ResponseBody::Error(e) => {
                return shape_error(&target.name, id.get(), text, e.get(), mask, masked);
            }
            ResponseBody::Result(r) => r,
        };
        if !(shape.filter.is_some()
            || shape.modernise
            || shape.legacy_client_over_modern
            || !mask.is_empty())
        {
            return (text, Outcome::Success, None);
        }
        let Ok(Value::Object(mut result)) = serde_json::from_str::<Value>(result.get()) else {
            if !mask.is_empty() {
                // What cannot be read cannot be masked: it does not leave.
                let message = format!(
                    "upstream {} answered with a result that is not a JSON object, which the masking profile cannot check",
                    target.name
                );
                return (
                    jsonrpc::error(Some(id.get()), code::INTERNAL_ERROR, &message, None),
                    Outcome::UpstreamError,
                    Some(message),
                );
            }
            return (text, Outcome::Success, None);
        };
        let mut detail = None;
        if shape.legacy_client_over_modern
            && result.get("resultType").and_then(Value::as_str) == Some("input_required")
        {
            let message = format!(
                "upstream {} asked for more input (a 2026-07-28 multi-round-trip request), which the gateway cannot relay to a session-based client",
                target.name
            );
            return (
                jsonrpc::error(Some(id.get()), code::INTERNAL_ERROR, &message, None),
                Outcome::UpstreamError,
                Some(message),
            );
        }
        if let Some(filter) = shape.filter
            && let Some(Value::Array(items)) = result.remove(filter.key)
        {
            let total = items.len();
            let mut visible = Vec::with_capacity(total);
            let mut withheld = Vec::new();
            for item in items {
                let Some(name) = item.get(filter.name).and_then(Value::as_str) else {
                    continue;
                };
                if !self
                    .policy
                    .visible(&caller.identity, &target.name, filter.kind, name)
                {
                    continue;
                }
                let pinned = filter.kind != McpKind::Tool
                    || self.tool_pin_holds(caller, target, &item, name).await;
                if pinned {
                    visible.push(item);
                } else {
                    withheld.push(name.to_string());
                }
            }
            detail = Some(format!(
                "{} of {total} {} shown{}",
                visible.len(),
                filter.key,
                if withheld.is_empty() {
                    String::new()
                } else {
                    format!("; withheld after a change: {}", withheld.join(", "))
                }
            ));
            result.insert(filter.key.into(), Value::Array(visible));
        }
        // After the filter, which matches on names and pins on definitions as the upstream
        // sent them.
        mask.mask_result(&mut result, masked);
        if shape.modernise {
            era::modernise_result(&mut result, method);
        }
        let text = jsonrpc::result(id.get(), &Value::Object(result).to_string());
        (text, Outcome::Success, detail)
    }

    /// Checks a listed tool against its pin (pinning it if new). A changed tool is withheld,
    /// reported once per new fingerprint; a failing pin store withholds too (fail closed).
    async fn tool_pin_holds(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        tool: &Value,
        name: &str,
    ) -> bool {
        match self.pins.check(&target.name, name, &fingerprint(tool)) {
            Ok(PinCheck::New | PinCheck::Unchanged) => true,
            Ok(PinCheck::Changed {
                pinned,
                seen,
                first_report,
            }) => {
                if first_report {
                    let mut ev = self.event(
                        EventType::ToolPinMismatch,
                        Outcome::Info,
                        Some(caller),
                        &target.name,
                    );
                    ev.resource = Some(name.to_string());
                    ev.detail = Some(format!(
                        "tool {name:?} changed (pinned {pinned}, now {seen}); withheld until `portcullis tools accept {} {name}`",
                        target.name
                    ));
                    tracing::warn!(target = %target.name, tool = %name, "tool changed since pinned; withheld");
                    if let Err(e) = self.audit.record(ev).await {
                        tracing::error!("cannot record a tool pin mismatch: {e}");
                    }
                }
                false
            }
            Err(e) => {
                tracing::error!("tool pin store: {e}; withholding {name}");
                false
            }
        }
    }

    /// A notification from a caller: relayed upstream (cancellations are mapped to the
    /// upstream's request id) and recorded.
    pub async fn notification(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), Refusal> {
        let mut ev = self.event(
            EventType::Notification,
            Outcome::Success,
            Some(caller),
            &target.name,
        );
        ev.session = session.map(|s| s.id.clone());
        ev.action = Some(method.to_string());
        ev.arguments = params.map(|p| self.audit.digest(p.get().as_bytes()));
        let client_era = match session {
            Some(_) => ClientEra::Session,
            None => ClientEra::Stateless,
        };
        if !era::is_client_notification(client_era, method) {
            // Without an id this would reach the upstream undecided: a `tools/call` sent as
            // a notification must not slip past policy, nor a notification of the
            // upstream's own kind (`notifications/resources/updated`, say) be fed to it.
            let (code, message) = if method.starts_with("notifications/") {
                (
                    code::METHOD_NOT_FOUND,
                    format!(
                        "{method:?} is not a notification a {} client sends; the gateway relays only the ones the specification defines",
                        client_era.label()
                    ),
                )
            } else {
                (
                    code::INVALID_REQUEST,
                    format!(
                        "{method:?} is not a notification method; send it as a request (with an id) so it can be decided"
                    ),
                )
            };
            ev.outcome = Outcome::Rejected;
            ev.detail = Some(message.clone());
            if let Err(e) = self.audit.record(ev).await {
                return Err(audit_refusal("null", &e.to_string()));
            }
            return Err(Refusal::new(
                http::StatusCode::BAD_REQUEST,
                None,
                code,
                &message,
            ));
        }
        if let Err(refusal) = self.refuse_unrecordable("null") {
            // Recorded all the same: events are still written below the reserve.
            ev.outcome = Outcome::Failed;
            ev.detail = Some("not relayed: the audit log cannot record it".into());
            let _ = self.audit.record(ev).await;
            return Err(refusal);
        }
        let link = match session {
            Some(s) if matches!(s.route, SessionRoute::Dedicated) => Some((s.link.clone(), false)),
            _ => target
                .shared
                .lock()
                .await
                .as_ref()
                .map(|(l, e)| (l.clone(), e.is_modern())),
        };
        let owner = match session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let held_here = if method == "notifications/cancelled" {
            params
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|v| v.get("requestId").map(Value::to_string))
                .and_then(|id| self.held.lock().expect("lock").remove(&(owner.clone(), id)))
        } else {
            None
        };
        if let Some(waiting) = held_here {
            // Held at the gateway: no upstream has seen it, so the cancel ends the wait here.
            let _ = waiting.send(());
            ev.detail = Some("cancelled a request held for approval".into());
            return self
                .audit
                .record(ev)
                .await
                .map(|_| ())
                .map_err(|e| audit_refusal("null", &e.to_string()));
        }
        if let Some((link, upstream_modern)) = link {
            if method == "notifications/cancelled" {
                let request_id = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("requestId").map(Value::to_string));
                if let Some(request_id) = request_id {
                    link.cancel(&owner, &request_id, "cancelled by the caller")
                        .await;
                }
            } else if !(upstream_modern && method == "notifications/initialized")
                && let Err(e) = link
                    .send(jsonrpc::notification(method, params), method)
                    .await
            {
                ev.outcome = Outcome::Failed;
                ev.detail = Some(e.to_string());
            }
        }
        self.audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(|e| audit_refusal("null", &e.to_string()))
    }

    /// A caller's answer to a server-to-client request (elicitation, sampling, roots).
    pub async fn client_response(
        self: &Arc<Self>,
        caller: &Caller,
        session: &Arc<Session>,
        id: &RawValue,
        body: &ResponseBody,
    ) -> Result<(), Refusal> {
        let text = jsonrpc::response(id.get(), body);
        let mut ev = self.event(
            EventType::Notification,
            Outcome::Success,
            Some(caller),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.action = Some(
            if body.is_error() {
                "response/error"
            } else {
                "response"
            }
            .into(),
        );
        ev.request_id = Some(id.get().to_string());
        ev.result = Some(self.audit.digest(text.as_bytes()));
        // Checked before the upstream's request is taken as answered, so the client can
        // answer again once the log can record it.
        if let Err(refusal) = self.refuse_unrecordable(id.get()) {
            ev.outcome = Outcome::Failed;
            ev.detail = Some("not relayed: the audit log cannot record it".into());
            let _ = self.audit.record(ev).await;
            return Err(refusal);
        }
        // Only an answer to a request the upstream made on this session is relayed: anything
        // else would feed the upstream a result it never asked for (or answer another
        // session's request on a shared link).
        let dedicated = matches!(session.route, SessionRoute::Dedicated);
        if !session
            .link
            .take_server_request(id.get(), &session.id, dedicated)
        {
            let message = format!(
                "response {} answers no request the upstream made on this session; it is not relayed",
                id.get()
            );
            ev.outcome = Outcome::Rejected;
            ev.detail = Some(message.clone());
            if let Err(e) = self.audit.record(ev).await {
                return Err(audit_refusal(id.get(), &e.to_string()));
            }
            return Err(Refusal::new(
                http::StatusCode::BAD_REQUEST,
                Some(id.get()),
                code::INVALID_REQUEST,
                &message,
            ));
        }
        if let Err(e) = session.link.send(text, "").await {
            ev.outcome = Outcome::Failed;
            ev.detail = Some(e.to_string());
        }
        self.audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(|e| audit_refusal(id.get(), &e.to_string()))
    }
}

/// How often a held caller with a progress token hears that it is still waiting.
const HOLD_PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// What the decision step found: the answer's masking profiles, or what a hold needs.
#[derive(Default)]
struct Decided {
    mask: MaskSet,
    hold: Option<Arc<ApprovalRequirement>>,
}

/// A held request, owned, so it can wait in a future of its own.
struct HeldCall {
    id: Box<RawValue>,
    method: String,
    params: Option<Box<RawValue>>,
    facts: RequestFacts,
}

/// The progress message of a held request: what it waits for and where people decide.
fn awaiting_message(approval: &Approval, admin_url: Option<&str>) -> String {
    let mut text = format!(
        "awaiting approval {} ({} approval(s) from {}, until {}): decide with `portcullis approvals approve {}`",
        approval.id,
        approval.min_approvals,
        approval.approvers.join(", "),
        approval.expires_at,
        approval.id
    );
    if let Some(url) = admin_url {
        text.push_str(&format!(" or at {url}/api/v1/approvals/{}", approval.id));
    }
    text
}

/// The outcome, code and message for a held request that was not approved.
fn hold_refusal(what: &str, approval: &Approval) -> (Outcome, i64, String) {
    let (outcome, code) = match approval.status {
        Status::Denied | Status::Expired => (Outcome::Denied, code::POLICY_HOLD),
        Status::Cancelled => (Outcome::Failed, code::POLICY_HOLD),
        // Still pending: the expiry could not be recorded. Fail closed.
        Status::Pending | Status::Approved => (Outcome::Failed, code::AUDIT_UNAVAILABLE),
    };
    (outcome, code, approval.refusal(what))
}

/// The JSON-RPC error for a verdict that does not allow or hold, or `None`.
fn refusal_of(verdict: &Verdict, method: &str, name: &str) -> Option<(i64, String)> {
    match &verdict.decision {
        Decision::Allow { .. } | Decision::Hold(_) => None,
        Decision::Deny { reason } => Some((
            code::POLICY_DENIED,
            format!(
                "{method} {name:?} denied by rule {:?}: {reason}",
                verdict.rule_label()
            ),
        )),
    }
}

/// The refusal of a request whose decision is a hold where nobody can be asked: a
/// completion or a subscription is not worth a person's approval, so it is not offered.
fn not_held(method: &str, verb: &str, name: &str, ev: &AuditEvent) -> Refused {
    Refused {
        outcome: Outcome::Denied,
        code: code::POLICY_DENIED,
        message: format!(
            "{method} for {name:?} refused: {verb} {name:?} is held for approval by rule {:?}, and {method} is not held",
            ev.rule.as_deref().unwrap_or("")
        ),
        data: Some(json!({ "decision": "hold", "rule": &ev.rule, "event": &ev.id })),
    }
}

/// Why a caller no rule on the target applies to gets nothing from it.
fn no_rule_message(identity: &Identity, target: &str) -> String {
    format!(
        "no rule on target {target:?} applies to {}; nothing on it is open to this caller",
        identity.subject
    )
}

/// How many of `sessions` belong to `identity` on `target`.
fn sessions_of(
    sessions: &HashMap<String, Arc<Session>>,
    identity: &Identity,
    target: &str,
) -> usize {
    own_sessions(sessions, identity, target).count()
}

/// The sessions `identity` holds on `target`.
fn own_sessions<'a>(
    sessions: &'a HashMap<String, Arc<Session>>,
    identity: &'a Identity,
    target: &'a str,
) -> impl Iterator<Item = &'a Arc<Session>> {
    sessions
        .values()
        .filter(move |s| s.belongs_to(identity) && &*s.target.name == target)
}

/// The refusal of a tool whose definition changed since it was pinned.
fn pin_withheld(target: &str, tool: &str, data: Value) -> Refused {
    Refused {
        outcome: Outcome::Denied,
        code: code::TOOL_PIN_MISMATCH,
        message: format!(
            "tool {tool:?} changed since it was pinned and is withheld until an operator runs `portcullis tools accept {target} {tool}`"
        ),
        data: Some(data),
    }
}

/// The refusal when the pin store cannot be read: fail closed.
fn pin_store_failed(e: crate::pins::PinError) -> Refused {
    Refused::failed(
        code::INTERNAL_ERROR,
        format!("cannot check the tool pin: {e}"),
    )
}

/// The owner key of a stateless caller's requests on a shared link.
fn caller_key(identity: &Identity) -> String {
    format!("{} {}", identity.issuer, identity.subject)
}

fn audit_refusal(id: &str, cause: &str) -> Refusal {
    Refusal {
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        body: jsonrpc::error(
            Some(id),
            code::AUDIT_UNAVAILABLE,
            &format!("the audit log cannot record this request, so it is refused: {cause}"),
            None,
        ),
    }
}

/// An upstream's error answer, masked (its message and data are text a model reads like any
/// result), with the outcome and detail of its event.
fn shape_error(
    target: &str,
    id: &str,
    text: String,
    error: &str,
    mask: &MaskSet,
    masked: &mut Report,
) -> (String, Outcome, Option<String>) {
    let mut error = serde_json::from_str::<Value>(error).unwrap_or(Value::Null);
    // The link answers for an upstream that died or broke its stream: the gateway could not
    // complete the request, which is not an error of the upstream's.
    let link_failure = error["code"] == code::UPSTREAM_UNAVAILABLE
        && error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("upstream {target}: ")));
    let outcome = if link_failure {
        Outcome::Failed
    } else {
        Outcome::UpstreamError
    };
    let text = match &mut error {
        _ if mask.is_empty() => text,
        Value::Object(object) => {
            mask.mask_error(object, masked);
            jsonrpc::response(id, &ResponseBody::Error(raw(&error)))
        }
        _ => {
            let message = format!(
                "upstream {target} answered with an error that is not a JSON object, which the masking profile cannot check"
            );
            return (
                jsonrpc::error(Some(id), code::INTERNAL_ERROR, &message, None),
                Outcome::UpstreamError,
                Some(message),
            );
        }
    };
    // The event's detail is the message as the caller got it: masked.
    let message = error["message"].as_str().map(str::to_string);
    (text, outcome, message)
}

/// A JSON value as raw JSON text.
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value serialises")
}

/// An answer the gateway made itself (from what the upstream told it, such as discovery's
/// instructions) is masked like an upstream's, and the event says what was masked; one that
/// cannot be read is not released.
fn mask_local(mask: &MaskSet, answer: String, id: &str, ev: &mut AuditEvent) -> String {
    if mask.is_empty() {
        return answer;
    }
    let mut masked = Report::default();
    let answer = mask.mask_message(answer, &mut masked);
    ev.masked = masking::summary(&masked);
    answer.unwrap_or_else(|| {
        jsonrpc::error(
            Some(id),
            code::INTERNAL_ERROR,
            "the gateway could not read its own answer to mask it",
            None,
        )
    })
}
