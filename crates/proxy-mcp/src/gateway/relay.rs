//! What a caller sends that is not a request: notifications (cancellations mapped to the
//! upstream's ids) and answers to the upstream's own requests.

use std::sync::Arc;

use portcullis_guard::{Refusal, RefusalKind};
use portcullis_model::{AuditEvent, EventType, Outcome};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::era::{self, ClientEra};
use crate::jsonrpc::{self, ResponseBody};

use super::*;

impl Gateway {
    /// A notification from a caller: relayed upstream (cancellations are mapped to the
    /// upstream's request id) and recorded.
    pub async fn notification(
        self: &Arc<Self>,
        caller: &Caller,
        target: &Arc<TargetRuntime>,
        session: Option<&Arc<Session>>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<(), Rejection> {
        let mut ev = self.event(
            EventType::Notification,
            Outcome::Success,
            Some(caller),
            &target.name,
        );
        ev.session = session.map(|s| s.id.clone());
        ev.action = Some(method.to_string());
        ev.arguments = params.map(|p| self.guard.digest(p.get().as_bytes()));
        let client_era = match session {
            Some(_) => ClientEra::Session,
            None => ClientEra::Stateless,
        };
        if !era::is_client_notification(client_era, method) {
            // Without an id this would reach the upstream undecided: a `tools/call` sent as
            // a notification must not slip past policy, nor a notification of the
            // upstream's own kind (`notifications/resources/updated`, say) be fed to it.
            let (kind, message) = if method.starts_with("notifications/") {
                (
                    RefusalKind::UnknownOperation,
                    format!(
                        "{method:?} is not a notification a {} client sends; the gateway relays only the ones the specification defines",
                        client_era.label()
                    ),
                )
            } else {
                (
                    RefusalKind::OutOfOrder,
                    format!(
                        "{method:?} is not a notification method; send it as a request (with an id) so it can be decided"
                    ),
                )
            };
            ev.outcome = Outcome::Rejected;
            ev.detail = Some(message.clone());
            self.record_relayed(ev, "null").await?;
            return Err(Rejection::of(&Refusal::new(kind, message), None, None));
        }
        if let Err(refusal) = self.refuse_unrecordable("null") {
            // Recorded all the same: events are still written below the reserve.
            ev.outcome = Outcome::Failed;
            ev.detail = Some("not relayed: the audit log cannot record it".into());
            let _ = self.guard.record(ev).await;
            return Err(refusal);
        }
        let link = match session {
            Some(s) if matches!(s.route, SessionRoute::Dedicated) => Some((s.link.clone(), false)),
            _ => target
                .shared
                .lock()
                .await
                .as_ref()
                .map(|(l, e)| (l.clone(), e.is_modern())),
        };
        let owner = match session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let held_here = if method == "notifications/cancelled" {
            params
                .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                .and_then(|v| v.get("requestId").map(Value::to_string))
                .and_then(|id| self.held.lock().expect("lock").remove(&(owner.clone(), id)))
        } else {
            None
        };
        if let Some(waiting) = held_here {
            // Held at the gateway: no upstream has seen it, so the cancel ends the wait here.
            let _ = waiting.send(());
            ev.detail = Some("cancelled a request held for approval".into());
            return self.record_relayed(ev, "null").await;
        }
        if let Some((link, upstream_modern)) = link {
            if method == "notifications/cancelled" {
                let request_id = params
                    .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
                    .and_then(|v| v.get("requestId").map(Value::to_string));
                if let Some(request_id) = request_id {
                    link.cancel(&owner, &request_id, "cancelled by the caller")
                        .await;
                }
            } else if !(upstream_modern && method == "notifications/initialized")
                && let Err(e) = link
                    .send(jsonrpc::notification(method, params), method)
                    .await
            {
                ev.outcome = Outcome::Failed;
                ev.detail = Some(e.to_string());
            }
        }
        self.record_relayed(ev, "null").await
    }

    /// A caller's answer to a server-to-client request (elicitation, sampling, roots).
    pub async fn client_response(
        self: &Arc<Self>,
        caller: &Caller,
        session: &Arc<Session>,
        id: &RawValue,
        body: &ResponseBody,
    ) -> Result<(), Rejection> {
        let text = jsonrpc::response(id.get(), body);
        let mut ev = self.event(
            EventType::Notification,
            Outcome::Success,
            Some(caller),
            &session.target.name,
        );
        ev.session = Some(session.id.clone());
        ev.action = Some(
            if body.is_error() {
                "response/error"
            } else {
                "response"
            }
            .into(),
        );
        ev.request_id = Some(id.get().to_string());
        ev.result = Some(self.guard.digest(text.as_bytes()));
        // Checked before the upstream's request is taken as answered, so the client can
        // answer again once the log can record it.
        if let Err(refusal) = self.refuse_unrecordable(id.get()) {
            ev.outcome = Outcome::Failed;
            ev.detail = Some("not relayed: the audit log cannot record it".into());
            let _ = self.guard.record(ev).await;
            return Err(refusal);
        }
        // Only an answer to a request the upstream made on this session is relayed: anything
        // else would feed the upstream a result it never asked for (or answer another
        // session's request on a shared link).
        let dedicated = matches!(session.route, SessionRoute::Dedicated);
        if !session
            .link
            .take_server_request(id.get(), &session.id, dedicated)
        {
            let message = format!(
                "response {} answers no request the upstream made on this session; it is not relayed",
                id.get()
            );
            ev.outcome = Outcome::Rejected;
            ev.detail = Some(message.clone());
            self.record_relayed(ev, id.get()).await?;
            return Err(Rejection::of(
                &Refusal::new(RefusalKind::OutOfOrder, message),
                Some(id.get()),
                None,
            ));
        }
        if let Err(e) = session.link.send(text, "").await {
            ev.outcome = Outcome::Failed;
            ev.detail = Some(e.to_string());
        }
        self.record_relayed(ev, id.get()).await
    }

    /// Records the event of a relayed message; a log that cannot record it refuses the
    /// message (`id`: the JSON-RPC id to answer, `null` for a notification).
    async fn record_relayed(&self, ev: AuditEvent, id: &str) -> Result<(), Rejection> {
        self.guard
            .record(ev)
            .await
            .map(|_| ())
            .map_err(|e| audit_refusal(id, &e.to_string()))
    }
}
