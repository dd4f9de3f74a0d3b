//! `portcullis approvals` and `portcullis access`: the command-line client of the admin API
//! (`gateway.admin_listen`) for held requests and just-in-time grants.
//!
//! The client decides nothing: who may approve, what a grant may cover and whether a decision
//! still counts are the gateway's answers, and its error messages are shown as they come
//! (`error: <message> [<code>]`). What the client owns is the approver's view: a decision is
//! sent only after the approval was fetched and shown, and it quotes the approval's `digest`,
//! so it binds to exactly what was on the screen.
//!
//! The records are read into small structs of our own, every field defaulted, rather than the
//! approvals crate's types: the client must keep working against a gateway a version ahead or
//! behind, and must not pull the server's storage code into the binary's client path.
//!
//! Everything a requester typed (reasons, tool names, arguments) reaches an approver's
//! terminal, so control and bidirectional-override characters are escaped before printing: a
//! request must not be able to repaint the screen its approver decides on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use portcullis_approvals::humanize;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Where the admin API listens when nothing says otherwise (`portcullis demo`'s default).
const DEFAULT_URL: &str = "http://127.0.0.1:8081";
/// Read for the admin URL when no `--config` is given, as `serve` reads it by default.
const DEFAULT_CONFIG: &str = "portcullis.toml";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `access request --wait` asks whether its grant request was decided.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long `--wait` rides out an unreachable gateway: a restart keeps grant requests.
const WAIT_UNREACHABLE_FOR: Duration = Duration::from_secs(60);
/// The width of the REASON column, in characters.
const REASON_COLUMN: usize = 40;

/// How to reach the admin API, and as whom.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// The admin API's URL. Default: $PORTCULLIS_ADMIN_URL, else admin_listen from --config
    /// (or ./portcullis.toml), else http://127.0.0.1:8081
    #[arg(long, env = "PORTCULLIS_ADMIN_URL")]
    pub url: Option<String>,
    /// Read admin_listen (and approvals.admin_url) from this configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Your credential (API key or OIDC token). Prefer the environment variable: a flag shows
    /// in `ps`.
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for an https admin URL (a private CA, a self-signed
    /// certificate).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approvals waiting for a decision (or all with --all).
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Decided, expired and cancelled approvals too.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval in full.
    Show {
        id: String,
        #[command(flatten)]
        conn: AdminConn,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held request or a grant (you cannot approve your own).
    Approve {
        id: String,
        /// Why you approve: recorded in the audit log with your name.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Deny a held request or a grant.
    Deny {
        id: String,
        /// Why you deny: the requester is told, and the audit log records it.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AccessCommand {
    /// Ask for a time-boxed grant; approvers decide.
    Request {
        /// The target the grant is for.
        #[arg(long)]
        target: String,
        /// Tools, exactly or by a prefix ending in `*` (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tools: Vec<String>,
        /// Tables, exactly or by a prefix ending in `*` (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// How long the grant lasts once approved: `30m`, `2h`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why you need it: approvers see it, and the audit log records it.
        #[arg(long)]
        reason: String,
        /// Wait until it is decided (or expires) and exit 0 only if granted.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List your grants (and those you may revoke).
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a grant early.
    Revoke {
        id: String,
        /// Why it ends: recorded in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// `portcullis approvals ...`.
pub fn approvals(cmd: ApprovalsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ApprovalsCommand::List { conn, all, json } => {
                list_approvals(&Client::new(&conn)?, all, json).await
            }
            ApprovalsCommand::Show { id, conn, json } => {
                show_approval(&Client::new(&conn)?, &id, json).await
            }
            ApprovalsCommand::Approve { id, reason, conn } => {
                decide(&Client::new(&conn)?, &id, &reason, true).await
            }
            ApprovalsCommand::Deny { id, reason, conn } => {
                decide(&Client::new(&conn)?, &id, &reason, false).await
            }
        }
    })
}

/// `portcullis access ...`.
pub fn access(cmd: AccessCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            AccessCommand::Request {
                target,
                tools,
                tables,
                duration,
                reason,
                wait,
                conn,
            } => {
                let asked = GrantAsk {
                    target,
                    tools: tools.into_iter().filter(|t| !t.trim().is_empty()).collect(),
                    tables: tables
                        .into_iter()
                        .filter(|t| !t.trim().is_empty())
                        .collect(),
                    duration,
                    reason,
                };
                request_grant(&Client::new(&conn)?, asked, wait).await
            }
            AccessCommand::List { conn, json } => list_grants(&Client::new(&conn)?, json).await,
            AccessCommand::Revoke { id, reason, conn } => {
                revoke_grant(&Client::new(&conn)?, &id, &reason).await
            }
        }
    })
}

/// main() is synchronous, and one request at a time needs no more than one thread.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

// ---------------------------------------------------------------------------------------------
// The records, as the admin API shows them.

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Person {
    issuer: String,
    subject: String,
    display_name: Option<String>,
    kind: String,
    groups: Vec<String>,
}

