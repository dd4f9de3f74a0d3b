//! How a written evidence document is named in the log: its [`EvidenceRecord`] and the
//! `evidence.report` event that records it.
//!
//! Every document the gateway writes (the review report in each format, the OSCAL documents)
//! is recorded with its SHA-256 and length as soon as it is written. The log is signed and
//! witnessed, so a report regenerated later with other numbers no longer matches any
//! `evidence.report` event, and the reports of a period are themselves evidence (AU-6: that
//! review material was produced, and when).

use std::path::Path;

use portcullis_audit::checkpoint::Signer;
use portcullis_audit::{AuditError, AuditLog};
use portcullis_model::{AuditEvent, EventType, EvidenceRecord, Outcome};

use crate::Period;
use crate::sign::{self, SignatureError};

/// Why a written document could not be vouched for.
#[derive(Debug, thiserror::Error)]
pub enum VouchError {
    /// Its hash could not be recorded: it is not signed either.
    #[error("the audit log cannot record the document's hash, so it is not signed: {0}")]
    Record(#[source] AuditError),
    /// Recorded, but the signature could not be written.
    #[error(
        "the document is written and its hash recorded in the audit log, but its signature \
         could not be written (write it again to sign it): {0}"
    )]
    Sign(#[source] SignatureError),
}

/// Vouches for a document written at `path` (`bytes` as written): records its
/// `evidence.report` event, then writes its signature. In that order, so that a signed
/// document always has its event, and a signature file marks the work finished. Returns the
/// signature's path.
pub async fn vouch(
    log: &AuditLog,
    signer: &dyn Signer,
    path: &Path,
    (document, format): (&str, &str),
    period: Option<&Period>,
    bytes: &[u8],
) -> Result<std::path::PathBuf, VouchError> {
    let record = record_for(document, format, period, bytes, path);
    log.record(document_event(log, record.clone()))
        .await
        .map_err(VouchError::Record)?;
    sign::write_signature(path, &record, signer).map_err(VouchError::Sign)
}

/// The record naming a written document, for its signature and its `evidence.report` event.
/// `file` is where it was written; only its name is kept (directories differ between the
/// machine that wrote it and the one that checks it).
pub fn record_for(
    document: &str,
    format: &str,
    period: Option<&Period>,
    bytes: &[u8],
    file: &Path,
) -> EvidenceRecord {
    EvidenceRecord {
        document: document.to_string(),
        format: format.to_string(),
        since: period.map(|p| p.since.clone()),
        until: period.map(|p| p.until.clone()),
        sha256: crate::documents::sha256_hex(bytes),
        bytes: bytes.len() as u64,
        file: file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned()),
    }
}

/// The `evidence.report` event of a written document, to be recorded (`log.record(...)`)
/// right after the document and its signature are on disk.
pub fn document_event(log: &AuditLog, record: EvidenceRecord) -> AuditEvent {
    let mut event = log.event(EventType::EvidenceReport, Outcome::Info);
    event.detail = Some(format!(
        "{} ({}) written{}",
        record.document,
        record.format,
        record
            .file
            .as_deref()
            .map(|f| format!(" as {f}"))
            .unwrap_or_default()
    ));
    event.evidence = Some(record);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_the_bytes_the_period_and_the_file_name_only() {
        let period = Period::parse("2026-12-01", "2026-12-02").unwrap();
        let r = record_for(
            "assessment-results",
            "oscal-json",
            Some(&period),
            b"abc",
            Path::new("/var/lib/portcullis/evidence/ar.json"),
        );
        assert_eq!(
            r.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(r.bytes, 3);
        assert_eq!(r.file.as_deref(), Some("ar.json"));
        assert_eq!(r.until.as_deref(), Some("2026-12-02T00:00:00.000Z"));
        let r = record_for(
            "component-definition",
            "oscal-json",
            None,
            b"",
            Path::new("c.json"),
        );
        assert_eq!((r.since, r.until), (None, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_event_is_recorded_with_its_record_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            AuditLog::open(dir.path(), "gw-test", portcullis_config::Durability::Strict).unwrap();
        let period = Period::parse("2026-12-01", "2026-12-02").unwrap();
        let record = record_for(
            "report",
            "html",
            Some(&period),
            b"<html>",
            Path::new("r.html"),
        );
        let event = document_event(&log, record.clone());
        assert_eq!(event.event_type, EventType::EvidenceReport);
        log.record(event).await.unwrap();
        log.close().await.unwrap();

        let reader = portcullis_audit::AuditReader::open(dir.path()).unwrap();
        let stored: Vec<AuditEvent> = reader
            .since(0, 100)
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect();
        let stored = stored
            .iter()
            .find(|e| e.event_type == EventType::EvidenceReport)
            .expect("the event was recorded");
        assert_eq!(stored.evidence.as_ref(), Some(&record));
    }
}
