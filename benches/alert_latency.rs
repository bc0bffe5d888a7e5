//! Whole-system latency: from spawning a process that matches a rule to the
//! alert arriving at an analyst's `WatchAlerts` stream — kernel (eBPF, or the
//! audit fallback) → enrich → rule → spool (fsync) → gRPC over mutual TLS →
//! tenant store (fsync) → alert. Needs root; prints why and exits 0 otherwise.
//!
//! `cargo bench --bench alert_latency` — both collectors, one after the other.
//! Knobs: ITERATIONS (per collector, default 200), COLLECT=ebpf|audit|both
//! (default both), GAP_MS (pause between runs, default 20, so a run never
//! starts in step with the previous one). Besides the totals it prints each
//! stage's share: spawn → exec (the event's kernel time), → the sensor raising
//! the detection, → the server receiving it, → the analyst's stream.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use vigil_proto::v1::WatchAlertsRequest;

/// One run: spawn → alert, and its parts (ns, wall clock; kernel event time
/// from the record, server receipt from the alert).
struct Sample {
    total: Duration,
    stages: [i64; 4],
}

const STAGES: [&str; 4] = [
    "spawn: spawn → exec (kernel event time)",
    "sensor: exec → detection raised",
    "uplink: raised → server received (spool fsync, gRPC)",
    "server: received → on WatchAlerts (fsync, fan-out)",
];

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(_turn) = support::kernel_test("alert_latency").await else {
        return;
    };
    let iterations: usize = env_or("ITERATIONS", 200).max(1);
    let gap = Duration::from_millis(env_or("GAP_MS", 20));
    let collect = std::env::var("COLLECT").unwrap_or_else(|_| "both".into());
    let modes: &[bool] = match collect.as_str() {
        "ebpf" => &[true],
        "audit" => &[false],
        _ => &[true, false],
    };
    for &ebpf in modes {
        run(ebpf, iterations, gap).await;
    }
}

/// One server and one sensor (eBPF or the audit fallback), `iterations` timed runs.
async fn run(ebpf: bool, iterations: usize, gap: Duration) {
    let server = support::TestServer::start().await;
    server
        .control
        .create_tenant(Some("bench"), "Bench", "local", 90)
        .expect("tenant");
    let token = server
        .control
        .create_api_token(
            Some("bench"),
            vigil_store::Role::Analyst,
            "bench",
            0,
            "test",
        )
        .map(|t| t.0)
        .expect("api token");
    let enroll = server
        .control
        .create_enrollment_token("bench", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .expect("token");
    let mut cfg = support::sensor_config(&server, &enroll);
    cfg.collect.ebpf = ebpf;
    let Some(sensor) = support::start_kernel_sensor("alert_latency", cfg).await else {
        server.stop().await;
        return;
    };
    let collector = if sensor.sources.iter().any(|s| s.contains("eBPF")) {
        "eBPF"
    } else {
        "audit"
    };
    if ebpf && collector != "eBPF" {
        eprintln!(
            "alert_latency: eBPF unavailable, measuring audit: {:?}",
            sensor.degraded
        );
    }
    let mut alerts = server.alerts().await;
    let mut watch = alerts
        .watch_alerts(support::with_token(WatchAlertsRequest::default(), &token))
        .await
        .expect("watch")
        .into_inner();
    // Let the uplink connect before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // When the sensor's pipeline raised each detection, by pid (its local broadcast).
    let raised = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<u32, i64>::new()));
    let mut local = sensor.detections();
    let listener = {
        let raised = std::sync::Arc::clone(&raised);
        tokio::spawn(async move {
            while let Ok(d) = local.recv().await {
                if let Some(p) = d.process {
                    lock(&raised).insert(p.pid, now_ns());
                }
            }
        })
    };
    let mut samples: Vec<Sample> = Vec::with_capacity(iterations);
    let mut others = 0usize;
    for _ in 0..iterations {
        tokio::time::sleep(gap).await;
        let (t0, wall0) = (Instant::now(), now_ns());
        let child = std::process::Command::new("cat")
            .arg("/etc/shadow")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cat spawns");
        let pid = child.id();
        // Reaped off the timed path: waiting on it must not delay reading the stream.
        let reaper = tokio::task::spawn_blocking(move || child.wait_with_output());
        // The alert for this very process (others, e.g. from background activity, are skipped).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let alert = loop {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(Ok(a))) if a.process.as_ref().is_some_and(|p| p.pid == pid) => break a,
                Ok(Some(Ok(_))) => others += 1,
                other => panic!("no alert for pid {pid} within 10 s: {other:?}"),
            }
        };
        let total = t0.elapsed();
        let arrived = now_ns();
        let raised = lock(&raised).remove(&pid).unwrap_or(alert.received_unix_ns);
        samples.push(Sample {
            total,
            stages: [
                alert.time_unix_ns - wall0,
                raised - alert.time_unix_ns,
                alert.received_unix_ns - raised,
                arrived - alert.received_unix_ns,
            ],
        });
        let out = reaper.await.expect("reaper").expect("cat waits");
        assert!(out.status.success(), "cat /etc/shadow: {}", out.status);
    }
    listener.abort();
    samples.sort_by_key(|s| s.total);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |p: f64| ((samples.len() - 1) as f64 * p).round() as usize;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "alert_latency [{collector}]: {} runs, min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({others} other alerts skipped; load average {})",
        samples.len(),
        ms(samples[0].total),
        ms(samples[at(0.5)].total),
        ms(samples[at(0.9)].total),
        ms(samples[at(0.99)].total),
        ms(samples[samples.len() - 1].total),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Where the time goes: each stage's own distribution, then the slowest runs.
    for (i, name) in STAGES.iter().enumerate() {
        let mut v: Vec<i64> = samples.iter().map(|s| s.stages[i]).collect();
        v.sort_unstable();
        let f = |p: f64| v[at(p)] as f64 / 1e6;
        println!(
            "  {name:<44} p50 {:6.2} ms, p90 {:6.2} ms, p99 {:6.2} ms, max {:6.2} ms",
            f(0.5),
            f(0.9),
            f(0.99),
            v[v.len() - 1] as f64 / 1e6
        );
    }
    for s in samples.iter().rev().take(3) {
        println!(
            "  slow run {:.1} ms: {}",
            ms(s.total),
            STAGES
                .iter()
                .zip(s.stages)
                .map(|(n, d)| format!("{} {:.1}", n.split(' ').next().unwrap_or(n), d as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    sensor.shutdown().await;
    server.stop().await;
}
