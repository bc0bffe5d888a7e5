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

/// The `vigil-sensor` binary of this workspace, built if it is not yet.
fn sensor_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "vigil-sensor", "--bin", "vigil-sensor"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building vigil-sensor");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("debug/vigil-sensor")
}

/// (b) The sensor process is killed with SIGKILL mid-stream ten times and
/// started again, while files keep being made: the server holds the device's
/// sequence numbers 1 to its high-water mark each exactly once, and every
/// record the sensor spooled reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_killed_ten_times_loses_and_duplicates_nothing_it_spooled() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let name = "a_sensor_killed_ten_times_loses_and_duplicates_nothing_it_spooled";
    if !enabled(name) {
        return;
    }
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let bin = sensor_binary();
    let server = TestServer::start().await;
    let (_, enroll) = server.tenant("acme", vigil_store::Role::Analyst);
    let data = server.dir.path().join("killed-sensor");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let config = server.dir.path().join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[server]\nendpoint = {:?}\nca_file = {:?}\nserver_name = \"localhost\"\n\
             [enrollment]\ntoken = {enroll:?}\n[rules]\npaths = [{rules:?}]\n[collect]\ninventory = false\n",
            server.endpoint(),
            server.ca_file(),
        ),
    )
    .unwrap();
    let start = || {
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let files = tempfile::Builder::new()
        .prefix("vigil-kill-")
        .tempdir_in("/tmp")
        .unwrap();
    // About 2,000 file records a second, from one shell.
    let mut maker = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while true; do j=0; while [ $j -lt 100 ]; do : > {}/f$i-$j; j=$((j+1)); done; i=$((i+1)); sleep 0.05; done",
            files.path().display()
        ))
        .spawn()
        .unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..10 {
        let mut sensor = start();
        // Mid-stream: up for 1.5 to 3.5 s, then killed without warning.
        tokio::time::sleep(Duration::from_millis(1500 + next() % 2000)).await;
        kill(Pid::from_raw(sensor.id() as i32), Signal::SIGKILL).unwrap();
        let _ = sensor.wait();
        eprintln!("round {round}: killed");
    }
    let _ = maker.kill();
    let _ = maker.wait();
    // Once more, to the end: it sends what it spooled, then stops cleanly.
    let mut sensor = start();
    let store = server.control.tenant_store("acme").unwrap();
    let device = loop {
        let devices = server.control.devices("acme").unwrap();
        if let Some(d) = devices.first() {
            break d.device_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut last = (0, Instant::now());
    loop {
        let hw = store.high_water(&device).unwrap();
        if hw != last.0 {
            last = (hw, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    kill(Pid::from_raw(sensor.id() as i32), Signal::SIGTERM).unwrap();
    let _ = sensor.wait();
    let high = store.high_water(&device).unwrap();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let part = store.records(&device, after, 10_000).unwrap();
        let Some(&(l, _)) = part.last() else { break };
        seqs.extend(part.iter().map(|r| r.0));
        after = l;
    }
    let spool = vigil_spool::SpoolView::open(&data.join("spool.redb")).unwrap();
    let st = spool.stats().unwrap();
    eprintln!(
        "server holds {} records, high-water mark {high}; spool: {} left, next {}",
        seqs.len(),
        st.records,
        st.next_seq
    );
    assert!(
        high > 1000,
        "the sensor sent too little to prove anything: {high}"
    );
    assert_eq!(seqs, (1..=high).collect::<Vec<_>>(), "a gap or a duplicate");
    // Everything the sensor ever spooled is on the server: the numbers it
    // handed out end at the server's mark (what it still holds is above it).
    let left = spool.read_after(high, usize::MAX, usize::MAX).unwrap();
    assert_eq!(
        st.next_seq - 1,
        high + left.len() as u64,
        "spooled records missing on the server"
    );
    server.stop().await;
}
