//! `portcullis demo`: the gateway on embedded defaults in front of the built-in billing MCP
//! server and the built-in customers HTTP API, with an agent and a human identity and rules
//! that show all three outcomes.
//!
//! The demo writes an ordinary `portcullis.toml` into its directory, so what it runs is
//! exactly what an operator would configure, and the file is there to read and copy.

use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use portcullis_config::Config;
use portcullis_proxy_pg::upstream::UpstreamSettings;

struct DemoKeys {
    agent: String,
    human: String,
}

/// Reuses the demo's keys across runs so instructions printed earlier keep working.
fn demo_keys(dir: &Path) -> Result<DemoKeys> {
    let path = dir.join("demo-keys.txt");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut lines = text.lines();
        if let (Some(agent), Some(human)) = (lines.next(), lines.next()) {
            return Ok(DemoKeys {
                agent: agent.to_string(),
                human: human.to_string(),
            });
        }
    }
    let keys = DemoKeys {
        agent: portcullis_identity::generate_api_key().0,
        human: portcullis_identity::generate_api_key().0,
    };
    std::fs::write(&path, format!("{}\n{}\n", keys.agent, keys.human))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(keys)
}

/// The customers API's own service token, kept across runs like the keys. The gateway reads
/// it from this file and injects it upstream; the agent never sees it.
fn customers_api_token(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("customers-api-token");
    if !path.exists() {
        std::fs::write(&path, portcullis_identity::generate_api_key().0)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(path)
}

/// The customers HTTP API part of the demo configuration.
fn customers_api_config(upstream: SocketAddr, token: &Path) -> Result<String> {
    let token = serde_json::to_string(&token.display().to_string())?;
    Ok(format!(
        r#"
# The customers HTTP API (built into the demo, on {upstream}), behind the gateway at
# http://<listen>/http/customers/...: GET, POST and DELETE decided per method and path,
# answers masked, the API's own token injected (the agent's key never goes upstream).
[targets.customers]
kind = "http"
upstream = "http://{upstream}/"
upstream_credential = {{ bearer = {{ file = {token} }} }}
hold_wait = "15m"               # a held request waits as long as its approval may take

[[rules]]
name = "agents read customers over HTTP"
who.groups = ["agents"]
target = "customers"
http.methods = ["GET"]
http.paths = ["/customers", "/customers/{{id}}"]
mask = "pii"                    # emails and card numbers come back masked

[[rules]]
name = "HTTP refunds need a finance lead"
who.groups = ["agents"]
target = "customers"
http.methods = ["POST"]
http.paths = ["/customers/{{id}}/refund"]
decision = "hold"               # the request waits at the gateway until a finance lead decides
approvers = ["finance-leads"]   # never the agent itself, whatever its groups
timeout = "15m"
require_reason = true           # the agent says why: the Portcullis-Reason header

[[rules]]
name = "agents never delete customers over HTTP"
who.kinds = ["agent"]
target = "customers"
http.methods = ["DELETE"]
http.paths = ["/customers/**"]
decision = "deny"
reason = "deleting customers is a human decision"
"#
    ))
}

/// The database the demo creates on a reachable PostgreSQL, and the role the gateway uses.
const DEMO_DATABASE: &str = "portcullis_demo";
const DEMO_ROLE: &str = "portcullis_demo_app";

/// Where the demo looks for PostgreSQL: `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD` as libpq
/// reads them, else 127.0.0.1:5432 as `postgres`.
fn demo_postgres() -> UpstreamSettings {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    UpstreamSettings {
        host: var("PGHOST")
            .filter(|h| !h.starts_with('/'))
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: var("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432),
        database: "postgres".into(),
        user: var("PGUSER").unwrap_or_else(|| "postgres".into()),
        password: var("PGPASSWORD").map(Arc::from),
        tls: None,
        connect_timeout: Duration::from_secs(3),
    }
}

/// Creates the demo's database (a `customers` table with account numbers) and a role with
/// ordinary read-write privileges on it: the database would let that role delete customers;
/// the gateway is what refuses. Returns the upstream URL and the role, or why not.
async fn prepare_database() -> std::result::Result<(String, String), String> {
    let admin = demo_postgres();
    let mut conn = admin.connect(&[]).await.map_err(|e| e.to_string())?;
    // CREATE DATABASE cannot run in a transaction block, so it goes alone, and an existing
    // database (an earlier run) is fine.
    let _ = conn
        .execute(&format!("CREATE DATABASE {DEMO_DATABASE}"))
        .await;
    let role = match conn
        .execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DEMO_ROLE}') THEN CREATE ROLE {DEMO_ROLE} LOGIN; END IF; END $$"
        ))
        .await
    {
        Ok(()) => DEMO_ROLE.to_string(),
        // Not allowed to create roles: the demo's gateway logs in as the setup user.
        Err(_) => admin.user.clone(),
    };
    let db = UpstreamSettings {
        database: DEMO_DATABASE.into(),
        ..admin.clone()
    };
    let mut conn = db.connect(&[]).await.map_err(|e| e.to_string())?;
    conn.execute(&format!(
        "CREATE TABLE IF NOT EXISTS customers (
            id int PRIMARY KEY, name text NOT NULL, email text, account_number text, plan text);
         INSERT INTO customers VALUES
            (1001, 'Ada Lovelace', 'ada@example.com', 'DE89370400440532013000', 'enterprise'),
            (1002, 'Grace Hopper', 'grace@example.org', 'GB82WEST12345698765432', 'team'),
            (1003, 'Alan Turing', 'alan@example.net', 'FR1420041010050500013M02606', 'free')
         ON CONFLICT (id) DO NOTHING;
         GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO {role};"
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok((
        format!("postgres://{}:{}/{DEMO_DATABASE}", admin.host, admin.port),
        role,
    ))
}

