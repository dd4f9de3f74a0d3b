//! `portcullis sessions` and `portcullis recordings`: reading recorded sessions back (list,
//! show, replay, export, verify-bundle) and retention (prune).
//!
//! The reading lives in `portcullis_audit::{sessions, bundle, retention}`, shared with the
//! admin API; this is the command line, the rendering, and the rule that whoever reads a
//! recording through these commands is in the log for it: a `recording.accessed` event is
//! appended (and must be) before anything recorded is shown or written out. Everything a
//! caller or an upstream sent is printed through [`terminal::clean`]: recorded content is
//! attacker-controlled and must not reach the terminal as escape sequences.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use portcullis_audit::recordings::Recordings;
use portcullis_audit::sessions::{self, SessionFilter, SessionState, SessionSummary, Timeline};
use portcullis_audit::{AuditLog, AuditReader, bundle, retention};
use portcullis_model::{
    AuditEvent, AuthMethod, EventType, Identity, IdentityKind, Outcome, RemovedRecord,
};
use portcullis_recording::segment::Identities;

use crate::DataDir;
use crate::admin_cli::table::table;
use crate::admin_cli::terminal::{clean_line, truncate};
use crate::audit_cli::terminal_safe;

mod replay;

/// The bundle does not check.
const EXIT_INVALID: i32 = 1;
/// The check could not be run.
const EXIT_UNUSABLE_INPUT: i32 = 2;

