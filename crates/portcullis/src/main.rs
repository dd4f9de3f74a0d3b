//! `portcullis`: the identity-aware access gateway for AI agents.
//!
//! This crate is the wiring: the command line, loading the configuration, starting the
//! adapters, and the operator commands (keys, audit, tool pins). Everything that decides or
//! records lives in the library crates.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's allocator: under load, glibc's malloc and free (and the waits
/// on its arena locks) were about a fifth of the gateway's CPU time; with mimalloc the MCP
/// benchmark's throughput rose by about a fifth (docs/benchmarks.md, issue 21).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_cli;
mod audit_cli;
mod demo;
mod demo_server;
mod evidence_cli;
mod evidence_report;
mod evidence_task;
mod front_door;
mod reload;
mod sessions_cli;
mod sinks_cli;
mod witness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use portcullis_approvals::{ApprovalSettings, Approvals};
use portcullis_audit::publish::{Publisher, Sinks, WitnessSink};
use portcullis_audit::{AuditLog, AuditReader};
use portcullis_config::{Config, McpUpstream, RecordingMode, TargetSpec, UpstreamTls};
use portcullis_guard::{Guard, LiveRules};
use portcullis_identity::Authenticator;
use portcullis_model::{EventType, IdentityKind, Outcome};
use portcullis_policy::Policy;
use portcullis_proxy_mcp::{Gateway, Pins};
use portcullis_proxy_pg::PgProxy;
use portcullis_proxy_pg::PgSettings;
use portcullis_proxy_pg::upstream::UpstreamSettings;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware access gateway for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and explain what it does.
    CheckConfig { config: PathBuf },
    /// One-command quick start: the gateway with a built-in demo MCP server and customers HTTP API.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API (approvals) listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Where the billing database's PostgreSQL listener is (when PostgreSQL is reachable).
        #[arg(long, default_value = "127.0.0.1:6432")]
        pg_listen: SocketAddr,
        /// Where the demo writes its configuration and data.
        #[arg(long, default_value = "portcullis-demo")]
        dir: PathBuf,
    },
    /// API keys for agents and services.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Decide held requests and grant requests (as an approver, through the admin API).
    Approvals {
        #[command(subcommand)]
        command: admin_cli::ApprovalsCommand,
    },
    /// Ask for, list and revoke just-in-time grants.
    Access {
        #[command(subcommand)]
        command: admin_cli::AccessCommand,
    },
    /// Recorded sessions: list, show, replay, export an evidence bundle, verify one.
    Sessions {
        #[command(subcommand)]
        command: sessions_cli::SessionsCommand,
    },
    /// Retention of recorded sessions.
    Recordings {
        #[command(subcommand)]
        command: sessions_cli::RecordingsCommand,
    },
    /// Evidence documents: check their signatures, compare control statuses, sign off a
    /// review (AU-6).
    Evidence {
        #[command(subcommand)]
        command: evidence_cli::EvidenceCommand,
    },
    /// Audit sinks (SIEM, bus, file): delivery status, and re-sending a range.
    Sinks {
        #[command(subcommand)]
        command: sinks_cli::SinksCommand,
    },
    /// Tool pins (rug-pull protection).
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Run a witness: cosign logs' checkpoints while they stay append-only (C2SP tlog-witness).
    Witness(witness::WitnessArgs),
    /// The built-in demo MCP server over stdio (used by `demo`).
    #[command(hide = true)]
    DemoServer,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key: prints the key once and the configuration lines holding its hash.
    New {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "agent")]
        kind: Kind,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Create the audit log's checkpoint signing key (`audit.key`, mode 0600, and
    /// `audit.pub`, for auditors and witnesses). Keep DIR outside the data directory and
    /// point `audit.signing_key` at it.
    AuditInit {
        #[arg(long)]
        out: PathBuf,
        /// The key's name, written in every checkpoint signature.
        #[arg(long, default_value = "portcullis-audit")]
        name: String,
    },
    /// Create a witness's cosigning key (`witness.key`, mode 0600, and `witness.pub`) and
    /// print its verifier key.
    WitnessInit {
        #[arg(long)]
        out: PathBuf,
        /// The witness's name, written in its cosignatures (e.g. `witness.example.com/w1`).
        #[arg(long)]
        name: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Agent,
    Service,
    Human,
}

impl From<Kind> for IdentityKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Agent => IdentityKind::Agent,
            Kind::Service => IdentityKind::Service,
            Kind::Human => IdentityKind::Human,
        }
    }
}

/// Where the data directory is: given directly, or read from a configuration file.
#[derive(clap::Args)]
struct DataDir {
    /// The gateway's data directory (default: the configuration's, else ./portcullis-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The gateway's configuration file (default: ./portcullis.toml, if there is one).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The configuration `--config` names, or `portcullis.toml` here if there is one.
fn load_config(path: Option<&Path>) -> Result<Option<Config>> {
    match path {
        Some(config) => Ok(Some(Config::load(config)?)),
        None if Path::new("portcullis.toml").exists() => {
            Ok(Some(Config::load(Path::new("portcullis.toml"))?))
        }
        None => Ok(None),
    }
}

impl DataDir {
    /// The configuration `--config` names, or `portcullis.toml` here if there is one.
    fn config(&self) -> Result<Option<Config>> {
        load_config(self.config.as_deref())
    }

    fn resolve(&self) -> Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(self.data_dir_of(self.config()?.as_ref())),
        }
    }

    /// The data directory, given the configuration [`DataDir::config`] read (for commands
    /// that need both, so the file is read once).
    fn data_dir_of(&self, config: Option<&Config>) -> PathBuf {
        match (&self.data_dir, config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(config)) => config.gateway.data_dir.clone(),
            (None, None) => PathBuf::from("portcullis-data"),
        }
    }
}

/// Where the logs are, for the commands that read several at once (`audit verify`,
/// `evidence report`): each replica of a gateway keeps its own log in its own data directory.
#[derive(clap::Args)]
struct DataDirs {
    /// A gateway's data directory; repeat it to read the logs of several replicas (default:
    /// the configuration's, else ./portcullis-data).
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dirs: Vec<PathBuf>,
    /// The gateway's configuration file (default: ./portcullis.toml, if there is one).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DataDirs {
    fn config(&self) -> Result<Option<Config>> {
        load_config(self.config.as_deref())
    }

