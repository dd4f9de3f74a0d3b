//! Attacks on the PostgreSQL adapter: functions that write under a read-only rule, functions
//! that expose other sessions, predicate oracles on masked columns, asynchronous messages
//! carrying unmasked values, detector-only masks defeated by transformations.
