//! The sensor's data path on one thread: raw events → enrich → evaluate →
//! output. Batches are committed to the spool (fsync) every flush interval or
//! batch size, whichever comes first, then the uplink is woken; a batch that
//! holds a detection is committed at once, so an alert never waits for the
//! next flush. A standalone sensor writes JSON lines instead of spooling.

use crate::collect::RawEvent;
use crate::enrich::Enricher;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use vigil_evaluate::Evaluator;
use vigil_proto::v1::{
    Detection, ProcessRef, Record, Redaction, SensorDiagnostics, SensorHealth, StageTiming,
    record::Payload,
};
use vigil_spool::Priority;
use vigil_spool::Spool;

/// How long the pipeline sleeps when it has nothing to write.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// How long the pipeline waits for collectors to hang up after a stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often a SensorHealth record is written.
const HEALTH_EVERY: Duration = Duration::from_secs(60);

/// Where records go.
pub(crate) enum Output {
    /// The durable queue the uplink sends from.
    Spool {
        spool: Arc<Spool>,
        wake: Arc<Notify>,
    },
    /// JSON lines (standalone mode); `sequence` numbers records locally.
    Lines {
        out: std::io::BufWriter<Box<dyn std::io::Write + Send>>,
        sequence: u64,
    },
}

impl Output {
    pub(crate) fn lines(out: Box<dyn std::io::Write + Send>) -> Output {
        Output::Lines {
            out: std::io::BufWriter::with_capacity(256 * 1024, out),
            sequence: 0,
        }
    }
}

/// A record waiting to be written: its time and payload, the ancestry JSON
/// lines carry, and what privacy changed in it.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) time: i64,
    pub(crate) payload: Payload,
    pub(crate) ancestry: Vec<ProcessRef>,
    pub(crate) redactions: Vec<Redaction>,
    pub(crate) pseudonymized: Vec<String>,
}

/// Time spent in one stage of the pipeline: (count, total ns, max ns).
type Timing = (u64, u64, u64);

pub(crate) struct Pipeline {
    pub(crate) enricher: Enricher,
    pub(crate) evaluator: Evaluator,
    pub(crate) reload: std::sync::mpsc::Receiver<Arc<vigil_rules::RuleSet>>,
    pub(crate) output: Output,
    /// What was last reported about the machine.
    pub(crate) host: vigil_proto::v1::HostInfo,
    pub(crate) detections: broadcast::Sender<Detection>,
    pub(crate) flush_every: Duration,
    pub(crate) batch_max: usize,
    pub(crate) sources: Vec<String>,
    pub(crate) degraded: Vec<String>,
    pub(crate) dropped: BTreeMap<String, u64>,
    /// Kernel-side totals per source: (delivered to us, dropped in the kernel).
    pub(crate) totals: BTreeMap<&'static str, (u64, u64)>,
    /// When each source's blind spot was last raised, and the drops it covered.
    pub(crate) blind_spots: BTreeMap<&'static str, (Instant, u64)>,
    /// CPU time used (ticks) and when, at the last health report.
    pub(crate) cpu_mark: (u64, Instant),
    /// Privacy settings: pseudonyms, optional data (redaction lives in the enricher).
    pub(crate) pseudonyms: Option<vigil_pseudonym::Pseudonymizer>,
    pub(crate) optional: bool,
    /// New settings when the tenant's policy changes.
    pub(crate) privacy: Receiver<crate::privacy::Settings>,
    /// Optional data: the features in use, time per stage since the last
    /// report, the previous run's crash.
    pub(crate) features: std::collections::HashMap<String, bool>,
    pub(crate) stages: BTreeMap<&'static str, Timing>,
    pub(crate) crash: Option<vigil_proto::v1::CrashReport>,
    /// The control socket's view: records spooled go to `inspect --follow`,
    /// and `status` is answered between two events.
    pub(crate) hooks: crate::control::Hooks,
    /// Detections and health the spool could not take (a disk error): written
    /// first at the next flush; at most [`MAX_HELD`].
    pub(crate) held: Vec<Pending>,
    /// Records the spool dropped (all reasons) at the last look.
    pub(crate) spool_drops_seen: u64,
}

