//! Rule distribution (issue 14, item 5) over the real server and mutual TLS:
//! publish, refusal naming file and line, rollback, tenant isolation, roles,
//! the audit trail, and a real sensor that picks a published set up and says
//! so in the device list. No kernel events are needed: what a sensor runs is
//! observed through what it reports.

mod support;

use std::time::{Duration, Instant};
use support::{TestServer, with_token};
use tokio_stream::StreamExt;
use tonic::Code;
use vigil_proto::v1::{
    ListDevicesRequest, ListRuleVersionsRequest, PublishRulesRequest, RollbackRulesRequest,
    RuleFile, RuleSetUpdate, RulesRunning, admin_client::AdminClient, rules_client::RulesClient,
};
use vigil_store::Role;

const RULE: &str = "title: Published\nid: published-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s: {Image|endswith: /published-marker}\n  condition: s\nlevel: high\n";
const BROKEN: &str = "title: Broken\nid: broken-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s: {Image|nosuchmodifier: /x}\n  condition: s\n";

fn files(list: &[(&str, &str)]) -> PublishRulesRequest {
    PublishRulesRequest {
        files: list
            .iter()
            .map(|(p, t)| RuleFile {
                path: (*p).into(),
                text: (*t).into(),
            })
            .collect(),
    }
}

async fn setup() -> (TestServer, String, String) {
    let server = TestServer::start().await;
    for t in ["acme", "other"] {
        server
            .control
            .create_tenant(Some(t), t, "local", 90)
            .unwrap();
    }
    let analyst = server
        .control
        .create_api_token(Some("acme"), Role::Analyst, "rule author", 0, "test")
        .unwrap()
        .0;
    let reader = server
        .control
        .create_api_token(Some("acme"), Role::ReadOnly, "reader", 0, "test")
        .unwrap()
        .0;
    (server, analyst, reader)
}

/// Opens a sensor's rule watch with the device certificate, saying it runs `have`.
async fn watch(
    server: &TestServer,
    identity: tonic::transport::Identity,
    have: u64,
) -> (
    tonic::Streaming<RuleSetUpdate>,
    tokio::sync::mpsc::Sender<RulesRunning>,
) {
    let mut c = RulesClient::new(server.channel(Some(identity)).await.unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(RulesRunning {
        version: format!("v{have}"),
        published_version: have,
    })
    .await
    .unwrap();
    let s = c
        .watch_rules(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (s, tx)
}

async fn next(s: &mut tonic::Streaming<RuleSetUpdate>) -> Option<RuleSetUpdate> {
    match tokio::time::timeout(Duration::from_secs(2), s.next()).await {
        Ok(Some(Ok(u))) => Some(u),
        _ => None,
    }
}

#[tokio::test]
async fn publish_refuse_rollback_and_isolation() {
    let (server, analyst, reader) = setup().await;
    let mut rules = RulesClient::new(server.channel(None).await.unwrap());
    let (acme_dev, _) = support::enroll(&server, "acme").await;
    let (other_dev, _) = support::enroll(&server, "other").await;
    let (mut acme, _acme_tx) = watch(&server, acme_dev, 0).await;
    let (mut other, _other_tx) = watch(&server, other_dev, 0).await;

    // Published: the tenant's sensor receives it at once.
    let t = Instant::now();
    let r = rules
        .publish_rules(with_token(files(&[("a/good.yml", RULE)]), &analyst))
        .await
        .unwrap()
        .into_inner();
    let v1 = r.published.unwrap();
    assert_eq!((v1.version, v1.rules, r.loaded), (1, 1, 1));
    let u = next(&mut acme)
        .await
        .expect("the sensor's watch gets version 1");
    eprintln!("publish → update at the sensor: {:?}", t.elapsed());
    assert_eq!(u.version, 1);
    let (set, report) = vigil_rules::RuleSet::from_bundle(
        std::path::Path::new("x"),
        std::str::from_utf8(&u.bundle).unwrap(),
    );
    assert!(report.rejected.is_empty());
    assert_eq!(set.rules()[0].id, "published-1");

    // A broken rule: refused naming file and line; nothing changes.
    let err = rules
        .publish_rules(with_token(
            files(&[("a/good.yml", RULE), ("a/bad.yml", BROKEN)]),
            &analyst,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("a/bad.yml:5"), "{}", err.message());
    let versions = rules
        .list_rule_versions(with_token(ListRuleVersionsRequest {}, &analyst))
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(versions.len(), 1);

    // A second version, then back to the first as version 3.
    rules
        .publish_rules(with_token(
            files(&[("b.yml", RULE.replace("published-1", "published-2").as_str())]),
            &analyst,
        ))
        .await
        .unwrap();
    assert_eq!(next(&mut acme).await.map(|u| u.version), Some(2));
    let v3 = rules
        .rollback_rules(with_token(RollbackRulesRequest { version: 1 }, &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v3.version, v3.copied_from, v3.current), (3, 1, true));
    let u = next(&mut acme).await.expect("version 3");
    assert_eq!(u.version, 3);
    assert!(
        std::str::from_utf8(&u.bundle)
            .unwrap()
            .contains("published-1")
    );

    // Another tenant's sensor never hears of it.
    assert!(next(&mut other).await.is_none());

    // Read-only may list, never publish or roll back.
    let err = rules
        .publish_rules(with_token(files(&[("a.yml", RULE)]), &reader))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = rules
        .rollback_rules(with_token(RollbackRulesRequest { version: 1 }, &reader))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Audited, without rule text.
    let log = std::fs::read_to_string(server.control.tenant_audit_path("acme").unwrap()).unwrap();
    assert!(log.contains("Rules/PublishRules"));
    assert!(log.contains("Rules/RollbackRules"));
    assert!(!log.contains("published-marker"));
    server.stop().await;
}

#[tokio::test]
async fn a_connected_sensor_runs_a_published_set_and_reports_it() {
    let (server, analyst, _) = setup().await;
    let admin = server
        .control
        .create_api_token(Some("acme"), Role::Admin, "admin", 0, "test")
        .unwrap()
        .0;
    let token = server
        .control
        .create_enrollment_token("acme", Duration::from_secs(60), "test")
        .unwrap()
        .0;
    let mut cfg = support::sensor_config(&server, &token);
    cfg.collect.ebpf = false;
    cfg.collect.audit = false;
    cfg.collect.proc_connector = false;
    let data_dir = cfg.data_dir.clone();
    let sensor = vigil_sensor::Sensor::start(cfg).await.unwrap();
    let mut rules = RulesClient::new(server.channel(None).await.unwrap());
    let mut devices = AdminClient::new(server.channel(None).await.unwrap());
    // The sensor connects its watch (reporting its local rules) first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    rules
        .publish_rules(with_token(files(&[("good.yml", RULE)]), &analyst))
        .await
        .unwrap();
    loop {
        let listed = devices
            .list_devices(with_token(ListDevicesRequest {}, &admin))
            .await
            .unwrap()
            .into_inner()
            .devices;
        if listed.first().is_some_and(|d| d.rules_version == "v1") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the sensor never reported version 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("publish → sensor reports v1: {:?}", t.elapsed());
    assert!(data_dir.join("published-rules.json").exists());
    sensor.shutdown().await;
    server.stop().await;
}
