//! Attacks on what the MCP gateway decides: fields that disagree with what the upstream acts
//! on, methods without a decision, list and completion results that leak what policy denies,
//! upstream processes spawned for callers no rule allows, non-conformant stateless envelopes.
