//! The gateway's links to its upstreams: the shared link of stateless callers, the era
//! probe, and the gateway's own requests (listing tools to pin them).

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::era::{self, UpstreamEra};
use crate::jsonrpc::{self, Message, ResponseBody, code};
use crate::link::{Inbound, Link, LinkError, Outgoing, UpstreamSpec};

use super::*;

impl Gateway {
    /// The link shared by stateless callers of a target, and what the upstream is. Created on
    /// first use; re-created if the upstream went away.
    pub async fn shared_link(
        &self,
        target: &Arc<TargetRuntime>,
    ) -> Result<(Arc<Link>, UpstreamEra), LinkError> {
        let mut shared = target.shared.lock().await;
        if let Some((link, era)) = shared.as_ref()
            && !link.is_closed()
        {
            return Ok((link.clone(), era.clone()));
        }
        let (link, mut unsolicited) = self.open_link(target)?;
        let era = self.probe(target, &link).await?;
        // Stateless callers cannot be asked anything by the upstream: refuse its requests so
        // it does not wait forever, and drop its notifications.
        let answer = link.clone();
        tokio::spawn(async move {
            while let Some(text) = unsolicited.recv().await {
                if let Ok(Message::Request { id, .. }) = Message::parse(text.as_bytes(), usize::MAX)
                {
                    let reply = jsonrpc::error(
                        Some(id.get()),
                        code::METHOD_NOT_FOUND,
                        "the gateway does not relay server-to-client requests to stateless callers",
                        None,
                    );
                    let _ = answer.send(reply, "").await;
                }
            }
        });
        *shared = Some((link.clone(), era.clone()));
        Ok((link, era))
    }

    pub(super) fn open_link(
        &self,
        target: &Arc<TargetRuntime>,
    ) -> Result<(Arc<Link>, mpsc::Receiver<String>), LinkError> {
        let permit = match &target.spec {
            UpstreamSpec::Stdio { .. } => Some(
                target
                    .slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| LinkError::TooManyProcesses(target.max_processes))?,
            ),
            UpstreamSpec::Http { .. } => None,
        };
        Link::open(
            target.name.clone(),
            &target.spec,
            permit,
            &self.http,
            self.settings.max_bytes,
        )
    }

    /// Finds out which era an upstream speaks: `server/discover` first (the stdio probe the
    /// 2026-07-28 revision recommends); if that fails, the session-based handshake.
    pub(super) async fn probe(
        &self,
        target: &TargetRuntime,
        link: &Arc<Link>,
    ) -> Result<UpstreamEra, LinkError> {
        let meta = json!({ "_meta": self.own_meta() });
        let params = serde_json::value::to_raw_value(&meta).expect("serialises");
        link.set_protocol_version(era::MODERN);
        let discover = self.call(link, "server/discover", Some(&params)).await?;
        if let Ok(result) = discover
            && result["supportedVersions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v == era::MODERN))
        {
            return Ok(UpstreamEra::Modern { discover: result });
        }
        let init = json!({
            "protocolVersion": era::LEGACY[0],
            "capabilities": {},
            "clientInfo": { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
        });
        let params = serde_json::value::to_raw_value(&init).expect("serialises");
        link.set_protocol_version(era::LEGACY[0]);
        match self.call(link, "initialize", Some(&params)).await? {
            Ok(result) => {
                if let Some(v) = result["protocolVersion"].as_str() {
                    link.set_protocol_version(v);
                }
                link.send(
                    jsonrpc::notification("notifications/initialized", None),
                    "notifications/initialized",
                )
                .await?;
                Ok(UpstreamEra::Legacy { initialize: result })
            }
            Err(e) => Err(LinkError::Unreachable(format!(
                "{} answered neither server/discover nor initialize: {e}",
                target.name
            ))),
        }
    }

    /// A request of the gateway's own, awaited: Ok(Ok(result)) or Ok(Err(error text)).
    pub(super) async fn call(
        &self,
        link: &Arc<Link>,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Result<Value, String>, LinkError> {
        let mut rx = link.request(Outgoing {
            owner: "portcullis",
            client_id: "0",
            method,
            name: None,
            params,
            progress_token: None,
        })?;
        let deadline = tokio::time::sleep(self.settings.request_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Inbound::Final(text)) => return Ok(match Message::parse(text.as_bytes(), usize::MAX) {
                        Ok(Message::Response { body: ResponseBody::Result(r), .. }) => {
                            serde_json::from_str(r.get()).map_err(|e| e.to_string())
                        }
                        Ok(Message::Response { body: ResponseBody::Error(e), .. }) => Err(e.get().to_string()),
                        _ => Err("unexpected answer".into()),
                    }),
                    Some(Inbound::Interim(_)) => continue,
                    None => return Err(LinkError::Closed("no answer".into())),
                },
                _ = &mut deadline => {
                    link.cancel("portcullis", "0", "timed out").await;
                    return Err(LinkError::Timeout(method.to_string()));
                }
            }
        }
    }

    /// The `_meta` of the gateway's own requests to a 2026-07-28 upstream.
    pub(super) fn own_meta(&self) -> Value {
        json!({
            era::META_VERSION: era::MODERN,
            era::META_CAPS: {},
            era::META_CLIENT: { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
        })
    }

    /// The upstream's listing of `tool`, read page by page (bounded), or `None` when it does
    /// not list it.
    pub(super) async fn find_listed_tool(
        &self,
        link: &Arc<Link>,
        upstream_modern: bool,
        tool: &str,
    ) -> Result<Option<Value>, String> {
        const MAX_PAGES: usize = 32;
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut params = serde_json::Map::new();
            if let Some(c) = cursor.take() {
                params.insert("cursor".into(), Value::String(c));
            }
            if upstream_modern {
                params.insert("_meta".into(), self.own_meta());
            }
            let params = serde_json::value::to_raw_value(&params).expect("serialises");
            let result = self
                .call(link, "tools/list", Some(&params))
                .await
                .map_err(|e| e.to_string())??;
            let tools = result["tools"].as_array().ok_or("no tools in the answer")?;
            if let Some(found) = tools.iter().find(|t| t["name"] == tool) {
                return Ok(Some(found.clone()));
            }
            match result["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
