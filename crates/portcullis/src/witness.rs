//! `portcullis witness`: a C2SP `tlog-witness` HTTP server, and `portcullis keys witness-init`.
//!
//! A witness is run by someone other than the gateway's operator. It is given the verifier
//! keys of the logs it watches and cosigns each checkpoint a log submits only if it extends,
//! by a consistency proof, the last checkpoint it cosigned for that log. The protocol logic
//! is in `portcullis_audit::witness`; this module is the HTTP wiring: one endpoint,
//! `POST /add-checkpoint`, whose statuses are the protocol's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use portcullis_audit::keys::{self, KeyKind, WITNESS_KEY};
use portcullis_audit::witness::{AddCheckpoint, SIZE_CONTENT_TYPE, Witness, WitnessError};

/// The largest request accepted (413 above it). A request is a size line, at most 63 proof
/// hashes and a checkpoint with its signatures: a few KiB. The limit only bounds what a
/// stranger can make the witness buffer.
const MAX_BODY: usize = 1 << 20;

#[derive(clap::Args)]
pub struct WitnessArgs {
    /// Directory holding the witness key pair (`witness.key`, `witness.pub`), as written by
    /// `portcullis keys witness-init`.
    #[arg(long, value_name = "DIR")]
    key: PathBuf,
    /// Directory where the latest cosigned checkpoint of each log is kept.
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// A log's verifier key file (the gateway's `audit.pub`). Repeat for each log.
    #[arg(long = "log-key", value_name = "FILE", required = true)]
    log_keys: Vec<PathBuf>,
}

/// `portcullis keys witness-init`: writes the witness key pair and prints its verifier key.
pub fn init_key(out: &Path, name: &str) -> Result<()> {
    let vkey = keys::generate_kind(out, WITNESS_KEY, name, KeyKind::Cosignature)
        .context("creating the witness key")?;
    let (private, public) = keys::key_paths(out, WITNESS_KEY);
    // The explanation goes to stderr so that stdout is just the key, for scripts.
    eprintln!(
        "witness key written to {} (private, mode 0600) and {}.\n\
         Give this verifier key to the logs and auditors that rely on the witness:",
        private.display(),
        public.display()
    );
    println!("{vkey}");
    Ok(())
}

/// Runs the witness until Ctrl-C or SIGTERM.
pub async fn run(args: WitnessArgs) -> Result<()> {
    let (private, public) = keys::key_paths(&args.key, WITNESS_KEY);
    if !private.exists() || !public.exists() {
        bail!(
            "no witness key in {} (expected {} and {}); create one with \
             `portcullis keys witness-init --out {} --name <witness name>`",
            args.key.display(),
            private.display(),
            public.display(),
            args.key.display()
        );
    }
    let signer = keys::load_signer_kind(&args.key, WITNESS_KEY, KeyKind::Cosignature)
        .context("loading the witness key")?;
    let mut logs = Vec::new();
    for path in &args.log_keys {
        logs.push(
            keys::load_verifier(path)
                .with_context(|| format!("loading the log key {}", path.display()))?,
        );
    }
    let log_names: Vec<String> = logs.iter().map(|log| log.name.clone()).collect();
    let witness = Witness::open(Box::new(signer), logs, &args.state)?;
    // Every state file is read now: a damaged one stops the start instead of failing the
    // first request of its log.
    for checkpoint in witness
        .origins()
        .context("reading the witness state; refusing to start")?
    {
        tracing::info!(origin = %checkpoint.origin, size = checkpoint.size, "witnessed log");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        key = %witness.verifier_key(),
        logs = ?log_names,
        state = %args.state.display(),
        "portcullis witness is serving"
    );
    axum::serve(listener, router(Arc::new(witness)))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    tracing::info!("portcullis witness stopped");
    Ok(())
}

fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness)
}

async fn add_checkpoint(
    State(witness): State<Arc<Witness>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // Over MAX_BODY (413), or the connection failed while reading.
            tracing::warn!(
                error = %rejection,
                status = rejection.status().as_u16(),
                "refused checkpoint"
            );
            return rejection.into_response();
        }
    };
    // Blocking: verifying and fsyncing the state, under the origin's lock.
    let request = body.clone();
    let result = tokio::task::spawn_blocking(move || witness.add_checkpoint(&request)).await;
    match result {
        Ok(Ok(cosigned)) => {
            tracing::info!(
                origin = %cosigned.checkpoint.origin,
                old = cosigned.old_size,
                size = cosigned.checkpoint.size,
                log_key = %cosigned.log_key,
                repeated = cosigned.repeated,
                "cosigned checkpoint"
            );
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                cosigned.signatures,
            )
                .into_response()
        }
        Ok(Err(error)) => refusal(error, &body),
        Err(join) => {
            tracing::error!(error = %join, "add-checkpoint task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

fn refusal(error: WitnessError, body: &[u8]) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match &error {
        WitnessError::Conflict { latest, .. } => {
            // The usual way a log learns where the witness is; not a problem in itself.
            tracing::info!(%error, "refused checkpoint: stale old size");
            (
                status,
                [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
                format!("{latest}\n"),
            )
                .into_response()
        }
        WitnessError::Fork { .. } | WitnessError::BadProof { .. } => {
            // A log-signed checkpoint that does not extend the cosigned one is evidence that
            // the log rewrote or forked its history: keep the signed note in the logs.
            let note = AddCheckpoint::parse(body)
                .map(|request| request.note)
                .unwrap_or_default();
            tracing::error!(
                %error,
                evidence = ?note,
                "refused checkpoint: possible log misbehaviour"
            );
            plain(status, &error.to_string())
        }
        WitnessError::Storage { .. } | WitnessError::Signing(_) => {
            // Details (paths, causes) stay in the witness's own log.
            tracing::error!(%error, "cannot handle checkpoint");
            plain(status, "internal error")
        }
        WitnessError::Malformed(_)
        | WitnessError::SizesOutOfOrder { .. }
        | WitnessError::Forbidden(_) => {
            tracing::warn!(%error, status = status.as_u16(), "refused checkpoint");
            plain(status, &error.to_string())
        }
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}
