//! What operators rely on, through a real server and real TLS: gRPC
//! reflection and health, Prometheus metrics, and sensors that keep trusting
//! only the server CA they enrolled with.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{TestServer, sensor_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::Identity;
use vigil_proto::v1::{ProcessStart, Record, RecordBatch, record::Payload};

#[tokio::test]
async fn reflection_lists_every_service_and_health_answers_serving() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let channel = server.channel(None).await.expect("connects over TLS");
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let ask = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "vigil.v1.Admin".into(),
        )),
    ];
    let answers: Vec<_> = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection answers")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("reflection stream");
    assert_eq!(answers.len(), 3);
    let Some(MessageResponse::ListServicesResponse(list)) = &answers[0].message_response else {
        panic!("not a service list: {:?}", answers[0]);
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "vigil.v1.Ingest",
        "vigil.v1.Alerts",
        "vigil.v1.Operator",
        "vigil.v1.Admin",
        "vigil.v1.Audit",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} not listed: {names:?}");
    }
    // Each service can be described, not only listed (grpcurl describe).
    for answer in &answers[1..] {
        match &answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(f)) => {
                assert!(!f.file_descriptor_proto.is_empty())
            }
            other => panic!("no descriptor: {other:?}"),
        }
    }

    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut health = HealthClient::new(channel);
    for service in ["", "vigil.v1.Ingest", "vigil.v1.Alerts"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    server.stop().await;
}

