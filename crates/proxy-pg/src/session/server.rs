//! The server's side: each answer matched to what it answers, a refusal's stand-in error
//! replaced by the refusal, errors and notices about masked statements masked, and the
//! batch's events recorded before its ReadyForQuery.

use std::collections::VecDeque;

use portcullis_mask::Report;
use portcullis_model::Outcome;

use super::{Flow, Owed, QueryRun, Session, StatementRun, run_fail};
use crate::wire::{self, Frame};

impl Session {
    pub(super) async fn on_server_message(&mut self, frame: Frame) -> Flow {
        match frame.tag {
            // Asynchronous: any time.
            b'N' | b'A' => {
                let frame = self.asynchronous(frame);
                if frame.tag == b'N'
                    && let Some(run) = self.current_run()
                {
                    run.record_notice("notice", &frame);
                }
                frame.write_to(&mut self.to_client);
                return Flow::Continue;
            }
            b'S' => {
                let mut r = wire::Reader::of(&frame, "ParameterStatus");
                if let (Ok(k), Ok(v)) = (r.cstr(""), r.cstr(""))
                    && k == "standard_conforming_strings"
                    && v != "on"
                {
                    // The gateway's parser reads strings as the server does only while
                    // this is on; with it off a backslash could hide a statement.
                    wire::fatal(
                        &mut self.to_client,
                        wire::FEATURE_NOT_SUPPORTED,
                        "portcullis: standard_conforming_strings must stay on through the gateway; the session is closed",
                        None,
                    );
                    self.ended = Some("standard_conforming_strings was turned off".into());
                    return Flow::Close;
                }
                frame.write_to(&mut self.to_client);
                return Flow::Continue;
            }
            _ => {}
        }
        if self.discarding {
            if frame.tag == b'Z' {
                self.discarding = false;
                while let Some(owed) = self.owed.pop_front() {
                    match owed {
                        // A simple query's later statements ran; the client was told the
                        // message failed at the withheld one.
                        Owed::Query(mut run) => {
                            while let Some(s) = run.statements.pop_front() {
                                self.finish_statement(s, Outcome::Success, "ran, but its answer was withheld after an earlier statement of the message had its rows withheld");
                            }
                            break;
                        }
                        // Likewise the batch's later Executes: each still ends in its event.
                        Owed::Execute(run) => self.finish_statement(
                            run,
                            Outcome::Success,
                            "ran, but its answer was withheld after an earlier message of the batch had its rows withheld",
                        ),
                        Owed::Sync => break,
                        _ => {}
                    }
                }
                self.batch_over(frame.body.first().copied().unwrap_or(b'I'));
                self.release(frame).await;
            }
            return Flow::Continue;
        }
        match frame.tag {
            b'Z' => {
                // Whatever is still owed before the ReadyForQuery was skipped by the server
                // after an error.
                while let Some(owed) = self.owed.pop_front() {
                    match owed {
                        Owed::Sync | Owed::Refused { simple: true, .. } => break,
                        Owed::Query(run) => {
                            self.finish_query(run);
                            break;
                        }
                        Owed::Execute(run) => self.finish_statement(
                            run,
                            Outcome::Failed,
                            "not run: an earlier message of the batch failed",
                        ),
                        _ => {}
                    }
                }
                self.batch_over(frame.body.first().copied().unwrap_or(b'I'));
                self.release(frame).await;
            }
            b'E' => self.upstream_error(frame),
            b'1' | b'2' | b'3' => self.confirmed(frame),
            b't' => {
                // ParameterDescription: part of a statement Describe; the RowDescription or
                // NoData that follows completes it.
                if !matches!(
                    self.owed.front(),
                    Some(Owed::Describe { swallow: true, .. })
                ) {
                    frame.write_to(&mut self.to_client);
                }
            }
            b'T' | b'n' => self.description(frame),
            b'D' => self.data_row(frame),
            b'C' | b'I' | b's' => self.statement_done(frame),
            b'G' if matches!(self.owed.front(), Some(Owed::Execute(_))) => {
                // COPY FROM STDIN in the extended protocol: the Syncs the client sent after
                // the Execute reach a server that ignores them until the copy ends.
                self.copy_in = true;
                let mut kept = VecDeque::with_capacity(self.owed.len());
                for (i, owed) in std::mem::take(&mut self.owed).into_iter().enumerate() {
                    if i > 0 && matches!(owed, Owed::Sync) {
                        continue;
                    }
                    kept.push_back(owed);
                }
                self.owed = kept;
                frame.write_to(&mut self.to_client);
            }
            b'G' | b'H' | b'W' | b'd' | b'c' => {
                // COPY in progress: the statement was admitted (and is unmasked).
                if frame.tag == b'd'
                    && let Some(run) = self.current_run()
                {
                    run.record_copy_data(&frame);
                }
                frame.write_to(&mut self.to_client);
            }
            _ => frame.write_to(&mut self.to_client),
        }
        Flow::Continue
    }

