//! Plain-text layout: aligned columns for lists, padded label/value lines for one record.

/// The width of the REASON column, in characters.
pub(crate) const REASON_COLUMN: usize = 40;

/// Columns separated by two spaces, each as wide as its widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Label/value lines, labels padded to one width; a multi-line value is indented under its
/// first line.
pub(crate) fn labelled(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in fields {
        let pad = " ".repeat(width + 4);
        let value = value.replace('\n', &format!("\n{pad}"));
        out.push_str(&format!("  {label:<width$}  {value}\n"));
    }
    out
}
