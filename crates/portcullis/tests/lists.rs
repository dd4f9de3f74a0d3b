//! Least privilege in listings: a caller sees only the tools, resources and prompts its
//! rules allow or hold, and reading what it cannot see is refused.

mod common;

use common::*;
use serde_json::{Value, json};

const CATALOGUE: &str = r#"
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    m = json.loads(line)
    i, method = m.get("id"), m.get("method")
    if i is None:
        continue
    if method == "initialize":
        r = {"protocolVersion": "2025-11-25", "capabilities": {"resources": {}, "prompts": {}, "tools": {}}, "serverInfo": {"name": "catalogue", "version": "1"}}
    elif method == "resources/list":
        r = {"resources": [{"uri": "docs://public/readme", "name": "readme"}, {"uri": "docs://hr/salaries", "name": "salaries"}]}
    elif method == "resources/read":
        r = {"contents": [{"uri": m["params"]["uri"], "text": "content of " + m["params"]["uri"]}]}
    elif method == "prompts/list":
        r = {"prompts": [{"name": "summarise"}, {"name": "exfiltrate"}]}
    elif method == "prompts/get":
        r = {"messages": [{"role": "user", "content": {"type": "text", "text": m["params"]["name"]}}]}
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}}); continue
    send({"jsonrpc": "2.0", "id": i, "result": r})
"#;

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list["result"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn resources_and_prompts_are_listed_and_read_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("catalogue.py");
    std::fs::write(&script, CATALOGUE).unwrap();
    let agent = api_key("agent", "agent", &["agents"]);
    let gw = Gateway::start(&format!(
        r#"{}[targets.docs]
kind = "mcp"
command = [{:?}, {:?}]

[[rules]]
name = "agents read public docs"
who.groups = ["agents"]
target = "docs"
resources = ["docs://public/*"]
prompts = ["summarise"]
"#,
        agent.config,
        python(),
        script.display().to_string()
    ));
    let client = reqwest::Client::new();
    let url = gw.url("docs");

    let (_, resources) =
        modern_call(&client, &url, &agent.key, 1, "resources/list", json!({})).await;
    assert_eq!(
        names(&resources, "resources", "uri"),
        ["docs://public/readme"]
    );
    let (_, prompts) = modern_call(&client, &url, &agent.key, 2, "prompts/list", json!({})).await;
    assert_eq!(names(&prompts, "prompts", "name"), ["summarise"]);

    let (_, read) = modern_call(
        &client,
        &url,
        &agent.key,
        3,
        "resources/read",
        json!({"uri": "docs://public/readme"}),
    )
    .await;
    assert_eq!(
        read["result"]["contents"][0]["text"],
        "content of docs://public/readme"
    );
    let (_, refused) = modern_call(
        &client,
        &url,
        &agent.key,
        4,
        "resources/read",
        json!({"uri": "docs://hr/salaries"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    let (_, refused) = modern_call(
        &client,
        &url,
        &agent.key,
        5,
        "prompts/get",
        json!({"name": "exfiltrate"}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32010, "{refused}");

    let events = gw.events();
    let listing = events
        .iter()
        .find(|e| e["action"] == "resources/list")
        .unwrap();
    assert_eq!(listing["detail"], "1 of 2 resources shown");
}
