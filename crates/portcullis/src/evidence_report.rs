//! `portcullis evidence report`, `evidence oscal` and `evidence component`: the documents
//! an assessor reads, from the audit log and the configuration.
//!
//! The work is `portcullis_evidence`'s; this is argument handling, what `--config` fills in
//! (the log's key, published checkpoints and witness keys, as `audit verify` would need them
//! given), and the exit codes: 0 written from a log that verifies; 1 written, but the log
//! does NOT verify (the report leads with why, and AU-9 is not satisfied); 2 nothing
//! written, because an input is unusable.
//!
//! Repeated `--data-dir` (the replicas of a gateway, each with its own log and key) make one
//! report over all their logs (`portcullis_evidence::build_report_over`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use portcullis_audit::keys;
use portcullis_config::Config;
use portcullis_evidence::collect::Options;
use portcullis_evidence::documents::{self, Document, Format};
use portcullis_evidence::integrity::VerifyInputs;
use portcullis_evidence::oscal::{self, ComponentContext};
use portcullis_evidence::{LogSource, Period, Report, build_report_over};

use crate::DataDirs;

/// The report was written, from a log that does not verify.
pub const EXIT_NOT_VERIFIED: i32 = 1;
/// Nothing was written: an input is unusable.
pub const EXIT_UNUSABLE_INPUT: i32 = 2;

/// The period and the log a report is made from.
#[derive(clap::Args)]
pub struct Source {
    /// With several `--data-dir` (the replicas of a gateway, each with its own log), the
    /// report covers all their logs, merged by time.
    #[command(flatten)]
    dirs: DataDirs,
    /// Start of the period, inclusive: RFC 3339 (`2026-12-01T09:00:00Z`) or a date
    /// (`2026-12-01`, midnight UTC). Default: 24 hours before `--until`.
    #[arg(long)]
    since: Option<String>,
    /// End of the period, exclusive. Default: now.
    #[arg(long)]
    until: Option<String>,
    /// The gateway's checkpoint verifier key (`audit.pub`). Default: beside the configured
    /// `audit.signing_key`. With several `--data-dir`: one key for all, or one per
    /// `--data-dir` in the same order.
    #[arg(long, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// A directory of published checkpoints (repeatable). Default: the configured
    /// `audit.checkpoint_dir`.
    #[arg(long = "checkpoints", value_name = "DIR")]
    checkpoints: Vec<PathBuf>,
    /// A witness's cosignature verifier key (repeatable). Default: the configured witnesses'.
    #[arg(long = "witness-key", value_name = "FILE")]
    witness_keys: Vec<PathBuf>,
    /// Days before the period that are its baseline (new identities, tools, volume), 1 to
    /// 366. Default: the configured `evidence.baseline_days`, else 28 (as scheduled reports).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=366))]
    baseline_days: Option<u32>,
    /// Working hours, UTC (`07:00-19:00`; `22:00-06:00` wraps midnight): requests outside
    /// them are flagged. Default: the configured `evidence.work_hours`, else 07:00-19:00.
    #[arg(long)]
    work_hours: Option<String>,
    /// Sign each document written (`FILE.sig`, checked by `portcullis evidence verify`) and
    /// record its hash in the audit log as an `evidence.report` event, so the document is
    /// itself evidence and cannot be regenerated with other numbers unnoticed. With several
    /// `--data-dir`, it is recorded in the first one's log.
    #[arg(long)]
    sign: bool,
    /// The directory of the signing key (`audit.key`). Default: the configured
    /// `evidence.signing_key`, else `audit.signing_key`.
    #[arg(long, requires = "sign")]
    signing_key: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    source: Source,
    /// `html` (one self-contained page), `md` or `json` (the same data, for machines).
    #[arg(long, default_value = "html")]
    format: String,
    /// Where to write it. Default: `evidence-<since>--<until>.<format>` here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct OscalArgs {
    #[command(flatten)]
    source: Source,
    /// Where to write the assessment results; the assessment plan they import is written
    /// beside, as `<name>.assessment-plan.json`. Default:
    /// `evidence-<since>--<until>.assessment-results.json` here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ComponentArgs {
    /// The gateway's configuration, whose controls the component definition describes.
    #[arg(long, default_value = "portcullis.toml")]
    config: PathBuf,
    /// Where to write it.
    #[arg(long, default_value = "portcullis.component-definition.json")]
    out: PathBuf,
}

