//! Reading a caller's request into the form policy decides on, and refusing what cannot be
//! read one way only.
//!
//! A proxy that decides on one reading of a request and forwards bytes the upstream reads
//! another way can be walked around. So the path policy sees is the path the upstream acts
//! on: percent-decoded per segment, and a request whose path would decode differently
//! depending on who reads it (`.` and `..` segments, empty segments, an encoded `/` or `\`,
//! control characters, invalid UTF-8) is refused, not normalised. Framing ambiguities are
//! settled by hyper's HTTP/1 parser before a request exists: different `Content-Length`s
//! and obs-fold lines are refused with 400; equal `Content-Length`s are folded into one;
//! `Content-Length` beside `Transfer-Encoding: chunked` is read by the chunks (RFC 9112
//! section 6.3), the length dropped and the connection closed after the answer, so nothing
//! after the body is read as another request. The gateway forwards the body it read with a
//! length of its own. What reaches here is checked again where cheap (HTTP/2 too).

use http::{HeaderMap, HeaderName, Method, Uri, Version, header};

/// Request headers never forwarded: they belong to one connection (RFC 9110 section 7.6.1),
/// carry the caller's credentials (the gateway sends the upstream's own), or are the
/// gateway's (`portcullis-reason`). Names listed in `Connection` are dropped too.
const NOT_FORWARDED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "expect",
    "portcullis-reason",
    // Claims about the client or the original URL that a caller could forge and some
    // servers believe (Symfony and IIS route on X-Original-URL and X-Rewrite-URL).
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
];

/// Headers that carry a list, which may be sent more than once (their values are joined).
const LIST_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "if-match",
    "if-none-match",
    "link",
    "pragma",
    "prefer",
    "via",
    "warning",
];

/// Query keys with which some frameworks run another method than the request line's.
const METHOD_OVERRIDE_KEYS: &[&str] = &["_method", "x-http-method-override"];

/// Checks the query's keys: no method override, no array or nested forms (`a[]`, `a[b]`, which
/// some servers merge with `a` and others do not), no two keys that differ only in case.
fn check_query_keys(query: &[(String, String)]) -> Result<(), Unreadable> {
    let mut by_fold: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (key, _) in query {
        let lower = key.to_lowercase();
        if METHOD_OVERRIDE_KEYS.contains(&lower.as_str()) {
            return Err(unreadable(
                400,
                format!(
                    "the query key {key:?} is refused: the upstream could act on another method than the one decided"
                ),
            ));
        }
        if key.contains(['[', ']']) {
            return Err(unreadable(
                400,
                format!(
                    "the query key {key:?} is refused: array and nested forms are read differently by different servers"
                ),
            ));
        }
        match by_fold.get(&lower) {
            Some(other) if *other != key => {
                return Err(unreadable(
                    400,
                    format!(
                        "the query keys {other:?} and {key:?} differ only in case; servers disagree on whether they are one"
                    ),
                ));
            }
            Some(_) => {}
            None => {
                by_fold.insert(lower, key);
            }
        }
    }
    Ok(())
}

/// Whether a form or multipart body carries a method override field.
pub fn body_overrides_method(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(kind) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
    else {
        return false;
    };
    if kind.starts_with("application/x-www-form-urlencoded") {
        return form_urlencoded::parse(body)
            .any(|(k, _)| METHOD_OVERRIDE_KEYS.contains(&k.to_lowercase().as_str()));
    }
    if kind.starts_with("multipart/") {
        let lower = body.to_ascii_lowercase();
        return METHOD_OVERRIDE_KEYS.iter().any(|k| {
            let needle = format!("name=\"{k}\"");
            lower.windows(needle.len()).any(|w| w == needle.as_bytes())
        });
    }
    false
}

/// Headers with which some frameworks run another method than the request line's.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What policy sees of a request, owned (the [`portcullis_model::HttpOperation`] borrows it).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub method: String,
    /// Decoded and checked, starting with `/`.
    pub path: String,
    /// The path and query as they go upstream (the caller's own encoding, without the
    /// gateway's `/http/<target>` prefix).
    pub upstream_path_and_query: String,
    pub query: Vec<(String, String)>,
    /// Lower-case names; credentials left out.
    pub headers: Vec<(String, String)>,
}

/// Why a request cannot be read; `status` is the HTTP status of the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub status: u16,
    pub message: String,
}

fn unreadable(status: u16, message: impl Into<String>) -> Unreadable {
    Unreadable {
        status,
        message: message.into(),
    }
}

