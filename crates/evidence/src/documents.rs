//! Writing a period's documents: the review report in each format asked for, the OSCAL
//! assessment results with the plan they import, each as a file whose hash goes into an
//! `evidence.report` event.
//!
//! Files are written whole or not at all (a temporary file in the same directory, synced,
//! then renamed), so a full disk or a crash leaves the previous document or none, never a
//! truncated one that a reviewer might sign off.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::oscal::{self, FileRef, OscalContext};
use crate::{EvidenceError, Report, render};

/// A document format, as `--format` and `[evidence] formats` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Html,
    Markdown,
    Json,
    /// The OSCAL assessment results and the assessment plan they import.
    Oscal,
}

impl Format {
    /// Parses `html`, `md` (or `markdown`), `json`, `oscal`.
    pub fn parse(text: &str) -> Result<Format, EvidenceError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "html" => Ok(Format::Html),
            "md" | "markdown" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            "oscal" => Ok(Format::Oscal),
            other => Err(EvidenceError::Invalid(format!(
                "{other:?} is not a report format: html, md, json or oscal"
            ))),
        }
    }

    /// The file extension of the report in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Json | Format::Oscal => "json",
        }
    }
}

/// One document, rendered and not yet written.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file name it is written under.
    pub file: String,
    /// `report`, `assessment-results`, `assessment-plan`, `component-definition`.
    pub document: &'static str,
    /// `html`, `md`, `json`, `oscal-json`.
    pub format: &'static str,
    pub bytes: Vec<u8>,
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The stem of a period's file names (`schedule::period_stem`): what a scheduled run looks
/// for to know its period is done.
pub fn stem(report: &Report) -> String {
    crate::schedule::period_stem(&report.period)
}

/// Renders `report` in each of `formats`, named from `stem`. The OSCAL results link the
/// HTML (or else the JSON) report written beside them, with its hash.
pub fn render_all(
    report: &Report,
    formats: &[Format],
    stem: &str,
    tool_version: &str,
) -> Vec<Document> {
    let mut out = Vec::new();
    for format in [Format::Html, Format::Markdown, Format::Json] {
        if !formats.contains(&format) {
            continue;
        }
        let bytes = match format {
            Format::Html => render::html(report).into_bytes(),
            Format::Markdown => render::markdown(report).into_bytes(),
            _ => report.to_json(),
        };
        out.push(Document {
            file: format!("{stem}.{}", format.extension()),
            document: "report",
            format: format.extension(),
            bytes,
        });
    }
    if formats.contains(&Format::Oscal) {
        let plan_file = format!("{stem}.assessment-plan.json");
        let mut ctx = OscalContext::new(tool_version);
        ctx.plan_href = plan_file.clone();
        ctx.report_file = out.first().map(|doc| FileRef {
            href: doc.file.clone(),
            sha256: sha256_hex(&doc.bytes),
        });
        out.push(Document {
            file: format!("{stem}.assessment-results.json"),
            document: "assessment-results",
            format: "oscal-json",
            bytes: oscal::to_bytes(&oscal::assessment_results(report, &ctx)),
        });
        out.push(Document {
            file: plan_file,
            document: "assessment-plan",
            format: "oscal-json",
            bytes: oscal::to_bytes(&oscal::assessment_plan(report, &ctx)),
        });
    }
    out
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it, synced, then
/// renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |context: String| move |source| EvidenceError::Io { context, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "document".into());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(EvidenceError::Io {
            context: format!("writing {}", path.display()),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_report;

    #[test]
    fn every_format_is_rendered_under_the_periods_name_and_oscal_links_the_report() {
        let report = sample_report();
        let stem = stem(&report);
        assert_eq!(stem, "evidence-20261201T000000Z--20261202T000000Z");
        let docs = render_all(
            &report,
            &[Format::Oscal, Format::Json, Format::Html, Format::Markdown],
            &stem,
            "0.1.0",
        );
        let names: Vec<&str> = docs.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "evidence-20261201T000000Z--20261202T000000Z.html",
                "evidence-20261201T000000Z--20261202T000000Z.md",
                "evidence-20261201T000000Z--20261202T000000Z.json",
                "evidence-20261201T000000Z--20261202T000000Z.assessment-results.json",
                "evidence-20261201T000000Z--20261202T000000Z.assessment-plan.json",
            ]
        );
        let results = String::from_utf8(docs[3].bytes.clone()).unwrap();
        assert!(
            results.contains(&sha256_hex(&docs[0].bytes)),
            "links the HTML by hash"
        );
        assert!(
            results.contains("evidence-20261201T000000Z--20261202T000000Z.assessment-plan.json")
        );
        let record = crate::record::record_for(
            docs[0].document,
            docs[0].format,
            Some(&report.period),
            &docs[0].bytes,
            Path::new(&docs[0].file),
        );
        assert_eq!(record.sha256, sha256_hex(&docs[0].bytes));
        assert_eq!(record.since.as_deref(), Some("2026-12-01T00:00:00.000Z"));
    }

    #[test]
    fn a_document_is_written_whole_and_an_unwritable_place_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.html");
        write_atomically(&path, b"<html>").unwrap();
        write_atomically(&path, b"<html>2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"<html>2");
        let leftovers = std::fs::read_dir(dir.path().join("sub")).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let err = write_atomically(&blocked.join("report.html"), b"x").unwrap_err();
        assert!(err.to_string().contains("creating"), "{err}");
    }

    #[test]
    fn formats_parse_and_name_their_files() {
        assert_eq!(Format::parse("MD").unwrap(), Format::Markdown);
        assert_eq!(Format::parse("oscal").unwrap().extension(), "json");
        let err = Format::parse("pdf").unwrap_err();
        assert!(err.to_string().contains("html, md, json or oscal"), "{err}");
    }
}
