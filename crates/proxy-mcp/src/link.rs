//! Upstream links: one logical connection to an MCP server, over stdio or streamable HTTP.
//!
//! A link multiplexes the requests of one gateway session (or of all stateless callers of a
//! target) onto its upstream. The gateway gives every forwarded request an id of its own, so
//! ids chosen by different callers can never collide, and maps the answer back to the
//! caller's id. Messages the upstream sends that are not answers are routed to the request
//! they belong to when that is knowable (the HTTP response stream they arrived on, or a
//! progress token), and otherwise to the session's stream of unsolicited messages.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::jsonrpc::{self, Message};

/// The exchange of one request with an HTTP upstream, to be polled to completion.
pub type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What an upstream sends back for one forwarded request.
#[derive(Debug)]
pub enum Inbound {
    /// A notification or a server-to-client request sent while the request is in flight.
    Interim(String),
    /// The answer, already carrying the caller's id.
    Final(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("the upstream connection is closed: {0}")]
    Closed(String),
    #[error("cannot start the upstream process: {0}")]
    Spawn(String),
    #[error("the upstream is unreachable: {0}")]
    Unreachable(String),
    /// The gateway's own request (`{0}`: its method) got no answer in time.
    #[error("the upstream is unreachable: {0} timed out")]
    Timeout(String),
    #[error("too many upstream processes for this target (limit {0}); try again later")]
    TooManyProcesses(usize),
}

impl LinkError {
    /// How the upstream failed, for the metrics; `None` for the gateway's own limit.
    pub fn fault(&self) -> Option<portcullis_guard::UpstreamFault> {
        use portcullis_guard::UpstreamFault;
        match self {
            LinkError::Closed(_) => Some(UpstreamFault::Closed),
            LinkError::Spawn(_) | LinkError::Unreachable(_) => Some(UpstreamFault::Unreachable),
            LinkError::Timeout(_) => Some(UpstreamFault::Timeout),
            LinkError::TooManyProcesses(_) => None,
        }
    }

    /// The refusal of a request this error stopped.
    pub fn refusal(&self, target: &str) -> portcullis_guard::Refusal {
        use portcullis_guard::{Refusal, RefusalKind};
        let message = format!("upstream {target}: {self}");
        match self.fault() {
            Some(fault) => Refusal::upstream(fault, message),
            None => Refusal::new(RefusalKind::UpstreamFailed, message),
        }
    }
}

/// How to reach an upstream.
#[derive(Debug, Clone)]
pub enum UpstreamSpec {
    Stdio {
        command: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<std::path::PathBuf>,
    },
    Http {
        url: String,
        /// The upstream's own credential, already read from the environment.
        auth: Option<(http::HeaderName, http::HeaderValue)>,
    },
}

/// The request-level facts a transport may need besides the body.
pub struct Outgoing<'a> {
    /// Who sent it (a session id, or the caller for stateless requests): ids and progress
    /// tokens are only unique per owner, and a shared link carries many owners.
    pub owner: &'a str,
    /// The caller's id, as raw JSON text; the answer is rewritten to carry it.
    pub client_id: &'a str,
    pub method: &'a str,
    /// `params.name` or `params.uri`, for the `Mcp-Name` header of modern HTTP upstreams.
    pub name: Option<&'a str>,
    pub params: Option<&'a RawValue>,
    pub progress_token: Option<String>,
}

struct Pending {
    owner: String,
    client_id: String,
    progress_token: Option<String>,
    tx: mpsc::Sender<Inbound>,
}

enum Transport {
    Stdio {
        stdin: mpsc::Sender<String>,
        child: Mutex<Option<Child>>,
        _permit: OwnedSemaphorePermit,
    },
    Http {
        client: reqwest::Client,
        /// Parsed once: a string URL would be re-parsed (with IDNA processing) per request.
        url: reqwest::Url,
        auth: Option<(http::HeaderName, http::HeaderValue)>,
        session_id: Mutex<Option<String>>,
        protocol_version: Mutex<Option<String>>,
    },
}

