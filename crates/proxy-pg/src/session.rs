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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use portcullis_approvals::{Approval, HoldRequest, Status};
use portcullis_mask::{Profile, Report};
use portcullis_model::{
    Action, AuditEvent, DataFinding, Decision, EventType, Identity, Operation, Outcome,
    SqlStatement, StatementRecord, TargetKind, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::classify::{Classified, Outputs};
use crate::inference::MaskedColumns;
use crate::tls::BoxStream;
use crate::wire::{self, Column, Frame};
use crate::{CancelHandle, PgProxy};

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
    approval: Option<String>,
    /// The result's columns, learnt from the first Execute of a masked prepared statement
    /// (a prepared statement's result shape cannot change: the server refuses to re-plan it
    /// into another), so later Executes need no Describe.
    columns: std::sync::OnceLock<Vec<Column>>,
    /// Columns of the statement's tables that discovery tagged for its mask (lower case):
    /// masked whole like the profile's `columns`.
    discovered: Vec<String>,
    /// A prepared statement under a `hold` rule: each Execute waits for its own approval,
    /// with its parameter values shown to the approvers.
    hold: Option<Arc<portcullis_model::ApprovalRequirement>>,
}

/// A refusal waiting for the server's answer to the poison that stands in for it.
struct Refusal {
    code: &'static str,
    message: String,
    hint: Option<String>,
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
    },
    Execute(StatementRun),
    /// The server answers a poison with an error, replaced by this refusal; in simple-query
    /// form it then sends ReadyForQuery.
    Refused {
        refusal: Refusal,
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
}

/// One statement on its way through the server.
struct StatementRun {
    admitted: Arc<Admitted>,
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
}

