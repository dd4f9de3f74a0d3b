//! The request metadata headers of MCP 2026-07-28 (`Mcp-Method`, `Mcp-Name`,
//! `MCP-Protocol-Version`) and their Base64 sentinel encoding.
//!
//! Intermediaries route on these headers, the upstream executes the body: a mismatch between
//! the two is how a request would smuggle one tool name past a check and run another, so the
//! gateway refuses any disagreement (HeaderMismatch, -32020).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

const PREFIX: &str = "=?base64?";
const SUFFIX: &str = "?=";

/// Encodes a value for a header: plain when it is safe visible ASCII, otherwise (or when it
/// could be mistaken for the sentinel form) as `=?base64?...?=`.
pub fn encode_header_value(value: &str) -> String {
    let looks_encoded = value.starts_with(PREFIX) && value.ends_with(SUFFIX);
    let plain_safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) || b == b' ')
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !looks_encoded;
    if plain_safe {
        value.to_string()
    } else {
        format!("{PREFIX}{}{SUFFIX}", STANDARD.encode(value))
    }
}

/// Decodes a header value that may use the sentinel form.
pub fn decode_header_value(raw: &str) -> Result<String, String> {
    if let Some(inner) = raw
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
    {
        let bytes = STANDARD
            .decode(inner)
            .map_err(|_| "invalid Base64 in an encoded header value".to_string())?;
        String::from_utf8(bytes).map_err(|_| "an encoded header value is not UTF-8".to_string())
    } else {
        Ok(raw.to_string())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| format!("the {name} header has invalid characters")),
    }
}

/// Checks the headers of a modern (2026-07-28) request against its body.
pub fn check_modern_headers(
    headers: &HeaderMap,
    method: &str,
    name: Option<&str>,
    body_version: Option<&str>,
) -> Result<(), String> {
    let header_version = header(headers, "mcp-protocol-version")?
        .ok_or("the MCP-Protocol-Version header is missing")?;
    match body_version {
        Some(v) if v == header_version => {}
        Some(v) => {
            return Err(format!(
                "MCP-Protocol-Version header {header_version:?} does not match the body's protocol version {v:?}"
            ));
        }
        None => {
            return Err("the request's _meta lacks io.modelcontextprotocol/protocolVersion".into());
        }
    }
    let header_method = header(headers, "mcp-method")?.ok_or("the Mcp-Method header is missing")?;
    if header_method != method {
        return Err(format!(
            "Mcp-Method header {header_method:?} does not match the body's method {method:?}"
        ));
    }
    let named = matches!(method, "tools/call" | "resources/read" | "prompts/get");
    match (named, header(headers, "mcp-name")?, name) {
        (true, None, _) => Err(format!("the Mcp-Name header is required for {method}")),
        (true, Some(raw), body_name) => {
            let decoded = decode_header_value(raw)?;
            if Some(decoded.as_str()) == body_name {
                Ok(())
            } else {
                Err(format!(
                    "Mcp-Name header {decoded:?} does not match the body's {:?}",
                    body_name.unwrap_or("")
                ))
            }
        }
        (false, _, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn encoding_round_trips() {
        for v in [
            "get_weather",
            "file:///a b",
            "naïve",
            " lead",
            "=?base64?x?=",
        ] {
            assert_eq!(decode_header_value(&encode_header_value(v)).unwrap(), v);
        }
        assert_eq!(encode_header_value("get_weather"), "get_weather");
        assert!(encode_header_value("naïve").starts_with("=?base64?"));
    }

    #[test]
    fn mismatches_are_refused() {
        let ok = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "a"),
        ]);
        assert!(check_modern_headers(&ok, "tools/call", Some("a"), Some("2026-07-28")).is_ok());
        assert!(
            check_modern_headers(&ok, "tools/call", Some("b"), Some("2026-07-28"))
                .unwrap_err()
                .contains("Mcp-Name")
        );
        assert!(
            check_modern_headers(&ok, "tools/list", None, Some("2026-07-28"))
                .unwrap_err()
                .contains("Mcp-Method")
        );
        assert!(check_modern_headers(&ok, "tools/call", Some("a"), Some("2025-11-25")).is_err());
        let no_name = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
        ]);
        assert!(
            check_modern_headers(&no_name, "tools/call", Some("a"), Some("2026-07-28"))
                .unwrap_err()
                .contains("required")
        );
        let encoded = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?bmHDr3Zl?="),
        ]);
        assert!(
            check_modern_headers(&encoded, "tools/call", Some("naïve"), Some("2026-07-28")).is_ok()
        );
    }
}
