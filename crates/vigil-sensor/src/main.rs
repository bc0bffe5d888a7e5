//! `vigil-sensor --config FILE`: runs the sensor until interrupted.

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Vigil endpoint sensor")]
struct Args {
    /// Sensor configuration (TOML).
    #[arg(long, default_value = "/etc/vigil/sensor.toml")]
    config: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = vigil_sensor::SensorConfig::load(&args.config)?;
    let sensor = vigil_sensor::Sensor::start(cfg)
        .await
        .context("starting the sensor")?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("Stopping");
    sensor.shutdown().await;
    Ok(())
}
