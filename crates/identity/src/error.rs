//! The two error types: [`AuthError`] for a caller whose credential was refused, and
//! [`IdentityError`] for configuration the authenticator cannot work with.

use std::fmt;

/// Why a credential was refused.
///
/// The variants carry no data on purpose: the `Display` text is what the caller is told (in
/// a `WWW-Authenticate` header or a JSON-RPC error), so it must never echo the token, a claim
/// value, a key id, or an internal URL. Details that help an operator are logged with
/// `tracing` at the point of failure instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthError {
    /// The credential is neither a well-formed API key nor a well-formed JWT, or is too long.
    Malformed,
    /// The credential is well formed but not valid: a bad signature, an unknown API key, a
    /// missing required claim.
    InvalidToken,
    /// The token's `exp` is in the past (beyond the configured leeway).
    Expired,
    /// The token's `nbf` is in the future (beyond the configured leeway).
    NotYetValid,
    /// The token's `iss` is not a configured issuer.
    UnknownIssuer,
    /// The token's `aud` names none of the issuer's configured audiences.
    BadAudience,
    /// The token's `alg` is `none`, symmetric, not allowed for its issuer, or does not fit
    /// the key it names.
    UnsupportedAlg,
    /// The issuer publishes no key that matches the token's `kid`.
    UnknownKey,
    /// The issuer's discovery document or JWKS could not be fetched and no cached keys exist.
    IssuerUnreachable,
    /// An ID token does not carry the nonce of the sign-in request it answers (a replayed
    /// or injected token).
    NonceMismatch,
}

impl AuthError {
    /// A short, stable, machine-readable code (for `error=` in `WWW-Authenticate`, metrics
    /// and audit events). These strings are part of the public interface: do not rename.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::InvalidToken => "invalid_token",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::UnsupportedAlg => "unsupported_alg",
            AuthError::UnknownKey => "unknown_key",
            AuthError::IssuerUnreachable => "issuer_unreachable",
            AuthError::NonceMismatch => "nonce_mismatch",
        }
    }

    fn message(self) -> &'static str {
        match self {
            AuthError::Malformed => "the credential is not a well-formed API key or JWT",
            AuthError::InvalidToken => "the credential is not valid",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::UnknownIssuer => "the token's issuer is not trusted by this gateway",
            AuthError::BadAudience => "the token is not intended for this gateway (audience)",
            AuthError::UnsupportedAlg => "the token's signature algorithm is not accepted",
            AuthError::UnknownKey => "the token names a signing key its issuer does not publish",
            AuthError::IssuerUnreachable => {
                "the token's issuer could not be reached to fetch its signing keys"
            }
            AuthError::NonceMismatch => {
                "the ID token does not answer this sign-in request (nonce mismatch)"
            }
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

/// A configuration the authenticator refuses to start with. These are operator-facing and
/// name the offending entry; they never contain a key or a key hash.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity.oidc[{index}] ({issuer}): {message}")]
    Issuer {
        index: usize,
        issuer: String,
        message: String,
    },
    #[error("identity.oidc: the issuer {0:?} is configured twice")]
    DuplicateIssuer(String),
    #[error("identity.api_keys[{index}] ({name}): {message}")]
    ApiKey {
        index: usize,
        name: String,
        message: String,
    },
    #[error("cannot build the HTTP client for OIDC discovery: {0}")]
    HttpClient(#[source] reqwest::Error),
}
