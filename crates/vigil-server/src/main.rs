//! `vigil-server --config FILE [serve]`: serves until interrupted.
//! `vigil-server --config FILE operator-token|tenant|enrollment-token|api-token|audit-verify ...`:
//! bootstrap and recovery while the server is stopped (the store allows one
//! process). They call the same store code the Operator and Admin services
//! do; with the server running, use `vigil` instead.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;
use vigil_store::Role;

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
    /// Create a deployment operator token (the first one, to bootstrap); prints the secret once.
    OperatorToken {
        /// Who the token is for (appears in the audit log).
        #[arg(long)]
        name: String,
    },
    /// Create a tenant and its first admin token; prints both.
    TenantCreate {
        /// Display name.
        name: String,
        /// One of the configured regions (default: the only one).
        #[arg(long)]
        region: Option<String>,
        /// 30 to 180.
        #[arg(long, default_value_t = vigil_store::DEFAULT_RETENTION_DAYS)]
        retention_days: u32,
        /// Tenant id (default: generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// Create an enrollment token for a tenant's sensors; prints the secret once.
    EnrollmentToken {
        tenant: String,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Create an API token in a tenant; prints the secret once.
    ApiToken {
        tenant: String,
        /// Who the token is for (appears in the audit log).
        #[arg(long)]
        name: String,
        /// admin, analyst, auditor or read-only.
        #[arg(long, default_value = "analyst")]
        role: String,
    },
    /// Verify an audit log's chain offline: the deployment's, or a tenant's.
    AuditVerify {
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Offline administration bypasses the API, so it writes its own audit
/// entries: in the deployment's log, and in the tenant's it touches. Someone
/// with the server's files can mint a token, but not without the tenant seeing it.
fn audit_offline(
    store: &vigil_store::ControlStore,
    tenant: Option<&str>,
    method: &str,
    summary: &str,
) -> anyhow::Result<()> {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let entry = |tenant_id: &str| vigil_audit::NewEntry {
        time_unix_ns: store.now(),
        actor: format!("vigil-server (offline, user {user})"),
        actor_id: String::new(),
        role: "operator (offline)".into(),
        tenant_id: tenant_id.to_owned(),
        method: method.to_owned(),
        summary: summary.to_owned(),
        result: "ok".into(),
        peer: "local".into(),
    };
    let (path, key) = store.deployment_audit()?;
    let log = vigil_audit::AuditLog::open(&path, &key)?;
    log.append(entry(tenant.unwrap_or("")))?;
    log.flush()?;
    if let Some(t) = tenant {
        let log = vigil_audit::AuditLog::open(
            &store.tenant_audit_path(t)?,
            &*store.tenant_audit_key(t)?,
        )?;
        log.append(entry(t))?;
        log.flush()?;
    }
    Ok(())
}

fn role(s: &str) -> anyhow::Result<Role> {
    Ok(match s {
        "admin" => Role::Admin,
        "analyst" => Role::Analyst,
        "auditor" => Role::Auditor,
        "read-only" | "read_only" => Role::ReadOnly,
        other => anyhow::bail!("unknown role `{other}` (admin, analyst, auditor, read-only)"),
    })
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
        vigil_server::open_store(&cfg, &vigil_server::BindOptions::default())
            .context("opening the store (is the server running? stop it first)")
    };
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let server = vigil_server::Server::bind(cfg.clone())
                .await
                .context("starting the server")?;
            // SIGINT (Ctrl-C) or SIGTERM (systemd, containers): stop accepting,
            // finish, flush the audit logs.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            server
                .serve(async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                })
                .await?;
        }
        Command::OperatorToken { name } => {
            let s = store()?;
            let (t, info) =
                s.create_api_token(None, Role::Operator, &name, 0, "vigil-server (offline)")?;
            audit_offline(
                &s,
                None,
                "offline/OperatorToken",
                &format!("name={name:?} token_id={}", info.id),
            )?;
            eprintln!(
                "operator token {} created; the secret is shown once:",
                info.id
            );
            println!("{t}");
        }
        Command::TenantCreate {
            name,
            region,
            retention_days,
            id,
        } => {
            let s = store()?;
            let region = match region {
                Some(r) => r,
                None => match s.regions() {
                    [only] => only.name.clone(),
                    _ => anyhow::bail!("--region is required: this server serves several"),
                },
            };
            let rec = s.create_tenant(id.as_deref(), &name, &region, retention_days)?;
            let (t, _) = s.create_api_token(
                Some(&rec.id),
                Role::Admin,
                "first admin",
                0,
                "vigil-server (offline)",
            )?;
            audit_offline(
                &s,
                Some(&rec.id),
                "offline/TenantCreate",
                &format!("name={name:?} region={region} retention_days={retention_days}"),
            )?;
            println!("tenant_id {}", rec.id);
            println!("admin_token {t}");
        }
        Command::EnrollmentToken { tenant, hours } => {
            let s = store()?;
            let (t, info) = s.create_enrollment_token(
                &tenant,
                Duration::from_secs(hours.saturating_mul(3600)),
                "vigil-server (offline)",
            )?;
            audit_offline(
                &s,
                Some(&tenant),
                "offline/EnrollmentToken",
                &format!("valid_hours={hours} token_id={}", info.id),
            )?;
            println!("{t}");
        }
        Command::ApiToken {
            tenant,
            name,
            role: r,
        } => {
            let s = store()?;
            let (t, info) =
                s.create_api_token(Some(&tenant), role(&r)?, &name, 0, "vigil-server (offline)")?;
            audit_offline(
                &s,
                Some(&tenant),
                "offline/ApiToken",
                &format!("name={name:?} role={r} token_id={}", info.id),
            )?;
            println!("{t}");
        }
        Command::AuditVerify { tenant } => {
            let s = store()?;
            let (path, key) = match &tenant {
                Some(t) => (s.tenant_audit_path(t)?, s.tenant_audit_key(t)?),
                None => s.deployment_audit()?,
            };
            let r = vigil_audit::verify_file(&path, &key)?;
            if r.ok {
                println!("audit log OK: {} entries ({})", r.entries, path.display());
            } else {
                println!(
                    "audit log FAILED at line {}: {} ({})",
                    r.first_bad_line,
                    r.reason,
                    path.display()
                );
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
