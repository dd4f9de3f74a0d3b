//! The command line of `portcullis approvals` and `portcullis access`, and the checks on what
//! was typed into it before any of it reaches a request: ids go into URL paths, and every
//! decision and grant request carries a reason.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::terminal::clean;

/// How to reach the admin API, and as whom.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// The admin API's URL. Default: $PORTCULLIS_ADMIN_URL, else admin_listen from --config
    /// (or ./portcullis.toml), else http://127.0.0.1:8081
    #[arg(long, env = "PORTCULLIS_ADMIN_URL")]
    pub url: Option<String>,
    /// Read admin_listen (and approvals.admin_url) from this configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Your credential (API key or OIDC token). Prefer the environment variable: a flag shows
    /// in `ps`.
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for an https admin URL (a private CA, a self-signed
    /// certificate).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approvals waiting for a decision (or all with --all).
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Decided, expired and cancelled approvals too.
        #[arg(long)]
        all: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one approval in full.
    Show {
        id: String,
        #[command(flatten)]
        conn: AdminConn,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held request or a grant (you cannot approve your own).
    Approve {
        id: String,
        /// Why you approve: recorded in the audit log with your name.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Deny a held request or a grant.
    Deny {
        id: String,
        /// Why you deny: the requester is told, and the audit log records it.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum AccessCommand {
    /// Ask for a time-boxed grant; approvers decide.
    Request {
        /// The target the grant is for.
        #[arg(long)]
        target: String,
        /// Tools, exactly or by a prefix ending in `*` (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tools: Vec<String>,
        /// Tables, exactly or by a prefix ending in `*` (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// How long the grant lasts once approved: `30m`, `2h`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why you need it: approvers see it, and the audit log records it.
        #[arg(long)]
        reason: String,
        /// Wait until it is decided (or expires) and exit 0 only if granted.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List your grants (and those you may revoke).
    List {
        #[command(flatten)]
        conn: AdminConn,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a grant early.
    Revoke {
        id: String,
        /// Why it ends: recorded in the audit log.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// Approval and grant ids go into URL paths: anything but the characters ids are made of
/// could change which endpoint is called.
pub(super) fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!(
            "{:?} is not an approval or grant id (apr_ and 20 hex digits)",
            clean(id)
        );
    }
    Ok(())
}

pub(super) fn need_reason(reason: &str, what: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        bail!("{what} needs a reason: --reason \"...\"");
    }
    Ok(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};
    use std::path::Path;

    #[test]
    fn ids_are_checked_before_they_reach_a_path() {
        assert!(check_id("apr_00112233445566778899").is_ok());
        assert!(check_id("../grants").is_err());
        assert!(check_id("apr_1?status=all").is_err());
        assert!(check_id("").is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Approvals {
            #[command(subcommand)]
            command: ApprovalsCommand,
        },
        Access {
            #[command(subcommand)]
            command: AccessCommand,
        },
    }

    #[test]
    fn command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "portcullis",
            "access",
            "request",
            "--target",
            "billing",
            "--tools",
            "refund_payment,lookup_*",
            "--for",
            "30m",
            "--reason",
            "r",
            "--wait",
            "--url",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        let Top::Access {
            command:
                AccessCommand::Request {
                    tools,
                    duration,
                    wait,
                    conn,
                    ..
                },
        } = cli.command
        else {
            panic!("not access request");
        };
        assert_eq!(tools, ["refund_payment", "lookup_*"]);
        assert_eq!(duration, "30m");
        assert!(wait);
        assert_eq!(conn.url.as_deref(), Some("http://127.0.0.1:1"));

        let cli = Cli::try_parse_from([
            "portcullis",
            "approvals",
            "approve",
            "apr_1",
            "--reason",
            "ok",
            "--ca-cert",
            "ca.pem",
        ])
        .unwrap();
        let Top::Approvals {
            command: ApprovalsCommand::Approve { id, reason, conn },
        } = cli.command
        else {
            panic!("not approvals approve");
        };
        assert_eq!((id.as_str(), reason.as_str()), ("apr_1", "ok"));
        assert_eq!(conn.ca_cert.as_deref(), Some(Path::new("ca.pem")));
        // A decision without a reason is refused by the parser.
        assert!(Cli::try_parse_from(["portcullis", "approvals", "deny", "apr_1"]).is_err());
    }
}
