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
use support::{SmallDisk, TestServer, sensor_config, with_token};
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

/// The `vigil-server` binary of this workspace, built if it is not yet.
fn server_binary() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "vigil-server", "--bin", "vigil-server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building vigil-server");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("debug/vigil-server")
}

/// A batch of 100 records from `first`.
fn batch(id: u64, first: u64) -> vigil_proto::v1::RecordBatch {
    vigil_proto::v1::RecordBatch {
        batch_id: id,
        records: (first..first + 100)
            .map(|seq| vigil_proto::v1::Record {
                sequence: seq,
                time_unix_ns: 1_700_000_000_000_000_000 + seq as i64,
                payload: Some(Payload::ProcessStart(vigil_proto::v1::ProcessStart {
                    guid: format!("g-{seq}"),
                    pid: seq as u32,
                    command_line: format!("/usr/bin/true record-{seq} {}", "z".repeat(200)),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect(),
    }
}

/// (c) The server process is killed with SIGKILL at random points of a
/// steady ingest, twenty times, and started again: each time its store opens
/// (the server serves again), and at the end every record it acknowledged is
/// there, each once. Needs no kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_twenty_times_keeps_every_acknowledged_record() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let name = "a_server_killed_twenty_times_keeps_every_acknowledged_record";
    if !enabled(name) {
        return;
    }
    let bin = server_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("server");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\n"),
    )
    .unwrap();
    let cfg =
        vigil_server::ServerConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), data.clone());
    let enroll = {
        let store = vigil_server::open_store(&cfg, &Default::default()).unwrap();
        store
            .create_tenant(Some("acme"), "acme", "local", 90)
            .unwrap();
        store
            .create_enrollment_token("acme", Duration::from_secs(3600), "test")
            .unwrap()
            .0
    };
    let start = || {
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let ca_file = vigil_server::pki::PkiPaths::new(&data).ca_cert();
    let channel = move |identity: Option<tonic::transport::Identity>| {
        let ca_file = ca_file.clone();
        async move {
            let ca = std::fs::read_to_string(&ca_file).ok()?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            if let Some(id) = identity {
                tls = tls.identity(id);
            }
            tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .ok()?
                .tls_config(tls)
                .ok()?
                .connect()
                .await
                .ok()
        }
    };
    let up = async |channel: &dyn Fn() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<tonic::transport::Channel>> + Send>,
    >| {
        let t = Instant::now();
        loop {
            if let Some(c) = channel().await {
                return c;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the server did not come back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut server = start();
    let anon = {
        let ch = channel.clone();
        move || -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<tonic::transport::Channel>> + Send>> {
            Box::pin(ch(None))
        }
    };
    let (key, csr) = vigil_pki::device_key_and_csr("kill-test").unwrap();
    let resp = vigil_proto::v1::ingest_client::IngestClient::new(up(&anon).await)
        .enroll(vigil_proto::v1::EnrollRequest {
            enrollment_token: enroll,
            csr_pem: csr,
            host: None,
        })
        .await
        .unwrap()
        .into_inner();
    let device = resp.device_id.clone();
    let identity = tonic::transport::Identity::from_pem(resp.certificate_pem, key);
    // The sender: a batch at a time, re-sent from the last acknowledgement
    // after every broken stream, as the sensor's uplink does.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop, channel) = (Arc::clone(&acked), Arc::clone(&stop), channel.clone());
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(ch) = channel(Some(identity.clone())).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut client = vigil_proto::v1::ingest_client::IngestClient::new(ch);
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let Ok(acks) = client
                    .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                else {
                    continue;
                };
                let mut acks = acks.into_inner();
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    if tx
                        .send(batch(id, acked.load(Ordering::Relaxed) + 1))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), acks.next()).await {
                        Ok(Some(Ok(a))) => acked.fetch_max(a.stored_through, Ordering::Relaxed),
                        _ => break,
                    };
                }
            }
        })
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(
            300 + {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % 1200
            },
        ))
        .await;
        kill(Pid::from_raw(server.id() as i32), Signal::SIGKILL).unwrap();
        let _ = server.wait();
        let before = acked.load(Ordering::Relaxed);
        server = start();
        // It opens its store and serves again.
        up(&anon).await;
        eprintln!("round {round}: killed with {before} acknowledged; serving again");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    kill(Pid::from_raw(server.id() as i32), Signal::SIGKILL).unwrap();
    let _ = server.wait();
    let acked = acked.load(Ordering::Relaxed);
    let store = vigil_server::open_store(&cfg, &Default::default()).unwrap();
    let tenant = store.tenant_store("acme").unwrap();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let part = tenant.records(&device, after, 10_000).unwrap();
        let Some(&(l, _)) = part.last() else { break };
        seqs.extend(part.iter().map(|r| r.0));
        after = l;
    }
    eprintln!(
        "{acked} acknowledged; the store holds {} (mark {})",
        seqs.len(),
        tenant.high_water(&device).unwrap()
    );
    assert!(acked > 1000, "too little was sent to prove anything");
    assert!(seqs.len() as u64 >= acked, "acknowledged records missing");
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "a gap or a duplicate"
    );
}

