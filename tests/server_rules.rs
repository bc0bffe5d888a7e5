//! Server-side rules (issue 14, item 4) over the real server and mutual TLS:
//! a published rule set with a tenant-wide correlation (the pack's "same file
//! dropped on several devices", `vigil: {scope: tenant}`) runs on the server
//! over the records of every device of the tenant. Three devices sending
//! the same file make exactly one alert naming the three and their events,
//! seen through ListAlerts and WatchAlerts; re-sends never count again; two
//! devices make none.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::tenants::{Device, Fixture, Tenant, req};
use tokio_stream::StreamExt;
use vigil_proto::v1::{
    Alert, FileEvent, FileOperation, Hashes, ListAlertsRequest, Path as PbPath, ProcessRef,
    PublishRulesRequest, Record, RecordBatch, RuleFile, WatchAlertsRequest, record::Payload,
    rules_client::RulesClient,
};

const BASE: &str =
    include_str!("../rules/linux/file_event/file_event_lnx_hashed_file_in_writable_dir.yml");
const SPREAD: &str = include_str!("../rules/linux/correlation/mr_lnx_same_file_many_devices.yml");

async fn publish(f: &Fixture, t: &Tenant) {
    let files = [
        ("file_event/base.yml", BASE),
        ("correlation/spread.yml", SPREAD),
    ]
    .iter()
    .map(|(p, text)| RuleFile {
        path: (*p).into(),
        text: (*text).into(),
    })
    .collect();
    let r = RulesClient::new(f.ch.clone())
        .publish_rules(req(PublishRulesRequest { files }, &t.admin, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.loaded, 2);
}

fn spread_id() -> String {
    let (set, report) = vigil_rules::RuleSet::load_paths(&[
        "rules/linux/correlation/mr_lnx_same_file_many_devices.yml",
        "rules/linux/file_event/file_event_lnx_hashed_file_in_writable_dir.yml",
    ]);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    set.correlations()[0].id.clone()
}

/// A file written to /tmp with a fixed SHA-256, `seq` on its device.
fn dropped(seq: u64, time: i64) -> Record {
    Record {
        sequence: seq,
        time_unix_ns: time,
        payload: Some(Payload::File(FileEvent {
            operation: FileOperation::Create as i32,
            path: Some(PbPath {
                text: "/tmp/.cache/agent".into(),
                ..Default::default()
            }),
            hashes: Some(Hashes {
                sha256: vec![0x42; 32],
                ..Default::default()
            }),
            process: Some(ProcessRef {
                guid: format!("curl-{seq}"),
                pid: 40,
                command_line: "curl -o /tmp/.cache/agent http://x".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn send(f: &Fixture, d: &Device, records: Vec<Record>) {
    let mut ingest = f.server.ingest(Some(d.identity.clone())).await;
    let batch = RecordBatch {
        batch_id: records[0].sequence,
        records,
    };
    let mut acks = ingest
        .stream(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    acks.next().await.unwrap().unwrap();
}

async fn list(f: &Fixture, t: &Tenant) -> Vec<Alert> {
    f.alerts()
        .list_alerts(req(ListAlertsRequest::default(), &t.admin, None))
        .await
        .unwrap()
        .into_inner()
        .alerts
}

/// The correlation's alerts, after the server had a second to raise any more.
async fn settled(f: &Fixture, t: &Tenant) -> Vec<Alert> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = spread_id();
    list(f, t)
        .await
        .into_iter()
        .filter(|a| a.rule_id == id)
        .collect()
}

#[tokio::test]
async fn the_same_file_on_three_devices_is_one_alert_naming_them() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    publish(&f, &acme).await;
    let mut watch = f
        .alerts()
        .watch_alerts(req(WatchAlertsRequest::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    let devices = [
        f.device(&acme).await,
        f.device(&acme).await,
        f.device(&acme).await,
    ];
    let now = f.server.control.now();
    let started = std::time::Instant::now();
    for (i, d) in devices.iter().enumerate() {
        send(
            &f,
            d,
            vec![dropped(1, now - 60_000_000_000 + i as i64 * 1_000_000_000)],
        )
        .await;
    }
    // WatchAlerts: the alert as it is raised.
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the correlation alert reaches watchers")
        .unwrap()
        .unwrap();
    eprintln!(
        "third batch sent → alert at the watcher: {:?}",
        started.elapsed()
    );
    let spread = spread_id();
    assert_eq!(seen.rule_id, spread);
    // A re-send of every batch, and one more file on the first device: nothing new.
    for d in &devices {
        send(&f, d, vec![dropped(1, now - 50_000_000_000)]).await;
    }
    send(&f, &devices[0], vec![dropped(2, now - 40_000_000_000)]).await;

    // ListAlerts: exactly one.
    let all = settled(&f, &acme).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let a = &all[0];
    assert_eq!(a.id, seen.id);
    assert_eq!(a.severity, vigil_proto::v1::Severity::High as i32);
    // The device that completed it, and every contributing one, that one first.
    assert_eq!(a.device_id, devices[2].id);
    let d = a.detection.as_ref().unwrap();
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(d.devices, [ids[2], ids[0], ids[1]]);
    assert_eq!(d.author, "Vigil project");
    assert_eq!(d.matched.len(), 3);
    // Each event with its device: one from each, oldest first.
    assert_eq!(d.matched_devices, [ids[0], ids[1], ids[2]]);
    for m in &d.matched {
        let Some(Payload::File(fe)) = &m.payload else {
            panic!("a file event: {m:?}");
        };
        assert_eq!(fe.hashes.as_ref().unwrap().sha256, vec![0x42; 32]);
        assert_eq!(m.sequence, 1);
    }
}

#[tokio::test]
async fn the_same_file_on_two_devices_is_no_alert() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    publish(&f, &acme).await;
    let now = f.server.control.now();
    for _ in 0..2 {
        let d = f.device(&acme).await;
        send(&f, &d, vec![dropped(1, now - 1_000_000_000)]).await;
        // Sent again: the device still counts once.
        send(&f, &d, vec![dropped(1, now - 1_000_000_000)]).await;
    }
    assert!(settled(&f, &acme).await.is_empty());
}
