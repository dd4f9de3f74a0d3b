//! The Markdown writer: GitHub-flavoured Markdown, tables for lists of items.
//!
//! Every string from the report goes through [`escape`], which keeps it one line of plain
//! text wherever it lands: in a table cell it cannot add a column (`|`) or end the row (a
//! newline), and anywhere it cannot open HTML (`<`), a code span, emphasis, a link, a
//! heading or a list. The only HTML in the output is this module's own `<br>`.

use std::fmt::Write;

use super::{Block, Inline, Row, layout, short_id, title};
use crate::Report;
use crate::report::ControlStatus;

/// The report as GitHub-flavoured Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = writeln!(out, "# {}\n", escape(&title(report)));
    for block in layout(report) {
        write_block(&mut out, &block);
    }
    out
}

fn write_block(out: &mut String, block: &Block) {
    match block {
        Block::Heading { level, text, .. } => {
            let hashes = "#".repeat(usize::from(*level));
            let _ = writeln!(out, "{hashes} {}\n", escape(text));
        }
        Block::Para(content) => {
            write_inlines(out, content, true);
            out.push_str("\n\n");
        }
        Block::Callout { ok, content } => {
            // GitHub alert syntax; elsewhere it reads as a quote starting with the label.
            out.push_str(if *ok {
                "> [!NOTE]\n> "
            } else {
                "> [!CAUTION]\n> "
            });
            write_inlines(out, content, true);
            out.push_str("\n\n");
        }
        Block::Table { head, rows } => write_table(out, head, rows),
        Block::List(items) => {
            for item in items {
                out.push_str("- ");
                write_inlines(out, item, true);
                out.push('\n');
            }
            out.push('\n');
        }
    }
}

fn write_table(out: &mut String, head: &[&str], rows: &[Row]) {
    out.push('|');
    for h in head {
        let _ = write!(out, " {} |", escape(h));
    }
    out.push_str("\n|");
    for _ in head {
        out.push_str(" --- |");
    }
    out.push('\n');
    for row in rows {
        out.push('|');
        for cell in &row.cells {
            out.push(' ');
            write_inlines(out, cell, false);
            out.push_str(" |");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// `line_start`: the first inline starts a line (a paragraph, a list item, a quote), not a
/// table cell.
fn write_inlines(out: &mut String, content: &[Inline], line_start: bool) {
    for (i, inline) in content.iter().enumerate() {
        match inline {
            Inline::Text(s) => out.push_str(&escape_at(s, line_start && i == 0)),
            Inline::Strong(s) => write_strong(out, s),
            Inline::Code(s) => write_code(out, s),
            Inline::Status(ControlStatus::Satisfied) => out.push_str("satisfied"),
            Inline::Status(ControlStatus::NotSatisfied) => out.push_str("**NOT SATISFIED**"),
            Inline::Event(e) => {
                write_code(out, &short_id(&e.id));
                let _ = write!(out, " (seq {}", e.seq);
                if let Some(log) = &e.log {
                    out.push_str(" in ");
                    write_code(out, log);
                }
                if let Some(session) = &e.session {
                    out.push_str(", session ");
                    write_code(out, session);
                }
                out.push(')');
            }
            Inline::Break => out.push_str("<br>"),
        }
    }
}

/// Strong text; spaces at either end are kept outside the `**`, where Markdown needs them
/// for the emphasis to open and close.
fn write_strong(out: &mut String, s: &str) {
    let inner = s.trim();
    if inner.is_empty() {
        out.push_str(&escape(s));
        return;
    }
    let lead = &s[..s.len() - s.trim_start().len()];
    let trail = &s[s.trim_end().len()..];
    let _ = write!(
        out,
        "{}**{}**{}",
        " ".repeat(lead.chars().count()),
        escape(inner),
        " ".repeat(trail.chars().count())
    );
}

/// A code span when the value cannot break out of one (no backtick, no `|`, which would split
/// a table cell even inside a code span, no line break); escaped text otherwise.
fn write_code(out: &mut String, s: &str) {
    let fits = !s.is_empty()
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.chars().any(|c| c == '`' || c == '|' || c.is_control());
    if fits {
        let _ = write!(out, "`{s}`");
    } else {
        out.push_str(&escape(s));
    }
}

/// Text as Markdown that renders as exactly that text, on one line, in the middle of a line
/// or in a table cell (where block syntax has no effect).
pub(super) fn escape(text: &str) -> String {
    escape_at(text, false)
}

/// [`escape`], for text that starts a line (a paragraph, a list item), where `- `, `1. `,
/// `---` or an indent would open a block.
fn escape_at(text: &str, line_start: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    // "1." or "2)" at the start of a line would open an ordered list.
    let digits = if line_start {
        text.chars().take_while(char::is_ascii_digit).count()
    } else {
        0
    };
    let mut chars = text.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '!' | '~' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {
                if chars.peek().map(|&(_, next)| next) != Some('\n') {
                    out.push_str("<br>");
                }
            }
            '\n' => out.push_str("<br>"),
            // Would open a list, a thematic break or a setext heading at a line's start.
            '-' | '+' | '=' if line_start && i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if digits > 0 && i == digits => {
                out.push('\\');
                out.push(c);
            }
            // Leading indentation would make a code block.
            ' ' | '\t' if line_start && i == 0 => out.push_str("&#32;"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_a_value_one_line_of_text() {
        assert_eq!(
            escape("<script>a|b</script>\nc`d`"),
            "&lt;script\\>a\\|b&lt;/script\\><br>c\\`d\\`"
        );
        assert_eq!(escape("a\r\nb\rc"), "a<br>b<br>c");
        assert_eq!(escape_at("- item", true), "\\- item");
        assert_eq!(escape_at("12. item", true), "12\\. item");
        assert_eq!(escape_at("    code", true), "&#32;   code");
        assert_eq!(escape_at("=== +", true), "\\=== +");
        // In the middle of a line, or in a cell, the same text is left as it reads.
        assert_eq!(escape("- item 12. x"), "- item 12. x");
        assert_eq!(escape(" a"), " a");
        assert_eq!(escape("[x](http://e)"), "\\[x\\](http://e)");
        assert_eq!(escape("&lt;"), "&amp;lt;");
        assert_eq!(escape("billing-agent 1.5"), "billing-agent 1.5");
    }

    #[test]
    fn code_falls_back_to_text_when_it_could_break_out() {
        let mut out = String::new();
        write_code(&mut out, "sess-1");
        assert_eq!(out, "`sess-1`");
        out.clear();
        write_code(&mut out, "a`|b\nc");
        assert_eq!(out, "a\\`\\|b<br>c");
    }

    #[test]
    fn strong_keeps_spaces_outside_the_markers() {
        let mut out = String::new();
        write_strong(&mut out, " (BREAK-GLASS)");
        assert_eq!(out, " **(BREAK-GLASS)**");
    }
}
