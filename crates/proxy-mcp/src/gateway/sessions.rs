//! Sessions of session-based (2025-era) clients: `initialize`, the per-identity and
//! gateway-wide limits, idle reclaim and sweep, and the end of a session.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use portcullis_guard::{Exchange, Refusal, RefusalKind};
use portcullis_mask::Report;
use portcullis_model::{EventType, Identity, Outcome};
use rand::RngCore as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::era;
use crate::jsonrpc::{self, Message, ResponseBody};
use crate::link::{Inbound, Link, LinkError, Outgoing};
use crate::stream::StreamBuf;

use super::*;

/// How a session-based client reaches its upstream.
pub(super) enum SessionRoute {
    /// A dedicated upstream session (a child process, or an HTTP session) that sees the
    /// client's own `initialize`.
    Dedicated,
    /// The upstream is stateless: the gateway answered `initialize` and adds the client's
    /// capabilities to every request's `_meta`.
    OverModern {
        client_caps: Value,
        client_info: Value,
    },
}

/// A session of a session-based (2025-era) client.
pub struct Session {
    pub id: String,
    pub target: Arc<TargetRuntime>,
    pub owner: Arc<Identity>,
    pub(super) link: Arc<Link>,
    pub(super) route: SessionRoute,
    /// The standalone stream (GET) carrying upstream messages not tied to a request.
    pub standalone: Arc<StreamBuf>,
    /// How far the standalone stream has been delivered, so a new GET continues there.
    pub standalone_cursor: AtomicU64,
    /// Recent per-request streams, for `Last-Event-ID` resumption.
    pub(super) streams: Mutex<VecDeque<Arc<StreamBuf>>>,
    pub(super) next_stream: AtomicU64,
    pub(super) last_seen: Mutex<Instant>,
    pub(super) started: Instant,
}

pub(super) const KEPT_STREAMS: usize = 64;

impl Session {
    pub fn belongs_to(&self, identity: &Identity) -> bool {
        self.owner.issuer == identity.issuer && self.owner.subject == identity.subject
    }

    pub fn touch(&self) {
        *self.last_seen.lock().expect("lock") = Instant::now();
    }

    /// A new resumable stream for a request's answer.
    pub fn open_stream(&self) -> Arc<StreamBuf> {
        let buf = StreamBuf::new(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let mut streams = self.streams.lock().expect("lock");
        streams.push_back(buf.clone());
        while streams.len() > KEPT_STREAMS {
            streams.pop_front();
        }
        buf
    }

    pub fn find_stream(&self, id: u64) -> Option<Arc<StreamBuf>> {
        if id == self.standalone.id {
            return Some(self.standalone.clone());
        }
        self.streams
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }
}

/// How many of `sessions` belong to `identity` on `target`.
pub(super) fn sessions_of(
    sessions: &HashMap<String, Arc<Session>>,
    identity: &Identity,
    target: &str,
) -> usize {
    own_sessions(sessions, identity, target).count()
}

/// The sessions `identity` holds on `target`.
pub(super) fn own_sessions<'a>(
    sessions: &'a HashMap<String, Arc<Session>>,
    identity: &'a Identity,
    target: &'a str,
) -> impl Iterator<Item = &'a Arc<Session>> {
    sessions
        .values()
        .filter(move |s| s.belongs_to(identity) && &*s.target.name == target)
}

impl Gateway {
    /// The exchange of an `initialize` request.
    fn initialize_exchange(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        id: &RawValue,
        params: Option<&RawValue>,
    ) -> Exchange {
        let mut exchange = self.guard.exchange(&self.origin(caller, target, None));
        let ev = exchange.event();
        ev.action = Some("initialize".into());
        ev.request_id = Some(id.get().to_string());
        ev.arguments = params.map(|p| self.guard.digest(p.get().as_bytes()));
        exchange
    }