/// `evidence report`; returns the exit code.
pub fn report(args: &ReportArgs) -> i32 {
    let written = (|| -> Result<(Report, Vec<PathBuf>)> {
        let format = Format::parse(&args.format)?;
        if format == Format::Oscal {
            bail!("--format oscal: use `portcullis evidence oscal`");
        }
        let loaded = args.source.load()?;
        let signer = args.source.signer(loaded.config.as_ref())?;
        let report = build(&args.source, &loaded)?;
        let stem = documents::stem(&report);
        let docs = documents::render_all(&report, &[format], &stem, env!("CARGO_PKG_VERSION"));
        let doc = docs.into_iter().next().context("the report renders")?;
        let path = args.out.clone().unwrap_or_else(|| PathBuf::from(&doc.file));
        documents::write_atomically(&path, &doc.bytes)?;
        let written = vec![(path, doc)];
        let paths = vouch_all(&loaded.data_dirs[0], signer.as_ref(), &written, &report)?;
        Ok((report, paths))
    })();
    finish(written)
}

/// `evidence oscal`; returns the exit code.
pub fn oscal(args: &OscalArgs) -> i32 {
    let written = (|| -> Result<(Report, Vec<PathBuf>)> {
        let loaded = args.source.load()?;
        let signer = args.source.signer(loaded.config.as_ref())?;
        let report = build(&args.source, &loaded)?;
        let stem = match &args.out {
            Some(out) => {
                let name = out
                    .file_name()
                    .context("--out names no file")?
                    .to_string_lossy();
                name.strip_suffix(".json").unwrap_or(&name).to_string()
            }
            None => format!("{}.assessment-results", documents::stem(&report)),
        };
        let base = stem.strip_suffix(".assessment-results").unwrap_or(&stem);
        let docs =
            documents::render_all(&report, &[Format::Oscal], base, env!("CARGO_PKG_VERSION"));
        let dir = args
            .out
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        let mut written = Vec::new();
        for doc in docs {
            let path = match (&args.out, doc.file.ends_with(".assessment-results.json")) {
                (Some(out), true) => out.clone(),
                _ => dir.join(&doc.file),
            };
            documents::write_atomically(&path, &doc.bytes)?;
            written.push((path, doc));
        }
        let paths = vouch_all(&loaded.data_dirs[0], signer.as_ref(), &written, &report)?;
        Ok((report, paths))
    })();
    finish(written)
}

/// `evidence component`.
pub fn component(args: &ComponentArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let modified = std::fs::metadata(&args.config)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", args.config.display()))?;
    let ctx = component_context(&config, modified.into())?;
    let bytes = oscal::to_bytes(&oscal::component_definition(&ctx));
    documents::write_atomically(&args.out, &bytes)?;
    println!(
        "wrote {} (OSCAL {} component-definition of this configuration)",
        args.out.display(),
        oscal::OSCAL_VERSION
    );
    Ok(())
}

