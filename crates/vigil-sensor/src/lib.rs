//! Vigil's endpoint sensor.
//!
//! What it is: the library behind the `vigil-sensor` binary and `vigil up`.
//! Data path, one module each: `collect` (kernel sources) → `enrich` (process
//! tree, GUIDs, hashes) → `evaluate` (Sigma rules, offline) → spool (the
//! `vigil-spool` crate, on disk) → `uplink` (gRPC over mutual TLS). Beside
//! it, `control` (a local socket) lets the device's owner see it: `viewer`
//! holds `vigil-sensor inspect` (the records as spooled and sent) and `status`.
//!
//! What it is not: it stores nothing beyond its spool and identity, and raises
//! no alerts itself; detections travel to the server as records (and are
//! offered locally through [`Sensor::detections`]).

mod builtin;
pub mod collect;
pub mod config;
pub mod control;
pub mod enrich;
pub mod export;
/// The fuzz targets' entry points (`fuzz/`): the kernel-record parsers are
/// crate-private; this exposes what the fuzzer needs and nothing else.
#[doc(hidden)]
pub mod fuzzing;

mod pipeline;
mod policy;
mod privacy;
mod published;
pub mod reload;
pub mod uplink;
pub mod viewer;

use collect::{
    Origin, RawEvent, audit::AuditSource, inventory, proc_connector::ProcConnector, procfs,
};
pub use config::SensorConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use vigil_proto::v1::{Detection, record::Payload};
use vigil_rules::RuleSet;

/// Raw events queued between the kernel readers and the pipeline.
const EVENT_QUEUE: usize = 4_096;

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("enrollment failed: {0}")]
    Enroll(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("spool: {0}")]
    Spool(#[from] vigil_spool::SpoolError),
    #[error("export: {0}")]
    Export(String),
}

/// A running sensor. Drop or [`Sensor::shutdown`] stops it.
pub struct Sensor {
    stop: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    uplink: Option<tokio::task::JoinHandle<()>>,
    detections: broadcast::Sender<Detection>,
    reload: std::sync::mpsc::Sender<Arc<RuleSet>>,
    _watcher: Option<reload::RuleWatcher>,
    /// The published rule set version running (0: local rules), and its watch.
    published: Arc<published::Running>,
    rules_watch: Option<tokio::task::JoinHandle<()>>,
    _persist_watch: Option<collect::persist_watch::PersistWatch>,
    /// What each source is doing, for the operator.
    pub sources: Vec<String>,
    /// Sources that fell back or are off, with why.
    pub degraded: Vec<String>,
    /// The enrolled device (None for a standalone sensor).
    pub identity: Option<uplink::DeviceIdentity>,
    uplink_status: Option<watch::Receiver<uplink::UplinkStatus>>,
    /// New privacy settings for the pipeline, and the watch of the tenant's policy.
    privacy: std::sync::mpsc::Sender<privacy::Settings>,
    policy_watch: Option<tokio::task::JoinHandle<()>>,
    /// The pipeline's side of the control socket, and the socket.
    hooks: control::Hooks,
    control: Option<control::Server>,
}