    /// The data directories, given the configuration [`DataDirs::config`] read: those given,
    /// else the configuration's one, else `./portcullis-data`.
    fn dirs_of(&self, config: Option<&Config>) -> Vec<PathBuf> {
        if !self.data_dirs.is_empty() {
            return self.data_dirs.clone();
        }
        vec![match config {
            Some(config) => config.gateway.data_dir.clone(),
            None => PathBuf::from("portcullis-data"),
        }]
    }

    fn resolve(&self) -> Result<Vec<PathBuf>> {
        if !self.data_dirs.is_empty() {
            return Ok(self.data_dirs.clone());
        }
        Ok(self.dirs_of(self.config()?.as_ref()))
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the latest events as JSON lines.
    Tail {
        #[command(flatten)]
        dir: DataDir,
        /// How many of the latest events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new events as they are written.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print one event.
    Show {
        event_id: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Check the whole log against the gateway's public key: every event against the
    /// signed checkpoints (stored and published), the witnesses' cosignatures, and the
    /// session records. Exit 0 valid, 1 invalid, 2 unusable input.
    Verify(audit_cli::VerifyArgs),
    /// Write a self-contained proof that one event is in the signed log.
    Proof(audit_cli::ProofArgs),
    /// Check a proof written by `audit proof`, offline. Exit 0 valid, 1 invalid.
    VerifyProof(audit_cli::VerifyProofArgs),
    /// Check a copy of the log taken back out of a SIEM (JSON lines as a sink sent them)
    /// against the signed checkpoints in it: no gap, no edit, no reordering. Exit 0 valid,
    /// 1 invalid, 2 unusable input.
    VerifyExport(sinks_cli::VerifyExportArgs),
    /// Print the keyed digest an event would hold for the payload on standard input, to
    /// check a known payload (a request's exact `params`) against an event's digest.
    Digest(audit_cli::DigestArgs),
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// Accept the changed definition of a pinned tool, so the gateway shows it again.
    Accept {
        target: String,
        tool: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List tools whose changes await acceptance.
    Pending {
        #[command(flatten)]
        dir: DataDir,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DemoServer => demo_server::run(),
        Command::Keys {
            command: KeysCommand::WitnessInit { out, name },
        } => witness::init_key(&out, &name),
        Command::Witness(args) => {
            init_logging();
            runtime()?.block_on(witness::run(args))
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Keys {
            command: KeysCommand::New { name, kind, groups },
        } => {
            keys_new(&name, kind.into(), &groups);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::AuditInit { out, name },
        } => audit_init(&out, &name),
        Command::Audit { command } => audit(command),
        Command::Tools { command } => tools(command),
        Command::Sinks { command } => sinks_cli::sinks(command),
        Command::Sessions { command } => match sessions_cli::sessions(command)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Recordings { command } => sessions_cli::recordings(command),
        Command::Evidence { command } => match evidence_cli::evidence(command) {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Command::Approvals { command } => admin_cli::approvals(command),
        Command::Access { command } => admin_cli::access(command),
        Command::Serve { config } => {
            init_logging();
            let config = Config::load(&config)?;
            runtime()?.block_on(serve(config, None))
        }
        Command::Demo {
            listen,
            admin_listen,
            pg_listen,
            dir,
        } => {
            init_logging();
            runtime()?.block_on(demo::run(listen, admin_listen, pg_listen, &dir))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check_config(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    // Compiled as `serve` and a reload would (identities, policy, masking profiles with
    // their keys, the recorder's age recipients), so a file that would not start, or would
    // be refused by a reload, is not called valid.
    let rules = reload::compile(&config, None)?;
    println!("{}: valid", path.display());
    print!("{}", explain_config(&config, &rules.policy));
    Ok(())
}

/// What a configuration sets up, in words: `check-config` prints it, the console's admin
/// page shows it.
fn explain_config(config: &Config, policy: &Policy) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  gateway {} listening on {} ({}), data in {}",
        config.gateway.id,
        config.gateway.listen,
        match &config.gateway.tls {
            Some(tls) => format!("https, certificate {}", tls.cert.display()),
            None => "plain http".into(),
        },
        config.gateway.data_dir.display()
    );
    let _ = writeln!(
        out,
        "  control state: {}",
        match config.state.backend {
            portcullis_config::state::StateBackend::Sqlite =>
                "SQLite in the data directory (this gateway only)".to_string(),
            portcullis_config::state::StateBackend::Postgres => format!(
                "PostgreSQL, shared by replicas (this one is {}; heartbeat {:?}, taken for dead after {:?})",
                config.gateway.id, config.state.heartbeat, config.state.replica_timeout
            ),
        }
    );
    let _ = writeln!(
        out,
        "  identities: {} OIDC issuer(s), {} API key(s)",
        config.identity.oidc.len(),
        config.identity.api_keys.len()
    );
    for (name, target) in &config.targets {
        let how = match target {
            TargetSpec::Mcp(mcp) => match &mcp.upstream {
                McpUpstream::Stdio { command, .. } => format!("stdio: {}", command.join(" ")),
                McpUpstream::Http { url, .. } => format!("http: {url}"),
            },
            TargetSpec::Postgres(pg) => format!(
                "listening on {}, database {} on {}:{} as {}",
                pg.listen, pg.upstream.database, pg.upstream.host, pg.upstream.port, pg.user
            ),
            TargetSpec::Http(http) => format!(
                "{} at /http/{name}/{}{}",
                http.upstream,
                http.listen
                    .map(|l| format!(" and on {l}"))
                    .unwrap_or_default(),
                match &http.credential {
                    Some(portcullis_config::HttpCredential::Bearer(_)) => ", bearer credential",
                    Some(portcullis_config::HttpCredential::Basic { .. }) => ", basic credential",
                    Some(portcullis_config::HttpCredential::Header { .. }) => ", header credential",
                    None => "",
                }
            ),
        };
        let _ = writeln!(out, "  target {name} ({:?}, {how})", target.kind());
    }
    let _ = writeln!(
        out,
        "  {} rule(s), policy version {} (default: deny)",
        policy.rule_count(),
        policy.version()
    );
    for rule in &config.rules {
        let mut scope = Vec::new();
        for (label, list) in [
            ("tools", &rule.tools),
            ("resources", &rule.resources),
            ("prompts", &rule.prompts),
        ] {
            if !list.is_empty() {
                scope.push(format!("{label} {}", list.join(",")));
            }
        }
        if let Some(sql) = rule.sql() {
            let statements = if sql.statements.is_empty() {
                "statements of any kind".to_string()
            } else {
                format!("statements {}", sql.statements.join(","))
            };
            let tables = if sql.tables.is_empty() {
                "any table".to_string()
            } else {
                format!("tables {}", sql.tables.join(","))
            };
            scope.push(format!("{statements} on {tables}"));
            if !sql.functions.is_empty() {
                scope.push(format!("functions {}", sql.functions.join(",")));
            }
            if sql.without_where {
                scope.push("UPDATE/DELETE without WHERE".into());
            }
        }
        if let Some(http) = &rule.http {
            let methods = if http.methods.is_empty() {
                "any method".to_string()
            } else {
                http.methods.join(",")
            };
            let paths = if http.paths.is_empty() {
                "any path".to_string()
            } else {
                http.paths.join(",")
            };
            scope.push(format!("{methods} {paths}"));
        }
        let who = [
            (!rule.who.groups.is_empty()).then(|| format!("groups {}", rule.who.groups.join(","))),
            (!rule.who.subjects.is_empty())
                .then(|| format!("subjects {}", rule.who.subjects.join(","))),
            (!rule.who.kinds.is_empty()).then(|| format!("kinds {:?}", rule.who.kinds)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "    {:?}: {:?} {} on {} for {}{}",
            rule.name.get_ref(),
            rule.decision,
            if scope.is_empty() {
                "everything".into()
            } else {
                scope.join("; ")
            },
            rule.target.get_ref(),
            if who.is_empty() {
                "every caller".into()
            } else {
                who.join(" and ")
            },
            rule.when
                .as_ref()
                .map(|w| format!(" when {}", w.get_ref()))
                .unwrap_or_default(),
        );
    }
    if !config.sinks.is_empty() && config.audit.signing_key.is_none() {
        let _ = writeln!(
            out,
            "  warning: audit.signing_key is not set, so the sinks' streams carry no signed checkpoints and their copies cannot be verified (audit verify-export)"
        );
    }
    for spec in &config.sinks {
        let destination = portcullis_sinks::destination(spec);
        let filter = &spec.filter;
        let mut only = Vec::new();
        for (label, list) in [
            ("types", &filter.event_types),
            ("outcomes", &filter.outcomes),
            ("targets", &filter.targets),
        ] {
            if !list.is_empty() {
                only.push(format!("{label} {}", list.join(",")));
            }
        }
        let _ = writeln!(
            out,
            "  sink {} ({} -> {destination}): {}{}; batches of up to {} (gathered for {}), warns past {} of lag",
            spec.name,
            spec.kind.name(),
            if only.is_empty() {
                "every event".to_string()
            } else {
                format!(
                    "events of {} (the others as leaf hashes)",
                    only.join(" and ")
                )
            },
            if config.audit.signing_key.is_some() {
                ", signed checkpoints included"
            } else {
                ""
            },
            spec.batch_max,
            humantime::format_duration(spec.batch_wait),
            humantime::format_duration(spec.lag_warning),
        );
    }
    out
}

fn keys_new(name: &str, kind: IdentityKind, groups: &[String]) {
    let (key, hash) = portcullis_identity::generate_api_key();
    println!("API key for {name} (shown once; store it in the agent's secret store):\n\n  {key}\n");
    println!("Add to portcullis.toml:\n");
    println!("[[identity.api_keys]]");
    println!("name = {}", toml_string(name));
    println!("kind = \"{kind}\"");
    println!("sha256 = \"{hash}\"");
    let groups: Vec<String> = groups.iter().map(|g| toml_string(g)).collect();
    println!("groups = [{}]", groups.join(", "));
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

fn audit(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Tail { dir, lines, follow } => {
            let dir = dir.resolve()?;
            let reader = AuditReader::open(&dir)
                .with_context(|| format!("opening the audit log in {}", dir.display()))?;
            let mut last = 0;
            for (seq, body) in reader.last(lines)? {
                println!("{}", audit_cli::terminal_safe(&body));
                last = seq;
            }
            if !follow {
                return Ok(());
            }
            loop {
                std::thread::sleep(Duration::from_millis(200));
                for (seq, body) in reader.since(last, 1000)? {
                    println!("{}", audit_cli::terminal_safe(&body));
                    last = seq;
                }
            }
        }
        AuditCommand::Verify(args) => std::process::exit(audit_cli::verify(&args)),
        AuditCommand::Proof(args) => audit_cli::proof(&args),
        AuditCommand::VerifyExport(args) => std::process::exit(sinks_cli::verify_export(&args)),
        AuditCommand::Digest(args) => audit_cli::digest(&args),
        AuditCommand::VerifyProof(args) => std::process::exit(audit_cli::verify_proof(&args)),
        AuditCommand::Show { event_id, dir } => {
            let dir = dir.resolve()?;
            let reader = AuditReader::open(&dir)?;
            match reader.by_id(&event_id)? {
                Some((_, body)) => {
                    let value: serde_json::Value = serde_json::from_str(&body)?;
                    let pretty = serde_json::to_string_pretty(&value)?;
                    println!("{}", audit_cli::terminal_safe(&pretty));
                    Ok(())
                }
                None => bail!("no event {event_id} in {}", dir.display()),
            }
        }
    }
}

/// The tool pins the gateway of `dir` uses: its `pins.db`, or with `[state] backend =
/// "postgres"` in its configuration, the shared state (joined under a name of this command's
/// own, left again by `leave`, so no replica of that name stays behind).
async fn open_pins(dir: &DataDir) -> Result<(PathBuf, Pins, Option<portcullis_state::Shared>)> {
    // As before shared state: `--data-dir` alone names a gateway's pins.db without reading
    // any configuration; `--config` (or ./portcullis.toml without `--data-dir`) is read.
    let config = match (&dir.data_dir, &dir.config) {
        (Some(_), None) => None,
        _ => dir.config()?,
    };
    let data_dir = dir.data_dir_of(config.as_ref());
    let shared = match &config {
        Some(config)
            if config.state.backend == portcullis_config::state::StateBackend::Postgres =>
        {
            let name = format!("{}+cli-{}", config.gateway.id, std::process::id());
            Some(
                portcullis_state::Shared::connect(&config.state, &name)
                    .await
                    .context("connecting to the shared state ([state] backend = \"postgres\")")?,
            )
        }
        _ => None,
    };
    let pins = Pins::open_in(&data_dir, shared.clone())
        .await
        .context("opening the tool pins")?;
    Ok((data_dir, pins, shared))
}

fn tools(command: ToolsCommand) -> Result<()> {
    match command {
        ToolsCommand::Accept { target, tool, dir } => {
            let (dir, old, new) = runtime()?.block_on(async {
                let (dir, pins, shared) = open_pins(&dir).await?;
                let accepted = pins.accept(&target, &tool).await;
                drop(pins);
                if let Some(shared) = shared {
                    shared.leave().await;
                }
                let (old, new) = accepted?;
                Ok::<_, anyhow::Error>((dir, old, new))
            })?;
            let log = AuditLog::open(
                &dir,
                "portcullis-cli",
                portcullis_config::Durability::Strict,
            )?;
            let mut ev = log.event(EventType::ToolPinAccepted, Outcome::Info);
            ev.target = Some(target.clone());
            ev.resource = Some(tool.clone());
            ev.detail = Some(format!(
                "accepted by {} on the command line: pin {old} replaced by {new}",
                std::env::var("USER").unwrap_or_else(|_| "an operator".into())
            ));
            runtime()?.block_on(async {
                log.record(ev).await?;
                log.close().await
            })?;
            println!(
                "accepted the new definition of {tool} on {target}; the gateway shows it again"
            );
            Ok(())
        }
        ToolsCommand::Pending { dir } => {
            let pending = runtime()?.block_on(async {
                let (_, pins, shared) = open_pins(&dir).await?;
                let pending = pins.pending().await;
                drop(pins);
                if let Some(shared) = shared {
                    shared.leave().await;
                }
                Ok::<_, anyhow::Error>(pending?)
            })?;
            for (target, tool) in pending {
                println!("{target} {tool}");
            }
            Ok(())
        }
    }
}

fn audit_init(out: &Path, name: &str) -> Result<()> {
    let vkey = portcullis_audit::keys::generate(out, portcullis_audit::keys::AUDIT_KEY, name)?;
    let (private, public) =
        portcullis_audit::keys::key_paths(out, portcullis_audit::keys::AUDIT_KEY);
    println!(
        "wrote {} (private, mode 0600) and {}",
        private.display(),
        public.display()
    );
    println!();
    println!("verifier key (give it to auditors and witnesses):");
    println!("  {vkey}");
    println!();
    println!("add to portcullis.toml:");
    println!("  [audit]");
    println!("  signing_key = {:?}", out.display().to_string());
    Ok(())
}

/// Opens the audit log; with `audit.signing_key`, one that signs checkpoints.
fn open_audit_log(config: &Config) -> Result<AuditLog> {
    let data_dir = &config.gateway.data_dir;
    let log = match &config.audit.signing_key {
        Some(dir) => {
            let signer =
                portcullis_audit::keys::load_signer(dir, portcullis_audit::keys::AUDIT_KEY)
                    .context("loading the audit signing key (audit.signing_key)")?;
            AuditLog::open_signed(
                data_dir,
                &config.gateway.id,
                config.audit.durability,
                portcullis_audit::CheckpointSettings {
                    origin: config.audit_origin(),
                    signer: Arc::new(signer),
                    interval: config.audit.checkpoint_interval,
                    every: config.audit.checkpoint_every,
                },
            )
        }
        None => {
            tracing::warn!(
                "audit checkpoints are not signed: run `portcullis keys audit-init --out DIR` and set audit.signing_key, or the log cannot be verified against anything outside this machine"
            );
            AuditLog::open(data_dir, &config.gateway.id, config.audit.durability)
        }
    };
    log.with_context(|| format!("opening the audit log in {}", data_dir.display()))
}

/// Starts publishing checkpoints to the configured sinks, if any.
fn start_publisher(config: &Config, audit: &AuditLog) -> Result<Option<Publisher>> {
    if config.audit.checkpoint_dir.is_none() && config.audit.witnesses.is_empty() {
        return Ok(None);
    }
    let mut witnesses = Vec::new();
    for witness in &config.audit.witnesses {
        let key = portcullis_audit::keys::load_cosignature_verifier(&witness.key)
            .context("loading a witness key (audit.witnesses.key)")?;
        witnesses.push(WitnessSink {
            url: witness.url.clone(),
            key,
        });
    }
    let sinks = Sinks {
        directory: config.audit.checkpoint_dir.clone(),
        witnesses,
    };
    Publisher::spawn(audit.clone(), config.gateway.data_dir.clone(), sinks)
        .map(Some)
        .map_err(anyhow::Error::msg)
}

/// How long a stopping gateway lets its sinks deliver the last events.
const SINK_DRAIN: Duration = Duration::from_secs(5);

/// Runs the gateway until Ctrl-C or SIGTERM; SIGHUP reloads the configuration file (see
/// [`reload`]). `ready` is told the bound address.
pub async fn serve(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    let limits = &config.gateway.limits;
    // Identities, policy and masks: what a reload replaces, shared by the guard and the
    // admin API.
    let live = LiveRules::new(reload::compile(&config, None)?);
    let (auth, policy) = {
        let rules = live.load();
        (rules.auth.clone(), rules.policy.clone())
    };
    // One set of connection caps for every listener: a flood on one cannot starve the rest.
    let connections =
        portcullis_limits::ConnectionLimiter::new(portcullis_limits::ConnectionLimits {
            per_source: limits.max_connections_per_source,
            total: limits.max_connections,
        });
    let audit = open_audit_log(&config)?;
    audit.set_space_reserve(config.audit.space_reserve);
    let publisher = start_publisher(&config, &audit)?;
    if !config.sinks.is_empty() && config.audit.signing_key.is_none() {
        tracing::warn!(
            "audit.signing_key is not set: the sinks' streams carry no signed checkpoints, so their copies cannot be verified"
        );
    }
    // The sinks read the committed log on their own tasks: no request waits for them.
    let sinks = portcullis_sinks::SinkSet::start(
        &config.sinks,
        &portcullis_sinks::engine::Context {
            data_dir: config.gateway.data_dir.clone(),
            origin: config.audit_origin(),
            committed: Some(audit.committed()),
        },
    )
    .context("starting the audit sinks")?;
    let approval_settings = ApprovalSettings {
        approvals: config.approvals.clone(),
        admin_url: config.admin_url(),
        console_url: config.console_url(),
    };
    // Control state: SQLite files of this gateway's own, or the PostgreSQL database that
    // replicas share (holds decided through any replica, grants honoured by all).
    let shared = match config.state.backend {
        portcullis_config::state::StateBackend::Sqlite => None,
        portcullis_config::state::StateBackend::Postgres => Some(
            portcullis_state::Shared::connect(&config.state, &config.gateway.id)
                .await
                .context("connecting to the shared state ([state] backend = \"postgres\")")?,
        ),
    };
    let pins = Arc::new(
        Pins::open_in(&config.gateway.data_dir, shared.clone())
            .await
            .context("opening the tool pins")?,
    );
    let console = console_settings(&config, &policy, pins.clone(), shared.clone())?;
    let approvals = Approvals::open(
        &config.gateway.data_dir,
        audit.clone(),
        &approval_settings,
        shared.clone(),
    )
    .await
    .context("opening the approvals store")?;
    let sweeper_of_approvals = approvals.spawn_sweeper();
    // The shared phases, built once: every adapter identifies, decides, holds, masks and
    // records through this one guard.
    let guard = Guard::with_rules(live.clone(), approvals.clone(), audit.clone());
    let gateway = Gateway::new(
        portcullis_proxy_mcp::gateway::Settings::of(&config),
        &config.targets,
        guard.clone(),
        pins,
    )?;
    let http_gateway = portcullis_proxy_http::HttpGateway::new(&config.targets, guard.clone())
        .map_err(anyhow::Error::msg)
        .context("starting the HTTP targets")?;
    // The certificate is loaded before anything is announced: a bad key fails the start.
    let tls = match &config.gateway.tls {
        Some(tls) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?,
        ),
        None => None,
    };
    let databases = start_databases(&config, &guard, &connections)
        .await
        .context("starting the database listeners")?;
    let listener = listen(config.gateway.listen)
        .with_context(|| format!("cannot listen on {}", config.gateway.listen))?;
    let addr = listener.local_addr()?;
    let upstreams = Arc::new(portcullis_console::readiness::UpstreamProbe::new(
        probe_targets(&config),
    ));
    let admin = match config.gateway.admin_listen {
        Some(admin_addr) => {
            let listener = listen(admin_addr)
                .with_context(|| format!("cannot listen on {admin_addr} (gateway.admin_listen)"))?;
            let app = portcullis_console::router(
                portcullis_console::Admin {
                    rules: live.clone(),
                    approvals: approvals.clone(),
                    audit: audit.clone(),
                    data_dir: config.gateway.data_dir.clone(),
                    sinks: sinks.statuses(),
                    metrics: Some(metrics_renderer(
                        &guard,
                        &audit,
                        &approvals,
                        sinks.statuses(),
                        upstreams.clone(),
                        shared.clone(),
                    )),
                    upstreams: Some(upstreams.clone()),
                    shared_state: shared.clone(),
                },
                console,
            )
            .map_err(anyhow::Error::msg)?;
            Some((listener, app))
        }
        None => {
            if config
                .rules
                .iter()
                .any(|r| r.decision == portcullis_config::RuleDecision::Hold || r.requires_grant)
            {
                tracing::warn!(
                    "rules hold requests or require grants, but gateway.admin_listen is not set: nobody can decide them, so held requests will expire"
                );
            }
            None
        }
    };
    let mut start = audit.event(EventType::GatewayStart, Outcome::Info);
    let admin_addr = match &admin {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    start.detail = Some(format!(
        "listening on {addr} ({}){}{}; policy {}; {}",
        if tls.is_some() { "https" } else { "http" },
        admin_addr
            .map(|a| format!(", admin API on {a}"))
            .unwrap_or_default(),
        databases
            .iter()
            .map(|(proxy, addr, _)| format!(", postgres target {} on {addr}", proxy.target))
            .collect::<String>(),
        policy.version(),
        recording_summary(&config.recording),
    ));
    // The policy in force from now on, as a field (not only in the text) so that evidence
    // reports can show when it changed (CM-3).
    start.policy_version = Some(policy.version().to_string());
    if config.recording.mode == RecordingMode::BestEffort {
        tracing::warn!(
            "recording.mode = \"best-effort\": a request whose recording cannot be kept goes on, with a recording.failed event"
        );
    }
    audit
        .record(start)
        .await
        .context("the audit log cannot be written; refusing to start")?;
    tracing::info!(%addr, admin = ?admin_addr, tls = tls.is_some(), policy = policy.version(), targets = config.targets.len(), "portcullis is serving");
    if let Some(console) = config.console_url() {
        tracing::info!("web console on {console}/");
    }
    let grace = config.gateway.shutdown_grace;
    let http_limits = front_door::HttpLimits {
        connections: connections.clone(),
        header_read_timeout: config.gateway.limits.header_read_timeout,
        shutdown_grace: grace,
    };
    let tls = tls.map(|tls| front_door::http1_tls(&tls.get_inner()));
    let admin_server = admin.map(|(listener, app)| {
        let (tls, limits) = (tls.clone(), http_limits.clone());
        tokio::spawn(front_door::serve(
            "admin",
            listener,
            app,
            tls,
            limits,
            shutdown_signal(),
        ))
    });
    let mut http_listeners = Vec::new();
    for (target, addr) in http_gateway.own_listeners() {
        let listener = listen(addr)
            .with_context(|| format!("cannot listen on {addr} (targets.{target}.listen)"))?;
        let limits = portcullis_proxy_http::listener::ListenerLimits {
            connections: connections.clone(),
            header_read_timeout: config.gateway.limits.header_read_timeout,
            shutdown_grace: grace,
        };
        let tls = tls
            .as_ref()
            .map(|t| portcullis_proxy_http::listener::h2_tls(t));
        tracing::info!(%addr, target, "HTTP target listening");
        http_listeners.push(tokio::spawn(portcullis_proxy_http::listener::serve(
            http_gateway.clone(),
            target,
            listener,
            tls,
            limits,
            shutdown_signal(),
        )));
    }
    let evidence = start_evidence(&config, &audit)?;
    // From here on a SIGHUP reloads the file: after the start event, so a reload's event
    // follows the start it changes.
    #[cfg(unix)]
    let reloader = tokio::spawn(reload::on_hangup(
        config.clone(),
        guard.clone(),
        audit.clone(),
    ));
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }
    let sweeper = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                gateway.sweep_idle().await;
            }
        })
    };
    let failure_summaries = {
        let (auth, audit) = (auth.clone(), audit.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                record_failure_summaries(&auth, &audit, false).await;
            }
        })
    };
    let app = portcullis_proxy_mcp::router(gateway.clone()).merge(http_gateway.router());
    front_door::serve(
        "front door",
        listener,
        app,
        tls,
        http_limits,
        stopping(approvals.clone()),
    )
    .await;
    // PostgreSQL sessions are long-lived: they are ended now (57P01, as PostgreSQL's own
    // fast shutdown does), their statements in flight recorded as unfinished.
    for (proxy, _, task) in &databases {
        task.abort();
        proxy.stop(grace).await;
    }
    // Held requests end now (they would wait for a decision past any grace); the HTTP
    // targets' own listeners stopped accepting at the signal too, and their requests in
    // flight finish within their grace.
    http_gateway.stop();
    for listener in http_listeners {
        if tokio::time::timeout(grace, listener).await.is_err() {
            tracing::warn!(
                "an HTTP target's requests were still running at the end of the shutdown grace"
            );
        }
    }
    sweeper.abort();
    #[cfg(unix)]
    reloader.abort();
    if let Some(evidence) = evidence {
        evidence.abort();
    }
    sweeper_of_approvals.abort();
    failure_summaries.abort();
    record_failure_summaries(&auth, &audit, true).await;
    if let Some(admin) = admin_server {
        admin.abort();
    }
    gateway.end_all().await;
    // The open segment of encrypted recordings is sealed while the log can still record
    // its seal: what a clean stop leaves is all sealed.
    if let Err(e) = guard.close_recording().await {
        tracing::error!("the last recordings could not be sealed: {e}");
    }
    let stop = audit.event(EventType::GatewayStop, Outcome::Info);
    audit.record(stop).await?;
    // The last checkpoint covers the stop event, and reaches the sinks while the log can
    // still store the witnesses' cosignatures of it.
    audit.checkpoint_now().await?;
    // The sinks get a few seconds to deliver the stop event and that checkpoint; what they
    // do not deliver by then is sent after the next start, from their cursors.
    sinks.finish(SINK_DRAIN).await;
    if let Some(publisher) = publisher {
        publisher.finish().await;
    }
    audit.close().await?;
    if let Some(shared) = shared {
        shared.leave().await;
    }
    tracing::info!("portcullis stopped");
    Ok(())
}

/// Each target's upstream address for the readiness check: `host:port` of a network
/// upstream, nothing for a stdio MCP server.
fn probe_targets(config: &Config) -> Vec<portcullis_console::readiness::ProbeTarget> {
    let of_url = |url: &str| {
        let uri: axum::http::Uri = url.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        Some(match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        })
    };
    config
        .targets
        .iter()
        .map(|(name, target)| {
            let (kind, address) = match target {
                TargetSpec::Mcp(mcp) => match &mcp.upstream {
                    McpUpstream::Stdio { .. } => ("mcp", None),
                    McpUpstream::Http { url, .. } => ("mcp", of_url(url)),
                },
                TargetSpec::Postgres(pg) => (
                    "postgres",
                    Some(if pg.upstream.host.contains(':') {
                        format!("[{}]:{}", pg.upstream.host, pg.upstream.port)
                    } else {
                        format!("{}:{}", pg.upstream.host, pg.upstream.port)
                    }),
                ),
                TargetSpec::Http(http) => ("http", of_url(&http.upstream)),
            };
            portcullis_console::readiness::ProbeTarget {
                name: name.clone(),
                kind,
                address,
            }
        })
        .collect()
}

