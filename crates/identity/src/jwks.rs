//! An issuer's signing keys: OIDC discovery, the JWKS fetch, and a cache that follows key
//! rotation without letting a stream of forged `kid`s hammer the IdP.
//!
//! Rules:
//! - Nothing is fetched until the first token from the issuer arrives, so a gateway starts
//!   even while its IdP is down.
//! - A token whose `kid` the cached set lacks triggers a refetch (the IdP may have rotated),
//!   but at most one fetch per issuer per [`MIN_REFETCH_INTERVAL`]; concurrent callers wait
//!   on one mutex and the first does the fetch for all of them.
//! - A set older than [`MAX_AGE`] is refreshed by the next request that sees it (keys the IdP
//!   has withdrawn stop being accepted); if that refresh fails the old set stays in use.
//! - Network trouble with no cached set fails closed ([`AuthError::IssuerUnreachable`]).
//! - Keys come only from the configured issuer's discovery document or configured
//!   `jwks_uri`, never from a token's own `jku`, `x5u` or `jwk` header.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::error::AuthError;

/// The least time between two fetches of one issuer's keys.
pub(crate) const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a fetched key set is used before it is refreshed.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The largest discovery document or JWKS accepted.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// The most keys kept from one JWKS (real IdPs publish a handful).
const MAX_KEYS: usize = 64;
/// RSA keys shorter than this are ignored.
const MIN_RSA_BITS: usize = 2048;

/// Timing knobs, separate so that tests can shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) min_refetch_interval: Duration,
    pub(crate) max_age: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            min_refetch_interval: MIN_REFETCH_INTERVAL,
            max_age: MAX_AGE,
        }
    }
}

/// One issuer's key source and cache.
pub(crate) struct KeySource {
    issuer: String,
    configured_jwks_uri: Option<String>,
    http: reqwest::Client,
    timing: Timing,
    /// The current key set. A plain lock held only to clone the `Arc`, so readers never wait
    /// on a network fetch.
    cache: RwLock<Option<Arc<KeySet>>>,
    /// Held for the whole of a fetch: this is what makes concurrent misses share one fetch.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// The last read of the sign-in endpoints (or why it failed) and when: a burst of
    /// requests to start a sign-in reads the discovery document at most once a second, so
    /// nobody can make the gateway hammer the IdP, and an IdP that went down is noticed
    /// within that second.
    endpoints: tokio::sync::Mutex<Option<(Instant, Result<SignInEndpoints, String>)>>,
}

/// How long one read of the sign-in endpoints (success or failure) is the answer.
const ENDPOINTS_MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct RefreshState {
    /// The `jwks_uri` from the discovery document, kept until a JWKS fetch fails.
    discovered_jwks_uri: Option<String>,
    last_attempt: Option<Instant>,
}

pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched_at: Instant,
}

struct VerifyingKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it states one.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify `alg` (a P-256 key cannot verify ES384, an RSA
    /// key cannot verify anything but RS*/PS*).
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

enum Selection<'a> {
    Found(&'a DecodingKey),
    /// No key with that `kid` (or, without a `kid`, no single key that fits).
    Missing,
    /// A key with that `kid` exists but cannot verify the token's algorithm.
    Incompatible,
}

impl KeySet {
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        let fits = |k: &&VerifyingKey| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Selection::Missing;
                }
                match named.find(fits) {
                    Some(key) => Selection::Found(&key.key),
                    None => Selection::Incompatible,
                }
            }
            None => {
                // Without a `kid` the choice is only unambiguous with exactly one candidate;
                // trying several keys in turn would make the set's size an oracle.
                let mut candidates = self.keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Selection::Found(&only.key),
                    _ => Selection::Missing,
                }
            }
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, AuthError> {
        match self.select(kid, alg) {
            Selection::Found(key) => Ok(Some(key.clone())),
            Selection::Missing => Ok(None),
            Selection::Incompatible => Err(AuthError::UnsupportedAlg),
        }
    }
}

