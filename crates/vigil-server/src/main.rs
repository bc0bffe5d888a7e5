//! `vigil-server --config FILE`: serves until interrupted.

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Vigil server")]
struct Args {
    /// Server configuration (TOML).
    #[arg(long, default_value = "/etc/vigil/server.toml")]
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
    let cfg = vigil_server::ServerConfig::load(&args.config)?;
    let server = vigil_server::Server::bind(cfg)
        .await
        .context("starting the server")?;
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
