//! `vigil-sensor`: runs the sensor until interrupted — connected to a server
//! (`--config FILE`), or standalone (`run --output jsonl[=FILE]`); `inspect`
//! and `status` show what a running (or stopped) sensor sends and does;
//! `export` writes the spooled records into a bundle for a server it cannot
//! reach.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about = "Vigil endpoint sensor")]
struct Args {
    /// Sensor configuration (TOML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run; with --output, standalone: every record as a JSON line, no server needed.
    Run {
        /// `jsonl` (standard output) or `jsonl=FILE` (appended): events,
        /// detections and health, in the form `vigil rules match` reads.
        #[arg(long)]
        output: Option<String>,
        /// Sigma files, directories or .vrb bundles (repeatable); without it,
        /// the configuration's rules, else the built-in pack.
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// Where the sensor keeps its state, when no configuration names one.
        #[arg(long, default_value = "/var/lib/vigil")]
        data_dir: PathBuf,
    },
    /// Shows the records exactly as spooled and sent, with their level and
    /// what was redacted or pseudonymized: every record the spool holds, then
    /// (--follow) each one as it is spooled. A stopped sensor's spool is read
    /// read only.
    Inspect {
        /// Then every record as the sensor spools it, until interrupted.
        #[arg(long)]
        follow: bool,
        /// One JSON object a line: the record decoded, and its exact bytes (`bytes_b64`).
        #[arg(long)]
        json: bool,
        /// The sensor's data directory (default: the configuration's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The running sensor's sources, fallbacks, rules, spool, losses and
    /// connection; exit code 3 when it is not running.
    Status {
        #[arg(long)]
        json: bool,
        /// The sensor's data directory (default: the configuration's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write the spooled records into a bundle for `vigil import`: signed with
    /// this device's key, encrypted to the server. Stop the sensor first.
    Export {
        /// The bundle to write (a new file).
        #[arg(long)]
        out: PathBuf,
        /// Only records with a sequence number above this one.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// The sensor's data directory, instead of the configuration's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

const DEFAULT_CONFIG: &str = "/etc/vigil/sensor.toml";

fn output(spec: &str) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    match spec.split_once('=') {
        None if spec == "jsonl" => Ok(Box::new(std::io::stdout())),
        Some(("jsonl", path)) if !path.is_empty() => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening --output file {path}"))?;
            Ok(Box::new(f))
        }
        _ => bail!("--output: expected `jsonl` or `jsonl=FILE`, got `{spec}`"),
    }
}

/// `inspect` and `status`: their exit code, or `None` for the other commands.
async fn viewer(args: &Args) -> anyhow::Result<Option<i32>> {
    let (data_dir, config) = match &args.command {
        Some(Command::Inspect { data_dir, .. } | Command::Status { data_dir, .. }) => {
            let config = match (&args.config, data_dir) {
                (Some(path), _) => Some(vigil_sensor::SensorConfig::load(path)?),
                (None, None) if std::path::Path::new(DEFAULT_CONFIG).exists() => Some(
                    vigil_sensor::SensorConfig::load(std::path::Path::new(DEFAULT_CONFIG))?,
                ),
                (None, _) => None,
            };
            let dir = data_dir
                .clone()
                .or_else(|| config.as_ref().map(|c| c.data_dir.clone()))
                .unwrap_or_else(|| PathBuf::from("/var/lib/vigil"));
            (dir, config)
        }
        _ => return Ok(None),
    };
    let code = match &args.command {
        Some(Command::Inspect { follow, json, .. }) => {
            let opts = vigil_sensor::viewer::InspectOptions {
                data_dir,
                follow: *follow,
                json: *json,
            };
            let (mut out, mut note) = (std::io::stdout().lock(), std::io::stderr());
            tokio::select! {
                r = vigil_sensor::viewer::inspect(&opts, &mut out, &mut note) => r?,
                r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; 0 }
            }
        }
        _ => {
            let opts = vigil_sensor::viewer::StatusOptions {
                data_dir,
                json: matches!(args.command, Some(Command::Status { json: true, .. })),
                endpoint: config.and_then(|c| c.server.map(|s| s.endpoint)),
            };
            vigil_sensor::viewer::status(&opts, &mut std::io::stdout().lock()).await?
        }
    };
    Ok(Some(code))
}

/// `vigil-sensor export`: one bundle, and what to run next when the spool holds more.
fn export(
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    out: &std::path::Path,
    after: u64,
) -> anyhow::Result<()> {
    let dir = match data_dir {
        Some(d) => d,
        None => {
            let path = config.unwrap_or(std::path::Path::new(DEFAULT_CONFIG));
            vigil_sensor::SensorConfig::load(path)?.data_dir
        }
    };
    let opts = vigil_sensor::export::ExportOptions {
        after,
        ..Default::default()
    };
    let e = vigil_sensor::export::export(&dir, out, &opts)?;
    println!(
        "Exported {} records (sequences {} to {}) of device {} to {} ({} bytes)",
        e.records,
        e.first_sequence,
        e.last_sequence,
        e.device_id,
        out.display(),
        e.bytes
    );
    if e.skipped > 0 {
        println!("{} corrupt spool records were left out", e.skipped);
    }
    if e.more {
        println!(
            "More records remain: run `vigil-sensor export --after {} --out FILE` for the next bundle",
            e.last_sequence
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to standard error: standard output may carry the records.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(code) = viewer(&args).await? {
        std::process::exit(code);
    }
    let (out, rules, data_dir) = match args.command {
        Some(Command::Export {
            out,
            after,
            data_dir,
        }) => return export(args.config.as_deref(), data_dir, &out, after),
        Some(Command::Run {
            output,
            rules,
            data_dir,
        }) => (output, rules, Some(data_dir)),
        None => (None, Vec::new(), None),
        // Answered by `viewer` above.
        Some(Command::Inspect { .. } | Command::Status { .. }) => return Ok(()),
    };
    let mut cfg = match (&args.config, &data_dir, &out) {
        (Some(path), _, _) => vigil_sensor::SensorConfig::load(path)?,
        (None, Some(dir), Some(_)) => vigil_sensor::SensorConfig::parse(
            std::path::Path::new("<command line>"),
            &toml::to_string(&toml::toml! { data_dir = (dir.display().to_string()) })?,
        )?,
        (None, _, _) => vigil_sensor::SensorConfig::load(std::path::Path::new(DEFAULT_CONFIG))?,
    };
    if !rules.is_empty() {
        cfg.rules.paths = rules;
    }
    let sensor = match out {
        Some(spec) => vigil_sensor::Sensor::start_standalone(cfg, output(&spec)?)
            .context("starting the sensor")?,
        None => vigil_sensor::Sensor::start(cfg)
            .await
            .context("starting the sensor")?,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    tracing::info!("Stopping");
    sensor.shutdown().await;
    Ok(())
}
