//! RFC 8785 (JCS) canonical bytes of audit events.
//!
//! The bytes produced here are what gets hashed into the log, so they must never change for
//! a given event: any difference between two implementations (ours now, a verifier written
//! in another language later) would make a valid log look tampered with.

use portcullis_model::{
    Actor, AuditEvent, DataFinding, EvidenceRecord, HttpRecord, Identity, PayloadDigest,
    RecordedRef, RemovedRecord, SegmentRecord, StatementRecord,
};

/// Canonical bytes of an event: the RFC 8785 JSON canonicalization (JCS) of its serde
/// serialization.
///
/// Object keys are sorted by UTF-16 code units, there is no whitespace, strings use the
/// minimal JSON escaping and numbers use ECMAScript formatting (`1e+21`, `-0` as `0`), by
/// `ryu-js`. A non-finite duration is left out (JSON cannot say it).
pub fn canonical_bytes(event: &AuditEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    write_event(&mut out, event);
    out
}

/// Writes an event in JCS form directly, member by member in sorted key order.
///
/// Every event on the request path is canonicalized, and a generic JCS serializer (parse,
/// sort, reformat) cost more than the rest of the audit record together. The structs are
/// destructured exhaustively, so a field added to the model fails to compile here instead
/// of silently missing from the hashed bytes; the tests compare this writer with
/// `serde_json_canonicalizer` on fully populated and random events.
fn write_event(out: &mut Vec<u8>, event: &AuditEvent) {
    let AuditEvent {
        id,
        time,
        gateway,
        event_type,
        outcome,
        source,
        identity,
        target,
        session,
        action,
        resource,
        request_id,
        decision,
        rule,
        policy_version,
        arguments,
        result,
        duration_ms,
        detail,
        approval,
        grant,
        reason,
        break_glass,
        findings,
        masked,
        statement,
        http,
        recorded,
        segment,
        removed,
        evidence,
    } = event;
    // JSON has no NaN or Infinity, so JCS refuses them; such a duration is left out, which
    // reads back as the same `None` and keeps this function infallible for the gateway.
    let duration_ms = duration_ms.filter(|d| d.is_finite());
    let mut obj = Object::new(out);
    obj.opt_str("action", action.as_deref());
    obj.opt_str("approval", approval.as_deref());
    if let Some(d) = arguments {
        obj.key("arguments");
        write_digest(obj.out, d);
    }
    if *break_glass {
        obj.key("break_glass");
        obj.out.extend_from_slice(b"true");
    }
    obj.opt_str("decision", decision.as_deref());
    obj.opt_str("detail", detail.as_deref());
    if let Some(ms) = duration_ms {
        obj.key("duration_ms");
        write_number(obj.out, ms);
    }
    if let Some(evidence) = evidence {
        obj.key("evidence");
        write_evidence(obj.out, evidence);
    }
    if let Some(findings) = findings {
        obj.key("findings");
        write_findings(obj.out, findings);
    }
    obj.str("gateway", gateway);
    obj.opt_str("grant", grant.as_deref());
    if let Some(http) = http {
        obj.key("http");
        write_http(obj.out, http);
    }
    obj.str("id", id);
    if let Some(identity) = identity {
        obj.key("identity");
        write_identity(obj.out, identity);
    }
    if let Some(masked) = masked {
        obj.key("masked");
        write_findings(obj.out, masked);
    }
    obj.str("outcome", &serde_name(outcome));
    obj.opt_str("policy_version", policy_version.as_deref());
    obj.opt_str("reason", reason.as_deref());
    if let Some(recorded) = recorded {
        obj.key("recorded");
        let RecordedRef {
            request,
            answer,
            sealed,
        } = recorded;
        let mut r = Object::new(obj.out);
        r.opt_str("answer", answer.as_deref());
        r.opt_str("request", request.as_deref());
        if *sealed {
            r.key("sealed");
            r.out.extend_from_slice(b"true");
        }
        r.end();
    }
    if let Some(removed) = removed {
        obj.key("removed");
        write_removed(obj.out, removed);
    }
    obj.opt_str("request_id", request_id.as_deref());
    obj.opt_str("resource", resource.as_deref());
    if let Some(d) = result {
        obj.key("result");
        write_digest(obj.out, d);
    }
    obj.opt_str("rule", rule.as_deref());
    if let Some(segment) = segment {
        obj.key("segment");
        write_segment(obj.out, segment);
    }
    obj.opt_str("session", session.as_deref());
    obj.opt_str("source", source.as_deref());
    if let Some(statement) = statement {
        obj.key("statement");
        write_statement(obj.out, statement);
    }
    obj.opt_str("target", target.as_deref());
    obj.str("time", time);
    obj.str("type", &serde_name(event_type));
    obj.end();
}