pub struct Link {
    target: Arc<str>,
    transport: Transport,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    unsolicited: mpsc::Sender<String>,
    /// The server-to-client requests the upstream sent and nobody answered yet, as (owner of
    /// the request whose stream carried it, if any; raw JSON id): a caller's response is
    /// relayed only when it answers one of these.
    server_requests: Mutex<VecDeque<(Option<String>, String)>>,
    closed: AtomicBool,
    max_bytes: usize,
}

/// How many unanswered server-to-client requests a link remembers; the oldest are forgotten
/// (and can no longer be answered) past this.
const SERVER_REQUESTS_KEPT: usize = 256;

/// Capacity of the per-request and unsolicited queues: an upstream that floods notifications
/// faster than the caller reads them is slowed down (request queues) or loses the excess
/// (unsolicited queue), never grows gateway memory without bound.
const QUEUE: usize = 64;
const STDERR_LINE_MAX: usize = 4096;

impl Link {
    /// Starts a stdio child process or prepares an HTTP link. Returns the link and the
    /// receiver of unsolicited upstream messages.
    pub fn open(
        target: Arc<str>,
        spec: &UpstreamSpec,
        permit: Option<OwnedSemaphorePermit>,
        http_client: &reqwest::Client,
        max_bytes: usize,
    ) -> Result<(Arc<Link>, mpsc::Receiver<String>), LinkError> {
        let (unsolicited, unsolicited_rx) = mpsc::channel(QUEUE);
        match spec {
            UpstreamSpec::Stdio { command, env, cwd } => {
                let permit = permit.expect("a stdio link needs a process slot");
                let mut cmd = Command::new(&command[0]);
                cmd.args(&command[1..])
                    .env_clear()
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                // A minimal environment: the program finds its tools, but none of the
                // gateway's own secrets are inherited.
                for var in ["PATH", "HOME", "LANG", "TMPDIR", "USER"] {
                    if let Ok(v) = std::env::var(var) {
                        cmd.env(var, v);
                    }
                }
                cmd.envs(env.iter().map(|(k, v)| (k, v)));
                if let Some(dir) = cwd {
                    cmd.current_dir(dir);
                }
                let mut child = cmd
                    .spawn()
                    .map_err(|e| LinkError::Spawn(format!("{}: {e}", command[0])))?;
                let stdin = child.stdin.take().expect("piped");
                let stdout = child.stdout.take().expect("piped");
                let stderr = child.stderr.take().expect("piped");
                let (stdin_tx, mut stdin_rx) = mpsc::channel::<String>(QUEUE);
                let link = Arc::new(Link {
                    target: target.clone(),
                    transport: Transport::Stdio {
                        stdin: stdin_tx,
                        child: Mutex::new(Some(child)),
                        _permit: permit,
                    },
                    pending: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(1),
                    unsolicited,
                    server_requests: Mutex::new(VecDeque::new()),
                    closed: AtomicBool::new(false),
                    max_bytes,
                });
                tokio::spawn(async move {
                    let mut stdin = stdin;
                    while let Some(line) = stdin_rx.recv().await {
                        let mut buf = line.into_bytes();
                        buf.push(b'\n');
                        if stdin.write_all(&buf).await.is_err() || stdin.flush().await.is_err() {
                            break;
                        }
                    }
                });
                let reader = link.clone();
                tokio::spawn(async move { reader.read_stdout(stdout).await });
                let name = target.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stderr);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match (&mut lines)
                            .take(STDERR_LINE_MAX as u64)
                            .read_until(b'\n', &mut buf)
                            .await
                        {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let text = String::from_utf8_lossy(&buf);
                                tracing::info!(target: "portcullis::upstream", upstream = %name, "{}", text.trim_end());
                            }
                        }
                    }
                });
                Ok((link, unsolicited_rx))
            }
            UpstreamSpec::Http { url, auth } => Ok((
                Arc::new(Link {
                    target,
                    transport: Transport::Http {
                        client: http_client.clone(),
                        url: reqwest::Url::parse(url).map_err(|e| {
                            LinkError::Unreachable(format!("bad upstream URL: {e}"))
                        })?,
                        auth: auth.clone(),
                        session_id: Mutex::new(None),
                        protocol_version: Mutex::new(None),
                    },
                    pending: Mutex::new(HashMap::new()),
                    next_id: AtomicU64::new(1),
                    unsolicited,
                    server_requests: Mutex::new(VecDeque::new()),
                    closed: AtomicBool::new(false),
                    max_bytes,
                }),
                unsolicited_rx,
            )),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The protocol version to announce in HTTP headers once negotiated.
    pub fn set_protocol_version(&self, version: &str) {
        if let Transport::Http {
            protocol_version, ..
        } = &self.transport
        {
            *protocol_version.lock().expect("lock") = Some(version.to_string());
        }
    }

    /// Forwards a request. The receiver yields interim messages, then the answer.
    pub fn request(
        self: &Arc<Self>,
        out: Outgoing<'_>,
    ) -> Result<mpsc::Receiver<Inbound>, LinkError> {
        let (rx, driver) = self.request_driven(out)?;
        if let Some(driver) = driver {
            tokio::spawn(driver);
        }
        Ok(rx)
    }

    /// Like [`Link::request`], but an HTTP upstream's exchange is returned as a future for
    /// the caller to poll alongside the receiver, which saves a task hand-off per request
    /// on the hot path. Dropping the driver abandons the exchange.
    pub fn request_driven(
        self: &Arc<Self>,
        out: Outgoing<'_>,
    ) -> Result<(mpsc::Receiver<Inbound>, Option<Driver>), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed("the upstream has gone away".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.pending.lock().expect("lock").insert(
            id,
            Pending {
                owner: out.owner.to_string(),
                client_id: out.client_id.to_string(),
                progress_token: out.progress_token,
                tx,
            },
        );
        let text = jsonrpc::request(&id.to_string(), out.method, out.params);
        match &self.transport {
            Transport::Stdio { stdin, .. } => {
                if stdin.try_send(text).is_err() {
                    self.pending.lock().expect("lock").remove(&id);
                    return Err(LinkError::Closed(
                        "the upstream process is not reading its input".into(),
                    ));
                }
                Ok((rx, None))
            }
            Transport::Http { .. } => {
                let link = self.clone();
                let method = out.method.to_string();
                let name = out.name.map(str::to_string);
                let driver: Driver =
                    Box::pin(
                        async move { link.post(Some(id), text, &method, name.as_deref()).await },
                    );
                Ok((rx, Some(driver)))
            }
        }
    }

    /// Sends a notification, or the caller's answer to a server-to-client request.
    pub async fn send(self: &Arc<Self>, text: String, method: &str) -> Result<(), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed("the upstream has gone away".into()));
        }
        match &self.transport {
            Transport::Stdio { stdin, .. } => stdin
                .send(text)
                .await
                .map_err(|_| LinkError::Closed("the upstream process exited".into())),
            Transport::Http { .. } => {
                self.post(None, text, method, None).await;
                Ok(())
            }
        }
    }

    /// Abandons a request (timeout, caller gone) and tells the upstream to stop working on
    /// it: its answer, if it ever comes, is dropped.
    pub async fn cancel(self: &Arc<Self>, owner: &str, client_id: &str, reason: &str) {
        let gateway_id = {
            let mut pending = self.pending.lock().expect("lock");
            let found = pending
                .iter()
                .find(|(_, p)| p.owner == owner && p.client_id == client_id)
                .map(|(id, _)| *id);
            if let Some(id) = found {
                pending.remove(&id);
            }
            found
        };
        if let Some(id) = gateway_id {
            let params = serde_json::json!({ "requestId": id, "reason": reason });
            let params = serde_json::value::to_raw_value(&params).expect("serialises");
            let text = jsonrpc::notification("notifications/cancelled", Some(&params));
            let _ = self.send(text, "notifications/cancelled").await;
        }
    }

    /// Ends the upstream session: kills the child, or sends DELETE to an HTTP upstream.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.fail_all("the session was closed");
        match &self.transport {
            Transport::Stdio { child, .. } => {
                let child = child.lock().expect("lock").take();
                if let Some(mut child) = child {
                    let _ = child.start_kill();
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
                }
            }
            Transport::Http {
                client,
                url,
                session_id,
                ..
            } => {
                let has_session = session_id.lock().expect("lock").is_some();
                if has_session {
                    let req = self.with_session_headers(client.delete(url.clone()));
                    let _ = req.send().await;
                }
            }
        }
    }

    async fn read_stdout(self: Arc<Self>, stdout: tokio::process::ChildStdout) {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            // Bounded: a line longer than the message limit is an upstream fault, not a
            // reason to grow memory without end.
            let limit = self.max_bytes as u64 + 1;
            match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 >= limit => {
                    tracing::warn!(upstream = %self.target, "upstream message over {} bytes; closing the link", self.max_bytes);
                    break;
                }
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if !text.is_empty() {
                        self.route(text, None).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(upstream = %self.target, "reading upstream output failed: {e}");
                    break;
                }
            }
        }
        self.closed.store(true, Ordering::Release);
        self.fail_all("the upstream process exited");
    }

    /// Sends every waiting request an error answer.
    fn fail_all(&self, why: &str) {
        let pending: Vec<Pending> = self
            .pending
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in pending {
            let _ = p.tx.try_send(Inbound::Final(jsonrpc::error(
                Some(&p.client_id),
                jsonrpc::code::UPSTREAM_UNAVAILABLE,
                &format!("upstream {}: {why}", self.target),
                None,
            )));
        }
    }

    /// Delivers one message from the upstream. `via` is the gateway id of the request whose
    /// HTTP response stream carried it, if any.
    async fn route(&self, text: &str, via: Option<u64>) {
        let message = match Message::parse(text.as_bytes(), self.max_bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(upstream = %self.target, "dropping malformed upstream message: {e}");
                self.fail_refused_answer(text, &e.message).await;
                return;
            }
        };
        match message {
            Message::Response { id, body } => {
                let Ok(gateway_id) = id.get().parse::<u64>() else {
                    tracing::warn!(upstream = %self.target, "dropping an answer with an id the gateway never sent: {}", id.get());
                    return;
                };
                let pending = self.pending.lock().expect("lock").remove(&gateway_id);
                if let Some(p) = pending {
                    let _ =
                        p.tx.send(Inbound::Final(jsonrpc::response(&p.client_id, &body)))
                            .await;
                }
            }
            Message::Notification {
                ref method,
                ref params,
            } => {
                let token = (method == "notifications/progress")
                    .then(|| params.as_deref().and_then(progress_token_of))
                    .flatten();
                let tx = {
                    let pending = self.pending.lock().expect("lock");
                    // Tokens are chosen by callers; on a shared link two owners may pick the
                    // same one. Deliver only when the token names one owner's request:
                    // better to drop a progress note than to show it to another caller.
                    let by_token = token.and_then(|t| {
                        let mut matching = pending
                            .values()
                            .filter(|p| p.progress_token.as_deref() == Some(t.as_str()));
                        let first = matching.next()?;
                        matching.all(|p| p.owner == first.owner).then_some(first)
                    });
                    by_token
                        .or_else(|| via.and_then(|v| pending.get(&v)))
                        .map(|p| p.tx.clone())
                };
                self.deliver(tx, text).await;
            }
            Message::Request { ref id, .. } => {
                let carrier = via.and_then(|v| {
                    self.pending
                        .lock()
                        .expect("lock")
                        .get(&v)
                        .map(|p| (p.tx.clone(), p.owner.clone()))
                });
                let (tx, owner) = carrier.unzip();
                self.expect_answer(owner, id.get());
                self.deliver(tx, text).await;
            }
        }
    }

    /// An answer the gateway refuses to read (duplicate keys, a broken envelope) still names
    /// the request it answers: that request fails at once, saying why, rather than waiting
    /// for its timeout. A duplicated `id` names every request it lists.
    async fn fail_refused_answer(&self, text: &str, why: &str) {
        for gateway_id in ids_named(text) {
            let pending = self.pending.lock().expect("lock").remove(&gateway_id);
            if let Some(p) = pending {
                let message = format!(
                    "upstream {} sent an answer the gateway refuses to read, so the request failed: {why}",
                    self.target
                );
                let _ =
                    p.tx.send(Inbound::Final(jsonrpc::error(
                        Some(&p.client_id),
                        jsonrpc::code::INTERNAL_ERROR,
                        &message,
                        None,
                    )))
                    .await;
            }
        }
    }

    /// Remembers a server-to-client request, so the caller's answer to it can be relayed.
    fn expect_answer(&self, owner: Option<String>, id: &str) {
        let mut expected = self.server_requests.lock().expect("lock");
        if expected.len() >= SERVER_REQUESTS_KEPT {
            expected.pop_front();
        }
        expected.push_back((owner, id.to_string()));
    }

    /// Whether `id` answers a server-to-client request of this link that `owner` may answer:
    /// one sent on the stream of `owner`'s request, or (`unowned_ok`: the link is the
    /// owner's own session) one sent outside any request. A match is used up.
    pub fn take_server_request(&self, id: &str, owner: &str, unowned_ok: bool) -> bool {
        let mut expected = self.server_requests.lock().expect("lock");
        let found = expected.iter().position(|(o, i)| {
            i == id
                && match o {
                    Some(o) => o == owner,
                    None => unowned_ok,
                }
        });
        found.and_then(|at| expected.remove(at)).is_some()
    }

    async fn deliver(&self, tx: Option<mpsc::Sender<Inbound>>, text: &str) {
        match tx {
            Some(tx) => {
                let _ = tx.send(Inbound::Interim(text.to_string())).await;
            }
            None => {
                if self.unsolicited.try_send(text.to_string()).is_err() {
                    tracing::warn!(upstream = %self.target, "no reader for an unsolicited upstream message; dropped");
                }
            }
        }
    }

    /// One POST to a streamable-HTTP upstream; reads a JSON or SSE answer.
    async fn post(&self, id: Option<u64>, body: String, method: &str, name: Option<&str>) {
        let Transport::Http {
            client,
            url,
            session_id,
            ..
        } = &self.transport
        else {
            unreachable!("post is only used on HTTP links");
        };
        let mut req = client
            .post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .body(body);
        if !method.is_empty() {
            req = req.header("mcp-method", method);
        }
        if let Some(name) = name {
            req = req.header("mcp-name", crate::headers::encode_header_value(name));
        }
        let failure = match self.with_session_headers(req).send().await {
            Err(e) => Some(format!("request failed: {}", without_url(e))),
            Ok(resp) => {
                if let Some(sid) = resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    *session_id.lock().expect("lock") = Some(sid.to_string());
                }
                let status = resp.status();
                let is_sse = resp
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"));
                if status == http::StatusCode::ACCEPTED {
                    None
                } else if is_sse && status.is_success() {
                    self.read_sse(id, resp).await
                } else {
                    // A JSON answer, including JSON-RPC errors carried on 4xx statuses.
                    match read_bounded(resp, self.max_bytes).await {
                        Ok(bytes) if !bytes.is_empty() && bytes.first() == Some(&b'{') => {
                            self.route(&String::from_utf8_lossy(&bytes), id).await;
                            (!status.is_success() && !status.is_client_error())
                                .then(|| format!("HTTP {status}"))
                        }
                        Ok(_)
                            if status == http::StatusCode::NOT_FOUND
                                && session_id.lock().expect("lock").is_some() =>
                        {
                            self.closed.store(true, Ordering::Release);
                            Some("the upstream session has expired".into())
                        }
                        Ok(_) => Some(format!("HTTP {status}")),
                        Err(e) => Some(e),
                    }
                }
            }
        };
        if let Some(id) = id {
            // The stream ended: if the request was not answered, it never will be.
            let pending = self.pending.lock().expect("lock").remove(&id);
            if let Some(p) = pending {
                let why = failure
                    .unwrap_or_else(|| "the upstream closed the stream without answering".into());
                let _ =
                    p.tx.send(Inbound::Final(jsonrpc::error(
                        Some(&p.client_id),
                        jsonrpc::code::UPSTREAM_UNAVAILABLE,
                        &format!("upstream {}: {why}", self.target),
                        None,
                    )))
                    .await;
            }
        } else if let Some(why) = failure {
            tracing::warn!(upstream = %self.target, "message to upstream failed: {why}");
        }
    }

    async fn read_sse(&self, id: Option<u64>, resp: reqwest::Response) -> Option<String> {
        let mut events = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream());
        while let Some(event) = events.next().await {
            match event {
                Ok(sse) => {
                    if let Some(data) = sse.data {
                        if data.len() > self.max_bytes {
                            return Some(format!("upstream message over {} bytes", self.max_bytes));
                        }
                        if !data.trim().is_empty() {
                            self.route(&data, id).await;
                        }
                    }
                }
                Err(e) => return Some(format!("broken event stream: {e}")),
            }
            if id.is_some_and(|id| !self.pending.lock().expect("lock").contains_key(&id)) {
                // Answered: the rest of this stream, if any, carries nothing for us.
                return None;
            }
        }
        None
    }

    /// Opens the upstream's standalone GET stream (session-based HTTP upstreams) and pumps
    /// what it carries into the unsolicited queue until the link closes.
    pub fn listen(self: &Arc<Self>) {
        let Transport::Http { client, url, .. } = &self.transport else {
            return;
        };
        let req = client
            .get(url.clone())
            .header(http::header::ACCEPT, "text/event-stream");
        let req = self.with_session_headers(req);
        let link = self.clone();
        tokio::spawn(async move {
            if let Ok(resp) = req.send().await
                && resp.status().is_success()
            {
                let _ = link.read_sse(None, resp).await;
            }
        });
    }

    /// The headers every HTTP message of this link carries: the upstream session, the
    /// negotiated protocol version, and the upstream's own credential.
    fn with_session_headers(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Transport::Http {
            auth,
            session_id,
            protocol_version,
            ..
        } = &self.transport
        else {
            return req;
        };
        if let Some(sid) = session_id.lock().expect("lock").clone() {
            req = req.header("mcp-session-id", sid);
        }
        if let Some(v) = protocol_version.lock().expect("lock").clone() {
            req = req.header("mcp-protocol-version", v);
        }
        if let Some((k, v)) = auth {
            req = req.header(k, v);
        }
        req
    }
}

