//! NIST SP 800-53 evidence from the audit log: the AU-6 review report and OSCAL documents.
//!
//! The audit log holds the facts; this crate turns a period of it into what an assessor or a
//! GRC tool reads. The pipeline is one pass over the log, in bounded memory:
//!
//! - [`collect`] streams the events of a period (and of a baseline window before it) into
//!   [`Facts`]: per-identity and per-target activity, privileged actions, holds and their
//!   decisions, access changes, refusals, masking counts, anomalies. Lists are capped; counts
//!   are not.
//! - [`integrity`] runs the same verification as `portcullis audit verify` and keeps what
//!   the period needs from it (the checkpoint that covers the period, witness cosignatures).
//! - [`assess`] applies one stated rule per control to the facts and the verification
//!   ([`controls`] is the single table of which event types are evidence for which control).
//! - [`Report`] is the result: the JSON report as written, and the input of the HTML and
//!   Markdown renderers ([`render`]) and of the OSCAL documents ([`oscal`]).
//! - [`sign`] signs written documents and checks those signatures offline.
#![forbid(unsafe_code)]

pub mod assess;
pub mod collect;
pub mod controls;
pub mod documents;
pub mod evaluate;
pub mod integrity;
pub mod oscal;
pub mod period;
pub mod record;
pub mod render;
pub mod report;
pub mod schedule;
pub mod sign;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use collect::Facts;
pub use period::Period;
pub use report::Report;

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Audit(#[from] portcullis_audit::AuditError),
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

use std::path::{Path, PathBuf};

/// Builds the report of `period` from the log in `data_dir`: verification first (a report
/// is produced from a log that fails it too, leading with the failure), then the facts,
/// then the control checks.
pub fn build_report(
    data_dir: &Path,
    period: Period,
    inputs: &integrity::VerifyInputs,
    options: &collect::Options,
) -> Result<Report, EvidenceError> {
    let reader = portcullis_audit::AuditReader::open(data_dir)?;
    // Verification reads the whole log on two threads of its own while the facts are
    // collected on this one: the report costs about the longer of the two, not the sum.
    let (facts, integrity) = std::thread::scope(|scope| {
        let verifying = scope.spawn(|| integrity::verify(data_dir, inputs));
        let facts = collect::collect(&reader, &period, options);
        let verified = verifying
            .join()
            .expect("the verification thread does not panic");
        (facts, verified)
    });
    let facts = facts?;
    let integrity = integrity::for_period(
        integrity,
        inputs,
        &period,
        facts.first_seq,
        facts.events_to_period_end,
    );
    Ok(Report::from_parts(period, facts, integrity))
}

/// One log of a report over several: its data directory and what it is verified with (each
/// replica signs with its own key).
pub struct LogSource {
    pub data_dir: PathBuf,
    pub inputs: integrity::VerifyInputs,
}

/// Builds the report of `period` over several logs (the replicas of a gateway, each with its
/// own data directory, `gateway.id` and key): each log verified on its own, the events of
/// all merged by time and each attributed to its log, the counts and the verification of
/// each in [`Report::logs`]. AU-9 holds only if it holds for every log. One log gives
/// exactly [`build_report`]'s report. Logs that cannot be told apart (the same origin) are
/// refused: their events and checkpoints would be taken for one log's.
pub fn build_report_over(
    logs: &[LogSource],
    period: Period,
    options: &collect::Options,
) -> Result<Report, EvidenceError> {
    match logs {
        [] => Err(EvidenceError::Invalid("no log to report on".into())),
        [only] => build_report(&only.data_dir, period, &only.inputs, options),
        logs => build_merged(logs, period, options),
    }
}

fn build_merged(
    logs: &[LogSource],
    period: Period,
    options: &collect::Options,
) -> Result<Report, EvidenceError> {
    let dirs: Vec<PathBuf> = logs.iter().map(|l| l.data_dir.clone()).collect();
    let origins =
        portcullis_audit::verify::distinct_origins(&dirs).map_err(EvidenceError::Invalid)?;
    let readers = logs
        .iter()
        .map(|log| portcullis_audit::AuditReader::open(&log.data_dir))
        .collect::<Result<Vec<_>, _>>()?;
    // A log with no checkpoint yet states no origin: its directory names it instead.
    let names: Vec<String> = origins
        .into_iter()
        .zip(&dirs)
        .map(|(origin, dir)| origin.unwrap_or_else(|| dir.display().to_string()))
        .collect();
    let to_read: Vec<collect::LogToRead<'_>> = readers
        .iter()
        .zip(&names)
        .map(|(reader, name)| collect::LogToRead {
            reader,
            origin: Some(name.clone()),
        })
        .collect();
    // The logs are verified one after the other on a thread of their own while the facts
    // are collected on this one, as for one log.
    let (facts, outcomes) = std::thread::scope(|scope| {
        let verifying = scope.spawn(|| {
            logs.iter()
                .map(|log| integrity::verify(&log.data_dir, &log.inputs))
                .collect::<Vec<_>>()
        });
        let facts = collect::collect_logs(&to_read, &period, options);
        let verified = verifying
            .join()
            .expect("the verification thread does not panic");
        (facts, verified)
    });
    let facts = facts?;
    let per_log: Vec<report::LogReport> = logs
        .iter()
        .zip(outcomes)
        .zip(&facts.logs)
        .zip(names)
        .map(|(((log, outcome), activity), name)| {
            let mut integrity = integrity::for_period(
                outcome,
                &log.inputs,
                &period,
                activity.first_seq,
                activity.events_to_period_end,
            );
            integrity.period_events = activity.events;
            integrity.first_seq = activity.first_seq;
            integrity.last_seq = activity.last_seq;
            if integrity.origin.is_none() {
                integrity.origin = Some(name.clone());
            }
            report::LogReport {
                origin: name,
                gateways: activity.gateways.clone(),
                events: activity.events,
                requests: activity.requests,
                integrity,
            }
        })
        .collect();
    let together = integrity::together(&per_log);
    let mut report = Report::from_parts(period, facts, together);
    if let Some(au9) = report.controls.iter_mut().find(|c| c.control == "au-9") {
        let (status, reason) = assess::protection_of_logs(&per_log);
        au9.status = status;
        au9.reason = reason;
    }
    report.logs = per_log;
    Ok(report)
}

impl Report {
    /// Assembles a report from its parts, running the control checks.
    pub fn from_parts(period: Period, facts: Facts, mut integrity: report::Integrity) -> Report {
        integrity.period_events = facts.totals.events;
        integrity.first_seq = facts.first_seq;
        integrity.last_seq = facts.last_seq;
        let controls = assess::assess(&facts, &integrity);
        Report {
            format: report::REPORT_FORMAT.to_string(),
            period,
            gateways: facts.gateways,
            integrity,
            controls,
            totals: facts.totals,
            identities: facts.identities,
            targets: facts.targets,
            privileged: facts.privileged,
            holds: facts.holds,
            break_glass: facts.break_glass,
            refused_decisions: facts.refused_decisions,
            access: facts.access,
            auth_failures: facts.auth_failures,
            refusals_by_rule: facts.refusals_by_rule,
            masking: facts.masking,
            anomalies: facts.anomalies,
            reviews: facts.reviews,
            documents: facts.documents,
            logs: Vec::new(),
        }
    }
}
