//! A statement's shape: its text with the literal values taken out, so that statements that
//! differ only in their values share one classification.
//!
//! Agents and drivers that inline values (`WHERE id = 42`, pgbench's simple protocol) send a
//! new text for every statement, and parsing each with libpg_query costs some 20 µs. What
//! policy decides on (kinds, tables, functions, a missing WHERE) comes from the statement's
//! structure, never from a literal's contents, so the classification of one text holds for
//! every text of the same shape.
//!
//! That argument is only as good as the lexer that finds the literals, so this one is
//! deliberately narrow: it takes a text only when it can find the literals exactly as
//! PostgreSQL's lexer does, and gives up (`None`: the text is parsed in full) on anything
//! subtle: comments, dollar quoting, backslashes (whose meaning depends on
//! `standard_conforming_strings` and on `E''`), a number glued to a name (`1from`, which
//! older servers read as `1 FROM`), non-ASCII bytes, several statements, and any statement
//! that is not plain DML. Inside DDL a string literal can be code (a function body), so
//! only `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `WITH`, `VALUES` and `TABLE` qualify.

/// The shape of a text and its normalised form.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    /// The text with each string literal replaced by `\u{1}` and each number by `\u{2}`:
    /// equal keys mean equal texts but for literal values.
    pub key: String,
    /// The text with each literal replaced by `$n` (numbered after the text's own
    /// parameters), for the audit log.
    pub normalized: String,
    /// The statement without surrounding whitespace and its final `;`.
    pub statement: String,
}

const STRING: char = '\u{1}';
const NUMBER: char = '\u{2}';

const LEADING: &[&str] = &[
    "select", "insert", "update", "delete", "with", "values", "table",
];

/// The shape of `sql`, or `None` when the text must be parsed in full.
pub fn shape(sql: &str) -> Option<Shape> {
    let bytes = sql.as_bytes();
    // One pass of rejections first: they are cheap and keep the lexer below simple.
    if !sql.is_ascii()
        || bytes
            .iter()
            .any(|&b| b == b'\\' || (b < 0x20 && !matches!(b, b' ' | b'\t' | b'\n' | b'\r')))
        || sql.contains("--")
        || sql.contains("/*")
    {
        return None;
    }
    let statement = sql.trim().trim_end_matches(';').trim_end();
    let first = statement
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()?
        .to_ascii_lowercase();
    if !LEADING.contains(&first.as_str()) {
        return None;
    }
    let mut key = String::with_capacity(statement.len());
    let mut literals: Vec<(usize, usize)> = Vec::new();
    let mut max_param = 0u32;
    let s = statement.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            b'\'' => {
                let start = i;
                i += 1;
                loop {
                    match s.get(i) {
                        None => return None,
                        Some(b'\'') if s.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                // Two literals separated only by whitespace with a newline are one
                // literal to PostgreSQL; keep such texts for the full parser.
                let rest = &s[i..];
                let gap = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
                if rest.get(gap) == Some(&b'\'') && gap > 0 {
                    return None;
                }
                key.push(STRING);
                literals.push((start, i));
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match s.get(i) {
                        None => return None,
                        Some(b'"') if s.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                key.push_str(&statement[start..i]);
            }
            b'$' => {
                // `$n` parameters only; anything else is dollar quoting.
                let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                let n: u32 = statement[i + 1..i + 1 + digits].parse().ok()?;
                max_param = max_param.max(n);
                if s.get(i + 1 + digits).is_some_and(|&b| ident_char(b)) {
                    return None;
                }
                key.push_str(&statement[i..i + 1 + digits]);
                i += 1 + digits;
            }
            b'0'..=b'9' => {
                let start = i;
                i = number_end(s, i);
                if s.get(i).is_some_and(|&b| ident_char(b) || b == b'.') {
                    return None;
                }
                key.push(NUMBER);
                literals.push((start, i));
            }
            b'.' if s.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !i
                    .checked_sub(1)
                    .is_some_and(|p| ident_char(s[p]) || s[p] == b'"') =>
            {
                let start = i;
                i = number_end(s, i);
                if s.get(i).is_some_and(|&b| ident_char(b) || b == b'.') {
                    return None;
                }
                key.push(NUMBER);
                literals.push((start, i));
            }
            b';' => return None,
            c if ident_start(c) => {
                let start = i;
                while i < s.len() && ident_char(s[i]) {
                    i += 1;
                }
                // `E'..'`, `B'..'`, `X'..'`, `N'..'`, `U&'..'`: the prefix stays in the key,
                // the literal after it is found by the next round.
                key.push_str(&statement[start..i]);
            }
            _ => {
                key.push(c as char);
                i += 1;
            }
        }
    }
    let mut normalized = String::with_capacity(statement.len());
    let mut at = 0;
    for (n, (start, end)) in literals.iter().enumerate() {
        normalized.push_str(&statement[at..*start]);
        normalized.push('$');
        normalized.push_str(&(max_param as usize + n + 1).to_string());
        at = *end;
    }
    normalized.push_str(&statement[at..]);
    Some(Shape {
        key,
        normalized,
        statement: statement.to_string(),
    })
}

fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// The end of a number starting at `i`: digits, an optional fraction, an optional exponent.
fn number_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if s.get(i) == Some(&b'.') && s.get(i + 1) != Some(&b'.') {
        i += 1;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape(sql).map(|s| s.key)
    }

    #[test]
    fn values_do_not_change_the_shape() {
        let a = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;").unwrap();
        let b = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 7").unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.normalized,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        );
        assert_eq!(
            a.statement,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345"
        );
        assert_eq!(
            key("select * from t where name = 'it''s' and x = 1.5e3"),
            key("select * from t where name = 'x' and x = 2")
        );
        // A string and a number are different shapes; names and operators are kept.
        assert_ne!(key("select 1"), key("select '1'"));
        assert_ne!(key("select a from t"), key("select b from t"));
        assert_ne!(key("select 1 from t"), key("select 1 from u"));
    }

    #[test]
    fn parameters_are_kept_and_numbered_after() {
        let s = shape("select $1, 'a' from t where x = $2 and y = 3").unwrap();
        assert_eq!(s.normalized, "select $1, $3 from t where x = $2 and y = $4");
        assert_ne!(key("select $1"), key("select $2"));
    }

    #[test]
    fn subtle_texts_go_to_the_full_parser() {
        for sql in [
            "select 1from customers",
            "select 0x1f",
            "select 1_000",
            "select 'a\\' from t",
            "select E'a' from t",
            "select $$a$$",
            "select 1 -- comment",
            "select /* c */ 1",
            "select 1; delete from t",
            "select 'a'\n'b'",
            "create function f() returns int as 'select 1' language sql",
            "do 'begin end'",
            "copy t from '/etc/passwd'",
            "set search_path = 'x'",
            "select 'unterminated",
            "select \"unterminated",
            "select 'é'",
            "select $1abc",
        ] {
            assert!(
                shape(sql).is_none() || sql.starts_with("select E"),
                "{sql:?} should not be shaped"
            );
        }
        // E'' without a backslash reads the same as '': it may keep its shape, prefix kept.
        assert_ne!(key("select E'a'"), key("select 'a'"));
    }

    #[test]
    fn quoted_names_are_names() {
        assert_ne!(
            key("select * from \"a'b\" where x = 1"),
            key("select * from \"c'd\" where x = 1")
        );
        assert_eq!(
            key("select \"x\"\"y\" from t where a = 'q'"),
            key("select \"x\"\"y\" from t where a = 'r'")
        );
    }
}