    /// A NoticeResponse or NotificationResponse, masked like rows (issue 13 item 10): a
    /// function the statement calls can `RAISE NOTICE` or `pg_notify` any value it reads.
    /// The profile is the running statement's; for a notification between statements, the
    /// latest masked statement's. The detectors mask what they find; a profile that names columns masks
    /// the texts whole, since the gateway cannot tell which part of a text came from a named
    /// column. Under no mask the message passes as it is.
    pub(super) fn asynchronous(&mut self, frame: Frame) -> Frame {
        let (profile, report) = match self.current_run() {
            Some(run) if run.admitted.mask.is_some() => {
                (run.admitted.mask.clone(), Some(&mut run.report))
            }
            // A notice comes while a statement runs; between statements only a notification
            // (from another session's NOTIFY) is expected.
            _ if frame.tag == b'A' => (self.last_mask.clone(), None),
            _ => (None, None),
        };
        let Some(profile) = profile else {
            return frame;
        };
        let mut scratch = Report::default();
        let report = report.unwrap_or(&mut scratch);
        let mut mask = |text: &str, path: &str| {
            if text.is_empty() {
                None
            } else if profile.names_columns() {
                Some(profile.mask_whole(text, path, report))
            } else {
                profile.mask_text(text, path, report)
            }
        };
        let rewritten = match frame.tag {
            b'N' => wire::rewrite_notice(&frame, |t| mask(t, "notice")),
            _ => wire::rewrite_notification(&frame, |t| mask(t, "notification")),
        };
        rewritten.unwrap_or(frame)
    }

    /// ParseComplete, BindComplete, CloseComplete: what the message made is now so.
    pub(super) fn confirmed(&mut self, frame: Frame) {
        let expected = matches!(
            (frame.tag, self.owed.front()),
            (b'1', Some(Owed::ParseComplete { .. }))
                | (b'2', Some(Owed::BindComplete { .. }))
                | (b'3', Some(Owed::CloseComplete { .. }))
        );
        if !expected {
            self.lost_track("a completion the gateway did not expect");
            return;
        }
        match self.owed.pop_front() {
            Some(Owed::ParseComplete { name, admitted }) => {
                self.confirmed_statements.insert(name, admitted);
            }
            Some(Owed::BindComplete { portal, bound }) => {
                self.confirmed_portals.insert(portal, bound);
            }
            Some(Owed::CloseComplete { statement, name }) => {
                if statement {
                    self.confirmed_statements.remove(&name);
                } else {
                    self.confirmed_portals.remove(&name);
                }
            }
            _ => {}
        }
        frame.write_to(&mut self.to_client);
    }

    /// The server's answers no longer match what the gateway expects: nothing more is
    /// forwarded (an answer matched to the wrong statement could escape its mask).
    pub(super) fn lost_track(&mut self, what: &str) {
        wire::fatal(
            &mut self.to_client,
            wire::PROTOCOL_VIOLATION,
            &format!("portcullis: the database sent {what}; the session is closed"),
            None,
        );
        self.ended = Some(format!("lost track of the server's answers: {what}"));
    }