impl std::fmt::Debug for Sensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensor")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// Sends from a kernel reader thread; a full queue counts as loss, never blocks the reader forever.
fn forward(tx: &SyncSender<RawEvent>, ev: RawEvent, source: &'static str) {
    match tx.try_send(ev) {
        Ok(()) => {}
        Err(TrySendError::Full(ev)) => {
            // Back-pressure briefly, then count.
            std::thread::sleep(Duration::from_millis(5));
            if tx.try_send(ev).is_err() {
                let _ = tx.try_send(RawEvent::Lost { source, count: 1 });
            }
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

impl Sensor {
    /// Loads rules, enrolls if needed, starts the collectors, pipeline and uplink.
    pub async fn start(cfg: SensorConfig) -> Result<Sensor, SensorError> {
        cfg.server().map_err(SensorError::Config)?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| SensorError::Io(format!("data_dir {}: {e}", cfg.data_dir.display())))?;
        let (machine_id, boot_id) = procfs::machine_and_boot_id();
        let host = inventory::host_info(&machine_id, &boot_id);
        let identity = uplink::ensure_enrolled(&cfg, &host).await?;
        // A spool the disk damaged is moved aside, what can be read of it
        // kept; the loss is logged and reported in health, never fatal.
        let (spool, recovery) = vigil_spool::Spool::open_recovering(
            &cfg.data_dir.join("spool.redb"),
            cfg.spool.capacity_mb.saturating_mul(1024 * 1024),
        )?;
        spool.set_min_free(cfg.spool.min_free_mb.saturating_mul(1024 * 1024));
        let spool = Arc::new(spool);
        let control_spool = Arc::clone(&spool);
        let wake = Arc::new(Notify::new());
        let mut sensor = Self::launch_with(
            &cfg,
            host,
            pipeline::Output::Spool {
                spool: Arc::clone(&spool),
                wake: Arc::clone(&wake),
            },
            recovery,
        )?;
        let stop_rx = sensor.stop_tx.subscribe();
        let (status_tx, status_rx) = watch::channel(uplink::UplinkStatus::default());
        sensor.uplink = Some(tokio::spawn(uplink::run(
            cfg.clone(),
            identity.clone(),
            spool,
            wake,
            stop_rx,
            status_tx,
        )));
        sensor.uplink_status = Some(status_rx);
        if let Some((version, set)) = published::load_saved(&cfg.data_dir) {
            tracing::info!(
                version,
                rules = set.len(),
                "Running the saved published rule set"
            );
            sensor.published.set(version);
            sensor.replace_rules(set);
        }
        let reload = sensor.reload.clone();
        sensor.rules_watch = Some(tokio::spawn(published::run(
            cfg.clone(),
            identity.clone(),
            Arc::clone(&sensor.published),
            move |set| {
                let _ = reload.send(Arc::new(set));
            },
            sensor.stop_tx.subscribe(),
        )));
        let (held, _) = privacy::load(&cfg.data_dir);
        let (tx, privacy_cfg, dir) = (
            sensor.privacy.clone(),
            cfg.privacy.clone(),
            cfg.data_dir.clone(),
        );
        let tx = std::sync::Mutex::new(tx);
        sensor.policy_watch = Some(tokio::spawn(policy::run(
            cfg.clone(),
            identity.clone(),
            held.version,
            move |policy| {
                let (_, mut key) = privacy::load(&dir);
                if privacy_cfg.pseudonymize || policy.pseudonymize {
                    key = privacy::key_or_own(&dir, key);
                }
                let s = privacy::settings(&privacy_cfg, &policy, key);
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(s);
                }
            },
            sensor.stop_tx.subscribe(),
        )));
        sensor.control = control::Server::start_or_warn(control::Context {
            hooks: sensor.hooks.clone(),
            data_dir: cfg.data_dir.clone(),
            spool: Some((
                control_spool,
                cfg.spool.capacity_mb.saturating_mul(1024 * 1024),
            )),
            uplink: sensor.uplink_status.clone(),
            endpoint: cfg.server().ok().map(|s| s.endpoint.clone()),
            device: Some((identity.device_id.clone(), identity.tenant_id.clone())),
            published: Arc::clone(&sensor.published),
        });
        sensor.identity = Some(identity);
        Ok(sensor)
    }

    /// A sensor without a server: every record (events, detections, health)
    /// is written to `out` as JSON lines, in the form `vigil rules match` reads.
    pub fn start_standalone(
        cfg: SensorConfig,
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<Sensor, SensorError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| SensorError::Io(format!("data_dir {}: {e}", cfg.data_dir.display())))?;
        let (machine_id, boot_id) = procfs::machine_and_boot_id();
        let host = inventory::host_info(&machine_id, &boot_id);
        let mut sensor = Self::launch(&cfg, host, pipeline::Output::lines(out))?;
        sensor.control = control::Server::start_or_warn(control::Context {
            hooks: sensor.hooks.clone(),
            data_dir: cfg.data_dir.clone(),
            spool: None,
            uplink: None,
            endpoint: None,
            device: None,
            published: Arc::clone(&sensor.published),
        });
        Ok(sensor)
    }

    /// Rules, collectors and the pipeline thread, writing to `output`.
    fn launch(
        cfg: &SensorConfig,
        host: vigil_proto::v1::HostInfo,
        output: pipeline::Output,
    ) -> Result<Sensor, SensorError> {
        Self::launch_with(cfg, host, output, None)
    }

    /// [`Sensor::launch`], saying in health what a damaged spool lost.
    fn launch_with(
        cfg: &SensorConfig,
        host: vigil_proto::v1::HostInfo,
        output: pipeline::Output,
        spool_recovery: Option<vigil_spool::Recovery>,
    ) -> Result<Sensor, SensorError> {
        let (rules, report) = if cfg.rules.paths.is_empty() {
            builtin::rules()
        } else {
            RuleSet::load_paths(&cfg.rules.paths)
        };
        for r in &report.rejected {
            tracing::warn!(rejection = %r, "Rule rejected");
        }
        tracing::info!(%report, "Rules loaded");
        // Tenant-wide correlations run on the server, never on one sensor.
        let rules = Arc::new(rules.part(vigil_rules::Scope::Device));
        let (reload_tx, reload_rx) = std::sync::mpsc::channel::<Arc<RuleSet>>();
        let published = Arc::new(published::Running::default());
        let watcher = if cfg.rules.paths.is_empty() {
            None
        } else {
            let tx = reload_tx.clone();
            let running = Arc::clone(&published);
            match reload::RuleWatcher::start(cfg.rules.paths.clone(), &report, move |r| match r {
                reload::Reload::Swap(_, _) if running.get() != 0 => {
                    tracing::info!("Local rule edit not applied: a published rule set runs");
                }
                reload::Reload::Swap(set, report) => {
                    tracing::info!(%report, "Rules reloaded");
                    let _ = tx.send(set);
                }
                reload::Reload::Refused(report) => {
                    for r in &report.rejected {
                        tracing::error!(rejection = %r, "Rule edit refused; the previous rules keep running");
                    }
                }
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot watch rule files; hot reload is off");
                    None
                }
            }
        };

        let (machine_id, boot_id) = (host.machine_id.clone(), host.boot_id.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel::<RawEvent>(EVENT_QUEUE);
        let mut threads = Vec::new();
        let mut sources = Vec::new();
        let mut degraded = Vec::new();

        // eBPF first (processes, files, network); audit + proc connector as the fallback.
        let mut ebpf_running = false;
        if cfg.collect.ebpf {
            let opts = vigil_ebpf::Options {
                ring_bytes: cfg.collect.ring_buffer_kb.saturating_mul(1024),
                files: cfg.collect.files,
                network: cfg.collect.network,
                self_tgid: std::process::id(),
            };
            match collect::ebpf::EbpfSource::start(&opts) {
                Ok(src) => {
                    let mut what = vec!["process exec/fork/exit"];
                    if cfg.collect.files {
                        what.push("files");
                    }
                    if cfg.collect.network {
                        what.push("network");
                    }
                    sources.push(format!(
                        "{}: eBPF ({})",
                        what.join(", "),
                        src.attached().join(", ")
                    ));
                    let mut excluded: Vec<Vec<u8>> = vec![
                        b"/proc".to_vec(),
                        b"/sys".to_vec(),
                        path_bytes(&cfg.data_dir),
                    ];
                    excluded.extend(cfg.collect.exclude_paths.iter().map(|p| path_bytes(p)));
                    let filter = collect::ebpf::PathFilter::new(excluded);
                    let (tx, stop) = (tx.clone(), Arc::clone(&stop));
                    threads.push(spawn("vigil-ebpf", move || src.run(stop, tx, filter))?);
                    ebpf_running = true;
                }
                Err(e) => {
                    let why =
                        if e.is_permission() && !matches!(e, vigil_ebpf::ProbeError::Privilege) {
                            format!("{e} (needs root, or CAP_BPF with CAP_PERFMON)")
                        } else {
                            e.to_string()
                        };
                    let msg = format!(
                        "eBPF collector unavailable: {why}; falling back to audit and the proc connector; \
                         file changes are watched only at persistence locations (inotify, without \
                         the acting process) and network activity is not collected"
                    );
                    tracing::warn!("{msg}");
                    degraded.push(msg);
                }
            }
        } else {
            degraded.push(
                "eBPF collector disabled by configuration (collect.ebpf = false): file changes are \
                 watched only at persistence locations and network activity is not collected"
                    .into(),
            );
        }
        let mut persist_watch = None;
        if !ebpf_running && cfg.collect.files {
            match collect::persist_watch::PersistWatch::start(
                enrich::persistence::watch_roots(),
                |p| enrich::persistence::classify(p).is_some(),
                tx.clone(),
            ) {
                Ok(w) => {
                    sources.push(format!(
                        "persistence files: inotify on {} locations (no acting process)",
                        w.roots
                    ));
                    persist_watch = Some(w);
                }
                Err(e) => degraded.push(format!("persistence file watch unavailable: {e}")),
            }
        }
        if !ebpf_running {
            // Process execution: audit first, proc connector as the fallback.
            let mut exec_from_connector = false;
            if cfg.collect.audit {
                match AuditSource::start() {
                    Ok(src) => {
                        sources.push(format!(
                            "process exec: audit netlink ({:?} mode)",
                            src.mode()
                        ));
                        let (tx, stop) = (tx.clone(), Arc::clone(&stop));
                        threads.push(spawn("vigil-audit", move || {
                            let lost_tx = tx.clone();
                            let r = src.run(
                                stop,
                                |e| forward(&tx, RawEvent::Exec(exec_from_audit(e)), "audit"),
                                |n| {
                                    let _ = lost_tx.try_send(RawEvent::Lost {
                                        source: "audit",
                                        count: u64::from(n),
                                    });
                                },
                            );
                            if let Err(e) = r {
                                tracing::error!(error = %e, "Audit source stopped");
                            }
                        })?);
                    }
                    Err(e) => {
                        let why = if e.is_permission() {
                            "missing CAP_AUDIT_CONTROL (and CAP_AUDIT_READ when auditd runs)"
                                .to_owned()
                        } else {
                            e.to_string()
                        };
                        let msg = format!(
                            "process exec via audit unavailable ({why}); falling back to the proc connector + /proc: \
                             argv of processes that exit within about a millisecond can be missed"
                        );
                        tracing::warn!("{msg}");
                        degraded.push(msg);
                        exec_from_connector = true;
                    }
                }
            } else {
                exec_from_connector = true;
                degraded.push(
                    "process exec via audit disabled by configuration (collect.audit = false)"
                        .into(),
                );
            }
            if cfg.collect.proc_connector {
                match ProcConnector::start() {
                    Ok(src) => {
                        sources.push(format!(
                            "process exit/fork{}: proc connector",
                            if exec_from_connector { "/exec" } else { "" }
                        ));
                        let (tx, stop) = (tx.clone(), Arc::clone(&stop));
                        threads.push(spawn("vigil-proc-cn", move || {
                            let lost_tx = tx.clone();
                            let clock_offset = procfs::clock_to_unix_offset_ns(
                                nix::time::ClockId::CLOCK_MONOTONIC,
                            );
                            let r = src.run(
                                stop,
                                |ev| match ev {
                                    collect::proc_connector::ProcEvent::Exit {
                                        tgid,
                                        exit_code,
                                        exit_signal,
                                        timestamp_ns,
                                    } => {
                                        let unix_ns = clock_offset.saturating_add(
                                            i64::try_from(timestamp_ns).unwrap_or(0),
                                        );
                                        forward(
                                            &tx,
                                            RawEvent::Exit {
                                                pid: tgid,
                                                exit_code,
                                                exit_signal,
                                                unix_ns,
                                            },
                                            "proc_connector",
                                        )
                                    }
                                    collect::proc_connector::ProcEvent::Fork {
                                        parent_tgid,
                                        child_tgid,
                                    } => forward(
                                        &tx,
                                        RawEvent::Fork {
                                            parent: parent_tgid,
                                            child: child_tgid,
                                            child_start_ticks: None,
                                        },
                                        "proc_connector",
                                    ),
                                    collect::proc_connector::ProcEvent::Exec { tgid, .. }
                                        if exec_from_connector =>
                                    {
                                        if let Some(info) = procfs::exec_info(
                                            tgid,
                                            pipeline::now_ns(),
                                            Origin::ProcFallback,
                                        ) {
                                            forward(&tx, RawEvent::Exec(info), "proc_connector");
                                        }
                                    }
                                    collect::proc_connector::ProcEvent::Exec { .. } => {}
                                },
                                || {
                                    let _ = lost_tx.try_send(RawEvent::Lost {
                                        source: "proc_connector",
                                        count: 1,
                                    });
                                },
                            );
                            if let Err(e) = r {
                                tracing::error!(error = %e, "Proc connector stopped");
                            }
                        })?);
                    }
                    Err(e) => {
                        let why = if e.is_permission() {
                            "missing CAP_NET_ADMIN".to_owned()
                        } else {
                            e.to_string()
                        };
                        let msg = format!(
                            "process exit events unavailable ({why}); exits will not be reported"
                        );
                        tracing::warn!("{msg}");
                        degraded.push(msg);
                        if exec_from_connector {
                            degraded.push("no live process-execution source: only the start-up inventory is reported".into());
                        }
                    }
                }
            }
        }
        drop(tx);

        let mut host = host;
        (host.rules_version, host.rules_loaded) = pipeline::rules_version(&rules);
        let mut initial = vec![(pipeline::now_ns(), Payload::Host(host.clone()))];
        let mut enricher = enrich::Enricher::new(machine_id, boot_id, hasher(cfg));
        // The tenant's policy as last received (a standalone sensor has only
        // its configuration), in force before the first record is made.
        privacy::keep_crash_reports(&cfg.data_dir);
        let (policy, mut key) = privacy::load(&cfg.data_dir);
        if cfg.privacy.pseudonymize || policy.pseudonymize {
            key = privacy::key_or_own(&cfg.data_dir, key);
        }
        let settings = privacy::settings(&cfg.privacy, &policy, key);
        let crash = privacy::take_crash_report(&cfg.data_dir, &settings.redactor);
        let (privacy_tx, privacy_rx) = std::sync::mpsc::channel();
        let features: std::collections::HashMap<String, bool> = [
            ("ebpf", ebpf_running),
            ("files", cfg.collect.files),
            ("network", cfg.collect.network),
            ("audit", cfg.collect.audit),
            ("proc_connector", cfg.collect.proc_connector),
            ("inventory", cfg.collect.inventory),
            ("local_rules", !cfg.rules.paths.is_empty()),
            ("configured_redaction", !cfg.privacy.redact.is_empty()),
            ("tenant_redaction", !policy.redact.is_empty()),
            ("pseudonyms", settings.pseudonyms.is_some()),
            ("connected", cfg.server.is_some()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        enricher.set_redactor(settings.redactor);
        if cfg.collect.exclude_self {
            enricher.exclude_self(std::process::id());
        }
        enricher.exclude_executables(
            cfg.collect
                .exclude_executables
                .iter()
                .map(|p| path_bytes(p))
                .collect(),
        );
        enricher.hash_written_under(
            cfg.collect
                .hash_written_under
                .iter()
                .map(|p| path_bytes(p))
                .collect(),
        );
        if cfg.collect.inventory {
            for p in inventory::snapshot() {
                enricher.enrich(RawEvent::Exec(p), &mut initial);
            }
            sources.push("process inventory: /proc snapshot at start".into());
            if cfg.collect.network {
                for n in collect::sockets::listening(pipeline::now_ns()) {
                    enricher.enrich(RawEvent::Net(n), &mut initial);
                }
                sources.push("listening sockets: /proc/net inventory at start".into());
            }
        }
        for s in &sources {
            tracing::info!(source = %s, "Collecting");
        }

        let mut spool_losses = BTreeMap::new();
        if let Some(r) = &spool_recovery {
            let lost = r
                .lost
                .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
            let msg = format!(
                "the spool was damaged ({}): {} records kept, {lost} records lost; the damaged file is {}",
                r.reason,
                r.kept,
                r.moved_to.display()
            );
            tracing::error!("{msg}");
            degraded.push(msg);
            // Counted when known; the message above says when it is not.
            spool_losses.insert("spool_damaged".to_owned(), r.lost.unwrap_or(0));
        }
        let (detections, _) = broadcast::channel(1024);
        let hooks = control::Hooks::default();
        // The spool counts its drops since it was made: only new ones are a blind spot.
        let spool_drops_seen = match &output {
            pipeline::Output::Spool { spool, .. } => {
                let mut losses = std::collections::BTreeMap::new();
                pipeline::spool_losses(&spool.stats().unwrap_or_default(), &mut losses);
                losses.values().sum()
            }
            pipeline::Output::Lines { .. } => 0,
        };
        let pipe = pipeline::Pipeline {
            enricher,
            evaluator: vigil_evaluate::Evaluator::new(
                rules,
                vigil_rules::EngineConfig {
                    max_groups: cfg.rules.correlation_max_groups,
                    max_entries_per_group: cfg.rules.correlation_max_entries,
                },
            ),
            reload: reload_rx,
            output,
            host,
            detections: detections.clone(),
            flush_every: Duration::from_millis(cfg.uplink.flush_interval_ms),
            batch_max: cfg.uplink.batch_max_records,
            sources: sources.clone(),
            degraded: degraded.clone(),
            dropped: spool_losses,
            totals: BTreeMap::new(),
            blind_spots: BTreeMap::new(),
            cpu_mark: (0, std::time::Instant::now()),
            pseudonyms: settings.pseudonyms,
            optional: settings.optional,
            privacy: privacy_rx,
            features,
            stages: BTreeMap::new(),
            crash,
            hooks: hooks.clone(),
            held: Vec::new(),
            spool_drops_seen,
        };
        let pstop = Arc::clone(&stop);
        threads.push(spawn("vigil-pipeline", move || {
            pipe.run(rx, initial, pstop)
        })?);

        let (stop_tx, _) = watch::channel(false);
        Ok(Sensor {
            stop,
            stop_tx,
            threads,
            uplink: None,
            detections,
            reload: reload_tx,
            _watcher: watcher,
            published,
            rules_watch: None,
            _persist_watch: persist_watch,
            sources,
            degraded,
            identity: None,
            uplink_status: None,
            privacy: privacy_tx,
            policy_watch: None,
            hooks,
            control: None,
        })
    }

    /// What the uplink is doing (None for a standalone sensor).
    pub fn uplink_status(&self) -> Option<uplink::UplinkStatus> {
        self.uplink_status.as_ref().map(|s| s.borrow().clone())
    }

    /// Detections as they are raised locally (before they reach the server).
    pub fn detections(&self) -> broadcast::Receiver<Detection> {
        self.detections.subscribe()
    }

    /// Swaps in a new rule set between two events; correlations whose
    /// definition did not change keep their state.
    pub fn replace_rules(&self, rules: RuleSet) {
        let _ = self.reload.send(Arc::new(rules));
    }

    /// Stops collectors, flushes the pipeline to the spool, and closes the uplink.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The inotify watcher holds a sender: drop it so the pipeline sees every collector hang up.
        self._persist_watch = None;
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        // Followers have what the pipeline flushed last; they are told it stops.
        if let Some(c) = self.control.take() {
            c.shutdown().await;
        }
        let _ = self.stop_tx.send(true);
        if let Some(u) = self.uplink.take() {
            let _ = u.await;
        }
        if let Some(w) = self.rules_watch.take() {
            let _ = w.await;
        }
        if let Some(w) = self.policy_watch.take() {
            let _ = w.await;
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
    }
}

/// The file hasher with its on-disk cache (in memory only if the file cannot be used).
fn hasher(cfg: &SensorConfig) -> vigil_hash::FileHasher {
    let path = cfg.data_dir.join("hash-cache.redb");
    let entries = cfg.collect.hash_cache_entries;
    let cache = match vigil_hash::HashCache::open(&path, entries) {
        Ok((cache, opened)) => {
            if let Some(why) = opened.recreated {
                tracing::warn!(path = %path.display(), why, "Hash cache was unreadable and is recreated");
            }
            cache
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Hash cache unavailable; hashes are cached in memory only");
            vigil_hash::HashCache::in_memory(entries)
        }
    };
    let rate = cfg.collect.hash_read_mb_per_s.saturating_mul(1024 * 1024);
    vigil_hash::FileHasher::new(
        vigil_hash::HashConfig {
            max_file_bytes: cfg.collect.hash_max_mb.saturating_mul(1024 * 1024),
            read_budget: (rate > 0).then_some(vigil_hash::ReadBudget {
                bytes_per_sec: rate,
                burst_bytes: rate,
            }),
            ..Default::default()
        },
        Some(cache),
    )
}

fn path_bytes(p: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, SensorError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| SensorError::Io(format!("spawn {name}: {e}")))
}

fn exec_from_audit(e: collect::audit_parse::ExecRecord) -> collect::ExecInfo {
    collect::ExecInfo {
        pid: e.pid,
        ppid: e.ppid,
        unix_ns: e.unix_ms.saturating_mul(1_000_000),
        uid: e.uid,
        euid: e.euid,
        gid: e.gid,
        egid: e.egid,
        login_uid: e.auid,
        session_id: e.ses,
        tty: e.tty,
        exe: e.exe,
        cwd: e.cwd,
        argv: e.argv,
        argv_truncated: e.argv_truncated,
        argv_missing: false,
        start_ticks: None,
        cgroup_id: 0,
        container_id: String::new(),
        origin: Origin::Kernel,
    }
}