/// (d) The server's disk fills up: ingest refuses with RESOURCE_EXHAUSTED
/// saying so, stores nothing of the refused batch and keeps answering
/// analysts; once space returns, the same running server (its store reopens
/// the files redb refused to use after the failed write, in place) takes the
/// batch sent again, each record once, and answers analysts throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_disk_refuses_clearly_and_takes_everything_once_space_returns() {
    let name = "a_full_server_disk_refuses_clearly_and_takes_everything_once_space_returns";
    let Some(disk) = SmallDisk::new(name, 256) else {
        return;
    };
    let data = disk.path().join("server");
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let (analyst, _) = server.tenant("acme", vigil_store::Role::Analyst);
    let (identity, device) = support::enroll(&server, "acme").await;
    let mut ingest = server.ingest(Some(identity)).await;
    let send = async |ingest: &mut vigil_proto::v1::ingest_client::IngestClient<
        tonic::transport::Channel,
    >,
                      b: vigil_proto::v1::RecordBatch| {
        let mut acks = ingest
            .stream(tokio_stream::iter(vec![b]))
            .await?
            .into_inner();
        acks.next()
            .await
            .unwrap_or_else(|| Err(tonic::Status::unknown("no answer")))
    };
    let ack = send(&mut ingest, batch(1, 1)).await.unwrap();
    assert_eq!(ack.stored_through, 100);
    let filler = disk.fill();
    // Until the store's own slack is used up too.
    let mut first = 101;
    let refused = loop {
        match send(&mut ingest, batch(first, first)).await {
            Ok(a) => {
                assert_eq!(a.stored_through, first + 99);
                first += 100;
                assert!(first < 200_000, "the full disk never refused a batch");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("disk is full"),
        "{}",
        refused.message()
    );
    let store = server.control.tenant_store("acme").unwrap();
    assert_eq!(
        store.high_water(&device).unwrap(),
        first - 1,
        "nothing of the refused batch stored"
    );
    // Still answering analysts.
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    assert!(!stored_any(&mut hunt, &analyst, &device).await.is_empty());
    // Still refused while the disk stays full, clearly, and still no panic.
    let again = send(&mut ingest, batch(first, first)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::ResourceExhausted, "{again:?}");
    // Space returns: the refused batch, sent again (as the sensor's uplink
    // does) to the same server on the same connection, is stored, once.
    std::fs::remove_file(&filler).unwrap();
    let ack = send(&mut ingest, batch(first, first)).await.unwrap();
    assert_eq!((ack.accepted, ack.stored_through), (100, first + 99));
    let ack = send(&mut ingest, batch(first, first)).await.unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (0, 100));
    assert!(!stored_any(&mut hunt, &analyst, &device).await.is_empty());
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let part = store.records(&device, after, 10_000).unwrap();
        let Some(&(l, _)) = part.last() else { break };
        seqs.extend(part.iter().map(|r| r.0));
        after = l;
    }
    assert_eq!(seqs, (1..first + 100).collect::<Vec<_>>());
    server.stop().await;
}

