//! Bearer JWTs from configured OIDC issuers.
//!
//! The order of checks matters. The header and the payload are read unverified first, but
//! only to decide *how* to verify: the header's `alg` is checked against a fixed allow-list
//! (never `none`, never HS*, which defeats the classic "sign with the public key as an HMAC
//! secret" confusion), and the payload's `iss` only picks which configured issuer's keys to
//! use. Nothing read before the signature check ends up in the identity.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use portcullis_config::OidcIssuer;
use portcullis_model::{Actor, AuthMethod, Identity, IdentityKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::{AuthError, IdentityError};
use crate::jwks::{KeySource, Timing, acceptable_jwks_uri};

/// Algorithms accepted when an issuer's configuration names none.
const DEFAULT_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// The deepest `act` chain accepted (RFC 8693 delegation rarely goes past two or three).
pub(crate) const MAX_ACT_DEPTH: usize = 8;

/// One configured issuer, ready to verify its tokens.
pub(crate) struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    groups_claim: String,
    kind: IdentityKind,
    leeway: Duration,
    keys: KeySource,
}

impl Issuer {
    pub(crate) fn new(
        index: usize,
        config: &OidcIssuer,
        http: reqwest::Client,
        timing: Timing,
    ) -> Result<Issuer, IdentityError> {
        let err = |message: String| IdentityError::Issuer {
            index,
            issuer: config.issuer.clone(),
            message,
        };
        match reqwest::Url::parse(&config.issuer) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => {}
            _ => return Err(err("the issuer must be an https:// URL".into())),
        }
        if config.audience.is_empty() || config.audience.iter().any(String::is_empty) {
            return Err(err("at least one non-empty audience is required".into()));
        }
        if let Some(uri) = &config.jwks_uri
            && !acceptable_jwks_uri(&config.issuer, uri)
        {
            return Err(err(format!(
                "jwks_uri {uri:?} must be an https:// URL (http:// only for an http:// issuer)"
            )));
        }
        if config.groups_claim.is_empty() {
            return Err(err("groups_claim must not be empty".into()));
        }
        let algorithms = if config.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.to_vec()
        } else {
            config
                .algorithms
                .iter()
                .map(|name| {
                    parse_asymmetric_alg(name).ok_or_else(|| {
                        err(format!(
                            "algorithm {name:?} is not accepted (asymmetric algorithms only: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Issuer {
            issuer: config.issuer.clone(),
            audiences: config.audience.clone(),
            algorithms,
            groups_claim: config.groups_claim.clone(),
            kind: config.kind,
            leeway: config.leeway,
            keys: KeySource::new(config.issuer.clone(), config.jwks_uri.clone(), http, timing),
        })
    }

    pub(crate) async fn sign_in_endpoints(&self) -> Result<crate::SignInEndpoints, String> {
        self.keys.sign_in_endpoints().await
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// The only algorithms a configuration may allow. Matched by exact name: `alg` values are
/// case-sensitive (RFC 7515 section 4.1.1).
fn parse_asymmetric_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The header fields we look at before verifying.
#[derive(Deserialize)]
struct RawHeader {
    alg: Value,
    #[serde(default)]
    kid: Option<Value>,
    #[serde(default)]
    crit: Option<Value>,
}

/// What a token is checked as.
pub(crate) enum Expect<'a> {
    /// A bearer access token: its `aud` is one of the issuer's configured audiences.
    Access,
    /// An ID token the console received for its own sign-in request: from that issuer, for
    /// that client (`aud`), carrying the nonce the request sent (OIDC Core 3.1.3.7).
    IdToken {
        issuer: &'a str,
        client_id: &'a str,
        nonce: &'a str,
    },
}

/// Verifies a compact JWS (`header.payload.signature`) and turns its claims into an identity.
pub(crate) async fn authenticate(
    issuers: &HashMap<String, Issuer>,
    token: &str,
    expect: Expect<'_>,
) -> Result<Identity, AuthError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    // An empty signature is let through to the `alg` check so that an `alg: none` token is
    // reported as what it is; verification would refuse it anyway.
    if header_b64.is_empty()
        || payload_b64.is_empty()
        || ![header_b64, payload_b64, signature_b64]
            .iter()
            .all(|p| p.bytes().all(is_base64url))
    {
        return Err(AuthError::Malformed);
    }

    let header: RawHeader = decode_json(header_b64)?;
    let alg = match &header.alg {
        Value::String(name) => parse_asymmetric_alg(name).ok_or_else(|| {
            // `none`, HS256/384/512 and anything unknown end here.
            tracing::debug!("token refused: algorithm not accepted");
            AuthError::UnsupportedAlg
        })?,
        _ => return Err(AuthError::Malformed),
    };
    // RFC 7515 section 4.1.11: a recipient must reject a `crit` extension it does not
    // understand, and we understand none.
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    let kid = match &header.kid {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(AuthError::Malformed),
    };

    // The unverified `iss` only chooses which issuer's keys to try; the verified claims are
    // checked against that same issuer below.
    let unverified: Map<String, Value> = decode_json(payload_b64)?;
    let issuer = match unverified.get("iss") {
        Some(Value::String(iss)) => issuers.get(iss).ok_or(AuthError::UnknownIssuer)?,
        _ => return Err(AuthError::UnknownIssuer),
    };
    if let Expect::IdToken { issuer: asked, .. } = expect
        && asked != issuer.issuer
    {
        return Err(AuthError::UnknownIssuer);
    }
    if !issuer.algorithms.contains(&alg) {
        tracing::debug!(issuer = %issuer.issuer, ?alg, "token refused: algorithm not allowed for this issuer");
        return Err(AuthError::UnsupportedAlg);
    }

    let key = issuer.keys.key_for(kid, alg).await?;

    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&issuer.issuer]);
    match expect {
        Expect::Access => validation.set_audience(&issuer.audiences),
        Expect::IdToken { client_id, .. } => validation.set_audience(&[client_id]),
    }
    validation.leeway = issuer.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    // jsonwebtoken checks `aud` and `iss` only when present: require them, or a token
    // without an audience would be accepted for every audience.
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| {
            let mapped = map_jwt_error(e.kind());
            tracing::debug!(issuer = %issuer.issuer, error = %e, code = mapped.code(), "token refused");
            mapped
        })?
        .claims;
    if let Expect::IdToken { nonce, .. } = expect {
        let carried = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Constant time: the nonce is what binds this token to this browser's sign-in.
        let same: bool = subtle::ConstantTimeEq::ct_eq(carried.as_bytes(), nonce.as_bytes()).into();
        if nonce.is_empty() || !same {
            tracing::debug!(issuer = %issuer.issuer, "ID token refused: nonce does not match the sign-in request");
            return Err(AuthError::NonceMismatch);
        }
    }

    identity_from_claims(issuer, &claims, signature_b64)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::BadAudience,
        ErrorKind::InvalidIssuer => AuthError::UnknownIssuer,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::UnsupportedAlg,
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidToken => AuthError::Malformed,
        _ => AuthError::InvalidToken,
    }
}

