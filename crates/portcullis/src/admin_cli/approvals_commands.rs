//! The `portcullis approvals` commands: list, show, and a decision that is sent only after the
//! approval was fetched and shown, quoting its digest so it binds to what was on the screen.

use anyhow::Result;
use chrono::Utc;
use serde_json::json;

use super::api_error::api_code;
use super::approval_view::{approval_details, approvals_table, decision_preview, decision_result};
use super::args::{check_id, need_reason};
use super::client::{Client, typed};
use super::records::Approval;

pub(super) async fn list_approvals(client: &Client, all: bool, json: bool) -> Result<()> {
    let status = if all { "all" } else { "pending" };
    let mut body = client
        .get_value(&format!("approvals?status={status}"))
        .await?;
    let list = body["approvals"].take();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let list: Vec<Approval> = typed(list, "approvals")?;
    if list.is_empty() {
        println!(
            "{}",
            if all {
                "no approvals you may see"
            } else {
                "no approvals waiting for you"
            }
        );
    } else {
        print!("{}", approvals_table(&list, Utc::now()));
    }
    Ok(())
}

pub(super) async fn show_approval(client: &Client, id: &str, json: bool) -> Result<()> {
    check_id(id)?;
    let value = client.get_value(&format!("approvals/{id}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let approval: Approval = typed(value, "approvals/{id}")?;
    print!("{}", approval_details(&approval, Utc::now()));
    Ok(())
}

pub(super) async fn decide(client: &Client, id: &str, reason: &str, approve: bool) -> Result<()> {
    check_id(id)?;
    let reason = need_reason(reason, "a decision")?;
    let verb = if approve { "approve" } else { "deny" };
    let shown: Approval = match client.get(&format!("approvals/{id}")).await {
        Ok(a) => a,
        Err(e) if api_code(&e) == Some("not_found") => {
            return Err(explain_unseen(client, id, &reason, verb, e).await);
        }
        Err(e) => return Err(e),
    };
    // The decision binds to what is printed here: its digest goes with it.
    println!("{}", decision_preview(&shown, approve, Utc::now()));
    let body = json!({ "reason": reason, "digest": shown.digest });
    let after: Approval = client
        .post(&format!("approvals/{id}/{verb}"), &body)
        .await?;
    let grant = if after.is_grant() && after.status == "approved" {
        // The decision stands whatever this lookup does; it only adds the grant's end.
        client.find_grant(&after.id).await.ok().flatten()
    } else {
        None
    };
    println!("{}", decision_result(&after, grant.as_ref(), Utc::now()));
    Ok(())
}

/// The gateway shows an approval only to its requester and to those who may decide it, but
/// its decide endpoint says exactly why someone else may not (an id is 80 random bits: who
/// holds one has been sent it). A decision quoting an empty digest can never be accepted,
/// since every approval has one, so it is asked for that reason; if the answer is no better,
/// the original "not found" stands.
pub(super) async fn explain_unseen(
    client: &Client,
    id: &str,
    reason: &str,
    verb: &str,
    not_found: anyhow::Error,
) -> anyhow::Error {
    let body = json!({ "reason": reason, "digest": "" });
    match client
        .post_value(&format!("approvals/{id}/{verb}"), &body)
        .await
    {
        Err(e) if matches!(api_code(&e), Some(c) if c != "not_found" && c != "digest_mismatch") => {
            e
        }
        _ => not_found,
    }
}
