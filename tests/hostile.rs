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