/// The database part of the demo configuration.
fn database_config(pg_listen: SocketAddr, upstream: &str, role: &str) -> String {
    format!(
        r#"
# The billing database itself, behind the gateway: agents connect here with any
# PostgreSQL client, their API key as the password. The gateway logs in as {role};
# the agent never learns how.
[targets.billing-db]
kind = "postgres"
listen = "{pg_listen}"
upstream = "{upstream}"
user = "{role}"
record_results = true           # rows are recorded too, as the agent received them (masked)

[[rules]]
name = "agents read customers, masked"
who.groups = ["agents"]
target = "billing-db"
allow.statements = ["select"]
allow.tables = ["customers"]
mask = "pii"                    # account numbers and emails never reach the agent

[[rules]]
name = "agents never delete rows"
who.kinds = ["agent"]
target = "billing-db"
deny.statements = ["delete", "truncate", "ddl"]
reason = "deleting customer data is a human decision"

[[rules]]
name = "finance leads read and correct customers"
who.groups = ["finance-leads"]
target = "billing-db"
allow.statements = ["select", "update", "transaction"]
allow.tables = ["customers"]
"#
    )
}

fn demo_config(listen: SocketAddr, admin: SocketAddr, keys: &DemoKeys) -> Result<String> {
    let exe = std::env::current_exe().context("cannot find the portcullis executable")?;
    let exe = serde_json::to_string(&exe.display().to_string())?;
    let agent = portcullis_identity::hash_api_key(&keys.agent);
    let human = portcullis_identity::hash_api_key(&keys.human);
    Ok(format!(
        r#"# Written by `portcullis demo`. An ordinary configuration: read it, copy it, change it.

[gateway]
id = "portcullis-demo"
listen = "{listen}"
admin_listen = "{admin}"        # approvals and grants: `portcullis approvals ...`
data_dir = "data"

# Checkpoints of the audit log are signed with this key (kept apart from `data`) and
# published as files to `checkpoints`; in production that directory is write-once storage
# on another machine, and a witness (`portcullis witness`) cosigns them.
[audit]
signing_key = "audit-key"
checkpoint_dir = "checkpoints"

# Every request and its answer are recorded (the answer as the caller received it, masked),
# bound to the audit log: `portcullis sessions list`, `show`, `replay`, `export`.
[recording]
mode = "strict"

# NIST SP 800-53 evidence: each day's AU-6 review report (HTML, JSON) and OSCAL assessment
# results, written to data/evidence at midnight UTC (and at start for a missed day), signed
# with the audit key, each hash recorded in the audit log.
[evidence]
schedule = "daily"

# The audit log streamed, as it is written, to the security team's store: here a JSON lines
# file standing in for a SIEM (syslog over TLS, Splunk HEC, Elasticsearch, OTLP and NATS
# JetStream are configured the same way). At least once, from a cursor kept in data/sinks;
# the signed checkpoints travel in the stream, so the copy can be checked on its own.
[[sinks]]
name = "siem"
kind = "file"
path = "siem/audit.jsonl"

# The web console, on the admin listener: approvals inbox, sessions and replay, audit search
# and proofs, evidence. In production people sign in with the company's IdP ([console.oidc]);
# the demo's finance lead signs in with its API key.
[console]
enabled = true
api_key_sign_in = true
admins = ["finance-leads"]      # may accept changed tool pins and see the configuration

[[identity.api_keys]]
name = "billing-agent"
kind = "agent"
sha256 = "{agent}"
groups = ["agents"]

[[identity.api_keys]]
name = "dana.finance"
kind = "human"
sha256 = "{human}"
groups = ["finance-leads"]

[targets.billing]
kind = "mcp"
command = [{exe}, "demo-server"]

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
mask = "pii"                    # the agent never sees the email or the card number

[[rules]]
name = "refunds need a finance lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_*"]
decision = "hold"               # waits at the gateway until a finance lead decides
approvers = ["finance-leads"]   # never the agent itself, whatever its groups
timeout = "15m"
require_reason = true           # the agent says why: _meta["dev.portcullis/reason"]

[[rules]]
name = "agents never delete customers"
who.kinds = ["agent"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting customers is a human decision"

[[rules]]
name = "finance leads use billing"
who.groups = ["finance-leads"]
target = "billing"
tools = ["lookup_customer", "refund_payment"]

# What "pii" hides, and how: labels for most things, the last four digits of a card.
[masks.pii]
detectors = ["pii", "secrets"]
columns = ["account_number"]    # database columns masked whole, whatever they hold
styles = {{ credit_card = "partial", field = "partial" }}
"#
    ))
}

pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    pg_listen: SocketAddr,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Absolute from here on: the lines the demo prints work from any directory.
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let keys = demo_keys(dir)?;
    let audit_key = dir.join("audit-key");
    if !audit_key.exists() {
        portcullis_audit::keys::generate(
            &audit_key,
            portcullis_audit::keys::AUDIT_KEY,
            "portcullis-demo-audit",
        )?;
    }
    let config_path = dir.join("portcullis.toml");
    let mut text = demo_config(listen, admin, &keys)?;
    // The customers API runs in this process on a port of its own choosing; the gateway is
    // the way to it that the demo shows.
    let token_path = customers_api_token(dir)?;
    let token = std::fs::read_to_string(&token_path)?.trim().to_string();
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the demo customers API")?;
    let api_addr = api_listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, crate::demo_server::customers_api(token)).await {
            tracing::error!("the demo customers API stopped: {e}");
        }
    });
    text.push_str(&customers_api_config(api_addr, &token_path)?);
    let database = match prepare_database().await {
        Ok((upstream, role)) => {
            text.push_str(&database_config(pg_listen, &upstream, &role));
            Some(pg_listen)
        }
        Err(why) => {
            println!(
                "PostgreSQL is not reachable ({why}): the database part of the demo is skipped. Set PGHOST/PGPORT/PGUSER/PGPASSWORD to use one."
            );
            None
        }
    };
    std::fs::write(&config_path, text)?;
    let config = Config::load(&config_path)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let data_dir = config.gateway.data_dir.clone();
    let server = tokio::spawn(crate::serve(config, Some(ready_tx)));
    let addr = match ready_rx.await {
        Ok(addr) => addr,
        Err(_) => return server.await?,
    };
    print_instructions(addr, admin, &keys, &config_path, &data_dir, dir);
    print_http_instructions(addr, &keys);
    if let Some(pg) = database {
        print_database_instructions(pg, &keys);
    }
    server.await?
}

