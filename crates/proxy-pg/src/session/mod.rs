//! One client connection: the client's messages are classified and decided before they are
//! forwarded; the server's answers are masked and matched to the statements they answer.
//!
//! # Matching answers to statements
//!
//! The protocol answers every message in order, so the connection keeps a queue of what the
//! server owes ([`Owed`]): a ParseComplete for each Parse, the rows and CommandComplete of
//! each Execute, a ReadyForQuery for each Sync or simple Query. Each answer frame is matched
//! against the head of the queue; that is how a row is masked with the profile of the
//! statement it belongs to, and how each statement's event gets its row count and duration.
//!
//! # Refusing without breaking the protocol
//!
//! A refused statement must look, to the client, exactly like a statement the server
//! rejected: an ErrorResponse in the right place of the answer stream, the rest of an
//! extended-protocol batch skipped until Sync, and an explicit transaction left in the failed
//! state. Rather than imitate all of that, the gateway sends the server, in place of the
//! refused message, one that fails in the server's parser before anything runs (`PORTCULLIS
//! REFUSED`), and replaces the server's syntax error with its own refusal (SQLSTATE 42501
//! naming the rule). The server then does the skipping and the transaction bookkeeping, and
//! the refused text never reaches it.
//!
//! # Masking rows
//!
//! Rows are masked per column: a column the profile names (`columns`) is masked whole; any
//! other text value is scanned by the profile's detectors. Text-format values only: a value
//! in binary format cannot be scanned, so a binary column the profile names is refused (its
//! rows withheld) and other binary values pass. For an Execute whose statement has a profile,
//! the gateway itself asks the server to describe the portal first (and swallows the answer),
//! so it always knows the columns and their formats.
//!
//! # Where each part lives
//!
//! This file holds the connection's state and its relay loop. The client's messages are
//! read in [`client`]; each statement is decided in [`admit`] (through the guard's
//! exchange) and, under a `hold` rule, waits in [`hold`]; the server's answers are matched
//! in [`server`]; rows are masked in [`results`]; each statement's exchange is opened and
//! its event recorded in [`events`].

