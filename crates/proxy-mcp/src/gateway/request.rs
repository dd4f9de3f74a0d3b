//! One request from a caller: its exchange with the guard, the forward to the upstream,
//! and the release of the answer once its event is recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use portcullis_guard::{Exchange, Finished, Refusal, RefusalKind};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::era::{self, ClientEra, UpstreamEra};
use crate::jsonrpc;
use crate::link::{Driver, Inbound, Link, LinkError, Outgoing};
use crate::masking::MaskSet;

use super::*;

/// The rest of a forwarded request's work: relaying the upstream's messages, recording the
/// event, releasing the answer. Whoever waits for the answer polls it ([`Pump::run`]), which
/// saves a task hand-off per request; if it is dropped unfinished (the caller went away), the
/// rest runs as a task of its own, so every request still ends in its event.
pub struct Pump(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Pump {
    /// Drives the work to its end, then stays pending: meant as a `select!` branch beside
    /// the receiver of the request's messages.
    pub async fn run(&mut self) {
        if let Some(work) = self.0.as_mut() {
            work.await;
            self.0 = None;
        }
        std::future::pending::<()>().await
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(work);
        }
    }
}

/// Where a decided request goes.
pub(super) enum Forward {
    /// Answered by the gateway itself.
    Local(String),
    Upstream(InFlight),
}

/// A request in flight to its upstream.
pub(super) struct InFlight {
    pub(super) link: Arc<Link>,
    pub(super) upstream: mpsc::Receiver<Inbound>,
    pub(super) driver: Option<Driver>,
    pub(super) owner: String,
    pub(super) shape: Shape,
    /// The profiles masking what comes back (see [`MaskSet::for_caller`]).
    pub(super) mask: MaskSet,
}

/// What post-processing an upstream answer needs before it is released.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    /// `tools/list`, `resources/list`, `prompts/list`: show only what the caller's rules
    /// allow or hold (and, for tools, what matches its pin).
    pub(super) filter: Option<ListFilter>,
    pub(super) modern_client: bool,
    /// A modern client needs `resultType` added (legacy upstream) or a private cache scope
    /// set (filtered, cacheable lists); otherwise the answer passes untouched.
    pub(super) modernise: bool,
    pub(super) legacy_client_over_modern: bool,
    /// The caller takes an SSE stream, so interim messages are relayed (and recorded).
    pub(super) streams: bool,
}

impl Gateway {
    /// A request from a caller: decided, forwarded if allowed, recorded. The receiver yields
    /// interim messages and then the answer, which is released only after its event is
    /// durable.
    pub async fn request(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        incoming: IncomingRequest<'_>,
    ) -> (mpsc::Receiver<Inbound>, Pump) {
        let (tx, rx) = mpsc::channel(64);
        let mut pump = Pump(None);
        let mut exchange = self.guard.exchange(&self.origin(caller, target, session));
        {
            let ev = exchange.event();
            ev.action = Some(incoming.method.to_string());
            ev.resource = incoming.facts.name.clone();
            ev.request_id = Some(incoming.id.get().to_string());
            ev.arguments = incoming
                .params
                .map(|p| self.guard.digest(p.get().as_bytes()));
        }
        let client_era = match session {
            Some(_) => ClientEra::Session,
            None => ClientEra::Stateless,
        };
        // The steps are boxed so that this future stays small (see `server::dispatch`).
        let planned =
            match Box::pin(self.decide(caller, target, &incoming, client_era, &mut exchange)).await
            {
                Ok(Decided {
                    mask,
                    hold: Some((verdict, requirement)),
                }) => {
                    // The wait for people runs where the rest of a forwarded request runs: in
                    // the pump, which survives the caller hanging up (and then cancels).
                    let held = HeldCall {
                        id: incoming.id.to_owned(),
                        method: incoming.method.to_string(),
                        params: incoming.params.map(ToOwned::to_owned),
                        facts: incoming.facts,
                        streams: incoming.streams,
                    };
                    let gateway = self.clone();
                    let caller = caller.clone();
                    let target = target.clone();
                    let session = session.cloned();
                    pump = Pump(Some(Box::pin(async move {
                        gateway
                            .hold_then_forward(HeldRequest {
                                caller,
                                target,
                                session,
                                call: held,
                                verdict,
                                requirement,
                                mask,
                                exchange,
                                tx,
                            })
                            .await
                    })));
                    return (rx, pump);
                }
                // A request whose event could not be written is refused before it can act
                // upstream, not only withheld afterwards.
                Ok(Decided { mask, hold: None }) => match exchange.check_recordable() {
                    Err(refusal) => Err(refusal),
                    Ok(()) => {
                        Box::pin(self.forward(caller, target, session, &incoming, &mut exchange))
                            .await
                            .map(|forward| match forward {
                                Forward::Upstream(in_flight) => {
                                    Forward::Upstream(InFlight { mask, ..in_flight })
                                }
                                Forward::Local(answer) => Forward::Local(mask_local(
                                    &mask,
                                    answer,
                                    incoming.id.get(),
                                    exchange.event(),
                                )),
                            })
                    }
                },
                Err(refusal) => Err(refusal),
            };
        match planned {
            Ok(Forward::Local(answer)) => {
                // Methods a stateless upstream no longer has, or discovery synthesised from
                // a session-based upstream.
                record_final(&mut exchange, &answer, None, &tx);
                Box::pin(self.release(
                    exchange.finish(Outcome::Success),
                    answer,
                    incoming.id.get(),
                    &tx,
                ))
                .await;
            }
            Ok(Forward::Upstream(in_flight)) => {
                let gateway = self.clone();
                let target = target.clone();
                let caller = caller.clone();
                let method = incoming.method.to_string();
                let client_id = incoming.id.get().to_string();
                pump = Pump(Some(Box::pin(async move {
                    gateway
                        .pump(caller, target, in_flight, tx, exchange, method, client_id)
                        .await
                })));
            }
            Err(refusal) => {
                let request = (incoming.method, incoming.params);
                Box::pin(self.refuse(exchange, &refusal, request, incoming.id.get(), &tx)).await;
            }
        }
        (rx, pump)
    }