fn print_database_instructions(pg: SocketAddr, keys: &DemoKeys) {
    let psql = |key: &str, user: &str, sql: &str| {
        format!(
            "PGPASSWORD={key} psql \"host={} port={} user={user} dbname=billing-db\" -c \"{sql}\"",
            pg.ip(),
            pg.port()
        )
    };
    println!(
        r#"The billing database is behind the gateway too (PostgreSQL protocol on {pg}):

  # allowed, masked: account numbers and emails come back hidden; the statement, its row
  # count and what was masked are in the audit log (never the values)
  {select}

  # refused with SQLSTATE 42501 (rule "agents never delete rows"); nothing reaches the database
  {delete}

  # a finance lead (a human identity) may correct a customer; no rule lets the agent update
  {update}
"#,
        select = psql(
            &keys.agent,
            "billing-agent",
            "SELECT id, name, email, account_number FROM customers"
        ),
        delete = psql(&keys.agent, "billing-agent", "DELETE FROM customers"),
        update = psql(
            &keys.human,
            "dana.finance",
            "UPDATE customers SET plan = 'team' WHERE id = 1003"
        ),
    );
}

/// The curl lines of the customers API, through the front door.
fn http_calls(addr: SocketAddr, key: &str) -> [String; 3] {
    let url = format!("http://{addr}/http/customers/customers/cus_1001");
    let auth = format!("-H 'Authorization: Bearer {key}'");
    [
        format!("curl -s {url} {auth} -w '\\n'"),
        format!(
            "curl -s -X POST {url}/refund {auth} -H 'Content-Type: application/json' \\\n    -H 'Portcullis-Reason: customer asked for a refund of a duplicate charge' -d '{{\"amount\":25}}' -w '\\n'"
        ),
        format!("curl -s -X DELETE {url} {auth} -w '\\n'"),
    ]
}

fn print_http_instructions(addr: SocketAddr, keys: &DemoKeys) {
    let [get, refund, delete] = http_calls(addr, &keys.agent);
    println!(
        r#"The customers HTTP API is behind the gateway too, at http://{addr}/http/customers/
(each request decided by method and path, recorded with its status and route):

  # allowed, masked: the email and card number come back hidden (rule "agents read
  # customers over HTTP"); the API's own token was injected, the agent's key never left
  {get}

  # held for approval (rule "HTTP refunds need a finance lead"): curl waits, silently,
  # until the finance lead approves it (the `approvals list` and `approvals approve` lines
  # above, or the web console), then prints the API's answer; without the Portcullis-Reason
  # header it is refused at once (428)
  {refund}

  # denied with 403 and a problem+json body naming the rule and its reason
  {delete}

Stop with Ctrl-C.
"#
    );
}

