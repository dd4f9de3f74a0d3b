//! A stand-in for `bindgen` that serves declarations generated ahead of time.
//!
//! Why it exists: the `pg_query` crate runs bindgen over libpg_query's `pg_query.h` in its
//! build script, and bindgen loads libclang, which a fresh machine does not have. The output
//! never changes for one `pg_query` version, so it was generated once with the real bindgen
//! and is served from `pg_query_bindings.rs`. The workspace's `[patch.crates-io]` puts this
//! crate in bindgen's place; nothing else in the build uses bindgen.
//!
//! Only the calls `pg_query`'s build script makes exist. Anything this crate cannot vouch for
//! (another header, another target) is refused with what to do, never guessed at.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The declarations the real bindgen 0.66.1 wrote for pg_query 18.1.0 on x86_64 Linux.
const PG_QUERY_BINDINGS: &str = include_str!("pg_query_bindings.rs");

/// SHA-256 of the headers the declarations were generated from: `pg_query.h` and the two
/// headers beside it that it includes.
const GENERATED_FROM: [(&str, &str); 3] = [
    ("pg_query.h", "f442d3ec6475772c6d2b9c38ea5ddd912e0faeca640a142b90ac1ff22d5fd4b3"),
    ("postgres_deparse.h", "f99eb544fefde32271a24b432eb615aa35b0cf3d1a514bc93905732e4ee05ea1"),
    ("pg_query_scan_tokens.h", "c65016d4d0d3f9d7c6f25e2de25c637bba9c8004394d32e075bbc55e484b5513"),
];

const HOW_TO_FIX: &str = "regenerate them with build-support/bindgen-pregenerated/regenerate.sh \
     on a machine with libclang, or remove the `bindgen` entry from [patch.crates-io] in the \
     workspace Cargo.toml to use the real bindgen (needs libclang)";

/// Mirrors `bindgen::Builder` for the calls `pg_query`'s build script makes.
#[derive(Debug, Default)]
pub struct Builder {
    header: Option<PathBuf>,
}

impl Builder {
    pub fn header<T: Into<String>>(mut self, header: T) -> Builder {
        self.header = Some(PathBuf::from(header.into()));
        self
    }

    pub fn generate(self) -> Result<Bindings, BindgenError> {
        let header = self.header.ok_or_else(|| BindgenError("no header was given".into()))?;
        check_target()?;
        check_header(&header)?;
        Ok(Bindings { text: PG_QUERY_BINDINGS })
    }
}

/// Declarations ready to be written where the build script wants them.
#[derive(Debug)]
pub struct Bindings {
    text: &'static str,
}

impl Bindings {
    pub fn write_to_file<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        fs::write(path, self.text)
    }
}

/// Why the pre-generated declarations cannot be used for this build.
#[derive(Debug)]
pub struct BindgenError(String);

impl fmt::Display for BindgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pre-generated libpg_query bindings: {}", self.0)
    }
}

impl std::error::Error for BindgenError {}

/// The declarations spell C's integer types through `std::os::raw`, so they follow the
/// target's widths, but glibc's typedefs in them were read on 64-bit Linux.
fn check_target() -> Result<(), BindgenError> {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    if os == "linux" && width == "64" {
        Ok(())
    } else {
        Err(BindgenError(format!(
            "they were generated for 64-bit Linux, not {os} with {width}-bit pointers; {HOW_TO_FIX}"
        )))
    }
}

fn check_header(header: &Path) -> Result<(), BindgenError> {
    let dir = header.parent().unwrap_or(Path::new("."));
    if header.file_name().and_then(|n| n.to_str()) != Some(GENERATED_FROM[0].0) {
        return Err(BindgenError(format!(
            "asked for {}, but only {} is known; {HOW_TO_FIX}",
            header.display(),
            GENERATED_FROM[0].0
        )));
    }
    for (name, expected) in GENERATED_FROM {
        let path = dir.join(name);
        let bytes = fs::read(&path)
            .map_err(|e| BindgenError(format!("cannot read {}: {e}", path.display())))?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != expected {
            return Err(BindgenError(format!(
                "{} is not the header they were generated from (sha256 {actual}, expected \
                 {expected}): pg_query was upgraded; {HOW_TO_FIX}",
                path.display()
            )));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