fn write_list(obj: &mut Object<'_>, key: &str, items: &[String]) {
    obj.key(key);
    obj.out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            obj.out.push(b',');
        }
        write_string(obj.out, item);
    }
    obj.out.push(b']');
}

fn write_segment(out: &mut Vec<u8>, segment: &SegmentRecord) {
    let SegmentRecord {
        file,
        sha256,
        bytes,
        first_seq,
        last_seq,
        chunks,
        recipients,
    } = segment;
    let mut obj = Object::new(out);
    obj.key("bytes");
    write_integer(obj.out, *bytes);
    obj.key("chunks");
    write_integer(obj.out, *chunks);
    obj.str("file", file);
    obj.key("first_seq");
    write_integer(obj.out, *first_seq);
    obj.key("last_seq");
    write_integer(obj.out, *last_seq);
    write_list(&mut obj, "recipients", recipients);
    obj.str("sha256", sha256);
    obj.end();
}

fn write_evidence(out: &mut Vec<u8>, evidence: &EvidenceRecord) {
    let EvidenceRecord {
        document,
        format,
        since,
        until,
        sha256,
        bytes,
        file,
    } = evidence;
    let mut obj = Object::new(out);
    obj.key("bytes");
    write_integer(obj.out, *bytes);
    obj.str("document", document);
    obj.opt_str("file", file.as_deref());
    obj.str("format", format);
    obj.str("sha256", sha256);
    obj.opt_str("since", since.as_deref());
    obj.opt_str("until", until.as_deref());
    obj.end();
}

fn write_removed(out: &mut Vec<u8>, removed: &RemovedRecord) {
    let RemovedRecord {
        before,
        chunks,
        segments,
    } = removed;
    let mut obj = Object::new(out);
    obj.str("before", before);
    if !chunks.is_empty() {
        write_list(&mut obj, "chunks", chunks);
    }
    if !segments.is_empty() {
        write_list(&mut obj, "segments", segments);
    }
    obj.end();
}

fn write_http(out: &mut Vec<u8>, http: &HttpRecord) {
    let HttpRecord {
        method,
        route,
        status,
        request_bytes,
        response_bytes,
        upstream_ms,
    } = http;
    let mut obj = Object::new(out);
    obj.str("method", method);
    obj.key("request_bytes");
    write_integer(obj.out, *request_bytes);
    obj.key("response_bytes");
    write_integer(obj.out, *response_bytes);
    obj.opt_str("route", route.as_deref());
    if let Some(status) = status {
        obj.key("status");
        write_integer(obj.out, u64::from(*status));
    }
    if let Some(ms) = upstream_ms.filter(|ms| ms.is_finite()) {
        obj.key("upstream_ms");
        write_number(obj.out, ms);
    }
    obj.end();
}

fn write_statement(out: &mut Vec<u8>, statement: &StatementRecord) {
    let StatementRecord {
        text,
        fingerprint,
        kinds,
        tables,
        functions,
        rows,
    } = statement;
    let mut obj = Object::new(out);
    obj.str("fingerprint", fingerprint);
    if !functions.is_empty() {
        write_list(&mut obj, "functions", functions);
    }
    write_list(&mut obj, "kinds", kinds);
    if let Some(rows) = rows {
        obj.key("rows");
        write_integer(obj.out, *rows);
    }
    if !tables.is_empty() {
        write_list(&mut obj, "tables", tables);
    }
    obj.str("text", text);
    obj.end();
}

fn write_identity(out: &mut Vec<u8>, identity: &Identity) {
    let Identity {
        issuer,
        subject,
        display_name,
        kind,
        groups,
        auth_method,
        credential_id,
        act,
    } = identity;
    let mut obj = Object::new(out);
    if !act.is_empty() {
        obj.key("act");
        obj.out.push(b'[');
        for (i, actor) in act.iter().enumerate() {
            if i > 0 {
                obj.out.push(b',');
            }
            let Actor {
                subject,
                issuer,
                client_id,
            } = actor;
            let mut a = Object::new(obj.out);
            a.opt_str("client_id", client_id.as_deref());
            a.opt_str("issuer", issuer.as_deref());
            a.str("subject", subject);
            a.end();
        }
        obj.out.push(b']');
    }
    obj.str("auth_method", &serde_name(auth_method));
    obj.opt_str("credential_id", credential_id.as_deref());
    obj.opt_str("display_name", display_name.as_deref());
    obj.key("groups");
    obj.out.push(b'[');
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            obj.out.push(b',');
        }
        write_string(obj.out, group);
    }
    obj.out.push(b']');
    obj.str("issuer", issuer);
    obj.str("kind", kind.as_str());
    obj.str("subject", subject);
    obj.end();
}

