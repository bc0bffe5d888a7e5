//! `vigil up`: the whole system on this machine — server on loopback with the
//! embedded store, a local tenant, this machine's sensor enrolled into it, an
//! analyst profile, and every alert printed as it is raised.

use crate::profile::Profile;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_stream::StreamExt;
use vigil_proto::v1::WatchAlertsRequest;
use vigil_store::{Role, TokenCheck};

pub struct UpArgs {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub rules: Vec<PathBuf>,
    pub json: bool,
}

const TENANT: &str = "local";

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

pub async fn run(args: UpArgs) -> Result<()> {
    let data_dir = absolute(&args.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let server_dir = data_dir.join("server");
    let server = vigil_server::Server::bind(vigil_server::ServerConfig::new(
        args.listen,
        server_dir.clone(),
    ))
    .await
    .context("starting the server (is another `vigil up` running on this port? try --listen)")?;
    let addr = server.local_addr()?;
    let control = server.control();
    if control.tenant(TENANT)?.is_none() {
        control.create_tenant(
            Some(TENANT),
            "Local tenant (vigil up)",
            "local",
            vigil_store::DEFAULT_RETENTION_DAYS,
        )?;
    }
    let ca_file = vigil_server::pki::PkiPaths::new(&server_dir).ca_cert();
    let endpoint = format!("https://{addr}");
    // The local tenant's admin, and the deployment's operator: tokens are
    // reused across restarts while still valid.
    let profile_path = data_dir.join("analyst.toml");
    let operator_path = data_dir.join("operator.toml");
    let reuse = |path: &Path, tenant: Option<&str>, role: Role| -> Result<Option<String>> {
        Ok(match Profile::load(path) {
            Ok(p) => match control.check_api_token(&p.token)? {
                TokenCheck::Valid(t) if t.tenant_id.as_deref() == tenant && t.role == role => {
                    Some(p.token)
                }
                _ => None,
            },
            Err(_) => None,
        })
    };
    let token = match reuse(&profile_path, Some(TENANT), Role::Admin)? {
        Some(t) => t,
        None => {
            control
                .create_api_token(Some(TENANT), Role::Admin, "vigil up admin", 0, "vigil up")?
                .0
        }
    };
    let operator_token = match reuse(&operator_path, None, Role::Operator)? {
        Some(t) => t,
        None => {
            control
                .create_api_token(None, Role::Operator, "vigil up operator", 0, "vigil up")?
                .0
        }
    };
    let profile = Profile {
        endpoint: endpoint.clone(),
        ca_file: ca_file.clone(),
        server_name: "localhost".into(),
        token,
        tenant: TENANT.into(),
    };
    profile.save_as(&profile_path, Some("admin"))?;
    Profile {
        token: operator_token,
        tenant: String::new(),
        ..profile.clone()
    }
    .save_as(&operator_path, Some("operator"))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server_task = tokio::spawn(server.serve(async move {
        let _ = server_stop.changed().await;
    }));

    let sensor_dir = data_dir.join("sensor");
    let enrolled = vigil_sensor::uplink::DeviceIdentity::load(&sensor_dir).is_some();
    let token = if enrolled {
        None
    } else {
        Some(
            control
                .create_enrollment_token(TENANT, Duration::from_secs(600), "vigil up")?
                .0,
        )
    };
    let rules: Vec<PathBuf> = args
        .rules
        .iter()
        .map(|r| absolute(r))
        .collect::<Result<_>>()?;
    let cfg_text = toml::to_string(&toml::toml! {
        data_dir = (sensor_dir.display().to_string())
        [server]
        endpoint = (endpoint.clone())
        ca_file = (ca_file.display().to_string())
        server_name = "localhost"
        [rules]
        paths = (rules.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
    })?;
    let mut cfg = vigil_sensor::SensorConfig::parse(Path::new("<vigil up>"), &cfg_text)?;
    cfg.enrollment.token = token;
    let sensor = vigil_sensor::Sensor::start(cfg)
        .await
        .context("starting the sensor")?;

    eprintln!("Vigil is up.");
    eprintln!("  server       {endpoint} (data in {})", data_dir.display());
    eprintln!(
        "  tenant       {TENANT}; this machine is device {}",
        sensor
            .identity
            .as_ref()
            .map_or("(not enrolled)", |i| i.device_id.as_str())
    );
    for s in &sensor.sources {
        eprintln!("  collecting   {s}");
    }
    for d in &sensor.degraded {
        eprintln!("  DEGRADED     {d}");
    }
    eprintln!(
        "  analysts     vigil --profile {} alerts list",
        profile_path.display()
    );
    eprintln!(
        "  operator     vigil --profile {} tenant list",
        operator_path.display()
    );
    eprintln!("Alerts appear below as they are raised. Ctrl-C stops.");

    let mut alerts = crate::alerts::client(&profile).await?;
    let mut watch = alerts
        .watch_alerts(WatchAlertsRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("WatchAlerts: {}: {}", s.code(), s.message()))?
        .into_inner();
    let json = args.json;
    let printer = tokio::spawn(async move {
        while let Some(a) = watch.next().await {
            match a {
                Ok(a) if json => println!("{}", crate::alerts::to_json(&a)),
                Ok(a) => println!("ALERT {}", crate::alerts::one_line(&a)),
                Err(s) => eprintln!("alert watch: {}: {}", s.code(), s.message()),
            }
        }
    });

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("Stopping...");
    printer.abort();
    sensor.shutdown().await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server_task).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => eprintln!("server did not stop within 5 s"),
    }
    eprintln!("Stopped.");
    Ok(())
}
