//! Faults through the real system (issue 16, item 1): the kernel sensor, a
//! real server over mutual TLS, real files with fsync. Each checks that every
//! record the kernel reported reaches the server exactly once.
//!
//! Slow (a minute or more each): they run when `VIGIL_FAULT_TESTS=1` (set by
//! `.ci/run`), and need root for the kernel sources; otherwise they say why
//! and pass.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::{TestServer, sensor_config, with_token};
use tokio_stream::StreamExt;
use vigil_proto::v1::record::Payload;
use vigil_proto::v1::{FieldCondition, MatchOp, SearchEventsRequest, hunt_client::HuntClient};

fn enabled(name: &str) -> bool {
    if std::env::var_os("VIGIL_FAULT_TESTS").is_none() {
        eprintln!("SKIPPED {name}: slow; set VIGIL_FAULT_TESTS=1 (as .ci/run does)");
        return false;
    }
    true
}

/// Paths of the file records the server holds under `dir`, each as often
/// as it is stored.
async fn stored_paths(
    hunt: &mut HuntClient<tonic::transport::Channel>,
    token: &str,
    dir: &str,
) -> Vec<String> {
    let mut pages = hunt
        .search_events(with_token(
            SearchEventsRequest {
                kind: "file".into(),
                conditions: vec![FieldCondition {
                    field: "TargetFilename".into(),
                    op: MatchOp::Prefix as i32,
                    value: format!("{dir}/"),
                }],
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        for r in p.unwrap().records {
            if let Some(Payload::File(f)) = r.record.and_then(|r| r.payload) {
                out.push(f.path.map(|p| p.text).unwrap_or_default());
            }
        }
    }
    out
}

/// (a) The server is down for 60 s while the sensor records 100,000 file
/// creations; once it is back, every one arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_for_a_minute_loses_and_duplicates_nothing() {
    let name = "a_server_down_for_a_minute_loses_and_duplicates_nothing";
    if !enabled(name) {
        return;
    }
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    const N: usize = 100_000;
    let server = TestServer::start().await;
    let (analyst, enroll) = server.tenant("acme", vigil_store::Role::Analyst);
    let mut cfg = sensor_config(&server, &enroll);
    // Room for the burst in the kernel's ring: the test is about the outage.
    cfg.collect.ring_buffer_kb = 16 * 1024;
    cfg.spool.capacity_mb = 1024;
    let Some(sensor) = support::start_kernel_sensor(name, cfg).await else {
        return;
    };
    if !sensor.sources.iter().any(|s| s.contains("eBPF")) {
        eprintln!(
            "SKIPPED {name}: file events need the eBPF collector: {:?}",
            sensor.degraded
        );
        sensor.shutdown().await;
        return;
    }
    let files = tempfile::Builder::new()
        .prefix("vigil-outage-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = files.path().display().to_string();
    let down = server.pause().await;
    let outage = Instant::now();
    // One shell makes the files (no exec per file): one create record each.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {N} ]; do : > {dir}/f$i; i=$((i+1)); done"
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let made = outage.elapsed();
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(made)).await;
    let server = down.resume().await;
    let back = Instant::now();
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let paths = loop {
        let paths = stored_paths(&mut hunt, &analyst, &dir).await;
        if paths.len() >= N || back.elapsed() > Duration::from_secs(240) {
            break paths;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Let a duplicate show itself if re-sending would store one twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paths = if paths.len() >= N {
        stored_paths(&mut hunt, &analyst, &dir).await
    } else {
        paths
    };
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    eprintln!(
        "{N} files made in {made:?} with the server down; {} stored ({} distinct) {:?} after it returned",
        paths.len(),
        unique.len(),
        back.elapsed()
    );
    let health = sensor.uplink_status();
    sensor.shutdown().await;
    assert_eq!(unique.len(), N, "records lost (uplink: {health:?})");
    assert_eq!(paths.len(), N, "records stored more than once");
    server.stop().await;
}