fn print_instructions(
    addr: SocketAddr,
    admin: SocketAddr,
    keys: &DemoKeys,
    config: &Path,
    data_dir: &Path,
    dir: &Path,
) {
    let url = format!("http://{addr}/mcp/billing");
    let call = |key: &str, tool: &str, args: &str, meta: &str| {
        format!(
            "curl -sN {url} -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' \\\n    -H 'Mcp-Method: tools/call' -H 'Mcp-Name: {tool}' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"{tool}\",\"arguments\":{args},\"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{{}},\"io.modelcontextprotocol/clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}{meta}}}}}}}'"
        )
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "portcullis".into());
    println!(
        r#"
Portcullis demo is running: {url}
  HTTP API:      http://{addr}/http/customers/  (curl lines at the end)
  web console:   http://{admin}/console/  (sign in as dana.finance with its key)
  configuration: {config}
  identities:    billing-agent (agent, group agents)      key {agent}
                 dana.finance  (human, group finance-leads) key {human}

Try it (each call is decided by policy and recorded):

  # allowed: the agent looks up a customer; the email and card number come back masked,
  # and the audit event records what was masked (never the values)
  {allow}

  # held for approval (rule "refunds need a finance lead"): the call waits at the gateway,
  # with progress messages saying where, until a finance lead decides (or 15 minutes pass)
  {hold}

  # meanwhile the finance lead (a human identity) decides, in the web console:
  #   open http://{admin}/console/ and sign in with dana.finance's key (above)
  # or in another terminal; the agent can never approve its own request. Approved, the
  # refund runs and the agent gets its result.
  export PORTCULLIS_TOKEN={human} PORTCULLIS_ADMIN_URL=http://{admin}
  {exe} approvals list
  {exe} approvals approve <apr_... from the list> --reason "customer called, refund agreed"

  # denied (rule "agents never delete customers")
  {deny}

Use it from an MCP client (streamable HTTP), e.g. in mcp.json:

  {{"mcpServers": {{"billing": {{"type": "http", "url": "{url}",
      "headers": {{"Authorization": "Bearer {agent}"}}}}}}}}

Watch the audit log:

  {exe} audit tail --data-dir {data} --follow

Verify it as an auditor would (signatures, Merkle tree, published checkpoints, and every
recorded chunk against the id its event signs):

  {exe} audit verify --data-dir {data} --pubkey {pubkey} --checkpoints {checkpoints}

Every request and its answer are recorded, as the agent received them (masked). See what
the agent saw, and replay it with its timing (each read is itself an audit event):

  {exe} sessions list --data-dir {data}
  {exe} sessions show <session id from the list> --data-dir {data}
  {exe} sessions replay <session id> --data-dir {data} --speed 0

Export a session as evidence and check it offline, with nothing but the public key:

  {exe} sessions export <session id> --data-dir {data} --out session.json
  {exe} sessions verify-bundle session.json --pubkey {pubkey}

The log is also streamed to {siem} (a file sink standing in for your SIEM).
See how far each sink got, and check that copy, on its own, against the signed checkpoints
it carries (no gap, no edit, no reordering):

  {exe} sinks status --config {config}
  {exe} audit verify-export {siem} --pubkey {pubkey}

NIST SP 800-53 evidence of the last 24 hours, from the verified log: the AU-6 review report
(who did what, the refund's approver, the denied delete, the log's integrity, a status per
control), the OSCAL assessment results, each signed and its hash recorded in the log; then
the finance lead signs the review off (AU-6: the sign-off counts in the next report whose
period includes it) and anyone checks a signature offline:

  {exe} evidence report --config {config} --sign --out au6-report.html
  {exe} evidence oscal --config {config} --sign --out assessment-results.json
  PORTCULLIS_TOKEN={human} {exe} evidence sign-off au6-report.html --url http://{admin} --reason "reviewed: refund approved by finance, delete refused"
  {exe} evidence verify au6-report.html --pubkey {pubkey}
"#,
        agent = keys.agent,
        human = keys.human,
        config = config.display(),
        allow = call(
            &keys.agent,
            "lookup_customer",
            r#"{"customer":"cus_1001"}"#,
            ""
        ),
        hold = call(
            &keys.agent,
            "refund_payment",
            r#"{"customer":"cus_1001","amount":25}"#,
            r#","progressToken":"refund-1","dev.portcullis/reason":"customer asked for a refund of a duplicate charge""#
        ),
        deny = call(
            &keys.agent,
            "delete_customer",
            r#"{"customer":"cus_1001"}"#,
            ""
        ),
        data = data_dir.display(),
        pubkey = dir.join("audit-key").join("audit.pub").display(),
        checkpoints = dir.join("checkpoints").display(),
        siem = dir.join("siem").join("audit.jsonl").display(),
    );
}
