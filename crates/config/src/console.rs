//! `[console]`: the web console for approvers, reviewers and auditors, served on the admin
//! listener under `/console/`.

use std::time::Duration;

use serde::Deserialize;

use crate::de::de_duration;
use crate::sinks::Secret;
use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[console]`: off unless `enabled`; then people sign in with the OIDC issuer in
/// `[console.oidc]` (and, where `api_key_sign_in` allows it, with a human identity's API key).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Serve the console at `<admin URL>/console/`. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Groups whose members administer the gateway from the console: accept changed tool
    /// pins, see the targets, rules and sinks. Empty: nobody (the CLI remains).
    #[serde(default)]
    pub admins: Vec<String>,
    /// A signed-in session ends after this long without a request. Default: `30m`.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// A signed-in session ends this long after sign-in, however busy. Default: `12h`.
    #[serde(default = "default_absolute_timeout", deserialize_with = "de_duration")]
    pub absolute_timeout: Duration,
    /// Also let a human identity sign in by pasting its API key (the demo's way in). Never
    /// for agents or services. Default: false.
    #[serde(default)]
    pub api_key_sign_in: bool,
    /// `[console.oidc]`: sign-in with the company's identity provider.
    #[serde(default)]
    pub oidc: Option<ConsoleOidc>,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: false,
            admins: Vec::new(),
            idle_timeout: default_idle_timeout(),
            absolute_timeout: default_absolute_timeout(),
            api_key_sign_in: false,
            oidc: None,
        }
    }
}

/// `[console.oidc]`: the console as an OIDC client (authorization code flow with PKCE).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOidc {
    /// One of the `[[identity.oidc]]` issuers: its keys verify the ID token and its
    /// `groups_claim` gives the person's groups, exactly as for API callers.
    pub issuer: String,
    /// The client registered at the IdP for the console. Its redirect URI is
    /// `<admin URL>/console/auth/callback`.
    pub client_id: String,
    /// The client's secret, for a confidential client: `"..."`, `{ env = "VAR" }` or
    /// `{ file = "path" }`. Absent: a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Scopes asked for. Default: `openid profile email`; add the one that carries groups
    /// if the IdP needs it.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_absolute_timeout() -> Duration {
    Duration::from_secs(12 * 60 * 60)
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

impl Config {
    /// The console's own URL (`<admin URL>/console`), when it is enabled.
    pub fn console_url(&self) -> Option<String> {
        if !self.console.enabled {
            return None;
        }
        self.admin_url().map(|admin| format!("{admin}/console"))
    }

    pub(crate) fn validate_console(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let console = &self.console;
        if !console.enabled {
            return Ok(());
        }
        let err = |key: &'static str, m: String| at.error(key_path!["console", key], m);
        if self.gateway.admin_listen.is_none() {
            return Err(err(
                "enabled",
                "console.enabled: the console is served on the admin listener; set gateway.admin_listen".into(),
            ));
        }
        if console.oidc.is_none() && !console.api_key_sign_in {
            return Err(err(
                "enabled",
                "console.enabled: nobody could sign in; configure [console.oidc] (or, for a demo, api_key_sign_in = true)".into(),
            ));
        }
        if console.idle_timeout.is_zero() || console.absolute_timeout < console.idle_timeout {
            return Err(err(
                "absolute_timeout",
                "console.absolute_timeout: must be at least console.idle_timeout, and both above zero".into(),
            ));
        }
        // Browsers send the console's own origin with every form, and the IdP sends them back
        // to it: it must be an address they can reach, not a wildcard.
        if self.approvals.admin_url.is_none()
            && self
                .gateway
                .admin_listen
                .is_some_and(|a| a.ip().is_unspecified())
        {
            return Err(err(
                "enabled",
                "console.enabled: gateway.admin_listen is a wildcard address, which is not a URL a browser can use; set approvals.admin_url to the console's address as people reach it (https://portcullis-admin.example.com)".into(),
            ));
        }
        // The session cookie is `Secure`: a browser keeps it only over https, or on a
        // loopback address, which browsers treat as a secure context.
        if let Some(url) = self.admin_url()
            && let Some(host) = url.strip_prefix("http://")
        {
            let host = host.split('/').next().unwrap_or_default();
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(err(
                    "enabled",
                    format!(
                        "console.enabled: the console's address {url} is plain http on the network, where a browser would not keep its Secure session cookie; serve the admin listener over TLS ([gateway.tls]) or set approvals.admin_url to the https URL of the TLS proxy in front of it"
                    ),
                ));
            }
        }
        if let Some(oidc) = &console.oidc {
            let oidc_err =
                |key: &'static str, m: String| at.error(key_path!["console", "oidc", key], m);
            let issuer = self.identity.oidc.iter().find(|i| i.issuer == oidc.issuer);
            if let Some(issuer) = issuer
                && issuer.kind != portcullis_model::IdentityKind::Human
            {
                return Err(oidc_err(
                    "issuer",
                    format!(
                        "console.oidc.issuer: {:?} names {} identities (identity.oidc kind), and the console is for people",
                        oidc.issuer, issuer.kind
                    ),
                ));
            }
            if issuer.is_none() {
                return Err(oidc_err(
                    "issuer",
                    format!(
                        "console.oidc.issuer: {:?} is not one of the [[identity.oidc]] issuers, whose keys verify the ID token",
                        oidc.issuer
                    ),
                ));
            }
            if oidc.client_id.is_empty() {
                return Err(oidc_err(
                    "client_id",
                    "console.oidc.client_id: must not be empty".into(),
                ));
            }
            if !oidc.scopes.iter().any(|s| s == "openid") {
                return Err(oidc_err(
                    "scopes",
                    "console.oidc.scopes: must include \"openid\" (the ID token is what signs the person in)".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{TARGET, error, parse};

    const ISSUER: &str = "[[identity.oidc]]\nissuer = \"https://idp.example.com\"\naudience = \"api://portcullis\"\n";

    #[test]
    fn off_by_default_and_on_with_api_keys_on_loopback() {
        let config = parse(TARGET).unwrap();
        assert!(!config.console.enabled);
        assert_eq!(config.console_url(), None);
        let config = parse(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\napi_key_sign_in = true\n{TARGET}"
        ))
        .unwrap();
        assert_eq!(
            config.console_url().as_deref(),
            Some("http://127.0.0.1:8081/console")
        );
        assert_eq!(config.console.idle_timeout.as_secs(), 1800);
    }

    #[test]
    fn refusals_name_the_field() {
        let e = error(&format!(
            "[console]\nenabled = true\napi_key_sign_in = true\n{TARGET}"
        ));
        assert!(e.contains("set gateway.admin_listen"), "{e}");
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\n{TARGET}"
        ));
        assert!(e.contains("nobody could sign in"), "{e}");
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\n[console.oidc]\nissuer = \"https://other.example.com\"\nclient_id = \"c\"\n{ISSUER}{TARGET}"
        ));
        assert!(
            e.contains("not one of the [[identity.oidc]] issuers"),
            "{e}"
        );
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[approvals]\nadmin_url = \"http://portcullis.example.com:8081\"\n[console]\nenabled = true\napi_key_sign_in = true\n{TARGET}"
        ));
        assert!(e.contains("plain http on the network"), "{e}");
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\nidle_timeout = \"2h\"\nabsolute_timeout = \"1h\"\napi_key_sign_in = true\n{TARGET}"
        ));
        assert!(e.contains("at least console.idle_timeout"), "{e}");
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"0.0.0.0:8081\"\nallow_plain_http = true\n[console]\nenabled = true\napi_key_sign_in = true\n{TARGET}"
        ));
        assert!(e.contains("wildcard address"), "{e}");
        let e = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\n[console.oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n{ISSUER}kind = \"agent\"\n{TARGET}"
        ));
        assert!(e.contains("the console is for people"), "{e}");
    }

    #[test]
    fn oidc_client_parses_with_a_secret_from_the_environment() {
        let config = parse(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n[console]\nenabled = true\nadmins = [\"platform\"]\n[console.oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"portcullis-console\"\nclient_secret = {{ env = \"CONSOLE_SECRET\" }}\n{ISSUER}{TARGET}"
        ))
        .unwrap();
        let oidc = config.console.oidc.unwrap();
        assert_eq!(oidc.client_id, "portcullis-console");
        assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
        assert!(oidc.client_secret.is_some());
    }
}