async fn stored_any(
    hunt: &mut HuntClient<tonic::transport::Channel>,
    token: &str,
    device: &str,
) -> Vec<vigil_proto::v1::StoredRecord> {
    let mut pages = hunt
        .search_events(with_token(
            SearchEventsRequest {
                device_id: device.into(),
                limit: 10,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        out.extend(p.unwrap().records);
    }
    out
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let vfs = nix::sys::statvfs::statvfs(path).unwrap();
    vfs.blocks_available() * vfs.fragment_size()
}

/// (e), the spool's part, without the kernel: on a 64 MiB filesystem left
/// with 12 MiB, a spool told to leave 4 MiB free takes 40 MB of records with
/// no server to acknowledge them. It never cuts into the free space it
/// leaves, drops bulk records oldest first, keeps every priority record, and
/// every sequence number it handed out is either held or counted as dropped.
/// Then the disk is filled to the last byte: no panic, every refusal is a
/// clear `DiskFull`, and once space returns the same spool writes again —
/// not reopened by its caller.
#[test]
fn a_spool_on_a_full_disk_drops_bulk_oldest_first_keeps_priority_and_counts_every_drop() {
    use vigil_spool::{Priority, Spool, SpoolError};
    let name =
        "a_spool_on_a_full_disk_drops_bulk_oldest_first_keeps_priority_and_counts_every_drop";
    if !enabled(name) {
        return;
    }
    let Some(disk) = SmallDisk::new(name, 64) else {
        return;
    };
    let filler = disk.fill_leaving("filler", 12 << 20);
    let spool = Spool::open(&disk.path().join("spool.redb"), 1 << 30).unwrap();
    spool.set_min_free(4 << 20);
    let keep = |seq: u64| seq.is_multiple_of(100);
    let record = |seq: u64, _| {
        let p = if keep(seq) {
            Priority::Keep
        } else {
            Priority::Bulk
        };
        (format!("{seq:020} {}", "x".repeat(380)).into_bytes(), p)
    };
    let mut lowest_free = u64::MAX;
    for _ in 0..500 {
        spool.append(0..200, record).unwrap();
        lowest_free = lowest_free.min(free_bytes(disk.path()));
    }
    let held = |spool: &Spool| -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            let part = spool.read_after(out.last().copied().unwrap_or(0), 10_000, 64 << 20);
            let part = part.unwrap();
            if part.is_empty() {
                return out;
            }
            out.extend(part.iter().map(|r| r.0));
        }
    };
    let st = spool.stats().unwrap();
    let seqs = held(&spool);
    eprintln!(
        "100,000 records of 400 bytes into 12 MiB: {} held, {st:?}, lowest free {} KiB",
        seqs.len(),
        lowest_free >> 10
    );
    assert!(
        lowest_free >= 3 << 20,
        "the spool cut into the 4 MiB it leaves free: {lowest_free} bytes were left"
    );
    assert_eq!(
        seqs.len() as u64 + st.dropped + st.dropped_disk_full + st.dropped_priority,
        100_000,
        "every record is held or counted"
    );
    assert_eq!((st.dropped, st.dropped_priority), (0, 0));
    assert!(st.dropped_disk_full > 50_000, "{st:?}");
    let set: std::collections::HashSet<u64> = seqs.iter().copied().collect();
    assert!(
        (1..=100_000).filter(|&s| keep(s)).all(|s| set.contains(&s)),
        "a priority record was dropped"
    );
    let bulk: Vec<u64> = seqs.iter().copied().filter(|&s| !keep(s)).collect();
    let newest: Vec<u64> = (bulk[0]..=100_000).filter(|&s| !keep(s)).collect();
    assert_eq!(bulk, newest, "bulk records were not dropped oldest first");

    // To the last byte.
    drop(std::fs::remove_file(&filler));
    let filler = disk.fill();
    let (mut written, mut refused) = (0, 0);
    for _ in 0..100 {
        match spool.append(0..200, record) {
            Ok(n) => written += n,
            Err(SpoolError::DiskFull) => refused += 1,
            Err(e) => panic!("a full disk is DiskFull, not: {e}"),
        }
    }
    let st = spool.stats().unwrap();
    let seqs = held(&spool);
    eprintln!(
        "a full disk: {written} written, {refused} batches refused; {} held, {st:?}",
        seqs.len()
    );
    // Sequence numbers are handed out only to what was written.
    assert_eq!(
        seqs.len() as u64 + st.dropped + st.dropped_disk_full + st.dropped_priority,
        st.next_seq - 1
    );
    assert_eq!(st.next_seq - 1, 100_000 + written);
    std::fs::remove_file(&filler).unwrap();
    spool.append(0..200, record).unwrap();
    let st = spool.stats().unwrap();
    assert_eq!(st.next_seq - 1, 100_200 + written);
    let set: std::collections::HashSet<u64> = held(&spool).into_iter().collect();
    assert!(
        (1..=100_000).filter(|&s| keep(s)).all(|s| set.contains(&s)),
        "a priority record was dropped on the full disk"
    );
}

