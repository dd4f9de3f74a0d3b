//! A `postgres` target's `upstream` URL, `postgres://HOST[:PORT]/DATABASE`, parsed into what
//! the adapter connects to.

/// A `postgres` target's `upstream`, resolved: what the adapter connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUpstream {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub database: String,
}

/// Parses `postgres://HOST[:PORT]/DATABASE`; `Err` says what is wrong, for the user.
pub(crate) fn parse_pg_url(url: &str) -> Result<PgUpstream, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("must start with postgres:// or postgresql://")?;
    if rest.contains('?') || rest.contains('#') {
        return Err(
            "must not have a query string or fragment: set TLS with upstream_tls and upstream_ca"
                .into(),
        );
    }
    let (authority, database) = rest
        .split_once('/')
        .ok_or("must name the database: postgres://HOST[:PORT]/DATABASE")?;
    if authority.contains('@') {
        return Err(
            "must not hold a user or password: credentials go in `user` and `password_env`".into(),
        );
    }
    if authority.contains(',') {
        return Err("must name one host".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("has an unclosed '[' in its host")?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("has text after the IPv6 address".into()),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("must name a host: postgres://HOST[:PORT]/DATABASE".into());
    }
    let port = match port {
        None => 5432,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("has an invalid port {port:?}")),
        },
    };
    let database = percent_decode(database).ok_or("has a bad %-escape in the database name")?;
    if database.is_empty() || database.contains('/') {
        return Err("must name one database: postgres://HOST[:PORT]/DATABASE".into());
    }
    Ok(PgUpstream {
        host: host.to_string(),
        port,
        database,
    })
}

/// Decodes `%XX` escapes (a database name may hold any character).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_upstream_urls() {
        let ok = |url: &str| parse_pg_url(url).unwrap();
        assert_eq!(
            ok("postgresql://10.0.0.5/app"),
            PgUpstream {
                host: "10.0.0.5".into(),
                port: 5432,
                database: "app".into()
            }
        );
        let v6 = ok("postgres://[::1]:5433/my%20db");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5433));
        assert_eq!(v6.database, "my db");
        for (url, expected) in [
            (
                "postgres://me:secret@db/app",
                "credentials go in `user` and `password_env`",
            ),
            ("postgres://me@db/app", "`user`"),
            ("postgres://db/app?sslmode=require", "query string"),
            ("postgres://db", "must name the database"),
            ("postgres://db/", "must name one database"),
            ("postgres://db:0/app", "invalid port"),
            ("postgres://db:x/app", "invalid port"),
            ("postgres:///app", "must name a host"),
            ("postgres://a,b/app", "one host"),
            ("mysql://db/app", "must start with postgres://"),
        ] {
            let err = parse_pg_url(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }
}
