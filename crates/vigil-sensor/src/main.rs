//! `vigil-sensor`: runs the sensor until interrupted — connected to a server
//! (`--config FILE`), or standalone (`run --output jsonl[=FILE]`).

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
    let (out, rules, data_dir) = match args.command {
        Some(Command::Run {
            output,
            rules,
            data_dir,
        }) => (output, rules, Some(data_dir)),
        None => (None, Vec::new(), None),
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