    /// `initialize` from a session-based client: opens a gateway session.
    pub async fn initialize(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        id: &RawValue,
        params: Option<&RawValue>,
    ) -> Result<(Arc<Session>, String), Rejection> {
        // Taken by an opened session, whose `session.start` is this request's event.
        let mut opening = Some(self.initialize_exchange(caller, target, id, params));
        let not_opened = match opening.as_ref().map(Exchange::check_recordable) {
            Some(Err(refusal)) => NotOpened::Refused(refusal),
            _ => match self
                .open_session(caller, target, id, params, &mut opening)
                .await
            {
                Ok(opened) => return Ok(opened),
                Err(not_opened) => not_opened,
            },
        };
        // A session that could not be opened is an attempt all the same: record it (with an
        // exchange of its own if the session's start took this one, recorded before it was
        // lost to a concurrent initialize).
        let mut exchange =
            opening.unwrap_or_else(|| self.initialize_exchange(caller, target, id, params));
        record_request(&mut exchange, "initialize", params);
        let (finished, rejection) = match not_opened {
            NotOpened::Refused(refusal) => {
                let rejection = Rejection::of(&refusal, Some(id.get()), None);
                (exchange.refuse(&refusal), rejection)
            }
            NotOpened::Upstream(answer) => {
                record_released(&mut exchange, &answer, None);
                let error = serde_json::from_str::<Value>(&answer)
                    .map(|v| v["error"].clone())
                    .unwrap_or(Value::Null);
                exchange.event().detail = error["message"].as_str().map(str::to_string);
                let rejection = Rejection {
                    status: http::StatusCode::OK,
                    body: answer,
                };
                (exchange.finish(Outcome::Failed), rejection)
            }
        };
        let mut finished = finished;
        finished.event().result = Some(self.guard.digest(rejection.body.as_bytes()));
        match finished.record().await {
            Ok(()) => Err(rejection),
            Err(e) => Err(audit_refusal(id.get(), &e.to_string())),
        }
    }

    /// Opens a session; its `session.start` is recorded as the end of `exchange`, the
    /// `initialize` request's, which it takes (with the recording of the handshake).
    pub(super) async fn open_session(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        id: &RawValue,
        params: Option<&RawValue>,
        exchange: &mut Option<Exchange>,
    ) -> Result<(Arc<Session>, String), NotOpened> {
        let started = Instant::now();
        if self.session_count() >= self.settings.max_sessions {
            return Err(self.session_limit().into());
        }
        self.reclaim_idle_session(caller, target).await;
        self.admit_session(caller, target)?;
        let unreachable = |e: LinkError| NotOpened::Refused(e.refusal(&target.name));
        let init: Value = params
            .map(|p| serde_json::from_str(p.get()))
            .transpose()
            .ok()
            .flatten()
            .unwrap_or(Value::Null);
        // What the session carries back (the answer to `initialize`, the standalone stream)
        // answers no one decided call: masked with every profile of the caller's rules here.
        let masks = self.answer_masks(caller, target, None, None)?;
        let mut raw_id = [0u8; 16];
        rand::rng().fill_bytes(&mut raw_id);
        let session_id = hex::encode(raw_id);
        let (shared, upstream_era) = self.shared_link(target).await.map_err(unreachable)?;
        let (link, route, answer, unsolicited) = if upstream_era.is_modern() {
            let requested = init["protocolVersion"].as_str().unwrap_or(era::LEGACY[0]);
            let result = upstream_era.initialize_result(requested);
            let route = SessionRoute::OverModern {
                client_caps: init
                    .get("capabilities")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                client_info: init
                    .get("clientInfo")
                    .cloned()
                    .unwrap_or_else(|| json!({"name": "unknown"})),
            };
            (
                shared,
                route,
                jsonrpc::result(id.get(), &result.to_string()),
                None,
            )
        } else {
            let (link, unsolicited) = self.open_link(target).map_err(unreachable)?;
            let mut rx = link
                .request(Outgoing {
                    owner: &session_id,
                    client_id: id.get(),
                    method: "initialize",
                    name: None,
                    params,
                    progress_token: None,
                })
                .map_err(unreachable)?;
            let answer = loop {
                match tokio::time::timeout(self.settings.request_timeout, rx.recv()).await {
                    Ok(Some(Inbound::Final(text))) => break text,
                    Ok(Some(Inbound::Interim(_))) => continue,
                    Ok(None) => {
                        link.close().await;
                        return Err(unreachable(LinkError::Unreachable(
                            "no answer to initialize".into(),
                        )));
                    }
                    Err(_) => {
                        link.close().await;
                        return Err(unreachable(LinkError::Timeout("initialize".into())));
                    }
                }
            };
            let negotiated = match Message::parse(answer.as_bytes(), self.settings.max_bytes) {
                Ok(Message::Response {
                    body: ResponseBody::Result(r),
                    ..
                }) => serde_json::from_str::<Value>(r.get())
                    .ok()
                    .and_then(|v| v["protocolVersion"].as_str().map(str::to_string)),
                _ => None,
            };
            let Some(version) = negotiated else {
                // The upstream refused the handshake: pass its answer on, keep no session.
                link.close().await;
                return Err(NotOpened::Upstream(answer));
            };
            link.set_protocol_version(&version);
            link.listen();
            (link, SessionRoute::Dedicated, answer, Some(unsolicited))
        };
        let mut masked = Report::default();
        let Some(answer) = masks.mask_message(answer, &mut masked) else {
            // Unreachable (the answer was parsed above, or made here), but never unmasked.
            if matches!(route, SessionRoute::Dedicated) {
                link.close().await;
            }
            let message = format!(
                "upstream {} answered initialize with a message the masking profile cannot read",
                target.name
            );
            return Err(Refusal::new(RefusalKind::Internal, message).into());
        };
        let session = Arc::new(Session {
            id: session_id,
            target: target.clone(),
            owner: caller.identity.clone(),
            link,
            route,
            standalone: StreamBuf::new(0),
            standalone_cursor: AtomicU64::new(0),
            streams: Mutex::new(VecDeque::new()),
            next_stream: AtomicU64::new(1),
            last_seen: Mutex::new(Instant::now()),
            started,
        });
        if let Some(mut unsolicited) = unsolicited {
            let standalone = session.standalone.clone();
            let masks = masks.clone();
            tokio::spawn(async move {
                while let Some(text) = unsolicited.recv().await {
                    // What no request's event records is not counted either.
                    if let Some(text) = masks.mask_message(text, &mut Report::default()) {
                        standalone.push(text);
                    }
                }
                standalone.finish();
            });
        }
        let Some(mut start) = exchange.take() else {
            // Unreachable: `initialize` hands its exchange to the one session it opens.
            session.link.close().await;
            return Err(Refusal::new(RefusalKind::Internal, "initialize has no exchange").into());
        };
        record_request(&mut start, "initialize", params);
        record_released(&mut start, &answer, None);
        let ev = start.event();
        ev.event_type = EventType::SessionStart;
        ev.session = Some(session.id.clone());
        ev.detail = init["clientInfo"]["name"].as_str().map(|name| {
            format!(
                "client {name}, protocol {}",
                init["protocolVersion"].as_str().unwrap_or("?")
            )
        });
        ev.masked = summary(&masked);
        let mut start = start.finish(Outcome::Info);
        start.event().result = Some(self.guard.digest(answer.as_bytes()));
        if let Err(e) = start.record().await {
            session.link.close().await;
            return Err(Refusal::audit_unavailable(e).into());
        }
        {
            let mut sessions = self.sessions.lock().expect("lock");
            // Checked again here: concurrent initializes all passed the first check.
            let own = sessions_of(&sessions, &caller.identity, &target.name);
            if sessions.len() < self.settings.max_sessions && own < target.max_sessions_per_identity
            {
                sessions.insert(session.id.clone(), session.clone());
                drop(sessions);
                return Ok((session, answer));
            }
        }
        self.end_unregistered(&session, caller).await;
        // Lost the race for the last slot: the caller's own limit, or the gateway's.
        self.admit_session(caller, target)?;
        Err(self.session_limit().into())
    }