mod admit;
mod client;
mod events;
mod hold;
mod recording;
mod results;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use portcullis_guard::{Exchange, Finished, Origin, UpstreamFault};
use portcullis_mask::{Profile, Report};
use portcullis_model::{Identity, SqlStatement, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::classify::Classified;
use crate::refusal::ErrorReply;
use crate::tls::BoxStream;
use crate::wire::{self, Column, Frame};
use crate::{CancelHandle, PgProxy};

use results::ColumnPlan;

/// What the gateway sends the server in place of a refused message: it fails in the
/// server's raw parser, before anything is looked up or run.
const POISON: &str = "PORTCULLIS REFUSED";

/// Events kept for the end of their batch at most; beyond, they are recorded at once.
const MAX_HELD_EVENTS: usize = 256;

/// The prepared-statement name the poison is parsed into (it never gets created).
const POISON_NAME: &str = "portcullis_refused";

/// Stop reading a side while this much waits to be written to the other.
const BACKPRESSURE: usize = 1 << 20;

/// One statement of a classified text (the classifier shares a text's statements).
#[derive(Clone)]
struct StatementRef {
    all: Arc<[Classified]>,
    index: usize,
}

impl std::ops::Deref for StatementRef {
    type Target = Classified;
    fn deref(&self) -> &Classified {
        &self.all[self.index]
    }
}

/// A statement the gateway let through (or is deciding), with what its answers need.
struct Admitted {
    classified: StatementRef,
    verdict: Verdict,
    mask: Option<Arc<Profile>>,
    /// The result's columns, learnt from the first Execute of a masked prepared statement
    /// (a prepared statement's result shape cannot change: the server refuses to re-plan it
    /// into another), so later Executes need no Describe. An unmasked statement learns them
    /// from the client's Describe when the session is recorded, for the record only.
    columns: std::sync::OnceLock<Vec<Column>>,
    /// Columns of the statement's tables that discovery tagged for its mask (lower case):
    /// masked whole like the profile's `columns`.
    discovered: Vec<String>,
    /// A prepared statement under a `hold` rule: each Execute waits for its own approval,
    /// with its parameter values shown to the approvers.
    hold: Option<Arc<portcullis_model::ApprovalRequirement>>,
}

/// What the server owes, in order.
enum Owed {
    /// A simple Query: answers until ReadyForQuery, one result per statement.
    Query(QueryRun),
    /// The statement `name` exists once the server confirms it.
    ParseComplete {
        name: String,
        admitted: Arc<Admitted>,
    },
    /// The portal exists once the server confirms it.
    BindComplete {
        portal: String,
        bound: Bound,
    },
    CloseComplete {
        statement: bool,
        name: String,
    },
    /// A Describe: ParameterDescription (statements only), then RowDescription or NoData.
    /// `swallow`: the gateway asked, the client did not; the answer sets up masking of the
    /// Execute that follows.
    Describe {
        swallow: bool,
        /// The unmasked statement whose columns the answer tells, for the recording.
        learns: Option<Arc<Admitted>>,
    },
    Execute(StatementRun),
    /// The server answers a poison with an error, replaced by this refusal; in simple-query
    /// form it then sends ReadyForQuery.
    Refused {
        refusal: ErrorReply,
        simple: bool,
    },
    Sync,
}

/// A portal: its statement, the result formats and parameters its Bind gave.
#[derive(Clone)]
struct Bound {
    admitted: Arc<Admitted>,
    formats: Vec<i16>,
    /// The parameter values as approvers see them (held statements only).
    parameters: Arc<[String]>,
    /// The parameter values as the recording keeps them (only when the guard records).
    recorded_parameters: Option<Arc<serde_json::Value>>,
}

/// One statement on its way through the server: one request, with its own exchange.
struct StatementRun {
    admitted: Arc<Admitted>,
    /// The request's exchange (`None` for an empty statement, which is no request); boxed,
    /// the event it carries is large and runs queue up.
    exchange: Option<Box<Exchange>>,
    started: Instant,
    report: Report,
    /// How each result column is treated; set by a RowDescription.
    plan: Option<Vec<ColumnPlan>>,
    /// The result's column names, for the redaction summary.
    columns: Vec<String>,
    /// Rows are withheld (a binary column the profile names); the reason is sent instead of
    /// the statement's completion.
    withheld: Option<String>,
    rows_sent: u64,
    /// What the session recording keeps of the answer (`None`: not recorded).
    recording: Option<recording::RunRecording>,
}

struct QueryRun {
    statements: VecDeque<StatementRun>,
    /// The server reported an error: the statements after it did not run.
    failed: bool,
}

/// The connection's state.
pub(crate) struct Session {
    pub proxy: Arc<PgProxy>,
    /// The caller, its address, the target and this session: what every exchange carries.
    origin: Origin,
    pub cancel: Arc<CancelHandle>,
    /// Statement counter, for request ids in events.
    seq: u64,
    owed: VecDeque<Owed>,
    /// Prepared statements and portals as they stand once the server has answered
    /// everything so far: changed only by its confirmations (ParseComplete, BindComplete,
    /// CloseComplete, ReadyForQuery), never by what the client merely sent.
    confirmed_statements: HashMap<String, Arc<Admitted>>,
    confirmed_portals: HashMap<String, Bound>,
    /// The same within the batch being sent: the confirmed state plus this batch's
    /// messages. Sound because the client's next batch waits for this one's ReadyForQuery
    /// (see `batch_pending`), and within a batch a message after a failed one is skipped by
    /// the server.
    statements: HashMap<String, Arc<Admitted>>,
    portals: HashMap<String, Bound>,
    /// Events waiting for the end of their batch (ReadyForQuery), recorded before it leaves.
    events: Vec<Finished>,
    client_r: ReadHalf<BoxStream>,
    client_w: WriteHalf<BoxStream>,
    client_in: BytesMut,
    to_client: BytesMut,
    to_upstream: BytesMut,
    /// After the gateway replaced a server error mid-batch: drop answers until ReadyForQuery.
    discarding: bool,
    /// An Execute waiting for the description of its portal; the client's later messages
    /// wait behind it.
    deferred: Option<(Frame, StatementRun)>,
    /// The server is in COPY FROM STDIN for an Execute: until the client's CopyDone or
    /// CopyFail, it ignores Sync.
    copy_in: bool,
    /// The server is skipping messages after an error and the client's Sync has not come
    /// yet: what the client sends until then is skipped here too (never forwarded, so it
    /// owes no answer).
    skipping: bool,
    /// A `ddl` statement went through this session: the schema may hold functions the
    /// catalog look-up cannot see yet (see [`crate::catalog`]).
    schema_changed: bool,
    /// The profile of the latest masked statement: asynchronous messages that come between
    /// statements (notifications, notices) are masked with it.
    last_mask: Option<Arc<Profile>>,
    ended: Option<String>,
    /// The session ends because the client left (hung up, or sent Terminate): statements
    /// still being answered are recorded as left by their caller.
    client_left: bool,
}

enum Flow {
    Continue,
    /// Close the connection (after writing what is queued).
    Close,
}

impl Session {
    pub fn new(
        proxy: Arc<PgProxy>,
        identity: Arc<Identity>,
        source: SocketAddr,
        id: String,
        cancel: Arc<CancelHandle>,
        client: BoxStream,
        client_in: BytesMut,
    ) -> Session {
        let (client_r, client_w) = tokio::io::split(client);
        Session {
            client_r,
            client_w,
            client_in,
            origin: Origin {
                identity,
                source: source.to_string(),
                target: Arc::from(proxy.target.as_str()),
                kind: portcullis_model::TargetKind::Postgres,
                session: Some(id),
            },
            proxy,
            cancel,
            seq: 0,
            owed: VecDeque::new(),
            confirmed_statements: HashMap::new(),
            confirmed_portals: HashMap::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            events: Vec::new(),
            to_client: BytesMut::with_capacity(16 * 1024),
            to_upstream: BytesMut::with_capacity(8 * 1024),
            discarding: false,
            deferred: None,
            copy_in: false,
            skipping: false,
            schema_changed: false,
            last_mask: None,
            ended: None,
            client_left: false,
        }
    }

    /// Relays until either side ends. Returns why the session ended.
    pub async fn run(&mut self, upstream: BoxStream, mut upstream_in: BytesMut) -> String {
        // One future for the whole session, so that its waiter stays registered: building a
        // new `wait_for` each turn of the loop took the stop channel's shared locks twice per
        // message, from every session on every thread.
        let mut stop = self.proxy.stopping.subscribe();
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopping);
        let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream);
        let client_limit = self.proxy.max_client_frame;
        let upstream_limit = self.proxy.max_upstream_frame;
        loop {
            // Everything already buffered is handled before waiting again.
            loop {
                if self.to_upstream.len() >= BACKPRESSURE || self.ended.is_some() {
                    break;
                }
                // A new batch waits for the previous one's ReadyForQuery (COPY data, Flush,
                // Sync and Terminate do not start one).
                if self.deferred.is_some() {
                    break;
                }
                if self.batch_pending()
                    && !matches!(
                        self.client_in.first(),
                        None | Some(b'd' | b'c' | b'f' | b'H' | b'S' | b'X')
                    )
                {
                    break;
                }
                match wire::next_frame(&mut self.client_in, client_limit) {
                    Ok(Some(frame)) => match self.on_client_message(frame).await {
                        Flow::Continue => {}
                        Flow::Close => {
                            self.ended
                                .get_or_insert_with(|| "the client ended the session".into());
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        self.violation(e);
                    }
                }
            }
            loop {
                if self.to_client.len() >= BACKPRESSURE || self.ended.is_some() {
                    break;
                }
                match wire::next_frame(&mut upstream_in, upstream_limit) {
                    Ok(Some(frame)) => {
                        if let Flow::Close = self.on_server_message(frame).await {
                            self.ended
                                .get_or_insert_with(|| "the server ended the session".into());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.upstream_failed(UpstreamFault::Protocol);
                        wire::fatal(
                            &mut self.to_client,
                            wire::CONNECTION_FAILURE,
                            "portcullis: the database sent something the gateway cannot read; the session is closed",
                            None,
                        );
                        self.ended = Some(format!("the server broke the protocol: {e}"));
                    }
                }
            }
            if self.events.len() >= MAX_HELD_EVENTS {
                // A long batch without Sync: its events are recorded now rather than kept.
                self.record_pending().await;
            }
            if let Some(why) = self.ended.take() {
                let _ = self.client_w.write_all(&self.to_client).await;
                let _ = self.client_w.shutdown().await;
                let mut bye = std::mem::take(&mut self.to_upstream);
                wire::terminate(&mut bye);
                let _ = upstream_w.write_all(&bye).await;
                let _ = upstream_w.shutdown().await;
                self.finish_unanswered(&why).await;
                return why;
            }
            let read_client =
                self.to_upstream.len() < BACKPRESSURE && self.client_in.len() < BACKPRESSURE;
            let read_upstream = self.to_client.len() < BACKPRESSURE;
            tokio::select! {
                biased;
                // The stop ends the session: this future is never polled again.
                () = &mut stopping => {
                    wire::fatal(&mut self.to_client, wire::ADMIN_SHUTDOWN, "portcullis: the gateway is stopping", None);
                    self.ended = Some("the gateway is stopping".into());
                }
                r = self.client_w.write_buf(&mut self.to_client), if !self.to_client.is_empty() => {
                    if r.is_err() || matches!(r, Ok(0)) {
                        self.client_went_away();
                    }
                }
                r = upstream_w.write_buf(&mut self.to_upstream), if !self.to_upstream.is_empty() => {
                    if r.is_err() || matches!(r, Ok(0)) {
                        self.lost_upstream();
                    }
                }
                r = upstream_r.read_buf(&mut upstream_in), if read_upstream => {
                    match r {
                        Ok(0) | Err(_) => self.lost_upstream(),
                        Ok(_) => {}
                    }
                }
                r = self.client_r.read_buf(&mut self.client_in), if read_client => {
                    match r {
                        Ok(0) | Err(_) => self.client_went_away(),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    fn client_went_away(&mut self) {
        self.ended = Some("the client went away".into());
        self.client_left = true;
    }

    fn upstream_failed(&self, fault: UpstreamFault) {
        self.proxy
            .guard
            .upstream_failed(&self.origin.target, self.origin.kind, fault);
    }

    fn lost_upstream(&mut self) {
        if self.ended.is_none() {
            self.upstream_failed(UpstreamFault::Closed);
        }
        wire::fatal(
            &mut self.to_client,
            wire::CONNECTION_FAILURE,
            &format!(
                "portcullis: the connection to the database of target {} was lost",
                self.proxy.target
            ),
            None,
        );
        self.ended = Some("the database connection was lost".into());
    }

    // ---------------------------------------------------------------- client side

    /// ReadyForQuery: the client's next messages wait until it has it, so that every batch
    /// starts from the server's confirmed state.
    fn batch_pending(&self) -> bool {
        self.owed.iter().any(|o| {
            matches!(
                o,
                Owed::Sync | Owed::Query(_) | Owed::Refused { simple: true, .. }
            )
        })
    }

    /// ReadyForQuery: the batch is over; the next starts from what the server confirmed.
    fn batch_over(&mut self, status: u8) {
        if status == b'I' {
            // Outside a transaction block no portal survives (the gateway binds no
            // holdable ones).
            self.confirmed_portals.clear();
        }
        if !self.batch_pending() {
            self.statements = self.confirmed_statements.clone();
            self.portals = self.confirmed_portals.clone();
        }
    }
}

fn run_fail(owed: &mut VecDeque<Owed>) {
    if let Some(Owed::Query(run)) = owed.front_mut() {
        run.failed = true;
    }
}

/// `DELETE on customers` for messages.
fn describe(statement: &SqlStatement) -> String {
    let kind = statement.kind.to_uppercase();
    if statement.tables.is_empty() {
        kind
    } else {
        format!("{kind} on {}", statement.tables.join(", "))
    }
}
