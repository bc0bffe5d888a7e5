//! The sensor's data path on one thread: raw events → enrich → evaluate →
//! spool. Batches are committed to the spool (fsync) every flush interval or
//! batch size, whichever comes first; then the uplink is woken.

use crate::collect::RawEvent;
use crate::enrich::Enricher;
use crate::evaluate::Evaluator;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use vigil_proto::v1::{Detection, Record, SensorHealth, record::Payload};
use vigil_spool::Spool;

/// How often a SensorHealth record is written.
const HEALTH_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Pipeline {
    pub(crate) enricher: Enricher,
    pub(crate) evaluator: Evaluator,
    pub(crate) reload: std::sync::mpsc::Receiver<Arc<vigil_rules::RuleSet>>,
    pub(crate) spool: Arc<Spool>,
    pub(crate) wake_uplink: Arc<Notify>,
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
}

/// A blind spot is raised at most this often per source.
const BLIND_SPOT_EVERY: Duration = Duration::from_secs(60);

/// Detection raised when a source loses events: analysts must know what the sensor did not see.
fn blind_spot(source: &str, lost: u64) -> Detection {
    Detection {
        rule_id: "vigil-sensor-blind-spot".into(),
        rule_title: "Sensor blind spot: events lost".into(),
        level: "high".into(),
        tags: vec!["vigil.sensor".into()],
        description: format!(
            "The sensor's {source} source lost {lost} events (kernel ring buffer full or queue overflow): \
             activity in that window may be missing. Raise collect.ring_buffer_kb or look for an event storm."
        ),
        ..Detection::default()
    }
}

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
        let mut pending: Vec<(i64, Payload)> = initial;
        let mut last_flush = Instant::now();
        let mut last_health = Instant::now();
        let mut staged = Vec::new();
        loop {
            let wait = self
                .flush_every
                .saturating_sub(last_flush.elapsed())
                .max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(ev) => self.process(ev, &mut staged, &mut pending),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut pending);
                    break;
                }
            }
            if let Ok(set) = self.reload.try_recv() {
                self.evaluator.replace(set);
            }
            // Drain what is already queued without waiting.
            while pending.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(ev) => self.process(ev, &mut staged, &mut pending),
                    Err(_) => break,
                }
            }
            if last_health.elapsed() >= HEALTH_EVERY {
                last_health = Instant::now();
                pending.push((now_ns(), Payload::Health(self.health())));
            }
            if pending.len() >= self.batch_max || last_flush.elapsed() >= self.flush_every {
                self.enricher.expire(now_ns());
                self.flush(&mut pending);
                last_flush = Instant::now();
            }
            if stop.load(Ordering::Relaxed) && rx.try_recv().is_err() {
                self.flush(&mut pending);
                break;
            }
        }
    }

    fn process(
        &mut self,
        ev: RawEvent,
        staged: &mut Vec<(i64, Payload)>,
        pending: &mut Vec<(i64, Payload)>,
    ) {
        match &ev {
            RawEvent::Lost { source, count } => {
                *self.dropped.entry(format!("{source}_lost")).or_default() += count.max(&1);
                tracing::warn!(source, count, "Kernel source lost events");
                self.raise_blind_spot(source, *count.max(&1), pending);
                return;
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
                    self.raise_blind_spot(source, new, pending);
                }
                return;
            }
            _ => {}
        }
        self.enricher.enrich(ev, staged);
        for (t, payload) in staged.drain(..) {
            let ancestry = match &payload {
                Payload::ProcessStart(p) => self.enricher.ancestry(p.pid),
                _ => Vec::new(),
            };
            let detections = self.evaluator.evaluate(t, &payload, &ancestry);
            pending.push((t, payload));
            for d in detections {
                tracing::info!(rule = %d.rule_id, title = %d.rule_title, level = %d.level,
                    command_line = d.process.as_ref().map(|p| p.command_line.as_str()).unwrap_or(""), "Detection");
                let _ = self.detections.send(d.clone());
                pending.push((t, Payload::Detection(d)));
            }
        }
    }

    /// Counts lost events of a source and, at most once a minute per source,
    /// raises a detection that says so (it reaches analysts like any alert).
    fn raise_blind_spot(
        &mut self,
        source: &'static str,
        lost: u64,
        pending: &mut Vec<(i64, Payload)>,
    ) {
        let now = Instant::now();
        let entry = self
            .blind_spots
            .entry(source)
            .or_insert((now - BLIND_SPOT_EVERY, 0));
        entry.1 += lost;
        if now.duration_since(entry.0) < BLIND_SPOT_EVERY {
            return;
        }
        let d = blind_spot(source, std::mem::take(&mut entry.1));
        entry.0 = now;
        let _ = self.detections.send(d.clone());
        pending.push((now_ns(), Payload::Detection(d)));
    }

    fn flush(&mut self, pending: &mut Vec<(i64, Payload)>) {
        if pending.is_empty() {
            return;
        }
        let mut last_event_seq = 0;
        let result = self
            .spool
            .append(pending.drain(..), |seq, (time_unix_ns, mut payload)| {
                match &mut payload {
                    Payload::Detection(d) => {
                        for m in &mut d.matched {
                            if m.sequence == 0 {
                                m.sequence = last_event_seq;
                            }
                        }
                    }
                    _ => last_event_seq = seq,
                }
                Record {
                    sequence: seq,
                    time_unix_ns,
                    payload: Some(payload),
                }
                .encode_to_vec()
            });
        match result {
            Ok(_) => self.wake_uplink.notify_one(),
            Err(e) => {
                // The disk refused (full, I/O error): count what is lost, keep running.
                *self.dropped.entry("spool_error".into()).or_default() += 1;
                tracing::error!(error = %e, "Could not write to the spool; batch dropped");
            }
        }
    }

    fn health(&mut self) -> SensorHealth {
        let stats = self.spool.stats().unwrap_or_default();
        let mut dropped: std::collections::HashMap<String, u64> =
            self.dropped.clone().into_iter().collect();
        if stats.dropped > 0 {
            dropped.insert("spool_full".into(), stats.dropped);
        }
        if self.enricher.evicted > 0 {
            dropped.insert("process_table_evicted".into(), self.enricher.evicted);
        }
        if self.evaluator.evictions() > 0 {
            dropped.insert(
                "correlation_state_evicted".into(),
                self.evaluator.evictions(),
            );
        }
        let mut produced = std::collections::HashMap::new();
        let mut delivered = std::collections::HashMap::new();
        for (&source, &(ok, lost)) in &self.totals {
            produced.insert(source.to_owned(), ok + lost);
            delivered.insert(source.to_owned(), ok);
            if lost > 0 {
                dropped.insert(format!("{source}_ring_full"), lost);
            }
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
