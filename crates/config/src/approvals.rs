//! `[approvals]`: who decides held requests and grants, and how they are told.

use serde::Deserialize;

use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[approvals]`: how people are asked, and who may decide in an emergency.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// Groups whose members may approve any held request or grant, their own included, in an
    /// emergency. Such a decision needs a reason and is flagged `break_glass` in the audit log.
    #[serde(default)]
    pub break_glass_groups: Vec<String>,
    /// The admin API's URL as approvers reach it, for links in notifications. Default:
    /// `http://<gateway.admin_listen>`.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Where approvers are told that something waits for them.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// `[[approvals.webhooks]]`: one notification endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// An `https://` URL (`http://` only on loopback).
    pub url: String,
    /// `json` (a generic payload, the default) or `slack` (a Slack incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding the HMAC-SHA256 key that signs each delivery
    /// (`Portcullis-Signature: t=<unix time>,v1=<hex HMAC of "<t>.<body>">`). Required.
    pub secret_env: String,
    /// Deliveries tried per notification, with exponential backoff (1 s, 2 s, 4 s ... capped
    /// at 60 s). Default: 5.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

impl Config {
    /// The admin API's URL for approvers: configured, or derived from `admin_listen`.
    pub fn admin_url(&self) -> Option<String> {
        if let Some(url) = &self.approvals.admin_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let addr = self.gateway.admin_listen?;
        let scheme = if self.gateway.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{addr}"))
    }

    pub(crate) fn validate_approvals(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        if let Some(admin) = self.gateway.admin_listen
            && self.gateway.tls.is_none()
            && !self.gateway.allow_plain_http
            && !admin.ip().is_loopback()
        {
            return Err(at.error(
                key_path!["gateway", "admin_listen"],
                format!(
                    "gateway.admin_listen: {admin} is reachable from the network, so approvers' credentials would cross it in clear text; configure [gateway.tls], or set gateway.allow_plain_http = true behind a TLS proxy"
                ),
            ));
        }
        for (i, hook) in self.approvals.webhooks.iter().enumerate() {
            let err = |m: String| at.error(key_path!["approvals", "webhooks", i, "url"], m);
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| hook.url.starts_with(p));
            if !hook.url.starts_with("https://") && !loopback {
                return Err(err(format!(
                    "approvals.webhooks[{i}].url: {:?} must be an https:// URL (http:// only on loopback): notifications name people and requests",
                    hook.url
                )));
            }
            if hook.secret_env.is_empty() {
                return Err(err(format!(
                    "approvals.webhooks[{i}].secret_env: must name an environment variable"
                )));
            }
            if !(1..=20).contains(&hook.max_attempts) {
                return Err(err(format!(
                    "approvals.webhooks[{i}].max_attempts: must be between 1 and 20"
                )));
            }
        }
        Ok(())
    }
}

fn default_webhook_attempts() -> u32 {
    5
}

#[cfg(test)]
mod tests {
    use crate::tests::{TARGET, parse};

    #[test]
    fn approval_settings_are_checked() {
        let rule = |extra: &str| {
            parse(&format!(
                "{TARGET}[[rules]]\nname = \"r\"\ntarget = \"tools\"\n{extra}\n"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let cases = [
            (
                "decision = \"deny\"\nrequires_grant = true\napprovers = [\"a\"]",
                "rules[0] (r).requires_grant: only an allow rule can require a grant",
            ),
            (
                "requires_grant = true",
                "must name the groups that may approve grants",
            ),
            (
                "decision = \"hold\"\napprovers = [\"a\"]\nmin_approvals = 0",
                "min_approvals: must be at least 1",
            ),
            (
                "requires_grant = true\napprovers = [\"a\"]\nmax_grant = \"10s\"",
                "max_grant: must be at least 1m",
            ),
        ];
        for (extra, expected) in cases {
            let err = rule(extra).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        assert!(rule("requires_grant = true\napprovers = [\"a\"]\nmax_grant = \"2h\"").is_ok());

        let err = parse(
            "[[approvals.webhooks]]\nurl = \"http://hooks.example.com/x\"\nsecret_env = \"S\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be an https:// URL"), "{err}");
        assert!(
            parse("[[approvals.webhooks]]\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"S\"\n")
                .is_ok()
        );
        let err = parse("[gateway]\nadmin_listen = \"0.0.0.0:8081\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin_listen"), "{err}");
        let config = parse("[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n").unwrap();
        assert_eq!(config.admin_url().as_deref(), Some("http://127.0.0.1:8081"));
    }

    #[test]
    fn a_webhook_error_names_its_own_line() {
        let err = parse(
            "[[approvals.webhooks]]\nurl = \"https://a.example.com\"\nsecret_env = \"S\"\n[[approvals.webhooks]]\nurl = \"https://a.example.com\"\nsecret_env = \"\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("portcullis.toml:5: approvals.webhooks[1].secret_env"),
            "{err}"
        );
    }
}
