//! The server's own word on the functions a statement calls (issue 13 item 4).
//!
//! The parser sees a function's name, never its body: `SELECT bump() FROM customers` reads
//! like a `select`, while `bump()` may delete rows. So every function a statement calls is
//! looked up in the server's catalog (`pg_proc`), with the gateway's own credential on a
//! connection of its own, and flagged unless the server says it is one of its own built-ins
//! that does not change anything:
//!
//! - **user-defined** (an OID at or above `FirstNormalObjectId`, extensions included): it
//!   runs whatever its body says, with its owner's rights when `SECURITY DEFINER`;
//! - **volatile** built-ins (`nextval`, `txid_current`, `pg_advisory_lock`...): they may
//!   change data or the server's state; a short list of harmless ones passes
//!   ([`HARMLESS_VOLATILE`]);
//! - **not found**: a temporary function, one created in the same message or transaction,
//!   a typo; the gateway cannot tell what it does.
//!
//! Policy then treats a flagged function like a privileged one: an allow rule covers the
//! statement only if its `allow.functions` names it.
//!
//! Overloads and `search_path` are handled conservatively: an unqualified name is judged by
//! every function of that name in every schema (any one of them might be the one the server
//! picks), a qualified one by the functions of that name in that schema. A session that has
//! changed the schema (any `ddl` statement) may call functions the catalog connection cannot
//! see yet (uncommitted), so in such a session an unqualified name is flagged unless the
//! text qualifies it with `pg_catalog.`, whose contents only a superuser can change.
//!
//! Facts are cached per name for [`CACHE_TTL`] (the look-up is a round trip to the server);
//! the cache is emptied whenever the gateway lets a `ddl` statement through on the target.
//! A function created directly on the server (not through the gateway) under a name cached
//! as a built-in is seen at the latest when that entry expires. When the catalog cannot be
//! read, the statement is refused ([`CatalogError`]): the gateway never guesses.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_model::{FlaggedFunction, SqlStatement};

use crate::upstream::{Upstream, UpstreamError, UpstreamSettings};

/// How long what the catalog said about a name is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Beyond this many names the cache is emptied (names come from statements, so a caller
/// could send endless distinct ones).
const CACHE_MAX_ENTRIES: usize = 4096;

/// PostgreSQL's `FirstNormalObjectId`: objects created by `initdb` (the built-ins of
/// `pg_catalog` and `information_schema`) have smaller OIDs; everything created afterwards,
/// extensions included, has larger ones.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

/// Volatile built-ins that neither read other data nor change anything but this session's
/// own state, so a plain `select` may call them: random numbers and UUIDs, the wall clock,
/// and the values this session's own `nextval` calls returned. `pg_notify` is volatile too,
/// but the parser gives it the `notify` kind, which policy decides on instead.
pub const HARMLESS_VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "currval",
    "lastval",
    "pg_notify",
];

const USER_DEFINED: &str = "a user-defined function: it runs whatever its body says, writes included, which table rules cannot see";
const VOLATILE: &str = "a volatile function: it may change data or the server's state";
const NOT_FOUND: &str = "not found in the server's catalog (a temporary function, or one created in the same message or transaction), so the gateway cannot tell what it does";
const SCHEMA_CHANGED: &str = "this session changed the schema, and the gateway cannot see uncommitted functions that may take this name: qualify a built-in as pg_catalog.name";

/// The catalog could not be read: statements calling functions are refused until it can.
#[derive(Debug, thiserror::Error)]
#[error("the server's function catalog could not be read: {0}")]
pub struct CatalogError(String);

/// One function of a name, as `pg_proc` describes it.
#[derive(Debug, Clone)]
struct Proc {
    schema: String,
    builtin: bool,
    volatile: bool,
}

struct Cached {
    procs: Arc<[Proc]>,
    at: Instant,
}