impl Person {
    /// A name for people: the display name, else the subject.
    fn name(&self) -> String {
        clean(self.display_name.as_deref().unwrap_or(&self.subject))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Vote {
    approver: Person,
    approve: bool,
    reason: String,
    time: String,
    break_glass: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct GrantSpec {
    tools: Vec<String>,
    tables: Vec<String>,
    duration_secs: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Approval {
    id: String,
    kind: String,
    status: String,
    requester: Person,
    source: Option<String>,
    target: String,
    action: String,
    resource: Option<String>,
    arguments: Option<Value>,
    grant: Option<GrantSpec>,
    reason: Option<String>,
    rule: String,
    policy_version: String,
    approvers: Vec<String>,
    min_approvals: u32,
    created_at: String,
    expires_at: String,
    request_event: Option<String>,
    votes: Vec<Vote>,
    closed_at: Option<String>,
    closed_because: Option<String>,
    digest: String,
}

impl Approval {
    fn is_grant(&self) -> bool {
        self.kind == "grant"
    }

    fn approvals(&self) -> usize {
        self.votes.iter().filter(|v| v.approve).count()
    }

    /// What is being decided, in a few words, as the gateway words it:
    /// `tools/call refund_payment on billing`, `a grant of refund_* on billing for 30m`.
    fn what(&self) -> String {
        match (&self.grant, &self.resource) {
            (Some(g), _) => format!(
                "a grant of {} on {} for {}",
                scope(&g.tools, &g.tables),
                clean(&self.target),
                humanize(g.duration_secs)
            ),
            (None, Some(resource)) => format!(
                "{} {} on {}",
                clean(&self.action),
                clean(resource),
                clean(&self.target)
            ),
            (None, None) => format!("{} on {}", clean(&self.action), clean(&self.target)),
        }
    }

    fn requirement(&self) -> String {
        format!(
            "{} approval(s) from {}",
            self.min_approvals,
            clean(&self.approvers.join(", "))
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Grant {
    id: String,
    holder: Person,
    target: String,
    tools: Vec<String>,
    tables: Vec<String>,
    expires_at: String,
    revoked_at: Option<String>,
    revoked_by: Option<Person>,
    revoke_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The connection.

/// An error the admin API answered with: its status, its stable code and its sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: u16,
    code: String,
    message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)?;
        if self.status == 401 {
            // The one refusal the user fixes on their side, not the gateway's.
            write!(f, " (check PORTCULLIS_TOKEN or --token)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// An error response as the API words it (`{"error": {"code", "message"}}`), or, for a body
/// of another shape (a proxy's page, a front door mistaken for the admin API), a message
/// saying what came back.
fn parse_error(status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
            ))
        });
    if let Some((code, message)) = parsed {
        return ApiError {
            status,
            code: clean(&code),
            message: clean(&message),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = truncate(&clean_line(text.trim()), 200);
    let mut message = format!("the admin API answered HTTP {status}");
    if !text.is_empty() {
        message.push_str(&format!(": {text}"));
    }
    match status {
        300..=399 => message.push_str(" (redirects are not followed: check --url)"),
        404 => message.push_str(
            " (is --url the admin API, gateway.admin_listen, rather than the front door?)",
        ),
        _ => {}
    }
    ApiError {
        status,
        code: format!("http_{status}"),
        message,
    }
}

/// The API's error code, if `e` is an error the API answered with.
fn api_code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ApiError>().map(|a| a.code.as_str())
}

/// The admin API's URL: the flag (or `$PORTCULLIS_ADMIN_URL`), else the configuration named
/// with `--config`, else `implicit` (`./portcullis.toml`) if it exists, else the default.
fn resolve_url(flag: Option<&str>, config: Option<&Path>, implicit: &Path) -> Result<String> {
    let url = if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        url.to_string()
    } else if let Some(path) = config {
        let config = portcullis_config::Config::load(path)
            .with_context(|| format!("reading {} for the admin API's URL", path.display()))?;
        // An explicit file whose gateway serves no admin API is a mistake worth naming,
        // rather than a silent fall back to a default address that is someone else's.
        config.admin_url().ok_or_else(|| {
            anyhow!(
                "{} sets neither gateway.admin_listen nor approvals.admin_url, so its gateway serves no admin API; set gateway.admin_listen, or pass --url",
                path.display()
            )
        })?
    } else if implicit.exists() {
        portcullis_config::Config::load(implicit)
            .with_context(|| {
                format!(
                    "reading {} for the admin API's URL (pass --url to skip it)",
                    implicit.display()
                )
            })?
            .admin_url()
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    } else {
        DEFAULT_URL.to_string()
    };
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("the admin API's URL {url:?} is not an http:// or https:// URL");
    }
    Ok(url)
}

/// Whether a URL's host is this machine: plain http is harmless only there.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host == "localhost"
        || host.starts_with("localhost:")
        || host.starts_with("127.")
        || host.starts_with("[::1]")
}

/// An authenticated connection to the admin API.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(conn: &AdminConn) -> Result<Client> {
        let token = conn
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "no credential: set PORTCULLIS_TOKEN (your API key or OIDC token) or pass --token"
                )
            })?
            .to_string();
        let base = resolve_url(
            conn.url.as_deref(),
            conn.config.as_deref(),
            Path::new(DEFAULT_CONFIG),
        )?;
        if base.starts_with("http://") && !is_loopback_url(&base) {
            eprintln!(
                "warning: {base} is plain http on another host: your credential crosses the network in clear text"
            );
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the credential to a host the user never named.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert {}: not a PEM certificate", path.display()))?;
            if certs.is_empty() {
                bail!("--ca-cert {}: holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// A failure to talk to the gateway at all, worded for the person at the terminal. The
    /// `reqwest::Error` stays in the chain: `--wait` looks for it to tell an outage from an
    /// answer.
    fn transport(&self, e: reqwest::Error) -> anyhow::Error {
        let message = if e.is_connect() {
            format!(
                "cannot connect to the admin API at {}: is the gateway running with gateway.admin_listen set?",
                self.base
            )
        } else if e.is_timeout() {
            format!(
                "the admin API at {} did not answer within {}s",
                self.base,
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            format!("talking to the admin API at {}", self.base)
        };
        anyhow::Error::new(e).context(message)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}/api/v1/{path}", self.base);
        // `bearer_auth` marks the header sensitive, so it never shows in debug output.
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(parse_error(status.as_u16(), &bytes).into());
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the admin API at {} answered HTTP {} with a body that is not JSON",
                self.base,
                status.as_u16()
            )
        })
    }

    async fn get_value(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post_value(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        typed(self.get_value(path).await?, path)
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        typed(self.post_value(path, body).await?, path)
    }

    /// The grant an approved grant request issued, if the caller may see it.
    async fn find_grant(&self, id: &str) -> Result<Option<Grant>> {
        let list: Vec<Grant> = typed(
            self.get_value("grants?limit=1000").await?["grants"].take(),
            "grants",
        )?;
        Ok(list.into_iter().find(|g| g.id == id))
    }
}

