//! Attacks on the HTTP front door before and around authentication: slow headers, half-open
//! connections, floods of bad credentials.