/// Prints what was written and why the exit code is what it is.
fn finish(written: Result<(Report, Vec<PathBuf>)>) -> i32 {
    let (report, paths) = match written {
        Ok(written) => written,
        Err(err) => {
            eprintln!("error: {err:#}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    for path in &paths {
        println!("wrote {}", path.display());
    }
    let failing: Vec<&str> = report
        .controls
        .iter()
        .filter(|c| c.status == portcullis_evidence::report::ControlStatus::NotSatisfied)
        .map(|c| c.control.as_str())
        .collect();
    println!(
        "{} to {}: {} events, {} requests by {} identities; controls not satisfied: {}",
        report.period.since,
        report.period.until,
        report.totals.events,
        report.totals.requests,
        report.totals.identities,
        if failing.is_empty() {
            "none".to_string()
        } else {
            failing.join(", ")
        }
    );
    for log in &report.logs {
        println!(
            "log {}: {} events, {} requests; {}",
            log.origin,
            log.events,
            log.requests,
            match &log.integrity.failure {
                None if log.integrity.verified => "verified".to_string(),
                failure => format!(
                    "does NOT verify: {}",
                    failure.as_deref().unwrap_or("not checked")
                ),
            }
        );
    }
    match &report.integrity.failure {
        None if report.integrity.verified => 0,
        failure => {
            eprintln!(
                "the audit log does NOT verify: {}; the report leads with this, and AU-9 is not \
                 satisfied",
                failure.as_deref().unwrap_or("not checked")
            );
            EXIT_NOT_VERIFIED
        }
    }
}

/// The configuration (read once) and the data directories (one or more) a command works on.
struct Loaded {
    config: Option<Config>,
    data_dirs: Vec<PathBuf>,
}

impl Source {
    fn load(&self) -> Result<Loaded> {
        let config = self.dirs.config()?;
        let data_dirs = self.dirs.dirs_of(config.as_ref());
        Ok(Loaded { config, data_dirs })
    }

    /// With `--sign`: the key documents are signed with.
    fn signer(
        &self,
        config: Option<&Config>,
    ) -> Result<Option<portcullis_audit::checkpoint::Ed25519Signer>> {
        if !self.sign {
            return Ok(None);
        }
        let dir = match (&self.signing_key, config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(config)) => config
                .evidence
                .signing_key(config.audit.signing_key.as_deref())
                .map(Path::to_path_buf)
                .context(
                    "--sign: the configuration names no evidence.signing_key or \
                     audit.signing_key; give --signing-key DIR",
                )?,
            (None, None) => bail!("--sign: give --signing-key DIR (where audit.key is)"),
        };
        let signer = keys::load_signer(&dir, keys::AUDIT_KEY)
            .with_context(|| format!("loading the signing key in {}", dir.display()))?;
        Ok(Some(signer))
    }
}

/// The paths of the documents written, and with `--sign` (a `signer`) their signatures: each
/// document's hash recorded in the log, then the document signed (`record::vouch`), in one
/// opening of the log.
fn vouch_all(
    data_dir: &Path,
    signer: Option<&portcullis_audit::checkpoint::Ed25519Signer>,
    written: &[(PathBuf, Document)],
    report: &Report,
) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = written.iter().map(|(path, _)| path.clone()).collect();
    let Some(signer) = signer else {
        return Ok(paths);
    };
    let log = crate::sessions_cli::open_log(data_dir)?;
    let signatures = crate::sessions_cli::runtime()?.block_on(async {
        let mut signatures = Vec::new();
        for (path, doc) in written {
            // The record names the file as written (`--out`), which the signature binds.
            let vouched = portcullis_evidence::record::vouch(
                &log,
                signer,
                path,
                (doc.document, doc.format),
                Some(&report.period),
                &doc.bytes,
            )
            .await
            .with_context(|| path.display().to_string());
            match vouched {
                Ok(signature) => signatures.push(signature),
                Err(e) => {
                    let _ = log.close().await;
                    return Err(e);
                }
            }
        }
        log.close().await?;
        Ok::<_, anyhow::Error>(signatures)
    })?;
    paths.extend(signatures);
    Ok(paths)
}

/// Builds the report of the period `source` names.
fn build(source: &Source, loaded: &Loaded) -> Result<Report> {
    for data_dir in &loaded.data_dirs {
        if !data_dir.join("audit.db").exists() {
            bail!(
                "no audit log in {} (audit.db is missing)",
                data_dir.display()
            );
        }
    }
    let config = loaded.config.as_ref();
    let until = match &source.until {
        Some(until) => portcullis_evidence::period::parse_time(until)?,
        None => chrono::Utc::now(),
    };
    let since = match &source.since {
        Some(since) => portcullis_evidence::period::parse_time(since)?,
        None => until - chrono::Duration::hours(24),
    };
    // A report covers what has happened: a period that has not ended would read as
    // complete while events are still to come.
    let now = chrono::Utc::now();
    if until > now + chrono::Duration::minutes(1) {
        bail!(
            "--until {} is in the future: a report covers what has happened (leave --until out \
             for now)",
            portcullis_evidence::period::stamp(until)
        );
    }
    let period = Period::new(since, until)?;
    let logs = verify_inputs(source, config, &loaded.data_dirs)?;
    // The same settings as scheduled reports, so a period reported by hand and by the
    // schedule reads the same.
    let configured = config.map(|c| &c.evidence);
    let work_hours = match (&source.work_hours, configured) {
        (Some(text), _) => portcullis_config::WorkHours::parse(text)
            .map_err(|e| anyhow::anyhow!("--work-hours: {e}"))?,
        (None, Some(evidence)) => evidence.work_hours,
        (None, None) => portcullis_config::WorkHours::default(),
    };
    let options = Options {
        baseline_days: source
            .baseline_days
            .or(configured.map(|e| e.baseline_days))
            .unwrap_or(Options::default().baseline_days),
        work_hours,
        ..Options::default()
    };
    Ok(build_report_over(&logs, period, &options)?)
}

