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

use std::path::Path;

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
        }
    }
}
