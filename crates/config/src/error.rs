//! The configuration's error type, and the file it locates errors in.

use std::path::PathBuf;

/// A configuration problem, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The file's path and text, kept to turn byte spans into line numbers in later errors
/// (policy compilation reports `when` syntax errors against the line they are on).
#[derive(Clone, Default)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// The path only: the text is the whole file, which would drown every debug print (and the
/// snapshots of the resolved configuration) of the configuration that holds it.
impl std::fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SourceFile {
    /// The 1-based line that a byte offset falls on.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error located at a span of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}
