//! Deciding a statement: the function catalog, the policy's verdict through the guard, and
//! the gateway's own protections that refuse what policy allows (masked columns used where
//! masking cannot follow them, the server's files, a setting the parser relies on).

use std::sync::Arc;

use portcullis_guard::{Exchange, Refusal, RefusalKind};
use portcullis_mask::Profile;
use portcullis_model::{Action, Decision, Operation, SqlStatement, TargetKind, Verdict};
use serde_json::json;

use super::{Admitted, Session, StatementRef, describe, recording};
use crate::PgProxy;
use crate::classify::{Classified, Outputs};
use crate::inference::MaskedColumns;

/// The protocol-neutral action policy decides on: the statement as the parser classified
/// it, its kind as the verb.
fn action_of<'a>(target: &'a str, statement: &'a SqlStatement) -> Action<'a> {
    Action {
        target,
        target_kind: TargetKind::Postgres,
        operation: Operation::Sql(statement),
        findings: &[],
        grants: &[],
    }
}

/// A refusal by the gateway's own protections, under the rule that allowed the statement.
fn unsafe_under(verdict: &Verdict, message: String) -> Refusal {
    Refusal::new(RefusalKind::Unsafe, message).by(verdict)
}

impl Session {
    /// Decides one statement in a new exchange: allowed (the exchange returned open, for
    /// the statement's run or to settle later), held until people decide, or refused (the
    /// refusal recorded before it is returned). `kind` names the message it came in
    /// (`query`, `parse`) for the recording, which keeps the statement's own text.
    pub(super) async fn admit(
        &mut self,
        classified: StatementRef,
        kind: &str,
        text: &str,
        defer_hold: bool,
    ) -> Result<(Arc<Admitted>, Exchange), Refusal> {
        let mut exchange = self.statement_exchange(Some(&classified));
        recording::record_request(
            &mut exchange,
            kind,
            || json!({ "sql": recording::recorded_text(&classified) }),
        );
        match self
            .decide(&mut exchange, classified, text, defer_hold)
            .await
        {
            Ok(admitted) => Ok((admitted, exchange)),
            Err(refusal) => {
                self.record_refusal(exchange, &refusal).await;
                Err(refusal)
            }
        }
    }

    /// The decision on one statement, inside `exchange`; a refusal is left to the caller
    /// to record.
    async fn decide(
        &mut self,
        exchange: &mut Exchange,
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
        let verdict = exchange.decide(&action_of(&proxy.target, statement));
        if let Some(why) = proxy.guard.audit_unavailable() {
            return Err(Refusal::new(
                RefusalKind::AuditUnavailable,
                format!("the audit log cannot be written ({why}); nothing runs until it can"),
            ));
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
                "standard_conforming_strings cannot be changed through the gateway".to_string();
            return Err(unsafe_under(&verdict, message));
        }
        if statement.kind == "copy" && classified.copy_server_side() {
            // Reading or writing the server's files or programs is never delegated.
            let message = "COPY to or from a file or program on the database server is refused; use COPY ... FROM STDIN / TO STDOUT".to_string();
            return Err(unsafe_under(&verdict, message));
        }
        match &verdict.decision {
            Decision::Allow { .. } if let Some(what) = self.masked_by_name(&classified.outputs) => {
                let message = format!(
                    "{} reads {what}, which is masked, through SQL: its rows would come back without the statement's text or mask; refused (run it through the protocol, Bind/Execute, where it is masked)",
                    describe(statement)
                );
                Err(unsafe_under(&verdict, message))
            }
            Decision::Allow { mask } => {
                let mask = match mask {
                    Some(name) => match exchange.masks().profile(name) {
                        Some(p) => Some(p),
                        None => {
                            let message = format!(
                                "masking profile {name} is not configured; refusing rather than returning unmasked rows"
                            );
                            return Err(Refusal::new(RefusalKind::Internal, message).by(&verdict));
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
                            "{}: {why}; the statement is refused until the masking profile knows the table's columns",
                            describe(statement)
                        );
                        return Err(Refusal::new(RefusalKind::Internal, message));
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
                        "{} uses {what}, which rule \"{}\" masks, outside its output list (WHERE, JOIN, ORDER BY, GROUP BY, HAVING, a window, LIMIT, a CASE condition, or a subquery there): which rows come back would reveal the masked values; refused (a rule with filter_masked = true allows it)",
                        describe(statement),
                        verdict.rule_label()
                    );
                    return Err(unsafe_under(&verdict, message));
                }
                // FETCH and SQL EXECUTE return rows without the query or its mask.
                if let Some(masked) = &masked
                    && let Some(what) =
                        crate::inference::masked_read_by_deferred_query(&classified.outputs, masked)
                {
                    let message = format!(
                        "{} reads {what} that rule \"{}\" masks, in a cursor or SQL-level prepared statement: the rows FETCH or EXECUTE return later carry neither the query nor this rule's mask, so the gateway could not mask them; refused (use a plain SELECT, or a protocol-level prepared statement, which are masked)",
                        describe(statement),
                        verdict.rule_label()
                    );
                    return Err(unsafe_under(&verdict, message));
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
                        "{} would copy column \"{column}\", which rule \"{}\" masks, into the database, where later reads would show it unmasked",
                        describe(statement),
                        verdict.rule_label()
                    );
                    return Err(unsafe_under(&verdict, message));
                }
                if mask.is_some() && statement.performs("copy") {
                    let message =
                        "COPY output cannot be masked; use SELECT for data this rule masks"
                            .to_string();
                    return Err(unsafe_under(&verdict, message));
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
                    columns: Default::default(),
                    discovered,
                    hold: None,
                }))
            }
            Decision::Deny { reason } => {
                let message = format!(
                    "{} refused by rule \"{}\": {reason}",
                    describe(statement),
                    verdict.rule_label()
                );
                Err(Refusal::new(RefusalKind::Denied, message).by(&verdict))
            }
            Decision::Hold(requirement) if defer_hold => Ok(Arc::new(Admitted {
                hold: Some(requirement.clone()),
                classified,
                verdict,
                mask: None,
                columns: Default::default(),
                discovered: Vec::new(),
            })),
            Decision::Hold(requirement) => {
                let requirement = requirement.clone();
                self.hold(exchange, classified, verdict, requirement, text, &[])
                    .await
            }
        }
    }

    /// A masked protocol-level portal that an SQL `FETCH`/`MOVE` names, or a masked
    /// protocol-level prepared statement that an SQL `EXECUTE` names, described for the
    /// refusal: SQL reaches them by name, and their rows would come back as the answer to a
    /// statement that carries neither their text nor their mask.
    pub(super) fn masked_by_name(&self, outputs: &Outputs) -> Option<String> {
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
    pub(super) async fn flag_functions(
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
                    "{} calls functions the gateway must look up in the server's catalog, and {e}; refused until it can be read",
                    describe(statement)
                );
                return Err(
                    Refusal::new(RefusalKind::Internal, message).by_rule("function-catalog")
                );
            }
        };
        Ok((!flagged.is_empty()).then(|| SqlStatement {
            flagged_functions: flagged,
            ..statement.clone()
        }))
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
