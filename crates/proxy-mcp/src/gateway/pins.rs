//! Tool pins on the request path: a tool is callable only with a pin, and a changed tool
//! is withheld.

use std::sync::Arc;

use portcullis_guard::{Refusal, RefusalKind};
use portcullis_model::{EventType, Outcome};
use serde_json::Value;

use crate::link::Link;
use crate::pins::{PinCheck, fingerprint};

use super::*;

/// The refusal of a tool whose definition changed since it was pinned.
pub(super) fn pin_withheld(target: &str, tool: &str) -> Refusal {
    Refusal::new(
        RefusalKind::ToolChanged,
        format!(
            "tool {tool:?} changed since it was pinned and is withheld until an operator runs `portcullis tools accept {target} {tool}`"
        ),
    )
    .by_rule("tool-pin")
}

/// The refusal when the pin store cannot be read: fail closed.
pub(super) fn pin_store_failed(e: crate::pins::PinError) -> Refusal {
    Refusal::new(
        RefusalKind::Internal,
        format!("cannot check the tool pin: {e}"),
    )
}

impl Gateway {
    /// A tool is callable only with a pin: one the gateway has never seen listed has no
    /// fingerprint vouching for it (and was never filtered by policy for anyone). Before the
    /// first call of an unpinned tool the gateway lists the upstream's tools itself and pins
    /// it; a tool the upstream does not list, or lists changed, is refused.
    pub(super) async fn ensure_pinned(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        link: &Arc<Link>,
        upstream_modern: bool,
        tool: &str,
    ) -> Result<(), Refusal> {
        if self
            .pins
            .is_pinned(&target.name, tool)
            .await
            .map_err(pin_store_failed)?
        {
            return Ok(());
        }
        let listed = self
            .find_listed_tool(link, upstream_modern, tool)
            .await
            .map_err(|why| {
                Refusal::new(
                    RefusalKind::UpstreamFailed,
                    format!(
                        "upstream {}: tool {tool:?} has no pin and listing the upstream's tools to pin it failed: {why}",
                        target.name
                    ),
                )
            })?;
        let Some(listed) = listed else {
            return Err(Refusal::new(
                RefusalKind::Malformed,
                format!(
                    "tool {tool:?} is not in the tools/list of {}: only a listed (and pinned) tool can be called",
                    target.name
                ),
            ));
        };
        if self.tool_pin_holds(caller, target, &listed, tool).await {
            return Ok(());
        }
        Err(pin_withheld(&target.name, tool))
    }

    /// Checks a listed tool against its pin (pinning it if new). A changed tool is withheld,
    /// reported once per new fingerprint; a failing pin store withholds too (fail closed).
    pub(super) async fn tool_pin_holds(
        &self,
        caller: &Caller,
        target: &TargetRuntime,
        tool: &Value,
        name: &str,
    ) -> bool {
        match self
            .pins
            .check(&target.name, name, &fingerprint(tool))
            .await
        {
            Ok(PinCheck::New | PinCheck::Unchanged) => true,
            Ok(PinCheck::Changed {
                pinned,
                seen,
                first_report,
            }) => {
                if first_report {
                    let mut ev = self.event(
                        EventType::ToolPinMismatch,
                        Outcome::Info,
                        Some(caller),
                        &target.name,
                    );
                    ev.resource = Some(name.to_string());
                    ev.detail = Some(format!(
                        "tool {name:?} changed (pinned {pinned}, now {seen}); withheld until `portcullis tools accept {} {name}`",
                        target.name
                    ));
                    tracing::warn!(target = %target.name, tool = %name, "tool changed since pinned; withheld");
                    if let Err(e) = self.guard.record(ev).await {
                        tracing::error!("cannot record a tool pin mismatch: {e}");
                    }
                }
                false
            }
            Err(e) => {
                tracing::error!("tool pin store: {e}; withholding {name}");
                false
            }
        }
    }
}
