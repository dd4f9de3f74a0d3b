//! `[identity]`: who may call, by OIDC bearer token or API key.

use std::collections::HashSet;
use std::time::Duration;

use portcullis_model::IdentityKind;
use serde::Deserialize;
use toml::Spanned;

use crate::ConfigError;
use crate::de::{de_duration, de_one_or_many};
use crate::spans::{Locator, key_path};

/// `[identity]`: who may call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `[[identity.oidc]]`: trusted OIDC issuers whose bearer JWTs identify callers.
    #[serde(default)]
    pub oidc: Vec<OidcIssuer>,
    /// `[[identity.api_keys]]`: API keys of agents and services, stored as SHA-256 only.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
}

/// One trusted OIDC issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// The issuer URL; must equal the tokens' `iss` claim. Its discovery document is read
    /// from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain one of them.
    #[serde(deserialize_with = "de_one_or_many")]
    pub audience: Vec<String>,
    /// Where the JWKS is, if not the discovery document's `jwks_uri`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The claim holding the caller's groups: a name (`groups`, Entra style) or a dotted
    /// path to a nested claim (`realm_access.roles`, Keycloak style). Default: `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// What kind of identity this issuer's tokens name. Default: `human`.
    #[serde(default = "default_human")]
    pub kind: IdentityKind,
    /// Allowed signature algorithms. Default: RS256, PS256, ES256, EdDSA. Symmetric (HS*)
    /// algorithms and `none` are never accepted.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`. Default: `60s`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The identity's name: the subject in policy and audit events.
    pub name: String,
    /// `agent` (default), `service` or `human`.
    #[serde(default = "default_agent")]
    pub kind: IdentityKind,
    /// Hex SHA-256 of the key (`portcullis keys new` prints it). Never the key itself.
    pub sha256: Spanned<String>,
    /// Groups this identity belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl IdentityConfig {
    /// API key hashes are well formed and unique; OIDC issuers are URLs with an audience and
    /// asymmetric algorithms only.
    pub(crate) fn validate(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let mut hashes = HashSet::new();
        let mut key_names = HashSet::new();
        for (i, key) in self.api_keys.iter().enumerate() {
            let hash = key.sha256.get_ref();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(at.error_at(
                    key.sha256.span(),
                    format!("identity.api_keys[{i}].sha256: must be 64 hex digits (the SHA-256 of the key, as `portcullis keys new` prints it)"),
                ));
            }
            if !hashes.insert(hash.to_ascii_lowercase()) {
                return Err(at.error_at(
                    key.sha256.span(),
                    format!("identity.api_keys[{i}].sha256: the same key hash is configured twice"),
                ));
            }
            if !key_names.insert(key.name.as_str()) {
                return Err(at.error_at(
                    key.sha256.span(),
                    format!(
                        "identity.api_keys[{i}].name: {:?} is used by another key",
                        key.name
                    ),
                ));
            }
        }
        for (i, issuer) in self.oidc.iter().enumerate() {
            let err = |m: String| at.error(key_path!["identity", "oidc", i, "issuer"], m);
            if !issuer.issuer.starts_with("https://") && !issuer.issuer.starts_with("http://") {
                return Err(err(format!(
                    "identity.oidc[{i}].issuer: must be an http:// or https:// URL (use https outside tests)"
                )));
            }
            if issuer.audience.is_empty() {
                return Err(err(format!(
                    "identity.oidc[{i}].audience: at least one audience is required"
                )));
            }
            for alg in &issuer.algorithms {
                if !matches!(
                    alg.as_str(),
                    "RS256"
                        | "RS384"
                        | "RS512"
                        | "PS256"
                        | "PS384"
                        | "PS512"
                        | "ES256"
                        | "ES384"
                        | "EdDSA"
                ) {
                    return Err(err(format!(
                        "identity.oidc[{i}].algorithms: {alg:?} is not accepted (asymmetric algorithms only: RS256, PS256, ES256, EdDSA, ...)"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn default_groups_claim() -> String {
    "groups".into()
}
fn default_human() -> IdentityKind {
    IdentityKind::Human
}
fn default_agent() -> IdentityKind {
    IdentityKind::Agent
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use crate::tests::parse;

    #[test]
    fn bad_api_key_hash_is_refused() {
        let err = parse("[[identity.api_keys]]\nname = \"a\"\nsha256 = \"abc\"\n").unwrap_err();
        assert!(err.to_string().starts_with("portcullis.toml:3:"), "{err}");
    }

    #[test]
    fn audience_accepts_one_or_many() {
        let one = parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = \"a\"\n").unwrap();
        assert_eq!(one.identity.oidc[0].audience, vec!["a"]);
        let many =
            parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = [\"a\", \"b\"]\n")
                .unwrap();
        assert_eq!(many.identity.oidc[0].audience.len(), 2);
    }

    #[test]
    fn symmetric_algorithm_is_refused() {
        let err = parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n").unwrap_err();
        assert!(err.to_string().contains("HS256"), "{err}");
        assert!(err.to_string().starts_with("portcullis.toml:2:"), "{err}");
    }
}