    /// The refusal of a session past the gateway's limit.
    fn session_limit(&self) -> Refusal {
        Refusal::new(
            RefusalKind::OverLimit,
            format!(
                "the gateway has reached its limit of {} sessions; try again later",
                self.settings.max_sessions
            ),
        )
    }

    /// When the caller holds its limit of sessions on the target, ends its least recently
    /// used one if that has been idle for `session_reclaim_after`: a client that abandons
    /// its sessions (never sends DELETE) is not locked out until they expire, and since only
    /// the caller's own session is ended, no one else loses anything. While all of them are
    /// active, nothing is ended and [`Gateway::admit_session`] refuses.
    pub(super) async fn reclaim_idle_session(&self, caller: &Caller, target: &TargetRuntime) {
        let reclaimable = {
            let sessions = self.sessions.lock().expect("lock");
            if sessions_of(&sessions, &caller.identity, &target.name)
                < target.max_sessions_per_identity
            {
                return;
            }
            own_sessions(&sessions, &caller.identity, &target.name)
                .map(|s| (*s.last_seen.lock().expect("lock"), s.id.clone()))
                .min()
                .filter(|(seen, _)| seen.elapsed() >= target.session_reclaim_after)
        };
        if let Some((seen, id)) = reclaimable {
            let why = format!(
                "ended to admit a new session of its owner, who held its limit (targets.{}.max_sessions_per_identity = {}); idle for {}s, past targets.{}.session_reclaim_after = {}s",
                target.name,
                target.max_sessions_per_identity,
                seen.elapsed().as_secs(),
                target.name,
                target.session_reclaim_after.as_secs()
            );
            self.end_session(&id, Some(caller), &why).await;
        }
    }

