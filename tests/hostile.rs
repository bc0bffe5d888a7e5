//! Hostile and damaged input through the real system (issue 16, item 3): each
//! gets a clear answer while the process keeps serving. Here: a sensor whose
//! spool file the disk damaged starts anyway, says what was lost, and what it
//! records next reaches the server (its sequence numbers above every old one,
//! so none is taken for a re-send). Needs root (kernel sources); says so and
//! passes without.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::{TestServer, sensor_config, with_token};
use tokio_stream::StreamExt;
use vigil_proto::v1::record::Payload;
use vigil_proto::v1::{FieldCondition, MatchOp, SearchEventsRequest, hunt_client::HuntClient};

/// Runs `true MARKER` until the server holds its process start; false after 20 s.
async fn reaches_server(
    hunt: &mut HuntClient<tonic::transport::Channel>,
    token: &str,
    marker: &str,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        std::process::Command::new("true")
            .arg(marker)
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut pages = hunt
            .search_events(with_token(
                SearchEventsRequest {
                    kind: "process_start".into(),
                    conditions: vec![FieldCondition {
                        field: "CommandLine".into(),
                        op: MatchOp::Contains as i32,
                        value: marker.into(),
                    }],
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        while let Some(p) = pages.next().await {
            if !p.unwrap().records.is_empty() {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_whose_spool_was_damaged_starts_reports_it_and_loses_nothing_new() {
    let name = "a_sensor_whose_spool_was_damaged_starts_reports_it_and_loses_nothing_new";
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let server = TestServer::start().await;
    let (analyst, enroll) = server.tenant("acme", vigil_store::Role::Analyst);
    let cfg = sensor_config(&server, &enroll);
    let spool = cfg.data_dir.join("spool.redb");
    let Some(sensor) = support::start_kernel_sensor(name, cfg.clone()).await else {
        return;
    };
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let pid = std::process::id();
    assert!(reaches_server(&mut hunt, &analyst, &format!("vigil-damage-{pid}-before")).await);
    let device = sensor.identity.as_ref().unwrap().device_id.clone();
    sensor.shutdown().await;
    let store = server.control.tenant_store("acme").unwrap();
    let before = store.high_water(&device).unwrap();
    assert!(before > 0);

    // The disk damages the spool while the sensor is stopped.
    let mut bytes = std::fs::read(&spool).unwrap();
    bytes[..4096].fill(0);
    std::fs::write(&spool, &bytes).unwrap();

    let sensor = support::start_kernel_sensor(name, cfg.clone())
        .await
        .unwrap();
    assert!(
        sensor
            .degraded
            .iter()
            .any(|d| d.contains("the spool was damaged")),
        "{:?}",
        sensor.degraded
    );
    assert!(
        std::fs::read_dir(&cfg.data_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("damaged")),
        "the damaged file is kept aside"
    );
    assert!(
        reaches_server(&mut hunt, &analyst, &format!("vigil-damage-{pid}-after")).await,
        "a record made after the damage never reached the server"
    );
    assert!(store.high_water(&device).unwrap() > before);
    // Health says so, on the server too.
    let started = Instant::now();
    loop {
        let mut pages = hunt
            .search_events(with_token(
                SearchEventsRequest {
                    device_id: device.clone(),
                    kind: "health".into(),
                    ..Default::default()
                },
                &analyst,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut said = false;
        while let Some(p) = pages.next().await {
            for r in p.unwrap().records {
                if let Some(Payload::Health(h)) = r.record.and_then(|r| r.payload) {
                    said |= h.dropped.contains_key("spool_damaged")
                        && h.degraded.iter().any(|d| d.contains("spool was damaged"));
                }
            }
        }
        if said {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "health never said the spool was damaged"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sensor.shutdown().await;
    server.stop().await;
}

/// One raw batch on a new stream of `device`: the acknowledgement, or the
/// status the server ended the stream with.
async fn send_raw(
    server: &TestServer,
    identity: &tonic::transport::Identity,
    batch_id: u64,
    records: Vec<Vec<u8>>,
) -> Result<vigil_proto::v1::BatchAck, tonic::Status> {
    let mut c = vigil_proto::v1::raw::ingest_client::IngestClient::new(
        server.channel(Some(identity.clone())).await.unwrap(),
    );
    let batch = vigil_proto::v1::RawRecordBatch {
        batch_id,
        records: records.into_iter().map(Into::into).collect(),
    };
    let mut acks = c
        .stream(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    match acks.next().await {
        Some(r) => r,
        None => Err(tonic::Status::unknown("the stream ended without an answer")),
    }
}

fn start(seq: u64, argv: Vec<Vec<u8>>, exe: &[u8]) -> Vec<u8> {
    use prost::Message;
    vigil_proto::v1::Record {
        sequence: seq,
        time_unix_ns: 1_700_000_000_000_000_000,
        payload: Some(Payload::ProcessStart(vigil_proto::v1::ProcessStart {
            guid: format!("hostile-{seq}"),
            pid: seq as u32,
            command_line: String::from_utf8_lossy(&argv.join(&b' ')).into_owned(),
            argv,
            executable: Some(vigil_proto::v1::Path {
                text: String::from_utf8_lossy(exe).into_owned(),
                raw: exe.to_vec(),
                lossy: std::str::from_utf8(exe).is_err(),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// What a device may send that it should not: each refused with
/// INVALID_ARGUMENT and a reason, nothing of that batch stored, and the
/// server goes on storing the device's good batches. No kernel needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let (analyst, _) = server.tenant("acme", vigil_store::Role::Analyst);
    let (identity, device) = support::enroll(&server, "acme").await;
    let store = server.control.tenant_store("acme").unwrap();
    let good = |seq| {
        start(
            seq,
            vec![b"/usr/bin/true".to_vec(), format!("ok-{seq}").into_bytes()],
            b"/usr/bin/true",
        )
    };
    assert_eq!(
        send_raw(&server, &identity, 1, vec![good(1)])
            .await
            .unwrap()
            .stored_through,
        1
    );

    let mut detection_garbage = vec![0x08, 0x05]; // sequence 5
    detection_garbage.extend([0x8a, 0x01, 0x03, 0xff, 0xff, 0xff]); // detection (17): 3 bytes of garbage
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("random bytes", vec![vec![0xff, 0x13, 0x37, 0x00, 0x9e]]),
        (
            "a field of the wrong wire type",
            vec![vec![0x0a, 0x01, 0x02]],
        ),
        ("a length past the end", vec![vec![0x52, 0x7f, 0x01]]),
        ("a detection that does not decode", vec![detection_garbage]),
        ("sequence numbers out of order", vec![good(7), good(6)]),
        ("a sequence number of 0", vec![good(0)]),
    ];
    for (i, (what, records)) in cases.into_iter().enumerate() {
        let e = send_raw(&server, &identity, 10 + i as u64, records)
            .await
            .expect_err(what);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
        assert!(!e.message().is_empty(), "{what}");
        assert_eq!(
            store.high_water(&device).unwrap(),
            1,
            "{what}: nothing stored"
        );
    }
    // A gap is not an error (a full spool drops oldest first): stored, the
    // mark moves past it, and what lies below the mark is a re-send.
    let ack = send_raw(&server, &identity, 20, vec![good(2), good(9)])
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.stored_through), (2, 9));
    let ack = send_raw(&server, &identity, 21, vec![good(5)])
        .await
        .unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (0, 1));
    // An empty batch is acknowledged and stores nothing.
    let ack = send_raw(&server, &identity, 22, Vec::new()).await.unwrap();
    assert_eq!((ack.accepted, ack.stored_through), (0, 9));
    // A huge argv (20,000 arguments, 2 MiB) and paths that are not UTF-8 are
    // stored as sent, and found.
    let argv: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("arg-{i:05}-{}", "y".repeat(90)).into_bytes())
        .collect();
    let odd = b"/tmp/\xff\xfe-not-utf8/bin".to_vec();
    let ack = send_raw(&server, &identity, 23, vec![start(10, argv, &odd)])
        .await
        .unwrap();
    assert_eq!(ack.stored_through, 10);
    let (_, bytes) = &store.records(&device, 9, 1).unwrap()[0];
    use prost::Message;
    let r = vigil_proto::v1::Record::decode(bytes.as_slice()).unwrap();
    let Some(Payload::ProcessStart(s)) = r.payload else {
        panic!("not a process start")
    };
    assert_eq!((s.argv.len(), s.executable.unwrap().raw), (20_000, odd));
    // The analyst side still answers.
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let mut pages = hunt
        .search_events(with_token(
            SearchEventsRequest {
                device_id: device.clone(),
                kind: "process_start".into(),
                ..Default::default()
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(p) = pages.next().await {
        n += p.unwrap().records.len();
    }
    assert_eq!(n, 4, "records 1, 2, 9 and 10");
    server.stop().await;
}

/// Configurations of the wrong types or out of range: refused at load,
/// naming the field.
#[test]
fn configurations_of_wrong_types_are_refused_naming_the_field() {
    for (text, field) in [
        ("data_dir = 5\n", "data_dir"),
        (
            "data_dir = \"/x\"\n[spool]\ncapacity_mb = \"big\"\n",
            "capacity_mb",
        ),
        (
            "data_dir = \"/x\"\n[spool]\ncapacity_mb = 0\n",
            "spool.capacity_mb",
        ),
        ("data_dir = \"/x\"\n[collect]\nebpf = \"yes\"\n", "ebpf"),
        (
            "data_dir = \"/x\"\n[privacy]\nredact = [{ name = \"x\", regex = \"(\" }]\n",
            "privacy.redact",
        ),
        (
            "data_dir = \"/x\"\n[privacy]\noptional_data = 1\n",
            "optional_data",
        ),
        ("data_dir = \"/x\"\nunknown = 1\n", "unknown"),
        ("data_dir = [\n", "toml"),
    ] {
        let e = vigil_sensor::SensorConfig::parse(std::path::Path::new("sensor.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(
            e.contains(field) || e.to_lowercase().contains(field),
            "{text:?}: {e}"
        );
        assert!(e.contains("sensor.toml"), "{e}");
    }
}
