//! Text from the gateway made safe for a terminal. Everything a requester typed (reasons, tool
//! names, arguments) reaches an approver's screen, so control and bidirectional-override
//! characters are escaped before printing: a request must not be able to repaint the screen
//! its approver decides on.

/// Escapes control, bidirectional-formatting and invisible characters (a requester's text
/// must not move the cursor, recolour, reorder or hide anything on the approver's screen):
/// the same set as `audit tail` ([`crate::audit_cli::acts_on_a_terminal`]). Newlines are kept.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() && c != '\n') || crate::audit_cli::acts_on_a_terminal(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clean`], on one line: for table cells and one-line summaries.
pub(crate) fn clean_line(s: &str) -> String {
    clean(s).replace('\n', " ")
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}
