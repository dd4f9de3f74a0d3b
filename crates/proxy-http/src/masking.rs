//! Masking an HTTP answer: headers, JSON bodies whole, text and event streams as they come.
//!
//! What a body is decides how it is masked ([`BodyKind::of`]): JSON is parsed and masked
//! value by value (so field rules apply), then written again; text, NDJSON and server-sent
//! events are masked line by line as they arrive. Binary bodies are not masked (no detector
//! reads them); a rule that must not let them through says so with `http.methods`/`paths`.
//!
//! A secret can be split across two chunks of a stream. The stream masker therefore only
//! releases text up to a point no secret crosses: the end of a line (no detector matches
//! across a line break, and a PEM private key, which spans lines, is kept back whole from
//! its `BEGIN` line until its `END` line), or, in a line longer than [`LOOK_BEHIND`], all
//! but its last [`LOOK_BEHIND`] bytes, and then only when masking the whole pending text
//! leaves those bytes as they were (so no match reaches into them). Nothing is ever
//! released unmasked: text that cannot be cut safely within `max_pending` bytes ends the
//! answer with an error.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use portcullis_mask::{Profile, Report};
use serde_json::Value;

/// How much of an unterminated line is kept back: longer than any bounded secret (card
/// numbers, IBANs, keys and tokens with fixed shapes, JWTs of ordinary size).
pub const LOOK_BEHIND: usize = 4096;

/// How a body is masked, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`, `*+json`: parsed and masked whole.
    Json,
    /// `application/x-ndjson`, `application/jsonl`: one JSON value per line.
    Ndjson,
    /// `text/event-stream`: `data:` lines masked as JSON when they are, as text otherwise.
    EventStream,
    /// `text/*`, XML, forms, JavaScript, and an answer without a type: masked as text.
    Text,
    /// Anything else (images, archives, protobuf ...): passed as it is.
    Binary,
}

impl BodyKind {
    pub fn of(headers: &HeaderMap) -> BodyKind {
        let Some(value) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return BodyKind::Text;
        };
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => BodyKind::Json,
            "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
                BodyKind::Ndjson
            }
            "text/event-stream" => BodyKind::EventStream,
            e if e.ends_with("+json") => BodyKind::Json,
            e if e.starts_with("text/")
                || e.ends_with("+xml")
                || e == "application/xml"
                || e == "application/x-www-form-urlencoded"
                || e == "application/javascript"
                || e == "application/graphql" =>
            {
                BodyKind::Text
            }
            "" => BodyKind::Text,
            _ => BodyKind::Binary,
        }
    }
}

/// What the upstream's own credential is replaced with wherever an answer shows it.
pub const CREDENTIAL_MASK: &str = "[UPSTREAM_CREDENTIAL]";

/// The profiles that apply to one answer, in order, and the upstream credential's values,
/// which no answer may show (an endpoint that echoes its request would hand the agent the
/// credential the gateway holds for it).
#[derive(Clone)]
pub struct Maskers {
    profiles: Arc<[Arc<Profile>]>,
    secrets: Arc<[String]>,
}

impl Maskers {
    pub fn new(profiles: Vec<Arc<Profile>>) -> Maskers {
        Maskers {
            profiles: profiles.into(),
            secrets: Arc::from([]),
        }
    }

