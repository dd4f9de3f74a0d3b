//! Parse failures as messages for the client: PostgreSQL's own message, shortened, with
//! the position of the token the grammar stopped at.

use super::*;

pub(super) fn parse_error(sql: &str, e: pg_query::Error) -> ClassifyError {
    match e {
        pg_query::Error::Parse(message) | pg_query::Error::Split(message) => {
            let cursor = error_cursor(sql, &message);
            ClassifyError::Parse {
                message: shorten(&message),
                cursor,
            }
        }
        pg_query::Error::Conversion(nul) => ClassifyError::Parse {
            message: "the text contains a NUL byte".into(),
            cursor: Some(char_position(sql, nul.nul_position())),
        },
        // prost refuses messages nested more than 100 deep; its message spells out the whole
        // path, which says nothing useful.
        pg_query::Error::Decode(d) if d.to_string().contains("recursion limit") => {
            ClassifyError::TooDeep
        }
        other => ClassifyError::Parse {
            message: shorten(&other.to_string()),
            cursor: None,
        },
    }
}

/// Keeps a message short: PostgreSQL quotes the text "near" an error, which for an
/// unterminated literal is the whole rest of the input.
pub(super) fn shorten(message: &str) -> String {
    const NEAR: &str = "at or near \"";
    const MAX_NEAR: usize = 40;
    if let Some(i) = message.find(NEAR) {
        let (head, near) = message.split_at(i + NEAR.len());
        let near = near.strip_suffix('"').unwrap_or(near);
        if near.chars().count() > MAX_NEAR {
            let cut: String = near.chars().take(MAX_NEAR).collect();
            return format!("{head}{cut}…\"");
        }
    }
    if message.chars().count() > 300 {
        let cut: String = message.chars().take(300).collect();
        return format!("{cut}…");
    }
    message.to_owned()
}

/// 1-based character position of byte offset `at`, as PostgreSQL reports positions.
pub(super) fn char_position(sql: &str, at: usize) -> usize {
    sql.get(..at).map_or(at, |prefix| prefix.chars().count()) + 1
}

/// Where the error is. libpg_query computes it but the Rust binding drops it, so it is
/// recovered here: a syntax error is reported at the first token that no valid statement
/// can continue with, and a prefix of the text fails "at end of input" exactly while it
/// stops before that token, so a binary search over token ends finds it.
pub(super) fn error_cursor(sql: &str, message: &str) -> Option<usize> {
    if message.ends_with("at end of input") {
        return Some(char_position(sql, sql.len()));
    }
    if !message.contains("at or near \"") || sql.len() > CURSOR_SEARCH_MAX_BYTES {
        return None;
    }
    let tokens = match pg_query::scan(sql) {
        Ok(scan) => scan.tokens,
        // The scanner itself fails on an unterminated literal or comment, and PostgreSQL
        // then quotes everything from its start to the end of the text.
        Err(_) => {
            let near = message.rsplit_once("at or near \"")?.1.strip_suffix('"')?;
            return sql
                .ends_with(near)
                .then(|| char_position(sql, sql.len() - near.len()));
        }
    };
    let fails_at = |k: usize| {
        let end = usize::try_from(tokens[k].end)
            .unwrap_or(sql.len())
            .min(sql.len());
        match sql
            .get(..end)
            .map(|prefix| pg_query::parse(prefix, ParserOptions::DEFAULT))
        {
            Some(Err(pg_query::Error::Parse(m))) => !m.ends_with("at end of input"),
            Some(Err(_)) | None => true,
            Some(Ok(_)) => false,
        }
    };
    let (mut lo, mut hi) = (0, tokens.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails_at(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let token = tokens.get(lo)?;
    Some(char_position(sql, usize::try_from(token.start).ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn unparseable_text_is_an_error_with_position() {
        let (m, c) = parse_err("SELEC 1");
        assert_eq!(m, "syntax error at or near \"SELEC\"");
        assert_eq!(c, Some(1));
        let (m, c) = parse_err("DELETE FROM");
        assert_eq!(m, "syntax error at end of input");
        assert_eq!(c, Some(12));
        assert_eq!(parse_err("SELECT 1 FROM FROM").1, Some(15));
        assert_eq!(
            parse_err("SELECT 'é' FROM FROM").1,
            Some(17),
            "counted in characters"
        );
        // The valid first statement does not make the text acceptable.
        assert_eq!(parse_err("SELECT 1; SELEC 2").1, Some(11));
        let e = classify("SELEC 1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SQL does not parse: syntax error at or near \"SELEC\" (at character 1)"
        );
    }

    #[test]
    fn error_messages_do_not_echo_long_sql() {
        let secret = "x".repeat(500);
        let (m, c) = parse_err(&format!("SELECT 1; SELECT '{secret}"));
        assert!(
            m.starts_with("unterminated quoted string at or near \"'xxx"),
            "{m}"
        );
        assert!(m.len() < 120, "{m}");
        assert_eq!(c, Some(18));
    }
}
