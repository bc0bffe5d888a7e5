//! The alert lifecycle (issue 14, item 1), over real mutual-TLS gRPC against
//! a running server with an injected clock: repeats of a rule on one process
//! tree aggregate into one alert within the window (exactly once under
//! re-sends), and analysts change status, assignee and comments — refused to
//! read-only callers and operators under a grant, NOT_FOUND across tenants,
//! every change audited without its text.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::tenants::{Device, Fixture, req};
use tokio_stream::StreamExt;
use tonic::Code;
use vigil_proto::v1::{
    self as pb, Alert, AlertStatus, DecideAccessGrantRequest, Detection, GetAlertRequest,
    ListAlertsRequest, ProcessRef, ProcessStart, Record, RecordBatch, RequestAccessRequest,
    UpdateAlertRequest, WatchAlertsRequest, admin_client::AdminClient,
    operator_client::OperatorClient, record::Payload,
};

/// What these tests ask of the shared fixture beyond making tenants.
trait Lifecycle {
    async fn send(&self, d: &Device, records: &[(u64, &str)]) -> pb::BatchAck;
    async fn list(&self, token: &str, r: ListAlertsRequest) -> Vec<Alert>;
    async fn update(
        &self,
        token: &str,
        tenant: Option<&str>,
        r: UpdateAlertRequest,
    ) -> Result<Alert, tonic::Status>;
}

impl Lifecycle for Fixture {
    /// Sends one batch of detections (sequence, parent GUID); returns its ack.
    async fn send(&self, d: &Device, records: &[(u64, &str)]) -> pb::BatchAck {
        let mut ingest = self.server.ingest(Some(d.identity.clone())).await;
        let batch = RecordBatch {
            batch_id: records[0].0,
            records: records.iter().map(|(s, p)| shadow_read(*s, p)).collect(),
        };
        let mut acks = ingest
            .stream(tokio_stream::iter(vec![batch]))
            .await
            .unwrap()
            .into_inner();
        acks.next().await.unwrap().unwrap()
    }