/// Records of [`Priority::Keep`] held in memory while the spool's disk
/// refuses writes; beyond it they are counted as `priority_lost`.
const MAX_HELD: usize = 10_000;

/// Which records the spool keeps longest when its disk or capacity runs out:
/// what an analyst cannot get back (detections) and what says the sensor is
/// blind (health), and the machine's details.
pub(crate) fn priority(payload: &Payload) -> Priority {
    match payload {
        Payload::Detection(_) | Payload::Health(_) | Payload::Host(_) => Priority::Keep,
        _ => Priority::Bulk,
    }
}

/// The spool's own loss counts, by the reason health reports.
pub(crate) fn spool_losses(st: &vigil_spool::SpoolStats, losses: &mut BTreeMap<String, u64>) {
    for (reason, n) in [
        ("spool_full", st.dropped),
        ("disk_full", st.dropped_disk_full),
        ("priority_evicted", st.dropped_priority),
    ] {
        if n > 0 {
            *losses.entry(reason.into()).or_default() += n;
        }
    }
}

/// Identifies a rule set: BLAKE3 of its rule and correlation ids in order, and how many.
pub(crate) fn rules_version(set: &vigil_rules::RuleSet) -> (String, u32) {
    let mut h = blake3::Hasher::new();
    for r in set.rules() {
        h.update(r.id.as_bytes());
        h.update(b"\n");
    }
    for c in set.correlations() {
        h.update(c.id.as_bytes());
        h.update(b"\n");
    }
    let n = set.rules().len() + set.correlations().len();
    (
        hex::encode(&h.finalize().as_bytes()[..8]),
        u32::try_from(n).unwrap_or(u32::MAX),
    )
}

/// A blind spot is raised at most this often per source.
const BLIND_SPOT_EVERY: Duration = Duration::from_secs(60);

/// Detection raised when a source loses events: analysts must know what the sensor did not see.
fn blind_spot(source: &str, lost: u64) -> Detection {
    let description = if source == SPOOL {
        format!(
            "The sensor dropped {lost} unsent records (its spool's capacity or disk was full while the \
             server could not be reached): activity in that window may be missing. See the dropped \
             counts in its health; raise spool.capacity_mb or free disk space."
        )
    } else {
        format!(
            "The sensor's {source} source lost {lost} events (kernel ring buffer full or queue overflow): \
             activity in that window may be missing. Raise collect.ring_buffer_kb or look for an event storm."
        )
    };
    Detection {
        rule_id: "vigil-sensor-blind-spot".into(),
        rule_title: "Sensor blind spot: events lost".into(),
        level: "high".into(),
        tags: vec!["vigil.sensor".into()],
        description,
        ..Detection::default()
    }
}

/// The blind spot source of records dropped before they were sent.
const SPOOL: &str = "spool";

