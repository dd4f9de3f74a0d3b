//! The built-in demo upstreams: a small billing service as an MCP server over stdio, and
//! the same customers as a JSON HTTP API served in the demo's own process.
//!
//! They exist so that `portcullis demo` works on a fresh machine with nothing else
//! installed, and they deliberately return sensitive data (emails, card numbers) so the
//! gateway's recording and masking have something to show. The MCP server speaks both
//! protocol eras: `initialize` for session-based clients and `server/discover` for
//! 2026-07-28 ones.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

const CUSTOMERS: &[(&str, &str, &str, &str)] = &[
    (
        "cus_1001",
        "Ada Lovelace",
        "ada@example.com",
        "4111 1111 1111 1111",
    ),
    (
        "cus_1002",
        "Grace Hopper",
        "grace.hopper@example.org",
        "5500 0055 5555 5559",
    ),
    (
        "cus_1003",
        "Alan Turing",
        "alan@example.net",
        "3782 822463 10005",
    ),
];

fn tools() -> Value {
    json!([
        {
            "name": "lookup_customer",
            "description": "Look up a billing customer by id (cus_...) or email; returns the customer record.",
            "inputSchema": {"type": "object", "properties": {"customer": {"type": "string", "description": "customer id or email"}}, "required": ["customer"]}
        },
        {
            "name": "refund_payment",
            "description": "Refund an amount (in USD) to a customer's card.",
            "inputSchema": {"type": "object", "properties": {"customer": {"type": "string"}, "amount": {"type": "number"}, "reason": {"type": "string"}}, "required": ["customer", "amount"]}
        },
        {
            "name": "delete_customer",
            "description": "Permanently delete a customer and their payment history.",
            "inputSchema": {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]}
        }
    ])
}

fn find(
    customer: &str,
) -> Option<&'static (&'static str, &'static str, &'static str, &'static str)> {
    CUSTOMERS
        .iter()
        .find(|c| c.0 == customer || c.2 == customer)
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn call(name: &str, args: &Value) -> Value {
    let customer = args["customer"].as_str().unwrap_or("");
    match (name, find(customer)) {
        ("lookup_customer", Some((id, name, email, card))) => {
            let record = json!({"id": id, "name": name, "email": email, "card_number": card, "plan": "pro", "balance_usd": 42.5});
            let mut result = text_result(record.to_string(), false);
            result["structuredContent"] = record;
            result
        }
        ("refund_payment", Some((id, ..))) => {
            let amount = args["amount"].as_f64().unwrap_or(0.0);
            text_result(format!("refunded {amount:.2} USD to {id}"), false)
        }
        ("delete_customer", Some((id, ..))) => text_result(format!("deleted {id}"), false),
        (_, None) => text_result(format!("no customer {customer:?}"), true),
        _ => Value::Null,
    }
}

fn answer(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let method = request["method"].as_str().unwrap_or("");
    let params = &request["params"];
    let modern = params["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28";
    let info = json!({"name": "portcullis-demo-billing", "version": env!("CARGO_PKG_VERSION")});
    let mut result = match method {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"].as_str().filter(|v| ["2025-11-25", "2025-06-18", "2025-03-26"].contains(v)).unwrap_or("2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": info,
            "instructions": "A demo billing service. Customers: cus_1001, cus_1002, cus_1003.",
        }),
        "server/discover" => json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": info},
            "instructions": "A demo billing service. Customers: cus_1001, cus_1002, cus_1003.",
            "ttlMs": 60000,
            "cacheScope": "public",
        }),
        "ping" => json!({}),
        "tools/list" => {
            let mut r = json!({"tools": tools()});
            if modern {
                r["ttlMs"] = json!(60000);
                r["cacheScope"] = json!("public");
            }
            r
        }
        "tools/call" => {
            let name = params["name"].as_str().unwrap_or("");
            let result = call(name, &params["arguments"]);
            if result.is_null() {
                return Some(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool {name:?}")}}),
                );
            }
            result
        }
        _ => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {method}")}}),
            );
        }
    };
    if modern {
        result["resultType"] = json!("complete");
    }
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// The customers HTTP API: `GET /customers`, `GET /customers/{id}`,
/// `POST /customers/{id}/refund` (`{"amount": 25}`) and `DELETE /customers/{id}`. It answers
/// only requests carrying `Authorization: Bearer <token>`, the credential the gateway injects:
/// callers of the gateway never hold it.
pub fn customers_api(token: String) -> axum::Router {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};

    let expected = format!("Bearer {token}");
    let gate = move |request: axum::extract::Request, next: Next| {
        let authorized = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        async move {
            if authorized {
                next.run(request).await
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "the customers API wants its own service token"})),
                )
                    .into_response()
            }
        }
    };
    fn not_found(id: &str) -> Response {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no customer {id:?}")})),
        )
            .into_response()
    }
    fn record(c: &(&str, &str, &str, &str)) -> Value {
        json!({"id": c.0, "name": c.1, "email": c.2, "card_number": c.3, "plan": "pro"})
    }
    Router::new()
        .route(
            "/customers",
            get(|| async {
                Json(json!({"customers": CUSTOMERS.iter().map(record).collect::<Vec<_>>()}))
            }),
        )
        .route(
            "/customers/{id}",
            get(|Path(id): Path<String>| async move {
                match find(&id) {
                    Some(c) => Json(record(c)).into_response(),
                    None => not_found(&id),
                }
            })
            .delete(|Path(id): Path<String>| async move {
                match find(&id) {
                    Some(c) => Json(json!({"deleted": c.0})).into_response(),
                    None => not_found(&id),
                }
            }),
        )
        .route(
            "/customers/{id}/refund",
            post(|Path(id): Path<String>, body: Json<Value>| async move {
                let Some(c) = find(&id) else {
                    return not_found(&id);
                };
                match body["amount"].as_f64() {
                    Some(amount) if amount > 0.0 => {
                        Json(json!({"refunded": c.0, "amount_usd": amount, "status": "succeeded"}))
                            .into_response()
                    }
                    _ => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        Json(
                            json!({"error": "the body needs a positive amount: {\"amount\": 25}"}),
                        ),
                    )
                        .into_response(),
                }
            }),
        )
        .layer(middleware::from_fn(gate))
}

/// Serves MCP over stdin/stdout until stdin closes.
pub fn run() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(&request),
            Err(e) => Some(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}}),
            ),
        };
        if let Some(reply) = reply {
            writeln!(stdout, "{reply}")?;
            stdout.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_both_eras() {
        let init = answer(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})).unwrap();
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
        let discover = answer(&json!({"jsonrpc":"2.0","id":2,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})).unwrap();
        assert_eq!(discover["result"]["resultType"], "complete");
        let call = answer(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"customer":"cus_1001"}}})).unwrap();
        assert!(
            call["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("ada@example.com")
        );
        assert!(answer(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).is_none());
    }
}
