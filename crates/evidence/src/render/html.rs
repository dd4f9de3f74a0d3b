//! The HTML writer: one self-contained file, inline CSS only, no script, no external asset,
//! readable on screen and printable. A Content-Security-Policy meta tag forbids loading
//! anything at all, so even a value that escaped escaping could fetch nothing and run nothing.
//!
//! Every string from the report goes through [`escape`]; the markup around it is this
//! module's own.

use std::fmt::Write;

use super::{Block, Inline, Row, event_anchor, layout, short_id, title};
use crate::Report;
use crate::report::ControlStatus;

/// The report as one HTML document.
pub fn html(report: &Report) -> String {
    let title = title(report);
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", escape(&title));
    out.push_str("<style>\n");
    out.push_str(STYLE);
    // The printed page header: every page names the period it speaks for.
    let _ = writeln!(
        out,
        "@page {{ @top-center {{ content: {}; }} }}",
        css_string(&title)
    );
    out.push_str("</style>\n</head>\n<body>\n<header>\n");
    let _ = writeln!(out, "<h1>{}</h1>", escape(&title));
    out.push_str("</header>\n<main>\n");
    for block in layout(report) {
        write_block(&mut out, &block);
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

const STYLE: &str = r#"body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b; background: #fff; margin: 0 auto; max-width: 1200px; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .45rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f2f2f2; }
td, li, .callout { white-space: pre-line; }
tr:target { background: #fff6c8; }
code { font: .85em/1.3 ui-monospace, "DejaVu Sans Mono", monospace; background: #f5f5f5; padding: 0 .2em; overflow-wrap: anywhere; }
.callout { border: 2px solid; padding: .6rem .9rem; margin: .6rem 0 1rem; border-radius: 4px; }
.callout.ok { border-color: #2e7d32; background: #eef7ee; }
.callout.fail { border-color: #b71c1c; background: #fdecea; font-size: 1.05rem; }
.status { font-weight: 600; white-space: nowrap; }
.status.satisfied { color: #2e7d32; }
.status.not-satisfied { color: #b71c1c; }
a.ev { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85em; white-space: nowrap; }
.seq, .session { color: #555; font-size: .85em; white-space: nowrap; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  a { color: inherit; text-decoration: none; }
  a.ev::after { content: " (" attr(href) ")"; color: #555; }
  tr, .callout, h2, h3 { break-inside: avoid; page-break-inside: avoid; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  thead { display: table-header-group; }
  tr:target { background: none; }
}
"#;

fn write_block(out: &mut String, block: &Block) {
    match block {
        Block::Heading {
            level,
            text,
            anchor,
        } => {
            let _ = writeln!(
                out,
                "<h{level} id=\"{}\">{}</h{level}>",
                escape(anchor),
                escape(text)
            );
        }
        Block::Para(content) => {
            out.push_str("<p>");
            write_inlines(out, content);
            out.push_str("</p>\n");
        }
        Block::Callout { ok, content } => {
            let (class, role) = if *ok {
                ("ok", "status")
            } else {
                ("fail", "alert")
            };
            let _ = write!(out, "<div class=\"callout {class}\" role=\"{role}\">");
            write_inlines(out, content);
            out.push_str("</div>\n");
        }
        Block::Table { head, rows } => write_table(out, head, rows),
        Block::List(items) => {
            out.push_str("<ul>\n");
            for item in items {
                out.push_str("<li>");
                write_inlines(out, item);
                out.push_str("</li>\n");
            }
            out.push_str("</ul>\n");
        }
    }
}

fn write_table(out: &mut String, head: &[&str], rows: &[Row]) {
    out.push_str("<table>\n<thead><tr>");
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        match &row.anchor {
            Some(anchor) => {
                let _ = write!(out, "<tr id=\"{}\">", escape(anchor));
            }
            None => out.push_str("<tr>"),
        }
        for cell in &row.cells {
            out.push_str("<td>");
            write_inlines(out, cell);
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn write_inlines(out: &mut String, content: &[Inline]) {
    for inline in content {
        match inline {
            Inline::Text(s) => out.push_str(&escape(s)),
            Inline::Strong(s) => {
                let _ = write!(out, "<strong>{}</strong>", escape(s));
            }
            Inline::Code(s) => {
                let _ = write!(out, "<code>{}</code>", escape(s));
            }
            Inline::Status(status) => {
                let label = match status {
                    ControlStatus::Satisfied => "satisfied",
                    ControlStatus::NotSatisfied => "NOT SATISFIED",
                };
                let _ = write!(
                    out,
                    "<span class=\"status {}\">{label}</span>",
                    status.as_str()
                );
            }
            Inline::Event(e) => {
                let _ = write!(
                    out,
                    "<a class=\"ev\" href=\"#{}\" title=\"{}\">{}</a> <span class=\"seq\">seq {}</span>",
                    escape(&event_anchor(e)),
                    escape(&e.id),
                    escape(&short_id(&e.id)),
                    e.seq
                );
                if let Some(log) = &e.log {
                    let _ = write!(out, " <span class=\"seq\">in {}</span>", escape(log));
                }
                if let Some(session) = &e.session {
                    let _ = write!(
                        out,
                        " <span class=\"session\">session <code>{}</code></span>",
                        escape(session)
                    );
                }
            }
            Inline::Break => out.push_str("<br>"),
        }
    }
}

/// Text as HTML, safe in element content and in quoted attribute values alike.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not allowed in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Text as a quoted CSS string, for the printed page header: every character that is not
/// a letter, a digit or a space is written as a CSS hex escape, so nothing in it can end the
/// string, the rule, or the `<style>` element.
fn css_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == ' ' {
            out.push(c);
        } else {
            // A hex escape ends at the first non-hex character or at the space after it.
            let _ = write!(out, "\\{:x} ", c as u32);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_turns_markup_into_text() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c\nd"), "a\u{FFFD}b\u{FFFD}c\nd");
    }

    #[test]
    fn css_string_cannot_close_the_style_element() {
        let s = css_string("x\"; } </style><script>\\");
        assert!(!s.contains("</style"), "{s}");
        assert!(!s.contains('<'), "{s}");
        assert_eq!(s.matches('"').count(), 2, "{s}");
        assert!(s.starts_with("\"x\\22 \\3b  \\7d "), "{s}");
    }
}