    /// Before anything is spawned for a session: some rule on the target must apply to the
    /// caller (otherwise it could do nothing there but hold a process), and the caller must
    /// be under its own limit of sessions on the target, so one key cannot take every
    /// process slot from the others.
    pub(super) fn admit_session(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
    ) -> Result<(), Refusal> {
        if !self.guard.any_rule_for(&caller.identity, &target.name) {
            return Err(Refusal::new(
                RefusalKind::Denied,
                no_rule_message(&caller.identity, &target.name),
            ));
        }
        let own = sessions_of(
            &self.sessions.lock().expect("lock"),
            &caller.identity,
            &target.name,
        );
        if own >= target.max_sessions_per_identity {
            return Err(Refusal::new(
                RefusalKind::OverQuota,
                format!(
                    "{} holds {own} sessions on {}, its limit (targets.{}.max_sessions_per_identity = {}), all active within targets.{}.session_reclaim_after = {}s; end one (DELETE) or let one go idle first",
                    caller.identity.subject,
                    target.name,
                    target.name,
                    target.max_sessions_per_identity,
                    target.name,
                    target.session_reclaim_after.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// The session with this id, if it exists, belongs to this caller and is alive. A
    /// session whose upstream died is ended here, so the client is told (404) to start anew.
    pub async fn session(&self, id: &str, caller: &Caller, target: &str) -> Option<Arc<Session>> {
        let session = self.sessions.lock().expect("lock").get(id).cloned()?;
        if !session.belongs_to(&caller.identity) || &*session.target.name != target {
            return None;
        }
        if matches!(session.route, SessionRoute::Dedicated) && session.link.is_closed() {
            self.end_session(&session.id, Some(caller), "the upstream went away")
                .await;
            return None;
        }
        session.touch();
        Some(session)
    }

    /// Ends a session: closes its upstream and records the end.
    pub async fn end_session(&self, id: &str, caller: Option<&Caller>, why: &str) -> bool {
        let Some(session) = self.sessions.lock().expect("lock").remove(id) else {
            return false;
        };
        if matches!(session.route, SessionRoute::Dedicated) {
            session.link.close().await;
        }
        session.standalone.finish();
        let owner = Caller {
            identity: session.owner.clone(),
            source: caller.map(|c| c.source.clone()).unwrap_or_default(),
        };
        let mut ev = self.event(
            EventType::SessionEnd,
            Outcome::Info,
            Some(&owner),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.detail = Some(why.to_string());
        ev.duration_ms = Some(session.started.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = self.guard.record(ev).await {
            tracing::error!("cannot record the end of session {}: {e}", session.id);
        }
        true
    }

    /// Ends sessions idle for longer than the configured timeout. Run periodically.
    pub async fn sweep_idle(&self) {
        let idle: Vec<String> = self
            .sessions
            .lock()
            .expect("lock")
            .values()
            .filter(|s| s.last_seen.lock().expect("lock").elapsed() > self.settings.idle_timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            self.end_session(&id, None, "idle timeout").await;
        }
    }

    /// Undoes a session that lost the race for the last slot: closes its upstream and
    /// records its end, so its recorded start has a matching end.
    pub(super) async fn end_unregistered(&self, session: &Arc<Session>, caller: &Caller) {
        if matches!(session.route, SessionRoute::Dedicated) {
            session.link.close().await;
        }
        let mut ev = self.event(
            EventType::SessionEnd,
            Outcome::Info,
            Some(caller),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.detail = Some("session limit reached".into());
        if let Err(e) = self.guard.record(ev).await {
            tracing::error!("cannot record the end of session {}: {e}", session.id);
        }
    }

    /// Ends every session (shutdown).
    pub async fn end_all(&self) {
        let ids: Vec<String> = self
            .sessions
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.end_session(&id, None, "gateway shutdown").await;
        }
    }
}

/// Why `initialize` opened no session: the gateway refused, or the upstream refused the
/// handshake (its answer is passed on as it is).
pub(super) enum NotOpened {
    Refused(Refusal),
    Upstream(String),
}

impl From<Refusal> for NotOpened {
    fn from(refusal: Refusal) -> NotOpened {
        NotOpened::Refused(refusal)
    }
}
