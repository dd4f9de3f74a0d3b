//! Each sink's persisted cursor: how far its receiver has acknowledged the log.
//!
//! `<data_dir>/sinks/<name>.cursor.json`, replaced atomically (written beside, synced,
//! renamed) after every acknowledged batch. A cursor that lags behind the truth only makes
//! the sink send again what its receiver already has (at least once); one that ran ahead
//! would skip events, and it cannot: it is written only after the acknowledgement.
//!
//! The cursor names the log's first event, so it is never applied to another log (a data
//! directory restored from a backup, or replaced): that sink stops and says why.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SinkError;

/// What is persisted per sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The id of the log's first event, once the log has one.
    #[serde(default)]
    pub log: Option<String>,
    /// Leaves `0..next_leaf` are acknowledged (sent in full, or as hashes when filtered).
    pub next_leaf: u64,
    /// The leaf hash (hex) of the last leaf acknowledged (`next_leaf - 1`): before going on,
    /// the sink checks that the log still holds that leaf there. A log that lost its tail
    /// (a power cut in batched durability) or was restored from a backup, and then grew
    /// again, would otherwise have the sink skip the events it now holds at those indices.
    #[serde(default)]
    pub last_leaf_hash: Option<String>,
    /// The largest checkpoint size acknowledged.
    #[serde(default)]
    pub checkpoint: u64,
    /// Records the receiver refused for good (counted, reported in `<name>.rejected.jsonl`).
    #[serde(default)]
    pub rejected: u64,
    /// When the receiver last acknowledged a batch.
    #[serde(default)]
    pub delivered_at: Option<String>,
    /// The last failure, kept while it lasts (so `portcullis sinks status` can say why a
    /// sink lags while the gateway is down), cleared by the next delivery.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<String>,
}

/// Where the sinks keep their cursors and rejection reports.
pub fn sinks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sinks")
}

pub fn cursor_path(data_dir: &Path, sink: &str) -> PathBuf {
    sinks_dir(data_dir).join(format!("{sink}.cursor.json"))
}

/// The JSON lines file listing what a receiver refused for good.
pub fn rejected_path(data_dir: &Path, sink: &str) -> PathBuf {
    sinks_dir(data_dir).join(format!("{sink}.rejected.jsonl"))
}

impl Cursor {
    /// The sink's cursor; a new one (from leaf 0) when it has none yet. A file that cannot
    /// be read is an error, never a silent restart.
    pub fn load(data_dir: &Path, sink: &str) -> Result<Cursor, SinkError> {
        let path = cursor_path(data_dir, sink);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SinkError::Cursor {
                path,
                reason: format!(
                    "{e}; remove the file to send the whole log again, or run `portcullis sinks replay`"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursor::default()),
            Err(e) => Err(SinkError::Cursor {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Replaces the file atomically.
    pub fn save(&self, data_dir: &Path, sink: &str) -> Result<(), SinkError> {
        let path = cursor_path(data_dir, sink);
        let failed = |e: std::io::Error| SinkError::Cursor {
            path: path.clone(),
            reason: e.to_string(),
        };
        let dir = sinks_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let temporary = dir.join(format!(".{sink}.cursor.json.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| failed(e.into()))?;
        let mut file = std::fs::File::create(&temporary).map_err(failed)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(failed)?;
        std::fs::rename(&temporary, &path).map_err(failed)
    }
}

/// Checks a cursor against the log it is about to resume: the same log (its first event),
/// no longer than the log, and the last leaf it delivered still in place.
pub fn check(
    cursor: &Cursor,
    path: &Path,
    head: u64,
    first_event: Option<&str>,
    last_leaf: Option<&[u8; 32]>,
) -> Result<(), SinkError> {
    let stop = |reason: String| SinkError::Cursor {
        path: path.to_path_buf(),
        reason,
    };
    match (&cursor.log, first_event) {
        (Some(mine), Some(first)) if mine != first => {
            return Err(stop(format!(
                "it belongs to another audit log (first event {mine}, this log's is {first}); \
                 remove it to send this log from its start"
            )));
        }
        (Some(_), None) => {
            return Err(stop(
                "it names a log, but this audit log is empty; remove it to start again".into(),
            ));
        }
        _ => {}
    }
    if head < cursor.next_leaf {
        return Err(stop(format!(
            "it says {} events were delivered, but the log holds {head}: the log lost its tail \
             or was replaced, and the receiver holds events the log does not; remove the cursor \
             to send this log again from its start, or run `portcullis sinks replay`",
            cursor.next_leaf
        )));
    }
    if let (Some(expected), true) = (&cursor.last_leaf_hash, cursor.next_leaf > 0) {
        let found = last_leaf.map(hex::encode);
        if found.as_deref() != Some(expected.as_str()) {
            return Err(stop(format!(
                "the log no longer holds, at leaf {}, the event the receiver got there (its leaf \
                 hash differs): the log lost its tail (a power cut with durability = \"batched\"?) \
                 or was restored, then grew again; remove the cursor to send this log again from \
                 its start, or run `portcullis sinks replay`",
                cursor.next_leaf - 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cursor_loads_back_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Cursor::load(dir.path(), "a").unwrap(), Cursor::default());
        let cursor = Cursor {
            log: Some("first".into()),
            next_leaf: 42,
            checkpoint: 40,
            ..Cursor::default()
        };
        cursor.save(dir.path(), "a").unwrap();
        assert_eq!(Cursor::load(dir.path(), "a").unwrap(), cursor);
        std::fs::write(cursor_path(dir.path(), "a"), b"{\"next_leaf\":").unwrap();
        let e = Cursor::load(dir.path(), "a").unwrap_err().to_string();
        assert!(
            e.contains("a.cursor.json") && e.contains("remove the file"),
            "{e}"
        );
    }

    #[test]
    fn a_cursor_of_another_log_or_a_log_that_changed_under_it_is_refused() {
        let path = Path::new("x");
        let cursor = Cursor {
            log: Some("one".into()),
            next_leaf: 3,
            last_leaf_hash: Some(hex::encode([7; 32])),
            ..Cursor::default()
        };
        check(&cursor, path, 3, Some("one"), Some(&[7; 32])).unwrap();
        check(&cursor, path, 9, Some("one"), Some(&[7; 32])).unwrap();
        let e = check(&cursor, path, 3, Some("two"), Some(&[7; 32])).unwrap_err();
        assert!(e.to_string().contains("another audit log"), "{e}");
        let e = check(&cursor, path, 2, Some("one"), None).unwrap_err();
        assert!(e.to_string().contains("the log holds 2"), "{e}");
        // The log lost leaf 2 and grew again: a different event sits there now.
        let e = check(&cursor, path, 5, Some("one"), Some(&[8; 32])).unwrap_err();
        assert!(e.to_string().contains("at leaf 2"), "{e}");
        // A cursor from before the anchor existed is not refused for lacking it.
        let old = Cursor {
            last_leaf_hash: None,
            ..cursor
        };
        check(&old, path, 5, Some("one"), Some(&[8; 32])).unwrap();
    }
}
