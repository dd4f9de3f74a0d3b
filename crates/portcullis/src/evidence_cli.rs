//! `portcullis evidence ...`: the reviewer's and the auditor's side of the evidence documents.
//!
//! - `verify FILE --pubkey KEY`: checks a document against its detached signature
//!   (`FILE.sig`), offline.
//! - `evaluate --baseline FILE CURRENT`: fails when a control's status got worse.
//! - `sign-off REPORT --reason ...`: records, through the admin API, that the caller reviewed
//!   a report (AU-6).
//!
//! Exit codes, as `audit verify`: 0 valid (or no regression); 1 invalid (or a control got
//! worse); 2 an input could not be used (a key file, a document that cannot be read).

use std::path::{Path, PathBuf};

use anyhow::Result;
use portcullis_audit::keys;
use portcullis_evidence::record::record_for;
use portcullis_evidence::report::REPORT_FORMAT;
use portcullis_evidence::{Period, evaluate, sign};
use serde_json::Value;

use crate::admin_cli::{self, AdminConn, Client};
use crate::evidence_report;

/// The document is not validly signed, or a control got worse.
const EXIT_INVALID: i32 = 1;
/// The check could not be run.
const EXIT_UNUSABLE_INPUT: i32 = 2;

/// Evidence documents are read whole; a document far larger than any report is not one.
const MAX_DOCUMENT: u64 = 512 * 1024 * 1024;

#[derive(clap::Subcommand)]
pub enum EvidenceCommand {
    /// The AU-6 audit review report of a period, from a log that is verified first.
    Report(evidence_report::ReportArgs),
    /// OSCAL assessment results of a period, and the assessment plan they import.
    Oscal(evidence_report::OscalArgs),
    /// An OSCAL component definition: which controls this configuration implements, and how.
    Component(evidence_report::ComponentArgs),
    /// Check an evidence document against its detached signature (`FILE.sig`).
    Verify(VerifyArgs),
    /// Exit 1 naming each control whose status is worse than in a baseline document.
    Evaluate(EvaluateArgs),
    /// Record in the audit log that you reviewed a report (AU-6), through the admin API.
    SignOff(SignOffArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The document (a report, an OSCAL document).
    file: PathBuf,
    /// The verifier key of the key that signed it (`audit.pub`, or the evidence key's).
    #[arg(long)]
    pubkey: PathBuf,
    /// The signature file. Default: FILE.sig.
    #[arg(long)]
    signature: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// The accepted document: a JSON review report or an OSCAL assessment-results.
    #[arg(long)]
    baseline: PathBuf,
    /// The document to judge, in either form.
    current: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SignOffArgs {
    /// The report you reviewed, exactly as the gateway wrote it (a scheduled report, or one
    /// written with `evidence report --sign`): the gateway finds it by its SHA-256 and records
    /// its period from its own record. A report with a signature file must match it.
    report: PathBuf,
    /// What you reviewed and what you concluded: recorded in the audit log with your name.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    conn: AdminConn,
}

/// Runs a command; returns the process exit code.
pub fn evidence(command: EvidenceCommand) -> i32 {
    match command {
        EvidenceCommand::Report(args) => evidence_report::report(&args),
        EvidenceCommand::Oscal(args) => evidence_report::oscal(&args),
        EvidenceCommand::Component(args) => match evidence_report::component(&args) {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("error: {err:#}");
                evidence_report::EXIT_UNUSABLE_INPUT
            }
        },
        EvidenceCommand::Verify(args) => verify(&args),
        EvidenceCommand::Evaluate(args) => evaluate(&args),
        EvidenceCommand::SignOff(args) => {
            // The report cannot be read: an unusable input, like `verify`'s.
            if let Err(err) = std::fs::metadata(&args.report) {
                eprintln!("error: cannot read {}: {err}", args.report.display());
                return EXIT_UNUSABLE_INPUT;
            }
            match sign_off(&args) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    EXIT_INVALID
                }
            }
        }
    }
}