    /// The same, also replacing each of `secrets` wherever it appears.
    pub fn with_secrets(mut self, secrets: Arc<[String]>) -> Maskers {
        self.secrets = secrets;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Whether a credential must be scrubbed from answers.
    pub fn has_secrets(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Masks a JSON value in place with every profile.
    pub fn json(&self, value: &mut Value, path: &str, report: &mut Report) {
        for profile in self.profiles.iter() {
            profile.mask_json(value, path, report);
        }
        if !self.secrets.is_empty() {
            scrub_json(value, &self.secrets);
        }
    }

    /// `text` masked with every profile (`None`: nothing changed).
    pub fn text(&self, text: &str, path: &str, report: &mut Report) -> Option<String> {
        let mut current: Option<String> = None;
        for profile in self.profiles.iter() {
            let input = current.as_deref().unwrap_or(text);
            if let Some(masked) = profile.mask_text(input, path, report) {
                current = Some(masked);
            }
        }
        let input = current.as_deref().unwrap_or(text);
        if let Some(scrubbed) = scrub(input, &self.secrets) {
            current = Some(scrubbed);
        }
        current
    }

    /// Masks response header values: a header whose name a profile's field rules name is
    /// masked whole, every value is scanned by the detectors. Headers are masked as one
    /// JSON object `{name: value}` so that the profile's `fields` apply to header names.
    pub fn headers(&self, headers: &mut HeaderMap, report: &mut Report) {
        // Each name once, its values as a list when repeated; values read as UTF-8 (lossily:
        // a value in another encoding is still scanned rather than skipped).
        let mut object = serde_json::Map::new();
        for name in headers.keys() {
            let values: Vec<Value> = headers
                .get_all(name)
                .iter()
                .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let value = match <[Value; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            };
            object.insert(name.as_str().to_string(), value);
        }
        let original = Value::Object(object.clone());
        let mut value = Value::Object(object);
        self.json(&mut value, "$.headers", report);
        let (Value::Object(masked), Value::Object(original)) = (value, original) else {
            return;
        };
        for (name, masked) in masked {
            if original.get(&name) == Some(&masked) {
                continue;
            }
            let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            headers.remove(&name);
            let values = match masked {
                Value::Array(values) => values,
                one => vec![one],
            };
            for value in values {
                // A masked value is ASCII (masks write `*`, `[EMAIL]`, hex); one that still
                // could not be a header value is dropped rather than sent as it was.
                if let Value::String(text) = value
                    && let Ok(v) = http::HeaderValue::from_str(&text)
                {
                    headers.append(name.clone(), v);
                }
            }
        }
    }

    /// A whole JSON body masked. An answer typed JSON that does not parse is refused, not
    /// masked as text: the profile's `fields` rules would not apply to it. An empty body
    /// stays empty.
    pub fn json_body(&self, body: &[u8], report: &mut Report) -> Result<Vec<u8>, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(body.to_vec());
        }
        let mut value = serde_json::from_slice::<Value>(body).map_err(|e| {
            format!("the answer says it is JSON but does not parse ({e}), so it cannot be masked; it is withheld")
        })?;
        self.json(&mut value, "$", report);
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    }
}

/// Masks a text body as it streams (see the module documentation).
pub struct StreamMasker {
    maskers: Maskers,
    kind: BodyKind,
    pending: Vec<u8>,
    max_pending: usize,
    /// Lines released so far, for the report's paths.
    line: u64,
    /// A body typed as binary whose first bytes were not text: passed as it is.
    passing: bool,
    pub report: Report,
}

impl StreamMasker {
    pub fn new(maskers: Maskers, kind: BodyKind, max_pending: usize) -> StreamMasker {
        StreamMasker {
            maskers,
            kind,
            pending: Vec::new(),
            max_pending: max_pending.max(2 * LOOK_BEHIND),
            line: 0,
            passing: false,
            report: Report::default(),
        }
    }