/// Why a fetch failed; logged, never shown to callers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("GET {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: the response is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: not valid JSON: {source}")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("unacceptable jwks_uri {0:?}")]
    BadJwksUri(String),
    #[error(
        "unacceptable {name} {uri:?} (missing, not http(s), or plain http for an https issuer)"
    )]
    BadEndpoint { name: &'static str, uri: String },
    #[error("the JWKS at {url} holds no usable signing key")]
    NoKeys { url: String },
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
}

/// Where a person signs in at an issuer (from its discovery document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInEndpoints {
    pub authorization: String,
    pub token: String,
    /// RP-initiated logout, when the IdP offers it.
    pub end_session: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySource {
    pub(crate) fn new(
        issuer: String,
        configured_jwks_uri: Option<String>,
        http: reqwest::Client,
        timing: Timing,
    ) -> KeySource {
        KeySource {
            issuer,
            configured_jwks_uri,
            http,
            timing,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            endpoints: tokio::sync::Mutex::new(None),
        }
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a panic elsewhere while cloning an Arc; the data is fine.
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store(&self, set: Arc<KeySet>) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(set);
    }

    /// The key that should have signed a token with this `kid` and `alg`.
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        if let Some(set) = self.snapshot()
            && let Some(key) = set.lookup(kid, alg)?
        {
            if set.fetched_at.elapsed() < self.timing.max_age {
                return Ok(key);
            }
            return self.refresh_stale(kid, alg, key).await;
        }

        // A miss (or no keys yet). Queue behind any fetch under way: when it is our turn, the
        // set may already hold the key.
        let mut state = self.refresh.lock().await;
        let latest = self.snapshot();
        if let Some(set) = &latest
            && let Some(key) = set.lookup(kid, alg)?
        {
            return Ok(key);
        }
        if !state.may_fetch(self.timing.min_refetch_interval) {
            tracing::debug!(issuer = %self.issuer, "key not found; JWKS refetch rate-limited");
            return Err(if latest.is_some() {
                AuthError::UnknownKey
            } else {
                AuthError::IssuerUnreachable
            });
        }
        match self.fetch(&mut state).await {
            Ok(set) => set.lookup(kid, alg)?.ok_or_else(|| {
                tracing::debug!(issuer = %self.issuer, "no key for the token's kid after refetch");
                AuthError::UnknownKey
            }),
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the issuer's keys");
                Err(if latest.is_some() {
                    AuthError::UnknownKey
                } else {
                    AuthError::IssuerUnreachable
                })
            }
        }
    }

    /// The cached set is old: refresh it unless another request already is (then the old
    /// key is good enough for this one request).
    async fn refresh_stale(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        stale_key: DecodingKey,
    ) -> Result<DecodingKey, AuthError> {
        let Ok(mut state) = self.refresh.try_lock() else {
            return Ok(stale_key);
        };
        if !state.may_fetch(self.timing.min_refetch_interval) {
            return Ok(stale_key);
        }
        match self.fetch(&mut state).await {
            // The fresh set is authoritative: a key the IdP withdrew is no longer accepted.
            Ok(set) => set.lookup(kid, alg)?.ok_or(AuthError::UnknownKey),
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot refresh the issuer's keys; using the cached set");
                Ok(stale_key)
            }
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<Arc<KeySet>, FetchError> {
        state.last_attempt = Some(Instant::now());
        let jwks_uri = match (&self.configured_jwks_uri, &state.discovered_jwks_uri) {
            (Some(uri), _) | (None, Some(uri)) => uri.clone(),
            (None, None) => {
                let uri = self.discover().await?;
                state.discovered_jwks_uri = Some(uri.clone());
                uri
            }
        };
        let result = self.fetch_jwks(&jwks_uri).await;
        if result.is_err() {
            // The IdP may have moved its JWKS: look again next time.
            state.discovered_jwks_uri = None;
        }
        let set = Arc::new(result?);
        tracing::info!(issuer = %self.issuer, keys = set.keys.len(), "fetched the issuer's signing keys");
        self.store(set.clone());
        Ok(set)
    }

    /// The issuer's sign-in endpoints, from its discovery document (read at most once a
    /// second). They obey the same rule as the JWKS: https whenever the issuer is.
    pub(crate) async fn sign_in_endpoints(&self) -> Result<SignInEndpoints, String> {
        // Held across the read: concurrent callers wait for the one read under way.
        let mut last = self.endpoints.lock().await;
        if let Some((at, answer)) = &*last
            && at.elapsed() < ENDPOINTS_MAX_AGE
        {
            return answer.clone();
        }
        let answer = self
            .read_sign_in_endpoints()
            .await
            .map_err(|e| e.to_string());
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn read_sign_in_endpoints(&self) -> Result<SignInEndpoints, FetchError> {
        let doc = self.discovery_document().await?;
        let checked = |name: &'static str, uri: Option<String>| {
            let uri = uri.unwrap_or_default();
            if acceptable_jwks_uri(&self.issuer, &uri) {
                Ok(uri)
            } else {
                Err(FetchError::BadEndpoint { name, uri })
            }
        };
        Ok(SignInEndpoints {
            authorization: checked("authorization_endpoint", doc.authorization_endpoint)?,
            token: checked("token_endpoint", doc.token_endpoint)?,
            end_session: doc
                .end_session_endpoint
                .filter(|uri| acceptable_jwks_uri(&self.issuer, uri)),
        })
    }

    async fn discover(&self) -> Result<String, FetchError> {
        let doc = self.discovery_document().await?;
        let uri = doc.jwks_uri.unwrap_or_default();
        if !acceptable_jwks_uri(&self.issuer, &uri) {
            return Err(FetchError::BadJwksUri(uri));
        }
        Ok(uri)
    }

    async fn discovery_document(&self) -> Result<Discovery, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|source| FetchError::Json { url, source })?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name the very issuer
        // it was fetched for, or a compromised path could vouch for another issuer's keys.
        if doc.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                expected: self.issuer.clone(),
                found: doc.issuer,
            });
        }
        Ok(doc)
    }

    async fn fetch_jwks(&self, url: &str) -> Result<KeySet, FetchError> {
        let body = self.get(url).await?;
        let raw: RawJwks = serde_json::from_slice(&body).map_err(|source| FetchError::Json {
            url: url.to_string(),
            source,
        })?;
        let keys: Vec<VerifyingKey> = raw
            .keys
            .into_iter()
            .filter_map(parse_key)
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err(FetchError::NoKeys {
                url: url.to_string(),
            });
        }
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    /// A bounded GET: the client's timeouts bound the time, this bounds the size.
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let http_err = |source| FetchError::Http {
            url: url.to_string(),
            source,
        };
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http_err)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl RefreshState {
    fn may_fetch(&self, interval: Duration) -> bool {
        self.last_attempt.is_none_or(|t| t.elapsed() >= interval)
    }
}