/// Reads the request line and headers. `path` is what follows the gateway's prefix (the
/// whole path on a target's own listener), still percent-encoded, starting with `/`.
pub fn read(
    method: &Method,
    version: Version,
    uri: &Uri,
    path: &str,
    headers: &HeaderMap,
) -> Result<ReadRequest, Unreadable> {
    // HTTP/2 always carries a scheme and an authority (pseudo-headers); in HTTP/1 an
    // absolute-form target is a forward proxy's request.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(unreadable(
            400,
            "absolute-form request targets are refused: this is a gateway, not a forward proxy; send the path only",
        ));
    }
    if method == Method::CONNECT {
        return Err(unreadable(405, "CONNECT is not proxied"));
    }
    // Methods are case-sensitive, but some servers upper-case them: a `delete` would pass a
    // rule on `DELETE` and be run as one. TRACE echoes the request back, the upstream's
    // credential included.
    let m = method.as_str();
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(unreadable(
            400,
            format!("the method {m:?} is refused: methods are sent in capitals"),
        ));
    }
    if m == "TRACE" || m == "TRACK" {
        return Err(unreadable(
            405,
            format!("{m} is not proxied (it would echo the upstream's credential back)"),
        ));
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(unreadable(
            415,
            "a compressed request body is refused: policy and the masking detectors read bodies as sent",
        ));
    }
    if headers.contains_key(header::UPGRADE) {
        return Err(unreadable(
            501,
            "protocol upgrades (WebSocket, h2c) are not proxied to HTTP targets",
        ));
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(unreadable(
            400,
            "a request with both Content-Length and Transfer-Encoding is ambiguous and refused",
        ));
    }
    if let Some(name) = METHOD_OVERRIDES.iter().find(|h| headers.contains_key(**h)) {
        return Err(unreadable(
            400,
            format!(
                "{name} is refused: the upstream could act on another method than the one decided"
            ),
        ));
    }
    if headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Err(unreadable(400, "more than one Content-Length is refused"));
    }
    let decoded = decode_path(path)?;
    let query_text = uri.query();
    let query = match query_text {
        None => Vec::new(),
        Some(q) => {
            if q.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(unreadable(400, "the query holds control characters"));
            }
            let query: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            check_query_keys(&query)?;
            query
        }
    };
    // Policy sees exactly the headers that are forwarded, each once: a header sent twice
    // (other than the list-valued ones) is refused, since servers disagree on which value
    // counts; a value that is not visible ASCII is refused rather than hidden from policy.
    let forwarded = forwarded_headers(headers);
    let mut seen: Vec<(String, String)> = Vec::with_capacity(forwarded.len());
    for name in forwarded.keys() {
        let n = name.as_str();
        if forwarded.get_all(name).iter().count() > 1 && !LIST_HEADERS.contains(&n) {
            return Err(unreadable(
                400,
                format!("the header {n} is sent more than once; servers disagree on which counts"),
            ));
        }
        let mut joined = Vec::new();
        for value in forwarded.get_all(name) {
            let Ok(text) = value.to_str() else {
                return Err(unreadable(
                    400,
                    format!("the header {n} holds characters other than visible ASCII"),
                ));
            };
            joined.push(text);
        }
        seen.push((n.to_string(), joined.join(", ")));
    }
    let upstream_path_and_query = match query_text {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    Ok(ReadRequest {
        method: method.as_str().to_string(),
        path: decoded,
        upstream_path_and_query,
        query,
        headers: seen,
    })
}

