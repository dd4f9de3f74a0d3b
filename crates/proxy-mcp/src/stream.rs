//! Server-sent-event streams that survive a dropped connection.
//!
//! Session-based MCP clients may lose an SSE stream mid-request and resume it with GET and
//! `Last-Event-ID`. Every stream of a session is therefore a bounded buffer that the
//! request's pump writes into and any number of HTTP bodies read from by cursor; a resumed
//! reader starts after the last event id it saw.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Events kept per stream for resumption; older ones are dropped (a client that falls this
/// far behind must re-issue its request).
const KEEP: usize = 512;

pub struct StreamBuf {
    pub id: u64,
    inner: Mutex<Inner>,
    notify: Notify,
}

struct Inner {
    events: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    done: bool,
}

impl StreamBuf {
    pub fn new(id: u64) -> Arc<StreamBuf> {
        Arc::new(StreamBuf {
            id,
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 0,
                done: false,
            }),
            notify: Notify::new(),
        })
    }

    pub fn push(&self, data: impl Into<Arc<str>>) {
        {
            let mut inner = self.inner.lock().expect("lock");
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.events.push_back((seq, data.into()));
            if inner.events.len() > KEEP {
                inner.events.pop_front();
            }
        }
        self.notify.notify_waiters();
    }

    pub fn finish(&self) {
        self.inner.lock().expect("lock").done = true;
        self.notify.notify_waiters();
    }

    pub fn is_done(&self) -> bool {
        self.inner.lock().expect("lock").done
    }

    /// The cursor of a reader that wants only what comes from now on.
    pub fn end_cursor(&self) -> u64 {
        self.inner.lock().expect("lock").next_seq
    }

    /// The next event at or after `cursor`, waiting for it; `None` once the stream is done
    /// and fully read.
    pub async fn next(&self, cursor: &mut u64) -> Option<(u64, Arc<str>)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.inner.lock().expect("lock");
                if let Some((seq, data)) = inner.events.iter().find(|(seq, _)| *seq >= *cursor) {
                    *cursor = seq + 1;
                    return Some((*seq, data.clone()));
                }
                if inner.done {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// One SSE event as bytes. Multi-line data is split over `data:` lines as SSE requires.
pub fn sse_event(id: Option<&str>, data: &str) -> bytes::Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    bytes::Bytes::from(out)
}

/// Parses a `Last-Event-ID` of the form `<stream>-<seq>`.
pub fn parse_event_id(text: &str) -> Option<(u64, u64)> {
    let (stream, seq) = text.split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_resume_by_cursor() {
        let buf = StreamBuf::new(3);
        buf.push("a");
        buf.push("b");
        let mut first = 0;
        assert_eq!(buf.next(&mut first).await.unwrap().1.as_ref(), "a");
        // a resumed reader that saw event 0 continues at 1
        let mut resumed = 1;
        assert_eq!(buf.next(&mut resumed).await.unwrap().1.as_ref(), "b");
        let waiter = {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut c = 2;
                buf.next(&mut c).await.map(|(_, d)| d.to_string())
            })
        };
        buf.push("c");
        assert_eq!(waiter.await.unwrap().as_deref(), Some("c"));
        buf.finish();
        let mut end = 3;
        assert!(buf.next(&mut end).await.is_none());
    }

    #[test]
    fn event_format() {
        assert_eq!(
            &sse_event(Some("1-0"), "{\n}")[..],
            b"id: 1-0\nevent: message\ndata: {\ndata: }\n\n"
        );
        assert_eq!(parse_event_id("12-7"), Some((12, 7)));
        assert_eq!(parse_event_id("x"), None);
    }
}