    /// Takes a chunk; returns what may be released now, masked (possibly empty).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        if self.kind == BodyKind::Binary {
            // A body typed as binary is masked as text when it is text after all (the
            // upstream's type is not proof): its first bytes decide.
            if self.passing || chunk.is_empty() {
                return Ok(Bytes::copy_from_slice(chunk));
            }
            if looks_like_text(chunk) {
                self.kind = BodyKind::Text;
            } else {
                self.passing = true;
                return Ok(Bytes::copy_from_slice(chunk));
            }
        }
        self.pending.extend_from_slice(chunk);
        let cut = safe_cut(&self.pending);
        if cut > 0 {
            let head: Vec<u8> = self.pending.drain(..cut).collect();
            return self.mask_lines(&head).map(Bytes::from);
        }
        // Only plain text is released in the middle of a line: an NDJSON or event-stream line
        // is JSON that must be masked whole (its `fields` rules need it parsed).
        if self.kind == BodyKind::Text
            && self.pending.len() > LOOK_BEHIND
            && !open_private_key(&self.pending)
            && let Some(out) = self.release_long_line()?
        {
            return Ok(out);
        }
        if self.pending.len() > self.max_pending {
            return Err(format!(
                "{} bytes of the answer could not be cut where no secret can cross (no line end, or a private key without its END line); the rest of the answer is withheld",
                self.pending.len()
            ));
        }
        Ok(Bytes::new())
    }

    /// The rest, at the end of the body.
    pub fn finish(&mut self) -> Result<Bytes, String> {
        let rest = std::mem::take(&mut self.pending);
        if rest.is_empty() {
            return Ok(Bytes::new());
        }
        self.mask_lines(&rest).map(Bytes::from)
    }

    /// In a long line: masks all the pending text and, when its last [`LOOK_BEHIND`] bytes
    /// come out unchanged, releases the masked text before them.
    fn release_long_line(&mut self) -> Result<Option<Bytes>, String> {
        let text = std::str::from_utf8(&self.pending).or_else(|e| {
            // A multi-byte character may be cut at the chunk's end: keep it for the next.
            if e.error_len().is_none() {
                std::str::from_utf8(&self.pending[..e.valid_up_to()])
            } else {
                Err(e)
            }
        });
        let text = text.map_err(|_| not_utf8())?;
        let mut keep_from = text.len().saturating_sub(LOOK_BEHIND);
        while !text.is_char_boundary(keep_from) {
            keep_from -= 1;
        }
        // Never cut inside a run of token characters: a token longer than the look-behind (a
        // large JWT) is recognised only whole, from its start.
        let bytes = text.as_bytes();
        while keep_from > 0 && is_token_byte(bytes[keep_from - 1]) {
            keep_from -= 1;
        }
        if keep_from == 0 {
            return Ok(None);
        }
        let tail = &text[keep_from..];
        let path = format!("$.line[{}]", self.line);
        let mut report = Report::default();
        let masked = self
            .maskers
            .text(text, &path, &mut report)
            .unwrap_or_else(|| text.to_string());
        if !masked.ends_with(tail) {
            // A match reaches into the kept part: wait for more text (bounded by max_pending).
            return Ok(None);
        }
        let out = masked[..masked.len() - tail.len()].to_string();
        self.report.merge(report);
        let kept = self.pending.len() - keep_from;
        self.pending.drain(..self.pending.len() - kept);
        Ok(Some(Bytes::from(out)))
    }

    fn mask_lines(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| not_utf8())?;
        let path = format!("$.line[{}]", self.line);
        if self.kind == BodyKind::Text {
            // Masked as one text: a private key's lines are one match.
            self.line += text.matches('\n').count() as u64;
            return Ok(self.text_of(text, &path).into_bytes());
        }
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let (body, end) = match line.strip_suffix('\n') {
                Some(body) => match body.strip_suffix('\r') {
                    Some(body) => (body, "\r\n"),
                    None => (body, "\n"),
                },
                None => (line, ""),
            };
            let path = format!("$.line[{}]", self.line);
            self.line += 1;
            match self.kind {
                BodyKind::Ndjson => out.push_str(&self.json_or_text(body, &path)),
                BodyKind::EventStream => match body.strip_prefix("data:") {
                    Some(data) => {
                        let data = data.strip_prefix(' ').unwrap_or(data);
                        out.push_str("data: ");
                        out.push_str(&self.json_or_text(data, &path));
                    }
                    None => out.push_str(&self.text_of(body, &path)),
                },
                _ => out.push_str(&self.text_of(body, &path)),
            }
            out.push_str(end);
        }
        // Then the whole as text, for what spans lines (a private key in `data:` lines).
        Ok(self.text_of(&out, &path).into_bytes())
    }

    fn text_of(&mut self, text: &str, path: &str) -> String {
        self.maskers
            .text(text, path, &mut self.report)
            .unwrap_or_else(|| text.to_string())
    }

    fn json_or_text(&mut self, text: &str, path: &str) -> String {
        if text.trim_start().starts_with(['{', '['])
            && let Ok(mut value) = serde_json::from_str::<Value>(text)
        {
            self.maskers.json(&mut value, path, &mut self.report);
            return value.to_string();
        }
        self.text_of(text, path)
    }
}

/// Characters of tokens (base64, base64url, JWT, API keys).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// `text` with every one of `secrets` replaced; `None` when none appears.
fn scrub(text: &str, secrets: &[String]) -> Option<String> {
    let mut out: Option<String> = None;
    for secret in secrets {
        let current = out.as_deref().unwrap_or(text);
        if current.contains(secret.as_str()) {
            out = Some(current.replace(secret.as_str(), CREDENTIAL_MASK));
        }
    }
    out
}

fn scrub_json(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => {
            if let Some(scrubbed) = scrub(text, secrets) {
                *text = scrubbed;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_json(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub_json(v, secrets)),
        _ => {}
    }
}

/// Whether bytes read as text: UTF-8 (a character cut at the end allowed) without NUL or
/// other control bytes than whitespace.
fn looks_like_text(bytes: &[u8]) -> bool {
    let utf8 = match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    utf8 && !bytes
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t'))
}

fn not_utf8() -> String {
    "the answer is not UTF-8 text, so it cannot be masked; it is withheld".into()
}

/// The end of the last complete line that is not inside a PEM private key block still
/// waiting for its `END` line; 0 when there is none.
fn safe_cut(pending: &[u8]) -> usize {
    let Some(last_newline) = memrchr(b'\n', pending) else {
        return 0;
    };
    let cut = last_newline + 1;
    match open_key_start(&pending[..cut], pending) {
        Some(begin) => memrchr(b'\n', &pending[..begin]).map_or(0, |i| i + 1),
        None => cut,
    }
}

/// Whether `pending` holds a private key's `BEGIN` line without its `END` line.
fn open_private_key(pending: &[u8]) -> bool {
    open_key_start(pending, pending).is_some()
}

/// The start of the last `-----BEGIN ` in `head` with no `-----END ` after it in `all`.
fn open_key_start(head: &[u8], all: &[u8]) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let begin = find_last(head, BEGIN)?;
    let closed = find(&all[begin..], END).is_some();
    (!closed).then_some(begin)
}