/// This process's CPU time in clock ticks (utime + stime).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Pipeline {
    pub(crate) fn run(
        mut self,
        rx: Receiver<RawEvent>,
        initial: Vec<(i64, Payload)>,
        stop: Arc<AtomicBool>,
    ) {
        let mut pending: Vec<Pending> = Vec::with_capacity(initial.len() + 1);
        for (t, p) in initial {
            self.admit(&mut pending, t, p);
        }
        // Health at start too: what runs and what fell back is known at once.
        let h = self.health();
        self.admit(&mut pending, now_ns(), Payload::Health(h));
        // Optional data at start too: the features in use, a crash of the last run.
        if self.optional {
            let d = self.diagnostics(Duration::ZERO);
            self.admit(&mut pending, now_ns(), Payload::Diagnostics(d));
        }
        let mut last_flush = Instant::now();
        let mut last_health = Instant::now();
        let mut staged = Vec::new();
        let mut stopping: Option<Instant> = None;
        loop {
            // Nothing waiting to be written: sleep until an event comes (or a
            // second passes), not every flush interval — an idle sensor stays idle.
            let wait = if pending.is_empty() {
                IDLE_WAIT
            } else {
                self.flush_every
                    .saturating_sub(last_flush.elapsed())
                    .max(Duration::from_millis(1))
            };
            let mut urgent = false;
            match rx.recv_timeout(wait) {
                Ok(ev) => urgent |= self.process(ev, &mut staged, &mut pending),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Ok(set) = self.reload.try_recv() {
                self.evaluator.replace(set);
                let (version, loaded) = rules_version(self.evaluator.rules());
                if version != self.host.rules_version {
                    self.host.rules_version = version;
                    self.host.rules_loaded = loaded;
                    self.admit(&mut pending, now_ns(), Payload::Host(self.host.clone()));
                }
            }
            if let Ok(s) = self.privacy.try_recv() {
                let pseudonyms_changed = s.pseudonyms.is_some() != self.pseudonyms.is_some();
                tracing::info!(
                    policy = s.policy_version,
                    pseudonyms = s.pseudonyms.is_some(),
                    optional = s.optional,
                    "Privacy settings applied"
                );
                self.enricher.set_redactor(s.redactor);
                self.pseudonyms = s.pseudonyms;
                let turned_on = s.optional && !self.optional;
                self.optional = s.optional;
                if turned_on {
                    let d = self.diagnostics(last_health.elapsed());
                    self.admit(&mut pending, now_ns(), Payload::Diagnostics(d));
                }
                self.features
                    .insert("pseudonyms".into(), self.pseudonyms.is_some());
                // The machine's description as it is now sent (pseudonymized or not).
                if pseudonyms_changed {
                    self.admit(&mut pending, now_ns(), Payload::Host(self.host.clone()));
                }
            }
            self.hooks.offer(&self);
            // Drain what is already queued without waiting.
            while pending.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(ev) => urgent |= self.process(ev, &mut staged, &mut pending),
                    Err(_) => break,
                }
            }
            if last_health.elapsed() >= HEALTH_EVERY {
                last_health = Instant::now();
                let h = self.health();
                self.admit(&mut pending, now_ns(), Payload::Health(h));
                if self.optional {
                    let d = self.diagnostics(HEALTH_EVERY);
                    self.admit(&mut pending, now_ns(), Payload::Diagnostics(d));
                } else {
                    self.stages.clear();
                }
                // The machine's description is re-sent whenever part of it changed.
                let mut host =
                    crate::collect::inventory::host_info(&self.host.machine_id, &self.host.boot_id);
                host.rules_version.clone_from(&self.host.rules_version);
                host.rules_loaded = self.host.rules_loaded;
                if host != self.host {
                    self.host = host.clone();
                    self.admit(&mut pending, now_ns(), Payload::Host(host));
                }
            }
            if urgent || pending.len() >= self.batch_max || last_flush.elapsed() >= self.flush_every
            {
                self.enricher.expire(now_ns());
                self.flush(&mut pending);
                last_flush = Instant::now();
            }
            // Stopping: the collectors drain the kernel and hang up; what they
            // sent is processed first. A collector that never hangs up is
            // given a few seconds, no more.
            if stop.load(Ordering::Relaxed) {
                let since = *stopping.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_GRACE {
                    tracing::warn!(
                        "Collectors still sending after the stop grace; flushing what arrived"
                    );
                    break;
                }
            }
        }
        // A last account at stop, so what was lost up to the end is said
        // (sent now, or at the next start).
        let h = self.health();
        self.admit(&mut pending, now_ns(), Payload::Health(h));
        self.flush(&mut pending);
    }

    /// Enriches and evaluates one event; true when it raised a detection.
    fn process(
        &mut self,
        ev: RawEvent,
        staged: &mut Vec<(i64, Payload)>,
        pending: &mut Vec<Pending>,
    ) -> bool {
        match &ev {
            RawEvent::Batch(_) => {
                let RawEvent::Batch(events) = ev else {
                    return false;
                };
                let mut raised = false;
                for e in events {
                    raised |= self.process(e, staged, pending);
                }
                return raised;
            }
            RawEvent::Lost { source, count } => {
                *self.dropped.entry(format!("{source}_lost")).or_default() += count.max(&1);
                tracing::warn!(source, count, "Kernel source lost events");
                return self.raise_blind_spot(source, *count.max(&1), pending);
            }
            &RawEvent::Totals {
                source,
                produced,
                dropped,
            } => {
                let before = self.totals.insert(source, (produced, dropped));
                let new = dropped.saturating_sub(before.map_or(0, |b| b.1));
                if new > 0 {
                    tracing::warn!(
                        source,
                        dropped = new,
                        "Kernel ring buffer full: events lost"
                    );
                    return self.raise_blind_spot(source, new, pending);
                }
                return false;
            }
            _ => {}
        }
        let keep_ancestry = matches!(self.output, Output::Lines { .. });
        let mut raised = false;
        let started = Instant::now();
        self.enricher.enrich(ev, staged);
        self.time("enrich", started);
        for (t, mut payload) in staged.drain(..) {
            let mut ancestry = match &payload {
                Payload::ProcessStart(p) if keep_ancestry => self.enricher.ancestry(p.pid),
                _ => Vec::new(),
            };
            // Rules see what is sent: secrets replaced (in enrich), names pseudonymized.
            let (redactions, pseudonymized) = self.prepare(&mut payload);
            if let Some(p) = &self.pseudonyms {
                for a in &mut ancestry {
                    crate::privacy::process_ref(p, a);
                }
            }
            let started = Instant::now();
            let detections = self.evaluator.evaluate(t, &payload, &ancestry);
            self.time("evaluate", started);
            pending.push(Pending {
                time: t,
                payload,
                ancestry,
                redactions,
                pseudonymized,
            });
            for d in detections {
                tracing::info!(rule = %d.rule_id, title = %d.rule_title, level = %d.level,
                    command_line = d.process.as_ref().map(|p| p.command_line.as_str()).unwrap_or(""), "Detection");
                let _ = self.detections.send(d.clone());
                self.admit(pending, t, Payload::Detection(d));
                raised = true;
            }
        }
        raised
    }

    /// Applies the privacy settings to a record about to be evaluated or
    /// written: what enrich redacted in it, and pseudonyms.
    fn prepare(&mut self, payload: &mut Payload) -> (Vec<Redaction>, Vec<String>) {
        let redactions = match &*payload {
            Payload::ProcessStart(s) => self.enricher.take_redactions(&s.guid),
            _ => Vec::new(),
        };
        let pseudonymized = match &self.pseudonyms {
            Some(p) => crate::privacy::pseudonymize(p, payload),
            None => Vec::new(),
        };
        (redactions, pseudonymized)
    }

    /// Queues a record that is not evaluated (host, health, detections, diagnostics).
    fn admit(&mut self, pending: &mut Vec<Pending>, time: i64, mut payload: Payload) {
        let (redactions, pseudonymized) = self.prepare(&mut payload);
        pending.push(Pending {
            time,
            payload,
            ancestry: Vec::new(),
            redactions,
            pseudonymized,
        });
    }

    fn time(&mut self, stage: &'static str, started: Instant) {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let t = self.stages.entry(stage).or_default();
        *t = (t.0 + 1, t.1.saturating_add(ns), t.2.max(ns));
    }

    /// Optional data: the performance trace since the last report, the
    /// features in use, the previous run's crash (once).
    fn diagnostics(&mut self, interval: Duration) -> SensorDiagnostics {
        SensorDiagnostics {
            interval_seconds: u32::try_from(interval.as_secs()).unwrap_or(u32::MAX),
            stages: std::mem::take(&mut self.stages)
                .into_iter()
                .map(|(stage, (count, total_ns, max_ns))| StageTiming {
                    stage: stage.to_owned(),
                    count,
                    total_ns,
                    max_ns,
                })
                .collect(),
            features: self.features.clone(),
            crash: self.crash.take(),
        }
    }

    /// Counts lost events of a source and, at most once a minute per source,
    /// raises a detection that says so (it reaches analysts like any alert).
    fn raise_blind_spot(
        &mut self,
        source: &'static str,
        lost: u64,
        pending: &mut Vec<Pending>,
    ) -> bool {
        let now = Instant::now();
        let entry = self
            .blind_spots
            .entry(source)
            .or_insert((now - BLIND_SPOT_EVERY, 0));
        entry.1 += lost;
        if now.duration_since(entry.0) < BLIND_SPOT_EVERY {
            return false;
        }
        let d = blind_spot(source, std::mem::take(&mut entry.1));
        entry.0 = now;
        let _ = self.detections.send(d.clone());
        self.admit(pending, now_ns(), Payload::Detection(d));
        true
    }

    pub(crate) fn flush(&mut self, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        // A detection names the event it matched by that event's sequence number.
        fn record(seq: u64, last_event_seq: &mut u64, p: Pending) -> Record {
            let Pending {
                time: time_unix_ns,
                mut payload,
                redactions,
                pseudonymized,
                ..
            } = p;
            match &mut payload {
                Payload::Detection(d) => {
                    for m in &mut d.matched {
                        if m.sequence == 0 {
                            m.sequence = *last_event_seq;
                        }
                    }
                }
                // Health and host details are not events a rule matches.
                p if priority(p) == Priority::Bulk => *last_event_seq = seq,
                _ => {}
            }
            Record {
                sequence: seq,
                time_unix_ns,
                level: crate::privacy::level_of(&payload) as i32,
                payload: Some(payload),
                redactions,
                pseudonymized,
            }
        }
        let mut last_event_seq = 0;
        let started = Instant::now();
        match &mut self.output {
            Output::Spool { spool, wake } => {
                if !self.held.is_empty() {
                    // Held first: older, and a detection among them names no event of this batch.
                    let mut all = std::mem::take(&mut self.held);
                    all.append(pending);
                    *pending = all;
                }
                // Copies of the few records to hold if the write fails.
                let keep: Vec<Pending> = pending
                    .iter()
                    .filter(|p| priority(&p.payload) == Priority::Keep)
                    .cloned()
                    .collect();
                let bulk = pending.len() - keep.len();
                let mut teed = self.hooks.tee_batch();
                let result = spool.append(pending.drain(..), |seq, p| {
                    let keep = priority(&p.payload);
                    let bytes = record(seq, &mut last_event_seq, p).encode_to_vec();
                    teed.keep(seq, &bytes);
                    (bytes, keep)
                });
                match result {
                    Ok(_) => {
                        self.hooks.teed(teed);
                        wake.notify_one()
                    }
                    Err(e) => {
                        // The disk refused even after the spool made room:
                        // bulk is lost and counted; detections and health
                        // wait in memory for the next write. Keep running.
                        let reason = match e {
                            vigil_spool::SpoolError::DiskFull => "disk_full_unspooled",
                            _ => "spool_error",
                        };
                        *self.dropped.entry(reason.into()).or_default() += bulk as u64;
                        let room = MAX_HELD.saturating_sub(self.held.len());
                        let over = keep.len().saturating_sub(room);
                        if over > 0 {
                            *self.dropped.entry("priority_lost".into()).or_default() += over as u64;
                        }
                        self.held.extend(keep.into_iter().take(room));
                        tracing::error!(
                            error = %e,
                            bulk_dropped = bulk,
                            held = self.held.len(),
                            "Could not write to the spool"
                        );
                    }
                }
                // Records dropped to make room are a blind spot like a kernel loss.
                let mut losses = BTreeMap::new();
                spool_losses(&spool.stats().unwrap_or_default(), &mut losses);
                let dropped = losses.values().sum::<u64>()
                    + ["disk_full_unspooled", "spool_error", "priority_lost"]
                        .iter()
                        .filter_map(|k| self.dropped.get(*k))
                        .sum::<u64>();
                if dropped > self.spool_drops_seen {
                    let new = dropped - self.spool_drops_seen;
                    self.spool_drops_seen = dropped;
                    self.raise_blind_spot(SPOOL, new, pending);
                }
            }
            Output::Lines { out, sequence } => {
                use std::io::Write;
                let mut failed = 0u64;
                let mut buf = Vec::with_capacity(64 * 1024);
                for mut p in pending.drain(..) {
                    *sequence += 1;
                    let ancestry = std::mem::take(&mut p.ancestry);
                    let r = record(*sequence, &mut last_event_seq, p);
                    buf.clear();
                    let lines = vigil_evaluate::write_json_lines(&r, &ancestry, &mut buf);
                    if out.write_all(&buf).is_err() {
                        failed += lines as u64;
                    }
                }
                if out.flush().is_err() {
                    failed += 1;
                }
                if failed > 0 {
                    *self.dropped.entry("output_error".into()).or_default() += failed;
                    tracing::error!(failed, "Could not write JSON lines");
                }
            }
        }
        self.time("write", started);
    }

    /// What was lost since start, by reason, but for the spool's own counts
    /// ([`spool_losses`]): health and status report these.
    pub(crate) fn losses(&self) -> BTreeMap<String, u64> {
        let mut losses = self.dropped.clone();
        if self.enricher.evicted > 0 {
            losses.insert("process_table_evicted".into(), self.enricher.evicted);
        }
        if self.evaluator.evictions() > 0 {
            losses.insert(
                "correlation_state_evicted".into(),
                self.evaluator.evictions(),
            );
        }
        for (&source, &(_, lost)) in &self.totals {
            if lost > 0 {
                losses.insert(format!("{source}_ring_full"), lost);
            }
        }
        losses
    }

    pub(crate) fn health(&mut self) -> SensorHealth {
        let stats = match &self.output {
            Output::Spool { spool, .. } => spool.stats().unwrap_or_default(),
            Output::Lines { .. } => Default::default(),
        };
        let mut losses = self.losses();
        spool_losses(&stats, &mut losses);
        let dropped: std::collections::HashMap<String, u64> = losses.into_iter().collect();
        let mut produced = std::collections::HashMap::new();
        let mut delivered = std::collections::HashMap::new();
        for (&source, &(ok, lost)) in &self.totals {
            produced.insert(source.to_owned(), ok + lost);
            delivered.insert(source.to_owned(), ok);
        }
        let ticks = cpu_ticks();
        let elapsed = self.cpu_mark.1.elapsed();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100)
            .max(1) as f64;
        let cpu_percent = if elapsed.as_secs_f64() > 0.0 {
            ticks.saturating_sub(self.cpu_mark.0) as f64 / hz / elapsed.as_secs_f64() * 100.0
        } else {
            0.0
        };
        self.cpu_mark = (ticks, Instant::now());
        SensorHealth {
            produced,
            delivered,
            cpu_percent,
            interval_seconds: u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX),
            dropped,
            spool_records: stats.records,
            spool_bytes: stats.bytes,
            sources: self.sources.clone(),
            degraded: self.degraded.clone(),
            rules_loaded: (self.evaluator.rules().len()
                + self.evaluator.rules().correlations().len()) as u64,
            rss_bytes: rss_bytes(),
            redacted: self
                .enricher
                .redacted
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub(crate) Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub(crate) fn pipeline(out: Shared) -> Pipeline {
        with_output(Output::lines(Box::new(out)))
    }

    pub(crate) fn with_output(output: Output) -> Pipeline {
        let hasher = vigil_hash::FileHasher::new(vigil_hash::HashConfig::default(), None);
        Pipeline {
            enricher: Enricher::new("m".into(), "b".into(), hasher),
            evaluator: Evaluator::new(
                Arc::new(vigil_rules::RuleSet::new()),
                vigil_rules::EngineConfig::default(),
            ),
            reload: std::sync::mpsc::channel().1,
            output,
            host: vigil_proto::v1::HostInfo::default(),
            detections: broadcast::channel(16).0,
            flush_every: Duration::from_millis(100),
            batch_max: 512,
            sources: Vec::new(),
            degraded: Vec::new(),
            dropped: BTreeMap::new(),
            totals: BTreeMap::new(),
            blind_spots: BTreeMap::new(),
            cpu_mark: (0, Instant::now()),
            pseudonyms: None,
            optional: false,
            privacy: std::sync::mpsc::channel().1,
            features: Default::default(),
            stages: BTreeMap::new(),
            crash: None,
            hooks: Default::default(),
            held: Vec::new(),
            spool_drops_seen: 0,
        }
    }

    fn exec(pid: u32, uid: u32, argv: &[&str]) -> RawEvent {
        RawEvent::Exec(crate::collect::ExecInfo {
            uid,
            euid: uid,
            cwd: b"/home/alice".to_vec(),
            ..crate::enrich::test_exec(pid, 1, 10, argv)
        })
    }

    /// Writes what `events` make through a pipeline with `settings`; the spooled records.
    fn spooled(settings: crate::privacy::Settings, events: Vec<RawEvent>) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&dir.path().join("s.redb"), 1 << 24).unwrap());
        let mut p = with_output(Output::Spool {
            spool: Arc::clone(&spool),
            wake: Arc::new(Notify::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        p.privacy = rx;
        tx.send(settings).unwrap();
        p.crash = Some(vigil_proto::v1::CrashReport {
            message: "boom".into(),
            ..Default::default()
        });
        let (etx, erx) = std::sync::mpsc::sync_channel(16);
        for e in events {
            etx.send(e).unwrap();
        }
        drop(etx);
        // The settings are taken in the loop: the events queued first still
        // find them applied, since the loop drains the channel after one event.
        let stop = Arc::new(AtomicBool::new(false));
        p.run(erx, Vec::new(), stop);
        spool
            .read_after(0, 10_000, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, b)| Record::decode(b.as_slice()).unwrap())
            .collect()
    }

    #[test]
    fn records_carry_their_level_what_was_redacted_and_pseudonymized() {
        let policy = vigil_proto::v1::SensorPolicy {
            version: 1,
            optional_data: false,
            pseudonymize: true,
            ..Default::default()
        };
        let cfg = crate::config::PrivacyConfig::default();
        let events = || {
            vec![
                exec(4_100_001, 1000, &["true", "warmup"]),
                exec(
                    4_100_002,
                    1000,
                    &["mysql", "-pS3cret!", "--password=hunter2", "/home/alice/db"],
                ),
            ]
        };
        let records = spooled(
            crate::privacy::settings(&cfg, &policy, Some([3; 32])),
            events(),
        );
        let start = records
            .iter()
            .find_map(|r| match &r.payload {
                Some(Payload::ProcessStart(s)) if s.pid == 4_100_002 => Some((r, s)),
                _ => None,
            })
            .unwrap();
        let (r, s) = start;
        assert_eq!(r.level, vigil_proto::v1::DataLevel::Required as i32);
        let mut rules: Vec<(&str, &str, u32)> = r
            .redactions
            .iter()
            .map(|x| (x.field.as_str(), x.rule.as_str(), x.count))
            .collect();
        rules.sort();
        assert_eq!(
            rules,
            [("argv", "option_value", 1), ("argv", "p_attached", 1)]
        );
        assert!(!s.command_line.contains("hunter2") && !s.command_line.contains("S3cret"));
        assert_eq!(
            r.pseudonymized,
            ["user_name", "argv", "command_line", "cwd"]
        );
        assert!(s.user_name.starts_with("pnu-"), "{}", s.user_name);
        assert!(!s.command_line.contains("alice"), "{}", s.command_line);
        // Every record has its level; optional data is off: no diagnostics.
        assert!(
            records
                .iter()
                .all(|r| r.level == vigil_proto::v1::DataLevel::Required as i32)
        );
        assert!(
            !records
                .iter()
                .any(|r| matches!(r.payload, Some(Payload::Diagnostics(_))))
        );
    }

    #[test]
    fn optional_diagnostics_are_sent_only_when_turned_on() {
        let on = vigil_proto::v1::SensorPolicy {
            version: 1,
            optional_data: true,
            ..Default::default()
        };
        let cfg = crate::config::PrivacyConfig::default();
        let mut p = with_output(Output::lines(Box::new(Shared::default())));
        let (mut staged, mut pending) = (Vec::new(), Vec::new());
        p.process(exec(4_100_010, 0, &["true"]), &mut staged, &mut pending);
        assert!(p.stages.contains_key("enrich") && p.stages.contains_key("evaluate"));
        p.crash = Some(vigil_proto::v1::CrashReport {
            message: "boom".into(),
            ..Default::default()
        });
        let d = p.diagnostics(Duration::from_secs(60));
        assert_eq!(d.crash.unwrap().message, "boom");
        assert!(
            d.stages
                .iter()
                .any(|s| s.stage == "evaluate" && s.count == 1)
        );
        assert!(p.stages.is_empty(), "each report covers its own interval");
        assert!(
            p.diagnostics(Duration::from_secs(60)).crash.is_none(),
            "a crash is reported once"
        );
        assert_eq!(
            crate::privacy::level_of(&Payload::Diagnostics(Default::default())),
            vigil_proto::v1::DataLevel::Optional
        );
        // Through the whole pipeline: off by default, on by the policy, off
        // again when this device's configuration says so.
        let s = crate::privacy::settings(&cfg, &on, None);
        assert!(s.optional);
        let no = crate::config::PrivacyConfig {
            optional_data: Some(false),
            ..Default::default()
        };
        assert!(!crate::privacy::settings(&no, &on, None).optional);
    }

    #[test]
    fn kernel_drops_raise_one_blind_spot_a_minute_and_reach_health() {
        let out = Shared::default();
        let mut p = pipeline(out.clone());
        let (mut staged, mut pending) = (Vec::new(), Vec::new());
        let totals = |produced, dropped| RawEvent::Totals {
            source: "ebpf_file",
            produced,
            dropped,
        };
        assert!(!p.process(totals(100, 0), &mut staged, &mut pending));
        assert!(pending.is_empty(), "no drop, no detection");
        // Drops raise a detection at once (an urgent flush) ...
        assert!(p.process(totals(150, 7), &mut staged, &mut pending));
        // ... and more drops within the minute only add to the next one.
        assert!(!p.process(totals(160, 9), &mut staged, &mut pending));
        let blind: Vec<&Detection> = pending
            .iter()
            .filter_map(|p| match &p.payload {
                Payload::Detection(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(blind.len(), 1);
        assert_eq!(blind[0].rule_id, "vigil-sensor-blind-spot");
        assert!(
            blind[0].description.contains("lost 7 events"),
            "{}",
            blind[0].description
        );
        assert_eq!(
            p.blind_spots["ebpf_file"].1, 2,
            "the 2 later drops wait for the next"
        );
        let h = p.health();
        assert_eq!(h.produced["ebpf_file"], 169);
        assert_eq!(h.delivered["ebpf_file"], 160);
        assert_eq!(h.dropped["ebpf_file_ring_full"], 9);
        p.flush(&mut pending);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("vigil-sensor-blind-spot"), "{text}");
    }
}