    /// Chooses the upstream link, answers what the upstream's era has no method for, adds
    /// the `_meta` a stateless upstream needs, and sends the request. The exchange records
    /// the request as sent (or as answered here).
    pub(super) async fn forward(
        &self,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        incoming: &IncomingRequest<'_>,
        exchange: &mut Exchange,
    ) -> Result<Forward, Refusal> {
        let IncomingRequest {
            id,
            method,
            params,
            facts,
            streams,
        } = incoming;
        let (id, method, params) = (*id, *method, *params);
        let unavailable = |e: LinkError| e.refusal(&target.name);
        let over_modern = session.and_then(|s| match &s.route {
            SessionRoute::OverModern {
                client_caps,
                client_info,
            } => Some((client_caps, client_info)),
            SessionRoute::Dedicated => None,
        });
        let (link, upstream_era) = match session {
            Some(s) if matches!(s.route, SessionRoute::Dedicated) => (s.link.clone(), None),
            // Stateless callers, and sessions over a stateless upstream, use the target's
            // shared link as it is now: if the upstream died it has been re-created.
            _ => {
                let (link, era) = self.shared_link(target).await.map_err(unavailable)?;
                (link, Some(era))
            }
        };
        let upstream_modern =
            over_modern.is_some() || upstream_era.as_ref().is_some_and(UpstreamEra::is_modern);
        // Methods a modern upstream no longer has are answered here.
        if upstream_modern && matches!(method, "ping" | "logging/setLevel") {
            record_request(exchange, method, params);
            return Ok(Forward::Local(jsonrpc::result(id.get(), "{}")));
        }
        if method == "server/discover"
            && let Some(era) = upstream_era.as_ref().filter(|e| !e.is_modern())
        {
            record_request(exchange, method, params);
            let discover = era.discover_result().to_string();
            return Ok(Forward::Local(jsonrpc::result(id.get(), &discover)));
        }
        if method == "tools/call"
            && let Some(tool) = facts.name.as_deref()
        {
            self.ensure_pinned(caller, target, &link, upstream_modern, tool)
                .await?;
        }
        let translated = match over_modern {
            Some((caps, info)) => Some(
                era::add_modern_meta(params, caps, info)
                    .map_err(|e| Refusal::new(RefusalKind::Malformed, e))?,
            ),
            None => None,
        };
        let owner = match session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let forwarded = translated.as_deref().or(params);
        let (upstream, driver) = link
            .request_driven(Outgoing {
                owner: &owner,
                client_id: id.get(),
                method,
                name: facts.name.as_deref(),
                params: forwarded,
                progress_token: facts.progress_token.clone(),
            })
            .map_err(unavailable)?;
        record_request(exchange, method, forwarded);
        Ok(Forward::Upstream(InFlight {
            mask: MaskSet::default(),
            link,
            upstream,
            driver,
            owner,
            shape: Shape {
                filter: ListFilter::of(method),
                modern_client: session.is_none(),
                modernise: session.is_none() && (!upstream_modern || era::is_cacheable(method)),
                legacy_client_over_modern: over_modern.is_some(),
                streams: *streams,
            },
        }))
    }

    /// Answers a refused request with its JSON-RPC error, recorded with the refusal's
    /// outcome and message. A recording keeps the request as the caller sent it (`method`
    /// and `params`: it went nowhere) and the refusal.
    pub(super) async fn refuse(
        &self,
        mut exchange: Exchange,
        refusal: &Refusal,
        (method, params): (&str, Option<&RawValue>),
        id: &str,
        tx: &mpsc::Sender<Inbound>,
    ) {
        record_request(&mut exchange, method, params);
        caller_left(&mut exchange, tx);
        let (_, answer) = render(refusal, Some(id), Some(exchange.id()));
        self.release(exchange.refuse(refusal), answer, id, tx).await;
    }

    /// Records a request's event and then releases its answer: the last step of every
    /// request. An answer whose event cannot be written is withheld (fail closed).
    pub(super) async fn release(
        &self,
        mut finished: Finished,
        answer: String,
        id: &str,
        tx: &mpsc::Sender<Inbound>,
    ) {
        finished.event().result = Some(self.guard.digest(answer.as_bytes()));
        let answer = match finished.record().await {
            Ok(()) => answer,
            Err(e) => audit_refusal(id, &e.to_string()).body,
        };
        let _ = tx.send(Inbound::Final(answer)).await;
    }
}
