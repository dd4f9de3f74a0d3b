//! The `portcullis access` commands: ask for a just-in-time grant (and wait for its decision),
//! list grants, revoke one.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;
use serde_json::json;

use super::approval_view::{decision_result, grant_request_message};
use super::args::{check_id, need_reason};
use super::client::{Client, typed};
use super::grant_view::grants_table;
use super::records::{Approval, Grant, scope};
use super::terminal::{clean, clean_line};
use super::times::when;

/// How often `access request --wait` asks whether its grant request was decided.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long `--wait` rides out an unreachable gateway: a restart keeps grant requests.
const WAIT_UNREACHABLE_FOR: Duration = Duration::from_secs(60);

pub(super) struct GrantAsk {
    pub(super) target: String,
    pub(super) tools: Vec<String>,
    pub(super) tables: Vec<String>,
    pub(super) duration: String,
    pub(super) reason: String,
}

pub(super) async fn request_grant(client: &Client, asked: GrantAsk, wait: bool) -> Result<()> {
    let reason = need_reason(&asked.reason, "a grant request")?;
    let body = json!({
        "target": asked.target,
        "tools": asked.tools,
        "tables": asked.tables,
        "duration": asked.duration,
        "reason": reason,
    });
    let approval: Approval = client.post("grants", &body).await?;
    println!("{}", grant_request_message(&approval));
    if !wait {
        return Ok(());
    }
    eprintln!(
        "waiting for a decision (until {})...",
        when(&approval.expires_at, Utc::now())
    );
    let decided = wait_decided(client, &approval.id).await?;
    let now = Utc::now();
    match decided.status.as_str() {
        "approved" => {
            let grant = client.find_grant(&decided.id).await.ok().flatten();
            println!("{}", decision_result(&decided, grant.as_ref(), now));
            Ok(())
        }
        "denied" => {
            let by = decided.votes.iter().find(|v| !v.approve);
            match by {
                Some(v) => bail!(
                    "{} was denied by {}: {}",
                    decided.id,
                    v.approver.name(),
                    clean_line(&v.reason)
                ),
                None => bail!("{} was denied", decided.id),
            }
        }
        other => bail!(
            "{} is {}{}",
            decided.id,
            clean(other),
            decided
                .closed_because
                .as_deref()
                .map(|c| format!(": {}", clean_line(c)))
                .unwrap_or_default()
        ),
    }
}

/// Polls until the approval leaves `pending`. An unreachable gateway is retried for a while
/// (pending grant requests survive its restart); an answer refusing the question is not.
pub(super) async fn wait_decided(client: &Client, id: &str) -> Result<Approval> {
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        match client.get::<Approval>(&format!("approvals/{id}")).await {
            Ok(a) if a.status == "pending" => unreachable_since = None,
            Ok(a) => return Ok(a),
            Err(e) if e.downcast_ref::<reqwest::Error>().is_some() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    eprintln!("{e:#}; still trying");
                    Instant::now()
                });
                if since.elapsed() > WAIT_UNREACHABLE_FOR {
                    return Err(e.context(format!(
                        "gave up waiting for {id}; see where it stands with: portcullis approvals show {id}"
                    )));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn list_grants(client: &Client, json: bool) -> Result<()> {
    let mut body = client.get_value("grants").await?;
    let list = body["grants"].take();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let list: Vec<Grant> = typed(list, "grants")?;
    if list.is_empty() {
        println!("no grants: ask for one with `portcullis access request`");
    } else {
        print!("{}", grants_table(&list, Utc::now()));
    }
    Ok(())
}

pub(super) async fn revoke_grant(client: &Client, id: &str, reason: &str) -> Result<()> {
    check_id(id)?;
    let reason = need_reason(reason, "revoking a grant")?;
    let grant: Grant = client
        .post(&format!("grants/{id}/revoke"), &json!({ "reason": reason }))
        .await?;
    println!(
        "grant {} revoked: {} no longer holds {} on {}",
        clean(&grant.id),
        grant.holder.name(),
        scope(&grant.tools, &grant.tables),
        clean(&grant.target)
    );
    Ok(())
}
