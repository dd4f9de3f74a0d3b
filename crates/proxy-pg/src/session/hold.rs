//! A statement held for approval: what approvers are shown, and the client's side of the
//! wait. The guard runs the wait itself; the session tells the client with a NOTICE and ends
//! the wait when the client cancels (a cancel request with the session's key), hangs up, or
//! the gateway stops.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use portcullis_guard::{Approval, Exchange, HoldAsk, HoldChannel, Interruption, Refusal};
use portcullis_model::{ApprovalRequirement, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::{Admitted, BACKPRESSURE, Session, StatementRef, describe};
use crate::tls::BoxStream;
use crate::wire;

impl Session {
    /// Waits for approvers under `exchange`; the client is told at once (a notice) what it
    /// waits for. `parameters`: a prepared statement's values, as its Bind gave them.
    pub(super) async fn hold(
        &mut self,
        exchange: &mut Exchange,
        classified: StatementRef,
        verdict: Verdict,
        requirement: Arc<ApprovalRequirement>,
        text: &str,
        parameters: &[String],
    ) -> Result<Arc<Admitted>, Refusal> {
        let statement = &classified.statement;
        let what = describe(statement);
        // Approvers see the statement as written (the guard masks what the `default`
        // profile's detectors find in it): the values are what they judge.
        let shown = if parameters.is_empty() {
            serde_json::json!({ "sql": classified.text })
        } else {
            serde_json::json!({ "sql": classified.text, "parameters": parameters })
        };
        let ask = HoldAsk {
            what: what.clone(),
            action: statement.kind.clone(),
            resource: (!statement.tables.is_empty()).then(|| statement.tables.join(", ")),
            shown: Some(shown),
            digest: Some(
                self.proxy
                    .guard
                    .digest(format!("{}\0{}", classified.text, parameters.join("\0")).as_bytes()),
            ),
            reason: reason_comment(text),
        };
        let mut client = HeldClient {
            reader: &mut self.client_r,
            writer: &mut self.client_w,
            client_in: &mut self.client_in,
            to_client: &mut self.to_client,
            cancels: self.cancel.cancels.subscribe(),
            stopping: self.proxy.stopping.subscribe(),
            what: &what,
            rule: verdict.rule_label(),
        };
        exchange
            .hold(&verdict, requirement, ask, &mut client)
            .await?;
        self.schema_changed |= classified.statement.performs("ddl");
        Ok(Arc::new(Admitted {
            classified,
            verdict,
            mask: None,
            columns: Default::default(),
            discovered: Vec::new(),
            hold: None,
        }))
    }
}

/// The client of a held statement: told with a NOTICE, watched for a cancel request, a
/// hang-up or the gateway stopping.
struct HeldClient<'a> {
    reader: &'a mut ReadHalf<BoxStream>,
    writer: &'a mut WriteHalf<BoxStream>,
    /// Messages the client pipelines while it waits stay here for after the decision.
    client_in: &'a mut BytesMut,
    to_client: &'a mut BytesMut,
    /// Counts the session's cancel requests; subscribed when the wait starts, so only a
    /// cancel that comes during it counts.
    cancels: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    what: &'a str,
    rule: &'a str,
}

impl HeldClient<'_> {
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        self.writer.write_all(self.to_client).await?;
        self.to_client.clear();
        self.writer.flush().await
    }
}

