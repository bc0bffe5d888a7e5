//! Server-side rules: correlations that need more than one machine, run over
//! the ingested records of each tenant, across its devices.
//!
//! A correlation carrying Vigil's custom attribute `vigil: {scope: tenant}`
//! runs here; every other rule runs on the sensors (offline capable), which
//! never see the tenant-wide ones ([`RuleSet::part`]). Each tenant with such
//! correlations has one worker task: it compiles the server part of the
//! tenant's current published rule set (the correlations of tenant scope and
//! the rules they reference, which only feed them: sensors raise their own
//! matches) and rebuilds it on every publish or rollback, listening to the
//! same signal that tells sensors (`rules.rs`). A rebuild keeps the state of
//! the correlations whose definition did not change ([`Engine::reload`]).
//!
//! Input: after a batch is durably committed, ingest hands over the records
//! above the device's previous high-water mark ([`Correlators::observe`]),
//! so a re-sent record is never counted twice. Ingest never waits: the
//! tenant's queue is bounded and a batch that finds it full is not
//! correlated (logged and counted as `vigil_correlation_skipped_total`).
//!
//! Evaluation (on a blocking thread, one batch at a time per tenant, in
//! memory): every record is seen as the Sigma events the sensors see
//! (`vigil-evaluate`), without the process ancestry a sensor adds, plus two
//! fields only the server knows: `DeviceId` (the enrolled device) and
//! `Computer` (its hostname at enrollment), e.g. `condition: {field:
//! DeviceId, gte: 5}`. An event's time is the sensor's, capped at the
//! server's clock (a backlog re-sent later correlates at the times it
//! happened; a clock ahead cannot open windows in the future). Conditions
//! with upper bounds (`lt`, `lte`, `eq`, `neq`) are judged when the group's
//! next event arrives.
//!
//! Output: each firing becomes an alert (severity from the level, the
//! device of the event that completed it, `detection.devices` every
//! contributing device, that one first, `detection.matched` the contributing
//! events, oldest first, at most [`MAX_EVIDENCE`]), stored through the
//! tenant's `TenantData` and published to live watchers. Such alerts are not
//! aggregated.
//!
//! Bounds: the engine's state per correlation ([`ENGINE`]); evidence kept per
//! group ([`MAX_EVIDENCE`] newest events) and groups with evidence per
//! correlation ([`MAX_EVIDENCE_GROUPS`], least recently fed dropped first).
//!
//! State lives in memory: a server restart forgets partial correlations.

use crate::{Shared, alert};
use prost::Message;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use vigil_evaluate::{Source, acting_process, detection_of, for_each_event};
use vigil_proto::v1::{Alert, Record};
use vigil_rules::{Engine, EngineConfig, Event, Fed, FieldValue, Hit, LogSource, RuleSet, Scope};

/// The contributing events an alert names, at most (the newest of its group).
pub(crate) const MAX_EVIDENCE: usize = 50;
/// Correlation groups whose evidence is kept, per correlation.
pub(crate) const MAX_EVIDENCE_GROUPS: usize = 1_024;
/// The engine's own bounds, per correlation.
pub(crate) const ENGINE: EngineConfig = EngineConfig {
    max_groups: 10_000,
    max_entries_per_group: 1_000,
};
/// Batches waiting for a tenant's worker, at most.
const QUEUE: usize = 64;
/// The field naming the device an event came from.
pub(crate) const DEVICE_ID: &str = "DeviceId";
/// The field holding that device's hostname.
pub(crate) const COMPUTER: &str = "Computer";

/// An event as the server sees it: the sensor's, with where it came from.
struct OnDevice<'a> {
    event: &'a dyn Event,
    device_id: &'a str,
    hostname: &'a str,
}

impl Event for OnDevice<'_> {
    fn field(&self, name: &str) -> Option<FieldValue<'_>> {
        match name {
            DEVICE_ID => Some(FieldValue::Str(Cow::Borrowed(self.device_id))),
            COMPUTER if !self.hostname.is_empty() => {
                Some(FieldValue::Str(Cow::Borrowed(self.hostname)))
            }
            _ => self.event.field(name),
        }
    }

    fn values(&self) -> Vec<Cow<'_, str>> {
        self.event.values()
    }

    fn visit_fields(&self, f: &mut dyn FnMut(&str, FieldValue<'_>)) -> bool {
        if !self.event.visit_fields(f) {
            return false;
        }
        for name in [DEVICE_ID, COMPUTER] {
            if let Some(v) = self.field(name) {
                f(name, v);
            }
        }
        true
    }
}

/// One event that fed a correlation group.
#[derive(Debug, Clone)]
struct Contribution {
    device_id: String,
    time: i64,
    record: Record,
}

