//! A small MCP server written with the rmcp SDK, used as a real upstream behind the gateway:
//! in process over streamable HTTP (`tests/rmcp_peers.rs`) and as a child process over stdio
//! (`examples/rmcp_stdio_server.rs`).
//!
//! `legacy_only` makes it refuse the stateless 2026-07-28 revision, so the gateway falls back
//! to the session-based handshake and gives each client session its own upstream session
//! (the path on which server-to-client requests such as elicitation are relayed).
#![allow(dead_code)]

use std::borrow::Cow;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    Implementation, ProgressNotificationParam, ProtocolVersion, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};

#[derive(Debug, rmcp::serde::Deserialize, rmcp::schemars::JsonSchema)]
#[serde(crate = "rmcp::serde")]
#[schemars(crate = "rmcp::schemars")]
pub struct AddArgs {
    pub a: i64,
    pub b: i64,
}

#[derive(Debug, rmcp::serde::Deserialize, rmcp::schemars::JsonSchema)]
#[serde(crate = "rmcp::serde")]
#[schemars(crate = "rmcp::schemars")]
pub struct EchoArgs {
    pub text: String,
}

#[derive(Debug, rmcp::serde::Deserialize, rmcp::schemars::JsonSchema)]
#[serde(crate = "rmcp::serde")]
#[schemars(crate = "rmcp::schemars")]
pub struct CountArgs {
    /// How many progress notifications to send before answering.
    pub steps: u32,
}

#[derive(Debug, rmcp::serde::Deserialize, rmcp::schemars::JsonSchema)]
#[serde(crate = "rmcp::serde")]
#[schemars(crate = "rmcp::schemars")]
pub struct SleepArgs {
    pub ms: u64,
}

/// What `ask_name` asks the client for.
#[derive(Debug, rmcp::serde::Serialize, rmcp::serde::Deserialize, rmcp::schemars::JsonSchema)]
#[serde(crate = "rmcp::serde")]
#[schemars(crate = "rmcp::schemars")]
pub struct NameAnswer {
    pub name: String,
}
rmcp::elicit_safe!(NameAnswer);

#[derive(Clone)]
pub struct Tools {
    tool_router: ToolRouter<Self>,
    legacy_only: bool,
}

impl Tools {
    pub fn new(legacy_only: bool) -> Tools {
        Tools {
            tool_router: Self::tool_router(),
            legacy_only,
        }
    }
}

#[tool_router]
impl Tools {
    #[tool(description = "Add two integers.")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Echo the text back.")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "A tool that policy hides from agents.")]
    async fn secret_tool(&self) -> String {
        "the launch codes".into()
    }

    #[tool(description = "Counts to `steps`, reporting progress at each step.")]
    async fn count(
        &self,
        Parameters(CountArgs { steps }): Parameters<CountArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let token = meta
            .get_progress_token()
            .ok_or_else(|| ErrorData::invalid_params("count needs a progress token", None))?;
        for step in 1..=steps {
            peer.notify_progress(
                ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {step}")),
            )
            .await
            .map_err(|e| ErrorData::internal_error(format!("progress: {e}"), None))?;
        }
        Ok(format!("counted to {steps}"))
    }

    #[tool(description = "Asks the user for their name (elicitation) and greets them.")]
    async fn ask_name(&self, peer: Peer<RoleServer>) -> Result<String, ErrorData> {
        match peer.elicit::<NameAnswer>("What is your name?").await {
            Ok(Some(answer)) => Ok(format!("hello, {}", answer.name)),
            Ok(None) => Ok("no answer".into()),
            Err(e) => Err(ErrorData::internal_error(
                format!("elicitation failed: {e}"),
                None,
            )),
        }
    }

    #[tool(description = "The id of the server process.")]
    async fn pid(&self) -> String {
        std::process::id().to_string()
    }

    #[tool(description = "Reports progress once, sleeps for `ms` milliseconds, then answers.")]
    async fn sleep(
        &self,
        Parameters(SleepArgs { ms }): Parameters<SleepArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> String {
        if let Some(token) = meta.get_progress_token() {
            let _ = peer
                .notify_progress(
                    ProgressNotificationParam::new(token, 0.0).with_message("sleeping"),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms}ms")
    }
}

#[tool_handler]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("rmcp-test-tools", "1.0.0"))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        if self.legacy_only {
            Cow::Owned(vec![
                ProtocolVersion::V_2025_06_18,
                ProtocolVersion::V_2025_11_25,
            ])
        } else {
            Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }
}
