//! An MCP server written with the rmcp SDK, over stdio: the real stdio upstream of the
//! gateway's integration tests (`tests/rmcp_peers.rs`). `--legacy` makes it refuse the
//! stateless 2026-07-28 revision.

#[path = "../tests/support/rmcp_tools.rs"]
mod rmcp_tools;

use rmcp::ServiceExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let legacy_only = std::env::args().any(|a| a == "--legacy");
    let service = rmcp_tools::Tools::new(legacy_only)
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}
