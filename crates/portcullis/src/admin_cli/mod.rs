//! `portcullis approvals` and `portcullis access`: the command-line client of the admin API
//! (`gateway.admin_listen`) for held requests and just-in-time grants.
//!
//! The client decides nothing: who may approve, what a grant may cover and whether a decision
//! still counts are the gateway's answers, and its error messages are shown as they come
//! (`error: <message> [<code>]`). What the client owns is the approver's view: a decision is
//! sent only after the approval was fetched and shown, and it quotes the approval's `digest`,
//! so it binds to exactly what was on the screen.
//!
//! Layout: `args` is the command line; `approvals_commands` and `access_commands` are the
//! commands; `client` (with `admin_url` and `api_error`) talks to the admin API; `records` are
//! its answers, read into small structs of our own so the client keeps working against a
//! gateway a version ahead or behind; `approval_view`, `grant_view`, `table` and `times` render
//! them; `terminal` escapes everything a requester typed before it reaches an approver's
//! screen.

mod access_commands;
mod admin_url;
mod api_error;
mod approval_view;
mod approvals_commands;
mod args;
mod client;
mod grant_view;
mod records;
pub(crate) mod table;
pub(crate) mod terminal;
mod times;

use anyhow::{Context as _, Result};

use access_commands::{GrantAsk, list_grants, request_grant, revoke_grant};
use approvals_commands::{decide, list_approvals, show_approval};
pub use args::{AccessCommand, AdminConn, ApprovalsCommand};
pub(crate) use client::Client;

/// `portcullis approvals ...`.
pub fn approvals(cmd: ApprovalsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ApprovalsCommand::List { conn, all, json } => {
                list_approvals(&Client::new(&conn)?, all, json).await
            }
            ApprovalsCommand::Show { id, conn, json } => {
                show_approval(&Client::new(&conn)?, &id, json).await
            }
            ApprovalsCommand::Approve { id, reason, conn } => {
                decide(&Client::new(&conn)?, &id, &reason, true).await
            }
            ApprovalsCommand::Deny { id, reason, conn } => {
                decide(&Client::new(&conn)?, &id, &reason, false).await
            }
        }
    })
}

/// `portcullis access ...`.
pub fn access(cmd: AccessCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            AccessCommand::Request {
                target,
                tools,
                tables,
                duration,
                reason,
                wait,
                conn,
            } => {
                let asked = GrantAsk {
                    target,
                    tools: tools.into_iter().filter(|t| !t.trim().is_empty()).collect(),
                    tables: tables
                        .into_iter()
                        .filter(|t| !t.trim().is_empty())
                        .collect(),
                    duration,
                    reason,
                };
                request_grant(&Client::new(&conn)?, asked, wait).await
            }
            AccessCommand::List { conn, json } => list_grants(&Client::new(&conn)?, json).await,
            AccessCommand::Revoke { id, reason, conn } => {
                revoke_grant(&Client::new(&conn)?, &id, &reason).await
            }
        }
    })
}

/// main() is synchronous, and one request at a time needs no more than one thread.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