impl Contribution {
    fn same(&self, other: &Contribution) -> bool {
        self.device_id == other.device_id && self.record.sequence == other.record.sequence
    }
}

#[derive(Debug, Default)]
struct Evidence {
    last: i64,
    events: VecDeque<Contribution>,
}

/// A tenant's server rules and their state: records in, alerts out.
pub(crate) struct TenantRules {
    version: u64,
    engine: Engine,
    sources: [LogSource; 4],
    /// Per correlation of the engine's set: group key → its evidence.
    evidence: Vec<HashMap<String, Evidence>>,
    /// Evidence groups dropped to stay within bounds.
    evicted: u64,
}

impl std::fmt::Debug for TenantRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRules")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl TenantRules {
    /// The server part of `set` as published `version`; `None` when it holds
    /// no correlation of tenant scope (nothing to run here).
    pub(crate) fn new(set: &RuleSet, version: u64) -> Option<TenantRules> {
        let part = server_part(set)?;
        let evidence = part.correlations().iter().map(|_| HashMap::new()).collect();
        Some(TenantRules {
            version,
            engine: Engine::new(part, ENGINE),
            sources: Source::ALL.map(Source::logsource),
            evidence,
            evicted: 0,
        })
    }

    /// Swaps in a new published version; `None` when it has nothing to run
    /// here. Correlations whose definition did not change keep their state
    /// and their evidence.
    pub(crate) fn replace(mut self, set: &RuleSet, version: u64) -> Option<TenantRules> {
        let part = server_part(set)?;
        let old: Vec<String> = self
            .engine
            .rule_set()
            .correlations()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let mut kept: HashMap<String, HashMap<String, Evidence>> =
            old.into_iter().zip(self.evidence.drain(..)).collect();
        self.evidence = part
            .correlations()
            .iter()
            .map(|c| kept.remove(&c.id).unwrap_or_default())
            .collect();
        self.engine.reload(part);
        self.version = version;
        Some(self)
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Evaluates `records` of one device, in order, at server time `now_ns`;
    /// returns the alerts of the correlations they completed.
    pub(crate) fn observe(
        &mut self,
        device_id: &str,
        hostname: &str,
        records: &[Record],
        now_ns: i64,
    ) -> Vec<Alert> {
        let set = Arc::clone(self.engine.rule_set());
        let mut alerts = Vec::new();
        let mut trace: Vec<Fed> = Vec::new();
        let TenantRules {
            engine,
            sources,
            evidence,
            evicted,
            ..
        } = self;
        for r in records {
            let Some(payload) = &r.payload else { continue };
            let time = r.time_unix_ns.min(now_ns);
            let me = || Contribution {
                device_id: device_id.to_owned(),
                time,
                record: r.clone(),
            };
            // Correlations this record completed, each once however many of its events did.
            let mut completed: Vec<(usize, Vec<Contribution>)> = Vec::new();
            for_each_event(payload, &[], |event| {
                let source = &sources[event.source().index()];
                let ev = OnDevice {
                    event,
                    device_id,
                    hostname,
                };
                trace.clear();
                let hits = engine.process_traced(source, &ev, time, &mut trace);
                // Evidence of the correlations that fired on this event, for those they feed.
                let mut drained: Vec<(usize, Vec<Contribution>)> = Vec::new();
                for f in trace.drain(..) {
                    let add = match f.by {
                        Hit::Rule(_) => vec![me()],
                        Hit::Correlation(cj) => drained
                            .iter()
                            .find(|(c, _)| *c == cj)
                            .map(|(_, e)| e.clone())
                            .unwrap_or_default(),
                    };
                    let Some(groups) = evidence.get_mut(f.correlation) else {
                        continue;
                    };
                    let span = set
                        .correlations()
                        .get(f.correlation)
                        .map_or(0, |c| c.timespan_ns);
                    *evicted += keep(groups, &f.group, add, time, span);
                    if f.fired {
                        let events = groups
                            .remove(&f.group)
                            .map(|g| Vec::from(g.events))
                            .unwrap_or_default();
                        drained.push((f.correlation, events));
                    }
                }
                for h in hits {
                    let Hit::Correlation(ci) = h else {
                        // Referenced rules alert on the sensors, not here.
                        continue;
                    };
                    if completed.iter().any(|(c, _)| *c == ci) {
                        continue;
                    }
                    let mut events = drained
                        .iter()
                        .find(|(c, _)| *c == ci)
                        .map(|(_, e)| e.clone())
                        .unwrap_or_default();
                    if events.is_empty() {
                        // Its evidence was evicted: the completing event at least.
                        events.push(me());
                    }
                    completed.push((ci, events));
                }
            });
            for (ci, events) in completed {
                match raise(&set, ci, device_id, hostname, r, events, now_ns) {
                    Ok(a) => alerts.push(a),
                    Err(e) => tracing::error!(error = %e, "Cannot name a correlation alert"),
                }
            }
        }
        alerts
    }

    /// Groups holding evidence, over all correlations (tests).
    #[cfg(test)]
    fn evidence_groups(&self) -> usize {
        self.evidence.iter().map(HashMap::len).sum()
    }
}

