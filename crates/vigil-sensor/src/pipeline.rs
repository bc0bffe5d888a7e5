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
        if let RawEvent::Lost { source, count } = &ev {
            *self.dropped.entry(format!("{source}_lost")).or_default() += count.max(&1);
            tracing::warn!(source, count, "Kernel source lost events");
            return;
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

    fn health(&self) -> SensorHealth {
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
        SensorHealth {
            dropped,
            spool_records: stats.records,
            spool_bytes: stats.bytes,
            sources: self.sources.clone(),
            degraded: self.degraded.clone(),
            rules_loaded: (self.evaluator.rules().len()
                + self.evaluator.rules().correlations().len()) as u64,
            rss_bytes: rss_bytes(),
            ..SensorHealth::default()
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