impl HoldChannel for HeldClient<'_> {
    async fn tell(&mut self, approval: &Approval, _round: u64) -> Result<(), Interruption> {
        let id = &approval.id;
        wire::notice(
            self.to_client,
            b'N',
            "NOTICE",
            "01000",
            &format!(
                "portcullis: {} is held for approval {id} under rule \"{}\" until {}; an approver decides with: portcullis approvals approve {id}",
                self.what, self.rule, approval.expires_at
            ),
            None,
        );
        // The notice must reach the client now, while the statement waits.
        self.flush().await.map_err(|_| Interruption::CallerGone)
    }

    /// PostgreSQL has no progress message: one notice says it all.
    fn every(&self) -> Option<Duration> {
        None
    }

    async fn interrupted(&mut self) -> Interruption {
        loop {
            tokio::select! {
                _ = self.cancels.changed() => return Interruption::CallerCancelled,
                _ = self.stopping.wait_for(|s| *s) => return Interruption::Stopping,
                r = self.reader.read_buf(self.client_in), if self.client_in.len() < BACKPRESSURE => match r {
                    Ok(0) | Err(_) => return Interruption::CallerGone,
                    Ok(_) => {}
                },
            }
        }
    }
}

/// A reason given in a leading comment: `/* reason: ... */` or `-- reason: ...`.
fn reason_comment(text: &str) -> Option<String> {
    let t = text.trim_start();
    let body = if let Some(rest) = t.strip_prefix("/*") {
        rest.split_once("*/")?.0
    } else if let Some(rest) = t.strip_prefix("--") {
        rest.lines().next()?
    } else {
        return None;
    };
    let reason = body.trim().strip_prefix("reason:")?.trim();
    (!reason.is_empty()).then(|| reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held client over an in-memory stream: the test's end of it, and the watches.
    struct Wait {
        reader: ReadHalf<BoxStream>,
        writer: WriteHalf<BoxStream>,
        client_in: BytesMut,
        to_client: BytesMut,
        cancels: watch::Sender<u64>,
        stopping: watch::Sender<bool>,
    }

    fn wait() -> (Wait, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let stream: BoxStream = Box::new(ours);
        let (reader, writer) = tokio::io::split(stream);
        let wait = Wait {
            reader,
            writer,
            client_in: BytesMut::new(),
            to_client: BytesMut::new(),
            cancels: watch::channel(0).0,
            stopping: watch::channel(false).0,
        };
        (wait, theirs)
    }

    impl Wait {
        fn client(&mut self) -> HeldClient<'_> {
            HeldClient {
                reader: &mut self.reader,
                writer: &mut self.writer,
                client_in: &mut self.client_in,
                to_client: &mut self.to_client,
                cancels: self.cancels.subscribe(),
                stopping: self.stopping.subscribe(),
                what: "UPDATE on t",
                rule: "r",
            }
        }
    }

    #[tokio::test]
    async fn a_cancel_or_the_gateway_stopping_ends_the_wait() {
        let (mut w, _peer) = wait();
        let cancels = w.cancels.clone();
        let mut client = w.client();
        cancels.send_modify(|n| *n += 1);
        assert_eq!(client.interrupted().await, Interruption::CallerCancelled);

        let (mut w, _peer) = wait();
        let stopping = w.stopping.clone();
        let mut client = w.client();
        stopping.send_replace(true);
        assert_eq!(client.interrupted().await, Interruption::Stopping);
    }

    #[tokio::test]
    async fn what_the_client_pipelines_while_held_is_kept_and_its_hang_up_ends_the_wait() {
        let (mut w, mut peer) = wait();
        peer.write_all(b"Q\0\0\0\x05").await.unwrap();
        drop(peer);
        assert_eq!(w.client().interrupted().await, Interruption::CallerGone);
        assert_eq!(&w.client_in[..], b"Q\0\0\0\x05");
    }

    #[test]
    pub(super) fn reasons_come_from_a_leading_comment() {
        assert_eq!(
            reason_comment("/* reason: ticket 42 */ UPDATE t SET a = 1 WHERE id = 2").as_deref(),
            Some("ticket 42")
        );
        assert_eq!(
            reason_comment("-- reason: fix data\nDELETE FROM t WHERE id = 1").as_deref(),
            Some("fix data")
        );
        assert_eq!(reason_comment("UPDATE t SET a = 1 /* reason: x */"), None);
        assert_eq!(reason_comment("/* reason: */ SELECT 1"), None);
    }
}