    /// Whether an earlier batch (up to a Sync, or a simple query) still waits for its
    pub(super) fn description(&mut self, frame: Frame) {
        match self.owed.front() {
            Some(Owed::Describe { .. }) => {
                let Some(Owed::Describe { swallow, learns }) = self.owed.pop_front() else {
                    unreachable!()
                };
                if swallow {
                    // The gateway's own Describe, sent just before an Execute: its answer
                    // sets up the masking of that Execute's rows.
                    let columns = if frame.tag == b'T' {
                        wire::parse_row_description(&frame).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    if let Some((frame, mut run)) = self.deferred.take() {
                        run.set_plan(&columns);
                        let _ = run.admitted.columns.set(columns);
                        self.execute(frame, run);
                    }
                    return;
                }
                if let Some(admitted) = learns {
                    let columns = match frame.tag {
                        b'T' => wire::parse_row_description(&frame).unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    let _ = admitted.columns.set(columns);
                }
                frame.write_to(&mut self.to_client);
            }
            Some(Owed::Query(_)) if frame.tag == b'T' => {
                let Some(Owed::Query(run)) = self.owed.front_mut() else {
                    unreachable!()
                };
                if let Some(current) = run.statements.front_mut() {
                    let columns = wire::parse_row_description(&frame).unwrap_or_default();
                    current.set_plan(&columns);
                    current.record_columns(&columns);
                }
                frame.write_to(&mut self.to_client);
            }
            _ => self.lost_track("a row description no statement asked for"),
        }
    }

    pub(super) fn current_run(&mut self) -> Option<&mut StatementRun> {
        match self.owed.front_mut()? {
            Owed::Query(run) => run.statements.front_mut(),
            Owed::Execute(run) => Some(run),
            _ => None,
        }
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended: the current statement is done.
    pub(super) fn statement_done(&mut self, frame: Frame) {
        let rows = if frame.tag == b'C' {
            wire::command_rows(&frame)
        } else {
            None
        };
        match self.owed.front_mut() {
            Some(Owed::Query(run)) => {
                let Some(mut current) = run.statements.pop_front() else {
                    frame.write_to(&mut self.to_client);
                    return;
                };
                current.rows_sent = rows.unwrap_or(current.rows_sent);
                if let Some(why) = current.withheld.take() {
                    // The rest of the simple query still runs; the client gets this
                    // statement's refusal in place of its completion.
                    let message = format!("portcullis: rows withheld: {why}");
                    current.record_error(wire::INSUFFICIENT_PRIVILEGE, &message);
                    wire::error(
                        &mut self.to_client,
                        wire::INSUFFICIENT_PRIVILEGE,
                        &message,
                        None,
                    );
                    self.finish_statement(current, Outcome::Denied, &why);
                    run_fail(&mut self.owed);
                    self.discarding = true;
                    return;
                }
                current.record_complete(&frame, frame.tag == b's');
                frame.write_to(&mut self.to_client);
                self.finish_statement(current, Outcome::Success, "");
            }
            Some(Owed::Execute(_)) => {
                let Some(Owed::Execute(mut run)) = self.owed.pop_front() else {
                    unreachable!()
                };
                run.rows_sent = rows.unwrap_or(run.rows_sent);
                if let Some(why) = run.withheld.take() {
                    let message = format!("portcullis: rows withheld: {why}");
                    run.record_error(wire::INSUFFICIENT_PRIVILEGE, &message);
                    wire::error(
                        &mut self.to_client,
                        wire::INSUFFICIENT_PRIVILEGE,
                        &message,
                        None,
                    );
                    self.finish_statement(run, Outcome::Denied, &why);
                    // The client now expects the server to skip to Sync: drop the server's
                    // answers to the rest of the batch.
                    self.discarding = true;
                    return;
                }
                run.record_complete(&frame, frame.tag == b's');
                frame.write_to(&mut self.to_client);
                self.finish_statement(run, Outcome::Success, "");
            }
            _ => frame.write_to(&mut self.to_client),
        }
    }

    pub(super) fn upstream_error(&mut self, frame: Frame) {
        // The server's error about a masked statement can quote the data: a failed cast
        // quotes the value ("..."), a unique violation's detail the key (`=(...)`). Under a
        // mask those quoted values are withheld, and the detectors see the rest.
        let frame = match self.current_run() {
            Some(run) => match run.admitted.mask.clone() {
                Some(profile) => {
                    let report = &mut run.report;
                    wire::rewrite_notice(&frame, |text| {
                        let withheld = withhold_quoted_values(text);
                        let scanned =
                            profile.mask_text(withheld.as_deref().unwrap_or(text), "error", report);
                        scanned.or(withheld)
                    })
                    .unwrap_or(frame)
                }
                None => frame,
            },
            None => frame,
        };
        match self.owed.pop_front() {
            Some(Owed::Refused { refusal, simple }) => {
                wire::error(
                    &mut self.to_client,
                    refusal.code,
                    &refusal.message,
                    refusal.hint.as_deref(),
                );
                if simple {
                    // Its ReadyForQuery follows.
                    self.owed.push_front(Owed::Sync);
                } else {
                    self.skip_to_sync("not run: an earlier message of the batch was refused");
                }
            }
            Some(Owed::Query(mut run)) => {
                if let Some(mut current) = run.statements.pop_front() {
                    current.record_notice("error", &frame);
                    let n = wire::parse_notice(&frame);
                    self.finish_statement(
                        current,
                        Outcome::UpstreamError,
                        &format!("{}: {}", n.code, n.message),
                    );
                }
                run.failed = true;
                frame.write_to(&mut self.to_client);
                self.owed.push_front(Owed::Query(run));
            }
            Some(Owed::Execute(mut run)) => {
                run.record_notice("error", &frame);
                let n = wire::parse_notice(&frame);
                frame.write_to(&mut self.to_client);
                self.finish_statement(
                    run,
                    Outcome::UpstreamError,
                    &format!("{}: {}", n.code, n.message),
                );
                self.skip_to_sync("not run: an earlier message of the batch failed");
            }
            Some(Owed::Sync) => {
                // An error answering Sync itself (a failed COMMIT at the end of the implicit
                // transaction): its ReadyForQuery still follows.
                frame.write_to(&mut self.to_client);
                self.owed.push_front(Owed::Sync);
            }
            Some(failed) => {
                // A Parse or Bind of the unnamed statement or portal that fails still drops
                // the old one on the server.
                match failed {
                    Owed::ParseComplete { name, .. } if name.is_empty() => {
                        self.confirmed_statements.remove("");
                    }
                    Owed::BindComplete { portal, .. } if portal.is_empty() => {
                        self.confirmed_portals.remove("");
                    }
                    _ => {}
                }
                frame.write_to(&mut self.to_client);
                self.skip_to_sync("not run: an earlier message of the batch failed");
            }
            None => {
                // FATAL errors (shutdown, idle timeout) come unasked.
                frame.write_to(&mut self.to_client);
            }
        }
    }

    /// After an error in the extended protocol the server ignores every message until Sync
    /// (a simple Query and a function call among them): so does the queue.
    pub(super) fn skip_to_sync(&mut self, why: &str) {
        // An Execute held back for its portal's description would be skipped too.
        if let Some((_, run)) = self.deferred.take() {
            self.finish_statement(run, Outcome::Failed, why);
        }
        while let Some(owed) = self.owed.front() {
            if matches!(owed, Owed::Sync) {
                break;
            }
            match self.owed.pop_front() {
                Some(Owed::Execute(run)) => self.finish_statement(run, Outcome::Failed, why),
                Some(Owed::Query(run)) => self.finish_query(run),
                _ => {}
            }
        }
        // The batch's Sync is not here yet: the client's messages until it are skipped.
        self.skipping = self.owed.is_empty();
    }

    pub(super) fn finish_query(&mut self, mut run: QueryRun) {
        while let Some(s) = run.statements.pop_front() {
            self.finish_statement(
                s,
                Outcome::Failed,
                "not run: an earlier statement of the message failed",
            );
        }
    }
}

/// An error text with the values it quotes (`"..."`, `=(...)`) replaced by `[WITHHELD]`;
/// `None` when it quotes none.
pub(super) fn withhold_quoted_values(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    loop {
        let quote = rest.find('"');
        let paren = rest.find("=(");
        let (at, open, close) = match (quote, paren) {
            (Some(q), Some(p)) if p < q => (p, "=(", ')'),
            (Some(q), _) => (q, "\"", '"'),
            (None, Some(p)) => (p, "=(", ')'),
            (None, None) => break,
        };
        let body_start = at + open.len();
        let Some(len) = rest[body_start..].find(close) else {
            break;
        };
        out.push_str(&rest[..body_start]);
        out.push_str("[WITHHELD]");
        out.push(close);
        rest = &rest[body_start + len + 1..];
        changed = true;
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn quoted_values_in_errors_are_withheld() {
        assert_eq!(
            withhold_quoted_values("invalid input syntax for type integer: \"ACCT-1\"").as_deref(),
            Some("invalid input syntax for type integer: \"[WITHHELD]\"")
        );
        assert_eq!(
            withhold_quoted_values("Key (email)=(a@b.c) already exists.").as_deref(),
            Some("Key (email)=([WITHHELD]) already exists.")
        );
        assert_eq!(withhold_quoted_values("division by zero"), None);
    }
}
