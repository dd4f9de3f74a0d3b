//! The MCP adapter of Portcullis.
//!
//! A gateway in front of MCP servers: callers reach `/mcp/<target>` over streamable HTTP in
//! either era of the protocol (session-based 2025-06-18/2025-11-25, or stateless
//! 2026-07-28); upstreams are stdio child processes or streamable-HTTP servers of either era.
//! Every request is identified, turned into a protocol-neutral action, decided by the policy
//! crate, forwarded or refused, and recorded in the audit log before its answer is released.
//! See `README.md` beside this crate for how each part of the protocol is handled.
#![forbid(unsafe_code)]

pub mod era;
pub mod gateway;
pub mod headers;
pub mod jsonrpc;
pub mod link;
pub mod masking;
pub mod pins;
pub mod server;
pub mod stream;

pub use gateway::{Gateway, GatewayError};
pub use pins::Pins;
pub use server::router;
