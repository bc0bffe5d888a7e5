//! Whole-system latency: from spawning a process that matches a rule to the
//! alert arriving at an analyst's `WatchAlerts` stream — kernel (audit) →
//! enrich → rule → spool (fsync) → gRPC over mutual TLS → tenant store (fsync)
//! → alert. Needs root (audit netlink); prints why and exits 0 otherwise.
//!
//! `cargo bench --bench alert_latency` (ITERATIONS env var, default 50).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use vigil_proto::v1::WatchAlertsRequest;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(_turn) = support::kernel_test("alert_latency").await else {
        return;
    };
    let iterations: usize = std::env::var("ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let server = support::TestServer::start().await;
    server
        .control
        .create_tenant("bench", "Bench")
        .expect("tenant");
    let token = server
        .control
        .create_api_token("bench", "bench")
        .expect("api token");
    let enroll = server
        .control
        .create_enrollment_token("bench", Duration::from_secs(60))
        .expect("token");
    let cfg = support::sensor_config(&server, &enroll);
    let Some(sensor) = support::start_audit_sensor("alert_latency", cfg).await else {
        return;
    };
    let mut alerts = server.alerts().await;
    let mut watch = alerts
        .watch_alerts(support::with_token(WatchAlertsRequest::default(), &token))
        .await
        .expect("watch")
        .into_inner();
    // Let the uplink connect before timing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let status = std::process::Command::new("cat")
            .arg("/etc/shadow")
            .stdout(std::process::Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()));
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Ok(_))) => samples.push(t0.elapsed()),
            other => panic!("no alert within 10 s: {other:?}"),
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "alert_latency: {} runs, min {:.1} ms, median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        samples.len(),
        samples[0].as_secs_f64() * 1e3,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    sensor.shutdown().await;
    server.stop().await;
}
