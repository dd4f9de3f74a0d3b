//! The page shell every console page shares, and the small pieces pages are built from.
//!
//! Markup is accessible by construction where it can be: one `main` landmark, a skip link,
//! the current section marked `aria-current`, every input with a `label`, status messages in
//! a `role=status` region, times as `<time datetime>`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::Viewer;

/// The console's sections, in the order of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Approvals,
    Access,
    Sessions,
    Audit,
    Evidence,
    Admin,
    /// Sign-in and error pages.
    None,
}

const SECTIONS: [(Section, &str, &str); 6] = [
    (Section::Approvals, "Approvals", "/console/approvals"),
    (Section::Access, "Access", "/console/access"),
    (Section::Sessions, "Sessions", "/console/sessions"),
    (Section::Audit, "Audit log", "/console/audit"),
    (Section::Evidence, "Evidence", "/console/evidence"),
    (Section::Admin, "Admin", "/console/admin"),
];

/// A whole page: head, navigation (for a signed-in person), `body` in `main`.
pub(crate) fn page(title: &str, viewer: Option<&Viewer>, section: Section, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Portcullis" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/approvals" { "Portcullis" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Sections" {
                            ul {
                                @for (s, label, href) in SECTIONS {
                                    @if s != Section::Admin || viewer.is_admin {
                                        li {
                                            @if s == section {
                                                a href=(href) aria-current="page" { (label) }
                                            } @else {
                                                a href=(href) { (label) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span data-testid="signed-in-as" { (viewer.identity.display_name.as_deref().unwrap_or(&viewer.identity.subject)) }
                            form method="post" action="/console/sign-out" {
                                (csrf_field(viewer))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field that carries the session's CSRF token in a form.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A status message (a result, a warning) announced to screen readers.
pub(crate) fn notice(kind: &str, text: &str) -> Markup {
    html! { p.notice.(kind) role="status" { (text) } }
}

/// An RFC 3339 time as a `<time>` element (shown as written: UTC).
pub(crate) fn time(rfc3339: &str) -> Markup {
    let shown = rfc3339.replace('T', " ").trim_end_matches('Z').to_string();
    html! { time datetime=(rfc3339) { (shown) " UTC" } }
}

/// JSON, pretty-printed, in a `pre` block (maud escapes it).
pub(crate) fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// An error page with its status: what happened, in words, and nothing else changed.
pub(crate) fn problem(
    status: StatusCode,
    title: &str,
    message: &str,
    viewer: Option<&Viewer>,
) -> Response {
    let body = html! {
        (notice("error", message))
        p { a href="/console/approvals" { "Back to the console" } }
    };
    (status, page(title, viewer, Section::None, body)).into_response()
}

/// Runs `work` (file or SQLite reads) off the async threads. Should it stop unexpectedly
/// (a panic), the person gets a 500 page titled `title`, and nothing was sent or changed.
pub(crate) async fn off_thread<T: Send + 'static>(
    viewer: &Viewer,
    title: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!("console: {title}: the work stopped unexpectedly: {e}");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            title,
            "The work stopped unexpectedly. Nothing was sent or changed; try again.",
            Some(viewer),
        )
    })
}

pub(crate) async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
        None,
    )
}
