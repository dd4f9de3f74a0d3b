//! Evidence: the AU-6 review reports and OSCAL documents the gateway wrote (newest first,
//! each downloadable, with whether its signature is beside it), and the audit log's
//! integrity as it stands: the last signed checkpoint, the witnesses' newest cosignatures,
//! and a warning when either is older than the configuration says it should be.
//!
//! For the people who may read the audit trail (the readers of recorded sessions: approvers
//! and break-glass groups) and console admins. A download is a file named exactly as the
//! evidence directory lists it (a plain name, a regular file, no symbolic link), sent as an
//! attachment (an HTML report is never rendered under the console's origin), and recorded as
//! `console.export` with the file's SHA-256 before a byte of it is sent.
//!
//! The integrity status is cheap on purpose: it reads the newest checkpoint the log already
//! holds in memory, checks its one signature, and asks the store one indexed query for the
//! cosignatures. The full verification is `portcullis audit verify` and the evidence run's.

use std::io::Read as _;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use portcullis_model::{EventType, Outcome};
use sha2::{Digest as _, Sha256};

use super::Web;
use super::auth::{RecordedRead, Viewer};
use super::page::{self, Section, notice, page, time};

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/evidence", get(show))
        .route("/evidence/files/{name}", get(download))
}

/// The most documents the page lists (the newest).
const MAX_LISTED: usize = 200;
/// The largest document the console sends (evidence documents are far smaller).
const MAX_DOWNLOAD: u64 = 64 * 1024 * 1024;

/// The viewer may read audit information (the rule of recorded sessions, or a console
/// admin), or the 403 page that says who may.
fn may_read(web: &Web, viewer: &Viewer) -> Result<(), Response> {
    let readers = web.admin.recording_readers();
    if viewer.is_admin || crate::sessions::is_reader(&web.admin, &viewer.identity) {
        return Ok(());
    }
    let who = if readers.is_empty() {
        format!("console admins ({})", web.settings.admins.join(", "))
    } else {
        format!(
            "members of {} (the groups that approve or break glass) and console admins ({})",
            readers.join(", "),
            web.settings.admins.join(", ")
        )
    };
    Err(page::problem(
        StatusCode::FORBIDDEN,
        "Not for you",
        &format!(
            "Evidence and the audit log's integrity are for {who}. Ask one of them if you need a document."
        ),
        Some(viewer),
    ))
}

/// A file name the console will list or send: one path component of ordinary characters,
/// not hidden. Anything else (`..`, `a/b`, `%2e%2e`, a control character) is not a name here.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// One regular file of the evidence directory.
struct Entry {
    name: String,
    size: u64,
    modified: Option<SystemTime>,
}

/// The directory's plain regular files (no symbolic links, no directories), newest first.
/// A directory that does not exist yet is empty.
fn entries(dir: &FsPath) -> std::io::Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !plain_name(&name) {
            continue;
        }
        // `DirEntry::metadata` does not follow symbolic links: a link is not a regular file.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            size: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    out.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.name.cmp(&a.name)));
    Ok(out)
}

/// What a document is, from its name.
fn kind(name: &str) -> &'static str {
    if name.ends_with(".assessment-results.json") {
        "OSCAL assessment results"
    } else if name.ends_with(".assessment-plan.json") {
        "OSCAL assessment plan"
    } else if name.ends_with(".component-definition.json") {
        "OSCAL component definition"
    } else if name.ends_with(".html") {
        "AU-6 review (HTML)"
    } else if name.ends_with(".md") {
        "AU-6 review (Markdown)"
    } else if name.ends_with(".json") {
        "AU-6 review (JSON)"
    } else {
        "other document"
    }
}

/// The period in a name `evidence-<since>--<until>...`, times as `20261201T000000Z`.
fn period(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("evidence-")?;
    let (since, rest) = rest.split_once("--")?;
    let until = rest.get(..16)?;
    let parse = |t: &str| {
        chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| {
                t.and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
    };
    Some((parse(since)?, parse(until)?))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 10 * 1024 => format!("{b} B"),
        b if b < 10 * 1024 * 1024 => format!("{} KiB", b / 1024),
        b => format!("{} MiB", b / (1024 * 1024)),
    }
}

/// How long ago, in words (rounded to the minute past a minute).
fn ago(secs: u64) -> String {
    let rounded = if secs < 60 { secs } else { secs - secs % 60 };
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(rounded))
    )
}

