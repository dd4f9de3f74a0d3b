//! Where the admin API is: the `--url` flag, the configuration's `gateway.admin_listen` (or
//! `approvals.admin_url`), or the default; and whether that address is this machine.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};

/// Where the admin API listens when nothing says otherwise (`portcullis demo`'s default).
pub(super) const DEFAULT_URL: &str = "http://127.0.0.1:8081";
/// Read for the admin URL when no `--config` is given, as `serve` reads it by default.
pub(super) const DEFAULT_CONFIG: &str = "portcullis.toml";

/// The admin API's URL: the flag (or `$PORTCULLIS_ADMIN_URL`), else the configuration named
/// with `--config`, else `implicit` (`./portcullis.toml`) if it exists, else the default.
pub(super) fn resolve_url(
    flag: Option<&str>,
    config: Option<&Path>,
    implicit: &Path,
) -> Result<String> {
    let url = if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        url.to_string()
    } else if let Some(path) = config {
        let config = portcullis_config::Config::load(path)
            .with_context(|| format!("reading {} for the admin API's URL", path.display()))?;
        // An explicit file whose gateway serves no admin API is a mistake worth naming,
        // rather than a silent fall back to a default address that is someone else's.
        config.admin_url().ok_or_else(|| {
            anyhow!(
                "{} sets neither gateway.admin_listen nor approvals.admin_url, so its gateway serves no admin API; set gateway.admin_listen, or pass --url",
                path.display()
            )
        })?
    } else if implicit.exists() {
        portcullis_config::Config::load(implicit)
            .with_context(|| {
                format!(
                    "reading {} for the admin API's URL (pass --url to skip it)",
                    implicit.display()
                )
            })?
            .admin_url()
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    } else {
        DEFAULT_URL.to_string()
    };
    let url = url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("the admin API's URL {url:?} is not an http:// or https:// URL");
    }
    Ok(url)
}

/// Whether a URL's host is this machine: plain http is harmless only there.
pub(super) fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host == "localhost"
        || host.starts_with("localhost:")
        || host.starts_with("127.")
        || host.starts_with("[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_file(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("portcullis.toml"), text).expect("write config");
        dir
    }

    #[test]
    fn url_resolution_order() {
        let dir = config_file("[gateway]\nadmin_listen = \"127.0.0.1:9999\"\n");
        let cfg = dir.path().join("portcullis.toml");
        let missing = dir.path().join("absent.toml");

        // The flag (or its environment variable) wins, without its trailing slash.
        let url = resolve_url(Some("https://gw.example.com:8443/"), Some(&cfg), &cfg).unwrap();
        assert_eq!(url, "https://gw.example.com:8443");
        // An empty variable counts as unset.
        assert_eq!(
            resolve_url(Some("  "), Some(&cfg), &missing).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then --config.
        assert_eq!(
            resolve_url(None, Some(&cfg), &missing).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then ./portcullis.toml, if there is one.
        assert_eq!(
            resolve_url(None, None, &cfg).unwrap(),
            "http://127.0.0.1:9999"
        );
        // Then the default.
        assert_eq!(resolve_url(None, None, &missing).unwrap(), DEFAULT_URL);
    }

    #[test]
    fn url_from_approvals_admin_url_and_refusals() {
        let dir = config_file(
            "[gateway]\nadmin_listen = \"127.0.0.1:9999\"\n[approvals]\nadmin_url = \"https://approvals.example.com/\"\n",
        );
        let cfg = dir.path().join("portcullis.toml");
        assert_eq!(
            resolve_url(None, Some(&cfg), Path::new("/nonexistent")).unwrap(),
            "https://approvals.example.com"
        );

        // A named configuration whose gateway serves no admin API is an error, not a guess.
        let bare = config_file("[gateway]\nid = \"gw\"\n");
        let bare_cfg = bare.path().join("portcullis.toml");
        let err = resolve_url(None, Some(&bare_cfg), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.admin_listen"), "{err}");
        // The implicit one falls back to the default.
        assert_eq!(resolve_url(None, None, &bare_cfg).unwrap(), DEFAULT_URL);
        // A missing --config file is named.
        let err = resolve_url(
            None,
            Some(Path::new("/nonexistent/p.toml")),
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/p.toml"),
            "{err:#}"
        );

        let err = resolve_url(Some("127.0.0.1:8081"), None, Path::new("/x")).unwrap_err();
        assert!(
            err.to_string().contains("not an http:// or https:// URL"),
            "{err}"
        );
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:8081"));
        assert!(is_loopback_url("http://localhost:8081/x"));
        assert!(is_loopback_url("http://[::1]:8081"));
        assert!(!is_loopback_url("http://10.0.0.5:8081"));
        assert!(!is_loopback_url("http://localhost.evil.example"));
    }
}