fn write_findings(out: &mut Vec<u8>, findings: &[DataFinding]) {
    out.push(b'[');
    for (i, finding) in findings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let DataFinding {
            detector,
            path,
            count,
        } = finding;
        let mut obj = Object::new(out);
        obj.key("count");
        write_integer(obj.out, u64::from(*count));
        obj.str("detector", detector);
        obj.str("path", path);
        obj.end();
    }
    out.push(b']');
}

fn write_digest(out: &mut Vec<u8>, digest: &PayloadDigest) {
    let PayloadDigest { alg, sha256, size } = digest;
    let mut obj = Object::new(out);
    if let Some(alg) = alg {
        obj.str("alg", alg.as_str());
    }
    obj.str("sha256", sha256);
    obj.key("size");
    write_integer(obj.out, *size);
    obj.end();
}

/// A JSON object being written; members must be added in sorted key order.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_string(self.out, key);
        self.out.push(b':');
    }
    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_string(self.out, value);
    }
    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }
    fn end(self) {
        self.out.push(b'}');
    }
}

/// JCS strings are serde_json's: `\"`, `\\`, `\b \f \n \r \t`, other control characters
/// as lower-case `\u00XX`, everything else (including non-ASCII) as UTF-8.
fn write_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

/// ECMAScript `Number.prototype.toString` formatting, as JCS requires, by `ryu-js` (the
/// formatter the canonicalizer crate itself uses).
fn write_number(out: &mut Vec<u8>, n: f64) {
    if n == 0.0 {
        out.push(b'0'); // also -0
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    }
}

/// JCS reads every number as an IEEE double: integers beyond 2^53 are written as the double
/// they round to, as any other JCS implementation would.
fn write_integer(out: &mut Vec<u8>, n: u64) {
    if n <= 1 << 53 {
        out.extend_from_slice(n.to_string().as_bytes());
    } else {
        write_number(out, n as f64);
    }
}

fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => unreachable!("unit enum serializes as a string, got {other:?}"),
    }
}

