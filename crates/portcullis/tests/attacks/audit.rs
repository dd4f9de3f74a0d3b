//! Attacks on the audit trail: actions that reach a target without their event, and digests
//! that give back the values they summarise.