/// Builds the identity from verified claims.
fn identity_from_claims(
    issuer: &Issuer,
    claims: &Map<String, Value>,
    signature_b64: &str,
) -> Result<Identity, AuthError> {
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(AuthError::InvalidToken),
    };
    let display_name = ["name", "preferred_username", "email"]
        .iter()
        .find_map(|c| match claims.get(*c) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        });
    // The token id identifies this credential for correlation; tokens without one are
    // identified by their signature, which is unique per token.
    let credential_id = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() => sha256_hex(jti),
        _ => sha256_hex(signature_b64),
    };
    Ok(Identity {
        issuer: issuer.issuer.clone(),
        subject,
        display_name,
        kind: issuer.kind,
        groups: groups(claims, &issuer.groups_claim),
        auth_method: AuthMethod::Oidc,
        credential_id: Some(credential_id),
        act: act_chain(claims)?,
    })
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The groups claim: a top-level claim of that exact name, else a dotted path into nested
/// objects (`realm_access.roles`). The exact name wins so that namespaced claims such as
/// `https://example.com/groups` keep working. The value may be an array of strings (other
/// elements are ignored) or a single string; anything else, or nothing, means no groups.
fn groups(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    let value = claims.get(claim).or_else(|| {
        let mut parts = claim.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.as_object()?.get(part))
    });
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(group)) => vec![group.clone()],
        _ => Vec::new(),
    }
}

