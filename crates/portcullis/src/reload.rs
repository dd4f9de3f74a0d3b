//! Configuration reload without a restart: `SIGHUP` (`systemctl reload portcullis`).
//!
//! The gateway reads its configuration file again and checks it exactly as at start
//! ([`compile`]: the file, the policy with its conditions, the identities, the masking
//! profiles and the recorder over them). A file that is valid and changes only what can
//! change while serving (rules, API keys, OIDC issuers, masking profiles) is put in force
//! at once, whole: a request is decided, masked and recorded under the old rules or the new,
//! never a mix (see `portcullis_guard::LiveRules`). Anything else is refused and the
//! configuration in force stays.
//!
//! What cannot change without a restart is what was bound or opened at start: the
//! listeners and `[gateway]` settings, the data directory, the targets (their upstream
//! processes, connections and listeners), TLS, the audit log and its sinks, recording,
//! approvals, evidence and the console. A reload that changes any of them is refused as a
//! whole, naming each ([`restart_only_changes`]), rather than applied in part: what the
//! file says is then either all in force or not at all.
//!
//! Every reload is an audit event, `config.reloaded`: with the new policy version when it
//! was applied (so evidence shows the policy change, CM-3), or outcome `failed` and why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use portcullis_audit::AuditLog;
use portcullis_config::{Config, RuleDecision, TargetSpec};
use portcullis_guard::{Guard, Masks, Recorder, Rules};
use portcullis_identity::Authenticator;
use portcullis_model::{EventType, Outcome};
use portcullis_policy::Policy;

/// The rules of `config`, compiled as at start. On a reload, `previous` is the
/// authenticator in force, whose count of failed authentications the new one keeps (a
/// source over its budget stays throttled); at start, the limits come from `[gateway.limits]`.
pub fn compile(config: &Config, previous: Option<&Authenticator>) -> anyhow::Result<Rules> {
    let path = config.source.path.display();
    let auth = Authenticator::new(&config.identity).with_context(|| format!("{path}: identity"))?;
    let auth = match previous {
        Some(previous) => auth.keeping_failures_of(previous),
        None => {
            let limits = &config.gateway.limits;
            auth.with_failure_limits(portcullis_limits::FailureLimits {
                max_failures: limits.max_auth_failures,
                window: limits.auth_failure_window,
            })
        }
    };
    let policy = Policy::compile(config)?;
    // The masking profiles and the recorder are compiled as at start (patterns, detector
    // names, keys from the environment, age recipients), so a file that would not start
    // is not put in force either.
    let masks = Masks::compile(&config.masks).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let recorder = Recorder::from_config(&config.recording, &masks)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    Ok(
        Rules::new(Arc::new(auth), Arc::new(policy), masks, recorder)
            .with_recording_readers(crate::recording_readers(config)),
    )
}

