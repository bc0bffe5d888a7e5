//! The tenant's privacy policy, watched over the device's mutual-TLS
//! identity (`Ingest/WatchPolicy`, reconnecting with backoff like the rule
//! watch): each new version is saved in the data directory (so a restart
//! offline keeps it) and applied to the pipeline between two events.

use crate::config::SensorConfig;
use crate::uplink::{DeviceIdentity, pin};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use vigil_proto::v1::{SensorPolicy, WatchPolicyRequest, ingest_client::IngestClient};

/// Watches the tenant's policy until `stop` turns true; `apply` gets each new one.
pub(crate) async fn run(
    cfg: SensorConfig,
    identity: DeviceIdentity,
    held: u64,
    apply: impl Fn(SensorPolicy) + Send + Sync + 'static,
    stop: watch::Receiver<bool>,
) {
    let mut state = (cfg, identity, held, apply, pin::Trust::default());
    crate::published::reconnecting(
        "Policy watch",
        stop,
        &mut state,
        |(cfg, id, held, apply, trust)| Box::pin(session(cfg, id, held, apply, trust)),
    )
    .await
}

async fn session(
    cfg: &SensorConfig,
    identity: &DeviceIdentity,
    held: &mut u64,
    apply: &(impl Fn(SensorPolicy) + Sync),
    trust: &mut pin::Trust,
) -> Result<(), String> {
    let ch = crate::published::device_channel(cfg, identity, trust).await?;
    let mut updates = IngestClient::new(ch)
        .watch_policy(WatchPolicyRequest { version: *held })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(p) = updates.next().await {
        let p = p.map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        if p.version <= *held {
            continue;
        }
        let dir = cfg.data_dir.clone();
        let saved = p.clone();
        let kept = tokio::task::spawn_blocking(move || crate::privacy::save(&dir, None, &saved))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "Cannot save the privacy policy; it applies until the sensor stops");
        }
        tracing::info!(
            version = p.version,
            optional_data = p.optional_data,
            pseudonymize = p.pseudonymize,
            patterns = p.redact.len(),
            "Privacy policy received"
        );
        *held = p.version;
        apply(p);
    }
    Err("server closed the policy watch".into())
}