/// Flattens the RFC 8693 `act` claim, the current actor first. Each level must be an object
/// with a string `sub`; deeper than [`MAX_ACT_DEPTH`] is refused rather than truncated, so
/// the audit trail never silently loses who was involved.
fn act_chain(claims: &Map<String, Value>) -> Result<Vec<Actor>, AuthError> {
    let mut chain = Vec::new();
    let mut next = claims.get("act");
    while let Some(value) = next {
        let Value::Object(act) = value else {
            return Err(AuthError::Malformed);
        };
        if chain.len() == MAX_ACT_DEPTH {
            return Err(AuthError::Malformed);
        }
        let Some(Value::String(subject)) = act.get("sub") else {
            return Err(AuthError::Malformed);
        };
        let text = |name: &str| match act.get(name) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(AuthError::Malformed),
        };
        chain.push(Actor {
            subject: subject.clone(),
            issuer: text("iss")?,
            client_id: text("client_id")?,
        });
        next = act.get("act");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn groups_from_flat_nested_namespaced_and_single_claims() {
        let claims = map(json!({
            "groups": ["a", "b", 3],
            "realm_access": {"roles": ["admin"]},
            "https://example.com/groups": ["ns"],
            "role": "solo",
            "weird": {"x": 1},
        }));
        assert_eq!(groups(&claims, "groups"), vec!["a", "b"]);
        assert_eq!(groups(&claims, "realm_access.roles"), vec!["admin"]);
        assert_eq!(groups(&claims, "https://example.com/groups"), vec!["ns"]);
        assert_eq!(groups(&claims, "role"), vec!["solo"]);
        assert!(groups(&claims, "weird").is_empty());
        assert!(groups(&claims, "missing").is_empty());
        assert!(groups(&claims, "realm_access.missing.deeper").is_empty());
    }

    #[test]
    fn act_chain_is_flattened_most_recent_first() {
        let claims = map(json!({
            "act": {"sub": "agent-2", "client_id": "c2",
                    "act": {"sub": "agent-1", "iss": "https://other"}}
        }));
        let chain = act_chain(&claims).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].subject, "agent-2");
        assert_eq!(chain[0].client_id.as_deref(), Some("c2"));
        assert_eq!(chain[1].subject, "agent-1");
        assert_eq!(chain[1].issuer.as_deref(), Some("https://other"));
    }

    #[test]
    fn act_chain_depth_and_shape_are_bounded() {
        let mut act = json!({"sub": "a0"});
        for i in 1..MAX_ACT_DEPTH {
            act = json!({"sub": format!("a{i}"), "act": act});
        }
        assert_eq!(
            act_chain(&map(json!({"act": act.clone()}))).unwrap().len(),
            MAX_ACT_DEPTH
        );
        let too_deep = json!({"sub": "top", "act": act});
        assert_eq!(
            act_chain(&map(json!({"act": too_deep}))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            act_chain(&map(json!({"act": {"client_id": "x"}}))),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            act_chain(&map(json!({"act": "agent"}))),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn only_asymmetric_algorithms_parse() {
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "rs256", "ES512", "",
        ] {
            assert!(parse_asymmetric_alg(name).is_none(), "{name}");
        }
        assert_eq!(parse_asymmetric_alg("EdDSA"), Some(Algorithm::EdDSA));
    }
}