fn memrchr(byte: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().rposition(|&b| b == byte)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_mask::{ProfileSpec, Style};

    fn maskers() -> Maskers {
        let spec = ProfileSpec {
            detectors: vec!["email".into(), "credit_card".into(), "private_key".into()],
            fields: vec!["x-account".into(), "ssn".into()],
            style: Style::Redact,
            ..ProfileSpec::default()
        };
        Maskers::new(vec![Arc::new(Profile::compile(&spec).unwrap())])
    }

    fn stream(kind: BodyKind, chunks: &[&[u8]]) -> String {
        let mut m = StreamMasker::new(maskers(), kind, 1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&m.push(c).unwrap());
        }
        out.extend_from_slice(&m.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_secret_split_across_chunks_is_masked() {
        let out = stream(
            BodyKind::Text,
            &[
                b"card 4111 1111 ",
                b"1111 1111 and ann@exa",
                b"mple.com\nnext line\n",
            ],
        );
        assert!(!out.contains("4111"), "{out}");
        assert!(!out.contains("ann@"), "{out}");
        assert!(out.ends_with("next line\n"), "{out}");
    }

    #[test]
    fn complete_lines_go_at_once_and_the_rest_waits() {
        let mut m = StreamMasker::new(maskers(), BodyKind::EventStream, 1 << 20);
        let first = m
            .push(b"event: msg\ndata: {\"email\":\"bo@example.com\"}\n\ndata: partial")
            .unwrap();
        let first = String::from_utf8(first.to_vec()).unwrap();
        assert!(first.starts_with("event: msg\ndata: {"), "{first}");
        assert!(first.ends_with("}\n\n"), "{first}");
        assert!(!first.contains("bo@example.com"), "{first}");
        assert!(!first.contains("partial"));
        let rest = m.finish().unwrap();
        assert_eq!(&rest[..], b"data: partial");
    }

    #[test]
    fn a_private_key_is_kept_back_until_its_end_line() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        let (a, b) = key.split_at(40);
        let mut m = StreamMasker::new(maskers(), BodyKind::Text, 1 << 20);
        let first = m.push(format!("before\n{a}").as_bytes()).unwrap();
        assert_eq!(&first[..], b"before\n");
        let second = m.push(b.as_bytes()).unwrap();
        let second = String::from_utf8(second.to_vec()).unwrap();
        assert!(
            !second.contains("MIIE") && !second.contains("BKcw"),
            "{second}"
        );
    }

    #[test]
    fn a_long_line_is_released_behind_a_look_behind() {
        let filler = "x ".repeat(LOOK_BEHIND);
        let mut m = StreamMasker::new(maskers(), BodyKind::Text, 1 << 20);
        let out = m.push(filler.as_bytes()).unwrap();
        assert!(!out.is_empty() && out.len() <= filler.len() - LOOK_BEHIND + 1);
        let out2 = m.push(b"4111 1111 1111 1111 end").unwrap();
        let rest = m.finish().unwrap();
        let all = [&out[..], &out2[..], &rest[..]].concat();
        let all = String::from_utf8(all).unwrap();
        assert!(all.starts_with("x x "));
        assert!(!all.contains("4111 1111"), "{}", &all[all.len() - 60..]);
        assert!(all.ends_with(" end"));
    }

    #[test]
    fn text_that_cannot_be_cut_is_withheld_not_passed() {
        let mut m = StreamMasker::new(maskers(), BodyKind::Text, 2 * LOOK_BEHIND);
        m.push(b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        let err = m.push(&vec![b'A'; 3 * LOOK_BEHIND]).unwrap_err();
        assert!(err.contains("withheld"), "{err}");
        let mut m = StreamMasker::new(maskers(), BodyKind::Text, 1 << 20);
        assert!(
            m.push(&[0xff, 0xfe, b'\n'])
                .unwrap_err()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn json_bodies_and_headers() {
        let m = maskers();
        let mut report = Report::default();
        let out = m
            .json_body(
                br#"{"name":"Ann","ssn":"123-45-6789","note":"mail ann@example.com"}"#,
                &mut report,
            )
            .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["name"], "Ann");
        assert_ne!(out["ssn"], "123-45-6789");
        assert!(!out["note"].as_str().unwrap().contains("ann@"));
        let mut headers = HeaderMap::new();
        headers.insert("x-account", "ACC-991".parse().unwrap());
        headers.insert("x-contact", "bo@example.com".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        m.headers(&mut headers, &mut report);
        assert_ne!(headers["x-account"], "ACC-991");
        assert!(!headers["x-contact"].to_str().unwrap().contains("bo@"));
        assert_eq!(headers["content-type"], "application/json");
    }

    #[test]
    fn a_body_typed_binary_that_is_text_is_masked() {
        let out = stream(BodyKind::Binary, &[b"{\"email\":\"ann@example.com\"}\n"]);
        assert!(!out.contains("ann@"), "{out}");
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d,
        ];
        let mut m = StreamMasker::new(maskers(), BodyKind::Binary, 1 << 20);
        assert_eq!(&m.push(&png).unwrap()[..], &png[..]);
        assert_eq!(&m.push(b"ann@example.com").unwrap()[..], b"ann@example.com");
        assert!(m.finish().unwrap().is_empty());
    }

    #[test]
    fn a_long_ndjson_line_split_across_chunks_is_masked_as_json() {
        let line = format!(
            "{{\"ssn\":\"123-45-6789\",\"note\":\"{}\"}}\n",
            "x".repeat(5000)
        );
        let (a, b) = line.split_at(4500);
        let out = stream(BodyKind::Ndjson, &[a.as_bytes(), b.as_bytes()]);
        assert!(!out.contains("123-45-6789"), "{}", &out[..80]);
    }

    #[test]
    fn a_token_longer_than_the_look_behind_is_not_cut() {
        // A JWT with a large payload, sent in small chunks after a long line of text.
        let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
        let payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
            .repeat(100);
        let text = format!(
            "{} token {header}.{payload}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c end",
            "w ".repeat(3000)
        );
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(1024).collect();
        let spec = ProfileSpec {
            detectors: vec!["jwt".into()],
            style: Style::Redact,
            ..ProfileSpec::default()
        };
        let maskers = Maskers::new(vec![Arc::new(Profile::compile(&spec).unwrap())]);
        let mut m = StreamMasker::new(maskers, BodyKind::Text, 1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&m.push(c).unwrap());
        }
        out.extend_from_slice(&m.finish().unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains(header), "the JWT's header leaked");
        assert!(
            !out.contains("SflKxwRJSMeKKF2QT4fw"),
            "the JWT's signature leaked"
        );
        assert!(out.ends_with(" end"));
    }

    #[test]
    fn the_upstream_credential_never_shows_in_an_answer() {
        let m = maskers().with_secrets(Arc::from(vec!["s3cr3t-upstream-token".to_string()]));
        let mut report = Report::default();
        let out = m
            .json_body(br#"{"echo":"Bearer s3cr3t-upstream-token"}"#, &mut report)
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("s3cr3t"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-echo-auth",
            "Bearer s3cr3t-upstream-token".parse().unwrap(),
        );
        headers.append(
            "x-contact",
            "Zo\u{eb}"
                .parse::<http::HeaderValue>()
                .unwrap_or(http::HeaderValue::from_static("z")),
        );
        m.headers(&mut headers, &mut report);
        assert_eq!(headers["x-echo-auth"], "Bearer [UPSTREAM_CREDENTIAL]");
        assert!(
            m.json_body(b"{not json", &mut report)
                .unwrap_err()
                .contains("withheld")
        );
    }

    #[test]
    fn kinds_follow_the_content_type() {
        let kind = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            BodyKind::of(&h)
        };
        assert_eq!(kind("application/json; charset=utf-8"), BodyKind::Json);
        assert_eq!(kind("application/problem+json"), BodyKind::Json);
        assert_eq!(kind("text/event-stream"), BodyKind::EventStream);
        assert_eq!(kind("application/x-ndjson"), BodyKind::Ndjson);
        assert_eq!(kind("text/csv"), BodyKind::Text);
        assert_eq!(kind("image/png"), BodyKind::Binary);
        assert_eq!(BodyKind::of(&HeaderMap::new()), BodyKind::Text);
    }
}