/// Reads the configuration file of `current` again and compiles it: the new configuration
/// and its rules, or why they cannot be put in force (the file's error with its line, or
/// each setting that needs a restart).
pub fn reload(current: &Config, in_force: &Rules) -> Result<(Config, Rules), String> {
    let config = Config::load(&current.source.path).map_err(|e| e.to_string())?;
    let rules = compile(&config, Some(&in_force.auth)).map_err(|e| format!("{e:#}"))?;
    let changes = restart_only_changes(current, &config);
    if !changes.is_empty() {
        return Err(changes
            .iter()
            .map(|change| format!("{change}: restart to apply"))
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok((config, rules))
}

/// The settings `new` changes that only a restart applies, each named (`gateway.listen
/// changed`, `targets.db added`). Empty: the reload may go ahead.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    // Each field of a section is named; a section that differs in a field not listed here
    // (one added later) is still caught, by name of the section.
    macro_rules! section {
        ($name:literal, $section:ident, [$($field:ident),* $(,)?]) => {{
            let before = changes.len();
            $(
                if old.$section.$field != new.$section.$field {
                    changes.push(concat!($name, ".", stringify!($field), " changed").to_string());
                }
            )*
            if changes.len() == before && old.$section != new.$section {
                changes.push(concat!($name, " changed").to_string());
            }
        }};
    }
    section!(
        "gateway",
        gateway,
        [
            id,
            listen,
            admin_listen,
            data_dir,
            public_url,
            allowed_origins,
            max_message_bytes,
            request_timeout,
            max_sessions,
            session_idle_timeout,
            tls,
            allow_plain_http,
            limits,
        ]
    );
    section!(
        "audit",
        audit,
        [
            durability,
            origin,
            signing_key,
            checkpoint_interval,
            checkpoint_every,
            checkpoint_dir,
            witnesses,
            space_reserve,
        ]
    );
    section!(
        "state",
        state,
        [backend, url, ca, heartbeat, replica_timeout, poll]
    );
    section!("approvals", approvals, []);
    section!("recording", recording, []);
    section!("evidence", evidence, []);
    section!("console", console, []);
    if old.sinks != new.sinks {
        changes.push("sinks changed".to_string());
    }
    changes.extend(target_changes(&old.targets, &new.targets));
    // Two rule and mask settings are read by the PostgreSQL listeners when they start.
    if new
        .targets
        .values()
        .any(|t| matches!(t, TargetSpec::Postgres(_)))
    {
        let filtering = |c: &Config| -> BTreeSet<String> {
            c.rules
                .iter()
                .filter(|r| r.filter_masked)
                .map(|r| r.name.get_ref().clone())
                .collect()
        };
        if filtering(old) != filtering(new) {
            changes.push("rules' filter_masked (read by the PostgreSQL listeners) changed".into());
        }
        let discovering = |c: &Config| -> BTreeSet<String> {
            c.masks
                .iter()
                .filter(|(_, p)| p.discover)
                .map(|(name, _)| name.clone())
                .collect()
        };
        if discovering(old) != discovering(new) {
            changes.push("masks' discover (read by the PostgreSQL listeners) changed".into());
        }
    }
    changes
}

/// Targets added, removed or changed: each runs its own upstream process, connections or
/// listener, set up at start.
fn target_changes(
    old: &BTreeMap<String, TargetSpec>,
    new: &BTreeMap<String, TargetSpec>,
) -> Vec<String> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| match (old.get(name), new.get(name)) {
            (Some(_), None) => Some(format!("targets.{name} removed")),
            (None, Some(_)) => Some(format!("targets.{name} added")),
            (Some(a), Some(b)) if a != b => Some(format!("targets.{name} changed")),
            _ => None,
        })
        .collect()
}

/// Reloads on every `SIGHUP` until the task is aborted.
#[cfg(unix)]
pub async fn on_hangup(mut current: Config, guard: Arc<Guard>, audit: AuditLog) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!(
                "cannot listen for SIGHUP, so the configuration cannot be reloaded: {e}"
            );
            return;
        }
    };
    while hangups.recv().await.is_some() {
        current = apply(current, &guard, &audit).await;
    }
}

