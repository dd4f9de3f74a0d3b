//! `kind = "file"`: native JSON lines appended to a file, for a log shipper (Vector, Fluent
//! Bit, Filebeat) to pick up, rotated by size.
//!
//! Rotation renames `PATH` to `PATH.1` (and `PATH.1` to `PATH.2`, ..., dropping the file
//! past `keep`), the way shippers that follow renames expect. A batch is acknowledged once
//! its lines are synced to disk; a batch is never split across two files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use portcullis_config::FileSink;

use crate::{Batch, Delivered, SendError, Transport};

pub struct FileTransport {
    settings: FileSink,
    /// Held by the blocking append: an append the engine's timeout gave up on still runs to
    /// its end before the retry starts, so two never interleave or race a rotation.
    writing: std::sync::Arc<std::sync::Mutex<()>>,
}

impl FileTransport {
    pub fn new(settings: FileSink) -> FileTransport {
        FileTransport {
            settings,
            writing: Default::default(),
        }
    }
}

impl Transport for FileTransport {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>> {
        let lines = batch.json_lines();
        let settings = self.settings.clone();
        let writing = self.writing.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let _one_at_a_time = writing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                append(&settings, lines.as_bytes())
            })
            .await
            .map_err(|e| SendError::new(format!("the file writer stopped: {e}")))?
            .map(|()| Delivered::default())
        }
        .boxed()
    }

    fn destination(&self) -> String {
        self.settings.path.display().to_string()
    }
}

/// Appends `bytes` to the file, rotating first if they would take it past `max_bytes`.
fn append(settings: &FileSink, bytes: &[u8]) -> Result<(), SendError> {
    let path = &settings.path;
    let failed = |what: &str, e: std::io::Error| {
        SendError::new(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed("create the directory of", e))?;
    }
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(failed("read", e)),
    };
    if size > 0 && size + bytes.len() as u64 > settings.max_bytes {
        rotate(path, settings.keep).map_err(|e| failed("rotate", e))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| failed("open", e))?;
    let start = file.metadata().map_err(|e| failed("read", e))?.len();
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_data()) {
        // A write that stopped part-way (a full disk) would leave half a line for the
        // retry to append to, gluing two records into one unreadable line: cut it off.
        let _ = file.set_len(start);
        return Err(failed("write", e));
    }
    Ok(())
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    match std::fs::remove_file(rotated(path, keep)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/audit.jsonl");
        let settings = FileSink {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        };
        for i in 0..5 {
            append(
                &settings,
                format!("{{\"n\":{i}}}{}\n", " ".repeat(50)).as_bytes(),
            )
            .unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert!(read(&path).starts_with("{\"n\":4}"));
        assert!(read(&rotated(&path, 1)).starts_with("{\"n\":3}"));
        assert!(read(&rotated(&path, 2)).starts_with("{\"n\":2}"));
        assert!(!rotated(&path, 3).exists());
        // A batch larger than max_bytes still goes in whole, into a file of its own.
        append(&settings, &[b'x'; 300]).unwrap();
        assert_eq!(read(&path).len(), 300);
    }
}