/// What `/metrics` serves: the guard's request metrics, with the state gauges (audit log
/// availability and queue, each sink's lag, upstream reachability) read at the moment of
/// the scrape.
fn metrics_renderer(
    guard: &Arc<Guard>,
    audit: &AuditLog,
    approvals: &Approvals,
    sinks: portcullis_sinks::SinkStatuses,
    upstreams: Arc<portcullis_console::readiness::UpstreamProbe>,
    shared: Option<portcullis_state::Shared>,
) -> Arc<dyn Fn() -> String + Send + Sync> {
    let (metrics, audit, approvals) = (guard.metrics().clone(), audit.clone(), approvals.clone());
    Arc::new(move || {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .audit_queue_depth
            .set(i64::try_from(audit.queue_depth()).unwrap_or(i64::MAX));
        // The last readiness results, without waiting for a check: a scrape stays instant.
        // A stale cache is refreshed in the background for the next scrape.
        for reach in upstreams.last().iter().flat_map(|r| r.iter()) {
            if let Some(up) = reach.reachable() {
                metrics
                    .upstream_reachable
                    .get_or_create(&portcullis_guard::metrics::UpstreamLabel {
                        target: reach.target.clone(),
                    })
                    .set(i64::from(up));
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let probe = upstreams.clone();
            runtime.spawn(async move {
                probe.check().await;
            });
        }
        metrics.holds_waiting.set(count(approvals.held_waiting()));
        metrics.state_listening.set(match &shared {
            Some(shared) => i64::from(shared.listening()),
            None => -1,
        });
        metrics
            .grants_in_force
            .set(count(approvals.grants_in_force()));
        metrics
            .audit_available
            .set(i64::from(audit.unavailable().is_none()));
        let committed = *audit.committed().borrow();
        metrics
            .events_committed
            .set(i64::try_from(committed).unwrap_or(i64::MAX));
        let newest = audit.checkpoints().borrow().clone();
        match newest {
            Some(checkpoint) => {
                let age = chrono::DateTime::parse_from_rfc3339(&checkpoint.time)
                    .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
                    .unwrap_or(-1);
                metrics.checkpoint_age_seconds.set(age.max(0));
                metrics.events_uncovered.set(
                    i64::try_from(committed.saturating_sub(checkpoint.size)).unwrap_or(i64::MAX),
                );
            }
            None => {
                metrics.checkpoint_age_seconds.set(-1);
                metrics
                    .events_uncovered
                    .set(i64::try_from(committed).unwrap_or(i64::MAX));
            }
        }
        for sink in sinks.get() {
            metrics
                .sink_lag_events
                .get_or_create(&portcullis_guard::metrics::SinkLabel { sink: sink.name })
                .set(i64::try_from(sink.lag_events).unwrap_or(i64::MAX));
        }
        metrics.encode()
    })
}

/// Starts the scheduled evidence run when `[evidence] schedule` is set. Its key and output
/// directory are checked here, so a mistake fails the start rather than the first run.
fn start_evidence(
    config: &Config,
    audit: &AuditLog,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    use portcullis_evidence::documents::Format;
    use portcullis_evidence::schedule::Plan;
    let evidence = &config.evidence;
    let Some(schedule) = &evidence.schedule else {
        return Ok(None);
    };
    let plan = Plan::new(schedule).context("evidence.schedule")?;
    // The configuration refuses a schedule without a key; this is the same rule, kept.
    let key_dir = evidence
        .signing_key(config.audit.signing_key.as_deref())
        .context("evidence.schedule: scheduled reports are signed; set audit.signing_key")?;
    let signer = portcullis_audit::keys::load_signer(key_dir, portcullis_audit::keys::AUDIT_KEY)
        .context("loading the evidence signing key")?;
    let out_dir = evidence.out_dir(&config.gateway.data_dir);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create evidence.out_dir {}", out_dir.display()))?;
    // An unsigned log cannot be verified: its reports say so, checked against this key.
    let key = match audit.signing() {
        Some((key, _)) => key.clone(),
        None => portcullis_audit::checkpoint::Verifier::for_signer(&signer),
    };
    // A period is reported once it has settled: a request held at its end is appended when
    // it is decided (up to the longest hold timeout later), and its events are signed at the
    // next checkpoint. A minute more for the witness.
    let longest_hold = config
        .rules
        .iter()
        .filter(|rule| rule.decision == portcullis_config::RuleDecision::Hold)
        .map(|rule| rule.timeout)
        .max()
        .unwrap_or_default();
    let settle =
        longest_hold + config.audit.checkpoint_interval + std::time::Duration::from_secs(60);
    let writer = Arc::new(evidence_task::Writer {
        data_dir: config.gateway.data_dir.clone(),
        out_dir: out_dir.clone(),
        signer: Arc::new(signer),
        audit: audit.clone(),
        key,
        published: config.audit.checkpoint_dir.iter().cloned().collect(),
        witness_keys: config
            .audit
            .witnesses
            .iter()
            .map(|w| w.key.clone())
            .collect(),
        options: portcullis_evidence::collect::Options {
            baseline_days: evidence.baseline_days,
            work_hours: evidence.work_hours,
            settle: chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::hours(1)),
            ..Default::default()
        },
        formats: evidence
            .formats
            .iter()
            .map(|format| match format {
                portcullis_config::EvidenceFormat::Html => Format::Html,
                portcullis_config::EvidenceFormat::Json => Format::Json,
                portcullis_config::EvidenceFormat::Md => Format::Markdown,
                portcullis_config::EvidenceFormat::Oscal => Format::Oscal,
            })
            .collect(),
    });
    tracing::info!(out_dir = %out_dir.display(), schedule = ?schedule, "evidence: scheduled reports on");
    Ok(Some(tokio::spawn(evidence_task::run(
        plan,
        out_dir,
        settle,
        chrono::Utc::now,
        move |period| writer.clone().write(period),
    ))))
}

