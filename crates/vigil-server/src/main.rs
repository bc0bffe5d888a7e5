//! `vigil-server --config FILE [serve]`: serves until interrupted.
//! `vigil-server --config FILE tenant|token ...`: offline administration of the
//! store (run while the server is stopped; the store allows one process).

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Vigil server")]
struct Args {
    /// Server configuration (TOML).
    #[arg(long, default_value = "/etc/vigil/server.toml")]
    config: std::path::PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Create a tenant.
    TenantCreate {
        /// Tenant id: letters, digits, '-' and '_'.
        id: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Create an enrollment token for a tenant's sensors; prints the secret once.
    EnrollmentToken {
        tenant: String,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Create an analyst API token for a tenant; prints the secret once.
    ApiToken {
        tenant: String,
        /// Who the token is for (appears in the audit log).
        #[arg(long)]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = vigil_server::ServerConfig::load(&args.config)?;
    let store = || {
        vigil_store::ControlStore::open(&cfg.data_dir.join("store")).context("opening the store")
    };
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let server = vigil_server::Server::bind(cfg.clone())
                .await
                .context("starting the server")?;
            server
                .serve(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
        Command::TenantCreate { id, name } => {
            store()?.create_tenant(&id, &name)?;
            println!("tenant {id} created");
        }
        Command::EnrollmentToken { tenant, hours } => {
            let t = store()?.create_enrollment_token(
                &tenant,
                Duration::from_secs(hours.saturating_mul(3600)),
            )?;
            println!("{t}");
        }
        Command::ApiToken { tenant, name } => {
            let t = store()?.create_api_token(&tenant, &name)?;
            println!("{t}");
        }
    }
    Ok(())
}
