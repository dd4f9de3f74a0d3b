//! The errors the admin API answers with, as the person at the terminal reads them: the API's
//! own sentence and stable code, or, for a body of another shape, what came back instead.

use std::fmt;

use serde_json::Value;

use super::terminal::{clean, clean_line, truncate};

/// An error the admin API answered with: its status, its stable code and its sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    status: u16,
    code: String,
    message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)?;
        if self.status == 401 {
            // The one refusal the user fixes on their side, not the gateway's.
            write!(f, " (check PORTCULLIS_TOKEN or --token)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// An error response as the API words it (`{"error": {"code", "message"}}`), or, for a body
/// of another shape (a proxy's page, a front door mistaken for the admin API), a message
/// saying what came back.
pub(super) fn parse_error(status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("code")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
            ))
        });
    if let Some((code, message)) = parsed {
        return ApiError {
            status,
            code: clean(&code),
            message: clean(&message),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = truncate(&clean_line(text.trim()), 200);
    let mut message = format!("the admin API answered HTTP {status}");
    if !text.is_empty() {
        message.push_str(&format!(": {text}"));
    }
    match status {
        300..=399 => message.push_str(" (redirects are not followed: check --url)"),
        404 => message.push_str(
            " (is --url the admin API, gateway.admin_listen, rather than the front door?)",
        ),
        _ => {}
    }
    ApiError {
        status,
        code: format!("http_{status}"),
        message,
    }
}

/// The API's error code, if `e` is an error the API answered with.
pub(super) fn api_code(e: &anyhow::Error) -> Option<&str> {
    e.downcast_ref::<ApiError>().map(|a| a.code.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_messages() {
        let e = parse_error(
            403,
            br#"{"error":{"code":"self_approval","message":"billing-agent requested apr_1 and may not decide it (separation of duties)"}}"#,
        );
        assert_eq!(e.status, 403);
        assert_eq!(e.code, "self_approval");
        assert_eq!(
            e.to_string(),
            "billing-agent requested apr_1 and may not decide it (separation of duties) [self_approval]"
        );
        let wrapped: anyhow::Error = e.into();
        assert_eq!(api_code(&wrapped), Some("self_approval"));

        let e = parse_error(502, b"<html>Bad Gateway</html>\n");
        assert_eq!(e.code, "http_502");
        assert_eq!(
            e.message,
            "the admin API answered HTTP 502: <html>Bad Gateway</html>"
        );
        assert!(
            parse_error(401, b"")
                .to_string()
                .contains("PORTCULLIS_TOKEN")
        );
        let e = parse_error(404, b"");
        assert!(
            e.message.contains("rather than the front door"),
            "{}",
            e.message
        );
        let e = parse_error(302, b"");
        assert!(
            e.message.contains("redirects are not followed"),
            "{}",
            e.message
        );
        // A message cannot carry terminal escapes to the screen.
        let e = parse_error(
            409,
            br#"{"error":{"code":"expired","message":"x\u001b[2Jy"}}"#,
        );
        assert_eq!(e.message, "x\\u{1b}[2Jy");
    }
}