struct QueryRun {
    statements: VecDeque<StatementRun>,
    /// The server reported an error: the statements after it did not run.
    failed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ColumnPlan {
    Pass,
    /// Text to scan with the detectors (`skip` leading bytes: jsonb's binary version byte).
    Scan {
        skip: usize,
    },
    /// A json or jsonb value scanned as JSON (`Profile::mask_json`): a match in a number
    /// becomes a string, so the result is still JSON (`skip`: as for `Scan`).
    ScanJson {
        skip: usize,
    },
    /// Masked whole.
    Whole,
    /// A json or jsonb column masked whole: the masked text as a JSON string, so the client
    /// still decodes JSON (`skip` leading bytes kept: jsonb's binary version byte).
    Json {
        skip: usize,
    },
    /// An array column masked whole: NULL, the one value every array decoder reads in both
    /// formats (a masked text is not an array; masking each element would have to parse
    /// every element type's format).
    Null,
}

/// json and jsonb.
const JSON: u32 = 114;
const JSONB: u32 = 3802;

/// The array types of the built-in types (`pg_type.typarray` for OIDs below 16384): bool,
/// bytea, char, name, int2, int2vector, int4, regproc, text, tid, xid, cid, oidvector,
/// bpchar, varchar, int8, point, lseg, path, box, float4, float8, polygon, oid, aclitem,
/// macaddr, inet, cidr, timestamp, date, time, timestamptz, interval, numeric, timetz, bit,
/// varbit, uuid, json, jsonb, xml, money, tsvector, tsquery, macaddr8, regclass, regtype.
const ARRAY_TYPES: &[u32] = &[
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016,
    1017, 1018, 1019, 1020, 1021, 1022, 1027, 1028, 1034, 1040, 1041, 651, 1115, 1182, 1183, 1185,
    1187, 1231, 1270, 1561, 1563, 2951, 199, 3807, 143, 791, 3643, 3645, 775, 2210, 2211,
];

/// How a column the profile names is masked whole so that the client still decodes a value
/// of its type (issue 13 item 14b); `None`: the gateway cannot in this format.
fn whole_plan(type_oid: u32, format: i16) -> Option<ColumnPlan> {
    match (type_oid, format) {
        (JSON, _) | (JSONB, 0) => Some(ColumnPlan::Json { skip: 0 }),
        (JSONB, _) => Some(ColumnPlan::Json { skip: 1 }),
        (oid, _) if ARRAY_TYPES.contains(&oid) => Some(ColumnPlan::Null),
        (_, 0) => Some(ColumnPlan::Whole),
        (oid, _) if text_like(oid) == Some(0) => Some(ColumnPlan::Whole),
        _ => None,
    }
}

/// Types whose binary form is their text (UTF-8), so detectors can read it.
fn text_like(oid: u32) -> Option<usize> {
    match oid {
        // text, varchar, bpchar, name, unknown, json, xml, citext-less char
        25 | 1043 | 1042 | 19 | 705 | 114 | 142 | 18 => Some(0),
        // jsonb: a version byte, then text.
        3802 => Some(1),
        _ => None,
    }
}

fn plan_columns(
    columns: &[Column],
    masked: &MaskedColumns<'_>,
    outputs: &Outputs,
) -> Result<Vec<ColumnPlan>, String> {
    // A column the profile names can come back under another name (`AS x`, an expression,
    // a subquery's alias, a whole row turned into JSON). When the statement's output lists
    // reference a named column, or a whole row, every result column that is not plainly a
    // column returned under its own name is masked whole too. So does `*` in a UNION,
    // INTERSECT or EXCEPT: the result's columns take the first branch's names, so `SELECT 0,
    // 'x', 'y' UNION ALL SELECT * FROM customers` returns a masked column under the name `y`.
    let derived = masked.any()
        && (outputs.whole_row
            || outputs.renamed_sources
            || (outputs.set_operation && outputs.output_star)
            || outputs.referenced.iter().any(|name| masked.masks(name)));
    columns
        .iter()
        .map(|c| {
            let named = masked.masks(&c.name) || (derived && !outputs.plain(&c.name));
            match (c.format, named, text_like(c.type_oid)) {
                (_, true, _) if let Some(plan) = whole_plan(c.type_oid, c.format) => Ok(plan),
                (0, false, _) if matches!(c.type_oid, JSON | JSONB) => {
                    Ok(ColumnPlan::ScanJson { skip: 0 })
                }
                (0, false, _) => Ok(ColumnPlan::Scan { skip: 0 }),
                (_, true, _) => Err(format!(
                    "column \"{}\" must be masked (it is, or may carry, a column the masking profile names), but the client asked for it in binary format, which the gateway cannot mask; request text format for it",
                    c.name
                )),
                (_, false, Some(skip)) if matches!(c.type_oid, JSON | JSONB) => {
                    Ok(ColumnPlan::ScanJson { skip })
                }
                (_, false, Some(skip)) => Ok(ColumnPlan::Scan { skip }),
                (_, false, None) => Ok(ColumnPlan::Pass),
            }
        })
        .collect()
}

/// The connection's state.
pub(crate) struct Session {
    pub proxy: Arc<PgProxy>,
    pub identity: Arc<Identity>,
    pub source: SocketAddr,
    pub id: String,
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
    events: Vec<AuditEvent>,
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
            proxy,
            identity,
            source,
            id,
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
        }
    }

    /// Relays until either side ends. Returns why the session ended.
    pub async fn run(&mut self, upstream: BoxStream, mut upstream_in: BytesMut) -> String {
        let mut stop = self.proxy.stopping.subscribe();
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
                        wire::fatal(
                            &mut self.to_client,
                            wire::PROTOCOL_VIOLATION,
                            &format!("portcullis: {e}"),
                            None,
                        );
                        self.ended = Some(format!("the client broke the protocol: {e}"));
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
                _ = stop.wait_for(|s| *s) => {
                    wire::fatal(&mut self.to_client, wire::ADMIN_SHUTDOWN, "portcullis: the gateway is stopping", None);
                    self.ended = Some("the gateway is stopping".into());
                }
                r = self.client_w.write_buf(&mut self.to_client), if !self.to_client.is_empty() => {
                    if r.is_err() || matches!(r, Ok(0)) {
                        self.ended = Some("the client went away".into());
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
                        Ok(0) | Err(_) => self.ended = Some("the client went away".into()),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    fn lost_upstream(&mut self) {
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

    async fn on_client_message(&mut self, frame: Frame) -> Flow {
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
                        let bound = Bound {
                            admitted: admitted.clone(),
                            formats: bind.result_formats,
                            parameters,
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
                        self.refuse_extended(Refusal {
                        code: "26000",
                        message: format!(
                            "portcullis: prepared statement \"{}\" does not exist (or the gateway refused it)",
                            bind.statement
                        ),
                            hint: None,
                        })
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
                    self.refuse_extended(Refusal {
                        code: "34000",
                        message: format!("portcullis: portal \"{portal}\" does not exist"),
                        hint: None,
                    });
                    return Flow::Continue;
                };
                let formats = bound.formats;
                let admitted = match &bound.admitted.hold {
                    None => bound.admitted,
                    Some(requirement) => {
                        // Each execution is its own request, with its own values.
                        let held = &bound.admitted;
                        let text = held.classified.text.clone();
                        match self
                            .hold(
                                held.classified.clone(),
                                held.verdict.clone(),
                                requirement.clone(),
                                &text,
                                &bound.parameters,
                            )
                            .await
                        {
                            Ok(approved) => approved,
                            Err(refusal) => {
                                if self.ended.is_some() {
                                    return Flow::Close;
                                }
                                self.refuse_extended(refusal);
                                return Flow::Continue;
                            }
                        }
                    }
                };
                let mut run = StatementRun::new(admitted.clone());
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
                        self.owed.push_back(Owed::Describe { swallow: true });
                        self.deferred = Some((frame, run));
                        return Flow::Continue;
                    }
                }
                self.execute(frame, run);
                Flow::Continue
            }
            b'D' => {
                let (_, _) = match wire::parse_target(&frame, "Describe") {
                    Ok(t) => t,
                    Err(e) => return self.violation(e),
                };
                frame.write_to(&mut self.to_upstream);
                self.owed.push_back(Owed::Describe { swallow: false });
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
            b'X' => Flow::Close,
            b'F' => {
                // The fast-path interface calls any function by OID, out of sight of the
                // parser: there is no way to decide on it.
                self.record_refusal_now(
                    "function-call",
                    None,
                    "the fast-path function call interface is not supported through the gateway",
                )
                .await;
                self.refuse_simple(Refusal {
                    code: wire::FEATURE_NOT_SUPPORTED,
                    message: "portcullis: the fast-path function call interface is not supported through the gateway; call the function in a query".into(),
                    hint: None,
                });
                Flow::Continue
            }
            other => {
                let e = format!("unexpected message type {:?}", other as char);
                wire::fatal(
                    &mut self.to_client,
                    wire::PROTOCOL_VIOLATION,
                    &format!("portcullis: {e}"),
                    None,
                );
                self.ended = Some(format!("the client broke the protocol: {e}"));
                Flow::Close
            }
        }
    }

    /// Forwards an Execute whose masking is settled, or refuses it when its rows could not
    /// be masked (a named column asked for in binary).
    fn execute(&mut self, frame: Frame, mut run: StatementRun) {
        if let Some(why) = run.withheld.take() {
            let event_run = StatementRun::new(run.admitted.clone());
            self.finish_statement(event_run, Outcome::Denied, &why);
            self.refuse_extended(Refusal {
                code: wire::INSUFFICIENT_PRIVILEGE,
                message: format!("portcullis: {why}"),
                hint: None,
            });
            return;
        }
        frame.write_to(&mut self.to_upstream);
        self.owed.push_back(Owed::Execute(run));
    }

    fn violation(&mut self, e: wire::WireError) -> Flow {
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
    fn refuse_simple(&mut self, refusal: Refusal) {
        wire::query(&mut self.to_upstream, POISON);
        self.owed.push_back(Owed::Refused {
            refusal,
            simple: true,
        });
    }

    /// Stands in a poison Parse for a refused extended-protocol message; the server then
    /// skips the rest of the batch until Sync, as it would after its own error.
    fn refuse_extended(&mut self, refusal: Refusal) {
        // Into a name of the gateway's own: the client's unnamed statement stays as it was.
        wire::parse_message(&mut self.to_upstream, POISON_NAME, POISON);
        self.owed.push_back(Owed::Refused {
            refusal,
            simple: false,
        });
    }

    async fn simple_query(&mut self, frame: Frame, text: &str) -> Flow {
        let classified = match self.proxy.classifier.classify(text) {
            Ok(c) => c,
            Err(e) => {
                let message = self.unparseable(&e);
                self.record_refusal_now("unparseable", None, &message).await;
                self.refuse_simple(Refusal {
                    code: wire::SYNTAX_ERROR,
                    message,
                    hint: None,
                });
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
            match self.admit(c, text, false).await {
                Ok(a) => admitted.push(a),
                Err(refusal) => {
                    // One refused statement refuses the message: the server runs a simple
                    // query's statements as one unit, so none of them may run.
                    self.record_not_run(&admitted, &refusal.message).await;
                    self.refuse_simple(refusal);
                    return Flow::Continue;
                }
            }
            if self.ended.is_some() {
                return Flow::Close;
            }
        }
        frame.write_to(&mut self.to_upstream);
        self.owed.push_back(Owed::Query(QueryRun {
            statements: admitted.into_iter().map(StatementRun::new).collect(),
            failed: false,
        }));
        Flow::Continue
    }

    async fn parse(&mut self, frame: Frame, parse: wire::Parse) -> Flow {
        let classified = match self.proxy.classifier.classify(&parse.query) {
            Ok(c) => c,
            Err(e) => {
                let message = self.unparseable(&e);
                self.record_refusal_now("unparseable", None, &message).await;
                self.refuse_extended(Refusal {
                    code: wire::SYNTAX_ERROR,
                    message,
                    hint: None,
                });
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
                let message = "portcullis: a prepared statement holds one SQL statement; this text holds several".to_string();
                self.record_refusal_now("multiple-statements", None, &message)
                    .await;
                self.refuse_extended(Refusal {
                    code: wire::SYNTAX_ERROR,
                    message,
                    hint: None,
                });
                return Flow::Continue;
            }
        };
        let admitted = match one {
            Some(c) => match self.admit(c, &parse.query, true).await {
                Ok(a) => a,
                Err(refusal) => {
                    // Later messages of the batch must not reach an older statement of the
                    // same name (the server skips them anyway).
                    self.statements.remove(&parse.name);
                    self.refuse_extended(refusal);
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
                    }]),
                    index: 0,
                },
                verdict: self.proxy.allow_empty(),
                mask: None,
                approval: None,
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

    /// Decides one statement: allowed, refused, or held until people decide.
    async fn admit(
        &mut self,
        classified: StatementRef,
        text: &str,
        defer_hold: bool,
    ) -> Result<Arc<Admitted>, Refusal> {
        let proxy = self.proxy.clone();
        let with_flags;
        let statement = match self.flag_functions(&classified).await? {
            None => &classified.statement,
            Some(flagged) => {
                with_flags = flagged;
                &with_flags
            }
        };
        let grants = if proxy.approvals.any_grants() {
            proxy.approvals.active_grants(&self.identity, &proxy.target)
        } else {
            Vec::new()
        };
        let action = Action {
            target: &proxy.target,
            target_kind: TargetKind::Postgres,
            operation: Operation::Sql(statement),
            findings: &[],
            grants: &grants,
        };
        let verdict = proxy.policy.decide(&self.identity, &action);
        if let Some(why) = proxy.audit.unavailable() {
            let message = format!(
                "portcullis: the audit log cannot be written ({why}); nothing runs until it can"
            );
            return Err(Refusal {
                code: "58030",
                message,
                hint: None,
            });
        }
        if statement.kind == "set"
            && classified
                .normalized
                .to_ascii_lowercase()
                .contains("standard_conforming_strings")
        {
            // The gateway reads strings as the server does only while this stays on; the
            // change would apply to statements already on their way.
            let message =
                "portcullis: standard_conforming_strings cannot be changed through the gateway"
                    .to_string();
            self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                .await;
            return Err(self.policy_refusal(&verdict, message));
        }
        if statement.kind == "copy" && classified.copy_server_side() {
            // Reading or writing the server's files or programs is never delegated.
            let message = "portcullis: COPY to or from a file or program on the database server is refused; use COPY ... FROM STDIN / TO STDOUT".to_string();
            self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                .await;
            return Err(self.policy_refusal(&verdict, message));
        }
        match &verdict.decision {
            Decision::Allow { .. } if let Some(what) = self.masked_by_name(&classified.outputs) => {
                let message = format!(
                    "portcullis: {} reads {what}, which is masked, through SQL: its rows would come back without the statement's text or mask; refused (run it through the protocol, Bind/Execute, where it is masked)",
                    describe(statement)
                );
                self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                    .await;
                Err(self.policy_refusal(&verdict, message))
            }
            Decision::Allow { mask } => {
                let mask = match mask {
                    Some(name) => match proxy.masks.get(&**name) {
                        Some(p) => Some(p.clone()),
                        None => {
                            let message = format!(
                                "portcullis: masking profile {name} is not configured; refusing rather than returning unmasked rows"
                            );
                            self.record_decided(&classified, &verdict, Outcome::Failed, &message)
                                .await;
                            return Err(self.policy_refusal(&verdict, message));
                        }
                    },
                    None => None,
                };
                let discovered = match discovered_columns(
                    &proxy,
                    mask_name(&verdict),
                    &mask,
                    statement,
                )
                .await
                {
                    Ok(columns) => columns,
                    Err(why) => {
                        let message = format!(
                            "portcullis: {}: {why}; the statement is refused until the masking profile knows the table's columns",
                            describe(statement)
                        );
                        self.record_decided(&classified, &verdict, Outcome::Failed, &message)
                            .await;
                        return Err(Refusal {
                            code: wire::SYSTEM_ERROR,
                            message,
                            hint: None,
                        });
                    }
                };
                let masked = mask.as_deref().map(|profile| MaskedColumns {
                    profile,
                    discovered: &discovered,
                });
                // A masked column used where it is not returned leaks by inference.
                if let Some(masked) = &masked
                    && !proxy.filters_masked(&verdict)
                    && let Some(what) =
                        crate::inference::masked_use_outside_output(&classified.outputs, masked)
                {
                    let message = format!(
                        "portcullis: {} uses {what}, which rule \"{}\" masks, outside its output list (WHERE, JOIN, ORDER BY, GROUP BY, HAVING, a window, LIMIT, a CASE condition, or a subquery there): which rows come back would reveal the masked values; refused (a rule with filter_masked = true allows it)",
                        describe(statement),
                        verdict.rule_label()
                    );
                    self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                        .await;
                    return Err(self.policy_refusal(&verdict, message));
                }
                // FETCH and SQL EXECUTE return rows without the query or its mask.
                if let Some(masked) = &masked
                    && let Some(what) =
                        crate::inference::masked_read_by_deferred_query(&classified.outputs, masked)
                {
                    let message = format!(
                        "portcullis: {} reads {what} that rule \"{}\" masks, in a cursor or SQL-level prepared statement: the rows FETCH or EXECUTE return later carry neither the query nor this rule's mask, so the gateway could not mask them; refused (use a plain SELECT, or a protocol-level prepared statement, which are masked)",
                        describe(statement),
                        verdict.rule_label()
                    );
                    self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                        .await;
                    return Err(self.policy_refusal(&verdict, message));
                }
                // A write under a masking rule must not copy a masked column somewhere the
                // mask does not reach (`INSERT ... SELECT account_number`, `SET name =
                // account_number`, `CREATE TABLE copy AS SELECT account_number`, a view over
                // it): later reads of that place would show it in clear.
                if let Some(masked) = &masked
                    && ["insert", "update", "merge", "ddl"]
                        .iter()
                        .any(|k| statement.performs(k))
                    && let Some(column) = classified
                        .outputs
                        .referenced
                        .iter()
                        .find(|c| masked.masks(c))
                {
                    let message = format!(
                        "portcullis: {} would copy column \"{column}\", which rule \"{}\" masks, into the database, where later reads would show it unmasked",
                        describe(statement),
                        verdict.rule_label()
                    );
                    self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                        .await;
                    return Err(self.policy_refusal(&verdict, message));
                }
                if mask.is_some() && statement.performs("copy") {
                    let message = "portcullis: COPY output cannot be masked; use SELECT for data this rule masks".to_string();
                    self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                        .await;
                    return Err(self.policy_refusal(&verdict, message));
                }
                if mask.is_some() {
                    self.last_mask = mask.clone();
                }
                // From the next statement on, an unqualified function may be one this DDL
                // created (a refused DDL changes nothing, so it does not count).
                self.schema_changed |= statement.performs("ddl");
                Ok(Arc::new(Admitted {
                    classified,
                    verdict,
                    mask,
                    approval: None,
                    columns: Default::default(),
                    discovered,
                    hold: None,
                }))
            }
            Decision::Deny { reason } => {
                let message = format!(
                    "portcullis: {} refused by rule \"{}\": {reason}",
                    describe(statement),
                    verdict.rule_label()
                );
                self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                    .await;
                Err(self.policy_refusal(&verdict, message))
            }
            Decision::Hold(requirement) if defer_hold => Ok(Arc::new(Admitted {
                hold: Some(requirement.clone()),
                classified,
                verdict,
                mask: None,
                approval: None,
                columns: Default::default(),
                discovered: Vec::new(),
            })),
            Decision::Hold(requirement) => {
                let requirement = requirement.clone();
                self.hold(classified, verdict, requirement, text, &[]).await
            }
        }
    }

    /// A masked protocol-level portal that an SQL `FETCH`/`MOVE` names, or a masked
    /// protocol-level prepared statement that an SQL `EXECUTE` names, described for the
    /// refusal: SQL reaches them by name, and their rows would come back as the answer to a
    /// statement that carries neither their text nor their mask.
    fn masked_by_name(&self, outputs: &Outputs) -> Option<String> {
        if let Some(name) = &outputs.fetches
            && let Some(bound) = self.portals.get(name)
            && bound.admitted.mask.is_some()
        {
            return Some(format!("portal \"{name}\""));
        }
        if let Some(name) = &outputs.executes
            && let Some(admitted) = self.statements.get(name)
            && admitted.mask.is_some()
        {
            return Some(format!("prepared statement \"{name}\""));
        }
        None
    }

    /// The statement with the functions it calls that the server's catalog flags (see
    /// [`crate::catalog`]); `None` when none is. Checked on every statement, cached
    /// classification or not. A statement that changes the schema empties the catalog
    /// cache, before it runs and again once decided. A catalog that cannot be read refuses
    /// the statement.
    async fn flag_functions(
        &mut self,
        classified: &Classified,
    ) -> Result<Option<SqlStatement>, Refusal> {
        let statement = &classified.statement;
        if statement.performs("ddl") {
            self.proxy.catalog.forget();
        }
        let flagged = match self
            .proxy
            .catalog
            .flag(&self.proxy.upstream, statement, self.schema_changed)
            .await
        {
            Ok(flagged) => flagged,
            Err(e) => {
                tracing::warn!(target = %self.proxy.target, "{e}");
                let message = format!(
                    "portcullis: {} calls functions the gateway must look up in the server's catalog, and {e}; refused until it can be read",
                    describe(statement)
                );
                self.record_refusal_now("function-catalog", None, &message)
                    .await;
                return Err(Refusal {
                    code: wire::SYSTEM_ERROR,
                    message,
                    hint: None,
                });
            }
        };
        Ok((!flagged.is_empty()).then(|| SqlStatement {
            flagged_functions: flagged,
            ..statement.clone()
        }))
    }

    fn policy_refusal(&self, verdict: &Verdict, message: String) -> Refusal {
        Refusal {
            code: wire::INSUFFICIENT_PRIVILEGE,
            message,
            hint: Some(format!(
                "rule \"{}\" of policy {}",
                verdict.rule_label(),
                verdict.policy_version
            )),
        }
    }

    /// Waits for approvers. The client is told at once (a notice) what it waits for.
    async fn hold(
        &mut self,
        classified: StatementRef,
        verdict: Verdict,
        requirement: Arc<portcullis_model::ApprovalRequirement>,
        text: &str,
        parameters: &[String],
    ) -> Result<Arc<Admitted>, Refusal> {
        let proxy = self.proxy.clone();
        let statement = &classified.statement;
        let what = describe(statement);
        let reason = reason_comment(text);
        if requirement.require_reason && reason.is_none() {
            let message = format!(
                "portcullis: {what} needs approval under rule \"{}\" and a reason: start the statement with a comment /* reason: why */",
                verdict.rule_label()
            );
            self.record_decided(&classified, &verdict, Outcome::Denied, &message)
                .await;
            return Err(self.policy_refusal(&verdict, message));
        }
        // Approvers see the statement as written, with the default profile's detectors
        // masking what they find in it: the values are what they judge.
        let mut report = Report::default();
        let shown = match proxy.masks.get(crate::DEFAULT_PROFILE) {
            Some(p) => p
                .mask_text(classified.text.as_str(), "$.sql", &mut report)
                .unwrap_or_else(|| classified.text.clone()),
            None => classified.normalized.clone(),
        };
        let mut ev = self.statement_event(&classified, &verdict);
        ev.outcome = Outcome::Info;
        let request = HoldRequest {
            requester: (*self.identity).clone(),
            source: Some(self.source.to_string()),
            target: proxy.target.clone(),
            action: statement.kind.clone(),
            resource: (!statement.tables.is_empty()).then(|| statement.tables.join(", ")),
            arguments: Some(if parameters.is_empty() {
                serde_json::json!({ "sql": shown })
            } else {
                let shown_parameters: Vec<String> = parameters
                    .iter()
                    .map(|p| match proxy.masks.get(crate::DEFAULT_PROFILE) {
                        Some(profile) => profile
                            .mask_text(p, "$.parameters", &mut report)
                            .unwrap_or_else(|| p.clone()),
                        None => p.clone(),
                    })
                    .collect();
                serde_json::json!({ "sql": shown, "parameters": shown_parameters })
            }),
            arguments_digest: Some(
                proxy
                    .audit
                    .digest(format!("{}\0{}", classified.text, parameters.join("\0")).as_bytes()),
            ),
            reason,
            rule: verdict.rule_label().to_string(),
            policy_version: verdict.policy_version.to_string(),
            requirement,
            request_event: ev.id.clone(),
        };
        let mut held = match proxy.approvals.hold(request).await {
            Ok(h) => h,
            Err(e) => {
                let message =
                    format!("portcullis: {what} needs approval but cannot wait for it: {e}");
                self.record_decided(&classified, &verdict, Outcome::Failed, &message)
                    .await;
                return Err(self.policy_refusal(&verdict, message));
            }
        };
        let id = held.approval.id.clone();
        wire::notice(
            &mut self.to_client,
            b'N',
            "NOTICE",
            "01000",
            &format!(
                "portcullis: {what} is held for approval {id} under rule \"{}\" until {}; an approver decides with: portcullis approvals approve {id}",
                verdict.rule_label(),
                held.approval.expires_at
            ),
            None,
        );
        // The notice must reach the client now, while the statement waits.
        if let Err(e) = self.flush_client_now().await {
            held.cancel(&format!("the client went away ({e})")).await;
            self.ended = Some("the client went away".into());
            return Err(self.policy_refusal(&verdict, "the client went away".into()));
        }
        let mut cancel = self.cancel.cancels.subscribe();
        let mut stop = proxy.stopping.subscribe();
        // A client that hangs up ends the wait; messages it pipelines meanwhile stay in
        // `client_in` for after the decision.
        let outcome: Result<Approval, &str> = loop {
            tokio::select! {
                approval = held.outcome() => break Ok(approval),
                _ = cancel.changed() => break Err("the client cancelled the statement"),
                _ = stop.wait_for(|s| *s) => break Err("the gateway is stopping"),
                r = self.client_r.read_buf(&mut self.client_in), if self.client_in.len() < BACKPRESSURE => match r {
                    Ok(0) | Err(_) => break Err("the client went away"),
                    Ok(_) => {}
                },
            }
        };
        let approval = match outcome {
            Ok(a) => a,
            Err(why) => {
                held.cancel(&format!("{why} while the statement was held"))
                    .await;
                let message = format!("portcullis: {what} was held for approval {id}; {why}");
                self.record_held(&classified, &verdict, &id, Outcome::Failed, &message)
                    .await;
                if why == "the client went away" {
                    self.ended = Some(why.into());
                }
                return Err(Refusal {
                    code: wire::QUERY_CANCELED,
                    message,
                    hint: None,
                });
            }
        };
        if approval.status != Status::Approved {
            let message = format!("portcullis: {}", approval.refusal(&what));
            self.record_held(&classified, &verdict, &id, Outcome::Denied, &message)
                .await;
            return Err(self.policy_refusal(&verdict, message));
        }
        if let Err(e) = held.released(&ev.id).await {
            let message = format!("portcullis: {what} was approved ({id}) but {e}");
            self.record_held(&classified, &verdict, &id, Outcome::Failed, &message)
                .await;
            return Err(self.policy_refusal(&verdict, message));
        }
        let mask = match &verdict.decision {
            Decision::Allow { mask: Some(name) } => proxy.masks.get(&**name).cloned(),
            _ => None,
        };
        self.schema_changed |= classified.statement.performs("ddl");
        Ok(Arc::new(Admitted {
            classified,
            verdict,
            mask,
            approval: Some(id),
            columns: Default::default(),
            discovered: Vec::new(),
            hold: None,
        }))
    }

    async fn flush_client_now(&mut self) -> std::io::Result<()> {
        self.client_w.write_all(&self.to_client).await?;
        self.to_client.clear();
        self.client_w.flush().await
    }

    // ---------------------------------------------------------------- server side

    async fn on_server_message(&mut self, frame: Frame) -> Flow {
        match frame.tag {
            // Asynchronous: any time.
            b'N' | b'A' => {
                self.asynchronous(frame).write_to(&mut self.to_client);
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
    fn asynchronous(&mut self, frame: Frame) -> Frame {
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
    fn confirmed(&mut self, frame: Frame) {
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
    fn lost_track(&mut self, what: &str) {
        wire::fatal(
            &mut self.to_client,
            wire::PROTOCOL_VIOLATION,
            &format!("portcullis: the database sent {what}; the session is closed"),
            None,
        );
        self.ended = Some(format!("lost track of the server's answers: {what}"));
    }

    /// Whether an earlier batch (up to a Sync, or a simple query) still waits for its
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

    fn description(&mut self, frame: Frame) {
        match self.owed.front() {
            Some(Owed::Describe { swallow, .. }) => {
                let swallow = *swallow;
                self.owed.pop_front();
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
                frame.write_to(&mut self.to_client);
            }
            Some(Owed::Query(_)) if frame.tag == b'T' => {
                let Some(Owed::Query(run)) = self.owed.front_mut() else {
                    unreachable!()
                };
                if let Some(current) = run.statements.front_mut() {
                    let columns = wire::parse_row_description(&frame).unwrap_or_default();
                    current.set_plan(&columns);
                }
                frame.write_to(&mut self.to_client);
            }
            _ => self.lost_track("a row description no statement asked for"),
        }
    }

    fn current_run(&mut self) -> Option<&mut StatementRun> {
        match self.owed.front_mut()? {
            Owed::Query(run) => run.statements.front_mut(),
            Owed::Execute(run) => Some(run),
            _ => None,
        }
    }

    fn data_row(&mut self, frame: Frame) {
        let Some(run) = self.current_run() else {
            // Rows only answer a Query or an Execute: anything else means the gateway lost
            // track of the conversation, and such a row must not pass unchecked.
            self.lost_track("a row no statement asked for");
            return;
        };
        if run.withheld.is_some() {
            return;
        }
        run.rows_sent += 1;
        let (Some(profile), Some(plan)) = (run.admitted.mask.clone(), run.plan.as_ref()) else {
            if run.admitted.mask.is_some() {
                // A masked statement's rows without a description: never pass them unmasked.
                run.withheld = Some(
                    "the gateway did not see the result's columns, so it cannot mask them".into(),
                );
                return;
            }
            frame.write_to(&mut self.to_client);
            return;
        };
        if plan.iter().all(|p| *p == ColumnPlan::Pass) {
            frame.write_to(&mut self.to_client);
            return;
        }
        let plan = plan.clone();
        let Ok(mut values) = wire::parse_data_row(&frame) else {
            run.withheld = Some("the server sent a malformed row".into());
            return;
        };
        let mut changed = false;
        for (i, value) in values.iter_mut().enumerate() {
            let Some(bytes) = value.as_ref() else {
                continue;
            };
            let path = run.column_path(i);
            let masked = match plan.get(i).copied().unwrap_or(ColumnPlan::Whole) {
                ColumnPlan::Pass => None,
                ColumnPlan::ScanJson { skip } => {
                    let body = bytes.get(skip..).unwrap_or_default();
                    match serde_json::from_slice::<serde_json::Value>(body) {
                        Ok(mut json) => {
                            let before = run.report.total();
                            profile.mask_json(&mut json, &path, &mut run.report);
                            (run.report.total() != before).then(|| {
                                let mut out =
                                    String::from_utf8_lossy(&bytes[..skip.min(bytes.len())])
                                        .into_owned();
                                out.push_str(&json.to_string());
                                out
                            })
                        }
                        // The server sent something else than JSON: mask it whole, as JSON.
                        Err(_) => Some(json_masked_whole(
                            bytes,
                            skip,
                            &profile,
                            &path,
                            &mut run.report,
                        )),
                    }
                }
                ColumnPlan::Whole => match std::str::from_utf8(bytes) {
                    Ok(text) => Some(profile.mask_whole(text, &path, &mut run.report)),
                    Err(_) => Some(profile.mask_whole("binary", &path, &mut run.report)),
                },
                ColumnPlan::Json { skip } => Some(json_masked_whole(
                    bytes,
                    skip,
                    &profile,
                    &path,
                    &mut run.report,
                )),
                ColumnPlan::Null => {
                    // Reported as masked like any other whole value.
                    profile.mask_whole("array", &path, &mut run.report);
                    *value = None;
                    changed = true;
                    None
                }
                ColumnPlan::Scan { skip } => {
                    let body = bytes.get(skip..).unwrap_or_default();
                    match std::str::from_utf8(body) {
                        Ok(text) => profile.mask_text(text, &path, &mut run.report).map(|m| {
                            let mut out = bytes[..skip].to_vec();
                            out.extend_from_slice(m.as_bytes());
                            String::from_utf8(out).unwrap_or_default()
                        }),
                        // Not text in the client's encoding: do not guess, mask it.
                        Err(_) => Some(profile.mask_whole("binary", &path, &mut run.report)),
                    }
                }
            };
            if let Some(m) = masked {
                *value = Some(Bytes::from(m));
                changed = true;
            }
        }
        if changed {
            wire::data_row(&values, &mut self.to_client);
        } else {
            frame.write_to(&mut self.to_client);
        }
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended: the current statement is done.
    fn statement_done(&mut self, frame: Frame) {
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
                    wire::error(
                        &mut self.to_client,
                        wire::INSUFFICIENT_PRIVILEGE,
                        &format!("portcullis: rows withheld: {why}"),
                        None,
                    );
                    self.finish_statement(current, Outcome::Denied, &why);
                    run_fail(&mut self.owed);
                    self.discarding = true;
                    return;
                }
                frame.write_to(&mut self.to_client);
                self.finish_statement(current, Outcome::Success, "");
            }
            Some(Owed::Execute(_)) => {
                let Some(Owed::Execute(mut run)) = self.owed.pop_front() else {
                    unreachable!()
                };
                run.rows_sent = rows.unwrap_or(run.rows_sent);
                if let Some(why) = run.withheld.take() {
                    wire::error(
                        &mut self.to_client,
                        wire::INSUFFICIENT_PRIVILEGE,
                        &format!("portcullis: rows withheld: {why}"),
                        None,
                    );
                    self.finish_statement(run, Outcome::Denied, &why);
                    // The client now expects the server to skip to Sync: drop the server's
                    // answers to the rest of the batch.
                    self.discarding = true;
                    return;
                }
                frame.write_to(&mut self.to_client);
                self.finish_statement(run, Outcome::Success, "");
            }
            _ => frame.write_to(&mut self.to_client),
        }
    }

    fn upstream_error(&mut self, frame: Frame) {
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
                if let Some(current) = run.statements.pop_front() {
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
            Some(Owed::Execute(run)) => {
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
    fn skip_to_sync(&mut self, why: &str) {
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

    fn finish_query(&mut self, mut run: QueryRun) {
        while let Some(s) = run.statements.pop_front() {
            self.finish_statement(
                s,
                Outcome::Failed,
                "not run: an earlier statement of the message failed",
            );
        }
    }

    /// ReadyForQuery: the batch is over. Its events are recorded (durably, in strict mode)
    /// before the client may send more.
    async fn release(&mut self, frame: Frame) {
        if self.record_pending().await {
            frame.write_to(&mut self.to_client);
        }
    }

    /// Records the events waiting for their batch's end. `false`: the log failed, the
    /// client is told and the session ends.
    async fn record_pending(&mut self) -> bool {
        if self.events.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut self.events);
        let audit = &self.proxy.audit;
        let results =
            futures_util::future::join_all(events.into_iter().map(|e| audit.record(e))).await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            wire::fatal(
                &mut self.to_client,
                "58030",
                &format!(
                    "portcullis: the audit log cannot be written ({e}); the session is closed"
                ),
                None,
            );
            self.ended = Some(format!("the audit log failed: {e}"));
            return false;
        }
        true
    }

    // ---------------------------------------------------------------- events

    fn statement_event(&mut self, classified: &Classified, verdict: &Verdict) -> AuditEvent {
        self.seq += 1;
        let statement = &classified.statement;
        let mut ev = self.proxy.audit.event(EventType::Request, Outcome::Success);
        ev.source = Some(self.source.to_string());
        ev.identity = Some((*self.identity).clone());
        ev.target = Some(self.proxy.target.clone());
        ev.session = Some(self.id.clone());
        ev.action = Some(statement.kind.clone());
        ev.resource = (!statement.tables.is_empty()).then(|| statement.tables.join(","));
        ev.request_id = Some(self.seq.to_string());
        ev.decision = Some(verdict.decision.label().to_string());
        ev.rule = Some(verdict.rule_label().to_string());
        ev.policy_version = Some(verdict.policy_version.to_string());
        ev.grant = verdict.grant.as_deref().map(str::to_string);
        ev.statement = Some(StatementRecord {
            text: self.loggable(&classified.normalized),
            fingerprint: classified.fingerprint.clone(),
            kinds: statement.kinds.clone(),
            tables: statement.tables.clone(),
            functions: statement.functions.clone(),
            rows: None,
        });
        ev
    }

    /// The refusal of a text that does not parse, for the client and the log. The parser's
    /// message quotes the text near the error (`syntax error at or near "'ada@example.com'"`),
    /// which was never normalised: quoted parts are withheld and the `default` profile's
    /// detectors see the rest. The position still tells the client where to look.
    fn unparseable(&self, e: &crate::classify::ClassifyError) -> String {
        let message = format!("portcullis: the statement does not parse, so it is refused: {e}");
        let withheld = withhold_quoted_values(&message).unwrap_or(message);
        match self.proxy.masks.get(crate::DEFAULT_PROFILE) {
            Some(profile) => profile
                .mask_text(&withheld, "$.detail", &mut Report::default())
                .unwrap_or(withheld),
            None => withheld,
        }
    }

    /// The normalised text as the log may keep it. Normalising replaces literals but keeps
    /// comments, and a comment can hold anything (a pasted token, an email): texts with
    /// one go through the `default` profile's detectors first.
    fn loggable(&self, normalized: &str) -> String {
        if !(normalized.contains("--") || normalized.contains("/*")) {
            return normalized.to_string();
        }
        match self.proxy.masks.get(crate::DEFAULT_PROFILE) {
            Some(profile) => profile
                .mask_text(normalized, "$.statement", &mut Report::default())
                .unwrap_or_else(|| normalized.to_string()),
            None => normalized.to_string(),
        }
    }

    async fn record_decided(
        &mut self,
        classified: &Classified,
        verdict: &Verdict,
        outcome: Outcome,
        message: &str,
    ) {
        let mut ev = self.statement_event(classified, verdict);
        ev.outcome = outcome;
        ev.detail = Some(message.trim_start_matches("portcullis: ").to_string());
        self.record_now(ev).await;
    }

    async fn record_held(
        &mut self,
        classified: &Classified,
        verdict: &Verdict,
        approval: &str,
        outcome: Outcome,
        message: &str,
    ) {
        let mut ev = self.statement_event(classified, verdict);
        ev.outcome = outcome;
        ev.approval = Some(approval.to_string());
        ev.detail = Some(message.trim_start_matches("portcullis: ").to_string());
        self.record_now(ev).await;
    }

    /// A refusal before there is a statement to speak of (unparseable text, fast-path call).
    async fn record_refusal_now(&mut self, rule: &str, verdict: Option<&Verdict>, message: &str) {
        self.seq += 1;
        let mut ev = self
            .proxy
            .audit
            .event(EventType::Request, Outcome::Rejected);
        ev.source = Some(self.source.to_string());
        ev.identity = Some((*self.identity).clone());
        ev.target = Some(self.proxy.target.clone());
        ev.session = Some(self.id.clone());
        ev.request_id = Some(self.seq.to_string());
        ev.decision = Some("deny".into());
        ev.rule = Some(verdict.map_or(rule, |v| v.rule_label()).to_string());
        ev.policy_version = Some(self.proxy.policy.version().to_string());
        ev.detail = Some(message.trim_start_matches("portcullis: ").to_string());
        self.record_now(ev).await;
    }

    /// The statements of a message that was refused because another one was.
    async fn record_not_run(&mut self, admitted: &[Arc<Admitted>], why: &str) {
        for a in admitted {
            let mut ev = self.statement_event(&a.classified, &a.verdict);
            ev.outcome = Outcome::Denied;
            ev.approval = a.approval.clone();
            ev.detail = Some(format!(
                "not run: another statement of the same message was refused ({})",
                why.trim_start_matches("portcullis: ")
            ));
            self.record_now(ev).await;
        }
    }

    async fn record_now(&mut self, ev: AuditEvent) {
        if let Err(e) = self.proxy.audit.record(ev).await {
            tracing::error!(session = %self.id, "cannot record a refusal: {e}");
        }
    }

    fn finish_statement(&mut self, run: StatementRun, outcome: Outcome, detail: &str) {
        let a = &run.admitted;
        if a.classified.statement.kind.is_empty() {
            return;
        }
        let mut ev = self.statement_event(&a.classified, &a.verdict);
        ev.outcome = outcome;
        ev.approval = a.approval.clone();
        ev.duration_ms = Some(run.started.elapsed().as_secs_f64() * 1000.0);
        if let Some(s) = ev.statement.as_mut() {
            s.rows = (outcome == Outcome::Success || outcome == Outcome::Denied)
                .then_some(run.rows_sent);
        }
        if !detail.is_empty() {
            ev.detail = Some(detail.to_string());
        }
        ev.masked = summary(&run.report);
        self.events.push(ev);
    }

    /// The session ends with answers outstanding: their statements still get events.
    async fn finish_unanswered(&mut self, why: &str) {
        if let Some((_, run)) = self.deferred.take() {
            self.finish_statement(run, Outcome::Failed, &format!("not run: {why}"));
        }
        while let Some(owed) = self.owed.pop_front() {
            match owed {
                Owed::Execute(run) => {
                    self.finish_statement(run, Outcome::Failed, &format!("unfinished: {why}"))
                }
                Owed::Query(mut run) => {
                    while let Some(s) = run.statements.pop_front() {
                        self.finish_statement(s, Outcome::Failed, &format!("unfinished: {why}"));
                    }
                }
                _ => {}
            }
        }
        for ev in std::mem::take(&mut self.events) {
            self.record_now(ev).await;
        }
    }
}

/// A json or jsonb value masked whole and still valid: its format prefix (jsonb's version
/// byte, `skip` bytes) kept, then the masked text as a JSON string.
fn json_masked_whole(
    bytes: &[u8],
    skip: usize,
    profile: &Profile,
    path: &str,
    report: &mut Report,
) -> String {
    let body = bytes.get(skip..).unwrap_or_default();
    let text = std::str::from_utf8(body).unwrap_or("binary");
    let masked = profile.mask_whole(text, path, report);
    let mut out = String::from_utf8_lossy(&bytes[..skip.min(bytes.len())]).into_owned();
    out.push_str(&serde_json::Value::String(masked).to_string());
    out
}

fn run_fail(owed: &mut VecDeque<Owed>) {
    if let Some(Owed::Query(run)) = owed.front_mut() {
        run.failed = true;
    }
}

impl StatementRun {
    fn new(admitted: Arc<Admitted>) -> StatementRun {
        StatementRun {
            admitted,
            started: Instant::now(),
            report: Report::default(),
            plan: None,
            columns: Vec::new(),
            withheld: None,
            rows_sent: 0,
        }
    }

    fn set_plan(&mut self, columns: &[Column]) {
        let Some(profile) = &self.admitted.mask else {
            return;
        };
        let masked = MaskedColumns {
            profile,
            discovered: &self.admitted.discovered,
        };
        match plan_columns(columns, &masked, &self.admitted.classified.outputs) {
            Ok(plan) => {
                self.columns = columns.iter().map(|c| c.name.clone()).collect();
                self.plan = Some(plan);
            }
            Err(why) => self.withheld = Some(why),
        }
    }

    fn column_path(&self, i: usize) -> String {
        match self.columns.get(i) {
            Some(name) => name.clone(),
            None => format!("${i}"),
        }
    }
}

/// The columns column discovery tagged in the statement's tables for its mask, sampling
/// tables not sampled yet (see [`crate::discovery`]).
async fn discovered_columns(
    proxy: &PgProxy,
    name: Option<&str>,
    mask: &Option<Arc<Profile>>,
    statement: &SqlStatement,
) -> Result<Vec<String>, String> {
    match (&proxy.discovery, name, mask) {
        (Some(discovery), Some(name), Some(profile)) if discovery.enabled(name) => {
            discovery
                .columns(proxy, name, profile, &statement.tables)
                .await
        }
        _ => Ok(Vec::new()),
    }
}

/// The masking profile an allow names.
fn mask_name(verdict: &Verdict) -> Option<&str> {
    match &verdict.decision {
        Decision::Allow { mask } => mask.as_deref(),
        _ => None,
    }
}

fn summary(report: &Report) -> Option<Vec<DataFinding>> {
    (!report.is_empty()).then(|| {
        report
            .findings()
            .iter()
            .map(|f| DataFinding {
                detector: f.detector.clone(),
                path: f.path.clone(),
                count: f.count,
            })
            .collect()
    })
}

/// An error text with the values it quotes (`"..."`, `=(...)`) replaced by `[WITHHELD]`;
/// `None` when it quotes none.
fn withhold_quoted_values(text: &str) -> Option<String> {
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

/// `DELETE on customers` for messages.
fn describe(statement: &SqlStatement) -> String {
    let kind = statement.kind.to_uppercase();
    if statement.tables.is_empty() {
        kind
    } else {
        format!("{kind} on {}", statement.tables.join(", "))
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

    #[test]
    fn quoted_values_in_errors_are_withheld() {
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

    #[test]
    fn reasons_come_from_a_leading_comment() {
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
