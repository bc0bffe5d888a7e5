//! End to end through the real things: kernel events (audit netlink), a local
//! Sigma rule, gRPC over mutual TLS, the tenant-segregated encrypted store,
//! alerts, and the analyst API.

mod support;

use prost::Message;
use std::time::{Duration, Instant};
use support::{TestServer, sensor_config, with_token};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Identity;
use vigil_proto::v1::{
    Detection, EnrollRequest, GetAlertRequest, ListAlertsRequest, ProcessRef, ProcessStart, Record,
    RecordBatch, record::Payload,
};

const SHADOW_RULE: &str = "6b0e3f4a-9c1d-4f57-b0a8-3c2d7e5f9a11";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_event_becomes_an_alert_only_its_tenant_sees() {
    let Some(_turn) =
        support::kernel_test("kernel_event_becomes_an_alert_only_its_tenant_sees").await
    else {
        return;
    };
    let server = TestServer::start().await;
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    server
        .control
        .create_tenant(Some("globex"), "Globex", "local", 90)
        .unwrap();
    let acme = server
        .control
        .create_api_token(
            Some("acme"),
            vigil_store::Role::Analyst,
            "acme analyst",
            0,
            "test",
        )
        .map(|t| t.0)
        .unwrap();
    let globex = server
        .control
        .create_api_token(
            Some("globex"),
            vigil_store::Role::Analyst,
            "globex analyst",
            0,
            "test",
        )
        .map(|t| t.0)
        .unwrap();
    let enroll_token = server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();

    let cfg = sensor_config(&server, &enroll_token);
    let Some(sensor) =
        support::start_kernel_sensor("kernel_event_becomes_an_alert_only_its_tenant_sees", cfg)
            .await
    else {
        return;
    };
    let mut local = sensor.detections();

    // A process that lives for about a millisecond: audit must still capture its argv.
    let status = std::process::Command::new("sh")
        .args(["-c", "cat /etc/shadow > /dev/null; true"])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();

    // Offline detection: the sensor raises it locally, server or not.
    let d = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let d = local.recv().await.expect("detection channel open");
            if d.process
                .as_ref()
                .is_some_and(|p| p.command_line == "cat /etc/shadow")
            {
                return d;
            }
        }
    })
    .await
    .expect("local detection within 10 s");
    assert_eq!(d.rule_id, SHADOW_RULE);

    let mut client = server.alerts().await;
    let alert = loop {
        let list = client
            .list_alerts(with_token(
                ListAlertsRequest {
                    rule_id: SHADOW_RULE.into(),
                    ..Default::default()
                },
                &acme,
            ))
            .await
            .expect("acme can list")
            .into_inner();
        if let Some(a) = list.alerts.into_iter().find(|a| {
            a.process
                .as_ref()
                .is_some_and(|p| p.command_line == "cat /etc/shadow")
        }) {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no alert within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("alert visible after {:?}", started.elapsed());
    assert_eq!(alert.severity, vigil_proto::v1::Severity::High as i32);
    assert_eq!(alert.status, vigil_proto::v1::AlertStatus::New as i32);
    assert_eq!(alert.device_id, sensor.identity.as_ref().unwrap().device_id);
    assert!(alert.tags.iter().any(|t| t == "attack.t1003.008"));
    let process = alert.process.clone().unwrap();
    assert_eq!(process.executable.unwrap().text, "/usr/bin/cat");
    // The matched event carries what the kernel saw, including the parent shell.
    let matched = &alert.detection.as_ref().unwrap().matched[0];
    assert!(matched.sequence > 0);
    match &matched.payload {
        Some(Payload::ProcessStart(p)) => {
            assert_eq!(p.argv, vec![b"cat".to_vec(), b"/etc/shadow".to_vec()]);
            assert_eq!(p.origin, "kernel");
            assert!(
                p.parent
                    .as_ref()
                    .is_some_and(|pp| pp.command_line.starts_with("sh -c")),
                "parent: {:?}",
                p.parent
            );
            assert!(!p.guid.is_empty() && !p.parent_guid.is_empty());
            assert_eq!(p.executable_hashes.as_ref().unwrap().sha256.len(), 32);
        }
        other => panic!("matched event is not a process start: {other:?}"),
    }

    // The other tenant sees nothing, not even by id.
    let theirs = client
        .list_alerts(with_token(ListAlertsRequest::default(), &globex))
        .await
        .unwrap()
        .into_inner();
    assert!(
        theirs.alerts.is_empty(),
        "globex sees acme's alerts: {:?}",
        theirs.alerts
    );
    let err = client
        .get_alert(with_token(
            GetAlertRequest {
                id: alert.id.clone(),
            },
            &globex,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mine = client
        .get_alert(with_token(
            GetAlertRequest {
                id: alert.id.clone(),
            },
            &acme,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.id, alert.id);
    // No token, or a wrong one, gets nothing.
    let err = client
        .list_alerts(ListAlertsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .list_alerts(with_token(ListAlertsRequest::default(), "vgl_api_nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    sensor.shutdown().await;
    server.stop().await;
}

async fn alerts_for(
    server: &TestServer,
    token: &str,
    command_line: &str,
) -> Vec<vigil_proto::v1::Alert> {
    let list = server
        .alerts()
        .await
        .list_alerts(with_token(ListAlertsRequest::default(), token))
        .await
        .expect("list")
        .into_inner();
    list.alerts
        .into_iter()
        .filter(|a| {
            a.process
                .as_ref()
                .is_some_and(|p| p.command_line == command_line)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_made_while_the_server_is_down_arrive_once_after_it_returns() {
    let Some(_turn) = support::kernel_test(
        "detections_made_while_the_server_is_down_arrive_once_after_it_returns",
    )
    .await
    else {
        return;
    };
    let server = TestServer::start().await;
    let (analyst, token) = server.tenant("acme", vigil_store::Role::Analyst);
    let Some(sensor) = support::start_kernel_sensor(
        "detections_made_while_the_server_is_down_arrive_once_after_it_returns",
        sensor_config(&server, &token),
    )
    .await
    else {
        return;
    };
    let mut local = sensor.detections();

    // Server down: the sensor keeps detecting, offline, and spools.
    let cmd = "cat /etc/shadow";
    let down = server.pause().await;
    let status = std::process::Command::new("cat")
        .arg("/etc/shadow")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let d = tokio::time::timeout(Duration::from_secs(10), local.recv())
        .await
        .expect("local detection while offline")
        .unwrap();
    assert_eq!(d.rule_id, SHADOW_RULE);
    // Give the uplink time to fail and back off a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let server = down.resume().await;
    let started = Instant::now();
    loop {
        let found = alerts_for(&server, &analyst, cmd).await;
        if !found.is_empty() {
            // Wait a little longer: a duplicate would show up now if re-sending stored twice.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                alerts_for(&server, &analyst, cmd).await.len(),
                1,
                "delivered more than once"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "spooled detection never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sensor.shutdown().await;
    server.stop().await;
}

async fn tls_handshake(
    server: &TestServer,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::io::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(server.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_added_while_the_sensor_runs_takes_effect() {
    let Some(_turn) = support::kernel_test("a_rule_added_while_the_sensor_runs_takes_effect").await
    else {
        return;
    };
    let server = TestServer::start().await;
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    let token = server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();
    let rules = tempfile::tempdir().unwrap();
    let cfg = support::sensor_config_with_rules(&server, &token, rules.path());
    let Some(sensor) =
        support::start_kernel_sensor("a_rule_added_while_the_sensor_runs_takes_effect", cfg).await
    else {
        return;
    };
    let mut local = sensor.detections();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rules/linux/process_creation/proc_creation_lnx_shadow_file_read.yml");
    std::fs::copy(&shipped, rules.path().join("shadow.yml")).unwrap();
    // Reloads settle for 300 ms; keep triggering until the new rule answers.
    let started = Instant::now();
    let detection = loop {
        let _ = std::process::Command::new("cat")
            .arg("/etc/shadow")
            .stdout(std::process::Stdio::null())
            .status();
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(500), local.recv()).await {
            break d;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the added rule never fired"
        );
    };
    assert_eq!(detection.rule_id, SHADOW_RULE);
    sensor.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn tls_below_1_3_is_refused() {
    let server = TestServer::start().await;
    assert!(
        tls_handshake(&server, &rustls::version::TLS13)
            .await
            .is_ok(),
        "TLS 1.3 must work"
    );
    assert!(
        tls_handshake(&server, &rustls::version::TLS12)
            .await
            .is_err(),
        "TLS 1.2 must be refused"
    );
    server.stop().await;
}

#[tokio::test]
async fn enrollment_refuses_wrong_and_expired_tokens() {
    let server = TestServer::start().await;
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();
    let (_key, csr) = vigil_pki::device_key_and_csr("h").unwrap();
    let mut c = server.ingest(None).await;

    let wrong = c
        .enroll(EnrollRequest {
            enrollment_token: "vgl_enroll_wrong".into(),
            csr_pem: csr.clone(),
            host: None,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    let expired = server
        .control
        .create_enrollment_token("acme", Duration::ZERO, "test")
        .map(|t| t.0)
        .unwrap();
    let err = c
        .enroll(EnrollRequest {
            enrollment_token: expired,
            csr_pem: csr.clone(),
            host: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());

    let good = server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .map(|t| t.0)
        .unwrap();
    let err = c
        .enroll(EnrollRequest {
            enrollment_token: good.clone(),
            csr_pem: "not a csr".into(),
            host: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let ok = c
        .enroll(EnrollRequest {
            enrollment_token: good,
            csr_pem: csr,
            host: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.tenant_id, "acme");
    let id =
        vigil_pki::device_identity(&vigil_pki::pem_to_der(&ok.certificate_pem).unwrap()).unwrap();
    assert_eq!(
        (id.tenant_id.as_str(), id.device_id.as_str()),
        ("acme", ok.device_id.as_str())
    );
    server.stop().await;
}

fn batch(id: u64, seqs: std::ops::RangeInclusive<u64>, detection_at: Option<u64>) -> RecordBatch {
    let records = seqs
        .map(|seq| {
            let start = ProcessStart {
                pid: seq as u32,
                command_line: format!("proc {seq}"),
                ..Default::default()
            };
            let payload = if Some(seq) == detection_at {
                Payload::Detection(Detection {
                    rule_id: "r1".into(),
                    rule_title: "Test rule".into(),
                    level: "medium".into(),
                    // A process of its own: detections of one rule aggregate per process tree.
                    process: Some(ProcessRef {
                        guid: format!("proc-{seq}"),
                        pid: 7,
                        command_line: "evil".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            } else {
                Payload::ProcessStart(start)
            };
            Record {
                sequence: seq,
                time_unix_ns: 1,
                payload: Some(payload),
                ..Default::default()
            }
        })
        .collect();
    RecordBatch {
        batch_id: id,
        records,
    }
}

#[tokio::test]
async fn ingest_stream_requires_a_device_certificate() {
    let server = TestServer::start().await;
    server
        .control
        .create_tenant(Some("acme"), "Acme", "local", 90)
        .unwrap();

    // No client certificate at all.
    let mut anon = server.ingest(None).await;
    let err = anon
        .stream(tokio_stream::iter(vec![batch(1, 1..=1, None)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // A certificate from another CA fails the TLS handshake.
    let rogue = vigil_pki::CertificateAuthority::generate("rogue").unwrap();
    let (key, csr) = vigil_pki::device_key_and_csr("h").unwrap();
    let forged = vigil_pki::DeviceIdentity {
        tenant_id: "acme".into(),
        device_id: "dev1".into(),
    };
    let cert = rogue
        .sign_device(&csr, &forged, vigil_pki::DEVICE_CERT_VALIDITY)
        .unwrap();
    let refused = match server.channel(Some(Identity::from_pem(&cert, &key))).await {
        Err(_) => true,
        Ok(ch) => vigil_proto::v1::ingest_client::IngestClient::new(ch)
            .stream(tokio_stream::iter(vec![batch(1, 1..=1, None)]))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a certificate from a foreign CA must not open the stream"
    );

    // Our CA, but a device the server never enrolled.
    let cert = server
        .ca()
        .sign_device(&csr, &forged, vigil_pki::DEVICE_CERT_VALIDITY)
        .unwrap();
    let mut unknown = server.ingest(Some(Identity::from_pem(&cert, &key))).await;
    let err = unknown
        .stream(tokio_stream::iter(vec![batch(1, 1..=1, None)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn resent_batches_store_once_and_bad_streams_do_not_hurt_others() {
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
    let (identity, device) = support::enroll(&server, "acme").await;

    let mut c = server.ingest(Some(identity.clone())).await;
    let acks: Vec<_> = c
        .stream(tokio_stream::iter(vec![
            batch(1, 1..=3, Some(2)),
            batch(2, 1..=3, Some(2)),
            batch(3, 4..=5, None),
        ]))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(acks.len(), 3);
    assert_eq!(
        (acks[0].accepted, acks[0].duplicates, acks[0].stored_through),
        (3, 0, 3)
    );
    assert_eq!(
        (acks[1].accepted, acks[1].duplicates, acks[1].stored_through),
        (0, 3, 3)
    );
    assert_eq!((acks[2].accepted, acks[2].stored_through), (2, 5));
    let store = server.control.tenant_store("acme").unwrap();
    assert_eq!(store.records(&device, 0, 100).unwrap().len(), 5);
    let mut alerts = server.alerts().await;
    let list = alerts
        .list_alerts(with_token(ListAlertsRequest::default(), &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.alerts.len(), 1, "a re-sent detection raises one alert");
    assert_eq!(list.alerts[0].device_id, device);
    // What is stored decodes to what was sent.
    let (_, bytes) = &store.records(&device, 1, 1).unwrap()[0];
    assert!(matches!(
        Record::decode(bytes.as_slice()).unwrap().payload,
        Some(Payload::Detection(_))
    ));

    // Out-of-order sequences are refused with a status.
    let mut bad = batch(4, 6..=7, None);
    bad.records.swap(0, 1);
    let mut s = c
        .stream(tokio_stream::iter(vec![bad]))
        .await
        .unwrap()
        .into_inner();
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // An oversized message is refused; the server keeps serving.
    let mut big = batch(5, 6..=6, None);
    if let Some(Payload::ProcessStart(p)) = &mut big.records[0].payload {
        p.command_line = "x".repeat(5 * 1024 * 1024);
    }
    let mut big_client = server
        .ingest(Some(identity))
        .await
        .max_encoding_message_size(64 * 1024 * 1024);
    let outcome = match big_client.stream(tokio_stream::iter(vec![big])).await {
        Err(s) => Some(s.code()),
        Ok(r) => r
            .into_inner()
            .next()
            .await
            .and_then(|r| r.err())
            .map(|s| s.code()),
    };
    assert!(outcome.is_some(), "oversized batch was accepted");
    let again = alerts
        .list_alerts(with_token(ListAlertsRequest::default(), &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.alerts.len(), 1);
    assert_eq!(store.high_water(&device).unwrap(), 5);

    // Paging walks every alert exactly once.
    let more: Vec<RecordBatch> = (0..5)
        .map(|i| batch(10 + i, (6 + i)..=(6 + i), Some(6 + i)))
        .collect();
    let mut c2 = server
        .ingest(Some(support::enroll(&server, "acme").await.0))
        .await;
    let _ = c2
        .stream(tokio_stream::iter(more))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = alerts
            .list_alerts(with_token(
                ListAlertsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &analyst,
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.alerts.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!((seen.len(), dedup.len()), (6, 6));
    server.stop().await;
}
