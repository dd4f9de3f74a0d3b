//! Who is calling: turns the bearer credential of a request into a Portcullis [`Identity`].
//!
//! Every decision the gateway makes is about a named caller, so this crate is the first gate
//! on every request path. It accepts two kinds of credential:
//!
//! - **JWTs** from configured OIDC issuers (the enterprise IdP), verified against the
//!   issuer's published keys, which are found by OIDC discovery, cached, and refetched when
//!   the IdP rotates them (the private `jwks` module has the rules);
//! - **API keys** (`pcx_...`) for agents and services without an IdP identity, of which the
//!   configuration stores only SHA-256 hashes.
//!
//! It lives in its own crate so that every protocol adapter (MCP, PostgreSQL, HTTP) shares
//! one implementation of the parts that are easy to get subtly wrong: algorithm confusion,
//! audience checks, key rotation, and constant-time key lookup. Failures fail closed with
//! an [`AuthError`] whose text is safe to show to the caller.
#![forbid(unsafe_code)]

mod apikey;
mod error;
mod jwks;
mod jwt;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::IdentityConfig;
use portcullis_limits::{FailureLimits, FailureThrottle};
use portcullis_model::Identity;

pub use apikey::{API_KEY_ISSUER, API_KEY_PREFIX, generate_api_key, hash_api_key};
pub use error::{AuthError, IdentityError};
pub use jwks::SignInEndpoints;

/// The longest credential looked at; anything longer is refused as malformed before any
/// parsing, so an oversized header cannot cost decoding work.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Timeout of each request to an IdP (connect and whole response).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Authenticates bearer credentials against the configured issuers and API keys.
///
/// Cheap to share (`Arc<Authenticator>`): all mutable state is the per-issuer key cache,
/// which has its own locking.
pub struct Authenticator {
    api_keys: apikey::ApiKeys,
    /// Keyed by the exact `iss` string.
    issuers: HashMap<String, jwt::Issuer>,
    /// Failed authentications per source, shared by every listener that authenticates, and
    /// by the authenticator a configuration reload builds ([`Authenticator::keeping_failures_of`]).
    failures: Arc<FailureThrottle>,
}

impl Authenticator {
    /// Builds from config; does no network I/O (discovery and JWKS are fetched lazily on
    /// first use and cached).
    pub fn new(config: &IdentityConfig) -> Result<Authenticator, IdentityError> {
        Self::with_timing(config, jwks::Timing::default())
    }

    pub(crate) fn with_timing(
        config: &IdentityConfig,
        timing: jwks::Timing,
    ) -> Result<Authenticator, IdentityError> {
        let api_keys = apikey::ApiKeys::new(&config.api_keys)?;
        let mut issuers = HashMap::new();
        if !config.oidc.is_empty() {
            let http = reqwest::Client::builder()
                .connect_timeout(HTTP_TIMEOUT)
                .timeout(HTTP_TIMEOUT)
                // The discovery document and JWKS must come from the URL we asked; a
                // redirect elsewhere is treated as a failure.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(IdentityError::HttpClient)?;
            for (index, issuer_config) in config.oidc.iter().enumerate() {
                let issuer = jwt::Issuer::new(index, issuer_config, http.clone(), timing)?;
                let name = issuer.issuer().to_string();
                if issuers.insert(name.clone(), issuer).is_some() {
                    return Err(IdentityError::DuplicateIssuer(name));
                }
            }
        }
        let defaults = portcullis_config::Limits::default();
        Ok(Authenticator {
            api_keys,
            issuers,
            failures: Arc::new(FailureThrottle::new(FailureLimits {
                max_failures: defaults.max_auth_failures,
                window: defaults.auth_failure_window,
            })),
        })
    }

    /// Replaces the limits on failed authentications (`[gateway.limits]`).
    pub fn with_failure_limits(mut self, limits: FailureLimits) -> Authenticator {
        self.failures = Arc::new(FailureThrottle::new(limits));
        self
    }

    /// Takes over `old`'s count of failed authentications: a configuration reload replaces
    /// the keys and issuers, and a source over its budget must stay throttled across it.
    pub fn keeping_failures_of(mut self, old: &Authenticator) -> Authenticator {
        self.failures = old.failures.clone();
        self
    }

    /// The configured OIDC issuers (their `iss`), sorted: what the protected-resource
    /// metadata names as authorization servers.
    pub fn issuers(&self) -> Vec<String> {
        let mut issuers: Vec<String> = self.issuers.keys().cloned().collect();
        issuers.sort_unstable();
        issuers
    }

    /// The throttle on failed authentications: a listener asks it before checking a
    /// credential from a source, and tells it of each failure (see `portcullis_limits`).
    pub fn failures(&self) -> &FailureThrottle {
        &self.failures
    }

    /// Authenticates `credential`, the bearer value from `Authorization: Bearer <credential>`.
    ///
    /// A credential starting with `pcx_` is an API key; one with exactly two dots is a JWT;
    /// anything else is [`AuthError::Malformed`].
    pub async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        if credential.is_empty() || credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(AuthError::Malformed);
        }
        if credential.starts_with(API_KEY_PREFIX) {
            return self.api_keys.authenticate(credential);
        }
        if credential.bytes().filter(|&b| b == b'.').count() == 2 {
            return jwt::authenticate(&self.issuers, credential, jwt::Expect::Access).await;
        }
        Err(AuthError::Malformed)
    }

    /// Verifies an ID token the web console received at its sign-in callback: signed by
    /// `issuer` (with the same keys, algorithms and groups claim as its access tokens), for
    /// `client_id`, carrying `nonce`. The identity is the same as for a bearer token.
    pub async fn authenticate_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Identity, AuthError> {
        if token.is_empty() || token.len() > MAX_CREDENTIAL_BYTES {
            return Err(AuthError::Malformed);
        }
        jwt::authenticate(
            &self.issuers,
            token,
            jwt::Expect::IdToken {
                issuer,
                client_id,
                nonce,
            },
        )
        .await
    }

    /// Where people sign in at `issuer`, from its discovery document. The error says why
    /// not (unreachable, not configured, a document without the endpoints) for the operator;
    /// it names URLs, never credentials.
    pub async fn sign_in_endpoints(&self, issuer: &str) -> Result<SignInEndpoints, String> {
        let Some(found) = self.issuers.get(issuer) else {
            return Err(format!("{issuer} is not a configured issuer"));
        };
        found.sign_in_endpoints().await
    }

    /// True when at least one OIDC issuer is configured.
    pub fn has_oidc(&self) -> bool {
        !self.issuers.is_empty()
    }
}

/// The credential in an `Authorization` header value: what follows `Bearer ` (either case of
/// the scheme's first letter, surrounding spaces trimmed), or `None` if there is none.
pub fn bearer_credential(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

impl fmt::Debug for Authenticator {
    // Names only: never the key hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut issuers: Vec<&str> = self.issuers.keys().map(String::as_str).collect();
        issuers.sort_unstable();
        f.debug_struct("Authenticator")
            .field("issuers", &issuers)
            .field("api_keys", &self.api_keys.names().collect::<Vec<_>>())
            .finish()
    }
}
