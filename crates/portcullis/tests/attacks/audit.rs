//! Attacks on the audit trail: actions that reach a target without their event, and digests
//! that give back the values they summarise.

use std::process::Command;

use crate::common::*;
use serde_json::json;

fn demo_config(agent: &Key) -> String {
    format!(
        r#"{agent}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
"#,
        agent = agent.config,
        cmd = demo_server_command()
    )
}

/// Issue 13, item 14d: a tool name carrying U+202E (right-to-left override) and other bidi
/// or control characters is recorded as given; `audit tail` printed it raw, so the
/// operator's terminal showed the line reordered. The line must carry the characters as
/// JSON escapes (still the same JSON value), never raw.
#[tokio::test]
async fn a_bidi_override_in_a_tool_name_is_escaped_in_audit_tail() {
    let agent = api_key("bidi-agent", "agent", &["agents"]);
    let gw = Gateway::start(&demo_config(&agent));
    let client = reqwest::Client::new();
    let sneaky = "lookup\u{202e}remmoc\u{2066}x\u{200f}\u{85}";
    let _ = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": sneaky, "arguments": {}}),
    )
    .await;
    let out = Command::new(binary())
        .args(["audit", "tail", "-n", "1000", "--data-dir"])
        .arg(gw.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for raw in ['\u{202e}', '\u{2066}', '\u{200f}', '\u{85}'] {
        assert!(
            !text.contains(raw),
            "audit tail printed U+{:04X} raw: {text}",
            raw as u32
        );
    }
    assert!(
        text.contains("\\u202e"),
        "the override is not escaped: {text}"
    );
    // The escaped line is the same JSON: the recorded name comes back whole.
    assert!(
        gw.events()
            .iter()
            .any(|e| e.to_string().contains(&json!(sneaky).to_string())),
        "no event carries the tool name as given"
    );
}
