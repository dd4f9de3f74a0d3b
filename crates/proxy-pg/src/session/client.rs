//! The client's side: each message read, its statements decided, and what the server must
//! answer queued; a refused message is replaced by one the server rejects in its parser.

use std::collections::VecDeque;
use std::sync::Arc;

use portcullis_guard::{Exchange, Refusal, RefusalKind};
use portcullis_model::{Outcome, SqlStatement};

use super::{
    Admitted, Bound, Flow, Owed, POISON, POISON_NAME, QueryRun, Session, StatementRef,
    StatementRun, recording,
};
use crate::classify::Classified;
use crate::refusal::{ErrorReply, render};
use crate::wire::{self, Column, Frame};

impl Session {
    pub(super) async fn on_client_message(&mut self, frame: Frame) -> Flow {
        if self.skipping && !matches!(frame.tag, b'S' | b'X' | b'd' | b'c' | b'f' | b'H') {
            return Flow::Continue;
        }
        match frame.tag {
            b'Q' => {
                let text = match wire::parse_query(&frame) {
                    Ok(t) => t,
                    Err(e) => return self.violation(e),
                };
                self.simple_query(frame, &text).await
            }
            b'P' => {
                let parse = match wire::parse_parse(&frame) {
                    Ok(p) => p,
                    Err(e) => return self.violation(e),
                };
                self.parse(frame, parse).await
            }
            b'B' => {
                let bind = match wire::parse_bind(&frame) {
                    Ok(b) => b,
                    Err(e) => return self.violation(e),
                };
                match self.statements.get(&bind.statement) {
                    Some(admitted) => {
                        let parameters: Arc<[String]> = if admitted.hold.is_some() {
                            bind.shown_parameters().into()
                        } else {
                            Arc::from([])
                        };
                        // The values as the recording keeps them (masked when recorded).
                        let recorded_parameters = self
                            .proxy
                            .guard
                            .records()
                            .then(|| Arc::new(recording::parameters(&bind)));
                        let bound = Bound {
                            admitted: admitted.clone(),
                            formats: bind.result_formats,
                            parameters,
                            recorded_parameters,
                        };
                        self.portals.insert(bind.portal.clone(), bound.clone());
                        frame.write_to(&mut self.to_upstream);
                        self.owed.push_back(Owed::BindComplete {
                            portal: bind.portal,
                            bound,
                        });
                    }
                    None => {
                        self.portals.remove(&bind.portal);
                        self.refuse_extended(ErrorReply::protocol(
                            "26000",
                            format_args!(
                                "prepared statement \"{}\" does not exist (or the gateway refused it)",
                                bind.statement
                            ),
                        ))
                    }
                }
                Flow::Continue
            }
            b'E' => {
                let portal = match wire::parse_execute(&frame) {
                    Ok(p) => p,
                    Err(e) => return self.violation(e),
                };
                let Some(bound) = self.portals.get(&portal).cloned() else {
                    self.refuse_extended(ErrorReply::protocol(
                        "34000",
                        format_args!("portal \"{portal}\" does not exist"),
                    ));
                    return Flow::Continue;
                };
                let (admitted, exchange) = match &bound.admitted.hold {
                    None => {
                        let exchange = self.run_exchange(&bound, &portal);
                        (bound.admitted.clone(), exchange)
                    }
                    // Each execution is its own request, with its own values.
                    Some(_) => match self.hold_execution(&bound, &portal).await {
                        Ok((admitted, exchange)) => (admitted, Some(exchange)),
                        Err(refusal) => {
                            if self.ended.is_some() {
                                return Flow::Close;
                            }
                            self.refuse_extended(render(&refusal));
                            return Flow::Continue;
                        }
                    },
                };
                let formats = bound.formats;
                let mut run = StatementRun::new(
                    admitted.clone(),
                    exchange,
                    self.proxy.record_results,
                    Some(&formats),
                );
                match (&admitted.mask, admitted.columns.get()) {
                    (None, _) => {}
                    (Some(_), Some(columns)) => {
                        let columns: Vec<Column> = columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| Column {
                                format: wire::format_of(&formats, i),
                                ..c.clone()
                            })
                            .collect();
                        run.set_plan(&columns);
                    }
                    (Some(_), None) => {
                        // The first Execute of a masked statement waits for the portal's
                        // description: whether its rows can be masked at all is known before
                        // it runs, not after.
                        wire::describe_portal(&mut self.to_upstream, &portal);
                        wire::flush(&mut self.to_upstream);
                        self.owed.push_back(Owed::Describe {
                            swallow: true,
                            learns: None,
                        });
                        self.deferred = Some((frame, run));
                        return Flow::Continue;
                    }
                }
                self.execute(frame, run);
                Flow::Continue
            }
            b'D' => {
                let (kind, name) = match wire::parse_target(&frame, "Describe") {
                    Ok(t) => t,
                    Err(e) => return self.violation(e),
                };
                // A recorded unmasked statement learns its columns from the client's own
                // Describe, for the record of its Executes (a masked one learns them from
                // the gateway's Describe, as its masking always has).
                let learns = if self.proxy.guard.records() {
                    match kind {
                        b'S' => self.statements.get(&name).cloned(),
                        _ => self.portals.get(&name).map(|b| b.admitted.clone()),
                    }
                    .filter(|admitted| admitted.mask.is_none())
                } else {
                    None
                };
                frame.write_to(&mut self.to_upstream);
                self.owed.push_back(Owed::Describe {
                    swallow: false,
                    learns,
                });
                Flow::Continue
            }
            b'C' => {
                let (kind, name) = match wire::parse_target(&frame, "Close") {
                    Ok(t) => t,
                    Err(e) => return self.violation(e),
                };
                if kind == b'S' {
                    self.statements.remove(&name);
                } else {
                    self.portals.remove(&name);
                }
                frame.write_to(&mut self.to_upstream);
                self.owed.push_back(Owed::CloseComplete {
                    statement: kind == b'S',
                    name,
                });
                Flow::Continue
            }
            b'S' => {
                self.skipping = false;
                frame.write_to(&mut self.to_upstream);
                // During COPY FROM STDIN the server ignores Sync: it owes nothing for it.
                if !self.copy_in {
                    self.owed.push_back(Owed::Sync);
                }
                Flow::Continue
            }
            // Flush, and COPY data from the client (only meaningful while the server is in
            // COPY FROM STDIN for a statement the gateway admitted).
            b'H' | b'd' | b'c' | b'f' => {
                if matches!(frame.tag, b'c' | b'f') {
                    self.copy_in = false;
                }
                frame.write_to(&mut self.to_upstream);
                Flow::Continue
            }
            b'X' => {
                // A Terminate with answers still coming: the client left them.
                self.client_left = true;
                Flow::Close
            }
            b'F' => {
                // The fast-path interface calls any function by OID, out of sight of the
                // parser: there is no way to decide on it.
                let refusal = Refusal::new(
                    RefusalKind::Malformed,
                    "the fast-path function call interface is not supported through the gateway",
                )
                .by_rule("function-call");
                self.record_refusal_now(&refusal, None).await;
                self.refuse_simple(ErrorReply::protocol(
                    wire::FEATURE_NOT_SUPPORTED,
                    format_args!("{refusal}; call the function in a query"),
                ));
                Flow::Continue
            }
            other => self.violation(format_args!("unexpected message type {:?}", other as char)),
        }
    }

    /// Forwards an Execute whose masking is settled, or refuses it when its rows could not
    /// be masked (a named column asked for in binary).
    pub(super) fn execute(&mut self, frame: Frame, mut run: StatementRun) {
        // A statement prepared under rules a configuration reload has since replaced is not
        // run on its old decision (a pool keeps prepared statements for hours): refused, so
        // the client prepares it again and it is decided under the rules in force.
        if let Some(exchange) = &run.exchange
            && *run.admitted.verdict.policy_version != *exchange.policy_version()
            && run.withheld.is_none()
        {
            run.withheld = Some(format!(
                "the policy changed since this statement was prepared (from {} to {}, a configuration reload); prepare it again",
                run.admitted.verdict.policy_version,
                exchange.policy_version()
            ));
        }
        if let Some(why) = run.withheld.take() {
            let reply = render(&Refusal::new(RefusalKind::Unsafe, why.clone()));
            run.record_error(reply.code, &reply.message);
            self.finish_statement(run, Outcome::Denied, &why);
            self.refuse_extended(reply);
            return;
        }
        frame.write_to(&mut self.to_upstream);
        self.owed.push_back(Owed::Execute(run));
    }

    /// Ends the session on a message that breaks the protocol, telling the client why.
    pub(super) fn violation(&mut self, e: impl std::fmt::Display) -> Flow {
        wire::fatal(
            &mut self.to_client,
            wire::PROTOCOL_VIOLATION,
            &format!("portcullis: {e}"),
            None,
        );
        self.ended = Some(format!("the client broke the protocol: {e}"));
        Flow::Close
    }

    /// Stands in a poison Query for a refused simple-protocol message.
    pub(super) fn refuse_simple(&mut self, refusal: ErrorReply) {
        wire::query(&mut self.to_upstream, POISON);
        self.owed.push_back(Owed::Refused {
            refusal,
            simple: true,
        });
    }

    /// Stands in a poison Parse for a refused extended-protocol message; the server then
    /// skips the rest of the batch until Sync, as it would after its own error.
    pub(super) fn refuse_extended(&mut self, refusal: ErrorReply) {
        // Into a name of the gateway's own: the client's unnamed statement stays as it was.
        wire::parse_message(&mut self.to_upstream, POISON_NAME, POISON);
        self.owed.push_back(Owed::Refused {
            refusal,
            simple: false,
        });
    }

    pub(super) async fn simple_query(&mut self, frame: Frame, text: &str) -> Flow {
        let classified = match self.proxy.classifier.classify(text) {
            Ok(c) => c,
            Err(e) => {
                let refusal = Refusal::new(RefusalKind::Malformed, self.unparseable(&e))
                    .by_rule("unparseable");
                self.record_refusal_now(&refusal, Some(("query", text)))
                    .await;
                self.refuse_simple(render(&refusal));
                return Flow::Continue;
            }
        };
        if classified.is_empty() {
            // An empty query: the server answers EmptyQueryResponse.
            frame.write_to(&mut self.to_upstream);
            self.owed.push_back(Owed::Query(QueryRun {
                statements: VecDeque::new(),
                failed: false,
            }));
            return Flow::Continue;
        }
        let mut admitted = Vec::with_capacity(classified.len());
        for index in 0..classified.len() {
            let c = StatementRef {
                all: classified.clone(),
                index,
            };
            match self.admit(c, "query", text, false).await {
                Ok(a) => admitted.push(a),
                Err(refusal) => {
                    // One refused statement refuses the message: the server runs a simple
                    // query's statements as one unit, so none of them may run.
                    self.record_not_run(admitted, &refusal.message).await;
                    self.refuse_simple(render(&refusal));
                    return Flow::Continue;
                }
            }
            if self.ended.is_some() {
                return Flow::Close;
            }
        }
        frame.write_to(&mut self.to_upstream);
        let keep_rows = self.proxy.record_results;
        self.owed.push_back(Owed::Query(QueryRun {
            statements: admitted
                .into_iter()
                .map(|(admitted, exchange)| {
                    StatementRun::new(admitted, Some(exchange), keep_rows, None)
                })
                .collect(),
            failed: false,
        }));
        Flow::Continue
    }

    pub(super) async fn parse(&mut self, frame: Frame, parse: wire::Parse) -> Flow {
        let classified = match self.proxy.classifier.classify(&parse.query) {
            Ok(c) => c,
            Err(e) => {
                let refusal = Refusal::new(RefusalKind::Malformed, self.unparseable(&e))
                    .by_rule("unparseable");
                self.record_refusal_now(&refusal, Some(("parse", &parse.query)))
                    .await;
                self.refuse_extended(render(&refusal));
                return Flow::Continue;
            }
        };
        let one = match classified.len() {
            // An empty statement is legal; nothing in it to decide.
            0 => None,
            1 => Some(StatementRef {
                all: classified.clone(),
                index: 0,
            }),
            _ => {
                let refusal = Refusal::new(
                    RefusalKind::Malformed,
                    "a prepared statement holds one SQL statement; this text holds several",
                )
                .by_rule("multiple-statements");
                self.record_refusal_now(&refusal, Some(("parse", &parse.query)))
                    .await;
                self.refuse_extended(render(&refusal));
                return Flow::Continue;
            }
        };
        let admitted = match one {
            Some(c) => match self.admit(c, "parse", &parse.query, true).await {
                Ok((admitted, exchange)) => {
                    // Each Execute is a request of its own, with its own exchange.
                    exchange.settle_later();
                    admitted
                }
                Err(refusal) => {
                    // Later messages of the batch must not reach an older statement of the
                    // same name (the server skips them anyway).
                    self.statements.remove(&parse.name);
                    self.refuse_extended(render(&refusal));
                    return Flow::Continue;
                }
            },
            None => Arc::new(Admitted {
                classified: StatementRef {
                    all: Arc::from(vec![Classified {
                        statement: SqlStatement::default(),
                        text: String::new(),
                        normalized: String::new(),
                        fingerprint: String::new(),
                        copy: None,
                        outputs: Default::default(),
                        holds_credentials: false,
                    }]),
                    index: 0,
                },
                verdict: self.proxy.allow_empty(),
                mask: None,
                columns: Default::default(),
                discovered: Vec::new(),
                hold: None,
            }),
        };
        // Within the batch the new statement stands in for the name: should this Parse
        // fail (a name that still exists, 42P05), the server skips the rest of the batch,
        // so nothing binds to it. Beyond the batch only the server's ParseComplete makes it
        // so; a statement ended by SQL (`DEALLOCATE`, `DISCARD`) needs no tracking, since
        // binding it fails on the server and parsing its name again is confirmed anew.
        self.statements.insert(parse.name.clone(), admitted.clone());
        frame.write_to(&mut self.to_upstream);
        self.owed.push_back(Owed::ParseComplete {
            name: parse.name,
            admitted,
        });
        Flow::Continue
    }

    /// A prepared statement under a `hold` rule, executed: this execution waits for its own
    /// approval in its own exchange, its parameter values shown to the approvers.
    pub(super) async fn hold_execution(
        &mut self,
        bound: &Bound,
        portal: &str,
    ) -> Result<(Arc<Admitted>, Exchange), Refusal> {
        let held = &bound.admitted;
        let requirement = held.hold.clone().expect("a held statement");
        let mut exchange = self
            .run_exchange(bound, portal)
            .expect("a held statement is not empty");
        let text = held.classified.text.clone();
        let decided = self
            .hold(
                &mut exchange,
                held.classified.clone(),
                held.verdict.clone(),
                requirement,
                &text,
                &bound.parameters,
            )
            .await;
        match decided {
            Ok(admitted) => Ok((admitted, exchange)),
            Err(refusal) => {
                self.record_refusal(exchange, &refusal).await;
                Err(refusal)
            }
        }
    }
}