/// A JWKS location we are willing to fetch: http(s), and https whenever the issuer is, so a
/// tampered discovery document cannot downgrade the key fetch to plain text.
pub(crate) fn acceptable_jwks_uri(issuer: &str, uri: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(uri) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => !issuer.starts_with("https://"),
        _ => false,
    }
}

/// Turns one JWKS entry into a verifying key, or skips it (with a debug log) when it is not
/// a public signing key we support. One odd key must not make the whole set unusable.
fn parse_key(value: serde_json::Value) -> Option<VerifyingKey> {
    let jwk: Jwk = match serde_json::from_value(value) {
        Ok(jwk) => jwk,
        Err(e) => {
            tracing::debug!(error = %e, "skipping a JWKS entry that is not a supported JWK");
            return None;
        }
    };
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => match Algorithm::try_from(a) {
            Ok(a) => Some(a),
            Err(_) => return None, // an encryption algorithm or one we do not support
        },
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64_len(&p.n);
            if n * 8 < MIN_RSA_BITS {
                tracing::debug!(bits = n * 8, "skipping a short RSA key");
                return None;
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // Symmetric (`oct`) keys never verify anything here: accepting one would reopen the
        // HS256 confusion attack.
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id,
        alg,
        kind,
        key,
    })
}

/// The decoded length of an unpadded base64url string, ignoring a leading zero byte
/// (RSA moduli are sometimes encoded with one).
fn base64_len(text: &str) -> usize {
    use base64::Engine as _;
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')) {
        Ok(bytes) => bytes.len() - usize::from(bytes.first() == Some(&0)),
        Err(_) => 0,
    }
}