fn age_of(rfc3339: &str) -> Option<u64> {
    let then = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(
        (chrono::Utc::now() - then.with_timezone(&chrono::Utc))
            .num_seconds()
            .max(0) as u64,
    )
}

/// The log's integrity as the page shows it.
struct Integrity {
    /// Whether the log signs checkpoints at all.
    signing: bool,
    /// The newest checkpoint: size, time, root hash (hex), whether it verifies with the
    /// log's key.
    checkpoint: Option<(u64, String, String, bool)>,
    /// Events committed by this gateway so far.
    committed: u64,
    /// Each witness's newest cosignature: name, size, time.
    cosignatures: Vec<(String, u64, String)>,
    /// The time of the oldest event no checkpoint covers yet, if there is one.
    uncovered_since: Option<String>,
    /// Why the cosignatures could not be read, if they could not.
    read_error: Option<String>,
}

async fn integrity(web: &Web) -> Integrity {
    let audit = &web.admin.audit;
    let newest = audit.checkpoints().borrow().clone();
    let checkpoint = newest.map(|c| {
        let verifies = audit
            .signing()
            .is_some_and(|(key, _)| key.open(&c.note).is_ok());
        (c.size, c.time, hex::encode(c.root), verifies)
    });
    let committed = *audit.committed().borrow();
    let data_dir = web.admin.data_dir.clone();
    let first_uncovered = checkpoint.as_ref().map_or(0, |c| c.0) + 1;
    let uncovered = committed >= first_uncovered;
    let read = tokio::task::spawn_blocking(move || {
        let reader = portcullis_audit::AuditReader::open(&data_dir)?;
        let cosignatures = reader.latest_cosignatures()?;
        let since = if uncovered {
            reader.time_at(first_uncovered)?
        } else {
            None
        };
        Ok::<_, portcullis_audit::AuditError>((cosignatures, since))
    })
    .await
    .map_err(|e| format!("the reader failed: {e}"))
    .and_then(|read| read.map_err(|e| e.to_string()));
    let (cosignatures, uncovered_since, read_error) = match read {
        Ok((c, since)) => (c, since, None),
        Err(e) => (Vec::new(), None, Some(e)),
    };
    Integrity {
        signing: audit.signing().is_some(),
        checkpoint,
        committed,
        cosignatures,
        uncovered_since,
        read_error,
    }
}

/// Warnings about the integrity status: what is older than expected, and what to do.
fn warnings(web: &Web, i: &Integrity) -> Vec<String> {
    let mut out = Vec::new();
    if !i.signing {
        out.push("Checkpoints are not signed (audit.signing_key is not set): the log cannot be verified against anything outside this machine. Run `portcullis keys audit-init` and set audit.signing_key.".to_string());
        return out;
    }
    let interval = web.settings.checkpoint_interval.as_secs();
    // A checkpoint covers new events within the interval (the writer's ticker signs one
    // when events wait); an event uncovered for twice that and a minute is late.
    let late = interval * 2 + 60;
    if let Some((size, _, _, false)) = &i.checkpoint {
        out.push(format!("The newest checkpoint (size {size}) does not verify with the log's own key: run `portcullis audit verify` now."));
    }
    let covered = i.checkpoint.as_ref().map_or(0, |c| c.0);
    if let Some(age) = i.uncovered_since.as_deref().and_then(age_of)
        && age > late
    {
        out.push(format!(
            "{} events, the oldest recorded {}, are not covered by a signed checkpoint (one is expected every {}): check the gateway's log for signing errors.",
            i.committed.saturating_sub(covered),
            ago(age),
            humantime::format_duration(web.settings.checkpoint_interval)
        ));
    }
    if web.settings.witnesses > 0 {
        let checkpoint = i.checkpoint.as_ref().map(|(s, t, _, _)| (*s, age_of(t)));
        if i.cosignatures.is_empty() {
            if let Some((_, Some(age))) = checkpoint
                && age > 120
            {
                out.push(format!(
                    "{} witness(es) are configured but none has cosigned a checkpoint yet: check that they are reachable and know this log's key.",
                    web.settings.witnesses
                ));
            }
        } else if let Some((size, Some(age))) = checkpoint {
            for (witness, cosigned, _) in &i.cosignatures {
                if *cosigned < size && age > 120 {
                    out.push(format!(
                        "Witness {witness} has not cosigned the newest checkpoint (size {size}, signed {}); its newest cosignature is of size {cosigned}. Check that it is reachable.",
                        ago(age)
                    ));
                }
            }
        }
    }
    out
}

