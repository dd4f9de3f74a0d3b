//! One HTTP target's upstream: a pooled client (rustls; HTTP/2 when the server offers it by
//! ALPN), the credential the gateway sends in the caller's stead, and the cap on requests
//! in flight.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use portcullis_config::{HttpCredential, HttpTarget};
use portcullis_guard::UpstreamFault;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::request::{ReadRequest, forwarded_headers};

/// Why a request could not be forwarded; `status` is what the caller is answered.
#[derive(Debug)]
pub(crate) struct UpstreamError {
    pub status: u16,
    pub message: String,
    /// How the upstream failed; `None` when the gateway's own slots were busy.
    pub fault: Option<UpstreamFault>,
}

pub(crate) struct Upstream {
    pub spec: HttpTarget,
    client: reqwest::Client,
    credential: Option<(HeaderName, HeaderValue)>,
    /// The credential's secret parts, which answers must never show.
    pub secrets: Arc<[String]>,
    slots: Arc<Semaphore>,
}

impl Upstream {
    pub(crate) fn build(name: &str, spec: &HttpTarget) -> Result<Upstream, String> {
        let mut builder = reqwest::Client::builder()
            // The gateway forwards; a redirect is the caller's to follow (through the gateway,
            // where it is decided again), never the gateway's.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(spec.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(spec.max_upstream_connections)
            .tcp_nodelay(true)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &spec.upstream_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("upstream_ca: cannot read {}: {e}", ca.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "upstream_ca: {} holds no PEM certificate: {e}",
                    ca.display()
                )
            })?;
            if certificates.is_empty() {
                return Err(format!(
                    "upstream_ca: {} holds no PEM certificate",
                    ca.display()
                ));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        let (credential, secrets) = match &spec.credential {
            None => (None, Vec::new()),
            Some(credential) => {
                let (header, secrets) = credential_header(credential)
                    .map_err(|e| format!("upstream_credential: {e} (target {name})"))?;
                (Some(header), secrets)
            }
        };
        Ok(Upstream {
            spec: spec.clone(),
            client,
            credential,
            secrets: secrets.into(),
            slots: Arc::new(Semaphore::new(spec.max_upstream_connections)),
        })
    }

    /// Sends the request; resolves when the upstream's response headers have arrived. The
    /// permit travels with the answer: the slot is free once its body has been read.
    pub(crate) async fn send(
        &self,
        method: &Method,
        read: &ReadRequest,
        headers: &HeaderMap,
        body: Bytes,
        masking: bool,
    ) -> Result<(reqwest::Response, OwnedSemaphorePermit), UpstreamError> {
        let permit = match tokio::time::timeout(
            self.spec.timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(UpstreamError {
                    fault: None,
                    status: 503,
                    message: format!(
                        "all {} upstream slots of this target stayed busy for {:?} (max_upstream_connections)",
                        self.spec.max_upstream_connections, self.spec.timeout
                    ),
                });
            }
        };
        let url = format!(
            "{}{}",
            self.spec.upstream,
            &read.upstream_path_and_query[1..]
        );
        let mut forwarded = forwarded_headers(headers);
        if masking {
            // An answer that must be masked is asked for uncompressed; one compressed anyway
            // is decompressed (gzip, deflate) or refused.
            forwarded.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            // Whole, too: a part of a JSON document does not parse, so its `fields` rules
            // could not apply.
            forwarded.remove(header::RANGE);
            forwarded.remove(header::IF_RANGE);
        }
        if let Some((name, value)) = &self.credential {
            forwarded.insert(name.clone(), value.clone());
        }
        let request = self
            .client
            .request(method.clone(), &url)
            .headers(forwarded)
            .body(body);
        match tokio::time::timeout(self.spec.timeout, request.send()).await {
            Ok(Ok(response)) => Ok((response, permit)),
            Ok(Err(e)) => Err(UpstreamError {
                fault: Some(if e.is_timeout() {
                    UpstreamFault::Timeout
                } else if e.is_connect() {
                    UpstreamFault::Unreachable
                } else if e.is_decode() {
                    UpstreamFault::Protocol
                } else {
                    UpstreamFault::Closed
                }),
                status: if e.is_timeout() { 504 } else { 502 },
                message: format!(
                    "the upstream could not be reached or broke off: {}",
                    error_chain(&e.without_url())
                ),
            }),
            Err(_) => Err(UpstreamError {
                fault: Some(UpstreamFault::Timeout),
                status: 504,
                message: format!(
                    "the upstream did not answer within {:?} (the target's timeout)",
                    self.spec.timeout
                ),
            }),
        }
    }
}

/// Whether `url` is https, or plain http to a loopback host (where a credential does not
/// cross a network).
pub(crate) fn is_private_plain_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error with its causes (reqwest's own message is often only "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = cause_of(source);
    }
    text
}

fn cause_of<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(std::error::Error::source)
}

/// The header the credential is sent in; the secret is read now (an unset variable or an
/// unreadable file fails the start, naming where it was looked for, never the value).
fn credential_header(
    credential: &HttpCredential,
) -> Result<((HeaderName, HeaderValue), Vec<String>), String> {
    let (name, value, secrets) = match credential {
        HttpCredential::Bearer(token) => {
            let token = token.read()?;
            (
                header::AUTHORIZATION,
                format!("Bearer {token}"),
                vec![token],
            )
        }
        HttpCredential::Basic { user, password } => {
            let password = password.read()?;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (
                header::AUTHORIZATION,
                format!("Basic {pair}"),
                vec![pair, password],
            )
        }
        HttpCredential::Header { name, value } => {
            let value = value.read()?;
            (
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?,
                value.clone(),
                vec![value],
            )
        }
    };
    let mut header_value = HeaderValue::from_str(&value)
        .map_err(|_| "the secret holds characters a header cannot carry".to_string())?;
    header_value.set_sensitive(true);
    // A very short secret would be replaced inside ordinary words of every answer; such a
    // credential is weak anyway and is not scrubbed.
    let secrets = secrets.into_iter().filter(|s| s.len() >= 8).collect();
    Ok(((name, header_value), secrets))
}

#[cfg(test)]
mod tests {
    use super::is_private_plain_http;

    #[test]
    fn a_credential_crosses_a_network_only_over_https() {
        for url in [
            "https://api.example.com/",
            "http://127.0.0.1:9100/",
            "http://localhost/",
            "http://[::1]:80/",
        ] {
            assert!(is_private_plain_http(url), "{url}");
        }
        for url in ["http://api.internal/", "http://10.0.0.5:8080/"] {
            assert!(!is_private_plain_http(url), "{url}");
        }
    }
}