/// `evidence sign-off`: hashes the report, works out what it is and which period it covers,
/// and posts the sign-off; the gateway records it under the caller's identity.
fn sign_off(args: &SignOffArgs) -> Result<()> {
    use anyhow::{Context as _, bail};
    let reason = args.reason.trim();
    if reason.is_empty() {
        bail!("a sign-off needs a reason: --reason \"what you reviewed and concluded\"");
    }
    let bytes = std::fs::read(&args.report)
        .with_context(|| format!("cannot read {}", args.report.display()))?;
    let described = describe(&args.report, &bytes)?;
    let mut record = record_for(
        &described.document,
        &described.format,
        None,
        &bytes,
        &args.report,
    );
    // The period as the document says it (the gateway records the one its own record of
    // the document names, and answers with it).
    if let Some(period) = described.period {
        record.since = Some(period.since);
        record.until = Some(period.until);
    }
    let body = serde_json::json!({
        "sha256": record.sha256,
        "bytes": record.bytes,
        "document": record.document,
        "format": record.format,
        "since": record.since,
        "until": record.until,
        "file": record.file,
        "reason": reason,
    });
    let answer = admin_cli::runtime()?.block_on(async {
        let client = Client::new(&args.conn)?;
        client.post_value("evidence/sign-offs", &body).await
    })?;
    // What the gateway recorded, not what was sent.
    let recorded = &answer["evidence"];
    println!(
        "signed off {} ({}) of [{}, {}) as {}: sha256 {}, event {}",
        recorded["document"].as_str().unwrap_or("?"),
        recorded["format"].as_str().unwrap_or("?"),
        recorded["since"].as_str().unwrap_or("?"),
        recorded["until"].as_str().unwrap_or("?"),
        answer["reviewer"].as_str().unwrap_or("?"),
        recorded["sha256"].as_str().unwrap_or("?"),
        answer["event"].as_str().unwrap_or("?"),
    );
    Ok(())
}

/// What a document is, as far as it says itself.
struct Described {
    document: String,
    format: String,
    period: Option<Period>,
}

/// Reads a document's kind and period: from its signature file when there is one (which
/// must match it: a report edited after it was signed is not signed off), else from the JSON
/// report's own `format` and `period`, else from its file extension.
fn describe(path: &Path, bytes: &[u8]) -> Result<Described> {
    use anyhow::bail;
    let sig_path = sign::signature_path(path);
    if sig_path.exists() {
        let sig = sign::read_signature(&sig_path)?;
        let found = record_for("", "", None, bytes, path);
        if sig.evidence.sha256 != found.sha256 || sig.evidence.bytes != found.bytes {
            bail!(
                "{} does not match its signature {}: it changed after it was signed; review the signed document",
                path.display(),
                sig_path.display()
            );
        }
        let period = match (sig.evidence.since, sig.evidence.until) {
            (Some(since), Some(until)) => Some(Period { since, until }),
            _ => None,
        };
        return Ok(Described {
            document: sig.evidence.document,
            format: sig.evidence.format,
            period,
        });
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        if value["format"] == REPORT_FORMAT {
            let period = serde_json::from_value::<Period>(value["period"].clone()).ok();
            return Ok(Described {
                document: "report".into(),
                format: "json".into(),
                period,
            });
        }
        if value.get("assessment-results").is_some() {
            return Ok(Described {
                document: "assessment-results".into(),
                format: "oscal-json".into(),
                period: None,
            });
        }
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "html",
        Some("md") => "md",
        Some("json") => "json",
        _ => bail!(
            "{}: not a report this command recognises (html, md, JSON report or OSCAL assessment results)",
            path.display()
        ),
    };
    Ok(Described {
        document: "report".into(),
        format: format.into(),
        period: None,
    })
}

fn verify(args: &VerifyArgs) -> i32 {
    let key = match keys::load_verifier(&args.pubkey) {
        Ok(key) => key,
        Err(err) => {
            eprintln!("error: --pubkey: {err}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    match sign::verify(&args.file, args.signature.as_deref(), &key) {
        Ok(signed) => {
            let e = &signed.evidence;
            let period = match (&e.since, &e.until) {
                (Some(since), Some(until)) => format!(", period [{since}, {until})"),
                _ => String::new(),
            };
            println!(
                "signature OK: {} ({}){period}, {} bytes, sha256 {}, signed by {}",
                e.document, e.format, e.bytes, e.sha256, signed.key
            );
            0
        }
        Err(err) if err.is_unusable_input() => {
            eprintln!("error: {err}");
            EXIT_UNUSABLE_INPUT
        }
        Err(err) => {
            eprintln!("signature INVALID: {err}");
            EXIT_INVALID
        }
    }
}

fn evaluate(args: &EvaluateArgs) -> i32 {
    let read = |path: &Path| -> Result<_> {
        let document = read_json(path)?;
        evaluate::control_statuses(&document)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))
    };
    let (baseline, current) = match (read(&args.baseline), read(&args.current)) {
        (Ok(baseline), Ok(current)) => (baseline, current),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("error: {err}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    let worse = evaluate::regressions(&baseline, &current);
    if worse.is_empty() {
        println!(
            "no control got worse: {} assessed in the baseline, {} now",
            baseline.len(),
            current.len()
        );
        return 0;
    }
    for regression in &worse {
        println!("worse: {regression}");
    }
    eprintln!(
        "{} control(s) worse than in {}",
        worse.len(),
        args.baseline.display()
    );
    EXIT_INVALID
}

/// Reads a JSON document, bounded.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        anyhow::bail!("{}: larger than {MAX_DOCUMENT} bytes", path.display());
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))
}
