//! Snapshots of the resolved form of the example configurations the project ships: the
//! reference documentation's complete example, the PostgreSQL and HTTP guides' examples and
//! the fuzz seeds. A change to how a file resolves (a default, a path, a target's settings)
//! shows up as a reviewed diff of these snapshots (`INSTA_UPDATE=always cargo test -p
//! portcullis-config`, then read the `.snap` files).

use std::path::Path;

use crate::Config;

/// The first ```toml block after `heading` in a markdown document.
fn toml_block(doc: &str, heading: &str) -> String {
    doc.split(heading)
        .nth(1)
        .and_then(|rest| rest.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .unwrap_or_else(|| panic!("no toml block after {heading:?}"))
        .to_string()
}

/// The complete example of `docs/configuration.md`.
pub(crate) fn documented_example() -> String {
    toml_block(
        include_str!("../../../docs/configuration.md"),
        "## Complete example",
    )
}

/// Resolved as if read from `/etc/portcullis/portcullis.toml`, so relative paths resolve the
/// same on every machine.
fn resolve(text: String) -> Config {
    Config::parse(Path::new("/etc/portcullis/portcullis.toml"), text)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn documented_complete_example() {
    insta::assert_debug_snapshot!(resolve(documented_example()));
}

#[test]
fn postgres_guide_example() {
    let text = toml_block(
        include_str!("../../../docs/postgres.md"),
        "# PostgreSQL through Portcullis",
    );
    insta::assert_debug_snapshot!(resolve(text));
}

#[test]
fn http_guide_example() {
    let text = toml_block(
        include_str!("../../../docs/http.md"),
        "# HTTP APIs through Portcullis",
    );
    insta::assert_debug_snapshot!(resolve(text));
}

#[test]
fn fuzz_seed_gateway_limits() {
    let text = include_str!("../../../fuzz/seeds/config/gateway-limits-and-space-reserve.toml");
    insta::assert_debug_snapshot!(resolve(text.into()));
}

#[test]
fn fuzz_seed_session_reclaim() {
    let text = include_str!("../../../fuzz/seeds/config/session-reclaim-after.toml");
    insta::assert_debug_snapshot!(resolve(text.into()));
}
