//! Backpressure through the real server over mutual TLS (issue 16, item 2):
//! an overloaded server refuses new streams with a retry hint and holds what
//! it has read within its budget, while the sensor's own uplink still gets
//! every record through; and 1,000 sensors cut off at once come back spread
//! out, not as a retry storm (connection attempts counted per 100 ms).
//!
//! The storm takes a minute or so: it runs when `VIGIL_FAULT_TESTS=1` (set by
//! `.ci/run`), and otherwise says why and passes.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::TestServer;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vigil_proto::v1::{
    EnrollRequest, Record, RecordBatch, ingest_client::IngestClient, record::Payload,
};
use vigil_sensor::uplink::backoff::{self, Backoff};

fn enabled(name: &str) -> bool {
    if std::env::var_os("VIGIL_FAULT_TESTS").is_none() {
        eprintln!("SKIPPED {name}: slow; set VIGIL_FAULT_TESTS=1 (as .ci/run does)");
        return false;
    }
    true
}

/// Record `seq` of a simulated sensor, about `size` bytes encoded.
fn record(seq: u64, size: usize) -> Record {
    Record {
        sequence: seq,
        time_unix_ns: 1_700_000_000_000_000_000 + seq as i64,
        payload: Some(Payload::ProcessStart(vigil_proto::v1::ProcessStart {
            guid: format!("g-{seq}"),
            pid: seq as u32,
            command_line: format!("/usr/bin/true {seq} {}", "z".repeat(size)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `count` devices of `tenant`, enrolled over one connection as sensors do,
/// a few at a time.
async fn enroll_many(server: &TestServer, tenant: &str, count: usize) -> Vec<(Identity, String)> {
    let token = server
        .control
        .create_enrollment_token(tenant, Duration::from_secs(600), "backpressure")
        .unwrap()
        .0;
    let ch = server.channel(None).await.unwrap();
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (ch, token, permits) = (ch.clone(), token.clone(), Arc::clone(&permits));
        tasks.spawn(async move {
            let _p = permits.acquire().await.unwrap();
            let (key, csr) = vigil_pki::device_key_and_csr(&format!("host-{i}")).unwrap();
            let resp = IngestClient::new(ch)
                .enroll(EnrollRequest {
                    enrollment_token: token,
                    csr_pem: csr,
                    host: None,
                })
                .await
                .unwrap()
                .into_inner();
            (
                i,
                Identity::from_pem(resp.certificate_pem, key),
                resp.device_id,
            )
        });
    }
    let mut out: Vec<_> = tasks.join_all().await;
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, id, dev)| (id, dev)).collect()
}

/// A mutual-TLS connection as `identity`.
async fn connect(
    endpoint: &str,
    ca: &Certificate,
    identity: &Identity,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(endpoint.to_owned())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .domain_name("localhost")
                .identity(identity.clone()),
        )?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Sequence numbers `device` has stored, in order, each as often as stored.
fn stored(server: &TestServer, tenant: &str, device: &str) -> Vec<u64> {
    let store = server.control.tenant_store(tenant).unwrap();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let part = store.records(device, after, 10_000).unwrap();
        let Some(&(last, _)) = part.last() else {
            return seqs;
        };
        seqs.extend(part.iter().map(|r| r.0));
        after = last;
    }
}

/// What the simulated sensors of the storm share: when each connection
/// attempt was made, and how far each got.
struct Storm {
    endpoint: String,
    ca: Certificate,
    /// Records each sensor has made: 5 before the cut, 10 from it on.
    made: AtomicU64,
    /// Connection attempts (TCP + TLS + stream open), with when.
    attempts: Mutex<Vec<(usize, Instant)>>,
    /// Sensors whose records are all acknowledged, and when the last got there.
    caught_up: AtomicU32,
    last_caught_up: Mutex<Option<Instant>>,
    /// Hints the server sent, seen by any sensor.
    hints: AtomicU32,
    /// Turns true when the test is over.
    done: tokio::sync::watch::Sender<bool>,
}

/// How a simulated session ended.
enum Ended {
    /// The test is over.
    Done,
    /// Cut or refused: the server's hint, and whether anything was acknowledged.
    Retry(Option<Duration>, bool),
}

/// One session of simulated sensor `n`: connect, send what is unacknowledged,
/// stay connected until the server ends the stream or the test does.
async fn storm_session(n: usize, identity: &Identity, storm: &Storm, acked: &mut u64) -> Ended {
    let mut done = storm.done.subscribe();
    storm.attempts.lock().unwrap().push((n, Instant::now()));
    let Ok(ch) = connect(&storm.endpoint, &storm.ca, identity).await else {
        return Ended::Retry(None, false);
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = match IngestClient::new(ch)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(a) => a.into_inner(),
        Err(s) => return Ended::Retry(backoff::retry_hint(&s), false),
    };
    let made = storm.made.load(Ordering::Acquire);
    let batch = RecordBatch {
        batch_id: 1,
        records: (*acked + 1..=made).map(|s| record(s, 100)).collect(),
    };
    let mut progressed = false;
    if !batch.records.is_empty() && tx.send(batch).await.is_err() {
        return Ended::Retry(None, false);
    }
    let mut reported = false;
    loop {
        if *acked == made && !reported {
            reported = true;
            storm.caught_up.fetch_add(1, Ordering::AcqRel);
            *storm.last_caught_up.lock().unwrap() = Some(Instant::now());
        }
        let next = tokio::select! {
            a = acks.next() => a,
            _ = done.wait_for(|d| *d) => return Ended::Done,
        };
        match next {
            Some(Ok(ack)) => {
                *acked = ack.stored_through;
                progressed = true;
            }
            Some(Err(s)) => {
                let hint = backoff::retry_hint(&s);
                if hint.is_some() {
                    storm.hints.fetch_add(1, Ordering::Relaxed);
                }
                return Ended::Retry(hint, progressed);
            }
            None => return Ended::Retry(None, progressed),
        }
    }
}

/// A simulated sensor: the sensor's own backoff (`vigil_sensor::uplink::Backoff`)
/// between sessions, its records kept until acknowledged.
async fn storm_sensor(n: usize, identity: Identity, storm: Arc<Storm>) -> u64 {
    let mut backoff = Backoff::with_seed(
        backoff::BASE,
        backoff::CAP,
        0x5eed_0000 + n as u64 * 0x9e37_79b9,
    );
    let mut acked = 0;
    let mut done = storm.done.subscribe();
    loop {
        match storm_session(n, &identity, &storm, &mut acked).await {
            Ended::Done => return acked,
            Ended::Retry(hint, progressed) => {
                if progressed {
                    backoff.reset();
                }
                let wait = backoff.next_delay(hint);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = done.wait_for(|d| *d) => return acked,
                }
            }
        }
    }
}

/// 1,000 sensors, each over its own mutual-TLS connection, are connected and
/// have sent 5 records; the server stops (every stream ends at once, told to
/// come back after `retry_after_ms`), stays down 3 s while each sensor makes
/// 5 more records, and starts again. Counted per 100 ms from the cut: every
/// connection attempt. All reconnect, each record is stored once, and the
/// attempts are spread: no 100 ms holds more than a quarter of the sensors,
/// and no sensor tries more than a dozen times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sensors_cut_off_at_once_come_back_spread_out() {
    const SENSORS: usize = 1000;
    const BUCKET: Duration = Duration::from_millis(100);
    let name = "a_thousand_sensors_cut_off_at_once_come_back_spread_out";
    if !enabled(name) {
        return;
    }
    let _turn = turn().await;
    let server = TestServer::start().await;
    let _ = server.tenant("acme", vigil_store::Role::Analyst);
    let t = Instant::now();
    let devices = enroll_many(&server, "acme", SENSORS).await;
    eprintln!("{SENSORS} devices enrolled in {:?}", t.elapsed());

    let storm = Arc::new(Storm {
        endpoint: server.endpoint(),
        ca: Certificate::from_pem(&server.ca_pem),
        made: AtomicU64::new(5),
        attempts: Mutex::new(Vec::new()),
        caught_up: AtomicU32::new(0),
        last_caught_up: Mutex::new(None),
        hints: AtomicU32::new(0),
        done: tokio::sync::watch::channel(false).0,
    });
    let t = Instant::now();
    let mut sensors = tokio::task::JoinSet::new();
    for (n, (identity, _)) in devices.iter().enumerate() {
        sensors.spawn(storm_sensor(n, identity.clone(), Arc::clone(&storm)));
    }
    let wait_for_all = async |what: &str| {
        let started = Instant::now();
        while storm.caught_up.load(Ordering::Acquire) < SENSORS as u32 {
            assert!(
                started.elapsed() < Duration::from_secs(100),
                "{what}: only {} of {SENSORS} sensors caught up",
                storm.caught_up.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for_all("before the cut").await;
    let before = storm.attempts.lock().unwrap().len();
    eprintln!(
        "{SENSORS} sensors connected and caught up in {:?} ({before} connection attempts; \
         {} streams open on the server)",
        t.elapsed(),
        server.admission.load().streams_open
    );

    // The cut: the server stops, its streams end together; 5 more records each.
    storm.made.store(10, Ordering::Release);
    storm.caught_up.store(0, Ordering::Release);
    let cut = Instant::now();
    let paused = server.pause().await;
    let stopped_in = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped_in)).await;
    let server = paused.resume().await;
    let back = cut.elapsed();
    wait_for_all("after the restart").await;
    let all_back = storm
        .last_caught_up
        .lock()
        .unwrap()
        .map(|t| t.duration_since(cut))
        .unwrap();
    storm.done.send_replace(true);
    let acked: Vec<u64> = sensors.join_all().await;
    assert!(
        acked.iter().all(|&a| a == 10),
        "every sensor's records acknowledged"
    );

    // Attempts from the cut on, per 100 ms and per sensor.
    let attempts = storm.attempts.lock().unwrap().clone();
    let after: Vec<_> = attempts.iter().filter(|(_, t)| *t >= cut).collect();
    let last = after
        .iter()
        .map(|(_, t)| t.duration_since(cut))
        .max()
        .unwrap();
    let mut buckets = vec![0u32; (last.as_millis() / BUCKET.as_millis()) as usize + 1];
    let mut per_sensor = vec![0u32; SENSORS];
    for (n, t) in &after {
        buckets[(t.duration_since(cut).as_millis() / BUCKET.as_millis()) as usize] += 1;
        per_sensor[*n] += 1;
    }
    let peak = *buckets.iter().max().unwrap();
    let most = *per_sensor.iter().max().unwrap();
    eprintln!(
        "cut: server stopped in {stopped_in:?}, serving again at {back:?}; all {SENSORS} caught up \
         at {all_back:?}; {} attempts ({most} at most by one sensor), peak {peak} in 100 ms; \
         {} streams told the retry hint",
        after.len(),
        storm.hints.load(Ordering::Relaxed)
    );
    eprintln!("attempts per 100 ms from the cut: {buckets:?}");
    assert!(
        per_sensor.iter().all(|&a| a >= 1),
        "every sensor reconnected"
    );
    assert!(
        peak as usize <= SENSORS / 4,
        "a retry storm: {peak} of {SENSORS} sensors tried within one 100 ms: {buckets:?}"
    );
    assert!(most <= 12, "a sensor tried {most} times: {per_sensor:?}");

    // Every record of every sensor stored exactly once.
    for (n, (_, device)) in devices.iter().enumerate() {
        assert_eq!(
            stored(&server, "acme", device),
            (1..=10).collect::<Vec<_>>(),
            "sensor {n}"
        );
    }
    server.stop().await;
}

/// One test at a time in this file: each measures the server under load,
/// and two cores shared would blur what the other counts.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// `GET /metrics` from the server's Prometheus listener.
fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `line_start` (name and labels) in a scrape.
fn sample(scrape: &str, line_start: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// What the hammering clients of the overload test saw.
#[derive(Default)]
struct Seen {
    refused: AtomicU32,
    admitted: AtomicU32,
}

/// A client that opens stream after stream, each sending 10 batches of
/// about 45 KB as fast as the server reads them, with the sensor's backoff
/// after every refusal. Returns the last sequence the server acknowledged.
async fn hammer(
    n: usize,
    endpoint: String,
    ca: Certificate,
    identity: Identity,
    seen: Arc<Seen>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let mut backoff = Backoff::with_seed(backoff::BASE, backoff::CAP, 77 + n as u64);
    let mut acked = 0u64;
    while !*stop.borrow() {
        let hint = match hammer_session(&endpoint, &ca, &identity, &mut acked).await {
            Ok(()) => {
                seen.admitted.fetch_add(1, Ordering::Relaxed);
                backoff.reset();
                None
            }
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                let hint = backoff::retry_hint(&s);
                assert_eq!(hint, Some(Duration::from_millis(300)), "{s:?}");
                assert!(s.message().contains("retry after 300 ms"), "{s:?}");
                seen.refused.fetch_add(1, Ordering::Relaxed);
                hint
            }
            Err(s) => panic!("hammer {n}: {s:?}"),
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay(hint)) => {}
            _ = stop.changed() => {}
        }
    }
    acked
}