    async fn list(&self, token: &str, r: ListAlertsRequest) -> Vec<Alert> {
        self.alerts()
            .list_alerts(req(r, token, None))
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    async fn update(
        &self,
        token: &str,
        tenant: Option<&str>,
        r: UpdateAlertRequest,
    ) -> Result<Alert, tonic::Status> {
        Ok(self
            .alerts()
            .update_alert(req(r, token, tenant))
            .await?
            .into_inner())
    }
}

/// `cat /etc/shadow` started by the shell `parent`: what the rule pack's
/// shadow-read rule reports.
fn shadow_read(seq: u64, parent: &str) -> Record {
    let start = ProcessStart {
        guid: format!("cat-{seq}"),
        pid: 100 + seq as u32,
        command_line: "cat /etc/shadow".into(),
        parent: Some(ProcessRef {
            guid: parent.into(),
            pid: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    Record {
        sequence: seq,
        time_unix_ns: 1,
        payload: Some(Payload::Detection(Detection {
            rule_id: "shadow-read".into(),
            rule_title: "Shadow file read".into(),
            level: "high".into(),
            matched: vec![Record {
                sequence: seq,
                time_unix_ns: 1,
                payload: Some(Payload::ProcessStart(start)),
                ..Default::default()
            }],
            process: Some(ProcessRef {
                guid: format!("cat-{seq}"),
                pid: 100 + seq as u32,
                command_line: "cat /etc/shadow".into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn status(s: AlertStatus) -> UpdateAlertRequest {
    UpdateAlertRequest {
        status: s as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_on_one_process_tree_aggregate_within_the_window_exactly_once() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    let t0 = f.server.control.now();
    let ack = f.send(&dev, &[(1, "shell-1"), (2, "shell-1")]).await;
    assert_eq!(ack.stored_through, 2);
    let mut watch = f
        .alerts()
        .watch_alerts(req(WatchAlertsRequest::default(), &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    f.clock.advance(Duration::from_secs(60));
    let t1 = f.server.control.now();
    f.send(&dev, &[(3, "shell-1")]).await;
    // Watchers see the alert again as it grows.
    let seen = watch.next().await.unwrap().unwrap();
    assert_eq!(seen.count, 3);
    let all = f.list(&acme.admin, ListAlertsRequest::default()).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let a = &all[0];
    assert_eq!((a.id.as_str(), a.count), (seen.id.as_str(), 3));
    assert_eq!((a.first_seen_unix_ns, a.last_seen_unix_ns), (t0, t1));
    // The first detection stays the evidence; the newest is kept beside it.
    assert_eq!(a.process.as_ref().unwrap().guid, "cat-1");
    assert_eq!(
        a.latest_detection
            .as_ref()
            .unwrap()
            .process
            .as_ref()
            .unwrap()
            .guid,
        "cat-3"
    );

    // A re-sent batch is a duplicate: the count does not move.
    let again = f.send(&dev, &[(2, "shell-1"), (3, "shell-1")]).await;
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    let a = f.list(&acme.admin, ListAlertsRequest::default()).await;
    assert_eq!((a.len(), a[0].count), (1, 3));

    // Another process tree is another alert.
    f.send(&dev, &[(4, "shell-2")]).await;
    assert_eq!(
        f.list(&acme.admin, ListAlertsRequest::default())
            .await
            .len(),
        2
    );

    // Past the window (10 minutes by default) a new alert starts.
    f.clock.advance(Duration::from_secs(601));
    f.send(&dev, &[(5, "shell-1")]).await;
    let all = f.list(&acme.admin, ListAlertsRequest::default()).await;
    assert_eq!(all.len(), 3);
    let newest = all[0].clone();
    assert_eq!(
        (newest.count, newest.process.unwrap().guid.as_str()),
        (1, "cat-5")
    );

    // A resolved alert is not reopened by a repeat: a new one starts.
    let mut r = status(AlertStatus::Resolved);
    r.id = newest.id.clone();
    f.update(&acme.admin, None, r).await.unwrap();
    // (Alert ids sort by received time: a later one lists first.)
    f.clock.advance(Duration::from_secs(1));
    f.send(&dev, &[(6, "shell-1")]).await;
    let all = f.list(&acme.admin, ListAlertsRequest::default()).await;
    assert_eq!(all.len(), 4);
    assert_eq!((all[0].count, all[0].status), (1, AlertStatus::New as i32));
    assert_eq!(all[1].id, newest.id);
    assert_eq!(all[1].count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_change_status_assignee_and_comments_and_each_change_is_audited() {
    let f = Fixture::start().await;
    let acme = f.tenant("Acme").await;
    let globex = f.tenant("Globex").await;
    let dev = f.device(&acme).await;
    f.send(&dev, &[(1, "shell-1")]).await;
    let id = f.list(&acme.admin, ListAlertsRequest::default()).await[0]
        .id
        .clone();
    let analyst = f.token(&acme, pb::Role::Analyst).await.0;
    let reader = f.token(&acme, pb::Role::ReadOnly).await.0;

    let a = f
        .update(
            &analyst,
            None,
            UpdateAlertRequest {
                id: id.clone(),
                status: AlertStatus::InProgress as i32,
                assignee: Some("alice".into()),
                comment: "MARKER-comment: cat ran from root's shell".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.status, AlertStatus::InProgress as i32);
    assert_eq!((a.assignee.as_str(), a.comments.len()), ("alice", 1));
    assert_eq!(a.comments[0].author, "Analyst");
    assert_eq!(a.updated_by, "Analyst");
    assert_eq!(a.updated_unix_ns, f.server.control.now());
    let got = f
        .alerts()
        .get_alert(req(GetAlertRequest { id: id.clone() }, &reader, None))
        .await
        .unwrap()
        .into_inner();
    // GetAlert adds the evidence, read when asked.
    assert!(got.evidence.is_some());
    assert_eq!(
        Alert {
            evidence: None,
            ..got
        },
        a
    );
    let mine = ListAlertsRequest {
        assignee: "alice".into(),
        ..Default::default()
    };
    assert_eq!(f.list(&reader, mine.clone()).await.len(), 1);
    let a = f
        .update(
            &acme.admin,
            None,
            UpdateAlertRequest {
                id: id.clone(),
                clear_assignee: true,
                status: AlertStatus::Resolved as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (a.assignee.as_str(), a.status),
        ("", AlertStatus::Resolved as i32)
    );
    assert_eq!(a.comments.len(), 1);
    assert!(f.list(&reader, mine).await.is_empty());

    // Invalid changes.
    for bad in [
        UpdateAlertRequest {
            status: 99,
            ..Default::default()
        },
        UpdateAlertRequest::default(),
        UpdateAlertRequest {
            comment: "x".repeat(4001),
            ..Default::default()
        },
        UpdateAlertRequest {
            assignee: Some("a\nb".into()),
            ..Default::default()
        },
        UpdateAlertRequest {
            assignee: Some("x".repeat(129)),
            ..Default::default()
        },
        UpdateAlertRequest {
            assignee: Some("bob".into()),
            clear_assignee: true,
            ..Default::default()
        },
    ] {
        let bad = UpdateAlertRequest {
            id: id.clone(),
            ..bad
        };
        let err = f.update(&analyst, None, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // The longest comment is taken.
    let long = UpdateAlertRequest {
        id: id.clone(),
        comment: "y".repeat(4000),
        ..Default::default()
    };
    assert_eq!(
        f.update(&analyst, None, long).await.unwrap().comments.len(),
        2
    );

    // Read-only callers and an operator under an approved grant may not change alerts.
    let mut r = status(AlertStatus::New);
    r.id = id.clone();
    let err = f.update(&reader, None, r.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let grant = OperatorClient::new(f.ch.clone())
        .request_access(req(
            RequestAccessRequest {
                tenant_id: acme.id.clone(),
                reason: "ticket 4711".into(),
                duration_minutes: 30,
            },
            &f.operator,
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    AdminClient::new(f.ch.clone())
        .approve_access_grant(req(
            DecideAccessGrantRequest {
                grant_id: grant.grant_id,
            },
            &acme.admin,
            None,
        ))
        .await
        .unwrap();
    let err = f
        .update(&f.operator, Some(&acme.id), r.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Another tenant's id is not found.
    let err = f.update(&globex.admin, None, r).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        f.alerts()
            .get_alert(req(GetAlertRequest { id: id.clone() }, &acme.admin, None))
            .await
            .unwrap()
            .into_inner()
            .status,
        AlertStatus::Resolved as i32
    );

    // Every change and refusal is in the tenant's audit log, without the comment's text or the assignee.
    let entries = f.audit_entries(&acme.admin).await;
    let updates: Vec<_> = entries
        .iter()
        .filter(|e| e.method == "Alerts/UpdateAlert")
        .collect();
    assert!(updates.len() >= 10, "{updates:?}");
    assert!(
        updates
            .iter()
            .any(|e| e.summary.contains("comment=<41 chars>")
                && e.summary.contains("status=ALERT_STATUS_IN_PROGRESS"))
    );
    assert!(
        updates
            .iter()
            .any(|e| e.result.starts_with("PermissionDenied"))
    );
    for e in &entries {
        let text = format!("{e:?}");
        assert!(!text.contains("MARKER-comment"), "{text}");
        assert!(!text.contains("alice"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_comments_are_all_kept() {
    let f = Arc::new(Fixture::start().await);
    let acme = f.tenant("Acme").await;
    let dev = f.device(&acme).await;
    f.send(&dev, &[(1, "shell-1")]).await;
    let id = f.list(&acme.admin, ListAlertsRequest::default()).await[0]
        .id
        .clone();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (f, id, token) = (Arc::clone(&f), id.clone(), acme.admin.clone());
            tokio::spawn(async move {
                let r = UpdateAlertRequest {
                    id,
                    comment: format!("note {n}"),
                    ..Default::default()
                };
                f.update(&token, None, r).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let a = f
        .alerts()
        .get_alert(req(GetAlertRequest { id }, &acme.admin, None))
        .await
        .unwrap()
        .into_inner();
    let mut notes: Vec<_> = a.comments.iter().map(|c| c.text.clone()).collect();
    notes.sort();
    let mut want: Vec<_> = (0..16).map(|n| format!("note {n}")).collect();
    want.sort();
    assert_eq!(notes, want);
}

/// Detection `seq` of rule `rule-{seq % 4}`, level by `seq % 3`, at `t`.
fn detection_at(seq: u64, t: i64) -> Record {
    Record {
        sequence: seq,
        time_unix_ns: t,
        payload: Some(Payload::Detection(Detection {
            rule_id: format!("rule-{}", seq % 4),
            rule_title: "Filtered".into(),
            level: ["low", "medium", "high"][(seq % 3) as usize].into(),
            process: Some(ProcessRef {
                guid: format!("p-{seq}"),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_filter_and_page_matches_a_scan_of_all_alerts() {
    let f = Fixture::start_with(|c| c.alert_aggregation_seconds = 0).await;
    let acme = f.tenant("Acme").await;
    let d1 = f.device(&acme).await;
    let d2 = f.device(&acme).await;
    let hour = 3_600_000_000_000i64;
    let t0 = f.server.control.now() - 200 * hour;
    // 240 alerts over 100 hours on two devices.
    let recs = |dev: u64| -> Vec<Record> {
        (1..=120u64)
            .map(|s| detection_at(s, t0 + (s as i64 * 2 + dev as i64) * hour / 3 * 2))
            .collect()
    };
    f.send_records(&d1, recs(0)).await;
    f.send_records(&d2, recs(1)).await;
    let all = f
        .list(
            &acme.admin,
            ListAlertsRequest {
                page_size: 1000,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(all.len(), 240);
    // Some assigned and in progress.
    for a in all.iter().step_by(7) {
        f.update(
            &acme.admin,
            None,
            UpdateAlertRequest {
                id: a.id.clone(),
                status: AlertStatus::InProgress as i32,
                assignee: Some("bob".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let all = f
        .list(
            &acme.admin,
            ListAlertsRequest {
                page_size: 1000,
                ..Default::default()
            },
        )
        .await;
    let filters = vec![
        ListAlertsRequest {
            rule_id: "rule-2".into(),
            ..Default::default()
        },
        ListAlertsRequest {
            device_id: d2.id.clone(),
            ..Default::default()
        },
        ListAlertsRequest {
            assignee: "bob".into(),
            ..Default::default()
        },
        ListAlertsRequest {
            status: AlertStatus::InProgress as i32,
            ..Default::default()
        },
        ListAlertsRequest {
            min_severity: pb::Severity::High as i32,
            ..Default::default()
        },
        ListAlertsRequest {
            since_unix_ns: t0 + 30 * hour,
            until_unix_ns: t0 + 31 * hour + 5,
            ..Default::default()
        },
        ListAlertsRequest {
            since_unix_ns: t0 + 90 * hour,
            ..Default::default()
        },
        ListAlertsRequest {
            until_unix_ns: t0 + 10 * hour,
            ..Default::default()
        },
        ListAlertsRequest {
            rule_id: "rule-1".into(),
            device_id: d1.id.clone(),
            since_unix_ns: t0 + 20 * hour,
            until_unix_ns: t0 + 70 * hour,
            min_severity: pb::Severity::Medium as i32,
            ..Default::default()
        },
    ];
    for filter in filters {
        let want: Vec<String> = all
            .iter()
            .filter(|a| {
                (filter.rule_id.is_empty() || a.rule_id == filter.rule_id)
                    && (filter.device_id.is_empty() || a.device_id == filter.device_id)
                    && (filter.assignee.is_empty() || a.assignee == filter.assignee)
                    && (filter.status == 0 || a.status == filter.status)
                    && (filter.min_severity == 0 || a.severity >= filter.min_severity)
                    && (filter.since_unix_ns == 0 || a.time_unix_ns >= filter.since_unix_ns)
                    && (filter.until_unix_ns == 0 || a.time_unix_ns < filter.until_unix_ns)
            })
            .map(|a| a.id.clone())
            .collect();
        assert!(!want.is_empty(), "{filter:?}");
        // Pages of 7, following the token.
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let r = f
                .alerts()
                .list_alerts(req(
                    ListAlertsRequest {
                        page_size: 7,
                        page_token: token.clone(),
                        ..filter.clone()
                    },
                    &acme.admin,
                    None,
                ))
                .await
                .unwrap()
                .into_inner();
            got.extend(r.alerts.into_iter().map(|a| a.id));
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        assert_eq!(got, want, "{filter:?}");
    }
}