/// The server part of a set, when it has anything to run.
fn server_part(set: &RuleSet) -> Option<Arc<RuleSet>> {
    let part = set.part(Scope::Tenant);
    (!part.correlations().is_empty()).then(|| Arc::new(part))
}

/// Adds `add` to a group's evidence: only events within `span` of `now`, no
/// event twice, the newest [`MAX_EVIDENCE`]. Returns the groups evicted.
fn keep(
    groups: &mut HashMap<String, Evidence>,
    key: &str,
    add: Vec<Contribution>,
    now: i64,
    span: i64,
) -> u64 {
    let mut evicted = 0;
    if !groups.contains_key(key)
        && groups.len() >= MAX_EVIDENCE_GROUPS
        && let Some(oldest) = groups
            .iter()
            .min_by_key(|(_, g)| g.last)
            .map(|(k, _)| k.clone())
    {
        groups.remove(&oldest);
        evicted = 1;
    }
    let g = groups.entry(key.to_owned()).or_default();
    g.last = now;
    let horizon = now.saturating_sub(span);
    g.events.retain(|c| c.time >= horizon);
    for c in add {
        if !g.events.iter().any(|x| x.same(&c)) {
            g.events.push_back(c);
        }
    }
    while g.events.len() > MAX_EVIDENCE {
        g.events.pop_front();
    }
    evicted
}

/// The alert of correlation `ci`, completed on `device_id` by `record`.
fn raise(
    set: &RuleSet,
    ci: usize,
    device_id: &str,
    hostname: &str,
    record: &Record,
    mut events: Vec<Contribution>,
    now_ns: i64,
) -> Result<Alert, vigil_store::StoreError> {
    events.sort_by_key(|c| c.time);
    let mut devices = vec![device_id.to_owned()];
    for c in &events {
        if !devices.contains(&c.device_id) {
            devices.push(c.device_id.clone());
        }
    }
    let mut d = detection_of(set, Hit::Correlation(ci));
    d.process = record.payload.as_ref().and_then(acting_process);
    d.devices = devices;
    d.matched_devices = events.iter().map(|c| c.device_id.clone()).collect();
    d.matched = events.into_iter().map(|c| c.record).collect();
    let time = record.time_unix_ns.min(now_ns);
    let id = alert::new_alert_id(now_ns)?;
    Ok(alert::from_detection(
        id, d, device_id, hostname, time, now_ns,
    ))
}

/// A batch for a tenant's worker.
struct Batch {
    device_id: String,
    hostname: String,
    records: Vec<Record>,
}

struct Worker {
    queue: mpsc::Sender<Batch>,
    /// False once the worker knows the tenant has nothing to run here.
    active: Arc<AtomicBool>,
}

/// The per-tenant workers, started on first use.
#[derive(Default)]
pub(crate) struct Correlators {
    workers: Mutex<HashMap<String, Worker>>,
}

impl Correlators {
    /// Whether records of `tenant` are worth decoding for its server rules
    /// (true until its worker has loaded them and found none). Starts the
    /// tenant's worker on first use.
    pub(crate) fn wants(&self, shared: &Arc<Shared>, tenant: &str) -> bool {
        let Ok(mut w) = self.workers.lock() else {
            return false;
        };
        let worker = w.entry(tenant.to_owned()).or_insert_with(|| {
            let (queue, rx) = mpsc::channel(QUEUE);
            let active = Arc::new(AtomicBool::new(true));
            // Subscribed before the first load: no publish falls between.
            let published = shared.rules.published.subscribe();
            // A weak reference: the worker must not keep the server (and its
            // store) alive once the server is gone.
            tokio::spawn(run(
                Arc::downgrade(shared),
                tenant.to_owned(),
                Arc::clone(&active),
                published,
                rx,
            ));
            Worker { queue, active }
        });
        worker.active.load(Ordering::Acquire)
    }