/// What verification of each log needs, from the flags or else the configuration.
fn verify_inputs(
    source: &Source,
    config: Option<&Config>,
    data_dirs: &[PathBuf],
) -> Result<Vec<LogSource>> {
    let pubkeys = match (
        source.pubkey.as_slice(),
        config.and_then(|c| c.audit.signing_key.as_ref()),
    ) {
        ([], Some(dir)) => vec![dir.join(format!("{}.pub", keys::AUDIT_KEY))],
        ([], None) => bail!(
            "give --pubkey (the gateway's audit.pub), or --config of a gateway with \
             audit.signing_key: a report is only made from a log checked against its key"
        ),
        (given, _) => given.to_vec(),
    };
    if pubkeys.len() != 1 && pubkeys.len() != data_dirs.len() {
        bail!(
            "{} --pubkey for {} --data-dir: give one key for all the logs, or one per \
             --data-dir in the same order",
            pubkeys.len(),
            data_dirs.len()
        );
    }
    let keys = pubkeys
        .iter()
        .map(|pubkey| {
            keys::load_verifier(pubkey)
                .with_context(|| format!("loading the verifier key {}", pubkey.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut published = source.checkpoints.clone();
    if published.is_empty()
        && let Some(dir) = config.and_then(|c| c.audit.checkpoint_dir.as_ref())
        && dir.is_dir()
    {
        published.push(dir.clone());
    }
    let mut witness_keys = source.witness_keys.clone();
    if witness_keys.is_empty()
        && let Some(config) = config
    {
        witness_keys.extend(config.audit.witnesses.iter().map(|w| w.key.clone()));
    }
    let witnesses = crate::audit_cli::load_witness_keys(&witness_keys)?;
    Ok(data_dirs
        .iter()
        .enumerate()
        .map(|(i, data_dir)| LogSource {
            data_dir: data_dir.clone(),
            inputs: VerifyInputs {
                key: keys[if keys.len() == 1 { 0 } else { i }].clone(),
                published: published.clone(),
                witnesses: witnesses.clone(),
            },
        })
        .collect())
}

/// The component definition's view of a configuration.
pub fn component_context(
    config: &Config,
    modified: chrono::DateTime<chrono::Utc>,
) -> Result<ComponentContext> {
    use portcullis_evidence::oscal::{AuditSetup, RecordingSetup, RuleCounts, TargetInfo};
    let mut rules = RuleCounts::default();
    for rule in &config.rules {
        match rule.decision {
            portcullis_config::RuleDecision::Allow => rules.allow += 1,
            portcullis_config::RuleDecision::Deny => rules.deny += 1,
            portcullis_config::RuleDecision::Hold => rules.hold += 1,
        }
    }
    let policy = portcullis_policy::Policy::compile(config)
        .map_err(|e| anyhow::anyhow!("compiling the policy: {e}"))?;
    let mut masking_profiles = vec!["default".to_string()];
    masking_profiles.extend(config.masks.keys().cloned());
    Ok(ComponentContext {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        origin: config
            .audit
            .origin
            .clone()
            .unwrap_or_else(|| format!("portcullis/{}", config.gateway.id)),
        last_modified: portcullis_evidence::period::stamp(modified),
        policy_version: Some(policy.version().to_string()),
        targets: config
            .targets
            .iter()
            .map(|(name, spec)| TargetInfo {
                name: name.clone(),
                kind: match spec.kind() {
                    portcullis_model::TargetKind::Mcp => "mcp",
                    portcullis_model::TargetKind::Postgres => "postgres",
                    portcullis_model::TargetKind::Mysql => "mysql",
                    portcullis_model::TargetKind::Http => "http",
                }
                .to_string(),
            })
            .collect(),
        front_door_tls: config.gateway.tls.is_some(),
        max_auth_failures: config.gateway.limits.max_auth_failures,
        auth_failure_window_seconds: config.gateway.limits.auth_failure_window.as_secs(),
        oidc_issuers: config
            .identity
            .oidc
            .iter()
            .map(|o| o.issuer.clone())
            .collect(),
        api_keys: config.identity.api_keys.len() as u64,
        rules,
        default_deny: true,
        masking_profiles,
        recording: RecordingSetup {
            mode: format!("{:?}", config.recording.mode).to_lowercase(),
            recipients: config.recording.recipients.len() as u64,
        },
        audit: AuditSetup {
            durability: format!("{:?}", config.audit.durability).to_lowercase(),
            signed: config.audit.signing_key.is_some(),
            checkpoint_interval_ms: config.audit.checkpoint_interval.as_millis() as u64,
            checkpoint_every: config.audit.checkpoint_every,
            published: config.audit.checkpoint_dir.is_some(),
            witnesses: config
                .audit
                .witnesses
                .iter()
                .map(|w| w.url.clone())
                .collect(),
        },
        break_glass_groups: config.approvals.break_glass_groups.clone(),
        review_schedule: None,
    })
}
