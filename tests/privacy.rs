//! Privacy on the device (issue 15), through the real kernel sensor and a
//! real server over mutual TLS: a secret in a real process's command line is
//! replaced before it is evaluated, spooled or sent — the server holds the
//! command line with `--password=[REDACTED]`, and no file the sensor or the
//! server wrote holds the secret. Needs root (kernel sources); says so and
//! passes without.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::{TestServer, sensor_config, with_token};
use tokio_stream::StreamExt;
use vigil_proto::v1::{FieldCondition, MatchOp, SearchEventsRequest, hunt_client::HuntClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_command_line_never_reaches_the_spool_or_the_server() {
    let name = "a_secret_in_a_command_line_never_reaches_the_spool_or_the_server";
    let Some(_turn) = support::kernel_test(name).await else {
        return;
    };
    let server = TestServer::start().await;
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    let analyst = server
        .control
        .create_api_token(Some("acme"), vigil_store::Role::Analyst, "a", 0, "test")
        .map(|t| t.0)
        .unwrap();
    let enroll = server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();
    let Some(sensor) = support::start_kernel_sensor(name, sensor_config(&server, &enroll)).await
    else {
        return;
    };
    let pid = std::process::id();
    let marker = format!("vigil-privacy-{pid}");
    let secret = format!("S3cr3t-{pid}-Hunter2");
    let mut hunt = HuntClient::new(server.channel(None).await.unwrap());
    let started = Instant::now();
    let line = loop {
        std::process::Command::new("true")
            .args([marker.clone(), format!("--password={secret}")])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut pages = hunt
            .search_events(with_token(
                SearchEventsRequest {
                    kind: "process_start".into(),
                    conditions: vec![FieldCondition {
                        field: "CommandLine".into(),
                        op: MatchOp::Contains as i32,
                        value: marker.clone(),
                    }],
                    ..Default::default()
                },
                &analyst,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut found = None;
        while let Some(p) = pages.next().await {
            for r in p.unwrap().records {
                if let Some(vigil_proto::v1::record::Payload::ProcessStart(s)) =
                    r.record.and_then(|r| r.payload)
                {
                    found = Some(s.command_line);
                }
            }
        }
        if let Some(l) = found {
            break l;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the process never reached the server"
        );
    };
    assert_eq!(line, format!("true {marker} --password=[REDACTED]"));
    // The sensor stopped (its spool on disk) and the server's store holding
    // what it acknowledged: no file of either has the secret.
    sensor.shutdown().await;
    let mut files = 0;
    for f in support::files_under(server.dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        files += 1;
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in {}",
            f.display()
        );
    }
    assert!(files > 3, "the sensor's and the server's files were read");
    server.stop().await;
}
