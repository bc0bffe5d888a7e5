//! Rule sets published on the server for this sensor's tenant.
//!
//! The sensor keeps `Rules/WatchRules` open over its mutual-TLS identity
//! (reconnecting with backoff, like the record stream) and says which
//! published version it runs; the server sends a new version as soon as one
//! is published. A set that loads whole is saved in the data directory
//! (`published-rules.json`, replaced atomically) and swapped in between two
//! events; one that does not load is refused and the running set stays.
//!
//! Precedence: a published set replaces the local rules (`[rules] paths` or
//! the built-in pack) entirely, and while one runs, edits of local rule files
//! are not applied. A sensor that starts with a saved set runs it from the
//! start, connected or not.
//!
//! What runs: the set's device part ([`RuleSet::part`]); tenant-wide
//! correlations are the server's.

use crate::config::SensorConfig;
use crate::uplink::{DeviceIdentity, pin};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use vigil_proto::v1::{RulesRunning, rules_client::RulesClient};
use vigil_rules::{RuleSet, Scope};

pub(crate) const FILE: &str = "published-rules.json";

/// A published set as saved on disk.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u64,
    bundle: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Compiles a bundle; `None` (with the reasons logged) unless it loads whole.
/// The sensor runs the device part only: correlations of `vigil: {scope:
/// tenant}` run on the server over every device of the tenant (the server's
/// `correlate.rs`); the rules they reference still run here and alert as usual.
fn compile(version: u64, bundle: &str) -> Option<RuleSet> {
    let name = format!("published:v{version}");
    let (set, report) = RuleSet::from_bundle(Path::new(&name), bundle);
    if report.rejected.is_empty() && report.loaded > 0 {
        return Some(set.part(Scope::Device));
    }
    for r in &report.rejected {
        tracing::error!(rejection = %r, version, "Published rule set refused; the running rules stay");
    }
    None
}

/// The set saved by an earlier run, if there is one that loads.
pub(crate) fn load_saved(dir: &Path) -> Option<(u64, RuleSet)> {
    let text = std::fs::read_to_string(path(dir)).ok()?;
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Saved published rule set unreadable; ignored");
            return None;
        }
    };
    compile(saved.version, &saved.bundle).map(|s| (saved.version, s))
}

fn save(dir: &Path, version: u64, bundle: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&Saved {
        version,
        bundle: bundle.to_owned(),
    })?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(dir))
}

/// The published version running now (0: the local rules).
#[derive(Debug, Default)]
pub(crate) struct Running(AtomicU64);

impl Running {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

fn report(version: u64) -> RulesRunning {
    RulesRunning {
        version: if version == 0 {
            String::new()
        } else {
            format!("v{version}")
        },
        published_version: version,
    }
}

/// Watches for published sets until `stop` turns true; `apply` swaps a set in.
pub(crate) async fn run(
    cfg: SensorConfig,
    identity: DeviceIdentity,
    running: Arc<Running>,
    apply: impl Fn(RuleSet) + Send + Sync + 'static,
    stop: watch::Receiver<bool>,
) {
    let mut state = (cfg, identity, running, apply, pin::Trust::default());
    reconnecting(
        "Rule watch",
        stop,
        &mut state,
        |(cfg, id, running, apply, trust)| Box::pin(session(cfg, id, running, apply, trust)),
    )
    .await
}

/// A connection under the device's identity, to the pinned server, for a watch.
pub(crate) async fn device_channel(
    cfg: &SensorConfig,
    identity: &DeviceIdentity,
    trust: &mut pin::Trust,
) -> Result<tonic::transport::Channel, String> {
    let ca = trust.session_ca(cfg).map_err(|e| e.to_string())?;
    crate::uplink::channel(cfg, &ca.pem, Some(identity))
        .await
        .map_err(|e| e.to_string())
}

/// One session of a watch: borrows the watch's state for as long as it runs.
pub(crate) type Session<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Runs `session` again and again (a stream the server keeps open), with
/// jittered exponential backoff after each end (`uplink::Backoff`: sensors
/// cut off together do not come back together), until `stop` turns true.
pub(crate) async fn reconnecting<S: Send>(
    what: &'static str,
    mut stop: watch::Receiver<bool>,
    state: &mut S,
    session: impl for<'a> Fn(&'a mut S) -> Session<'a>,
) {
    let mut backoff = crate::uplink::Backoff::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let outcome = tokio::select! {
            r = session(state) => r,
            _ = stop.changed() => return,
        };
        if outcome.is_ok() {
            backoff.reset();
        }
        let wait = backoff.next_delay(None);
        if let Err(e) = outcome {
            tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what} interrupted");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn session(
    cfg: &SensorConfig,
    identity: &DeviceIdentity,
    running: &Running,
    apply: &(impl Fn(RuleSet) + Sync),
    trust: &mut pin::Trust,
) -> Result<(), String> {
    let ch = device_channel(cfg, identity, trust).await?;
    let mut client = RulesClient::new(ch)
        .max_decoding_message_size(cfg.uplink.max_message_bytes.max(vigil_rules_max()))
        .max_encoding_message_size(cfg.uplink.max_message_bytes);
    let (tx, rx) = tokio::sync::mpsc::channel::<RulesRunning>(4);
    tx.send(report(running.get()))
        .await
        .map_err(|_| "closed".to_owned())?;
    let mut updates = client
        .watch_rules(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(u) = updates.next().await {
        let u = u.map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        let Ok(bundle) = String::from_utf8(u.bundle) else {
            tracing::error!(
                version = u.version,
                "Published rule set is not UTF-8; refused"
            );
            continue;
        };
        let version = u.version;
        let dir = cfg.data_dir.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let set = compile(version, &bundle)?;
            if let Err(e) = save(&dir, version, &bundle) {
                tracing::warn!(error = %e, "Cannot save the published rule set; it runs until the sensor stops");
            }
            Some(set)
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(set) = compiled {
            tracing::info!(version, rules = set.len(), "Published rule set applied");
            running.set(version);
            apply(set);
            tx.send(report(version))
                .await
                .map_err(|_| "closed".to_owned())?;
        }
    }
    Err("server closed the rule watch".into())
}

/// Room for the largest published set the server keeps, with framing.
fn vigil_rules_max() -> usize {
    (16 << 20) + 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_set_runs_without_its_tenant_wide_correlations() {
        let yaml = "title: r\nid: r\nlogsource: {product: linux, category: file_event}\n\
                    detection: {s: {TargetFilename: /tmp/x}, condition: s}\n---\n\
                    title: spread\nid: spread\nvigil: {scope: tenant}\n\
                    correlation: {type: value_count, rules: [r], group-by: [Hashes], timespan: 10m, \
                    condition: {field: DeviceId, gte: 3}}\n---\n\
                    title: local\nid: local\n\
                    correlation: {type: event_count, rules: [r], timespan: 1m, condition: {gte: 2}}\n";
        let mut set = RuleSet::for_bundle();
        let mut report = vigil_rules::LoadReport::default();
        set.load_str(Path::new("t.yml"), yaml, &mut report);
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        let bundle = set.to_bundle().unwrap_or_default();
        let Some(run) = compile(3, &bundle) else {
            panic!("the bundle did not load");
        };
        assert_eq!(run.rules().len(), 1);
        let ids: Vec<&str> = run.correlations().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["local"]);
    }
}