    /// Hands a device's new records (above its previous high-water mark) to
    /// the tenant's worker; never waits.
    pub(crate) fn observe(
        &self,
        tenant: &str,
        device_id: &str,
        hostname: &str,
        records: Vec<Record>,
    ) {
        if records.is_empty() {
            return;
        }
        let Ok(w) = self.workers.lock() else { return };
        let Some(worker) = w.get(tenant) else { return };
        let batch = Batch {
            device_id: device_id.to_owned(),
            hostname: hostname.to_owned(),
            records,
        };
        if worker.queue.try_send(batch).is_err() {
            crate::metrics::correlation_skipped(tenant);
            tracing::warn!(tenant = %tenant, device = %device_id, "Tenant-wide correlation is behind; a batch was not correlated");
        }
    }

    /// Lets a deleted tenant's worker end.
    pub(crate) fn forget(&self, tenant: &str) {
        if let Ok(mut w) = self.workers.lock() {
            w.remove(tenant);
        }
    }
}

/// (Re)loads the tenant's current published set when its version changed.
async fn load(shared: &Arc<Shared>, tenant: &str, had: Option<TenantRules>) -> Option<TenantRules> {
    let s = Arc::clone(shared);
    let t = tenant.to_owned();
    let done = tokio::task::spawn_blocking(move || {
        let current = match s.rules.sets.current(&s.control, &t) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(tenant = %t, error = %e, "Cannot read the published rule set for tenant-wide correlation");
                return had;
            }
        };
        // Nothing published: nothing to run.
        let (meta, bundle) = current?;
        if had.as_ref().is_some_and(|h| h.version() == meta.version) {
            return had;
        }
        let Ok(text) = std::str::from_utf8(&bundle) else {
            tracing::error!(tenant = %t, version = meta.version, "Published rule set is not UTF-8");
            return None;
        };
        let name = format!("published:v{}", meta.version);
        let (set, report) = RuleSet::from_bundle(Path::new(&name), text);
        for r in &report.rejected {
            tracing::error!(tenant = %t, rejection = %r, "Published rule set does not load on the server");
        }
        let next = match had {
            Some(h) => h.replace(&set, meta.version),
            None => TenantRules::new(&set, meta.version),
        };
        if let Some(n) = &next {
            let count = n.engine.rule_set().correlations().len();
            tracing::info!(tenant = %t, version = meta.version, correlations = count, "Tenant-wide correlations loaded");
        }
        next
    })
    .await;
    done.unwrap_or_else(|e| {
        tracing::error!(error = %e, "Loading tenant-wide correlations failed");
        None
    })
}

/// A tenant's worker: loads, evaluates batches in order, stores and
/// publishes alerts; until the tenant is forgotten.
async fn run(
    weak: std::sync::Weak<Shared>,
    tenant: String,
    active: Arc<AtomicBool>,
    mut published: broadcast::Receiver<(String, u64)>,
    mut rx: mpsc::Receiver<Batch>,
) {
    let Some(shared) = weak.upgrade() else { return };
    let mut rules = load(&shared, &tenant, None).await;
    drop(shared);
    active.store(rules.is_some(), Ordering::Release);
    loop {
        tokio::select! {
            p = published.recv() => {
                match p {
                    Ok((t, _)) if t != tenant => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                rules = load(&shared, &tenant, rules.take()).await;
                active.store(rules.is_some(), Ordering::Release);
            }
            b = rx.recv() => {
                let Some(batch) = b else { return };
                let Some(mut r) = rules.take() else { continue };
                let Some(shared) = weak.upgrade() else { return };
                let s = Arc::clone(&shared);
                let t = tenant.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let alerts = r.observe(&batch.device_id, &batch.hostname, &batch.records, s.control.now());
                    store(&s, &t, &alerts);
                    r
                })
                .await;
                match done {
                    Ok(r) => rules = Some(r),
                    Err(e) => {
                        // State is lost with the task: start over from the published set.
                        tracing::error!(tenant = %tenant, error = %e, "Tenant-wide correlation failed");
                        rules = load(&shared, &tenant, None).await;
                    }
                }
            }
        }
    }
}

/// Stores each alert, then tells live watchers.
fn store(shared: &Shared, tenant: &str, alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    let data = match shared.control.tenant_store(tenant) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(tenant = %tenant, error = %e, "Cannot store tenant-wide correlation alerts");
            return;
        }
    };
    for a in alerts {
        if let Err(e) = data.put_alert(
            &a.id,
            &a.encode_to_vec(),
            &crate::alert::Aggregate { window_ns: 0 },
        ) {
            tracing::error!(tenant = %tenant, alert = %a.id, error = %e, "Cannot store a tenant-wide correlation alert");
            continue;
        }
        let devices = a.detection.as_ref().map_or(0, |d| d.devices.len());
        tracing::info!(tenant = %tenant, alert = %a.id, rule = %a.rule_id, device = %a.device_id, devices, "Alert raised by a tenant-wide correlation");
        shared.alerts.publish(tenant, a);
    }
}

#[cfg(test)]
mod tests;