/// Decodes `path` segment by segment, refusing what two readers could decode differently.
pub fn decode_path(path: &str) -> Result<String, Unreadable> {
    if !path.starts_with('/') {
        return Err(unreadable(400, "the path must start with '/'"));
    }
    if path.contains('\\') {
        return Err(unreadable(
            400,
            "a '\\' in the path is refused (servers disagree on it)",
        ));
    }
    let body = &path[1..];
    let trailing = body.ends_with('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut decoded = String::with_capacity(path.len());
    if !body.is_empty() {
        for segment in body.split('/') {
            if segment.is_empty() {
                return Err(unreadable(400, "an empty path segment ('//') is refused"));
            }
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
            let text = String::from_utf8(bytes)
                .map_err(|_| unreadable(400, "the path does not decode to UTF-8"))?;
            if text == "." || text == ".." {
                return Err(unreadable(
                    400,
                    "'.' and '..' path segments are refused (encoded or not)",
                ));
            }
            if text.contains(';') {
                return Err(unreadable(
                    400,
                    "a ';' in the path is refused (some servers cut path parameters off, others do not)",
                ));
            }
            let lower = text.to_ascii_lowercase();
            if ["%2e", "%2f", "%5c", "%3b", "%25", "%u"]
                .iter()
                .any(|e| lower.contains(e))
            {
                return Err(unreadable(
                    400,
                    "a path segment encoded twice is refused (a server that decodes again would read another path)",
                ));
            }
            if text.contains(['/', '\\']) {
                return Err(unreadable(
                    400,
                    "an encoded '/' or '\\' in a path segment is refused",
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(unreadable(400, "the path holds control characters"));
            }
            decoded.push('/');
            decoded.push_str(&text);
        }
    }
    if decoded.is_empty() || trailing {
        decoded.push('/');
    }
    Ok(decoded)
}

/// The request headers to forward: everything but [`NOT_FORWARDED`], hop-by-hop headers
/// and the names `Connection` lists.
pub fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n)
            || portcullis_config::targets::HOP_BY_HOP.contains(&n)
            || listed.iter().any(|l| l == name)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The names a `Connection` header lists (each is hop-by-hop for this connection).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<ReadRequest, Unreadable> {
        let uri: Uri = target.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        read(&method, Version::HTTP_11, &uri, uri.path(), &map)
    }

    #[test]
    fn paths_decode_once_and_ambiguity_is_refused() {
        assert_eq!(decode_path("/customers/c%2D1").unwrap(), "/customers/c-1");
        assert_eq!(decode_path("/%61dmin/").unwrap(), "/admin/");
        assert_eq!(decode_path("/").unwrap(), "/");
        assert_eq!(decode_path("/a/caf%C3%A9").unwrap(), "/a/café");
        for (path, says) in [
            ("/x/../admin", "'..'"),
            ("/x/%2e%2e/admin", "'..'"),
            ("/./admin", "'.'"),
            ("/a//b", "empty path segment"),
            ("/a/b%2Fc", "encoded '/'"),
            ("/a/b%5Cc", "encoded '/' or '\\'"),
            ("/a\\b", "'\\'"),
            ("/a/%00", "control"),
            ("/a/%FF", "UTF-8"),
            ("/admin;jsessionid=1/x", "';'"),
            ("/admin%3Bx", "';'"),
            ("/x/%252e%252e/admin", "encoded twice"),
            ("/a/%252F", "encoded twice"),
            ("/x/%u002e%u002e/admin", "encoded twice"),
        ] {
            let err = decode_path(path).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(says), "{path}: {}", err.message);
        }
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let err = req("GET", "http://evil.example/customers", &[]).unwrap_err();
        assert!(err.message.contains("absolute-form"), "{}", err.message);
        let err = req(
            "POST",
            "/customers",
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
        )
        .unwrap_err();
        assert!(err.message.contains("ambiguous"), "{}", err.message);
        let err = req(
            "POST",
            "/customers",
            &[("content-length", "5"), ("content-length", "6")],
        )
        .unwrap_err();
        assert!(err.message.contains("more than one"), "{}", err.message);
        let err = req(
            "POST",
            "/customers",
            &[("x-http-method-override", "DELETE")],
        )
        .unwrap_err();
        assert!(err.message.contains("another method"), "{}", err.message);
        let err = req("delete", "/customers/1", &[]).unwrap_err();
        assert!(err.message.contains("capitals"), "{}", err.message);
        assert_eq!(req("TRACE", "/", &[]).unwrap_err().status, 405);
        assert_eq!(
            req("POST", "/x", &[("content-encoding", "gzip")])
                .unwrap_err()
                .status,
            415
        );
        for query in [
            "/c/1?_method=DELETE",
            "/x?scope=mine&scope[]=all",
            "/x?scope=a&SCOPE=b",
        ] {
            assert_eq!(req("POST", query, &[]).unwrap_err().status, 400, "{query}");
        }
        assert!(req("GET", "/x?id=1&id=2", &[]).is_ok());
        let err = req("GET", "/x", &[("x-tenant", "a"), ("x-tenant", "b")]).unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);
        let ok = req("GET", "/x", &[("accept", "a/b"), ("accept", "c/d")]).unwrap();
        assert_eq!(ok.headers, vec![("accept".into(), "a/b, c/d".into())]);
        // A header the Connection header lists is not forwarded, so policy does not see it.
        let ok = req(
            "GET",
            "/x",
            &[("connection", "x-tenant"), ("x-tenant", "a")],
        )
        .unwrap();
        assert!(
            ok.headers.iter().all(|(k, _)| k != "x-tenant"),
            "{:?}",
            ok.headers
        );
        let mut form = HeaderMap::new();
        form.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(body_overrides_method(&form, b"a=1&_METHOD=DELETE"));
        assert!(!body_overrides_method(&form, b"a=1"));
        let err = req("GET", "/ws", &[("upgrade", "websocket")]).unwrap_err();
        assert_eq!(err.status, 501);
    }

    #[test]
    fn query_and_headers_as_policy_sees_them() {
        let r = req(
            "GET",
            "/exports?scope=mine&scope=all&q=a%20b",
            &[
                ("authorization", "Bearer secret"),
                ("cookie", "s=1"),
                ("x-tenant", "b"),
            ],
        )
        .unwrap();
        assert_eq!(
            r.query,
            vec![
                ("scope".into(), "mine".into()),
                ("scope".into(), "all".into()),
                ("q".into(), "a b".into())
            ]
        );
        assert_eq!(r.headers, vec![("x-tenant".into(), "b".into())]);
        assert_eq!(
            r.upstream_path_and_query,
            "/exports?scope=mine&scope=all&q=a%20b"
        );
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let mut map = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer caller"),
            ("cookie", "s=1"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("portcullis-reason", "because"),
            ("x-forwarded-for", "1.2.3.4"),
            ("accept", "application/json"),
            ("x-request-id", "r1"),
        ] {
            map.append(HeaderName::from_static(k), v.parse().unwrap());
        }
        let out = forwarded_headers(&map);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["accept", "x-request-id"]);
    }
}
