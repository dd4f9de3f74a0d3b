//! The attack suite: each test replays one attack from the adversarial pass of issue 13 (a
//! caller with a valid low-privilege API key, or none) against the real gateway and real
//! peers, and asserts it is refused or its answer is masked. A test here fails on the build
//! that had the hole. docs/security.md lists the threat model and which test keeps which item.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod mcp_decisions;
mod mcp_masking;
mod mcp_transport;
mod pg;
mod pg_support;
