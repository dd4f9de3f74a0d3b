//! Where a field is in the file: byte spans looked up in the parsed TOML document by key path.
//!
//! Errors found after deserialisation (a bad listener, an unknown target) must name the line
//! of the field they are about. The typed structs keep no positions, so the document is also
//! parsed as `toml::de::DeTable`, which keeps a span for every key, and errors look their
//! field up by its path (`targets`, `db`, `listen`). Searching the text instead would find
//! the first `listen` of the file, which may belong to another table.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, SourceFile};

/// One step of a key path: a table key, or an element of an array of tables.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Item(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(key: &'a str) -> Self {
        Seg::Key(key)
    }
}

impl<'a> From<&'a String> for Seg<'a> {
    fn from(key: &'a String) -> Self {
        Seg::Key(key)
    }
}

impl From<usize> for Seg<'_> {
    fn from(index: usize) -> Self {
        Seg::Item(index)
    }
}

/// A key path: `key_path!["targets", name, "listen"]`, `key_path!["approvals", "webhooks", i, "url"]`.
macro_rules! key_path {
    ($($seg:expr),* $(,)?) => {
        &[$($crate::spans::Seg::from($seg)),*]
    };
}
pub(crate) use key_path;

/// The file and its key positions, to build located errors.
pub(crate) struct Locator<'a> {
    source: &'a SourceFile,
    document: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    /// Parses `source` for positions. The text was already deserialised successfully, so the
    /// parse succeeds; if it did not, errors would fall back to line 1.
    pub(crate) fn new(source: &'a SourceFile) -> Self {
        Locator {
            source,
            document: DeTable::parse(&source.text).ok(),
        }
    }

    /// The span of the last key of `path`. A key the file leaves out (a default) falls back to
    /// the deepest table of the path that is written, e.g. a missing `targets.db.listen` to
    /// the `[targets.db]` header; an element of an array of tables is located at its first key.
    pub(crate) fn span(&self, path: &[Seg<'_>]) -> Range<usize> {
        let Some(document) = &self.document else {
            return 0..0;
        };
        let mut table: Option<&DeTable<'_>> = Some(document.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        let mut found = 0..0;
        for seg in path {
            let value = match (seg, table, array) {
                (Seg::Key(key), Some(t), _) => match t.iter().find(|(k, _)| k.get_ref() == key) {
                    Some((k, v)) => {
                        found = k.span();
                        v
                    }
                    None => break,
                },
                (Seg::Item(i), _, Some(items)) => match items.get(*i) {
                    Some(v) => {
                        found = first_key(v).unwrap_or_else(|| v.span());
                        v
                    }
                    None => break,
                },
                _ => break,
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| &a[..]);
        }
        found
    }

    /// An error about the field at `path`.
    pub(crate) fn error(&self, path: &[Seg<'_>], message: impl Into<String>) -> ConfigError {
        self.source.error_at(self.span(path), message)
    }

    /// An error at a span the typed structs kept (`Spanned` fields).
    pub(crate) fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.source.error_at(span, message)
    }
}

/// The span of the earliest key of an array-of-tables element (its own span may be empty).
fn first_key(value: &Spanned<DeValue<'_>>) -> Option<Range<usize>> {
    value
        .get_ref()
        .as_table()?
        .keys()
        .map(Spanned::span)
        .min_by_key(|span| span.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, path: &[Seg<'_>]) -> usize {
        let source = SourceFile {
            path: "t.toml".into(),
            text: text.into(),
        };
        let span = Locator::new(&source).span(path);
        source.line_of(span.start)
    }

    #[test]
    fn keys_are_found_by_path_not_by_text() {
        let text = "[targets.db2]\nlisten = 1\n\n[targets.db]\nkind = \"x\"\nlisten = 2\n";
        assert_eq!(line(text, key_path!["targets", "db", "listen"]), 6);
        assert_eq!(line(text, key_path!["targets", "db2", "listen"]), 2);
        // A key the file leaves out: the deepest table that is written.
        assert_eq!(line(text, key_path!["targets", "db", "user"]), 4);
        assert_eq!(line(text, key_path!["gateway", "listen"]), 1);
        // Dotted keys and inline tables have spans too.
        let text = "a = 1\ntargets.db.listen = 2\n";
        assert_eq!(line(text, key_path!["targets", "db", "listen"]), 2);
    }

    #[test]
    fn array_elements_are_found_by_index() {
        let text = "[[hooks]]\nurl = \"a\"\n\n[[hooks]]\nname = \"b\"\nurl = \"b\"\n";
        assert_eq!(line(text, key_path!["hooks", 1usize, "url"]), 6);
        assert_eq!(line(text, key_path!["hooks", 1usize]), 5);
        assert_eq!(line(text, key_path!["hooks", 0usize, "url"]), 2);
        let inline = "hooks = [\n  { url = \"a\" },\n  { url = \"b\" },\n]\n";
        assert_eq!(line(inline, key_path!["hooks", 1usize, "url"]), 3);
    }
}