fn progress_token_of(params: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(rename = "progressToken", borrow)]
        progress_token: Option<&'a RawValue>,
    }
    serde_json::from_str::<P<'_>>(params.get())
        .ok()?
        .progress_token
        .map(|t| t.get().to_string())
}

/// Every numeric top-level `id` of a JSON object without a `method`, read leniently
/// (duplicate keys allowed): the requests a message the strict parser refused claims to
/// answer. A message with a `method` is a request of the upstream's, whose ids are its own.
fn ids_named(text: &str) -> Vec<u64> {
    struct Ids(Vec<u64>);
    impl<'de> serde::Deserialize<'de> for Ids {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ids, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Ids;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Ids, A::Error> {
                    let mut ids = Vec::new();
                    let mut request = false;
                    while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                        if key == "id" {
                            if let Some(id) = map.next_value::<serde_json::Value>()?.as_u64() {
                                ids.push(id);
                            }
                        } else {
                            request |= key == "method";
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    if request {
                        ids.clear();
                    }
                    Ok(Ids(ids))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Ids>(text)
        .map(|ids| ids.0)
        .unwrap_or_default()
}

/// Reads a response body, refusing more than `max` bytes.
async fn read_bounded(resp: reqwest::Response, max: usize) -> Result<Bytes, String> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the answer failed: {}", without_url(e)))?;
        if buf.len() + chunk.len() > max {
            return Err(format!("answer over {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// reqwest errors print the URL, which may carry credentials in a query string.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::ids_named;

    #[test]
    fn a_refused_answer_still_names_its_requests() {
        assert_eq!(
            ids_named(r#"{"jsonrpc":"2.0","id":4,"result":{"a":1,"a":2}}"#),
            [4]
        );
        assert_eq!(
            ids_named(r#"{"jsonrpc":"2.0","id":4,"id":5,"result":{}}"#),
            [4, 5]
        );
        // A request of the upstream's: its id is not one of the gateway's.
        assert!(
            ids_named(r#"{"jsonrpc":"2.0","id":4,"method":"x","params":{"a":1,"a":2}}"#).is_empty()
        );
        assert!(ids_named("not json").is_empty());
        assert!(ids_named(r#"{"id":"4"}"#).is_empty());
    }
}
