//! `portcullis sinks status`, `sinks replay` and `audit verify-export`: the operator's and the
//! auditor's side of the audit sinks. Delivery itself lives in `portcullis_sinks`.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use portcullis_config::Config;
use portcullis_sinks::engine::{self, SinkStatus};

use crate::DataDir;

#[derive(clap::Subcommand)]
pub enum SinksCommand {
    /// Each sink's delivery state: how far its receiver has acknowledged the log, the lag
    /// (events and seconds) and the last error. Read from the data directory, so it works
    /// while the gateway is down.
    Status {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a range of the log to a sink again (its cursor does not move): for a receiver
    /// that lost data or a new index to fill. Run it on the gateway's host, with the
    /// gateway's configuration and environment (the sink's secrets).
    Replay {
        /// The sink's name.
        name: String,
        /// The first leaf index to send (0 is the first event).
        #[arg(long)]
        from: u64,
        /// One past the last leaf index to send. Default: the end of the log.
        #[arg(long)]
        to: Option<u64>,
        /// Stop after this many failed attempts in a row at one batch.
        #[arg(long, default_value_t = 5)]
        attempts: u32,
        #[command(flatten)]
        dir: DataDir,
    },
}

pub fn sinks(command: SinksCommand) -> Result<()> {
    match command {
        SinksCommand::Status { dir, json } => {
            let config = needs_config(&dir)?;
            let data_dir = dir.data_dir_of(Some(&config));
            let statuses = engine::status_from_disk(&data_dir, &config.sinks)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print_table(&statuses);
            }
            Ok(())
        }
        SinksCommand::Replay {
            name,
            from,
            to,
            attempts,
            dir,
        } => {
            let config = needs_config(&dir)?;
            let data_dir = dir.data_dir_of(Some(&config));
            let Some(spec) = config.sink(&name) else {
                bail!(
                    "no sink named {name:?} in the configuration (sinks: {})",
                    names(&config)
                );
            };
            let origin = config.audit_origin();
            let mut transport = portcullis_sinks::transport(spec, &origin)?;
            let replayed = crate::runtime()?
                .block_on(engine::replay(
                    spec,
                    transport.as_mut(),
                    &data_dir,
                    &origin,
                    from,
                    to,
                    attempts.max(1),
                ))
                .map_err(|e| anyhow::anyhow!("replay to {name}: {e}"))?;
            println!(
                "replayed to {name} ({}): {}, {} filtered out as hashes, {}, in {}",
                transport.destination(),
                counted(replayed.events, "event"),
                replayed.omitted,
                counted(replayed.checkpoints, "checkpoint"),
                counted(replayed.batches, "batch")
            );
            for reason in &replayed.rejected {
                println!("  refused by the receiver: {reason}");
            }
            Ok(())
        }
    }
}

fn needs_config(dir: &DataDir) -> Result<Config> {
    dir.config()?.context(
        "the sinks are in the configuration: give --config (or run where portcullis.toml is)",
    )
}

fn names(config: &Config) -> String {
    if config.sinks.is_empty() {
        return "none".into();
    }
    config
        .sinks
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(statuses: &[SinkStatus]) {
    if statuses.is_empty() {
        println!("no sinks are configured");
        return;
    }
    for s in statuses {
        println!(
            "{name}  {kind} -> {destination}\n  {state}: {delivered} of {head} events delivered, lag {lag} events / {seconds:.1}s{rejected}",
            name = s.name,
            kind = s.kind,
            destination = s.destination,
            state = s.state,
            delivered = s.delivered,
            head = s.head,
            lag = s.lag_events,
            seconds = s.lag_seconds,
            rejected = if s.rejected > 0 {
                format!(
                    ", {} refused by the receiver (see the sink's .rejected.jsonl)",
                    s.rejected
                )
            } else {
                String::new()
            },
        );
        if let Some(at) = &s.delivered_at {
            println!("  last delivery {at}");
        }
        if let Some(error) = &s.last_error {
            println!(
                "  last error{}: {error}",
                s.last_error_at
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
        }
    }
}

#[derive(clap::Args)]
pub struct VerifyExportArgs {
    /// The export: JSON lines as the sink sent them (native records, HEC events, ECS
    /// documents, syslog lines); `-` reads standard input.
    file: PathBuf,
    /// A gateway's checkpoint verifier key (`audit.pub`). Repeatable, for an export holding
    /// several gateways' logs.
    #[arg(long, required = true)]
    pubkey: Vec<PathBuf>,
    /// Every event must be there in full: for a sink without a filter, where a hash
    /// standing in for an event (an `omitted` record) can only be an event taken out.
    #[arg(long)]
    full: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `audit verify-export`; returns the exit code (0 valid, 1 invalid, 2 unusable input).
pub fn verify_export(args: &VerifyExportArgs) -> i32 {
    let keys = match args
        .pubkey
        .iter()
        .map(|path| {
            portcullis_audit::keys::load_verifier(path).map_err(|e| format!("--pubkey: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let input: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(&args.file) {
            Ok(file) => Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", args.file.display());
                return 2;
            }
        }
    };
    let options = portcullis_sinks::export::Options { full: args.full };
    match portcullis_sinks::export::verify_with(input, &keys, options) {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
                return 0;
            }
            for log in &summary.logs {
                println!(
                    "valid: {}: leaves 0..{} proven by {} ({} in full, {} filtered out as hashes){}",
                    log.origin,
                    log.covered,
                    counted(log.checkpoints, "signed checkpoint"),
                    counted(log.events, "event"),
                    log.omitted,
                    if log.uncovered > 0 {
                        format!(
                            "; {} not covered by a checkpoint yet",
                            counted(log.uncovered, "later event")
                        )
                    } else {
                        String::new()
                    }
                );
            }
            if summary.duplicates > 0 || summary.ignored_lines > 0 {
                println!(
                    "{}: {} (resent, identical), {} without a record",
                    counted(summary.lines, "line"),
                    counted(summary.duplicates, "repeated record"),
                    counted(summary.ignored_lines, "line")
                );
            }
            0
        }
        Err(portcullis_sinks::export::ExportError::Read(e)) => {
            eprintln!("error: cannot read {}: {e}", args.file.display());
            2
        }
        Err(e) => {
            println!("INVALID: {e}");
            1
        }
    }
}

/// `1 event`, `2 events`, `1 batch`, `3 batches`.
fn counted(n: u64, noun: &str) -> String {
    match (n, noun.ends_with("ch")) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        _ => format!("{n} {noun}s"),
    }
}