/// The gateway's pin store, as the console sees it.
struct ConsolePins(Arc<Pins>);

impl portcullis_console::ToolPins for ConsolePins {
    fn pending(&self) -> portcullis_console::PinFuture<'_, Vec<portcullis_console::PendingPin>> {
        Box::pin(async move {
            let changes = self.0.pending_changes().await.map_err(|e| e.to_string())?;
            Ok(changes
                .into_iter()
                .map(|p| portcullis_console::PendingPin {
                    target: p.target,
                    tool: p.tool,
                    pinned: p.pinned,
                    pending: p.pending,
                })
                .collect())
        })
    }

    fn accept<'a>(
        &'a self,
        target: &'a str,
        tool: &'a str,
        expected: &'a str,
    ) -> portcullis_console::PinFuture<'a, (String, String)> {
        Box::pin(async move {
            self.0
                .accept_exact(target, tool, expected)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The web console's settings, when `[console] enabled`; its OIDC client secret is read now,
/// so a missing one stops the start with its name.
fn console_settings(
    config: &Config,
    policy: &Policy,
    pins: Arc<Pins>,
    shared: Option<portcullis_state::Shared>,
) -> Result<Option<portcullis_console::ConsoleSettings>> {
    let (true, Some(base_url)) = (config.console.enabled, config.admin_url()) else {
        return Ok(None);
    };
    let oidc = match &config.console.oidc {
        Some(oidc) => Some(portcullis_console::OidcClient {
            issuer: oidc.issuer.clone(),
            client_id: oidc.client_id.clone(),
            client_secret: match &oidc.client_secret {
                Some(secret) => Some(
                    secret
                        .read()
                        .map_err(|e| anyhow::anyhow!("console.oidc.client_secret: {e}"))?,
                ),
                None => None,
            },
            scopes: oidc.scopes.clone(),
        }),
        None => None,
    };
    Ok(Some(portcullis_console::ConsoleSettings {
        base_url,
        admins: config.console.admins.clone(),
        idle_timeout: config.console.idle_timeout,
        absolute_timeout: config.console.absolute_timeout,
        api_key_sign_in: config.console.api_key_sign_in,
        oidc,
        pins: Arc::new(ConsolePins(pins)),
        shared,
        explanation: explain_config(config, policy),
        evidence_dir: config.evidence.out_dir(&config.gateway.data_dir),
        checkpoint_dir: config.audit.checkpoint_dir.clone(),
        checkpoint_interval: config.audit.checkpoint_interval,
        witnesses: config.audit.witnesses.len(),
    }))
}

/// Who may read recorded sessions on the admin API: the people who decide, i.e. the groups
/// any rule names as approvers, and the break-glass groups.
fn recording_readers(config: &Config) -> Vec<String> {
    let mut groups: Vec<String> = config
        .rules
        .iter()
        .flat_map(|rule| rule.approvers.iter().cloned())
        .chain(config.approvals.break_glass_groups.iter().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// Records one event per source whose failed authentications were counted rather than
/// recorded one by one (see `portcullis_limits::FailureThrottle`): its windows that have
/// ended, or all of them (`all`, at stop).
async fn record_failure_summaries(auth: &Authenticator, audit: &AuditLog, all: bool) {
    for summary in auth.failures().drain_ended(all) {
        let mut ev = audit.event(EventType::AuthFailure, Outcome::Rejected);
        ev.source = Some(summary.source.to_string());
        ev.detail = Some(summary.detail());
        if let Err(e) = audit.record(ev).await {
            tracing::error!("cannot record a summary of failed authentications: {e}");
        }
    }
}

/// Binds one PostgreSQL listener per `kind = "postgres"` target and serves it. The
/// database passwords are read from the environment here, so a missing one fails the start.
async fn start_databases(
    config: &Config,
    guard: &Arc<Guard>,
    connections: &Arc<portcullis_limits::ConnectionLimiter>,
) -> Result<Vec<(Arc<PgProxy>, SocketAddr, tokio::task::JoinHandle<()>)>> {
    let mut started = Vec::new();
    let client_tls = match &config.gateway.tls {
        Some(tls) => Some(
            portcullis_proxy_pg::tls::server_config(&tls.cert, &tls.key)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    for (name, target) in &config.targets {
        let Some(target) = target.as_postgres() else {
            continue;
        };
        let (upstream, addr) = (&target.upstream, target.listen);
        let password = match &target.password_env {
            Some(var) => Some(Arc::<str>::from(std::env::var(var).map_err(|_| {
                anyhow::anyhow!(
                    "targets.{name}.password_env: the environment variable {var} is not set"
                )
            })?)),
            None => None,
        };
        let upstream_tls = match &target.upstream_tls {
            UpstreamTls::Disable => None,
            UpstreamTls::Require => {
                Some(portcullis_proxy_pg::tls::client_config(None).map_err(anyhow::Error::msg)?)
            }
            UpstreamTls::VerifyFull { ca } => Some(
                portcullis_proxy_pg::tls::client_config(Some(ca.as_path()))
                    .map_err(|e| anyhow::anyhow!("targets.{name}.upstream_ca: {e}"))?,
            ),
        };
        let settings = PgSettings {
            target: name.clone(),
            upstream: UpstreamSettings {
                host: upstream.host.clone(),
                port: upstream.port,
                database: upstream.database.clone(),
                user: target.user.clone(),
                password,
                tls: upstream_tls,
                connect_timeout: Duration::from_secs(10),
            },
            tls: client_tls.clone(),
            require_tls: !addr.ip().is_loopback(),
            max_client_frame: config.gateway.max_message_bytes,
            max_connections: target.max_connections,
            filter_masked_rules: config
                .rules
                .iter()
                .filter(|r| r.filter_masked)
                .map(|r| r.name.get_ref().clone())
                .collect(),
            discovery: discovery(config, name)?,
            record_results: target.record_results,
            connection_caps: connections.clone(),
            startup_timeout: config.gateway.limits.header_read_timeout,
        };
        let proxy = PgProxy::new(settings, guard.clone());
        let listener = listen(addr)
            .with_context(|| format!("cannot listen on {addr} (targets.{name}.listen)"))?;
        let bound = listener.local_addr()?;
        let task = tokio::spawn(proxy.clone().serve(listener));
        started.push((proxy, bound, task));
    }
    Ok(started)
}

/// Column discovery for a postgres target, when a masking profile has `discover = true`.
fn discovery(
    config: &Config,
    target: &str,
) -> Result<Option<portcullis_proxy_pg::discovery::Discovery>> {
    let profiles: std::collections::HashSet<String> = config
        .masks
        .iter()
        .filter(|(_, profile)| profile.discover)
        .map(|(name, _)| name.clone())
        .collect();
    if profiles.is_empty() {
        return Ok(None);
    }
    let dir = config.gateway.data_dir.join("discovery");
    portcullis_proxy_pg::discovery::Discovery::open(&dir, target, profiles)
        .map(Some)
        .with_context(|| format!("loading the column tags of target {target}"))
}

/// A listening socket with a deep accept queue: the default of 128 overflows when a few
/// hundred agents connect at once, and each overflowed caller then waits a second for its
/// SYN to be retried.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Resolves when the gateway is asked to stop, after telling held callers: a request
/// waiting for approval would otherwise keep its connection, and the stop, waiting.
async fn stopping(approvals: Approvals) {
    shutdown_signal().await;
    approvals
        .cancel_all_held("the gateway is stopping; send the request again once it is back")
        .await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// How sessions are recorded, for the `gateway.start` event: an assessor reading the log
/// sees when recording was off, best-effort or encrypted.
fn recording_summary(recording: &portcullis_config::Recording) -> String {
    match recording.mode {
        RecordingMode::Off => "sessions not recorded".into(),
        mode => format!(
            "sessions recorded ({}{})",
            if mode == RecordingMode::BestEffort {
                "best-effort"
            } else {
                "strict"
            },
            if recording.recipients.is_empty() {
                String::new()
            } else {
                format!(", encrypted to {} recipients", recording.recipients.len())
            }
        ),
    }
}