/// JCS of any serializable value whose floats are all finite and whose map keys are strings.
#[cfg(test)]
pub(crate) fn canonicalize<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The only ways JCS serialization can fail are non-finite floats and non-string map
    // keys; `AuditEvent` has neither once `canonical_bytes` has dropped non-finite floats.
    serde_json_canonicalizer::to_vec(value)
        .expect("audit events contain only finite numbers and string keys")
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_model::{AuthMethod, EventType, IdentityKind, Outcome};

    fn full_event(duration: f64, text: &str) -> AuditEvent {
        AuditEvent {
            id: "01a1fdea-921a-7300-a3d8-c3a453a0684b".into(),
            time: "2026-11-21T12:00:00.123Z".into(),
            gateway: "gw-\u{e9}".into(),
            event_type: EventType::ToolPinMismatch,
            outcome: Outcome::UpstreamError,
            source: Some("127.0.0.1:5000".into()),
            identity: Some(Identity {
                issuer: "https://idp".into(),
                subject: text.into(),
                display_name: Some("D\u{f6}rte \"Q\" \u{1F600}".into()),
                kind: IdentityKind::Service,
                groups: vec!["a".into(), text.into()],
                auth_method: AuthMethod::Oidc,
                credential_id: Some("abc".into()),
                act: vec![
                    Actor {
                        subject: "agent".into(),
                        issuer: Some("i".into()),
                        client_id: Some("c".into()),
                    },
                    Actor {
                        subject: "x".into(),
                        issuer: None,
                        client_id: None,
                    },
                ],
            }),
            target: Some("t".into()),
            session: Some("s".into()),
            action: Some("tools/call".into()),
            resource: Some(text.into()),
            request_id: Some("\"7\"".into()),
            decision: Some("allow".into()),
            rule: Some("r".into()),
            policy_version: Some("v".into()),
            arguments: Some(PayloadDigest {
                alg: Some(portcullis_model::DigestAlgorithm::HmacSha256),
                sha256: "00".into(),
                size: 12,
            }),
            result: Some(PayloadDigest {
                alg: None,
                sha256: "ff".into(),
                size: u64::MAX,
            }),
            duration_ms: Some(duration),
            detail: Some(format!("line\nbreak\t{text}\u{1}")),
            approval: Some("ap".into()),
            grant: Some("gr".into()),
            reason: Some(format!("because {text}")),
            break_glass: true,
            findings: Some(vec![DataFinding {
                detector: "credit_card".into(),
                path: "$.arguments.card".into(),
                count: 1,
            }]),
            masked: Some(vec![
                DataFinding {
                    detector: "email".into(),
                    path: "$.content[0].text".into(),
                    count: 2,
                },
                DataFinding {
                    detector: "field".into(),
                    path: "$.structuredContent[\"ünï\"]".into(),
                    count: 1,
                },
            ]),
            statement: Some(StatementRecord {
                text: format!("SELECT $1 FROM \"{text}\""),
                fingerprint: "0123456789abcdef".into(),
                kinds: vec!["select".into(), "delete".into()],
                tables: vec![text.into(), "public.a".into()],
                functions: vec!["pg_catalog.count".into()],
                rows: Some(u64::MAX),
            }),
            http: Some(HttpRecord {
                method: "POST".into(),
                route: Some(format!("/customers/{{id}}/{text}")),
                status: Some(202),
                request_bytes: u64::MAX,
                response_bytes: 0,
                upstream_ms: Some(duration),
            }),
            recorded: Some(RecordedRef {
                request: Some(format!("{text}req")),
                answer: Some("ans".into()),
                sealed: true,
            }),
            segment: Some(SegmentRecord {
                file: format!("{text}.age"),
                sha256: "ab".into(),
                bytes: u64::MAX,
                first_seq: 1,
                last_seq: 9,
                chunks: 4,
                recipients: vec!["f1".into(), text.into()],
            }),
            removed: Some(RemovedRecord {
                before: "2026-12-01T00:00:00Z".into(),
                chunks: vec![text.into(), "c2".into()],
                segments: vec!["s.age".into()],
            }),
            evidence: Some(EvidenceRecord {
                document: "report".into(),
                format: format!("html{text}"),
                since: Some("2026-12-01T00:00:00Z".into()),
                until: None,
                sha256: "cd".into(),
                bytes: 7,
                file: Some(text.into()),
            }),
        }
    }

    #[test]
    fn direct_writer_matches_the_generic_canonicalizer() {
        let texts = [
            "",
            "plain",
            "\u{7f}\u{0}\u{1f}",
            "\u{2028}\u{10FFFF}",
            "é/\\",
        ];
        let durations = [
            0.0,
            -0.0,
            1.0,
            12.5,
            0.001,
            1234567.891,
            1e-6,
            3.0e20,
            1e21,
            5e-7,
            1e300,
        ];
        for text in texts {
            for d in durations {
                let event = full_event(d, text);
                assert_eq!(
                    String::from_utf8(canonical_bytes(&event)).unwrap(),
                    String::from_utf8(canonicalize(&event)).unwrap(),
                    "duration {d}, text {text:?}"
                );
            }
        }
        let mut sparse = full_event(1.5, "x");
        sparse.identity = None;
        sparse.arguments = None;
        sparse.detail = None;
        sparse.break_glass = false;
        sparse.grant = None;
        sparse.duration_ms = None;
        sparse.recorded = Some(RecordedRef {
            request: None,
            answer: Some("a".into()),
            sealed: false,
        });
        sparse.segment = None;
        sparse.evidence = None;
        sparse.removed = Some(RemovedRecord {
            before: "t".into(),
            chunks: vec![],
            segments: vec![],
        });
        assert_eq!(canonical_bytes(&sparse), canonicalize(&sparse));
    }

    #[test]
    fn random_durations_format_like_ecmascript() {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = f64::from_bits(x);
            if !d.is_finite() {
                continue;
            }
            let mut a = Vec::new();
            write_number(&mut a, d);
            assert_eq!(a, canonicalize(&d), "{d:e}");
            let ms = (x % 10_000_000) as f64 / 1000.0;
            let mut b = Vec::new();
            write_number(&mut b, ms);
            assert_eq!(b, canonicalize(&ms), "{ms}");
        }
    }
}
