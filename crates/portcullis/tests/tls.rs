//! The front door over TLS: a client that trusts the gateway's certificate works as over
//! plain HTTP; plain HTTP and untrusting clients get nowhere; the protected-resource metadata
//! names the https URL.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_front_door_serves_mcp_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let agent = api_key("agent", "agent", &["agents"]);
    let tls = format!(
        "[gateway.tls]\ncert = {:?}\nkey = {:?}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    let gw = Gateway::start_with(
        &format!(
            "{}[targets.billing]\nkind = \"mcp\"\n{}\n\n[[rules]]\nname = \"agents look up\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"lookup_customer\"]\n",
            agent.config,
            demo_server_command()
        ),
        &tls,
        &[],
    );
    let url = format!("https://localhost:{}/mcp/billing", gw.addr.port());

    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let (status, ok) = modern_call(
        &trusting,
        &url,
        &agent.key,
        1,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1002"}}),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["result"]["structuredContent"]["name"], "Grace Hopper");

    // Without credentials: the challenge points at the https metadata document.
    let anonymous = trusting.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("resource_metadata=\"https://"),
        "{challenge}"
    );

    // A client that does not trust the certificate, and plain HTTP, get no answer.
    let untrusting = reqwest::Client::new();
    assert!(
        untrusting
            .post(&url)
            .bearer_auth(&agent.key)
            .json(&json!({}))
            .send()
            .await
            .is_err()
    );
    let plain = format!("http://localhost:{}/mcp/billing", gw.addr.port());
    let refused = reqwest::Client::new()
        .post(&plain)
        .bearer_auth(&agent.key)
        .json(&json!({}))
        .send()
        .await;
    assert!(refused.is_err() || !refused.unwrap().status().is_success());
}

#[test]
fn a_missing_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\n[gateway.tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