fn typed<T: DeserializeOwned>(value: Value, path: &str) -> Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!("the admin API's answer to /api/v1/{path} has an unexpected shape")
    })
}

/// Approval and grant ids go into URL paths: anything but the characters ids are made of
/// could change which endpoint is called.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!(
            "{:?} is not an approval or grant id (apr_ and 20 hex digits)",
            clean(id)
        );
    }
    Ok(())
}

fn need_reason(reason: &str, what: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("{what} needs a reason: --reason \"...\"");
    }
    Ok(reason.to_string())
}

// ---------------------------------------------------------------------------------------------
// The commands.

async fn list_approvals(client: &Client, all: bool, json: bool) -> Result<()> {
    let status = if all { "all" } else { "pending" };
    let mut body = client
        .get_value(&format!("approvals?status={status}"))
        .await?;
    let list = body["approvals"].take();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let list: Vec<Approval> = typed(list, "approvals")?;
    if list.is_empty() {
        println!(
            "{}",
            if all {
                "no approvals you may see"
            } else {
                "no approvals waiting for you"
            }
        );
    } else {
        print!("{}", approvals_table(&list, Utc::now()));
    }
    Ok(())
}

async fn show_approval(client: &Client, id: &str, json: bool) -> Result<()> {
    check_id(id)?;
    let value = client.get_value(&format!("approvals/{id}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let approval: Approval = typed(value, "approvals/{id}")?;
    print!("{}", approval_details(&approval, Utc::now()));
    Ok(())
}

async fn decide(client: &Client, id: &str, reason: &str, approve: bool) -> Result<()> {
    check_id(id)?;
    let reason = need_reason(reason, "a decision")?;
    let verb = if approve { "approve" } else { "deny" };
    let shown: Approval = match client.get(&format!("approvals/{id}")).await {
        Ok(a) => a,
        Err(e) if api_code(&e) == Some("not_found") => {
            return Err(explain_unseen(client, id, &reason, verb, e).await);
        }
        Err(e) => return Err(e),
    };
    // The decision binds to what is printed here: its digest goes with it.
    println!("{}", decision_preview(&shown, approve, Utc::now()));
    let body = json!({ "reason": reason, "digest": shown.digest });
    let after: Approval = client
        .post(&format!("approvals/{id}/{verb}"), &body)
        .await?;
    let grant = if after.is_grant() && after.status == "approved" {
        // The decision stands whatever this lookup does; it only adds the grant's end.
        client.find_grant(&after.id).await.ok().flatten()
    } else {
        None
    };
    println!("{}", decision_result(&after, grant.as_ref(), Utc::now()));
    Ok(())
}

/// The gateway shows an approval only to its requester and to those who may decide it, but
/// its decide endpoint says exactly why someone else may not (an id is 80 random bits: who
/// holds one has been sent it). A decision quoting an empty digest can never be accepted,
/// since every approval has one, so it is asked for that reason; if the answer is no better,
/// the original "not found" stands.
async fn explain_unseen(
    client: &Client,
    id: &str,
    reason: &str,
    verb: &str,
    not_found: anyhow::Error,
) -> anyhow::Error {
    let body = json!({ "reason": reason, "digest": "" });
    match client
        .post_value(&format!("approvals/{id}/{verb}"), &body)
        .await
    {
        Err(e) if matches!(api_code(&e), Some(c) if c != "not_found" && c != "digest_mismatch") => {
            e
        }
        _ => not_found,
    }
}

struct GrantAsk {
    target: String,
    tools: Vec<String>,
    tables: Vec<String>,
    duration: String,
    reason: String,
}

async fn request_grant(client: &Client, asked: GrantAsk, wait: bool) -> Result<()> {
    let reason = need_reason(&asked.reason, "a grant request")?;
    let body = json!({
        "target": asked.target,
        "tools": asked.tools,
        "tables": asked.tables,
        "duration": asked.duration,
        "reason": reason,
    });
    let approval: Approval = client.post("grants", &body).await?;
    println!("{}", grant_request_message(&approval));
    if !wait {
        return Ok(());
    }
    eprintln!(
        "waiting for a decision (until {})...",
        when(&approval.expires_at, Utc::now())
    );
    let decided = wait_decided(client, &approval.id).await?;
    let now = Utc::now();
    match decided.status.as_str() {
        "approved" => {
            let grant = client.find_grant(&decided.id).await.ok().flatten();
            println!("{}", decision_result(&decided, grant.as_ref(), now));
            Ok(())
        }
        "denied" => {
            let by = decided.votes.iter().find(|v| !v.approve);
            match by {
                Some(v) => bail!(
                    "{} was denied by {}: {}",
                    decided.id,
                    v.approver.name(),
                    clean_line(&v.reason)
                ),
                None => bail!("{} was denied", decided.id),
            }
        }
        other => bail!(
            "{} is {}{}",
            decided.id,
            clean(other),
            decided
                .closed_because
                .as_deref()
                .map(|c| format!(": {}", clean_line(c)))
                .unwrap_or_default()
        ),
    }
}

/// Polls until the approval leaves `pending`. An unreachable gateway is retried for a while
/// (pending grant requests survive its restart); an answer refusing the question is not.
async fn wait_decided(client: &Client, id: &str) -> Result<Approval> {
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        match client.get::<Approval>(&format!("approvals/{id}")).await {
            Ok(a) if a.status == "pending" => unreachable_since = None,
            Ok(a) => return Ok(a),
            Err(e) if e.downcast_ref::<reqwest::Error>().is_some() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    eprintln!("{e:#}; still trying");
                    Instant::now()
                });
                if since.elapsed() > WAIT_UNREACHABLE_FOR {
                    return Err(e.context(format!(
                        "gave up waiting for {id}; see where it stands with: portcullis approvals show {id}"
                    )));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn list_grants(client: &Client, json: bool) -> Result<()> {
    let mut body = client.get_value("grants").await?;
    let list = body["grants"].take();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let list: Vec<Grant> = typed(list, "grants")?;
    if list.is_empty() {
        println!("no grants: ask for one with `portcullis access request`");
    } else {
        print!("{}", grants_table(&list, Utc::now()));
    }
    Ok(())
}

async fn revoke_grant(client: &Client, id: &str, reason: &str) -> Result<()> {
    check_id(id)?;
    let reason = need_reason(reason, "revoking a grant")?;
    let grant: Grant = client
        .post(&format!("grants/{id}/revoke"), &json!({ "reason": reason }))
        .await?;
    println!(
        "grant {} revoked: {} no longer holds {} on {}",
        clean(&grant.id),
        grant.holder.name(),
        scope(&grant.tools, &grant.tables),
        clean(&grant.target)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rendering. Pure functions of the records and the time, so they are tested without a network.

/// Escapes control, bidirectional-formatting and invisible characters (a requester's text
/// must not move the cursor, recolour, reorder or hide anything on the approver's screen):
/// the same set as `audit tail` ([`crate::audit_cli::acts_on_a_terminal`]). Newlines are kept.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() && c != '\n') || crate::audit_cli::acts_on_a_terminal(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clean`], on one line: for table cells and one-line summaries.
fn clean_line(s: &str) -> String {
    clean(s).replace('\n', " ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// What a grant covers: its tools and tables, or everything on the target.
fn scope(tools: &[String], tables: &[String]) -> String {
    let all: Vec<&str> = tools.iter().chain(tables).map(String::as_str).collect();
    if all.is_empty() {
        "everything".to_string()
    } else {
        clean_line(&all.join(", "))
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A span in the largest units that matter: `42s`, `14m`, `2h5m`, `3d4h`.
fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{m}m"),
        3600..86_400 if m == 0 => format!("{h}h"),
        3600..86_400 => format!("{h}h{m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// `in 14m`, `3m ago`, `now`, relative to `now`.
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    match secs {
        0 => "now".to_string(),
        s if s > 0 => format!("in {}", span(s.unsigned_abs())),
        s => format!("{} ago", span(s.unsigned_abs())),
    }
}

/// An RFC 3339 time as `2025-03-01 14:05:09 UTC (in 14m)`; unparseable text as it came.
fn when(s: &str, now: DateTime<Utc>) -> String {
    match parse_time(s) {
        Some(t) => format!(
            "{} ({})",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            relative(t, now)
        ),
        None => clean_line(s),
    }
}

/// Columns separated by two spaces, each as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn approvals_table(list: &[Approval], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let expires = if a.status == "pending" {
                parse_time(&a.expires_at)
                    .map_or_else(|| clean_line(&a.expires_at), |t| relative(t, now))
            } else {
                "-".to_string()
            };
            vec![
                clean(&a.id),
                clean(&a.status),
                a.requester.name().replace('\n', " "),
                a.what(),
                truncate(
                    &clean_line(a.reason.as_deref().unwrap_or("-")),
                    REASON_COLUMN,
                ),
                expires,
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "REQUESTER", "WHAT", "REASON", "EXPIRES"],
        &rows,
    )
}

/// Label/value lines, labels padded to one width; a multi-line value is indented under its
/// first line.
fn labelled(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let pad = " ".repeat(width + 4);
        let value = value.replace('\n', &format!("\n{pad}"));
        out.push_str(&format!("  {label:<width$}  {value}\n"));
    }
    out
}

fn person_line(p: &Person) -> String {
    let mut line = p.name();
    let mut about = vec![clean(&p.kind)];
    if p.display_name.is_some() {
        about.push(format!("subject {}", clean(&p.subject)));
    }
    about.push(format!("issuer {}", clean(&p.issuer)));
    if !p.groups.is_empty() {
        about.push(format!("groups {}", clean(&p.groups.join(", "))));
    }
    line.push_str(&format!(" ({})", about.join("; ")));
    line.replace('\n', " ")
}

/// The masked arguments on one line: what the approver is approving, byte for byte as the
/// gateway shows it (JSON escapes any control character in it).
fn arguments_line(args: &Value) -> String {
    clean_line(&args.to_string())
}

fn vote_line(v: &Vote) -> String {
    format!(
        "{} {} at {}{}: {}",
        v.approver.name().replace('\n', " "),
        if v.approve { "approved" } else { "denied" },
        clean_line(&v.time),
        if v.break_glass { " [BREAK-GLASS]" } else { "" },
        clean(&v.reason)
    )
}

fn approval_details(a: &Approval, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} ({}, {})\n",
        clean(&a.id),
        clean(&a.kind),
        clean(&a.status)
    );
    let mut requester = person_line(&a.requester);
    if let Some(source) = &a.source {
        requester.push_str(&format!(" from {}", clean_line(source)));
    }
    let mut fields: Vec<(&str, String)> = vec![("requester", requester), ("what", a.what())];
    if let Some(args) = &a.arguments {
        fields.push(("arguments", arguments_line(args)));
    }
    fields.push(("reason", a.reason.as_deref().map_or("-".into(), clean)));
    fields.push((
        "rule",
        format!(
            "{} (policy {})",
            clean_line(&a.rule),
            clean_line(&a.policy_version)
        ),
    ));
    fields.push((
        "needs",
        format!("{}; {} so far", a.requirement(), a.approvals()),
    ));
    fields.push(("created", when(&a.created_at, now)));
    fields.push(("expires", when(&a.expires_at, now)));
    if !a.votes.is_empty() {
        let votes: Vec<String> = a.votes.iter().map(vote_line).collect();
        fields.push(("decisions", votes.join("\n")));
    }
    if let Some(closed) = &a.closed_at {
        let mut text = when(closed, now);
        if let Some(why) = &a.closed_because {
            text.push_str(&format!(": {}", clean_line(why)));
        }
        fields.push(("closed", text));
    }
    if let Some(ev) = &a.request_event {
        fields.push(("request event", clean_line(ev)));
    }
    fields.push(("digest", clean_line(&a.digest)));
    out.push_str(&labelled(&fields));
    out
}

/// What an approver is about to decide, shown before the decision is sent.
fn decision_preview(a: &Approval, approve: bool, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{} {} ({}, {}):\n",
        if approve { "approving" } else { "denying" },
        clean(&a.id),
        clean(&a.kind),
        clean(&a.status)
    );
    let mut fields: Vec<(&str, String)> = vec![
        ("requested by", person_line(&a.requester)),
        ("what", a.what()),
    ];
    if let Some(args) = &a.arguments {
        fields.push(("arguments", arguments_line(args)));
    }
    fields.push((
        "their reason",
        a.reason.as_deref().map_or("-".into(), clean),
    ));
    fields.push(("rule", clean_line(&a.rule)));
    let mut so_far = format!(
        "{} of {} so far (from {})",
        a.approvals(),
        a.min_approvals,
        clean_line(&a.approvers.join(", "))
    );
    let voters: Vec<String> = a.votes.iter().map(|v| v.approver.name()).collect();
    if !voters.is_empty() {
        so_far.push_str(&format!("; decided by {}", voters.join(", ")));
    }
    fields.push(("approvals", so_far));
    fields.push(("expires", when(&a.expires_at, now)));
    out.push_str(&labelled(&fields));
    out
}

/// The outcome of a decision, as the gateway returned the approval after it.
fn decision_result(a: &Approval, grant: Option<&Grant>, now: DateTime<Utc>) -> String {
    let id = clean(&a.id);
    let count = format!("{} of {} approvals", a.approvals(), a.min_approvals);
    let break_glass = if a.votes.last().is_some_and(|v| v.break_glass) {
        " (break-glass: flagged in the audit log)"
    } else {
        ""
    };
    match a.status.as_str() {
        "approved" if a.is_grant() => {
            let active = match grant {
                Some(g) => format!(
                    "the grant of {} on {} is active until {}",
                    scope(&g.tools, &g.tables),
                    clean(&g.target),
                    when(&g.expires_at, now)
                ),
                None => format!(
                    "the grant is issued: {}",
                    a.what().trim_start_matches("a grant of ")
                ),
            };
            format!("{id} approved: {count}; {active}{break_glass}")
        }
        "approved" => {
            format!("{id} approved: {count}; the held request is released{break_glass}")
        }
        "pending" => format!("{id}: approval recorded, {count}; more approvals needed"),
        "denied" if a.is_grant() => format!("{id} denied: the grant is not issued"),
        "denied" => format!("{id} denied: the held request is refused"),
        other => format!("{id} is {}", clean(other)),
    }
}

/// What `access request` prints once the gateway has the request.
fn grant_request_message(a: &Approval) -> String {
    let (scope_text, duration) = match &a.grant {
        Some(g) => (scope(&g.tools, &g.tables), humanize(g.duration_secs)),
        None => ("everything".to_string(), "?".to_string()),
    };
    let id = clean(&a.id);
    format!(
        "asked for {scope_text} on {} for {duration}: approval {id}, waiting for {}; approvers run: portcullis approvals approve {id} --reason \"...\"",
        clean(&a.target),
        a.requirement()
    )
}

fn grant_state(g: &Grant, now: DateTime<Utc>) -> String {
    if let Some(at) = &g.revoked_at {
        let by = g
            .revoked_by
            .as_ref()
            .map(|p| format!(" by {}", p.name().replace('\n', " ")))
            .unwrap_or_default();
        let why = g
            .revoke_reason
            .as_deref()
            .map(|r| format!(": {}", truncate(&clean_line(r), REASON_COLUMN)))
            .unwrap_or_default();
        return format!("revoked {}{by}{why}", short_when(at, now));
    }
    match parse_time(&g.expires_at) {
        Some(t) if t <= now => format!("expired {}", short_when(&g.expires_at, now)),
        Some(_) => format!("active until {}", short_when(&g.expires_at, now)),
        None => format!("until {}", clean_line(&g.expires_at)),
    }
}

/// `2025-03-01 14:05 UTC (in 14m)`: minutes are enough in a table.
fn short_when(s: &str, now: DateTime<Utc>) -> String {
    match parse_time(s) {
        Some(t) => format!("{} ({})", t.format("%Y-%m-%d %H:%M UTC"), relative(t, now)),
        None => clean_line(s),
    }
}

fn grants_table(list: &[Grant], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            vec![
                clean(&g.id),
                g.holder.name().replace('\n', " "),
                clean_line(&g.target),
                scope(&g.tools, &g.tables),
                grant_state(g, now),
            ]
        })
        .collect();
    table(&["ID", "HOLDER", "TARGET", "SCOPE", "STATE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("a test time")
    }

    fn config_file(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("portcullis.toml"), text).expect("write config");
        dir
    }

    #[test]
    fn url_resolution_order() {
        let dir = config_file("[gateway]\nadmin_listen = \"127.0.0.1:9999\"\n");
        let cfg = dir.path().join("portcullis.toml");
        let missing = dir.path().join("absent.toml");

        // The flag (or its environment variable) wins, without its trailing slash.
        let url = resolve_url(Some("https://gw.example.com:8443/"), Some(&cfg), &cfg).unwrap();
        assert_eq!(url, "https://gw.example.com:8443");
        // An empty variable counts as unset.
        assert_eq!(
            resolve_url(Some("  "), Some(&cfg), &missing).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then --config.
        assert_eq!(
            resolve_url(None, Some(&cfg), &missing).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then ./portcullis.toml, if there is one.
        assert_eq!(
            resolve_url(None, None, &cfg).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then the default.
        assert_eq!(resolve_url(None, None, &missing).unwrap(), DEFAULT_URL);
    }

    #[test]
    fn url_from_approvals_admin_url_and_refusals() {
        let dir = config_file(
            "[gateway]\nadmin_listen = \"127.0.0.1:9999\"\n[approvals]\nadmin_url = \"https://approvals.example.com/\"\n",
        );
        let cfg = dir.path().join("portcullis.toml");
        assert_eq!(
            resolve_url(None, Some(&cfg), Path::new("/nonexistent")).unwrap(),
            "https://approvals.example.com"
        );

        // A named configuration whose gateway serves no admin API is an error, not a guess.
        let bare = config_file("[gateway]\nid = \"gw\"\n");
        let bare_cfg = bare.path().join("portcullis.toml");
        let err = resolve_url(None, Some(&bare_cfg), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.admin_listen"), "{err}");
        // The implicit one falls back to the default.
        assert_eq!(resolve_url(None, None, &bare_cfg).unwrap(), DEFAULT_URL);
        // A missing --config file is named.
        let err = resolve_url(
            None,
            Some(Path::new("/nonexistent/p.toml")),
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/p.toml"),
            "{err:#}"
        );

        let err = resolve_url(Some("127.0.0.1:8081"), None, Path::new("/x")).unwrap_err();
        assert!(
            err.to_string().contains("not an http:// or https:// URL"),
            "{err}"
        );
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:8081"));
        assert!(is_loopback_url("http://localhost:8081/x"));
        assert!(is_loopback_url("http://[::1]:8081"));
        assert!(!is_loopback_url("http://10.0.0.5:8081"));
        assert!(!is_loopback_url("http://localhost.evil.example"));
    }

    #[test]
    fn relative_times() {
        let now = at("2025-03-01T12:00:00.000Z");
        assert_eq!(relative(at("2025-03-01T12:14:59.900Z"), now), "in 14m");
        assert_eq!(relative(at("2025-03-01T12:00:42Z"), now), "in 42s");
        assert_eq!(relative(at("2025-03-01T14:05:00Z"), now), "in 2h5m");
        assert_eq!(relative(at("2025-03-01T15:00:00Z"), now), "in 3h");
        assert_eq!(relative(at("2025-03-04T16:00:00Z"), now), "in 3d4h");
        assert_eq!(relative(at("2025-03-01T11:57:00Z"), now), "3m ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            when("2025-03-01T12:30:00.000Z", now),
            "2025-03-01 12:30:00 UTC (in 30m)"
        );
        // Offsets are read as the instant they name.
        assert_eq!(
            when("2025-03-01T13:30:00+01:00", now),
            "2025-03-01 12:30:00 UTC (in 30m)"
        );
        assert_eq!(when("not a time", now), "not a time");
    }

    fn held() -> Value {
        json!({
            "id": "apr_00112233445566778899",
            "kind": "request",
            "status": "pending",
            "requester": {"issuer": "portcullis:api-key", "subject": "billing-agent",
                          "kind": "agent", "groups": ["agents"]},
            "source": "127.0.0.1:50000",
            "target": "billing",
            "action": "tools/call",
            "resource": "refund_payment",
            "arguments": {"customer": "cus_1001", "amount": 25, "card": "[CREDIT_CARD]"},
            "arguments_digest": {"sha256": "ab", "size": 70},
            "reason": "duplicate charge on the March invoice, reported by the customer on the phone",
            "rule": "refunds need a finance lead",
            "policy_version": "0123456789abcdef",
            "approvers": ["finance-leads"],
            "min_approvals": 2,
            "created_at": "2025-03-01T12:00:00.000Z",
            "expires_at": "2025-03-01T12:15:00.000Z",
            "request_event": "0195b7a0-0000-7000-8000-000000000000",
            "votes": [{"approver": {"issuer": "portcullis:api-key", "subject": "omar",
                                     "display_name": "Omar K", "kind": "human",
                                     "groups": ["finance-leads"]},
                       "approve": true, "reason": "fine", "time": "2025-03-01T12:01:00.000Z"}],
            "digest": "d1e5",
            "some_future_field": {"ignored": true},
        })
    }

    fn grant_request() -> Value {
        json!({
            "id": "apr_aaaaaaaaaaaaaaaaaaaa",
            "kind": "grant",
            "status": "pending",
            "requester": {"issuer": "https://idp", "subject": "u-17", "display_name": "Dana",
                          "kind": "human", "groups": []},
            "target": "billing",
            "action": "grant",
            "grant": {"tools": ["refund_*"], "tables": [], "duration_secs": 1800},
            "reason": "reconcile March",
            "rule": "jit refunds",
            "policy_version": "0123456789abcdef",
            "approvers": ["finance-leads", "sre"],
            "min_approvals": 1,
            "created_at": "2025-03-01T12:00:00.000Z",
            "expires_at": "2025-03-01T12:15:00.000Z",
            "digest": "beef",
        })
    }

    #[test]
    fn approvals_table_renders() {
        let now = at("2025-03-01T12:01:00.000Z");
        let mut decided: Approval = serde_json::from_value(grant_request()).unwrap();
        decided.status = "denied".into();
        let list = vec![serde_json::from_value(held()).unwrap(), decided];
        let text = approvals_table(&list, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID  "), "{text}");
        for column in ["STATUS", "REQUESTER", "WHAT", "REASON", "EXPIRES"] {
            // Every row's cell starts where its header does (counted in characters: the
            // truncation mark is one character of three bytes).
            let col = lines[0].find(column).unwrap();
            for line in &lines[1..] {
                let chars: Vec<char> = line.chars().collect();
                assert!(
                    chars[col - 1] == ' ' && chars[col] != ' ',
                    "{column}: {text}"
                );
            }
        }
        assert!(
            lines[1].contains("apr_00112233445566778899  pending"),
            "{text}"
        );
        assert!(
            lines[1].contains("tools/call refund_payment on billing"),
            "{text}"
        );
        assert!(
            lines[1].contains("duplicate charge on the March invoice,…"),
            "{text}"
        );
        assert!(
            !lines[1].contains("on the phone"),
            "the reason is truncated: {text}"
        );
        assert!(lines[1].trim_end().ends_with("in 14m"), "{text}");
        assert!(lines[2].contains("Dana"), "{text}");
        assert!(
            lines[2].contains("a grant of refund_* on billing for 30m"),
            "{text}"
        );
        assert!(
            lines[2].trim_end().ends_with('-'),
            "decided: no expiry: {text}"
        );
    }

    #[test]
    fn preview_shows_what_is_decided() {
        let now = at("2025-03-01T12:05:00.000Z");
        let a: Approval = serde_json::from_value(held()).unwrap();
        let text = decision_preview(&a, true, now);
        assert!(
            text.starts_with("approving apr_00112233445566778899 (request, pending):"),
            "{text}"
        );
        assert!(
            text.contains("billing-agent (agent; issuer portcullis:api-key; groups agents)"),
            "{text}"
        );
        assert!(
            text.contains("tools/call refund_payment on billing"),
            "{text}"
        );
        assert!(
            text.contains(r#"{"amount":25,"card":"[CREDIT_CARD]","customer":"cus_1001"}"#),
            "{text}"
        );
        assert!(text.contains("duplicate charge"), "{text}");
        assert!(text.contains("refunds need a finance lead"), "{text}");
        assert!(
            text.contains("1 of 2 so far (from finance-leads); decided by Omar K"),
            "{text}"
        );
        assert!(text.contains("(in 10m)"), "{text}");

        let details = approval_details(&a, now);
        assert!(details.contains("from 127.0.0.1:50000"), "{details}");
        assert!(
            details.contains("Omar K approved at 2025-03-01T12:01:00.000Z: fine"),
            "{details}"
        );
        assert!(
            details.contains("2 approval(s) from finance-leads; 1 so far"),
            "{details}"
        );
        assert!(details.contains("policy 0123456789abcdef"), "{details}");
        assert!(details.contains("digest         d1e5"), "{details}");
    }

    #[test]
    fn decision_outcomes_are_worded() {
        let now = at("2025-03-01T12:05:00.000Z");
        let mut a: Approval = serde_json::from_value(held()).unwrap();
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899: approval recorded, 1 of 2 approvals; more approvals needed"
        );
        a.status = "approved".into();
        a.min_approvals = 1;
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899 approved: 1 of 1 approvals; the held request is released"
        );
        a.status = "denied".into();
        assert_eq!(
            decision_result(&a, None, now),
            "apr_00112233445566778899 denied: the held request is refused"
        );

        let mut g: Approval = serde_json::from_value(grant_request()).unwrap();
        assert_eq!(
            grant_request_message(&g),
            "asked for refund_* on billing for 30m: approval apr_aaaaaaaaaaaaaaaaaaaa, waiting for 1 approval(s) from finance-leads, sre; approvers run: portcullis approvals approve apr_aaaaaaaaaaaaaaaaaaaa --reason \"...\""
        );
        g.status = "approved".into();
        g.votes.push(Vote {
            approver: Person {
                subject: "pat".into(),
                ..Person::default()
            },
            approve: true,
            reason: "incident 42".into(),
            time: "2025-03-01T12:04:00.000Z".into(),
            break_glass: true,
        });
        let issued = Grant {
            id: g.id.clone(),
            target: "billing".into(),
            tools: vec!["refund_*".into()],
            expires_at: "2025-03-01T12:34:00.000Z".into(),
            ..Grant::default()
        };
        assert_eq!(
            decision_result(&g, Some(&issued), now),
            "apr_aaaaaaaaaaaaaaaaaaaa approved: 1 of 1 approvals; the grant of refund_* on billing is active until 2025-03-01 12:34:00 UTC (in 29m) (break-glass: flagged in the audit log)"
        );
        assert!(
            decision_result(&g, None, now)
                .contains("the grant is issued: refund_* on billing for 30m"),
        );
    }

    #[test]
    fn grants_table_renders_states() {
        let now = at("2025-03-01T12:00:00.000Z");
        let list: Vec<Grant> = serde_json::from_value(json!([
            {"id": "apr_1", "holder": {"subject": "billing-agent", "kind": "agent"},
             "target": "billing", "tools": ["refund_*"], "tables": [],
             "issued_at": "2025-03-01T11:50:00Z", "expires_at": "2025-03-01T12:20:00Z",
             "approvers": ["finance-leads"]},
            {"id": "apr_2", "holder": {"subject": "u-1", "display_name": "Dana"},
             "target": "warehouse", "tables": ["orders"],
             "issued_at": "2025-03-01T10:00:00Z", "expires_at": "2025-03-01T11:00:00Z",
             "revoked_at": "2025-03-01T10:30:00Z", "revoked_by": {"subject": "omar"},
             "revoke_reason": "done"},
            {"id": "apr_3", "holder": {"subject": "x"}, "target": "billing",
             "issued_at": "2025-03-01T10:00:00Z", "expires_at": "2025-03-01T11:00:00Z"},
        ]))
        .unwrap();
        let text = grants_table(&list, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "HOLDER", "TARGET", "SCOPE", "STATE"]
        );
        assert!(
            lines[1].ends_with("active until 2025-03-01 12:20 UTC (in 20m)"),
            "{text}"
        );
        assert!(lines[2].contains("orders"), "{text}");
        assert!(
            lines[2].ends_with("revoked 2025-03-01 10:30 UTC (1h30m ago) by omar: done"),
            "{text}"
        );
        assert!(lines[3].contains("everything"), "{text}");
        assert!(
            lines[3].ends_with("expired 2025-03-01 11:00 UTC (1h ago)"),
            "{text}"
        );
    }

    #[test]
    fn error_bodies_become_messages() {
        let e = parse_error(
            403,
            br#"{"error":{"code":"self_approval","message":"billing-agent requested apr_1 and may not decide it (separation of duties)"}}"#,
        );
        assert_eq!(e.status, 403);
        assert_eq!(e.code, "self_approval");
        assert_eq!(
            e.to_string(),
            "billing-agent requested apr_1 and may not decide it (separation of duties) [self_approval]"
        );
        let wrapped: anyhow::Error = e.into();
        assert_eq!(api_code(&wrapped), Some("self_approval"));

        let e = parse_error(502, b"<html>Bad Gateway</html>\n");
        assert_eq!(e.code, "http_502");
        assert_eq!(
            e.message,
            "the admin API answered HTTP 502: <html>Bad Gateway</html>"
        );
        assert!(
            parse_error(401, b"")
                .to_string()
                .contains("PORTCULLIS_TOKEN")
        );
        let e = parse_error(404, b"");
        assert!(
            e.message.contains("rather than the front door"),
            "{}",
            e.message
        );
        let e = parse_error(302, b"");
        assert!(
            e.message.contains("redirects are not followed"),
            "{}",
            e.message
        );
        // A message cannot carry terminal escapes to the screen.
        let e = parse_error(
            409,
            br#"{"error":{"code":"expired","message":"x\u001b[2Jy"}}"#,
        );
        assert_eq!(e.message, "x\\u{1b}[2Jy");
    }

    #[test]
    fn requester_text_cannot_repaint_the_screen() {
        let mut a: Approval = serde_json::from_value(held()).unwrap();
        a.resource = Some("refund\u{1b}[1A\u{202e}payment".into());
        a.reason = Some("line one\nline two\u{7}".into());
        let text = decision_preview(&a, true, at("2025-03-01T12:05:00Z"));
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'));
        assert!(text.contains("refund\\u{1b}[1A\\u{202e}payment"), "{text}");
        // A multi-line reason stays readable, indented under its label.
        assert!(text.contains("line one\n      "), "{text}");
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_path() {
        assert!(check_id("apr_00112233445566778899").is_ok());
        assert!(check_id("../grants").is_err());
        assert!(check_id("apr_1?status=all").is_err());
        assert!(check_id("").is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Approvals {
            #[command(subcommand)]
            command: ApprovalsCommand,
        },
        Access {
            #[command(subcommand)]
            command: AccessCommand,
        },
    }

    #[test]
    fn command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "portcullis",
            "access",
            "request",
            "--target",
            "billing",
            "--tools",
            "refund_payment,lookup_*",
            "--for",
            "30m",
            "--reason",
            "r",
            "--wait",
            "--url",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        let Top::Access {
            command:
                AccessCommand::Request {
                    tools,
                    duration,
                    wait,
                    conn,
                    ..
                },
        } = cli.command
        else {
            panic!("not access request");
        };
        assert_eq!(tools, ["refund_payment", "lookup_*"]);
        assert_eq!(duration, "30m");
        assert!(wait);
        assert_eq!(conn.url.as_deref(), Some("http://127.0.0.1:1"));

        let cli = Cli::try_parse_from([
            "portcullis",
            "approvals",
            "approve",
            "apr_1",
            "--reason",
            "ok",
            "--ca-cert",
            "ca.pem",
        ])
        .unwrap();
        let Top::Approvals {
            command: ApprovalsCommand::Approve { id, reason, conn },
        } = cli.command
        else {
            panic!("not approvals approve");
        };
        assert_eq!((id.as_str(), reason.as_str()), ("apr_1", "ok"));
        assert_eq!(conn.ca_cert.as_deref(), Some(Path::new("ca.pem")));
        // A decision without a reason is refused by the parser.
        assert!(Cli::try_parse_from(["portcullis", "approvals", "deny", "apr_1"]).is_err());
    }
}