/// One reload: puts the file's new rules in force, or keeps those in force and says why.
/// Returns the configuration in force afterwards.
pub async fn apply(current: Config, guard: &Guard, audit: &AuditLog) -> Config {
    let in_force = guard.live_rules().load();
    let path = current.source.path.display().to_string();
    let old_version = in_force.policy.version().to_string();
    match reload(&current, &in_force) {
        Ok((config, rules)) => {
            let version = rules.policy.version().to_string();
            let mut ev = audit.event(EventType::ConfigReloaded, Outcome::Info);
            ev.policy_version = Some(version.clone());
            ev.detail = Some(format!(
                "{path} reloaded: policy {version} (was {old_version}), {} rule(s), {} API key(s), {} OIDC issuer(s), {} masking profile(s)",
                rules.policy.rule_count(),
                config.identity.api_keys.len(),
                config.identity.oidc.len(),
                config.masks.len(),
            ));
            // Recorded before the swap: no request decided under the new policy precedes
            // the event that put it in force, and a change the log cannot record is not made.
            if let Err(e) = audit.record(ev).await {
                tracing::error!(
                    "{path}: reload not applied, the audit log cannot record it ({e}); policy {old_version} stays in force"
                );
                return current;
            }
            guard.reload(rules);
            tracing::info!(policy = %version, previous = %old_version, "{path}: configuration reloaded");
            if config.gateway.admin_listen.is_none()
                && config
                    .rules
                    .iter()
                    .any(|r| r.decision == RuleDecision::Hold || r.requires_grant)
            {
                tracing::warn!(
                    "rules hold requests or require grants, but gateway.admin_listen is not set: nobody can decide them, so held requests will expire"
                );
            }
            config
        }
        Err(why) => {
            tracing::error!("{path}: reload refused, policy {old_version} stays in force: {why}");
            let mut ev = audit.event(EventType::ConfigReloaded, Outcome::Failed);
            ev.policy_version = Some(old_version.clone());
            ev.detail = Some(format!(
                "reload of {path} refused, policy {old_version} stays in force: {why}"
            ));
            if let Err(e) = audit.record(ev).await {
                tracing::error!("cannot record the refused reload: {e}");
            }
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[gateway]
listen = "127.0.0.1:8080"

[targets.tools]
kind = "mcp"
command = ["server"]

[[identity.api_keys]]
name = "agent"
kind = "agent"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
groups = ["agents"]

[[rules]]
name = "read"
target = "tools"
tools = ["read_*"]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(
            Path::new("/etc/portcullis/portcullis.toml"),
            text.to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rules_identities_and_masks_may_change() {
        let new = BASE
            .replace("read_*", "write_*")
            .replace("\"agents\"", "\"ops\"")
            + "\n[masks.pii]\ndetectors = [\"pii\"]\n";
        assert_eq!(
            restart_only_changes(&parse(BASE), &parse(&new)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_restart_only_setting_is_named() {
        let new = BASE
            .replace("127.0.0.1:8080", "127.0.0.1:9090")
            .replace("[\"server\"]", "[\"other-server\"]")
            + "\n[audit]\ncheckpoint_every = 7\n\n[state]\nbackend = \"postgres\"\nurl = \"host=db\"\n\n[targets.extra]\nkind = \"mcp\"\ncommand = [\"x\"]\n";
        assert_eq!(
            restart_only_changes(&parse(BASE), &parse(&new)),
            [
                "gateway.listen changed",
                "audit.checkpoint_every changed",
                "state.backend changed",
                "state.url changed",
                "targets.extra added",
                "targets.tools changed",
            ]
        );
        let without_target = BASE
            .replace(
                "[targets.tools]\nkind = \"mcp\"\ncommand = [\"server\"]\n",
                "[targets.other]\nkind = \"mcp\"\ncommand = [\"server\"]\n",
            )
            .replace("target = \"tools\"", "target = \"other\"");
        assert_eq!(
            restart_only_changes(&parse(BASE), &parse(&without_target)),
            ["targets.other added", "targets.tools removed"]
        );
    }

    #[test]
    fn a_default_written_out_is_no_change() {
        // The comparison is of the settings in effect, not of the text.
        let new = BASE.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\nmax_sessions = 1024\n",
        );
        assert_eq!(
            restart_only_changes(&parse(BASE), &parse(&new)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn postgres_listeners_keep_their_rule_settings() {
        let pg = "\n[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://db.internal:6543/billing\"\nuser = \"ro\"\n";
        let old = format!(
            "{BASE}{pg}\n[masks.pii]\ndetectors = [\"pii\"]\n\n[[rules]]\nname = \"sql\"\ntarget = \"db\"\nallow.statements = [\"select\"]\nmask = \"pii\"\n"
        );
        let new = old.replace("mask = \"pii\"", "mask = \"pii\"\nfilter_masked = true");
        // Other changes to the same rule are no restart.
        let other = old.replace("[\"select\"]", "[\"select\", \"insert\"]");
        assert_eq!(
            restart_only_changes(&parse(&old), &parse(&other)),
            Vec::<String>::new()
        );
        assert_eq!(
            restart_only_changes(&parse(&old), &parse(&new)),
            ["rules' filter_masked (read by the PostgreSQL listeners) changed"]
        );
    }

    #[test]
    fn a_refused_reload_says_why_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, BASE).unwrap();
        let current = Config::load(&path).unwrap();
        let rules = compile(&current, None).unwrap();
        // Bad TOML: the file and line.
        std::fs::write(&path, format!("{BASE}\n[[rules]]\nname = \n")).unwrap();
        let why = reload(&current, &rules).err().unwrap();
        assert!(why.starts_with(&format!("{}:", path.display())), "{why}");
        // A condition that does not compile.
        std::fs::write(
            &path,
            format!("{BASE}\n[[rules]]\nname = \"c\"\ntarget = \"tools\"\ntools = [\"x\"]\nwhen = \"caller.groups ++ 1\"\n"),
        )
        .unwrap();
        let why = reload(&current, &rules).err().unwrap();
        assert!(why.contains(&path.display().to_string()), "{why}");
        // A restart-only change, in an otherwise valid file.
        std::fs::write(&path, BASE.replace("8080", "8081")).unwrap();
        assert_eq!(
            reload(&current, &rules).err().unwrap(),
            "gateway.listen changed: restart to apply"
        );
        // A valid one: the new rules, keeping the failure count of those in force.
        std::fs::write(&path, BASE.replace("read_*", "list_*")).unwrap();
        let (config, new_rules) = reload(&current, &rules).unwrap();
        assert_eq!(config.rules[0].tools, ["list_*"]);
        assert_ne!(new_rules.policy.version(), rules.policy.version());
        assert!(std::ptr::eq(
            new_rules.auth.failures(),
            rules.auth.failures()
        ));
    }
}