/// (e) The sensor's disk fills up while the server is away: on a 96 MiB
/// filesystem left with 24 MiB (the spool told to leave 8 MiB), the kernel
/// sensor records 100,000 file creations and three reads of /etc/shadow (one
/// before the flood, one after, one with the disk full to the last byte). The
/// sensor keeps running; once space and the server return, the server holds
/// every detection and health record, the records missing from its sequence
/// are exactly the bulk ones dropped oldest first, and their number is the
/// one the sensor's health reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sensor_disk_keeps_detections_and_health_and_counts_every_drop() {
    let name = "a_full_sensor_disk_keeps_detections_and_health_and_counts_every_drop";
    if !enabled(name) {
        return;
    }
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let Some(disk) = SmallDisk::new(name, 96) else {
        return;
    };
    const N: usize = 100_000;
    let server = TestServer::start().await;
    let (_, enroll) = server.tenant("acme", vigil_store::Role::Analyst);
    let mut cfg = sensor_config(&server, &enroll);
    cfg.data_dir = disk.path().join("sensor");
    cfg.collect.ring_buffer_kb = 16 * 1024;
    cfg.spool.capacity_mb = 1024;
    cfg.spool.min_free_mb = 8;
    let spool_file = cfg.data_dir.join("spool.redb");
    let Some(sensor) = support::start_kernel_sensor(name, cfg).await else {
        return;
    };
    if !sensor.sources.iter().any(|s| s.contains("eBPF")) {
        eprintln!(
            "SKIPPED {name}: file events need eBPF: {:?}",
            sensor.degraded
        );
        sensor.shutdown().await;
        return;
    }
    let device = loop {
        if let Some(d) = server.control.devices("acme").unwrap().first() {
            break d.device_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let down = server.pause().await;
    let filler = disk.fill_leaving("filler", 24 << 20);
    let t0 = Instant::now();
    let files = tempfile::Builder::new()
        .prefix("vigil-diskfull-")
        .tempdir_in("/tmp")
        .unwrap();
    let make = |from: usize, to: usize| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "i={from}; while [ $i -lt {to} ]; do : > {}/f$i; i=$((i+1)); done",
                files.path().display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
    };
    let shadow = || {
        let out = std::process::Command::new("cat")
            .arg("/etc/shadow")
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    shadow();
    make(0, N * 9 / 10);
    shadow();
    eprintln!(
        "{:?}: {} files made; filling the disk",
        t0.elapsed(),
        N * 9 / 10
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // To the last byte: the spool's writes now fail outright.
    std::fs::remove_file(&filler).unwrap();
    let filler = disk.fill();
    make(N * 9 / 10, N);
    shadow();
    eprintln!(
        "{:?}: all files made; space and server return",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::remove_file(&filler).unwrap();
    let server = down.resume().await;
    let store = server.control.tenant_store("acme").unwrap();
    let decoded = |store: &std::sync::Arc<dyn vigil_store::TenantData>| {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let part = store.records(&device, after, 10_000).unwrap();
            let Some(&(l, _)) = part.last() else { break };
            for (seq, b) in &part {
                let r = <vigil_proto::v1::Record as prost::Message>::decode(b.as_slice());
                out.push((*seq, r.unwrap().payload.unwrap()));
            }
            after = l;
        }
        out
    };
    // Until it has taken everything (its mark still for 5 s).
    let mut last = (0, Instant::now());
    let back = Instant::now();
    while last.0 == 0 || last.1.elapsed() < Duration::from_secs(5) {
        let hw = store.high_water(&device).unwrap();
        if hw != last.0 {
            last = (hw, Instant::now());
        }
        assert!(
            back.elapsed() < Duration::from_secs(300),
            "the server never caught up (mark {hw}; uplink {:?})",
            sensor.uplink_status()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{:?}: the server holds through {}", t0.elapsed(), last.0);
    let records = decoded(&store);
    // The account the sensor gives at stop: its last health record, sent or
    // still spooled.
    sensor.shutdown().await;
    let mut after_stop: Vec<(u64, Vec<u8>)> = store.records(&device, last.0, 10_000).unwrap();
    after_stop.extend(
        vigil_spool::SpoolView::open(&spool_file)
            .unwrap()
            .read_after(last.0, 10_000, 64 << 20)
            .unwrap(),
    );
    let seqs: Vec<u64> = records.iter().map(|r| r.0).collect();
    let last = *seqs.last().unwrap();
    let held: std::collections::HashSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !held.contains(s)).collect();
    let health = after_stop
        .iter()
        .rev()
        .find_map(|(_, b)| {
            match <vigil_proto::v1::Record as prost::Message>::decode(b.as_slice()) {
                Ok(vigil_proto::v1::Record {
                    payload: Some(Payload::Health(h)),
                    ..
                }) => Some(h),
                _ => None,
            }
        })
        .expect("a health record at stop");
    let count = |k: &str| health.dropped.get(k).copied().unwrap_or(0);
    let detections = records
        .iter()
        .filter(|(_, p)| {
            matches!(p, Payload::Detection(d) if d.rule_title.to_lowercase().contains("shadow"))
        })
        .count();
    let dir = files.path().display().to_string();
    let stored_files = records
        .iter()
        .filter(|(_, p)| {
            matches!(p, Payload::File(f) if f.path.as_ref().is_some_and(|p| p.text.starts_with(&dir)))
        })
        .count();
    eprintln!(
        "{} records held up to {last}; {} missing; {stored_files} file records of {N} files; \
         {detections} /etc/shadow detections; health dropped {:?}",
        seqs.len(),
        missing.len(),
        health.dropped
    );
    assert_eq!(detections, 3, "a detection was lost");
    let blind_spots = records
        .iter()
        .filter(|(_, p)| {
            matches!(p, Payload::Detection(d)
                if d.rule_id == "vigil-sensor-blind-spot" && d.description.contains("unsent records"))
        })
        .count();
    assert!(
        blind_spots >= 1,
        "no blind spot told an analyst of the drops"
    );
    assert!(
        count("disk_full") > 0,
        "nothing was dropped: {:?}",
        health.dropped
    );
    assert_eq!(
        missing.len() as u64,
        count("disk_full") + count("spool_full") + count("priority_evicted"),
        "a record is missing that no count names"
    );
    assert_eq!(count("priority_evicted"), 0);
    // Oldest first: from the first missing record on, what is held up to the
    // last missing one is priority records only (kept while bulk went).
    let (lo, hi) = (missing[0], *missing.last().unwrap());
    for (seq, p) in &records {
        if (lo..=hi).contains(seq) {
            assert!(
                matches!(
                    p,
                    Payload::Detection(_) | Payload::Health(_) | Payload::Host(_)
                ),
                "bulk record {seq} kept while older ones were dropped"
            );
        }
    }
    // Every file record is stored or counted; the kernel lost none unsaid.
    let lost = count("disk_full")
        + count("disk_full_unspooled")
        + health
            .dropped
            .iter()
            .filter(|(k, _)| k.ends_with("_ring_full"))
            .map(|(_, v)| v)
            .sum::<u64>();
    assert!(
        stored_files as u64 + lost >= N as u64,
        "{stored_files} stored + {lost} counted < {N}"
    );
    server.stop().await;
}
