//! Elastic Common Schema (ECS 8) documents for the `elasticsearch` preset.
//!
//! Each document carries the native record, unchanged, under `portcullis` (what
//! `verify-export` checks), and the ECS fields a SIEM's rules and dashboards expect beside
//! it. ECS fields are a projection: where ECS allows fewer values than the gateway has (the
//! outcome), the gateway's own value stays in `portcullis.event`. Fields ECS has no home for
//! go to `labels` (keywords).
//!
//! Receivers should map `portcullis` as `{"type": "object", "enabled": false}` (kept in
//! `_source`, not indexed): the native event holds fields whose JSON type varies by event
//! kind, and a mapping conflict there would make the cluster refuse a record for good.

use portcullis_model::AuditEvent;
use serde_json::{Map, Value, json};

use crate::record::{EventRecord, Record};

/// The ECS version the documents follow.
pub const ECS_VERSION: &str = "8.17.0";

/// The ECS document of a record of `origin`'s log.
pub fn ecs_document(record: &Record, origin: &str) -> Value {
    let mut doc = ecs_fields(record, origin);
    doc["portcullis"] = serde_json::from_str(&record.to_json(origin)).unwrap_or(Value::Null);
    doc
}

/// Appends the document of `record` to `out` (no newline), with `time` as `@timestamp`
/// when the record has no time of its own. The native record is written as it is, not
/// parsed and written again: it is most of the document.
pub(crate) fn write_document(record: &Record, origin: &str, time: &str, out: &mut Vec<u8>) {
    let mut doc = ecs_fields(record, origin);
    if doc.get("@timestamp").is_none() {
        doc["@timestamp"] = json!(time);
    }
    // Serialising a Value into a Vec cannot fail; it ends with `}`, reopened here.
    let _ = serde_json::to_writer(&mut *out, &doc);
    out.pop();
    out.extend_from_slice(b",\"portcullis\":");
    let mut native = String::new();
    record.write_json(origin, &mut native);
    out.extend_from_slice(native.as_bytes());
    out.push(b'}');
}

/// The ECS fields of a record, without the native record.
fn ecs_fields(record: &Record, origin: &str) -> Value {
    let mut doc = json!({
        "ecs": {"version": ECS_VERSION},
        "service": {"name": "portcullis"},
        "labels": {"origin": origin, "record": record.kind()},
    });
    match record {
        Record::Event(e) => event_fields(e, &mut doc),
        Record::Checkpoint(c) => {
            doc["@timestamp"] = json!(c.time);
            doc["event"] = json!({
                "kind": "state",
                "category": ["configuration"],
                "type": ["info"],
                "action": "checkpoint",
                "dataset": "portcullis.audit",
                "module": "portcullis",
            });
            doc["labels"]["size"] = json!(c.size.to_string());
        }
        Record::Omitted(o) => {
            // No time: the transport indexes it under its neighbours' time.
            doc["event"] = json!({
                "kind": "event",
                "type": ["info"],
                "action": "omitted",
                "dataset": "portcullis.audit",
                "module": "portcullis",
                "sequence": o.leaf_index,
            });
            doc["labels"]["leaf_count"] = json!(o.leaf_hashes.len().to_string());
        }
    }
    doc
}

