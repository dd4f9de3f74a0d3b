//! Attacks on MCP masking: values that reach the caller in clear through errors, the GET
//! stream, server-to-client requests, content items other than text, and results of methods
//! that policy does not decide.