async fn show(State(web): State<Arc<Web>>, viewer: Viewer) -> Response {
    if let Err(refused) = may_read(&web, &viewer) {
        return refused;
    }
    let dir = web.settings.evidence_dir.clone();
    let listed =
        match page::off_thread(&viewer, "Evidence unavailable", move || entries(&dir)).await {
            Ok(listed) => listed,
            Err(refused) => return refused,
        };
    let files = match listed {
        Ok(files) => files,
        Err(e) => {
            return page::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Evidence unavailable",
                &format!(
                    "The evidence directory {} cannot be read: {e}",
                    web.settings.evidence_dir.display()
                ),
                Some(&viewer),
            );
        }
    };
    let signed: std::collections::HashSet<&str> = files
        .iter()
        .filter_map(|f| f.name.strip_suffix(".sig"))
        .collect();
    let documents: Vec<&Entry> = files
        .iter()
        .filter(|f| !f.name.ends_with(".sig") && !f.name.ends_with(".complete"))
        .take(MAX_LISTED)
        .collect();
    let status = integrity(&web).await;
    let body = html! {
        p.lede {
            "Review reports (AU-6) and OSCAL documents the gateway wrote to "
            code { (web.settings.evidence_dir.display()) }
            ", newest first. Each download is recorded in the audit log with your name and the file's SHA-256."
        }
        section aria-labelledby="integrity" {
            h2 #integrity { "Log integrity" }
            (render_integrity(&web, &status))
        }
        section aria-labelledby="documents" {
            h2 #documents { "Documents" }
            @if documents.is_empty() {
                p.empty { "No evidence documents yet. They are written on the [evidence] schedule, or by " code { "portcullis evidence report" } "." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Document" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Period" }
                        th scope="col" { "Size" }
                        th scope="col" { "Written" }
                        th scope="col" { "Signature" }
                    } }
                    tbody {
                        @for f in &documents {
                            tr data-file=(f.name) {
                                td { a href={ "/console/evidence/files/" (f.name) } { (f.name) } }
                                td { (kind(&f.name)) }
                                td {
                                    @if let Some((since, until)) = period(&f.name) {
                                        (time(&since)) " to " (time(&until))
                                    } @else { "—" }
                                }
                                td { (size(f.size)) }
                                td { @if let Some(m) = f.modified { (time(&rfc3339(m))) } }
                                td {
                                    @if signed.contains(f.name.as_str()) {
                                        a href={ "/console/evidence/files/" (f.name) ".sig" } { "signed (.sig)" }
                                    } @else {
                                        span.status.warning { "no signature" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Evidence", Some(&viewer), Section::Evidence, body).into_response()
}

fn render_integrity(web: &Web, i: &Integrity) -> Markup {
    let warnings = warnings(web, i);
    html! {
        @for w in &warnings { (notice("warning", w)) }
        @if let Some(e) = &i.read_error { (notice("error", &format!("The witnesses' cosignatures cannot be read: {e}"))) }
        dl.facts data-testid="integrity" {
            dt { "Last checkpoint" }
            dd {
                @match &i.checkpoint {
                    Some((size, at, root, verifies)) => {
                        "tree size " strong { (size) } ", signed at " (time(at))
                        @if let Some(age) = age_of(at) { " (" (ago(age)) ")" }
                        ", root " code { (&root[..16.min(root.len())]) "…" }
                        @if *verifies { " · signature verifies with the log's key" } @else { " · " strong { "signature does not verify" } }
                    }
                    None => {
                        @if i.signing { "none yet" } @else { "none: checkpoints are not signed" }
                    }
                }
            }
            dt { "Events recorded" }
            dd {
                (i.committed)
                @if let Some((size, ..)) = &i.checkpoint {
                    @if i.committed > *size { " (" (i.committed - size) " after the last checkpoint)" } @else { " (all covered)" }
                }
            }
            dt { "Checkpoint interval" }
            dd { (humantime::format_duration(web.settings.checkpoint_interval)) }
            dt { "Published to" }
            dd {
                @if let Some(dir) = &web.settings.checkpoint_dir { code { (dir.display()) } } @else { "no checkpoint directory" }
                " · "
                @if web.settings.witnesses == 0 { "no witnesses configured" } @else { (web.settings.witnesses) " witness(es) configured" }
            }
            @for (witness, size, at) in &i.cosignatures {
                dt { "Witness " (witness) }
                dd {
                    "newest cosignature of size " (size) ", stored at " (time(at))
                    @if let Some(age) = age_of(at) { " (" (ago(age)) ")" }
                }
            }
        }
    }
}

/// `GET /console/evidence/files/{name}`: the document as an attachment, recorded first.
async fn download(
    State(web): State<Arc<Web>>,
    RecordedRead(viewer): RecordedRead,
    Path(name): Path<String>,
) -> Response {
    if let Err(refused) = may_read(&web, &viewer) {
        return refused;
    }
    let not_found = || {
        page::problem(
            StatusCode::NOT_FOUND,
            "No such document",
            "There is no evidence document of that name. Pick one from the Evidence page.",
            Some(&viewer),
        )
    };
    if !plain_name(&name) {
        return not_found();
    }
    let dir = web.settings.evidence_dir.clone();
    let wanted = name.clone();
    let read = match page::off_thread(&viewer, "Not sent", move || read_listed(&dir, &wanted)).await
    {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let bytes = match read {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return not_found(),
        Err(e) => {
            return page::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not sent",
                &format!("The document cannot be read: {e}"),
                Some(&viewer),
            );
        }
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut ev = web
        .admin
        .audit
        .event(EventType::ConsoleExport, Outcome::Info);
    ev.identity = Some(viewer.identity.clone());
    ev.target = Some("console".into());
    ev.action = Some("GET /console/evidence/files".into());
    ev.resource = Some(name.clone());
    ev.detail = Some(format!(
        "evidence document {name} ({} bytes, sha256 {sha256}) downloaded from the console (session {})",
        bytes.len(),
        viewer.handle
    ));
    if let Err(e) = web.admin.audit.record(ev).await {
        return page::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not sent",
            &format!(
                "The document was not sent: the audit log cannot record the download right now ({e}). Try again later."
            ),
            Some(&viewer),
        );
    }
    let content_type = if name.ends_with(".json") || name.ends_with(".sig") {
        "application/json"
    } else if name.ends_with(".md") {
        "text/markdown; charset=utf-8"
    } else {
        // HTML too: it is a file to keep, never a page under the console's origin.
        "application/octet-stream"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        "x-content-sha256",
        HeaderValue::from_str(&sha256).expect("hex"),
    );
    response
}

/// The bytes of `name` if the directory lists it as a plain regular file; the file opened is
/// checked to be the one listed (same device and inode), so a link swapped in between is
/// not followed.
fn read_listed(dir: &FsPath, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::MetadataExt as _;
    let Some(_) = entries(dir)?.into_iter().find(|e| e.name == name) else {
        return Ok(None);
    };
    let path = dir.join(name);
    let listed = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = std::fs::File::open(&path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != listed.dev() || opened.ino() != listed.ino() {
        return Ok(None);
    }
    if opened.len() > MAX_DOWNLOAD {
        return Err(std::io::Error::other(format!(
            "{name} is larger than the console sends ({} MiB): copy it from the server",
            MAX_DOWNLOAD / (1024 * 1024)
        )));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    file.take(MAX_DOWNLOAD).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "%2e%2e",
            "a\nb",
            "é.html",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
        assert!(plain_name(
            "evidence-20261201T000000Z--20261202T000000Z.assessment-results.json"
        ));
    }

    #[test]
    fn kinds_and_periods_come_from_names() {
        let n = "evidence-20261201T000000Z--20261202T000000Z.html";
        assert_eq!(kind(n), "AU-6 review (HTML)");
        assert_eq!(
            period(n),
            Some(("2026-12-01T00:00:00Z".into(), "2026-12-02T00:00:00Z".into()))
        );
        assert_eq!(
            kind("evidence-20261201T000000Z--20261202T000000Z.assessment-plan.json"),
            "OSCAL assessment plan"
        );
        assert_eq!(period("notes.txt"), None);
    }

    #[cfg(unix)]
    #[test]
    fn links_and_missing_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link.html"))
            .unwrap();
        std::fs::write(dir.path().join("r.html"), "<p>").unwrap();
        assert!(read_listed(dir.path(), "link.html").unwrap().is_none());
        assert!(read_listed(dir.path(), "nope.html").unwrap().is_none());
        assert_eq!(read_listed(dir.path(), "r.html").unwrap().unwrap(), b"<p>");
        let names: Vec<String> = entries(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["r.html".to_string()]);
    }
}