fn event_fields(record: &EventRecord, doc: &mut Value) {
    let e: &AuditEvent = &record.event;
    let (category, kind) = category(&record.event_type, &record.outcome, e);
    let mut event = json!({
        "kind": "event",
        "category": category,
        "type": kind,
        "action": record.event_type,
        "outcome": outcome(&record.outcome),
        "id": e.id,
        "dataset": "portcullis.audit",
        "module": "portcullis",
        "sequence": record.leaf_index,
        "hash": hex::encode(record.leaf_hash),
    });
    if let Some(ms) = e.duration_ms {
        // ECS durations are nanoseconds.
        event["duration"] = json!((ms * 1_000_000.0).round() as i64);
    }
    if let Some(reason) = &e.reason {
        event["reason"] = json!(reason);
    }
    doc["@timestamp"] = json!(e.time);
    doc["event"] = event;
    doc["observer"] = json!({"name": e.gateway, "type": "proxy", "product": "Portcullis", "vendor": "Portcullis"});
    if let Some(detail) = &e.detail {
        doc["message"] = json!(detail);
    }
    if let Some(identity) = &e.identity {
        let mut user = json!({
            "id": identity.subject,
            "name": identity.display_name.as_deref().unwrap_or(&identity.subject),
            "domain": identity.issuer,
        });
        if !identity.groups.is_empty() {
            user["group"] = json!({"name": identity.groups});
        }
        doc["user"] = user;
        let kind = serde_json::to_value(identity.kind).unwrap_or(Value::Null);
        let method = serde_json::to_value(identity.auth_method).unwrap_or(Value::Null);
        doc["labels"]["identity_kind"] = kind;
        doc["labels"]["auth_method"] = method;
        if let Some(credential) = &identity.credential_id {
            doc["labels"]["credential_id"] = json!(credential);
        }
    }
    if let Some(source) = &e.source {
        doc["source"] = source_fields(source);
    }
    if let Some(target) = &e.target {
        doc["service"]["target"] = json!({"name": target});
    }
    if let Some(rule) = &e.rule {
        doc["rule"] = json!({"name": rule});
        if let Some(version) = &e.policy_version {
            doc["rule"]["version"] = json!(version);
        }
    }
    if let Some(http) = &e.http {
        // ECS's own HTTP fields, so a SIEM's web dashboards read HTTP targets' requests.
        let mut fields = json!({
            "request": {"method": http.method, "body": {"bytes": http.request_bytes}},
            "response": {"body": {"bytes": http.response_bytes}},
        });
        if let Some(status) = http.status {
            fields["response"]["status_code"] = json!(status);
        }
        doc["http"] = fields;
        if let Some(path) = &e.resource {
            doc["url"] = json!({"path": path});
        }
        if let Some(route) = &http.route {
            doc["labels"]["route"] = json!(route);
        }
    }
    let labels = doc["labels"].as_object_mut().expect("labels is an object");
    let mut label = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            labels.insert(k.into(), json!(v));
        }
    };
    label("action", &e.action);
    label("resource", &e.resource);
    label("session", &e.session);
    label("request_id", &e.request_id);
    label("decision", &e.decision);
    label("approval", &e.approval);
    label("grant", &e.grant);
    labels.insert("outcome".into(), json!(record.outcome));
    labels.insert("leaf_index".into(), json!(record.leaf_index.to_string()));
    if e.break_glass {
        labels.insert("break_glass".into(), json!("true"));
    }
}

/// ECS `event.outcome` allows only `success`, `failure` and `unknown`.
fn outcome(outcome: &str) -> &'static str {
    match outcome {
        "success" => "success",
        "denied" | "rejected" | "failed" | "upstream_error" => "failure",
        _ => "unknown",
    }
}

/// ECS `event.category` and `event.type` for an event type.
fn category(
    event_type: &str,
    outcome: &str,
    e: &AuditEvent,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let access = || match outcome {
        "success" => vec!["access", "allowed"],
        "denied" | "rejected" => vec!["access", "denied"],
        "failed" | "upstream_error" => vec!["access", "error"],
        _ => vec!["info"],
    };
    let (family, name) = event_type.split_once('.').unwrap_or((event_type, ""));
    match (family, name) {
        ("request" | "notification", _) if e.statement.is_some() => (vec!["database"], access()),
        ("request", _) if e.http.is_some() => (vec!["web"], access()),
        ("request" | "notification", _) => (vec!["api"], access()),
        ("session", "start") => (vec!["session"], vec!["start"]),
        ("session", _) => (vec!["session"], vec!["end"]),
        ("auth", _) => (vec!["authentication"], vec!["start"]),
        ("tool", _) => (vec!["configuration"], vec!["change"]),
        // A refused reload changed nothing.
        ("config", _) if outcome == "failed" => (vec!["configuration"], vec!["error"]),
        ("config", _) => (vec!["configuration"], vec!["change"]),
        ("gateway", "start") => (vec!["process"], vec!["start"]),
        ("gateway", _) => (vec!["process"], vec!["end"]),
        ("approval", "requested") | ("grant", "issued") => (vec!["iam"], vec!["creation"]),
        ("approval", "notified") => (vec!["iam"], vec!["info"]),
        ("approval", "refused") => (vec!["iam"], vec!["denied"]),
        ("grant", _) => (vec!["iam"], vec!["deletion"]),
        ("approval", _) => (vec!["iam"], vec!["change"]),
        ("columns", _) => (vec!["database"], vec!["info"]),
        ("recording", "sealed") | ("evidence", "report") => (vec!["file"], vec!["creation"]),
        ("recording", "removed") => (vec!["file"], vec!["deletion"]),
        ("recording", "accessed") => (vec!["file"], vec!["access"]),
        ("recording", _) => (vec!["file"], vec!["error"]),
        ("evidence", _) => (vec!["configuration"], vec!["info"]),
        _ => (vec![], vec!["info"]),
    }
}