/// The per-target (so per-database) catalog look-up and its cache.
#[derive(Default)]
pub struct FunctionCatalog {
    /// The gateway's own connection for look-ups, opened on first use; dropped on error.
    connection: tokio::sync::Mutex<Option<Upstream>>,
    /// By function name (the last part of a qualified name): every function of that name.
    cache: Mutex<HashMap<String, Cached>>,
}

impl FunctionCatalog {
    /// The functions of `statement` that need an explicit `allow.functions`, and why.
    /// `schema_changed`: the session has run DDL (see the module's documentation).
    pub async fn flag(
        &self,
        upstream: &UpstreamSettings,
        statement: &SqlStatement,
        schema_changed: bool,
    ) -> Result<Vec<FlaggedFunction>, CatalogError> {
        if statement.functions.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(Option<&str>, &str)> =
            statement.functions.iter().map(|f| split_name(f)).collect();
        let procs = self.lookup(upstream, &names).await?;
        let mut flagged = Vec::new();
        for (written, (schema, name)) in statement.functions.iter().zip(&names) {
            let why = if schema_changed && schema.is_none() {
                Some(SCHEMA_CHANGED)
            } else {
                judge(&procs[*name], *schema, name)
            };
            if let Some(why) = why {
                flagged.push(FlaggedFunction {
                    name: written.clone(),
                    why: why.to_string(),
                });
            }
        }
        Ok(flagged)
    }

    /// Forgets everything: the schema may have changed.
    pub fn forget(&self) {
        self.lock().clear();
    }