fn batch(id: u64, seqs: std::ops::RangeInclusive<u64>) -> RecordBatch {
    let records = seqs
        .map(|sequence| Record {
            sequence,
            time_unix_ns: 1,
            payload: Some(Payload::ProcessStart(ProcessStart {
                pid: sequence as u32,
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    RecordBatch {
        batch_id: id,
        records,
    }
}

/// Sends `batches` on one stream and waits for every acknowledgement.
async fn send(server: &TestServer, identity: Identity, batches: Vec<RecordBatch>) {
    let n = batches.len();
    let acks = server
        .ingest(Some(identity))
        .await
        .stream(tokio_stream::iter(batches))
        .await
        .expect("stream opens")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("acknowledged");
    assert_eq!(acks.len(), n);
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `GET /metrics` over plain HTTP/1.1: the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .expect("answers in time")
        .expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_stored_records_per_tenant_on_their_own_port() {
    let metrics = free_port();
    let server = TestServer::start_with(|c| c.metrics_listen = Some(metrics)).await;
    server
        .control
        .create_tenant(Some("metrics-acme"), "Acme", "local", 90)
        .unwrap();
    let identity = support::enroll(&server, "metrics-acme").await.0;
    send(&server, identity.clone(), vec![batch(1, 1..=3)]).await;
    // Re-sent: stored once, counted as duplicates.
    send(&server, identity, vec![batch(2, 1..=3)]).await;
    // A stream without a device certificate is refused, and counted.
    let refused = server
        .ingest(None)
        .await
        .stream(tokio_stream::iter(vec![batch(1, 1..=1)]))
        .await;
    assert!(refused.is_err());

    let body = scrape(metrics).await;
    let acme = |name: &str| sample(&body, &format!("{name}{{tenant=\"metrics-acme\"}}"));
    assert_eq!(acme("vigil_ingest_records_total"), Some(3.0), "{body}");
    assert_eq!(acme("vigil_ingest_duplicates_total"), Some(3.0), "{body}");
    assert_eq!(acme("vigil_ingest_batches_total"), Some(2.0), "{body}");
    assert!(
        sample(&body, "vigil_ingest_batch_seconds_count").is_some_and(|n| n >= 2.0),
        "a histogram with buckets: {body}"
    );
    assert!(
        body.contains("vigil_ingest_batch_seconds_bucket{le="),
        "{body}"
    );
    assert!(
        sample(
            &body,
            "vigil_refused_calls_total{reason=\"unauthenticated\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );

    // A second server in the same process, configured with another metrics
    // address: it starts, and records through the first one's exporter.
    let second = TestServer::start_with(|c| c.metrics_listen = Some(free_port())).await;
    second
        .control
        .create_tenant(Some("metrics-beta"), "Beta", "local", 90)
        .unwrap();
    send(
        &second,
        support::enroll(&second, "metrics-beta").await.0,
        vec![batch(1, 1..=2)],
    )
    .await;
    let body = scrape(metrics).await;
    assert_eq!(
        sample(&body, "vigil_ingest_records_total{tenant=\"metrics-beta\"}"),
        Some(2.0),
        "{body}"
    );
    second.stop().await;
    server.stop().await;
}

/// A sensor without kernel collectors: only its uplink matters here.
fn quiet_sensor_config(server: &TestServer, token: &str) -> vigil_sensor::SensorConfig {
    let mut cfg = sensor_config(server, token);
    cfg.collect.ebpf = false;
    cfg.collect.audit = false;
    cfg.collect.proc_connector = false;
    cfg.collect.files = false;
    cfg.collect.network = false;
    cfg.collect.inventory = false;
    cfg
}

/// Points `cfg` at `server`: its endpoint and its CA file.
fn pointed_at(cfg: &vigil_sensor::SensorConfig, server: &TestServer) -> vigil_sensor::SensorConfig {
    let mut cfg = cfg.clone();
    let s = cfg.server.as_mut().expect("server section");
    s.endpoint = server.endpoint();
    s.ca_file = server.ca_file();
    cfg
}

/// Polls the sensor's uplink status until `done` holds or `within` passes; the last status.
async fn uplink_until(
    sensor: &vigil_sensor::Sensor,
    within: Duration,
    done: impl Fn(&vigil_sensor::uplink::UplinkStatus) -> bool,
) -> vigil_sensor::uplink::UplinkStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = sensor.uplink_status().expect("a connected sensor");
        if done(&status) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pinned(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(vigil_sensor::uplink::pin::PIN_FILE)).ok()
}

/// A sensor configuration that enrolls into a new tenant `acme` of `home`.
fn acme_sensor_config(home: &TestServer) -> vigil_sensor::SensorConfig {
    home.control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    let token = home
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();
    quiet_sensor_config(home, &token)
}

/// What rustls says when the server's certificate is not from a trusted CA:
/// the sensor itself refused the server.
const SENSOR_REFUSED_SERVER: &str = "invalid peer certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_sensor_refuses_a_server_of_another_ca_even_when_configured_to_trust_it() {
    let home = TestServer::start().await;
    let cfg = acme_sensor_config(&home);
    let sensor = vigil_sensor::Sensor::start(cfg.clone())
        .await
        .expect("enrolls");
    let status = uplink_until(&sensor, Duration::from_secs(20), |s| s.sessions_opened > 0).await;
    assert!(
        status.sessions_opened > 0,
        "never connected home: {status:?}"
    );
    assert_eq!(pinned(&cfg.data_dir).as_deref(), Some(home.ca_pem.as_str()));
    sensor.shutdown().await;

    // Another server, with a CA of its own; the configuration now names both
    // its endpoint and its CA, as an attacker who can edit it would.
    let other = TestServer::start().await;
    assert_ne!(other.ca_pem, home.ca_pem);
    let redirected = pointed_at(&cfg, &other);
    let sensor = vigil_sensor::Sensor::start(redirected.clone())
        .await
        .expect("starts");
    let status = uplink_until(&sensor, Duration::from_secs(4), |s| {
        s.sessions_opened > 0 || s.last_error.is_some()
    })
    .await;
    // Refused by the sensor, at the server's certificate: the pin, not the
    // CA file, decided.
    assert_eq!(status.sessions_opened, 0, "{status:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains(SENSOR_REFUSED_SERVER), "{status:?}");
    // And it keeps refusing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = sensor.uplink_status().unwrap();
    assert_eq!((status.sessions_opened, status.connected), (0, false));
    sensor.shutdown().await;
    assert_eq!(pinned(&cfg.data_dir).as_deref(), Some(home.ca_pem.as_str()));

    // The control: without the pin the sensor trusts the configured CA, so it
    // is the other server that refuses it (its device certificate is not from
    // that server's CA), not the sensor. This is what the pin prevented.
    std::fs::remove_file(cfg.data_dir.join(vigil_sensor::uplink::pin::PIN_FILE)).unwrap();
    let sensor = vigil_sensor::Sensor::start(redirected)
        .await
        .expect("starts");
    let status = uplink_until(&sensor, Duration::from_secs(10), |s| s.last_error.is_some()).await;
    assert_eq!(status.sessions_opened, 0, "{status:?}");
    let error = status.last_error.clone().expect("a failed connection");
    assert!(!error.contains(SENSOR_REFUSED_SERVER), "{status:?}");
    sensor.shutdown().await;
    assert_eq!(
        pinned(&cfg.data_dir),
        None,
        "a failed connection pins nothing"
    );

    other.stop().await;
    home.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_enrolled_before_pinning_pins_its_ca_at_first_connect_then_ignores_the_ca_file() {
    let home = TestServer::start().await;
    let cfg = acme_sensor_config(&home);
    let sensor = vigil_sensor::Sensor::start(cfg.clone())
        .await
        .expect("enrolls");
    sensor.shutdown().await;
    // As a device enrolled before pinning existed left its data directory.
    std::fs::remove_file(cfg.data_dir.join(vigil_sensor::uplink::pin::PIN_FILE)).unwrap();

    let sensor = vigil_sensor::Sensor::start(cfg.clone())
        .await
        .expect("starts");
    let status = uplink_until(&sensor, Duration::from_secs(20), |s| s.sessions_opened > 0).await;
    assert!(status.sessions_opened > 0, "{status:?}");
    sensor.shutdown().await;
    assert_eq!(pinned(&cfg.data_dir).as_deref(), Some(home.ca_pem.as_str()));

    // The CA file changes (the endpoint does not): the pin is still trusted.
    let other = TestServer::start().await;
    let mut changed = cfg.clone();
    changed.server.as_mut().unwrap().ca_file = other.ca_file();
    let sensor = vigil_sensor::Sensor::start(changed).await.expect("starts");
    let status = uplink_until(&sensor, Duration::from_secs(20), |s| s.sessions_opened > 0).await;
    assert!(status.sessions_opened > 0, "{status:?}");
    sensor.shutdown().await;
    assert_eq!(pinned(&cfg.data_dir).as_deref(), Some(home.ca_pem.as_str()));
    other.stop().await;
    home.stop().await;
}

#[tokio::test]
async fn enrollment_fails_when_the_server_is_not_of_the_configured_ca() {
    let home = TestServer::start().await;
    home.control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    let token = home
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();
    let mut cfg = quiet_sensor_config(&home, &token);
    // The CA file holds the server's CA and another one: the TLS handshake
    // verifies, but the CA the server names is not all the file says to trust.
    let bundle = cfg.data_dir.with_file_name("bundle.pem");
    let stranger = vigil_pki::CertificateAuthority::generate("stranger").unwrap();
    std::fs::write(&bundle, format!("{}{}", home.ca_pem, stranger.cert_pem())).unwrap();
    cfg.server.as_mut().unwrap().ca_file = bundle.clone();
    let err = vigil_sensor::Sensor::start(cfg.clone())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("server.ca_file") && text.contains(&bundle.display().to_string()),
        "{text}"
    );
    assert_eq!(pinned(&cfg.data_dir), None);
    assert!(vigil_sensor::uplink::DeviceIdentity::load(&cfg.data_dir).is_none());
    home.stop().await;
}