#[derive(clap::Subcommand)]
pub enum SessionsCommand {
    /// One line per session: who, target, when, how many requests (denied, held), recorded.
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Only this caller's sessions (the identity's subject).
        #[arg(long)]
        who: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Sessions active since: an RFC 3339 time, a date (2026-03-01), or a span ago (2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Sessions started before (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// The most sessions listed, newest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One session's timeline: requests, decisions, approvals, what was sent and came back.
    Show {
        session_id: String,
        /// An age identity file, to decrypt recordings sealed to the auditors.
        #[arg(long)]
        identity: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        reader: AsName,
        #[arg(long)]
        json: bool,
    },
    /// Play a session back in the terminal with its timing: what was sent, what came back.
    Replay {
        session_id: String,
        /// Playback speed: 2 is twice as fast, 0 does not wait at all.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// An age identity file, to decrypt recordings sealed to the auditors.
        #[arg(long)]
        identity: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        reader: AsName,
    },
    /// Write a self-contained evidence bundle of a session (events, recordings, inclusion
    /// proofs, the signed checkpoint), checkable offline with `sessions verify-bundle`.
    Export {
        session_id: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        reader: AsName,
    },
    /// Check an evidence bundle offline against the gateway's key. Exit 0 valid, 1 invalid,
    /// 2 unusable input.
    VerifyBundle {
        file: PathBuf,
        /// The gateway's checkpoint verifier key (`audit.pub`).
        #[arg(long)]
        pubkey: PathBuf,
    },
}

#[derive(clap::Subcommand)]
pub enum RecordingsCommand {
    /// Remove the recordings of requests before a time. The removal is logged first
    /// (`recording.removed` events naming every chunk and segment), then done.
    Prune {
        /// An RFC 3339 time, a date (2026-03-01), or a span ago (90d).
        #[arg(long)]
        before: String,
        #[command(flatten)]
        dir: DataDir,
        #[command(flatten)]
        reader: AsName,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Who is reading, for the log: the operating system's user, or a name given.
#[derive(clap::Args)]
pub struct AsName {
    /// The name to record as the reader (default: the operating system's user).
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
}

/// `portcullis sessions ...`; returns the exit code.
pub fn sessions(command: SessionsCommand) -> Result<i32> {
    match command {
        SessionsCommand::List {
            dir,
            who,
            target,
            since,
            until,
            limit,
            json,
        } => {
            let filter = SessionFilter {
                who,
                target,
                since: since
                    .as_deref()
                    .map(|t| parse_when(t, "--since"))
                    .transpose()?,
                until: until
                    .as_deref()
                    .map(|t| parse_when(t, "--until"))
                    .transpose()?,
                limit,
            };
            list(&dir.resolve()?, &filter, json)?;
            Ok(0)
        }
        SessionsCommand::Show {
            session_id,
            identity,
            dir,
            reader,
            json,
        } => {
            let dir = dir.resolve()?;
            let identities = load_identities(identity.as_deref())?;
            let command = if identities.is_some() {
                "show (decrypting sealed recordings)"
            } else {
                "show"
            };
            let timeline = read_timeline(&dir, &session_id, identities)?;
            record_access(&dir, command, &session_id, &reader)?;
            if json {
                println!(
                    "{}",
                    terminal_safe(&serde_json::to_string_pretty(&timeline)?)
                );
            } else {
                print!("{}", render_timeline(&timeline));
            }
            Ok(0)
        }
        SessionsCommand::Replay {
            session_id,
            speed,
            identity,
            dir,
            reader,
        } => {
            if !(speed.is_finite() && speed >= 0.0) {
                bail!("--speed {speed}: a number 0 or more (0 does not wait)");
            }
            let dir = dir.resolve()?;
            let identities = load_identities(identity.as_deref())?;
            // Checked before the access is logged, so a mistyped id leaves no event.
            read_timeline(&dir, &session_id, None)?;
            let command = if identities.is_some() {
                "replay (decrypting sealed recordings)"
            } else {
                "replay"
            };
            record_access(&dir, command, &session_id, &reader)?;
            let damaged = replay::replay(&dir, &session_id, speed, identities)?;
            if damaged > 0 {
                eprintln!("error: {damaged} recorded part(s) of this session could not be read");
                return Ok(1);
            }
            Ok(0)
        }
        SessionsCommand::Export {
            session_id,
            out,
            dir,
            reader,
        } => {
            let dir = dir.resolve()?;
            read_timeline(&dir, &session_id, None)?;
            record_access(&dir, "export", &session_id, &reader)?;
            let (bundle, notes) = bundle::export(&dir, &session_id)?;
            std::fs::write(&out, bundle.to_json())
                .with_context(|| format!("writing {}", out.display()))?;
            for damage in &notes.damaged {
                eprintln!("warning: {}", clean_line(damage));
            }
            println!(
                "wrote {}: session {}, {} event(s), {} recorded chunk(s), with inclusion proofs to the log's newest signed checkpoint",
                out.display(),
                clean_line(&session_id),
                bundle.events.len(),
                bundle.chunks.len()
            );
            Ok(if notes.damaged.is_empty() { 0 } else { 1 })
        }
        SessionsCommand::VerifyBundle { file, pubkey } => Ok(verify_bundle(&file, &pubkey)),
    }
}

/// `portcullis recordings ...`.
pub fn recordings(command: RecordingsCommand) -> Result<()> {
    match command {
        RecordingsCommand::Prune {
            before,
            dir,
            reader,
            dry_run,
        } => prune(
            &dir.resolve()?,
            &parse_when(&before, "--before")?,
            &reader,
            dry_run,
        ),
    }
}

fn list(dir: &Path, filter: &SessionFilter, json: bool) -> Result<()> {
    let reader = open_reader(dir)?;
    let found = sessions::list(&reader, filter)?;
    if json {
        println!("{}", terminal_safe(&serde_json::to_string_pretty(&found)?));
        return Ok(());
    }
    if found.is_empty() {
        println!("no sessions");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = found.iter().map(list_row).collect();
    print!(
        "{}",
        table(
            &[
                "SESSION", "WHO", "TARGET", "START", "END", "REQUESTS", "DENIED", "HELD",
                "RECORDED"
            ],
            &rows
        )
    );
    Ok(())
}

fn list_row(s: &SessionSummary) -> Vec<String> {
    vec![
        clean_line(&s.id),
        truncate(&clean_line(s.who.as_deref().unwrap_or("-")), 32),
        clean_line(s.target.as_deref().unwrap_or("-")),
        short_time(&s.start),
        end_of(s),
        s.requests.to_string(),
        s.denied.to_string(),
        s.held.to_string(),
        if s.recorded { "yes" } else { "no" }.to_string(),
    ]
}

fn end_of(s: &SessionSummary) -> String {
    match (s.state, &s.end) {
        (SessionState::Open, _) => "open".into(),
        (SessionState::Abandoned, _) => "abandoned".into(),
        (SessionState::Ended, Some(end)) => short_time(end),
        (SessionState::Ended, None) => "-".into(),
    }
}

/// An event time as `2026-03-01 14:05:09.123`; anything else escaped as it came.
fn short_time(time: &str) -> String {
    match DateTime::parse_from_rfc3339(time) {
        Ok(t) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Err(_) => clean_line(time),
    }
}

fn open_reader(dir: &Path) -> Result<AuditReader> {
    AuditReader::open(dir).with_context(|| format!("opening the audit log in {}", dir.display()))
}

/// An auditor's age identities, from `--identity FILE`.
fn load_identities(path: Option<&Path>) -> Result<Option<Identities>> {
    path.map(|path| {
        portcullis_recording::segment::load_identities(path)
            .with_context(|| format!("--identity {}", path.display()))
    })
    .transpose()
}

/// The timeline of a session, or a clear error if there is none; `identities` decrypt
/// recordings sealed to the auditors.
fn read_timeline(dir: &Path, id: &str, identities: Option<Identities>) -> Result<Timeline> {
    let reader = open_reader(dir)?;
    let mut recordings = Recordings::open(dir)?;
    if let Some(identities) = identities {
        recordings = recordings.with_identities(identities);
    }
    sessions::timeline(&reader, &recordings, id)?
        .ok_or_else(|| anyhow::anyhow!("no session {} in {}", clean_line(id), dir.display()))
}

fn render_timeline(t: &Timeline) -> String {
    let s = &t.session;
    let mut out = format!(
        "session {}{}\n  who {}, target {}, {} to {}\n  {} request(s), {} denied, {} held; recorded: {}\n\n",
        clean_line(&s.id),
        if s.stateless {
            " (a request outside any session)"
        } else {
            ""
        },
        clean_line(s.who.as_deref().unwrap_or("-")),
        clean_line(s.target.as_deref().unwrap_or("-")),
        short_time(&s.start),
        end_of(s),
        s.requests,
        s.denied,
        s.held,
        if s.recorded { "yes" } else { "no" }
    );
    for entry in &t.entries {
        let e = &entry.event;
        out.push_str(&format!(
            "{}  #{}  {}  {}\n",
            short_time(&e.time),
            entry.seq,
            name_of(&e.event_type),
            clean_line(&what(e))
        ));
        let mut lines = Vec::new();
        if let Some(decision) = &e.decision {
            lines.push(format!(
                "decision {}{}",
                clean_line(decision),
                e.rule
                    .as_deref()
                    .map(|r| format!(" by rule {:?}", clean_line(r)))
                    .unwrap_or_default()
            ));
        }
        if let Some(approval) = &e.approval {
            lines.push(format!("approval {}", clean_line(approval)));
        }
        for step in &entry.approval_events {
            lines.push(format!("  {}", approval_step(step)));
        }
        if e.event_type == EventType::Request || e.outcome != Outcome::Info {
            lines.push(format!(
                "outcome {}{}",
                name_of(&e.outcome),
                e.duration_ms
                    .map(|ms| format!(" in {ms:.1} ms"))
                    .unwrap_or_default()
            ));
        }
        if let Some(detail) = &e.detail {
            lines.push(format!("detail {}", truncate(&clean_line(detail), 160)));
        }
        for (label, side) in [("sent", &entry.request), ("came back", &entry.answer)] {
            if let Some(side) = side {
                let text = match (&side.summary, &side.damage) {
                    (_, Some(damage)) => format!("[{}]", clean_line(damage)),
                    (Some(summary), None) => truncate(&clean_line(summary), 200),
                    (None, None) => "-".into(),
                };
                lines.push(format!("{label}: {text}"));
            }
        }
        for line in lines {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// What an event is about: `tools/call get_invoice`, a statement's kind and tables.
pub(crate) fn what(e: &AuditEvent) -> String {
    let mut parts = Vec::new();
    if let Some(action) = &e.action {
        parts.push(action.clone());
    }
    if let Some(resource) = &e.resource {
        parts.push(resource.clone());
    }
    if parts.is_empty()
        && let Some(target) = &e.target
    {
        parts.push(format!("on {target}"));
    }
    parts.join(" ")
}

/// One `approval.*` event in a line: when, what happened, by whom, why.
pub(crate) fn approval_step(e: &AuditEvent) -> String {
    let who = e
        .identity
        .as_ref()
        .map(|i| {
            format!(
                " by {}",
                clean_line(i.display_name.as_deref().unwrap_or(&i.subject))
            )
        })
        .unwrap_or_default();
    let reason = e
        .reason
        .as_deref()
        .map(|r| format!(": {:?}", truncate(&clean_line(r), 120)))
        .unwrap_or_default();
    format!(
        "{} {}{}{}{}",
        short_time(&e.time),
        name_of(&e.event_type),
        who,
        if e.break_glass { " (break-glass)" } else { "" },
        reason
    )
}

/// An event type or outcome as the log writes it (`approval.approved`, `denied`).
pub(crate) fn name_of(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Appends the `recording.accessed` event for reading `session` through `command`. It must
/// be recorded before anything is shown: no read of a recording without its trace.
fn record_access(dir: &Path, command: &str, session: &str, reader: &AsName) -> Result<()> {
    let log = open_log(dir)?;
    let mut ev = log.event(EventType::RecordingAccessed, Outcome::Info);
    ev.identity = Some(local_identity(reader));
    ev.action = Some(format!("sessions {command}"));
    // The session goes in `resource`, not `session`: this event is not part of it.
    ev.resource = Some(session.to_string());
    ev.detail = Some(format!(
        "session {session} read on the command line (portcullis sessions {command}){}",
        os_user_note(reader)
    ));
    runtime()?
        .block_on(async {
            log.record(ev).await?;
            log.close().await
        })
        .context("the audit log cannot record this access to a recording; refusing to show it")?;
    Ok(())
}

pub(crate) fn open_log(dir: &Path) -> Result<AuditLog> {
    AuditLog::open(dir, "portcullis-cli", portcullis_config::Durability::Strict)
        .with_context(|| format!("opening the audit log in {}", dir.display()))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "an unnamed operating-system user".into())
}

/// The reader as the log names them: the `--as` name, else the operating system's user.
fn local_identity(reader: &AsName) -> Identity {
    Identity {
        issuer: "portcullis:local".into(),
        subject: reader.name.clone().unwrap_or_else(os_user),
        display_name: None,
        kind: IdentityKind::Human,
        groups: Vec::new(),
        auth_method: AuthMethod::Local,
        credential_id: None,
        act: Vec::new(),
    }
}

/// With `--as`, who ran the command still goes into the record.
fn os_user_note(reader: &AsName) -> String {
    match &reader.name {
        Some(_) => format!(", run by operating-system user {}", os_user()),
        None => String::new(),
    }
}

fn verify_bundle(file: &Path, pubkey: &Path) -> i32 {
    let key = match portcullis_audit::keys::load_verifier(pubkey) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: --pubkey: {e}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return EXIT_UNUSABLE_INPUT;
        }
    };
    match bundle::verify(&bytes, &key) {
        Ok(report) => {
            println!("bundle OK: {}", clean_line(&report.to_string()));
            0
        }
        Err(e) => {
            eprintln!("bundle INVALID: {}", clean_line(&e.to_string()));
            EXIT_INVALID
        }
    }
}

fn prune(dir: &Path, before: &str, reader: &AsName, dry_run: bool) -> Result<()> {
    let plan = retention::plan(dir, before)
        .with_context(|| format!("reading the recordings in {}", dir.display()))?;
    if plan.chunks.is_empty() && plan.segments.is_empty() {
        println!("no recordings of requests before {before}");
        return Ok(());
    }
    if dry_run {
        println!(
            "would remove {} recorded chunk(s) and {} sealed segment(s) of requests before {before}",
            plan.chunks.len(),
            plan.segments.len()
        );
        return Ok(());
    }
    // First the evidence, then the removal: a crash between the two leaves chunks that the
    // log says are gone, never chunks gone without a word.
    let log = open_log(dir)?;
    let identity = local_identity(reader);
    let chunk_groups: Vec<&[String]> = plan.chunks.chunks(retention::IDS_PER_EVENT).collect();
    let segment_groups: Vec<&[String]> = plan.segments.chunks(retention::IDS_PER_EVENT).collect();
    let events = chunk_groups.len().max(segment_groups.len());
    let mut removals = Vec::with_capacity(events);
    for i in 0..events {
        let mut ev = log.event(EventType::RecordingRemoved, Outcome::Info);
        ev.identity = Some(identity.clone());
        ev.action = Some("recordings prune".into());
        let chunks = chunk_groups.get(i).map(|g| g.to_vec()).unwrap_or_default();
        let segments = segment_groups
            .get(i)
            .map(|g| g.to_vec())
            .unwrap_or_default();
        ev.detail = Some(format!(
            "retention: the recordings of requests before {before} ({} chunk(s), {} segment(s); part {} of {events}){}",
            chunks.len(),
            segments.len(),
            i + 1,
            os_user_note(reader)
        ));
        ev.removed = Some(RemovedRecord {
            before: before.to_string(),
            chunks,
            segments,
        });
        removals.push(ev);
    }
    runtime()?
        .block_on(async {
            for ev in removals {
                log.record(ev).await?;
            }
            log.close().await
        })
        .context("the audit log cannot record the removal; nothing was removed")?;
    let deleted = retention::delete_chunks(dir, &plan)?;
    let segments_dir = portcullis_audit::recordings::segments_dir(dir);
    for segment in &plan.segments {
        let path = segments_dir.join(segment);
        std::fs::remove_file(&path).with_context(|| {
            format!(
                "removing {} (the log already says it is removed; delete it by hand)",
                path.display()
            )
        })?;
    }
    println!(
        "removed {deleted} recorded chunk(s) and {} sealed segment(s) of requests before {before}, as {events} recording.removed event(s) say",
        plan.segments.len()
    );
    Ok(())
}

/// A time given on the command line, as events write times (RFC 3339, UTC, milliseconds):
/// an RFC 3339 time, a date (its midnight UTC), or a span before now (`90d`, `2h`).
fn parse_when(text: &str, flag: &str) -> Result<String> {
    let text = text.trim();
    let at: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
    } else if let Ok(span) = humantime::parse_duration(text) {
        let span = chrono::Duration::from_std(span)
            .ok()
            .filter(|s| *s < chrono::Duration::days(365 * 1000))
            .ok_or_else(|| anyhow::anyhow!("{flag} {text}: too long a span"))?;
        Utc::now() - span
    } else {
        bail!(
            "{flag} {text:?}: give an RFC 3339 time (2026-03-01T12:00:00Z), a date (2026-03-01) or a span before now (2h, 90d)"
        );
    };
    Ok(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_events_write_them() {
        assert_eq!(
            parse_when("2026-03-01T13:00:00+01:00", "--since").unwrap(),
            "2026-03-01T12:00:00.000Z"
        );
        assert_eq!(
            parse_when("2026-03-01", "--since").unwrap(),
            "2026-03-01T00:00:00.000Z"
        );
        let ago = parse_when("2h", "--since").unwrap();
        assert!(ago.ends_with('Z') && ago.len() == 24, "{ago}");
        assert!(parse_when("yesterday-ish", "--since").is_err());
    }

    #[test]
    fn a_summary_with_escape_sequences_is_printed_escaped() {
        let text = clean_line("rows\u{1b}[2J\u{9b}31m\u{202e}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{9b}') && !text.contains('\u{202e}'));
    }
}