    /// Every function of each name, from the cache or the server.
    async fn lookup(
        &self,
        upstream: &UpstreamSettings,
        names: &[(Option<&str>, &str)],
    ) -> Result<HashMap<String, Arc<[Proc]>>, CatalogError> {
        let mut found = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        {
            let cache = self.lock();
            for (_, name) in names {
                match cache.get(*name) {
                    Some(c) if c.at.elapsed() < CACHE_TTL => {
                        found.insert(name.to_string(), c.procs.clone());
                    }
                    _ if !missing.contains(name) => missing.push(name),
                    _ => {}
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows = self.query(upstream, &catalog_query(&missing)).await?;
        let mut fresh: HashMap<String, Vec<Proc>> = missing
            .iter()
            .map(|n| (n.to_string(), Vec::new()))
            .collect();
        for row in rows {
            let [Some(name), Some(schema), Some(oid), Some(volatility)] = row.as_slice() else {
                return Err(CatalogError("unexpected answer from pg_proc".into()));
            };
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let oid: u32 = text(oid)
                .parse()
                .map_err(|_| CatalogError(format!("unexpected OID {oid:?} from pg_proc")))?;
            if let Some(procs) = fresh.get_mut(&text(name)) {
                procs.push(Proc {
                    schema: text(schema),
                    builtin: oid < FIRST_NORMAL_OBJECT_ID,
                    volatile: volatility.as_ref() == b"v",
                });
            }
        }
        let now = Instant::now();
        let mut cache = self.lock();
        if cache.len() + fresh.len() > CACHE_MAX_ENTRIES {
            cache.clear();
        }
        for (name, procs) in fresh {
            let procs: Arc<[Proc]> = procs.into();
            cache.insert(
                name.clone(),
                Cached {
                    procs: procs.clone(),
                    at: now,
                },
            );
            found.insert(name, procs);
        }
        Ok(found)
    }

    /// Runs `sql` on the look-up connection, opening it if needed; a failed connection is
    /// dropped so that the next look-up opens a new one.
    async fn query(
        &self,
        upstream: &UpstreamSettings,
        sql: &str,
    ) -> Result<Vec<Vec<Option<Bytes>>>, CatalogError> {
        let mut connection = self.connection.lock().await;
        let run = async {
            if connection.is_none() {
                *connection = Some(
                    upstream
                        .connect(&[("application_name", "portcullis catalog")])
                        .await?,
                );
            }
            match connection.as_mut() {
                Some(c) => c.rows(sql).await.map(|(_, rows)| rows),
                None => Err(UpstreamError::Closed),
            }
        };
        let result = tokio::time::timeout(upstream.connect_timeout * 2, run).await;
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                *connection = None;
                Err(CatalogError(e.to_string()))
            }
            Err(_) => {
                *connection = None;
                Err(CatalogError("the look-up timed out".into()))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // The map is never left half-updated by a panic, so a poisoned lock is still sound.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `(schema, name)` of a name as written: `a.b.c` is function `c` of schema `b` (of
/// database `a`, which can only be the current one).
fn split_name(written: &str) -> (Option<&str>, &str) {
    match written.rsplit_once('.') {
        Some((qualifier, name)) => (
            Some(qualifier.rsplit('.').next().unwrap_or(qualifier)),
            name,
        ),
        None => (None, written),
    }
}

/// Why a call of `name` (qualified with `schema`, if it is) needs naming, given every
/// function of that name; `None`: every candidate is a built-in that changes nothing.
fn judge(procs: &[Proc], schema: Option<&str>, name: &str) -> Option<&'static str> {
    let mut candidates = procs
        .iter()
        .filter(|p| schema.is_none_or(|s| s == p.schema))
        .peekable();
    if candidates.peek().is_none() {
        return Some(NOT_FOUND);
    }
    let mut why = None;
    for p in candidates {
        if !p.builtin {
            return Some(USER_DEFINED);
        }
        if p.volatile && !HARMLESS_VOLATILE.contains(&name) {
            why = Some(VOLATILE);
        }
    }
    why
}

/// Every function named one of `names`, in any schema: name, schema, OID, volatility. The
/// names travel hex-encoded, so no quoting rule (nor `standard_conforming_strings`) can
/// change what the server reads; everything is qualified with `pg_catalog`.
fn catalog_query(names: &[&str]) -> String {
    let mut list = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        list.push_str("pg_catalog.convert_from(pg_catalog.decode('");
        for b in name.as_bytes() {
            let _ = write!(list, "{b:02x}");
        }
        list.push_str("', 'hex'), 'UTF8')");
    }
    format!(
        "SELECT p.proname::text, n.nspname::text, p.oid::text, p.provolatile::text \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proname::text IN ({list})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(schema: &str, builtin: bool, volatile: bool) -> Proc {
        Proc {
            schema: schema.into(),
            builtin,
            volatile,
        }
    }

    #[test]
    fn names_split_into_schema_and_function() {
        assert_eq!(split_name("lower"), (None, "lower"));
        assert_eq!(
            split_name("pg_catalog.lower"),
            (Some("pg_catalog"), "lower")
        );
        assert_eq!(split_name("db.s.f"), (Some("s"), "f"));
    }

    #[test]
    fn any_candidate_that_may_write_flags_the_name() {
        let lower = [proc("pg_catalog", true, false)];
        assert_eq!(judge(&lower, None, "lower"), None);
        // An overload in another schema could be the one the server picks.
        let shadowed = [
            proc("pg_catalog", true, false),
            proc("public", false, false),
        ];
        assert_eq!(judge(&shadowed, None, "lower"), Some(USER_DEFINED));
        // ... unless the call names the schema.
        assert_eq!(judge(&shadowed, Some("pg_catalog"), "lower"), None);
        let nextval = [proc("pg_catalog", true, true)];
        assert_eq!(judge(&nextval, None, "nextval"), Some(VOLATILE));
        let random = [proc("pg_catalog", true, true)];
        assert_eq!(judge(&random, None, "random"), None);
        assert_eq!(judge(&[], None, "bump"), Some(NOT_FOUND));
        assert_eq!(judge(&lower, Some("pg_temp"), "lower"), Some(NOT_FOUND));
    }

    #[test]
    fn the_query_carries_names_hex_encoded() {
        let q = catalog_query(&["a'b", "f"]);
        assert!(q.contains("decode('612762', 'hex')"), "{q}");
        assert!(q.contains("decode('66', 'hex')"), "{q}");
        assert!(!q.contains("a'b"));
    }
}