async fn hammer_session(
    endpoint: &str,
    ca: &Certificate,
    identity: &Identity,
    acked: &mut u64,
) -> Result<(), tonic::Status> {
    let ch = connect(endpoint, ca, identity)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let first = *acked + 1;
    let batches: Vec<RecordBatch> = (0..10u64)
        .map(|b| RecordBatch {
            batch_id: b + 1,
            records: (first + b * 150..first + (b + 1) * 150)
                .map(|s| record(s, 250))
                .collect(),
        })
        .collect();
    let mut acks = IngestClient::new(ch)
        .max_encoding_message_size(64 * 1024)
        .stream(tokio_stream::iter(batches))
        .await?
        .into_inner();
    while let Some(ack) = acks.next().await {
        *acked = ack?.stored_through;
    }
    Ok(())
}

/// A server with room for 3 sensor streams and 128 KiB of batches in flight,
/// hammered by 6 clients that each send 450 KB a stream, and the sensor's own
/// uplink with 3,000 records (about 1 MB) in its spool: streams past the
/// limit are refused with `RESOURCE_EXHAUSTED` and `retry-after-ms: 300`
/// (counted as `vigil_refused_calls_total{reason="overloaded"}`), the bytes
/// in flight never pass the budget (sampled all along, and the server's own
/// peak), and the uplink gets every record through, each stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_refuses_with_a_hint_stays_in_budget_and_the_uplink_gets_through() {
    const HAMMERS: usize = 6;
    const BUDGET: usize = 128 * 1024;
    const RECORDS: u64 = 3000;
    let _turn = turn().await;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start_with(|c| {
        c.max_message_bytes = 64 * 1024;
        c.max_ingest_bytes_in_flight = BUDGET;
        c.max_sensor_streams = 3;
        c.retry_after_ms = 300;
        c.metrics_listen = Some(metrics);
    })
    .await;
    let (_, enroll_token) = server.tenant("acme", vigil_store::Role::Analyst);
    let raw = enroll_many(&server, "acme", HAMMERS).await;

    // Samples what ingest holds, all along.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = {
        let (admission, mut stop) = (Arc::clone(&server.admission), stop_rx.clone());
        tokio::spawn(async move {
            let (mut bytes, mut streams, mut samples) = (0, 0, 0u64);
            while !*stop.borrow() {
                let load = admission.load();
                assert!(load.bytes_in_flight <= BUDGET as u64, "{load:?}");
                assert!(load.streams_open <= 3, "{load:?}");
                bytes = bytes.max(load.bytes_in_flight);
                streams = streams.max(load.streams_open);
                samples += 1;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = stop.changed() => {}
                }
            }
            (bytes, streams, samples)
        })
    };
    let seen = Arc::new(Seen::default());
    let ca = Certificate::from_pem(&server.ca_pem);
    let hammers: Vec<_> = raw
        .iter()
        .enumerate()
        .map(|(n, (identity, _))| {
            tokio::spawn(hammer(
                n,
                server.endpoint(),
                ca.clone(),
                identity.clone(),
                Arc::clone(&seen),
                stop_rx.clone(),
            ))
        })
        .collect();

    // The sensor's own uplink, over a spool it did not write itself.
    let mut cfg = support::sensor_config(&server, &enroll_token);
    cfg.uplink.max_message_bytes = 64 * 1024;
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let host = vigil_proto::v1::HostInfo {
        hostname: "overloaded".into(),
        ..Default::default()
    };
    let identity = vigil_sensor::uplink::ensure_enrolled(&cfg, &host)
        .await
        .unwrap();
    let device = identity.device_id.clone();
    let spool =
        Arc::new(vigil_spool::Spool::open(&cfg.data_dir.join("spool.redb"), 64 << 20).unwrap());
    spool
        .append(0..RECORDS, |seq, _| {
            let b = prost::Message::encode_to_vec(&record(seq, 300));
            (b, vigil_spool::Priority::Bulk)
        })
        .unwrap();
    let (status_tx, mut status) = tokio::sync::watch::channel(Default::default());
    let (uplink_stop, uplink_stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let uplink = tokio::spawn(vigil_sensor::uplink::run(
        cfg,
        identity,
        Arc::clone(&spool),
        Arc::new(tokio::sync::Notify::new()),
        uplink_stop_rx,
        status_tx,
    ));
    let through = tokio::time::timeout(
        Duration::from_secs(100),
        status.wait_for(|s: &vigil_sensor::uplink::UplinkStatus| s.acked_through >= RECORDS),
    )
    .await
    .expect("the uplink got everything through within 100 s")
    .unwrap()
    .clone();
    eprintln!(
        "uplink: {RECORDS} records through in {:?}, {} sessions, last error {:?}",
        started.elapsed(),
        through.sessions_opened,
        through.last_error
    );
    // The hammers keep going a moment: the uplink's peers were refused too.
    let t = Instant::now();
    while seen.refused.load(Ordering::Relaxed) == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "nothing was refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = uplink_stop.send(true);
    uplink.await.unwrap();
    stop_tx.send(true).unwrap();
    let mut hammered = Vec::new();
    for h in hammers {
        hammered.push(h.await.unwrap());
    }
    let (bytes, streams, samples) = sampler.await.unwrap();
    let load = server.admission.load();
    let refused = seen.refused.load(Ordering::Relaxed);
    eprintln!(
        "hammers: {} streams admitted, {refused} refused with the hint; records acknowledged {hammered:?}; \
         server: {load:?}; sampled {samples} times: at most {bytes} bytes, {streams} streams",
        seen.admitted.load(Ordering::Relaxed),
    );
    assert!(refused > 0);
    assert!(load.refused >= u64::from(refused), "{load:?}");
    assert!(load.bytes_peak <= BUDGET as u64, "{load:?}");
    assert!(
        load.bytes_peak > BUDGET as u64 / 2,
        "the budget was what held batches back: {load:?}"
    );
    assert_eq!(load.streams_peak, 3, "{load:?}");
    assert_eq!(
        (load.streams_open, load.bytes_in_flight),
        (0, 0),
        "{load:?}"
    );

    // Everything the uplink sent stored once, nothing left in its spool; the
    // hammers' records likewise.
    assert_eq!(
        stored(&server, "acme", &device),
        (1..=RECORDS).collect::<Vec<_>>()
    );
    assert_eq!(spool.stats().unwrap().records, 0);
    // (A hammer may have been unlucky every time: admission is first come.)
    assert!(hammered.iter().any(|&a| a > 0), "{hammered:?}");
    for ((_, device), acked) in raw.iter().zip(&hammered) {
        let seqs = stored(&server, "acme", device);
        assert!(
            seqs.iter().copied().eq(1..=seqs.len() as u64),
            "each once, in order"
        );
        assert!(seqs.len() as u64 >= *acked);
    }

    // And the operator sees it.
    let text = scrape(metrics);
    let counted = sample(&text, "vigil_refused_calls_total{reason=\"overloaded\"}").unwrap();
    assert!(counted >= f64::from(refused), "{counted}");
    assert!(
        sample(&text, "vigil_ingest_bytes_in_flight").is_some(),
        "{text}"
    );
    server.stop().await;
}