/// ECS `source`: the caller's address, split into IP and port when it is `ip:port`.
fn source_fields(source: &str) -> Value {
    let mut fields = Map::new();
    fields.insert("address".into(), json!(source));
    if let Ok(addr) = source.parse::<std::net::SocketAddr>() {
        fields.insert("ip".into(), json!(addr.ip().to_string()));
        fields.insert("port".into(), json!(addr.port()));
    } else if let Ok(ip) = source.parse::<std::net::IpAddr>() {
        fields.insert("ip".into(), json!(ip.to_string()));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use portcullis_audit::Leaf;

    use super::*;
    use crate::record::{CheckpointRecord, OmittedRecord};

    fn event(json: &str) -> Record {
        Record::Event(
            EventRecord::from_leaf(Leaf {
                index: 5,
                body: json.into(),
                leaf_hash: [7; 32],
            })
            .unwrap(),
        )
    }

    #[test]
    fn an_event_maps_to_ecs_and_keeps_the_native_record() {
        let body = r#"{"action":"tools/call","decision":"deny","duration_ms":1.5,"gateway":"gw-1","id":"0190-e1","identity":{"auth_method":"oidc","display_name":"Ada","groups":["ops","sec"],"issuer":"https://idp","kind":"human","subject":"u-42"},"outcome":"denied","resource":"delete_repo","rule":"no-deletes","policy_version":"v3","source":"10.0.0.7:51234","target":"github","time":"2026-12-06T10:00:00.042Z","type":"request","detail":"denied by rule no-deletes"}"#;
        let record = event(body);
        let doc = ecs_document(&record, "portcullis/gw-1");
        let expect = [
            ("/@timestamp", json!("2026-12-06T10:00:00.042Z")),
            ("/event/kind", json!("event")),
            ("/event/action", json!("request")),
            ("/event/outcome", json!("failure")),
            ("/event/category", json!(["api"])),
            ("/event/type", json!(["access", "denied"])),
            ("/event/id", json!("0190-e1")),
            ("/event/sequence", json!(5)),
            ("/event/hash", json!(hex::encode([7; 32]))),
            ("/event/duration", json!(1_500_000)),
            ("/user/id", json!("u-42")),
            ("/user/name", json!("Ada")),
            ("/user/domain", json!("https://idp")),
            ("/user/group/name", json!(["ops", "sec"])),
            ("/source/ip", json!("10.0.0.7")),
            ("/source/port", json!(51234)),
            ("/source/address", json!("10.0.0.7:51234")),
            ("/service/name", json!("portcullis")),
            ("/service/target/name", json!("github")),
            ("/observer/name", json!("gw-1")),
            ("/rule/name", json!("no-deletes")),
            ("/rule/version", json!("v3")),
            ("/message", json!("denied by rule no-deletes")),
            ("/labels/action", json!("tools/call")),
            ("/labels/resource", json!("delete_repo")),
            ("/labels/decision", json!("deny")),
            ("/labels/outcome", json!("denied")),
            ("/labels/origin", json!("portcullis/gw-1")),
            ("/portcullis/record", json!("event")),
            ("/portcullis/event/outcome", json!("denied")),
        ];
        for (pointer, value) in expect {
            assert_eq!(doc.pointer(pointer), Some(&value), "{pointer} in {doc:#}");
        }
        // The native record is the one verify-export reads.
        assert_eq!(
            doc["portcullis"],
            serde_json::from_str::<Value>(&record.to_json("portcullis/gw-1")).unwrap()
        );
    }

    #[test]
    fn an_http_request_maps_to_ecs_web_fields() {
        let body = r#"{"action":"POST","decision":"allow","gateway":"gw","http":{"method":"POST","request_bytes":14,"response_bytes":27,"route":"/customers/{id}/refund","status":200,"upstream_ms":1.2},"id":"e2","outcome":"success","resource":"/customers/c-1/refund","target":"customers","time":"2026-12-06T10:00:00.000Z","type":"request"}"#;
        let doc = ecs_document(&event(body), "o");
        for (pointer, value) in [
            ("/event/category", json!(["web"])),
            ("/event/type", json!(["access", "allowed"])),
            ("/http/request/method", json!("POST")),
            ("/http/request/body/bytes", json!(14)),
            ("/http/response/status_code", json!(200)),
            ("/http/response/body/bytes", json!(27)),
            ("/url/path", json!("/customers/c-1/refund")),
            ("/labels/route", json!("/customers/{id}/refund")),
        ] {
            assert_eq!(doc.pointer(pointer), Some(&value), "{pointer} in {doc:#}");
        }
    }

    #[test]
    fn outcomes_fold_into_the_three_ecs_allows() {
        for (ours, ecs) in [
            ("success", "success"),
            ("denied", "failure"),
            ("rejected", "failure"),
            ("failed", "failure"),
            ("upstream_error", "failure"),
            ("info", "unknown"),
        ] {
            assert_eq!(outcome(ours), ecs);
        }
        let start = event(
            r#"{"gateway":"gw","id":"e1","outcome":"info","source":"gw.local","time":"2026-12-06T10:00:00.000Z","type":"gateway.start"}"#,
        );
        let doc = ecs_document(&start, "o");
        assert_eq!(doc["event"]["category"], json!(["process"]));
        assert_eq!(doc["event"]["outcome"], "unknown");
        assert_eq!(doc["source"], json!({"address": "gw.local"}));
        assert!(doc.get("user").is_none());
        // A reload is a configuration change; a refused one, an error with nothing changed.
        for (outcome, kind) in [("info", "change"), ("failed", "error")] {
            let reload = event(&format!(
                r#"{{"gateway":"gw","id":"e2","outcome":"{outcome}","policy_version":"v2","time":"2026-12-06T10:00:00.000Z","type":"config.reloaded"}}"#
            ));
            let doc = ecs_document(&reload, "o");
            assert_eq!(doc["event"]["category"], json!(["configuration"]));
            assert_eq!(doc["event"]["type"], json!([kind]), "{outcome}");
        }
    }

    #[test]
    fn checkpoints_and_omitted_runs_are_documents_too() {
        let checkpoint = Record::Checkpoint(CheckpointRecord {
            size: 10,
            root: [1; 32],
            time: "2026-12-06T10:00:01.000Z".into(),
            note: "o\n10\nroot\n".into(),
        });
        let doc = ecs_document(&checkpoint, "o");
        assert_eq!(doc["event"]["kind"], "state");
        assert_eq!(doc["event"]["action"], "checkpoint");
        assert_eq!(doc["@timestamp"], "2026-12-06T10:00:01.000Z");
        assert_eq!(doc["portcullis"]["size"], 10);
        let omitted = Record::Omitted(OmittedRecord {
            leaf_index: 3,
            leaf_hashes: vec![[0; 32]],
        });
        let doc = ecs_document(&omitted, "o");
        assert_eq!(doc["event"]["action"], "omitted");
        assert_eq!(doc["portcullis"]["leaf_index"], 3);
        assert!(doc.get("@timestamp").is_none());
        // As the transport writes it: the same document, with the time it is given.
        let mut written = Vec::new();
        write_document(&omitted, "o", "2026-12-06T10:00:02.000Z", &mut written);
        let mut expected = doc;
        expected["@timestamp"] = json!("2026-12-06T10:00:02.000Z");
        assert_eq!(serde_json::from_slice::<Value>(&written).unwrap(), expected);
    }
}
